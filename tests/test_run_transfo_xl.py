"""examples/run_transfo_xl.py on a tiny model and a small text corpus: its perplexity equals the reference
computation (pytorch_transformers' TransfoXLLMHeadModel fed the same batches with the same weights)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pytorch_transformers import modeling_transfo_xl as ref

from jaxformers.tokenizers.transfo_xl import TransfoXLCorpus
from script_loader import load_script

WORDS = ("the cat sat on a mat while dog ran past old red barn near green hill under blue sky and "
         "bird sang song of rain over quiet town").split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A directory with a small corpus (vocab.json, corpus.npz) and a tiny model whose vocabulary matches."""
    root = tmp_path_factory.mktemp("txl")
    text_dir = root / "text"
    text_dir.mkdir()
    rng = np.random.RandomState(0)
    for split, lines in (("train", 40), ("valid", 12), ("test", 9)):
        with open(text_dir / f"{split}.txt", "w", encoding="utf-8") as writer:
            for _ in range(lines):
                writer.write(" ".join(rng.choice(WORDS, rng.randint(3, 9))) + "\n")
    corpus = TransfoXLCorpus(special=["<eos>"], lower_case=False)
    corpus.build_corpus(str(text_dir), "wt2")
    directory = root / "model"
    corpus.save_pretrained(directory)
    n_token = len(corpus.vocab)
    fields = dict(cutoffs=[6, 15], d_model=32, d_embed=32, n_head=4, d_head=8, d_inner=37, div_val=2, n_layer=2,
                  tgt_len=5, mem_len=4, clamp_len=3, same_length=False, dropout=0.0, dropatt=0.0)
    torch.manual_seed(0)
    reference = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(n_token, **fields)).eval()
    torch.save(reference.state_dict(), directory / "pytorch_model.bin")
    reference.config.to_json_file(str(directory / "config.json"))  # 1.2.0 config: LayerNorm epsilon 1e-5
    return directory, reference


def reference_loss(reference, corpus, split, batch_size, tgt_len, mem_len, clamp_len) -> float:
    reference.reset_length(tgt_len, 0, mem_len)
    reference.transformer.clamp_len = clamp_len
    reference.transformer.same_length = True  # what --same_length does
    total_loss, total_len, mems = 0.0, 0, None
    with torch.no_grad():
        for data, target, seq_len in corpus.get_iterator(split, batch_size, tgt_len):
            loss, _, mems = reference(torch.tensor(data), labels=torch.tensor(target), mems=mems)
            total_loss += seq_len * loss.double().mean().item()
            total_len += seq_len
    return total_loss / total_len


@pytest.mark.parametrize("split,batch_size,tgt_len,mem_len,clamp_len", [
    ("test", 2, 5, 4, 3),
    ("valid", 3, 4, 6, 0),
])
def test_perplexity_equals_reference(model_dir, tmp_path, split, batch_size, tgt_len, mem_len, clamp_len):
    directory, reference = model_dir
    results = load_script("examples/run_transfo_xl.py").main([
        "--model_name", str(directory), "--split", split, "--batch_size", str(batch_size),
        "--tgt_len", str(tgt_len), "--mem_len", str(mem_len), "--clamp_len", str(clamp_len),
        "--same_length", "--work_dir", str(tmp_path / "work"), "--no_progress",
    ])
    corpus = TransfoXLCorpus.from_pretrained(str(directory))
    expected = reference_loss(reference, corpus, split, batch_size, tgt_len, mem_len, clamp_len)
    assert abs(results[f"{split}_loss"] - expected) < 1e-5
    assert math.isclose(results[f"{split}_ppl"], math.exp(expected), rel_tol=1e-5)
    written = json.loads((tmp_path / "work" / "eval_results.json").read_text())
    assert written == pytest.approx(results)
    assert "ppl" in (tmp_path / "work" / "log.txt").read_text()


def test_all_splits_and_extended_context(model_dir, tmp_path):
    directory, _ = model_dir
    example = load_script("examples/run_transfo_xl.py")
    base = ["--model_name", str(directory), "--batch_size", "2", "--tgt_len", "4", "--mem_len", "4",
            "--work_dir", str(tmp_path), "--no_progress"]
    results = example.main(base + ["--split", "all"])
    assert set(results) == {"valid_loss", "valid_ppl", "test_loss", "test_ppl"}
    # ext_len feeds extra context and still scores exactly tgt_len tokens per step: a finite, different loss
    # (without same_length, which would limit every query to mem_len keys either way)
    extended = example.main(base + ["--split", "test", "--ext_len", "2"])
    assert math.isfinite(extended["test_loss"]) and extended["test_loss"] != results["test_loss"]
    with pytest.raises(SystemExit):
        example.main(base + ["--tgt_len", "0"])

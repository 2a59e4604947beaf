"""Transformer-XL weight conversion: original TensorFlow checkpoints (written here with tf.compat.v1 and the
kimiyoung variable names), the reference's pytorch_model.bin both ways, and the corpus pickle converter."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_transformers import modeling_transfo_xl as ref

from jaxformers.models import transfo_xl as jx
from parity_utils import assert_close, torch_state_numpy
from script_loader import load_script
from tf_writer import write_tf_checkpoint

tf = pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[1]
CONVERTER = "conversion/convert_transfo_xl_checkpoint.py"
N_TOKEN = 60
FIELDS = dict(d_model=32, n_head=4, d_head=8, d_inner=37, n_layer=2, tgt_len=4, mem_len=5, clamp_len=3,
              dropout=0.0, dropatt=0.0)
DIV2 = dict(FIELDS, cutoffs=[10, 30], d_embed=32, div_val=2, untie_r=True)
# The PyTorch port's same_length mask, to compare a TF-converted model with the reference's outputs.
PORT_MASK = dict(config_overrides={"same_length_mask": "pytorch"})
DIV1_SHARED_R = dict(FIELDS, cutoffs=[20, 40], d_embed=16, div_val=1, untie_r=False)


def tf_arrays_from_reference_map(model, config) -> dict[str, np.ndarray]:
    """TF variables named and laid out by the reference's own TF -> PyTorch map (its loader inverts it)."""
    arrays = {}
    for name, pointer in ref.build_tf_to_pytorch_map(model, config).items():
        if isinstance(pointer, list):  # untie_r: the TF variable stacks one bias per layer
            arrays[name] = np.stack([p.detach().numpy() for p in pointer])
        else:
            value = pointer.detach().numpy()
            arrays[name] = value.T if ("kernel" in name or "proj" in name) else value
    return arrays


def write_config(directory: Path, fields: dict, epsilon: float = 1e-5) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    jx.TransfoXLConfig(N_TOKEN, layer_norm_epsilon=epsilon, **fields).to_json_file(directory / "config.json")
    return directory / "config.json"


def log_probs_of(model, input_ids):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.tensor(input_ids))[0].numpy()
    return np.asarray(model(input_ids)[0])


INPUT_IDS = np.random.RandomState(0).randint(0, N_TOKEN, (2, 6))


def test_tf_checkpoint_matches_reference_loader_and_converter(tmp_path):
    torch.manual_seed(0)
    source = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV2)).eval()
    arrays = tf_arrays_from_reference_map(source, source.config)
    assert "transformer/adaptive_embed/cutoff_2/proj_W" in arrays and "transformer/r_w_bias" in arrays
    # Training leftovers a real checkpoint holds: ignored.
    qkv = arrays["transformer/layer_0/rel_attn/qkv/kernel"]
    arrays["transformer/layer_0/rel_attn/qkv/kernel/Adam"] = np.zeros_like(qkv)
    arrays["global_step"] = np.array(7, np.int64)
    checkpoint_dir = tmp_path / "tf"
    checkpoint_dir.mkdir()
    write_tf_checkpoint(arrays, checkpoint_dir / "model.ckpt")

    torch.manual_seed(1)  # different initial weights: everything must come from the checkpoint
    reference = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV2)).eval()
    ref.load_tf_weights_in_transfo_xl(reference, reference.config, str(checkpoint_dir / "model.ckpt"))
    expected = log_probs_of(reference, INPUT_IDS)

    write_config(checkpoint_dir, DIV2)
    # The reference is the PyTorch port, so compare under its same_length mask; a TF checkpoint gets the original
    # TF code's mask by default (checked against the TF model in test_transfo_xl_tf_mask.py).
    ours = jx.TransfoXLLMHeadModel.from_pretrained(checkpoint_dir, from_tf=True, strict=True, **PORT_MASK)
    assert ours.config.same_length_mask == "pytorch"
    assert jx.TransfoXLLMHeadModel.from_pretrained(checkpoint_dir, from_tf=True).config.same_length_mask == "tf"
    assert_close(log_probs_of(ours, INPUT_IDS), expected, 1e-5, "from_pretrained(from_tf=True)")

    dump = tmp_path / "converted"
    load_script(CONVERTER).main(["--pytorch_dump_folder_path", str(dump), "--tf_checkpoint_path", str(checkpoint_dir),
                           "--transfo_xl_config_file", str(checkpoint_dir / "config.json")])
    assert {"config.json", "flax_model.msgpack", "pytorch_model.bin"} <= {p.name for p in dump.iterdir()}
    # The written pytorch_model.bin loads strictly into the reference and equals its own TF load.
    fresh = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV2)).eval()
    fresh.load_state_dict(torch.load(dump / "pytorch_model.bin", weights_only=True), strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert jx.TransfoXLLMHeadModel.from_pretrained(dump).config.same_length_mask == "tf"
    converted = jx.TransfoXLLMHeadModel.from_pretrained(dump, **PORT_MASK)
    assert converted.config.layer_norm_epsilon == 1e-5
    assert_close(log_probs_of(converted, INPUT_IDS), expected, 1e-5, "converted model")


def test_tf_checkpoint_div_val_1_and_shared_biases(tmp_path):
    """The reference's loader cannot read these (it maps div_val=1 embeddings under cutoff_0 and cannot load
    shared r_*_bias); the names below are those of the original tf/model.py."""
    torch.manual_seed(2)
    source = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV1_SHARED_R)).eval()
    state = torch_state_numpy(source)
    ends = [0, 20, 40, N_TOKEN]
    arrays = {name: value for name, value in tf_arrays_from_reference_map(source, source.config).items()
              if "/layer_" in name}
    arrays.update({
        "transformer/r_w_bias": state["transformer.r_w_bias"],
        "transformer/r_r_bias": state["transformer.r_r_bias"],
        "transformer/adaptive_embed/lookup_table": state["transformer.word_emb.emb_layers.0.weight"],
        "transformer/adaptive_embed/proj_W": state["transformer.word_emb.emb_projs.0"].T,
        "transformer/adaptive_softmax/cutoff_0/cluster_W": state["crit.cluster_weight"],
        "transformer/adaptive_softmax/cutoff_0/cluster_b": state["crit.cluster_bias"],
        "transformer/adaptive_softmax/cutoff_0/proj": state["crit.out_projs.0"].T,  # tie_projs[0] is False
    })
    bias = state["crit.out_layers.0.bias"]
    for index in range(3):  # div_val == 1: TF keeps one bias per cluster
        arrays[f"transformer/adaptive_softmax/cutoff_{index}/b"] = bias[ends[index]:ends[index + 1]]
    checkpoint_dir = tmp_path / "tf"
    checkpoint_dir.mkdir()
    write_tf_checkpoint(arrays, checkpoint_dir / "model.ckpt")
    write_config(checkpoint_dir, DIV1_SHARED_R)
    ours = jx.TransfoXLLMHeadModel.from_pretrained(checkpoint_dir, from_tf=True, strict=True, **PORT_MASK)
    assert_close(log_probs_of(ours, INPUT_IDS), log_probs_of(source, INPUT_IDS), 1e-5, "div_val=1, shared biases")
    exported = ours.torch_state_dict()
    for key, value in state.items():
        assert np.array_equal(exported[key], value), key


def test_unknown_tf_variables_fail_a_strict_load(tmp_path):
    torch.manual_seed(3)
    source = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV2)).eval()
    arrays = tf_arrays_from_reference_map(source, source.config)
    del arrays["transformer/adaptive_softmax/cutoff_0/cluster_W"]
    # A name no rule of the Transformer-XL table knows is an error naming it and the file, before any load
    # (the mapper is strict); without it, the strict load names the weight the checkpoint lacks.
    for name, expected in (("mystery", r"(?s)tf/model\.ckpt.*transformer/mystery/kernel"),
                           ("missing", r"crit\.cluster_weight")):
        if name == "mystery":
            arrays["transformer/mystery/kernel"] = np.zeros((2, 2), np.float32)
        else:
            del arrays["transformer/mystery/kernel"]
        checkpoint_dir = tmp_path / name / "tf"
        checkpoint_dir.mkdir(parents=True)
        write_tf_checkpoint(arrays, checkpoint_dir / "model.ckpt")
        write_config(checkpoint_dir, DIV2)
        with pytest.raises(ValueError, match=expected):
            jx.TransfoXLLMHeadModel.from_pretrained(checkpoint_dir, from_tf=True, strict=True)


def test_pytorch_weights_both_ways(tmp_path):
    torch.manual_seed(4)
    reference = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV1_SHARED_R)).eval()
    expected = log_probs_of(reference, INPUT_IDS)
    # reference -> ours: its own config.json (library keys, no epsilon: 1e-5 inferred) and state dict
    saved = tmp_path / "from_reference"
    saved.mkdir()
    torch.save(reference.state_dict(), saved / "pytorch_model.bin")
    reference.config.to_json_file(str(saved / "config.json"))
    ours, info = jx.TransfoXLLMHeadModel.from_pretrained(saved, output_loading_info=True, strict=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert ours.config.layer_norm_epsilon == 1e-5
    assert_close(log_probs_of(ours, INPUT_IDS), expected, 1e-5, "loaded from the reference's files")
    # ours -> reference: strict load of our pytorch_model.bin; safetensors and msgpack load back into ours
    written = tmp_path / "from_ours"
    ours.save_pretrained(written, pytorch=True, safetensors=True)
    fresh = ref.TransfoXLLMHeadModel(ref.TransfoXLConfig(N_TOKEN, **DIV1_SHARED_R)).eval()
    fresh.load_state_dict(torch.load(written / "pytorch_model.bin", weights_only=True), strict=True)
    assert_close(log_probs_of(fresh, INPUT_IDS), expected, 1e-6, "reference from our pytorch_model.bin")
    os.remove(written / "flax_model.msgpack")
    from_safetensors = jx.TransfoXLLMHeadModel.from_pretrained(written, strict=True)
    assert_close(log_probs_of(from_safetensors, INPUT_IDS), expected, 1e-5, "from safetensors")


# ---------------------------------------------------------------------------------------------------- corpus


@pytest.fixture
def original_modules(monkeypatch):
    """Stand-ins for the original code's data_utils.Corpus and vocabulary.Vocab, so pickles name them."""
    data_utils, vocabulary = types.ModuleType("data_utils"), types.ModuleType("vocabulary")
    data_utils.Corpus = type("Corpus", (), {"__module__": "data_utils"})
    vocabulary.Vocab = type("Vocab", (), {"__module__": "vocabulary"})
    monkeypatch.setitem(sys.modules, "data_utils", data_utils)
    monkeypatch.setitem(sys.modules, "vocabulary", vocabulary)
    return data_utils, vocabulary


@pytest.mark.parametrize("protocol", [0, 2])
def test_original_corpus_pickle_converts_to_vocab_json_and_npz(tmp_path, original_modules, protocol):
    from jaxformers.tokenizers.transfo_xl import TransfoXLCorpus

    data_utils, vocabulary = original_modules
    symbols = ["<eos>", "<unk>", "the", "cat", "sat"]
    vocab = vocabulary.Vocab()
    vocab.__dict__.update(
        counter=Counter({"the": 5, "cat": 2, "sat": 1}), special=["<eos>", "<unk>"], min_freq=0, max_size=None,
        lower_case=False, delimiter=None, vocab_file=None, idx2sym=symbols,
        sym2idx=OrderedDict((s, i) for i, s in enumerate(symbols)), eos_idx=0, unk_idx=1)
    corpus = data_utils.Corpus()
    corpus.__dict__.update(dataset="wt103", vocab=vocab, train=np.array([2, 3, 4, 0], np.int64),
                           valid=np.array([2, 4, 0], np.int64), test=np.array([3, 1, 0], np.int64))
    pickled = tmp_path / "cache.pkl"
    pickled.write_bytes(pickle.dumps(corpus, protocol=protocol))

    dump = tmp_path / "out"
    load_script(CONVERTER).main(["--pytorch_dump_folder_path", str(dump), "--transfo_xl_dataset_file", str(pickled)])
    assert {p.name for p in dump.iterdir()} == {"vocab.json", "corpus.npz"}
    loaded = TransfoXLCorpus.from_pretrained(str(dump))
    assert loaded.dataset == "wt103"
    for split in ("train", "valid", "test"):
        assert np.array_equal(getattr(loaded, split), getattr(corpus, split)), split
    assert loaded.vocab.idx2sym == symbols
    assert loaded.vocab.convert_tokens_to_ids(["cat", "sat", "dog"]) == [3, 4, 1]  # unknown -> <unk>


def test_corpus_pickle_with_code_is_refused(tmp_path, original_modules):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    pickled = tmp_path / "cache.pkl"
    pickled.write_bytes(pickle.dumps({"vocab": Exploit()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_script(CONVERTER).main(["--debug", "--dump_folder", str(tmp_path / "out"),
                                    "--transfo_xl_dataset_file", str(pickled)])  # --debug: the error, not an exit
    assert not (tmp_path / "pwned").exists()

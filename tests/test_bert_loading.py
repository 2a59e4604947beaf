"""Weight interop for BERT: every file format both ways, shortcut names through a local HTTP server, strict
reports, unsafe pickles, atomic saves, TensorFlow checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_bert import modeling as ppb

from jaxformers.models import bert as jxb
from local_hub import LocalHub
from parity_utils import assert_close, torch_state_numpy

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
VOCAB = 99
REPO = Path(__file__).resolve().parents[1]


def reference_pretraining(seed: int = 0) -> ppb.BertForPreTraining:
    torch.manual_seed(seed)
    return ppb.BertForPreTraining(ppb.BertConfig(VOCAB, **TINY)).eval()


def write_06x_directory(directory: Path, reference) -> Path:
    """The 0.6.x archive layout: bert_config.json + pytorch_model.bin."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bert_config.json").write_text(reference.config.to_json_string())
    torch.save(reference.state_dict(), directory / "pytorch_model.bin")
    return directory


def inputs(seed: int = 1):
    rng = np.random.RandomState(seed)
    return rng.randint(0, VOCAB, (2, 8)), rng.randint(0, 2, (2, 8)), np.ones((2, 8), np.int64)


def test_from_pretrained_06x_directory_matches_reference(tmp_path):
    reference = reference_pretraining()
    directory = write_06x_directory(tmp_path / "model", reference)
    model, info = jxb.BertForPreTraining.from_pretrained(directory, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "skipped_keys": ["cls.predictions.decoder.weight"]}
    ids, types, mask = inputs()
    with torch.no_grad():
        expected = reference(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))
    got = model(ids, types, mask)
    for g, e in zip(got, expected):
        assert_close(g, e.numpy(), 1e-5, "pretraining heads")


def test_base_weights_into_head_model_and_back(tmp_path, caplog):
    reference = reference_pretraining()
    base = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY))
    base.load_state_dict(torch_state_numpy(reference))  # "bert."-prefixed keys into a base model
    base.save_pretrained(tmp_path / "base")
    saved = json.loads((tmp_path / "base" / "config.json").read_text())
    assert saved["hidden_size"] == 32 and saved["vocab_size"] == VOCAB

    with caplog.at_level("WARNING", logger="jaxformers"):
        head, info = jxb.BertForSequenceClassification.from_pretrained(
            tmp_path / "base", num_labels=3, output_loading_info=True
        )
    assert info["missing_keys"] == ["classifier.bias", "classifier.weight"]
    assert info["unexpected_keys"] == []
    assert "classifier.weight" in caplog.text
    np.testing.assert_array_equal(head.bert.pooler.dense.weight[...], base.pooler.dense.weight[...])

    head.save_pretrained(tmp_path / "head")
    back, info = jxb.BertModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert info["unexpected_keys"] == ["classifier.bias", "classifier.weight"]
    assert info["missing_keys"] == []
    for key, value in base.torch_state_dict().items():
        np.testing.assert_array_equal(back.torch_state_dict()[key], value)


def test_pytorch_export_is_accepted_strictly_by_reference_and_round_trip_is_bit_identical(tmp_path):
    reference = reference_pretraining(3)
    model = jxb.BertForPreTraining(jxb.BertConfig(VOCAB, **TINY))
    model.load_state_dict(torch_state_numpy(reference), strict=True)
    model.save_pretrained(tmp_path / "out", pytorch=True, safetensors=True)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["config.json", "flax_model.msgpack", "model.safetensors", "pytorch_model.bin"]

    exported = torch.load(tmp_path / "out" / "pytorch_model.bin", weights_only=True)
    fresh = ppb.BertForPreTraining(ppb.BertConfig(str(tmp_path / "out" / "config.json")))
    fresh.load_state_dict(exported, strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(exported[key], value), key

    from safetensors.numpy import load_file

    stored = load_file(tmp_path / "out" / "model.safetensors")
    # transformers' layout: the decoder weight is tied to the word embeddings and stored once, under the latter.
    assert set(stored) == set(reference.state_dict()) - {"cls.predictions.decoder.weight"}
    for key, value in stored.items():
        np.testing.assert_array_equal(value, reference.state_dict()[key].numpy())

    # each file alone reloads to identical parameters
    for keep in ["pytorch_model.bin", "model.safetensors", "flax_model.msgpack"]:
        single = tmp_path / f"only-{keep}"
        single.mkdir()
        (single / "config.json").write_text((tmp_path / "out" / "config.json").read_text())
        (single / keep).write_bytes((tmp_path / "out" / keep).read_bytes())
        again = jxb.BertForPreTraining.from_pretrained(single)
        for key, value in model.torch_state_dict().items():
            np.testing.assert_array_equal(again.torch_state_dict()[key], value)


def test_legacy_gamma_beta_names_and_archives(tmp_path):
    reference = reference_pretraining(4)
    legacy = {}
    for key, value in reference.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[key] = value
    directory = tmp_path / "legacy"
    directory.mkdir()
    (directory / "bert_config.json").write_text(reference.config.to_json_string())
    torch.save(legacy, directory / "pytorch_model.bin")
    archive = tmp_path / "bert-tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in directory.iterdir():
            tar.add(path, arcname=path.name)
    model = jxb.BertForPreTraining.from_pretrained(str(archive))
    ids, types, mask = inputs(5)
    with torch.no_grad():
        expected = reference(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))[0]
    assert_close(model(ids, types, mask)[0], expected.numpy(), 1e-5, "legacy archive")


def test_shape_mismatch_and_strict_errors_name_the_keys(tmp_path):
    reference = reference_pretraining()
    state = torch_state_numpy(reference)
    state["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
    model = jxb.BertForPreTraining(jxb.BertConfig(VOCAB, **TINY))
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "bert.encoder.layer.1.intermediate.dense.weight" in message
    assert "expected shape (37, 32), found (36, 32)" in message

    state = torch_state_numpy(reference)
    state["bert.encoder.layer.9.surprise"] = np.zeros(3, np.float32)
    del state["cls.seq_relationship.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['cls.seq_relationship.bias'\].*bert.encoder.layer.9.surprise"):
        model.load_state_dict(state, strict=True)
    report = model.load_state_dict(state)
    assert report.unexpected_keys == ["bert.encoder.layer.9.surprise"]
    assert report.missing_keys == ["cls.seq_relationship.bias"]


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    directory = tmp_path / "evil"
    directory.mkdir()
    (directory / "config.json").write_text(jxb.BertConfig(VOCAB, **TINY).to_json_string())
    with open(directory / "pytorch_model.bin", "wb") as handle:
        torch.save({"bert.pooler.dense.bias": _Exploit(marker)}, handle)
    # Sanity check that the payload is live: plain pickle loading would run it.
    with pytest.raises(OSError, match="cannot read PyTorch weights .*pytorch_model.bin.* safely"):
        jxb.BertModel.from_pretrained(directory)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump(_Exploit(marker), handle)
    with open(tmp_path / "plain.pkl", "rb") as handle:
        pickle.load(handle)
    assert marker.exists(), "the payload must be live for the test to mean anything"


def test_atomic_save_keeps_previous_files_on_failure(tmp_path, monkeypatch):
    reference = reference_pretraining()
    model = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY))
    model.load_state_dict(torch_state_numpy(reference))
    model.save_pretrained(tmp_path, pytorch=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    import torch as torch_module

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch_module, "save", broken_save)
    other = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY), seed=9)
    with pytest.raises(RuntimeError, match="disk full"):
        other.save_pretrained(tmp_path, pytorch=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temporary files left behind
    assert after["pytorch_model.bin"] == before["pytorch_model.bin"]
    assert after["config.json"] == before["config.json"]


# ------------------------------------------------------------------------------------ shortcut names and cache


def test_shortcut_name_downloads_once_then_uses_cache(tmp_path, monkeypatch):
    reference = reference_pretraining(6)
    repo = tmp_path / "hub" / "google-bert" / "bert-base-uncased"  # where the shortcut's files live today
    repo.mkdir(parents=True)
    # Today's hub layout: config.json + model.safetensors (no bert. prefix on a base model upload)
    model = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY))
    model.load_state_dict(torch_state_numpy(reference))
    model.save_pretrained(repo, safetensors=True)
    (repo / "flax_model.msgpack").unlink()
    cache = tmp_path / "cache"
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        loaded = jxb.BertForMaskedLM.from_pretrained("bert-base-uncased", cache_dir=cache)
        assert hub.requests == ["/google-bert/bert-base-uncased/resolve/main/config.json",
                                "/google-bert/bert-base-uncased/resolve/main/model.safetensors"]
    np.testing.assert_array_equal(loaded.bert.pooler.dense.weight[...], model.pooler.dense.weight[...])
    # server gone: the cache answers
    again = jxb.BertModel.from_pretrained("bert-base-uncased", cache_dir=cache)
    np.testing.assert_array_equal(again.pooler.dense.weight[...], model.pooler.dense.weight[...])
    assert not list(cache.glob(".*.tmp"))


def test_offline_with_empty_cache_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFORMERS_OFFLINE", "1")
    with pytest.raises(OSError) as error:
        jxb.BertModel.from_pretrained("bert-base-cased", cache_dir=tmp_path / "empty")
    message = str(error.value)
    assert "http://127.0.0.1:9/google-bert/bert-base-cased/resolve/main/config.json" in message
    assert str(tmp_path / "empty") in message
    monkeypatch.delenv("JAXFORMERS_OFFLINE")
    with pytest.raises(OSError, match="could not be reached"):  # the conftest endpoint refuses connections
        jxb.BertModel.from_pretrained("bert-base-cased", cache_dir=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a directory.*known shortcut names: bert-base-cased"):
        jxb.BertModel.from_pretrained(tmp_path / "no-such-dir")


def test_download_cache_environment_order(tmp_path, monkeypatch):
    from jaxformers import file_utils

    monkeypatch.delenv("JAXFORMERS_CACHE")
    monkeypatch.setenv("PYTORCH_PRETRAINED_BERT_CACHE", str(tmp_path / "legacy"))
    assert file_utils.default_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("JAXFORMERS_CACHE", str(tmp_path / "ours"))
    assert file_utils.default_cache_dir() == tmp_path / "ours"
    monkeypatch.delenv("JAXFORMERS_CACHE")
    monkeypatch.delenv("PYTORCH_PRETRAINED_BERT_CACHE")
    # then Hugging Face's own cache, so what transformers downloaded is reused
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    assert file_utils.default_cache_dir() == tmp_path / "hf-hub"
    monkeypatch.delenv("HF_HUB_CACHE")
    assert file_utils.default_cache_dir() == tmp_path / "hf-home" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert file_utils.default_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"


# --------------------------------------------------------------------------------------------- TensorFlow


def tf_variable_name(torch_key: str) -> tuple[str, bool]:
    """Google's variable name for a 0.6.2 key (and whether TF stores it transposed): the inverse of the
    reference converter's mapping, written out independently."""
    parts = torch_key.split(".")
    out, transpose = [], False
    index = 0
    while index < len(parts):
        part = parts[index]
        if part == "layer" and index + 1 < len(parts) and parts[index + 1].isdigit():
            out.append(f"layer_{parts[index + 1]}")
            index += 2
            continue
        out.append(part)
        index += 1
    last = out.pop()
    parent = out[-1]
    if parent.endswith("_embeddings"):
        return "/".join(out), False
    if parent == "LayerNorm":
        return "/".join(out + ["gamma" if last == "weight" else "beta"]), False
    if parent == "seq_relationship":
        return "/".join(out + ["output_weights" if last == "weight" else "output_bias"]), False
    if parent == "predictions" and last == "bias":
        return "/".join(out + ["output_bias"]), False
    if last == "weight":
        return "/".join(out + ["kernel"]), True
    return "/".join(out + [last]), transpose


def write_tf_checkpoint(reference, prefix: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for key, value in reference.state_dict().items():
            if key == "cls.predictions.decoder.weight":
                continue
            name, transpose = tf_variable_name(key)
            array = value.numpy().T if transpose else value.numpy()
            variables.append(tf.compat.v1.Variable(array, name=name))
            if "query" in name:  # optimizer slots that a training checkpoint carries
                variables.append(tf.compat.v1.Variable(np.zeros_like(array), name=name + "/adam_m"))
        variables.append(tf.compat.v1.Variable(7, name="global_step", dtype=tf.int64))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, str(prefix))


@pytest.mark.slow
def test_tf_checkpoint_loads_and_converts(tmp_path):
    reference = reference_pretraining(8)
    directory = tmp_path / "tf"
    directory.mkdir()
    write_tf_checkpoint(reference, directory / "bert_model.ckpt")
    (directory / "bert_config.json").write_text(reference.config.to_json_string())

    # The reference's own TF reader agrees with the checkpoint we wrote.
    check = ppb.BertForPreTraining(reference.config)
    ppb.load_tf_weights_in_bert(check, str(directory / "bert_model.ckpt"))
    for key, value in reference.state_dict().items():
        assert torch.equal(check.state_dict()[key], value), key

    model, info = jxb.BertForPreTraining.from_pretrained(directory, from_tf=True, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    ids, types, mask = inputs(9)
    with torch.no_grad():
        expected = reference(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))
    for g, e in zip(model(ids, types, mask), expected):
        assert_close(g, e.numpy(), 1e-5, "from TF")

    out = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, str(REPO / "conversion" / "convert_tf_checkpoint.py"),
         "--tf_checkpoint_path", str(directory / "bert_model.ckpt"),
         "--bert_config_file", str(directory / "bert_config.json"),
         "--output_dir", str(out), "--pytorch"],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    from jaxformers.cli import main

    via_cli = tmp_path / "via-cli"
    assert main(["convert", "bert-tf", "--tf_checkpoint_path", str(directory), "--bert_config_file",
                 str(directory / "bert_config.json"), "--output_dir", str(via_cli)]) == 0
    assert (via_cli / "flax_model.msgpack").read_bytes() == (out / "flax_model.msgpack").read_bytes()

    exported = torch.load(out / "pytorch_model.bin", weights_only=True)
    fresh = ppb.BertForPreTraining(reference.config)
    fresh.load_state_dict(exported, strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(exported[key], value), key


def test_from_pretrained_into_scanned_model_with_missing_head(tmp_path):
    """Abstract construction + per-layer files + a scanned stack + heads the checkpoint lacks."""
    reference = reference_pretraining(10)
    base = jxb.BertModel(jxb.BertConfig(VOCAB, **TINY))
    base.load_state_dict(torch_state_numpy(reference))
    base.save_pretrained(tmp_path)
    scanned, info = jxb.BertForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, config_overrides={"scan_layers": True}, output_loading_info=True
    )
    assert info["missing_keys"] == ["classifier.bias", "classifier.weight"]
    assert scanned.bert.encoder.layer.attention.self.query.weight.shape == (2, 32, 32)
    assert 0.01 < float(np.std(np.asarray(scanned.classifier.weight[...]))) < 0.03  # N(0, 0.02) init
    ids, types, mask = inputs(11)
    np.testing.assert_allclose(scanned.bert(ids, types, mask)[1], base(ids, types, mask)[1], atol=1e-6)

"""Weight files that are not (only) weights, archives that are bombs or escape, corrupt cache entries, and token
ids out of range: each refused with an error naming the file/key/id, nothing left behind."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
import torch

from jaxformers.layers import Embedding
from jaxformers.models import bert as jxb

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=16)
VOCAB = 19


@pytest.fixture(scope="module")
def torch_state() -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.array(value)) for key, value in
            jxb.BertModel(jxb.BertConfig(VOCAB, **TINY)).torch_state_dict().items()}


def _directory(root: Path, state: dict[str, torch.Tensor]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(jxb.BertConfig(VOCAB, **TINY).to_json_string())
    torch.save(state, root / "pytorch_model.bin")
    return root


KEY = "encoder.layer.0.output.dense.weight"


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8, torch.int64, torch.complex64])
def test_non_float_weights_are_refused_naming_key_and_dtype(tmp_path, torch_state, dtype):
    state = dict(torch_state)
    state[KEY] = state[KEY].to(dtype)
    directory = _directory(tmp_path, state)
    for strict in (False, True):
        with pytest.raises(ValueError, match=rf"(?s)pytorch_model\.bin.*floating point.*{KEY}: {str(dtype)[6:]}"):
            jxb.BertModel.from_pretrained(directory, strict=strict)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_bfloat16_and_double_weights_convert_to_float32(tmp_path, torch_state, dtype):
    state = dict(torch_state)
    state[KEY] = state[KEY].to(dtype)
    model = jxb.BertModel.from_pretrained(_directory(tmp_path, state), strict=True)
    loaded = model.encoder.layer[0].output.dense.weight[...]
    assert loaded.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(loaded).T, state[KEY].float().numpy())


def test_nan_and_inf_are_reported_by_key_and_fail_a_strict_load(tmp_path, torch_state, caplog):
    state = dict(torch_state)
    state[KEY] = state[KEY].clone()
    state[KEY][0, 0] = float("nan")
    state["pooler.dense.bias"] = state["pooler.dense.bias"].clone()
    state["pooler.dense.bias"][3] = float("-inf")
    directory = _directory(tmp_path, state)
    with caplog.at_level(logging.WARNING, logger="jaxformers"):
        jxb.BertModel.from_pretrained(directory)
    assert any("NaN or infinite" in r.getMessage() and KEY in r.getMessage() and "pooler.dense.bias" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(ValueError, match=rf"strict load of .*pytorch_model\.bin.*NaN or infinite.*{KEY}"):
        jxb.BertModel.from_pretrained(directory, strict=True)


def test_torch_bin_with_a_non_tensor_entry_names_file_and_key(tmp_path, torch_state):
    state = dict(torch_state)
    state["encoder.layer.0.note"] = {"nested": 1}
    directory = _directory(tmp_path, state)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*'encoder\.layer\.0\.note' is a dict, not a tensor"):
        jxb.BertModel.from_pretrained(directory)


@pytest.mark.parametrize("top", [[1, 2, 3], 7, "weights"])
def test_msgpack_whose_top_level_is_not_a_dict_names_the_file(tmp_path, top):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "config.json").write_text(jxb.BertConfig(VOCAB, **TINY).to_json_string())
    (directory / "flax_model.msgpack").write_bytes(msgpack.packb(top))
    with pytest.raises(ValueError, match=r"flax_model\.msgpack.*at the top level"):
        jxb.BertModel.from_pretrained(directory)
    (directory / "flax_model.msgpack").write_bytes(msgpack.packb({"encoder": [1, 2]}))
    with pytest.raises(ValueError, match=r"flax_model\.msgpack.*'encoder' is a list, not an array"):
        jxb.BertModel.from_pretrained(directory)


# ------------------------------------------------------------------------------------------------------ archives


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's directory for the test alone: what a load leaves there is visible."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_failed_archive_load_leaves_nothing_in_the_temp_dir(tmp_path, torch_state, private_tmp):
    directory = _directory(tmp_path / "model", torch_state)
    good = [_file(name, (directory / name).read_bytes()) for name in ("config.json", "pytorch_model.bin")]
    loaded = jxb.BertModel.from_pretrained(_tar(tmp_path / "good.tar.gz", good))
    assert loaded.config.vocab_size == VOCAB and not list(private_tmp.iterdir())
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes((tmp_path / "good.tar.gz").read_bytes()[:200])  # truncated
    with pytest.raises(OSError, match=r"broken\.tar\.gz"):
        jxb.BertModel.from_pretrained(broken)
    no_weights = _tar(tmp_path / "noweights.tar.gz", good[:1])
    with pytest.raises(FileNotFoundError):
        jxb.BertModel.from_pretrained(no_weights)
    assert not list(private_tmp.iterdir())


def test_archive_bombs_links_and_escaping_paths_are_refused(tmp_path, private_tmp):
    bomb = _tar(tmp_path / "bomb.tar.gz", [_file("config.json", b"{}"), _file("pytorch_model.bin", bytes(300 << 20))])
    assert bomb.stat().st_size < 400_000
    with pytest.raises(ValueError, match=r"bomb\.tar\.gz.*'pytorch_model\.bin'.*past"):
        jxb.BertModel.from_pretrained(bomb)
    link = tarfile.TarInfo("pytorch_model.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("config.json")
    hard.type, hard.linkname = tarfile.LNKTYPE, "x"
    for name, members, message in (
            ("symlink", [_file("config.json", b"{}"), (link, None)], "link or special file"),
            ("hardlink", [(hard, None)], "link or special file"),
            ("escape", [_file("../../escaped.json", b"{}")], "points outside"),
            ("absolute", [_file("/tmp/absolute.json", b"{}")], "points outside"),
            ("many", [_file(f"f{i}", b"") for i in range(1001)], "more than 1000 members")):
        with pytest.raises(ValueError, match=rf"{name}\.tar\.gz.*{message}"):
            jxb.BertModel.from_pretrained(_tar(tmp_path / f"{name}.tar.gz", members))
    assert not (tmp_path / "escaped.json").exists() and not list(private_tmp.iterdir())


# ------------------------------------------------------------------------------------------------ the hub cache


def test_corrupt_cached_weights_name_the_cache_file_and_how_to_refetch(tmp_path, torch_state, monkeypatch):
    from local_hub import LocalHub

    hub_root = tmp_path / "hub"
    _directory(hub_root / "google-bert" / "bert-base-uncased", torch_state)
    cache = tmp_path / "cache"
    with LocalHub(hub_root) as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        jxb.BertModel.from_pretrained("bert-base-uncased", cache_dir=cache)
        size = (hub_root / "google-bert/bert-base-uncased/pytorch_model.bin").stat().st_size
        cached = [path for path in cache.rglob("*") if path.is_file() and not path.is_symlink()
                  and path.stat().st_size == size]
        assert len(cached) == 1
        cached[0].write_bytes(cached[0].read_bytes()[:1000])  # corrupted on disk after a good download...
        os.utime(cached[0], (1e9, 1e9))  # ...long ago (a fresh blob would be re-hashed and dropped as in transit)
        with pytest.raises(OSError) as caught:
            jxb.BertModel.from_pretrained("bert-base-uncased", cache_dir=cache)
    message = str(caught.value)
    assert repr(os.path.realpath(cached[0])) in message and "force_download=True" in message


# ------------------------------------------------------------------------------------------------------ token ids


def test_out_of_range_ids_under_jit_give_nan_rows_including_negative():
    table = Embedding(7, 3, rngs=__import__("flax").nnx.Rngs(0))
    ids = jnp.array([[0, -1, 6, 7, -7, 3]])
    out = np.asarray(jax.jit(lambda x: table(x))(ids))
    nan_rows = np.isnan(out).all(-1)[0]
    assert nan_rows.tolist() == [False, True, False, True, True, False]
    np.testing.assert_array_equal(out[0, 2], np.asarray(table.weight[...])[6])
    for bad in (-1, 7):
        with pytest.raises(ValueError, match=rf"token id {bad} is out of range"):
            table(np.array([[1, bad]]))

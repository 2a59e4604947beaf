"""Gaps an audit of issue 12 found in the tests of the other issue-12 files: torch storages as a decompression
bomb (each zip member was bounded alone, their sum was not), read_torch_bin against torch.load for the views
torch writes (offsets, strides, tied and bf16 views, zip and legacy formats), truncated downloads without
Content-Length (a small git-blob-ETag hub file, plain URLs), archive loads failing after the extraction (nothing
left in the temp dir), and loads racing a stream of saves (no kill) seeing one whole save."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxformers.modeling_utils import read_torch_bin  # noqa: E402
from jaxformers.safe_pickle import load_pickled_data  # noqa: E402


def _deflated(raw: bytes) -> bytes:
    """The same torch.save zip with every member deflated (zipfile reads it; zeros shrink about 1000 x)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    return out.getvalue()


def test_many_deflated_storages_hit_the_decoded_size_bound(tmp_path):
    # 32 one-element views of 32 distinct 1 MiB storages: torch.save writes each whole storage. Deflated, the file
    # is ~35 KB; every member alone is under the per-member bound, together they are 32 MiB (the reader used to
    # inflate them all: 344 KB became 512 MiB resident with 300 members).
    buffer = io.BytesIO()
    torch.save([torch.zeros(1 << 18)[:1] for _ in range(32)], buffer)
    path = tmp_path / "corpus.bin"
    path.write_bytes(_deflated(buffer.getvalue()))
    assert path.stat().st_size < 200_000
    with pytest.raises(pickle.UnpicklingError, match=r"corpus\.bin.*storage '\d+'.*decompression bomb"):
        load_pickled_data(path)
    # The same views over storages of their own size load (the bound is on bytes, not on members).
    buffer = io.BytesIO()
    torch.save([torch.zeros(1 << 18)[:1].clone() for _ in range(32)], buffer)
    path.write_bytes(_deflated(buffer.getvalue()))
    assert [array.tolist() for array in load_pickled_data(path)] == [[0.0]] * 32


def _views_state() -> OrderedDict:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(8, 6, generator=generator)
    tied = torch.nn.Parameter(base.clone())  # one Parameter under two names, as tied embeddings are saved
    bf16 = torch.randn(5, 4, generator=generator).bfloat16()
    return OrderedDict([
        ("embeddings.weight", tied), ("lm_head.weight", tied), ("rows", base[2:5]), ("column", base[:, 1]),
        ("transposed", base.t()), ("every_other", base[::2, 1::2]), ("half", base.half()[1:]),
        ("bf16", bf16), ("bf16_view", bf16[1:, ::2]), ("scalar", torch.tensor(3.5)), ("empty", torch.zeros(0, 4)),
    ])


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-0.6.x"])
def test_read_torch_bin_equals_torch_load_for_views_and_tied_storages(tmp_path, zip_format):
    state = _views_state()
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    expected = torch.load(path, weights_only=True)  # torch's own reader is the reference
    ours = read_torch_bin(path)
    assert list(ours) == list(expected)
    for key, tensor in expected.items():
        assert ours[key].shape == tuple(tensor.shape), key
        assert str(ours[key].dtype) == str(tensor.dtype).removeprefix("torch."), key
        np.testing.assert_array_equal(np.asarray(ours[key], np.float32), tensor.detach().float().numpy(),
                                      err_msg=key)


def test_truncated_small_hub_file_without_content_length_is_never_cached(tmp_path, monkeypatch):
    """config.json-like files carry git's blob sha1 as ETag (not sha256): the check must cover them too."""
    from local_hub import LocalHub

    from jaxformers.file_utils import hub_file

    for variable in ("JAXFORMERS_CACHE", "JAXFORMERS_ENDPOINT", "JAXFORMERS_OFFLINE", "HF_HUB_OFFLINE",
                     "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    repo = tmp_path / "hub" / "some-org" / "tiny"
    repo.mkdir(parents=True)
    content = ("[PAD]\n[UNK]\n" + "".join(f"w{i}\n" for i in range(500))).encode()
    (repo / "vocab.txt").write_bytes(content)
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.faults["vocab.txt"] = "truncate-unsized"
        with pytest.raises(OSError, match=rf"{hub.url}/some-org/tiny/resolve/main/vocab\.txt.*hash to the ETag"):
            hub_file("some-org/tiny", "vocab.txt")
        cache = tmp_path / "hf-home" / "hub" / "models--some-org--tiny"
        assert not [path for folder in ("blobs", "snapshots") for path in (cache / folder).rglob("*")
                    if path.is_file() or path.is_symlink()]
        del hub.faults["vocab.txt"]
        assert Path(hub_file("some-org/tiny", "vocab.txt")).read_bytes() == content


def _archive(path: Path, config: bytes, weights: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member, data in (("config.json", config), ("pytorch_model.bin", weights)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_failed_archive_loads_leave_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    """Failures after the extraction (non-float weights, NaN or missing keys with strict=True, a broken config)
    as well as a truncated archive: the temporary directory is empty again after each."""
    import tempfile

    from jaxformers.models import bert

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = bert.BertConfig(19, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                             max_position_embeddings=16)
    state = {k: torch.from_numpy(np.array(v)) for k, v in bert.BertModel(config).torch_state_dict().items()}
    key = "encoder.layer.0.output.dense.weight"

    def saved(weights: dict) -> bytes:
        buffer = io.BytesIO()
        torch.save(weights, buffer)
        return buffer.getvalue()

    good = config.to_json_string().encode()
    cases = {"ints": (good, dict(state, **{key: state[key].long()}), "floating point"),
             "nan": (good, dict(state, **{key: state[key].clone().fill_(float("nan"))}), "NaN"),
             "missing": (good, {k: v for k, v in state.items() if k != key}, "missing keys"),
             "config": (b"{broken", state, "not valid JSON")}
    for name, (config_bytes, weights, message) in cases.items():
        path = _archive(tmp_path / f"{name}.tar.gz", config_bytes, saved(weights))
        with pytest.raises((OSError, ValueError), match=message) as caught:
            bert.BertModel.from_pretrained(path, strict=True)
        assert not list(scratch.iterdir()), name
        # The message names a file of the deleted extraction directory; a note names the archive it came from.
        assert str(path) in " ".join(getattr(caught.value, "__notes__", [])), name
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes((tmp_path / "config.tar.gz").read_bytes()[:3000])
    with pytest.raises(OSError, match=r"truncated\.tar\.gz"):
        bert.BertModel.from_pretrained(truncated, strict=True)
    assert not list(scratch.iterdir())


SAVER_LOOP = r"""
import importlib.util, json, os, re, sys, time
spec = json.loads(sys.argv[1])
real_replace = os.replace
def slow_replace(source, destination):  # widens the moment a mix is visible without the lock: 30 ms per file
    real_replace(source, destination)
    time.sleep(0.03)
os.replace = slow_replace
module_spec = importlib.util.spec_from_file_location("atomic_save", spec["module"])
atomic_save = importlib.util.module_from_spec(module_spec)
module_spec.loader.exec_module(atomic_save)
sources = []
for source in spec["sources"]:
    files = {}
    for name in sorted(os.listdir(source)):
        with open(os.path.join(source, name), "rb") as reader:
            files[name] = reader.read()
    sources.append(files)
pattern = re.compile(spec["stale"])
switches = 0
while not os.path.exists(spec["stop"]):
    files = sources[switches % 2]
    atomic_save.replace_files(spec["target"], {name: (lambda data: lambda stream: stream.write(data))(data)
                                               for name, data in files.items()},
                              stale=lambda name: bool(pattern.match(name)))
    switches += 1
    time.sleep(0.05 * (switches % 3))  # off the loads' rhythm, so that loads meet either save
print(switches)
"""


def test_loads_during_a_stream_of_saves_see_one_whole_save(tmp_path):
    """No kill here: one process switches a directory between two different saves as fast as it can, while
    from_pretrained loads it again and again. Each load must be one whole save (config and weights together).
    Without the shared lock loads take (consistent_reads replaced by a no-op) this fails: config of one save,
    weights of the other."""
    import jaxformers
    from jaxformers.saving import _WEIGHT_FILE
    from test_atomic_save import SIZES, params_of

    old = jaxformers.BertForSequenceClassification(jaxformers.BertConfig(40, **SIZES), num_labels=2, seed=1)
    new = jaxformers.BertForSequenceClassification(
        jaxformers.BertConfig(40, **SIZES, hidden_dropout_prob=0.25), num_labels=2, seed=2)
    old.save_pretrained(tmp_path / "old", safetensors=True, pytorch=True)
    new.save_pretrained(tmp_path / "new", max_shard_size="4kB")
    expected = {0.1: params_of(old), 0.25: params_of(new)}
    target = tmp_path / "target"
    shutil.copytree(tmp_path / "old", target)
    spec = {"module": str(Path(jaxformers.__file__).with_name("atomic_save.py")), "target": str(target),
            "sources": [str(tmp_path / "new"), str(tmp_path / "old")], "stale": _WEIGHT_FILE.pattern,
            "stop": str(tmp_path / "stop")}
    saver = subprocess.Popen([sys.executable, "-I", "-S", "-c", SAVER_LOOP, json.dumps(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for _ in range(6):
            loaded = jaxformers.BertForSequenceClassification.from_pretrained(target, num_labels=2, strict=True)
            dropout = loaded.config.hidden_dropout_prob
            seen.append(dropout)
            for key, value in params_of(loaded).items():
                np.testing.assert_array_equal(value, expected[dropout][key], err_msg=f"{key} (config {dropout})")
    finally:
        (tmp_path / "stop").touch()
        out, err = saver.communicate(timeout=120)
    assert saver.returncode == 0, err[-2000:]
    assert int(out) >= 2, (out, seen)  # the saves really ran during the loads


def test_plain_url_cut_short_without_content_length_is_never_cached(tmp_path, monkeypatch):
    """Any other http(s) URL (here the local hub under another host name): a body cut short with no
    Content-Length is caught by the content-hash ETag the server states, and nothing enters <cache>/urls."""
    from local_hub import LocalHub

    from jaxformers import file_utils

    for variable in ("JAXFORMERS_CACHE", "JAXFORMERS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                     "HF_HUB_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    (tmp_path / "hub" / "files").mkdir(parents=True)
    contents = {"model.tar.gz": bytes(range(256)) * 64, "notes.txt": b"hello\n" * 1000}  # sha256 / git-sha1 ETags
    for name, content in contents.items():
        (tmp_path / "hub" / "files" / name).write_bytes(content)
    urls = tmp_path / "hf-home" / "hub" / "urls"
    with LocalHub(tmp_path / "hub") as hub:
        for name, content in contents.items():
            url = hub.url.replace("127.0.0.1", "localhost") + f"/files/resolve/main/{name}"
            hub.faults[name] = "truncate-unsized"
            with pytest.raises(OSError, match=rf"{url}: the {len(content) // 2} bytes received do not hash"):
                file_utils.cached_path(url)
            assert not urls.exists() or not [path for path in urls.iterdir() if name in path.name]
            del hub.faults[name]
            assert Path(file_utils.cached_path(url)).read_bytes() == content

"""Fuzzing the file readers: hypothesis-generated pickles and mutations (byte flips, truncations, splices) of
valid vocab.bin / corpus.bin / pytorch_model.bin / model.safetensors / flax_model.msgpack files made here.

Every file is loaded in a child process (tests/fuzz_worker.py) under an address-space limit (RLIMIT_AS, 1 GiB
beyond its imports) and a per-case timer, with a fresh empty working directory and TMPDIR. Allowed outcomes: a
load, or an UnpicklingError/ValueError/OSError whose message names the file. A signal (crash), a hang, a
MemoryError, another exception type, an error not naming the file, or a file created anywhere fails the test.
Cases are batched (hundreds per child) to keep the whole module well under a minute.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WORKER = Path(__file__).with_name("fuzz_worker.py")
CLEAN_ERRORS = {"UnpicklingError", "ValueError", "OSError"}
MUTANTS_PER_FILE = 150
# Whole batch: generous for a loaded CI machine (jax/torch imports); a hang within a case is caught by the
# worker's own per-case timer (fuzz_worker.CASE_SECONDS) and reported with the case's name.
BATCH_SECONDS = 300


# --------------------------------------------------------------------------------------------- valid files


def _vocab_state() -> dict:
    symbols = ["<eos>", "<unk>", "the", "cat", "sat", "on", "mat"]
    return {"idx2sym": symbols, "sym2idx": OrderedDict((s, i) for i, s in enumerate(symbols)),
            "counter": Counter({"the": 5, "cat": 2, "sat": 1}), "special": ["<eos>", "<unk>"], "min_freq": 0,
            "max_size": None, "lower_case": False, "delimiter": None, "vocab_file": None, "unk_idx": 1}


def _torch_bytes(obj, zip_format: bool) -> bytes:
    """torch.save output, made reproducible: the zip layout's random serialization id is replaced."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    if not zip_format:
        return buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, b"0" * len(data) if info.filename.endswith("serialization_id") else data)
    return out.getvalue()


def valid_files() -> dict[str, bytes]:
    """name -> content; names say what reader the weights worker uses (the light worker reads all pickles)."""
    files: dict[str, bytes] = {}
    for zip_format in (False, True):
        suffix = "zip" if zip_format else "legacy"
        files[f"vocab-{suffix}/vocab.bin"] = _torch_bytes(_vocab_state(), zip_format)
        files[f"corpus-{suffix}/corpus.bin"] = _torch_bytes(
            {"dataset": "wt103", "train": torch.arange(40), "valid": np.arange(9, dtype=np.int64),
             "test": [torch.arange(3), torch.arange(2)]}, zip_format)
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(6, 4, generator=generator)
        state = OrderedDict(w=weight, tied=weight, b=torch.randn(6, generator=generator).half(),
                            e=torch.randn(3, 2, generator=generator).bfloat16())
        files[f"torch-{suffix}/pytorch_model.bin"] = _torch_bytes(state, zip_format)
    files["vocab-pickle/vocab.bin"] = pickle.dumps(_vocab_state(), protocol=2)
    from flax import serialization
    from safetensors.numpy import save

    arrays = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "a.bias": np.ones(3, np.float16)}
    files["safetensors/model.safetensors"] = save(arrays)
    files["msgpack/flax_model.msgpack"] = serialization.msgpack_serialize(
        {"a": {"weight": arrays["a.weight"], "bias": arrays["a.bias"]}, "b": np.zeros((2, 2), np.float32)})
    return files


def mutants(name: str, data: bytes, others: list[bytes], rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """Byte flips, truncations, splices (a chunk of another file or of itself inserted or overwritten)."""
    out = []
    for index in range(count):
        kind = index % 4
        blob = bytearray(data)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        elif kind == 1:
            blob = blob[: rng.randrange(len(blob))]
        elif kind == 2:
            source = rng.choice(others)
            start = rng.randrange(len(source))
            chunk = source[start:start + rng.randint(1, 64)]
            at = rng.randrange(len(blob) + 1)
            blob[at:at + (len(chunk) if rng.random() < 0.5 else 0)] = chunk
        else:  # numbers that matter (lengths, sizes, shapes) pushed to extremes
            at = rng.randrange(max(1, len(blob) - 8))
            blob[at:at + 8] = struct.pack("<Q", rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 2**62, 2**64 - 1]))
        out.append((f"{kind}-{index}", bytes(blob)))
    return out


# ----------------------------------------------------------------------------------------- running a batch


def run_batch(kind: str, cases: list[tuple[str, bytes]], root: Path) -> subprocess.Popen:
    """Write the cases under root/in, start a worker in the empty root/cwd; returns the process."""
    (root / "in").mkdir(parents=True)
    (root / "cwd").mkdir()
    (root / "tmp").mkdir()
    paths = []
    for index, (name, data) in enumerate(cases):
        path = root / "in" / str(index) / name  # the file keeps the name its reader expects
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        paths.append(str(path))
    (root / "manifest.json").write_text(json.dumps(paths))
    environment = {**os.environ, "TMPDIR": str(root / "tmp"), "JAX_PLATFORMS": "cpu",
                   "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(WORKER), kind, str(root / "manifest.json")], cwd=root / "cwd",
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_batch(process: subprocess.Popen, cases: list[tuple[str, bytes]], root: Path,
                timeout: float = BATCH_SECONDS) -> None:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    started = [line["start"] for line in lines if "start" in line]
    culprit = cases[started[-1]][0] if started else "(before the first case)"
    assert process.returncode == 0 and lines and "done" in lines[-1], (
        f"worker died (return code {process.returncode}, negative = signal) or hung while loading {culprit}; "
        f"stderr:\n{stderr[-3000:]}")
    paths = json.loads((root / "manifest.json").read_text())
    for line in lines:
        if "outcome" not in line:
            continue
        name, path = cases[line["index"]][0], paths[line["index"]]
        assert line["outcome"] in ("loaded", "error"), f"{name} ({path}): {line['outcome']}"
        if line["outcome"] == "error":
            assert CLEAN_ERRORS & set(line["bases"]), f"{name}: unclean {line['type']}: {line['message']}"
            assert path in line["message"] or repr(path) in line["message"], (
                f"{name}: the error does not name the file: {line['type']}: {line['message']}")
    assert not list((root / "cwd").iterdir()) and not list((root / "tmp").iterdir()), "the loads created files"


def _mutated_cases(files: dict[str, bytes], names: list[str], seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    others = list(files.values())
    cases = []
    for name in names:
        cases.append((name, files[name]))
        cases.extend((f"{name}#{tag}", blob) for tag, blob in mutants(name, files[name], others, rng, MUTANTS_PER_FILE))
    return cases


def _as_files(cases: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Labels ("torch-zip/pytorch_model.bin#2-7") -> the file name its reader expects ("pytorch_model.bin")."""
    return [(label.split("#")[0].split("/")[-1], data) for label, data in cases]


def test_mutated_files_load_or_fail_cleanly(tmp_path):
    files = valid_files()
    pickles = [name for name in files if name.endswith((".bin",))]
    weights = [name for name in files if not name.startswith(("vocab", "corpus"))]
    light_cases = _mutated_cases(files, pickles, seed=1)
    weight_cases = _mutated_cases(files, weights, seed=2)
    # Both workers at once: the weights worker spends most of its time importing jax and torch.
    heavy = run_batch("weights", _as_files(weight_cases), tmp_path / "weights")
    light = run_batch("light", _as_files(light_cases), tmp_path / "light")
    check_batch(light, light_cases, tmp_path / "light")
    check_batch(heavy, weight_cases, tmp_path / "weights")


# ---------------------------------------------------------------------------------- hypothesis: pickles


_GLOBALS = [("collections", "OrderedDict"), ("collections", "Counter"), ("numpy", "dtype"), ("numpy", "ndarray"),
            ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"), ("builtins", "set"), ("builtins", "bytes"),
            ("builtins", "bytearray"), ("_codecs", "encode"), ("torch._utils", "_rebuild_tensor_v2"),
            ("torch", "FloatStorage"), ("builtins", "getattr"), ("posix", "system"), ("copyreg", "_reconstructor")]

_FRAGMENTS = st.one_of(
    st.sampled_from([b"(", b"t", b")", b"]", b"}", b"l", b"d", b"a", b"e", b"s", b"u", b"R", b"b", b"0", b"1",
                     b"2", b"N", b"\x88", b"\x89", b"\x85", b"\x86", b"\x87", b"\x8f", b"\x90", b"\x91", b"\x94",
                     b"Q", b"\x81", b"\x92", b"o", b"i", b"\x93"]),
    st.integers(0, 255).map(lambda i: b"K" + bytes([i])),
    st.integers(-2**31, 2**31 - 1).map(lambda i: b"J" + struct.pack("<i", i)),
    st.integers(0, 2**32 - 1).map(lambda i: b"h" + bytes([i & 255])),
    st.integers(0, 2**32 - 1).map(lambda i: b"j" + struct.pack("<I", i)),
    st.integers(0, 2**32 - 1).map(lambda i: b"r" + struct.pack("<I", i)),
    st.sampled_from([0, 1, 8, 24, 2**32 - 1]).map(lambda n: b"B" + struct.pack("<I", n) + b"\x00" * min(n, 24)),
    st.sampled_from(["f8", "i8", "O8", "<", "|", "C", "latin1", "storage", "0", "cpu"]).map(
        lambda text: b"X" + struct.pack("<I", len(text)) + text.encode()),
    st.sampled_from(_GLOBALS).map(lambda g: b"c" + g[0].encode() + b"\n" + g[1].encode() + b"\n"),
)

_PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
              st.binary(max_size=20),
              st.builds(lambda n, k: (np.arange(n) % 3).astype(k), st.integers(0, 20),
                        st.sampled_from(["int64", "float32", "float16", "uint8", "bool"]))),
    lambda children: st.one_of(st.lists(children, max_size=5), st.tuples(children, children),
                               st.dictionaries(st.text(max_size=5), children, max_size=5),
                               st.dictionaries(st.text(max_size=5), children, max_size=5).map(Counter),
                               st.dictionaries(st.text(max_size=5), children, max_size=5).map(OrderedDict)),
    max_leaves=10)


def _generated(strategy, count: int) -> list:
    """`count` examples of `strategy` drawn by hypothesis (reproducible), to be checked as one batch: one child
    process for all of them instead of one per example."""
    drawn: list = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example):
        drawn.append(example)

    collect()
    return drawn


def test_generated_pickles_load_or_fail_cleanly(tmp_path):
    """Opcode soups (allowed and forbidden globals, extreme lengths and memo indexes) must load or fail cleanly;
    plain data pickled with every protocol must load, and equal what was pickled (checked in-process)."""
    from jaxformers.safe_pickle import load_pickled_data

    soups = _generated(st.lists(_FRAGMENTS, max_size=40), 400)
    values = _generated(st.tuples(_PLAIN, st.integers(0, 5)), 150)
    cases = [("soup", b"\x80\x02" + b"".join(soup) + b".") for soup in soups]
    cases += [("plain", pickle.dumps(value, protocol=protocol)) for value, protocol in values]
    check_batch(run_batch("light", [("vocab.bin", data) for _, data in cases], tmp_path), cases, tmp_path)
    for index, (value, protocol) in enumerate(values):
        path = tmp_path / "plain.bin"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert _same(load_pickled_data(path), value), (index, value)


def _same(got, expected) -> bool:
    if isinstance(expected, np.ndarray):
        return isinstance(got, np.ndarray) and got.dtype == expected.dtype and np.array_equal(got, expected)
    if isinstance(expected, (list, tuple)):
        return type(got) is type(expected) and len(got) == len(expected) and all(map(_same, got, expected))
    if isinstance(expected, dict):
        return type(got) is type(expected) and list(got) == list(expected) and all(
            _same(got[key], expected[key]) for key in expected)
    return type(got) is type(expected) and got == expected


def test_unmutated_files_load_correctly(tmp_path):
    from jaxformers.modeling_utils import read_msgpack, read_safetensors, read_torch_bin
    from jaxformers.safe_pickle import load_pickled_data

    for name, data in valid_files().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert _same(load_pickled_data(tmp_path / "vocab-legacy/vocab.bin"), _vocab_state())
    assert _same(load_pickled_data(tmp_path / "vocab-pickle/vocab.bin"), _vocab_state())
    corpus = load_pickled_data(tmp_path / "corpus-zip/corpus.bin")
    np.testing.assert_array_equal(corpus["train"], np.arange(40))
    for suffix in ("zip", "legacy"):
        ours = load_pickled_data(tmp_path / f"torch-{suffix}/pytorch_model.bin")
        theirs = read_torch_bin(tmp_path / f"torch-{suffix}/pytorch_model.bin")
        assert list(ours) == list(theirs) == ["w", "tied", "b", "e"]
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key
    assert set(read_safetensors(tmp_path / "safetensors/model.safetensors")) == {"a.weight", "a.bias"}
    assert set(read_msgpack(tmp_path / "msgpack/flax_model.msgpack")) == {"a.weight", "a.bias", "b"}

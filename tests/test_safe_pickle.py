"""The restricted pickle reader (jaxformers.safe_pickle) against crafted files: code-execution tricks through
numpy dtypes, decompression bombs, exponential sharing, cycles, and everything a plain-data file legitimately
holds. Crafted pickles are assembled opcode by opcode here, so each test shows exactly what the file says."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import textwrap
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch

from jaxformers import safe_pickle
from jaxformers.safe_pickle import UnsafePickleError, load_pickled_data


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _load_in_subprocess(path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Load in a child process: a crash (segfault) or hang there fails the test instead of killing pytest."""
    # The module is loaded on its own (it needs only numpy): importing the package would start jax.
    code = textwrap.dedent(f"""
        import importlib.util, pickle, sys
        spec = importlib.util.spec_from_file_location("safe_pickle", {safe_pickle.__file__!r})
        module = sys.modules["safe_pickle"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        load_pickled_data = module.load_pickled_data
        try:
            load_pickled_data({str(path)!r})
        except pickle.UnpicklingError as error:
            print("REFUSED", type(error).__name__, error)
            sys.exit(3)
        print("LOADED")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_object_flags_smuggled_into_a_numeric_dtype_are_refused(tmp_path):
    # numpy.dtype('f8') whose pickled state sets NPY_ITEM_HASOBJECT (flag 1): numpy's own dtype.__setstate__
    # accepts that, and numpy scalar/_frombuffer then treat the file's bytes as PyObject* pointers (arbitrary
    # code on non-PIE builds, a segfault elsewhere). The previous reader loaded this file without complaint.
    dtype = (_global("numpy", "dtype") + _unicode("f8") + b"\x89\x88\x87R"
             + b"(" + b"K\x03" + _unicode("|") + b"NNN" + _int(8) + _int(8) + _int(1) + b"tb")
    for tail in (_global("numpy.core.multiarray", "scalar") + dtype + _bytes(b"\x41" * 8) + b"\x86R.",
                 _global("numpy._core.numeric", "_frombuffer") + dtype.join([b"(" + _bytes(b"\x41" * 8), b""])
                 + b"K\x01\x85" + _unicode("C") + b"tR."):
        path = tmp_path / "vocab.bin"
        path.write_bytes(b"\x80\x02" + tail)
        result = _load_in_subprocess(path)
        assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
        assert "REFUSED UnsafePickleError" in result.stdout and str(path) in result.stdout
        assert "dtype state" in result.stdout


@pytest.mark.parametrize("spec", ["O8", "V8", "U3", "S4", "c16", "M8"])
def test_object_string_and_structured_dtypes_are_refused(tmp_path, spec):
    path = tmp_path / "vocab.bin"
    path.write_bytes(b"\x80\x02" + _global("numpy", "dtype") + _unicode(spec) + b"\x89\x88\x87R.")
    with pytest.raises(UnsafePickleError, match=rf"vocab\.bin.*{spec}.*not an allowed numeric dtype"):
        load_pickled_data(path)


def test_object_arrays_written_by_numpy_are_refused(tmp_path):
    path = tmp_path / "corpus.bin"
    path.write_bytes(pickle.dumps({"train": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"corpus\.bin.*numpy\.dtype.*O8"):
        load_pickled_data(path)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numeric_arrays_and_scalars_load_exactly(tmp_path, protocol):
    arrays = {name: np.arange(12).astype(name).reshape(3, 4) for name in
              ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
               "float32", "float64")}
    arrays["fortran"] = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    arrays["big_endian"] = np.arange(5, dtype=">i4")
    arrays["empty"] = np.zeros((0, 3), np.float32)
    data = {"arrays": arrays, "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True)],
            "counter": Counter({"a": 2}), "ordered": OrderedDict(b=1), "set": {1, (2, "x")}, "frozen": frozenset({3}),
            "bytes": b"\x00\xff", "bytearray": bytearray(b"ab"), "complex": 1 + 2j, "none": None}
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickled_data(path)
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded["arrays"][name], array)
        assert loaded["arrays"][name].dtype == array.dtype, name
        assert loaded["arrays"][name].flags.writeable
    assert [type(s) for s in loaded["scalars"]] == [np.float32, np.int64, np.bool_]
    assert loaded["scalars"] == data["scalars"]
    for key in ("counter", "ordered", "set", "frozen", "bytes", "bytearray", "complex", "none"):
        assert loaded[key] == data[key] and type(loaded[key]) is type(data[key]), key


def test_array_bytes_must_match_the_shape(tmp_path):
    good = pickle.dumps(np.arange(4, dtype=np.int64), protocol=2)
    raw = np.arange(4, dtype=np.int64).tobytes()
    path = tmp_path / "corpus.bin"
    # claim shape (40,) over 32 bytes of data (numpy's setstate would also refuse; the check is ours)
    path.write_bytes(good.replace(b"K\x04\x85", b"K\x28\x85", 1))
    with pytest.raises(pickle.UnpicklingError, match=r"corpus\.bin.*needs 320 bytes, the file gives 32"):
        load_pickled_data(path)
    assert raw  # the data itself is plain


def test_stride0_view_claiming_more_elements_than_its_storage_is_refused(tmp_path):
    path = tmp_path / "corpus.bin"
    for zip_format in (True, False):
        # 636 bytes that used to become a 256 MiB array
        torch.save({"train": torch.zeros(1).expand(1 << 26)}, path, _use_new_zipfile_serialization=zip_format)
        with pytest.raises(pickle.UnpicklingError, match=r"corpus\.bin.*claims 67108864 elements.*holds only 1"):
            load_pickled_data(path)


def test_many_views_of_one_storage_hit_the_decoded_size_bound(tmp_path):
    base = torch.zeros(4096)
    path = tmp_path / "corpus.bin"
    torch.save({index: base.view(-1) for index in range(2000)}, path)  # ~32 MiB decoded from ~150 KB
    with pytest.raises(pickle.UnpicklingError, match=r"corpus\.bin.*decompression bomb"):
        load_pickled_data(path)
    torch.save({index: base.view(-1) for index in range(3)}, path)  # tied weights: a few views are fine
    assert len(load_pickled_data(path)) == 3


def test_repeated_constructor_calls_on_one_memoised_dict_are_bounded(tmp_path):
    # Counter(d) copies d: 10,000 calls on one 5,000-key dict would be 5e7 entries from a ~100 KB file.
    big = b"}q\x00(" + b"".join(_unicode(f"k{i}") + b"K\x01" for i in range(5000)) + b"u"
    calls = b"".join(_global("collections", "Counter") + b"h\x00\x85Ra" if i else b"" for i in range(1, 10001))
    path = tmp_path / "vocab.bin"
    path.write_bytes(b"\x80\x02]q\x01" + big + b"0" + calls + b".")
    with pytest.raises(pickle.UnpicklingError, match=r"vocab\.bin.*decompression bomb"):
        load_pickled_data(path)


def test_shared_nested_references_load_in_linear_time(tmp_path):
    # depth 60 of [x, x]: 2**60 leaves if sharing were expanded; a hang fails through the subprocess timeout.
    node: list = [torch.arange(3)]
    for _ in range(60):
        node = [node, node]
    for zip_format in (True, False):
        path = tmp_path / "corpus.bin"
        torch.save({"train": node}, path, _use_new_zipfile_serialization=zip_format)
        result = _load_in_subprocess(path, timeout=60)
        assert result.returncode == 0 and "LOADED" in result.stdout, result.stdout + result.stderr
    loaded = load_pickled_data(path)["train"]
    assert loaded[0] is loaded[1]


def test_self_referencing_list_is_refused_naming_the_file(tmp_path):
    cycle: list = [1]
    cycle.append(cycle)
    path = tmp_path / "vocab.bin"
    for data in (pickle.dumps(cycle, protocol=2), pickle.dumps({"idx2sym": cycle}, protocol=0)):
        path.write_bytes(data)
        with pytest.raises(pickle.UnpicklingError, match=r"vocab\.bin.*contains itself"):
            load_pickled_data(path)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "vocab.bin"
    path.write_bytes(b"\x80\x02" + b"]" * 5_000 + b"a" * 4_999 + b".")
    with pytest.raises(pickle.UnpicklingError, match=r"vocab\.bin.*nested deeper than"):
        load_pickled_data(path)
    # a tuple nested 100,000 deep used as a dict key: hashing it would overflow the C stack
    path.write_bytes(b"\x80\x02}" + b")" + b"\x85" * 100_000 + b"K\x01s.")
    with pytest.raises(pickle.UnpicklingError, match=r"vocab\.bin.*cannot be a dict key"):
        load_pickled_data(path)


@pytest.mark.parametrize("payload, message", [
    (_global("builtins", "bytes") + b"J\x00\xe4\x0bT\x85R.", "only bytes are allowed"),  # bytes(1.4e9)
    (b"(]o.", "opcode b'o'"),  # OBJ
    (b"(iposix\nsystem\n.", "opcode b'i'"),  # INST
    (_global("posix", "system") + _unicode("true") + b"\x85R.", "'posix.system'"),
    (_global("numpy", "ndarray") + b")R.", "calls <numpy.ndarray>"),
    (_global("collections", "OrderedDict") + b")R}b" + _global("builtins", "set") + b".", "not plain data"),
    (b"\x96" + struct.pack("<Q", 1 << 40) + b".", "BYTEARRAY8"),  # 1 TiB length in an 11-byte file
    (b"NQ.", "persistent id"),  # persistent id in a plain pickle
    (b"]" + b"h\x00" * 3 + b".", "memo value not found"),
])
def test_crafted_pickles_fail_cleanly_naming_the_file(tmp_path, payload, message):
    path = tmp_path / "vocab.bin"
    path.write_bytes(b"\x80\x05" + payload)
    with pytest.raises(pickle.UnpicklingError) as caught:
        load_pickled_data(path)
    assert str(path) in str(caught.value) and message in str(caught.value), str(caught.value)


def test_huge_memo_index_costs_nothing(tmp_path):
    # The C unpickler's memo is an array: LONG_BINPUT 2**32-1 would make it 32 GiB. Ours is a dict.
    path = tmp_path / "vocab.bin"
    path.write_bytes(b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFFF) + b"j" + struct.pack("<I", 0xFFFFFFFF)
                     + b"\x86.")
    assert load_pickled_data(path) == (None, None)


def test_legacy_and_zip_torch_files_with_shared_storages(tmp_path):
    weight = torch.randn(5, 4)
    state = OrderedDict(a=weight, tied=weight, t=weight.t(), half=weight.half(), bf16=weight.bfloat16(),
                        scalar=torch.tensor(7), ints=torch.arange(3, dtype=torch.int32))
    for zip_format in (True, False):
        path = tmp_path / "pytorch_model.bin"
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        loaded = load_pickled_data(path)
        assert list(loaded) == list(state) and loaded["a"] is loaded["tied"]
        for key, tensor in state.items():
            np.testing.assert_array_equal(np.asarray(loaded[key], np.float64), tensor.float().numpy(), err_msg=key)
        assert str(loaded["bf16"].dtype) == "bfloat16"


def test_keys_that_can_share_one_hash_are_refused(tmp_path):
    # Ints a multiple of 2**61 - 1 apart (or crafted floats) share a hash: a dict of them builds in quadratic time.
    modulus = sys.hash_info.modulus
    path = tmp_path / "vocab.bin"
    for keys in ([modulus * k for k in range(1, 4)], [0.5, 1.5], [np.int64(3)]):
        path.write_bytes(pickle.dumps(dict.fromkeys(keys, 1), protocol=2))
        with pytest.raises(pickle.UnpicklingError, match=r"vocab\.bin.*cannot be a dict key"):
            load_pickled_data(path)
    path.write_bytes(pickle.dumps({"a": 1, b"b": 2, 3: 3, -4: 4, None: 5, True: 6, (1, "x"): 7}, protocol=2))
    assert load_pickled_data(path) == {"a": 1, b"b": 2, 3: 3, -4: 4, None: 5, True: 6, (1, "x"): 7}

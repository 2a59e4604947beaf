"""Reading ``torch.save`` / pickle files without running code from them.

The 0.6.x Transformer-XL files (``vocab.bin``, ``corpus.bin``) are pickles. :func:`load_pickled_data` lets only
plain data through (dicts, lists, ``Counter``, ``OrderedDict``, numpy arrays, torch tensors rebuilt as numpy
arrays, from both the zip and the legacy ``torch.save`` layouts) and refuses any other global by name, before
anything from the file is called. torch is not needed.
"""

from __future__ import annotations

import builtins
import os
import pickle
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global (class or function) that is not on the plain-data whitelist."""


_TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # first pickle of torch's legacy (pre-1.6) format
_TORCH_LEGACY_PROTOCOL = 1001

_TORCH_STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "DoubleStorage": np.float64,
        "FloatStorage": np.float32,
        "HalfStorage": np.float16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.bool_,
    }.items()
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.LongStorage`` & co. inside a pickle: only its element type matters."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    """A torch storage: a flat buffer of `numel` elements; `values` is None until its bytes are read."""

    key: str
    dtype: np.dtype
    numel: int
    values: np.ndarray | None = None


@dataclass
class _PendingTensor:
    """A tensor whose storage bytes come after the pickle (legacy format): built once they are read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes (numpy buffers) as `_codecs.encode(text, "latin1")`.
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"_codecs.encode is only allowed with the latin1 encoding, not {encoding!r}")
    return text.encode("latin1")


def _tensor_from_storage(storage: _Storage, offset: int, shape: Sequence[int],
                         strides: Sequence[int]) -> np.ndarray:
    """numpy copy of the strided view (offset, shape, strides in elements) of a loaded storage."""
    values = storage.values
    assert values is not None
    offset, shape, strides = int(offset), tuple(int(n) for n in shape), tuple(int(s) for s in strides)
    if len(shape) != len(strides) or offset < 0 or any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise pickle.UnpicklingError(
            f"tensor view of storage {storage.key!r} is malformed: offset={offset} shape={shape} strides={strides}")
    if 0 in shape:
        return np.zeros(shape, dtype=values.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    # as_strided does no bounds checking: a crafted file must not make us read outside the buffer.
    if last >= values.size:
        raise pickle.UnpicklingError(
            f"tensor view (offset={offset}, shape={shape}, strides={strides}) reaches element {last} of "
            f"storage {storage.key!r}, which holds only {values.size} elements")
    itemsize = values.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        values[offset:], shape=shape, strides=tuple(s * itemsize for s in strides), writeable=False)
    return np.array(view, copy=True)


def _rebuild_tensor(storage: Any, offset: int, shape: Sequence[int], strides: Sequence[int],
                    *ignored: Any) -> np.ndarray | _PendingTensor:
    # Stands in for torch._utils._rebuild_tensor(_v2); the trailing requires_grad/hooks/metadata are unused.
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, expected a torch storage")
    if storage.values is None:
        return _PendingTensor(storage, int(offset), tuple(shape), tuple(strides))
    return _tensor_from_storage(storage, offset, shape, strides)


def _numpy_core(name: str) -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    module_name, attribute = name.rsplit(".", 1)
    return getattr(getattr(core, module_name), attribute)


_PLAIN_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
                   "complex", "bool")

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "Counter"): Counter,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
}
for _module in ("builtins", "__builtin__"):  # __builtin__: pickles written by Python 2
    for _name in _PLAIN_BUILTINS:
        _SAFE_GLOBALS[(_module, _name)] = getattr(builtins, _name)
for _core_name in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(f"{_core_name}.multiarray", "_reconstruct")] = _numpy_core("multiarray._reconstruct")
    _SAFE_GLOBALS[(f"{_core_name}.multiarray", "scalar")] = _numpy_core("multiarray.scalar")
    _SAFE_GLOBALS[(f"{_core_name}.numeric", "_frombuffer")] = _numpy_core("numeric._frombuffer")
for _storage_name, _dtype in _TORCH_STORAGE_DTYPES.items():
    _SAFE_GLOBALS[("torch", _storage_name)] = _StorageType(_storage_name, _dtype)
del _module, _name, _core_name, _storage_name, _dtype


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only whitelisted plain-data globals and torch storage references.

    `storage_loader(storage)` fills storages whose bytes are available while unpickling (zip format);
    without it storages stay empty and tensors come back as `_PendingTensor` (legacy format).
    """

    def __init__(self, stream: IO[bytes], source: str, storage_loader: Any = None, allow_storages: bool = False):
        super().__init__(stream)
        self._source = source
        self._storage_loader = storage_loader
        self._allow_storages = allow_storages
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refusing to load {self._source!r}: it references the global '{module}.{name}', which is not "
                "plain data (only dict/list/tuple/set/str/bytes/numbers, collections.Counter/OrderedDict, numpy "
                "arrays and torch tensors are allowed). The file may be malicious; it was not executed.")
        return found

    def persistent_load(self, saved_id: Any) -> Any:
        if not self._allow_storages:
            raise pickle.UnpicklingError(f"{self._source!r}: unexpected persistent id {saved_id!r} in a plain pickle")
        if not isinstance(saved_id, tuple) or not saved_id or _ascii(saved_id[0]) != "storage":
            raise pickle.UnpicklingError(f"{self._source!r}: unsupported torch persistent id {saved_id!r}")
        # zip format: (tag, type, key, location, numel); legacy adds view_metadata (always None since torch 1.x)
        storage_type, key, numel = saved_id[1], _ascii(saved_id[2]), saved_id[4]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._source!r}: storage {key!r} has unsupported type {storage_type!r}")
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise pickle.UnpicklingError(f"{self._source!r}: storage views (pre-1.0 torch files) are not supported")
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"{self._source!r}: storage {key!r} has invalid size {numel!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
            if self._storage_loader is not None:
                self._storage_loader(storage)
        elif storage.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"{self._source!r}: storage {key!r} is used with two element types")
        return storage


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _fill_pending(obj: Any) -> Any:
    """Replace `_PendingTensor`s inside containers (legacy torch format) by numpy arrays."""
    if isinstance(obj, _PendingTensor):
        return _tensor_from_storage(obj.storage, obj.offset, obj.shape, obj.strides)
    if isinstance(obj, dict):  # also Counter / OrderedDict: updated in place to keep their type and order
        for key, value in obj.items():
            obj[key] = _fill_pending(value)
        return obj
    if isinstance(obj, list):
        obj[:] = [_fill_pending(value) for value in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(_fill_pending(value) for value in obj)
    return obj


def _load_torch_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path!r} is a zip archive but not a torch.save file (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode("ascii")
        if byteorder not in ("little", "big"):
            raise pickle.UnpicklingError(f"{path!r}: unknown byte order {byteorder!r}")

        def load_storage(storage: _Storage) -> None:
            record = f"{prefix}data/{storage.key}"
            try:
                raw = archive.read(record)
            except KeyError:
                raise pickle.UnpicklingError(f"{path!r}: storage record {record!r} is missing") from None
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            if len(raw) != storage.numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"{path!r}: storage {record!r} holds {len(raw)} bytes, expected "
                                             f"{storage.numel} x {dtype.itemsize}")
            storage.values = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)

        with archive.open(pickles[0]) as stream:
            unpickler = RestrictedUnpickler(stream, path, storage_loader=load_storage, allow_storages=True)
            return unpickler.load()


def _load_torch_legacy(stream: IO[bytes], path: str) -> Any:
    protocol = RestrictedUnpickler(stream, path).load()
    if protocol != _TORCH_LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"{path!r}: unsupported torch legacy protocol version {protocol!r}")
    sys_info = RestrictedUnpickler(stream, path).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError(f"{path!r}: only little-endian torch files are supported")
    unpickler = RestrictedUnpickler(stream, path, allow_storages=True)
    result = unpickler.load()
    keys = RestrictedUnpickler(stream, path).load()
    # Storage bytes follow in the order of `keys`, each as an int64 element count then the raw elements.
    for key in keys:
        storage = unpickler.storages.get(_ascii(key))
        if storage is None:
            raise pickle.UnpicklingError(f"{path!r}: storage {key!r} is listed but never referenced")
        header = stream.read(8)
        numel = int.from_bytes(header, "little", signed=True) if len(header) == 8 else -1
        if numel != storage.numel:
            raise pickle.UnpicklingError(f"{path!r}: storage {key!r} header says {numel} elements, "
                                         f"expected {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise pickle.UnpicklingError(f"{path!r}: file ends inside storage {key!r}")
        storage.values = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    missing = [key for key, storage in unpickler.storages.items() if storage.values is None]
    if missing:
        raise pickle.UnpicklingError(f"{path!r}: no data for storages {missing}")
    return _fill_pending(result)


_ZIP_MAGIC = b"PK\x03\x04"


def is_zip_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a zip archive (``torch.save``'s current format, and ``.npz`` files)."""
    with open(path, "rb") as stream:
        return stream.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def load_pickled_data(path: str | os.PathLike) -> Any:
    """Read a ``torch.save`` file (zip or legacy format) or a plain pickle without executing code from it.

    Only plain data comes back: dict/list/tuple/set/str/bytes/numbers, ``Counter``, ``OrderedDict``, numpy
    arrays, and torch tensors converted to numpy arrays (torch itself is not needed). Any other global raises
    :class:`UnsafePickleError` naming it, before anything from the file is called.
    """
    path = os.fspath(path)
    if is_zip_file(path):
        return _load_torch_zip(path)
    with open(path, "rb") as stream:
        first = RestrictedUnpickler(stream, path).load()
        if isinstance(first, int) and first == _TORCH_MAGIC_NUMBER:
            return _load_torch_legacy(stream, path)
        return first

"""Reading ``torch.save`` / pickle files without running code from them.

The 0.6.x Transformer-XL files (``vocab.bin``, ``corpus.bin``) and the original code's ``cache.pkl`` are
pickles. :func:`load_pickled_data` reads them with its own interpreter of the pickle opcodes (a subclass of the
pure-Python unpickler whose opcode table holds only what plain data needs), so nothing the file names is ever
called except the small wrappers below, each of which checks its arguments:

* plain data: dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex, bool, None,
  ``collections.OrderedDict`` / ``Counter``, and the attribute records a caller names (``records=``);
* numeric arrays and scalars (bool, signed/unsigned ints, float16/32/64; bfloat16 for torch tensors) built by us
  from raw bytes whose length must equal ``prod(shape) * itemsize``. A pickled ``numpy.dtype`` is never built
  by numpy from the file's state: we parse that state, accept only the exact form numpy writes for a plain
  numeric type, and take nothing from it but the byte order. Object, string and structured dtypes are refused;
* torch tensors (zip and legacy ``torch.save`` layouts) rebuilt as numpy copies of bounds-checked views.

Any other global, opcode or argument raises :class:`UnsafePickleError` (globals) or ``pickle.UnpicklingError``
naming the file. Resource bounds, so that a small file cannot take large memory or time:

* decoded arrays plus elements copied by constructors total at most ``DECODED_SIZE_FACTOR`` times the file's
  size plus ``DECODED_SIZE_SLACK`` bytes; a tensor view may not claim more elements than its storage holds;
* the memo is a dict (the C unpickler's memo is an array that a 6-byte file can make 32 GiB), lengths are
  checked against the bytes left before anything is allocated, shared references stay shared (linear time);
* the result must be a tree or DAG no deeper than ``MAX_DEPTH``: a structure that contains itself is refused.

torch is not needed.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import sys
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from struct import unpack
from typing import IO, Any, Callable

import numpy as np

DECODED_SIZE_FACTOR = 16
DECODED_SIZE_SLACK = 1 << 20
MAX_DEPTH = 100
_MAX_INDEX = 1 << 62  # shapes, strides, offsets: bounded before any arithmetic (huge ints multiply slowly)
_MAX_KEY_DEPTH = 8  # tuples/frozensets used as dict keys or set members (hashing them recurses in C)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global (class or function) or used a construct outside the plain-data whitelist."""


_TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # first pickle of torch's legacy (pre-1.6) format
_TORCH_LEGACY_PROTOCOL = 1001

# The numeric element types an array may have: numpy's pickled spelling -> dtype (native byte order).
_NUMERIC_DTYPES: dict[str, np.dtype] = {
    spec: np.dtype(spec) for spec in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}

_TORCH_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64), "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16), "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_), "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}
try:  # bfloat16 tensors: numpy has no bfloat16, ml_dtypes (a jax dependency) does
    import ml_dtypes

    _TORCH_STORAGE_DTYPES["BFloat16Storage"] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - jax always brings ml_dtypes
    pass


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


class _Budget:
    """Bytes a load may still decode: DECODED_SIZE_FACTOR x the file size + DECODED_SIZE_SLACK."""

    def __init__(self, source: str, file_size: int):
        self.source, self.left = source, DECODED_SIZE_FACTOR * file_size + DECODED_SIZE_SLACK
        self.limit = self.left

    def charge(self, nbytes: int, what: str) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise pickle.UnpicklingError(
                f"{self.source!r}: {what} would take the decoded data past {self.limit} bytes "
                f"({DECODED_SIZE_FACTOR} x the file size + {DECODED_SIZE_SLACK}); the file is refused as a "
                "decompression bomb")


def _size_of(shape: Sequence[int]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or len(shape) > 32 or not all(
            type(n) is int and 0 <= n < _MAX_INDEX for n in shape):
        raise pickle.UnpicklingError(f"{what}: invalid shape {shape!r}")
    return tuple(shape)


def _tensor_from_storage(storage: _Storage, offset: int, shape: Sequence[int], strides: Sequence[int],
                         budget: _Budget | None = None) -> np.ndarray:
    """numpy copy of the strided view (offset, shape, strides in elements) of a loaded storage."""
    values = storage.values
    assert values is not None
    if not (type(offset) is int and isinstance(shape, (tuple, list)) and isinstance(strides, (tuple, list))
            and len(shape) <= 32 and all(type(v) is int and abs(v) < _MAX_INDEX for v in (offset, *shape, *strides))):
        raise pickle.UnpicklingError(f"tensor view of storage {storage.key!r} is malformed: offset={offset!r} "
                                     f"shape={shape!r} strides={strides!r}")
    shape, strides = tuple(shape), tuple(strides)
    if len(shape) != len(strides) or len(shape) > 32 or offset < 0 or any(n < 0 for n in shape) or any(
            s < 0 for s in strides):
        raise pickle.UnpicklingError(
            f"tensor view of storage {storage.key!r} is malformed: offset={offset} shape={shape} strides={strides}")
    numel = _size_of(shape)
    if numel == 0:
        return np.zeros(shape, dtype=values.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    # as_strided does no bounds checking: a crafted file must not make us read outside the buffer.
    if last >= values.size:
        raise pickle.UnpicklingError(
            f"tensor view (offset={offset}, shape={shape}, strides={strides}) reaches element {last} of "
            f"storage {storage.key!r}, which holds only {values.size} elements")
    # Stride 0 / overlapping views repeat elements: a tiny storage could become a huge array.
    if numel > values.size:
        raise pickle.UnpicklingError(
            f"tensor view (offset={offset}, shape={shape}, strides={strides}) claims {numel} elements but storage "
            f"{storage.key!r} holds only {values.size} (an overlapping or stride-0 view)")
    if budget is not None:
        budget.charge(numel * values.dtype.itemsize, f"tensor of shape {shape}")
    itemsize = values.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        values[offset:], shape=shape, strides=tuple(s * itemsize for s in strides), writeable=False)
    return np.array(view, copy=True)


# ------------------------------------------------------------------------------------------- the safe callables


class _Callable:
    """A global the pickle may call with REDUCE: our own checked function, never the object the file names."""

    def __init__(self, name: str, function: Callable[..., Any]):
        self.name, self.function = name, function

    def __repr__(self) -> str:
        return f"<safe {self.name}>"


class _Inert:
    """A global the pickle may name but not call (``numpy.ndarray``, ``builtins.object``, storage types)."""

    def __init__(self, name: str, value: Any = None):
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"<{self.name}>"


class _DtypePlaceholder:
    """What ``numpy.dtype(spec, align, copy)`` gives inside a pickle until BUILD supplies the byte order."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _ArrayPlaceholder:
    """What ``numpy.core.multiarray._reconstruct`` gives; BUILD turns it into an array."""


class _PendingTensor:
    """A tensor over a storage whose bytes are not loaded yet (first pass over a legacy torch file)."""


@dataclass
class _Record:
    """Marks a record class allowed by the caller; instances only ever get their ``__dict__`` filled."""

    cls: type


# Keys whose hashes a file cannot make collide (str/bytes hashes are salted per process), so that building a
# dict stays linear: floats, huge ints and numpy scalars can be crafted to share one hash.
_HASH_SAFE_KEYS = frozenset({str, bytes, bool, type(None)})
_HASH_MODULUS = sys.hash_info.modulus  # hash(k) == k for smaller ints: distinct keys, distinct hashes


def _check_key(key: Any, depth: int = 0) -> None:
    kind = type(key)
    if kind in _HASH_SAFE_KEYS or kind is int and -_HASH_MODULUS < key < _HASH_MODULUS:
        return
    # Hashing a tuple recurses in C with no depth limit: keys must be shallow.
    if kind in (tuple, frozenset) and depth < _MAX_KEY_DEPTH:
        for item in key:
            _check_key(item, depth + 1)
        return
    raise pickle.UnpicklingError(f"a {kind.__name__} cannot be a dict key or set member here "
                                 "(keys are str, bytes, bool, None, ints below 2**61 and shallow tuples of those)")


def _as_dtype(value: Any, what: str) -> np.dtype:
    if isinstance(value, _DtypePlaceholder):
        return value.dtype
    if isinstance(value, np.dtype) and value.newbyteorder("=") in _NUMERIC_DTYPES.values():
        return value  # only ever one we built
    raise pickle.UnpicklingError(f"{what}: expected a numeric dtype, got {type(value).__name__}")


def _array_from_bytes(raw: Any, dtype: np.dtype, shape: Any, fortran: bool, budget: _Budget) -> np.ndarray:
    if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"array data must be raw bytes, got {type(raw).__name__}")
    shape = _check_shape(shape, "array")
    expected = _size_of(shape) * dtype.itemsize
    if len(raw) != expected:
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dtype} needs {expected} bytes, the file gives {len(raw)}")
    budget.charge(expected, f"array of shape {shape}")
    flat = np.frombuffer(raw, dtype=dtype).copy()  # copy: writable, and independent of the file's buffer
    return flat.reshape(shape, order="F" if fortran else "C")


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> _DtypePlaceholder:
    if not isinstance(spec, str) or spec not in _NUMERIC_DTYPES or align not in (0, 1) or copy not in (0, 1):
        raise UnsafePickleError(f"numpy.dtype{(spec, align, copy)!r} is not an allowed numeric dtype "
                                f"(allowed: {', '.join(_NUMERIC_DTYPES)})")
    return _DtypePlaceholder(_NUMERIC_DTYPES[spec])


def _build_dtype(placeholder: _DtypePlaceholder, state: Any) -> np.dtype:
    # numpy writes (3, byteorder, None, None, None, -1, -1, 0) for every plain numeric type (4: + metadata).
    plain = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
             and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
             and state[5:8] == (-1, -1, 0) and (len(state) == 8 or state[8] is None))
    if not plain:
        raise UnsafePickleError(f"dtype state {state!r} is not that of a plain numeric type (flags, fields or "
                                "sizes set): refused, it could make numpy read pointers from the file")
    order = state[1]
    if order == "|" and placeholder.dtype.itemsize != 1:
        raise UnsafePickleError(f"dtype {placeholder.dtype} cannot have byte order '|'")
    return placeholder.dtype if order in ("|", "=") else placeholder.dtype.newbyteorder(order)


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayPlaceholder:
    if not (isinstance(cls, _Inert) and cls.name == "numpy.ndarray"):
        raise UnsafePickleError(f"numpy _reconstruct of {cls!r}: only numpy.ndarray is allowed")
    return _ArrayPlaceholder()


def _scalar(dtype: Any, raw: Any = None) -> np.generic:
    dtype = _as_dtype(dtype, "numpy scalar")
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype} needs {dtype.itemsize} raw bytes")
    return np.frombuffer(raw, dtype=dtype)[0]


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes (numpy buffers) as `_codecs.encode(text, "latin1")`.
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower().replace("-", "").replace(
            "_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"_codecs.encode is only allowed on text with the latin1 encoding, not {encoding!r}")
    return text.encode("latin1")


# ----------------------------------------------------------------------------------------------- the unpickler


class _Dispatch(dict):
    def __missing__(self, opcode: int) -> Any:
        raise UnsafePickleError(f"pickle opcode {bytes([opcode])!r} is not allowed (objects, extensions and "
                                "out-of-band buffers are refused)")


_PLAIN_OPCODES = (
    pickle.PROTO, pickle.FRAME, pickle.STOP, pickle.MARK, pickle.POP, pickle.POP_MARK, pickle.DUP,
    pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE, pickle.INT, pickle.BININT, pickle.BININT1, pickle.BININT2,
    pickle.LONG, pickle.LONG1, pickle.LONG4, pickle.FLOAT, pickle.BINFLOAT, pickle.STRING, pickle.BINSTRING,
    pickle.SHORT_BINSTRING, pickle.BINBYTES, pickle.SHORT_BINBYTES, pickle.BINBYTES8, pickle.UNICODE,
    pickle.BINUNICODE, pickle.SHORT_BINUNICODE, pickle.BINUNICODE8, pickle.TUPLE, pickle.EMPTY_TUPLE,
    pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.EMPTY_LIST, pickle.LIST, pickle.EMPTY_DICT, pickle.DICT,
    pickle.EMPTY_SET, pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE, pickle.GLOBAL,
    pickle.STACK_GLOBAL, pickle.PERSID, pickle.BINPERSID,
)


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickler that resolves only whitelisted plain-data globals and torch storage references.

    `storage_loader(storage)` fills storages whose bytes are available while unpickling (zip format);
    without it storages stay empty (first pass over a legacy torch file). `records` maps (module, name) of
    pickled classes to inert classes whose instances get their ``__dict__`` from the pickle and nothing else.
    """

    dispatch = _Dispatch({op[0]: pickle._Unpickler.dispatch[op[0]] for op in _PLAIN_OPCODES})  # type: ignore

    def __init__(self, stream: IO[bytes], source: str, storage_loader: Any = None, allow_storages: bool = False,
                 *, budget: _Budget | None = None, records: Mapping[tuple[str, str], type] | None = None,
                 encoding: str = "ASCII"):
        super().__init__(stream, encoding=encoding)
        self._source = source
        self._storage_loader = storage_loader
        self._allow_storages = allow_storages
        self._budget = budget or _Budget(source, 0)
        self._records = dict(records or {})
        self._globals = _safe_globals(self._records)
        self._built: dict[int, Any] = {}  # id(placeholder) -> what BUILD made of it (memo entries hold the former)
        self.storages: dict[str, _Storage] = {}

    def load(self) -> Any:
        """The opcode loop, reading the stream directly: frames (protocol 4+) are contiguous in it, so FRAME only
        has its length skipped (load_frame) and no per-read unframing layer is needed."""
        self.read, self.readline = self._file_read, self._file_readline
        self.metastack, self.stack = [], []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                opcode = read(1)
                if not opcode:
                    raise EOFError("the pickle ends before its STOP opcode")
                dispatch[opcode[0]](self)
        except pickle._Stop as stop:  # type: ignore[attr-defined]
            return stop.value

    def load_frame(self) -> None:
        if len(self.read(8)) != 8:
            raise EOFError("the pickle ends inside a FRAME header")

    # -- names
    def find_class(self, module: str, name: str) -> Any:
        found = self._globals.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refusing to load {self._source!r}: it references the global '{module}.{name}', which is not "
                "plain data (only dict/list/tuple/set/str/bytes/numbers, collections.Counter/OrderedDict, numeric "
                "numpy arrays and torch tensors are allowed). The file may be malicious; it was not executed.")
        return found

    # -- memo reads see what BUILD made of a placeholder
    def _push_memo(self, index: int) -> None:
        try:
            value = self.memo[index]
        except KeyError:
            raise pickle.UnpicklingError(f"memo value not found at index {index}") from None
        self.append(self._built.get(id(value), value) if self._built else value)

    def load_get(self) -> None:
        self._push_memo(int(self.readline()[:-1]))

    def load_binget(self) -> None:
        self._push_memo(self.read(1)[0])

    def load_long_binget(self) -> None:
        self._push_memo(unpack("<I", self.read(4))[0])

    # -- lengths are checked before anything is allocated
    def load_bytearray8(self) -> None:
        (length,) = unpack("<Q", self.read(8))
        data = self.read(length)
        if len(data) != length:
            raise pickle.UnpicklingError("file ends inside a BYTEARRAY8")
        self.append(bytearray(data))

    # -- containers: only plain ones may be filled, keys must hash safely
    def load_append(self) -> None:
        value = self.stack.pop()
        self._list(self.stack[-1]).append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._list(self.stack[-1]).extend(items)

    def _list(self, target: Any) -> list:
        if type(target) is not list:
            raise pickle.UnpicklingError(f"APPEND to a {type(target).__name__}: only lists can be appended to")
        return target

    def _dict(self, target: Any) -> dict:
        if type(target) not in (dict, OrderedDict, Counter):
            raise pickle.UnpicklingError(f"SETITEM on a {type(target).__name__}: only dicts take items")
        return target

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        _check_key(key)
        self._dict(self.stack[-1])[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._dict(self.stack[-1])
        if len(items) % 2:
            raise pickle.UnpicklingError("SETITEMS with an odd number of items")
        for index in range(0, len(items), 2):
            _check_key(items[index])
            target[items[index]] = items[index + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise pickle.UnpicklingError(f"ADDITEMS on a {type(target).__name__}: only sets take members")
        for item in items:
            _check_key(item)
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            _check_key(item)
        self.append(frozenset(items))

    # -- calls: only our wrappers
    def load_reduce(self) -> None:
        args = self.stack.pop()
        function = self.stack[-1]
        if not isinstance(function, _Callable):
            raise UnsafePickleError(f"refusing to load {self._source!r}: it calls {function!r}, which is not an "
                                    "allowed constructor")
        if type(args) is not tuple:
            raise pickle.UnpicklingError(f"arguments of {function.name} must be a tuple")
        try:
            self.stack[-1] = function.function(self, *args)
        except TypeError as error:  # wrong number of arguments
            raise pickle.UnpicklingError(f"bad arguments for {function.name}: {error}") from None

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack[-1]
        if not isinstance(cls, _Record) or args != ():
            raise UnsafePickleError(f"refusing to load {self._source!r}: it creates a {cls!r} object")
        self.stack[-1] = cls.cls.__new__(cls.cls)

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _DtypePlaceholder):
            built: Any = _build_dtype(inst, state)
        elif isinstance(inst, _ArrayPlaceholder):
            built = self._build_array(state)
        elif isinstance(inst, tuple(self._records.values())):
            if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
                raise pickle.UnpicklingError(f"state of a {type(inst).__name__} record must be a dict of attributes")
            inst.__dict__.update(state)
            return
        elif type(inst) in (OrderedDict, Counter) and isinstance(state, dict):
            return  # attributes of a dict (torch's state_dict()._metadata): not data, dropped
        else:
            raise UnsafePickleError(f"refusing to load {self._source!r}: it sets the state of a "
                                    f"{type(inst).__name__}, which is not allowed")
        self.stack[-1] = built
        self._built[id(inst)] = built

    def _build_array(self, state: Any) -> np.ndarray:
        # ndarray.__setstate__'s state: (version, shape, dtype, is_fortran, raw) or, version 0, without version.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("numpy array state is malformed")
        shape, dtype, fortran, raw = state
        dtype = self._built.get(id(dtype), dtype)
        return _array_from_bytes(raw, _as_dtype(dtype, "numpy array"), shape, bool(fortran), self._budget)

    # -- torch storages
    def persistent_load(self, saved_id: Any) -> Any:
        if not self._allow_storages:
            raise pickle.UnpicklingError(f"{self._source!r}: unexpected persistent id {saved_id!r} in a plain pickle")
        if not isinstance(saved_id, tuple) or len(saved_id) < 5 or _ascii(saved_id[0]) != "storage":
            raise pickle.UnpicklingError(f"{self._source!r}: unsupported torch persistent id {saved_id!r}")
        # zip format: (tag, type, key, location, numel); legacy adds view_metadata (always None since torch 1.x)
        storage_type, key, numel = saved_id[1], _ascii(saved_id[2]), saved_id[4]
        if not (isinstance(storage_type, _Inert) and isinstance(storage_type.value, _StorageType)):
            raise pickle.UnpicklingError(f"{self._source!r}: storage {key!r} has unsupported type {storage_type!r}")
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise pickle.UnpicklingError(f"{self._source!r}: storage views (pre-1.0 torch files) are not supported")
        if not isinstance(key, str) or type(numel) is not int or not 0 <= numel < _MAX_INDEX:
            raise pickle.UnpicklingError(f"{self._source!r}: storage {key!r} has invalid size {numel!r}")
        dtype = storage_type.value.dtype
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, dtype, numel)
            if self._storage_loader is not None:
                self._storage_loader(storage)
        elif storage.dtype != dtype or storage.numel != numel:
            raise pickle.UnpicklingError(f"{self._source!r}: storage {key!r} is used with two types or sizes")
        return storage

    def rebuild_tensor(self, storage: Any, offset: Any, shape: Any, strides: Any, *ignored: Any) -> Any:
        # Stands in for torch._utils._rebuild_tensor(_v2); the trailing requires_grad/hooks/metadata are unused.
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, expected a torch storage")
        if storage.values is None:
            return _PendingTensor()
        return _tensor_from_storage(storage, offset, shape, strides, self._budget)


for _opcode, _method in ((pickle.FRAME, "load_frame"), (pickle.GET, "load_get"), (pickle.BINGET, "load_binget"),
                         (pickle.LONG_BINGET, "load_long_binget"), (pickle.BYTEARRAY8, "load_bytearray8"),
                         (pickle.APPEND, "load_append"), (pickle.APPENDS, "load_appends"),
                         (pickle.SETITEM, "load_setitem"), (pickle.SETITEMS, "load_setitems"),
                         (pickle.ADDITEMS, "load_additems"), (pickle.FROZENSET, "load_frozenset"),
                         (pickle.REDUCE, "load_reduce"), (pickle.NEWOBJ, "load_newobj"), (pickle.BUILD, "load_build")):
    RestrictedUnpickler.dispatch[_opcode[0]] = getattr(RestrictedUnpickler, _method)


def _ascii(value: Any) -> Any:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


# ----------------------------------------------------------------------------------- constructors a pickle may call


def _charge_items(unpickler: RestrictedUnpickler, items: Any, what: str) -> None:
    # Each call copies its argument: repeated calls on one memoised container would multiply memory.
    unpickler._budget.charge(8 * len(items), what)


def _make_ordered_dict(unpickler: RestrictedUnpickler, items: Any = ()) -> OrderedDict:
    if not isinstance(items, (dict, list, tuple)):
        raise pickle.UnpicklingError(f"OrderedDict from a {type(items).__name__}")
    _charge_items(unpickler, items, "OrderedDict")
    pairs = items.items() if isinstance(items, dict) else items
    result: OrderedDict = OrderedDict()
    for pair in pairs:
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise pickle.UnpicklingError("OrderedDict items must be (key, value) pairs")
        _check_key(pair[0])
        result[pair[0]] = pair[1]
    return result


def _make_counter(unpickler: RestrictedUnpickler, counts: Any = None) -> Counter:
    if counts is None:
        return Counter()
    if type(counts) is not dict:
        raise pickle.UnpicklingError(f"Counter from a {type(counts).__name__}, expected a dict")
    _charge_items(unpickler, counts, "Counter")
    result: Counter = Counter()
    dict.update(result, counts)  # the dict's keys already passed _check_key
    return result


def _make_set(kind: type) -> Callable[..., Any]:
    def make(unpickler: RestrictedUnpickler, items: Any = ()) -> Any:
        if type(items) not in (list, tuple, set, frozenset):
            raise pickle.UnpicklingError(f"{kind.__name__} from a {type(items).__name__}")
        _charge_items(unpickler, items, kind.__name__)
        for item in items:
            _check_key(item)
        return kind(items)

    return make


def _make_bytes(kind: type) -> Callable[..., Any]:
    def make(unpickler: RestrictedUnpickler, data: Any = b"", encoding: Any = None) -> Any:
        # bytes() / bytearray(b"...") / bytearray("text", "latin-1") as protocols 0-2 write them; never bytes(n).
        if isinstance(data, str) and encoding is not None:
            data = _latin1_encode(data, encoding)
        if not isinstance(data, (bytes, bytearray)) or encoding is not None and not isinstance(data, bytes):
            raise pickle.UnpicklingError(f"{kind.__name__} from a {type(data).__name__}: only bytes are allowed")
        _charge_items(unpickler, data, kind.__name__)
        return kind(data)

    return make


def _make_complex(unpickler: RestrictedUnpickler, real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(type(part) in (int, float) for part in (real, imag)):
        raise pickle.UnpicklingError("complex() takes two numbers here")
    return complex(real, imag)


def _frombuffer(unpickler: RestrictedUnpickler, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # numpy >= 1.16 with pickle protocol 5: ndarray -> _frombuffer(bytes, dtype, shape, order).
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"numpy _frombuffer: unknown order {order!r}")
    return _array_from_bytes(buffer, _as_dtype(dtype, "numpy _frombuffer"), shape, order == "F", unpickler._budget)


def _rebuild_parameter(unpickler: RestrictedUnpickler, data: Any, requires_grad: Any = False,
                       hooks: Any = None) -> Any:
    if not isinstance(data, (np.ndarray, _PendingTensor)):
        raise pickle.UnpicklingError(f"a torch Parameter wraps a {type(data).__name__}, expected a tensor")
    return data


def _record_reconstructor(unpickler: RestrictedUnpickler, cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor, used by protocol 0/1 pickles for class instances: records only.
    if not isinstance(cls, _Record) or not (isinstance(base, _Inert) and base.name == "object") or state is not None:
        raise UnsafePickleError(f"refusing to reconstruct {cls!r} from {base!r}")
    return cls.cls.__new__(cls.cls)


def _safe_globals(records: Mapping[tuple[str, str], type]) -> dict[tuple[str, str], Any]:
    """(module, name) -> what the pickle gets for that global."""
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _make_ordered_dict),
        ("collections", "Counter"): _Callable("collections.Counter", _make_counter),
        ("_codecs", "encode"): _Callable("_codecs.encode", lambda unpickler, *args: _latin1_encode(*args)),
        ("numpy", "ndarray"): _Inert("numpy.ndarray"),
        ("numpy", "dtype"): _Callable("numpy.dtype", lambda unpickler, *args: _numpy_dtype(*args)),
        ("torch._utils", "_rebuild_tensor"): _Callable("_rebuild_tensor", RestrictedUnpickler.rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable("_rebuild_tensor_v2", RestrictedUnpickler.rebuild_tensor),
        # nn.Parameter (state dicts saved with keep_vars=True): the tensor it wraps
        ("torch._utils", "_rebuild_parameter"): _Callable("_rebuild_parameter", _rebuild_parameter),
    }
    for module in ("builtins", "__builtin__"):  # __builtin__: pickles written by Python 2
        table[(module, "set")] = _Callable("set", _make_set(set))
        table[(module, "frozenset")] = _Callable("frozenset", _make_set(frozenset))
        table[(module, "bytes")] = _Callable("bytes", _make_bytes(bytes))
        table[(module, "bytearray")] = _Callable("bytearray", _make_bytes(bytearray))
        table[(module, "complex")] = _Callable("complex", _make_complex)
    for core in ("numpy.core", "numpy._core"):  # numpy 2 renamed numpy.core to numpy._core
        table[(f"{core}.multiarray", "_reconstruct")] = _Callable(
            "numpy _reconstruct", lambda unpickler, *args: _reconstruct(*args))
        table[(f"{core}.multiarray", "scalar")] = _Callable("numpy scalar", lambda unpickler, *args: _scalar(*args))
        table[(f"{core}.numeric", "_frombuffer")] = _Callable("numpy _frombuffer", _frombuffer)
    for name, dtype in _TORCH_STORAGE_DTYPES.items():
        table[("torch", name)] = _Inert(f"torch.{name}", _StorageType(name, dtype))
    if records:
        for module in ("builtins", "__builtin__"):
            table[(module, "object")] = _Inert("object")
        for module in ("copyreg", "copy_reg"):
            table[(module, "_reconstructor")] = _Callable("copyreg._reconstructor", _record_reconstructor)
        for key, cls in records.items():
            table[key] = _Record(cls)
    return table


# ------------------------------------------------------------------------------------------ checking the result

_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray, np.generic, np.dtype)


def _children(value: Any, records: tuple[type, ...]) -> Any:
    if type(value) in (dict, OrderedDict, Counter):
        return [*value.keys(), *value.values()]
    if type(value) in (list, tuple, set, frozenset):
        return value
    if records and isinstance(value, records):
        return list(value.__dict__.values())
    return None


_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None), bytes})  # skipped without a stack entry


def _check_tree(root: Any, source: str, records: tuple[type, ...]) -> None:
    """Refuse anything but plain data in the result, structures containing themselves, and deep nesting.

    Iterative and visiting shared objects once: linear in the result, whatever its shape.
    """
    done: set[int] = set()
    open_: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        value, depth, leaving = stack.pop()
        if leaving:
            open_.discard(id(value))
            done.add(id(value))
            continue
        if isinstance(value, _LEAF_TYPES) and not isinstance(value, (np.void, np.object_)):
            continue
        if id(value) in open_:
            raise pickle.UnpicklingError(f"{source!r}: a {type(value).__name__} in the file contains itself; "
                                         "self-referencing data is not plain data and is refused")
        if id(value) in done:
            continue
        children = _children(value, records)
        if children is None:
            raise UnsafePickleError(f"refusing to load {source!r}: it holds a {type(value).__name__} "
                                    f"({value!r:.80}), which is not plain data")
        if depth >= MAX_DEPTH:
            raise pickle.UnpicklingError(f"{source!r}: data nested deeper than {MAX_DEPTH} levels is refused")
        open_.add(id(value))
        stack.append((value, depth, True))
        stack.extend((child, depth + 1, False) for child in children if type(child) not in _PLAIN_LEAVES)


# ------------------------------------------------------------------------------------------------ the formats


def _unpickle(stream: Any, source: str, budget: _Budget, **options: Any) -> tuple[Any, RestrictedUnpickler]:
    unpickler = RestrictedUnpickler(stream, source, budget=budget, **options)
    return unpickler.load(), unpickler


def _load_torch_zip(mapped: Any, path: str, budget: _Budget) -> Any:
    file_size = len(mapped)
    # Over the mmap, not the file: a corrupt directory size makes a file object allocate it before reading.
    with zipfile.ZipFile(_BytesReader(mapped)) as archive:
        members = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in members if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path!r} is a zip archive but not a torch.save file (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]

        def read(name: str, expected: int | None = None) -> bytes:
            info = members.get(name)
            if info is None:
                raise pickle.UnpicklingError(f"{path!r}: record {name!r} is missing")
            # Bounded before decompressing: a small archive must not inflate into a huge member.
            if info.file_size > DECODED_SIZE_FACTOR * file_size + DECODED_SIZE_SLACK or (
                    expected is not None and info.file_size != expected):
                raise pickle.UnpicklingError(f"{path!r}: record {name!r} holds {info.file_size} bytes, expected "
                                             f"{expected if expected is not None else 'less'}")
            return archive.read(info)

        byteorder = "little"
        if f"{prefix}byteorder" in members:
            byteorder = read(f"{prefix}byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise pickle.UnpicklingError(f"{path!r}: unknown byte order {byteorder!r}")

        def load_storage(storage: _Storage) -> None:
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            # Charged before decompressing: each member is bounded alone, but many deflated members (or storages
            # no tensor uses) would otherwise add up to far more than the file (300 x 1 MiB from 344 KB).
            budget.charge(storage.numel * dtype.itemsize, f"storage {storage.key!r}")
            raw = read(f"{prefix}data/{storage.key}", storage.numel * dtype.itemsize)
            storage.values = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)

        stream = io.BytesIO(read(pickles[0]))
        return _unpickle(stream, path, budget, storage_loader=load_storage, allow_storages=True)[0]


class _BytesReader:
    """read/readline over bytes or an mmap: reads past the end return what is there (never allocate first)."""

    def __init__(self, data: Any):
        self._data, self._position = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._position + size)
        chunk = bytes(self._data[self._position:end])
        self._position = end
        return chunk

    def readline(self) -> bytes:
        end = self._data.find(b"\n", self._position)
        return self.read(-1 if end < 0 else end + 1 - self._position)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._position, len(self._data))[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def seekable(self) -> bool:
        return True


def _read_legacy_storages(stream: mmap.mmap, path: str, keys: Any, storages: dict[str, _Storage]) -> None:
    # Storage bytes follow in the order of `keys`, each as an int64 element count then the raw elements.
    if type(keys) is not list:
        raise pickle.UnpicklingError(f"{path!r}: the storage key list is a {type(keys).__name__}")
    for key in keys:
        storage = storages.get(_ascii(key))
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
    missing = [key for key, storage in storages.items() if storage.values is None]
    if missing:
        raise pickle.UnpicklingError(f"{path!r}: no data for storages {missing}")


def _load_torch_legacy(stream: mmap.mmap, path: str, budget: _Budget) -> Any:
    protocol = _unpickle(stream, path, budget)[0]
    if protocol != _TORCH_LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"{path!r}: unsupported torch legacy protocol version {protocol!r}")
    sys_info = _unpickle(stream, path, budget)[0]
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError(f"{path!r}: only little-endian torch files are supported")
    start = stream.tell()
    # First pass: the storages' bytes come after the pickle, so tensors cannot be built yet.
    result, first = _unpickle(stream, path, budget, allow_storages=True)
    keys = _unpickle(stream, path, budget)[0]
    if not first.storages and keys == []:
        return result
    _read_legacy_storages(stream, path, keys, first.storages)
    # Second pass with the storages loaded: tensors are built where they stand, identities kept.
    stream.seek(start)
    loaded = first.storages
    return _unpickle(stream, path, budget, allow_storages=True,
                     storage_loader=lambda storage: _fill_from(loaded, storage, path))[0]


def _fill_from(loaded: dict[str, _Storage], storage: _Storage, path: str) -> None:
    known = loaded.get(storage.key)
    if known is None or known.dtype != storage.dtype or known.numel != storage.numel:
        raise pickle.UnpicklingError(f"{path!r}: storage {storage.key!r} changed between passes")
    storage.values = known.values


_ZIP_MAGIC = b"PK\x03\x04"


def is_zip_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a zip archive (``torch.save``'s current format, and ``.npz`` files)."""
    with open(path, "rb") as stream:
        return stream.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def _load(path: str, budget: _Budget, options: dict[str, Any]) -> Any:
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise pickle.UnpicklingError(f"{path!r} is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if mapped[:len(_ZIP_MAGIC)] == _ZIP_MAGIC:
                return _load_torch_zip(mapped, path, budget)
            # mmap.read(n) returns what is there (a file object would allocate n first), in C: fast.
            first = _unpickle(mapped, path, budget, **options)[0]
            if type(first) is int and first == _TORCH_MAGIC_NUMBER:
                return _load_torch_legacy(mapped, path, budget)
            return first


def load_pickled_data(path: str | os.PathLike, *, records: Mapping[tuple[str, str], type] | None = None,
                      encoding: str = "ASCII") -> Any:
    """Read a ``torch.save`` file (zip or legacy format) or a plain pickle without executing code from it.

    Only plain data comes back: dict/list/tuple/set/str/bytes/numbers, ``Counter``, ``OrderedDict``, numeric
    numpy arrays and scalars, torch tensors converted to numpy arrays (torch itself is not needed), and
    instances of the inert `records` classes (keyed by the (module, name) the pickle uses) with only their
    ``__dict__`` filled. Anything else raises :class:`UnsafePickleError` naming the file and the global, before
    anything from the file is called; a malformed or oversized file raises ``pickle.UnpicklingError`` naming it.
    `encoding` decodes Python 2 ``str`` objects (``"latin1"`` for the original Transformer-XL ``cache.pkl``).
    """
    path = os.fspath(path)
    budget = _Budget(path, os.path.getsize(path))
    options = {"records": records, "encoding": encoding}
    try:
        result = _load(path, budget, options)
        _check_tree(result, path, tuple((records or {}).values()))
    except UnsafePickleError as error:
        if path in str(error):
            raise
        raise UnsafePickleError(f"refusing to load {path!r}: {error}") from None
    except pickle.UnpicklingError as error:
        if path in str(error):
            raise
        raise pickle.UnpicklingError(f"{path!r} is not a valid pickle/torch file: {error}") from None
    except MemoryError:  # not a property of the file alone: the caller's to handle
        raise
    except Exception as error:  # a malformed file: struct.error, BadZipFile, EOFError, IndexError...
        raise pickle.UnpicklingError(
            f"{path!r} is not a valid pickle/torch file ({type(error).__name__}: {error})") from None
    return result

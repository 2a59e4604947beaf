"""Transformer-XL word-level tokenizer, language-model batch iterators and corpus tools.

Behaves like ``pytorch_pretrained_bert.tokenization_transfo_xl`` (0.6.x): same vocabularies (symbol order,
counter order, special-token attributes such as ``unk_idx``), same encodings and the same batches from the
iterators. Two things differ on purpose:

* Arrays are numpy ``int64`` instead of torch ``LongTensor``; iterators yield ``[batch, time]`` arrays.
* Nothing is ever unpickled unrestricted. The 0.6.x files (``vocab.bin``, ``corpus.bin``) are pickles written by
  ``torch.save``; they are read by :func:`load_pickled_data`, which only lets plain data types through (dicts,
  lists, ``Counter``, ``OrderedDict``, numpy arrays, torch tensors rebuilt as numpy arrays) and refuses any
  other global, so a malicious file cannot run code. Our own ``save_vocabulary`` writes ``vocab.json`` and
  ``TransfoXLCorpus.save_pretrained`` writes ``corpus.npz``: no pickles.

Randomness (variable-length batches, shuffling) comes from an ``rng`` argument: ``None`` uses numpy's global
legacy generator exactly like the reference (so ``np.random.seed(s)`` reproduces its batches), an
``np.random.RandomState`` or ``np.random.Generator`` is used as given, and an int seeds a fresh
``np.random.default_rng``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np

from ..safe_pickle import is_zip_file, load_pickled_data
from .batch import NO_LIMIT, BatchCallMixin

logger = logging.getLogger(__name__)

PRETRAINED_VOCAB_ARCHIVE_MAP: dict[str, str] = {
    "transfo-xl-wt103": "https://huggingface.co/transfo-xl/transfo-xl-wt103/resolve/main/vocab.bin",
}
PRETRAINED_CORPUS_ARCHIVE_MAP: dict[str, str] = {
    "transfo-xl-wt103": "https://huggingface.co/transfo-xl/transfo-xl-wt103/resolve/main/corpus.bin",
}
VOCAB_NAME = "vocab.bin"  # 0.6.x: torch.save of the tokenizer's __dict__ (read only, never written)
VOCAB_JSON_NAME = "vocab.json"  # ours
CORPUS_NAME = "corpus.bin"  # 0.6.x: torch.save of the corpus' __dict__ without the vocabulary
CORPUS_NPZ_NAME = "corpus.npz"  # ours

_VOCAB_FORMAT = "jaxformers.transfo_xl.vocab"
_VOCAB_FORMAT_VERSION = 1

ORDERED_DATASETS = ("ptb", "wt2", "wt103", "enwik8", "text8")
DATASETS = (*ORDERED_DATASETS, "lm1b")

RandomSource = Union[None, int, np.random.Generator, np.random.RandomState]


# --------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------

_MISSING = object()
# Attributes a 0.6.x vocab.bin may set; anything else in the file is ignored (with a debug log).
_STATE_KEYS = ("counter", "special", "min_freq", "max_size", "lower_case", "delimiter", "vocab_file",
               "never_split", "idx2sym", "sym2idx")


class TransfoXLTokenizer(BatchCallMixin):
    """Word-level tokenizer of Transformer-XL: whitespace (or `delimiter`) splitting, counted vocabulary.

    Typical use: ``count_file`` on the training text(s), ``build_vocab()``, then ``encode_file``. Or
    ``from_pretrained("transfo-xl-wt103")`` for the released 267k-word WikiText-103 vocabulary.
    `never_split` is stored for API compatibility; like 0.6.x, tokenization never consults it.

    Calling it on texts gives ``input_ids`` / ``attention_mask`` (no special tokens added); set ``pad_token``
    (e.g. ``"<eos>"``) to pad a batch.
    """

    model_max_length = NO_LIMIT
    pad_token: str | None = None

    def __init__(
        self,
        special: Sequence[str] | None = None,
        min_freq: int = 0,
        max_size: int | None = None,
        lower_case: bool = False,
        delimiter: str | None = None,
        vocab_file: str | None = None,
        never_split: Sequence[str] = ("<unk>", "<eos>", "<formula>"),
    ) -> None:
        self.counter: Counter[str] = Counter()
        self.special = list(special) if special is not None else []
        self.min_freq = min_freq
        self.max_size = max_size
        self.lower_case = lower_case
        self.delimiter = delimiter
        self.vocab_file = vocab_file
        self.never_split = never_split
        self.idx2sym: list[str] = []
        self.sym2idx: OrderedDict[str, int] = OrderedDict()

    # -- loading / saving --------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        *inputs: Any,
        **kwargs: Any,
    ) -> TransfoXLTokenizer:
        """Load a vocabulary: a shortcut name (``transfo-xl-wt103``), a directory holding ``vocab.json`` (ours)
        or ``vocab.bin`` (0.6.x), one of those files, or a URL. Extra arguments go to the constructor, and the
        file's settings then override them (as in 0.6.x). Raises OSError when the file can't be found.
        """
        import dataclasses

        from jaxformers.file_utils import HubOptions, cached_path, hub_repo_for, hub_url

        hub = HubOptions.pop_from(kwargs, cache_dir)  # revision=, token=, local_files_only=, force_download=
        name = os.fspath(pretrained_model_name_or_path)
        if name in PRETRAINED_VOCAB_ARCHIVE_MAP:
            location = PRETRAINED_VOCAB_ARCHIVE_MAP[name]
        elif os.path.isdir(name):
            location = _first_existing(name, (VOCAB_JSON_NAME, VOCAB_NAME), "Transformer-XL vocabulary")
        elif (repo := hub_repo_for(name)) is not None:
            location = hub_url(repo, VOCAB_NAME, hub.revision)
        else:
            location = name
        resolved = cached_path(location, **dataclasses.asdict(hub))
        logger.info("loading Transformer-XL vocabulary from %s", resolved)
        tokenizer = cls(*inputs, **kwargs)
        tokenizer._apply_state(_read_vocab_state(resolved), resolved)
        return tokenizer

    def save_vocabulary(self, vocab_path: str | os.PathLike) -> str:
        """Write the vocabulary and settings as JSON to `vocab_path` (a directory gets ``vocab.json``).

        Returns the file written; ``from_pretrained`` reads it back into an identical tokenizer.
        """
        vocab_path = os.fspath(vocab_path)
        path = os.path.join(vocab_path, VOCAB_JSON_NAME) if os.path.isdir(vocab_path) else vocab_path
        state = {
            "format": _VOCAB_FORMAT,
            "version": _VOCAB_FORMAT_VERSION,
            "special": list(self.special),
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "lower_case": self.lower_case,
            "delimiter": self.delimiter,
            "vocab_file": self.vocab_file,
            "never_split": list(self.never_split),
            "idx2sym": list(self.idx2sym),
            # `unk_idx`, `eos_idx`... : whether `unk_idx` exists changes how unknown words are looked up.
            "index_attributes": self._index_attributes(),
            # Insertion order matters: most_common() breaks count ties by it when the vocab is rebuilt.
            "counter": dict(self.counter),
        }
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(state, stream, ensure_ascii=False)
        return path

    def _index_attributes(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items()
                if name.endswith("_idx") and isinstance(value, int) and not isinstance(value, bool)}

    def _apply_state(self, state: Mapping[str, Any], source: str) -> None:
        """Install a vocabulary state read from a 0.6.x pickle (a __dict__) or our JSON (already unpacked)."""
        if not isinstance(state, Mapping):
            raise ValueError(f"{source!r} holds a {type(state).__name__}, expected a dict of tokenizer attributes")
        for key, value in state.items():
            if not isinstance(key, str):
                raise ValueError(f"{source!r}: attribute name {key!r} is not a string")
            if key in _STATE_KEYS:
                setattr(self, key, _check_state_value(key, value, source))
            elif key.endswith("_idx") and not hasattr(type(self), key):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{source!r}: {key} must be an int, got {value!r}")
                setattr(self, key, value)
            else:
                logger.debug("%s: ignoring attribute %r", source, key)

    # -- counting & vocabulary ---------------------------------------------------------------------------

    def count_file(self, path: str | os.PathLike, verbose: bool = False, add_eos: bool = False) -> list[list[str]]:
        """Tokenize every line of a UTF-8 file, add the symbols to the counter, return the tokenized lines."""
        sents = []
        for index, line in enumerate(_read_lines(path)):
            if verbose and index > 0 and index % 500000 == 0:
                logger.info("    line %d", index)
            symbols = self.tokenize(line, add_eos=add_eos)
            self.counter.update(symbols)
            sents.append(symbols)
        return sents

    def count_sents(self, sents: Iterable[Sequence[str]], verbose: bool = False) -> None:
        """Add already tokenized sentences (lists of symbols) to the counter."""
        for index, symbols in enumerate(sents):
            if verbose and index > 0 and index % 500000 == 0:
                logger.info("    line %d", index)
            self.counter.update(symbols)

    def build_vocab(self) -> None:
        """(Re)build idx2sym/sym2idx: from `vocab_file` if set, else specials then counted symbols.

        Counted symbols enter by decreasing count (ties in first-seen order), at most `max_size` of them
        (specials among them still use up a slot), stopping at the first below `min_freq`.
        """
        if self.vocab_file:
            logger.info("building vocab from %s", self.vocab_file)
            self._build_from_file(self.vocab_file)
            logger.info("final vocab size %d", len(self))
            return
        logger.info("building vocab with min_freq=%s, max_size=%s", self.min_freq, self.max_size)
        self.idx2sym = []
        self.sym2idx = OrderedDict()
        for sym in self.special:
            self.add_special(sym)
        for sym, count in self.counter.most_common(self.max_size):
            if count < self.min_freq:
                break
            self.add_symbol(sym)
        logger.info("final vocab size %d from %d unique tokens", len(self), len(self.counter))

    def _build_from_file(self, vocab_file: str | os.PathLike) -> None:
        # One symbol per line (first whitespace-separated field; counts after it are ignored).
        self.idx2sym = []
        self.sym2idx = OrderedDict()
        for line_number, line in enumerate(_read_lines(vocab_file), start=1):
            fields = line.split()
            if not fields:
                raise ValueError(f"vocabulary file {os.fspath(vocab_file)!r}: line {line_number} is empty")
            self.add_symbol(fields[0])
        if "<UNK>" in self.sym2idx:
            self.unk_idx = self.sym2idx["<UNK>"]
        elif "<unk>" in self.sym2idx:
            self.unk_idx = self.sym2idx["<unk>"]
        else:
            raise ValueError(f"vocabulary file {os.fspath(vocab_file)!r} has no <unk> or <UNK> token")

    def add_special(self, sym: str) -> None:
        """Add `sym` if new and record its index as attribute ``<name>_idx`` (``<eos>`` -> ``eos_idx``)."""
        if sym in self.sym2idx:
            return
        attribute = f"{sym.strip('<>')}_idx"
        # A special named like a method ("<get>" -> get_idx) would silently replace that method.
        if hasattr(type(self), attribute):
            raise ValueError(f"special token {sym!r} would overwrite TransfoXLTokenizer.{attribute}")
        self.add_symbol(sym)
        setattr(self, attribute, self.sym2idx[sym])

    def add_symbol(self, sym: str) -> None:
        if sym not in self.sym2idx:
            self.idx2sym.append(sym)
            self.sym2idx[sym] = len(self.idx2sym) - 1

    def __len__(self) -> int:
        return len(self.idx2sym)

    # -- symbols <-> ids ---------------------------------------------------------------------------------

    def get_sym(self, idx: int) -> str:
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} is outside the vocabulary (size {len(self)})")
        return self.idx2sym[idx]

    def get_idx(self, sym: str) -> int:
        """Index of `sym`; unknown symbols map to `unk_idx` if set, else to ``<unk>``, else ``<UNK>``."""
        found = self.sym2idx.get(sym, _MISSING)
        if found is not _MISSING:
            return found
        if hasattr(self, "unk_idx"):
            return self.unk_idx
        # Vocabularies pickled without unk_idx (older releases) fall back on the token itself.
        if "<unk>" in self.sym2idx:
            return self.sym2idx["<unk>"]
        if "<UNK>" in self.sym2idx:
            return self.sym2idx["<UNK>"]
        raise ValueError(f"token {sym!r} is not in the vocabulary and the vocabulary has no <unk> token")

    def convert_tokens_to_ids(self, symbols: Iterable[str]) -> list[int]:
        symbols = list(symbols)
        lookup = self.sym2idx.get
        ids = [lookup(sym, _MISSING) for sym in symbols]
        if _MISSING in ids:  # rare: only then pay for the fallback logic, symbol by symbol
            ids = [self.get_idx(sym) if idx is _MISSING else idx for sym, idx in zip(symbols, ids)]
        return ids

    def convert_ids_to_tokens(self, indices: Iterable[int]) -> list[str]:
        return [self.get_sym(idx) for idx in indices]

    def token_to_id(self, token: str) -> int | None:
        return self.sym2idx.get(token)

    def text_to_ids(self, text: str) -> list[int]:
        """Ids of one line of text (``tokenize`` then ``convert_tokens_to_ids``), for the batch call."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def convert_to_tensor(self, symbols: Iterable[str]) -> np.ndarray:
        """Ids of `symbols` as an int64 array (0.6.x returns a torch LongTensor). # [len(symbols)]"""
        return np.array(self.convert_tokens_to_ids(symbols), dtype=np.int64)

    def decode(self, indices: Iterable[int], exclude: Iterable[int] | None = None) -> str:
        """Space-joined symbols of `indices`, skipping ids in `exclude`."""
        if exclude is None:
            return " ".join(self.get_sym(idx) for idx in indices)
        excluded = list(exclude)
        return " ".join(self.get_sym(idx) for idx in indices if idx not in excluded)

    # -- tokenizing & encoding ---------------------------------------------------------------------------

    def tokenize(self, line: str, add_eos: bool = False, add_double_eos: bool = False) -> list[str]:
        """Split a stripped (and optionally lower-cased) line on `delimiter` (None: any whitespace; "": into
        characters), then append ``<eos>`` (`add_eos`) or wrap in ``<S>`` (`add_double_eos`, lm1b)."""
        line = line.strip()
        if self.lower_case:
            line = line.lower()
        # 0.6.x returns the bare string for delimiter "" (and fails when adding eos); a char list is equivalent.
        symbols = list(line) if self.delimiter == "" else line.split(self.delimiter)
        if add_double_eos:
            return ["<S>", *symbols, "<S>"]
        if add_eos:
            symbols.append("<eos>")
        return symbols

    def encode_file(self, path: str | os.PathLike, ordered: bool = False, verbose: bool = False,
                    add_eos: bool = True, add_double_eos: bool = False) -> np.ndarray | list[np.ndarray]:
        """Encode each line of a UTF-8 file: a list of int64 arrays, or one concatenated array if `ordered`."""
        encoded = []
        for index, line in enumerate(_read_lines(path)):
            if verbose and index > 0 and index % 500000 == 0:
                logger.info("    line %d", index)
            encoded.append(self.convert_to_tensor(self.tokenize(line, add_eos=add_eos, add_double_eos=add_double_eos)))
        return _concatenate(encoded) if ordered else encoded

    def encode_sents(self, sents: Iterable[Sequence[str]], ordered: bool = False,
                     verbose: bool = False) -> np.ndarray | list[np.ndarray]:
        """Encode tokenized sentences: a list of int64 arrays, or one concatenated array if `ordered`."""
        encoded = []
        for index, symbols in enumerate(sents):
            if verbose and index > 0 and index % 500000 == 0:
                logger.info("    line %d", index)
            encoded.append(self.convert_to_tensor(symbols))
        return _concatenate(encoded) if ordered else encoded


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    # [sum of lengths]; an empty input gives an empty array (0.6.x's torch.cat raises instead).
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def _read_lines(path: str | os.PathLike) -> Iterator[str]:
    """Lines of a UTF-8 text file, newline-translated exactly as 0.6.x reads them."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"text file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as stream:
        yield from stream


def _first_existing(directory: str, names: Sequence[str], what: str) -> str:
    for name in names:
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"no {what} in directory {directory!r}: expected one of {', '.join(names)}")


def _check_state_value(key: str, value: Any, source: str) -> Any:
    """Validate and normalize one tokenizer attribute read from a file."""

    def fail(expected: str) -> ValueError:
        return ValueError(f"{source!r}: attribute {key!r} should be {expected}, got {type(value).__name__}")

    if key == "counter":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail("a mapping of symbol -> count")
        return Counter(value)
    if key == "sym2idx":
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in value.items()):
            raise fail("a mapping of symbol -> index")
        return OrderedDict(value)
    if key in ("idx2sym", "special"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            raise fail("a list of strings")
        return list(value)
    if key == "never_split":
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            raise fail("a list of strings")
        return tuple(value)
    if key in ("min_freq",):
        if not isinstance(value, (int, float)):
            raise fail("a number")
        return value
    if key == "max_size":
        if value is not None and not isinstance(value, int):
            raise fail("an int or None")
        return value
    if key == "lower_case":
        if not isinstance(value, (bool, int)):
            raise fail("a bool")
        return value
    if key in ("delimiter", "vocab_file"):
        if value is not None and not isinstance(value, str):
            raise fail("a string or None")
        return value
    raise AssertionError(key)


def _read_vocab_state(path: str) -> dict[str, Any]:
    """Attributes stored in a vocabulary file: our JSON, or a 0.6.x pickle read with the restricted loader."""
    with open(path, "rb") as stream:
        head = stream.read(64).lstrip()
    if not head.startswith(b"{"):
        return load_pickled_data(path)
    try:
        with open(path, "r", encoding="utf-8") as stream:
            state = json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"vocabulary file {path!r} is not valid JSON: {error}") from error
    if not isinstance(state, dict) or state.get("format") != _VOCAB_FORMAT:
        raise ValueError(f"{path!r} is JSON but not a Transformer-XL vocabulary (missing \"format\": "
                         f"\"{_VOCAB_FORMAT}\")")
    if state.get("version") != _VOCAB_FORMAT_VERSION:
        raise ValueError(f"{path!r}: unsupported vocabulary format version {state.get('version')!r}")
    for required in ("idx2sym", "counter", "index_attributes"):
        if required not in state:
            raise ValueError(f"vocabulary file {path!r} lacks the key {required!r}")
    index_attributes = state.pop("index_attributes")
    if not isinstance(index_attributes, dict) or not all(name.endswith("_idx") for name in index_attributes):
        raise ValueError(f"{path!r}: 'index_attributes' must map names ending in _idx to ints")
    state.pop("format")
    state.pop("version")
    symbols = _check_state_value("idx2sym", state["idx2sym"], path)
    sym2idx: OrderedDict[str, int] = OrderedDict()
    for index, sym in enumerate(symbols):
        sym2idx.setdefault(sym, index)  # first occurrence wins, as add_symbol does
    state["sym2idx"] = sym2idx
    state.update(index_attributes)
    return state


# --------------------------------------------------------------------------------------------------------
# Batch iterators
# --------------------------------------------------------------------------------------------------------


def _resolve_rng(rng: RandomSource) -> Any:
    """An object with random/normal/permutation/shuffle: numpy's global legacy generator when None."""
    if rng is None:
        return np.random  # module-level functions: identical draws to the 0.6.x code after np.random.seed
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed, np.random.Generator or np.random.RandomState, got {rng!r}")


def _as_token_array(data: Any, what: str) -> np.ndarray:
    array = np.asarray(data)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(f"{what} must be a 1-D sequence of integer token ids, got shape {array.shape} "
                         f"dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


class LMOrderedIterator:
    """Batches of one long token stream cut into `bsz` parallel streams, `bptt` steps at a time.

    Each batch is ``(data [bsz, ext + seq_len], target [bsz, seq_len], seq_len)`` where target is data shifted
    by one step, and up to `ext_len` earlier steps are prepended to data as extended context.
    `device` is accepted for 0.6.x compatibility and ignored: batches are numpy arrays on the host.
    """

    def __init__(self, data: Any, bsz: int, bptt: int, device: Any = None, ext_len: int | None = None,
                 rng: RandomSource = None) -> None:
        tokens = _as_token_array(data, "LMOrderedIterator data")
        self.bsz = bsz
        self.bptt = bptt
        self.ext_len = ext_len if ext_len is not None else 0
        self.device = device
        self.rng = _resolve_rng(rng)
        self.n_step = tokens.shape[0] // bsz
        if self.n_step == 0:
            raise ValueError(f"LMOrderedIterator: {tokens.shape[0]} tokens cannot fill batch size {bsz}")
        # Drop the tail that doesn't divide evenly, then stream b is the b-th contiguous chunk.
        self.data = np.ascontiguousarray(tokens[: self.n_step * bsz].reshape(bsz, -1).T)  # [n_step, bsz]
        self.n_batch = (self.n_step + self.bptt - 1) // self.bptt

    def get_batch(self, i: int, bptt: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Batch starting at step `i`: ``(data [bsz, ext + seq_len], target [bsz, seq_len], seq_len)``."""
        if bptt is None:
            bptt = self.bptt
        seq_len = min(bptt, self.data.shape[0] - 1 - i)
        begin = max(0, i - self.ext_len)
        data = self.data[begin : i + seq_len]  # [ext + seq_len, bsz]
        target = self.data[i + 1 : i + 1 + seq_len]  # [seq_len, bsz]
        # Copies: for bsz == 1 the transposes would otherwise be views into self.data.
        return data.T.copy(), target.T.copy(), seq_len

    def get_fixlen_iter(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        for i in range(start, self.data.shape[0] - 1, self.bptt):
            yield self.get_batch(i)

    def get_varlen_iter(self, start: int = 0, std: float = 5, min_len: int = 5,
                        max_deviation: int = 3) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Batches of random length around `bptt` (5% of the time around `bptt / 2`), drawn from `self.rng`."""
        max_len = self.bptt + max_deviation * std
        i = start
        while True:
            center = self.bptt if self.rng.random() < 0.95 else self.bptt / 2.0
            bptt = min(max_len, max(min_len, int(self.rng.normal(center, std))))
            data, target, seq_len = self.get_batch(i, bptt)
            i += seq_len
            yield data, target, seq_len
            if i >= self.data.shape[0] - 2:
                break

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        return self.get_fixlen_iter()


class LMShuffledIterator:
    """Batches from independent sentences (lm1b): each of the `bsz` rows concatenates sentences in stream order.

    Every batch is ``(data [bsz, retained + bptt], target [bsz, bptt], bptt)``; iteration stops at the first
    batch the sentences can't fill. `shuffle` draws the sentence order from `rng` once per epoch.
    """

    def __init__(self, data: Sequence[Any], bsz: int, bptt: int, device: Any = None, ext_len: int | None = None,
                 shuffle: bool = False, rng: RandomSource = None) -> None:
        self.data = [_as_token_array(sent, f"sentence {index}") for index, sent in enumerate(data)]
        self.bsz = bsz
        self.bptt = bptt
        self.ext_len = ext_len if ext_len is not None else 0
        self.device = device
        self.shuffle = shuffle
        self.rng = _resolve_rng(rng)

    def get_sent_stream(self) -> Iterator[np.ndarray]:
        order = self.rng.permutation(len(self.data)) if self.shuffle else range(len(self.data))
        for index in order:
            yield self.data[index]

    def stream_iterator(self, sent_stream: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        streams: list[np.ndarray | None] = [None] * self.bsz  # what is left of each row's current sentence
        data = np.full((self.bptt, self.bsz), -1, dtype=np.int64)  # [n_retain + bptt, bsz]
        target = np.full((self.bptt, self.bsz), -1, dtype=np.int64)  # [bptt, bsz]
        n_retain = 0
        while True:
            data[n_retain:] = -1
            target[:] = -1
            for row in range(self.bsz):
                n_filled = 0
                try:
                    while n_filled < self.bptt:
                        if streams[row] is None or len(streams[row]) <= 1:
                            streams[row] = next(sent_stream)
                        sentence = streams[row]
                        # A sentence's last token is only ever a target; it is kept to start the next fill.
                        # (max: an empty sentence is skipped like a 1-token one; 0.6.x crashes on it.)
                        n_new = min(max(len(sentence) - 1, 0), self.bptt - n_filled)
                        start = n_retain + n_filled
                        data[start : start + n_new, row] = sentence[:n_new]
                        target[n_filled : n_filled + n_new, row] = sentence[1 : n_new + 1]
                        streams[row] = sentence[n_new:]
                        n_filled += n_new
                except StopIteration:
                    return
            # Copies, as the buffers are refilled for the next batch (0.6.x yields views of them when bsz == 1).
            yield data.T.copy(), target.T.copy(), self.bptt

            # The last ext_len steps of this batch are extended context in front of the next one
            # (0.6.x copies them in place, which torch refuses once ext_len > half the batch length).
            n_retain = min(data.shape[0], self.ext_len)
            grown = np.empty((n_retain + self.bptt, self.bsz), dtype=np.int64)
            if n_retain > 0:
                grown[:n_retain] = data[-n_retain:]
            data = grown

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        return self.stream_iterator(self.get_sent_stream())


class LMMultiFileIterator(LMShuffledIterator):
    """Like LMShuffledIterator over the lines of several text files, encoded one file at a time (lm1b train).

    With `shuffle`, each epoch reshuffles the file order and then the sentences of each file.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], vocab: TransfoXLTokenizer, bsz: int, bptt: int,
                 device: Any = None, ext_len: int | None = None, shuffle: bool = False,
                 rng: RandomSource = None) -> None:
        # Our own copy, shuffled in place each epoch like 0.6.x shuffles the caller's list.
        self.paths = list(paths)
        self.vocab = vocab
        self.bsz = bsz
        self.bptt = bptt
        self.ext_len = ext_len if ext_len is not None else 0
        self.device = device
        self.shuffle = shuffle
        self.rng = _resolve_rng(rng)

    def get_sent_stream(self, path: str | os.PathLike) -> Iterator[np.ndarray]:  # type: ignore[override]
        sents = self.vocab.encode_file(path, add_double_eos=True)
        if self.shuffle:
            self.rng.shuffle(sents)
        return iter(sents)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        if self.shuffle:
            self.rng.shuffle(self.paths)
        for path in self.paths:
            yield from self.stream_iterator(self.get_sent_stream(path))


# --------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------


class TransfoXLCorpus:
    """A tokenizer plus the encoded train/valid/test splits of one of the Transformer-XL benchmark datasets.

    Ordered datasets (ptb, wt2, wt103, enwik8, text8) hold each split as one int64 array; lm1b holds the
    training file paths and valid/test as lists of per-sentence arrays.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.vocab = TransfoXLTokenizer(*args, **kwargs)
        self.dataset: str | None = None
        self.train: Any = None
        self.valid: Any = None
        self.test: Any = None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        *inputs: Any,
        **kwargs: Any,
    ) -> TransfoXLCorpus:
        """Load a pre-processed corpus: shortcut name (``transfo-xl-wt103``) or a directory holding the
        vocabulary and ``corpus.npz`` (ours) or ``corpus.bin`` (0.6.x, read with the restricted loader)."""
        import dataclasses

        from jaxformers.file_utils import HubOptions, cached_path, hub_repo_for, hub_url

        hub = HubOptions.pop_from(kwargs, cache_dir)  # revision=, token=, local_files_only=, force_download=
        name = os.fspath(pretrained_model_name_or_path)
        vocab = TransfoXLTokenizer.from_pretrained(name, hub.cache_dir, *inputs, **hub.download_kwargs(), **kwargs)
        if name in PRETRAINED_CORPUS_ARCHIVE_MAP:
            location = PRETRAINED_CORPUS_ARCHIVE_MAP[name]
        elif os.path.isdir(name):
            location = _first_existing(name, (CORPUS_NPZ_NAME, CORPUS_NAME), "Transformer-XL corpus")
        elif (repo := hub_repo_for(name)) is not None:
            location = hub_url(repo, CORPUS_NAME, hub.revision)
        else:
            raise FileNotFoundError(f"corpus {name!r} is neither a shortcut name "
                                    f"({', '.join(PRETRAINED_CORPUS_ARCHIVE_MAP)}) nor a directory")
        resolved = cached_path(location, **dataclasses.asdict(hub))
        logger.info("loading Transformer-XL corpus from %s", resolved)
        corpus = cls(*inputs, **kwargs)
        state = _read_corpus_npz(resolved) if _is_npz(resolved) else load_pickled_data(resolved)
        if not isinstance(state, Mapping):
            raise ValueError(f"{resolved!r} holds a {type(state).__name__}, expected a dict of corpus attributes")
        dataset = state.get("dataset")
        if dataset is not None and dataset not in DATASETS:
            raise ValueError(f"{resolved!r}: unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
        corpus.dataset = dataset
        for split in ("train", "valid", "test"):
            setattr(corpus, split, _normalize_split(state.get(split), f"{resolved!r} split {split!r}"))
        corpus.vocab = vocab
        return corpus

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[str, str]:
        """Write ``vocab.json`` and ``corpus.npz`` (no pickles) to `directory`; returns both paths."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        vocab_path = self.vocab.save_vocabulary(directory)
        arrays: dict[str, np.ndarray] = {"dataset": np.array(self.dataset or "")}
        for split in ("train", "valid", "test"):
            value = getattr(self, split)
            if value is None:
                continue
            if isinstance(value, np.ndarray):
                arrays[split] = value
            elif all(isinstance(item, (str, os.PathLike)) for item in value):  # lm1b train: file paths
                arrays[f"{split}.paths"] = np.array([os.fspath(item) for item in value], dtype=str)
            else:  # list of sentences: concatenated, with start offsets
                lengths = [len(sent) for sent in value]
                arrays[f"{split}.values"] = _concatenate([np.asarray(sent, dtype=np.int64) for sent in value])
                arrays[f"{split}.offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        corpus_path = os.path.join(directory, CORPUS_NPZ_NAME)
        np.savez(corpus_path, **arrays)
        return vocab_path, corpus_path

    def build_corpus(self, path: str | os.PathLike, dataset: str) -> None:
        """Count, build the vocabulary and encode the splits of `dataset` found in directory `path`.

        ptb/wt2/enwik8/text8 count all three splits, wt103 only train.txt; lm1b takes its vocabulary from the
        tokenizer's `vocab_file` and keeps the training shards as paths.
        """
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
        path = os.fspath(path)
        self.dataset = dataset
        split_file = {split: os.path.join(path, f"{split}.txt") for split in ("train", "valid", "test")}

        if dataset in ("ptb", "wt2", "enwik8", "text8"):
            for split in ("train", "valid", "test"):
                self.vocab.count_file(split_file[split])
        elif dataset == "wt103":
            self.vocab.count_file(split_file["train"])
        self.vocab.build_vocab()

        if dataset in ORDERED_DATASETS:
            # Character-level datasets have no sentence structure: no <eos> between lines.
            add_eos = dataset not in ("enwik8", "text8")
            for split in ("train", "valid", "test"):
                setattr(self, split, self.vocab.encode_file(split_file[split], ordered=True, add_eos=add_eos))
        else:
            pattern = os.path.join(path, "1-billion-word-language-modeling-benchmark-r13output",
                                   "training-monolingual.tokenized.shuffled", "news.en-*")
            # Sorted so the shard order (and so seeded shuffles) doesn't depend on the file system.
            self.train = sorted(glob.glob(pattern))
            self.valid = self.vocab.encode_file(split_file["valid"], ordered=False, add_double_eos=True)
            self.test = self.vocab.encode_file(split_file["test"], ordered=False, add_double_eos=True)

    def get_iterator(self, split: str, *args: Any, **kwargs: Any) -> LMOrderedIterator | LMShuffledIterator:
        """Iterator over `split` ("train", "valid", "test"); extra arguments go to the iterator (bsz, bptt...).

        lm1b training data is always shuffled.
        """
        if split not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {split!r}: expected 'train', 'valid' or 'test'")
        if self.dataset not in DATASETS:
            raise ValueError(f"corpus has no dataset ({self.dataset!r}): call build_corpus or from_pretrained first")
        data = getattr(self, split)
        if self.dataset in ORDERED_DATASETS:
            return LMOrderedIterator(data, *args, **kwargs)
        if split == "train":
            kwargs["shuffle"] = True
            return LMMultiFileIterator(data, self.vocab, *args, **kwargs)
        return LMShuffledIterator(data, *args, **kwargs)


def _is_npz(path: str) -> bool:
    # Both our corpus.npz and a torch.save file are zip archives; only the npz holds nothing but .npy files.
    if not is_zip_file(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return all(name.endswith(".npy") for name in archive.namelist())


def _read_corpus_npz(path: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as archive:
        names = set(archive.files)
        state["dataset"] = str(archive["dataset"]) if "dataset" in names else None
        state["dataset"] = state["dataset"] or None
        for split in ("train", "valid", "test"):
            if split in names:
                state[split] = archive[split]
            elif f"{split}.paths" in names:
                state[split] = [str(p) for p in archive[f"{split}.paths"]]
            elif f"{split}.values" in names:
                values, offsets = archive[f"{split}.values"], archive[f"{split}.offsets"]
                state[split] = [values[begin:end] for begin, end in zip(offsets[:-1], offsets[1:])]
    return state


def _normalize_split(value: Any, what: str) -> Any:
    """One corpus split as loaded: None, a list of shard paths, a list of sentence arrays, or one array."""
    if value is None:
        return None
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    if isinstance(value, list) and any(np.ndim(item) != 0 for item in value):
        return [_as_token_array(sent, f"{what} sentence {index}") for index, sent in enumerate(value)]
    return _as_token_array(value, what)

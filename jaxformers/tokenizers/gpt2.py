"""GPT-2's byte-level BPE tokenizer, plus the vocabulary/merges machinery shared with OpenAI GPT.

Semantics follow ``pytorch_pretrained_bert.tokenization_gpt2`` 0.6.2, with two deliberate differences:

* Text is turned into bytes with UTF-8 before the byte-to-symbol table is applied. The 0.6.2 code indexed that
  table with characters, which raises ``KeyError`` for most non-ASCII text under Python 3 and silently mis-encodes
  characters U+0080..U+00FF. Token ids here equal those of OpenAI's reference implementation (``tiktoken``'s
  ``gpt2`` encoding) for every string, and ``decode(encode(s)) == s``.
* Lone surrogates (which UTF-8 cannot encode) are replaced by U+FFFD, as tiktoken does, instead of raising.

Speed comes from caching the result per pre-token (the regex split yields few distinct pieces in real text), a
C-level ``str.translate`` for the byte-to-symbol step, and a ``dict.__missing__`` hook so that cache hits never
run Python code per piece.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from itertools import chain, islice
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import regex

from .batch import BatchCallMixin
from .hub_files import (
    TOKENIZER_JSON_NAME,
    bpe_merges_from_json,
    model_max_length_of,
    pop_side_settings,
    read_tokenizer_json_model,
    read_tokenizer_settings,
)

logger = logging.getLogger(__name__)

VOCAB_NAME = "vocab.json"
MERGES_NAME = "merges.txt"
SPECIAL_TOKENS_NAME = "special_tokens.txt"

_HUB = "https://huggingface.co"
GPT2_SHORTCUT_NAMES = ("gpt2", "gpt2-medium")
# openai-community/ holds the GPT-2 repositories today (see file_utils.SHORTCUT_REPOS).
PRETRAINED_VOCAB_ARCHIVE_MAP = {n: f"{_HUB}/openai-community/{n}/resolve/main/{VOCAB_NAME}" for n in GPT2_SHORTCUT_NAMES}
PRETRAINED_MERGES_ARCHIVE_MAP = {n: f"{_HUB}/openai-community/{n}/resolve/main/{MERGES_NAME}" for n in GPT2_SHORTCUT_NAMES}
PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP = {name: 1024 for name in GPT2_SHORTCUT_NAMES}

# GPT-2's pre-tokenizer: contractions, letter runs, digit runs and other-symbol runs (each optionally preceded by
# one space), then whitespace. `\s+(?!\S)` leaves the last space of a run to the word that follows it.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

NO_MAX_LEN = int(1e12)  # "no limit", the value 0.6.x uses so that comparisons stay integer
_PIECE_CACHE_LIMIT = 1 << 18  # entries; bounds memory on endless streams of novel text
_MERGES_HEADER = "#version: 0.2"


# ----------------------------------------------------------------------------------------------------------------
# Files and BPE merging (shared with the OpenAI GPT tokenizer)
# ----------------------------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value (0..255) to the printable character standing for it in BPE symbols.

    Printable Latin-1 bytes stand for themselves; the 68 others (controls, space, NBSP, soft hyphen...) are
    given code points 256, 257, ... in byte order, so no symbol is whitespace or a control character.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in kept}
    remapped = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + offset) for offset, byte in enumerate(remapped)})
    return table


def read_vocab(vocab_file: str | os.PathLike) -> dict[str, int]:
    """Load a ``vocab.json`` mapping token strings to ids, checking its shape."""
    with open(vocab_file, encoding="utf-8") as stream:
        try:
            vocab = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"vocabulary file {str(vocab_file)!r} is not valid JSON: {error}") from error
    if not isinstance(vocab, dict):
        raise ValueError(f"vocabulary file {str(vocab_file)!r} must hold a JSON object token -> id, "
                         f"found {type(vocab).__name__}")
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"vocabulary file {str(vocab_file)!r}: id of token {token!r} must be an integer, "
                             f"found {index!r}")
    return vocab


def read_merges(merges_file: str | os.PathLike) -> dict[tuple[str, str], int]:
    """Load a ``merges.txt`` (optional ``#version`` header, then one ``left right`` pair per line) as pair -> rank.

    Rank is the order of the line: lower merges first. Unlike 0.6.x, which always dropped the first and the last
    line, a file without header or without final newline keeps all its merges.
    """
    with open(merges_file, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    ranks: dict[tuple[str, str], int] = {}
    rank = 0
    for line_number, line in enumerate(lines, start=1):
        if not line or (line_number == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"merges file {str(merges_file)!r}, line {line_number}: expected two symbols "
                             f"separated by a space, found {line!r}")
        ranks[(parts[0], parts[1])] = rank  # a repeated pair keeps its last rank, as in 0.6.x
        rank += 1
    return ranks


def read_special_tokens(special_tokens_file: str | os.PathLike) -> list[str]:
    """Load ``special_tokens.txt``: one token per line."""
    with open(special_tokens_file, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last token; it does not start an empty one
    return lines


def merge_symbols(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to a word given as a list of symbols (modified in place); returns the merged symbols.

    Repeatedly fuses the adjacent pair of lowest rank, leftmost occurrence first, until no adjacent pair has a
    rank. Ranks are unique per pair and a fused symbol is longer than both halves, so a fusion never creates
    another occurrence of the pair just fused: this gives exactly 0.6.x's "fuse every occurrence left to right"
    (``a a a`` with merge ``a a`` gives ``aa a``), one occurrence at a time.

    O(n log n) in the word's length n: candidate pairs sit in a heap keyed (rank, position of the left symbol),
    symbols in a linked list; a fusion only pushes the two pairs it creates, and entries whose pair has changed
    since are skipped when popped (a pair is identified by its rank, which is unique).
    """
    count = len(symbols)
    if count < 2:
        return symbols
    rank_of = ranks.get
    merged: list[str | None] = list(symbols)  # merged[i]: the symbol starting at original position i, or None
    following = list(range(1, count + 1))  # following[i]: position of the next live symbol (count: none)
    preceding = list(range(-1, count - 1))
    heap = [(rank, index) for index, rank in enumerate(map(rank_of, zip(symbols, islice(symbols, 1, None))))
            if rank is not None]
    heapq.heapify(heap)
    while heap:
        rank, left = heapq.heappop(heap)
        right = following[left]
        if merged[left] is None or right == count or rank_of((merged[left], merged[right])) != rank:
            continue  # stale: one of the two symbols has been fused since this entry was pushed
        merged[left] += merged[right]
        merged[right] = None
        following[left] = following[right]
        if following[left] < count:
            preceding[following[left]] = left
            _push_pair(heap, rank_of, merged, left, following[left])
        if preceding[left] >= 0:
            _push_pair(heap, rank_of, merged, preceding[left], left)
    symbols[:] = [symbol for symbol in merged if symbol is not None]
    return symbols


def _push_pair(heap: list, rank_of: Any, merged: list, left: int, right: int) -> None:
    rank = rank_of((merged[left], merged[right]))
    if rank is not None:
        heapq.heappush(heap, (rank, left))


def write_vocabulary(
    directory: str | os.PathLike,
    encoder: dict[str, int],
    bpe_ranks: dict[tuple[str, str], int],
    special_tokens: dict[str, int],
) -> tuple[str, str, str]:
    """Write ``vocab.json``, ``merges.txt`` and ``special_tokens.txt`` into an existing directory."""
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"vocabulary path {str(directory)!r} should be an existing directory")
    vocab_file = os.path.join(directory, VOCAB_NAME)
    merges_file = os.path.join(directory, MERGES_NAME)
    special_tokens_file = os.path.join(directory, SPECIAL_TOKENS_NAME)

    with open(vocab_file, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(encoder, ensure_ascii=False))

    with open(merges_file, "w", encoding="utf-8") as stream:
        stream.write(_MERGES_HEADER + "\n")
        expected = 0
        for (left, right), rank in sorted(bpe_ranks.items(), key=lambda item: item[1]):
            if rank != expected:
                logger.warning("Saving merges to %s: merge ranks are not consecutive (%d after %d); "
                               "the tokenizer may be corrupted.", merges_file, rank, expected - 1)
                expected = rank
            stream.write(f"{left} {right}\n")
            expected += 1

    with open(special_tokens_file, "w", encoding="utf-8") as stream:
        expected = len(encoder)
        for token, index in sorted(special_tokens.items(), key=lambda item: item[1]):
            if index != expected:
                logger.warning("Saving special tokens to %s: ids are not consecutive (%d, expected %d); "
                               "the tokenizer may be corrupted.", special_tokens_file, index, expected)
                expected = index
            stream.write(token + "\n")
            expected += 1

    return vocab_file, merges_file, special_tokens_file


def vocab_and_merges(
    vocab_file: str | os.PathLike | Mapping[str, int], merges_file: str | os.PathLike | Mapping[tuple[str, str], int]
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """The vocabulary and merge ranks, each given as a file or already loaded (e.g. from a tokenizer.json)."""
    encoder = dict(vocab_file) if isinstance(vocab_file, Mapping) else read_vocab(vocab_file)
    ranks = dict(merges_file) if isinstance(merges_file, Mapping) else read_merges(merges_file)
    return encoder, ranks


# tokenizer_config.json settings whose non-default value this implementation cannot honour.
_UNSUPPORTED_SETTINGS = {"add_prefix_space": False, "add_bos_token": False, "add_eos_token": False}


class PieceCache(dict):
    """pre-token -> tokenized result; a miss computes the value with `compute` and stores it.

    Looking pieces up with ``cache[piece]`` inside ``map`` keeps the hit path entirely in C.
    """

    def __init__(self, compute):
        super().__init__()
        self._compute = compute

    def __missing__(self, piece: str):
        value = self._compute(piece)
        if len(self) >= _PIECE_CACHE_LIMIT:
            self.clear()
        self[piece] = value
        return value


def _as_id_list(ids: Iterable[int]) -> Iterable[int]:
    # numpy/jax arrays: plain ints hash and compare the fastest and jax arrays are not hashable.
    tolist = getattr(ids, "tolist", None)
    return tolist() if tolist is not None else ids


class BPETokenizerBase(BatchCallMixin):
    """Vocabulary, special tokens, id conversion, saving and loading shared by the GPT and GPT-2 tokenizers.

    Subclasses define `tokenize` and `decode`, and the class-level maps of shortcut names. Calling the
    tokenizer on texts gives ``input_ids`` / ``attention_mask`` (pairs are concatenated, no special tokens are
    added, as Hugging Face's GPT tokenizers do); padding needs ``pad_token`` (e.g. ``tok.pad_token = tok.eos_token``).
    """

    model_input_names = ("input_ids", "attention_mask")
    pad_token: str | None = None

    special_token_names: ClassVar[tuple[str, ...]] = ("unk_token", "pad_token")
    pretrained_vocab_files: ClassVar[dict[str, str]] = {}
    pretrained_merges_files: ClassVar[dict[str, str]] = {}
    max_model_input_sizes: ClassVar[dict[str, int]] = {}

    encoder: dict[str, int]
    decoder: dict[int, str]
    bpe_ranks: dict[tuple[str, str], int]
    special_tokens: dict[str, int]
    special_tokens_decoder: dict[int, str]
    max_len: int

    def __len__(self) -> int:
        return len(self.encoder) + len(self.special_tokens)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added special tokens)."""
        return len(self.encoder)

    def set_special_tokens(self, special_tokens: Sequence[str] | None) -> None:
        """Give extra tokens the ids following the base vocabulary, in list order; a falsy value removes them all.

        Special tokens are only recognised by the id conversions, never found inside text by `tokenize`.
        """
        self.special_tokens = {token: len(self.encoder) + offset for offset, token in enumerate(special_tokens or ())}
        self.special_tokens_decoder = {index: token for token, index in self.special_tokens.items()}
        # Special tokens take precedence over base tokens of the same spelling, as in 0.6.x.
        self._token_to_id = {**self.encoder, **self.special_tokens}
        if self.special_tokens:
            logger.info("Special tokens %s", self.special_tokens)
        self._special_tokens_changed()

    def _special_tokens_changed(self) -> None:
        """Hook for subclasses whose caches depend on the special tokens."""

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Ids of BPE tokens (special tokens first, unknown tokens -> 0); a single string gives a single id."""
        if isinstance(tokens, str):
            return self._token_to_id.get(tokens, 0)
        lookup = self._token_to_id.get
        ids = [lookup(token, 0) for token in tokens]
        self._warn_if_too_long(len(ids))
        return ids

    @property
    def model_max_length(self) -> int:
        """Longest id sequence the model takes (``max_len``); truncation=True cuts to it."""
        return self.max_len

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    def text_to_ids(self, text: str) -> list[int]:
        """Ids of `text` (no length warning: the batch call truncates)."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def _warn_if_too_long(self, length: int) -> None:
        if length > self.max_len:
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length for this "
                "model (%d > %d). Running this sequence through the model will result in indexing errors",
                length, self.max_len)

    def convert_ids_to_tokens(self, ids: Iterable[int], skip_special_tokens: bool = False) -> list[str]:
        """BPE tokens of ids (special ids first); `skip_special_tokens` drops special ids."""
        tokens = []
        for index in _as_id_list(ids):
            special = self.special_tokens_decoder.get(index)
            if special is not None:
                if not skip_special_tokens:
                    tokens.append(special)
                continue
            try:
                tokens.append(self.decoder[index])
            except KeyError:
                raise KeyError(self._unknown_id_message(index)) from None
        return tokens

    def _unknown_id_message(self, index: Any) -> str:
        return (f"token id {index!r} is not in the vocabulary (ids 0..{len(self.encoder) - 1}"
                f"{f' plus {len(self.special_tokens)} special tokens' if self.special_tokens else ''})")

    def save_vocabulary(self, vocab_path: str | os.PathLike) -> tuple[str, str, str]:
        """Write vocab.json, merges.txt and special_tokens.txt into directory `vocab_path`; returns their paths."""
        return write_vocabulary(vocab_path, self.encoder, self.bpe_ranks, self.special_tokens)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ):
        """Build a tokenizer from a shortcut name (downloaded once into the cache) or a directory.

        A directory holds vocab.json and merges.txt, and optionally special_tokens.txt (used unless
        `special_tokens` is passed). Shortcut names cap `max_len` at the model's number of positions.
        Other keyword arguments go to the constructor.
        """
        import dataclasses

        # lazy: keeps this module importable on its own
        from jaxformers.file_utils import TOKENIZER_FILES, HubOptions, cached_path, hub_repo_for, hub_snapshot

        hub = HubOptions.pop_from(kwargs, cache_dir)  # revision=, token=, local_files_only=, force_download=
        name = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(name):
            return cls.from_directory(name, **kwargs)
        if name not in cls.pretrained_vocab_files and (repo := hub_repo_for(name)) is not None:
            return cls.from_directory(hub_snapshot(repo, TOKENIZER_FILES, hub), **kwargs)  # a hub repository id
        special_tokens_file = None
        if name in cls.pretrained_vocab_files:
            vocab_file = cls.pretrained_vocab_files[name]
            merges_file = cls.pretrained_merges_files[name]
        else:
            vocab_file = os.path.join(name, VOCAB_NAME)
            merges_file = os.path.join(name, MERGES_NAME)
            candidate = os.path.join(name, SPECIAL_TOKENS_NAME)
            if os.path.exists(candidate):
                special_tokens_file = candidate
                logger.info("loading special tokens file %s", candidate)
        try:
            resolved_vocab_file = cached_path(vocab_file, **dataclasses.asdict(hub))
            resolved_merges_file = cached_path(merges_file, **dataclasses.asdict(hub))
        except OSError as error:
            # Say which kind of name it was: a shortcut name whose files could not be fetched is not "unknown".
            kind = ("the shortcut name's files" if name in cls.pretrained_vocab_files else
                    f"it is not a shortcut name ({', '.join(cls.pretrained_vocab_files)}) and the files")
            raise OSError(
                f"cannot load a {cls.__name__} from {name!r}: {kind} {vocab_file!r} and {merges_file!r} "
                f"could not be found or downloaded ({error})") from error
        logger.info("loading vocabulary file %s (local: %s)", vocab_file, resolved_vocab_file)
        logger.info("loading merges file %s (local: %s)", merges_file, resolved_merges_file)

        if name in cls.max_model_input_sizes:
            # Never let the tokenizer accept more tokens than the model has position embeddings.
            limit = cls.max_model_input_sizes[name]
            requested = kwargs.get("max_len")
            kwargs["max_len"] = limit if requested is None else min(requested, limit)
        if special_tokens_file is not None and "special_tokens" not in kwargs:
            special_tokens = read_special_tokens(special_tokens_file)
        else:
            special_tokens = kwargs.pop("special_tokens", None)
        return cls(resolved_vocab_file, resolved_merges_file, special_tokens=special_tokens, **kwargs)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, **kwargs: Any):
        """A tokenizer from a model directory (a hub snapshot, a save_pretrained output).

        vocab.json + merges.txt, or else the BPE model inside tokenizer.json; special_tokens.txt (0.6.x extra
        tokens) unless `special_tokens` is passed; tokenizer_config.json / special_tokens_map.json give
        ``model_max_length`` (as ``max_len``) and the special tokens. Keyword arguments override them.
        """
        directory = os.fspath(directory)
        vocab: Any = os.path.join(directory, VOCAB_NAME)
        merges: Any = os.path.join(directory, MERGES_NAME)
        if not (os.path.isfile(vocab) and os.path.isfile(merges)):
            json_path = os.path.join(directory, TOKENIZER_JSON_NAME)
            if not os.path.isfile(json_path):
                raise OSError(f"cannot load a {cls.__name__} from {directory!r}: it has neither {VOCAB_NAME} + "
                              f"{MERGES_NAME} nor {TOKENIZER_JSON_NAME}")
            model = read_tokenizer_json_model(json_path, "BPE")
            vocab, merges = model["vocab"], bpe_merges_from_json(model, json_path)
        settings = read_tokenizer_settings(directory)
        options = cls._options_from_settings(settings)
        sides = pop_side_settings(settings, kwargs)
        special_tokens_file = os.path.join(directory, SPECIAL_TOKENS_NAME)
        if "special_tokens" not in kwargs and os.path.exists(special_tokens_file):
            logger.info("loading special tokens file %s", special_tokens_file)
            options["special_tokens"] = read_special_tokens(special_tokens_file)
        options.update(kwargs)
        tokenizer = cls(vocab, merges, **options)
        for key, value in sides.items():
            setattr(tokenizer, key, value)
        return tokenizer

    @classmethod
    def _options_from_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        source = settings.get("_source", "tokenizer settings")
        for key, default in _UNSUPPORTED_SETTINGS.items():
            if settings.get(key, default) != default:
                raise ValueError(f"{source}: {key}={settings[key]!r} is not supported by {cls.__name__}")
        options: dict[str, Any] = {}
        max_length = model_max_length_of(settings)
        if max_length is not None:
            options["max_len"] = max_length
        for key in cls.special_token_names:
            if key in settings:
                options[key] = settings[key]
        return options


# ----------------------------------------------------------------------------------------------------------------
# GPT-2
# ----------------------------------------------------------------------------------------------------------------


def _replace_surrogates(text: str) -> str:
    # Pairs become the character they encode; lone surrogates become U+FFFD (tiktoken's behaviour).
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class GPT2Tokenizer(BPETokenizerBase):
    """GPT-2's byte-level BPE tokenizer.

    Args:
        vocab_file: ``vocab.json``, BPE token string -> id.
        merges_file: ``merges.txt``, merge pairs by priority.
        errors: how `decode` handles byte sequences that are not valid UTF-8 (see `bytes.decode`).
        special_tokens: extra tokens, given ids after the vocabulary (see `set_special_tokens`).
        max_len: sequences longer than this log a warning in `convert_tokens_to_ids`/`encode`.
        unk_token, bos_token, eos_token: GPT-2's ``<|endoftext|>`` (for reference; never inserted in text).
        pad_token: the token a batch call pads with (None: it cannot pad). ``<|endoftext|>`` is the usual choice.
    """

    special_token_names = ("unk_token", "bos_token", "eos_token", "pad_token")
    pretrained_vocab_files = PRETRAINED_VOCAB_ARCHIVE_MAP
    pretrained_merges_files = PRETRAINED_MERGES_ARCHIVE_MAP
    max_model_input_sizes = PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        merges_file: str | os.PathLike,
        errors: str = "replace",
        special_tokens: Sequence[str] | None = None,
        max_len: int | None = None,
        *,
        unk_token: str = "<|endoftext|>",
        bos_token: str = "<|endoftext|>",
        eos_token: str = "<|endoftext|>",
        pad_token: str | None = None,
    ) -> None:
        self.max_len = max_len if max_len is not None else NO_MAX_LEN
        self.errors = errors
        self.encoder, self.bpe_ranks = vocab_and_merges(vocab_file, merges_file)
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.unk_token, self.bos_token, self.eos_token, self.pad_token = unk_token, bos_token, eos_token, pad_token
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {symbol: byte for byte, symbol in self.byte_encoder.items()}
        self.pat = regex.compile(GPT2_SPLIT_PATTERN)

        # Translating the Latin-1 decoding of UTF-8 bytes maps every byte to its symbol in one C call.
        self._byte_symbols = str.maketrans({chr(byte): symbol for byte, symbol in self.byte_encoder.items()})
        self._base_token_bytes = {index: self._symbols_to_bytes(token) for token, index in self.encoder.items()}
        self._piece_tokens = PieceCache(self._tokenize_piece)  # pre-token -> tuple of BPE tokens
        self._piece_ids = PieceCache(self._encode_piece)  # pre-token -> tuple of ids
        self.set_special_tokens(special_tokens)

    def _symbols_to_bytes(self, token: str) -> bytes | None:
        try:
            return bytes([self.byte_decoder[symbol] for symbol in token])
        except KeyError:
            return None  # not a byte-level token; only an error if decode meets it

    def _special_tokens_changed(self) -> None:
        # Ids of BPE tokens depend on special tokens (they win over same-spelled base tokens).
        self._piece_ids.clear()
        self._token_bytes = dict(self._base_token_bytes)
        self._token_bytes.update({index: token.encode("utf-8") for index, token in self.special_tokens_decoder.items()})

    def clear_cache(self) -> None:
        """Forget memoised pre-token results (bounded anyway); for benchmarks of a tokenizer seeing new text."""
        self._piece_tokens.clear()
        self._piece_ids.clear()

    def bpe(self, token: str) -> str:
        """BPE of one pre-token already written in byte symbols; tokens joined by spaces (0.6.x API)."""
        return " ".join(merge_symbols(list(token), self.bpe_ranks))

    def _bpe_piece(self, piece: str) -> list[str]:
        symbols = piece.encode("utf-8").decode("latin-1").translate(self._byte_symbols)
        return merge_symbols(list(symbols), self.bpe_ranks)

    def _tokenize_piece(self, piece: str) -> tuple[str, ...]:
        return tuple(self._bpe_piece(piece))

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        lookup = self._token_to_id.get
        return tuple([lookup(token, 0) for token in self._bpe_piece(piece)])

    def _split(self, text: str) -> list[str]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _replace_surrogates(text)
        return self.pat.findall(text)

    def tokenize(self, text: str) -> list[str]:
        """Split text into BPE token strings (bytes written with GPT-2's printable byte symbols)."""
        return list(chain.from_iterable(map(self._piece_tokens.__getitem__, self._split(text))))

    def text_to_ids(self, text: str) -> list[int]:
        return list(chain.from_iterable(map(self._piece_ids.__getitem__, self._split(text))))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (``convert_tokens_to_ids(tokenize(text))``, computed faster)."""
        ids = list(chain.from_iterable(map(self._piece_ids.__getitem__, self._split(text))))
        self._warn_if_too_long(len(ids))
        return ids

    def decode(self, tokens: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of a sequence of ids; special tokens are written out unless `skip_special_tokens`.

        (0.6.2's ``decode(tokens)`` raised ``KeyError`` on special-token ids.) Invalid UTF-8, as produced by
        a sequence cut inside a character, is handled per `errors` given at construction.
        """
        ids = _as_id_list(tokens)
        if skip_special_tokens and self.special_tokens_decoder:
            ids = [index for index in ids if index not in self.special_tokens_decoder]
        table = self._token_bytes
        try:
            data = b"".join([table[index] for index in ids])
        except (KeyError, TypeError):
            # Find the culprit for a precise message (slow path, errors only).
            for index in _as_id_list(tokens):
                if index not in table:
                    raise KeyError(self._unknown_id_message(index)) from None
                if table[index] is None:
                    raise ValueError(f"token {self.decoder[index]!r} (id {index}) contains characters outside "
                                     f"GPT-2's byte alphabet and cannot be decoded") from None
            raise
        return data.decode("utf-8", errors=self.errors)

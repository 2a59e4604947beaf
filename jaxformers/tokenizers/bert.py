"""BERT tokenization: basic (cleanup, lower-casing, punctuation splitting) followed by WordPiece.

Output is token-for-token identical to ``pytorch_pretrained_bert.tokenization`` (0.6.x) for every Unicode
input, but several times faster:

* The reference walks the text one character at a time in Python. Here the whole text is cleaned in one
  C-level pass (``str.translate`` with a table covering only the characters that actually need an action),
  then split on whitespace with ``str.split``.
* Everything after that point depends on one whitespace-delimited word at a time, so the result for each
  word is memoised. Natural text repeats words heavily, so most words cost one dict lookup.

The memo caches assume the tokenizer's settings and vocabulary are not mutated in place after
construction. Re-assigning an attribute (``do_lower_case``, ``never_split``, ``vocab``, ``unk_token``,
``max_input_chars_per_word``) clears the relevant cache automatically; after editing a vocabulary dict in
place, call ``clear_cache()``.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from .batch import BatchCallMixin
from .hub_files import (TOKENIZER_JSON_NAME, model_max_length_of, pop_side_settings, read_tokenizer_json_model,
                        read_tokenizer_settings)

logger = logging.getLogger(__name__)

VOCAB_NAME = "vocab.txt"

# The 0.6.x shortcut names, pointed at where those files live on the model hub today.
BERT_PRETRAINED_MODELS = (
    "bert-base-uncased",
    "bert-large-uncased",
    "bert-base-cased",
    "bert-large-cased",
    "bert-base-multilingual-uncased",
    "bert-base-multilingual-cased",
    "bert-base-chinese",
    "bert-base-german-cased",
    "bert-large-uncased-whole-word-masking",
    "bert-large-cased-whole-word-masking",
    "bert-large-uncased-whole-word-masking-finetuned-squad",
    "bert-large-cased-whole-word-masking-finetuned-squad",
    "bert-base-cased-finetuned-mrpc",
)
# (google-bert/ is where the hub keeps the original BERT repositories today; see file_utils.SHORTCUT_REPOS.)
PRETRAINED_VOCAB_ARCHIVE_MAP: dict[str, str] = {
    name: f"https://huggingface.co/google-bert/{name}/resolve/main/{VOCAB_NAME}" for name in BERT_PRETRAINED_MODELS
}
# Every released BERT has 512 position embeddings; longer id sequences would index past the table.
PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP: dict[str, int] = {name: 512 for name in BERT_PRETRAINED_MODELS}

DEFAULT_NEVER_SPLIT: tuple[str, ...] = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
_NO_MAX_LEN = int(1e12)
# Memo caches are dropped wholesale when they reach this many words: bounded memory, no LRU bookkeeping.
_MAX_CACHED_WORDS = 1 << 17


# --------------------------------------------------------------------------------------------------------
# Character classes (same definitions as the original BERT code)
# --------------------------------------------------------------------------------------------------------

# Code point ranges of the CJK ideograph blocks; these characters are split off as words of their own.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# BERT counts every ASCII character that is neither alphanumeric nor whitespace/control as punctuation
# ("$", "^", "`" included, although Unicode files them as symbols).
_ASCII_PUNCTUATION = "".join(chr(cp) for cp in range(33, 127) if not chr(cp).isalnum())


def is_cjk_codepoint(cp: int) -> bool:
    """True for code points in the CJK ideograph blocks that BERT isolates as single-character words."""
    return any(low <= cp <= high for low, high in _CJK_RANGES)


def is_whitespace(char: str) -> bool:
    """True for a character BERT's cleanup turns into a plain space (space, tab, newline, CR, category Zs)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    """True for a character BERT's cleanup deletes: category C*, except tab/newline/CR (kept as whitespace)."""
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_punctuation(char: str) -> bool:
    """True for a character split off as its own token: Unicode P* or any ASCII non-alphanumeric symbol."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def whitespace_tokenize(text: str) -> list[str]:
    """Split on runs of whitespace, dropping empty strings (the reference's helper of the same name)."""
    return text.split()


# --------------------------------------------------------------------------------------------------------
# Whole-text cleanup: drop control characters, put spaces around CJK ideographs
# --------------------------------------------------------------------------------------------------------
#
# The reference also maps every whitespace character to " ", but that only matters for the split that
# follows, and str.split already splits on all of them (every Zs character is str.isspace). Characters that
# str.isspace accepts but the reference does not treat as whitespace (\x0b, \x0c, \x1c-\x1f, \x85) are
# control characters, deleted here before the split just as the reference deletes them.

_ASCII_DELETE_TABLE = {cp: None for cp in range(128) if is_control(chr(cp))}
_ASCII_CONTROL_RE = re.compile("[" + "".join(re.escape(chr(cp)) for cp in _ASCII_DELETE_TABLE) + "]")

# Per-character verdicts for non-ASCII text, learnt lazily: characters known to need nothing, and the
# replacement ("" or " x ") for those that do. A few thousand entries in practice; capped so that adversarial
# input (every code point) cannot grow them without bound, past which verdicts are recomputed per call.
_CHARS_KEPT: set[str] = set()
_CHAR_REPLACEMENTS: dict[str, str] = {}
_MAX_REMEMBERED_CHARS = 1 << 16


def _replacement_for(char: str) -> str | None:
    cp = ord(char)
    if cp == 0 or cp == 0xFFFD or is_control(char):
        return ""
    if is_cjk_codepoint(cp):
        return f" {char} "
    return None


def clean_text(text: str) -> str:
    """Delete NUL, U+FFFD and control characters and surround CJK ideographs with spaces.

    Splitting the result with ``str.split`` gives the same words as the reference's ``_clean_text`` followed
    by ``_tokenize_chinese_chars`` and ``whitespace_tokenize``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text to tokenize must be a str, got {type(text).__name__}")
    if text.isascii():
        # Common case: nothing to delete in ordinary prose, so a C-level scan decides.
        if _ASCII_CONTROL_RE.search(text) is None:
            return text
        return text.translate(_ASCII_DELETE_TABLE)
    table: dict[int, str] = {}
    for char in set(text).difference(_CHARS_KEPT):
        replacement = _CHAR_REPLACEMENTS.get(char)
        if replacement is None:
            replacement = _replacement_for(char)
            if replacement is None:
                if len(_CHARS_KEPT) < _MAX_REMEMBERED_CHARS:
                    _CHARS_KEPT.add(char)
                continue
            if len(_CHAR_REPLACEMENTS) < _MAX_REMEMBERED_CHARS:
                _CHAR_REPLACEMENTS[char] = replacement
        table[ord(char)] = replacement
    return text.translate(table) if table else text


# --------------------------------------------------------------------------------------------------------
# Per-word steps
# --------------------------------------------------------------------------------------------------------

_ASCII_PUNCT_CLASS = "[" + "".join(re.escape(c) for c in _ASCII_PUNCTUATION) + "]"
# One punctuation character, or a maximal run of anything else.
_ASCII_PUNCT_SPLIT_RE = re.compile(f"{_ASCII_PUNCT_CLASS}|[^{_ASCII_PUNCT_CLASS[1:-1]}]+")


def strip_accents(text: str) -> str:
    """Decompose (NFD) and drop combining marks (category Mn): "Crème" -> "Creme"."""
    if text.isascii():
        return text  # ASCII is already NFD and has no combining marks
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(char for char in decomposed if unicodedata.category(char) != "Mn")


def split_on_punctuation(word: str) -> list[str]:
    """Split `word` so each punctuation character is its own piece: "don't!" -> ["don", "'", "t", "!"]."""
    if word.isascii():
        return _ASCII_PUNCT_SPLIT_RE.findall(word)
    pieces: list[str] = []
    run_start = 0
    for index, char in enumerate(word):
        if is_punctuation(char):
            if run_start < index:
                pieces.append(word[run_start:index])
            pieces.append(char)
            run_start = index + 1
    if run_start < len(word):
        pieces.append(word[run_start:])
    return pieces


def _as_never_split_set(never_split: Iterable[str] | None) -> frozenset[str]:
    if never_split is None:
        return frozenset()
    if isinstance(never_split, str):
        # A bare string would silently mean "its substrings" under `in`; almost certainly a mistake.
        raise TypeError(f"never_split must be a collection of tokens, not the string {never_split!r}")
    return frozenset(never_split)


class BasicTokenizer:
    """Cleanup, optional lower-casing with accent stripping, whitespace and punctuation splitting."""

    def __init__(self, do_lower_case: bool = True, never_split: Iterable[str] | None = DEFAULT_NEVER_SPLIT):
        self._cache: dict[str, tuple[str, ...]] = {}
        self.do_lower_case = do_lower_case
        self.never_split = never_split

    @property
    def do_lower_case(self) -> bool:
        return self._do_lower_case

    @do_lower_case.setter
    def do_lower_case(self, value: bool) -> None:
        self._do_lower_case = value
        self._cache.clear()

    @property
    def never_split(self) -> Iterable[str] | None:
        """Words (after whitespace splitting) left exactly as they are: not lower-cased, not split."""
        return self._never_split

    @never_split.setter
    def never_split(self, value: Iterable[str] | None) -> None:
        self._never_split_set = _as_never_split_set(value)
        self._never_split = value
        self._cache.clear()

    def clear_cache(self) -> None:
        self._cache.clear()

    def tokenize(self, text: str) -> list[str]:
        """Split `text` into basic tokens (words and single punctuation characters)."""
        tokens: list[str] = []
        split_word = self.split_word
        for word in clean_text(text).split():
            tokens += split_word(word)
        return tokens

    def split_word(self, word: str) -> tuple[str, ...]:
        """Basic tokens of one whitespace-free word of cleaned text (memoised)."""
        pieces = self._cache.get(word)
        if pieces is None:
            pieces = self._split_word_uncached(word)
            if len(self._cache) >= _MAX_CACHED_WORDS:
                self._cache.clear()
            self._cache[word] = pieces
        return pieces

    def _split_word_uncached(self, word: str) -> tuple[str, ...]:
        never_split = self._never_split_set
        if self._do_lower_case and word not in never_split:
            word = strip_accents(word.lower())
        # Checked again after lower-casing, as the reference does: "[CLS]" typed as "[cls]" is not protected,
        # but a lower-case never_split entry does protect its upper-case spellings.
        pieces = [word] if word in never_split else split_on_punctuation(word)
        # Lower-casing/decomposition can in principle produce empty or whitespace-bearing pieces; the
        # reference re-splits its output on whitespace, which drops them.
        return tuple(part for piece in pieces for part in piece.split())


def _add_with_prefixes(table: dict[str, bool], entry: str) -> None:
    if not entry:
        return
    for end in range(1, len(entry)):
        table.setdefault(entry[:end], False)  # never demotes a prefix that is an entry itself
    table[entry] = True


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece: "unaffable" -> ["un", "##aff", "##able"]."""

    def __init__(self, vocab: Mapping[str, int], unk_token: str = "[UNK]", max_input_chars_per_word: int = 100):
        self._cache: dict[str, tuple[str, ...]] = {}
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    @property
    def vocab(self) -> Mapping[str, int]:
        return self._vocab

    @vocab.setter
    def vocab(self, value: Mapping[str, int]) -> None:
        self._vocab = value
        self.clear_cache()

    @property
    def unk_token(self) -> str:
        return self._unk_token

    @unk_token.setter
    def unk_token(self, value: str) -> None:
        self._unk_token = value
        self._cache.clear()

    @property
    def max_input_chars_per_word(self) -> int:
        return self._max_input_chars_per_word

    @max_input_chars_per_word.setter
    def max_input_chars_per_word(self, value: int) -> None:
        self._max_input_chars_per_word = value
        self._cache.clear()

    def clear_cache(self) -> None:
        """Forget memoised results; needed after editing the vocabulary in place."""
        self._cache.clear()
        self._prefix_tables: tuple[dict[str, bool], dict[str, bool]] | None = None

    def _get_prefix_tables(self) -> tuple[dict[str, bool], dict[str, bool]]:
        """Every prefix of a vocabulary entry, mapped to whether it is itself an entry.

        The first table is for pieces starting a word; the second for continuation pieces, keyed without
        their "##". Built on first use (tens of ms for a 30k vocabulary).
        """
        if self._prefix_tables is None:
            word_starts: dict[str, bool] = {}
            continuations: dict[str, bool] = {}
            for entry in self._vocab:
                _add_with_prefixes(word_starts, entry)
                if entry.startswith("##"):
                    _add_with_prefixes(continuations, entry[2:])
            self._prefix_tables = (word_starts, continuations)
        return self._prefix_tables

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of each whitespace-separated word of `text` (already basic-tokenized)."""
        if not isinstance(text, str):
            raise TypeError(f"text to tokenize must be a str, got {type(text).__name__}")
        tokens: list[str] = []
        word_pieces = self.word_pieces
        for word in text.split():
            tokens += word_pieces(word)
        return tokens

    def word_pieces(self, word: str) -> tuple[str, ...]:
        """WordPiece tokens of one whitespace-free word (memoised)."""
        pieces = self._cache.get(word)
        if pieces is None:
            pieces = self._word_pieces_uncached(word)
            if len(self._cache) >= _MAX_CACHED_WORDS:
                self._cache.clear()
            self._cache[word] = pieces
        return pieces

    def _word_pieces_uncached(self, word: str) -> tuple[str, ...]:
        length = len(word)
        if length > self._max_input_chars_per_word:
            return (self._unk_token,)
        vocab = self._vocab
        if word in vocab:
            return (word,)  # the longest candidate is the whole word: done in one lookup
        if not isinstance(vocab, dict):
            return self._greedy_pieces(word)
        # Greedy longest match, found by extending each piece forwards while it is still a prefix of some
        # vocabulary entry and remembering the longest that is an entry. Same result as trying every end
        # from longest to shortest (as the reference does), but stops as soon as no entry can match.
        word_starts, continuations = self._get_prefix_tables()
        pieces: list[str] = []
        start = 0
        while start < length:
            table = word_starts if start == 0 else continuations
            match_end = start
            for end in range(start + 1, length + 1):
                is_entry = table.get(word[start:end])
                if is_entry is None:
                    break
                if is_entry:
                    match_end = end
            if match_end == start:
                # Some part has no matching piece: the whole word becomes unknown, not just that part.
                return (self._unk_token,)
            pieces.append(word[:match_end] if start == 0 else "##" + word[start:match_end])
            start = match_end
        return tuple(pieces)

    def _greedy_pieces(self, word: str) -> tuple[str, ...]:
        """Longest-match-first by trying every end from the longest down, for vocabularies that are not dicts
        (whose `in` may not be plain string equality)."""
        vocab = self._vocab
        pieces: list[str] = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                candidate = word[start:end] if start == 0 else "##" + word[start:end]
                if candidate in vocab:
                    break
            else:
                return (self._unk_token,)
            pieces.append(candidate)
            start = end
        return tuple(pieces)


# --------------------------------------------------------------------------------------------------------
# Vocabulary files
# --------------------------------------------------------------------------------------------------------


def load_vocab(vocab_file: str | os.PathLike) -> collections.OrderedDict[str, int]:
    """Read a one-token-per-line vocabulary: the line number (from 0) is the id.

    Same semantics as the reference: lines end at "\\n", "\\r" or "\\r\\n"; surrounding whitespace is stripped
    from each line; a blank line is the token "" and still takes an id; a repeated token keeps the id of its
    last occurrence (its earlier ids then map to no token).
    """
    vocab: collections.OrderedDict[str, int] = collections.OrderedDict()
    try:
        with open(vocab_file, "r", encoding="utf-8") as reader:
            for index, line in enumerate(reader):
                vocab[line.strip()] = index
    except UnicodeDecodeError as error:
        raise ValueError(f"vocabulary file {os.fspath(vocab_file)!r} is not valid UTF-8: {error}") from error
    return vocab


# Positional parameters of BertTokenizer.__init__ after vocab_file, to bind from_pretrained's *inputs.
_INIT_PARAMETERS = ("do_lower_case", "max_len", "do_basic_tokenize", "never_split")


class BertTokenizer(BatchCallMixin):
    """End-to-end BERT tokenization (basic tokenization then WordPiece) and token/id conversion.

    Calling it on texts (``tokenizer(texts, text_pair, padding=True, truncation=True, return_tensors="np")``)
    gives ``input_ids`` / ``token_type_ids`` / ``attention_mask`` with ``[CLS] A [SEP] (B [SEP])``, as the
    Hugging Face BERT tokenizer does (see ``jaxformers.tokenizers.batch``).
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(
        self,
        vocab_file: str | os.PathLike | Mapping[str, int],
        do_lower_case: bool = True,
        max_len: int | None = None,
        do_basic_tokenize: bool = True,
        never_split: Iterable[str] | None = DEFAULT_NEVER_SPLIT,
        *,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str | None = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
    ):
        """
        Args:
            vocab_file: one-wordpiece-per-line vocabulary file, or a mapping token -> id (e.g. the vocabulary
                of a tokenizer.json).
            do_lower_case: lower-case and strip accents (only with basic tokenization).
            max_len: longest id sequence the model accepts; longer ones get a warning from
                `convert_tokens_to_ids`. None means no limit.
            do_basic_tokenize: run cleanup/punctuation splitting before WordPiece. Without it, WordPiece
                sees the raw text split on whitespace.
            never_split: words kept intact by basic tokenization.
            unk_token, sep_token, pad_token, cls_token, mask_token: the special tokens (unk_token is what
                WordPiece gives unknown words; cls/sep frame the sequences of a batch call, pad_token pads them).
        """
        if isinstance(vocab_file, Mapping):
            self.vocab = collections.OrderedDict(sorted(vocab_file.items(), key=lambda item: item[1]))
        elif not os.path.isfile(vocab_file):
            raise ValueError(
                f"vocabulary file {os.fspath(vocab_file)!r} does not exist or is not a file (to load a "
                "pretrained vocabulary by name, use `BertTokenizer.from_pretrained(name)`)"
            )
        else:
            self.vocab = load_vocab(vocab_file)
        self.ids_to_tokens: collections.OrderedDict[int, str] = collections.OrderedDict(
            (index, token) for token, index in self.vocab.items()
        )
        self.do_basic_tokenize = do_basic_tokenize
        if do_basic_tokenize:
            self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case, never_split=never_split)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab, unk_token=unk_token)
        self.max_len = max_len if max_len is not None else _NO_MAX_LEN
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token

    @property
    def model_max_length(self) -> int:
        """Longest id sequence the model takes (``max_len``); truncation=True cuts to it."""
        return self.max_len

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def text_to_ids(self, text: str) -> list[int]:
        """Vocabulary ids of `text` without special tokens (no length warning: a batch call truncates)."""
        vocab = self.vocab
        try:
            return [vocab[token] for token in self.tokenize(text)]
        except KeyError as error:
            raise KeyError(f"token {error.args[0]!r} is not in the vocabulary") from None

    def num_special_tokens(self, pair: bool) -> int:
        return 3 if pair else 2

    def build_with_special_tokens(self, first: list[int], second: list[int] | None) -> tuple[list[int], list[int]]:
        """``[CLS] first [SEP]`` (type ids 0) then ``second [SEP]`` (type ids 1)."""
        cls_id, sep_id = self._required_id(self.cls_token, "cls_token"), self._required_id(self.sep_token, "sep_token")
        ids = [cls_id, *first, sep_id]
        type_ids = [0] * len(ids)
        if second is not None:
            ids += [*second, sep_id]
            type_ids += [1] * (len(second) + 1)
        return ids, type_ids

    def _required_id(self, token: str, name: str) -> int:
        token_id = self.vocab.get(token)
        if token_id is None:
            raise KeyError(f"{name} {token!r} is not in the vocabulary")
        return token_id

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`."""
        wordpiece = self.wordpiece_tokenizer
        if not self.do_basic_tokenize:
            return wordpiece.tokenize(text)
        basic = self.basic_tokenizer
        # The hot loop: two memo lookups per word, with a method call only on a miss.
        cached_basic, cached_pieces = basic._cache.get, wordpiece._cache.get
        tokens: list[str] = []
        for word in clean_text(text).split():
            basic_tokens = cached_basic(word)
            if basic_tokens is None:
                basic_tokens = basic.split_word(word)
            for basic_token in basic_tokens:
                pieces = cached_pieces(basic_token)
                if pieces is None:
                    pieces = wordpiece.word_pieces(basic_token)
                tokens += pieces
        return tokens

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Vocabulary ids of `tokens`; warns (does not raise) when longer than `max_len`."""
        vocab = self.vocab
        try:
            ids = [vocab[token] for token in tokens]
        except KeyError as error:
            raise KeyError(f"token {error.args[0]!r} is not in the vocabulary") from None
        if len(ids) > self.max_len:
            logger.warning(
                "Token id sequence of length %d is longer than this BERT model's maximum sequence length "
                "(%d); running it through the model would index past its position embeddings.",
                len(ids),
                self.max_len,
            )
        return ids

    def convert_ids_to_tokens(self, ids: Iterable[Any]) -> list[str]:
        """Tokens of vocabulary `ids` (Python ints, or any integer scalar such as numpy/JAX ones)."""
        ids_to_tokens = self.ids_to_tokens
        tokens: list[str] = []
        for token_id in ids:
            try:
                tokens.append(ids_to_tokens[token_id])
            except (KeyError, TypeError):
                # Unhashable scalars (e.g. 0-d arrays) go through __index__; a real miss is reported clearly.
                try:
                    tokens.append(ids_to_tokens[token_id.__index__()])
                except (AttributeError, TypeError, KeyError):
                    raise KeyError(f"id {token_id!r} is not in the vocabulary") from None
        return tokens

    def save_vocabulary(self, vocab_path: str | os.PathLike) -> str:
        """Write the vocabulary, one token per line in id order, to a directory (as vocab.txt) or a file.

        Returns the file written. Gaps in the ids (e.g. from repeated tokens in the loaded file) are not
        preserved and are reported with a warning, as the reference does.
        """
        vocab_file = os.fspath(vocab_path)
        if os.path.isdir(vocab_file):
            vocab_file = os.path.join(vocab_file, VOCAB_NAME)
        expected_index = 0
        with open(vocab_file, "w", encoding="utf-8") as writer:
            for token, index in sorted(self.vocab.items(), key=lambda item: item[1]):
                if index != expected_index:
                    logger.warning(
                        "Saving vocabulary to %s: token ids are not consecutive (expected %d, found %d for "
                        "%r); the vocabulary may be corrupted.",
                        vocab_file,
                        expected_index,
                        index,
                        token,
                    )
                    expected_index = index
                writer.write(token + "\n")
                expected_index += 1
        return vocab_file

    def clear_cache(self) -> None:
        """Forget memoised word results; needed after editing `vocab` in place."""
        if self.do_basic_tokenize:
            self.basic_tokenizer.clear_cache()
        self.wordpiece_tokenizer.clear_cache()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        *inputs: Any,
        **kwargs: Any,
    ) -> BertTokenizer:
        """Build a tokenizer from a shortcut name (downloaded once into the cache), a directory holding
        vocab.txt, a vocabulary file, or a URL.

        For shortcut names, `do_lower_case` is forced to match the model (with a warning when the caller
        asked otherwise) and `max_len` is capped at the model's number of position embeddings.
        Extra arguments are passed to the constructor. Raises OSError when the vocabulary can't be found.
        """
        import dataclasses

        from jaxformers.file_utils import TOKENIZER_FILES, HubOptions, cached_path, hub_repo_for, hub_snapshot

        hub = HubOptions.pop_from(kwargs, cache_dir)  # revision=, token=, local_files_only=, force_download=
        if len(inputs) > len(_INIT_PARAMETERS):
            raise TypeError(f"from_pretrained got {len(inputs)} extra positional arguments, at most "
                            f"{len(_INIT_PARAMETERS)} ({', '.join(_INIT_PARAMETERS)}) are accepted")
        for parameter, value in zip(_INIT_PARAMETERS, inputs):
            if parameter in kwargs:
                raise TypeError(f"from_pretrained got multiple values for argument {parameter!r}")
            kwargs[parameter] = value

        name = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(name):
            return cls.from_directory(name, **kwargs)
        if name not in PRETRAINED_VOCAB_ARCHIVE_MAP and (repo := hub_repo_for(name)) is not None:
            return cls.from_directory(hub_snapshot(repo, TOKENIZER_FILES, hub), **kwargs)  # a hub repository id
        if name in PRETRAINED_VOCAB_ARCHIVE_MAP:
            vocab_file = PRETRAINED_VOCAB_ARCHIVE_MAP[name]
            _match_shortcut_casing(name, kwargs)
        else:
            vocab_file = name

        try:
            resolved_vocab_file = cached_path(vocab_file, **dataclasses.asdict(hub))
        except OSError as error:
            raise OSError(
                f"Can't load a BERT vocabulary for {name!r}: it is not a known shortcut name "
                f"({', '.join(PRETRAINED_VOCAB_ARCHIVE_MAP)}), and {vocab_file!r} could not be found or "
                f"downloaded: {error}"
            ) from error
        if resolved_vocab_file == vocab_file:
            logger.info("loading vocabulary file %s", vocab_file)
        else:
            logger.info("loading vocabulary file %s from cache at %s", vocab_file, resolved_vocab_file)

        if name in PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP:
            requested = kwargs.get("max_len")
            model_limit = PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP[name]
            kwargs["max_len"] = model_limit if requested is None else min(requested, model_limit)
        return cls(resolved_vocab_file, **kwargs)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, **kwargs: Any) -> BertTokenizer:
        """A tokenizer from a model directory (a hub snapshot, a save_pretrained output).

        The vocabulary is vocab.txt, or else the WordPiece vocabulary inside tokenizer.json. tokenizer_config.json
        / special_tokens_map.json give ``do_lower_case``, ``model_max_length`` (as ``max_len``), ``never_split``
        and the special tokens; keyword arguments override them.
        """
        directory = os.fspath(directory)
        settings = read_tokenizer_settings(directory)
        vocab: str | dict[str, int] = os.path.join(directory, VOCAB_NAME)
        wordpiece: dict[str, Any] = {}
        if not os.path.isfile(vocab):
            json_path = os.path.join(directory, TOKENIZER_JSON_NAME)
            if not os.path.isfile(json_path):
                raise OSError(f"no {VOCAB_NAME} or {TOKENIZER_JSON_NAME} in {directory!r}: not a BERT tokenizer directory")
            wordpiece = read_tokenizer_json_model(json_path, "WordPiece")
            vocab = wordpiece["vocab"]
            normalizer = wordpiece.get("normalizer") or {}
            if "do_lower_case" not in settings and isinstance(normalizer.get("lowercase"), bool):
                settings["do_lower_case"] = normalizer["lowercase"]
            settings.setdefault("unk_token", wordpiece.get("unk_token"))
        options = _init_options_from_settings(settings)
        sides = pop_side_settings(settings, kwargs)
        options.update(kwargs)
        tokenizer = cls(vocab, **options)
        for key, value in sides.items():
            setattr(tokenizer, key, value)
        if isinstance(wordpiece.get("max_input_chars_per_word"), int):
            tokenizer.wordpiece_tokenizer.max_input_chars_per_word = wordpiece["max_input_chars_per_word"]
        return tokenizer


def _match_shortcut_casing(name: str, kwargs: dict[str, Any]) -> None:
    """Force ``do_lower_case`` to what the shortcut model was trained with, warning when the caller asked otherwise."""
    is_cased = "-cased" in name
    if is_cased and kwargs.get("do_lower_case", True):
        logger.warning("%s is a cased model but do_lower_case is True; setting do_lower_case=False for you "
                       "(pass do_lower_case=False to silence this).", name)
        kwargs["do_lower_case"] = False
    elif not is_cased and not kwargs.get("do_lower_case", True):
        logger.warning("%s is an uncased model but do_lower_case is False; setting do_lower_case=True for you.", name)
        kwargs["do_lower_case"] = True


def _init_options_from_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """BertTokenizer arguments from tokenizer_config.json settings; refuses options it cannot honour."""
    source = settings.get("_source", "tokenizer settings")
    options: dict[str, Any] = {}
    if "do_lower_case" in settings:
        options["do_lower_case"] = bool(settings["do_lower_case"])
    lower = options.get("do_lower_case", True)
    strip_accents = settings.get("strip_accents")
    if strip_accents is not None and bool(strip_accents) != lower:
        raise ValueError(f"{source}: strip_accents={strip_accents} with do_lower_case={lower} is not supported "
                         f"(accents are stripped exactly when lower-casing, as in the original BERT)")
    if settings.get("tokenize_chinese_chars", True) is False:
        raise ValueError(f"{source}: tokenize_chinese_chars=false is not supported (CJK characters are always split)")
    if "do_basic_tokenize" in settings:
        options["do_basic_tokenize"] = bool(settings["do_basic_tokenize"])
    max_length = model_max_length_of(settings)
    if max_length is not None:
        options["max_len"] = max_length
    specials = {key: settings[key] for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
                if settings.get(key) is not None}
    options.update(specials)
    never_split = settings.get("never_split")
    if never_split is not None or specials:
        # Special tokens stay whole, as Hugging Face's added tokens do.
        options["never_split"] = sorted({*(never_split or DEFAULT_NEVER_SPLIT), *specials.values()})
    return options


__all__ = [
    "BasicTokenizer",
    "BertTokenizer",
    "WordpieceTokenizer",
    "PRETRAINED_VOCAB_ARCHIVE_MAP",
    "PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP",
    "VOCAB_NAME",
    "load_vocab",
    "whitespace_tokenize",
]

"""Calling a tokenizer on a batch, the way today's users do, shared by all four tokenizers.

``tokenizer(texts, text_pair=None, padding=..., truncation=..., max_length=..., return_tensors="np")`` returns
``input_ids``, ``token_type_ids`` (when the model uses them) and ``attention_mask`` with the semantics of the
Hugging Face tokenizers (transformers 5.x, Rust backend):

* Special tokens come from the tokenizer (``[CLS] A [SEP] B [SEP]`` for BERT, none for the GPTs); token type
  ids are 0 for the first segment and its special tokens, 1 for the second.
* ``truncation``: ``True``/``"longest_first"`` shortens the longer of a pair (the two end within one token of
  each other when both must shrink), ``"only_first"``/``"only_second"`` one of them; ``max_length`` counts the
  special tokens. ``max_length`` without ``truncation`` and ``padding`` means ``"longest_first"``;
  ``truncation`` without ``max_length`` means the tokenizer's ``model_max_length``.
* ``padding``: ``True``/``"longest"`` pads to the longest row of the batch, ``"max_length"`` to ``max_length``
  (or ``model_max_length``); ``pad_to_multiple_of`` rounds up. Rows are padded on ``padding_side`` with
  ``pad_token_id``, type id 0 and attention 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger(__name__)

# At or above this, model_max_length means "no limit" (0.6.x uses 1e12 for that, transformers 1e30).
NO_LIMIT = int(1e12)

_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None,
            None: None}
_TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second", False: None, "do_not_truncate": None}
_TENSOR_TYPES = (None, "np", "jax")


class BatchEncoding(dict):
    """The result of a tokenizer call: a dict (``input_ids``, ``attention_mask``...) with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no {name!r} in this encoding (it has {', '.join(self)})") from None


def truncated_lengths(first: int, second: int | None, budget: int, strategy: str) -> tuple[int, int | None]:
    """Lengths the two segments keep so that together they fit ``budget`` tokens (special tokens excluded).

    ``longest_first`` on a pair keeps the shorter whole when the longer alone can give enough; otherwise both
    get half the budget, the longer one the odd token (the Rust tokenizers' rule, which differs from trimming
    one token at a time on ties).
    """
    total = first + (second or 0)
    if total <= budget:
        return first, second
    if budget == 0:  # room for the special tokens only: every strategy empties both (the Rust tokenizers' rule)
        return 0, None if second is None else 0
    if strategy == "only_second" and second is None:
        raise ValueError("truncation='only_second' needs pairs of texts (text_pair)")
    if strategy == "longest_first":
        if second is None:
            return budget, None
        short, long = sorted((first, second))
        long = short if short > budget else max(short, budget - short)
        if short + long > budget:
            short, long = budget // 2, budget // 2 + budget % 2
        return (long, short) if first > second else (short, long)
    excess = total - budget
    if strategy == "only_first" and first > excess:
        return first - excess, second
    if strategy == "only_second" and second > excess:
        return first, second - excess
    which = "first" if strategy == "only_first" else "second"
    raise ValueError(f"truncation={strategy!r} with max_length: the {which} text is too short to remove "
                     f"{excess} tokens from it (lengths {first} and {second}, room for {budget})")


def _as_batch(text: Any, text_pair: Any) -> tuple[bool, list[str], list[str] | None]:
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise TypeError(f"text is one string, so text_pair must be one string too, got "
                            f"{type(text_pair).__name__}")
        return False, [text], None if text_pair is None else [text_pair]
    if not isinstance(text, Sequence) or not all(isinstance(item, str) for item in text):
        raise TypeError("text must be a string or a list of strings")
    if text_pair is None:
        return True, list(text), None
    if isinstance(text_pair, str) or len(text_pair) != len(text):
        count = "one string" if isinstance(text_pair, str) else f"{len(text_pair)} texts"
        raise ValueError(f"text has {len(text)} texts but text_pair has {count}: they pair up one to one")
    return True, list(text), list(text_pair)


class BatchCallMixin:
    """``__call__`` over texts (and pairs) with padding, truncation and array outputs.

    A tokenizer using it provides ``text_to_ids(text)`` (ids without special tokens),
    ``build_with_special_tokens(first, second)`` (ids and type ids), ``num_special_tokens(pair)``, and the
    attributes ``model_max_length`` and ``pad_token`` (None when it has none; padding then fails).
    """

    model_input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    padding_side: str = "right"
    truncation_side: str = "right"

    # ---------------------------------------------------------------------------------------- provided
    def text_to_ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def build_with_special_tokens(self, first: list[int], second: list[int] | None) -> tuple[list[int], list[int]]:
        """Ids with the model's special tokens, and their token type ids. Default: plain concatenation."""
        ids = first + (second or [])
        return ids, [0] * len(first) + [1] * len(second or [])

    def num_special_tokens(self, pair: bool) -> int:
        return 0

    @property
    def pad_token_id(self) -> int | None:
        pad_token = getattr(self, "pad_token", None)
        if pad_token is None:
            return None
        token_id = self.token_to_id(pad_token)
        if token_id is None:
            raise ValueError(f"pad_token {pad_token!r} is not in this tokenizer's vocabulary")
        return token_id

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- the call
    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, pad_to_multiple_of: int | None = None,
                 return_tensors: str | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None) -> BatchEncoding:
        """Encode one text or a batch (optionally paired); see the module docstring for the options.

        Returns lists (one row, or one list per text), or ``[batch, seq]`` int64 arrays with
        ``return_tensors="np"`` (``"jax"``: jax arrays); a single text then gives a batch of one.
        """
        batched, firsts, seconds = _as_batch(text, text_pair)
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of,
                                                           seconds is not None, add_special_tokens)
        if return_tensors not in _TENSOR_TYPES:
            raise ValueError(f"return_tensors={return_tensors!r}: expected one of {_TENSOR_TYPES}")
        rows = [self._encode_row(first, None if seconds is None else seconds[index], truncation, max_length,
                                 add_special_tokens) for index, first in enumerate(firsts)]
        ids = [row[0] for row in rows]
        type_ids = [row[1] for row in rows]
        attention = [[1] * len(row) for row in ids]
        if padding is not None:
            length = self._padded_length(ids, padding, max_length, pad_to_multiple_of)
            if length is not None:
                pad_id = self.pad_token_id
                if pad_id is None:
                    raise ValueError(f"{type(self).__name__} has no pad token, so it cannot pad: set "
                                     f"`tokenizer.pad_token = tokenizer.eos_token` (or another token) first")
                ids = [self._pad(row, length, pad_id) for row in ids]
                type_ids = [self._pad(row, length, 0) for row in type_ids]
                attention = [self._pad(row, length, 0) for row in attention]
        wanted = {"input_ids": True,
                  "token_type_ids": "token_type_ids" in self.model_input_names,
                  "attention_mask": "attention_mask" in self.model_input_names}
        if return_token_type_ids is not None:
            wanted["token_type_ids"] = return_token_type_ids
        if return_attention_mask is not None:
            wanted["attention_mask"] = return_attention_mask
        values = {"input_ids": ids, "token_type_ids": type_ids, "attention_mask": attention}
        return BatchEncoding({key: self._output(values[key], batched, return_tensors, key)
                              for key, want in wanted.items() if want})

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of, pair, add_special_tokens):
        if padding not in _PADDING:
            raise ValueError(f"padding={padding!r}: expected True, False, 'longest', 'max_length' or 'do_not_pad'")
        if truncation is not None and truncation not in _TRUNCATION:
            raise ValueError(f"truncation={truncation!r}: expected True, False, 'longest_first', 'only_first', "
                             f"'only_second' or 'do_not_truncate'")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 0):
            raise ValueError(f"max_length={max_length!r}: expected a non-negative int")
        if truncation is None:
            # As transformers: a max_length without padding asks for truncation; with padding it only says how
            # far to pad (padding="max_length"), and padding=True ignores it.
            truncation = "longest_first" if max_length is not None and padding is False else None
        else:
            truncation = _TRUNCATION[truncation]
        limit = getattr(self, "model_max_length", NO_LIMIT)
        if max_length is None and limit < NO_LIMIT and (truncation is not None or _PADDING[padding] == "max_length"):
            max_length = limit
        if truncation is not None and max_length is not None:
            specials = self.num_special_tokens(pair) if add_special_tokens else 0
            if max_length < specials:
                raise ValueError(f"max_length={max_length} leaves no room: the special tokens alone take {specials}")
        elif truncation is not None:
            truncation = None  # no limit known: nothing to truncate to
        if truncation is not None and _PADDING[padding] is not None and pad_to_multiple_of and max_length is not None \
                and max_length % pad_to_multiple_of:
            raise ValueError(f"truncation to max_length={max_length} and padding to a multiple of "
                             f"{pad_to_multiple_of} contradict each other: choose a max_length that is a multiple")
        return _PADDING[padding], truncation, max_length

    def _encode_row(self, first: str, second: str | None, truncation: str | None, max_length: int | None,
                    add_special_tokens: bool) -> tuple[list[int], list[int]]:
        first_ids = self.text_to_ids(first)
        second_ids = None if second is None else self.text_to_ids(second)
        if truncation is not None:
            specials = self.num_special_tokens(second is not None) if add_special_tokens else 0
            keep_first, keep_second = truncated_lengths(len(first_ids), None if second_ids is None else len(second_ids),
                                                        max_length - specials, truncation)
            first_ids = self._cut(first_ids, keep_first)
            if second_ids is not None:
                second_ids = self._cut(second_ids, keep_second)
        if add_special_tokens:
            return self.build_with_special_tokens(first_ids, second_ids)
        return BatchCallMixin.build_with_special_tokens(self, first_ids, second_ids)

    def _cut(self, ids: list[int], keep: int) -> list[int]:
        if keep >= len(ids):
            return ids
        return ids[:keep] if self.truncation_side == "right" else ids[len(ids) - keep:]

    def _padded_length(self, ids: list[list[int]], padding: str, max_length: int | None,
                       multiple: int | None) -> int | None:
        if padding == "max_length" and max_length is None:
            logger.warning("padding='max_length' without max_length, and %s has no model_max_length: not padding",
                           type(self).__name__)
            return None
        length = max(map(len, ids), default=0) if padding == "longest" else max_length
        if multiple:
            length = -(-length // multiple) * multiple
        return length

    def _pad(self, row: list[int], length: int, value: int) -> list[int]:
        if len(row) >= length:
            return row
        filler = [value] * (length - len(row))
        return row + filler if self.padding_side == "right" else filler + row

    @staticmethod
    def _output(rows: list[list[int]], batched: bool, return_tensors: str | None, key: str):
        if return_tensors is None:
            return rows if batched else rows[0]
        lengths = {len(row) for row in rows}
        if len(lengths) > 1:
            raise ValueError(f"{key} rows have different lengths {sorted(lengths)}: pass padding=True (or "
                             f"padding='max_length') to get return_tensors={return_tensors!r}")
        array = np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)  # [batch, seq]
        if return_tensors == "jax":
            import jax.numpy as jnp

            return jnp.asarray(array)
        return array


def special_token_text(value: Any, source: str, key: str) -> str | None:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with ``content``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{source}: {key!r} must be a string or an object with 'content', got {value!r}")

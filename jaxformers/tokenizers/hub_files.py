"""Reading the tokenizer files of a Hugging Face model directory: ``tokenizer_config.json``,
``special_tokens_map.json`` and the vocabulary inside ``tokenizer.json`` (for snapshots without vocab.txt /
vocab.json)."""

from __future__ import annotations

import json
import os
from typing import Any

from .batch import special_token_text

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
TOKENIZER_JSON_NAME = "tokenizer.json"
SPECIAL_TOKEN_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


def _read_json_object(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            values = json.load(stream)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path!r} must hold a JSON object, found {type(values).__name__}")
    return values


def read_tokenizer_settings(directory: str | os.PathLike) -> dict[str, Any]:
    """Settings of ``tokenizer_config.json`` over ``special_tokens_map.json`` (both optional), special tokens
    reduced to their text. Returns {} when the directory has neither file."""
    directory = os.fspath(directory)
    settings: dict[str, Any] = {}
    for name in (SPECIAL_TOKENS_MAP_NAME, TOKENIZER_CONFIG_NAME):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        values = _read_json_object(path)
        for key in SPECIAL_TOKEN_KEYS:
            if key in values:
                values[key] = special_token_text(values[key], path, key)
        settings.update(values)
        settings.setdefault("_source", path)
    return settings


def model_max_length_of(settings: dict[str, Any]) -> int | None:
    """``model_max_length`` from the settings; None when absent or "unlimited" (transformers writes 1e30)."""
    value = settings.get("model_max_length")
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{settings.get('_source')}: model_max_length must be a positive number, got {value!r}")
    return int(value) if value < 1e12 else None


def pop_side_settings(settings: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, str]:
    """``padding_side`` / ``truncation_side`` of tokenizer_config.json (keyword arguments win), checked; taken out
    of `kwargs` because they are attributes set after construction, as transformers honours them."""
    sides = {}
    for key in ("padding_side", "truncation_side"):
        from_kwargs = key in kwargs
        value = kwargs.pop(key) if from_kwargs else settings.get(key)
        if value is None:
            continue
        if value not in ("left", "right"):
            where = "from_pretrained" if from_kwargs else settings.get("_source", "tokenizer settings")
            raise ValueError(f"{where}: {key}={value!r}, expected 'left' or 'right'")
        sides[key] = value
    return sides


def read_tokenizer_json_model(path: str | os.PathLike, expected_type: str) -> dict[str, Any]:
    """The ``model`` section of a ``tokenizer.json``, checked to be of ``expected_type`` ("WordPiece"/"BPE"),
    with its vocabulary as a dict; added tokens absent from the vocabulary are added with their ids."""
    path = os.fspath(path)
    document = _read_json_object(path)
    model = document.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{path!r} has no model.vocab object: not a Hugging Face tokenizer.json")
    if model.get("type", expected_type) != expected_type:
        raise ValueError(f"{path!r} holds a {model.get('type')} model; this tokenizer needs {expected_type}")
    vocab = dict(model["vocab"])
    for added in document.get("added_tokens") or ():
        if isinstance(added, dict) and isinstance(added.get("content"), str) and isinstance(added.get("id"), int):
            vocab.setdefault(added["content"], added["id"])
    model = dict(model, vocab=vocab)
    model["normalizer"] = document.get("normalizer")
    return model


def bpe_merges_from_json(model: dict[str, Any], path: str | os.PathLike) -> dict[tuple[str, str], int]:
    """Merge ranks of a tokenizer.json BPE model: merges are "a b" strings (older files) or [a, b] pairs."""
    ranks: dict[tuple[str, str], int] = {}
    for rank, merge in enumerate(model.get("merges") or ()):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"{os.fspath(path)!r}: merge {rank} must be 'left right' or [left, right], got {merge!r}")
        ranks[(pair[0], pair[1])] = rank
    return ranks

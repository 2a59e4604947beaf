"""Sentence embeddings from a BERT encoder: mean pooling over real tokens, then L2 normalisation.

This is what a sentence-transformers checkpoint such as ``sentence-transformers/all-MiniLM-L6-v2`` computes
(its ``modules.json``: Transformer -> Pooling(mean) -> Normalize)::

    from jaxformers import SentenceEmbedder

    embedder = SentenceEmbedder.from_pretrained("path/to/all-MiniLM-L6-v2")   # a directory or hub id
    vectors = embedder.encode(["A man is playing a guitar.", "Someone plays music."])   # [2, 384], unit norm
    similarity = vectors @ vectors.T                                         # cosine similarities

or, with a model and tokenizer you already have, ``sentence_embeddings(model, tokenizer, texts, max_length=256)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .layers import Array

# sentence-transformers divides by max(token count, 1e-9) and normalises by max(norm, 1e-12), as torch's
# F.normalize does; the same floors keep an all-padding row finite here.
_MIN_TOKEN_COUNT = 1e-9
_MIN_NORM = 1e-12


def mean_pooling(token_embeddings: Array, attention_mask: Array) -> Array:
    """Average of the token vectors where ``attention_mask`` is 1.

    token_embeddings: ``[batch, seq, hidden]``; attention_mask: ``[batch, seq]`` (1 real token, 0 padding).
    Returns ``[batch, hidden]``.
    """
    token_embeddings = jnp.asarray(token_embeddings)
    attention_mask = jnp.asarray(attention_mask)
    if token_embeddings.ndim != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(f"mean_pooling needs token_embeddings [batch, seq, hidden] and attention_mask [batch, seq]; "
                         f"got {tuple(token_embeddings.shape)} and {tuple(attention_mask.shape)}")
    weights = attention_mask.astype(token_embeddings.dtype)[..., None]  # [batch, seq, 1]
    summed = (token_embeddings * weights).sum(axis=1)  # [batch, hidden]
    return summed / jnp.maximum(weights.sum(axis=1), _MIN_TOKEN_COUNT)


def l2_normalize(vectors: Array) -> Array:
    """Each row divided by its Euclidean norm (``[batch, hidden]`` -> same shape, unit rows)."""
    vectors = jnp.asarray(vectors)
    return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), _MIN_NORM)


def sentence_embeddings(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None,
                        batch_size: int = 32, normalize: bool = True) -> np.ndarray:
    """Embeddings ``[len(texts), hidden]`` (float32) of `texts` with a ``BertModel`` and its tokenizer.

    Texts are tokenized with ``[CLS] ... [SEP]``, truncated to `max_length` (default: the tokenizer's
    ``model_max_length``; sentence-transformers checkpoints name theirs in ``sentence_bert_config.json``),
    padded per batch of `batch_size`; the last layer is mean-pooled over real tokens and, with `normalize`,
    scaled to unit length.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings (wrap a single text in a list)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected a positive int")
    if not texts:
        return np.zeros((0, model.config.hidden_size), np.float32)
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                          max_length=max_length, return_tensors="np")
        last_layer, _ = model(batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"],
                              output_all_encoded_layers=False)  # [batch, seq, hidden]
        pooled = mean_pooling(last_layer, batch["attention_mask"])
        rows.append(np.asarray(l2_normalize(pooled) if normalize else pooled, np.float32))
    return np.concatenate(rows)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _sentence_transformers_settings(name: str, kwargs: dict[str, Any]) -> tuple[int | None, bool]:
    """``(max_seq_length, normalize)`` of a sentence-transformers checkpoint (directory or hub id); refuses
    pipelines other than Transformer -> Pooling(mean) [-> Normalize]. Without modules.json: (None, True)."""
    from .auto import _resolve_file

    settings = _resolve_file(name, ("sentence_bert_config.json",), kwargs)
    max_length = _read_json(settings).get("max_seq_length") if settings else None
    modules_file = _resolve_file(name, ("modules.json",), kwargs)
    if modules_file is None:
        return max_length, True
    modules = {entry.get("type", "").rsplit(".", 1)[-1]: entry for entry in _read_json(modules_file)}
    unknown = sorted(set(modules) - {"Transformer", "Pooling", "Normalize"})
    if unknown:
        raise ValueError(f"{modules_file}: modules {unknown} are not implemented (only Transformer, Pooling(mean), "
                         f"Normalize)")
    if "Pooling" in modules:
        pooling_name = "/".join(part for part in (modules["Pooling"].get("path", ""), "config.json") if part)
        pooling_file = _resolve_file(name, (pooling_name,), kwargs)
        modes = sorted(k for k, v in _read_json(pooling_file).items() if k.startswith("pooling_mode") and v) \
            if pooling_file else ["pooling_mode_mean_tokens"]
        if modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"{pooling_file}: pooling {modes} is not implemented (only mean tokens)")
    return max_length, "Normalize" in modules


class SentenceEmbedder:
    """A BERT encoder with mean pooling and optional normalisation; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int | None = None, normalize: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.normalize = max_length, normalize

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> SentenceEmbedder:
        """Load BertModel and tokenizer from a directory or hub id (hub options in ``kwargs``). For a
        sentence-transformers checkpoint, ``max_seq_length`` and the Normalize module come from its files."""
        from .auto import AutoModel, AutoTokenizer

        name = os.fspath(pretrained_model_name_or_path)
        max_length, normalize = _sentence_transformers_settings(name, kwargs)
        return cls(AutoModel.from_pretrained(name, **kwargs), AutoTokenizer.from_pretrained(name, **kwargs),
                   max_length=max_length, normalize=normalize)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings ``[len(texts), hidden]`` (float32)."""
        return sentence_embeddings(self.model, self.tokenizer, texts, max_length=self.max_length,
                                   batch_size=batch_size, normalize=self.normalize)


__all__ = ["SentenceEmbedder", "l2_normalize", "mean_pooling", "sentence_embeddings"]

"""Length bucketing: pad each batch to the smallest bucket length that holds it, not to ``--max_seq_length``.

The reference pads every example to ``--max_seq_length``; most GLUE pairs are far shorter (MRPC's median is
about 45 wordpieces against the usual 128), so most of each step's work is on padding. Here the example scripts
build their features at ``--max_seq_length`` as before and cut each batch's sequence axis down to the smallest
bucket holding its longest example. Buckets are multiples of ``--bucket_spacing`` (default 16, plus the maximum
itself): each bucket is one compiled step, so the spacing trades compilations against padding. Measured on the
MRPC-like benchmark (benchmarks/bucketing.py), 16-token spacing pads a batch to within 8 tokens of its longest
example on average, and 8 buckets at most for length 128 keep compilation small.

``--group_by_length`` also orders the examples so that each batch holds examples of similar length (Hugging
Face's trainer's ``group_by_length``: shuffled mega-batches of 50 batches, each sorted by length).

Bucketing alone is a pure speed change: the model masks padded keys out of attention, every other op is per
token, and dropout masks are drawn per position (``layers.positional_keep_mask``), so the same run with
``--pad_to max_seq_length`` gives the same weights and predictions up to float rounding. Grouping changes which
examples share a batch, so it trains a different (equally valid) sequence of updates.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

logger = logging.getLogger("jaxformers")

# Measured (benchmarks/README.md, "Length bucketing"): spacing 8 ran 6% faster than 16 but compiled 2 more buckets;
# 32 gives up over 40% of the gain. 16 is the knee.
DEFAULT_SPACING = 16
MEGABATCH_BATCHES = 50  # Hugging Face's LengthGroupedSampler default


def add_bucketing_arguments(parser: argparse.ArgumentParser, grouping: bool = True) -> argparse.ArgumentParser:
    """``--pad_to``, ``--bucket_spacing`` and (training scripts, ``grouping``) ``--group_by_length``."""
    group = parser.add_argument_group("length bucketing")
    group.add_argument("--pad_to", default="bucket", choices=("bucket", "max_seq_length"),
                       help="'bucket': pad each batch to the smallest bucket length holding its longest example; "
                            "'max_seq_length': pad every batch to --max_seq_length (the reference's behaviour).")
    group.add_argument("--bucket_spacing", default=DEFAULT_SPACING, type=int,
                       help="Bucket lengths are the multiples of this (and --max_seq_length itself).")
    if grouping:
        group.add_argument("--group_by_length", action="store_true",
                           help="Batch training examples of similar length together (fewer padded tokens).")
    return parser


def bucket_lengths(max_length: int, spacing: int = DEFAULT_SPACING) -> list[int]:
    """``[spacing, 2 spacing, ..., max_length]``: every bucket a batch can be padded to."""
    if max_length < 1 or spacing < 1:
        raise ValueError(f"bucket lengths need max_length >= 1 and spacing >= 1, got {max_length} and {spacing}")
    return sorted({*range(spacing, max_length, spacing), max_length})


class Bucketer:
    """Cuts the sequence axis of batches built at ``max_length`` down to their bucket.

    ``mask_key`` names the 1/0 attention mask (real tokens are a prefix of each row); ``enabled=False`` (``--pad_to
    max_seq_length``) leaves every batch at ``max_length``.
    """

    def __init__(self, max_length: int, spacing: int = DEFAULT_SPACING, *, enabled: bool = True,
                 mask_key: str = "input_mask"):
        self.max_length, self.enabled, self.mask_key = max_length, enabled, mask_key
        self.buckets = bucket_lengths(max_length, spacing) if enabled else [max_length]

    @classmethod
    def from_args(cls, args: argparse.Namespace, mask_key: str = "input_mask") -> "Bucketer":
        return cls(args.max_seq_length, getattr(args, "bucket_spacing", DEFAULT_SPACING),
                   enabled=getattr(args, "pad_to", "bucket") == "bucket", mask_key=mask_key)

    def length_for(self, longest: int) -> int:
        """The smallest bucket holding ``longest`` tokens."""
        if longest > self.max_length:
            raise ValueError(f"a batch holds {longest} tokens, more than max_seq_length={self.max_length}")
        return next(bucket for bucket in self.buckets if bucket >= longest)

    def trim(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``batch`` with every ``[..., max_length]`` entry cut to the bucket of its longest row."""
        if not self.enabled:
            return dict(batch)
        mask = np.asarray(batch[self.mask_key])
        used = np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(axis=0))
        length = self.length_for(int(used[-1]) + 1 if used.size else 1)
        return {key: (value[..., :length] if np.ndim(value) >= 2 and np.shape(value)[-1] == self.max_length
                      else value) for key, value in batch.items()}

    def trim_all(self, batches: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
        for batch in batches:
            yield self.trim(batch)


def example_lengths(mask: np.ndarray) -> np.ndarray:
    """``[examples, ..., seq]`` 1/0 mask -> each example's longest real length ``[examples]``."""
    mask = np.asarray(mask)
    flat = mask.reshape(mask.shape[0], -1, mask.shape[-1]).any(axis=1)  # [examples, seq]
    return np.where(flat.any(axis=1), mask.shape[-1] - np.argmax(flat[:, ::-1], axis=1), 0)


def length_grouped_order(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                         megabatch_batches: int = MEGABATCH_BATCHES) -> np.ndarray:
    """A permutation of the examples in which consecutive ``batch_size`` runs have similar lengths: shuffle,
    cut into mega-batches of ``megabatch_batches`` batches, sort each by length (longest first)."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    size = batch_size * megabatch_batches
    chunks = [order[start:start + size] for start in range(0, len(order), size)]
    return np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in chunks])


class CompileLog:
    """Wraps a jitted step: the first call for each new batch shape (one per bucket) is timed to completion
    (compilation plus one step) and logged; later calls run asynchronously as before."""

    def __init__(self, step: Callable[..., Any], name: str = "step", shape_key: str = "input_ids"):
        self.step, self.name, self.shape_key = step, name, shape_key
        self.first_call_s: dict[tuple[int, ...], float] = {}

    def __call__(self, state: Any, batch: Mapping[str, Any]) -> Any:
        shape = tuple(np.shape(batch[self.shape_key]))
        if shape in self.first_call_s:
            return self.step(state, batch)
        started = time.perf_counter()
        out = jax.block_until_ready(self.step(state, batch))
        self.first_call_s[shape] = time.perf_counter() - started
        logger.info("%s: first call for batch shape %s (compile + one step): %.2f s", self.name, shape,
                    self.first_call_s[shape])
        return out

    def __getattr__(self, name: str) -> Any:  # lower() etc. of the wrapped step
        return getattr(self.step, name)

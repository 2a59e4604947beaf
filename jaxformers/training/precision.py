"""Mixed precision: the compute dtype and fp16 loss scaling, all of it traceable inside the jitted step.

Master weights and the optimizer always stay float32; only the copy of the parameters the forward/backward pass
sees is cast. fp16's narrow range needs the loss multiplied by a scale before differentiation (so small gradients
do not flush to zero) and the gradients divided by it afterwards. With a dynamic scale (the reference's
``--fp16 --loss_scale 0``) a step whose gradients overflow is skipped and the scale halves; after
``growth_interval`` clean steps in a row it doubles again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

COMPUTE_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class Precision:
    """How the training step computes.

    compute: ``"fp32"``, ``"bf16"`` or ``"fp16"``: the dtype the model runs in (weights cast per step).
    loss_scale: fp16 only. ``0`` = dynamic scaling; a positive value (a power of two) = that static scale.
    init_scale, growth_interval, backoff_factor, growth_factor: the dynamic scale's schedule.
    """

    compute: str = "fp32"
    loss_scale: float = 0.0
    init_scale: float = 2.0**15
    growth_interval: int = 1000
    growth_factor: float = 2.0
    backoff_factor: float = 0.5

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_DTYPES:
            raise ValueError(f"Precision.compute={self.compute!r}: expected one of {sorted(COMPUTE_DTYPES)}")
        if self.loss_scale < 0:
            raise ValueError(f"Precision.loss_scale={self.loss_scale}: use 0 for dynamic scaling or a positive power of two")
        if self.loss_scale and self.compute != "fp16":
            raise ValueError(f"Precision.loss_scale={self.loss_scale} only applies to compute='fp16', not {self.compute!r}")
        if self.init_scale <= 0 or self.growth_interval < 1:
            raise ValueError("Precision.init_scale must be > 0 and growth_interval >= 1")

    @property
    def dtype(self) -> Any:
        return COMPUTE_DTYPES[self.compute]

    @property
    def uses_loss_scale(self) -> bool:
        return self.compute == "fp16"

    @property
    def dynamic(self) -> bool:
        return self.compute == "fp16" and self.loss_scale == 0

    @classmethod
    def from_flags(cls, fp16: bool = False, bf16: bool = False, loss_scale: float = 0.0) -> Precision:
        """The reference's ``--fp16 [--loss_scale S]`` plus our ``--bf16``."""
        if fp16 and bf16:
            raise ValueError("--fp16 and --bf16 are mutually exclusive")
        if fp16:
            return cls("fp16", loss_scale=float(loss_scale))
        return cls("bf16" if bf16 else "fp32")


@struct.dataclass
class LossScaleState:
    """Current loss scale (float32 scalar) and how many finite steps in a row have passed (int32 scalar)."""

    scale: jax.Array
    good_steps: jax.Array


def init_loss_scale(precision: Precision) -> LossScaleState | None:
    if not precision.uses_loss_scale:
        return None
    scale = precision.init_scale if precision.dynamic else precision.loss_scale
    return LossScaleState(scale=jnp.asarray(scale, jnp.float32), good_steps=jnp.zeros([], jnp.int32))


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast every floating-point leaf to ``dtype`` (integer leaves, e.g. counters, are left alone)."""

    def cast(leaf: Any) -> Any:
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != dtype:
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)


def all_finite(tree: Any) -> jax.Array:
    """True (bool scalar) when no leaf holds an inf or NaN."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def update_loss_scale(precision: Precision, state: LossScaleState, finite: jax.Array) -> LossScaleState:
    """Back off on overflow, grow after ``growth_interval`` clean steps; a static scale never changes."""
    if not precision.dynamic:
        return state
    good = jnp.where(finite, state.good_steps + 1, 0)
    grow = good >= precision.growth_interval
    scale = jnp.where(
        finite,
        jnp.where(grow, state.scale * precision.growth_factor, state.scale),
        # Never below 1: a scale that small means the problem is not range but a real NaN.
        jnp.maximum(state.scale * precision.backoff_factor, 1.0),
    )
    scale = jnp.where(jnp.isfinite(scale), scale, state.scale)  # growth must not overflow float32 either
    return LossScaleState(scale=scale.astype(jnp.float32), good_steps=jnp.where(grow, 0, good).astype(jnp.int32))

"""BERT's and OpenAI GPT's Adam variants and their warmup schedules, as optax transformations.

This mirrors ``pytorch_pretrained_bert.optimization`` and ``optimization_openai`` (0.6.x):

* the schedules map a training step to a learning-rate *multiplier* through
  ``progress = step / t_total``; ``warmup`` is a fraction of ``t_total``, and ``t_total=-1`` turns the
  schedule off (multiplier 1.0). Each schedule object is an optax schedule (``schedule(count)`` with jnp,
  jit-safe) and also offers the reference's ``get_lr(step)`` / ``get_lr_(progress)``, which return Python
  floats computed in double precision when given Python numbers.
* ``BertAdam`` is Adam without bias correction, with weight decay added to the update before the learning
  rate is applied, and by default clips each parameter tensor's gradient separately to norm 1.0.
* ``OpenAIAdam`` is Adam with bias correction whose weight decay shrinks the already-updated parameters,
  only for matrices unless ``vector_l2=True``.

Both return an ``optax.GradientTransformation``; use them with ``optax.apply_updates`` or ``nnx.Optimizer``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

logger = logging.getLogger(__name__)

__all__ = [
    "LRSchedule",
    "ConstantLR",
    "WarmupConstantSchedule",
    "WarmupLinearSchedule",
    "WarmupCosineSchedule",
    "WarmupCosineWithHardRestartsSchedule",
    "WarmupCosineWithWarmupRestartsSchedule",
    "SCHEDULES",
    "get_schedule",
    "BertAdam",
    "OpenAIAdam",
    "clip_grad_norm",
    "scale_by_adam_moments",
    "weight_decay_mask",
    "parameter_name",
]

# torch.nn.utils.clip_grad_norm_ divides by (norm + this) so a zero gradient never divides by zero.
_TORCH_CLIP_EPS = 1e-6

ScheduleInput = int | float | np.ndarray | jax.Array


# --------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------


def _runs_on_host(value: Any) -> bool:
    """True for Python / NumPy numbers, which get the float64 path; jax arrays and tracers get jnp."""
    return not isinstance(value, jax.Array) and isinstance(value, (int, float, np.ndarray, np.number))


class LRSchedule:
    """Base class: a learning-rate multiplier as a function of ``progress = step / t_total``.

    Subclasses implement ``_multiplier(progress, xp)`` once, written against the array namespace ``xp``
    (``numpy`` for float64 host values, ``jax.numpy`` inside jit), so both paths share one formula.
    """

    # Schedules that decay to zero at t_total make no sense past it: those warn (once) when it happens.
    warn_t_total: ClassVar[bool] = False

    def __init__(self, warmup: float = 0.002, t_total: float = -1) -> None:
        if not (0.0 <= warmup < 1.0) and warmup != -1:
            raise ValueError(f"Invalid warmup: {warmup} - should be in [0.0, 1.0[ or -1")
        if t_total == 0:
            raise ValueError("Invalid t_total: 0 - should be a positive number of steps, or -1 for no schedule")
        if t_total < 0 and type(self) is not ConstantLR:
            logger.warning(
                "t_total=%s is negative: %s is not applied, the learning-rate multiplier stays 1.0",
                t_total,
                type(self).__name__,
            )
        self.warmup = float(max(warmup, 0.0))
        self.t_total = float(t_total)
        self._warned_past_t_total = False

    def __repr__(self) -> str:
        extra = f", cycles={self.cycles}" if hasattr(self, "cycles") else ""
        return f"{type(self).__name__}(warmup={self.warmup}, t_total={self.t_total}{extra})"

    # ---- the reference's API -------------------------------------------------------------------------

    def get_lr(self, step: ScheduleInput, nowarn: bool = False) -> Any:
        """Learning-rate multiplier at ``step`` (0-based count of updates already done).

        Python/NumPy numbers give a Python float (or NumPy array) computed in float64, like the reference;
        jax arrays and tracers give a float32 jax array. Warns once (the reference warns at every step) if
        training runs past ``t_total``, except under ``jax.jit`` where the step is not known on the host.
        """
        if not _runs_on_host(step):
            return self._jnp_multiplier(step, warn=not nowarn)
        if self.t_total < 0:
            return 1.0 if np.ndim(step) == 0 else np.ones(np.shape(step))
        progress = np.asarray(step, dtype=np.float64) / self.t_total
        multiplier = self.get_lr_(progress)
        if not nowarn:
            self._warn_if_past_t_total(progress, multiplier)
        return multiplier

    def get_lr_(self, progress: ScheduleInput) -> Any:
        """Learning-rate multiplier at ``progress`` (0 at the start, 1 at ``t_total``)."""
        if _runs_on_host(progress):
            result = self._multiplier(np.asarray(progress, dtype=np.float64), np)
            return float(result) if np.ndim(result) == 0 else result
        progress = jnp.asarray(progress, dtype=jnp.result_type(progress, jnp.float32))
        return self._multiplier(progress, jnp)

    # ---- the optax schedule API ---------------------------------------------------------------------

    def __call__(self, count: ScheduleInput) -> jax.Array:
        """optax schedule: step count (int array, may be traced) -> float32 multiplier.

        Running past ``t_total`` is reported (once) only for concrete values, not under ``jax.jit``;
        call ``get_lr(step)`` from the Python training loop to get the warning there.
        """
        return self._jnp_multiplier(count, warn=True)

    # ---- internals -----------------------------------------------------------------------------------

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        raise NotImplementedError

    def _jnp_multiplier(self, step: ScheduleInput, warn: bool) -> jax.Array:
        step = jnp.asarray(step)
        dtype = step.dtype if jnp.issubdtype(step.dtype, jnp.floating) else jnp.float32
        if self.t_total < 0:
            return jnp.ones(step.shape, dtype)
        progress = step.astype(dtype) / jnp.asarray(self.t_total, dtype)
        multiplier = self._multiplier(progress, jnp)
        # Inside jit there is no warning: a jax.debug.callback, even in a never-taken lax.cond branch,
        # made a jitted BertAdam update several times slower on CPU (see docs/optimization.md).
        # Concrete arrays (eager code) are checked on the host.
        if warn and self.warn_t_total and not isinstance(progress, jax.core.Tracer):
            self._warn_if_past_t_total(np.asarray(progress), np.asarray(multiplier))
        return multiplier

    def _warn_if_past_t_total(self, progress: Any, multiplier: Any) -> None:
        if not self.warn_t_total or self._warned_past_t_total:
            return
        progress = np.asarray(progress)
        if not np.any(progress > 1.0):
            return
        self._warned_past_t_total = True
        furthest = np.argmax(progress)  # for a vector of steps, report the furthest
        logger.warning(
            "Training has gone past t_total=%s steps (progress %.4g): %s now gives a learning-rate "
            "multiplier of %.4g. Set t_total to the real number of training steps. (Warned once.)",
            self.t_total,
            float(progress.flat[furthest]),
            type(self).__name__,
            float(np.broadcast_to(multiplier, progress.shape).flat[furthest]),
        )

    def _with_warmup(self, progress: Any, xp: Any, after_warmup: Any) -> Any:
        """Linear ramp 0 -> 1 over the first ``warmup`` of progress, then ``after_warmup``."""
        if self.warmup == 0.0:
            return after_warmup
        warmup = xp.asarray(self.warmup, dtype=progress.dtype)
        return xp.where(progress < warmup, progress / warmup, after_warmup)

    def _progress_after_warmup(self, progress: Any, xp: Any) -> Any:
        # Same-dtype constants so that progress == 1 maps exactly to 1 in float32 too.
        warmup = xp.asarray(self.warmup, dtype=progress.dtype)
        return (progress - warmup) / (1 - warmup)


class ConstantLR(LRSchedule):
    """Multiplier 1.0 at every step."""

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        return xp.ones_like(progress)


class WarmupConstantSchedule(LRSchedule):
    """Linear warmup from 0 to 1 over the first ``warmup`` of training, then 1.0."""

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        return self._with_warmup(progress, xp, xp.ones_like(progress))


class WarmupLinearSchedule(LRSchedule):
    """Linear warmup to 1, then linear decay to 0 at ``t_total`` (and 0 afterwards)."""

    warn_t_total = True

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        warmup = xp.asarray(self.warmup, dtype=progress.dtype)
        decay = xp.maximum((progress - 1.0) / (warmup - 1.0), 0.0)
        return self._with_warmup(progress, xp, decay)


class WarmupCosineSchedule(LRSchedule):
    """Linear warmup to 1, then a cosine over ``cycles`` periods (0.5: one half-cosine from 1 down to 0)."""

    warn_t_total = True

    def __init__(self, warmup: float = 0.002, t_total: float = -1, cycles: float = 0.5) -> None:
        super().__init__(warmup=warmup, t_total=t_total)
        self.cycles = cycles

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        after = self._progress_after_warmup(progress, xp)
        cosine = 0.5 * (1.0 + xp.cos(math.pi * self.cycles * 2 * after))
        return self._with_warmup(progress, xp, cosine)


class WarmupCosineWithHardRestartsSchedule(WarmupCosineSchedule):
    """Linear warmup to 1, then ``cycles`` cosine decays from 1 to 0, each restarting abruptly at 1."""

    def __init__(self, warmup: float = 0.002, t_total: float = -1, cycles: float = 1.0) -> None:
        super().__init__(warmup=warmup, t_total=t_total, cycles=cycles)
        if not cycles >= 1.0:
            raise ValueError(f"Invalid cycles: {cycles} - {type(self).__name__} needs cycles >= 1.0")

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        after = self._progress_after_warmup(progress, xp)
        cosine = 0.5 * (1.0 + xp.cos(math.pi * xp.mod(self.cycles * after, 1.0)))
        return self._with_warmup(progress, xp, cosine)


class WarmupCosineWithWarmupRestartsSchedule(WarmupCosineWithHardRestartsSchedule):
    """Training split into ``cycles`` equal parts, each a linear warmup then a cosine decay to 0.

    ``warmup`` is a fraction of one cycle; ``self.warmup`` stores it as a fraction of a cycle's progress
    (``warmup * cycles``), which is why ``warmup * cycles`` must stay below 1.
    """

    def __init__(self, warmup: float = 0.002, t_total: float = -1, cycles: float = 1.0) -> None:
        if not warmup * cycles < 1.0:
            raise ValueError(
                f"Invalid warmup/cycles: warmup * cycles = {warmup} * {cycles} should be < 1.0"
            )
        scaled_warmup = warmup * cycles if warmup >= 0 else warmup
        super().__init__(warmup=scaled_warmup, t_total=t_total, cycles=cycles)

    def _multiplier(self, progress: Any, xp: Any) -> Any:
        in_cycle = xp.mod(progress * self.cycles, 1.0)
        after = self._progress_after_warmup(in_cycle, xp)
        cosine = 0.5 * (1.0 + xp.cos(math.pi * after))
        return self._with_warmup(in_cycle, xp, cosine)


SCHEDULES: dict[str | None, type[LRSchedule]] = {
    None: ConstantLR,
    "none": ConstantLR,
    "warmup_constant": WarmupConstantSchedule,
    "warmup_linear": WarmupLinearSchedule,
    "warmup_cosine": WarmupCosineSchedule,
    "warmup_cosine_hard_restarts": WarmupCosineWithHardRestartsSchedule,
    "warmup_cosine_warmup_restarts": WarmupCosineWithWarmupRestartsSchedule,
}


def get_schedule(schedule: str | LRSchedule | None, warmup: float = -1, t_total: float = -1) -> LRSchedule:
    """Resolve an optimizer's ``schedule`` argument: a name from ``SCHEDULES`` or a schedule object.

    A schedule object carries its own warmup and t_total; passing them here as well is ignored with a
    warning, as the reference does.
    """
    if isinstance(schedule, LRSchedule):
        if warmup != -1 or t_total != -1:
            logger.warning(
                "warmup=%s and t_total=%s are ignored because a schedule object (%r) was given: "
                "set warmup and t_total on the schedule object instead",
                warmup,
                t_total,
                schedule,
            )
        return schedule
    if not isinstance(schedule, (str, type(None))) or schedule not in SCHEDULES:
        names = ", ".join(repr(name) for name in SCHEDULES)
        raise ValueError(f"Invalid schedule parameter: {schedule!r} - should be an LRSchedule or one of {names}")
    return SCHEDULES[schedule](warmup=warmup, t_total=t_total)


# --------------------------------------------------------------------------------------------------------
# Gradient transformations
# --------------------------------------------------------------------------------------------------------


def _l2_norm(tensor: jax.Array) -> jax.Array:
    # At least float32 so that bf16/fp16 gradients do not overflow when squared.
    wide = tensor.astype(jnp.promote_types(tensor.dtype, jnp.float32))
    return jnp.sqrt(jnp.sum(wide * wide))


def _clip_coefficient(norm: jax.Array, max_norm: float) -> jax.Array:
    return jnp.minimum(max_norm / (norm + _TORCH_CLIP_EPS), 1.0)


def clip_grad_norm(max_norm: float, per_tensor: bool = True) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_norm_`` as optax: scale gradients by ``min(1, max_norm / (norm + 1e-6))``.

    ``per_tensor=True`` clips every leaf by its own norm (what BertAdam/OpenAIAdam do, one tensor at a
    time); ``per_tensor=False`` uses the norm of all leaves together (``clip_grad_norm_(model.parameters())``).
    """

    def clip(updates: optax.Updates, params: optax.Params | None = None) -> optax.Updates:
        del params
        if per_tensor:
            return jax.tree.map(lambda g: g * _clip_coefficient(_l2_norm(g), max_norm).astype(g.dtype), updates)
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates
        global_norm = jnp.linalg.norm(jnp.stack([_l2_norm(g) for g in leaves]))
        coefficient = _clip_coefficient(global_norm, max_norm)
        return jax.tree.map(lambda g: g * coefficient.astype(g.dtype), updates)

    return optax.stateless(clip)


class AdamMomentsState(NamedTuple):
    mu: optax.Updates  # running mean of gradients, same tree as params
    nu: optax.Updates  # running mean of squared gradients, same tree as params


def scale_by_adam_moments(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam's direction ``m / (sqrt(v) + eps)`` without bias correction (optax.scale_by_adam always corrects).

    The moment updates use the reference's operation order so float32 results match PyTorch closely.
    """

    def init(params: optax.Params) -> AdamMomentsState:
        return AdamMomentsState(mu=jax.tree.map(jnp.zeros_like, params), nu=jax.tree.map(jnp.zeros_like, params))

    def update(
        updates: optax.Updates, state: AdamMomentsState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AdamMomentsState]:
        del params
        mu = jax.tree.map(lambda m, g: m * b1 + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: v * b2 + (1 - b2) * g * g, state.nu, updates)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, AdamMomentsState(mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


class _CountState(NamedTuple):
    count: jax.Array  # int32 scalar: updates done so far


def _shrink_stepped_params(
    rate_fn: Callable[[jax.Array], jax.Array], vector_l2: bool
) -> optax.GradientTransformation:
    """OpenAI's decoupled decay: after the Adam step, multiply the new params by ``1 - rate``.

    ``rate_fn(count)`` gives ``lr * multiplier * weight_decay``. Vectors (ndim <= 1) are left alone unless
    ``vector_l2``. The result is returned as an update relative to the old params.
    """

    def init(params: optax.Params) -> _CountState:
        del params
        return _CountState(count=jnp.zeros([], jnp.int32))

    def update(
        updates: optax.Updates, state: _CountState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, _CountState]:
        if params is None:
            raise ValueError("OpenAIAdam weight decay needs the params: call update(grads, state, params)")
        rate = rate_fn(state.count)

        def decay(update: jax.Array, param: jax.Array) -> jax.Array:
            if param.ndim <= 1 and not vector_l2:
                return update
            # Round like the reference (new params first, then shrink them) and only then take the
            # difference: it is exact while old and new params are within 2x of each other, so
            # apply_updates lands on the reference's float32 value instead of drifting by an ulp a step.
            stepped = param + update
            shrunk = stepped - rate.astype(update.dtype) * stepped
            return shrunk - param

        new_updates = jax.tree.map(decay, updates, params)
        return new_updates, _CountState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def _check_adam_args(lr: float, b1: float, b2: float, e: float, clip_mode: str) -> None:
    if lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"Invalid b1 parameter: {b1} - should be in [0.0, 1.0[")
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"Invalid b2 parameter: {b2} - should be in [0.0, 1.0[")
    if not e >= 0.0:
        raise ValueError(f"Invalid epsilon value: {e} - should be >= 0.0")
    if clip_mode not in ("per_tensor", "global"):
        raise ValueError(f"Invalid clip_mode: {clip_mode!r} - should be 'per_tensor' or 'global'")


# A pytree of bools shaped like the params, or a function params -> such a pytree.
MaskOrFn = Any


def _one_minus_power(base: float, exponent: jax.Array) -> jax.Array:
    """``1 - base**exponent`` accurate in float32.

    Computed directly, ``1 - 0.999**t`` loses most digits to cancellation in float32 (5e-5 relative
    error at t=1, visible in the params after a few steps); ``-expm1(t * log(base))`` keeps ~1e-7.
    """
    if base == 0.0:
        return jnp.ones_like(exponent, dtype=jnp.float32)
    return -jnp.expm1(exponent.astype(jnp.float32) * math.log(base))


def BertAdam(  # noqa: N802 - named like the reference's class
    lr: float,
    *,
    warmup: float = -1,
    t_total: float = -1,
    schedule: str | LRSchedule | None = "warmup_linear",
    b1: float = 0.9,
    b2: float = 0.999,
    e: float = 1e-6,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    clip_mode: str = "per_tensor",
    weight_decay_mask: MaskOrFn | None = None,
) -> optax.GradientTransformation:
    """BERT's Adam: no bias correction, decoupled weight decay, warmup schedule, per-tensor clipping.

    One update, per parameter tensor ``p`` with gradient ``g`` (``step`` counts from 0)::

        g = g * min(1, max_grad_norm / (|g| + 1e-6))          # if max_grad_norm > 0
        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
        u = m / (sqrt(v) + e) + weight_decay * p               # decay only where weight_decay_mask is True
        p = p - lr * schedule(step) * u

    Args:
        lr: base learning rate (>= 0).
        warmup: fraction of ``t_total`` spent warming up (``-1``: none).
        t_total: planned number of updates (``-1``: no schedule, multiplier 1.0).
        schedule: a name from ``SCHEDULES`` or an ``LRSchedule`` (which then overrides warmup/t_total).
        b1, b2, e: Adam's decay rates and epsilon.
        weight_decay: decoupled decay rate; applied only if > 0.
        max_grad_norm: clip threshold; ``<= 0`` disables clipping.
        clip_mode: ``'per_tensor'`` (the reference: each tensor on its own) or ``'global'`` (one norm over
            all gradients, like ``torch.nn.utils.clip_grad_norm_(model.parameters(), ...)``).
        weight_decay_mask: pytree of bools like the params, or a function params -> such a pytree (e.g.
            :func:`weight_decay_mask`); False leaves get no decay. This is how the reference's two
            parameter groups (decay / no decay) are expressed with one optimizer.
    """
    _check_adam_args(lr, b1, b2, e, clip_mode)
    lr_schedule = get_schedule(schedule, warmup=warmup, t_total=t_total)

    parts: list[optax.GradientTransformation] = []
    if max_grad_norm > 0:
        parts.append(clip_grad_norm(max_grad_norm, per_tensor=clip_mode == "per_tensor"))
    parts.append(scale_by_adam_moments(b1, b2, e))
    if weight_decay > 0.0:
        parts.append(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask))
    # The reference reads the schedule before incrementing its step, so update k uses schedule(k - 1).
    parts.append(optax.scale_by_schedule(lambda count: -lr * lr_schedule(count)))
    return optax.chain(*parts)


def OpenAIAdam(  # noqa: N802 - named like the reference's class
    lr: float,
    *,
    warmup: float = -1,
    t_total: float = -1,
    schedule: str | LRSchedule | None = "warmup_linear",
    b1: float = 0.9,
    b2: float = 0.999,
    e: float = 1e-8,
    weight_decay: float = 0.0,
    vector_l2: bool = False,
    max_grad_norm: float = -1,
    clip_mode: str = "per_tensor",
    weight_decay_mask: MaskOrFn | None = None,
) -> optax.GradientTransformation:
    """OpenAI GPT's Adam: bias-corrected Adam, then weight decay of the updated matrices.

    One update, per parameter tensor ``p`` with gradient ``g`` (``t`` counts from 1)::

        g = g * min(1, max_grad_norm / (|g| + 1e-6))          # if max_grad_norm > 0
        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
        p = p - lr * schedule(t) * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + e)
        p = p * (1 - lr * schedule(t) * weight_decay)          # if weight_decay > 0 and (p.ndim > 1 or vector_l2)

    Note ``e`` is added before the bias correction, unlike ``optax.adam``. Arguments are as for
    :func:`BertAdam`; ``weight_decay_mask`` further restricts which tensors decay.
    """
    _check_adam_args(lr, b1, b2, e, clip_mode)
    lr_schedule = get_schedule(schedule, warmup=warmup, t_total=t_total)

    def step_size(count: jax.Array) -> jax.Array:
        t = count + 1  # the reference increments its step before using it
        bias_correction1 = _one_minus_power(b1, t)
        bias_correction2 = _one_minus_power(b2, t)
        return -lr * lr_schedule(t) * jnp.sqrt(bias_correction2) / bias_correction1

    parts: list[optax.GradientTransformation] = []
    if max_grad_norm > 0:
        parts.append(clip_grad_norm(max_grad_norm, per_tensor=clip_mode == "per_tensor"))
    parts.append(scale_by_adam_moments(b1, b2, e))
    parts.append(optax.scale_by_schedule(step_size))
    if weight_decay > 0:
        decay = _shrink_stepped_params(lambda count: lr * lr_schedule(count + 1) * weight_decay, vector_l2)
        parts.append(decay if weight_decay_mask is None else optax.masked(decay, weight_decay_mask))
    return optax.chain(*parts)


# --------------------------------------------------------------------------------------------------------
# Which parameters to decay
# --------------------------------------------------------------------------------------------------------

# Norm layers: BERT "LayerNorm", Transformer-XL "layer_norm", GPT/GPT-2 "ln_1", "ln_2", "ln_f".
_NORM_MODULE = re.compile(r"^(ln(_\w+)?|.*layer_?norm.*)$", re.IGNORECASE)


def parameter_name(path: Sequence[Any]) -> str:
    """Dotted PyTorch-style name of a pytree path, e.g. ``encoder.layer.0.attention.self.query.weight``.

    The trailing ``.value`` that an ``nnx.Variable`` adds to the path is dropped.
    """
    parts: list[str] = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        parts.pop()
    return ".".join(parts)


def _decays(name: str, no_decay: Sequence[str] | None) -> bool:
    if no_decay is not None:
        # The reference example scripts: substring match on the full parameter name.
        return not any(pattern in name for pattern in no_decay)
    *modules, leaf = name.split(".")
    if "bias" in leaf:  # bias, and Transformer-XL's r_w_bias / r_r_bias
        return False
    return not any(_NORM_MODULE.match(module) for module in modules)


def weight_decay_mask(params: Any, no_decay: Sequence[str] | None = None) -> Any:
    """Pytree of bools like ``params``: True for weights to decay, False for biases and norm parameters.

    Works on nested dicts of arrays and on ``nnx.State`` (whose ``Variable`` leaves get a bool value).
    By default a leaf is excluded when its own name contains ``bias`` or it sits under a norm module
    (``LayerNorm``, ``layer_norm``, ``ln_1``, ``ln_f``...). Passing ``no_decay`` (e.g. the reference
    examples' ``['bias', 'LayerNorm.bias', 'LayerNorm.weight']``) instead excludes every name that
    contains one of those substrings, exactly like those scripts.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: _decays(parameter_name(path), no_decay), params)

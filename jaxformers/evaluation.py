"""Jitted evaluation drivers for language models that carry memories between segments (Transformer-XL).

``make_eval_step(model)`` compiles one segment; ``evaluate_segments`` runs equal-length segments in one
``lax.scan``. They are drivers around a model, not part of it (for classifiers' eval steps see
``jaxformers.training.make_eval_step``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import Array

if TYPE_CHECKING:
    from .models.transfo_xl import TransfoXLLMHeadModel


def make_eval_step(model: TransfoXLLMHeadModel) -> Callable[..., tuple[Array, list[Array] | None]]:
    """A jitted ``step(input_ids, target, mems) -> (nll [batch, tgt_len], new_mems)`` for evaluation.

    The model's weights and settings are captured once (``nnx.split``): build the step again after changing
    them (``reset_length``, ``clamp_len``...). Each distinct input shape compiles once, so a long text cut into
    equal segments costs one dispatch per segment. Pass ``mems=None`` for the first segment.
    """
    if not model.deterministic:
        raise ValueError("make_eval_step needs an evaluation-mode model: call model.eval() first")
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, input_ids, target, mems):
        return nnx.merge(graphdef, state)(input_ids, target, mems)

    def run(input_ids: Array, target: Array, mems: Sequence[Array] | None = None):
        return step(state, jnp.asarray(input_ids), jnp.asarray(target), None if mems is None else list(mems))

    return run


@nnx.jit
def _scan_segments(model: TransfoXLLMHeadModel, input_ids: Array, target: Array, mems: list[Array] | None):
    def body(memories, segment):
        nll, new_memories = model(segment[0], segment[1], memories)
        return new_memories, nll

    final_mems, nll = jax.lax.scan(body, mems, (input_ids, target))
    return nll, final_mems


def evaluate_segments(model: TransfoXLLMHeadModel, input_ids: Array, target: Array,
                      mems: Sequence[Array] | None = None) -> tuple[Array, list[Array] | None]:
    """Run equal-length consecutive segments with memory in one jitted ``lax.scan``.

    input_ids ``[segments, batch, seq]``, target ``[segments, batch, tgt_len]`` -> (nll ``[segments, batch,
    tgt_len]``, final mems). ``mems=None`` starts from the reference's zero memories. Same values as calling
    the model segment by segment; compiled once per model configuration and input shape.
    """
    if not model.deterministic:
        raise ValueError("evaluate_segments needs an evaluation-mode model: call model.eval() first")
    input_ids, target = jnp.asarray(input_ids), jnp.asarray(target)
    if input_ids.ndim != 3 or target.ndim != 3 or input_ids.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and target {tuple(target.shape)} must be [segments, batch, len]"
        )
    base = model.transformer
    if mems is None:
        mems = model.init_mems(input_ids.shape[1])
    if mems is not None:
        # lax.scan carries memories of constant shape: one segment must keep their length.
        m_len, q_len = mems[0].shape[0], input_ids.shape[2]
        end = q_len + max(0, m_len - base.ext_len)
        if end - max(0, end - base.mem_len) != m_len:
            raise ValueError(
                f"memories of length {m_len} would change length with segments of {q_len} tokens (mem_len="
                f"{base.mem_len}, ext_len={base.ext_len}): use make_eval_step segment by segment instead"
            )
        mems = [jnp.asarray(m) for m in mems]
    return _scan_segments(model, input_ids, target, mems)


__all__: Sequence[str] = ("make_eval_step", "evaluate_segments")

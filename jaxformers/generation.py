"""Text generation for causal language models, with the whole decoding loop compiled into one XLA program.

The model must offer the static key/value cache interface of ``GPT2LMHeadModel``:

    cache = model.init_cache(batch_size, max_length, dtype=None)
    logits, cache = model.decode_step(input_ids, cache, *, attention_mask, position_ids)

``decode_step`` writes the keys/values of ``input_ids [batch, n]`` at cache slots ``[index, index + n)``, attends
causally over the slots whose ``attention_mask [batch, max_length]`` entry is 1 and returns ``[batch, n, vocab]``
logits. Generation is one prefill call over the whole prompt block followed by a ``lax.while_loop`` of one-token
calls, all inside a single ``jax.jit``: shapes are static, so a model compiles once per (batch, prompt width,
``max_new_tokens``, decoding mode) and a Python-level loop never runs per token.

Padding. Every row's real tokens must form one contiguous block of ``attention_mask`` (left padding, right
padding, or both). Rows are moved to a left-padded layout before decoding (on the host, from each row's prompt
length), so the prompt ends in the same cache slot for every row and each new token is written to one slot shared
by the whole batch. Pad slots stay masked out of attention and positions count real tokens only, so a row's
position ids start at 0 at its first real token: a padded row decodes exactly like the same prompt alone. The
result is given back in the caller's layout: each row is its input up to the end of its prompt, then its new
tokens, then fill tokens (so right-padded prompts come back as ``prompt + continuation + fill``).

Sampling follows the 0.6.x example ``run_gpt2.py`` and the later ``top_k_top_p_filtering``: logits are divided by
the temperature, then top-k filtered, then top-p (nucleus) filtered, then sampled. Every row draws from its own
key derived from (seed, step, row), so a row's sample does not depend on what else is in the batch.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array


# ------------------------------------------------------------------------------------------------------------------
# Logit filters (usable on their own, inside or outside jit)


def top_k_filter(logits: Array, k: int, filter_value: float = -jnp.inf) -> Array:
    """Keep the ``k`` largest logits of the last axis, set the rest to ``filter_value``; ``k <= 0`` keeps all.

    Like the reference ``top_k_logits``, a logit equal to the k-th largest is kept, so ties can keep more than k.
    ``k`` larger than the vocabulary keeps everything.
    """
    if k <= 0:
        return logits
    k = min(int(k), logits.shape[-1])
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]  # [..., 1]
    return jnp.where(logits < kth_largest, jnp.asarray(filter_value, logits.dtype), logits)


def top_p_filter(logits: Array, p: float | Array, filter_value: float = -jnp.inf) -> Array:
    """Nucleus filtering: keep the smallest set of highest-probability tokens whose probabilities sum to more
    than ``p``, set the other logits to ``filter_value``. The most likely token is always kept.

    A token is dropped when the tokens ranked above it already have cumulative probability > p (so the token that
    crosses ``p`` stays). Among equal logits the lower token id ranks first. A Python ``p >= 1`` keeps all.
    """
    if not isinstance(p, jax.Array) and float(p) >= 1.0:
        return logits
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)  # [rows, vocab]
    order = jnp.argsort(-flat, axis=-1, stable=True)  # descending, ties by token id
    sorted_logits = jnp.take_along_axis(flat, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1), axis=-1)
    # Shift by one rank: whether a token goes depends on the mass strictly above it.
    above_exceeds = jnp.concatenate(
        [jnp.zeros_like(cumulative[:, :1], dtype=bool), cumulative[:, :-1] > p], axis=-1
    )  # [rows, vocab] in sorted order
    rows = jnp.arange(flat.shape[0])[:, None]
    drop = jnp.zeros(flat.shape, bool).at[rows, order].set(above_exceeds)  # back to token order
    filtered = jnp.where(drop, jnp.asarray(filter_value, flat.dtype), flat)
    return filtered.reshape(logits.shape)


def filter_logits(logits: Array, *, top_k: int = 0, top_p: float | Array = 1.0,
                  filter_value: float = -jnp.inf) -> Array:
    """Top-k then top-p filtering (the order of the reference's ``top_k_top_p_filtering``)."""
    return top_p_filter(top_k_filter(logits, top_k, filter_value), top_p, filter_value)


# ------------------------------------------------------------------------------------------------------------------
# The compiled decoding loop


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Everything that changes the compiled program (static under jit)."""

    max_new_tokens: int
    do_sample: bool
    top_k: int
    use_top_p: bool
    eos_token_id: int  # -1: never stop
    fill_token_id: int
    cache_dtype: Any


def _choose_tokens(logits: Array, step: Array, base_key: Array, temperature: Array, top_p: Array,
                   settings: _Settings) -> Array:
    # logits: [batch, vocab] -> tokens [batch]
    if not settings.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits.astype(jnp.float32) / temperature
    scaled = top_k_filter(scaled, settings.top_k)
    if settings.use_top_p:
        scaled = top_p_filter(scaled, top_p)
    step_key = jax.random.fold_in(base_key, step)
    row_keys = jax.vmap(lambda row: jax.random.fold_in(step_key, row))(jnp.arange(logits.shape[0]))
    return jax.vmap(jax.random.categorical)(row_keys, scaled).astype(jnp.int32)


def _decode_loop(graphdef: nnx.GraphDef, state: nnx.State, prompt_ids: Array, prompt_mask: Array,
                 base_key: Array, temperature: Array, top_p: Array, *, settings: _Settings) -> tuple[Array, Array]:
    """prompt_ids/prompt_mask: [batch, prompt] left-padded. Returns (new tokens [batch, max_new], steps run)."""
    model = nnx.merge(graphdef, state)
    if hasattr(model, "eval"):
        model.eval()  # generation never uses dropout, whatever mode the caller's model is in
    batch, prompt_width = prompt_ids.shape
    new_tokens = settings.max_new_tokens
    # The last chosen token is never fed back, so the cache needs one slot fewer than the output.
    cache = model.init_cache(batch, prompt_width + new_tokens - 1, dtype=settings.cache_dtype)
    # Generated slots are real for every row; slots not written yet are masked causally inside decode_step.
    slot_mask = jnp.concatenate(
        [prompt_mask, jnp.ones((batch, new_tokens - 1), prompt_mask.dtype)], axis=1
    )  # [batch, slots]
    positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)  # [batch, prompt]: 0 at the first real token

    logits, cache = model.decode_step(prompt_ids, cache, attention_mask=slot_mask, position_ids=positions)
    eos = settings.eos_token_id
    first = _choose_tokens(logits[:, -1], jnp.int32(0), base_key, temperature, top_p, settings)  # [batch]
    done = first == eos if eos >= 0 else jnp.zeros((batch,), bool)
    tokens = jnp.full((batch, new_tokens), settings.fill_token_id, jnp.int32).at[:, 0].set(first)
    next_position = jnp.sum(prompt_mask, axis=1).astype(jnp.int32)  # [batch]

    def keep_going(carry):
        step, _, done, _, _, _ = carry
        return (step < new_tokens) & ~jnp.all(done)

    def one_token(carry):
        step, tokens, done, previous, position, cache = carry
        logits, cache = model.decode_step(
            previous[:, None], cache, attention_mask=slot_mask, position_ids=position[:, None]
        )
        chosen = _choose_tokens(logits[:, -1], step, base_key, temperature, top_p, settings)
        chosen = jnp.where(done, settings.fill_token_id, chosen)  # finished rows only emit fill tokens
        tokens = jax.lax.dynamic_update_slice(tokens, chosen[:, None], (0, step))
        if eos >= 0:
            done = done | (chosen == eos)
        return step + 1, tokens, done, chosen, position + 1, cache

    carry = (jnp.int32(1), tokens, done, first, next_position, cache)
    steps, tokens, *_ = jax.lax.while_loop(keep_going, one_token, carry)
    return tokens, steps


class _CompiledLoop:
    """One model structure's jitted loop; rebuilt when the model's graph (structure or static fields) changes."""

    def __init__(self) -> None:
        self.graphdef: nnx.GraphDef | None = None
        self.function = None

    def get(self, graphdef: nnx.GraphDef):
        # Configs are unhashable, so the graphdef cannot be a jit static argument: close over it instead.
        if self.function is None or graphdef != self.graphdef:
            def loop(state, prompt_ids, prompt_mask, base_key, temperature, top_p, *, settings):
                return _decode_loop(graphdef, state, prompt_ids, prompt_mask, base_key, temperature, top_p,
                                    settings=settings)

            self.graphdef = graphdef
            self.function = jax.jit(loop, static_argnames=("settings",))
        return self.function


# ------------------------------------------------------------------------------------------------------------------
# Host-side preparation


@dataclasses.dataclass
class _Batch:
    prompts: np.ndarray  # [batch, width] left-padded, pad slots hold token 0
    mask: np.ndarray  # [batch, width]
    lengths: np.ndarray  # [batch] real tokens per row
    ends: np.ndarray  # [batch] where each row's prompt ends in the caller's layout
    original: np.ndarray  # [batch, caller width]


def _as_batch(input_ids: Any, attention_mask: Any, pad_to_multiple_of: int | None) -> _Batch:
    if isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], (list, tuple, np.ndarray)):
        lengths = [len(row) for row in input_ids]
        if len(set(lengths)) > 1:
            # Ragged Python lists: right-pad them here (and infer the mask unless one was given).
            width = max(lengths)
            padded = np.zeros((len(input_ids), width), np.int64)
            for row, ids in enumerate(input_ids):
                padded[row, : len(ids)] = ids
            if attention_mask is None:
                attention_mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
            input_ids = padded
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"input_ids must be [batch, prompt_length] with at least one token, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    if attention_mask is None:
        mask = np.ones(ids.shape, np.int32)
    else:
        mask = np.asarray(attention_mask)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has shape {ids.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
        mask = mask.astype(np.int32)

    batch, width = ids.shape
    lengths = mask.sum(axis=1)
    starts = mask.argmax(axis=1)
    ends = starts + lengths
    for row in range(batch):
        if lengths[row] == 0:
            raise ValueError(
                f"row {row} of attention_mask has no real token: every prompt needs at least one token "
                f"(start unconditional generation from the end-of-text token)"
            )
        if mask[row, starts[row]: ends[row]].sum() != lengths[row]:
            raise ValueError(
                f"row {row} of attention_mask is not one contiguous block of 1s ({mask[row].tolist()}): "
                f"use left or right padding"
            )

    longest = int(lengths.max())
    padded_width = longest
    if pad_to_multiple_of:
        padded_width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    prompts = np.zeros((batch, padded_width), np.int32)
    left_mask = np.zeros((batch, padded_width), np.int32)
    for row in range(batch):
        length = int(lengths[row])
        prompts[row, padded_width - length:] = ids[row, starts[row]: ends[row]]
        left_mask[row, padded_width - length:] = 1
    return _Batch(prompts, left_mask, lengths, ends, ids)


def _max_positions(model: nnx.Module) -> int | None:
    config = getattr(model, "config", None)
    for name in ("n_positions", "n_ctx", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


# ------------------------------------------------------------------------------------------------------------------
# Public API


class Generator:
    """Compiled generation for one model; reuse it to keep the compiled programs between calls.

    The model's current parameters are read at every call (fine-tuned weights are picked up without recompiling);
    a change of the model's structure or static settings recompiles.
    """

    def __init__(self, model: nnx.Module):
        for method in ("init_cache", "decode_step"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"{type(model).__name__} has no {method}(): generation needs a model with a static key/value "
                    f"cache (init_cache/decode_step, e.g. GPT2LMHeadModel)"
                )
        self.model = model
        self._loop = _CompiledLoop()
        self.last_steps: int | None = None  # decoding steps the last call ran (< max_new_tokens when all stopped)

    def __call__(
        self,
        input_ids: Any,
        *,
        attention_mask: Any = None,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
        cache_dtype: Any = None,
    ) -> np.ndarray:
        """Continue each prompt by ``max_new_tokens`` tokens; returns ``[batch, prompt_width + max_new_tokens]``.

        input_ids: ``[batch, prompt]`` ids (or one ``[prompt]`` sequence, or a list of ragged lists, which is
            right-padded). attention_mask: 1 for real tokens, 0 for padding (left or right), default all 1.
        do_sample: False is greedy (argmax; temperature/top_k/top_p unused); True samples from
            ``softmax(filter(logits / temperature))``. top_k 0 and top_p 1.0 disable those filters.
        eos_token_id: a row stops after emitting it and then emits ``pad_token_id`` (default: the eos id); the
            loop ends as soon as every row has stopped. Without it every row gets exactly ``max_new_tokens``.
        seed: sampling seed; the same seed, prompt and settings give the same tokens.
        pad_to_multiple_of: round the internal prompt width up (extra left padding) so prompts of nearby lengths
            share one compiled program; the output is unchanged.
        """
        settings = _settings_from_arguments(
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of,
            cache_dtype=cache_dtype,
        )
        batch = _as_batch(input_ids, attention_mask, pad_to_multiple_of)
        if settings.max_new_tokens == 0:
            self.last_steps = 0
            return _assemble(batch, np.zeros((batch.prompts.shape[0], 0), np.int32), settings.fill_token_id)
        _check_positions(self.model, batch, settings.max_new_tokens)

        graphdef, state = nnx.split(self.model)
        function = self._loop.get(graphdef)
        tokens, steps = function(
            state,
            jnp.asarray(batch.prompts),
            jnp.asarray(batch.mask),
            jax.random.key(seed),
            jnp.float32(temperature),
            jnp.float32(top_p),
            settings=settings,
        )
        self.last_steps = int(steps)
        return _assemble(batch, np.asarray(tokens), settings.fill_token_id)


def _settings_from_arguments(
    *,
    max_new_tokens: Any,
    do_sample: bool,
    temperature: float,
    top_k: Any,
    top_p: float,
    eos_token_id: int | None,
    pad_token_id: int | None,
    pad_to_multiple_of: int | None,
    cache_dtype: Any,
) -> _Settings:
    """Validate ``Generator.__call__``'s scalar arguments (naming the bad one) and freeze them as the static
    settings of the compiled loop; the sampling-only ones are neutralised under greedy decoding so that greedy
    calls with different unused values share one compiled program."""
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, minimum=0)
    top_k = _check_int("top_k", top_k, minimum=0)
    temperature = float(temperature)
    if do_sample and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number when sampling, got {temperature!r}")
    if not 0.0 <= float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (1.0 disables nucleus filtering), got {top_p!r}")
    if pad_to_multiple_of is not None:
        _check_int("pad_to_multiple_of", pad_to_multiple_of, minimum=1)
    for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None:
            _check_int(name, value, minimum=0)
    fill = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    return _Settings(
        max_new_tokens=max_new_tokens,
        do_sample=bool(do_sample),
        top_k=top_k if do_sample else 0,
        use_top_p=bool(do_sample) and float(top_p) < 1.0,
        eos_token_id=-1 if eos_token_id is None else int(eos_token_id),
        fill_token_id=int(fill),
        cache_dtype=cache_dtype,
    )


def _check_positions(model: nnx.Module, batch: _Batch, max_new_tokens: int) -> None:
    """Refuse a prompt + continuation longer than the model's position table (it would index past it)."""
    limit = _max_positions(model)
    longest = int(batch.lengths.max())
    # The last fed token sits at position (longest prompt + max_new_tokens - 2).
    if limit is not None and longest + max_new_tokens - 1 > limit:
        raise ValueError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} needs "
            f"{longest + max_new_tokens - 1} positions; the model has {limit}"
        )


def _assemble(batch: _Batch, new_tokens: np.ndarray, fill: int) -> np.ndarray:
    """Caller's layout: each row's input up to its prompt end, then its new tokens, then fill."""
    rows, width = batch.original.shape
    new = new_tokens.shape[1]
    out = np.full((rows, width + new), fill, dtype=np.result_type(batch.original.dtype, np.int32))
    for row in range(rows):
        end = int(batch.ends[row])
        out[row, :end] = batch.original[row, :end]
        out[row, end: end + new] = new_tokens[row]
    return out


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# generate()'s compiled loops, one per live model object.
_SHARED_LOOPS: "weakref.WeakKeyDictionary[nnx.Module, _CompiledLoop]" = weakref.WeakKeyDictionary()


def generate(
    model: nnx.Module,
    input_ids: Any,
    *,
    attention_mask: Any = None,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    seed: int = 0,
    pad_to_multiple_of: int | None = None,
    cache_dtype: Any = None,
) -> np.ndarray:
    """Generate with ``model`` (see ``Generator.__call__`` for the arguments); compiled programs are kept per
    model object, so repeated calls with the same shapes do not recompile."""
    generator = Generator(model)
    generator._loop = _SHARED_LOOPS.setdefault(model, generator._loop)
    return generator(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        seed=seed,
        pad_to_multiple_of=pad_to_multiple_of,
        cache_dtype=cache_dtype,
    )


__all__: Sequence[str] = ("Generator", "generate", "filter_logits", "top_k_filter", "top_p_filter")

"""The train state and the jitted train/eval steps.

A model is split once into its static graph (two copies: train mode, where dropout is on, and eval mode) and its
parameters. The parameters live in a ``TrainState`` pytree next to the optimizer state, so a training step is a
pure function ``(state, batch) -> (state, metrics)`` that XLA compiles once, with the old state's buffers donated
to the new one. Shardings (replicated or FSDP, see sharding.py) are fixed on the jit, so the same code runs on one
device, on all local devices, or across hosts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding

from .precision import (
    LossScaleState,
    Precision,
    all_finite,
    cast_floating,
    init_loss_scale,
    update_loss_scale,
)
from ..sharding_rules import Rules, activation_layout
from .sharding import (
    batch_sharding,
    host_offload_supported,
    make_mesh,
    replicated,
    shard_batch_on_mesh,
    tree_shardings,
)

logger = logging.getLogger("jaxformers")

Batch = Mapping[str, Any]
LossFn = Callable[[nnx.Module, Batch, jax.Array], jax.Array]
PredictFn = Callable[[nnx.Module, Batch], Any]
GradFn = Callable[[Any, Batch, jax.Array, jax.Array], tuple[Any, jax.Array]]


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (checkpointed as a whole).

    step: int32 scalar, train-step calls so far (= batches consumed; fp16-skipped steps count too).
    params: the model's ``nnx.Param`` state, float32 master weights.
    opt_state: the optax state for ``params``.
    rng: raw ``uint32[2]`` PRNG key; step ``n`` draws its dropout key as ``fold_in(rng, n)``, so a resumed run
        sees the same dropout masks as an uninterrupted one.
    loss_scale: fp16 loss-scale state, else None.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    loss_scale: LossScaleState | None


@dataclasses.dataclass(eq=False)
class TrainContext:
    """The static half of training: model graphs, mesh, shardings and precision (not a pytree, never traced)."""

    train_graphdef: Any
    eval_graphdef: Any
    rest: Any  # non-parameter variables of the model, held constant
    mesh: Mesh
    state_shardings: TrainState
    precision: Precision
    fsdp: bool
    offload_optimizer: bool

    @property
    def batch_sharding(self) -> NamedSharding:
        return batch_sharding(self.mesh)

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    def shard_batch(self, batch: Batch) -> dict[str, jax.Array]:
        return shard_batch_on_mesh(self.mesh, batch)


def create_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    *,
    seed: int = 0,
    precision: Precision | None = None,
    mesh: Mesh | None = None,
    fsdp: bool = False,
    optimize_on_cpu: bool = False,
    rules: Rules | None = None,
) -> tuple[TrainContext, TrainState]:
    """Split ``model`` into a context and an initial state placed on ``mesh`` (all devices when None).

    Parameters are laid out by their logical axis names through ``rules`` (default: the table in
    ``jaxformers.sharding_rules``, with its FSDP entries when ``fsdp``), optimizer moments like their parameter.

    The model object is left in eval mode; train with the returned state and get a model back with
    :func:`model_from_state`. ``optimize_on_cpu`` keeps the optimizer state in pinned host memory where the
    platform has one (GPU/TPU); elsewhere it logs why it does not apply and keeps it on the device.
    """
    precision = precision if precision is not None else Precision()
    mesh = mesh if mesh is not None else make_mesh()
    model.train()
    train_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    # Master weights are float32 whatever dtype the model was built with.
    params = cast_floating(params, jnp.float32)

    offload = bool(optimize_on_cpu) and _check_offload(mesh)
    loss_scale = init_loss_scale(precision)
    shardings = _state_shardings(params, tx, loss_scale, mesh, fsdp=fsdp, offload=offload, rules=rules)
    # A copy: the step donates the state's buffers, which must not be the model's own arrays.
    params = jax.device_put(params, shardings.params, may_alias=False)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    state = TrainState(
        step=jax.device_put(jnp.zeros([], jnp.int32), shardings.step),
        params=params,
        opt_state=opt_state,
        rng=jax.device_put(jax.random.PRNGKey(seed), shardings.rng),
        loss_scale=None if loss_scale is None else jax.device_put(loss_scale, shardings.loss_scale),
    )
    context = TrainContext(
        train_graphdef=train_graphdef,
        eval_graphdef=eval_graphdef,
        rest=rest,
        mesh=mesh,
        state_shardings=shardings,
        precision=precision,
        fsdp=fsdp,
        offload_optimizer=offload,
    )
    return context, state


def _state_shardings(
    params: Any,
    tx: optax.GradientTransformation,
    loss_scale: LossScaleState | None,
    mesh: Mesh,
    *,
    fsdp: bool,
    offload: bool,
    rules: Rules | None,
) -> TrainState:
    """Where each leaf of the train state lives: parameters by their logical axes, optimizer moments like their
    parameter (in pinned host memory when ``offload``), the step counter, PRNG key and loss scale replicated."""
    opt_shapes = jax.eval_shape(tx.init, params)
    return TrainState(
        step=replicated(mesh),
        params=tree_shardings(params, mesh, fsdp, rules=rules),
        opt_state=tree_shardings(opt_shapes, mesh, fsdp, memory_kind="pinned_host" if offload else None,
                                 rules=rules),
        rng=replicated(mesh),
        loss_scale=None if loss_scale is None else jax.tree.map(lambda _: replicated(mesh), loss_scale),
    )


def _check_offload(mesh: Mesh) -> bool:
    if host_offload_supported(mesh):
        logger.info("optimize_on_cpu: optimizer state kept in pinned host memory")
        return True
    platform = mesh.devices.flat[0].platform
    if platform == "cpu":
        logger.warning(
            "optimize_on_cpu is not applicable on the CPU platform: the optimizer state already lives in host "
            "memory. Ignoring the flag."
        )
    else:
        logger.warning(
            "optimize_on_cpu: the %s platform exposes no 'pinned_host' memory, so the optimizer state stays in "
            "device memory. Ignoring the flag.",
            platform,
        )
    return False


def _resolve_precision(context: TrainContext, precision: Precision | None) -> Precision:
    if precision is None or precision == context.precision:
        return context.precision
    if precision == Precision():  # the contract's default: defer to what the state was built for
        return context.precision
    raise ValueError(
        f"make_train_step got {precision} but the train state was created with {context.precision}: "
        "pass the same Precision to create_train_state and make_train_step"
    )


def _split_micro_batches(value: jax.Array, count: int, name: str) -> jax.Array:
    """``[batch, ...] -> [count, batch // count, ...]``; micro-batch i takes rows i, i + count, i + 2 count...

    Strided rather than contiguous so that every micro-batch keeps rows on every device (the batch dimension
    is sharded in contiguous blocks); the accumulated update is the same either way.
    """
    rows = value.shape[0]
    if rows % count:
        raise ValueError(
            f"batch[{name!r}] has {rows} rows, not divisible by grad_accum_steps={count}: the train batch size "
            "must be a multiple of the number of accumulation steps"
        )
    reshaped = value.reshape(rows // count, count, *value.shape[1:])
    return jnp.swapaxes(reshaped, 0, 1)


def make_train_step(
    context: TrainContext,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    precision: Precision | None = None,
    grad_accum_steps: int = 1,
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Compile ``loss_fn(model, batch, dropout_rng) -> scalar`` into one optimizer step.

    The batch's leading dimension is split into ``grad_accum_steps`` equal micro-batches whose gradients are
    averaged before the single update (the same update as one big batch for a mean loss). Metrics (replicated
    scalars): ``loss`` (mean over micro-batches), ``grad_norm`` (global norm of the averaged gradients before the
    optimizer's own clipping), ``skipped`` (1 when fp16 overflow skipped the update), ``loss_scale``.
    """
    precision = _resolve_precision(context, precision)
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps={grad_accum_steps}: must be >= 1")
    gradients = _gradient_fn(context, loss_fn, precision.dtype, grad_accum_steps)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        scale = state.loss_scale.scale if state.loss_scale is not None else jnp.ones([], jnp.float32)
        grads, loss = gradients(state.params, batch, rng, scale)
        # Gradients take the parameters' layout: under FSDP this makes the reduction a reduce-scatter.
        grads = jax.lax.with_sharding_constraint(grads, context.state_shardings.params)
        if state.loss_scale is not None:
            grads = jax.tree.map(lambda g: g / scale, grads)
            finite = all_finite(grads)
        else:
            finite = jnp.asarray(True)
        grad_norm = optax.global_norm(grads)
        new_state = _apply_gradients(context, tx, precision, state, grads, finite)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "skipped": jnp.logical_not(finite).astype(jnp.int32),
            "loss_scale": scale,
        }
        return new_state, metrics

    jitted = jax.jit(
        step,
        in_shardings=(context.state_shardings, context.batch_sharding),
        out_shardings=(context.state_shardings, replicated(context.mesh)),
        donate_argnums=(0,) if donate else (),
    )
    return _ShardingCall(jitted, context)


def _gradient_fn(context: TrainContext, loss_fn: LossFn, compute_dtype: Any, grad_accum_steps: int) -> GradFn:
    """``(params, batch, rng, scale) -> (grads of scale * loss, loss)``, traced inside the train step.

    The model is rebuilt from the float32 master weights cast to ``compute_dtype``, so gradients come back in
    float32 (the cast's transpose). With ``grad_accum_steps > 1`` they are averaged over micro-batches.
    """

    def scaled_loss(params: Any, batch: Batch, rng: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
        model = nnx.merge(context.train_graphdef, cast_floating(params, compute_dtype), context.rest)
        with activation_layout(context.mesh):  # tensor-parallel activations stay split (trace time only)
            loss = jnp.asarray(loss_fn(model, batch, rng)).astype(jnp.float32)
        if loss.ndim:
            raise ValueError(f"loss_fn must return a scalar loss, got shape {loss.shape}")
        return loss * scale, loss

    grad_fn = jax.grad(scaled_loss, has_aux=True)
    if grad_accum_steps == 1:
        return grad_fn
    return _accumulated(grad_fn, grad_accum_steps, context.state_shardings.params)


def _accumulated(grad_fn: GradFn, count: int, param_shardings: Any) -> GradFn:
    """``grad_fn`` averaged over ``count`` strided micro-batches with one ``lax.scan`` (one traced body, so
    the compile time does not grow with ``count``); micro-batch i draws dropout from ``fold_in(rng, i)``."""

    def gradients(params: Any, batch: Batch, rng: jax.Array, scale: jax.Array) -> tuple[Any, jax.Array]:
        micro_batches = {name: _split_micro_batches(value, count, name) for name, value in batch.items()}

        def accumulate(carry, inputs):
            grad_sum, loss_sum = carry
            micro_batch, index = inputs
            grads, loss = grad_fn(params, micro_batch, jax.random.fold_in(rng, index), scale)
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            # The running sum keeps the parameters' layout (sharded under FSDP) rather than being replicated.
            return (jax.lax.with_sharding_constraint(grad_sum, param_shardings), loss_sum + loss), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grad_sum, loss_sum), _ = jax.lax.scan(
            accumulate, (zeros, jnp.zeros([], jnp.float32)), (micro_batches, jnp.arange(count))
        )
        return jax.tree.map(lambda g: g / count, grad_sum), loss_sum / count

    return gradients


def _apply_gradients(
    context: TrainContext,
    tx: optax.GradientTransformation,
    precision: Precision,
    state: TrainState,
    grads: Any,
    finite: jax.Array,
) -> TrainState:
    """One optimizer update of ``state`` with unscaled ``grads`` (traced inside the train step).

    An offloaded optimizer state is brought to the device for the update and sent back after; an fp16 step
    whose gradients are not ``finite`` keeps the old parameters and moments and only lowers the loss scale.
    """
    opt_shardings = context.state_shardings.opt_state
    opt_state = state.opt_state
    if context.offload_optimizer:
        opt_state = jax.device_put(opt_state, jax.tree.map(lambda s: s.with_memory_kind("device"), opt_shardings))
    updates, new_opt_state = tx.update(grads, opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if state.loss_scale is not None:
        # An overflowing fp16 step changes nothing but the scale.
        keep_old = lambda new, old: jnp.where(finite, new, old)
        new_params = jax.tree.map(keep_old, new_params, state.params)
        new_opt_state = jax.tree.map(keep_old, new_opt_state, opt_state)
    if context.offload_optimizer:
        new_opt_state = jax.device_put(new_opt_state, opt_shardings)
    new_loss_scale = None if state.loss_scale is None else update_loss_scale(precision, state.loss_scale, finite)
    return state.replace(step=state.step + 1, params=new_params, opt_state=new_opt_state, loss_scale=new_loss_scale)


def make_eval_step(context: TrainContext, predict_fn: PredictFn) -> Callable[[TrainState, Batch], Any]:
    """Compile ``predict_fn(model, batch) -> pytree`` with the model in eval mode (no dropout), in the compute
    dtype. Outputs come back replicated, so every host can read all of them with ``np.asarray``."""
    compute_dtype = context.precision.dtype

    def predict(params: Any, batch: Batch) -> Any:
        model = nnx.merge(context.eval_graphdef, cast_floating(params, compute_dtype), context.rest)
        with activation_layout(context.mesh):
            return predict_fn(model, batch)

    jitted = jax.jit(
        predict,
        in_shardings=(context.state_shardings.params, context.batch_sharding),
        out_shardings=replicated(context.mesh),
    )

    def eval_step(state: TrainState, batch: Batch) -> Any:
        return jitted(state.params, context.shard_batch(batch))

    return eval_step


class _ShardingCall:
    """The jitted step, called with a host or already-sharded batch (host batches are placed on the mesh first,
    which on several hosts is required: each passes its local slice). ``lower`` exposes the compiled step."""

    def __init__(self, jitted: Any, context: TrainContext):
        self.jitted, self.context = jitted, context

    def __call__(self, state: TrainState, batch: Batch) -> Any:
        return self.jitted(state, self.context.shard_batch(batch))

    def lower(self, state: TrainState, batch: Batch) -> Any:
        return self.jitted.lower(state, self.context.shard_batch(batch))


def gather_to_host(tree: Any) -> Any:
    """Numpy copies of every leaf, gathering shards from other hosts when needed."""

    def fetch(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))

    return jax.tree.map(fetch, tree)


def model_from_state(context: TrainContext, state: TrainState) -> nnx.Module:
    """A standalone model (eval mode, float32, default device) holding the state's parameters."""
    params = jax.tree.map(jnp.asarray, gather_to_host(state.params))
    return nnx.merge(context.eval_graphdef, params, context.rest)

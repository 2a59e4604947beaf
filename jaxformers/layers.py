"""Building blocks shared by every model family.

Parameters are named after the PyTorch state-dict keys (``weight``, ``bias``) so that checkpoint conversion is a
path join plus a per-parameter layout transform. A parameter's ``torch_layout`` metadata says how its value maps to
the PyTorch tensor: ``"transpose"`` for nn.Linear weights (we keep ``[in, out]`` so the hot path is ``x @ w``),
absent when the layouts agree (embeddings, LayerNorm, GPT-2's Conv1D which is already ``[in, out]``).

Parameters also record how they were initialised (``init`` metadata: ``("normal", std)`` or
``("constant", value)``), so ``from_pretrained`` can build a model abstractly and materialise only the few
parameters a checkpoint lacks.

Dropout is functional: callers pass a PRNG key (or None for evaluation) instead of holding RNG state in modules, so
the same layer code works unrolled, under ``lax.scan`` and under ``jax.checkpoint``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .sharding_rules import constrain_features
from .attention import fused_attention, record_kernel

Array = jax.Array
DType = jnp.dtype | type | None


def normal_init(std: float) -> Callable:
    return jax.nn.initializers.normal(stddev=std)


M = TypeVar("M")


def build_abstract(make: Callable[[], M]) -> M:
    """``make()`` traced by ``nnx.eval_shape``: the module it builds holds parameters as shapes only
    (``jax.ShapeDtypeStruct``; no random numbers drawn, nothing compiled). ``from_pretrained`` builds models this
    way and then fills in the checkpoint's arrays; ``jaxformers plan`` lowers steps on such models.

    ``make`` builds the model the ordinary way (``lambda: Model(config, rngs=nnx.Rngs(0))``): the abstract model is
    the concrete one minus its values, so no module has a separate abstract code path.
    """
    return nnx.eval_shape(make)


def next_params_key(rngs: nnx.Rngs) -> jax.Array:
    """The key ``rngs.params()`` returns (the stream's key folded with its count; the count then goes up by one),
    with the count written back through ``set_value``: ``rngs.params()`` writes ``count[...]``, and under
    ``nnx.eval_shape`` (every ``from_pretrained``) that indexed write makes JAX format a tracer's error message on
    each draw, about 8 ms apiece, most of an abstract build."""
    stream = rngs.params
    stream.count._check_can_update()  # as rngs.params() does: no write into an Rngs from an enclosing trace
    count = stream.count.get_value()
    stream.count.set_value(count + 1)
    return jax.random.fold_in(stream.key.get_value(), count)


def new_param(shape: tuple[int, ...], dtype: DType, init: tuple[str, float], rngs: nnx.Rngs | None = None, *,
              axes: Sequence[str | None], **metadata: Any) -> nnx.Param:
    """A parameter initialised by ``init`` = ``("normal", std)`` | ``("uniform", limit)`` | ``("constant", value)``,
    which is also recorded as metadata so a missing parameter can be materialised later without the module.

    ``axes`` names each dimension logically (``("embed", "heads")``...); ``jaxformers.sharding_rules`` maps the
    names onto the device mesh. They are stored as nnx's ``out_sharding`` metadata (so ``nnx.get_partition_spec``
    shows them) with eager sharding off: the layout is applied by the train state, not at construction.
    """
    axes = tuple(axes)
    if len(axes) != len(shape):
        raise ValueError(f"new_param: {len(axes)} logical axes {axes} for a parameter of shape {tuple(shape)}")
    kind, scale = init
    if kind == "normal":
        value = normal_init(scale)(next_params_key(rngs), shape, dtype)
    elif kind == "uniform":
        value = jax.random.uniform(next_params_key(rngs), shape, dtype, -scale, scale)
    else:
        value = jnp.full(shape, scale, dtype)
    return nnx.Param(value, init=init, out_sharding=axes, eager_sharding=False, **metadata)


def stack_modules(modules: Sequence[nnx.Module]) -> nnx.Module:
    """Identical modules -> one module whose parameters have a leading ``[len(modules)]`` axis (for lax.scan)."""

    def stack(*leaves):
        if isinstance(leaves[0], jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((len(leaves), *leaves[0].shape), leaves[0].dtype)
        return jnp.stack(leaves)

    graphdef, *_ = nnx.split(modules[0])
    stacked = nnx.merge(graphdef, jax.tree.map(stack, *(nnx.state(module) for module in modules)))
    for _, param in nnx.to_flat_state(nnx.state(stacked, nnx.Param)):
        axes = param.get_metadata("out_sharding", None)
        if axes is not None:  # the new leading dimension is the layer index
            param.set_metadata("out_sharding", ("layers", *axes))
    return stacked


# ------------------------------------------------------------------------------------------------- the layer stack

# jax.checkpoint policies by name: what the backward pass may keep from the forward pass (the rest is recomputed).
REMAT_POLICIES: dict[str, Callable[..., bool]] = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,  # only each layer's inputs: least memory
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # matmul outputs kept: recompute only elementwise ops
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,  # no recomputation (for comparisons)
}

# body(layer, carry, inputs, index) -> (carry, outputs): one layer's step (see run_stack).
LayerBody = Callable[[nnx.Module, Any, Any, Any], tuple[Any, Any]]


def remat_option(config: Any) -> str | None:
    """A config's runtime switches as run_stack's ``remat``: None, or the policy name (``remat_policy``)."""
    if not getattr(config, "remat", False):
        return None
    return getattr(config, "remat_policy", "nothing_saveable")


def build_stack(make_layer: Callable[[int], nnx.Module], num_layers: int, *, scan: bool) -> nnx.Module:
    """``make_layer(0) .. make_layer(num_layers - 1)`` as one layer stack for :func:`run_stack`.

    Unrolled: an ``nnx.List`` (parameters ``<stack>.<index>.<name>``). With ``scan``: one module whose parameters
    have a leading ``[num_layers]`` axis named ``layers`` (:func:`stack_modules`), run by ``lax.scan`` so the
    compile time does not grow with depth; the layers must then all have the same shapes.
    """
    if num_layers < 1:
        raise ValueError(f"a layer stack needs at least one layer, got num_layers={num_layers}")
    layers = [make_layer(index) for index in range(num_layers)]
    return stack_modules(layers) if scan else nnx.List(layers)


def run_stack(stack: nnx.Module, body: LayerBody, carry: Any, per_layer: Any = None, *, scan: bool,
              remat: str | None = None, stack_outputs: bool = True) -> tuple[Any, Any]:
    """Run ``body(layer, carry, inputs, index) -> (carry, outputs)`` through a :func:`build_stack` stack in order.

    carry: what flows from layer to layer (the hidden states ``[batch, seq, hidden]``, decoding caches...).
    per_layer: a pytree whose leaves have a leading ``[num_layers]`` axis (head masks ``[layers, heads]``, past
      keys/values, memories; None for an absent input); layer ``i`` receives slice ``i`` as ``inputs``.
    index: the layer's position, a Python int when unrolled and an int32 scalar under ``scan``.
    scan: the stack was built with ``scan=True``. remat: None, or a :data:`REMAT_POLICIES` name: each layer then
      runs under ``jax.checkpoint`` with that policy (scanned or unrolled).
    Returns ``(carry, outputs)``: each leaf of the per-layer ``outputs`` stacked on a leading ``[num_layers]``
    axis, or with ``stack_outputs=False`` a list of per-layer outputs (for outputs whose shapes differ by layer).
    """
    if remat is not None and remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; expected one of {sorted(REMAT_POLICIES)}")
    policy = None if remat is None else REMAT_POLICIES[remat]
    if scan:
        carry, outputs = _scan_stack(stack, body, carry, per_layer, policy, remat is not None)
        if not stack_outputs:
            depth = jax.tree.leaves(nnx.state(stack))[0].shape[0]
            outputs = [jax.tree.map(lambda leaf, i=i: leaf[i], outputs) for i in range(depth)]
        return carry, outputs
    outputs = []
    for index, layer in enumerate(stack):
        inputs = jax.tree.map(lambda leaf, i=index: leaf[i], per_layer)
        if remat is None:  # the module itself runs, so it may record state (BERT's keep_multihead_output)
            carry, out = body(layer, carry, inputs, index)
        else:
            carry, out = _checkpointed(body, layer, index, policy)(nnx.state(layer), carry, inputs)
        outputs.append(out)
    if stack_outputs:
        outputs = jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)
    return carry, outputs


def _checkpointed(body: LayerBody, layer: nnx.Module, index: int, policy: Callable | None) -> Callable:
    """``(layer_state, carry, inputs) -> body(...)`` under jax.checkpoint: only what ``policy`` saves is kept.
    prevent_cse stops XLA from merging the recomputation back into the forward pass (unneeded under scan)."""
    graphdef = nnx.graphdef(layer)

    def run(layer_state, carry, inputs):
        return body(nnx.merge(graphdef, layer_state), carry, inputs, index)

    return jax.checkpoint(run, policy=policy, prevent_cse=True)


def _scan_stack(stack: nnx.Module, body: LayerBody, carry: Any, per_layer: Any, policy: Callable | None,
                remat: bool) -> tuple[Any, Any]:
    """One ``lax.scan`` step per layer over the stacked state ``[num_layers, ...]`` and the per-layer inputs."""
    graphdef, stacked_state = nnx.split(stack)
    depth = jax.tree.leaves(stacked_state)[0].shape[0]

    def step(layer_state, carry, inputs, index):
        return body(nnx.merge(graphdef, layer_state), carry, inputs, index)

    if remat:
        step = jax.checkpoint(step, policy=policy, prevent_cse=False)

    def scan_body(carry, xs):
        layer_state, inputs, index = xs
        return step(layer_state, carry, inputs, index)

    return jax.lax.scan(scan_body, carry, (stacked_state, per_layer, jnp.arange(depth)))


class Linear(nnx.Module):
    """``y = x @ weight + bias`` with ``weight: [in, out]``.

    ``axes`` are the logical names of ``[in, out]`` (``("embed", "heads")`` for a column-split Q projection,
    ``("heads", "embed")`` for the row-split output); the bias takes the output's. ``torch_layout="transpose"``
    marks an nn.Linear (PyTorch stores ``[out, in]``); ``None`` marks GPT's Conv1D, already ``[in, out]``.
    ``init`` overrides the default ``("normal", init_std)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rngs: nnx.Rngs,
        axes: tuple[str | None, str | None],
        init_std: float = 0.02,
        init: tuple[str, float] | None = None,
        use_bias: bool = True,
        torch_layout: str | None = "transpose",
        dtype: DType = None,
        param_dtype: DType = jnp.float32,
    ):
        metadata = {"torch_layout": torch_layout} if torch_layout else {}
        self.weight = new_param((in_features, out_features), param_dtype, init or ("normal", init_std), rngs,
                                axes=axes, **metadata)
        self.bias = new_param((out_features,), param_dtype, ("constant", 0.0), axes=axes[1:]) if use_bias else None
        self.out_axis = axes[1]
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        weight = self.weight[...]
        dtype = self.dtype or jnp.result_type(x, weight)
        y = jnp.dot(x.astype(dtype), weight.astype(dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        # Column-split outputs stay split over "model" for the row-split layer that consumes them.
        return constrain_features(y, self.out_axis)


class Embedding(nnx.Module):
    """Lookup table ``weight: [num_embeddings, features]``; also the tied output projection (``attend``).

    ``axes``: logical names of ``[rows, features]``: ``("vocab", "embed")`` for tokens (vocab-split over
    ``model``), ``("position", "embed")`` or ``("type_vocab", "embed")`` for the small tables.
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        rngs: nnx.Rngs,
        axes: tuple[str | None, str | None] = ("vocab", "embed"),
        init_std: float = 0.02,
        init: tuple[str, float] | None = None,
        dtype: DType = None,
        param_dtype: DType = jnp.float32,
    ):
        self.weight = new_param((num_embeddings, features), param_dtype, init or ("normal", init_std), rngs,
                                axes=axes)
        self.row_axis = axes[0]
        self.dtype = dtype

    def __call__(self, ids: Array) -> Array:
        check_ids_in_range(ids, self.weight.shape[0], "token id")
        table = self.weight[...]
        if self.dtype is not None:
            table = table.astype(self.dtype)
        # Under jit the range cannot be checked; an out-of-range id yields NaN rather than a clamped row.
        return take_rows(table, ids)

    def attend(self, x: Array) -> Array:
        """Logits against every row: ``x @ weight.T`` (the tied LM decoder), split over rows like the table."""
        table = self.weight[...]
        dtype = self.dtype or jnp.result_type(x, table)
        return constrain_features(jnp.dot(x.astype(dtype), table.astype(dtype).T), self.row_axis)


class LayerNorm(nnx.Module):
    """LayerNorm with statistics in float32 whatever the compute dtype (bf16 variance is too coarse)."""

    def __init__(self, features: int, *, eps: float = 1e-12, dtype: DType = None, param_dtype: DType = jnp.float32,
                 axis: str = "embed"):
        self.weight = new_param((features,), param_dtype, ("constant", 1.0), axes=(axis,))
        self.bias = new_param((features,), param_dtype, ("constant", 0.0), axes=(axis,))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        out_dtype = self.dtype or x.dtype
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        centered = x32 - mean
        variance = jnp.mean(jnp.square(centered), -1, keepdims=True)
        normed = centered * jax.lax.rsqrt(variance + self.eps)
        return (normed * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(out_dtype)


class ModuleFactory:
    """Construction-time settings shared by a model's submodules: config, RNG, dtypes, initializer, norm size and
    activation. The one parameter factory of every model family (each model class's ``_new_factory`` returns one).

    Every parameter of every model is made here (or by the layers it builds), so each one records its PyTorch
    layout, its initializer and its logical axis names. ``init`` is the default initializer of weights
    (``("normal", init_std)`` unless given); ``activation`` the family's feed-forward activation (an
    :data:`ACTIVATIONS` name or a function; None where the family has no choice). Constructors keep it in a local
    variable and pass it down, never on a module, so no RNG state stays in the graph.
    """

    def __init__(self, config: Any, rngs: nnx.Rngs, dtype: DType, param_dtype: DType, *, features: int,
                 layer_norm_eps: float, init_std: float, init: tuple[str, float] | None = None,
                 activation: str | Callable[[Array], Array] | None = None):
        self.config, self.rngs, self.dtype, self.param_dtype = config, rngs, dtype, param_dtype
        self.features, self.layer_norm_eps, self.init_std = features, layer_norm_eps, init_std
        self.init = init or ("normal", init_std)
        self.activation = activation

    def activation_fn(self) -> Callable[[Array], Array]:
        """The feed-forward activation as a function (an error if the factory was made without one)."""
        if self.activation is None:
            raise ValueError(f"this {type(self.config).__name__} factory was made without an activation")
        return activation(self.activation)

    def linear(self, in_features: int, out_features: int, *, axes: tuple[str | None, str | None],
               torch_layout: str | None = "transpose", use_bias: bool = True) -> Linear:
        return Linear(in_features, out_features, rngs=self.rngs, axes=axes, init=self.init, use_bias=use_bias,
                      torch_layout=torch_layout, dtype=self.dtype, param_dtype=self.param_dtype)

    def conv1d(self, in_features: int, out_features: int, *, axes: tuple[str | None, str | None]) -> Linear:
        """GPT's ``Conv1D``: PyTorch stores its weight ``[in, out]`` as we do, so no transpose at load or run time."""
        return self.linear(in_features, out_features, axes=axes, torch_layout=None)

    def embedding(self, rows: int, *, axes: tuple[str | None, str | None] = ("vocab", "embed"),
                  features: int | None = None) -> Embedding:
        return Embedding(rows, features or self.features, rngs=self.rngs, axes=axes, init=self.init,
                         dtype=self.dtype, param_dtype=self.param_dtype)

    def layer_norm(self) -> LayerNorm:
        return LayerNorm(self.features, eps=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)

    def param(self, shape: tuple[int, ...], *, axes: Sequence[str | None], init: tuple[str, float] | None = None,
              **metadata: Any) -> nnx.Param:
        """A bare parameter (biases, projections, relative-position biases): the default weight initializer
        unless ``init`` is given (``("constant", 0.0)`` for a bias)."""
        return new_param(shape, self.param_dtype, init or self.init, self.rngs, axes=axes, **metadata)


def gelu_erf(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: Array) -> Array:
    # OpenAI GPT / GPT-2 use the tanh approximation.
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _laplace(x: Array) -> Array:
    # The Laplace-CDF gate of MEGA (Ma et al., 2022): mu = sqrt(1/2), sigma = sqrt(1/(4 pi)).
    return 0.5 * (1.0 + jax.lax.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0))))


# Names as Hugging Face configs spell them (hidden_act, activation_function), every parameter-free one; the four
# tanh spellings are one function. prelu and xielu have learned parameters and are not here (so refused).
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu_erf,
    "gelu_python": gelu_erf,
    "gelu_10": lambda x: jnp.clip(gelu_erf(x), -10.0, 10.0),
    "gelu_new": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_accurate": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_python_tanh": gelu_tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "relu6": jax.nn.relu6,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "hardswish": jax.nn.hard_swish,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "sqrtsoftplus": lambda x: jnp.sqrt(jax.nn.softplus(x)),
    "laplace": _laplace,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "linear": lambda x: x,
}


def activation(name: str | Callable) -> Callable[[Array], Array]:
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Inverted dropout; identity when ``rng`` is None (evaluation) or ``rate == 0``.

    The mask is drawn per element from the element's coordinates (:func:`positional_keep_mask`), so padding a
    batch to another sequence length leaves the mask of every real token unchanged: length bucketing trains the
    same weights as padding to the maximum length.
    """
    if rng is None or rate == 0.0:
        return x
    keep = positional_keep_mask(rng, x.shape, 1.0 - rate)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


_COORD_BITS = 16  # the last two axes (sequence, features or query, key) each up to 2**16 long


def positional_keep_mask(rng: Array, shape: tuple[int, ...], keep_prob: float) -> Array:
    """Bernoulli(keep_prob) mask whose value at each element depends only on ``rng`` and that element's
    coordinates, not on ``shape``: the last two coordinates (where the sequence axis always is: ``[batch, seq,
    hidden]``, ``[batch, heads, q, kv]``) are packed into one 32-bit counter word and the leading ones (batch,
    heads, whose sizes do not change with padding) into the other, and the pair is hashed with threefry.
    Falls back to ``jax.random.bernoulli`` for axes longer than 2**16."""
    if len(shape) < 2:
        return positional_keep_mask(rng, (1, *shape), keep_prob).reshape(shape)
    if shape[-1] > 1 << _COORD_BITS or shape[-2] > 1 << _COORD_BITS:
        return jax.random.bernoulli(rng, keep_prob, shape)
    from jax.extend.random import threefry_2x32

    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    rows = jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 2)
    cols = jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 1)
    low = (rows << _COORD_BITS) | cols
    lead = shape[:-2]
    high = jnp.broadcast_to(jnp.arange(int(np.prod(lead)), dtype=jnp.uint32).reshape(*lead, 1, 1), shape)
    # threefry_2x32 hashes pairs (first half, second half) of its counter: here (high[i], low[i]) for element i.
    bits = threefry_2x32(rng, jnp.concatenate([high.ravel(), low.ravel()]))[: low.size]
    threshold = min(int(round(keep_prob * 2.0**32)), 2**32 - 1)
    return (bits < jnp.uint32(threshold)).reshape(shape)


def fold_rng(rng: Array | None, *indices: int) -> Array | None:
    """A distinct key per call site (layer, sub-layer); None stays None so evaluation needs no keys."""
    if rng is None:
        return None
    for index in indices:
        rng = jax.random.fold_in(rng, index)
    return rng


def split_heads(x: Array, num_heads: int) -> Array:
    # [batch, seq, hidden] -> [batch, seq, heads, head_dim]
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def merge_heads(x: Array) -> Array:
    # [batch, seq, heads, head_dim] -> [batch, seq, hidden]
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    bias: Array | None = None,
    head_mask: Array | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    return_probs: bool = False,
) -> tuple[Array, Array | None]:
    """Scaled dot-product attention over ``[batch, seq, heads, head_dim]`` inputs.

    bias: additive logits bias broadcastable to ``[batch, heads, q_len, kv_len]`` (padding/causal masks).
    head_mask: ``[heads]`` multipliers applied to the attention probabilities (1 keeps a head, 0 removes it).
    Returns ``(context [batch, q_len, heads, head_dim], probs [batch, heads, q_len, kv_len] or None)``.

    Without dropout or returned probabilities this calls the platform's fused kernel
    (``attention.fused_attention``). A head mask scales whole heads, so it commutes with the value product and
    is applied to the output.
    """
    use_dropout = dropout_rng is not None and dropout_rate > 0.0
    per_head = None if head_mask is None else head_mask.astype(query.dtype)[:, None]  # [heads, 1]
    # XLA:CPU has no fp16 kernel for the fused op; the explicit path below runs there.
    fused_unsupported = query.dtype == jnp.float16 and jax.default_backend() == "cpu"
    if not (use_dropout or return_probs or fused_unsupported):
        # The platform's fused kernel (Pallas flash on TPU, cuDNN on GPU, XLA elsewhere): see jaxformers/attention.py.
        context = fused_attention(query, key, value, bias)
        if per_head is not None:
            context = context * per_head
        return context, None
    record_kernel("xla-softmax (attention dropout)" if use_dropout else "xla-softmax (attention probabilities)")

    scale = 1.0 / math.sqrt(query.shape[-1])
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1).astype(query.dtype)
    probs = dropout(probs, dropout_rate, dropout_rng if use_dropout else None)
    if per_head is not None:
        probs = probs * per_head[None, :, :, None]
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, value)
    return context, (probs if return_probs else None)


def padding_bias(attention_mask: Array, dtype=jnp.float32) -> Array:
    """``[batch, seq]`` 1/0 mask -> additive ``[batch, 1, 1, seq]`` bias of 0 / -10000 (the reference's value)."""
    mask = attention_mask.astype(dtype)[:, None, None, :]
    return (1.0 - mask) * -10000.0


def normalize_head_mask(head_mask: Array | None, num_layers: int, num_heads: int) -> Array | None:
    """``[heads]`` or ``[layers, heads]`` -> ``[layers, heads]`` float mask (None passes through)."""
    if head_mask is None:
        return None
    head_mask = jnp.asarray(head_mask)
    if head_mask.ndim == 1:
        head_mask = jnp.broadcast_to(head_mask[None, :], (num_layers, head_mask.shape[0]))
    if head_mask.shape != (num_layers, num_heads):
        raise ValueError(
            f"head_mask has shape {tuple(head_mask.shape)}; expected [{num_heads}] or [{num_layers}, {num_heads}]"
        )
    return head_mask.astype(jnp.float32)


def cross_entropy(logits: Array, labels: Array, ignore_index: int | None = -100) -> Array:
    """Mean negative log-likelihood over labels != ignore_index (NaN when none is left, like torch)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = labels.astype(jnp.int32)
    valid = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    safe_labels = jnp.where(valid, labels, 0)
    picked = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)


def take_rows(table: Array, ids: Array) -> Array:
    """``table[ids]`` (``[*ids.shape, features]``) with NaN rows for ids outside ``[0, rows)``, negative included.

    Under jit the range cannot be checked (eagerly, check_ids_in_range raises first). ``jnp.take`` alone would
    read a negative id from the end of the table, as numpy indexing does: negatives are sent past the end.
    """
    ids = jnp.asarray(ids)
    ids = jnp.where(ids < 0, table.shape[0], ids)
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def check_ids_in_range(ids: Array, size: int, what: str) -> None:
    """Raise on ids outside [0, size) when the values are known (outside jit); traced values pass through."""
    if isinstance(ids, jax.core.Tracer):
        return
    values = np.asarray(ids)
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    if low < 0 or high >= size:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(f"{what} {bad} is out of range: the table has {size} rows (valid ids 0..{size - 1})")


def causal_bias(query_length: int, key_length: int, masked_value: float = -1e4, dtype=jnp.float32) -> Array:
    """Additive causal bias ``[1, 1, query_length, key_length]`` (0 where allowed, ``masked_value`` elsewhere).

    The queries are the last ``query_length`` of ``key_length`` positions (earlier keys come from a cache), so
    query ``i`` sees keys ``0 .. key_length - query_length + i``.
    """
    offset = key_length - query_length
    allowed = jnp.arange(key_length)[None, :] <= (jnp.arange(query_length)[:, None] + offset)
    return jnp.where(allowed, 0.0, masked_value).astype(dtype)[None, None]

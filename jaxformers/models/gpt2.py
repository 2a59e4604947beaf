"""OpenAI GPT-2 (config, base model, LM head, double heads) and the transformer blocks shared with OpenAI GPT.

Attribute names follow the PyTorch state dict (``transformer.h.0.attn.c_attn.weight``). GPT's ``Conv1D`` already
stores its weight as ``[in, out]``, which is our ``Linear`` layout, so those weights load without a transpose
(``torch_layout=None``) and the forward pass is a plain ``x @ w``.

Inputs are ``[d_1, ..., d_n, seq]`` (flattened to ``[batch, seq]`` inside, as in the reference); ``presents``
keep the reference layout, one ``[2, batch, heads, seq, head_dim]`` array (keys, values) per layer, with the
leading dimensions flattened into ``batch``. Dropout is off until ``model.train()``; training calls then need
``dropout_rng=jax.random.key(...)``.

Static KV cache for compiled decoding (``GPT2LMHeadModel``)::

    cache = model.init_cache(batch_size, max_length, dtype=None)
        -> GPT2Cache(key, value, index): key/value ``[layers, batch, max_length, heads, head_dim]`` zeros,
           index an int32 scalar, the number of slots already written.
    logits, cache = model.decode_step(input_ids, cache, *, attention_mask, position_ids)
        input_ids ``[batch, n]`` (the prompt block, or one new token), attention_mask ``[batch, max_length]``
        (1 for slots holding real tokens, 0 for padding; unwritten slots may hold either), position_ids
        ``[batch, n]``. Writes the new keys/values to slots ``[index, index + n)``, lets the query in slot ``s``
        attend to unmasked slots ``<= s``, and returns float32 ``logits [batch, n, vocab]`` and the cache with
        ``index + n``. Shapes are static, so the step compiles once per ``n`` under ``jax.jit``; writing past
        ``max_length`` is an error outside jit (under jit the write would be clamped, so size the cache).
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..configuration import PretrainedConfig, configclass, spec
from ..layers import (
    ACTIVATIONS,
    Array,
    Embedding,
    Linear,
    ModuleFactory,
    activation,
    attention,
    build_stack,
    causal_bias,
    check_ids_in_range,
    cross_entropy,
    dropout,
    fold_rng,
    merge_heads,
    normalize_head_mask,
    remat_option,
    run_stack,
    split_heads,
)
from ..modeling_utils import PreTrainedModel

# The 0.6.x S3 archives are gone; the same checkpoints live on the model hub under the shortcut names.
PRETRAINED_MODEL_ARCHIVE_MAP = {"gpt2": "gpt2", "gpt2-medium": "gpt2-medium"}

# GPT-2 fills masked attention logits with -1e4 (OpenAI GPT with -1e9); after the softmax both are exact zeros.
GPT2_MASKED_LOGIT = -1e4


# Hugging Face's names for GPT fields, shared by GPT-2 and OpenAI GPT. OpenAI's hparams.json has only n_ctx,
# which is also the number of positions; today's HF files have only n_positions, which is also the context.
GPT_ALIASES = {
    "hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
    "max_position_embeddings": "n_positions", "n_ctx": "n_positions", "n_positions": "n_ctx",
}

# HF's GPT-2/OpenAI GPT double-heads summary settings: the values that equal the 0.6.x multiple-choice head.
GPT_SUMMARY_FIELDS = {
    "summary_type": lambda value: value == "cls_index",
    "summary_use_proj": lambda value: value is True,
    "summary_activation": lambda value: value is None,
    "summary_proj_to_labels": lambda value: value is True,
    "summary_first_dropout": lambda value: value == 0.1,
}


@configclass
class GPT2Config(PretrainedConfig):
    """GPT-2 hyper-parameters; the first argument is the vocabulary size or a JSON config path (0.6.x style).

    Dropout rates are those of pytorch-pretrained-bert's master branch (0.6.2's GPT-2 had no dropout); they only
    act in training mode. ``n_vocab`` (OpenAI's ``hparams.json``) is read as ``vocab_size``; a file with
    ``n_ctx`` but no ``n_positions`` gets ``n_positions = n_ctx`` (by every constructor path).

    Hugging Face fields that change the math are implemented: ``activation_function``,
    ``scale_attn_weights`` (False: no 1/sqrt(head_dim)), ``scale_attn_by_inverse_layer_idx`` (layer ``i`` also
    divides by ``i + 1``) and ``reorder_and_upcast_attn`` (attention in float32; the same numbers in float32).
    """

    model_type = "gpt2"
    aliases = {"n_vocab": "vocab_size", **GPT_ALIASES}
    # n_inner: the MLP width; only HF's default (null, or 4 * n_embd spelled out) is implemented (see _check).
    math_fields = {"n_inner": lambda value: value is None or isinstance(value, int), **GPT_SUMMARY_FIELDS}

    vocab_size: int = spec(50257, minimum=1)
    n_positions: int = spec(1024, minimum=1)
    n_ctx: int = spec(1024, minimum=1)
    n_embd: int = spec(768, minimum=1)
    n_layer: int = spec(12, minimum=1)
    n_head: int = spec(12, minimum=1)
    resid_pdrop: float = spec(0.1, minimum=0.0, maximum=1.0)
    embd_pdrop: float = spec(0.1, minimum=0.0, maximum=1.0)
    attn_pdrop: float = spec(0.1, minimum=0.0, maximum=1.0)
    layer_norm_epsilon: float = spec(1e-5, above=0.0)
    initializer_range: float = spec(0.02, minimum=0.0)
    activation_function: str = spec("gelu_new", choices=tuple(ACTIVATIONS))
    scale_attn_weights: bool = spec(True)
    scale_attn_by_inverse_layer_idx: bool = spec(False)
    reorder_and_upcast_attn: bool = spec(False)

    def _check(self, source: str | None) -> None:
        self._require(self.n_embd % self.n_head == 0, "n_embd", f"not divisible by n_head={self.n_head}", source)
        n_inner = self.extra.get("n_inner")
        self._require(n_inner in (None, 4 * self.n_embd), "n_inner", f"changes the model's math in a way jaxformers "
                      f"does not implement (the MLP width is 4 * n_embd = {4 * self.n_embd})", source)


# ------------------------------------------------------------------------------------ blocks shared by GPT and GPT-2


class GPTOptions(ModuleFactory):
    """ModuleFactory plus GPT's Conv1D (PyTorch stores it ``[in, out]`` too: no transpose at load or run time)."""

    def __init__(self, config: PretrainedConfig, rngs: nnx.Rngs, dtype, param_dtype, activation_name: str):
        super().__init__(config, rngs, dtype, param_dtype, features=config.n_embd,
                         layer_norm_eps=config.layer_norm_epsilon, init_std=config.initializer_range)
        self.activation_name = activation_name

    def conv1d(self, in_features: int, out_features: int, *, axes: tuple[str, str]) -> Linear:
        return self.linear(in_features, out_features, axes=axes, torch_layout=None)


class GPTAttention(nnx.Module):
    """Causal self-attention with a fused ``c_attn`` projection (query, key, value) and ``c_proj`` output."""

    def __init__(self, options: GPTOptions):
        config = options.config
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.n_head = config.n_head
        # c_attn's fused [q | k | v] columns are split over "model" ("qkv"); c_proj is row-split ("heads").
        self.c_attn = options.conv1d(config.n_embd, 3 * config.n_embd, axes=("embed", "qkv"))
        self.c_proj = options.conv1d(config.n_embd, config.n_embd, axes=("heads", "embed"))
        self.attn_dropout_rate = config.attn_pdrop
        self.resid_dropout_rate = config.resid_pdrop
        # Hugging Face GPT-2 options (OpenAI GPT's config has none of them: its defaults are these).
        self.scale_attn_weights = bool(getattr(config, "scale_attn_weights", True))
        self.scale_by_inverse_layer = bool(getattr(config, "scale_attn_by_inverse_layer_idx", False))
        self.upcast = bool(getattr(config, "reorder_and_upcast_attn", False))

    def _attend(self, query: Array, key: Array, value: Array, layer: Array | int, **options: Any):
        """``attention`` with GPT-2's logit scale: ``attention`` divides by sqrt(head_dim); without
        ``scale_attn_weights`` that is undone, and ``scale_attn_by_inverse_layer_idx`` also divides by
        ``layer + 1`` (0-based). Scaling the query scales the logits the same way and leaves cached keys as they
        are. ``reorder_and_upcast_attn`` computes in float32 (the same numbers when the model is float32)."""
        dtype = query.dtype
        factor = 1.0 if self.scale_attn_weights else math.sqrt(query.shape[-1])
        if self.upcast:
            query, key, value = (x.astype(jnp.float32) for x in (query, key, value))
        if self.scale_by_inverse_layer:
            query = query * (factor / (jnp.asarray(layer, jnp.float32) + 1.0)).astype(query.dtype)
        elif factor != 1.0:
            query = query * jnp.asarray(factor, query.dtype)
        context, probs = attention(query, key, value, **options)
        return context.astype(dtype), (None if probs is None else probs.astype(dtype))

    def _project(self, hidden: Array) -> tuple[Array, Array, Array]:
        query, key, value = jnp.split(self.c_attn(hidden), 3, axis=-1)
        # each [batch, seq, heads, head_dim]
        return split_heads(query, self.n_head), split_heads(key, self.n_head), split_heads(value, self.n_head)

    def _output(self, context: Array, rng: Array | None) -> Array:
        return dropout(self.c_proj(merge_heads(context)), self.resid_dropout_rate, rng)

    def __call__(self, hidden: Array, *, bias: Array, head_mask: Array | None, rng: Array | None,
                 output_attentions: bool, layer_past: tuple[Array, Array] | None, layer: Array | int = 0):
        """Returns ``(output [batch, seq, hidden], (keys, values) [batch, kv_len, heads, head_dim], probs)``;
        ``layer`` is this block's 0-based index (a traced scalar under scan)."""
        query, key, value = self._project(hidden)
        if layer_past is not None:
            past_key, past_value = layer_past
            key = jnp.concatenate([past_key.astype(key.dtype), key], axis=1)
            value = jnp.concatenate([past_value.astype(value.dtype), value], axis=1)
        context, probs = self._attend(
            query, key, value, layer, bias=bias, head_mask=head_mask, dropout_rate=self.attn_dropout_rate,
            dropout_rng=fold_rng(rng, 0), return_probs=output_attentions,
        )
        return self._output(context, fold_rng(rng, 1)), (key, value), probs

    def decode(self, hidden: Array, key_cache: Array, value_cache: Array, layer: Array | int, index: Array,
               bias: Array):
        """Cached attention for one layer of the ``[layers, batch, max_length, heads, head_dim]`` caches: writes
        this block's keys/values at slots ``[index, index + n)`` of ``layer`` and attends over all slots."""
        query, key, value = self._project(hidden)
        start = (layer, 0, index, 0, 0)
        key_cache = jax.lax.dynamic_update_slice(key_cache, key[None].astype(key_cache.dtype), start)
        value_cache = jax.lax.dynamic_update_slice(value_cache, value[None].astype(value_cache.dtype), start)
        layer_keys = jax.lax.dynamic_index_in_dim(key_cache, layer, axis=0, keepdims=False)
        layer_values = jax.lax.dynamic_index_in_dim(value_cache, layer, axis=0, keepdims=False)
        context, _ = self._attend(query, layer_keys.astype(query.dtype), layer_values.astype(query.dtype), layer,
                                  bias=bias)
        return self._output(context, None), (key_cache, value_cache)


class GPTMLP(nnx.Module):
    def __init__(self, options: GPTOptions):
        n_embd = options.config.n_embd
        self.c_fc = options.conv1d(n_embd, 4 * n_embd, axes=("embed", "mlp"))  # column-split
        self.c_proj = options.conv1d(4 * n_embd, n_embd, axes=("mlp", "embed"))  # row-split
        self.act = activation(options.activation_name)
        self.dropout_rate = options.config.resid_pdrop

    def __call__(self, hidden: Array, rng: Array | None) -> Array:
        return dropout(self.c_proj(self.act(self.c_fc(hidden))), self.dropout_rate, rng)


class GPTBlock(nnx.Module):
    """One transformer block. GPT-2 normalises before each sub-layer (``pre_layer_norm``); OpenAI GPT after the
    residual sum. The parameter names (``ln_1``, ``attn``, ``ln_2``, ``mlp``) are the same in both."""

    def __init__(self, options: GPTOptions, pre_layer_norm: bool):
        self.ln_1 = options.layer_norm()
        self.attn = GPTAttention(options)
        self.ln_2 = options.layer_norm()
        self.mlp = GPTMLP(options)
        self.pre_layer_norm = pre_layer_norm

    def _residuals(self, hidden: Array, attend: Callable[[Array], tuple[Array, Any]], mlp_rng: Array | None):
        if self.pre_layer_norm:
            attended, extras = attend(self.ln_1(hidden))
            hidden = hidden + attended
            return hidden + self.mlp(self.ln_2(hidden), mlp_rng), extras
        attended, extras = attend(hidden)
        normed = self.ln_1(hidden + attended)
        return self.ln_2(normed + self.mlp(normed, mlp_rng)), extras

    def __call__(self, hidden: Array, *, bias: Array, head_mask: Array | None, rng: Array | None,
                 output_attentions: bool = False, layer_past: tuple[Array, Array] | None = None,
                 layer: Array | int = 0):
        """Returns ``(hidden [batch, seq, hidden], (keys, values), probs or None)``."""

        def attend(x):
            out, key_value, probs = self.attn(x, bias=bias, head_mask=head_mask, rng=fold_rng(rng, 0),
                                              output_attentions=output_attentions, layer_past=layer_past,
                                              layer=layer)
            return out, (key_value, probs)

        hidden, (key_value, probs) = self._residuals(hidden, attend, fold_rng(rng, 1))
        return hidden, key_value, probs

    def decode(self, hidden: Array, key_cache: Array, value_cache: Array, layer: Array | int, index: Array,
               bias: Array):
        return self._residuals(
            hidden, lambda x: self.attn.decode(x, key_cache, value_cache, layer, index, bias), None
        )


def build_blocks(options: GPTOptions, num_layers: int, pre_layer_norm: bool, scan: bool) -> nnx.Module:
    """``num_layers`` blocks as a layer stack (``layers.build_stack``: unrolled, or scanned with ``scan``)."""
    return build_stack(lambda _: GPTBlock(options, pre_layer_norm), num_layers, scan=scan)


def run_blocks(blocks: nnx.Module, *, scan: bool, remat: str | None, hidden: Array, bias: Array,
               head_mask: Array | None, rng: Array | None, past: tuple[Array, Array] | None,
               output_attentions: bool):
    """Run the block stack (``layers.run_stack``; ``remat``: None or a policy name).

    past: ``(keys, values)``, each ``[layers, batch, past_len, heads, head_dim]``, or None.
    Returns ``(hidden, keys, values, attentions)``: keys/values ``[layers, batch, kv_len, heads, head_dim]``,
    attentions a list of ``[batch, heads, seq, kv_len]`` (empty unless ``output_attentions``).
    """

    def body(block, hidden, inputs, index):
        layer_head_mask, layer_past = inputs
        hidden, key_value, probs = block(hidden, bias=bias, head_mask=layer_head_mask, rng=fold_rng(rng, index),
                                         output_attentions=output_attentions, layer_past=layer_past, layer=index)
        return hidden, (key_value, probs)

    hidden, ((keys, values), probs) = run_stack(blocks, body, hidden, (head_mask, past), scan=scan, remat=remat)
    return hidden, keys, values, (list(probs) if output_attentions else [])


def embed_tokens(tokens: Embedding, positions: Embedding, input_ids: Array, position_ids: Array | None,
                 token_type_ids: Array | None, past_length: int, rate: float, rng: Array | None) -> Array:
    """Token + position (+ token-type, looked up in the token table) embeddings of ``[batch, seq]`` ids."""
    seq_length = input_ids.shape[-1]
    max_positions = positions.weight.shape[0]
    if position_ids is None:
        if past_length + seq_length > max_positions:
            raise ValueError(
                f"{past_length} past + {seq_length} new tokens exceed n_positions={max_positions} "
                f"(the model has no position embedding beyond {max_positions - 1})"
            )
        position_ids = jnp.arange(past_length, past_length + seq_length)[None, :]
    else:
        position_ids = jnp.asarray(position_ids).reshape(-1, seq_length)
        check_ids_in_range(position_ids, max_positions, "position id")
    hidden = tokens(input_ids) + positions(position_ids)  # [batch, seq, hidden]
    if token_type_ids is not None:
        hidden = hidden + tokens(jnp.asarray(token_type_ids).reshape(-1, seq_length))
    return dropout(hidden, rate, rng)


def multiple_choice_hidden(hidden: Array, mc_token_ids: Array) -> Array:
    """``hidden [..., seq, H]`` at ``mc_token_ids [...]`` -> ``[..., H]``."""
    mc_token_ids = jnp.asarray(mc_token_ids)
    check_ids_in_range(mc_token_ids, hidden.shape[-2], "mc_token_ids value")
    index = mc_token_ids.astype(jnp.int32)[..., None, None]
    return jnp.take_along_axis(hidden, index, axis=-2)[..., 0, :]


class MultipleChoiceHead(nnx.Module):
    """``linear`` over the hidden state of each choice's classification token -> ``[batch, num_choices]``.

    Training dropout drops whole hidden features, the same ones for every choice of an example (TF's noise_shape,
    which the reference meant with ``Dropout2d``).
    """

    def __init__(self, options: GPTOptions):
        self.linear = options.linear(options.config.n_embd, 1, axes=("embed", "classes"))
        self.dropout_rate = options.config.resid_pdrop

    def __call__(self, hidden: Array, mc_token_ids: Array, rng: Array | None) -> Array:
        picked = multiple_choice_hidden(hidden, mc_token_ids)  # [batch, choices, hidden]
        return self.linear(choice_shared_dropout(picked, self.dropout_rate, rng))[..., 0]


def choice_shared_dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Dropout on ``[..., choices, hidden]`` whose mask is shared by all choices (identity without ``rng``)."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape[:-2] + (1, x.shape[-1]))
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def shifted_lm_loss(lm_logits: Array, lm_labels: Array) -> Array:
    """Tokens ``< n`` predict token ``n``: drop the last logit and the first label along the sequence axis."""
    lm_labels = jnp.asarray(lm_labels)
    return cross_entropy(lm_logits[..., :-1, :], lm_labels[..., 1:], ignore_index=-1)


def presents_from_keys_values(keys: Array, values: Array) -> list[Array]:
    """``[layers, batch, seq, heads, head_dim]`` keys and values -> per layer ``[2, batch, heads, seq, head_dim]``."""
    stacked = jnp.stack([keys, values], axis=1).transpose(0, 1, 2, 4, 3, 5)
    return list(stacked)


def past_to_keys_values(past: Sequence[Array], num_layers: int) -> tuple[Array, Array]:
    """Per-layer ``[2, batch, heads, past_len, head_dim]`` arrays -> keys, values ``[layers, batch, past_len,
    heads, head_dim]``."""
    if len(past) != num_layers:
        raise ValueError(f"past holds {len(past)} layers; the model has {num_layers}")
    stacked = jnp.stack([jnp.asarray(layer) for layer in past])  # [layers, 2, batch, heads, past, head_dim]
    if stacked.ndim != 6 or stacked.shape[1] != 2:
        raise ValueError(
            f"each past entry must be [2, batch, heads, past_len, head_dim] (a model's presents), "
            f"got {tuple(stacked.shape[1:])}"
        )
    stacked = stacked.transpose(0, 1, 2, 4, 3, 5)
    return stacked[:, 0], stacked[:, 1]


def reshape_attentions(attentions: list[Array], input_shape: tuple[int, ...]) -> list[Array]:
    """``[batch, heads, q, k]`` -> ``[d_1, ..., d_n, heads, q, k]`` for inputs ``[d_1, ..., d_n, seq]``."""
    return [probs.reshape(*input_shape[:-1], *probs.shape[1:]) for probs in attentions]


# ----------------------------------------------------------------------------------------------- shared base class


class GPTPreTrainedBase(PreTrainedModel):
    """Loading, dropout mode and the causal-mask buffers PyTorch keeps in GPT state dicts."""

    base_model_prefix = "transformer"
    # Original OpenAI names (.g/.b/.w) in early PyTorch dumps.
    legacy_key_renames = ((r"\.g$", ".weight"), (r"\.b$", ".bias"), (r"\.w$", ".weight"))
    # The causal mask buffer h.N.attn.bias (and later versions' masked_bias / position_ids) are not parameters.
    buffer_key_patterns = (r"(^|\.)attn\.(bias|masked_bias)$", r"(^|\.)position_ids$")
    pre_layer_norm: ClassVar[bool] = True

    def __init__(self, config: PretrainedConfig, *, options: ModuleFactory | None = None, rngs: nnx.Rngs | None = None,
                 seed: int = 0, dtype: Any = None, param_dtype: Any = jnp.float32):
        """``options``: the factory an enclosing constructor passes down; ``rngs`` (or ``seed``), ``dtype`` and
        ``param_dtype`` make a new one (see PreTrainedModel._factory)."""
        self._check_config(config)

    @classmethod
    def _new_factory(cls, config: PretrainedConfig, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> GPTOptions:
        return GPTOptions(config, rngs, dtype, param_dtype, cls._activation_name(config))

    @staticmethod
    def _activation_name(config: PretrainedConfig) -> str:
        return "gelu_tanh"

    def _transformer_prefix(self) -> str:
        return self._base_key_prefix()

    def stacked_layers(self) -> dict[str, int]:
        if not self.config.scan_layers:
            return {}
        return {self._transformer_prefix() + "h": self.config.n_layer}

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """PyTorch state dict including the ``h.N.attn.bias`` causal-mask buffers, so that the reference loads
        it with ``strict=True``."""
        out = super().torch_state_dict()
        n_ctx = self.config.n_ctx
        mask = np.tril(np.ones((n_ctx, n_ctx), np.float32)).reshape(1, 1, n_ctx, n_ctx)
        prefix = self._transformer_prefix()
        for index in range(self.config.n_layer):
            out[f"{prefix}h.{index}.attn.bias"] = mask
        return out


# -------------------------------------------------------------------------------------------------------- models


class GPT2Cache(NamedTuple):
    """Static-size decoding cache: key/value ``[layers, batch, max_length, heads, head_dim]``; ``index`` (int32
    scalar) counts the slots already written."""

    key: Array
    value: Array
    index: Array


class GPT2PreTrainedModel(GPTPreTrainedBase):
    config_class = GPT2Config
    pretrained_model_archive_map = PRETRAINED_MODEL_ARCHIVE_MAP
    legacy_config_names = ("hparams.json",)
    tf_checkpoint_rules = "gpt2-tf"  # jaxformers/conversion/tables.py
    pre_layer_norm = True

    @staticmethod
    def _activation_name(config: GPT2Config) -> str:
        return config.activation_function


class GPT2Model(GPT2PreTrainedModel):
    """Returns ``(hidden_states [d_1, ..., d_n, n_embd], presents)``, preceded by the per-layer attention
    probabilities ``[d_1, ..., d_n, heads, seq, past + seq]`` with ``output_attentions``."""

    is_base_model = True

    def __init__(self, config: GPT2Config, output_attentions: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, options=options)
        self.output_attentions = output_attentions
        self.wte = options.embedding(config.vocab_size, axes=("vocab", "embed"))
        self.wpe = options.embedding(config.n_positions, axes=("position", "embed"))
        self.h = build_blocks(options, config.n_layer, self.pre_layer_norm, bool(config.scan_layers))
        self.ln_f = options.layer_norm()

    def __call__(self, input_ids: Array, position_ids: Array | None = None, token_type_ids: Array | None = None,
                 past: Sequence[Array] | None = None, head_mask: Array | None = None, *,
                 dropout_rng: Array | None = None):
        config = self.config
        input_ids = jnp.asarray(input_ids)
        input_shape = input_ids.shape
        flat_ids = input_ids.reshape(-1, input_shape[-1])  # [batch, seq]
        rng = self._dropout_key(dropout_rng)
        past_keys_values = None if past is None else past_to_keys_values(past, config.n_layer)
        past_length = 0 if past is None else past_keys_values[0].shape[2]
        hidden = embed_tokens(self.wte, self.wpe, flat_ids, position_ids, token_type_ids, past_length,
                              config.embd_pdrop, fold_rng(rng, 0))
        seq_length = input_shape[-1]
        bias = causal_bias(seq_length, past_length + seq_length, GPT2_MASKED_LOGIT)
        hidden, keys, values, attentions = run_blocks(
            self.h, scan=bool(config.scan_layers), remat=remat_option(config),
            hidden=hidden, bias=bias, head_mask=normalize_head_mask(head_mask, config.n_layer, config.n_head),
            rng=fold_rng(rng, 1), past=past_keys_values, output_attentions=self.output_attentions,
        )
        hidden = self.ln_f(hidden).reshape(*input_shape, -1)
        presents = presents_from_keys_values(keys, values)
        if self.output_attentions:
            return reshape_attentions(attentions, input_shape), hidden, presents
        return hidden, presents

    # ------------------------------------------------------------------------------------------- static KV cache
    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> GPT2Cache:
        config = self.config
        dtype = dtype or self.wte.dtype or jnp.float32
        shape = (config.n_layer, batch_size, max_length, config.n_head, config.n_embd // config.n_head)
        return GPT2Cache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))

    def decode_step(self, input_ids: Array, cache: GPT2Cache, *, attention_mask: Array | None = None,
                    position_ids: Array | None = None) -> tuple[Array, GPT2Cache]:
        """Final hidden states ``[batch, n, n_embd]`` of ``n`` new tokens and the updated cache (see the module
        docstring). Without ``attention_mask`` every slot counts as real; without ``position_ids`` the tokens
        take positions ``index .. index + n - 1``."""
        input_ids = jnp.asarray(input_ids)
        batch, new_tokens = input_ids.shape
        max_length = cache.key.shape[2]
        index = jnp.asarray(cache.index, jnp.int32)
        if not isinstance(index, jax.core.Tracer) and int(index) + new_tokens > max_length:
            raise ValueError(
                f"the cache holds {max_length} slots: {int(index)} used + {new_tokens} new tokens do not fit"
            )
        if attention_mask is None:
            attention_mask = jnp.ones((batch, max_length), jnp.int32)
        if position_ids is None:
            position_ids = jnp.broadcast_to(index + jnp.arange(new_tokens), (batch, new_tokens))
        position_ids = jnp.asarray(position_ids)
        check_ids_in_range(position_ids, self.wpe.weight.shape[0], "position id")
        hidden = self.wte(input_ids) + self.wpe(position_ids)  # [batch, n, hidden]

        # Query j (slot index + j) sees the unmasked slots up to its own.
        slots = jnp.arange(max_length)
        query_slots = index + jnp.arange(new_tokens)
        causal = slots[None, :] <= query_slots[:, None]  # [n, max_length]
        allowed = causal[None] & (jnp.asarray(attention_mask)[:, None, :] != 0)  # [batch, n, max_length]
        bias = jnp.where(allowed, 0.0, GPT2_MASKED_LOGIT)[:, None]  # [batch, 1, n, max_length]

        def body(block, carry, _, layer):
            hidden, key_cache, value_cache = carry  # caches [layers, batch, max_length, heads, head_dim]
            hidden, (key_cache, value_cache) = block.decode(hidden, key_cache, value_cache, layer, index, bias)
            return (hidden, key_cache, value_cache), None

        # The whole caches travel in the carry, so each layer updates its slice in place.
        (hidden, key_cache, value_cache), _ = run_stack(self.h, body, (hidden, cache.key, cache.value),
                                                        scan=bool(self.config.scan_layers))
        return self.ln_f(hidden), GPT2Cache(key_cache, value_cache, index + new_tokens)


class _GPT2WithTransformer(GPT2PreTrainedModel):
    tied_torch_keys = {"lm_head.decoder.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config, output_attentions: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, options=options)
        self.output_attentions = output_attentions
        self.transformer = GPT2Model(config, output_attentions, options=options)

    def _transform(self, input_ids, position_ids, token_type_ids, past, head_mask, dropout_rng):
        rng = self._dropout_key(dropout_rng)
        outputs = self.transformer(input_ids, position_ids, token_type_ids, past, head_mask,
                                   dropout_rng=fold_rng(rng, 0))
        attentions = outputs[0] if self.output_attentions else None
        hidden, presents = outputs[-2], outputs[-1]
        return attentions, hidden, presents, fold_rng(rng, 1)

    def _lm_logits(self, hidden: Array) -> Array:
        return self.transformer.wte.attend(hidden)  # tied decoder: [..., seq, vocab]

    def _outputs(self, attentions, *outputs):
        return (attentions, *outputs) if self.output_attentions else outputs


class GPT2LMHeadModel(_GPT2WithTransformer):
    """``(lm_logits [d_1, ..., d_n, vocab], presents)`` (attentions first with ``output_attentions``), or with
    ``lm_labels`` the next-token loss (labels -1 ignored; logits of position ``t`` are scored on label ``t + 1``).
    Also the static-cache decoding interface ``init_cache`` / ``decode_step`` (module docstring)."""

    def __init__(self, config: GPT2Config, output_attentions: bool = False, **kwargs: Any):
        super().__init__(config, output_attentions, **kwargs)

    def __call__(self, input_ids, position_ids=None, token_type_ids=None, lm_labels=None, past=None,
                 head_mask=None, *, dropout_rng=None):
        attentions, hidden, presents, _ = self._transform(input_ids, position_ids, token_type_ids, past,
                                                          head_mask, dropout_rng)
        lm_logits = self._lm_logits(hidden)
        if lm_labels is not None:
            return shifted_lm_loss(lm_logits, lm_labels)
        return self._outputs(attentions, lm_logits, presents)

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> GPT2Cache:
        return self.transformer.init_cache(batch_size, max_length, dtype)

    def decode_step(self, input_ids: Array, cache: GPT2Cache, *, attention_mask: Array | None = None,
                    position_ids: Array | None = None) -> tuple[Array, GPT2Cache]:
        hidden, cache = self.transformer.decode_step(input_ids, cache, attention_mask=attention_mask,
                                                     position_ids=position_ids)
        return self._lm_logits(hidden).astype(jnp.float32), cache


class GPT2DoubleHeadsModel(_GPT2WithTransformer):
    """Inputs ``[batch, num_choices, seq]`` and ``mc_token_ids [batch, num_choices]`` (the classification token
    of each choice). Returns ``(lm_logits, mc_logits [batch, num_choices], presents)`` (attentions first with
    ``output_attentions``), or with labels the list of losses ``[lm_loss, mc_loss]`` for the labels given.

    Unlike 0.6.2, whose LM loss shifted along the choices axis, the LM loss shifts along the sequence as
    documented. ``multiple_choice_token_ids`` / ``multiple_choice_labels`` are accepted as keyword spellings of
    ``mc_token_ids`` / ``mc_labels``.
    """

    def __init__(self, config: GPT2Config, output_attentions: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, output_attentions, options=options)
        self.multiple_choice_head = MultipleChoiceHead(options)

    def __call__(self, input_ids, mc_token_ids=None, lm_labels=None, mc_labels=None, token_type_ids=None,
                 position_ids=None, past=None, head_mask=None, *, multiple_choice_token_ids=None,
                 multiple_choice_labels=None, dropout_rng=None):
        mc_token_ids = one_of(mc_token_ids, multiple_choice_token_ids, "mc_token_ids", "multiple_choice_token_ids")
        mc_labels = one_of(mc_labels, multiple_choice_labels, "mc_labels", "multiple_choice_labels")
        if mc_token_ids is None:
            raise ValueError("GPT2DoubleHeadsModel needs mc_token_ids (the classification token of each choice)")
        attentions, hidden, presents, rng = self._transform(input_ids, position_ids, token_type_ids, past,
                                                            head_mask, dropout_rng)
        lm_logits = self._lm_logits(hidden)
        mc_logits = self.multiple_choice_head(hidden, mc_token_ids, rng)
        losses = double_heads_losses(lm_logits, mc_logits, lm_labels, mc_labels)
        if losses:
            return losses
        return self._outputs(attentions, lm_logits, mc_logits, presents)


def one_of(value: Any, alias: Any, name: str, alias_name: str) -> Any:
    """The argument given under ``name`` or under its keyword alias ``alias_name``; both at once is an error."""
    if value is not None and alias is not None:
        raise ValueError(f"pass either {name} or {alias_name}, not both")
    return alias if value is None else value


def double_heads_losses(lm_logits: Array, mc_logits: Array, lm_labels, mc_labels) -> list[Array]:
    losses = []
    if lm_labels is not None:
        losses.append(shifted_lm_loss(lm_logits, lm_labels))
    if mc_labels is not None:
        losses.append(cross_entropy(mc_logits, jnp.asarray(mc_labels)))
    return losses


__all__: Sequence[str] = (
    "GPT2Config",
    "GPT2Cache",
    "GPT2PreTrainedModel",
    "GPT2Model",
    "GPT2LMHeadModel",
    "GPT2DoubleHeadsModel",
    "PRETRAINED_MODEL_ARCHIVE_MAP",
)

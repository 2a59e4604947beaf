"""The parts GPT-2 (gpt2.py) and OpenAI GPT (openai_gpt.py) share: the transformer block (causal attention with
a fused ``c_attn``, the MLP, the two layer norms), the block stack, the embeddings, the multiple-choice head, the
losses and the pre-trained base class with its PyTorch buffers.

Attribute names follow the PyTorch state dict (``h.0.attn.c_attn.weight``). GPT's ``Conv1D`` stores its weight
``[in, out]``, which is our ``Linear`` layout (``ModuleFactory.conv1d``): no transpose at load or run time. The two
families differ in where the layer norms sit (``pre_layer_norm``), the masked-logit value, the activation and the
embedding tables; each model file passes its choice in.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..configuration import PretrainedConfig
from ..layers import (
    Array,
    Embedding,
    ModuleFactory,
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


# -------------------------------------------------------------------------------------------------------- blocks


class GPTAttention(nnx.Module):
    """Causal self-attention with a fused ``c_attn`` projection (query, key, value) and ``c_proj`` output."""

    def __init__(self, options: ModuleFactory):
        config = options.config  # both GPT configs have checked that n_head divides n_embd
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
    def __init__(self, options: ModuleFactory):
        n_embd = options.config.n_embd
        self.c_fc = options.conv1d(n_embd, 4 * n_embd, axes=("embed", "mlp"))  # column-split
        self.c_proj = options.conv1d(4 * n_embd, n_embd, axes=("mlp", "embed"))  # row-split
        self.act = options.activation_fn()
        self.dropout_rate = options.config.resid_pdrop

    def __call__(self, hidden: Array, rng: Array | None) -> Array:
        return dropout(self.c_proj(self.act(self.c_fc(hidden))), self.dropout_rate, rng)


class BlockOutput(NamedTuple):
    """One block's outputs (see ``GPTBlock.__call__``)."""

    hidden: Array  # [batch, seq, hidden]
    key_value: tuple[Array, Array]  # keys, values [batch, kv_len, heads, head_dim]
    probs: Array | None  # [batch, heads, seq, kv_len], or None unless output_attentions


class StackOutput(NamedTuple):
    """The block stack's outputs (see :func:`run_blocks`)."""

    hidden: Array  # [batch, seq, hidden]
    keys: Array  # [layers, batch, kv_len, heads, head_dim]
    values: Array  # [layers, batch, kv_len, heads, head_dim]
    attentions: list[Array]  # per layer [batch, heads, seq, kv_len]; empty unless output_attentions


class HeadInputs(NamedTuple):
    """What a head model reads from its base model's 0.6.x output tuple (``_transform``)."""

    attentions: list[Array] | None  # per layer [d_1, ..., d_n, heads, seq, kv_len]; None unless output_attentions
    hidden: Array  # [d_1, ..., d_n, seq, n_embd]
    presents: list[Array] | None  # GPT-2's per-layer [2, batch, heads, kv_len, head_dim]; None for OpenAI GPT
    rng: Array | None  # the head's dropout key (None in evaluation)


class GPTBlock(nnx.Module):
    """One transformer block. GPT-2 normalises before each sub-layer (``pre_layer_norm``); OpenAI GPT after the
    residual sum. The parameter names (``ln_1``, ``attn``, ``ln_2``, ``mlp``) are the same in both."""

    def __init__(self, options: ModuleFactory, pre_layer_norm: bool):
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
        """Returns a :class:`BlockOutput`: ``hidden [batch, seq, hidden]``, this layer's ``(keys, values)``
        ``[batch, kv_len, heads, head_dim]`` and its attention probabilities (None unless ``output_attentions``)."""

        def attend(x):
            out, key_value, probs = self.attn(x, bias=bias, head_mask=head_mask, rng=fold_rng(rng, 0),
                                              output_attentions=output_attentions, layer_past=layer_past,
                                              layer=layer)
            return out, (key_value, probs)

        hidden, (key_value, probs) = self._residuals(hidden, attend, fold_rng(rng, 1))
        return BlockOutput(hidden, key_value, probs)

    def decode(self, hidden: Array, key_cache: Array, value_cache: Array, layer: Array | int, index: Array,
               bias: Array):
        return self._residuals(
            hidden, lambda x: self.attn.decode(x, key_cache, value_cache, layer, index, bias), None
        )


def build_blocks(options: ModuleFactory, num_layers: int, pre_layer_norm: bool, scan: bool) -> nnx.Module:
    """``num_layers`` blocks as a layer stack (``layers.build_stack``: unrolled, or scanned with ``scan``)."""
    return build_stack(lambda _: GPTBlock(options, pre_layer_norm), num_layers, scan=scan)


def run_blocks(blocks: nnx.Module, *, scan: bool, remat: str | None, hidden: Array, bias: Array,
               head_mask: Array | None, rng: Array | None, past: tuple[Array, Array] | None,
               output_attentions: bool) -> StackOutput:
    """Run the block stack (``layers.run_stack``; ``remat``: None or a policy name).

    past: ``(keys, values)``, each ``[layers, batch, past_len, heads, head_dim]``, or None.
    """

    def body(block, hidden, inputs, index):
        layer_head_mask, layer_past = inputs
        out = block(hidden, bias=bias, head_mask=layer_head_mask, rng=fold_rng(rng, index),
                    output_attentions=output_attentions, layer_past=layer_past, layer=index)
        return out.hidden, (out.key_value, out.probs)

    hidden, ((keys, values), probs) = run_stack(blocks, body, hidden, (head_mask, past), scan=scan, remat=remat)
    return StackOutput(hidden, keys, values, list(probs) if output_attentions else [])


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

    def __init__(self, options: ModuleFactory):
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


# --------------------------------------------------------------------------------------------- shared base class


class GPTPreTrainedBase(PreTrainedModel):
    """What GPT and GPT-2 declare alike (key prefix, legacy names, buffers), their parameter factory, the base
    models' forward pass (``_run_transformer``) and the causal-mask buffers PyTorch keeps in GPT state dicts."""

    base_model_prefix = "transformer"
    # Original OpenAI names (.g/.b/.w) in early PyTorch dumps.
    legacy_key_renames = ((r"\.g$", ".weight"), (r"\.b$", ".bias"), (r"\.w$", ".weight"))
    # The causal mask buffer h.N.attn.bias (and later versions' masked_bias / position_ids) are not parameters.
    buffer_key_patterns = (r"(^|\.)attn\.(bias|masked_bias)$", r"(^|\.)position_ids$")
    pre_layer_norm: ClassVar[bool] = True

    @classmethod
    def _new_factory(cls, config: PretrainedConfig, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> ModuleFactory:
        return ModuleFactory(config, rngs, dtype, param_dtype, features=config.n_embd,
                             layer_norm_eps=config.layer_norm_epsilon, init_std=config.initializer_range,
                             activation=cls._activation_name(config))

    @staticmethod
    def _activation_name(config: PretrainedConfig) -> str:
        return "gelu_tanh"

    def _transformer_prefix(self) -> str:
        return self._base_key_prefix()

    def _run_transformer(self, tokens: Embedding, positions: Embedding, input_ids: Array, position_ids: Array | None,
                         token_type_ids: Array | None, past: tuple[Array, Array] | None, head_mask: Array | None,
                         dropout_rng: Array | None, masked_logit: float) -> StackOutput:
        """The base models' forward pass up to (not including) a final layer norm: embeddings, causal mask, block
        stack. ``input_ids [d_1, ..., d_n, seq]`` run flattened to ``[batch, seq]``; the returned ``hidden`` is
        ``[d_1, ..., d_n, seq, n_embd]`` and the attentions ``[d_1, ..., d_n, heads, seq, kv_len]`` (keys and
        values stay ``[layers, batch, kv_len, heads, head_dim]``). past: keys/values ``[layers, batch, past_len,
        heads, head_dim]`` or None. masked_logit: the family's fill value for blocked attention logits."""
        config = self.config
        input_ids = jnp.asarray(input_ids)
        input_shape = input_ids.shape
        rng = self._dropout_key(dropout_rng)
        past_length = 0 if past is None else past[0].shape[2]
        hidden = embed_tokens(tokens, positions, input_ids.reshape(-1, input_shape[-1]), position_ids,
                              token_type_ids, past_length, config.embd_pdrop, fold_rng(rng, 0))
        seq_length = input_shape[-1]
        out = run_blocks(
            self.h, scan=bool(config.scan_layers), remat=remat_option(config), hidden=hidden,
            bias=causal_bias(seq_length, past_length + seq_length, masked_logit),
            head_mask=normalize_head_mask(head_mask, config.n_layer, config.n_head), rng=fold_rng(rng, 1),
            past=past, output_attentions=self.output_attentions,
        )
        return out._replace(hidden=out.hidden.reshape(*input_shape, -1),
                            attentions=reshape_attentions(out.attentions, input_shape))

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


# ------------------------------------------------------------------------------------------------ head arguments


def one_of(value: Any, alias: Any, name: str, alias_name: str) -> Any:
    """The argument given under ``name`` or under its keyword alias ``alias_name``; both at once is an error."""
    if value is not None and alias is not None:
        raise ValueError(f"pass either {name} or {alias_name}, not both")
    return alias if value is None else value


def choice_arguments(model_name: str, mc_token_ids: Any, multiple_choice_token_ids: Any, mc_labels: Any,
                     multiple_choice_labels: Any) -> tuple[Any, Any]:
    """``(mc_token_ids, mc_labels)`` of a double-heads call, either spelling accepted; the token ids are needed."""
    mc_token_ids = one_of(mc_token_ids, multiple_choice_token_ids, "mc_token_ids", "multiple_choice_token_ids")
    mc_labels = one_of(mc_labels, multiple_choice_labels, "mc_labels", "multiple_choice_labels")
    if mc_token_ids is None:
        raise ValueError(f"{model_name} needs mc_token_ids (the classification token of each choice)")
    return mc_token_ids, mc_labels


def double_heads_losses(lm_logits: Array, mc_logits: Array, lm_labels, mc_labels) -> list[Array]:
    losses = []
    if lm_labels is not None:
        losses.append(shifted_lm_loss(lm_logits, lm_labels))
    if mc_labels is not None:
        losses.append(cross_entropy(mc_logits, jnp.asarray(mc_labels)))
    return losses

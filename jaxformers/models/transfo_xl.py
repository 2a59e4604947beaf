"""Transformer-XL (Dai et al., 2019): config, base model and adaptive-softmax LM head of pytorch-pretrained-bert
0.6.x, in flax.nnx.

Attribute names follow the PyTorch state dict (``transformer.layers.0.dec_attn.qkv_net.weight``,
``crit.out_projs.1``...), so weights convert by key; see modeling_utils.py.

Conventions kept from the reference (0.6.x, and pytorch_transformers 1.2.0 which runs on current torch):

* ``input_ids`` are ``[batch, seq]`` but memories are ``[mem_len, batch, d_model]`` per layer (the original
  time-major layout); ``new_mems[0]`` is the embedding output, ``new_mems[i]`` the input of layer ``i``.
* A call with ``mems=None`` attends to ``mem_len`` zero memories (the reference builds them with
  ``init_mems``); with ``mem_len == 0`` there is no memory at all and ``new_mems`` is None.
* New memories are cut with the reference's argument order (its ``_update_mems`` receives ``mlen`` and
  ``qlen`` swapped; the two agree whenever ``ext_len == 0``): we reproduce it rather than fix it.
* Only ``attn_type=0`` (relative positions, partially learnable biases) exists here; the other types are
  rejected when the model is built.

Differences on purpose, documented:

* With ``target``, the LM head returns the per-token negative log-likelihood ``[batch, tgt_len]`` in token
  order (the reference groups it by vocabulary cluster). ``tgt_len`` is ``target.shape[1]`` so inputs may carry
  ``ext_len`` extra context tokens in front, as in the original Transformer-XL code.
* ``layer_norm_epsilon`` is a config field: 0.6.2 (and the original TensorFlow model) use 1e-12, 1.2.0 uses
  torch's 1e-5. The constructor default and 0.6.x-style JSON files give 1e-12; a JSON written by
  pytorch_transformers/transformers (it has keys such as ``output_attentions`` or ``vocab_size``) gives 1e-5.
* Sampled softmax (``sample_softmax > 0``) works in training (the reference cannot build it with tied weights
  and asserts with untied ones); in evaluation such a model scores with the full softmax of the same output
  weights (the reference would fail: it has no adaptive softmax then).
* ``same_length_mask`` (config field, ``"pytorch"`` by default): with ``same_length=True`` the original
  TensorFlow code lets each query see one key more than the PyTorch port. ``"tf"`` reproduces the TF model
  (the TF checkpoint converter sets it); PyTorch checkpoints keep ``"pytorch"``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..configuration import PretrainedConfig, configclass, spec
from ..layers import (Array, ModuleFactory, build_stack, check_ids_in_range, dropout, fold_rng, remat_option,
                      run_stack, take_rows)
from ..modeling_utils import PreTrainedModel

PRETRAINED_MODEL_ARCHIVE_MAP = {"transfo-xl-wt103": "transfo-xl-wt103"}

# Keys only pytorch_transformers / transformers write into config files; their presence means the file comes
# from a library whose Transformer-XL LayerNorm used torch's default epsilon.
_V1_CONFIG_MARKERS = frozenset({
    "output_attentions", "output_hidden_states", "torchscript", "num_labels", "finetuning_task", "pruned_heads",
    "vocab_size", "model_type", "architectures", "transformers_version", "eos_token_id",
})
EPS_0_6 = 1e-12
EPS_1_2 = 1e-5
# ``same_length`` mask variants (see ``attention_mask``): the PyTorch port's (default) and the original TF code's.
SAME_LENGTH_MASKS = ("pytorch", "tf")


@configclass
class TransfoXLConfig(PretrainedConfig):
    """Transformer-XL hyper-parameters with the 0.6.x constructor; the first argument is ``n_token`` (the
    vocabulary size) or the path of a JSON config. ``tie_projs`` is derived from ``proj_share_all_but_first``
    (an argument, not a field). ``layer_norm_epsilon`` is ours (see the module docstring)."""

    model_type = "transfo-xl"
    vocab_argument = "n_token"
    aliases = {"vocab_size": "n_token"}
    # The 0.6.x positional order (proj_share_all_but_first included).
    positional = (
        "n_token", "cutoffs", "d_model", "d_embed", "n_head", "d_head", "d_inner", "div_val", "pre_lnorm",
        "n_layer", "tgt_len", "ext_len", "mem_len", "clamp_len", "same_length", "proj_share_all_but_first",
        "attn_type", "sample_softmax", "adaptive", "tie_weight", "dropout", "dropatt", "untie_r", "init",
        "init_range", "proj_init_std", "init_std",
    )
    arguments = frozenset({"proj_share_all_but_first"})

    n_token: int = spec(267735, minimum=1)
    cutoffs: list[int] = spec([20000, 40000, 200000])
    tie_weight: bool = spec(True)
    tie_projs: list[bool] = spec([False, True, True, True])
    d_model: int = spec(1024, minimum=1)
    d_embed: int = spec(1024, minimum=1)
    n_head: int = spec(16, minimum=1)
    d_head: int = spec(64, minimum=1)
    d_inner: int = spec(4096, minimum=1)
    div_val: int = spec(4, minimum=1)
    pre_lnorm: bool = spec(False)
    n_layer: int = spec(18, minimum=1)
    tgt_len: int = spec(128, minimum=0)
    ext_len: int = spec(0, minimum=0)
    mem_len: int = spec(1600, minimum=0)
    clamp_len: int = spec(1000)
    same_length: bool = spec(True)
    same_length_mask: str = spec("pytorch", choices=SAME_LENGTH_MASKS)
    attn_type: int = spec(0, choices=(0, 1, 2, 3))
    sample_softmax: int = spec(-1, minimum=-1)
    adaptive: bool = spec(True)
    dropout: float = spec(0.1, minimum=0.0, maximum=1.0)
    dropatt: float = spec(0.0, minimum=0.0, maximum=1.0)
    untie_r: bool = spec(True)
    init: str = spec("normal", choices=("normal", "uniform"))
    init_range: float = spec(0.01, minimum=0.0)
    proj_init_std: float = spec(0.01, minimum=0.0)
    init_std: float = spec(0.02, minimum=0.0)
    layer_norm_epsilon: float = spec(EPS_0_6, above=0.0)

    @classmethod
    def _normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        share = values.pop("proj_share_all_but_first", None)
        if "tie_projs" not in values:
            cutoffs = values.get("cutoffs", cls.__dataclass_fields__["cutoffs"].default_factory())
            if isinstance(cutoffs, (list, tuple)):
                values["tie_projs"] = _tie_projs(cutoffs, True if share is None else bool(share))
        if "layer_norm_epsilon" not in values and _V1_CONFIG_MARKERS & set(values):
            values["layer_norm_epsilon"] = EPS_1_2
        return values

    # Names shared with the other model families.
    @property
    def vocab_size(self) -> int:
        return self.n_token

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer


def _tie_projs(cutoffs: Sequence[int], share_all_but_first: bool) -> list[bool]:
    return [False] + [bool(share_all_but_first)] * len(cutoffs)


def validate_config(config: TransfoXLConfig) -> None:
    """Raise a ValueError naming the field for settings this implementation cannot build."""
    if config.attn_type != 0:
        raise ValueError(
            f"TransfoXLConfig.attn_type={config.attn_type} is not supported: only attn_type=0 (relative "
            f"positional encodings with partially learnable biases, the one every released checkpoint uses)"
        )
    cutoffs = list(config.cutoffs)
    if any(b <= a for a, b in zip([0] + cutoffs, cutoffs + [config.n_token])):
        raise ValueError(
            f"TransfoXLConfig.cutoffs={cutoffs} must be strictly increasing, positive and below n_token="
            f"{config.n_token}"
        )
    if config.div_val < 1:
        raise ValueError(f"TransfoXLConfig.div_val={config.div_val} must be >= 1")
    if len(config.tie_projs) > len(cutoffs) + 1:
        raise ValueError(
            f"TransfoXLConfig.tie_projs has {len(config.tie_projs)} entries for {len(cutoffs) + 1} clusters "
            f"(cutoffs={cutoffs})"
        )
    if getattr(config, "same_length_mask", "pytorch") not in SAME_LENGTH_MASKS:
        raise ValueError(f"TransfoXLConfig.same_length_mask={config.same_length_mask!r}: expected one of "
                         f"{SAME_LENGTH_MASKS} ('tf' for checkpoints of the original TensorFlow code)")
    if config.init not in ("normal", "uniform"):
        raise ValueError(f"TransfoXLConfig.init={config.init!r}: expected 'normal' or 'uniform'")


def _Options(config: TransfoXLConfig, rngs: nnx.Rngs, dtype, param_dtype) -> ModuleFactory:
    """The shared factory with the reference's ``init``: N(0, init_std) or U(-init_range, init_range) for
    weights; projections pass ``("normal", proj_init_std)``, biases ``("constant", 0.0)``."""
    init = ("uniform", config.init_range) if config.init == "uniform" else ("normal", config.init_std)
    return ModuleFactory(config, rngs, dtype, param_dtype, features=config.d_model,
                         layer_norm_eps=config.layer_norm_epsilon, init_std=config.init_std, init=init)


def _cluster_bounds(config: TransfoXLConfig) -> list[tuple[int, int]]:
    """``[(start, stop)]`` token-id range of every adaptive cluster (the head shortlist first)."""
    ends = [0] + list(config.cutoffs) + [config.n_token]
    return list(zip(ends[:-1], ends[1:]))


def _cluster_width(config: TransfoXLConfig, index: int) -> int:
    return config.d_embed // (config.div_val ** index)


def inverse_frequencies(d_model: int) -> np.ndarray:
    """``1 / 10000^(2i/d)``, float32 as the reference's ``pos_emb.inv_freq`` buffer."""
    exponents = np.arange(0.0, d_model, 2.0, dtype=np.float32) / np.float32(d_model)
    return (np.float32(1.0) / np.power(np.float32(10000.0), exponents)).astype(np.float32)


# --------------------------------------------------------------------------------------------------- embedding


class _Table(nnx.Module):
    """An embedding table ``weight: [rows, features]`` (nn.Embedding's key); lookups are done by the caller."""

    def __init__(self, weight: nnx.Param):
        self.weight = weight


class AdaptiveEmbedding(nnx.Module):
    """Token embeddings whose width shrinks by ``div_val`` per frequency cluster, each projected to ``d_model``
    (``emb_projs[i]: [d_model, d_embed_i]``) and scaled by ``sqrt(d_model)``."""

    def __init__(self, options: _Options):
        config = options.config
        self.d_proj = config.d_model
        self.d_embed = config.d_embed
        self.div_val = config.div_val
        self.n_token = config.n_token
        self.bounds = tuple(_cluster_bounds(config))
        self.scale = config.d_model ** 0.5
        # Cluster tables are [rows, d_embed_i]: vocab-split rows like any embedding.
        table_axes, proj_init = ("vocab", "proj"), ("normal", config.proj_init_std)
        if config.div_val == 1:
            self.emb_layers = nnx.List([_Table(options.param((config.n_token, config.d_embed), axes=table_axes))])
            projs = []
            if config.d_model != config.d_embed:
                projs.append(options.param((config.d_model, config.d_embed), axes=("embed", "proj"), init=proj_init))
            self.emb_projs = nnx.List(projs)
        else:
            widths = [_cluster_width(config, i) for i in range(len(self.bounds))]
            self.emb_layers = nnx.List([
                _Table(options.param((stop - start, width), axes=table_axes))
                for (start, stop), width in zip(self.bounds, widths)
            ])
            self.emb_projs = nnx.List([
                options.param((config.d_model, width), axes=("embed", "proj"), init=proj_init) for width in widths
            ])
        self.dtype = options.dtype

    def projection(self, index: int) -> Array | None:
        """``[d_model, d_embed_i]`` projection of cluster ``index`` (None: identity)."""
        if self.div_val == 1:
            return self.emb_projs[0][...] if len(self.emb_projs) else None
        return self.emb_projs[index][...]

    def __call__(self, ids: Array) -> Array:
        check_ids_in_range(ids, self.n_token, "token id")
        dtype = self.dtype or jnp.float32
        if self.div_val == 1:
            table = self.emb_layers[0].weight[...].astype(dtype)
            embedded = take_rows(table, ids)
            projection = self.projection(0)
            if projection is not None:
                embedded = jnp.dot(embedded, projection.astype(dtype).T)
        else:
            # Each cluster embeds every position (clipped ids) and keeps the rows it owns: no gathers of
            # data-dependent size, so it runs under jit. Out-of-range ids (unchecked under jit) give NaN.
            embedded = jnp.full((*ids.shape, self.d_proj), jnp.nan, dtype)
            for index, (start, stop) in enumerate(self.bounds):
                table = self.emb_layers[index].weight[...].astype(dtype)
                local = jnp.clip(ids - start, 0, stop - start - 1)
                rows = jnp.dot(jnp.take(table, local, axis=0), self.projection(index).astype(dtype).T)
                owned = (ids >= start) & (ids < stop)
                embedded = jnp.where(owned[..., None], rows, embedded)
        return embedded * jnp.asarray(self.scale, dtype)  # [..., d_model]



# --------------------------------------------------------------------------------------------------- the layers


class PositionwiseFF(nnx.Module):
    """``CoreNet`` = Linear, ReLU, Dropout, Linear, Dropout (PyTorch indices 0 and 3 hold the weights)."""

    def __init__(self, options: _Options):
        config = options.config
        self.CoreNet = nnx.List([
            options.linear(config.d_model, config.d_inner, axes=("embed", "mlp")), None, None,
            options.linear(config.d_inner, config.d_model, axes=("mlp", "embed")),
        ])
        self.layer_norm = options.layer_norm()
        self.pre_lnorm = bool(config.pre_lnorm)
        self.dropout_rate = config.dropout

    def __call__(self, hidden: Array, rng: Array | None) -> Array:
        inputs = self.layer_norm(hidden) if self.pre_lnorm else hidden
        inner = dropout(jax.nn.relu(self.CoreNet[0](inputs)), self.dropout_rate, fold_rng(rng, 0))
        core = dropout(self.CoreNet[3](inner), self.dropout_rate, fold_rng(rng, 1))
        return core + hidden if self.pre_lnorm else self.layer_norm(hidden + core)


def relative_shift(scores: Array) -> Array:
    """The reference's ``_rel_shift`` on ``[..., q_len, k_len]``: pad a zero column in front, reinterpret the
    buffer as ``[k_len + 1, q_len]``, drop the first row. Row ``i`` then reads column ``j + q_len - 1 - i`` of
    the unshifted scores (relative distance ``i + k_len - q_len - j``); positions a causal mask hides receive
    the same wrapped values as in the reference."""
    *lead, q_len, k_len = scores.shape
    padded = jnp.pad(scores, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
    return padded.reshape(*lead, k_len + 1, q_len)[..., 1:, :].reshape(*lead, q_len, k_len)


class RelPartialLearnableMultiHeadAttn(nnx.Module):
    """Relative multi-head attention: content term ``(q + r_w_bias)·k`` plus position term
    ``(q + r_r_bias)·R`` over sinusoidal relative positions, keys/values over ``[memory; segment]``."""

    def __init__(self, options: _Options):
        config = options.config
        self.n_head, self.d_head = config.n_head, config.d_head
        inner = config.n_head * config.d_head
        self.qkv_net = options.linear(config.d_model, 3 * inner, axes=("embed", "qkv"), use_bias=False)
        self.o_net = options.linear(inner, config.d_model, axes=("heads", "embed"), use_bias=False)
        self.layer_norm = options.layer_norm()
        self.r_net = options.linear(config.d_model, inner, axes=("embed", "heads"), use_bias=False)
        if config.untie_r:
            self.r_r_bias = options.param((config.n_head, config.d_head), axes=("heads", "kv"))
            self.r_w_bias = options.param((config.n_head, config.d_head), axes=("heads", "kv"))
        else:  # shared biases live on the model and are passed in
            self.r_r_bias = None
            self.r_w_bias = None
        self.pre_lnorm = bool(config.pre_lnorm)
        self.scale = 1.0 / math.sqrt(config.d_head)
        self.dropout_rate = config.dropout
        self.dropatt = config.dropatt

    def __call__(self, hidden: Array, memory: Array | None, pos_emb: Array, mask: np.ndarray,
                 shared_biases: tuple[Array, Array] | None, rng: Array | None) -> Array:
        # hidden [batch, q_len, d_model]; memory [batch, m_len, d_model]; pos_emb [k_len, d_model]
        batch, q_len, _ = hidden.shape
        context = hidden if memory is None else jnp.concatenate([memory.astype(hidden.dtype), hidden], axis=1)
        k_len = context.shape[1]
        projected = self.qkv_net(self.layer_norm(context) if self.pre_lnorm else context)
        query, key, value = jnp.split(projected, 3, axis=-1)
        heads = (self.n_head, self.d_head)
        query = query[:, -q_len:].reshape(batch, q_len, *heads)  # [batch, q_len, heads, d_head]
        key = key.reshape(batch, k_len, *heads)
        value = value.reshape(batch, k_len, *heads)
        r_key = self.r_net(pos_emb.astype(hidden.dtype)).reshape(k_len, *heads)  # [k_len, heads, d_head]

        if shared_biases is None:
            r_w_bias, r_r_bias = self.r_w_bias[...], self.r_r_bias[...]
        else:
            r_w_bias, r_r_bias = shared_biases
        content = jnp.einsum("bqhd,bkhd->bhqk", query + r_w_bias.astype(query.dtype), key)
        position = relative_shift(jnp.einsum("bqhd,khd->bhqk", query + r_r_bias.astype(query.dtype), r_key))
        scores = (content + position).astype(jnp.float32) * self.scale  # [batch, heads, q_len, k_len]
        scores = jnp.where(mask, -1e30, scores)  # the reference's fill value (a fully masked row is uniform)
        probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
        probs = dropout(probs, self.dropatt, fold_rng(rng, 0))
        attended = jnp.einsum("bhqk,bkhd->bqhd", probs, value).reshape(batch, q_len, -1)
        out = dropout(self.o_net(attended), self.dropout_rate, fold_rng(rng, 1))
        return hidden + out if self.pre_lnorm else self.layer_norm(hidden + out)


class RelPartialLearnableDecoderLayer(nnx.Module):
    def __init__(self, options: _Options):
        self.dec_attn = RelPartialLearnableMultiHeadAttn(options)
        self.pos_ff = PositionwiseFF(options)

    def __call__(self, hidden: Array, memory: Array | None, pos_emb: Array, mask: np.ndarray,
                 shared_biases: tuple[Array, Array] | None, rng: Array | None) -> Array:
        attended = self.dec_attn(hidden, memory, pos_emb, mask, shared_biases, fold_rng(rng, 0))
        return self.pos_ff(attended, fold_rng(rng, 1))


def attention_mask(q_len: int, m_len: int, mem_len: int, same_length: bool,
                   same_length_mask: str = "pytorch") -> np.ndarray:
    """``[q_len, m_len + q_len]`` bool, True where attention is blocked: the future, and with ``same_length``
    keys so far back that every query sees the same number of keys.

    The two ``same_length`` variants differ by one key. ``"tf"`` is the original TensorFlow code's
    ``_create_mask``: it masks the strictly-lower triangle of the first ``q_len`` key columns, so query ``i``
    sees keys ``i .. i + m_len`` (``m_len + 1`` keys). ``"pytorch"`` is the 0.6.x PyTorch port (and HF's): its
    ``tril(ones, -shift)`` also masks the diagonal once the memory is full, so query ``i`` sees ``m_len`` keys.
    """
    k_len = m_len + q_len
    offset = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]  # key index - query index
    mask = offset >= 1 + m_len
    if same_length and same_length_mask == "tf":
        return mask | (offset < 0)  # key j < query i (then j < q_len too): independent of mem_len
    if same_length:
        overflow = k_len - mem_len
        shift = q_len - overflow if overflow > 0 else q_len
        mask = mask | (offset <= -shift)
    return mask


# ------------------------------------------------------------------------------------------------ output layers


class _OutputLayer(nnx.Module):
    """One ``crit.out_layers[i]`` (nn.Linear ``[out, in]`` layout); ``weight`` is absent when tied to the
    embedding table of the same cluster."""

    def __init__(self, options: ModuleFactory, rows: int, width: int, tied: bool, width_axis: str = "proj"):
        self.weight = None if tied else options.param((rows, width), axes=("vocab", width_axis))
        self.bias = options.param((rows,), axes=("vocab",), init=("constant", 0.0))


class ProjectedAdaptiveLogSoftmax(nnx.Module):
    """Adaptive softmax with per-cluster projections (``crit`` of the reference).

    The head scores the shortlist ``[0, cutoffs[0])`` plus one logit per tail cluster; a tail token's
    log-probability is its cluster's head log-probability plus its log-softmax inside the cluster.
    ``out_projs[i]: [d_model, d_embed_i]`` maps hidden states to cluster ``i``'s width.
    """

    def __init__(self, options: _Options):
        config = options.config
        self.bounds = tuple(_cluster_bounds(config))
        self.n_clusters = len(self.bounds) - 1
        self.div_val = config.div_val
        self.d_model, self.d_embed = config.d_model, config.d_embed
        self.shortlist = self.bounds[0][1]
        self.tie_weight = bool(config.tie_weight)
        tie_projs = list(config.tie_projs) + [False] * (len(self.bounds) - len(config.tie_projs))
        if self.n_clusters > 0:
            self.cluster_weight = options.param((self.n_clusters, config.d_embed), axes=("clusters", "proj"))
            self.cluster_bias = options.param((self.n_clusters,), axes=("clusters",), init=("constant", 0.0))
        else:
            self.cluster_weight = self.cluster_bias = None

        # Where each cluster's projection comes from: ("own", None), ("embedding", index) or ("none", None).
        sources: list[tuple[str, int | None]] = []
        projs = []
        for index in range(len(self.bounds)):
            width = config.d_embed if config.div_val == 1 else _cluster_width(config, index)
            if config.div_val == 1 and config.d_model == config.d_embed:
                source = ("none", None)
            elif tie_projs[index]:
                source = ("embedding", 0 if config.div_val == 1 else index)
            else:
                source = ("own", None)
            sources.append(source)
            projs.append(
                options.param((config.d_model, width), axes=("embed", "proj"), init=("normal", config.proj_init_std))
                if source[0] == "own" else None
            )
        self.proj_sources = tuple(sources)
        self.out_projs = nnx.List(projs)

        def out_layer(rows: int, width: int) -> _OutputLayer:
            return _OutputLayer(options, rows, width, self.tie_weight)

        if config.div_val == 1:
            self.out_layers = nnx.List([out_layer(config.n_token, config.d_embed)])
        else:
            self.out_layers = nnx.List([
                out_layer(stop - start, _cluster_width(config, index))
                for index, (start, stop) in enumerate(self.bounds)
            ])

    def tied_torch_keys(self, prefix: str, embedding_prefix: str) -> dict[str, str]:
        tied = {}
        if self.tie_weight:
            for index in range(len(self.out_layers)):
                tied[f"{prefix}out_layers.{index}.weight"] = f"{embedding_prefix}emb_layers.{index}.weight"
        for index, (kind, source) in enumerate(self.proj_sources):
            if kind == "embedding":
                tied[f"{prefix}out_projs.{index}"] = f"{embedding_prefix}emb_projs.{source}"
        return tied

    def _clusters(self, embedding: AdaptiveEmbedding) -> list[tuple[Array, Array, Array | None]]:
        """Per cluster ``(weight [rows, d_i], bias [rows], projection [d_model, d_i] or None)``; the head's rows
        include one per tail cluster."""
        clusters = []
        for index, (start, stop) in enumerate(self.bounds):
            if self.div_val == 1:
                layer = self.out_layers[0]
                table = embedding.emb_layers[0] if self.tie_weight else layer
                weight, bias = table.weight[...][start:stop], layer.bias[...][start:stop]
            else:
                layer = self.out_layers[index]
                table = embedding.emb_layers[index] if self.tie_weight else layer
                weight, bias = table.weight[...], layer.bias[...]
            if index == 0 and self.n_clusters > 0:
                weight = jnp.concatenate([weight, self.cluster_weight[...]], axis=0)
                bias = jnp.concatenate([bias, self.cluster_bias[...]], axis=0)
            kind, source = self.proj_sources[index]
            if kind == "own":
                projection = self.out_projs[index][...]
            elif kind == "embedding":
                projection = embedding.emb_projs[source][...]
            else:
                projection = None
            clusters.append((weight, bias, projection))
        return clusters

    @staticmethod
    def _logits(hidden: Array, weight: Array, bias: Array, projection: Array | None) -> Array:
        if projection is not None:
            hidden = jnp.dot(hidden, projection.astype(hidden.dtype))
        return jnp.dot(hidden, weight.astype(hidden.dtype).T) + bias.astype(hidden.dtype)

    def log_probs(self, hidden: Array, embedding: AdaptiveEmbedding) -> Array:
        """``[..., d_model]`` -> ``[..., n_token]`` log-probabilities (float32)."""
        hidden = hidden.astype(jnp.float32)
        clusters = self._clusters(embedding)
        head = jax.nn.log_softmax(self._logits(hidden, *clusters[0]), axis=-1)
        if self.n_clusters == 0:
            return head
        pieces = [head[..., : self.shortlist]]
        for index in range(1, len(clusters)):
            tail = jax.nn.log_softmax(self._logits(hidden, *clusters[index]), axis=-1)
            pieces.append(head[..., self.shortlist + index - 1, None] + tail)
        return jnp.concatenate(pieces, axis=-1)

    def nll(self, hidden: Array, target: Array, embedding: AdaptiveEmbedding) -> Array:
        """Negative log-likelihood of ``target [...]`` given ``hidden [..., d_model]``, in token order (float32).

        Every tail cluster is scored for every position (static shapes, so it jits) but only its normaliser
        and the target's logit are kept: no ``[..., n_token]`` array is materialised."""
        hidden = hidden.astype(jnp.float32)
        clusters = self._clusters(embedding)

        def target_log_prob(logits: Array, local_target: Array) -> Array:
            picked = jnp.take_along_axis(logits, local_target[..., None], axis=-1)[..., 0]
            return picked - jax.nn.logsumexp(logits, axis=-1)

        head_logits = self._logits(hidden, *clusters[0])
        start, stop = self.bounds[0]
        log_prob = target_log_prob(head_logits, jnp.clip(target, 0, stop - 1))
        if self.n_clusters:
            head_log_norm = jax.nn.logsumexp(head_logits, axis=-1)
            for index in range(1, len(clusters)):
                start, stop = self.bounds[index]
                in_cluster = (target >= start) & (target < stop)
                cluster_log_prob = head_logits[..., self.shortlist + index - 1] - head_log_norm
                tail = target_log_prob(self._logits(hidden, *clusters[index]),
                                       jnp.clip(target - start, 0, stop - start - 1))
                log_prob = jnp.where(in_cluster, cluster_log_prob + tail, log_prob)
        return -log_prob


# ---------------------------------------------------------------------------------------------- sampled softmax


class LogUniformSampler:
    """Negative sampler of the sampled softmax: ``P(id) = log((id + 2) / (id + 1)) / log(range_max + 1)``
    (Zipfian, for vocabularies sorted by frequency). ``log_q[id]`` corrects the sampled logits; it is meant to
    be the log of the probability that ``id`` is among ``2 n`` draws, ``log(1 - (1 - P)^(2n))``, but the
    reference computes ``log(1 - (1 + P)^(-2n))`` (a sign slip): we follow the reference."""

    def __init__(self, range_max: int, n_sample: int):
        self.range_max, self.n_sample = range_max, n_sample
        log_indices = np.log(np.arange(1.0, range_max + 2.0, dtype=np.float32))
        self.dist = ((log_indices[1:] - log_indices[:-1]) / log_indices[-1]).astype(np.float32)  # [range_max]
        tries = 2 * n_sample
        self.log_q = np.log(-np.expm1(-tries * np.log1p(self.dist.astype(np.float64)))).astype(np.float32)

    @property
    def n_tries(self) -> int:
        return 2 * self.n_sample

    def sample(self, rng: Array) -> Array:
        """``[2 * n_sample]`` ids drawn with replacement. Duplicates are kept (fixed shape under jit) and
        neutralised in :func:`sample_logits`, which gives the reference's ``unique()`` result."""
        return jax.random.categorical(rng, jnp.log(jnp.asarray(self.dist)), shape=(self.n_tries,))


def sample_logits(embed: Callable[[Array], Array], bias: Array, log_q: Array, target: Array, hidden: Array,
                  negatives: Array) -> Array:
    """Logits of the sampled softmax: ``[batch, seq, 1 + n_negatives]``, the true class first.

    embed: ids -> ``[..., d_model]`` output embeddings; bias: ``[n_token]``; log_q: ``[n_token]`` (see
    LogUniformSampler); target ``[batch, seq]``; hidden ``[batch, seq, d_model]``; negatives ``[n]``.
    Negatives equal to the target, and repeats of an earlier negative, get -1e30 (no probability mass).
    """
    negatives = jnp.asarray(negatives)
    log_q = jnp.asarray(log_q)
    true_logits = (jnp.sum(embed(target) * hidden, axis=-1) + bias[target] - log_q[target])  # [batch, seq]
    negative_logits = (jnp.einsum("bsd,nd->bsn", hidden, embed(negatives)) + bias[negatives]
                       - log_q[negatives])  # [batch, seq, n]
    count = negatives.shape[0]
    repeated = jnp.any((negatives[:, None] == negatives[None, :]) & np.tri(count, k=-1, dtype=bool), axis=1)
    hit = (target[..., None] == negatives) | repeated
    negative_logits = jnp.where(hit, -1e30, negative_logits)
    return jnp.concatenate([true_logits[..., None], negative_logits], axis=-1)


# ------------------------------------------------------------------------------------------------------ models


class TransfoXLPreTrainedModel(PreTrainedModel):
    config_class = TransfoXLConfig
    base_model_prefix = "transformer"
    pretrained_model_archive_map = PRETRAINED_MODEL_ARCHIVE_MAP
    buffer_key_patterns = (r"(^|\.)pos_emb\.inv_freq$",)
    tf_checkpoint_rules = "transfo-xl"  # the original TF release's names: jaxformers/conversion/tables.py

    def __init__(self, config: TransfoXLConfig, *, options: ModuleFactory | None = None, rngs: nnx.Rngs | None = None,
                 seed: int = 0, dtype: Any = None, param_dtype: Any = jnp.float32):
        """``options``: the factory an enclosing constructor passes down; ``rngs`` (or ``seed``), ``dtype`` and
        ``param_dtype`` make a new one (see PreTrainedModel._factory)."""
        self._check_config(config)
        validate_config(config)

    @classmethod
    def _new_factory(cls, config: TransfoXLConfig, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> ModuleFactory:
        return _Options(config, rngs, dtype, param_dtype)

    def _base(self) -> "TransfoXLModel":
        return self._base_model()

    def _base_prefix(self) -> str:
        return self._base_key_prefix()

    def stacked_layers(self) -> dict[str, int]:
        """With ``scan_layers`` the decoder layers are one module stacked on a leading ``[n_layer]`` axis."""
        return {self._base_prefix() + "layers": self.config.n_layer} if self.config.scan_layers else {}

    @property
    def tied_torch_keys(self) -> dict[str, str]:  # type: ignore[override]
        """PyTorch keys duplicating another parameter; they depend on the config (``untie_r``, ties)."""
        prefix = self._base_prefix()
        tied = {}
        if not self.config.untie_r:
            for index in range(self.config.n_layer):
                for name in ("r_r_bias", "r_w_bias"):
                    tied[f"{prefix}layers.{index}.dec_attn.{name}"] = f"{prefix}{name}"
        crit = getattr(self, "crit", None)
        if crit is not None:
            tied.update(crit.tied_torch_keys("crit.", f"{prefix}word_emb."))
        return tied

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """The reference's state dict, the ``pos_emb.inv_freq`` buffer included (needed by strict loads)."""
        out = super().torch_state_dict()
        out[f"{self._base_prefix()}pos_emb.inv_freq"] = inverse_frequencies(self.config.d_model)
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """As :meth:`PreTrainedModel.from_pretrained`; with ``from_tf=True`` (an original TensorFlow checkpoint)
        the config gets ``same_length_mask="tf"`` unless ``config_overrides`` chooses, so its losses are the TF
        model's. PyTorch/HF/jaxformers checkpoints keep the mask their config names (default ``"pytorch"``)."""
        from_tf = kwargs.get("from_tf", args[1] if len(args) > 1 else False)
        if from_tf:
            overrides = dict(kwargs.get("config_overrides") or {})
            overrides.setdefault("same_length_mask", "tf")
            kwargs["config_overrides"] = overrides
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- memories
    def reset_length(self, tgt_len: int, ext_len: int, mem_len: int) -> None:
        """Change the segment, extended-context and memory lengths used by the next calls."""
        base = self._base()
        base.tgt_len, base.ext_len, base.mem_len = tgt_len, ext_len, mem_len

    def init_mems(self, batch_size: int) -> list[Array] | None:
        """``n_layer`` zero memories ``[mem_len, batch_size, d_model]`` (None when ``mem_len == 0``)."""
        base = self._base()
        if base.mem_len <= 0:
            return None
        dtype = base.word_emb.dtype or jnp.float32
        return [jnp.zeros((base.mem_len, batch_size, self.config.d_model), dtype) for _ in range(self.config.n_layer)]


class TransfoXLModel(TransfoXLPreTrainedModel):
    """Returns ``(last_hidden_state [batch, seq, d_model], new_mems)``.

    ``mems``/``new_mems``: list of ``n_layer`` arrays ``[mem_len, batch, d_model]`` (time-major, like the
    reference), the input of each layer; None when ``mem_len == 0``. Runtime attributes ``tgt_len``,
    ``ext_len``, ``mem_len`` (see ``reset_length``), ``same_length`` and ``clamp_len`` start from the config
    and may be changed on the model, as in the reference.
    """

    is_base_model = True

    def __init__(self, config: TransfoXLConfig, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, options=options)
        self.n_token = config.n_token
        self.d_model = config.d_model
        self.n_layer = config.n_layer
        self.tgt_len, self.ext_len, self.mem_len = config.tgt_len, config.ext_len, config.mem_len
        self.same_length = bool(config.same_length)
        self.same_length_mask = getattr(config, "same_length_mask", "pytorch")
        self.clamp_len = config.clamp_len
        self.dropout_rate = config.dropout
        self.word_emb = AdaptiveEmbedding(options)
        if config.untie_r:
            self.r_w_bias = self.r_r_bias = None
        else:
            self.r_w_bias = options.param((config.n_head, config.d_head), axes=("heads", "kv"))
            self.r_r_bias = options.param((config.n_head, config.d_head), axes=("heads", "kv"))
        self.layers = build_stack(lambda _: RelPartialLearnableDecoderLayer(options), config.n_layer,
                                  scan=bool(config.scan_layers))

    def positional_embedding(self, k_len: int, dtype) -> Array:
        """``[k_len, d_model]`` sinusoids of the relative distances ``k_len - 1 ... 0`` (clamped)."""
        distances = np.arange(k_len - 1, -1, -1.0, dtype=np.float32)
        if self.clamp_len > 0:
            distances = np.minimum(distances, np.float32(self.clamp_len))
        angles = jnp.asarray(distances)[:, None] * jnp.asarray(inverse_frequencies(self.d_model))[None, :]
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1).astype(dtype)

    def _check_mems(self, mems: Sequence[Array], batch: int) -> list[Array]:
        if len(mems) != self.n_layer:
            raise ValueError(f"mems has {len(mems)} entries; expected one per layer ({self.n_layer})")
        mems = [jnp.asarray(m) for m in mems]
        for index, memory in enumerate(mems):
            if memory.ndim != 3 or memory.shape[1] != batch or memory.shape[2] != self.d_model:
                raise ValueError(
                    f"mems[{index}] has shape {tuple(memory.shape)}; expected [mem_len, batch={batch}, "
                    f"d_model={self.d_model}] (memories are time-major)"
                )
            if memory.shape[0] != mems[0].shape[0]:
                raise ValueError(f"mems[{index}] has length {memory.shape[0]}, mems[0] has {mems[0].shape[0]}")
        return mems

    def __call__(self, input_ids: Array, mems: Sequence[Array] | None = None, *,
                 dropout_rng: Array | None = None) -> tuple[Array, list[Array] | None]:
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        rng = self._dropout_key(dropout_rng)
        batch, q_len = input_ids.shape
        if mems is None:
            mems = self.init_mems(batch)
        else:
            mems = self._check_mems(mems, batch)
        m_len = 0 if mems is None else mems[0].shape[0]

        word_emb = self.word_emb(input_ids)  # [batch, q_len, d_model]
        mask = attention_mask(q_len, m_len, self.mem_len, self.same_length, self.same_length_mask)
        pos_emb = dropout(self.positional_embedding(m_len + q_len, word_emb.dtype), self.dropout_rate,
                          fold_rng(rng, 1))
        shared = None if self.r_w_bias is None else (self.r_w_bias[...], self.r_r_bias[...])

        layer_rng = fold_rng(rng, 2)

        def body(layer, hidden, memory, index):
            memory = None if memory is None else jnp.swapaxes(memory, 0, 1)  # [batch, m_len, d_model]
            out = layer(hidden, memory, pos_emb, mask, shared, fold_rng(layer_rng, index))
            return out, hidden  # the layer's input is its next memory

        stacked_mems = None if mems is None else jnp.stack(mems)  # [n_layer, m_len, batch, d_model]
        hidden, layer_inputs = run_stack(self.layers, body, dropout(word_emb, self.dropout_rate, fold_rng(rng, 0)),
                                         stacked_mems, scan=bool(self.config.scan_layers),
                                         remat=remat_option(self.config))
        hidden = dropout(hidden, self.dropout_rate, fold_rng(rng, 3))
        return hidden, self._update_mems(layer_inputs, stacked_mems, q_len, m_len)

    def _update_mems(self, layer_inputs: Array, mems: Array | None, q_len: int, m_len: int) -> list[Array] | None:
        """layer_inputs ``[n_layer, batch, q_len, d_model]``, mems ``[n_layer, m_len, batch, d_model]`` -> per
        layer ``[new_mem_len, batch, d_model]``."""
        if mems is None:
            return None
        # The reference calls its _update_mems(hids, mems, qlen, mlen) as (hids, mems, mlen, qlen); with
        # ext_len == 0 both orders give the last mem_len steps, otherwise we follow the reference's arithmetic.
        end = q_len + max(0, m_len - self.ext_len)
        begin = max(0, end - self.mem_len)
        joined = jnp.concatenate([mems.astype(layer_inputs.dtype), jnp.swapaxes(layer_inputs, 1, 2)], axis=1)
        return list(jax.lax.stop_gradient(joined[:, begin:end]))


class TransfoXLLMHeadModel(TransfoXLPreTrainedModel):
    """Transformer-XL with its (projected adaptive) softmax head, tied to the adaptive input embeddings as
    configured (``tie_weight``, ``tie_projs``).

    ``model(input_ids, target=None, mems=None)`` returns ``(softmax_output, new_mems)`` where softmax_output is
    the log-probabilities ``[batch, seq, n_token]`` without target, or the per-token negative log-likelihood
    ``[batch, tgt_len]`` (token order) with ``target [batch, tgt_len]``. With ``sample_softmax > 0`` training
    calls (``model.train()``) return the sampled-softmax loss ``[batch, tgt_len]`` and need ``target``;
    ``negative_samples`` overrides the sampler's draw.
    """

    def __init__(self, config: TransfoXLConfig, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, options=options)
        self.transformer = TransfoXLModel(config, options=options)
        self.sample_softmax = config.sample_softmax
        if config.sample_softmax > 0:
            # The full-vocabulary output layer of the sampled softmax: [n_token, d_model] rows.
            self.out_layer = _OutputLayer(options, config.n_token, config.d_model, bool(config.tie_weight), "embed")
            self.sampler = LogUniformSampler(config.n_token, config.sample_softmax)
            self.crit = None
        else:
            self.out_layer = None
            self.sampler = None
            self.crit = ProjectedAdaptiveLogSoftmax(options)

    def __call__(self, input_ids: Array, target: Array | None = None, mems: Sequence[Array] | None = None, *,
                 dropout_rng: Array | None = None, negative_samples: Array | None = None):
        rng = self._dropout_key(dropout_rng)
        hidden, new_mems = self.transformer(input_ids, mems, dropout_rng=fold_rng(rng, 0))
        if target is not None:
            target = jnp.asarray(target)
            if target.ndim != 2 or target.shape[0] != hidden.shape[0] or target.shape[1] > hidden.shape[1]:
                raise ValueError(
                    f"target has shape {tuple(target.shape)}; expected [batch={hidden.shape[0]}, tgt_len <= "
                    f"{hidden.shape[1]}]"
                )
            check_ids_in_range(target, self.config.n_token, "target id")
            hidden = hidden[:, hidden.shape[1] - target.shape[1]:]  # [batch, tgt_len, d_model]
        if self.sample_softmax > 0:
            return self._sampled_output(hidden, target, rng, negative_samples), new_mems
        if target is None:
            return self.crit.log_probs(hidden, self.transformer.word_emb), new_mems
        return self.crit.nll(hidden, target, self.transformer.word_emb), new_mems

    # ------------------------------------------------------------------------------------- sampled softmax
    def _output_embedding(self, ids: Array) -> Array:
        if self.out_layer.weight is None:  # tied: the adaptive input embedding, as the reference passes it
            return self.transformer.word_emb(ids)
        return jnp.take(self.out_layer.weight[...], ids, axis=0)

    def _sampled_output(self, hidden: Array, target: Array | None, rng: Array | None,
                        negative_samples: Array | None) -> Array:
        bias = self.out_layer.bias[...]
        if self.deterministic:
            # Full softmax over the sampled-softmax output weights (the reference has no evaluation path here).
            weights = self._output_embedding(jnp.arange(self.config.n_token))  # [n_token, d_model]
            log_probs = jax.nn.log_softmax(jnp.dot(hidden, weights.T) + bias, axis=-1)
            if target is None:
                return log_probs
            return -jnp.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
        if target is None:
            raise ValueError("sampled softmax training (sample_softmax > 0, model.train()) needs target")
        if negative_samples is None:
            negative_samples = self.sampler.sample(fold_rng(rng, 1))
        logits = sample_logits(self._output_embedding, bias, self.sampler.log_q, target, hidden, negative_samples)
        return -jax.nn.log_softmax(logits, axis=-1)[..., 0]  # [batch, tgt_len]


__all__: Sequence[str] = (
    "TransfoXLConfig",
    "TransfoXLModel",
    "TransfoXLLMHeadModel",
    "TransfoXLPreTrainedModel",
    "ProjectedAdaptiveLogSoftmax",
    "AdaptiveEmbedding",
    "LogUniformSampler",
    "sample_logits",
    "PRETRAINED_MODEL_ARCHIVE_MAP",
)

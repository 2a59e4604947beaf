"""Transformer-XL (Dai et al., 2019): config, base model and adaptive-softmax LM head of pytorch-pretrained-bert
0.6.x, in flax.nnx.

Attribute names follow the PyTorch state dict (``transformer.layers.0.dec_attn.qkv_net.weight``,
``crit.out_projs.1``...), so weights convert by key; see checkpoint_io.py.

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
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..configuration import PretrainedConfig, configclass, spec
from ..layers import Array, ModuleFactory, build_stack, check_ids_in_range, dropout, fold_rng, remat_option, run_stack
from ..modeling_utils import PreTrainedModel
from .adaptive_softmax import (  # re-exported: they were defined here
    AdaptiveEmbedding,
    LogUniformSampler,
    OutputLayer,
    ProjectedAdaptiveLogSoftmax,
    sample_logits,
)

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


def inverse_frequencies(d_model: int) -> np.ndarray:
    """``1 / 10000^(2i/d)``, float32 as the reference's ``pos_emb.inv_freq`` buffer."""
    exponents = np.arange(0.0, d_model, 2.0, dtype=np.float32) / np.float32(d_model)
    return (np.float32(1.0) / np.power(np.float32(10000.0), exponents)).astype(np.float32)


# --------------------------------------------------------------------------------------------------- the layers


class PositionwiseFF(nnx.Module):
    """``CoreNet`` = Linear, ReLU, Dropout, Linear, Dropout (PyTorch indices 0 and 3 hold the weights)."""

    def __init__(self, options: ModuleFactory):
        config = options.config
        self.CoreNet = nnx.List([
            options.linear(config.d_model, config.d_inner, axes=("embed", "mlp")), None, None,
            options.linear(config.d_inner, config.d_model, axes=("mlp", "embed")),
        ])
        self.act = options.activation_fn()  # ReLU (the factory's)
        self.layer_norm = options.layer_norm()
        self.pre_lnorm = bool(config.pre_lnorm)
        self.dropout_rate = config.dropout

    def __call__(self, hidden: Array, rng: Array | None) -> Array:
        inputs = self.layer_norm(hidden) if self.pre_lnorm else hidden
        inner = dropout(self.act(self.CoreNet[0](inputs)), self.dropout_rate, fold_rng(rng, 0))
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

    def __init__(self, options: ModuleFactory):
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
    def __init__(self, options: ModuleFactory):
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
        """The reference's ``init``: N(0, init_std) or U(-init_range, init_range) for weights; projections pass
        ``("normal", proj_init_std)``, biases ``("constant", 0.0)``. The feed-forward activation is ReLU."""
        init = ("uniform", config.init_range) if config.init == "uniform" else ("normal", config.init_std)
        return ModuleFactory(config, rngs, dtype, param_dtype, features=config.d_model,
                             layer_norm_eps=config.layer_norm_epsilon, init_std=config.init_std, init=init,
                             activation="relu")

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
            self.out_layer = OutputLayer(options, config.n_token, config.d_model, bool(config.tie_weight), "embed")
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

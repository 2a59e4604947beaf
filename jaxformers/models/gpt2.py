"""OpenAI GPT-2 (config, base model, LM head, double heads), built from the blocks shared with OpenAI GPT
(gpt_blocks.py).

Attribute names follow the PyTorch state dict (``transformer.h.0.attn.c_attn.weight``). GPT's ``Conv1D`` already
stores its weight as ``[in, out]``, which is our ``Linear`` layout, so those weights load without a transpose
(``ModuleFactory.conv1d``) and the forward pass is a plain ``x @ w``.

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

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from ..configuration import PretrainedConfig, configclass, spec
from ..layers import ACTIVATIONS, Array, check_ids_in_range, fold_rng, run_stack
from .gpt_blocks import (  # GPTAttention, GPTBlock, GPTMLP, choice_shared_dropout: re-exported (were defined here)
    GPT_ALIASES,
    GPT_SUMMARY_FIELDS,
    GPTAttention,
    GPTBlock,
    GPTMLP,
    GPTPreTrainedBase,
    HeadInputs,
    MultipleChoiceHead,
    build_blocks,
    choice_arguments,
    choice_shared_dropout,
    double_heads_losses,
    past_to_keys_values,
    presents_from_keys_values,
    shifted_lm_loss,
)

# The 0.6.x S3 archives are gone; the same checkpoints live on the model hub under the shortcut names.
PRETRAINED_MODEL_ARCHIVE_MAP = {"gpt2": "gpt2", "gpt2-medium": "gpt2-medium"}

# GPT-2 fills masked attention logits with -1e4 (OpenAI GPT with -1e9); after the softmax both are exact zeros.
GPT2_MASKED_LOGIT = -1e4


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
        self._check_config(config)
        self.output_attentions = output_attentions
        self.wte = options.embedding(config.vocab_size, axes=("vocab", "embed"))
        self.wpe = options.embedding(config.n_positions, axes=("position", "embed"))
        self.h = build_blocks(options, config.n_layer, self.pre_layer_norm, bool(config.scan_layers))
        self.ln_f = options.layer_norm()

    def __call__(self, input_ids: Array, position_ids: Array | None = None, token_type_ids: Array | None = None,
                 past: Sequence[Array] | None = None, head_mask: Array | None = None, *,
                 dropout_rng: Array | None = None):
        past = None if past is None else past_to_keys_values(past, self.config.n_layer)
        out = self._run_transformer(self.wte, self.wpe, input_ids, position_ids, token_type_ids, past, head_mask,
                                    dropout_rng, GPT2_MASKED_LOGIT)
        hidden = self.ln_f(out.hidden)  # [d_1, ..., d_n, seq, n_embd]
        presents = presents_from_keys_values(out.keys, out.values)
        if self.output_attentions:
            return out.attentions, hidden, presents
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
        self._check_config(config)
        self.output_attentions = output_attentions
        self.transformer = GPT2Model(config, output_attentions, options=options)

    def _transform(self, input_ids, position_ids, token_type_ids, past, head_mask, dropout_rng) -> HeadInputs:
        rng = self._dropout_key(dropout_rng)
        outputs = self.transformer(input_ids, position_ids, token_type_ids, past, head_mask,
                                   dropout_rng=fold_rng(rng, 0))
        attentions = outputs[0] if self.output_attentions else None
        return HeadInputs(attentions, outputs[-2], outputs[-1], fold_rng(rng, 1))

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
        base = self._transform(input_ids, position_ids, token_type_ids, past, head_mask, dropout_rng)
        lm_logits = self._lm_logits(base.hidden)
        if lm_labels is not None:
            return shifted_lm_loss(lm_logits, lm_labels)
        return self._outputs(base.attentions, lm_logits, base.presents)

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
        mc_token_ids, mc_labels = choice_arguments(type(self).__name__, mc_token_ids, multiple_choice_token_ids,
                                                   mc_labels, multiple_choice_labels)
        base = self._transform(input_ids, position_ids, token_type_ids, past, head_mask, dropout_rng)
        lm_logits = self._lm_logits(base.hidden)
        mc_logits = self.multiple_choice_head(base.hidden, mc_token_ids, base.rng)
        losses = double_heads_losses(lm_logits, mc_logits, lm_labels, mc_labels)
        if losses:
            return losses
        return self._outputs(base.attentions, lm_logits, mc_logits, base.presents)


__all__: Sequence[str] = (
    "GPT2Config",
    "GPT2Cache",
    "GPT2PreTrainedModel",
    "GPT2Model",
    "GPT2LMHeadModel",
    "GPT2DoubleHeadsModel",
    "PRETRAINED_MODEL_ARCHIVE_MAP",
)

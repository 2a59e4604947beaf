"""OpenAI GPT (config, base model, LM head, double heads), built from the blocks shared with GPT-2
(gpt_blocks.py).

Differences from GPT-2: layer norms after each residual sum, no final layer norm, a configurable activation
(``afn``: OpenAI's "gelu" is the tanh approximation), learned special-token rows appended to the token
embeddings (``n_special``, ``set_num_special_tokens``), and OpenAI's original numpy checkpoint format (read and
renamed in jaxformers/conversion/: readers.py, tables.OPENAI_NUMPY).

Inputs are ``[d_1, ..., d_n, seq]``. Dropout is off until ``model.train()``; training calls then need
``dropout_rng=jax.random.key(...)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from ..configuration import PretrainedConfig, configclass, spec
from ..layers import ACTIVATIONS, Array, fold_rng
from .gpt_blocks import (
    GPT_ALIASES,
    GPT_SUMMARY_FIELDS,
    GPTPreTrainedBase,
    HeadInputs,
    MultipleChoiceHead,
    build_blocks,
    choice_arguments,
    double_heads_losses,
    shifted_lm_loss,
)

PRETRAINED_MODEL_ARCHIVE_MAP = {"openai-gpt": "openai-gpt"}

# OpenAI GPT fills masked attention logits with -1e9 (exact zeros after the softmax).
OPENAI_GPT_MASKED_LOGIT = -1e9
# afn names of the reference -> our activations ("gelu" there is the tanh approximation).
OPENAI_ACTIVATIONS = {"gelu": "gelu_tanh", "relu": "relu", "swish": "swish", "silu": "silu"}


@configclass
class OpenAIGPTConfig(PretrainedConfig):
    """OpenAI GPT hyper-parameters; the first argument is the vocabulary size or a JSON config path (0.6.x style).

    ``n_special`` extra token rows (``[SEP]``, ``[CLF]``...) follow the ``vocab_size`` pretrained ones.
    """

    model_type = "openai-gpt"
    aliases = GPT_ALIASES
    math_fields = GPT_SUMMARY_FIELDS

    vocab_size: int = spec(40478, minimum=1)
    n_special: int = spec(0, minimum=0)
    n_positions: int = spec(512, minimum=1)
    n_ctx: int = spec(512, minimum=1)
    n_embd: int = spec(768, minimum=1)
    n_layer: int = spec(12, minimum=1)
    n_head: int = spec(12, minimum=1)
    afn: str = spec("gelu", choices=tuple(dict.fromkeys([*OPENAI_ACTIVATIONS, *ACTIVATIONS])))
    resid_pdrop: float = spec(0.1, minimum=0.0, maximum=1.0)
    embd_pdrop: float = spec(0.1, minimum=0.0, maximum=1.0)
    attn_pdrop: float = spec(0.1, minimum=0.0, maximum=1.0)
    layer_norm_epsilon: float = spec(1e-5, above=0.0)
    initializer_range: float = spec(0.02, minimum=0.0)

    def _check(self, source: str | None) -> None:
        self._require(self.n_embd % self.n_head == 0, "n_embd", f"not divisible by n_head={self.n_head}", source)

    @property
    def total_tokens_embeddings(self) -> int:
        return self.vocab_size + self.n_special


class OpenAIGPTPreTrainedModel(GPTPreTrainedBase):
    config_class = OpenAIGPTConfig
    pretrained_model_archive_map = PRETRAINED_MODEL_ARCHIVE_MAP
    legacy_config_names = ("openai_gpt_config.json",)
    pre_layer_norm = False

    @staticmethod
    def _activation_name(config: OpenAIGPTConfig) -> str:
        afn = config.afn
        return OPENAI_ACTIVATIONS.get(afn, afn) if isinstance(afn, str) else afn

    def _base(self) -> "OpenAIGPTModel":
        return self._base_model()

    def set_num_special_tokens(self, num_special_tokens: int, *, seed: int = 0) -> None:
        """Resize the token table to ``vocab_size + num_special_tokens`` rows.

        The ``vocab_size`` pretrained rows are kept, as are the special rows that exist before and after (the
        reference re-initialises those); new rows are drawn from N(0, initializer_range). The LM head is tied
        to this table, so it follows.
        """
        base = self._base()
        config = base.config
        if num_special_tokens < 0:
            raise ValueError(f"num_special_tokens must be >= 0, got {num_special_tokens}")
        if num_special_tokens == config.n_special:
            return
        old = base.tokens_embed
        kept = min(old.weight.shape[0], config.vocab_size + num_special_tokens)
        new_rows = config.vocab_size + num_special_tokens
        fresh = jax.random.normal(jax.random.key(seed), (new_rows, config.n_embd), old.weight.dtype)
        table = (fresh * config.initializer_range).at[:kept].set(old.weight[...][:kept])
        base.tokens_embed = type(old)(new_rows, config.n_embd, rngs=nnx.Rngs(seed), dtype=old.dtype,
                                      param_dtype=old.weight.dtype)
        base.tokens_embed.weight.set_value(table)
        # Configs are frozen: the base model and the head model (when distinct) get the same new one.
        base.config = dataclasses.replace(config, n_special=num_special_tokens)
        self.config = base.config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, cache_dir=None, from_tf: bool = False,
                        state_dict=None, *inputs, num_special_tokens: int | None = None, **kwargs):
        """As ``PreTrainedModel.from_pretrained``; ``from_tf=True`` reads OpenAI's numpy checkpoint directory
        (``params_shapes.json`` + ``params_{0..9}.npy``; ``config.json`` optional, defaults otherwise), and
        ``num_special_tokens`` resizes the token table after loading (see ``set_num_special_tokens``)."""
        if from_tf:
            from ..conversion.openai import load_openai_numpy

            result = load_openai_numpy(cls, pretrained_model_name_or_path, inputs, kwargs)
        else:
            result = super().from_pretrained(pretrained_model_name_or_path, cache_dir, from_tf, state_dict, *inputs,
                                             **kwargs)
        model = result[0] if isinstance(result, tuple) else result
        if num_special_tokens is not None:
            model.set_num_special_tokens(num_special_tokens)
        return result

    @classmethod
    def torch_keys_from_openai_numpy(cls, directory: str | os.PathLike) -> dict[str, np.ndarray]:
        """OpenAI's released numpy checkpoint -> PyTorch keys (the format's code: jaxformers/conversion/)."""
        from ..conversion.openai import torch_keys_from_openai_numpy

        return torch_keys_from_openai_numpy(directory)


class OpenAIGPTModel(OpenAIGPTPreTrainedModel):
    """Returns ``hidden_states [d_1, ..., d_n, n_embd]``, or ``(attentions, hidden_states)`` with
    ``output_attentions`` (per layer ``[d_1, ..., d_n, heads, seq, seq]``)."""

    is_base_model = True

    def __init__(self, config: OpenAIGPTConfig, output_attentions: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        self._check_config(config)
        self.output_attentions = output_attentions
        self.tokens_embed = options.embedding(config.total_tokens_embeddings, axes=("vocab", "embed"))
        self.positions_embed = options.embedding(config.n_positions, axes=("position", "embed"))
        self.h = build_blocks(options, config.n_layer, self.pre_layer_norm, bool(config.scan_layers))

    def __call__(self, input_ids: Array, position_ids: Array | None = None, token_type_ids: Array | None = None,
                 head_mask: Array | None = None, *, dropout_rng: Array | None = None):
        out = self._run_transformer(self.tokens_embed, self.positions_embed, input_ids, position_ids,
                                    token_type_ids, None, head_mask, dropout_rng, OPENAI_GPT_MASKED_LOGIT)
        if self.output_attentions:
            return out.attentions, out.hidden
        return out.hidden


class _OpenAIGPTWithTransformer(OpenAIGPTPreTrainedModel):
    tied_torch_keys = {"lm_head.decoder.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: OpenAIGPTConfig, output_attentions: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        self._check_config(config)
        self.output_attentions = output_attentions
        self.transformer = OpenAIGPTModel(config, output_attentions, options=options)

    def _transform(self, input_ids, position_ids, token_type_ids, head_mask, dropout_rng) -> HeadInputs:
        rng = self._dropout_key(dropout_rng)
        outputs = self.transformer(input_ids, position_ids, token_type_ids, head_mask, dropout_rng=fold_rng(rng, 0))
        attentions, hidden = outputs if self.output_attentions else (None, outputs)
        return HeadInputs(attentions, hidden, None, fold_rng(rng, 1))

    def _lm_logits(self, hidden: Array) -> Array:
        return self.transformer.tokens_embed.attend(hidden)  # tied decoder: [..., seq, vocab + n_special]

    def _outputs(self, attentions, *outputs):
        if self.output_attentions:
            return (attentions, *outputs)
        return outputs[0] if len(outputs) == 1 else outputs


class OpenAIGPTLMHeadModel(_OpenAIGPTWithTransformer):
    """``lm_logits [d_1, ..., d_n, vocab + n_special]`` (attentions first with ``output_attentions``), or with
    ``lm_labels`` the next-token loss (labels -1 ignored)."""

    def __init__(self, config: OpenAIGPTConfig, output_attentions: bool = False, **kwargs: Any):
        super().__init__(config, output_attentions, **kwargs)

    def __call__(self, input_ids, position_ids=None, token_type_ids=None, lm_labels=None, head_mask=None, *,
                 dropout_rng=None):
        base = self._transform(input_ids, position_ids, token_type_ids, head_mask, dropout_rng)
        lm_logits = self._lm_logits(base.hidden)
        if lm_labels is not None:
            return shifted_lm_loss(lm_logits, lm_labels)
        return self._outputs(base.attentions, lm_logits)


class OpenAIGPTDoubleHeadsModel(_OpenAIGPTWithTransformer):
    """Inputs ``[batch, num_choices, seq]`` and ``mc_token_ids [batch, num_choices]``. Returns
    ``(lm_logits, mc_logits [batch, num_choices])`` (attentions first with ``output_attentions``), or with labels
    the list of losses ``[lm_loss, mc_loss]`` for the labels given. ``multiple_choice_token_ids`` /
    ``multiple_choice_labels`` are accepted as keyword spellings of ``mc_token_ids`` / ``mc_labels``."""

    def __init__(self, config: OpenAIGPTConfig, output_attentions: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, output_attentions, options=options)
        self.multiple_choice_head = MultipleChoiceHead(options)

    def __call__(self, input_ids, mc_token_ids=None, lm_labels=None, mc_labels=None, token_type_ids=None,
                 position_ids=None, head_mask=None, *, multiple_choice_token_ids=None, multiple_choice_labels=None,
                 dropout_rng=None):
        mc_token_ids, mc_labels = choice_arguments(type(self).__name__, mc_token_ids, multiple_choice_token_ids,
                                                   mc_labels, multiple_choice_labels)
        base = self._transform(input_ids, position_ids, token_type_ids, head_mask, dropout_rng)
        lm_logits = self._lm_logits(base.hidden)
        mc_logits = self.multiple_choice_head(base.hidden, mc_token_ids, base.rng)
        losses = double_heads_losses(lm_logits, mc_logits, lm_labels, mc_labels)
        if losses:
            return losses
        return self._outputs(base.attentions, lm_logits, mc_logits)


__all__: Sequence[str] = (
    "OpenAIGPTConfig",
    "OpenAIGPTPreTrainedModel",
    "OpenAIGPTModel",
    "OpenAIGPTLMHeadModel",
    "OpenAIGPTDoubleHeadsModel",
    "PRETRAINED_MODEL_ARCHIVE_MAP",
)

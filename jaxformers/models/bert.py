"""BERT: config, encoder and the eight task models of pytorch-pretrained-bert 0.6.x, in flax.nnx.

Attribute names follow the PyTorch state dict (``bert.encoder.layer.0.attention.self.query.weight``), so weights
convert by key; see checkpoint_io.py. Inputs and outputs follow the 0.6.x docs, including ``output_attentions``,
``keep_multihead_output`` and ``head_mask`` from its BERTology additions.

Dropout is off until ``model.train()``; training calls then need ``dropout_rng=jax.random.key(...)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple, Sequence

import jax.numpy as jnp
from flax import nnx

from ..configuration import PretrainedConfig, configclass, spec
from ..layers import (
    ACTIVATIONS,
    Array,
    Embedding,
    ModuleFactory,
    attention,
    build_stack,
    cross_entropy,
    dropout,
    fold_rng,
    merge_heads,
    normalize_head_mask,
    padding_bias,
    remat_option,
    run_stack,
    split_heads,
)
from ..modeling_utils import PreTrainedModel
from ..tokenizers.bert import BERT_PRETRAINED_MODELS

# The 0.6.x S3 archives are gone; the same checkpoints live on the model hub under the shortcut names.
PRETRAINED_MODEL_ARCHIVE_MAP = {name: name for name in BERT_PRETRAINED_MODELS}


@configclass
class BertConfig(PretrainedConfig):
    """BERT hyper-parameters; the first argument is the vocabulary size or a JSON config path (0.6.x style).

    Fields are declared in the 0.6.x positional order. ``pruned_heads`` (layer -> original head indexes) is
    written by ``prune_heads``; ``position_embedding_type`` other than ``"absolute"`` is refused by name.
    """

    model_type = "bert"
    math_fields = {
        # relative_key / relative_key_query add learned distance embeddings we do not implement.
        "position_embedding_type": lambda value: value == "absolute",
        # Only the classifier's dropout in training: our heads use hidden_dropout_prob, so only null matches.
        "classifier_dropout": lambda value: value is None,
    }

    vocab_size: int = spec(30522, minimum=1)
    hidden_size: int = spec(768, minimum=1)
    num_hidden_layers: int = spec(12, minimum=1)
    num_attention_heads: int = spec(12, minimum=1)
    intermediate_size: int = spec(3072, minimum=1)
    hidden_act: str = spec("gelu", choices=tuple(ACTIVATIONS))
    hidden_dropout_prob: float = spec(0.1, minimum=0.0, maximum=1.0)
    attention_probs_dropout_prob: float = spec(0.1, minimum=0.0, maximum=1.0)
    max_position_embeddings: int = spec(512, minimum=1)
    type_vocab_size: int = spec(2, minimum=1)
    initializer_range: float = spec(0.02, minimum=0.0)
    layer_norm_eps: float = spec(1e-12, above=0.0)
    pruned_heads: dict[int, list[int]] = spec({})

    def _check(self, source: str | None) -> None:
        self._require(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
                      f"not divisible by num_attention_heads={self.num_attention_heads}", source)

    def pruned_heads_of(self, layer: int) -> set[int]:
        """Original indexes of the heads pruned from `layer` (JSON stores the layer keys as strings)."""
        pruned = self.pruned_heads or {}
        return set(pruned.get(layer, pruned.get(str(layer), ())))


# ------------------------------------------------------------------------------------------------------- encoder


class BertEmbeddings(nnx.Module):
    def __init__(self, options: ModuleFactory):
        config = options.config
        self.word_embeddings = options.embedding(config.vocab_size, axes=("vocab", "embed"))
        self.position_embeddings = options.embedding(config.max_position_embeddings, axes=("position", "embed"))
        self.token_type_embeddings = options.embedding(config.type_vocab_size, axes=("type_vocab", "embed"))
        self.LayerNorm = options.layer_norm()
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, input_ids: Array, token_type_ids: Array | None, rng: Array | None) -> Array:
        seq_length = input_ids.shape[-1]
        max_positions = self.position_embeddings.weight.shape[0]
        if seq_length > max_positions:
            raise ValueError(f"sequence length {seq_length} exceeds max_position_embeddings={max_positions}")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        position_ids = jnp.arange(seq_length)
        embeddings = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
                      + self.token_type_embeddings(token_type_ids))  # [batch, seq, hidden]
        return dropout(self.LayerNorm(embeddings), self.dropout_rate, rng)


class BertSelfAttention(nnx.Module):
    def __init__(self, options: ModuleFactory, keep_multihead_output: bool = False, pruned: set[int] = frozenset()):
        config = options.config  # BertConfig has checked that num_attention_heads divides hidden_size
        # Original indexes of the heads this layer still has (BERTology pruning removes some).
        self.kept_heads = tuple(h for h in range(config.num_attention_heads) if h not in pruned)
        self.num_attention_heads = len(self.kept_heads)
        self.head_dim = config.hidden_size // config.num_attention_heads
        width = self.num_attention_heads * self.head_dim
        # Column-split over "model" (Megatron): each device holds whole heads' Q/K/V columns.
        self.query = options.linear(config.hidden_size, width, axes=("embed", "heads"))
        self.key = options.linear(config.hidden_size, width, axes=("embed", "heads"))
        self.value = options.linear(config.hidden_size, width, axes=("embed", "heads"))
        self.dropout_rate = config.attention_probs_dropout_prob
        self.keep_multihead_output = keep_multihead_output
        self.multihead_output = nnx.data(None)

    def __call__(self, hidden: Array, bias: Array | None, head_mask: Array | None, rng: Array | None,
                 output_attentions: bool) -> tuple[Array, Array | None]:
        heads = self.num_attention_heads
        batch, seq = hidden.shape[:2]
        if heads == 0:  # every head pruned: the attention block adds only its output bias
            probs = jnp.zeros((batch, 0, seq, seq), hidden.dtype) if output_attentions else None
            return jnp.zeros((batch, seq, 0), hidden.dtype), probs
        if head_mask is not None and len(self.kept_heads) != head_mask.shape[-1]:
            head_mask = head_mask[jnp.asarray(self.kept_heads)]  # masks are indexed by original head
        query = split_heads(self.query(hidden), heads)  # [batch, seq, heads, head_dim]
        key = split_heads(self.key(hidden), heads)
        value = split_heads(self.value(hidden), heads)
        context, probs = attention(
            query, key, value, bias=bias, head_mask=head_mask, dropout_rate=self.dropout_rate,
            dropout_rng=rng, return_probs=output_attentions,
        )
        if self.keep_multihead_output:
            # The reference keeps [batch, heads, seq, head_dim] for BERTology scripts.
            self.multihead_output = nnx.Intermediate(jnp.swapaxes(context, 1, 2))
        return merge_heads(context), probs


class BertResidualOutput(nnx.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``: BertSelfOutput and BertOutput of the reference."""

    def __init__(self, options: ModuleFactory, in_features: int, in_axis: str):
        # Row-split: the inputs arrive split over "model" (heads or intermediate columns); one all-reduce out.
        self.dense = options.linear(in_features, options.config.hidden_size, axes=(in_axis, "embed"))
        self.LayerNorm = options.layer_norm()
        self.dropout_rate = options.config.hidden_dropout_prob

    def __call__(self, hidden: Array, residual: Array, rng: Array | None) -> Array:
        return self.LayerNorm(dropout(self.dense(hidden), self.dropout_rate, rng) + residual)


class BertAttention(nnx.Module):
    def __init__(self, options: ModuleFactory, keep_multihead_output: bool = False, pruned: set[int] = frozenset()):
        self.self = BertSelfAttention(options, keep_multihead_output, pruned)
        self.output = BertResidualOutput(options, self.self.num_attention_heads * self.self.head_dim, "heads")

    def prune(self, heads: set[int]) -> None:
        """Remove heads (original indexes) by slicing q/k/v output columns and the output dense's input rows."""
        attention = self.self
        kept = [h for h in attention.kept_heads if h not in heads]
        positions = [attention.kept_heads.index(h) for h in kept]
        columns = jnp.asarray(
            [p * attention.head_dim + d for p in positions for d in range(attention.head_dim)], dtype=jnp.int32
        )
        for linear in (attention.query, attention.key, attention.value):
            linear.weight.set_value(linear.weight[...][:, columns])  # [hidden, kept * head_dim]
            linear.bias.set_value(linear.bias[...][columns])
        dense = self.output.dense
        dense.weight.set_value(dense.weight[...][columns, :])  # [kept * head_dim, hidden]
        attention.kept_heads = tuple(kept)
        attention.num_attention_heads = len(kept)


class BertIntermediate(nnx.Module):
    def __init__(self, options: ModuleFactory):
        self.dense = options.linear(options.config.hidden_size, options.config.intermediate_size,
                                    axes=("embed", "mlp"))
        self.act = options.activation_fn()

    def __call__(self, hidden: Array) -> Array:
        return self.act(self.dense(hidden))


class BertLayer(nnx.Module):
    def __init__(self, options: ModuleFactory, keep_multihead_output: bool = False, pruned: set[int] = frozenset()):
        self.attention = BertAttention(options, keep_multihead_output, pruned)
        self.intermediate = BertIntermediate(options)
        self.output = BertResidualOutput(options, options.config.intermediate_size, "mlp")

    def __call__(self, hidden: Array, bias: Array | None, head_mask: Array | None, rng: Array | None,
                 output_attentions: bool = False) -> tuple[Array, Array | None]:
        context, probs = self.attention.self(hidden, bias, head_mask, fold_rng(rng, 0), output_attentions)
        attended = self.attention.output(context, hidden, fold_rng(rng, 1))
        out = self.output(self.intermediate(attended), attended, fold_rng(rng, 2))
        return out, probs  # [batch, seq, hidden], [batch, heads, seq, seq] or None


class EncoderOutput(NamedTuple):
    hidden_states: list[Array]  # every layer's [batch, seq, hidden] output, or only the last one's
    attentions: list[Array]  # per layer [batch, heads, seq, seq]; empty unless output_attentions


class BertEncoder(nnx.Module):
    """The layer stack (``layers.build_stack``): an ``nnx.List`` of layers, or with ``scan_layers`` one layer
    whose parameters have a leading ``[num_layers]`` axis, run by ``lax.scan``; ``remat`` recomputes each layer
    in the backward pass."""

    def __init__(self, options: ModuleFactory, keep_multihead_output: bool = False):
        config = options.config
        self.num_layers = config.num_hidden_layers
        self.scan_layers = bool(config.scan_layers)
        self.remat = remat_option(config)
        if keep_multihead_output and (self.scan_layers or self.remat):
            raise ValueError("keep_multihead_output needs scan_layers=False and remat=False")
        pruned = [config.pruned_heads_of(index) for index in range(self.num_layers)]
        if self.scan_layers and any(pruned):
            raise ValueError("pruned heads make layers differ in shape: they need scan_layers=False")
        self.layer = build_stack(lambda index: BertLayer(options, keep_multihead_output, pruned[index]),
                                 self.num_layers, scan=self.scan_layers)

    def __call__(self, hidden: Array, bias: Array | None, head_mask: Array | None, rng: Array | None,
                 output_all_encoded_layers: bool, output_attentions: bool) -> EncoderOutput:
        def body(layer, hidden, layer_head_mask, index):
            hidden, probs = layer(hidden, bias, layer_head_mask, fold_rng(rng, index), output_attentions)
            return hidden, (hidden if output_all_encoded_layers else None, probs)

        # Per layer: hidden [batch, seq, hidden], probs [batch, heads, seq, seq] (pruned layers have fewer heads).
        last, outputs = run_stack(self.layer, body, hidden, head_mask, scan=self.scan_layers, remat=self.remat,
                                  stack_outputs=False)
        all_hidden = [layer_hidden for layer_hidden, _ in outputs] if output_all_encoded_layers else [last]
        return EncoderOutput(all_hidden, [probs for _, probs in outputs] if output_attentions else [])


class BertPooler(nnx.Module):
    def __init__(self, options: ModuleFactory):
        self.dense = options.linear(options.config.hidden_size, options.config.hidden_size, axes=("embed", "embed"))

    def __call__(self, hidden: Array) -> Array:
        return jnp.tanh(self.dense(hidden[:, 0]))  # [batch, hidden]


# --------------------------------------------------------------------------------------------------------- heads


class BertPredictionHeadTransform(nnx.Module):
    def __init__(self, options: ModuleFactory):
        self.dense = options.linear(options.config.hidden_size, options.config.hidden_size, axes=("embed", "embed"))
        self.act = options.activation_fn()
        self.LayerNorm = options.layer_norm()

    def __call__(self, hidden: Array) -> Array:
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nnx.Module):
    """MLM decoder tied to the word embeddings (PyTorch's ``decoder.weight`` is the same tensor) plus a bias."""

    def __init__(self, options: ModuleFactory):
        self.transform = BertPredictionHeadTransform(options)
        self.bias = options.param((options.config.vocab_size,), axes=("vocab",), init=("constant", 0.0))

    def __call__(self, hidden: Array, word_embeddings: Embedding) -> Array:
        logits = word_embeddings.attend(self.transform(hidden))
        return logits + self.bias[...].astype(logits.dtype)  # [batch, seq, vocab]


class BertHeads(nnx.Module):
    """``cls`` of the reference: MLM predictions and/or the next-sentence classifier."""

    def __init__(self, options: ModuleFactory, masked_lm: bool, next_sentence: bool):
        self.predictions = BertLMPredictionHead(options) if masked_lm else None
        self.seq_relationship = (options.linear(options.config.hidden_size, 2, axes=("embed", "classes"))
                                 if next_sentence else None)


# -------------------------------------------------------------------------------------------------------- models


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    pretrained_model_archive_map = PRETRAINED_MODEL_ARCHIVE_MAP
    legacy_key_renames = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))
    buffer_key_patterns = (r"(^|\.)embeddings\.position_ids$",)
    legacy_config_names = ("bert_config.json",)
    tf_checkpoint_rules = "bert-tf"  # jaxformers/conversion/tables.py

    @classmethod
    def _new_factory(cls, config: BertConfig, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> ModuleFactory:
        return ModuleFactory(config, rngs, dtype, param_dtype, features=config.hidden_size,
                             layer_norm_eps=config.layer_norm_eps, init_std=config.initializer_range,
                             activation=config.hidden_act)

    def stacked_layers(self) -> dict[str, int]:
        if not self.config.scan_layers:
            return {}
        return {self._base_key_prefix() + "encoder.layer": self.config.num_hidden_layers}


class BertModel(BertPreTrainedModel):
    """Returns ``(encoded_layers, pooled_output)``, preceded by the attentions with ``output_attentions``.

    encoded_layers: the list of every layer's ``[batch, seq, hidden]`` output, or only the last one with
    ``output_all_encoded_layers=False``. pooled_output: ``[batch, hidden]``.
    """

    is_base_model = True

    def __init__(self, config: BertConfig, output_attentions: bool = False, keep_multihead_output: bool = False,
                 **kwargs: Any):
        options = self._factory(config, **kwargs)
        self._check_config(config)
        self.output_attentions = output_attentions
        self.embeddings = BertEmbeddings(options)
        self.encoder = BertEncoder(options, keep_multihead_output)
        self.pooler = BertPooler(options)

    def __call__(self, input_ids: Array, token_type_ids: Array | None = None, attention_mask: Array | None = None,
                 output_all_encoded_layers: bool = True, head_mask: Array | None = None, *,
                 dropout_rng: Array | None = None):
        input_ids = jnp.asarray(input_ids)
        rng = self._dropout_key(dropout_rng)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        dtype = self.embeddings.word_embeddings.dtype or jnp.float32
        bias = padding_bias(jnp.asarray(attention_mask), dtype)  # [batch, 1, 1, seq]
        head_mask = normalize_head_mask(head_mask, self.config.num_hidden_layers, self.config.num_attention_heads)
        hidden = self.embeddings(input_ids, None if token_type_ids is None else jnp.asarray(token_type_ids),
                                 fold_rng(rng, 0))
        encoded = self.encoder(hidden, bias, head_mask, fold_rng(rng, 1), output_all_encoded_layers,
                               self.output_attentions)
        pooled = self.pooler(encoded.hidden_states[-1])
        encoded_layers = encoded.hidden_states if output_all_encoded_layers else encoded.hidden_states[-1]
        if self.output_attentions:
            return encoded.attentions, encoded_layers, pooled
        return encoded_layers, pooled

    def prune_heads(self, heads_to_prune: dict[int, Sequence[int]]) -> None:
        """Remove attention heads in place: ``{layer: [original head indexes]}``, as pytorch-transformers does.

        The pruned model computes what the original computes with those heads masked to 0. The heads are recorded
        in ``config.pruned_heads``, so ``save_pretrained`` / ``from_pretrained`` rebuild the smaller layers.
        """
        if self.config.scan_layers:
            raise ValueError("prune_heads needs scan_layers=False (scanned layers must all have the same shape)")
        num_heads = self.config.num_attention_heads
        for layer, heads in heads_to_prune.items():
            layer = int(layer)
            if not 0 <= layer < self.config.num_hidden_layers:
                raise ValueError(f"layer {layer} out of range: the model has {self.config.num_hidden_layers} layers")
            bad = [h for h in heads if not 0 <= int(h) < num_heads]
            if bad:
                raise ValueError(f"layer {layer}: heads {bad} out of range (heads are 0..{num_heads - 1})")
            already = self.config.pruned_heads_of(layer)
            new = {int(h) for h in heads} - already
            if not new:
                continue
            self.encoder.layer[layer].attention.prune(new)
            pruned = {int(k): list(v) for k, v in self.config.pruned_heads.items()}
            pruned[layer] = sorted(already | new)
            self.config = dataclasses.replace(self.config, pruned_heads=pruned)  # configs are frozen

    def get_multihead_outputs(self) -> list[Array | None]:
        """Per layer, the ``[batch, heads, seq, head_dim]`` attention context of the last call
        (needs ``keep_multihead_output=True``)."""
        return [
            None if layer.attention.self.multihead_output is None else layer.attention.self.multihead_output[...]
            for layer in self.encoder.layer
        ]


# The pooler of the heads that read the sequence output: 0.6.x builds it, transformers does not.
UNUSED_POOLER = (r"^bert\.pooler\.",)


class HeadInputs(NamedTuple):
    """What a head model reads from ``BertModel``'s 0.6.x output tuple (``_encode``)."""

    attentions: list[Array] | None  # per layer [batch, heads, seq, seq]; None unless output_attentions
    sequence: Array  # [batch, seq, hidden], the last layer's
    pooled: Array  # [batch, hidden]
    rng: Array | None  # the head's dropout key (None in evaluation)


class _BertWithBase(BertPreTrainedModel):
    """Head models: ``self.bert`` plus task layers; hidden dropout before classifiers as in the reference."""

    def __init__(self, config: BertConfig, output_attentions: bool = False, keep_multihead_output: bool = False,
                 **kwargs: Any):
        options = self._factory(config, **kwargs)
        self._check_config(config)
        self.output_attentions = output_attentions
        self.bert = BertModel(config, output_attentions, keep_multihead_output, options=options)

    def _encode(self, input_ids, token_type_ids, attention_mask, head_mask, dropout_rng) -> HeadInputs:
        rng = self._dropout_key(dropout_rng)
        outputs = self.bert(input_ids, token_type_ids, attention_mask, output_all_encoded_layers=False,
                            head_mask=head_mask, dropout_rng=fold_rng(rng, 0))
        attentions = outputs[0] if self.output_attentions else None
        return HeadInputs(attentions, outputs[-2], outputs[-1], fold_rng(rng, 1))

    def _classify(self, features: Array, rng: Array | None) -> Array:
        return self.classifier(dropout(features, self.config.hidden_dropout_prob, rng))

    def _outputs(self, attentions, *outputs):
        if self.output_attentions:
            return (attentions, *outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_multihead_outputs(self) -> list[Array | None]:
        return self.bert.get_multihead_outputs()

    def prune_heads(self, heads_to_prune: dict[int, Sequence[int]]) -> None:
        self.bert.prune_heads(heads_to_prune)
        self.config = self.bert.config  # the base model made a new config with the pruned heads


class _BertWithHeads(_BertWithBase):
    """``self.bert`` plus ``cls``, the pre-training heads the class names (masked LM, next sentence, or both)."""

    masked_lm_head: ClassVar[bool] = True
    next_sentence_head: ClassVar[bool] = True

    def __init__(self, config: BertConfig, output_attentions: bool = False, keep_multihead_output: bool = False,
                 **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, output_attentions, keep_multihead_output, options=options)
        self.cls = BertHeads(options, masked_lm=self.masked_lm_head, next_sentence=self.next_sentence_head)


class BertForPreTraining(_BertWithHeads):
    """Masked-LM and next-sentence heads. With both label sets returns the summed loss, else
    ``(prediction_scores [batch, seq, vocab], seq_relationship_score [batch, 2])``."""

    tied_torch_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_labels=None,
                 next_sentence_label=None, head_mask=None, *, dropout_rng=None):
        base = self._encode(input_ids, token_type_ids, attention_mask, head_mask, dropout_rng)
        prediction_scores = self.cls.predictions(base.sequence, self.bert.embeddings.word_embeddings)
        seq_relationship_score = self.cls.seq_relationship(base.pooled)
        if masked_lm_labels is not None and next_sentence_label is not None:
            return (cross_entropy(prediction_scores, jnp.asarray(masked_lm_labels), ignore_index=-1)
                    + cross_entropy(seq_relationship_score, jnp.asarray(next_sentence_label), ignore_index=-1))
        return self._outputs(base.attentions, prediction_scores, seq_relationship_score)


class BertForMaskedLM(_BertWithHeads):
    """Masked-LM head; loss ignores label -1. Returns ``prediction_scores [batch, seq, vocab]`` or the loss."""

    tied_torch_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    unused_torch_keys = UNUSED_POOLER
    next_sentence_head = False

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_labels=None, head_mask=None,
                 *, dropout_rng=None):
        base = self._encode(input_ids, token_type_ids, attention_mask, head_mask, dropout_rng)
        prediction_scores = self.cls.predictions(base.sequence, self.bert.embeddings.word_embeddings)
        if masked_lm_labels is not None:
            return cross_entropy(prediction_scores, jnp.asarray(masked_lm_labels), ignore_index=-1)
        return self._outputs(base.attentions, prediction_scores)


class BertForNextSentencePrediction(_BertWithHeads):
    """Next-sentence head: ``seq_relationship_score [batch, 2]`` or the loss (ignore index -1)."""

    masked_lm_head = False

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, next_sentence_label=None,
                 head_mask=None, *, dropout_rng=None):
        base = self._encode(input_ids, token_type_ids, attention_mask, head_mask, dropout_rng)
        seq_relationship_score = self.cls.seq_relationship(base.pooled)
        if next_sentence_label is not None:
            return cross_entropy(seq_relationship_score, jnp.asarray(next_sentence_label), ignore_index=-1)
        return self._outputs(base.attentions, seq_relationship_score)


class _BertClassifier(_BertWithBase):
    """Dropout + linear classifier (``num_labels`` outputs) over the pooled or per-token output."""

    def __init__(self, config: BertConfig, num_labels: int = 2, output_attentions: bool = False,
                 keep_multihead_output: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, output_attentions, keep_multihead_output, options=options)
        self.num_labels = num_labels
        self.classifier = options.linear(config.hidden_size, num_labels, axes=("embed", "classes"))


class BertForSequenceClassification(_BertClassifier):
    """``logits [batch, num_labels]`` from the pooled output, or the cross-entropy loss given ``labels``."""

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, labels=None, head_mask=None, *,
                 dropout_rng=None):
        base = self._encode(input_ids, token_type_ids, attention_mask, head_mask, dropout_rng)
        logits = self._classify(base.pooled, base.rng)
        if labels is not None:
            return cross_entropy(logits.reshape(-1, self.num_labels), jnp.asarray(labels).reshape(-1))
        return self._outputs(base.attentions, logits)


class BertForMultipleChoice(_BertWithBase):
    """Inputs ``[batch, num_choices, seq]``; ``logits [batch, num_choices]`` or the loss given ``labels``."""

    def __init__(self, config: BertConfig, num_choices: int = 2, output_attentions: bool = False,
                 keep_multihead_output: bool = False, **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, output_attentions, keep_multihead_output, options=options)
        self.num_choices = num_choices
        self.classifier = options.linear(config.hidden_size, 1, axes=("embed", "classes"))  # one logit per choice

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, labels=None, head_mask=None, *,
                 dropout_rng=None):
        def flat(x):
            return None if x is None else jnp.asarray(x).reshape(-1, jnp.shape(x)[-1])

        base = self._encode(flat(input_ids), flat(token_type_ids), flat(attention_mask), head_mask, dropout_rng)
        logits = self._classify(base.pooled, base.rng).reshape(-1, self.num_choices)
        if labels is not None:
            return cross_entropy(logits, jnp.asarray(labels).reshape(-1))
        return self._outputs(base.attentions, logits)


class BertForTokenClassification(_BertClassifier):
    """``logits [batch, seq, num_labels]`` or the loss over positions where ``attention_mask == 1``."""

    unused_torch_keys = UNUSED_POOLER

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, labels=None, head_mask=None, *,
                 dropout_rng=None):
        base = self._encode(input_ids, token_type_ids, attention_mask, head_mask, dropout_rng)
        logits = self._classify(base.sequence, base.rng)
        if labels is not None:
            labels = jnp.asarray(labels)
            if attention_mask is not None:
                labels = jnp.where(jnp.asarray(attention_mask) == 1, labels, -100)
            return cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1), ignore_index=-100)
        return self._outputs(base.attentions, logits)


class BertForQuestionAnswering(_BertWithBase):
    """Span start/end ``logits [batch, seq]`` each, or the mean of the start and end losses.

    Positions outside the sequence are clamped to ``seq`` and ignored, as in the reference.
    """

    unused_torch_keys = UNUSED_POOLER

    def __init__(self, config: BertConfig, output_attentions: bool = False, keep_multihead_output: bool = False,
                 **kwargs: Any):
        options = self._factory(config, **kwargs)
        super().__init__(config, output_attentions, keep_multihead_output, options=options)
        self.qa_outputs = options.linear(config.hidden_size, 2, axes=("embed", "classes"))

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, start_positions=None,
                 end_positions=None, head_mask=None, *, dropout_rng=None):
        base = self._encode(input_ids, token_type_ids, attention_mask, head_mask, dropout_rng)
        logits = self.qa_outputs(base.sequence)  # [batch, seq, 2]
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.shape[1]

            def positions(x):
                x = jnp.asarray(x)
                return jnp.clip(x.reshape(x.shape[0]) if x.ndim > 1 else x, 0, ignored)

            start_loss = cross_entropy(start_logits, positions(start_positions), ignore_index=ignored)
            end_loss = cross_entropy(end_logits, positions(end_positions), ignore_index=ignored)
            return (start_loss + end_loss) / 2
        return self._outputs(base.attentions, start_logits, end_logits)


__all__: Sequence[str] = (
    "BertConfig",
    "BertModel",
    "BertForPreTraining",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForSequenceClassification",
    "BertForMultipleChoice",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "PRETRAINED_MODEL_ARCHIVE_MAP",
)

"""Rule tables of the foreign checkpoint formats: their variable names -> the PyTorch keys of our models.

Each table is read top to bottom by :func:`jaxformers.conversion.rules.apply_rules`; the first matching rule wins,
so a specific rule comes before a general one. ``TABLES`` names them for the model classes
(``PreTrainedModel.tf_checkpoint_rules``) and the converters.
"""

from __future__ import annotations

from .rules import Rule, RuleTable, squeeze_conv, transpose


def dense(tf_path: str, torch_path: str) -> tuple[Rule, Rule]:
    """A TF dense layer: ``<path>/kernel`` ``[in, out]`` (transposed) and ``<path>/bias``."""
    return Rule(f"{tf_path}/kernel", f"{torch_path}.weight", transpose), Rule(f"{tf_path}/bias", f"{torch_path}.bias")


def layer_norm(tf_path: str, torch_path: str) -> tuple[Rule, Rule]:
    """A TF layer norm: ``<path>/gamma`` (scale) and ``<path>/beta`` (offset)."""
    return Rule(f"{tf_path}/gamma", f"{torch_path}.weight"), Rule(f"{tf_path}/beta", f"{torch_path}.bias")


# ------------------------------------------------------------------------------ Google's BERT (bert_model.ckpt)

_BERT_LAYER = r"bert/encoder/layer_(\d+)/"
_BERT_LAYER_DENSE = "attention/self/query|attention/self/key|attention/self/value|attention/output/dense" \
                    "|intermediate/dense|output/dense"

BERT_TF = RuleTable("BERT TensorFlow", "BERT", (
    Rule(r"bert/embeddings/(word|position|token_type)_embeddings", "bert.embeddings.{1}_embeddings.weight"),
    *layer_norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm"),
    *dense(_BERT_LAYER + f"({_BERT_LAYER_DENSE})", "bert.encoder.layer.{1}.{2}"),
    *layer_norm(_BERT_LAYER + "(attention/output|output)/LayerNorm", "bert.encoder.layer.{1}.{2}.LayerNorm"),
    *dense("(bert/pooler/dense|cls/predictions/transform/dense)", "{1}"),
    *layer_norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm"),
    # The decoder weight is tied to the word embeddings; only its bias is saved.
    Rule("cls/predictions/output_bias", "cls.predictions.bias"),
    # output_weights is [2, hidden] already (used with transpose_b): no transpose.
    Rule("cls/seq_relationship/output_weights", "cls.seq_relationship.weight"),
    Rule("cls/seq_relationship/output_bias", "cls.seq_relationship.bias"),
))


# ------------------------------------------------------------- OpenAI's GPT-2 (model.ckpt) and GPT (numpy shards)

GPT_LAYER_CONVS = "attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj"


def gpt_layer_rules(suffix: str) -> tuple[Rule, ...]:
    """One GPT block, ``model/h3/mlp/c_fc/w`` ``[1, in, out]`` -> ``h.3.mlp.c_fc.weight`` ``[in, out]``; ``suffix``
    is ``":0"`` in OpenAI GPT's names (its file lists tensor names) and empty in GPT-2's (variable names)."""
    layer = r"model/h(\d+)/"
    return (
        Rule(layer + f"({GPT_LAYER_CONVS})/w{suffix}", "h.{1}.{2}.weight", squeeze_conv),
        Rule(layer + f"({GPT_LAYER_CONVS})/b{suffix}", "h.{1}.{2}.bias"),
        Rule(layer + f"(ln_1|ln_2)/g{suffix}", "h.{1}.{2}.weight"),
        Rule(layer + f"(ln_1|ln_2)/b{suffix}", "h.{1}.{2}.bias"),
    )


GPT2_TF = RuleTable("GPT-2 TensorFlow", "GPT", (
    Rule("model/(wte|wpe)", "{1}.weight"),
    Rule("model/ln_f/g", "ln_f.weight"),
    Rule("model/ln_f/b", "ln_f.bias"),
    *gpt_layer_rules(""),
))

# The release stores its one embedding table model/we:0 as two arrays, positions then tokens;
# conversion.readers.read_openai_checkpoint names them model/we/positions and model/we/tokens.
OPENAI_NUMPY = RuleTable("OpenAI GPT numpy", "GPT", (
    Rule("model/we/positions", "positions_embed.weight"),
    Rule("model/we/tokens", "tokens_embed.weight"),
    *gpt_layer_rules(":0"),
))


# -------------------------------------------------------------- Transformer-XL (kimiyoung/transformer-xl tf/model.py)

_XL_LAYER = r"transformer/layer_(\d+)/"
_XL_EMBED = "transformer/adaptive_embed/"
_XL_SOFTMAX = "transformer/adaptive_softmax/"

TRANSFO_XL_TF = RuleTable("Transformer-XL TensorFlow", "Transformer-XL", (
    # untie_r stacks one [n_head, d_head] bias per layer; otherwise one shared bias.
    Rule(r"transformer/(r_r_bias|r_w_bias)", "transformer.layers.{n}.dec_attn.{1}", ndim=3),
    Rule(r"transformer/(r_r_bias|r_w_bias)", "transformer.{1}"),
    Rule(_XL_LAYER + "rel_attn/(o|qkv|r)/kernel", "transformer.layers.{1}.dec_attn.{2}_net.weight", transpose),
    *layer_norm(_XL_LAYER + "rel_attn/LayerNorm", "transformer.layers.{1}.dec_attn.layer_norm"),
    *layer_norm(_XL_LAYER + "ff/LayerNorm", "transformer.layers.{1}.pos_ff.layer_norm"),
    *dense(_XL_LAYER + "ff/layer_1", "transformer.layers.{1}.pos_ff.CoreNet.0"),
    *dense(_XL_LAYER + "ff/layer_2", "transformer.layers.{1}.pos_ff.CoreNet.3"),
    # div_val == 1: one table (and projection) for the whole vocabulary; otherwise one per cutoff.
    Rule(_XL_EMBED + "lookup_table", "transformer.word_emb.emb_layers.0.weight"),
    Rule(_XL_EMBED + r"cutoff_(\d+)/lookup_table", "transformer.word_emb.emb_layers.{1}.weight"),
    # Without cutoffs the softmax reuses the input projection.
    Rule(_XL_EMBED + "proj_W", ("transformer.word_emb.emb_projs.0", "crit.out_projs.0"), transpose,
         if_present=_XL_SOFTMAX + "bias"),
    Rule(_XL_EMBED + "proj_W", "transformer.word_emb.emb_projs.0", transpose),
    Rule(_XL_EMBED + r"cutoff_(\d+)/proj_W", "transformer.word_emb.emb_projs.{1}", transpose),
    Rule(_XL_SOFTMAX + "bias", "crit.out_layers.0.bias"),
    # div_val == 1 with cutoffs: one output layer over the whole vocabulary, its bias saved per cluster.
    Rule(_XL_SOFTMAX + r"cutoff_(\d+)/b", "crit.out_layers.0.bias", if_present=_XL_EMBED + "lookup_table",
         merge=True),
    Rule(_XL_SOFTMAX + r"cutoff_(\d+)/b", "crit.out_layers.{1}.bias"),
    Rule(_XL_SOFTMAX + r"cutoff_(\d+)/proj", "crit.out_projs.{1}", transpose),
    Rule(_XL_SOFTMAX + r"cutoff_\d+/cluster_W", "crit.cluster_weight"),
    Rule(_XL_SOFTMAX + r"cutoff_\d+/cluster_b", "crit.cluster_bias"),
))

# Format name (as `jaxformers convert` spells it) -> table.
TABLES: dict[str, RuleTable] = {
    "bert-tf": BERT_TF,
    "gpt2-tf": GPT2_TF,
    "openai": OPENAI_NUMPY,
    "transfo-xl": TRANSFO_XL_TF,
}

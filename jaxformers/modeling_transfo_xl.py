"""0.6.x module path ``pytorch_pretrained_bert.modeling_transfo_xl``: the Transformer-XL names, re-exported from
``jaxformers.models.transfo_xl``. ``ABSENT`` names the 0.6.x public names left out on purpose and what replaces
them.
"""

from .modeling_utils import CONFIG_NAME
from .modeling_utils import TORCH_WEIGHTS_NAME as WEIGHTS_NAME
from .models.transfo_xl import (
    PRETRAINED_MODEL_ARCHIVE_MAP,
    AdaptiveEmbedding,
    PositionwiseFF,
    RelPartialLearnableDecoderLayer,
    RelPartialLearnableMultiHeadAttn,
    TransfoXLConfig,
    TransfoXLLMHeadModel,
    TransfoXLModel,
    TransfoXLPreTrainedModel,
)

PRETRAINED_CONFIG_ARCHIVE_MAP = PRETRAINED_MODEL_ARCHIVE_MAP
TF_WEIGHTS_NAME = "model.ckpt"

_ATTN_TYPES = "only attn_type=0 (relative positions, partially learnable biases) is implemented; every released " \
              "checkpoint uses it"
ABSENT = {
    "PositionalEmbedding": "a buffer, not parameters: jaxformers.models.transfo_xl.inverse_frequencies",
    "MultiHeadAttn": _ATTN_TYPES,
    "RelMultiHeadAttn": _ATTN_TYPES,
    "RelLearnableMultiHeadAttn": _ATTN_TYPES,
    "DecoderLayer": _ATTN_TYPES,
    "RelLearnableDecoderLayer": _ATTN_TYPES,
    "build_tf_to_pytorch_map": "jaxformers.conversion.tables.TRANSFO_XL_TF maps the TF names (a rule table)",
    "load_tf_weights_in_transfo_xl": "TransfoXLLMHeadModel.from_pretrained(path, from_tf=True) or `jaxformers "
                                     "convert transfo-xl`",
}

__all__ = [
    "AdaptiveEmbedding", "CONFIG_NAME", "PRETRAINED_CONFIG_ARCHIVE_MAP", "PRETRAINED_MODEL_ARCHIVE_MAP",
    "PositionwiseFF", "RelPartialLearnableDecoderLayer", "RelPartialLearnableMultiHeadAttn", "TF_WEIGHTS_NAME",
    "TransfoXLConfig", "TransfoXLLMHeadModel", "TransfoXLModel", "TransfoXLPreTrainedModel", "WEIGHTS_NAME",
]

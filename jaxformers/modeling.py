"""0.6.x module path ``pytorch_pretrained_bert.modeling``: the BERT names, re-exported from ``jaxformers.models.bert``.

Ported code changes only the package name (``from jaxformers.modeling import BertModel``). Internal modules
take the construction factory, not a config, so only the model classes are meant to be built directly.
``ABSENT`` names the 0.6.x public names left out on purpose and what replaces them.
"""

from .layers import ACTIVATIONS as ACT2FN
from .layers import LayerNorm as BertLayerNorm
from .layers import gelu_erf as gelu
from .modeling_utils import CONFIG_NAME
from .modeling_utils import TORCH_WEIGHTS_NAME as WEIGHTS_NAME
from .models.bert import (
    PRETRAINED_MODEL_ARCHIVE_MAP,
    BertAttention,
    BertConfig,
    BertEmbeddings,
    BertEncoder,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertIntermediate,
    BertLayer,
    BertLMPredictionHead,
    BertModel,
    BertPooler,
    BertPredictionHeadTransform,
    BertPreTrainedModel,
    BertSelfAttention,
)

BERT_CONFIG_NAME = "bert_config.json"
TF_WEIGHTS_NAME = "model.ckpt"
swish = ACT2FN["swish"]

ABSENT = {
    "BertSelfOutput": "BertResidualOutput (jaxformers.models.bert) is both residual outputs, attention and FFN",
    "BertOutput": "BertResidualOutput (jaxformers.models.bert) is both residual outputs, attention and FFN",
    "BertOnlyMLMHead": "BertHeads (jaxformers.models.bert) holds whichever of the MLM/NSP heads a model needs",
    "BertOnlyNSPHead": "BertHeads (jaxformers.models.bert) holds whichever of the MLM/NSP heads a model needs",
    "BertPreTrainingHeads": "BertHeads (jaxformers.models.bert) holds whichever of the MLM/NSP heads a model needs",
    "load_tf_weights_in_bert": "BertForPreTraining.from_pretrained(path, from_tf=True) or `jaxformers convert bert-tf`",
}

__all__ = [
    "ACT2FN", "BERT_CONFIG_NAME", "BertAttention", "BertConfig", "BertEmbeddings", "BertEncoder", "BertForMaskedLM",
    "BertForMultipleChoice", "BertForNextSentencePrediction", "BertForPreTraining", "BertForQuestionAnswering",
    "BertForSequenceClassification", "BertForTokenClassification", "BertIntermediate", "BertLMPredictionHead",
    "BertLayer", "BertLayerNorm", "BertModel", "BertPooler", "BertPreTrainedModel", "BertPredictionHeadTransform",
    "BertSelfAttention", "CONFIG_NAME", "PRETRAINED_MODEL_ARCHIVE_MAP", "TF_WEIGHTS_NAME", "WEIGHTS_NAME", "gelu",
    "swish",
]

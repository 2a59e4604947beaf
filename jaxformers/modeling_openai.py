"""0.6.x module path ``pytorch_pretrained_bert.modeling_openai``: the OpenAI GPT names, re-exported from
``jaxformers.models.openai_gpt`` (its blocks are GPT-2's). ``ABSENT`` names the 0.6.x public names left out on
purpose and what replaces them.
"""

from .layers import ACTIVATIONS
from .layers import gelu_tanh as gelu
from .modeling_utils import CONFIG_NAME
from .modeling_utils import TORCH_WEIGHTS_NAME as WEIGHTS_NAME
from .models.gpt2 import GPTAttention as Attention
from .models.gpt2 import GPTBlock as Block
from .models.gpt2 import GPTMLP as MLP
from .models.gpt2 import MultipleChoiceHead as OpenAIGPTMultipleChoiceHead
from .models.openai_gpt import (
    OPENAI_ACTIVATIONS,
    PRETRAINED_MODEL_ARCHIVE_MAP,
    OpenAIGPTConfig,
    OpenAIGPTDoubleHeadsModel,
    OpenAIGPTLMHeadModel,
    OpenAIGPTModel,
    OpenAIGPTPreTrainedModel,
)

PRETRAINED_CONFIG_ARCHIVE_MAP = PRETRAINED_MODEL_ARCHIVE_MAP
swish = ACTIVATIONS["swish"]
# The reference's afn name -> activation function ("gelu" is the tanh approximation there).
ACT_FNS = {name: ACTIVATIONS[ours] for name, ours in OPENAI_ACTIVATIONS.items()}

ABSENT = {
    "Conv1D": "jaxformers.layers.Linear with torch_layout=None (Conv1D's [in, out] weight is our Linear layout)",
    "OpenAIGPTLMHead": "the LM head is the tied token embedding, applied inside OpenAIGPTLMHeadModel",
    "load_tf_weights_in_openai_gpt": "OpenAIGPTModel.from_pretrained(folder, from_tf=True) or `jaxformers convert "
                                     "openai`",
}

__all__ = [
    "ACT_FNS", "Attention", "Block", "CONFIG_NAME", "MLP", "OpenAIGPTConfig", "OpenAIGPTDoubleHeadsModel",
    "OpenAIGPTLMHeadModel", "OpenAIGPTModel", "OpenAIGPTMultipleChoiceHead", "OpenAIGPTPreTrainedModel",
    "PRETRAINED_CONFIG_ARCHIVE_MAP", "PRETRAINED_MODEL_ARCHIVE_MAP", "WEIGHTS_NAME", "gelu", "swish",
]

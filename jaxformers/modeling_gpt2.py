"""0.6.x module path ``pytorch_pretrained_bert.modeling_gpt2``: the GPT-2 names, re-exported from
``jaxformers.models.gpt2``. ``ABSENT`` names the 0.6.x public names left out on purpose and what replaces them.
"""

from .layers import gelu_tanh as gelu
from .modeling_utils import CONFIG_NAME
from .modeling_utils import TORCH_WEIGHTS_NAME as WEIGHTS_NAME
from .models.gpt2 import (
    PRETRAINED_MODEL_ARCHIVE_MAP,
    GPT2Config,
    GPT2DoubleHeadsModel,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)
from .models.gpt2 import GPTAttention as Attention
from .models.gpt2 import GPTBlock as Block
from .models.gpt2 import GPTMLP as MLP
from .models.gpt2 import MultipleChoiceHead as GPT2MultipleChoiceHead

# The archives were URLs; both maps now give the hub repository of each shortcut name.
PRETRAINED_CONFIG_ARCHIVE_MAP = PRETRAINED_MODEL_ARCHIVE_MAP

ABSENT = {
    "Conv1D": "jaxformers.layers.Linear with torch_layout=None (Conv1D's [in, out] weight is our Linear layout)",
    "GPT2LMHead": "the LM head is the tied token embedding, applied inside GPT2LMHeadModel",
    "load_tf_weights_in_gpt2": "GPT2Model.from_pretrained(path, from_tf=True) or `jaxformers convert gpt2-tf`",
}

__all__ = [
    "Attention", "Block", "CONFIG_NAME", "GPT2Config", "GPT2DoubleHeadsModel", "GPT2LMHeadModel", "GPT2Model",
    "GPT2MultipleChoiceHead", "GPT2PreTrainedModel", "MLP", "PRETRAINED_CONFIG_ARCHIVE_MAP",
    "PRETRAINED_MODEL_ARCHIVE_MAP", "WEIGHTS_NAME", "gelu",
]

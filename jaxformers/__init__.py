"""jaxformers: JAX/Flax (nnx) reimplementation of pytorch-pretrained-bert 0.6.x."""

__version__ = "0.1.0"

from ._platform import default_jax_to_cpu_without_accelerator

default_jax_to_cpu_without_accelerator()  # before anything touches a backend: no TPU probing on CPU machines

from .file_utils import cached_path
from .models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from .models.gpt2 import (
    GPT2Cache,
    GPT2Config,
    GPT2DoubleHeadsModel,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)
from .models.openai_gpt import (
    OpenAIGPTConfig,
    OpenAIGPTDoubleHeadsModel,
    OpenAIGPTLMHeadModel,
    OpenAIGPTModel,
    OpenAIGPTPreTrainedModel,
)
from .models.transfo_xl import (
    TransfoXLConfig,
    TransfoXLLMHeadModel,
    TransfoXLModel,
    TransfoXLPreTrainedModel,
)
from .generation import Generator, filter_logits, generate, top_k_filter, top_p_filter
from .tokenizers.bert import BasicTokenizer, BertTokenizer, WordpieceTokenizer
from .tokenizers.gpt2 import GPT2Tokenizer
from .tokenizers.openai_gpt import OpenAIGPTTokenizer
from .optimization import (
    SCHEDULES,
    BertAdam,
    ConstantLR,
    OpenAIAdam,
    WarmupConstantSchedule,
    WarmupCosineSchedule,
    WarmupCosineWithHardRestartsSchedule,
    WarmupCosineWithWarmupRestartsSchedule,
    WarmupLinearSchedule,
    get_schedule,
    weight_decay_mask,
)
from .tokenizers.transfo_xl import (
    LMMultiFileIterator,
    LMOrderedIterator,
    LMShuffledIterator,
    TransfoXLCorpus,
    TransfoXLTokenizer,
)
from .safe_pickle import UnsafePickleError
from .auto import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from .sentence_embeddings import SentenceEmbedder, mean_pooling, sentence_embeddings

__all__ = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForMultipleChoice",
    "AutoModelForPreTraining",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoTokenizer",
    "BasicTokenizer",
    "BertAdam",
    "BertConfig",
    "BertForMaskedLM",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertTokenizer",
    "ConstantLR",
    "GPT2Cache",
    "GPT2Config",
    "GPT2DoubleHeadsModel",
    "GPT2LMHeadModel",
    "GPT2Model",
    "GPT2PreTrainedModel",
    "GPT2Tokenizer",
    "Generator",
    "LMMultiFileIterator",
    "LMOrderedIterator",
    "LMShuffledIterator",
    "OpenAIAdam",
    "OpenAIGPTConfig",
    "OpenAIGPTDoubleHeadsModel",
    "OpenAIGPTLMHeadModel",
    "OpenAIGPTModel",
    "OpenAIGPTPreTrainedModel",
    "OpenAIGPTTokenizer",
    "SCHEDULES",
    "SentenceEmbedder",
    "TransfoXLConfig",
    "TransfoXLCorpus",
    "TransfoXLLMHeadModel",
    "TransfoXLModel",
    "TransfoXLPreTrainedModel",
    "TransfoXLTokenizer",
    "UnsafePickleError",
    "WarmupConstantSchedule",
    "WarmupCosineSchedule",
    "WarmupCosineWithHardRestartsSchedule",
    "WarmupCosineWithWarmupRestartsSchedule",
    "WarmupLinearSchedule",
    "WordpieceTokenizer",
    "cached_path",
    "filter_logits",
    "generate",
    "get_schedule",
    "mean_pooling",
    "sentence_embeddings",
    "top_k_filter",
    "top_p_filter",
    "weight_decay_mask",
]

"""jaxformers: JAX/Flax (nnx) reimplementation of pytorch-pretrained-bert 0.6.x."""

__version__ = "0.1.0"

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
from .tokenizers.bert import BasicTokenizer, BertTokenizer, WordpieceTokenizer
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
    UnsafePickleError,
)

"""0.6.x module path ``pytorch_pretrained_bert.tokenization_openai``: the OpenAI GPT tokenizer, re-exported from
``jaxformers.tokenizers.openai_gpt`` (file names shared with GPT-2's)."""

from .tokenizers.gpt2 import MERGES_NAME, SPECIAL_TOKENS_NAME, VOCAB_NAME
from .tokenizers.openai_gpt import (
    PRETRAINED_MERGES_ARCHIVE_MAP,
    PRETRAINED_VOCAB_ARCHIVE_MAP,
    PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP,
    OpenAIGPTTokenizer,
    text_standardize,
)

ABSENT = {"get_pairs": "BPE merging is jaxformers.tokenizers.gpt2.merge_symbols (ranks pairs without a pair set)"}

__all__ = [
    "MERGES_NAME", "OpenAIGPTTokenizer", "PRETRAINED_MERGES_ARCHIVE_MAP", "PRETRAINED_VOCAB_ARCHIVE_MAP",
    "PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP", "SPECIAL_TOKENS_NAME", "VOCAB_NAME", "text_standardize",
]

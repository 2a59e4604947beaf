"""0.6.x module path ``pytorch_pretrained_bert.tokenization_gpt2``: the GPT-2 tokenizer, re-exported from
``jaxformers.tokenizers.gpt2``."""

from .tokenizers.gpt2 import (
    MERGES_NAME,
    PRETRAINED_MERGES_ARCHIVE_MAP,
    PRETRAINED_VOCAB_ARCHIVE_MAP,
    PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP,
    SPECIAL_TOKENS_NAME,
    VOCAB_NAME,
    GPT2Tokenizer,
    bytes_to_unicode,
)

ABSENT = {"get_pairs": "BPE merging is jaxformers.tokenizers.gpt2.merge_symbols (ranks pairs without a pair set)"}

__all__ = [
    "GPT2Tokenizer", "MERGES_NAME", "PRETRAINED_MERGES_ARCHIVE_MAP", "PRETRAINED_VOCAB_ARCHIVE_MAP",
    "PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP", "SPECIAL_TOKENS_NAME", "VOCAB_NAME", "bytes_to_unicode",
]

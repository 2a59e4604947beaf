"""0.6.x module path ``pytorch_pretrained_bert.tokenization``: the BERT tokenizers, re-exported from
``jaxformers.tokenizers.bert``."""

from .tokenizers.bert import (
    PRETRAINED_VOCAB_ARCHIVE_MAP,
    PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP,
    VOCAB_NAME,
    BasicTokenizer,
    BertTokenizer,
    WordpieceTokenizer,
    load_vocab,
    whitespace_tokenize,
)

ABSENT: dict[str, str] = {}

__all__ = [
    "BasicTokenizer", "BertTokenizer", "PRETRAINED_VOCAB_ARCHIVE_MAP", "PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP",
    "VOCAB_NAME", "WordpieceTokenizer", "load_vocab", "whitespace_tokenize",
]

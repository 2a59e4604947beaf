"""0.6.x module path ``pytorch_pretrained_bert.tokenization_transfo_xl``: the Transformer-XL tokenizer, corpus and
LM iterators, re-exported from ``jaxformers.tokenizers.transfo_xl``."""

from .tokenizers.transfo_xl import (
    CORPUS_NAME,
    PRETRAINED_CORPUS_ARCHIVE_MAP,
    PRETRAINED_VOCAB_ARCHIVE_MAP,
    VOCAB_NAME,
    LMMultiFileIterator,
    LMOrderedIterator,
    LMShuffledIterator,
    TransfoXLCorpus,
    TransfoXLTokenizer,
)

ABSENT = {
    "get_lm_corpus": "TransfoXLCorpus(...).build_corpus(path, dataset) builds one; it pickles no cache file "
                     "(0.6.x wrote cache.pt with torch.save)",
}

__all__ = [
    "CORPUS_NAME", "LMMultiFileIterator", "LMOrderedIterator", "LMShuffledIterator", "PRETRAINED_CORPUS_ARCHIVE_MAP",
    "PRETRAINED_VOCAB_ARCHIVE_MAP", "TransfoXLCorpus", "TransfoXLTokenizer", "VOCAB_NAME",
]

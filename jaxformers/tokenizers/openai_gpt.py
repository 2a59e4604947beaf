"""OpenAI GPT's BPE tokenizer (lower-cased words, end-of-word marker ``</w>``).

Semantics follow ``pytorch_pretrained_bert.tokenization_openai`` 0.6.2. Words come from spaCy's English tokenizer
after ftfy's text repair and `text_standardize` when both packages are installed (the original OpenAI
pipeline), otherwise from BERT's `BasicTokenizer` (lower-casing, accent stripping, punctuation splitting).
Each word is then split into BPE tokens; the last token of a word carries ``</w>``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable, Sequence

from jaxformers.tokenizers.gpt2 import (
    MERGES_NAME,
    NO_MAX_LEN,
    VOCAB_NAME,
    BPETokenizerBase,
    PieceCache,
    merge_symbols,
    vocab_and_merges,
)

logger = logging.getLogger(__name__)

_HUB = "https://huggingface.co"
OPENAI_GPT_SHORTCUT_NAMES = ("openai-gpt",)
# openai-community/ holds the OpenAI GPT repository today (see file_utils.SHORTCUT_REPOS).
_REPO = "openai-community"
PRETRAINED_VOCAB_ARCHIVE_MAP = {n: f"{_HUB}/{_REPO}/{n}/resolve/main/{VOCAB_NAME}" for n in OPENAI_GPT_SHORTCUT_NAMES}
PRETRAINED_MERGES_ARCHIVE_MAP = {n: f"{_HUB}/{_REPO}/{n}/resolve/main/{MERGES_NAME}" for n in OPENAI_GPT_SHORTCUT_NAMES}
PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP = {"openai-gpt": 512}

END_OF_WORD = "</w>"

# Runs of these characters become separate, space-delimited words before spaCy sees the text.
_ISOLATED_RUN_CHARS = "-~!\";?+,)(\\/*[]}{|_"
_ISOLATED_RUNS = re.compile("(" + "|".join(re.escape(char) + "+" for char in _ISOLATED_RUN_CHARS) + ")")
_NEWLINE_WITH_SPACES = re.compile(r"\s*\n\s*")
_SPACES_EXCEPT_NEWLINE = re.compile(r"[^\S\n]+")
_TYPOGRAPHIC_REPLACEMENTS = (("—", "-"), ("–", "-"), ("―", "-"), ("…", "..."), ("´", "'"))

# `decode(clean_up_tokenization_spaces=True)`: glue punctuation and English clitics back, in this order.
_CLEAN_UP_REPLACEMENTS = (
    ("<unk>", ""), (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


def text_standardize(text: str) -> str:
    """The whitespace and punctuation normalisation OpenAI applied to BooksCorpus before spaCy."""
    for old, new in _TYPOGRAPHIC_REPLACEMENTS:
        text = text.replace(old, new)
    text = _ISOLATED_RUNS.sub(r" \1 ", text)
    text = _NEWLINE_WITH_SPACES.sub(" \n ", text)
    text = _SPACES_EXCEPT_NEWLINE.sub(" ", text)
    return text.strip()


def _load_spacy_and_ftfy():
    """(spaCy English pipeline, ftfy.fix_text), or None when either package is missing."""
    try:
        import ftfy
        import spacy
    except ImportError:
        return None
    disabled = ["parser", "tagger", "ner", "textcat"]
    try:
        nlp = spacy.load("en", disable=disabled)  # spaCy 2 shortcut, what 0.6.x used
    except OSError:
        # spaCy >= 3 dropped the "en" shortcut; its blank English pipeline has the same tokenizer rules.
        from spacy.lang.en import English

        nlp = English()
    return nlp, ftfy.fix_text


class OpenAIGPTTokenizer(BPETokenizerBase):
    """OpenAI GPT's BPE tokenizer.

    Args:
        vocab_file: ``vocab.json``, BPE token string -> id.
        merges_file: ``merges.txt``, merge pairs by priority.
        special_tokens: extra tokens (e.g. ``"_classify_"``), given ids after the vocabulary; with the BERT
            fallback they are also protected from lower-casing and punctuation splitting.
        max_len: sequences longer than this log a warning in `convert_tokens_to_ids`/`encode`.
        unk_token: ``<unk>``; pad_token: the token a batch call pads with (None: it cannot pad).
    """

    pretrained_vocab_files = PRETRAINED_VOCAB_ARCHIVE_MAP
    pretrained_merges_files = PRETRAINED_MERGES_ARCHIVE_MAP
    max_model_input_sizes = PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        merges_file: str | os.PathLike,
        special_tokens: Sequence[str] | None = None,
        max_len: int | None = None,
        *,
        unk_token: str = "<unk>",
        pad_token: str | None = None,
    ) -> None:
        spacy_and_ftfy = _load_spacy_and_ftfy()
        if spacy_and_ftfy is not None:
            self.nlp, self.fix_text = spacy_and_ftfy
        else:
            from jaxformers.tokenizers.bert import BasicTokenizer  # lazy: only this fallback needs it

            logger.warning("ftfy or spacy is not installed: using BERT's BasicTokenizer instead of SpaCy & ftfy.")
            self.nlp = BasicTokenizer(do_lower_case=True, never_split=list(special_tokens or ()))
            self.fix_text = None

        self.max_len = max_len if max_len is not None else NO_MAX_LEN
        self.encoder, self.bpe_ranks = vocab_and_merges(vocab_file, merges_file)
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.unk_token, self.pad_token = unk_token, pad_token
        self._word_tokens = PieceCache(self._bpe_word)  # word -> tuple of BPE tokens
        self.set_special_tokens(special_tokens)

    def _special_tokens_changed(self) -> None:
        if self.fix_text is None:
            # Keep special tokens whole (and in their case) in BasicTokenizer. Unlike 0.6.x, removing the
            # special tokens also removes that protection.
            self.nlp.never_split = list(self.special_tokens)

    def _bpe_word(self, word: str) -> tuple[str, ...]:
        if not word:
            return ()
        symbols = merge_symbols([*word[:-1], word[-1] + END_OF_WORD], self.bpe_ranks)
        joined = " ".join(symbols)
        if joined == "\n  </w>":
            joined = "\n</w>"  # the spaCy newline token "\n " ends as one newline token, as in 0.6.x
        # Splitting the joined form (rather than using `symbols`) reproduces 0.6.x on words holding spaces.
        return tuple(joined.split(" "))

    def bpe(self, token: str) -> str:
        """BPE of one word; tokens joined by spaces, the last one ending in ``</w>`` (0.6.x API)."""
        return " ".join(self._word_tokens[token])

    def _words(self, text: str) -> list[str]:
        if self.fix_text is None:
            return self.nlp.tokenize(text)
        return [token.text.lower() for token in self.nlp(text_standardize(self.fix_text(text)))]

    def tokenize(self, text: str) -> list[str]:
        """Split text into BPE token strings (lower-cased; word ends marked with ``</w>``)."""
        word_tokens = self._word_tokens
        tokens: list[str] = []
        for word in self._words(text):
            tokens.extend(word_tokens[word])
        return tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: ``convert_tokens_to_ids(tokenize(text))``."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = True) -> str:
        """Text of a sequence of ids: word ends become spaces; optionally re-attach punctuation and clitics."""
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        text = "".join(tokens).replace(END_OF_WORD, " ").strip()
        if clean_up_tokenization_spaces:
            for old, new in _CLEAN_UP_REPLACEMENTS:
                text = text.replace(old, new)
        return text

    def __repr__(self) -> str:
        pre_tokenizer = "BasicTokenizer" if self.fix_text is None else "spaCy+ftfy"
        return f"{type(self).__name__}(vocab_size={len(self.encoder)}, special_tokens={len(self.special_tokens)}, " \
               f"pre_tokenizer={pre_tokenizer})"


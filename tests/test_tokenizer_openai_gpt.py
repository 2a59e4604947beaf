"""OpenAIGPTTokenizer: parity with pytorch_pretrained_bert 0.6.2 on a vocabulary learned in the test, with the
BERT BasicTokenizer fallback and with the spaCy/ftfy branch (stand-in modules, or the real ones if installed)."""

from __future__ import annotations

import collections
import functools
import json
import logging
import re
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from local_hub import LocalHub

reference_module = pytest.importorskip("pytorch_pretrained_bert.tokenization_openai")
from pytorch_pretrained_bert.tokenization import (
    BasicTokenizer as ReferenceBasicTokenizer,  # noqa: E402
)

from jaxformers.tokenizers.openai_gpt import OpenAIGPTTokenizer, text_standardize  # noqa: E402

TRAINING_TEXT = """
The tokenizer splits text into words, lower-cases them, and then applies byte pair encoding. Byte pair encoding
starts from single characters and repeatedly merges the most frequent adjacent pair of symbols. The merges learned
on a large corpus let frequent words become single tokens, while rare words are split into smaller pieces.
It's common for a word like "tokenization" to be split into "token" and "ization"; they'll be joined back when
decoding. We'd expect numbers such as 1990, 2019 and 3.14 to be split into digits. Don't worry: it isn't hard!
Generative pre-training of a language model on a diverse corpus of unlabeled text, followed by discriminative
fine-tuning on each specific task, gives large gains on natural language understanding benchmarks. The model
is a multi-layer transformer decoder; it was trained on the BooksCorpus dataset, which contains over seven
thousand unique unpublished books from a variety of genres including adventure, fantasy, and romance.
Crucially, it contains long stretches of contiguous text, which allows the generative model to learn to
condition on long-range information. Questions? Answers! Semicolons; colons: dashes - and (parentheses).
"""

SAMPLES = [
    "Hello world!",
    "The tokenizer splits text into words, and then applies byte pair encoding.",
    "It's common; they'll say we'd expect it. Don't worry: it isn't hard! I'm sure you've seen they're here.",
    "UPPER case Words And MiXeD CaSe",
    "Numbers 1990, 2019 and 3.14 — also 1,000,000…",
    "Accents: café naïve résumé coöperate Ångström",
    "CJK 日本語 and 中文 characters are split one by one",
    "punctuation!!! ??? ((nested)) [brackets] {braces} \"quotes\" 'single' --dashes-- __under__",
    "new\nlines\n\nand\ttabs   and  spaces",
    "rare words: antidisestablishmentarianism supercalifragilistic zyzzyva",
    "unknown characters: ☃ ✓ 😀 →",
    "",
    "   ",
    "a",
]

SPECIAL_TOKENS = ["_start_", "_delimiter_", "_classify_"]


def learn_bpe(word_counts: collections.Counter, merges: int) -> list[tuple[str, str]]:
    """Tiny OpenAI-style BPE learner: symbols are characters, the last one of a word carries </w>."""
    words = {tuple(word[:-1]) + (word[-1] + "</w>",): count for word, count in word_counts.items()}
    learned = []
    for _ in range(merges):
        pair_counts: collections.Counter = collections.Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = max(pair_counts, key=lambda pair: (pair_counts[pair], pair))  # ties: deterministic
        learned.append(best)
        fused_words: collections.Counter = collections.Counter()
        for symbols, count in words.items():
            fused, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    fused.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    fused.append(symbols[i])
                    i += 1
            fused_words[tuple(fused)] += count
        words = fused_words
    return learned


@functools.cache
def _learned_files() -> tuple[str, str]:
    words = ReferenceBasicTokenizer(do_lower_case=True, never_split=[]).tokenize(TRAINING_TEXT * 3)
    merges = learn_bpe(collections.Counter(words), merges=300)
    assert len(merges) == 300
    characters = sorted({char for word in words for char in word})
    vocab_tokens = ["<unk>"] + characters + [c + "</w>" for c in characters] + [a + b for a, b in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    return json.dumps(vocab, ensure_ascii=False), "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("openai_vocab")
    vocab_text, merges_text = _learned_files()
    (folder / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


@pytest.fixture()
def no_spacy(monkeypatch):
    # Make sure the BERT fallback is exercised even on a machine that has spaCy and ftfy.
    monkeypatch.setitem(sys.modules, "spacy", None)
    monkeypatch.setitem(sys.modules, "ftfy", None)


def make_pair(files, **kwargs):
    return (OpenAIGPTTokenizer(*files, **kwargs), reference_module.OpenAIGPTTokenizer(*files, **kwargs))


def assert_same_behaviour(ours, reference, text: str) -> None:
    tokens = ours.tokenize(text)
    assert tokens == reference.tokenize(text), text
    ids = ours.encode(text)
    assert ids == reference.encode(text), text
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    for clean_up in (True, False):
        assert ours.decode(ids, clean_up_tokenization_spaces=clean_up) == reference.decode(
            ids, clean_up_tokenization_spaces=clean_up), text


# --------------------------------------------------------------------------------------------------------------
# BERT BasicTokenizer fallback (ftfy/spaCy missing)
# --------------------------------------------------------------------------------------------------------------


def test_learned_vocabulary_is_realistic(files, no_spacy):
    ours = OpenAIGPTTokenizer(*files)
    assert ours.fix_text is None
    tokens = ours.tokenize("the tokenizer")
    assert tokens[0] == "the</w>"  # frequent words become one token
    assert all(token in ours.encoder for token in tokens)


@pytest.mark.parametrize("text", SAMPLES)
def test_matches_reference(files, no_spacy, text):
    ours, reference = make_pair(files)
    assert_same_behaviour(ours, reference, text)


def test_matches_reference_on_prose(files, no_spacy):
    import inspect

    ours, reference = make_pair(files)
    text = "\n".join(inspect.getdoc(member) or "" for _, member in inspect.getmembers(collections))
    assert len(text) > 5000
    assert_same_behaviour(ours, reference, text)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("theokniz sarTHE.,!'-_\n\té日😀0")), max_size=60))
def test_property_matches_reference(files, text):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "spacy", None)
        patch.setitem(sys.modules, "ftfy", None)
        ours, reference = make_pair(files)
    assert_same_behaviour(ours, reference, text)


def test_special_tokens_match_reference(files, no_spacy):
    ours, reference = make_pair(files, special_tokens=SPECIAL_TOKENS)
    base = len(ours.encoder)
    assert ours.special_tokens == reference.special_tokens == {
        "_start_": base, "_delimiter_": base + 1, "_classify_": base + 2}
    assert len(ours) == len(reference) == base + 3
    text = "_start_ The Tokenizer _delimiter_ splits WORDS _classify_"
    assert_same_behaviour(ours, reference, text)
    ids = [base] + ours.encode("the tokenizer") + [base + 1, base + 2]
    for skip in (False, True):
        assert ours.convert_ids_to_tokens(ids, skip) == reference.convert_ids_to_tokens(ids, skip)
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
    assert ours.convert_tokens_to_ids("_classify_") == reference.convert_tokens_to_ids("_classify_") == base + 2

    # Set later instead of at construction: same result.
    later, reference_later = make_pair(files)
    later.set_special_tokens(SPECIAL_TOKENS)
    reference_later.set_special_tokens(SPECIAL_TOKENS)
    assert_same_behaviour(later, reference_later, text)


def test_removing_special_tokens_removes_their_protection(files, no_spacy):
    # Documented difference: 0.6.2 kept protecting removed special tokens from lower-casing and splitting.
    ours = OpenAIGPTTokenizer(*files, special_tokens=["_Start_"])
    assert ours.nlp.tokenize("_Start_ x") == ["_Start_", "x"]
    ours.set_special_tokens([])
    assert ours.special_tokens == {}
    assert ours.nlp.tokenize("_Start_ x") == ["_", "start", "_", "x"]


def test_bpe_method_matches_reference(files, no_spacy):
    ours, reference = make_pair(files)
    for word in ["tokenizer", "the", "a", "zyzzyva", "\n ", "1990", "日"]:
        assert ours.bpe(word) == reference.bpe(word), word
    assert ours.bpe("\n ") == "\n</w>"


def test_text_standardize_matches_reference():
    samples = SAMPLES + [
        "a—b–c―d…e´f", "--x~~y!!z\"\";;??++,,))((\\\\//**[[]]}}{{||__", "  many \n\n  lines \t here \r\n end ",
        "price: $5 (approx.) / unit * 2 [sic] {x} | y_z",
    ]
    for text in samples:
        assert text_standardize(text) == reference_module.text_standardize(text), text


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab -~!\";?+,)(\\/*[]}{|_\n\t\r\u00a0—–―…´.")), max_size=40))
def test_property_text_standardize(text):
    assert text_standardize(text) == reference_module.text_standardize(text)


def test_long_sequences_warn(files, no_spacy, caplog):
    ours = OpenAIGPTTokenizer(*files, max_len=2)
    with caplog.at_level(logging.WARNING):
        ours.encode("the tokenizer splits text")
    assert any("> 2" in record.getMessage() for record in caplog.records if record.name.startswith("jaxformers"))


def test_unknown_id_error_names_the_id(files, no_spacy):
    with pytest.raises(KeyError, match="123456"):
        OpenAIGPTTokenizer(*files).decode([1, 123456])


# --------------------------------------------------------------------------------------------------------------
# spaCy + ftfy branch
# --------------------------------------------------------------------------------------------------------------


class _FakeToken:
    def __init__(self, text: str) -> None:
        self.text = text


class _FakeEnglish:
    """Stand-in for spaCy's English tokenizer: words, punctuation marks and newline tokens ("\\n ")."""

    def __call__(self, text: str) -> list[_FakeToken]:
        return [_FakeToken(piece) for piece in re.findall(r"\n |\w+|[^\w\s]", text)]


@pytest.fixture()
def fake_spacy(monkeypatch):
    calls = []
    spacy = types.ModuleType("spacy")

    def load(name, disable=()):
        calls.append((name, list(disable)))
        return _FakeEnglish()

    spacy.load = load
    ftfy = types.ModuleType("ftfy")
    ftfy.fix_text = lambda text: text.replace("â€™", "'").replace("\ufb01", "fi")  # a mojibake fix, a ligature
    monkeypatch.setitem(sys.modules, "spacy", spacy)
    monkeypatch.setitem(sys.modules, "ftfy", ftfy)
    return calls


def test_spacy_branch_matches_reference(files, fake_spacy):
    ours, reference = make_pair(files, special_tokens=SPECIAL_TOKENS)
    assert ours.fix_text is not None
    assert fake_spacy[0] == fake_spacy[1] == ("en", ["parser", "tagger", "ner", "textcat"])
    extra = ["It\u00e2\u20ac\u2122s \ufb01ne —\nreally…\n\n  new   paragraph", "_start_ Hi _classify_"]
    for text in SAMPLES + extra:
        assert_same_behaviour(ours, reference, text)
    tokens = ours.tokenize("a\nb")
    assert "\n</w>" in tokens  # the newline quirk of 0.6.x is reproduced


def test_real_spacy_and_ftfy_if_installed(files):
    pytest.importorskip("ftfy")
    pytest.importorskip("spacy")
    ours = OpenAIGPTTokenizer(*files)
    assert ours.fix_text is not None
    tokens = ours.tokenize("Hello World, the tokenizer!")
    assert "".join(tokens).replace("</w>", " ").split() == ["hello", "world", ",", "the", "tokenizer", "!"]
    try:
        reference = reference_module.OpenAIGPTTokenizer(*files)
    except OSError:  # spaCy >= 3 has no "en" shortcut: the reference cannot be built, ours falls back
        return
    assert_same_behaviour(ours, reference, "Hello World, the tokenizer!\n\nIt's new — really…")


# --------------------------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------------------------


def test_save_and_reload_round_trip(files, no_spacy, tmp_path):
    ours = OpenAIGPTTokenizer(*files, special_tokens=SPECIAL_TOKENS)
    ours.save_vocabulary(tmp_path)
    reloaded = OpenAIGPTTokenizer.from_pretrained(tmp_path)
    assert reloaded.special_tokens == ours.special_tokens
    assert reloaded.encoder == ours.encoder and reloaded.bpe_ranks == ours.bpe_ranks
    text = "_start_ " + SAMPLES[2] + " _classify_"
    assert reloaded.encode(text) == ours.encode(text)
    assert Path(tmp_path / "merges.txt").read_text(encoding="utf-8") == Path(files[1]).read_text(encoding="utf-8")

    by_reference = reference_module.OpenAIGPTTokenizer.from_pretrained(str(tmp_path))
    assert by_reference.special_tokens == ours.special_tokens
    assert by_reference.encode(text) == ours.encode(text)


def test_from_pretrained_shortcut_downloads_and_caps_max_len(files, no_spacy, tmp_path, monkeypatch):
    folder = tmp_path / "hub" / "openai-community" / "openai-gpt"  # the shortcut's repository today
    folder.mkdir(parents=True)
    vocab_text, merges_text = _learned_files()
    (folder / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        tokenizer = OpenAIGPTTokenizer.from_pretrained("openai-gpt", cache_dir=tmp_path / "cache")
    assert tokenizer.max_len == 512
    assert tokenizer.encode(SAMPLES[1]) == OpenAIGPTTokenizer(*files).encode(SAMPLES[1])


def test_from_pretrained_unknown_name_names_it(tmp_path):
    with pytest.raises(OSError, match="not-a-model"):
        OpenAIGPTTokenizer.from_pretrained(str(tmp_path / "not-a-model"))

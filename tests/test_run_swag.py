"""examples/run_swag.py: SWAG CSV reading, multiple-choice features, and the script end to end on tiny CSV files
in the real SWAG layout with a tiny random BERT."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"


run_swag = load_script("examples/run_swag.py")

# The real files start with an unnamed index column.
HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source", "ending0", "ending1",
          "ending2", "ending3", "label"]
TRAIN = [
    ("The chef cracks two eggs into a bowl.", "He", ["whisks them with a fork.", "jumps into the pool.",
                                                      "drives the car away.", "paints the fence blue."], 0),
    ("A girl stands at the edge of the pool.", "She", ["bakes a cake.", "dives into the water.",
                                                        "reads a newspaper.", "climbs a tree."], 1),
    ("The man puts the key in the car.", "He", ["swims across the lake.", "whisks the eggs.",
                                                 "starts the engine and drives away.", "plays the violin."], 2),
    ("A boy holds a brush near the fence.", "He", ["dives into the pool.", "starts the engine.",
                                                    "cracks an egg.", "paints the fence with long strokes."], 3),
    ("The woman opens her violin case.", "She", ["plays a slow song.", "drives the car.", "climbs the fence.",
                                                  "whisks the eggs."], 0),
    ("A kid runs toward the big tree.", "He", ["reads the newspaper.", "climbs up to the first branch.",
                                                "bakes bread.", "plays the violin."], 1),
]
VAL = [
    ("The chef holds a fork over the bowl.", "He", ["whisks the eggs quickly.", "climbs a tree.",
                                                     "drives away.", "dives into the pool."], 0),
    ("A man sits in the car.", "He", ["paints the fence.", "starts the engine.", "bakes a cake.",
                                       "plays the violin."], 1),
    ("A girl walks to the pool.", "She", ["reads.", "climbs.", "dives into the water.", "bakes."], 2),
]


def _rows(items, with_index: bool = True, with_label: bool = True):
    header = HEADER if with_index else HEADER[1:]
    if not with_label:
        header = header[:-1]
    rows = [header]
    for index, (sent1, sent2, endings, label) in enumerate(items):
        row = [f"anetv_{index}", str(1000 + index), f"{sent1} {sent2}", sent1, sent2, "gold", *endings]
        if with_label:
            row.append(str(label))
        rows.append(([str(index)] if with_index else []) + row)
    return rows


def _write_csv(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as writer:
        csv.writer(writer).writerows(rows)
    return path


def _vocab() -> list[str]:
    from jaxformers.tokenizers.bert import BasicTokenizer

    basic = BasicTokenizer(do_lower_case=True)
    words = set()
    for sent1, sent2, endings, _ in TRAIN + VAL:
        for text in (sent1, sent2, *endings):
            words.update(basic.tokenize(text))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from jaxformers.models.bert import BertConfig, BertForMultipleChoice

    directory = tmp_path_factory.mktemp("tiny_bert")
    vocab = _vocab()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    BertForMultipleChoice(config, num_choices=4, seed=0).save_pretrained(directory)
    return directory


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    directory = tmp_path / "swag"
    directory.mkdir()
    _write_csv(directory / "train.csv", _rows(TRAIN))
    _write_csv(directory / "val.csv", _rows(VAL))
    return directory


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from jaxformers.tokenizers.bert import BertTokenizer

    return BertTokenizer(str(tiny_bert / "vocab.txt"), do_lower_case=True)


def test_read_swag_examples_real_layout(data_dir):
    examples = run_swag.read_swag_examples(data_dir / "train.csv", is_training=True)
    assert len(examples) == len(TRAIN)
    first = examples[0]
    assert first.swag_id == "1000"  # the fold-ind column, as the reference
    assert first.context_sentence == TRAIN[0][0] and first.start_ending == "He"
    assert first.endings == TRAIN[0][2] and first.label == 0
    assert [e.label for e in examples] == [label for *_, label in TRAIN]


def test_read_swag_examples_without_index_column_or_labels(tmp_path):
    plain = _write_csv(tmp_path / "plain.csv", _rows(VAL, with_index=False))
    assert [e.endings for e in run_swag.read_swag_examples(plain, True)] == [endings for _, _, endings, _ in VAL]
    unlabeled = _write_csv(tmp_path / "test.csv", _rows(VAL, with_label=False))
    examples = run_swag.read_swag_examples(unlabeled, is_training=False)
    assert [e.label for e in examples] == [None] * len(VAL)
    with pytest.raises(ValueError, match=r"test\.csv: for training, the input file must contain a label column"):
        run_swag.read_swag_examples(unlabeled, is_training=True)


def test_read_swag_examples_bad_rows(tmp_path):
    rows = _rows(VAL)
    rows[2][-1] = "7"
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: label 7 is not in 0..3"):
        run_swag.read_swag_examples(_write_csv(tmp_path / "bad.csv", rows), True)
    rows = _rows(VAL)
    rows[1] = rows[1][:5]
    with pytest.raises(ValueError, match=r"short\.csv, line 2: 5 fields, the header has 12"):
        run_swag.read_swag_examples(_write_csv(tmp_path / "short.csv", rows), True)
    rows = [[name for name in HEADER if name != "sent2"]]
    with pytest.raises(ValueError, match=r"header has no column 'sent2'"):
        run_swag.read_swag_examples(_write_csv(tmp_path / "header.csv", rows), True)


def test_truncate_seq_pair():
    a, b = list("abcde"), list("xyz")
    run_swag.truncate_seq_pair(a, b, 5)
    # Longer side first: abcde/xyz (8) -> abcd/xyz (7) -> abc/xyz (6, a tie: b loses) -> abc/xy (5).
    assert (a, b) == (list("abc"), list("xy"))
    a, b = list("ab"), list("x")
    run_swag.truncate_seq_pair(a, b, 5)
    assert (a, b) == (list("ab"), list("x"))


def test_convert_examples_to_features_layout(tokenizer):
    example = run_swag.SwagExample("7", "The chef cracks two eggs into a bowl.", "He",
                                   ["whisks them with a fork.", "leaps.", "drives the car away.", "x"], 0)
    features = run_swag.convert_examples_to_features([example], tokenizer, max_seq_length=16, is_training=True)
    tokens, input_ids, input_mask, segment_ids = features[0].choices_features[0]
    # Context 9 pieces + ending "he whisks them with a fork ." 7 pieces = 16 > 16 - 3: the context loses two
    # (9 -> 7), then at 7 / 7 the tie costs the ending its last piece.
    assert tokens == ["[CLS]", "the", "chef", "cracks", "two", "eggs", "into", "a", "[SEP]", "he", "whisks",
                      "them", "with", "a", "fork", "[SEP]"]
    assert segment_ids == [0] * 9 + [1] * 7 and input_mask == [1] * 16
    tokens, input_ids, input_mask, segment_ids = features[0].choices_features[1]
    # "he leaps ." ("leaps" is not in the vocabulary: [UNK]) fits with the whole context: 1 + 9 + 1 + 3 + 1 = 15.
    assert tokens == ["[CLS]", "the", "chef", "cracks", "two", "eggs", "into", "a", "bowl", ".", "[SEP]", "he",
                      "[UNK]", ".", "[SEP]"]
    assert input_mask == [1] * 15 + [0] and input_ids[-1] == 0 and segment_ids == [0] * 11 + [1] * 4 + [0]
    assert features[0].example_id == "7" and features[0].label == 0
    arrays = run_swag.features_to_arrays(features, with_labels=True)
    assert arrays["input_ids"].shape == (1, 4, 16) and arrays["labels"].tolist() == [0]


def test_run_swag_end_to_end(tiny_bert, data_dir, tmp_path):
    output_dir = tmp_path / "out"
    outputs = run_swag.main([
        "--bert_model", str(tiny_bert), "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--do_train", "--do_eval", "--do_lower_case", "--max_seq_length", "24", "--train_batch_size", "4",
        "--eval_batch_size", "2", "--learning_rate", "3e-3", "--num_train_epochs", "12",
        "--gradient_accumulation_steps", "2",
    ])
    history = outputs["train_history"]
    assert len(history) == 12 * 2  # 6 examples in batches of 4: 2 steps per epoch, the second one padded
    losses = [entry["loss"] for entry in history]
    assert np.mean(losses[:4]) > 1.5 * np.mean(losses[-4:])

    for name in ("config.json", "flax_model.msgpack", "vocab.txt", "eval_results.txt"):
        assert (output_dir / name).is_file(), name
    results = outputs["eval_results"]
    lines = (output_dir / "eval_results.txt").read_text().splitlines()
    assert [line.split(" = ")[0] for line in lines] == ["eval_accuracy", "eval_loss", "global_step", "loss"]
    assert lines[2] == "global_step = 24"
    assert results["loss"] == pytest.approx(np.mean(losses[-2:]))

    # Recompute the metrics from the saved model, eagerly and without the engine.
    from jaxformers.models.bert import BertForMultipleChoice
    from jaxformers.tokenizers.bert import BertTokenizer

    model = BertForMultipleChoice.from_pretrained(output_dir, num_choices=4)
    tokenizer = BertTokenizer.from_pretrained(output_dir, do_lower_case=True)
    examples = run_swag.read_swag_examples(data_dir / "val.csv", is_training=True)
    arrays = run_swag.features_to_arrays(run_swag.convert_examples_to_features(examples, tokenizer, 24, True), True)
    logits = np.asarray(model(arrays["input_ids"], arrays["segment_ids"], arrays["input_mask"]))  # [3, 4]
    shifted = logits - logits.max(axis=1, keepdims=True)
    nll = -(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(3), arrays["labels"]]
    assert results["eval_accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == arrays["labels"]))
    # Batches of 2: the reference averages the per-batch means, [0, 1] and [2].
    assert results["eval_loss"] == pytest.approx((nll[:2].mean() + nll[2]) / 2, rel=1e-5)

    # The pooler is frozen as in the reference script, even though multiple choice uses it.
    before = BertForMultipleChoice.from_pretrained(tiny_bert, num_choices=4).torch_state_dict()
    after = model.torch_state_dict()
    np.testing.assert_array_equal(after["bert.pooler.dense.weight"], before["bert.pooler.dense.weight"])
    assert not np.array_equal(after["classifier.weight"], before["classifier.weight"])


def test_eval_only_on_the_pretrained_model(tiny_bert, data_dir, tmp_path):
    outputs = run_swag.main(["--bert_model", str(tiny_bert), "--data_dir", str(data_dir), "--output_dir",
                             str(tmp_path / "eval"), "--do_eval", "--do_lower_case", "--max_seq_length", "24"])
    assert set(outputs["eval_results"]) == {"eval_loss", "eval_accuracy", "global_step"}
    assert outputs["eval_results"]["global_step"] == 0
    assert outputs["eval_results"]["eval_accuracy"] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_help_lists_the_reference_flags():
    result = subprocess.run([sys.executable, str(EXAMPLES / "run_swag.py"), "--help"], capture_output=True,
                            text=True, check=True, cwd=REPO_ROOT)
    for flag in ("--data_dir", "--bert_model", "--output_dir", "--max_seq_length", "--do_train", "--do_eval",
                 "--do_lower_case", "--train_batch_size", "--eval_batch_size", "--learning_rate",
                 "--num_train_epochs", "--warmup_proportion", "--seed", "--gradient_accumulation_steps", "--fp16",
                 "--loss_scale", "--bf16", "--fsdp", "--remat", "--scan_layers"):
        assert flag in result.stdout, flag

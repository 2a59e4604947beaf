"""examples/run_squad.py end to end on tiny SQuAD v1.1 / v2.0 files with a tiny random BERT (CPU, a few seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"


squad = load_script("examples/squad.py")
run_squad = load_script("examples/run_squad.py")

PARAGRAPHS = [
    (("Super Bowl 50 was played in Santa Clara, California. The Denver Broncos won the game against the "
      "Carolina Panthers."), [
         ("q1", "Where was Super Bowl 50 played?", "Santa Clara, California"),
         ("q2", "Who won Super Bowl 50?", "The Denver Broncos"),
         ("q3", "Who lost the game?", "Carolina Panthers"),
     ]),
    (("The Normans gave their name to Normandy, a region in France. Rollo was their first ruler in the 10th "
      "century."), [
         ("q4", "What region got its name from the Normans?", "Normandy"),
         ("q5", "Who was the first ruler of the Normans?", "Rollo"),
         ("q6", "In what country is Normandy?", "France"),
     ]),
]
IMPOSSIBLE = [(0, "q7", "Who sang at the halftime show?"), (1, "q8", "Who was the last ruler of the Normans?")]


def _vocab() -> list[str]:
    from jaxformers.tokenizers.bert import BasicTokenizer

    words: set[str] = set()
    basic = BasicTokenizer(do_lower_case=True)
    for context, questions in PARAGRAPHS:
        words.update(basic.tokenize(context))
        for _, question, _ in questions:
            words.update(basic.tokenize(question))
    for _, _, question in IMPOSSIBLE:
        words.update(basic.tokenize(question))
    words.discard("halftime")  # one word left out: exercises [UNK]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]


def _squad_json(version_2: bool) -> dict:
    data = []
    paragraphs = []
    for index, (context, questions) in enumerate(PARAGRAPHS):
        qas = []
        for qid, question, answer in questions:
            qa = {"id": qid, "question": question,
                  "answers": [{"text": answer, "answer_start": context.index(answer)}]}
            if version_2:
                qa["is_impossible"] = False
            qas.append(qa)
        if version_2:
            qas += [{"id": qid, "question": question, "answers": [], "is_impossible": True,
                     "plausible_answers": []} for p, qid, question in IMPOSSIBLE if p == index]
        paragraphs.append({"context": context, "qas": qas})
    data.append({"title": "Tiny", "paragraphs": paragraphs})
    return {"version": "v2.0" if version_2 else "1.1", "data": data}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from jaxformers.models.bert import BertConfig, BertForQuestionAnswering

    directory = tmp_path_factory.mktemp("tiny_bert")
    vocab = _vocab()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    BertForQuestionAnswering(config, seed=0).save_pretrained(directory)
    return directory


def _squad_files(tmp_path: Path, version_2: bool) -> Path:
    path = tmp_path / ("train-v2.0.json" if version_2 else "train-v1.1.json")
    path.write_text(json.dumps(_squad_json(version_2)), encoding="utf-8")
    return path


def _run(tiny_bert: Path, data_file: Path, output_dir: Path, *extra: str) -> dict:
    return run_squad.main([
        "--bert_model", str(tiny_bert), "--do_lower_case", "--do_train", "--do_predict",
        "--train_file", str(data_file), "--predict_file", str(data_file), "--output_dir", str(output_dir),
        # Short windows (a question plus ~10-20 context pieces) so that paragraphs are split into several.
        "--max_seq_length", "32", "--doc_stride", "8", "--max_query_length", "12",
        "--train_batch_size", "8", "--predict_batch_size", "5", "--learning_rate", "3e-3",
        "--num_train_epochs", "25", "--warmup_proportion", "0.1", "--n_best_size", "5", *extra,
    ])


def _mean_loss(history, steps):
    return float(np.mean([entry["loss"] for entry in history[steps]]))


def test_run_squad_v1_end_to_end(tiny_bert, tmp_path):
    data_file = _squad_files(tmp_path, version_2=False)
    output_dir = tmp_path / "out"
    outputs = _run(tiny_bert, data_file, output_dir)

    history = outputs["train_history"]
    assert _mean_loss(history, slice(0, 5)) > 1.5 * _mean_loss(history, slice(-5, None))

    for name in ("config.json", "flax_model.msgpack", "vocab.txt", "predictions.json", "nbest_predictions.json",
                 "eval_results.txt"):
        assert (output_dir / name).is_file(), name
    assert not (output_dir / "null_odds.json").exists()

    question_ids = [qid for _, questions in PARAGRAPHS for qid, _, _ in questions]
    predictions = json.loads((output_dir / "predictions.json").read_text())
    nbest = json.loads((output_dir / "nbest_predictions.json").read_text())
    assert list(predictions) == question_ids == list(nbest)
    contexts = {qid: context for context, questions in PARAGRAPHS for qid, _, _ in questions}
    for qid, entries in nbest.items():
        assert 1 <= len(entries) <= 5
        assert predictions[qid] == entries[0]["text"]
        assert sum(entry["probability"] for entry in entries) == pytest.approx(1.0)
        for entry in entries:
            assert set(entry) == {"text", "probability", "start_logit", "end_logit"}
            assert entry["text"] in contexts[qid]  # answers are spans of the original context

    # The metrics written are the official v1.1 ones of the written predictions.
    dataset = _squad_json(False)["data"]
    expected = squad.evaluate_v1(dataset, predictions)
    assert outputs["eval_results"] == expected
    lines = (output_dir / "eval_results.txt").read_text().splitlines()
    assert lines == [f"{key} = {expected[key]}" for key in sorted(expected)]
    # Six questions, trained on until the loss is small: the model answers (most of) its training set.
    assert expected["f1"] >= 50.0

    # The unused pooler is left out of the optimizer, as in the reference: its weights are still the initial ones.
    from jaxformers.models.bert import BertForQuestionAnswering

    before = BertForQuestionAnswering.from_pretrained(tiny_bert).torch_state_dict()
    after = BertForQuestionAnswering.from_pretrained(output_dir).torch_state_dict()
    for name in ("bert.pooler.dense.weight", "bert.pooler.dense.bias"):
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(after["qa_outputs.weight"], before["qa_outputs.weight"])


def test_run_squad_v2_end_to_end(tiny_bert, tmp_path):
    data_file = _squad_files(tmp_path, version_2=True)
    output_dir = tmp_path / "out"
    outputs = _run(tiny_bert, data_file, output_dir, "--version_2_with_negative", "--gradient_accumulation_steps",
                   "2", "--null_score_diff_threshold", "0.5")

    history = outputs["train_history"]
    assert _mean_loss(history, slice(0, 5)) > 1.5 * _mean_loss(history, slice(-5, None))
    question_ids = [qa["id"] for p in _squad_json(True)["data"][0]["paragraphs"] for qa in p["qas"]]
    predictions = json.loads((output_dir / "predictions.json").read_text())
    null_odds = json.loads((output_dir / "null_odds.json").read_text())
    nbest = json.loads((output_dir / "nbest_predictions.json").read_text())
    assert list(predictions) == question_ids == list(null_odds) == list(nbest)
    for qid, entries in nbest.items():
        # The null answer is always among the n-best in v2.0; the decision follows the score difference.
        assert "" in [entry["text"] for entry in entries]
        assert (predictions[qid] == "") == (null_odds[qid] > 0.5)

    results = outputs["eval_results"]
    dataset = _squad_json(True)["data"]
    assert results == squad.evaluate_v2(dataset, predictions, null_odds)
    assert {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
            "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(results)
    assert results["total"] == 8 and results["HasAns_total"] == 6 and results["NoAns_total"] == 2
    text = (output_dir / "eval_results.txt").read_text()
    assert f"HasAns_f1 = {results['HasAns_f1']}\n" in text


def test_predict_only_reloads_saved_model(tiny_bert, tmp_path):
    data_file = _squad_files(tmp_path, version_2=False)
    outputs = run_squad.main([
        "--bert_model", str(tiny_bert), "--do_lower_case", "--do_predict", "--predict_file", str(data_file),
        "--output_dir", str(tmp_path / "pred"), "--max_seq_length", "32", "--doc_stride", "8",
        "--max_query_length", "12", "--predict_batch_size", "3",
    ])
    predictions = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert predictions == outputs["predictions"] and len(predictions) == 6
    assert "train_history" not in outputs and (tmp_path / "pred" / "eval_results.txt").is_file()


def test_squad_loss_matches_the_model_loss(tiny_bert):
    """Our padding-aware loss equals BertForQuestionAnswering's own loss on real rows (positions past the
    sequence are clamped and ignored in both), and padding rows change nothing."""
    from jaxformers.models.bert import BertForQuestionAnswering

    model = BertForQuestionAnswering.from_pretrained(tiny_bert)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 40, size=(4, 16)).astype(np.int32),
        "segment_ids": np.repeat([[0] * 6 + [1] * 10], 4, axis=0).astype(np.int32),
        "input_mask": np.ones((4, 16), np.int32),
        "start_positions": np.array([3, 0, 40, 7], np.int32),  # 40: past the sequence -> ignored
        "end_positions": np.array([5, 0, 9, 16], np.int32),  # 16 == seq -> ignored
        "example_weight": np.ones(4, np.float32),
    }
    expected = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                     start_positions=batch["start_positions"], end_positions=batch["end_positions"])
    ours = run_squad.squad_loss(model, {k: jnp.asarray(v) for k, v in batch.items()}, None)
    np.testing.assert_allclose(float(ours), float(expected), rtol=1e-6)

    padded = run_squad.pad_rows({k: v for k, v in batch.items() if k != "example_weight"}, 7)
    assert padded["example_weight"].tolist() == [1, 1, 1, 1, 0, 0, 0]
    with_padding = run_squad.squad_loss(model, {k: jnp.asarray(v) for k, v in padded.items()}, None)
    np.testing.assert_allclose(float(with_padding), float(expected), rtol=1e-6)
    # A micro-batch of padding only contributes 0, not NaN.
    empty = dict(padded, example_weight=np.zeros(7, np.float32))
    assert float(run_squad.squad_loss(model, {k: jnp.asarray(v) for k, v in empty.items()}, None)) == 0.0


def test_train_batches_cover_every_feature_once_per_epoch():
    arrays = {"x": np.arange(10)[:, None]}
    batches = list(run_squad.train_batches(arrays, 4, epochs=2, seed=3))
    assert len(batches) == 6 and all(b["x"].shape == (4, 1) for b in batches)
    for epoch in (batches[:3], batches[3:]):
        rows = np.concatenate([b["x"][b["example_weight"] == 1, 0] for b in epoch])
        assert sorted(rows.tolist()) == list(range(10))
    assert [b["example_weight"].sum() for b in batches] == [4, 4, 2, 4, 4, 2]
    # Same seed, same order (resuming relies on it); another seed, another order.
    again = list(run_squad.train_batches(arrays, 4, epochs=2, seed=3))
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, again))
    other = list(run_squad.train_batches(arrays, 4, epochs=2, seed=4))
    assert not all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, other))


def test_argument_errors(tiny_bert, tmp_path):
    with pytest.raises(SystemExit, match="At least one of `do_train` or `do_predict`"):
        run_squad.main(["--bert_model", str(tiny_bert), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="`train_file` must be specified"):
        run_squad.main(["--bert_model", str(tiny_bert), "--output_dir", str(tmp_path), "--do_train"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something").write_text("x")
    (tmp_path / "train.json").write_text('{"data": []}')  # exists: the paths are checked first
    with pytest.raises(SystemExit, match="already exists and is not empty"):
        run_squad.main(["--bert_model", str(tiny_bert), "--output_dir", str(tmp_path / "busy"), "--do_train",
                        "--train_file", str(tmp_path / "train.json")])


def test_help_lists_the_reference_flags():
    result = subprocess.run([sys.executable, str(EXAMPLES / "run_squad.py"), "--help"], capture_output=True,
                            text=True, check=True, cwd=REPO_ROOT)
    for flag in ("--train_file", "--predict_file", "--bert_model", "--output_dir", "--max_seq_length",
                 "--doc_stride", "--max_query_length", "--do_train", "--do_predict", "--train_batch_size",
                 "--predict_batch_size", "--learning_rate", "--num_train_epochs", "--warmup_proportion",
                 "--n_best_size", "--max_answer_length", "--verbose_logging", "--do_lower_case", "--seed",
                 "--gradient_accumulation_steps", "--fp16", "--loss_scale", "--version_2_with_negative",
                 "--null_score_diff_threshold", "--bf16", "--fsdp", "--remat", "--scan_layers"):
        assert flag in result.stdout, flag


def _params(directory: Path) -> dict[str, np.ndarray]:
    from jaxformers.models.bert import BertForQuestionAnswering

    return BertForQuestionAnswering.from_pretrained(directory).torch_state_dict()


@pytest.mark.slow
def test_resume_after_interruption_gives_the_same_model(tiny_bert, tmp_path, monkeypatch):
    data_file = _squad_files(tmp_path, version_2=False)
    args = ["--num_train_epochs", "6", "--checkpoint_every", "2"]
    _run(tiny_bert, data_file, tmp_path / "whole", *args)

    # Interrupt after 3 of the 6 steps: the batches run out, the loop checkpoints step 3 and the script ends.
    original = run_squad.train_batches
    monkeypatch.setattr(run_squad, "train_batches",
                        lambda *a, **k: (batch for _, batch in zip(range(3), original(*a, **k))))
    interrupted = tmp_path / "interrupted"
    assert len(_run(tiny_bert, data_file, interrupted, *args)["train_history"]) == 3
    monkeypatch.setattr(run_squad, "train_batches", original)
    # Restart in the same output directory, where only the checkpoints are left.
    for path in interrupted.iterdir():
        if path.name != "checkpoints":
            path.unlink()
    resumed = _run(tiny_bert, data_file, interrupted, *args)
    assert [entry["step"] for entry in resumed["train_history"]] == [4, 5, 6]

    whole, again = _params(tmp_path / "whole"), _params(interrupted)
    for name in whole:
        np.testing.assert_array_equal(again[name], whole[name], err_msg=name)
    assert json.loads((interrupted / "predictions.json").read_text()) == \
        json.loads((tmp_path / "whole" / "predictions.json").read_text())


@pytest.mark.slow
def test_four_devices_with_fsdp_match_one_device(tiny_bert, tmp_path):
    """The same run data-parallel over 4 (virtual CPU) devices with sharded parameters: same losses, same
    predictions as on one device."""
    data_file = _squad_files(tmp_path, version_2=True)
    common = ["--bert_model", str(tiny_bert), "--do_lower_case", "--do_train", "--do_predict", "--train_file",
              str(data_file), "--predict_file", str(data_file), "--max_seq_length", "32", "--doc_stride", "8",
              "--max_query_length", "12", "--train_batch_size", "8", "--predict_batch_size", "5",
              "--learning_rate", "3e-3", "--num_train_epochs", "6", "--n_best_size", "5",
              "--version_2_with_negative"]
    single = run_squad.main([*common, "--output_dir", str(tmp_path / "one")])
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run([sys.executable, str(EXAMPLES / "run_squad.py"), *common, "--output_dir",
                             str(tmp_path / "four"), "--fsdp"], check=False, cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices: 4 x cpu, precision: fp32, fsdp: True" in result.stderr

    one, four = _params(tmp_path / "one"), _params(tmp_path / "four")
    for name in one:
        # Sums are split differently over the devices; Adam turns the rounding differences of near-zero gradients
        # into steps of up to lr (3e-3), so allow a small fraction of that.
        np.testing.assert_allclose(four[name], one[name], rtol=1e-3, atol=3e-4, err_msg=name)
    odds_one = json.loads((tmp_path / "one" / "null_odds.json").read_text())
    odds_four = json.loads((tmp_path / "four" / "null_odds.json").read_text())
    assert list(odds_one) == list(odds_four)
    np.testing.assert_allclose(list(odds_four.values()), list(odds_one.values()), rtol=1e-3, atol=1e-3)
    assert single["predictions"] == json.loads((tmp_path / "four" / "predictions.json").read_text())

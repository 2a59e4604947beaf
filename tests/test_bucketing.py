"""Length bucketing (jaxformers/training/bucketing.py) and the dropout masks that make it a pure speed change."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxformers.layers import dropout, positional_keep_mask
from jaxformers.training.bucketing import Bucketer, CompileLog, bucket_lengths, example_lengths, length_grouped_order

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_bucket_lengths_and_trim():
    assert bucket_lengths(128, 16) == [16, 32, 48, 64, 80, 96, 112, 128]
    assert bucket_lengths(40, 16) == [16, 32, 40]
    with pytest.raises(ValueError, match="spacing"):
        bucket_lengths(128, 0)
    bucketer = Bucketer(40, 16)
    mask = np.zeros((3, 40), np.int32)
    mask[0, :5], mask[1, :17], mask[2, :3] = 1, 1, 1
    batch = {"input_ids": np.arange(120).reshape(3, 40), "input_mask": mask, "label_ids": np.array([0, 1, 0])}
    trimmed = bucketer.trim(batch)
    assert trimmed["input_ids"].shape == (3, 32) and trimmed["input_mask"].shape == (3, 32)
    np.testing.assert_array_equal(trimmed["input_ids"], batch["input_ids"][:, :32])
    np.testing.assert_array_equal(trimmed["label_ids"], batch["label_ids"])
    assert Bucketer(40, 16, enabled=False).trim(batch)["input_ids"].shape == (3, 40)
    with pytest.raises(ValueError, match="max_seq_length=40"):
        bucketer.length_for(41)


def test_example_lengths_and_grouping():
    mask = np.zeros((4, 2, 10), np.int32)  # [examples, choices, seq]: the longest choice counts
    mask[0, 0, :3], mask[0, 1, :7], mask[1, :, :1], mask[3, 1, :10] = 1, 1, 1, 1
    np.testing.assert_array_equal(example_lengths(mask), [7, 1, 0, 10])
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    order = length_grouped_order(lengths, 10, np.random.default_rng(1), megabatch_batches=5)
    assert sorted(order) == list(range(1000))
    spread = [np.ptp(lengths[order[i:i + 10]]) for i in range(0, 1000, 10)]
    random_spread = [np.ptp(lengths[i:i + 10]) for i in range(0, 1000, 10)]
    assert np.mean(spread) < 0.3 * np.mean(random_spread)


def test_dropout_mask_does_not_depend_on_padded_length():
    key = jax.random.PRNGKey(7)
    long, short = positional_keep_mask(key, (3, 128, 16), 0.9), positional_keep_mask(key, (3, 48, 16), 0.9)
    np.testing.assert_array_equal(np.asarray(long)[:, :48], np.asarray(short))
    probs_long = positional_keep_mask(key, (2, 4, 128, 128), 0.9)
    probs_short = positional_keep_mask(key, (2, 4, 32, 32), 0.9)
    np.testing.assert_array_equal(np.asarray(probs_long)[:, :, :32, :32], np.asarray(probs_short))
    assert abs(float(np.mean(np.asarray(probs_long))) - 0.9) < 0.005
    assert not np.array_equal(np.asarray(probs_long)[0], np.asarray(probs_long)[1])  # rows differ
    x = np.ones((3, 48, 16), np.float32)
    np.testing.assert_allclose(np.asarray(dropout(x, 0.1, key)), np.asarray(long)[:, :48] / 0.9, rtol=1e-6)


def test_compile_log_times_each_new_shape_once():
    calls = []
    log = CompileLog(lambda state, batch: calls.append(batch["input_ids"].shape) or state)
    for length in (16, 16, 32, 16):
        log(0, {"input_ids": np.zeros((2, length))})
    assert list(log.first_call_s) == [(2, 16), (2, 32)] and len(calls) == 4


@pytest.mark.slow
def test_run_classifier_buckets_train_the_same_weights_as_fixed_padding(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run_classifier
    from test_run_classifier import mrpc_rows, tiny_bert_dir, write

    from jaxformers.models.bert import BertForSequenceClassification

    model_dir = tiny_bert_dir(tmp_path / "model")
    data = tmp_path / "MRPC"
    write(data, "train.tsv", mrpc_rows(40, seed=0))
    write(data, "dev.tsv", mrpc_rows(24, seed=1))
    common = ["--task_name", "MRPC", "--data_dir", data, "--bert_model", model_dir, "--do_lower_case",
              "--do_train", "--do_eval", "--max_seq_length", 64, "--bucket_spacing", 16, "--train_batch_size", 8,
              "--eval_batch_size", 8, "--num_train_epochs", 2, "--learning_rate", 1e-3, "--seed", 5]
    fixed = run_classifier.main([str(a) for a in [*common, "--pad_to", "max_seq_length", "--output_dir",
                                                  tmp_path / "fixed"]])
    bucketed = run_classifier.main([str(a) for a in [*common, "--output_dir", tmp_path / "bucketed"]])
    for key in ("acc", "f1"):
        assert bucketed[key] == fixed[key]
    for key in ("eval_loss", "loss"):
        assert bucketed[key] == pytest.approx(fixed[key], rel=1e-4)
    weights = [BertForSequenceClassification.from_pretrained(tmp_path / name, num_labels=2).torch_state_dict()
               for name in ("fixed", "bucketed")]
    for name, value in weights[0].items():
        np.testing.assert_allclose(np.asarray(weights[1][name]), np.asarray(value), atol=2e-5, err_msg=str(name))


def test_squad_loss_does_not_depend_on_the_padded_length():
    """run_squad's start/end softmax leaves padding out, so a batch cut to its bucket has the same loss."""
    sys.path.insert(0, str(EXAMPLES))
    import jax.numpy as jnp
    import run_squad

    from jaxformers.models.bert import BertConfig, BertForQuestionAnswering

    config = BertConfig(60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    model = BertForQuestionAnswering(config, seed=0)
    rng = np.random.default_rng(0)
    mask = (np.arange(48)[None, :] < np.array([[20], [9], [14]])).astype(np.int32)
    batch = {"input_ids": rng.integers(5, 60, size=(3, 48)) * mask, "segment_ids": np.zeros((3, 48), np.int32),
             "input_mask": mask, "start_positions": np.array([3, 0, 12]), "end_positions": np.array([5, 8, 13]),
             "example_weight": np.ones(3, np.float32)}
    full = run_squad.squad_loss(model, {k: jnp.asarray(v) for k, v in batch.items()}, None)
    trimmed = Bucketer(48, 16).trim(batch)
    assert trimmed["input_ids"].shape == (3, 32)
    short = run_squad.squad_loss(model, {k: jnp.asarray(v) for k, v in trimmed.items()}, None)
    np.testing.assert_allclose(float(short), float(full), rtol=1e-5)

"""GLUE metrics of examples/glue.py: hand-worked examples, independent formulas, and scipy where installed."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import glue

# ------------------------------------------------------------------------------------------ worked examples


def test_mcc_worked_example():
    # TP=2 FN=1 FP=1 TN=0: (2*0 - 1*1) / sqrt(3*3*1*1) = -1/3
    assert glue.matthews_corrcoef([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(-1 / 3)
    # Perfect, inverted, and constant predictions.
    assert glue.matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert glue.matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    assert glue.matthews_corrcoef([1, 1, 1, 1], [0, 1, 1, 0]) == 0.0


def test_mcc_binary_by_hand():
    # TP=3 TN=4 FP=1 FN=2: (12 - 2) / sqrt(4 * 5 * 5 * 6) = 10 / sqrt(600)
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert glue.matthews_corrcoef(preds, labels) == pytest.approx(10 / math.sqrt(600))


def test_f1_worked_example():
    # TP=3 FP=0 FN=1: precision 1, recall 3/4, F1 = 6/7
    assert glue.f1_score([0, 1, 0, 0, 1, 1], [0, 1, 1, 0, 1, 1]) == pytest.approx(6 / 7)
    # TP=1 FP=1 FN=1: F1 = 2/4
    assert glue.f1_score([1, 1, 0], [1, 0, 1]) == pytest.approx(0.5)
    # positive class never predicted nor present: 0.0, as scikit-learn
    assert glue.f1_score([0, 0], [0, 0]) == 0.0


def test_accuracy_and_acc_and_f1():
    preds, labels = np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])
    result = glue.acc_and_f1(preds, labels)
    # TP=2 FP=1 FN=1 -> F1 = 4/6
    assert result == pytest.approx({"acc": 0.5, "f1": 2 / 3, "acc_and_f1": (0.5 + 2 / 3) / 2})


def test_pearson_spearman_worked_examples():
    # Pearson: x=[1..5], y=[2,4,6,8,10] exactly linear; y reversed exactly anti-linear.
    assert glue.pearson_correlation([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert glue.pearson_correlation([1, 2, 3, 4, 5], [10, 8, 6, 4, 2]) == pytest.approx(-1.0)
    # x=[1,2,3], y=[1,3,2]: centred (-1,0,1) . (-1,1,0) = 1; norms sqrt(2)*sqrt(2) -> r = 1/2
    assert glue.pearson_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Spearman is rank-based: a monotone but non-linear relation gives 1.
    assert glue.spearman_correlation([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    # Ties share the average rank: ranks of [5, 6, 7, 8, 7] are [1, 2, 3.5, 5, 3.5].
    ranks_y = np.array([1, 2, 3.5, 5, 3.5])
    x = np.arange(1, 6) - 3.0
    expected = (x @ (ranks_y - ranks_y.mean())) / math.sqrt((x @ x) * ((ranks_y - ranks_y.mean()) ** 2).sum())
    assert glue.spearman_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(expected)
    assert expected == pytest.approx(0.8207826816681233)  # the value in scipy.stats.spearmanr's docs


def test_constant_input_gives_nan_correlation():
    assert math.isnan(glue.pearson_correlation([1, 1, 1], [1, 2, 3]))


def test_compute_metrics_keys_per_task():
    preds, labels = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    assert set(glue.compute_metrics("CoLA", preds, labels)) == {"mcc"}
    for task in ("mrpc", "qqp"):
        assert set(glue.compute_metrics(task, preds, labels)) == {"acc", "f1", "acc_and_f1"}
    for task in ("sst-2", "mnli", "mnli-mm", "qnli", "rte", "wnli"):
        assert glue.compute_metrics(task, preds, labels) == {"acc": 0.75}
    scores = glue.compute_metrics("sts-b", np.array([0.1, 2.0, 3.5, 4.0]), np.array([0.0, 2.5, 3.0, 5.0]))
    assert set(scores) == {"pearson", "spearmanr", "corr"}
    assert scores["spearmanr"] == pytest.approx(1.0)
    assert scores["corr"] == pytest.approx((scores["pearson"] + scores["spearmanr"]) / 2)
    # Values are plain Python floats, so eval_results.txt shows "0.75", not "np.float64(0.75)".
    assert all(type(value) is float for value in scores.values())


def test_bad_metric_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        glue.simple_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        glue.matthews_corrcoef([], [])
    with pytest.raises(KeyError, match="unknown GLUE task 'squad'"):
        glue.compute_metrics("squad", [0], [0])


# ------------------------------------------------------------------------------- independent formulations

labels_and_preds = st.integers(2, 40).flatmap(
    lambda n: st.tuples(st.lists(st.integers(0, 2), min_size=n, max_size=n),
                        st.lists(st.integers(0, 2), min_size=n, max_size=n))
)


@settings(max_examples=60, deadline=None)
@given(labels_and_preds)
def test_mcc_equals_one_hot_covariance_definition(pair):
    labels, preds = (np.array(v) for v in pair)
    # MCC = cov(Y, P) / sqrt(cov(Y, Y) cov(P, P)) with Y, P one-hot matrices and cov summed over classes.
    y, p = np.eye(3)[labels], np.eye(3)[preds]
    y, p = y - y.mean(axis=0), p - p.mean(axis=0)
    var_y, var_p = (y * y).sum(), (p * p).sum()
    expected = 0.0 if var_y * var_p == 0 else (y * p).sum() / math.sqrt(var_y * var_p)
    assert glue.matthews_corrcoef(preds, labels) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(labels_and_preds)
def test_f1_equals_precision_recall_harmonic_mean(pair):
    labels, preds = (np.array(v) % 2 for v in pair)
    true_pos = int(((preds == 1) & (labels == 1)).sum())
    predicted, actual = int((preds == 1).sum()), int((labels == 1).sum())
    if true_pos == 0:
        expected = 0.0
    else:
        precision, recall = true_pos / predicted, true_pos / actual
        expected = 2 * precision * recall / (precision + recall)
    assert glue.f1_score(preds, labels) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(-5, 5, allow_nan=False)), min_size=3, max_size=30))
def test_correlations_match_scipy(pairs):
    stats = pytest.importorskip("scipy.stats")
    x = np.array([a for a, _ in pairs], dtype=np.float64)  # small integers: many ties
    y = np.array([b for _, b in pairs], dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return  # scipy warns and returns nan; covered by test_constant_input_gives_nan_correlation
    assert glue.pearson_correlation(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    assert glue.spearman_correlation(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)

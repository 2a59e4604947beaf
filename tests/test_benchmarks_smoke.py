"""The GPU benchmark suite's code paths, run with tiny configs on whatever device is here (CPU in CI).

This checks that every workload runs end to end in both libraries and reports sane figures; it asserts nothing
about speed (timings are read by hand from benchmarks/run.py's JSON).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("bert_base_train", "bert_large_qa_train", "bert_base_infer", "gpt2_decode",
             "first_step_bert_base", "first_step_bert_large", "train_scaling")
# The figure each workload must report for both libraries.
MAIN_FIGURE = {
    "bert_base_train": "ms_per_step",
    "bert_large_qa_train": "ms_per_step",
    "bert_base_infer": "sequences_per_s",
    "gpt2_decode": "tokens_per_s",
    "first_step_bert_base": "first_step_s",
    "first_step_bert_large": "first_step_s",
}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_suite_tiny_writes_every_workload(tmp_path):
    output = tmp_path / "gpu-tiny.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--suite", "gpu", "--tiny", "--repeats", "1",
         "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False,  # hang guard only
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    document = json.loads(output.read_text())

    meta = document["meta"]
    assert meta["device"] and meta["versions"]["jax"] and meta["versions"]["torch"]
    assert "6*N*T" in document["flop_formula"]
    results = document["results"]
    assert set(results) == set(WORKLOADS)
    for name in WORKLOADS:
        assert "error" not in results[name], (name, results[name])
        if name != "train_scaling":
            _check_side_by_side(name, results[name], MAIN_FIGURE[name])
    for name in ("bert_base_train", "bert_large_qa_train", "bert_base_infer"):
        assert _positive(results[name]["flops_per_step"])
        assert _positive(results[name]["jaxformers"]["tflops"]) and _positive(results[name]["torch"]["tflops"])
    for name in ("bert_base_train", "bert_large_qa_train"):
        assert math.isfinite(results[name]["jaxformers"]["loss"]) and math.isfinite(results[name]["torch"]["loss"])

    # The scaling grid (tiny: seq 16/32 x batch 2/4): every point timed in both libraries, and printed as a table.
    scaling = results["train_scaling"]
    assert set(scaling["points"]) == {"b2_s16", "b4_s16", "b2_s32", "b4_s32"}
    for label, point in scaling["points"].items():
        _check_side_by_side(label, point, "ms_per_step")
        assert _positive(point["flops_per_step"]) and _positive(point["jaxformers"]["tflops"])
        assert math.isfinite(point["jaxformers"]["loss"]) and math.isfinite(point["torch"]["loss"])
        assert point["jaxformers"]["tokens_per_s"] == pytest.approx(
            point["batch"] * point["seq"] / (point["jaxformers"]["ms_per_step"] / 1e3), rel=0.01)
    assert scaling["points"]["b4_s32"]["flops_per_step"] > scaling["points"]["b2_s32"]["flops_per_step"]
    assert "| batch \\ seq | 16 | 32 |" in completed.stdout


def _check_side_by_side(name: str, result: dict, main_figure: str) -> None:
    for side in ("jaxformers", "torch"):
        figures = result[side]
        assert _positive(figures[main_figure]), (name, side, figures)
        assert _positive(figures["params"]), (name, side, figures)
        assert _positive(figures.get("first_step_s", figures.get("first_call_s"))), (name, side, figures)
        # Peak memory is only readable on accelerators; elsewhere it is reported as null.
        assert figures["peak_memory_gb"] is None or _positive(figures["peak_memory_gb"])
    assert _positive(result["time_ratio"]) and _positive(result["speedup"]), (name, result)
    assert result["time_ratio"] == pytest.approx(1 / result["speedup"], rel=0.01)
    # Both libraries built the same architecture.
    assert result["jaxformers"]["params"] == result["torch"]["params"], name


@pytest.mark.slow
def test_finetune_glue_benchmark_runs_run_classifier_and_reports_figures(tmp_path):
    output = tmp_path / "finetune.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "finetune_glue.py"), "--model", "tiny", "--train_rows", "96",
         "--train_batch_size", "8", "--max_seq_length", "32", "--epochs", "1", "--output", str(output)],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=1500,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["steps"] == 12  # 96 rows / batch 8, one epoch
    assert report["config"]["precision"] == "fp32"  # auto: fp32 on CPU
    assert _positive(report["steps_per_s"]) and _positive(report["first_steps_s"])
    assert report["examples_per_s"] == pytest.approx(report["steps_per_s"] * 8, rel=0.01)
    assert math.isfinite(report["first_loss"]) and math.isfinite(report["last_loss"])
    assert 0.0 <= report["eval"]["acc"] <= 1.0 and 0.0 <= report["eval"]["f1"] <= 1.0  # MRPC metrics
    assert report["peak_memory_gb"] is None or _positive(report["peak_memory_gb"])

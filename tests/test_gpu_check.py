"""benchmarks/gpu_check.sh must leave figures and a clue even when its phases run out of time: a workload killed
from outside keeps what it measured in its JSON, marked partial with the stage it was in, and summary.txt says
"timed out after N s" and where. Runs on CPU with tiny configs (--tiny / --smoke)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_summary  # noqa: E402
from gpu_harness import timed_steps  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}


def _entry(path: Path, name: str) -> dict:
    return json.loads(path.read_text())["results"][name]


def test_timed_steps_stops_measuring_when_its_cap_is_spent():
    calls = []

    def step():
        calls.append(1)
        time.sleep(0.05)

    timing = timed_steps(step, lambda _: None, warmup=2, repeats=1000, cap_s=0.3)
    assert 1 <= timing["measured_steps"] < 1000
    # warm-up + synced + as many pipelined steps as synced ones, nothing more
    assert len(calls) == timing["warmup_steps"] + 2 * timing["measured_steps"]
    uncapped = timed_steps(step, lambda _: None, warmup=1, repeats=3)
    assert uncapped["measured_steps"] == 3 and uncapped["warmup_steps"] == 1


def test_summary_names_the_stage_of_a_timed_out_workload_and_what_it_measured(tmp_path):
    suite = {"results": {"bert_base_train": {
        "torch": {"first_step_s": 0.5, "ms_per_step": 30.0, "measured_steps": 10},
        "jaxformers": {"params": 10, "first_step_s": 41.0},
        "partial": True, "stage": "jaxformers: timing train steps", "elapsed_s": 77.0,
        "stage_elapsed_s": 51.5}}}
    (tmp_path / "suite_bert_base_train.json").write_text(json.dumps(suite))
    (tmp_path / "parity-progress.json").write_text(json.dumps(
        {"passed": 7, "failed": ["tests/x.py::test_a"], "skipped": 0, "running": "tests/x.py::test_b"}))
    (tmp_path / "finetune.json").write_text(json.dumps(
        {"partial": True, "stage": "training (first step compiled)", "config": {}}))
    (tmp_path / "phases.tsv").write_text(
        "suite_bert_base_train\t124\t85\t85\nparity\t137\t80\t70\nfinetune\t1\t3\t65\n"
        "suite_gpt2_decode\tskipped\t0\tonly 4 s left of the 470 s limit\n")
    text = gpu_summary.summarise(tmp_path)
    lines = text.splitlines()
    assert lines[0].startswith("suite_bert_base_train: timed out after 85 s (budget 85 s), partial")
    assert "'jaxformers: timing train steps' (in it 51.5 s)" in lines[0]
    assert "timed: torch;" in lines[0] and "first step done: torch, jaxformers" in lines[0]
    assert lines[1].startswith("parity: timed out after 80 s") and "7 passed, 1 failed" in lines[1]
    assert "running 'tests/x.py::test_b'" in lines[1]
    assert lines[2].startswith("finetune: exit 1 after 3 s") and "training (first step compiled)" in lines[2]
    assert lines[3] == "suite_gpt2_decode: skipped, only 4 s left of the 470 s limit"
    # The speed table keeps the torch figure and says where the workload stopped.
    row = next(line for line in lines if line.startswith("| bert_base_train |"))
    assert "| - | 30.00 ms |" in row and "partial: stopped at 'jaxformers: timing train steps'" in row


@pytest.mark.slow
def test_workload_killed_mid_run_keeps_its_finished_figures(tmp_path):
    """Kill the suite (its process group, as `timeout` does) once torch is measured and jaxformers has begun."""
    output = tmp_path / "suite.json"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--suite", "gpu", "--tiny", "--repeats", "2",
         "--warmup", "1", "--only", "bert_base_train", "--output", str(output)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 900  # hang guard only
        entry = {}
        while time.time() < deadline and process.poll() is None:
            try:
                entry = _entry(output, "bert_base_train")
            except (OSError, ValueError, KeyError):
                entry = {}
            if str(entry.get("stage", "")).startswith("jaxformers:"):
                break
            time.sleep(0.2)
        assert process.poll() is None, "the workload ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGTERM)
        log, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    entry = _entry(output, "bert_base_train")
    assert entry["partial"] is True and entry["stage"].startswith("jaxformers:"), entry
    torch_figures = entry["torch"]
    assert torch_figures["ms_per_step"] > 0 and torch_figures["measured_steps"] == 2, entry
    assert "ms_per_step" not in entry.get("jaxformers", {})
    assert "bert_base_train: torch: timing train steps" in log  # the timestamped progress lines


@pytest.mark.slow
def test_gpu_check_smoke_phase_out_of_budget_leaves_partial_json_and_summary(tmp_path):
    env = {**ENV, "PYTHON": sys.executable, "GPU_CHECK_PHASES": "suite_bert_base_train",
           "GPU_CHECK_BUDGET_suite_bert_base_train": "12"}
    completed = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    name, rc, seconds, budget = (tmp_path / "phases.tsv").read_text().split("\t")
    assert (name, rc, budget.strip()) in {("suite_bert_base_train", "124", "12"), ("suite_bert_base_train", "137", "12")}
    entry = _entry(tmp_path / "suite_bert_base_train.json", "bert_base_train")
    assert entry["partial"] is True and entry["stage"], entry
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith(f"suite_bert_base_train: timed out after {seconds} s (budget 12 s), partial")
    assert repr(entry["stage"]) in summary

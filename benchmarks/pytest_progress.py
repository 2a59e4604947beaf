"""A pytest plugin for benchmarks/gpu_check.sh's parity phase: a timestamped, flushed line per test as it starts
and ends (with its duration), and a progress JSON rewritten after every test, so a phase stopped by its time
budget still says which tests passed, which failed and which one was running.

    PYTEST_PROGRESS_JSON=out/parity-progress.json python -m pytest -p pytest_progress ...   (benchmarks/ on the path)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

_STARTED = time.time()
_STATE: dict = {"passed": 0, "failed": [], "skipped": 0, "running": None}


def _line(text: str) -> None:
    print(f"\n[{time.strftime('%H:%M:%S')} +{time.time() - _STARTED:6.1f}s] {text}", flush=True)


def _save() -> None:
    path = os.environ.get("PYTEST_PROGRESS_JSON")
    if not path:
        return
    scratch = Path(path + ".tmp")
    scratch.write_text(json.dumps({**_STATE, "elapsed_s": round(time.time() - _STARTED, 1)}, indent=2))
    os.replace(scratch, path)


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _STATE["running"] = nodeid
    _line(f"start {nodeid}")
    _save()


def pytest_runtest_logreport(report) -> None:
    # A test counts once: its call phase, or the setup phase when that failed or skipped it.
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.passed:
            _STATE["passed"] += 1
        elif report.skipped:
            _STATE["skipped"] += 1
        else:
            _STATE["failed"].append(report.nodeid)
        _line(f"{report.outcome} {report.nodeid} ({report.duration:.2f} s)")
    if report.when == "teardown":
        _STATE["running"] = None
        _save()

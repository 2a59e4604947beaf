"""summary.txt of a benchmarks/gpu_check.sh run: one line per phase that says what it left behind.

gpu_check.sh appends ``name<TAB>exit status<TAB>seconds<TAB>budget`` to ``phases.tsv`` after every phase and
runs this script, so summary.txt is current even if the check itself is cut short. A phase that hit its budget
(exit 124 or 137 from ``timeout``) is reported as "timed out after N s at <stage>", with the figures its JSON
holds so far: the speed-table workloads and finetune_glue.py rewrite their JSON after every stage, the parity
phase its progress file after every test. After the phase lines comes the speed table (benchmarks/reporting.py).

    python benchmarks/gpu_summary.py OUTPUT_DIR          # rewrites OUTPUT_DIR/summary.txt and prints it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from reporting import markdown_table

TIMED_OUT = (124, 137)  # timeout's status when it stopped the command (137: killed after the grace period)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _suite_detail(out: Path, name: str) -> tuple[dict | None, str]:
    """The workload's entry in suite_<workload>.json and a short account of it."""
    document = _load(out / f"{name}.json") or {}
    entry = document.get("results", {}).get(name.removeprefix("suite_"))
    if entry is None:
        return None, "no result file"
    sides = [side for side in ("torch", "jaxformers") if entry.get(side, {}).get("first_step_s") is not None
             or entry.get(side, {}).get("first_call_s") is not None]
    timed = [side for side in ("torch", "jaxformers") if "ms_per_step" in entry.get(side, {})
             or "ms_per_call" in entry.get(side, {})]
    parts = [f"stage {entry['stage']!r} (in it {entry.get('stage_elapsed_s', '?')} s)"] if entry.get("partial") else []
    parts.append("timed: " + (", ".join(timed) or "none"))
    if sides != timed:
        parts.append("first step done: " + (", ".join(sides) or "none"))
    if "error" in entry:
        parts.append("error: " + entry["error"][:160])
    return entry, "; ".join(parts)


def _parity_detail(out: Path) -> str:
    progress = _load(out / "parity-progress.json")
    if progress is None:
        return "no test finished"
    detail = f"{progress['passed']} passed, {len(progress['failed'])} failed, {progress['skipped']} skipped"
    if progress["failed"]:
        detail += " (failed: " + ", ".join(progress["failed"][:5]) + ")"
    if progress.get("running"):
        detail += f"; running {progress['running']!r}"
    return detail


def _finetune_detail(out: Path) -> str:
    report = _load(out / "finetune.json")
    if report is None:
        return "no result file"
    parts = [f"stage {report['stage']!r}"] if report.get("partial") else []
    for key in ("steps", "steps_per_s", "first_step_call_s", "steps_so_far", "steps_per_s_so_far", "peak_memory_gb"):
        if report.get(key) is not None:
            parts.append(f"{key} {report[key]}")
    return "; ".join(parts)


def phase_line(out: Path, name: str, rc: int, seconds: int, budget: int) -> tuple[str, dict | None]:
    """One summary line, and the speed-table entry when the phase is a workload."""
    entry = None
    if name.startswith("suite_"):
        entry, detail = _suite_detail(out, name)
    elif name == "parity":
        detail = _parity_detail(out)
    elif name == "finetune":
        detail = _finetune_detail(out)
    else:
        detail = ""
    if rc in TIMED_OUT:
        outcome = f"timed out after {seconds} s (budget {budget} s)"
    elif rc == 0:
        outcome = f"ok in {seconds} s (budget {budget} s)"
    else:
        outcome = f"exit {rc} after {seconds} s (budget {budget} s)"
    if entry is not None and entry.get("partial"):
        outcome += ", partial"
    return f"{name}: {outcome}" + (f" - {detail}" if detail else ""), entry


def summarise(out: Path) -> str:
    lines, table = [], {}
    phases = (out / "phases.tsv").read_text().splitlines() if (out / "phases.tsv").exists() else []
    for row in phases:
        name, rc, seconds, budget = row.split("\t")
        if rc == "skipped":
            lines.append(f"{name}: skipped, {budget}")
            continue
        line, entry = phase_line(out, name, int(rc), int(seconds), int(budget))
        lines.append(line)
        if entry is not None:
            table[name.removeprefix("suite_")] = entry
    text = "\n".join(lines) + "\n"
    if table:
        text += "\n" + markdown_table(table) + "\n"
    return text


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python benchmarks/gpu_summary.py OUTPUT_DIR")
    out = Path(argv[0])
    text = summarise(out)
    (out / "summary.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv[1:])

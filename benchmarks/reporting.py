"""What the benchmark suites write: run metadata, the FLOP formula and ratio definitions stored beside the
figures, the issue's targets, the markdown table and the JSON result files (benchmarks/results/)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from gpu_harness import GpuOptions

RESULTS = Path(__file__).resolve().parent / "results"


FLOP_FORMULA = (
    "train step = 3 x forward; forward = 2*N*T + 4*L*S*d*T + 2*N_seq*B, where T = B*S tokens, "
    "N = L*(4*d^2 + 2*d*d_ff) + per-token head matmul params (QA: 2*d), N_seq = per-sequence head matmul params "
    "(classification: pooler d^2 + classifier 2*d), 4*L*S*d*T = the QK^T and AV products. So a train step is "
    "6*N*T + 12*L*S*d*T (+ 6*N_seq*B). Embedding lookups, LayerNorm, softmax, GELU and the optimizer are not "
    "counted. TFLOP/s = these FLOPs / median step time."
)
RATIO_DEFINITION = (
    "time_ratio = jaxformers time / torch time for the same work (< 1: jaxformers is faster); "
    "speedup = torch time / jaxformers time"
)

# The targets on one H100 (only meaningful for full-size runs on that GPU).
TARGETS = {
    "bert_base_train": ("ms_per_step", "<=", 12.0),
    "bert_large_qa_train": ("ms_per_step", "<=", 40.0),
    "bert_base_infer": ("sequences_per_s", ">=", 24_000.0),
    "gpt2_decode": ("tokens_per_s", ">=", 6_000.0),
    "first_step_bert_base": ("first_step_s", "<=", 10.0),
    "first_step_bert_large": ("first_step_s", "<=", 15.0),
}


def gpu_meta(options: GpuOptions) -> dict:
    from importlib import metadata

    import jax
    import torch

    device = jax.devices()[0]
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "pytorch_pretrained_bert"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "time": time.strftime("%H:%M:%S"),
        "device": device.device_kind,
        "platform": device.platform,
        "torch_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "torch_cuda": torch.version.cuda,
        "torch_cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "options": dataclasses.asdict(options),
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10, check=False)
        meta["git_commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["git_commit"] = None
    return meta


def _check_target(name: str, result: dict) -> dict | None:
    if name not in TARGETS or "jaxformers" not in result:
        return None
    metric, relation, bound = TARGETS[name]
    value = result["jaxformers"].get(metric)
    if value is None:
        return None
    met = value <= bound if relation == "<=" else value >= bound
    return {"metric": metric, "target": f"{relation} {bound:g}", "measured": value, "met": met}


def _main_cell(name: str, figures: dict | None) -> str:
    """One side's headline figure, or "-" when it was not measured (a partial or failed workload)."""
    figures = figures or {}
    try:
        if name == "gpt2_decode":
            return f"{figures['tokens_per_s']:,.0f} tok/s"
        if name == "bert_base_infer":
            return f"{figures['sequences_per_s']:,.0f} seq/s"
        if name.startswith("first_step"):
            return f"{figures['first_step_s']:.2f} s"
        if "tflops" not in figures:  # timed, but the workload stopped before its FLOP rate was worked out
            return f"{figures['ms_per_step']:.2f} ms"
        return f"{figures['ms_per_step']:.2f} ms ({figures['tflops']:.3g} TFLOP/s)"
    except KeyError:
        return "-"


def markdown_table(results: dict) -> str:
    """The issue's table rows from a results dict (jaxformers, reference, time ratio). A workload that stopped
    early (``partial``) or failed shows what it measured and, in the last column, where it stopped."""
    rows = ["| workload | jaxformers | torch 0.6.2 reference | jaxformers time / torch time |", "|---|---|---|---|"]
    scaling = None
    for name, result in results.items():
        if name == "train_scaling" and "error" not in result and not result.get("partial"):
            scaling = result
            continue
        cells = [_main_cell(name, result.get("jaxformers")), _main_cell(name, result.get("torch"))]
        if "error" in result:
            last = f"error: {result['error'][:80]}"
        elif result.get("partial"):
            last = f"partial: stopped at {result.get('stage')!r} after {result.get('elapsed_s', '?')} s"
        else:
            last = f"{result['time_ratio']:.2f}"
        rows.append(f"| {name} | {cells[0]} | {cells[1]} | {last} |")
    if scaling is not None:
        rows += ["", "Train step, ms: jaxformers / torch (time ratio)", "",
                 "| batch \\ seq | " + " | ".join(str(seq) for seq in scaling["config"]["seqs"]) + " |",
                 "|---|" + "---|" * len(scaling["config"]["seqs"])]
        for batch in scaling["config"]["batches"]:
            cells = []
            for seq in scaling["config"]["seqs"]:
                point = scaling["points"][f"b{batch}_s{seq}"]
                cells.append(f"{point['jaxformers']['ms_per_step']:.2f} / {point['torch']['ms_per_step']:.2f} "
                             f"({point['time_ratio']:.2f})")
            rows.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_gpu_results(path: Path, meta: dict, results: dict, merge: bool) -> None:
    """Write the JSON; with ``merge`` (an --only run), keep the other workloads of an existing same-day file
    measured on the same device and options."""
    previous = {}
    if merge and path.exists():
        try:
            old = json.loads(path.read_text())
            same = (old.get("meta", {}).get("device") == meta.get("device")
                    and old.get("meta", {}).get("options") == meta.get("options"))
            previous = old.get("results", {}) if same else {}
        except (OSError, ValueError):
            previous = {}
    document = {"meta": meta, "flop_formula": FLOP_FORMULA, "ratio_definition": RATIO_DEFINITION,
                "results": {**previous, **results}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))

"""Side-by-side speed of jaxformers and the PyTorch reference (pytorch_pretrained_bert 0.6.2), same process,
same inputs. Run by hand (see benchmarks/README.md):

    python benchmarks/run.py --suite cpu            # BERT-base / real MiniLM inference, checkpoint load (fp32)
    python benchmarks/run.py --suite cpu --only minilm_infer_b32_s128 --repeats 5
    python benchmarks/run.py --suite gpu            # issue 7's GPU table: train steps, inference, decoding (bf16)
    python benchmarks/run.py --suite gpu --tiny     # the same code paths with tiny configs (runs on CPU)

Every figure is a median over repeats after a warm-up; ratios are jaxformers time / PyTorch time (lower is
better for jaxformers). Results go to benchmarks/results/<suite>-<date>.json.
"""

# This file is the command line and the per-workload subprocess runner (--help shows the docstring above); the
# workloads are in workloads_cpu.py and workloads_gpu.py (with gpu_harness.py), the result files and tables in
# reporting.py.

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

PROCESS_STARTED = time.time()  # before the imports below: a worker's progress lines count its start-up too

from gpu_harness import GpuOptions, Progress, write_entry
from reporting import RESULTS, _check_target, gpu_meta, markdown_table, write_gpu_results
from workloads_cpu import cpu_suite
from workloads_gpu import GPU_WORKLOADS, run_gpu_workload


def _select(only: list[str] | None) -> list[str]:
    if not only:
        return list(GPU_WORKLOADS)
    chosen = [name for name in GPU_WORKLOADS if any(name == o or name.startswith(o + "_") for o in only)]
    unknown = [o for o in only if not any(name == o or name.startswith(o + "_") for name in GPU_WORKLOADS)]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown} for --suite gpu; choose from {list(GPU_WORKLOADS)} "
                         "(a prefix such as 'first_step' selects every matching one)")
    return chosen


def run_worker(name: str, options: GpuOptions, result_path: str, progress_path: str | None,
               deadline: float | None) -> None:
    """Subprocess entry: run one workload and write ``{"meta", "result"}`` to ``result_path``. With
    ``progress_path`` (the suite's JSON) its entry there is rewritten after every stage, so a kill leaves the
    figures measured so far; ``deadline`` (epoch seconds) caps the measurement loops."""
    meta = gpu_meta(options)  # imports jax and torch and initialises both devices' runtimes
    progress = Progress(name, progress_path, deadline, meta, started=PROCESS_STARTED)
    result = run_gpu_workload(name, options, progress)
    Path(result_path).write_text(json.dumps({"meta": meta, "result": result}))


def _partial_entry(output: Path | None, name: str) -> dict:
    """What a failed workload's worker had recorded (figures of the side that finished, the stage it died in)."""
    try:
        return dict(json.loads(output.read_text())["results"][name]) if output is not None else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def gpu_suite(names: list[str], options: GpuOptions, isolate: bool, worker_args: list[str],
              output: Path | None = None, budget_s: float | None = None) -> tuple[dict, dict]:
    """Run the workloads (each in a fresh interpreter unless ``isolate`` is False); a failing one is recorded
    as ``{"error": ...}`` and the others still run. With ``output``, every workload's entry there is kept up to
    date while it runs (``"partial": true`` and its stage until it ends), so a run killed from outside leaves
    what it measured. ``budget_s`` is each workload's time budget (its measurement loops shrink to fit)."""
    import tempfile

    if output is not None:
        for name in names:
            write_entry(output, name, {"partial": True, "stage": "not started"})
    results, meta = {}, None
    for name in names:
        print(f"== {name} ({time.strftime('%H:%M:%S')})", flush=True)
        started = time.perf_counter()
        deadline = None if budget_s is None else time.time() + budget_s
        try:
            if isolate:
                with tempfile.TemporaryDirectory() as scratch:
                    path = os.path.join(scratch, "result.json")
                    command = [sys.executable, str(Path(__file__).resolve()), "--suite", "gpu", *worker_args,
                               "--_worker", name, "--_result", path]
                    if output is not None:
                        command += ["--_progress", str(output)]
                    if deadline is not None:
                        command += ["--_deadline", str(deadline)]
                    completed = subprocess.run(command, text=True, stdout=sys.stdout, stderr=subprocess.PIPE,
                                               check=False)
                    if completed.returncode != 0 or not os.path.exists(path):
                        sys.stderr.write(completed.stderr)
                        tail = completed.stderr.strip().splitlines()[-8:]
                        raise RuntimeError(f"worker exited with {completed.returncode}: " + " | ".join(tail))
                    payload = json.loads(Path(path).read_text())
                meta = meta or payload["meta"]
                result = payload["result"]
            else:
                meta = meta or gpu_meta(options)
                result = run_gpu_workload(name, options, Progress(name, output and str(output), deadline, meta))
        except Exception as error:  # noqa: BLE001 - recorded, so one broken workload does not hide the others' figures
            result = {**_partial_entry(output, name), "error": f"{type(error).__name__}: {error}"}
        result["wall_s"] = round(time.perf_counter() - started, 1)
        if not options.tiny:
            target = _check_target(name, result)
            if target:
                result["target"] = target
        results[name] = result
        if output is not None:
            write_entry(output, name, result, meta)
        print(name, json.dumps(result), flush=True)
    return results, meta or {"date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["cpu", "gpu"], default="cpu",
                        help="cpu: the CPU table (runs here); gpu: the issue's GPU table (runs on CPU with --tiny)")
    parser.add_argument("--only", action="append", help="run only this workload (repeatable)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (cpu default 7, gpu default 30)")
    gpu = parser.add_argument_group("gpu suite")
    gpu.add_argument("--tiny", action="store_true", help="tiny configs and few steps, to check the code on CPU")
    gpu.add_argument("--scan_layers", action="store_true", help="jaxformers models scan over their layers")
    gpu.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, --tiny 1)")
    gpu.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                     help="auto: bf16 on GPU, fp32 on CPU (both libraries)")
    gpu.add_argument("--optimizer", choices=["adamw", "bertadam"], default="adamw",
                     help="jaxformers optimizer (torch always uses AdamW)")
    gpu.add_argument("--no_isolate", action="store_true",
                     help="run every workload in this process (peak memory and first steps then mix workloads)")
    gpu.add_argument("--output", help="JSON path (default benchmarks/results/gpu[-tiny]-<date>.json); kept up to "
                                      "date while the workloads run, so a killed run leaves partial results")
    gpu.add_argument("--budget_s", type=float, default=None,
                     help="time budget of each workload, seconds: its measurement loops stop early to fit "
                          "(default: none, every repeat runs)")
    gpu.add_argument("--_worker", help=argparse.SUPPRESS)
    gpu.add_argument("--_result", help=argparse.SUPPRESS)
    gpu.add_argument("--_progress", help=argparse.SUPPRESS)
    gpu.add_argument("--_deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.suite == "cpu":
        gpu_only = [flag for flag, used in (
            ("--tiny", args.tiny), ("--scan_layers", args.scan_layers), ("--output", args.output),
            ("--no_isolate", args.no_isolate), ("--warmup", args.warmup is not None),
            ("--budget_s", args.budget_s is not None),
            ("--precision", args.precision != "auto"), ("--optimizer", args.optimizer != "adamw")) if used]
        if gpu_only:
            parser.error(f"not used by --suite cpu (gpu suite only): {', '.join(gpu_only)}")
        cpu_main(args.only, 7 if args.repeats is None else args.repeats)
        return
    gpu_main(args)


def cpu_main(only: list[str] | None, repeats: int) -> None:
    import jax
    import torch

    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "jax": jax.__version__, "torch": torch.__version__, "device": str(jax.devices()[0])}
    measured = cpu_suite(set(only) if only else None, repeats)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cpu-{meta['date']}.json"
    if only and out.exists():
        # An --only run adds to (or replaces) its workloads in the same day's file and keeps the others.
        measured = {**json.loads(out.read_text()).get("results", {}), **measured}
    out.write_text(json.dumps({"meta": meta, "results": measured}, indent=2))
    print(f"wrote {out}")


def gpu_main(args: argparse.Namespace) -> None:
    # JAX would otherwise reserve 75% of GPU memory at start-up and leave torch too little for BERT-large.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    repeats = args.repeats if args.repeats is not None else (2 if args.tiny else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
    if repeats < 1 or warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    precision = args.precision
    if precision == "auto" and (args._worker or args.no_isolate):
        # Resolved here, in the process that runs the workloads: the parent of isolated workers never
        # initialises the GPU (that would hold a CUDA context and memory for the whole run).
        import jax  # after the environment above

        precision = "bf16" if jax.default_backend() == "gpu" else "fp32"
    options = GpuOptions(tiny=args.tiny, repeats=repeats, warmup=warmup, scan_layers=args.scan_layers,
                         precision=precision, optimizer=args.optimizer)
    if args._worker:
        run_worker(args._worker, options, args._result, args._progress, args._deadline)
        return

    names = _select(args.only)
    worker_args = ["--repeats", str(repeats), "--warmup", str(warmup), "--precision", precision,
                   "--optimizer", args.optimizer] + (["--tiny"] if args.tiny else []) + \
                  (["--scan_layers"] if args.scan_layers else [])
    if args.budget_s is not None and args.budget_s <= 0:
        raise SystemExit(f"--budget_s must be positive, got {args.budget_s}")
    results, meta = gpu_suite(names, options, isolate=not args.no_isolate, worker_args=worker_args,
                              output=Path(args.output) if args.output else None, budget_s=args.budget_s)
    meta.setdefault("options", dataclasses.asdict(options))  # only when every workload failed
    out = Path(args.output) if args.output else \
        RESULTS / f"gpu{'-tiny' if args.tiny else ''}-{meta.get('date', time.strftime('%Y-%m-%d'))}.json"
    write_gpu_results(out, meta, results, merge=bool(args.only) and not args.output)
    print(markdown_table(results))
    print(f"wrote {out}")
    if any("error" in result for result in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

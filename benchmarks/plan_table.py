"""The README's ``jaxformers plan`` table: BERT-base/large fine-tuning (classification b32 s128, SQuAD b24 s384)
and GPT-2 small/medium LM training (b8 s1024) compiled for v5e-8 and v4-8 on this CPU, bf16.

    JAX_PLATFORMS=cpu python benchmarks/plan_table.py --scan_layers   # 12 rows: 28 min of compiling on 2 busy cores
    JAX_PLATFORMS=cpu python benchmarks/plan_table.py --topology v5e-8

Prints a Markdown table (and writes benchmarks/results/plan-<date>.json); each row's command reproduces it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxformers import plan

ROWS = (
    ("bert-base-uncased", "classification", 32, 128),
    ("bert-base-uncased", "qa", 24, 384),
    ("bert-large-uncased", "classification", 32, 128),
    ("bert-large-uncased", "qa", 24, 384),
    ("gpt2", "lm", 8, 1024),
    ("gpt2-medium", "lm", 8, 1024),
)


def command(model: str, task: str, batch: int, seq: int, topology: str, scan: bool) -> str:
    flags = " --scan_layers" if scan else ""
    return f"jaxformers plan {model} --task {task} --batch {batch} --seq {seq} --topology {topology}{flags}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", action="append", help="default: v5e-8 and v4-8")
    parser.add_argument("--scan_layers", action="store_true", help="scan over layers (compiles several times faster)")
    args = parser.parse_args(argv)
    reports = []
    print("| model | task | batch x seq | topology | fits | memory / device (args + temps) | "
          "est. step | bound | attention | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for topology in args.topology or ["v5e-8", "v4-8"]:
        for model, task, batch, seq in ROWS:
            report = plan.plan(plan.PlanRequest(model=model, task=task, batch=batch, seq=seq, topology=topology,
                                                scan_layers=args.scan_layers))
            reports.append(report)
            memory = report["per_device_memory_bytes"]
            gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
            how = command(model, task, batch, seq, topology, args.scan_layers)
            print(f"| {model} | {task} | {batch} x {seq} | {topology} | {'yes' if report['fits'] else 'no'} | "
                  f"{gib(memory['total'])} GiB ({gib(memory['arguments'])} + {gib(memory['temporaries'])}) of "
                  f"{gib(report['hbm_bytes_per_device'])} | {report['estimated_step_ms']:.1f} ms | "
                  f"{report['bound']} | {report['attention']} | `{how}` |", flush=True)
    name = "-".join(args.topology or ["all"])
    out = Path(__file__).resolve().parent / "results" / f"plan-{name}-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()

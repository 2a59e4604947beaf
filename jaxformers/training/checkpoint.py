"""Train-state checkpoints: one safetensors file per saved step, written atomically, the last ``keep`` kept.

Each leaf of the ``TrainState`` pytree is stored under its pytree path (``.params['bert']['pooler']...``), so
restoring needs a template state (the one ``create_train_state`` returns) and checks every key and shape by name.
A crash while writing leaves only a hidden temporary file behind, never a truncated checkpoint. Each checkpoint
also carries the :class:`RunningTotals` of the step metrics (in its metadata), so that a resumed run reports the
same mean training loss as an uninterrupted one.

Output directories of the example scripts: :func:`claim_output_dir` refuses a directory holding another run's
results (as the 0.6.x scripts do) but accepts one that an interrupted run of ours left, whatever moment it was
killed at (even during the final model save); :func:`release_output_dir` marks the run finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..file_utils import atomic_write
from .state import TrainState, gather_to_host

logger = logging.getLogger("jaxformers")

_CHECKPOINT_FILE = re.compile(r"^checkpoint_(\d+)\.safetensors$")


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"checkpoint_{step:09d}.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _CHECKPOINT_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def _flat_leaves(state: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


@dataclasses.dataclass
class RunningTotals:
    """Sums of the per-step metrics over every step since step 1, and how many steps they cover.

    ``train_loop`` adds each step's metrics and stores the totals in every checkpoint; resuming restores them, so
    ``mean("loss")`` after a resumed run equals the uninterrupted run's (the reference script's ``loss`` in
    ``eval_results.txt``). ``complete`` is False when a checkpoint from before this existed was resumed.
    """

    steps: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    complete: bool = True

    def add(self, metrics: Mapping[str, float]) -> None:
        self.steps += 1
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def mean(self, name: str) -> float | None:
        return self.sums[name] / self.steps if self.steps and name in self.sums else None

    def to_json(self) -> str:
        return json.dumps({"steps": self.steps, "sums": self.sums, "complete": self.complete})

    def load_json(self, text: str, source: str) -> None:
        try:
            values = json.loads(text)
            self.steps, self.sums = int(values["steps"]), {str(k): float(v) for k, v in values["sums"].items()}
            self.complete = bool(values.get("complete", True))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"checkpoint {source!r}: unreadable running totals {text[:200]!r} ({error})") from error


def save_checkpoint(directory: str | os.PathLike, state: TrainState, step: int, keep: int = 2,
                    totals: RunningTotals | None = None) -> Path:
    """Write ``state`` (and ``totals``, in the metadata) as ``checkpoint_<step>.safetensors`` and delete all but
    the newest ``keep`` checkpoints.

    Every process must call it (sharded leaves are gathered from all hosts); only process 0 writes.
    """
    from safetensors.numpy import save as to_safetensors_bytes

    if keep < 1:
        raise ValueError(f"keep={keep}: at least the checkpoint being written must be kept")
    host = gather_to_host(state)
    arrays = {key: np.array(leaf, order="C") for key, leaf in _flat_leaves(host)}  # ascontiguousarray makes 0-d 1-d
    path = checkpoint_path(directory, step)
    if jax.process_index() == 0:
        metadata = {"step": str(step), "format": "jaxformers-train-state"}
        if totals is not None:
            metadata["running_totals"] = totals.to_json()
        payload = to_safetensors_bytes(arrays, metadata=metadata)
        with atomic_write(path) as stream:
            stream.write(payload)
        for _, old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
        for leftover in Path(directory).glob(".checkpoint_*.tmp"):  # from a run killed while writing one
            leftover.unlink(missing_ok=True)
        logger.info("saved train state at step %d to %s", step, path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxformers checkpoint {step}")
    return path


def restore_checkpoint(directory: str | os.PathLike, state_template: TrainState,
                       totals: RunningTotals | None = None) -> TrainState | None:
    """The latest checkpoint in ``directory`` laid out like ``state_template`` (same shardings), or None when
    there is none; ``totals`` is filled from the same file. Raises ValueError naming the file and key when the
    checkpoint does not fit the template."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = latest_checkpoint(directory)
    if path is None:
        return None
    try:
        arrays = load_file(str(path))
        with safe_open(str(path), framework="numpy") as reader:
            metadata = reader.metadata() or {}
    except Exception as error:
        raise OSError(f"cannot read checkpoint {str(path)!r}: {error}") from error
    if totals is not None:
        if "running_totals" in metadata:
            totals.load_json(metadata["running_totals"], str(path))
        else:
            logger.warning("checkpoint %s has no running totals: the mean loss will cover the resumed steps only",
                           path)
            totals.steps, totals.sums, totals.complete = 0, {}, False

    leaves, treedef = jax.tree_util.tree_flatten_with_path(state_template)
    restored = []
    for key_path, template in leaves:
        key = jax.tree_util.keystr(key_path)
        if key not in arrays:
            raise ValueError(f"checkpoint {str(path)!r} has no entry {key!r}: was it written for another model or optimizer?")
        value = arrays.pop(key)
        shape = tuple(np.shape(template))
        if value.shape != shape:
            raise ValueError(f"checkpoint {str(path)!r}: {key!r} has shape {value.shape}, the train state expects {shape}")
        dtype = np.dtype(template.dtype)
        if value.dtype != dtype:
            raise ValueError(f"checkpoint {str(path)!r}: {key!r} has dtype {value.dtype}, the train state expects {dtype}")
        sharding = getattr(template, "sharding", None)
        if sharding is None:
            restored.append(value)
        else:
            restored.append(jax.make_array_from_callback(shape, sharding, lambda index, value=value: value[index]))
    if arrays:
        raise ValueError(f"checkpoint {str(path)!r} has entries the train state lacks: {sorted(arrays)[:5]}")
    logger.info("restored train state from %s", path)
    return jax.tree_util.tree_unflatten(treedef, restored)


# ------------------------------------------------------------------------------------------ output directories

RUN_MARKER = ".jaxformers-run-in-progress"


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """The test of :func:`claim_output_dir` alone (no marker written, no JAX backend started): a ValueError for a
    directory holding results, nothing for a new, empty or interrupted one."""
    from ..atomic_save import is_save_internal

    output_dir = Path(output_dir)
    if output_dir.is_dir():
        contents = {entry.name for entry in output_dir.iterdir() if not is_save_internal(entry.name)}
        interrupted = RUN_MARKER in contents or contents <= {"checkpoints"}
        if contents and not interrupted:
            raise ValueError(f"Output directory ({output_dir}) already exists and is not empty.")


def claim_output_dir(output_dir: str | os.PathLike, description: str = "") -> None:
    """Refuse to train into a directory holding results (the reference scripts' rule), except one an interrupted
    run left: it holds our in-progress marker, or only ``checkpoints``; then mark it as this run's.

    A kill at any moment, even during the final ``save_pretrained``, leaves the marker, so rerunning the same
    command resumes (from ``checkpoints`` when there are any) and finishes the job. Only process 0 writes.
    """
    import jax

    check_output_dir(output_dir)
    output_dir = Path(output_dir)
    if jax.process_index() == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(output_dir / RUN_MARKER, "w") as stream:
            stream.write(json.dumps({"run": description, "pid": os.getpid()}) + "\n")


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Mark the run that :func:`claim_output_dir` started as finished: from now on its results are protected."""
    import jax

    if jax.process_index() == 0:
        (Path(output_dir) / RUN_MARKER).unlink(missing_ok=True)

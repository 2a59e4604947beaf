"""Train-state checkpoints: one safetensors file per saved step, written atomically, the last ``keep`` kept.

Each leaf of the ``TrainState`` pytree is stored under its pytree path (``.params['bert']['pooler']...``), so
restoring needs a template state (the one ``create_train_state`` returns) and checks every key and shape by name.
A crash while writing leaves only a hidden temporary file behind, never a truncated checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
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


def save_checkpoint(directory: str | os.PathLike, state: TrainState, step: int, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint_<step>.safetensors`` and delete all but the newest ``keep`` checkpoints.

    Every process must call it (sharded leaves are gathered from all hosts); only process 0 writes.
    """
    from safetensors.numpy import save as to_safetensors_bytes

    if keep < 1:
        raise ValueError(f"keep={keep}: at least the checkpoint being written must be kept")
    host = gather_to_host(state)
    arrays = {key: np.array(leaf, order="C") for key, leaf in _flat_leaves(host)}  # ascontiguousarray makes 0-d 1-d
    path = checkpoint_path(directory, step)
    if jax.process_index() == 0:
        payload = to_safetensors_bytes(arrays, metadata={"step": str(step), "format": "jaxformers-train-state"})
        with atomic_write(path) as stream:
            stream.write(payload)
        for _, old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
        logger.info("saved train state at step %d to %s", step, path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxformers checkpoint {step}")
    return path


def restore_checkpoint(directory: str | os.PathLike, state_template: TrainState) -> TrainState | None:
    """The latest checkpoint in ``directory`` laid out like ``state_template`` (same shardings), or None when
    there is none. Raises ValueError naming the file and key when the checkpoint does not fit the template."""
    from safetensors.numpy import load_file

    path = latest_checkpoint(directory)
    if path is None:
        return None
    try:
        arrays = load_file(str(path))
    except Exception as error:
        raise OSError(f"cannot read checkpoint {str(path)!r}: {error}") from error

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

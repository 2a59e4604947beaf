"""Devices: the mesh, how parameters/optimizer state/batches are laid out on it, and multi-host start-up.

One mesh axis, ``"data"``. Batches are split along their first dimension over it. Parameters are either
replicated on every device (plain data parallelism) or, with ``fsdp``, each one is split along its largest axis
that the device count divides (ZeRO-3 / FSDP style: XLA all-gathers the weights where they are used and
reduce-scatters the gradients). Everything is expressed as ``NamedSharding`` annotations on one ``jax.jit``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger("jaxformers")

DATA_AXIS = "data"
# FSDP shards over the same axis as the data: every device holds 1/N of each (large enough) tensor.
FSDP_AXIS = DATA_AXIS


def make_mesh(num_devices: int | None = None, devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (all of them, on every host, when None), axis ``"data"``."""
    pool = list(devices) if devices is not None else jax.devices()
    if num_devices is None:
        num_devices = len(pool)
    if not 1 <= num_devices <= len(pool):
        raise ValueError(f"num_devices={num_devices}: there are {len(pool)} devices ({pool[0].platform})")
    if num_devices < len(pool) and jax.process_count() > 1:
        raise ValueError("num_devices must cover every device when running on several hosts")
    return Mesh(np.asarray(pool[:num_devices]), (DATA_AXIS,))


def fsdp_spec(shape: tuple[int, ...], num_shards: int) -> PartitionSpec:
    """Shard the largest axis that ``num_shards`` divides; replicate scalars, small or indivisible tensors."""
    if num_shards <= 1 or not shape:
        return PartitionSpec()
    candidates = [axis for axis, size in enumerate(shape) if size % num_shards == 0 and size >= num_shards]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda a: (shape[a], -a))
    spec: list[str | None] = [None] * len(shape)
    spec[axis] = FSDP_AXIS
    return PartitionSpec(*spec)


def tree_shardings(tree: Any, mesh: Mesh, fsdp: bool, memory_kind: str | None = None) -> Any:
    """A ``NamedSharding`` per leaf: replicated, or the FSDP rule. Depends on the shape only, so the Adam
    moments get the same layout as their parameter."""
    num_shards = mesh.shape[DATA_AXIS]

    def sharding(leaf: Any) -> NamedSharding:
        spec = fsdp_spec(tuple(np.shape(leaf)), num_shards) if fsdp else PartitionSpec()
        return NamedSharding(mesh, spec, memory_kind=memory_kind)

    return jax.tree.map(sharding, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_batch_on_mesh(mesh: Mesh, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Place a dict of host arrays on the mesh, split along the first (batch) dimension.

    On one host ``batch`` is the global batch; on several, each host passes its own slice (its local devices'
    share) and the global batch is their concatenation in process order.
    """
    sharding = batch_sharding(mesh)
    local_devices = len(mesh.local_devices)
    out: dict[str, jax.Array] = {}
    for name, value in batch.items():
        if isinstance(value, jax.Array) and value.sharding == sharding:
            out[name] = value
            continue
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"batch[{name!r}] is a scalar: every batch entry needs a leading batch dimension")
        if array.shape[0] % local_devices:
            raise ValueError(
                f"batch[{name!r}] has {array.shape[0]} rows, not a multiple of the {local_devices} local devices: "
                f"use a batch size divisible by the device count (or pad_batch() for evaluation)"
            )
        out[name] = jax.make_array_from_process_local_data(sharding, array)
    return out


def host_share(batch: Mapping[str, Any]) -> dict[str, Any]:
    """This process's contiguous share of a global batch (the whole batch on a single host).

    Multi-host input pipelines here build the same global batch on every host (seeded shuffling) and each host
    feeds only its rows to :func:`shard_batch_on_mesh`.
    """
    hosts = jax.process_count()
    if hosts == 1:
        return dict(batch)
    rows = len(next(iter(batch.values())))
    if rows % hosts:
        raise ValueError(f"a global batch of {rows} rows does not split evenly over the {hosts} processes")
    start = jax.process_index() * (rows // hosts)
    return {name: value[start:start + rows // hosts] for name, value in batch.items()}


def pad_batch(batch: Mapping[str, Any], multiple: int) -> tuple[dict[str, np.ndarray], int]:
    """Pad every entry along dim 0 (repeating zeros) up to a multiple of ``multiple``; returns the padded batch
    and how many rows are real, so the caller can drop the padding from the outputs."""
    sizes = {name: np.shape(value)[0] for name, value in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch entries disagree on the batch size: {sizes}")
    size = next(iter(sizes.values()))
    target = -(-size // multiple) * multiple
    padded = {}
    for name, value in batch.items():
        array = np.asarray(value)
        padding = [(0, target - size)] + [(0, 0)] * (array.ndim - 1)
        padded[name] = np.pad(array, padding)
    return padded, size


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Start JAX's multi-host runtime from arguments or ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID``. Returns False (and does nothing) for a single-process run."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator_address is None and (num_processes is None or num_processes <= 1):
        return False
    if coordinator_address is None or num_processes is None or process_id is None:
        raise ValueError(
            "multi-host training needs all of coordinator address, process count and process id "
            f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r}): pass --coordinator_address, "
            "--num_processes, --process_id or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is outside 0..{num_processes - 1}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    logger.info("process %d of %d joined %s", process_id, num_processes, coordinator_address)
    return True


def host_offload_supported(mesh: Mesh) -> bool:
    """Whether the devices have a separate ``pinned_host`` memory the optimizer state can live in."""
    device = mesh.devices.flat[0]
    if device.platform == "cpu":
        return False  # host memory is the device memory: nothing to offload to
    try:
        kinds = {memory.kind for memory in device.addressable_memories()}
    except (AttributeError, NotImplementedError, RuntimeError):  # runtimes without memory spaces
        return False
    return "pinned_host" in kinds

"""Devices: the mesh, how parameters/optimizer state/batches are laid out on it, and multi-host start-up.

The mesh has two axes, ``("data", "model")`` (:func:`make_mesh`). Batches are split along their first dimension
over ``data``. Parameters are laid out by their logical axis names (recorded by the layers' parameter factory)
through the rules table in ``jaxformers.sharding_rules``: Megatron-style tensor parallelism over ``model``
(column-split Q/K/V and intermediate dense, row-split output projections, vocab-split embeddings), and with
``fsdp`` each parameter is also split over ``data`` (ZeRO-3 / FSDP style: XLA all-gathers the weights where they
are used and reduce-scatters the gradients). Everything is expressed as ``NamedSharding`` annotations on one
``jax.jit``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..sharding_rules import DATA_AXIS, MESH_AXES, MODEL_AXIS, Rules, param_rules, resolve_spec

logger = logging.getLogger("jaxformers")

# FSDP shards over the same axis as the data: every data-parallel replica holds 1/N of each (large enough) tensor.
FSDP_AXIS = DATA_AXIS

__all__ = ["DATA_AXIS", "MODEL_AXIS", "FSDP_AXIS", "make_mesh", "tree_shardings", "partition_specs", "shard_model"]


def make_mesh(data: int | None = None, model: int = 1, *, devices: list[Any] | None = None) -> Mesh:
    """A ``("data", "model")`` mesh of ``data x model`` devices (``data=None``: every device, on every host,
    not used by ``model``). Neighbouring devices share a ``model`` group, whose all-reduces are the most frequent.

    ``make_mesh(8)`` is 8-way data parallelism; ``make_mesh(4, 2)`` adds 2-way tensor parallelism.
    """
    pool = list(devices) if devices is not None else jax.devices()
    if model < 1 or len(pool) % model:
        raise ValueError(f"model={model}: the model axis must be >= 1 and divide the {len(pool)} devices "
                         f"({pool[0].platform})")
    if data is None:
        data = len(pool) // model
    if data < 1 or data * model > len(pool):
        raise ValueError(f"data={data} x model={model} needs {data * model} devices; there are {len(pool)} "
                         f"({pool[0].platform})")
    if data * model < len(pool) and jax.process_count() > 1:
        raise ValueError("data x model must cover every device when running on several hosts")
    grid = np.asarray(pool[: data * model], dtype=object).reshape(data, model)
    return Mesh(grid, MESH_AXES)


def fsdp_spec(shape: tuple[int, ...], num_shards: int) -> PartitionSpec:
    """For parameters without logical axis names (modules not built by the jaxformers layers): shard the largest
    axis that ``num_shards`` divides; replicate scalars, small or indivisible tensors."""
    if num_shards <= 1 or not shape:
        return PartitionSpec()
    candidates = [axis for axis, size in enumerate(shape) if size % num_shards == 0 and size >= num_shards]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda a: (shape[a], -a))
    spec: list[str | None] = [None] * len(shape)
    spec[axis] = FSDP_AXIS
    return PartitionSpec(*spec)


def _is_variable(leaf: Any) -> bool:
    return isinstance(leaf, nnx.Variable)


def partition_specs(tree: Any, mesh: Mesh, fsdp: bool = False, rules: Rules | None = None) -> Any:
    """The ``PartitionSpec`` of every leaf of ``tree`` (an ``nnx.State`` of parameters, an optimizer state, a
    model): from the logical axis names for ``nnx.Param`` leaves that have them (``rules``, default
    :func:`~jaxformers.sharding_rules.param_rules`), else the shape-only FSDP rule or replication. Given
    ``rules`` replace the whole table; ``fsdp`` then only matters for parameters without names."""
    rules = rules if rules is not None else param_rules(fsdp)
    mesh_shape = dict(mesh.shape)
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)

    def spec_of(path: tuple, leaf: Any) -> Any:
        axes = leaf.get_metadata("out_sharding", None) if _is_variable(leaf) else None
        shape = tuple(np.shape(leaf.get_value() if _is_variable(leaf) else leaf))
        if axes and 0 not in shape:  # an empty placeholder (a frozen parameter's optimizer slot) stays whole
            spec = resolve_spec(axes, shape, mesh_shape, rules, what=jax.tree_util.keystr(path))
        elif fsdp:
            spec = fsdp_spec(shape, mesh_shape.get(FSDP_AXIS, 1))
        else:
            spec = PartitionSpec()
        return leaf.replace(spec) if _is_variable(leaf) else spec

    return jax.tree_util.tree_map_with_path(spec_of, tree, is_leaf=_is_variable)


def tree_shardings(tree: Any, mesh: Mesh, fsdp: bool, memory_kind: str | None = None,
                   rules: Rules | None = None) -> Any:
    """A ``NamedSharding`` per leaf (see :func:`partition_specs`). Adam's moments keep their parameter's
    logical names, so they get the same layout as their parameter."""

    def named(spec: Any) -> Any:
        if _is_variable(spec):
            return spec.replace(NamedSharding(mesh, spec.get_value(), memory_kind=memory_kind))
        return NamedSharding(mesh, spec, memory_kind=memory_kind)

    specs = partition_specs(tree, mesh, fsdp, rules)
    return jax.tree.map(named, specs, is_leaf=lambda leaf: _is_variable(leaf) or isinstance(leaf, PartitionSpec))


def shard_model(model: nnx.Module, mesh: Mesh, *, fsdp: bool = False, rules: Rules | None = None) -> nnx.Module:
    """Place ``model``'s parameters on ``mesh`` by their logical axes, in place (inference and evaluation outside
    the train engine: jitted calls then run partitioned, the computation following the parameters' layout).
    Returns the model."""
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.device_put(params, tree_shardings(params, mesh, fsdp, rules=rules)))
    return model


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def local_data_shards(mesh: Mesh) -> int:
    """How many slices of the batch this process's devices hold: the ``data`` rows of the mesh it owns (each row's
    ``model`` devices see the same rows of the batch)."""
    here = jax.process_index()
    rows = {index[0] for index, device in np.ndenumerate(mesh.devices) if device.process_index == here}
    return max(len(rows), 1)


def shard_batch_on_mesh(mesh: Mesh, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Place a dict of host arrays on the mesh, split along the first (batch) dimension.

    On one host ``batch`` is the global batch; on several, each host passes its own slice (its local devices'
    share) and the global batch is their concatenation in process order.
    """
    sharding = batch_sharding(mesh)
    local_shards = local_data_shards(mesh)
    out: dict[str, jax.Array] = {}
    for name, value in batch.items():
        if isinstance(value, jax.Array) and value.sharding == sharding:
            out[name] = value
            continue
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"batch[{name!r}] is a scalar: every batch entry needs a leading batch dimension")
        if array.shape[0] % local_shards:
            raise ValueError(
                f"batch[{name!r}] has {array.shape[0]} rows, not a multiple of the {local_shards} local data-parallel "
                f"devices: use a batch size divisible by the data-parallel device count (or pad_batch() for "
                f"evaluation)"
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

"""Logical axis names -> device-mesh axes: the one table that decides how parameters and activations are laid out.

Every parameter records the logical name of each of its dimensions (``out_sharding`` metadata on the
``nnx.Param``, so ``nnx.get_partition_spec`` shows it). The mesh has two axes, ``("data", "model")``:

* ``data``: the batch is split over it (data parallelism); with FSDP the parameters are split over it too.
* ``model``: Megatron-style tensor parallelism. Q/K/V and the intermediate dense are split by columns
  (``heads``, ``qkv``, ``mlp`` outputs), the attention-output and output dense by rows (the same names, as
  inputs), the embedding tables by vocabulary rows (``vocab``, which also splits the tied LM logits).

A logical name maps to a list of mesh axes tried in order. A tensor uses each mesh axis at most once, and a mesh
axis that does not divide the dimension (or has size 1) is skipped, so every layout is valid on every mesh: an
odd vocabulary (GPT-2's 50257) is simply replicated over ``model``.

Activations follow their own table (:data:`ACTIVATION_RULES`): only the feature dimension a column-split
projection produces is constrained to ``model``; the batch dimension's layout comes from the batch itself.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

Rules = tuple[tuple[str, tuple[str, ...]], ...]

# Parameters, without FSDP. Every logical name a model uses must appear here (a typo is an error, not a silent
# replication). Names with no mesh axis are replicated.
PARAM_RULES: Rules = (
    ("vocab", (MODEL_AXIS,)),  # token-embedding rows / tied LM-head columns: vocab-split
    ("heads", (MODEL_AXIS,)),  # heads x head_dim of Q/K/V (column-split) and attention output (row-split)
    ("qkv", (MODEL_AXIS,)),  # a fused [q | k | v] projection's output (GPT-2 c_attn, Transformer-XL qkv_net)
    ("mlp", (MODEL_AXIS,)),  # intermediate width: column-split in, row-split out
    ("embed", ()),  # the model width (hidden_size / n_embd / d_model)
    ("kv", ()),  # head_dim of per-head tensors (Transformer-XL's relative biases)
    ("position", ()),  # position-embedding rows
    ("type_vocab", ()),  # BERT token-type rows
    ("classes", ()),  # classifier / span / next-sentence outputs: a handful of columns
    ("clusters", ()),  # Transformer-XL adaptive-softmax tail clusters
    ("proj", ()),  # Transformer-XL per-cluster embedding width (d_embed / div_val^i)
    ("layers", ()),  # the leading axis of scanned (stacked) layers
)

# FSDP (ZeRO-3) also splits the parameters (and so the optimizer state) over ``data``: the model width first,
# and the vocabulary of embedding tables (after ``model``), so every large tensor has a ``data``-split dimension.
FSDP_OVERRIDES: Rules = (
    ("vocab", (MODEL_AXIS, DATA_AXIS)),
    ("embed", (DATA_AXIS,)),
)

# Activations inside a train/eval step: batch over ``data``, column-split features over ``model``.
ACTIVATION_RULES: Rules = (
    ("batch", (DATA_AXIS,)),
    ("vocab", (MODEL_AXIS,)),
    ("heads", (MODEL_AXIS,)),
    ("qkv", (MODEL_AXIS,)),
    ("mlp", (MODEL_AXIS,)),
)


def param_rules(fsdp: bool = False) -> Rules:
    """The parameter table; with ``fsdp`` the :data:`FSDP_OVERRIDES` replace their entries.

    The result also works as flax's ``nnx.logical_axis_rules(...)`` to show mesh axes in ``nnx.get_partition_spec``.
    """
    if not fsdp:
        return PARAM_RULES
    overrides = dict(FSDP_OVERRIDES)
    return tuple((name, overrides.get(name, axes)) for name, axes in PARAM_RULES)


def resolve_spec(axes: Sequence[str | None], shape: Sequence[int], mesh_shape: Mapping[str, int], rules: Rules,
                 what: str = "tensor") -> PartitionSpec:
    """The ``PartitionSpec`` of a tensor of ``shape`` whose dimensions have the logical names ``axes``.

    Each dimension takes the mesh axes its rule lists, in order, skipping one already used by an earlier
    dimension, one of size 1 and one that (with those already taken) does not divide the dimension.
    """
    if len(axes) != len(shape):
        raise ValueError(f"{what}: logical axes {tuple(axes)} do not match its shape {tuple(shape)}")
    table = dict(rules)
    used: set[str] = set()
    spec: list[Any] = []
    for name, size in zip(axes, shape):
        if name is not None and name not in table:
            raise ValueError(f"{what}: logical axis {name!r} has no sharding rule; known: {sorted(table)}")
        chosen: list[str] = []
        shards = 1
        for mesh_axis in table.get(name, ()) if name is not None else ():
            count = mesh_shape.get(mesh_axis, 1)
            if count == 1 or mesh_axis in used or size % (shards * count):
                continue
            chosen.append(mesh_axis)
            shards *= count
            used.add(mesh_axis)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


# ------------------------------------------------------------------------------------------- activation layout

# (mesh, rules) while a train/eval step is being traced; None elsewhere (eager calls, generation).
_ACTIVATION_LAYOUT: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "jaxformers_activation_layout", default=None
)


@contextlib.contextmanager
def activation_layout(mesh: Mesh, rules: Rules = ACTIVATION_RULES) -> Iterator[None]:
    """Inside this block (entered while tracing a jitted step), :func:`constrain_features` pins activations'
    feature dimensions to ``mesh`` by ``rules``. Only trace time is affected: the compiled step keeps the layout."""
    token = _ACTIVATION_LAYOUT.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVATION_LAYOUT.reset(token)


def constrain_features(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Pin the last dimension of ``x`` (``[..., features]``) to the mesh axes of ``axis_name``; leading
    dimensions stay free for XLA to choose. Identity outside :func:`activation_layout` and for names the
    activation rules replicate, so single-device and inference code pays nothing."""
    active = _ACTIVATION_LAYOUT.get()
    if active is None or axis_name is None:
        return x
    mesh, rules = active
    table = dict(rules)
    if axis_name not in table:
        return x
    (last,) = resolve_spec((axis_name,), (x.shape[-1],), dict(mesh.shape), rules)
    if last is None:
        return x
    spec = PartitionSpec(*([PartitionSpec.UNCONSTRAINED] * (x.ndim - 1)), last)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

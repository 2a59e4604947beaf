"""The fused scaled-dot-product attention kernels, chosen per platform.

``layers.attention`` calls :func:`fused_attention` whenever neither the attention probabilities nor attention
dropout are needed (those need the explicit softmax, which stays in ``layers``). Here:

* TPU: the Pallas flash-attention kernel that ships with JAX (``jax.experimental.pallas.ops.tpu``), with a
  padding mask as segment ids (BERT) or its causal mode (GPT-2 training), when both lengths are multiples of
  its 128-wide blocks; otherwise XLA.
* GPU: ``jax.nn.dot_product_attention(implementation="cudnn")`` (cuDNN's fused kernel) for bf16/fp16 inputs with
  a head size cuDNN supports; otherwise XLA.
* CPU (and everything else): XLA's ``jax.nn.dot_product_attention``, the numerics every parity test checks.

The platform is the default backend unless :func:`target_platform` says otherwise: ``jaxformers plan`` traces
on a CPU machine for a TPU topology, so it sets ``"tpu"`` and reads back which kernels were used.
:func:`pallas_interpret` runs the TPU kernel in Pallas's interpret mode on any backend (the CPU tests).

Masks: the models build additive biases. A per-key bias ``[batch, 1, 1, kv]`` is a padding mask (0 keeps a key,
``padding_bias``'s -10000 removes it: ``exp`` of that underflows to exactly 0, so dropping the key instead gives
the same result). A concrete ``[1, 1, q, q]`` bias equal to the causal pattern is the causal mask.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxformers_attention_target", default=None)
_USED: contextvars.ContextVar[set | None] = contextvars.ContextVar("jaxformers_attention_used", default=None)
_INTERPRET: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxformers_pallas_interpret", default=False)
_MESH: contextvars.ContextVar = contextvars.ContextVar("jaxformers_attention_mesh", default=None)
PALLAS_BLOCK = 128  # the flash kernel's block along both sequence axes
CUDNN_HEAD_DIMS = range(8, 257, 8)  # head sizes cuDNN's fused attention accepts (multiples of 8, up to 256)


@contextlib.contextmanager
def target_platform(platform: str, mesh: Any = None) -> Iterator[set[str]]:
    """Choose kernels for ``platform`` (``"tpu"``, ``"gpu"``, ``"cpu"``) while tracing in this block; yields the
    set of kernel names used, filled in as attention is traced.

    ``mesh``: the device mesh the traced step is sharded over. A Pallas kernel is opaque to XLA's partitioner
    (which would gather its inputs onto every device), so on a mesh of several devices it runs under
    ``shard_map``, split over ``data`` (batch) and ``model`` (heads); without a mesh it is used on one device only.
    """
    used: set[str] = set()
    tokens = _TARGET.set(platform), _USED.set(used), _MESH.set(mesh)
    try:
        yield used
    finally:
        for var, token in zip((_TARGET, _USED, _MESH), tokens):
            var.reset(token)


@contextlib.contextmanager
def pallas_interpret() -> Iterator[set[str]]:
    """Run the TPU Pallas kernels in interpret mode on whatever backend this is (for tests on CPU)."""
    from jax.experimental.pallas import tpu as pltpu

    token = _INTERPRET.set(True)
    try:
        with target_platform("tpu") as used, pltpu.force_tpu_interpret_mode():
            yield used
    finally:
        _INTERPRET.reset(token)


def current_platform() -> str:
    platform = _TARGET.get() or jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def record_kernel(name: str) -> None:
    """Note which kernel a traced attention used (read by ``target_platform``'s caller)."""
    used = _USED.get()
    if used is not None:
        used.add(name)


def _concrete(x: Array | None) -> np.ndarray | None:
    if x is None or isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def is_causal_bias(bias: Array | None, q_len: int, kv_len: int) -> bool:
    """Whether ``bias`` is a known ``[1, 1, q, q]`` causal bias (0 on and below the diagonal, negative above)."""
    values = _concrete(bias)
    if values is None or values.shape != (1, 1, q_len, kv_len) or q_len != kv_len:
        return False
    allowed = np.tril(np.ones((q_len, kv_len), bool))
    return bool(np.all(values[0, 0][allowed] == 0) and np.all(values[0, 0][~allowed] <= -1e4))


def _tpu_masking(bias: Array | None, batch: int, q_len: int, kv_len: int):
    """``(segment_ids or None, causal)`` expressing ``bias`` for the flash kernel; None when it cannot."""
    from jax.experimental.pallas.ops.tpu.flash_attention import SegmentIds

    if bias is None:
        return None, False
    if is_causal_bias(bias, q_len, kv_len):
        return None, True
    if bias.ndim == 4 and bias.shape[1:3] == (1, 1) and bias.shape[-1] == kv_len:
        keep = (bias[:, 0, 0, :] > -1.0).astype(jnp.int32)  # [batch or 1, kv]: 1 real key, 0 padding
        keep = jnp.broadcast_to(keep, (batch, kv_len))
        return SegmentIds(q=jnp.ones((batch, q_len), jnp.int32), kv=keep), False
    return None


def pallas_flash(query: Array, key: Array, value: Array, bias: Array | None) -> Array | None:
    """The TPU flash kernel on ``[batch, seq, heads, head_dim]`` inputs; None when the shapes or mask don't fit."""
    from jax.experimental.pallas.ops.tpu import flash_attention as flash

    batch, q_len, _, head_dim = query.shape
    kv_len = key.shape[1]
    if q_len % PALLAS_BLOCK or kv_len % PALLAS_BLOCK:
        return None
    masking = _tpu_masking(bias, batch, q_len, kv_len)
    if masking is None:
        return None
    segment_ids, causal = masking
    mesh = _MESH.get()
    if mesh is None and jax.device_count() > 1 and not _INTERPRET.get():
        return None  # unknown layout on several devices: let XLA partition its own attention
    block = next(size for size in (512, 256, 128) if q_len % size == 0 and kv_len % size == 0)
    sizes = flash.BlockSizes(block_q=block, block_k_major=block, block_k=block, block_b=1,
                             block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block,
                             block_q_dkv=block, block_k_major_dq=block, block_k_dq=block, block_q_dq=block)

    # Half-precision operands gain nothing from a "highest" default (the parity tests set it), which Mosaic
    # cannot lower for them.
    precision = "default" if query.dtype in (jnp.bfloat16, jnp.float16) else None

    def kernel(q: Array, k: Array, v: Array, segments: Any) -> Array:  # [batch, heads, seq, d] each
        with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
            return flash.flash_attention(q, k, v, segment_ids=segments, causal=causal,
                                         sm_scale=1.0 / math.sqrt(head_dim), block_sizes=sizes)

    if mesh is not None and mesh.devices.size > 1:
        kernel = _shard_over(kernel, mesh, batch, query.shape[2], segment_ids is not None)
    to_heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [batch, seq, heads, d] <-> [batch, heads, seq, d]
    out = kernel(to_heads_first(query), to_heads_first(key), to_heads_first(value), segment_ids)
    return to_heads_first(out)


def _shard_over(kernel: Any, mesh: Any, batch: int, heads: int, with_segments: bool) -> Any:
    """``kernel`` under shard_map: batch over ``data`` and heads over ``model`` where they divide evenly."""
    from jax.experimental.pallas.ops.tpu.flash_attention import SegmentIds
    from jax.sharding import PartitionSpec

    sizes = dict(mesh.shape)
    data = "data" if batch % sizes.get("data", 1) == 0 and "data" in sizes else None
    model = "model" if sizes.get("model", 1) > 1 and heads % sizes["model"] == 0 else None
    qkv = PartitionSpec(data, model, None, None)
    segments = SegmentIds(q=PartitionSpec(data, None), kv=PartitionSpec(data, None)) if with_segments else None
    return jax.shard_map(kernel, mesh=mesh, in_specs=(qkv, qkv, qkv, segments), out_specs=qkv, check_vma=False)


def _cudnn_allowed(query: Array, key: Array) -> bool:
    return query.dtype in (jnp.bfloat16, jnp.float16) and query.shape[-1] in CUDNN_HEAD_DIMS and \
        key.shape[-1] == query.shape[-1]


def cudnn_bias(bias: Array | None, query: Array, key: Array) -> Array | None:
    """``bias`` as cuDNN takes it: ``[batch or 1, heads or 1, q, kv]`` in the query's dtype. cuDNN broadcasts the
    batch and head axes only, so a padding bias ``[batch, 1, 1, kv]`` is spelled out over the queries (seen on an
    H200: "Bias must have same seq length as QKV, got 1 and 128")."""
    if bias is None:
        return None
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    return jnp.broadcast_to(bias, bias.shape[:2] + (query.shape[1], key.shape[1])).astype(query.dtype)


def fused_attention(query: Array, key: Array, value: Array, bias: Array | None) -> Array:
    """Softmax attention without probabilities or dropout: ``[batch, q, heads, d]`` in, ``[batch, q, heads, d]``
    out, ``bias`` additive and broadcastable to ``[batch, heads, q, kv]``."""
    platform = current_platform()
    if platform == "tpu" or _INTERPRET.get():
        out = pallas_flash(query, key, value, bias)
        if out is not None:
            record_kernel("pallas-flash")
            return out
    if platform == "gpu" and _cudnn_allowed(query, key):
        record_kernel("cudnn")
        if is_causal_bias(bias, query.shape[1], key.shape[1]):
            return jax.nn.dot_product_attention(query, key, value, is_causal=True, implementation="cudnn")
        return jax.nn.dot_product_attention(query, key, value, bias=cudnn_bias(bias, query, key),
                                            implementation="cudnn")
    record_kernel("xla")
    return jax.nn.dot_product_attention(query, key, value, bias=None if bias is None else bias.astype(query.dtype))

"""What every GPU-suite workload shares (benchmarks/run.py --suite gpu): its options, the jax and torch devices
with their syncs and peak-memory readers, step timing, and how figures are rounded."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class GpuOptions:
    tiny: bool
    repeats: int
    warmup: int
    scan_layers: bool
    precision: str  # "bf16" or "fp32" (resolved from "auto" by the device)
    optimizer: str  # "adamw" or "bertadam"


def timed_steps(step: Callable[[], object], sync: Callable[[object], None], warmup: int, repeats: int) -> dict:
    """Warm-up, then ``repeats`` steps each followed by a sync (median per-step time), then ``repeats`` steps
    back to back with one sync at the end (pipelined time: host dispatch overlapping device work)."""
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    last = None
    for _ in range(repeats):
        last = step()
    sync(last)
    pipelined = (time.perf_counter() - started) / repeats
    return {"median_s": statistics.median(times), "min_s": min(times), "pipelined_s": pipelined}


def first_call(step: Callable[[], object], sync: Callable[[object], None]) -> float:
    started = time.perf_counter()
    sync(step())
    return time.perf_counter() - started


def _release_torch_memory() -> None:
    """Return torch's cached blocks to the driver before the jax side runs: JAX's allocator, once grown, keeps
    its memory, so the library whose memory can be released runs first."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Devices:
    """The jax device and the torch device of this run, their syncs and peak-memory readers."""

    def __init__(self) -> None:
        import jax
        import torch

        self.jax_device = jax.devices()[0]
        self.on_gpu = self.jax_device.platform == "gpu"
        if self.on_gpu and not torch.cuda.is_available():
            raise RuntimeError("jax sees a GPU but torch.cuda is not available: install a CUDA build of torch so "
                               "both libraries run on the same device")
        self.torch_device = torch.device("cuda" if self.on_gpu else "cpu")

    def jax_sync(self, value: object) -> None:
        import jax

        jax.block_until_ready(value)

    def torch_sync(self, _: object = None) -> None:
        import torch

        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()

    def jax_peak_gb(self) -> float | None:
        stats = self.jax_device.memory_stats()  # None on CPU
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return _figure(stats["peak_bytes_in_use"] / 2**30)

    def torch_reset_peak(self) -> None:
        import torch

        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def torch_peak_gb(self) -> float | None:
        import torch

        if self.torch_device.type != "cuda":
            return None
        return _figure(torch.cuda.max_memory_allocated() / 2**30)


def _count_params(tree) -> int:
    import jax

    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _summarise(timing: dict) -> dict:
    return {"ms_per_step": round(timing["median_s"] * 1e3, 3), "ms_per_step_min": round(timing["min_s"] * 1e3, 3),
            "ms_per_step_pipelined": round(timing["pipelined_s"] * 1e3, 3)}


def _ratios(jax_seconds: float, torch_seconds: float) -> dict:
    ratio = jax_seconds / torch_seconds
    return {"time_ratio": _figure(ratio), "speedup": _figure(1 / ratio)}


def _figure(value: float) -> float:
    """Four significant figures. Rounding to fixed decimals turned a slow tiny run's TFLOP/s into 0.0."""
    return float(f"{value:.4g}")

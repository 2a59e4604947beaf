"""What every GPU-suite workload shares (benchmarks/run.py --suite gpu): its options, its progress account
(timestamped lines and a partial JSON that survives a timeout), the jax and torch devices with their syncs and
peak-memory readers, step timing under a time cap, and how figures are rounded."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
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


class Progress:
    """A workload's running account: timestamped, flushed progress lines on stdout, and (with ``path``) its entry
    in the suite's JSON rewritten after every stage, so a process killed by its time budget still leaves the
    figures measured so far, marked ``"partial": true`` with the stage it was in.

    ``deadline`` (``time.time()`` seconds) is when the workload's budget runs out; measurement loops ask
    :meth:`cap` for their share of what is left, so a slow device yields fewer steps rather than none.
    """

    def __init__(self, name: str, path: str | None = None, deadline: float | None = None,
                 meta: dict | None = None, started: float | None = None) -> None:
        self.name, self.path, self.deadline, self.meta = name, path, deadline, meta or {}
        self.started = time.time() if started is None else started  # a worker passes its process start
        self.stage_name, self.stage_started = "starting", self.started
        self.result: dict = {}

    def elapsed(self) -> float:
        return time.time() - self.started

    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()

    def cap(self, fraction: float, reserve_s: float = 2.0) -> float:
        """Seconds a measurement block may take: ``fraction`` of the budget left after ``reserve_s``."""
        return max(0.0, (self.remaining() - reserve_s) * fraction)

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{self.elapsed():6.1f}s] {self.name}: {text}", flush=True)

    def stage(self, text: str) -> None:
        """Enter a stage (printed and saved before it starts, so a timeout inside it names it)."""
        self.stage_name, self.stage_started = text, time.time()
        self.log(text)
        self.save()

    def record(self, side: str, figures: dict) -> None:
        """Add figures of one side (``jaxformers``, ``torch``) as soon as they are measured."""
        self.result.setdefault(side, {}).update(figures)
        self.log(f"{side} {json.dumps(figures)}")
        self.save()

    def save(self, final: bool = False) -> None:
        if self.path is None:
            return
        entry = dict(self.result)
        if not final:
            entry.update(partial=True, stage=self.stage_name, elapsed_s=round(self.elapsed(), 1),
                         stage_elapsed_s=round(time.time() - self.stage_started, 1))
        write_entry(Path(self.path), self.name, entry, self.meta)


def write_entry(path: Path, name: str, entry: dict, meta: dict | None = None) -> None:
    """Replace ``results[name]`` in the suite JSON at ``path`` (created if missing), atomically: a reader, or
    a kill in the middle, never sees half a file."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        document = {}
    if meta and not document.get("meta", {}).get("device"):
        document["meta"] = meta
    document.setdefault("results", {})[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(document, indent=2))
    os.replace(scratch, path)


def timed_steps(step: Callable[[], object], sync: Callable[[object], None], warmup: int, repeats: int,
                progress: Progress | None = None, label: str = "", cap_s: float = math.inf) -> dict:
    """Warm-up, then up to ``repeats`` steps each followed by a sync (median per-step time), then as many steps
    back to back with one sync at the end (pipelined time: host dispatch overlapping device work).

    ``cap_s`` bounds the whole block: the synced loop stops once it has used 60% of it (at least one step is
    always measured) and the pipelined loop runs as many steps as the synced one did. ``measured_steps`` says
    how many were timed, so a capped figure is told apart from a full one.
    """
    started = time.perf_counter()
    done_warmup = 0
    for _ in range(warmup):
        sync(step())
        done_warmup += 1
        if time.perf_counter() - started > 0.2 * cap_s:
            break
    if progress:
        progress.log(f"{label}: {done_warmup} warm-up step(s) in {time.perf_counter() - started:.2f} s")
    times = []
    measuring = time.perf_counter()
    for _ in range(repeats):
        begun = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - begun)
        if time.perf_counter() - started > 0.6 * cap_s:
            break
    if progress:
        progress.log(f"{label}: {len(times)} synced step(s) in {time.perf_counter() - measuring:.2f} s, "
                     f"median {statistics.median(times) * 1e3:.3f} ms")
    begun = time.perf_counter()
    last = None
    for _ in range(len(times)):
        last = step()
    sync(last)
    pipelined = (time.perf_counter() - begun) / len(times)
    if progress:
        progress.log(f"{label}: {len(times)} pipelined step(s), {pipelined * 1e3:.3f} ms each")
    return {"median_s": statistics.median(times), "min_s": min(times), "pipelined_s": pipelined,
            "measured_steps": len(times), "warmup_steps": done_warmup}


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
            "ms_per_step_pipelined": round(timing["pipelined_s"] * 1e3, 3),
            "measured_steps": timing["measured_steps"], "warmup_steps": timing["warmup_steps"]}


def _ratios(jax_seconds: float, torch_seconds: float) -> dict:
    ratio = jax_seconds / torch_seconds
    return {"time_ratio": _figure(ratio), "speedup": _figure(1 / ratio)}


def _figure(value: float) -> float:
    """Four significant figures. Rounding to fixed decimals turned a slow tiny run's TFLOP/s into 0.0."""
    return float(f"{value:.4g}")

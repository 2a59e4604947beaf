"""Draw the learning-rate multiplier of every schedule in jaxformers.optimization to one PNG.

    python examples/plot_schedules.py [--out docs/images/schedules.png]

Progress runs from 0 to 1.2 (20% past ``t_total``) so the behaviour after the planned end shows too.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402 - Pillow ships with matplotlib

from jaxformers.optimization import (  # noqa: E402
    ConstantLR,
    LRSchedule,
    WarmupConstantSchedule,
    WarmupCosineSchedule,
    WarmupCosineWithHardRestartsSchedule,
    WarmupCosineWithWarmupRestartsSchedule,
    WarmupLinearSchedule,
)

WARMUP = 0.1
T_TOTAL = 1000


def schedules_to_plot() -> list[tuple[str, LRSchedule]]:
    return [
        ("ConstantLR  ('none')", ConstantLR(t_total=T_TOTAL)),
        ("WarmupConstantSchedule  ('warmup_constant')", WarmupConstantSchedule(WARMUP, T_TOTAL)),
        ("WarmupLinearSchedule  ('warmup_linear')", WarmupLinearSchedule(WARMUP, T_TOTAL)),
        ("WarmupCosineSchedule  (cycles=0.5)", WarmupCosineSchedule(WARMUP, T_TOTAL)),
        (
            "WarmupCosineWithHardRestartsSchedule  (cycles=3)",
            WarmupCosineWithHardRestartsSchedule(WARMUP, T_TOTAL, cycles=3),
        ),
        (
            "WarmupCosineWithWarmupRestartsSchedule  (cycles=3)",
            WarmupCosineWithWarmupRestartsSchedule(WARMUP, T_TOTAL, cycles=3),
        ),
    ]


def plot(out: Path) -> None:
    steps = np.arange(0, int(1.2 * T_TOTAL) + 1)
    fig, axes = plt.subplots(3, 2, figsize=(9, 7), dpi=72, sharex=True, sharey=True)
    for ax, (title, schedule) in zip(axes.flat, schedules_to_plot()):
        multipliers = [schedule.get_lr(int(step), nowarn=True) for step in steps]
        ax.plot(steps / T_TOTAL, multipliers, linewidth=1.5, color="tab:blue")
        ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)  # t_total
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.05, 1.1)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("progress = step / t_total")
    for ax in axes[:, 0]:
        ax.set_ylabel("lr multiplier")
    fig.suptitle(f"Learning-rate schedules (warmup={WARMUP}, t_total={T_TOTAL})", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    rgb = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    plt.close(fig)
    # A 32-colour palette keeps the README image small (a few tens of KB) with no visible loss.
    rgb.quantize(colors=32).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "docs/images/schedules.png"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    logging.getLogger("jaxformers.optimization").setLevel(logging.ERROR)
    plot(args.out)


if __name__ == "__main__":
    main()

"""A daemon's progress as a picture: rolling prequential accuracy per level over the stream,
with the moments new classes appeared marked (people would rather look than read)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from connectors.extras import import_extra


def plot_progress(points: Sequence[tuple[int, dict[int, float], tuple[int, ...]]], path: Path, title: str) -> Path:
    """``points``: (events consumed, rolling accuracy per level, known classes per level), in order."""
    matplotlib = import_extra("matplotlib", "demo", "the accuracy picture")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    levels = sorted({lv for _, accuracy, _ in points for lv in accuracy})
    for level in levels:
        xs = [n for n, accuracy, _ in points if level in accuracy]
        ax.plot(xs, [100 * accuracy[level] for _, accuracy, _ in points if level in accuracy], label=f"level {level}")
    previous: tuple[int, ...] = ()
    for n, _, classes in points:
        if previous and classes != previous:
            ax.axvline(n, color="grey", linestyle=":", linewidth=0.8)
        previous = classes
    ax.set_xlabel("events")
    ax.set_ylabel("prequential accuracy, rolling (%)")
    ax.set_ylim(0, 102)  # a curve at 100 % stays visible above the frame
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the curves, never over them
    ax.set_title(f"{title}\ndotted: new classes appeared", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""The benchmark's outputs: a JSON report, a markdown table and PNG accuracy curves."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import torch

from connectors.extras import import_extra
from hle_stream.metrics.served_paths import recommended_threshold

METRICS = ("a_auc", "a_last", "f_last")


def machine_info() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _clean(value: object) -> object:
    """NaN (an undefined metric, e.g. F_last of a level born in the last task) → null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def build_report(runs: list[dict], config: dict) -> dict:
    results: dict[str, dict[str, dict]] = {}
    for run in runs:
        results.setdefault(run["method"], {})[str(run["seed"])] = run
    return _clean({"config": config, "machine": machine_info(), "results": results,
                   "summary": summarize(results)})


def summarize(results: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Mean and standard deviation over seeds, per method, level and metric."""
    summary: dict[str, dict] = {}
    for method, seeds in results.items():
        runs = list(seeds.values())
        levels = sorted({lv for r in runs for lv in r["levels"]}, key=int)
        per_level = {}
        for level in levels:
            row = {}
            for metric in METRICS:
                values = [r["levels"][level].get(metric) for r in runs if level in r["levels"]]
                values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
                row[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values))} if values else None
            per_level[level] = row
        summary[method] = {
            "levels": per_level,
            "served_paths": _mean_curve([r["served_paths"] for r in runs if "served_paths" in r]),
            "events_per_second": float(np.mean([r["events_per_second"] for r in runs])),
            "wall_seconds": float(np.mean([r["wall_seconds"] for r in runs])),
            "seeds": len(runs),
        }
    return summary


def _mean_curve(curves: list[dict]) -> dict:
    """Served-path quality per threshold, each measure's mean over the seeds that define it."""
    if not curves:
        return {}
    mean = {}
    for threshold in curves[0]:
        mean[threshold] = {}
        for measure in curves[0][threshold]:
            values = [c[threshold][measure] for c in curves if c[threshold][measure] is not None]
            mean[threshold][measure] = float(np.mean(values)) if values else None
    return {"curve": mean, "recommended_threshold": recommended_threshold(mean)}


def _cell(stat: dict | None) -> str:
    if not stat:
        return "–"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def markdown_table(report: dict) -> str:
    cfg = report["config"]
    summary = report["summary"]
    levels = sorted({lv for s in summary.values() for lv in s["levels"]}, key=int)
    header = ["method"] + [f"L{lv} {m}" for lv in levels for m in ("A_auc", "A_last", "F_last")] + ["events/s", "wall s"]
    lines = [
        f"# {cfg['dataset']} · {cfg['scenario']} · preset {cfg['preset']} · seeds {cfg['seeds']}"
        + (f" · labels {cfg['label_delay']} events late" if cfg.get("label_delay") else ""),
        "",
        _regime(report),
        "",
        "Accuracies in %, mean ± std over seeds (F_last: lower is better; – where undefined).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, s in summary.items():
        cells = [_cell(s["levels"].get(lv, {}).get(m)) for lv in levels for m in METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {s['events_per_second']:.0f} | {s['wall_seconds']:.0f} |")
    return "\n".join(lines + _served_paths_table(summary)) + "\n"


def _served_paths_table(summary: dict) -> list[str]:
    """The trade-off of ``--confidence-threshold``, per method: precision vs depth vs severity."""
    methods = [m for m, s in summary.items() if s.get("served_paths")]
    if not methods:
        return []
    thresholds = list(summary[methods[0]]["served_paths"]["curve"])
    lines = ["", "Served paths of the final model on the test set, by confidence threshold: served-node "
             "precision % / mean served depth / mistake severity (tree distance of a wrong deepest node); "
             "★ the lowest threshold with precision ≥ 95 %.", "",
             "| method | " + " | ".join(thresholds) + " |", "|" + "---|" * (len(thresholds) + 1)]
    for method in methods:
        served = summary[method]["served_paths"]
        cells = []
        for threshold in thresholds:
            row = served["curve"][threshold]
            star = " ★" if threshold == served["recommended_threshold"] else ""
            cells.append(" / ".join(_served_cell(row[m], m) for m in ("precision", "mean_depth", "mistake_severity"))
                         + star)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _served_cell(value: float | None, measure: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if measure == "precision" else f"{value:.2f}"


def _regime(report: dict) -> str:
    """Where the runs sit: the memory beside the stream, and the steps per sample."""
    run = next(iter(next(iter(report["results"].values())).values()))
    memory, events = run["config"]["memory_size"], run["events"]
    return (f"Memory {memory} samples ({100 * memory / events:.1f} % of the {events}-event stream), "
            f"{run['config']['online_iter']:g} gradient steps per sample.")


def plot_curves(report: dict, path: Path) -> None:
    """Accuracy per level over the stream, one panel per level, mean over seeds per method."""
    matplotlib = import_extra("matplotlib", "bench", "the benchmark's accuracy.png")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    levels = sorted({lv for seeds in results.values() for r in seeds.values() for lv in r["levels"]}, key=int)
    # one shared y axis, so the levels are compared at a glance; the legend below, off the curves
    fig, axes = plt.subplots(1, len(levels), figsize=(3.8 * len(levels), 3.8), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels):
        for method, seeds in results.items():
            curves = {}
            for run in seeds.values():
                for point in run["curve"]:
                    if level in point["accuracy"] and point["accuracy"][level] is not None:
                        curves.setdefault(point["position"], []).append(point["accuracy"][level])
            if curves:
                xs = sorted(curves)
                ax.plot(xs, [100 * np.mean(curves[x]) for x in xs], label=method)
        first = next(iter(next(iter(results.values())).values()))
        for end in first["task_ends"][:-1]:
            ax.axvline(end, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(f"level {level}")
        ax.set_xlabel("stream samples")
        ax.set_ylim(0, 102)  # a curve at 100 % stays visible above the frame
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    cfg = report["config"]
    fig.suptitle(f"{cfg['dataset']} · {cfg['scenario']} · {cfg['preset']}   (dotted: task boundaries)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "accuracy.png"]
    paths[0].write_text(json.dumps(report, indent=1, allow_nan=False))
    paths[1].write_text(markdown_table(report))
    plot_curves(report, paths[2])
    return paths

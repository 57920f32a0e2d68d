"""The figures of ``embedlab compare`` and the notebooks: validation curves, recall@k, training
loss of several runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from embedlab.analysis.columns import logged_metrics, metric_title, recall_ks, trained_rows
from embedlab.analysis.runs import Run, training_history


# -- plots -------------------------------------------------------------------------------
def _figure(nrows: int, ncols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    return fig, axes


def line_style(i: int) -> dict[str, Any]:
    """Distinct colour and dash for the i-th line: ten colours, then the next dash pattern."""
    from matplotlib import colormaps

    dashes = ("-", "--", ":", "-.")
    return {"color": colormaps["tab10"](i % 10), "linestyle": dashes[(i // 10) % len(dashes)]}


def _runs_and_labels(frame: pd.DataFrame) -> list[tuple[Run, str]]:
    rows = frame[frame["run"].astype(bool)] if "run" in frame.columns else frame
    return [(Run.load(run), str(loss)) for run, loss in zip(rows["run"], rows["loss"], strict=True)]


def plot_metric_curves(
    frame: pd.DataFrame, metrics: Sequence[str] | None = None, percent: bool = True
) -> Figure:
    """Validation metrics against epochs, one line per run (labelled by its loss); ``metrics``
    default to every metric the runs logged."""
    runs = _runs_and_labels(frame)
    histories = [(run.history, label) for run, label in runs]
    if metrics is None:
        metrics = logged_metrics(frame)
    present = [m for m in metrics if any(m in h.columns for h, _ in histories)]
    if not present:
        raise ValueError("no validation metrics to plot")
    ncols = min(2, len(present))
    nrows = math.ceil(len(present) / ncols)
    fig, axes = _figure(nrows, ncols, 5.0, 3.4)
    scale = 100.0 if percent else 1.0
    for ax, metric in zip(axes, present, strict=False):
        for i, (history, label) in enumerate(histories):
            if metric in history.columns:
                values = history[metric].dropna()
                ax.plot(
                    values.index,
                    values.to_numpy() * scale,
                    marker="o",
                    ms=3,
                    label=label,
                    **line_style(i),
                )
        ax.set_title(metric_title(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric_title(metric)}{' (%)' if percent else ''}")
        ax.grid(alpha=0.3)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize=8
    )
    fig.suptitle("validation metrics per loss")
    return fig


RECALL_PANELS = {
    "val": "validation split (checkpoint selected on val)",
    "test": "test split (the selected checkpoint, tested once)",
    "final": "validation split (last validation)",
    "best": "validation split (best of each metric)",
}


def plot_recall_at_k(
    frame: pd.DataFrame, splits: Sequence[str] = ("val", "test"), percent: bool = True
) -> Figure:
    """Recall@K (the CMC curve at the logged K) per run, one panel per split in ``splits``
    (``val``, ``test``; ``final``/``best``: the validation history), each with its own legend.

    A split's panel holds only that split's numbers: the raw-pixel baseline, measured on the
    test split, is a line of the test panel only. A split nothing was logged on has no panel.
    """
    panels = [s for s in splits if recall_ks(frame, s)]
    if not panels:
        raise ValueError("no recall@K columns to plot")
    fig, axes = _figure(1, len(panels), 6.0, 4.2)
    scale = 100.0 if percent else 1.0
    trained = trained_rows(frame).to_numpy()
    for ax, split in zip(axes, panels, strict=True):
        ks = recall_ks(frame, split)
        i = 0  # a run's colour is the same in every panel and plot
        for (_, row), is_run in zip(frame.iterrows(), trained, strict=True):
            style = line_style(i) if is_run else {"linestyle": "--", "color": "grey"}
            i += 1 if is_run else 0
            values = np.asarray([row[f"{split}/recall@{k}"] for k in ks], dtype=float) * scale
            logged = np.isfinite(values)  # runs may log different K; a run without val: none
            if not logged.any():
                continue
            label = str(row["loss"]) if is_run else f"{row['loss']} (test split)"
            x = np.asarray(ks)[logged]
            ax.plot(x, values[logged], marker="o", ms=4, label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_ylabel(f"Recall@K{' (%)' if percent else ''}")
        ax.set_title(f"Recall@K, {RECALL_PANELS.get(split, split)}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return fig


def plot_training_loss(frame: pd.DataFrame) -> Figure:
    """Training loss per epoch, each divided by its first epoch's value (losses have different scales)."""
    fig, axes = _figure(1, 1, 8.0, 4.2)
    ax = axes[0]
    for i, (run, label) in enumerate(_runs_and_labels(frame)):
        series = training_history(run.metrics)
        if series.empty:
            continue
        first = float(series.iloc[0])
        values = (
            series.to_numpy() / first
            if first not in (0.0,) and np.isfinite(first)
            else series.to_numpy()
        )
        ax.plot(series.index, values, label=label, **line_style(i))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss / first epoch's")
    ax.set_title("training loss (relative)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig

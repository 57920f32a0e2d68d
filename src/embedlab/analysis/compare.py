"""Compare runs: a table of final and best validation metrics, CSV/Markdown files and plots.

    embedlab compare runs/digits_losses                 # every version_* below
    embedlab compare runs/a/version_0 runs/b/version_3 --out comparison --sort map@r

From Python::

    from embedlab.analysis import compare_runs, summary_table
    frame = compare_runs(["runs/digits_losses"])
    summary_table(frame)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from embedlab.analysis.pictures import save_figure
from embedlab.analysis.runs import Run, find_runs, loss_label, short_class, training_history
from embedlab.metrics import PRIMARY_METRIC
from embedlab.report import BASELINE_ROW, NOT_METRICS, format_cell
from embedlab.report import print_table as print_table  # re-exported: embedlab.analysis API

PRIMARY = PRIMARY_METRIC
METRIC_NAMES = {
    "recall@1": "R@1",
    "map": "mAP",
    "map@r": "MAP@R",
    "r_precision": "R-Prec",
    "precision@1": "P@1",
    "minp": "mINP",
}


def metric_title(name: str) -> str:
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    if name.startswith("recall@"):
        return "R@" + name.removeprefix("recall@")
    return name


def _param_text(value: Any) -> str:
    """A sweep parameter for display: a preset file shows as its stem, a class path as its class."""
    if isinstance(value, str):
        if value.endswith((".yaml", ".yml")):
            return Path(value).stem
        if "." in value and value.rsplit(".", 1)[-1][:1].isupper():
            return short_class(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _trial_label(run: Run) -> str | None:
    """``triplet_semi_hard (margin=0.1)`` for a sweep trial whose loss came from a preset."""
    params = run.params
    if not params:
        return None
    loss_keys = [k for k in params if k == "model.loss"]
    head = _param_text(params[loss_keys[0]]) if loss_keys else None
    rest = [
        f"{k.rsplit('.', 1)[-1]}={_param_text(v)}" for k, v in params.items() if k not in loss_keys
    ]
    if head is None:
        return None
    return f"{head} ({', '.join(rest)})" if rest else head


def _metric_names(history: pd.DataFrame) -> list[str]:
    return [c for c in history.columns if c not in NOT_METRICS]


def run_row(run: Run, primary: str = PRIMARY) -> dict[str, Any]:
    """One row of the comparison: identification, training settings, final and best metrics."""
    config = run.config
    model = config.get("model") or {}
    loss = model.get("loss") if isinstance(model.get("loss"), dict) else {}
    optimizer = model.get("optimizer") if isinstance(model.get("optimizer"), dict) else {}
    history = run.history
    row: dict[str, Any] = {
        "run": str(run.path),
        "name": run.name,
        "experiment": run.path.parent.name,
        "loss": _trial_label(run) or loss_label(config),
        "objective": loss_label(config),
        "loss_class": short_class((loss or {}).get("class_path")),
        "optimizer": short_class((optimizer or {}).get("class_path")),
        "lr": ((optimizer or {}).get("init_args") or {}).get("lr"),
        "max_epochs": (config.get("trainer") or {}).get("max_epochs"),
        "dataset": dataset_label((config.get("data") or {}).get("dataset")),
    }
    for key, value in run.params.items():
        row[f"param/{key}"] = _param_text(value)
    for stage in ("val", "test"):  # the selected checkpoint: chosen on val, tested once
        for name, value in run.summary.get(stage, {}).items():
            if name not in NOT_METRICS:
                row[f"{stage}/{name}"] = float(value)
    if history.empty:
        trained = run.summary.get("test", {})
        row["epochs"] = None
        for name, value in trained.items():
            if name not in NOT_METRICS:
                row[f"final/{name}"] = float(value)
                row[f"best/{name}"] = float(value)
        row["best_epoch"] = None
        return row
    row["epochs"] = int(history.index.max())
    last = history.iloc[-1]
    for name in _metric_names(history):
        row[f"final/{name}"] = float(last[name])
        row[f"best/{name}"] = float(history[name].max())
    if primary in history.columns and history[primary].notna().any():
        row["best_epoch"] = int(history[primary].idxmax())
    else:
        row["best_epoch"] = None
    return row


def dataset_label(value: Any) -> str | None:
    """A run's ``data.dataset`` as text: the class name (``Market1501``), ``+`` for a union."""
    if isinstance(value, list):
        return "+".join(str(dataset_label(v)) for v in value)
    if isinstance(value, dict):
        return str(value.get("class_path", "")).rsplit(".", 1)[-1] or None
    return None if value is None else str(value)


def _unique_labels(frame: pd.DataFrame) -> pd.Series:
    """Make ``loss`` labels unique, appending settings that differ, then the run name."""
    labels = frame["loss"].astype(str).copy()
    for extra in ("lr", "max_epochs", "dataset", "experiment"):
        dup = labels.duplicated(keep=False)
        if not dup.any():
            break
        values = frame.loc[dup, extra]
        if values.nunique(dropna=False) > 1:
            labels[dup] = [
                f"{lab} ({extra}={val})" for lab, val in zip(labels[dup], values, strict=True)
            ]
    dup = labels.duplicated(keep=False)
    if dup.any():
        labels[dup] = [
            f"{lab} [{name}]" for lab, name in zip(labels[dup], frame.loc[dup, "name"], strict=True)
        ]
    return labels


def compare_runs(
    run_dirs: str | Path | Iterable[str | Path],
    primary: str = PRIMARY,
    baseline: bool = False,
) -> pd.DataFrame:
    """The final and best validation metrics of each run, one row per run.

    Args:
        run_dirs: run directories, or folders holding them (see :func:`find_runs`).
        primary: the metric whose best value defines ``best_epoch``.
        baseline: add a raw-pixel row (``BASELINE_ROW``) from the first run's ``summary.json`` (the
            retrieval quality of the raw inputs; only meaningful when all runs share a dataset).

    Columns: ``run``, ``name`` (``experiment/version``), ``loss`` (a unique, readable label:
    the sweep's loss preset, or the configured objective), ``objective``, ``loss_class``,
    ``optimizer``, ``lr``, ``max_epochs``, ``dataset``, ``param/<sweep parameter>``,
    ``epochs`` (trained), ``final/<metric>``, ``best/<metric>`` and ``best_epoch`` (validation
    history), ``val/<metric>`` and ``test/<metric>`` (the selected checkpoint on val, and its one
    test evaluation, from ``summary.json``).
    """
    runs = [Run.load(p) for p in find_runs(run_dirs)]
    if not runs:
        raise FileNotFoundError(f"no runs found in {run_dirs}")
    frame = pd.DataFrame([run_row(r, primary) for r in runs])
    frame["loss"] = _unique_labels(frame)
    if baseline:
        raw = next((r.summary[BASELINE_ROW] for r in runs if BASELINE_ROW in r.summary), None)
        if raw is not None:
            extra: dict[str, Any] = {
                "run": "",
                "name": "",
                "loss": BASELINE_ROW,
                "objective": BASELINE_ROW,
            }
            for name, value in raw.items():
                if name not in NOT_METRICS:  # raw pixels are measured on the test split
                    extra[f"final/{name}"] = extra[f"test/{name}"] = float(value)
                    extra[f"best/{name}"] = float(value)
            frame = pd.concat([pd.DataFrame([extra]), frame], ignore_index=True)
    return frame


def recall_ks(frame: pd.DataFrame, stage: str = "final") -> list[int]:
    prefix = f"{stage}/recall@"
    return sorted(int(c.removeprefix(prefix)) for c in frame.columns if c.startswith(prefix))


def logged_metrics(frame: pd.DataFrame, stage: str = "final") -> list[str]:
    """Every metric with a ``<stage>/<metric>`` column in ``frame``, in column order."""
    prefix = f"{stage}/"
    return [c.removeprefix(prefix) for c in frame.columns if c.startswith(prefix)]


def summary_table(
    frame: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    primary: str = PRIMARY,
    percent: bool = True,
    sort: str | None = None,
) -> pd.DataFrame:
    """A readable table: the run, the loss, the test metrics of the checkpoint selected on val,
    and the best val ``primary`` (with its 1-based epoch).

    Runs without a test evaluation (older runs) show their final validation metrics instead.
    ``metrics``: the columns (default: every metric the runs logged). Values are in percent with
    ``percent``; ``sort`` orders rows by that metric, best first.
    """
    trained_rows = frame["run"].astype(bool) if "run" in frame.columns else None
    stage = "final"
    if any(c.startswith("test/") for c in frame.columns):
        tested = frame[[c for c in frame.columns if c.startswith("test/")]].notna().any(axis=1)
        if trained_rows is None or tested[trained_rows].all():
            stage = "test"
    if metrics is None:
        metrics = logged_metrics(frame, stage)
    trained = frame["run"].astype(bool) if "run" in frame.columns else pd.Series(True, frame.index)
    # a metric only the baseline row has (e.g. a K the runs did not log) would be an empty column
    available = [
        m
        for m in metrics
        if f"{stage}/{m}" in frame.columns and frame.loc[trained, f"{stage}/{m}"].notna().any()
    ]
    scale = 100.0 if percent else 1.0
    names = frame["name"] if "name" in frame.columns else pd.Series("", index=frame.index)
    table = pd.DataFrame({"run": names.fillna("").to_numpy(), "loss": frame["loss"].to_numpy()})
    prefix = "test " if stage == "test" else ""
    for name in available:
        table[prefix + metric_title(name)] = frame[f"{stage}/{name}"].to_numpy() * scale
    if f"best/{primary}" in frame.columns:
        table[f"best val {metric_title(primary)}"] = frame[f"best/{primary}"].to_numpy() * scale
        if "best_epoch" in frame.columns:
            epochs = frame["best_epoch"].astype("Int64").reset_index(drop=True)
            table["best epoch"] = epochs
    if sort is not None and f"{stage}/{sort}" in frame.columns:
        order = np.argsort(-frame[f"{stage}/{sort}"].fillna(-np.inf).to_numpy(), kind="stable")
        table = table.iloc[order].reset_index(drop=True)
    return table


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table (``DataFrame.to_markdown``); numbers with ``digits`` decimals."""
    cells = table.apply(
        lambda column: column.map(lambda v: format_cell(v, digits).replace("|", "\\|"))
    )
    align = ["right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table.columns]
    text = cells.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)
    return text + "\n"


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


def plot_recall_at_k(frame: pd.DataFrame, stage: str = "final", percent: bool = True) -> Figure:
    """Recall@K (the CMC curve at the logged K) per run."""
    ks = recall_ks(frame, stage)
    if not ks:
        raise ValueError("no recall@K columns to plot")
    fig, axes = _figure(1, 1, 8.0, 4.2)
    ax = axes[0]
    scale = 100.0 if percent else 1.0
    i = 0  # the colour of a run matches the other plots, where the baseline has no line
    for _, row in frame.iterrows():
        values = np.asarray([row[f"{stage}/recall@{k}"] for k in ks], dtype=float) * scale
        baseline = row["loss"] == BASELINE_ROW
        style = {"linestyle": "--", "color": "grey"} if baseline else line_style(i)
        i += 0 if baseline else 1
        logged = np.isfinite(values)  # runs may log different K
        x = np.asarray(ks)[logged]
        ax.plot(x, values[logged], marker="o", ms=4, label=str(row["loss"]), **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K")
    ax.set_ylabel(f"Recall@K{' (%)' if percent else ''}")
    ax.set_title(f"Recall@K ({stage} validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
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


def write_comparison(
    frame: pd.DataFrame,
    out_dir: str | Path,
    metrics: Sequence[str] | None = None,
    primary: str = PRIMARY,
    sort: str | None = PRIMARY,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``comparison.csv`` (every column), ``comparison.md`` (the summary table) and,
    with ``plots``, ``curves.png``, ``recall_at_k.png`` and ``training_loss.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "comparison.csv", "markdown": out / "comparison.md"}
    frame.to_csv(written["csv"], index=False)
    table = summary_table(frame, metrics, primary, sort=sort)
    written["markdown"].write_text(to_markdown(table))
    if plots:
        drawers = {
            "curves": lambda: plot_metric_curves(frame),
            "recall_at_k": lambda: plot_recall_at_k(frame),
            "training_loss": lambda: plot_training_loss(frame),
        }
        for name, draw in drawers.items():
            try:
                written[name] = save_figure(draw(), out / f"{name}.png")
            except ValueError as error:  # nothing of that kind was logged
                print(f"embedlab compare: no {name} plot ({error})")
    return written


def default_out_dir(run_dirs: Sequence[Path]) -> Path:
    parents = [p.parent for p in run_dirs]
    common = Path(*Path(parents[0]).parts)
    for parent in parents[1:]:
        while common not in (parent, *parent.parents):
            common = common.parent
    return common / "comparison"

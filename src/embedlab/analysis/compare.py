"""Compare training runs: a table whose every metric column names its split (``val …`` for the
checkpoint selected on the validation split, ``test …`` for its one test evaluation; the raw-pixel
baseline is test-split only), CSV/Markdown files and plots.

    embedlab compare runs/digits_losses                 # every version_* below
    embedlab compare runs/a/version_0 runs/b/version_3 --out comparison --sort map@r

From Python::

    from embedlab.analysis import compare_runs, summary_table
    frame = compare_runs(["runs/digits_losses"])
    summary_table(frame)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.analysis.columns import logged_metrics, metric_title, trained_rows
from embedlab.analysis.runs import Run, loss_label, short_class, training_history
from embedlab.metrics import PRIMARY_METRIC
from embedlab.report import BASELINE_ROW, NOT_METRICS, format_cell
from embedlab.report import print_table as _print_table
from embedlab.runs import find_runs


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


def _metrics_of(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if k not in NOT_METRICS}


def _trained_epochs(run: Run, history: pd.DataFrame) -> int | None:
    if not history.empty:
        return int(history.index.max())
    epochs = run.summary.get("test", {}).get("epochs")
    if epochs:
        return int(epochs)
    trained = training_history(run.metrics)
    return int(trained.index.max()) if not trained.empty else None


def run_row(run: Run, primary: str = PRIMARY_METRIC) -> dict[str, Any]:
    """One row of the comparison: identification, training settings, and metrics that each name
    their split: ``val/`` and ``final/``, ``best/`` (validation), ``test/`` (test)."""
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
    row["epochs"] = _trained_epochs(run, history)
    best_epoch: int | None = None
    if not history.empty:  # the validation history: never filled from any other split
        last = history.iloc[-1]
        for name in _metric_names(history):
            row[f"final/{name}"] = float(last[name])
            row[f"best/{name}"] = float(history[name].max())
        if primary in history.columns and history[primary].notna().any():
            best_epoch = int(history[primary].idxmax())
    row["best_epoch"] = best_epoch
    # the checkpoint selected on val: its val metrics (summary.json; for a run without one, the
    # validation at the best epoch of `primary`), and its one test evaluation
    val, val_epoch, val_from = _metrics_of(run.val), run.val.get("epochs"), "summary.json"
    if not val and not history.empty:
        at = best_epoch if best_epoch is not None else int(history.index.max())
        val = _metrics_of({str(k): v for k, v in history.loc[at].items() if pd.notna(v)})
        val_epoch, val_from = at, "metrics.csv"
    for name, value in val.items():
        row[f"val/{name}"] = value
    row["val_epoch"] = int(val_epoch) if val and val_epoch else None
    row["val_from"] = val_from if val else None
    test, test_from = run.test
    for name, value in _metrics_of(test).items():
        row[f"test/{name}"] = value
    row["test_from"] = test_from
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
    primary: str = PRIMARY_METRIC,
    baseline: bool = False,
) -> pd.DataFrame:
    """One row per training run, every metric column naming its split.

    Args:
        run_dirs: run directories, or folders holding them (see :func:`find_runs`; folders that
            hold no training run, e.g. those of ``embedlab test``, are skipped).
        primary: the metric whose best value defines ``best_epoch``.
        baseline: add a raw-pixel row (``BASELINE_ROW``) from the first run's ``summary.json``:
            the retrieval quality of the raw inputs on the **test** split, so it fills only
            ``test/`` columns (only meaningful when all runs share a dataset).

    Columns: ``run``, ``name`` (``experiment/version``), ``loss`` (a unique, readable label:
    the sweep's loss preset, or the configured objective), ``objective``, ``loss_class``,
    ``optimizer``, ``lr``, ``max_epochs``, ``dataset``, ``param/<sweep parameter>``,
    ``epochs`` (trained); the validation history: ``final/<metric>``, ``best/<metric>`` and
    ``best_epoch`` (empty for a run without validation); the checkpoint selected on val:
    ``val/<metric>`` with ``val_epoch`` and ``val_from`` (``summary.json``, or ``metrics.csv``
    for a run without one: the validation at ``best_epoch``), and its test evaluation
    ``test/<metric>`` with ``test_from`` (``summary.json``, or a ``test_metrics.json`` in the
    run's folder). No test number is ever put in a ``val/``, ``final/`` or ``best/`` column.
    """
    runs = [Run.load(p) for p in find_runs(run_dirs)]
    if not runs:
        raise FileNotFoundError(f"no runs found in {run_dirs}")
    frame = pd.DataFrame([run_row(r, primary) for r in runs])
    frame["loss"] = _unique_labels(frame)
    if baseline:
        raw = next((r.summary[BASELINE_ROW] for r in runs if r.summary.get(BASELINE_ROW)), None)
        if raw is not None:
            extra: dict[str, Any] = {
                "run": "",
                "name": "",
                "loss": BASELINE_ROW,
                "objective": BASELINE_ROW,
                "test_from": "summary.json",
            }
            for name, value in _metrics_of(raw).items():  # measured on the test split only
                extra[f"test/{name}"] = value
            frame = pd.concat([pd.DataFrame([extra]), frame], ignore_index=True)
    return frame


def summary_table(
    frame: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    primary: str = PRIMARY_METRIC,
    percent: bool = True,
    sort: str | None = None,
) -> pd.DataFrame:
    """A readable table, one row per training run (the raw-pixel baseline first): the run, the
    loss, ``best epoch (val)``, then ``val <metric>`` columns (the checkpoint selected on the
    validation split) and ``test <metric>`` columns (its one evaluation on the test split).

    A run without validation has empty ``val`` columns, the raw-pixel baseline (test split)
    only ``test`` ones. ``metrics``: the metrics of both splits; by default every metric the
    runs logged on test and, on val, ``primary`` (every val metric when no run has a test
    evaluation). Values are in percent with ``percent``.

    ``sort`` ranks the training runs by that metric, best first: on val when every run has
    it there; otherwise on test when every run has it there; else on val, the runs without it
    last. ``table.attrs["title"]`` says what ranks them (and ``attrs["note"]`` too when it is
    not validation for every run); ``attrs["ranked_by"]`` is the frame column used.
    """
    trained = trained_rows(frame)
    tested = any(
        frame.loc[trained, c].notna().any() for c in frame.columns if c.startswith("test/")
    )
    if metrics is None:
        val_metrics = logged_metrics(frame, "val") if not tested else [primary]
        test_metrics = logged_metrics(frame, "test")
    else:
        val_metrics = test_metrics = list(metrics)
    scale = 100.0 if percent else 1.0
    names = frame["name"] if "name" in frame.columns else pd.Series("", index=frame.index)
    table = pd.DataFrame({"run": names.fillna("").to_numpy(), "loss": frame["loss"].to_numpy()})
    if "val_epoch" in frame.columns and frame.loc[trained, "val_epoch"].notna().any():
        epochs = frame["val_epoch"].astype("Float64").astype("Int64")
        table["best epoch (val)"] = pd.array(epochs.tolist(), dtype="Int64")
    for split, wanted in (("val", val_metrics), ("test", test_metrics)):
        for name in wanted:
            column = f"{split}/{name}"
            # a metric only the baseline row has (a K the runs did not log) would be empty
            if column in frame.columns and frame.loc[trained, column].notna().any():
                values = frame[column].to_numpy(dtype=float) * scale
                table[f"{split} {metric_title(name)}"] = values
    order, title, note, ranked_by = _ranking(frame, trained, sort)
    table = table.iloc[order].reset_index(drop=True)
    if not trained.all():
        title += f"; {BASELINE_ROW}: test split"
    table.attrs.update(title=title, note=note, ranked_by=ranked_by)
    return table


def _ranking(
    frame: pd.DataFrame, trained: pd.Series, sort: str | None
) -> tuple[np.ndarray, str, str, str | None]:
    """``(row order, title, note, frame column)``: the baseline rows first, then the training
    runs ranked by ``sort`` (see :func:`summary_table`)."""
    positions = np.arange(len(frame))
    first, runs = positions[~trained.to_numpy()], positions[trained.to_numpy()]
    if sort is None:
        return np.concatenate([first, runs]), "in the order given", "", None
    n = len(runs)
    counts = {
        split: int(frame.iloc[runs][f"{split}/{sort}"].notna().sum())
        if f"{split}/{sort}" in frame.columns
        else 0
        for split in ("val", "test")
    }
    label = metric_title(sort)
    if counts["val"] == n:
        split, note = "val", ""
    elif counts["test"] == n:
        split = "test"
        note = (
            f"ranked by test {label}: {n - counts['val']} of {n} runs have no validation "
            f"{label}, so validation does not rank them"
        )
    elif counts["val"] or counts["test"]:
        split = "val" if counts["val"] else "test"
        note = (
            f"ranked by {split} {label}; {n - counts[split]} of {n} runs have no "
            f"{split} {label} and come last"
        )
    else:
        return np.concatenate([first, runs]), f"not ranked (no {label})", "", None
    column = f"{split}/{sort}"
    keys = -frame.iloc[runs][column].astype(float).fillna(-np.inf).to_numpy()
    ranked = runs[np.argsort(keys, kind="stable")]
    return np.concatenate([first, ranked]), note or f"ranked by {split} {label}", note, column


def print_table(table: pd.DataFrame, title: str = "", digits: int = 2) -> None:
    """:func:`embedlab.report.print_table`, its title followed by ``table.attrs["title"]``
    (what ranks the rows of a :func:`summary_table`)."""
    extra = str(table.attrs.get("title") or "")
    _print_table(table, ", ".join(t for t in (title, extra) if t), digits)


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table (``DataFrame.to_markdown``); numbers with ``digits`` decimals."""
    cells = table.apply(
        lambda column: column.map(lambda v: format_cell(v, digits).replace("|", "\\|"))
    )
    align = ["right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table.columns]
    text = cells.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)
    return text + "\n"


def write_comparison(
    frame: pd.DataFrame,
    out_dir: str | Path,
    metrics: Sequence[str] | None = None,
    primary: str = PRIMARY_METRIC,
    sort: str | None = PRIMARY_METRIC,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``comparison.csv`` (every column), ``comparison.md`` (the summary table, followed by
    a line saying what ranks the runs when validation does not rank them all) and, with
    ``plots``, ``curves.png`` (validation), ``recall_at_k.png`` (a validation and a test panel)
    and ``training_loss.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "comparison.csv", "markdown": out / "comparison.md"}
    frame.to_csv(written["csv"], index=False)
    table = summary_table(frame, metrics, primary, sort=sort)
    note = str(table.attrs.get("note") or "")  # when validation does not rank every run
    written["markdown"].write_text(
        to_markdown(table) + (f"\n{note[:1].upper()}{note[1:]}.\n" if note else "")
    )
    if plots:
        from embedlab.analysis.pictures import save_figure
        from embedlab.analysis.plots import (  # matplotlib only for the plots
            plot_metric_curves,
            plot_recall_at_k,
            plot_training_loss,
        )

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

"""Run summaries: the raw-pixel baseline, printed metric tables (one row per member of a union
of datasets too), atomic JSON files."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from embedlab.atomic import atomic_write
from embedlab.metrics import RetrievalEvaluator, evaluate

#: The row of the raw-pixel baseline in ``summary.json`` and in every table.
BASELINE_ROW = "raw pixels"
#: Numbers in a summary that are not retrieval metrics (left out of the tables).
NOT_METRICS = ("num_valid_queries", "num_skipped_queries", "epochs")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, default=float)


def baseline_metrics(datamodule: Any, evaluator: RetrievalEvaluator) -> dict[str, float] | None:
    """The metrics of ``evaluator`` for the raw pixels of the test split (``None`` if unavailable)."""
    eval_set = getattr(datamodule, "eval_set", None)
    if eval_set is None:
        return None
    pixels = eval_set.raw_pixels()
    if pixels is None:
        return None
    q, g = eval_set.is_query, eval_set.is_gallery
    leave_one_out = bool(q.all() and g.all())
    results = evaluate(
        pixels[q],
        eval_set.labels[q],
        None if leave_one_out else pixels[g],
        None if leave_one_out else eval_set.labels[g],
        metrics=evaluator.metrics,
        options=replace(evaluator.options, rerank=False),
    )
    return {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}


def summary_frame(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per entry of ``rows``, one column per metric any of them has (in first-seen order)."""
    frame = pd.DataFrame(rows).T
    return frame[[k for k in frame.columns if k not in NOT_METRICS]]


def format_cell(value: Any, digits: int) -> str:
    """A table cell: integers as they are, floats with ``digits`` decimals, missing as ""."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(table: pd.DataFrame, title: str = "", digits: int = 2) -> None:
    """Print ``table`` with rich: text columns left-aligned, numbers right-aligned."""
    out = Table(title=title)
    for column in table.columns:
        numeric = pd.api.types.is_numeric_dtype(table[column])
        out.add_column(str(column), justify="right" if numeric else "left")
    for _, row in table.iterrows():
        out.add_row(*(format_cell(v, digits) for v in row.tolist()))
    Console(width=max(120, 14 * len(table.columns))).print(out)


def print_summary(
    rows: dict[str, dict[str, float]], title: str = "retrieval on held-out data"
) -> None:
    """Print the metrics of each entry of ``rows`` (see :func:`summary_frame`)."""
    frame = summary_frame(rows).astype(float)
    print_table(frame.rename_axis("embeddings").reset_index(), title, digits=4)


def member_rows(
    metrics: dict[str, dict[str, float]], protocols: dict[str, dict[str, str]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each member's own metrics, by member and split: ``{name: {split: {"protocol", metric…}}}``.

    Args:
        metrics: by split (``val``, ``test``), the run's metrics as logged without the split
            prefix, a member's under ``<name>/<metric>``.
        protocols: by split, how each member was scored (``name -> words``); only these
            members and splits get rows.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for split, by_name in protocols.items():
        values = metrics.get(split) or {}
        for name, protocol in by_name.items():
            own = {
                k.removeprefix(f"{name}/"): v for k, v in values.items() if k.startswith(f"{name}/")
            }
            if own:
                out.setdefault(name, {})[split] = {"protocol": protocol, **own}
    return out


def print_members(
    members: dict[str, dict[str, dict[str, Any]]], title: str = "each member, its own protocol"
) -> None:
    """Print :func:`member_rows` as one row per member and split, with its protocol."""
    records = [
        {"member": name, "split": split, **row}
        for name, splits in members.items()
        for split, row in splits.items()
    ]
    if not records:
        return
    table = pd.DataFrame(records)
    table = table[[c for c in table.columns if c not in NOT_METRICS]]
    print_table(table, title, digits=4)

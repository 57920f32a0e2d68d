"""Run summaries: the raw-pixel baseline, a printed metric table, atomic JSON files."""

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

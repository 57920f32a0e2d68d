"""Run summaries: the raw-pixel baseline, a printed metric table, atomic JSON files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from embedlab.atomic import atomic_write

if TYPE_CHECKING:
    from embedlab.metrics import RetrievalEvaluator

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
    from embedlab.metrics import evaluate

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


def print_summary(
    rows: dict[str, dict[str, float]], title: str = "retrieval on held-out data"
) -> None:
    frame = summary_frame(rows)
    table = Table(title=title)
    table.add_column("embeddings")
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for name, values in frame.iterrows():
        table.add_row(str(name), *("" if pd.isna(v) else f"{v:.4f}" for v in values))
    Console(width=max(100, 12 * (len(frame.columns) + 1))).print(table)

"""Run summaries: the raw-pixel baseline, a printed metric table, atomic JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from embedlab.atomic import atomic_write

SUMMARY_KEYS = ("recall@1", "recall@5", "map", "map@r", "r_precision", "minp")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, default=float)


def baseline_metrics(
    datamodule: Any, metric: str, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float] | None:
    """Retrieval metrics of the raw pixels on the evaluation split (``None`` if unavailable)."""
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
        metric=metric,
        ks=ks,
    )
    return {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}


def summary_frame(
    rows: dict[str, dict[str, float]], keys: tuple[str, ...] = SUMMARY_KEYS
) -> pd.DataFrame:
    frame = pd.DataFrame(rows).T
    return frame[[k for k in keys if k in frame.columns]]


def print_summary(
    rows: dict[str, dict[str, float]], title: str = "retrieval on held-out data"
) -> None:
    frame = summary_frame(rows)
    table = Table(title=title)
    table.add_column("embeddings")
    for column in frame.columns:
        table.add_column(column, justify="right")
    for name, values in frame.iterrows():
        table.add_row(str(name), *(f"{v:.4f}" for v in values))
    Console().print(table)

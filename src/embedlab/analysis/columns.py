"""The columns of a comparison frame (one row per run, ``final/<metric>``, ``best/<metric>``):
their titles, which metrics and recall@k the runs logged, which rows trained."""

from __future__ import annotations

import pandas as pd

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


def recall_ks(frame: pd.DataFrame, stage: str = "final") -> list[int]:
    prefix = f"{stage}/recall@"
    return sorted(int(c.removeprefix(prefix)) for c in frame.columns if c.startswith(prefix))


def logged_metrics(frame: pd.DataFrame, stage: str = "final") -> list[str]:
    """Every metric with a ``<stage>/<metric>`` column in ``frame``, in column order."""
    prefix = f"{stage}/"
    return [c.removeprefix(prefix) for c in frame.columns if c.startswith(prefix)]


def trained_rows(frame: pd.DataFrame) -> pd.Series:
    """The rows of training runs (``True``), not the raw-pixel baseline."""
    if "run" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return frame["run"].fillna("").astype(str).astype(bool)

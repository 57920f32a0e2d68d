"""Reading run directories written by ``embedlab fit``.

A run directory (``OUTPUT_ROOT/EXPERIMENT/version_N``) holds ``metrics.csv`` (one row per
logging step; training rows carry ``train/...``, validation rows ``val/...`` and the final test
``test/...``), ``config.yaml`` (the full LightningCLI configuration), ``summary.json`` (written
after training: ``raw pixels`` and ``test`` measured on the test split, ``val`` on the validation
split when there is one) and ``checkpoints/``. A run made by ``embedlab sweep`` also holds
``sweep_trial.json`` with the trial's parameters.

``embedlab test`` and ``embedlab validate`` make run folders too (``test_metrics.json``, a
``metrics.csv`` without training rows); they hold no training run and :func:`find_runs` skips
them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from embedlab.runs import (
    SUMMARY_FILE,
    TEST_FILE,
    TRIAL_FILE,
    load_module,
    read_config,
    read_metrics,
)


def validation_history(metrics: pd.DataFrame, prefix: str = "val/") -> pd.DataFrame:
    """One row per validation, indexed by the (1-based) number of epochs trained.

    Columns are the metric names without ``prefix`` (``recall@1``, ``map@r``, ...).
    """
    columns = [c for c in metrics.columns if c.startswith(prefix)]
    if not columns or "epoch" not in metrics.columns:
        return pd.DataFrame()
    rows = metrics.dropna(subset=columns, how="all")
    history = rows.groupby("epoch")[columns].last()
    history.index = history.index.astype(int) + 1
    history.index.name = "epochs"
    history.columns = [c.removeprefix(prefix) for c in columns]
    return history


def training_history(metrics: pd.DataFrame, column: str = "train/loss") -> pd.Series:
    """Mean of a training column per epoch (1-based), e.g. the total training loss."""
    if column not in metrics.columns or "epoch" not in metrics.columns:
        return pd.Series(dtype=float)
    series = metrics.dropna(subset=[column]).groupby("epoch")[column].mean()
    series.index = series.index.astype(int) + 1
    series.index.name = "epochs"
    return series


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def read_trial(run_dir: str | Path) -> dict[str, Any]:
    """``sweep_trial.json`` of a run made by ``embedlab sweep`` (empty otherwise)."""
    return read_json(Path(run_dir) / TRIAL_FILE)


def metric_values(row: Any) -> dict[str, float]:
    """The numbers of a summary row (``{}`` for anything that is not a mapping)."""
    if not isinstance(row, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def read_summary(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """``summary.json``'s metric rows: ``raw pixels`` and ``test`` (the test split), ``val``
    (the validation split, when the run had one); each ``{metric: value}``. Entries that are
    not metric rows (``checkpoint``, a union's ``members``) are left out; empty when the file is
    missing."""
    rows = read_json(Path(run_dir) / SUMMARY_FILE)
    return {
        k: metric_values(v)
        for k, v in rows.items()
        if k not in ("checkpoint", "members") and isinstance(v, dict)
    }


def read_test_metrics(run_dir: str | Path) -> dict[str, float]:
    """The ``test`` row of ``test_metrics.json`` (written by ``embedlab test``; ``{}`` if none)."""
    return metric_values(read_json(Path(run_dir) / TEST_FILE).get("test"))


def short_class(path: str | None) -> str:
    return path.rsplit(".", 1)[-1] if path else ""


def _class_spec(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, dict):
        return short_class(value.get("class_path")), dict(value.get("init_args") or {})
    if isinstance(value, str):
        return short_class(value), {}
    return "", {}


def describe_loss(loss: Any) -> str:
    """A short name for a configured loss, e.g. ``Triplet[SemiHard]`` or ``MSML``."""
    name, args = _class_spec(loss)
    if not name:
        return ""
    text = name.removesuffix("Loss") or name
    miner, _ = _class_spec(args.get("miner"))
    if miner:
        text += f"[{miner.removesuffix('Miner')}]"
    if args.get("soft_margin"):
        text += "(soft)"
    return text


def loss_label(config: dict[str, Any]) -> str:
    """The training objective of a run's config, e.g. ``Triplet[BatchHard] + 1×CrossEntropy``."""
    model = config.get("model") or {}
    parts: list[str] = []
    main = describe_loss(model.get("loss"))
    if main:
        weight = model.get("loss_weight", 1.0)
        parts.append(main if weight in (None, 1, 1.0) else f"{weight:g}×{main}")
    for term in model.get("aux_losses") or []:
        _, args = _class_spec(term)
        name = describe_loss(args.get("loss"))
        weight = args.get("weight", 1.0)
        parts.append(name if weight in (None, 1, 1.0) else f"{weight:g}×{name}")
    return " + ".join(parts) or "?"


@dataclass
class Run:
    """Everything written in one run directory."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    trial: dict[str, Any] = field(default_factory=dict)
    #: ``test_metrics.json`` in the run's folder (an ``embedlab test`` whose output landed there)
    test_metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        path = Path(run_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"no such run directory: {path}")
        return cls(
            path,
            read_config(path),
            read_metrics(path),
            read_summary(path),
            read_trial(path),
            read_test_metrics(path),
        )

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def history(self) -> pd.DataFrame:
        """Validation metrics per epoch (``val/`` rows of ``metrics.csv``; empty without val)."""
        return validation_history(self.metrics)

    @property
    def val(self) -> dict[str, float]:
        """The validation metrics of the checkpoint selected on val (``summary.json``)."""
        return dict(self.summary.get("val", {}))

    @property
    def test(self) -> tuple[dict[str, float], str | None]:
        """The test metrics of the selected checkpoint and the file they come from:
        ``summary.json``'s ``test`` row, else ``test_metrics.json``; ``({}, None)`` if neither."""
        if self.summary.get("test"):
            return dict(self.summary["test"]), SUMMARY_FILE
        if self.test_metrics:
            return dict(self.test_metrics), TEST_FILE
        return {}, None

    @property
    def params(self) -> dict[str, Any]:
        params = self.trial.get("params")
        return dict(params) if isinstance(params, dict) else {}


@dataclass
class Embeddings:
    """Embeddings of an evaluation set, in dataset order, with each item's role."""

    embeddings: np.ndarray
    labels: np.ndarray
    cameras: np.ndarray
    is_query: np.ndarray
    is_gallery: np.ndarray


@torch.no_grad()
def compute_embeddings(
    model: nn.Module, loader: DataLoader, device: str | torch.device = "cpu"
) -> Embeddings:
    """Embed every item of an evaluation loader yielding ``(image, label, camera, index)``."""
    was_training = model.training
    model.eval().to(device)
    chunks: list[Tensor] = []
    labels: list[Tensor] = []
    cameras: list[Tensor] = []
    indices: list[Tensor] = []
    for images, label, camera, index in loader:
        chunks.append(model(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(label))
        cameras.append(torch.as_tensor(camera))
        indices.append(torch.as_tensor(index))
    model.train(was_training)
    order = torch.cat(indices).argsort()
    dataset = loader.dataset
    n = len(order)
    is_query = np.asarray(getattr(dataset, "is_query", np.ones(n, bool)), dtype=bool)
    is_gallery = np.asarray(getattr(dataset, "is_gallery", np.ones(n, bool)), dtype=bool)
    return Embeddings(
        torch.cat(chunks)[order].numpy(),
        torch.cat(labels)[order].numpy(),
        torch.cat(cameras)[order].numpy(),
        is_query,
        is_gallery,
    )


def run_embeddings(
    run_dir: str | Path,
    checkpoint: str | None = "best",
    data_overrides: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> tuple[Embeddings, Any, str]:
    """Embeddings of a run's test set: ``(embeddings, test dataset, distance metric)``
    (``trust_checkpoint``: see :func:`load_module`)."""
    module, datamodule = load_module(run_dir, checkpoint, data_overrides, trust_checkpoint)
    datamodule.setup("test")
    embeddings = compute_embeddings(module.model, datamodule.test_dataloader())
    return embeddings, datamodule.test_set, str(module.hparams["distance"])

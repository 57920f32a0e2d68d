"""The run folder (``OUTPUT_ROOT/EXPERIMENT/version_N``) and loading a run, for every command.

A run folder holds ``config.yaml`` (the full configuration), ``metrics.csv`` (one row per logging
step: ``train/``, ``val/`` and ``test/`` values), ``summary.json`` (after ``embedlab fit``:
``raw pixels`` and ``test`` on the test split, ``val`` on the validation split), ``splits.csv``
and ``checkpoints/`` (``last.ckpt``, ``best-step*.ckpt``); a sweep trial adds
``sweep_trial.json``; ``embedlab test`` / ``validate`` / ``evaluate`` add ``test_metrics.json``,
``val_metrics.json`` and ``evaluation.json``. Here: creating a folder, finding runs, choosing a
checkpoint, and building a run's model and data from its configuration. Tables and curves of
runs are :mod:`embedlab.analysis.runs`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jsonargparse import ArgumentError, ArgumentParser
from pytorch_lightning.cli import LightningArgumentParser

from embedlab.checkpoint_io import load_checkpoint
from embedlab.data.datamodule import RetrievalDataModule
from embedlab.errors import ConfigError, one_line, read_yaml
from embedlab.models import EmbeddingModel
from embedlab.module import MetricLearningModule

__all__ = [
    "RESULT_FILES",
    "RunFiles",
    "build_run",
    "checkpoint_path",
    "drop_if_empty",
    "find_runs",
    "instantiate_config",
    "is_run_dir",
    "load_module",
    "merge_data",
    "new_run_dir",
    "read_config",
    "read_metrics",
    "resumed_run_dir",
    "run_files",
]

#: The files of a run folder.
CONFIG_FILE, METRICS_FILE, SPLITS_FILE = "config.yaml", "metrics.csv", "splits.csv"
SUMMARY_FILE, TRIAL_FILE = "summary.json", "sweep_trial.json"
#: Set for a sweep trial's ``embedlab fit``: JSON with the Optuna study and trial it reports to.
TRIAL_ENV = "EMBEDLAB_OPTUNA_TRIAL"
TEST_FILE, VAL_FILE, EVALUATION_FILE = "test_metrics.json", "val_metrics.json", "evaluation.json"
CHECKPOINTS = "checkpoints"

#: What a run folder holds once something ran in it (else :func:`drop_if_empty` removes it).
RESULT_FILES = (METRICS_FILE, SUMMARY_FILE, EVALUATION_FILE, TEST_FILE, VAL_FILE)


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/name/version_N`` with the first free N (atomic: never reuses a folder)."""
    base = Path(root).resolve() / name  # absolute: a resumed run names the same folder
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("_")[1]) for p in base.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (base / f"version_{version}").mkdir()
            return base / f"version_{version}"
        except FileExistsError:
            version += 1


def resumed_run_dir(ckpt_path: str | None) -> Path | None:
    """The run folder of a checkpoint in ``<run>/checkpoints/`` (a resumed run continues there)."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
        return None
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


def drop_if_empty(run_dir: Path | None) -> None:
    """Remove a run folder in which nothing was trained or evaluated (only its config).

    A configuration error found when the run starts, or a subcommand that writes nothing,
    then leaves no ``version_N`` behind for ``compare`` to list.
    """
    if run_dir is None or not run_dir.is_dir():
        return
    if any((run_dir / name).is_file() for name in RESULT_FILES):
        return
    if any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "pictures").is_dir():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # the experiment folder, when this was its only run


def is_run_dir(path: Path) -> bool:
    """A folder holding a training run: its ``summary.json`` (written after ``embedlab fit``), or
    a ``metrics.csv`` with logged ``train/`` values (a run in progress, or killed).

    A folder holding only a config, or only what ``embedlab test`` / ``embedlab validate`` wrote
    (``test_metrics.json``, a ``metrics.csv`` of ``test/`` or ``val/`` rows), is no run.
    """
    if not path.is_dir():
        return False
    if (path / SUMMARY_FILE).is_file():
        return True
    metrics = read_metrics(path)
    trained = [c for c in metrics.columns if str(c).startswith("train/")]
    return bool(trained) and bool(metrics[trained].notna().to_numpy().any())


def _version_key(path: Path) -> tuple[str, int, str]:
    suffix = path.name.removeprefix("version_")
    return (str(path.parent), int(suffix) if suffix.isdigit() else -1, path.name)


def find_runs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``, or found below them (sorted, without duplicates).

    Each path may be a run directory, an experiment folder holding ``version_*`` runs, or an
    output root holding experiment folders.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"no such run directory: {path}")
        if is_run_dir(path):
            found.append(path)
            continue
        below = [p for p in path.glob("version_*") if is_run_dir(p)]
        if not below:
            below = [p for p in path.glob("*/version_*") if is_run_dir(p)]
        found.extend(sorted(below, key=_version_key))
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """``metrics.csv`` of a run (an empty frame when the run logged nothing yet)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # whitespace only
        return pd.DataFrame()


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a plain dict (empty when missing)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    loaded = read_yaml(path, "config")
    return loaded if isinstance(loaded, dict) else {}


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """``best`` (the newest ``best-*.ckpt``, else ``last``), ``last``, or a file name."""
    folder = Path(run_dir) / CHECKPOINTS
    if which == "best":
        best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        if best:
            return best[-1]
        which = "last"
    path = folder / (f"{which}.ckpt" if which == "last" else which)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {which!r} in {folder}")
    return path


@dataclass(frozen=True)
class RunFiles:
    """A checkpoint, its run folder and the run configuration."""

    checkpoint: Path
    run_dir: Path
    config: Path

    def recipe(self) -> dict[str, Any]:
        """``config.yaml`` as a dict (empty when the file is empty)."""
        loaded = read_yaml(self.config, "config")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config: {self.config} is not a mapping of settings")
        return loaded or {}


def run_files(ckpt_path: str | Path, config: str | Path | None = None) -> RunFiles:
    """The run of ``ckpt_path``: ``runs/X/version_N/checkpoints/last.ckpt`` → ``runs/X/version_N``.

    ``config`` defaults to the run folder's ``config.yaml``; either missing is a ConfigError.
    """
    ckpt = Path(ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent
    config_file = Path(config) if config else run_dir / CONFIG_FILE
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: checkpoint not found: {ckpt}")
    if not config_file.is_file():
        raise ConfigError(f"config: no run configuration at {config_file}; pass --config")
    return RunFiles(ckpt, run_dir, config_file)


def merge_data(recipe: dict[str, Any], data: dict[str, Any] | None) -> dict[str, Any]:
    """The run's ``data`` section with ``data`` replacing its keys (mappings merged at every
    depth: ``{dataset: {init_args: {seed: 3}}}`` keeps the dataset's other arguments)."""
    return _merged(dict(recipe.get("data") or {}), data or {})


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        before = out.get(key)
        both = isinstance(before, dict) and isinstance(value, dict)
        out[key] = _merged(before, value) if both else value  # type: ignore[arg-type]
    return out


def instantiate_config(
    config: dict[str, Any], data_overrides: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """Build the ``MetricLearningModule`` and ``RetrievalDataModule`` of an ``embedlab fit``
    configuration (a dict with ``model`` and ``data`` sections, as in ``config.yaml``).

    ``model.num_classes`` is taken from the data, as the command line does; ``data_overrides``
    replace data options (e.g. ``root``).
    """
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(MetricLearningModule, "model", subclass_mode=False)
    parser.add_lightning_class_args(RetrievalDataModule, "data", subclass_mode=False)
    parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
    data = {**(config.get("data") or {}), **(data_overrides or {})}
    model = {k: v for k, v in (config.get("model") or {}).items() if k != "num_classes"}
    try:
        parsed = parser.parse_object({"model": model, "data": data})
    except ArgumentError as err:  # jsonargparse's errors name the key at fault
        raise ConfigError(one_line(str(err))) from err
    objects = parser.instantiate(parsed)  # a bug in a user's class keeps its traceback
    return objects["model"], objects["data"]


def build_run(recipe: dict[str, Any]) -> tuple[EmbeddingModel, RetrievalDataModule]:
    """The embedding network (``model.model``) and the data module of a run configuration.

    Unlike the whole ``MetricLearningModule``, neither needs the number of training classes,
    so the dataset is not read.
    """
    net = (recipe.get("model") or {}).get("model")
    if net is None:
        raise ConfigError("config: the run configuration has no model.model section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model.model", type=EmbeddingModel)
    parser.add_class_arguments(RetrievalDataModule, "data")
    try:
        parsed = parser.parse_object({"model": {"model": net}, "data": recipe.get("data") or {}})
    except ArgumentError as err:  # jsonargparse's errors name the key at fault
        raise ConfigError(one_line(str(err))) from err
    objects = parser.instantiate(parsed)  # a bug in a user's class keeps its traceback
    return objects["model.model"], objects["data"]


def load_module(
    run_dir: str | Path,
    checkpoint: str | None = "best",
    data_overrides: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> tuple[Any, Any]:
    """Rebuild a run's ``MetricLearningModule`` and ``RetrievalDataModule`` from ``config.yaml``.

    The weights of ``checkpoint`` (see :func:`checkpoint_path`; ``None`` keeps the fresh
    initialisation) are loaded; ``data_overrides`` replace data options (e.g. ``root``).
    The module is returned in eval mode on the CPU.

    The checkpoint is read with a safe (``weights_only``) load, which refuses a file that would
    run code when unpickled (:func:`embedlab.checkpoint_io.load_checkpoint`);
    ``trust_checkpoint=True`` loads such a file, from a trusted source, with full unpickling.
    """
    config = read_config(run_dir)
    if not config:
        raise FileNotFoundError(f"{run_dir}: no config.yaml")
    module, datamodule = instantiate_config(config, data_overrides)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint_path(run_dir, checkpoint), trust_checkpoint)
        module.load_state_dict(state["state_dict"])
    module.eval()
    return module, datamodule

"""Atomic file replacement and the CSV logger built on it."""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.io import TorchCheckpointIO

from embedlab.atomic import atomic_write
from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.csv_logger import AtomicCSVLogger, _AtomicRewriteWriter


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_on_success_and_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as f:
        f.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError, match="killed"), atomic_write(target) as f:
        f.write("half of the second vers")
        raise RuntimeError("killed")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temp file left


def log_run(logger: CSVLogger) -> None:
    """Rows whose columns grow over time: the case where Lightning rewrites the file."""
    logger.log_metrics({"train/loss": 1.0, "epoch": 0}, step=0)
    logger.save()
    logger.log_metrics({"train/loss": 0.5, "epoch": 0}, step=1)
    logger.log_metrics({"val/map@r": 0.25, "epoch": 0}, step=1)
    logger.save()
    logger.log_metrics({"train/loss": 0.25, "lr": 0.1, "epoch": 1}, step=2)
    logger.save()


def test_atomic_csv_logger_writes_what_lightning_writes(tmp_path: Path) -> None:
    ours, theirs = AtomicCSVLogger(tmp_path / "a"), CSVLogger(tmp_path / "b")
    log_run(ours)
    log_run(theirs)
    a = pd.read_csv(Path(ours.log_dir) / "metrics.csv")
    b = pd.read_csv(Path(theirs.log_dir) / "metrics.csv")
    assert list(a.columns) == ["epoch", "lr", "step", "train/loss", "val/map@r"]
    pd.testing.assert_frame_equal(a, b)


def test_atomic_csv_logger_keeps_every_row_when_killed_mid_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = AtomicCSVLogger(tmp_path)
    log_run(logger)
    path = Path(logger.log_dir) / "metrics.csv"
    before = path.read_text()

    def die(self: csv.DictWriter, rows: object) -> None:
        self.writer.writerow(["0.1", "partial"])  # the first bytes of the new table...
        raise KeyboardInterrupt  # ...then the process is stopped

    monkeypatch.setattr(csv.DictWriter, "writerows", die)
    logger.log_metrics({"brand/new": 3.0}, step=3)  # a new column: Lightning would rewrite
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    assert path.read_text() == before
    assert len(pd.read_csv(path)) == 4


def test_files_honour_the_umask(tmp_path: Path, umask_022: None) -> None:
    with atomic_write(tmp_path / "summary.json") as f:
        f.write("{}")
    assert mode(tmp_path / "summary.json") == 0o644
    AtomicCheckpointIO().save_checkpoint({"w": 1}, tmp_path / "ckpt" / "last.ckpt")
    assert mode(tmp_path / "ckpt" / "last.ckpt") == 0o644
    logger = AtomicCSVLogger(tmp_path / "logs")
    log_run(logger)  # includes a rewrite (new columns)
    assert mode(Path(logger.log_dir) / "metrics.csv") == 0o644
    os.umask(0o077)
    with atomic_write(tmp_path / "private.txt") as f:
        f.write("x")
    assert mode(tmp_path / "private.txt") == 0o600


# -- what embedlab relies on in Lightning (pinned: a Lightning release that changes it fails here)
def test_lightning_rewrites_metrics_csv_through_the_pinned_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    original = ExperimentWriter._rewrite_with_new_header

    def spy(self: ExperimentWriter, fieldnames: list[str]) -> None:
        calls.append(list(fieldnames))
        original(self, fieldnames)

    monkeypatch.setattr(ExperimentWriter, "_rewrite_with_new_header", spy)
    log_run(CSVLogger(tmp_path))
    assert calls == [
        ["epoch", "step", "train/loss", "val/map@r"],
        ["epoch", "lr", "step", "train/loss", "val/map@r"],
    ]
    logger = AtomicCSVLogger(tmp_path / "ours")
    assert isinstance(logger.experiment, _AtomicRewriteWriter)
    assert logger._experiment is logger.experiment


def test_lightning_checkpoints_go_through_a_temporary_file_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why AtomicCheckpointIO exists: Lightning's temporary file is not in the run folder."""
    made: list[str | None] = []
    original = tempfile.mkstemp

    def spy(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = original(*args, **kwargs)  # type: ignore[call-overload]
        made.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    target = tmp_path / "run" / "last.ckpt"
    target.parent.mkdir()
    TorchCheckpointIO().save_checkpoint({"w": 1}, target)
    assert target.is_file() and len(made) == 1
    assert Path(str(made[0])).parent != target.parent

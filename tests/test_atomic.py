"""Atomic file replacement and the CSV logger built on it."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from pytorch_lightning.loggers import CSVLogger

from embedlab.atomic import atomic_write
from embedlab.csv_logger import AtomicCSVLogger


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

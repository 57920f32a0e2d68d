"""Run folders: only for runs that trained or evaluated, readable by colleagues, ignored when empty."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedlab.cli import main
from embedlab.runs import find_runs

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "experiments" / "digits.yaml")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_failed_run_leaves_no_run_folder(tmp_path: Path) -> None:
    # the configuration parses, but the run cannot start: 11 identities per batch, 10 exist
    assert main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", "--data.p=11"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_compare_ignores_folders_without_metrics(tmp_path: Path) -> None:
    (tmp_path / "x" / "version_0").mkdir(parents=True)
    (tmp_path / "x" / "version_0" / "config.yaml").write_text("model: {}\n")
    (tmp_path / "x" / "version_1").mkdir()
    (tmp_path / "x" / "version_1" / "metrics.csv").write_text("epoch,step,train/loss\n0,1,0.5\n")
    assert [p.name for p in find_runs(tmp_path)] == ["version_1"]


@pytest.mark.slow
def test_run_files_honour_the_umask(tmp_path: Path, umask_022: None) -> None:
    args = [
        "fit",
        "--config",
        DIGITS,
        f"--output_root={tmp_path}",
        "--trainer.max_epochs=1",
        "--trainer.check_val_every_n_epoch=1",
        "--data.batches_per_epoch=2",
        "--trainer.enable_progress_bar=false",
    ]
    assert main(args) == 0
    run = tmp_path / "digits" / "version_0"
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"metrics.csv", "summary.json", "splits.csv", "config.yaml", "last.ckpt"} <= names
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes

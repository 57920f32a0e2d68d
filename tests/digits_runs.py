"""A tiny offline loss-comparison sweep on digits, run once per test process and shared by
test_sweep.py and test_notebooks.py (the notebook reads the runs it produces)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweeps" / "losses.yaml"
LOSSES = 3  # the first three presets of the sweep's grid
TINY_BUDGET = [
    "--trainer.max_epochs=2",
    "--data.batches_per_epoch=3",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]


@dataclass(frozen=True)
class SweepResult:
    exit_code: int
    output_root: Path
    folder: Path  # output_root/<sweep name>: the version_* runs, optuna.db and report/


@functools.cache
def digits_sweep() -> SweepResult:
    """Run ``embedlab sweep losses.yaml --offline --count 3`` with a tiny budget (once)."""
    from embedlab.cli import main
    from embedlab.sweep import load_sweep

    output_root = Path(tempfile.mkdtemp(prefix="embedlab-sweep-"))
    atexit.register(shutil.rmtree, output_root, ignore_errors=True)
    argv = [
        "sweep",
        str(SWEEP),
        "--offline",
        "--in_process",
        f"--count={LOSSES}",
        f"--output_root={output_root}",
        "--",
        *TINY_BUDGET,
    ]
    with contextlib.chdir(ROOT):  # the sweep names its presets relative to the repository
        code = main(argv)
    name = str(load_sweep(SWEEP)["name"])
    return SweepResult(code, output_root, output_root / name)

"""The run folder that ``embedlab fit`` writes (``OUTPUT_ROOT/EXPERIMENT/version_N``): creating
it, finding the run a checkpoint belongs to, and dropping a folder in which nothing ran.

Reading runs (metrics, summaries, configurations) is :mod:`embedlab.analysis.runs`.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

__all__ = ["RESULT_FILES", "drop_if_empty", "new_run_dir", "resumed_run_dir"]


RESULT_FILES = (
    "metrics.csv",
    "summary.json",
    "evaluation.json",
    "test_metrics.json",
    "val_metrics.json",
)


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

"""Lightning's CSVLogger whose whole-file rewrite of ``metrics.csv`` is atomic.

Lightning appends rows to ``metrics.csv``, and when a new column appears (the first validation,
a new statistic) it rewrites the file whole, opening it for writing first: a run killed during
that rewrite loses every row logged so far. Here the rewrite goes to a temporary file that is
renamed over the old one (:func:`embedlab.atomic.atomic_write`); appends stay Lightning's.

This is embedlab's one reach into Lightning's private API: the writer's
``_rewrite_with_new_header`` hook and the logger's ``_experiment`` slot. ``tests/test_atomic.py``
pins both, so a Lightning release that renames them fails the tests instead of silently
dropping the guarantee.
"""

from __future__ import annotations

import csv
import os

from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from embedlab.atomic import atomic_write

__all__ = ["AtomicCSVLogger"]


class _AtomicRewriteWriter(ExperimentWriter):
    """Lightning's writer; the rewrite when a column appears replaces the file atomically."""

    def _check_log_dir_exists(self) -> None:
        """Continue an existing ``metrics.csv`` instead of deleting it.

        A resumed run, and a ``ddp_spawn`` parent whose workers did the logging (its own writer
        first appears for the final test), append to the run's file.
        """
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        with atomic_write(self.metrics_file_path, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class AtomicCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` never loses rows (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(get_filesystem(self.root_dir), LocalFileSystem):
            return super().experiment  # remote filesystems: Lightning's writer
        if not isinstance(self._experiment, _AtomicRewriteWriter):
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicRewriteWriter(log_dir=self.log_dir)
        return self._experiment

"""Lightning's CSVLogger with ``metrics.csv`` replaced atomically at every flush.

Lightning appends rows to ``metrics.csv`` and rewrites it whole when a new column appears
(opening it for writing first): a run killed during that rewrite loses every row logged so
far. Here each flush writes the complete table to a temporary file and renames it over the
old one, so the file on disk is always a whole, parseable table.
"""

from __future__ import annotations

import csv

from fsspec.implementations.local import LocalFileSystem
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from embedlab.atomic import atomic_write

__all__ = ["AtomicCSVLogger"]


class _AtomicWriter(ExperimentWriter):
    def save(self) -> None:
        if not self.metrics or not isinstance(self._fs, LocalFileSystem):
            super().save()  # nothing new, or a remote filesystem: Lightning's writer
            return
        self._record_new_keys()
        rows: list[dict[str, object]] = []
        if self._fs.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                rows = list(csv.DictReader(file))
        with atomic_write(self.metrics_file_path, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows([*rows, *self.metrics])
        self.metrics = []


class AtomicCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` is never left half-written (see module docstring)."""

    @property
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, _AtomicWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicWriter(log_dir=self.log_dir)
        return self._experiment

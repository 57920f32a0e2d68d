"""The console shows what helps: where the run folder is, the progress bar, the final table.

:func:`quiet_console` silences what Lightning prints that a user cannot act on: LightningCLI's
note on the ``args`` parameter, the litlogger / litmodels tips, the GPU/TPU availability lines,
the ``LeafSpec`` deprecation raised inside Lightning, the ``sync_dist`` recommendation (embedlab's
epoch-level metrics are already reduced across ranks by the metric itself), the worker-count
hint, the logging-interval note of short epochs and the "Seed set to" line (the seed is in
``config.yaml``). :func:`quiet_callbacks` takes the logger's version number (``v_num``) out of
Lightning's progress bar and prints the model summary in one line.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import (
    Callback,
    ModelSummary,
    RichModelSummary,
    RichProgressBar,
    TQDMProgressBar,
)
from pytorch_lightning.callbacks import (
    ProgressBar as ProgressBarBase,
)
from pytorch_lightning.utilities.model_summary import get_human_readable_count

NOISE = (
    r"LightningCLI's args parameter",
    r".*isinstance\(treespec, LeafSpec\)",
    r"It is recommended to use `self\.log\(.*sync_dist=True",
    r".*does not have many workers",
    r"The number of training batches .* is smaller than the logging interval",
    r"Checkpoint directory .* exists and is not empty",  # a resumed run continues in its folder
    # evaluate / test restore weights only; the callbacks that wrote the file are not needed
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
)
NOISY_LINES = (
    "GPU available:",
    "TPU available:",
    "💡 Tip:",
    "HPU available:",
    # embedlab prints which checkpoint it tests, with its epoch and step
    "Restoring states from the checkpoint path",
    "Loaded model weights from the checkpoint",
    "Restored all states from the checkpoint",
    "Seed set to",
)
LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.seed",
    "lightning.fabric.utilities.seed",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISY_LINES)


def quiet_console() -> None:
    """Install the warning filters and the log filter (idempotent)."""
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())


class ProgressBar(ProgressBarBase):
    """Mixed into Lightning's progress bars: their metrics without the logger's version."""

    def get_metrics(
        self, trainer: Trainer, pl_module: Any
    ) -> dict[str, int | str | float | dict[str, float]]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class Summary(ModelSummary):
    """The model summary in one line: parameters (trainable) and size. Lightning's table lists
    the losses and metric objects too, and a "Total FLOPs: 0" (it counts FLOPs only for a
    module with ``example_input_array``)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        count = get_human_readable_count
        print(
            f"embedlab: model of {count(total_parameters)} parameters "
            f"({count(trainable_parameters)} trainable, {model_size:.1f} MB)"
        )


class QuietConsole(Callback):
    """Installs :func:`quiet_console` in every process of a run (``ddp_spawn`` starts fresh
    interpreters, which would print each rank's warnings again)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        quiet_console()


def quiet_callbacks(trainer: Trainer) -> None:
    """Lightning's default progress bar without ``v_num``, :class:`Summary` for its default
    model summary (a user's own choice of either is kept as it is) and :class:`QuietConsole`."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    callbacks.insert(0, QuietConsole())
    for i, callback in enumerate(callbacks):
        if type(callback) in (TQDMProgressBar, RichProgressBar):  # keeps its settings and state
            callback.__class__ = type(type(callback).__name__, (ProgressBar, type(callback)), {})
        elif type(callback) in (ModelSummary, RichModelSummary):
            callbacks[i] = Summary()

"""The console shows what helps: where the run folder is, the progress bar, the final table.

:func:`quiet_console` silences what Lightning prints that a user cannot act on: LightningCLI's
note on the ``args`` parameter, the litlogger / litmodels tips, the GPU/TPU availability lines,
the ``LeafSpec`` deprecation raised inside Lightning, the ``sync_dist`` recommendation (embedlab's
epoch-level metrics are already reduced across ranks by the metric itself), the worker-count
hint and the logging-interval note of short epochs.
"""

from __future__ import annotations

import logging
import warnings

NOISE = (
    r"LightningCLI's args parameter",
    r".*isinstance\(treespec, LeafSpec\)",
    r"It is recommended to use `self\.log\(.*sync_dist=True",
    r".*does not have many workers",
    r"The number of training batches .* is smaller than the logging interval",
    r"Checkpoint directory .* exists and is not empty",  # a resumed run continues in its folder
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
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISY_LINES)


def quiet_console() -> None:
    """Install the warning filters and the log filter (idempotent)."""
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())

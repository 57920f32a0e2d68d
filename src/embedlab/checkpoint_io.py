"""Checkpoints written atomically (:func:`embedlab.atomic.atomic_write`): a run killed while
saving leaves the previous checkpoint intact instead of a truncated file."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from embedlab.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote filesystems: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)

"""Checkpoints written atomically in their own folder (:func:`embedlab.atomic.atomic_write`).

Lightning 2.6's ``TorchCheckpointIO`` already saves through an fsspec transaction: the whole
checkpoint is serialised into memory, written to a temporary file in the *system* temporary
directory and moved over the target. That is atomic only when the temporary directory and the
run folder share a filesystem; on a cluster (``/tmp`` on a local disk, runs on NFS or Lustre)
the move is a copy into the target, and a job killed during it leaves a truncated checkpoint.
Here the temporary file is next to the target, so the rename is always atomic, and the
checkpoint is streamed to disk instead of held twice in memory. ``tests/test_atomic.py`` pins
Lightning's behaviour: when Lightning writes next to the target itself, delete this class.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from embedlab.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves rename a temporary file from the same folder."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote filesystems: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)

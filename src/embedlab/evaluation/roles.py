"""Evaluation bookkeeping: which items of the evaluated dataset are queries and gallery items."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from embedlab.metrics import Convention

__all__ = ["EvalRoles"]


class EvalRoles:
    """Query/gallery flags of the items of each evaluation stage (``val``, ``test``).

    Read once per stage and epoch from the dataset the trainer evaluates: its ``is_query`` and
    ``is_gallery`` arrays, or every item both (leave-one-out) when it has none. The flags are kept
    on the device of the batches, so looking up a batch's flags does not wait for the device.

    Under the ``official`` convention, a dataset whose ``queries_in_official_gallery`` is true
    (MARS: its MATLAB code ranks every test tracklet) has its queries in the gallery too; the
    evaluator then ignores each query's own entry (same dataset index).
    """

    def __init__(self) -> None:
        self._flags: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}

    def __call__(
        self,
        trainer: pl.Trainer,
        stage: str,
        indices: Tensor,
        loader: int = 0,
        convention: Convention = "torchreid",
    ) -> tuple[Tensor, Tensor]:
        """``(is_query, is_gallery)`` of the items ``indices`` (one batch of loader ``loader``)."""
        flags = self._flags.get((stage, loader))
        if flags is None or flags[0].device != indices.device:
            flags = self._read(trainer, stage, loader, indices.device, convention)
            self._flags[stage, loader] = flags
        return flags[0][indices], flags[1][indices]

    def clear(self, stage: str) -> None:
        """Forget ``stage``'s flags (at the end of its epoch: the next one may differ)."""
        for key in [k for k in self._flags if k[0] == stage]:
            del self._flags[key]

    @staticmethod
    def _read(
        trainer: pl.Trainer, stage: str, index: int, device: torch.device, convention: Convention
    ) -> tuple[Tensor, Tensor]:
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader: Any = loaders[index] if isinstance(loaders, (list, tuple)) else loaders
        dataset = loader.dataset
        if not hasattr(dataset, "is_query"):
            both = torch.ones(len(dataset), dtype=torch.bool, device=device)
            return both, both
        as_flags = lambda x: torch.as_tensor(x, dtype=torch.bool).to(device)  # noqa: E731
        is_query, is_gallery = as_flags(dataset.is_query), as_flags(dataset.is_gallery)
        if convention == "official" and getattr(dataset, "queries_in_official_gallery", False):
            is_gallery = is_gallery | is_query
        return is_query, is_gallery

"""ValHistory: the ``val/*`` metrics of every validation, kept in checkpoints."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

__all__ = ["ValHistory"]


class ValHistory(pl.Callback):
    """Records ``val/*`` after every validation of ``fit``, keyed by epochs trained (1-based).

    The history is saved in checkpoints, so a resumed run selects among all its epochs and a
    ``ddp_spawn`` parent (whose callbacks did not run) reads it from the last checkpoint.
    """

    def __init__(self) -> None:
        self.history: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        values = {
            k.removeprefix("val/"): float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/")
        }
        if values:
            self.history[trainer.current_epoch + 1] = values

    def state_dict(self) -> dict[str, Any]:
        return {"history": {str(e): dict(v) for e, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(e): dict(v) for e, v in state_dict.get("history", {}).items()}

"""Selection on val, one evaluation on test: what ``embedlab fit`` does after training.

:class:`ValHistory` keeps the ``val/*`` metrics of every validation; :func:`selected` names
the checkpoint a run reports (the best on val, or the last one when nothing is monitored) and
the validation metrics it was chosen with, so that ``fit`` can evaluate it once on the test
split.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class ValHistory(pl.Callback):
    """Records ``val/*`` after every validation of ``fit``, keyed by epochs trained (1-based)."""

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


def _checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    callback = trainer.checkpoint_callback
    return callback if isinstance(callback, ModelCheckpoint) else None


def selected(trainer: pl.Trainer) -> tuple[str | None, int | None, dict[str, float]]:
    """``(ckpt_path for trainer.test, epochs trained at that checkpoint, its val metrics)``.

    The best checkpoint by ``checkpoint.monitor`` when validation ran and a best checkpoint
    exists; otherwise the last checkpoint (``"last"``), or the weights in memory (``None``)
    when checkpointing is off.
    """
    history = next((c.history for c in trainer.callbacks if isinstance(c, ValHistory)), {})  # type: ignore[attr-defined]
    callback = _checkpoint_callback(trainer)
    monitor = callback.monitor if callback is not None else None
    if callback is not None and monitor and callback.best_model_path and history:
        key = monitor.removeprefix("val/")
        scores = {e: v[key] for e, v in history.items() if key in v}
        if scores:
            pick = max if callback.mode == "max" else min
            epoch = pick(scores, key=lambda e: scores[e])  # first of ties, as ModelCheckpoint
            return "best", epoch, history[epoch]
    epochs = trainer.current_epoch
    val = history.get(epochs, {})
    if callback is not None and callback.last_model_path:
        return "last", epochs, val
    return None, epochs, val

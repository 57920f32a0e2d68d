"""Selection on val, one evaluation on test: what ``embedlab fit`` does after training.

:class:`~embedlab.callbacks.ValHistory` keeps the ``val/*`` metrics of every validation;
:func:`selected` names
the checkpoint a run reports (the best on val, or the last one when nothing is monitored) and
the validation metrics it was chosen with, so that ``fit`` can evaluate it once on the test
split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from embedlab.callbacks.last_checkpoint import LAST, LastCheckpoint
from embedlab.callbacks.val_history import ValHistory
from embedlab.checkpoint_io import load_checkpoint
from embedlab.errors import ConfigError


def _checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The monitored ``ModelCheckpoint`` (the best ones), not :class:`LastCheckpoint`."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and not isinstance(callback, LastCheckpoint):
        return callback
    return None


def _from_checkpoint(path: str) -> tuple[int, dict[int, dict[str, float]]] | None:
    """``(epochs trained, val history)`` saved in the checkpoint at ``path``."""
    if not path or not Path(path).is_file():
        return None
    checkpoint = load_checkpoint(path)  # this run's own last.ckpt: plain values only
    state = checkpoint.get("callbacks", {}).get(ValHistory.__qualname__, {})
    history = ValHistory()
    history.load_state_dict(state)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    epochs = progress.get("current", {}).get("processed", checkpoint.get("epoch", 0))
    return int(epochs), history.history


def _last_path(trainer: pl.Trainer) -> str:
    """``last.ckpt`` of the run (:class:`LastCheckpoint`), or ``""``; a ``ddp_spawn`` parent,
    whose callbacks were not set up, looks for it in the run folder."""
    callbacks = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]  # type: ignore[attr-defined]
    if not any(isinstance(c, LastCheckpoint) for c in callbacks):
        return ""
    folder = next((c.dirpath for c in callbacks if c.dirpath), None)
    if folder is None and trainer.logger is not None and trainer.logger.log_dir is not None:
        folder = str(
            Path(trainer.logger.log_dir) / "checkpoints"
        )  # no collective, unlike trainer.log_dir
    path = Path(folder or "") / LAST
    return str(path) if folder and path.is_file() else ""


def selected(trainer: pl.Trainer) -> tuple[str | None, int | None, dict[str, float]]:
    """``(ckpt_path for trainer.test, epochs trained at that checkpoint, its val metrics)``.

    The best checkpoint by ``checkpoint.monitor`` when validation ran and a best checkpoint
    exists; otherwise ``last.ckpt``, or the weights in memory (``None``) when checkpointing
    is off.
    """
    recorder = next((c for c in trainer.callbacks if isinstance(c, ValHistory)), None)  # type: ignore[attr-defined]
    history = dict(recorder.history) if recorder is not None else {}
    epochs: int | None = trainer.current_epoch
    callback = _checkpoint_callback(trainer)
    saved = _from_checkpoint(_last_path(trainer))
    if saved is not None:  # also what a ddp_spawn parent knows of its workers' validations
        epochs, history = saved[0], {**saved[1], **history}
    monitor = callback.monitor if callback is not None else None
    if callback is not None and monitor and callback.best_model_path and history:
        key = monitor.removeprefix("val/")
        scores = {e: v[key] for e, v in sorted(history.items()) if key in v}
        if scores:
            pick = max if callback.mode == "max" else min
            epoch = pick(scores, key=lambda e: scores[e])  # the first of ties, as ModelCheckpoint
            return callback.best_model_path, epoch, history[epoch]
    val = history.get(epochs, {}) if epochs is not None else {}
    if saved is not None:
        return _last_path(trainer), epochs, val
    return None, epochs, val


def tested_checkpoint(trainer: pl.Trainer) -> dict[str, Any]:
    """``{"path", "epoch", "step"}`` of the checkpoint the last ``trainer.test`` loaded (the
    epoch it was saved in, counted from 1 as in ``summary.json``, and the optimiser steps), or
    ``{}`` when it tested the weights in memory."""
    path = trainer.ckpt_path
    if not path or not Path(path).is_file():
        return {}
    try:
        checkpoint = load_checkpoint(path)
    except ConfigError:  # a checkpoint the user trusted (--weights_only false): no metadata
        return {"path": str(path)}
    epoch, step = checkpoint.get("epoch", 0), checkpoint.get("global_step", 0)
    return {"path": str(path), "epoch": int(epoch) + 1, "step": int(step)}

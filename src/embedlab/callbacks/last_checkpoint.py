"""``last.ckpt``: always the latest training state, whatever the best checkpoint is.

Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it also
saved a top-k checkpoint at that step, so with a monitored metric ``last.ckpt`` is a copy of
the best one and a resumed run would restart from an older state. :class:`LastCheckpoint`
owns ``last.ckpt`` instead: it rewrites it at the end of every training epoch (after that
epoch's validation, whose metrics it then holds), every ``every_n_train_steps`` steps when
asked, and when the job is told to stop (SIGTERM, or SIGUSR1 — the warning signal of
schedulers that preempt). The monitored ``ModelCheckpoint`` keeps only the best ones.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

LAST = "last.ckpt"


class LastCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` (the run's ``checkpoints/`` by default) with the latest state.

    A ``ModelCheckpoint`` without monitor and top-k, so that ``--ckpt_path last`` finds its file.

    Args:
        dirpath: the checkpoint folder (default: ``<run folder>/checkpoints``).
        every_n_train_steps: also write it every N optimiser steps (0: epoch ends only).
    """

    def __init__(self, dirpath: str | Path | None = None, every_n_train_steps: int = 0) -> None:
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )
        self.every = max(int(every_n_train_steps or 0), 0)
        self._saved_step = -1
        self._saved_epoch_end = False

    @property
    def path(self) -> str:
        assert self.dirpath is not None, "LastCheckpoint.setup has not run"
        return os.path.join(self.dirpath, LAST)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # SIGUSR1 (a preemption warning) stops the run as SIGTERM does, unless a SLURM
        # auto-requeue handler already owns it.
        main = threading.current_thread() is threading.main_thread()
        if stage == "fit" and main and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, _as_sigterm)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:  # the loops are restored by now
            rank_zero_info(
                f"embedlab: resuming {trainer.ckpt_path}: {trainer.current_epoch} epochs and "
                f"{trainer.global_step} steps done, continuing with epoch {trainer.current_epoch + 1}"
            )

    def save(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` now (on every rank: ``save_checkpoint`` is collective)."""
        self.last_model_path = self.path
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        due = self.every and step % self.every == 0
        stop = stop_requested(trainer)
        if (due or stop) and step != self._saved_step:
            self.save(trainer)
            if stop:
                rank_zero_info(f"embedlab: stopping; {self.path} holds step {step}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing: the epoch end that follows writes the state with this validation in it."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing: the last epoch end wrote it."""

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Nothing: a stop request was saved at its batch end, and a crash keeps the last
        good state rather than one in the middle of a failed step."""

    def state_dict(self) -> dict[str, Any]:
        return {"last_model_path": self.last_model_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the file name is fixed."""


def stop_requested(trainer: pl.Trainer) -> bool:
    """Whether any rank was told to stop (SIGTERM / SIGUSR1), the same answer on every rank.

    A launcher signals its processes one by one, so at a batch end one rank may have the signal
    and another not yet; saving on the first alone would leave it in ``save_checkpoint``'s
    barrier while the others train on (a hang). Under DDP the flag is therefore all-reduced on
    every rank at every batch end (one small all-reduce; Lightning's own broadcast of rank 0's
    flag at the next batch start already waits on the device each step).
    """
    received = bool(trainer.received_sigterm)
    if trainer.world_size > 1:
        return bool(trainer.strategy.reduce_boolean_decision(received, all=False))
    return received


def _as_sigterm(signum: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGTERM)

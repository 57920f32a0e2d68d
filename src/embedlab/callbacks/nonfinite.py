"""NonFiniteGuard: one fused finiteness check of a step's loss terms and gradients."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["NonFiniteGuard", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term or gradient is NaN or infinite."""


class NonFiniteGuard(pl.Callback):
    """Checks, before each optimiser step, that the loss terms of the step (the module's
    ``step_losses``, one row per micro-batch) and every gradient are finite.

    The only host synchronisation of a training step. Under DDP the flag is all-reduced first,
    so with ``skip`` every rank skips the same step (the gradients are dropped, so the
    optimiser leaves the parameters as they were). :class:`~embedlab.module.MetricLearningModule`
    adds it (``model.nonfinite``).

    Args:
        mode: ``error`` stops with :class:`NonFiniteLossError` naming the term or parameter;
            ``skip`` skips the step and says so.
    """

    def __init__(self, mode: Literal["error", "skip"] = "error") -> None:
        self.mode = mode

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        norms = list(torch._foreach_norm([g for _, g in named])) if named else []
        losses: Tensor | None = getattr(pl_module, "step_losses", None)
        pl_module.step_losses = None  # type: ignore[assignment]
        parts = [*(n.reshape(()) for n in norms), *([] if losses is None else [losses])]
        if not parts:
            return
        finite = torch.cat([t.reshape(-1).float() for t in parts]).isfinite().all()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = finite.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        if bool(finite):  # the step's one host synchronisation
            return
        message = self.message(pl_module, named, norms, losses)
        if self.mode == "error":
            raise NonFiniteLossError(message)
        optimizer.zero_grad(set_to_none=True)
        pl_module.print(f"skipping step: {message}")

    @staticmethod
    def message(
        pl_module: Any, named: list[tuple[str, Tensor]], norms: list[Tensor], losses: Tensor | None
    ) -> str:
        """What was not finite (only computed when something was)."""
        where = f"at global step {pl_module.global_step} (epoch {pl_module.current_epoch})"
        if losses is not None and not bool(losses.isfinite().all()):
            finite = losses.isfinite().all(0)  # (terms,): over the accumulated micro-batches
            bad = [t.name for t, ok in zip(pl_module.terms, finite, strict=True) if not ok]
            labels = getattr(pl_module, "step_labels", None)
            shown = labels.tolist() if labels is not None else []
            return f"non-finite value in loss term {bad[0]!r} {where}; batch labels: {shown}"
        bad_params = [n for (n, _), norm in zip(named, norms, strict=True) if not norm.isfinite()]
        if bad_params:
            return f"non-finite gradient of {bad_params[0]} {where}"
        return f"non-finite value on another rank {where}"

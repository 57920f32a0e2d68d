"""One optimiser for the model plus the loss terms that bring their own (Lightning steps one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["ChainedOptimizer"]


class ChainedOptimizer(Optimizer):
    """Steps a main optimiser and further ones (e.g. SGD for ``CenterLoss`` centres) together.

    Lightning's automatic optimisation drives one optimiser: this is it. Its ``param_groups``
    and ``state`` are the main optimiser's, so a learning-rate schedule and the LR monitor act on
    the main optimiser only, and each further optimiser keeps its own learning rate (the
    Bag-of-Tricks code updates the centres with SGD at a constant 0.5). ``grad_scales``
    multiply the gradients each further optimiser sees (the Bag-of-Tricks code divides the
    centres' gradient by the centre-loss weight, so that they follow the unweighted loss).
    ``zero_grad``, ``state_dict`` and ``load_state_dict`` cover all of them.

    Not for ``precision: 16-mixed``: its gradient scaler unscales ``param_groups`` only, so the
    further optimisers would step on scaled gradients (``bf16-mixed`` has no scaler: fine).
    """

    def __init__(
        self,
        main: Optimizer,
        others: Sequence[Optimizer],
        grad_scales: Sequence[float] | None = None,
    ) -> None:
        super().__init__(main.param_groups, main.defaults)
        self.main, self.others = main, list(others)
        self.grad_scales = [1.0] * len(self.others) if grad_scales is None else list(grad_scales)
        if len(self.grad_scales) != len(self.others):
            raise ValueError("grad_scales: one per further optimiser")
        self.param_groups = main.param_groups
        self.state = main.state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.main.step()
        for optimizer, scale in zip(self.others, self.grad_scales, strict=True):
            if scale != 1.0:
                grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
                torch._foreach_mul_([g for g in grads if g is not None], scale)
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in (self.main, *self.others):
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "others": [o.state_dict() for o in self.others]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        others = state_dict["others"]
        if len(others) != len(self.others):
            raise ValueError(
                f"optimizer state: the checkpoint has {len(others)} loss-term optimisers, "
                f"this model {len(self.others)}"
            )
        self.main.load_state_dict(state_dict["main"])
        for optimizer, state in zip(self.others, others, strict=True):
            optimizer.load_state_dict(state)
        self.param_groups = self.main.param_groups
        self.state = self.main.state

"""Learning-rate schedules with linear warm-up, stepped once per epoch.

Chosen with ``model.lr_scheduler`` by ``class_path``, like any ``torch.optim.lr_scheduler``
class (the module calls it with the optimiser)::

    lr_scheduler:
      class_path: embedlab.schedules.WarmupMultiStep
      init_args: {milestones: [40, 70], gamma: 0.1, warmup_epochs: 10}

Each is a :class:`~torch.optim.lr_scheduler.LambdaLR` whose multiplier at epoch ``e`` is the
linear warm-up from ``warmup_start_factor`` to 1 over ``warmup_epochs`` epochs, then
:meth:`WarmupSchedule.decay`. A new schedule overrides ``decay``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from embedlab.errors import ConfigError


class WarmupSchedule(LambdaLR):
    """Linear warm-up, then a constant learning rate (override :meth:`decay` for more).

    Args:
        optimizer: given by the module.
        warmup_epochs: epochs of linear warm-up (0: none).
        warmup_start_factor: multiplier of the learning rate at epoch 0 of the warm-up.
    """

    def __init__(
        self, optimizer: Optimizer, warmup_epochs: int = 0, warmup_start_factor: float = 0.1
    ) -> None:
        if warmup_epochs < 0:
            raise ConfigError(f"lr_scheduler.warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        super().__init__(optimizer, self.factor)

    def factor(self, epoch: int) -> float:
        """The learning-rate multiplier at ``epoch``."""
        if epoch < self.warmup_epochs:
            start = self.warmup_start_factor
            return start + (1.0 - start) * epoch / self.warmup_epochs
        return self.decay(epoch)

    def decay(self, epoch: int) -> float:
        """The multiplier after the warm-up."""
        return 1.0


class WarmupMultiStep(WarmupSchedule):
    """Warm-up, then ×``gamma`` at each of ``milestones`` (Bag of Tricks: ×0.1 at 40 and 70).

    Args:
        milestones: epochs at which the learning rate is multiplied by ``gamma``.
        gamma: the factor.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, warmup_epochs, warmup_start_factor)

    def decay(self, epoch: int) -> float:
        return float(self.gamma ** bisect_right(self.milestones, epoch))


class WarmupCosine(WarmupSchedule):
    """Warm-up, then half a cosine from 1 down to ``min_factor`` at epoch ``epochs``.

    Args:
        epochs: the epoch at which the cosine reaches ``min_factor``; later epochs stay there.
            ``None``: ``trainer.max_epochs`` (set by the module through :meth:`set_total_epochs`).
        min_factor: the final multiplier.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        epochs: int | None = None,
        min_factor: float = 0.0,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ) -> None:
        self.epochs: int | None = None
        self.min_factor = min_factor
        self.warmup_epochs = warmup_epochs
        if epochs is not None:
            self.set_total_epochs(epochs)
        super().__init__(optimizer, warmup_epochs, warmup_start_factor)

    def set_total_epochs(self, epochs: int) -> None:
        """End the cosine at ``epochs`` (the module passes ``trainer.max_epochs`` if unset)."""
        self.epochs = epochs

    def decay(self, epoch: int) -> float:
        if self.epochs is None:  # before the module set it: only epoch 0 is ever asked
            return 1.0
        span = max(1, self.epochs - self.warmup_epochs)  # a run shorter than its warm-up
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


class ExponentialDecay(WarmupSchedule):
    """Hermans et al. (2017): ε(t) = ε0 until ``start``, then ε0·γ^((t − start)/(end − start))
    down to ε0·γ at ``end``, constant afterwards (TriHard: γ = 0.001, 150 → 250).

    Args:
        start: the epoch t0 at which the decay begins.
        end: the epoch t1 at which the multiplier reaches ``gamma``.
        gamma: the final multiplier.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start: int,
        end: int,
        gamma: float = 0.001,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ) -> None:
        if start >= end:
            raise ConfigError(f"lr_scheduler: start={start} must be before end={end}")
        self.start, self.end, self.gamma = start, end, gamma
        super().__init__(optimizer, warmup_epochs, warmup_start_factor)

    def decay(self, epoch: int) -> float:
        progress = min(1.0, max(0.0, (epoch - self.start) / (self.end - self.start)))
        return float(self.gamma**progress)

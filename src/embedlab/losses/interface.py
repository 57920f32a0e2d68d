"""``Loss``: the type of ``model.loss`` and ``LossTerm.loss``, any ``nn.Module`` by class path.

``embedlab fit --help`` lists a parameter's known subclasses; typed ``nn.Module`` that would be
every ``torch.nn`` class imported. ``Loss`` accepts any ``nn.Module`` (``issubclass`` is true for
them) but names only the subclasses of :class:`~embedlab.losses.MetricLoss` as its own, so the
help lists embedlab's losses and a user's ``MetricLoss`` subclasses.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from embedlab.losses.base import MetricLoss


class _LossMeta(ABCMeta):
    def __subclasses__(cls) -> list[type]:  # type: ignore[override]
        return [MetricLoss]


class _Loss(metaclass=_LossMeta):
    """Any ``nn.Module`` called as ``loss(x, labels) -> Tensor`` (a scalar)."""

    @abstractmethod
    def __call__(self, x: Tensor, labels: Tensor) -> Tensor: ...

    @classmethod
    def __subclasshook__(cls, other: Any) -> bool:
        return issubclass(other, nn.Module) or NotImplemented


if TYPE_CHECKING:  # for type checkers a loss is a module
    Loss = nn.Module
else:
    Loss = _Loss
    Loss.__name__ = Loss.__qualname__ = "Loss"

"""What every embedlab loss shares: the ``stats`` it exposes and the degenerate-batch rule.

Degenerate batches
------------------
When a batch holds no term of a loss's formula (a single identity: no negative; all
labels distinct: no positive pair), the loss returns a zero that is still connected
to the embeddings (its gradient is 0, never NaN) and emits a ``UserWarning``.

Speed
-----
The losses compute their value without autograd, and their exact gradient with respect
to the distance matrix, which the pullback of :func:`embedlab.distances.distance_matrix`
turns into the gradient of the embeddings; :func:`with_gradient` connects the value to the
embeddings (and to the loss's own parameters) through that single backward node instead
of one node per elementwise op, which is what makes small batches fast. Each loss states its formula as code in
``forward`` and its derivative right beside it; the tests check both against an
autograd-differentiated brute-force reference and with ``gradcheck``.

Statistics are computed when first read (``loss.stats``), with a single host transfer:
a call whose statistics nobody reads does not pay for them.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["MetricLoss", "with_gradient"]


Gradient = Tensor | Callable[[], Tensor]


class _GivenGradient(torch.autograd.Function):
    """Returns ``value``; in the backward pass hands ``grad_i · upstream`` to ``input_i``."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, grads: list[Gradient], *inputs: Tensor) -> Tensor:
        ctx.grads = grads
        ctx.dtypes = [t.dtype for t in inputs]
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        # a gradient made by a function is a fresh tensor: it may be scaled in place
        scaled = [
            g().mul_(upstream) if callable(g) else (g * upstream).to(t)
            for g, t in zip(ctx.grads, ctx.dtypes, strict=True)
        ]
        return (None, None, *scaled)


def with_gradient(value: Tensor, *pairs: tuple[Tensor, Gradient]) -> Tensor:
    """``value`` (computed without autograd) connected to each ``input`` with ∂value/∂input.

    A gradient may be given as a function, called in the backward pass only (e.g. the
    pullback of :func:`embedlab.distances.distance_matrix` applied to ∂value/∂d).
    """
    out: Tensor = _GivenGradient.apply(value, [g for _, g in pairs], *(t for t, _ in pairs))
    return out


class MetricLoss(nn.Module):
    """Base of the embedlab losses. After each call, ``stats`` holds python floats to log."""

    def __init__(self) -> None:
        super().__init__()
        self._stats: dict[str, float] = {}
        self._pending: Callable[[], dict[str, float]] | None = None

    @property
    def stats(self) -> dict[str, float]:
        """Statistics of the last call (python floats), computed on first read."""
        if self._pending is not None:
            self.__dict__.update(_stats=self._pending(), _pending=None)
        return self._stats

    @stats.setter
    def stats(self, value: dict[str, float]) -> None:
        self.__dict__.update(_stats=value, _pending=None)

    def _defer_stats(self, compute: Callable[[], dict[str, float]]) -> None:
        """Compute ``stats`` with ``compute()`` when they are read (the tensors it uses
        must not be modified in place afterwards)."""
        self.__dict__["_pending"] = compute  # plain attribute: skips nn.Module.__setattr__

    def extra_repr(self) -> str:
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        shown = {n: v for n, v in values.items() if not isinstance(v, nn.Module | Tensor)}
        return ", ".join(f"{n}={v!r}" for n, v in shown.items())

    @staticmethod
    def _record(**values: Tensor) -> list[float]:
        """Host copies of some scalar tensors, fetched together."""
        with torch.no_grad():
            return torch.stack([v.to(torch.float32) for v in values.values()]).tolist()

    def _masked_stats(self, valid: Tensor, **values: Tensor) -> int:
        """Return the number of ``valid`` entries; defer ``stats[name]``, the mean of each
        value over those entries (values broadcast to ``valid``'s shape)."""
        count = int(valid.sum())

        def compute() -> dict[str, float]:
            with torch.no_grad():
                rows = [v.detach().expand(valid.shape).to(torch.float32) for v in values.values()]
                sums = (torch.stack(rows) * valid).reshape(len(rows), -1).sum(1).tolist()
            return {k: s / max(count, 1) for k, s in zip(values, sums, strict=True)}

        self._defer_stats(compute)
        return count

    def _degenerate(self, embeddings: Tensor) -> Tensor:
        """Zero loss kept in the graph, with a warning: the batch holds no term."""
        warnings.warn(
            f"{type(self).__name__}: the batch has no valid term (a single identity, or no "
            "positive pair); returning a zero loss.",
            stacklevel=2,
        )
        with torch.enable_grad():
            return embeddings.sum().float() * 0.0

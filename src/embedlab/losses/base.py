"""What every embedlab loss shares: the ``stats`` it exposes and the degenerate-batch rule.

Degenerate batches
------------------
When a batch holds no term of a loss's formula (a single identity: no negative; all
labels distinct: no positive pair), the loss returns a zero that is still connected
to the embeddings (its gradient is 0, never NaN) and emits a ``UserWarning``.

Speed
-----
The losses compute their value without autograd and hand their exact gradient with
respect to the distance matrix (and to their own parameters) to
:func:`with_gradient`: one backward node per loss instead of one per elementwise op,
which is what makes small batches fast. Each loss states its formula as code in
``forward`` and its derivative right beside it; the tests check both against an
autograd-differentiated brute-force reference and with ``gradcheck``.

Statistics are gathered with a single host transfer per call.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["MetricLoss", "with_gradient"]


class _GivenGradient(torch.autograd.Function):
    """Returns ``value``; in the backward pass hands ``grad_i · upstream`` to ``input_i``."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, n: int, *tensors: Tensor) -> Tensor:
        ctx.save_for_backward(*tensors[n:])
        ctx.n = n
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        grads = [g * upstream for g in ctx.saved_tensors]
        return (None, None, *grads, *([None] * ctx.n))


def with_gradient(value: Tensor, *pairs: tuple[Tensor, Tensor]) -> Tensor:
    """``value`` (computed without autograd) connected to each ``input`` with ∂value/∂input."""
    inputs = [t for t, _ in pairs]
    grads = [g.to(t.dtype) for t, g in pairs]
    out: Tensor = _GivenGradient.apply(value.to(inputs[0].dtype), len(inputs), *inputs, *grads)
    return out


class MetricLoss(nn.Module):
    """Base of the embedlab losses. After each call, ``stats`` holds python floats to log."""

    stats: dict[str, float]

    def __init__(self) -> None:
        super().__init__()
        self.stats = {}

    def extra_repr(self) -> str:
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        shown = {n: v for n, v in values.items() if not isinstance(v, nn.Module | Tensor)}
        return ", ".join(f"{n}={v!r}" for n, v in shown.items())

    def _record(self, **values: Tensor) -> list[float]:
        """Host copies of some scalar tensors, fetched together."""
        with torch.no_grad():
            return torch.stack([v.to(torch.float32) for v in values.values()]).tolist()

    def _masked_stats(self, valid: Tensor, **values: Tensor) -> float:
        """Set ``stats[name]`` to the mean of each value over the ``valid`` entries.

        Values broadcast to ``valid``'s shape. Returns the number of valid entries.
        """
        with torch.no_grad():
            rows = [valid] + [v.detach().expand(valid.shape) for v in values.values()]
            stacked = torch.stack([r.to(torch.float32) for r in rows])
            count, *sums = (stacked * valid).reshape(len(rows), -1).sum(1).tolist()
        self.stats = {k: s / max(count, 1.0) for k, s in zip(values, sums, strict=True)}
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

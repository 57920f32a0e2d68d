"""What every embedlab loss shares: lazy ``stats``, the degenerate-batch rule, reductions.

Every loss is its paper's formula written in autograd over
:func:`embedlab.distances.pairwise_distance`: no custom backward pass, no hand-written
gradient, no host synchronisation in ``forward`` (so double backward,
``torch.func`` and ``torch.compile(fullgraph=True)`` work).

Degenerate batches
------------------
When a batch holds no term of a loss's formula (a single identity: no negative; all labels
distinct: no positive pair), the loss is an exact zero through arithmetic (a sum divided
by ``max(count, 1)``), still connected to the embeddings, with gradient 0. The
``UserWarning`` saying so is raised when ``stats`` are read, not in ``forward``.

Statistics
----------
``loss.stats`` describes the last call (0-dim float32 tensors such as ``active_fraction``,
``pos_dist``, ``neg_dist``). It is computed when first read, from tensors the call kept, so
a call whose statistics nobody reads does not pay for them.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from embedlab.errors import ConfigError
from embedlab.miners.base import TripletMiner, TripletSelection

__all__ = ["MetricLoss", "check_sizes", "masked_logsumexp", "masked_mean", "mine"]

StatsFn = Callable[[], dict[str, Tensor]]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the entries where ``mask`` holds (broadcast); 0 if none."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1, add_one: bool = False) -> Tensor:
    """log Σ_{mask} exp(x) along ``dim`` (log(1 + Σ …) with ``add_one``).

    A slice with no entry gives 0 (or log 1 = 0 with ``add_one``) instead of −inf, so values
    and gradients stay finite; callers mask such slices out of the loss.
    """
    x = x.where(mask, -torch.inf)
    if add_one:  # the extra exp(0) term keeps every slice finite
        return torch.logsumexp(torch.cat([x, torch.zeros_like(x.narrow(dim, 0, 1))], dim), dim)
    has = mask.any(dim, keepdim=True)
    return torch.logsumexp(x.where(has, 0.0), dim).where(has.squeeze(dim), 0.0)


def check_sizes(loss: nn.Module, num_classes: int, embedding_dim: int) -> None:
    """The sizes a loss was given must agree with the run's (data classes, embedding size)."""
    for name, theirs in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
        mine = getattr(loss, name, None)
        if mine is not None and mine != theirs:
            raise ConfigError(
                f"{type(loss).__name__} {name}={mine}, but the run has {theirs}: leave {name} "
                "out and embedlab sets it from the data and the model"
            )


def mine(
    miner: TripletMiner, dist: Tensor, labels: Tensor, dim: int, ref_labels: Tensor | None
) -> TripletSelection:
    """``miner``'s selection on the detached distances (references only passed when given,
    so a miner written for the batch alone keeps working)."""
    if ref_labels is None:
        return miner(dist.detach(), labels, dim)
    return miner(dist.detach(), labels, dim, ref_labels=ref_labels)


class MetricLoss(nn.Module):
    """Base of the embedlab losses: ``stats`` of the last call, computed on first read."""

    def __init__(self) -> None:
        super().__init__()
        # plain attributes (not nn.Module state), written without nn.Module.__setattr__
        self.__dict__.update(_pending=None, _stats={}, _valid_terms=None)

    def _keep_stats(self, compute: StatsFn, valid_terms: Tensor | None = None) -> None:
        """Remember how to compute this call's ``stats`` and how many terms it had."""
        self.__dict__.update(_pending=compute, _valid_terms=valid_terms)

    def read_stats(self, check: bool = True) -> dict[str, Tensor]:
        """Statistics of the last call (0-dim float32 tensors, detached).

        With ``check``, warn if that call had no valid term (one host synchronisation);
        the training loop reads them with ``check=False``.
        """
        pending: StatsFn | None = self.__dict__["_pending"]
        valid: Tensor | None = self.__dict__["_valid_terms"]
        if pending is not None:
            with torch.no_grad():
                stats = {k: v.detach().to(torch.float32) for k, v in pending().items()}
            self.__dict__.update(_stats=stats, _pending=None)
            if check and valid is not None and not bool(valid > 0):
                warnings.warn(
                    f"{type(self).__name__}: the last batch had no valid term (a single "
                    "identity, or no positive pair); its loss was zero.",
                    stacklevel=2,
                )
        stats_: dict[str, Tensor] = self.__dict__["_stats"]
        return stats_

    @property
    def stats(self) -> dict[str, Tensor]:
        """Statistics of the last call; warns if it had no valid term (see ``read_stats``)."""
        return self.read_stats(check=True)

    def extra_repr(self) -> str:
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        shown = {n: v for n, v in values.items() if not isinstance(v, nn.Module | Tensor)}
        return ", ".join(f"{n}={v!r}" for n, v in shown.items())

"""Gathering a tensor from every DDP process with ``torch.distributed`` (no Lightning), for the
module's cross-rank loss, cross-batch memory and offline mining: one place for the collective."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_parts", "gather_batch", "is_distributed"]


def is_distributed() -> bool:
    """Whether a process group is running with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_parts(x: Tensor) -> list[Tensor]:
    """Every process's ``x`` (same shape on each), in rank order; ``[x]`` without a process
    group. The parts carry no gradient."""
    if not is_distributed():
        return [x]
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return parts


def gather_batch(x: Tensor, keep_grad: bool = False) -> Tensor:
    """The batches of every process concatenated along dimension 0, in rank order (this
    process's rows start at ``rank * len(x)``); ``keep_grad``: this process's block is ``x``
    itself, so its gradient flows, the other blocks are constants."""
    parts = all_gather_parts(x)
    if keep_grad and len(parts) > 1:
        parts[dist.get_rank()] = x
    return torch.cat(parts)

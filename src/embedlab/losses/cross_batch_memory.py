"""Cross-batch memory, XBM (Wang, Zhang, Huang, Scott, CVPR 2020)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from embedlab.losses.base import MetricLoss


class CrossBatchMemory(MetricLoss):
    """L = loss(batch; references = batch ∪ memory), memory = the last ``memory_size`` embeddings.

    A FIFO queue of past embeddings and labels (detached) serves as extra references of a
    pair-based loss, so each anchor meets far more negatives than one batch holds (the
    "slow drift" of embeddings makes recent ones usable, Wang et al.). The anchors are the
    current batch; its pairs with itself keep their gradient on both sides, its pairs with
    the memory on the anchor side only. (pytorch-metric-learning's ``CrossBatchMemory``
    enqueues the batch first and pairs the anchors with detached copies of themselves.)

    Args:
        loss: a loss taking ``ref_embeddings``/``ref_labels``: ``ContrastiveLoss``,
            ``TripletLoss`` (any miner), ``MultiSimilarityLoss``, ``CircleLoss``,
            ``SupConLoss``, ``RankedListLoss``.
        memory_size: embeddings kept (the paper: about the dataset size for SOP, 55k).
        embedding_dim: their dimension.
        start_step: training steps before the memory is used (it fills from the start);
            the paper waits until the embeddings drift slowly (e.g. 1k iterations).
        gather: under DDP, enqueue the global batch (all ranks' embeddings), so every rank
            holds the same memory; set ``False`` when the inputs are already gathered
            (``model.gather_embeddings: true``).

    The memory and its counters are buffers / extra state of the module: checkpoints save
    them and a resumed run continues with the same memory. ``stats``: the wrapped loss's,
    plus ``memory_fill`` (fraction of the memory in use).
    """

    def __init__(
        self,
        loss: nn.Module,
        memory_size: int,
        embedding_dim: int,
        start_step: int = 0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if memory_size < 1:
            raise ValueError(f"CrossBatchMemory: memory_size must be >= 1, got {memory_size}")
        self.loss = loss
        self.memory_size = memory_size
        self.embedding_dim = embedding_dim
        self.start_step = start_step
        self.gather = gather
        self.register_buffer("memory", torch.zeros(memory_size, embedding_dim))
        self.register_buffer("memory_labels", torch.zeros(memory_size, dtype=torch.long))
        self.filled, self.position, self.steps = 0, 0, 0  # Python ints: no host sync

    memory: Tensor
    memory_labels: Tensor

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if self.steps >= self.start_step and self.filled > 0:
            n = self.filled
            value: Tensor = self.loss(embeddings, labels, self.memory[:n], self.memory_labels[:n])
        else:
            value = self.loss(embeddings, labels)
        if self.training:
            self.enqueue(*self._global(embeddings.detach(), labels))
            self.steps += 1
        fill = self.filled / self.memory_size
        device = self.memory.device
        self._keep_stats(
            lambda: {**self._inner_stats(), "memory_fill": torch.tensor(fill, device=device)}
        )
        return value

    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Append to the queue, overwriting the oldest entries once it is full."""
        embeddings, labels = embeddings[-self.memory_size :], labels[-self.memory_size :]
        count = len(labels)
        slots = (self.position + torch.arange(count, device=self.memory.device)) % self.memory_size
        self.memory.index_copy_(0, slots, embeddings.to(self.memory))
        self.memory_labels.index_copy_(0, slots, labels.to(self.memory_labels))
        self.position = (self.position + count) % self.memory_size
        self.filled = min(self.memory_size, self.filled + count)

    def _global(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if not (self.gather and dist.is_available() and dist.is_initialized()):
            return embeddings, labels
        world = dist.get_world_size()
        parts = [torch.empty_like(embeddings) for _ in range(world)]
        label_parts = [torch.empty_like(labels) for _ in range(world)]
        dist.all_gather(parts, embeddings.contiguous())
        dist.all_gather(label_parts, labels.contiguous())
        return torch.cat(parts), torch.cat(label_parts)

    def _inner_stats(self) -> dict[str, Tensor]:
        read = getattr(self.loss, "read_stats", None)
        return dict(read(check=False)) if read is not None else {}

    def get_extra_state(self) -> dict[str, Any]:
        return {"filled": self.filled, "position": self.position, "steps": self.steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.filled, self.position, self.steps = state["filled"], state["position"], state["steps"]

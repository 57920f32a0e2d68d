"""Cross-batch memory, XBM (Wang, Zhang, Huang, Scott, CVPR 2020)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from embedlab.distances import batch_as_references
from embedlab.distributed import gather_batch
from embedlab.losses.base import MetricLoss

Mode = Literal["paper", "joint"]


class CrossBatchMemory(MetricLoss):
    """L = loss(batch; batch) + w·loss(batch; memory), the memory holding the last ``memory_size`` embeddings.

    A FIFO queue of past embeddings and labels (detached) serves as extra references of a
    pair-based loss, so each anchor meets far more negatives than one batch holds (the
    "slow drift" of embeddings makes recent ones usable, Wang et al.).

    ``mode="paper"`` (default) is the composition of the authors' code
    (``ret_benchmark/engine/trainer.py``): from training step ``start_step`` on (counted
    from 0), each step first enqueues its batch, then adds w = ``memory_weight`` times the
    loss of the batch's anchors against the whole memory, the batch's own fresh copies
    included, to the loss of the batch against itself. The first term keeps the gradient of
    both sides of a pair, the memory term the anchors' side only; the pair of an anchor with
    its own copy is masked. Before ``start_step`` the memory stays empty and the loss is the
    first term alone. Outside training (validation) nothing is enqueued and the memory term
    sees the stored memory plus the batch.

    ``mode="joint"`` (embedlab's earlier form) computes one loss over batch ∪ memory
    references, L = loss(batch; batch ∪ memory), the memory filling from the first step and
    used from ``start_step`` on; its batch pairs keep their gradient on both sides.
    (pytorch-metric-learning's ``CrossBatchMemory`` enqueues the batch first and pairs the
    anchors with detached copies of themselves.)

    With ``CosineContrastiveLoss`` (sum over pairs divided by the number of anchors), the
    paper mode is the authors' XBM contrastive loss:
    L = 1/N·Σ_i Σ_{j∈batch, j≠i} ℓ_ij + w/N·Σ_i Σ_{k∈memory, k≠i} ℓ_ik.

    Args:
        loss: a loss taking ``ref_embeddings``/``ref_labels``: ``CosineContrastiveLoss``
            (the paper's), ``ContrastiveLoss``, ``TripletLoss`` (any miner),
            ``MultiSimilarityLoss``, ``CircleLoss``, ``SupConLoss``, ``RankedListLoss``.
        memory_size: embeddings kept (the authors' SOP setting: 55k, about the dataset).
            In paper mode it must hold at least one (global) batch.
        embedding_dim: their dimension.
        start_step: the training step from which the memory is used; the paper waits
            until the embeddings drift slowly (the authors' code: 1k iterations for SOP).
            The paper mode also starts filling the memory then.
        gather: under DDP, enqueue the global batch (all ranks' embeddings), so every rank
            holds the same memory; set ``False`` when the inputs are already gathered
            (``model.gather_embeddings: true``).
        mode: ``"paper"`` or ``"joint"``, above.
        memory_weight: w, the weight of the memory term in paper mode (1.0).

    The authors' queue, once full, overwrites its last slots with a batch that does not fit
    before the end; this one is a ring (the memory is always the newest ``memory_size``
    embeddings). The memory and its counters are buffers / extra state of the module:
    checkpoints save them and a resumed run continues with the same memory. The counters
    are Python integers (no host synchronisation). ``stats``: the wrapped loss's (of its
    last call), ``memory_fill`` (fraction of the memory in use), and in paper mode
    ``batch_loss`` and ``memory_loss`` (the two terms, 0 before ``start_step``).
    """

    def __init__(
        self,
        loss: nn.Module,
        memory_size: int,
        embedding_dim: int,
        start_step: int = 0,
        gather: bool = True,
        mode: Mode = "paper",
        memory_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if memory_size < 1:
            raise ValueError(f"CrossBatchMemory: memory_size must be >= 1, got {memory_size}")
        if mode not in ("paper", "joint"):
            raise ValueError(f"CrossBatchMemory: mode must be 'paper' or 'joint', got {mode!r}")
        self.loss = loss
        self.memory_size = memory_size
        self.embedding_dim = embedding_dim
        self.start_step = start_step
        self.gather = gather
        self.mode = mode
        self.memory_weight = memory_weight
        self.register_buffer("memory", torch.zeros(memory_size, embedding_dim))
        self.register_buffer("memory_labels", torch.zeros(memory_size, dtype=torch.long))
        self.filled, self.position, self.steps = 0, 0, 0  # Python ints: no host sync

    memory: Tensor
    memory_labels: Tensor

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        terms: dict[str, Tensor] = {}
        if self.mode == "joint":
            value = self._joint(embeddings, labels)
        else:
            value, terms = self._paper(embeddings, labels)
        if self.training:
            self.steps += 1
        fill = self.filled / self.memory_size
        device = self.memory.device
        self._keep_stats(
            lambda: {
                **self._inner_stats(),
                **terms,
                "memory_fill": torch.tensor(fill, device=device),
            }
        )
        return value

    def _joint(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """loss(batch; batch ∪ memory), then enqueue (the memory fills from step 0)."""
        if self.steps >= self.start_step and self.filled > 0:
            n = self.filled
            value: Tensor = self.loss(embeddings, labels, self.memory[:n], self.memory_labels[:n])
        else:
            value = self.loss(embeddings, labels)
        if self.training:
            self.enqueue(*self._global(embeddings.detach(), labels)[:2])
        return value

    def _paper(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """loss(batch; batch) + w·loss(batch; memory), enqueueing first, from start_step on."""
        batch_term: Tensor = self.loss(embeddings, labels)
        if self.steps < self.start_step:
            return batch_term, {
                "batch_loss": batch_term.detach(),
                "memory_loss": torch.zeros_like(batch_term.detach()),
            }
        if self.training:
            everyone, everyone_labels, offset = self._global(embeddings.detach(), labels)
            if len(everyone_labels) > self.memory_size:
                raise ValueError(
                    f"CrossBatchMemory: memory_size={self.memory_size} holds less than one "
                    f"batch ({len(everyone_labels)} embeddings)"
                )
            self.enqueue(everyone, everyone_labels)
            # the batch's own entries stand first in the loss's columns (detached)
            slots = self._slots_except(self.filled - len(everyone_labels) + offset, len(labels))
        else:
            slots = self._slots_except(self.filled, 0)
        with batch_as_references():
            memory_term: Tensor = self.loss(
                embeddings, labels, self.memory[slots], self.memory_labels[slots]
            )
        # L = loss(batch; batch) + w·loss(batch; memory)
        value = batch_term + self.memory_weight * memory_term
        return value, {"batch_loss": batch_term.detach(), "memory_loss": memory_term.detach()}

    def _slots_except(self, first: int, count: int) -> Tensor:
        """Slots of the stored entries, oldest first, without entries first … first+count−1."""
        k = torch.arange(self.filled - count, device=self.memory.device)
        k = k + count * (k >= first)
        return (self.position - self.filled + k) % self.memory_size

    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Append to the queue, overwriting the oldest entries once it is full."""
        embeddings, labels = embeddings[-self.memory_size :], labels[-self.memory_size :]
        count = len(labels)
        slots = (self.position + torch.arange(count, device=self.memory.device)) % self.memory_size
        self.memory.index_copy_(0, slots, embeddings.to(self.memory))
        self.memory_labels.index_copy_(0, slots, labels.to(self.memory_labels))
        self.position = (self.position + count) % self.memory_size
        self.filled = min(self.memory_size, self.filled + count)

    def _global(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]:
        """The batch of all ranks (or this one's), and where this rank's rows start in it."""
        if not (self.gather and dist.is_available() and dist.is_initialized()):
            return embeddings, labels, 0
        start = dist.get_rank() * len(labels)
        return gather_batch(embeddings), gather_batch(labels), start

    def _inner_stats(self) -> dict[str, Tensor]:
        read = getattr(self.loss, "read_stats", None)
        return dict(read(check=False)) if read is not None else {}

    def get_extra_state(self) -> dict[str, Any]:
        return {"filled": self.filled, "position": self.position, "steps": self.steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.filled, self.position, self.steps = state["filled"], state["position"], state["steps"]

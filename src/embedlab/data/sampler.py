"""P×K batch sampling: every batch holds P identities × K images of each.

The sampler is deterministic from ``(seed, epoch)``. With ``num_replicas = W`` ranks, every
optimisation step draws ``W·P`` distinct identities and rank ``r`` keeps the r-th block of P,
so no identity appears on two ranks in the same step and every rank yields the same number of
batches. When the training set has fewer than ``W·P`` identities (10 digits on 2 ranks with
P = 10), each rank draws its own P distinct identities and an identity may be on several ranks
in one step (a warning says so). An epoch has ``len(dataset) // (W·P·K)`` batches unless
``batches_per_epoch`` is set.

With ``with_seeds=True`` every item of a batch is an ``(index, seed)`` pair, the seed being a
function of ``(seed, epoch, step, position in the global batch)`` only; :class:`SeededDataset`
applies it around the dataset's random augmentation. Augmentations then do not depend on the
global RNG, on the number of workers, on the number of ranks, or on where a run was resumed.

Identities are visited in shuffled rounds (each identity once per round), and the images of an
identity in shuffled rounds too, so every image is seen about equally often. An identity with
fewer than K images contributes all of them plus random repeats (sampling with replacement).

A callback can replace batches with batches of its own: :meth:`PKBatchSampler.serve` takes a
plan of global batches (one list of ``P·K`` indices per rank each) and serves them from the
next batch not yet drawn on; the P×K draws go on underneath (their random stream is not
disturbed), so a step outside the plan gets the batch it would have had anyway. The plan is
keyed by absolute step (``epoch · len + step``) and saved in :meth:`state_dict`, so resuming
mid-plan serves the same batches. ``embedlab.callbacks.OfflineTripletMining`` uses it.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from embedlab.errors import ConfigError


class PKBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        p: int,
        k: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        with_seeds: bool = False,
        groups: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        labels = np.asarray(labels)
        if p < 1 or k < 1:
            raise ConfigError(f"P×K sampling needs p >= 1 and k >= 1, got p={p}, k={k}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} outside [0, num_replicas={num_replicas})")
        self.identities = np.unique(labels)
        if p > len(self.identities):
            raise ConfigError(
                f"data.p={p} needs {p} identities per batch, "
                f"but the training set has only {len(self.identities)}"
            )
        # W·P distinct identities per step when there are enough, else P per rank
        self.shared = p * num_replicas > len(self.identities)
        if self.shared and rank == 0:
            warnings.warn(
                f"data.p={p} × {num_replicas} ranks exceeds the {len(self.identities)} training "
                "identities: each rank draws its own P, so an identity may be on several ranks "
                "in one step",
                stacklevel=2,
            )
        self.members = {int(i): np.flatnonzero(labels == i) for i in self.identities}
        # ``groups`` (one per item, e.g. the dataset of a union): each batch draws about
        # P / (number of groups) identities from each group
        self.by_group: dict[int, np.ndarray] | None = None
        if groups is not None:
            of_identity = {
                int(labels[m[0]]): int(np.asarray(groups)[m[0]]) for m in self.members.values()
            }
            self.by_group = {
                g: np.array([i for i, h in of_identity.items() if h == g])
                for g in sorted(set(of_identity.values()))
            }
            per_step = p if p * num_replicas > len(self.identities) else p * num_replicas
            share = -(-per_step // len(self.by_group))
            smallest = min(len(v) for v in self.by_group.values())
            if share > smallest:
                raise ConfigError(
                    f"data.balance=datasets: a batch takes {share} identities of each dataset, "
                    f"but one has only {smallest} training identities (lower data.p)"
                )
        singles = sum(len(m) == 1 for m in self.members.values())
        if k > 1 and singles == len(self.members):
            raise ConfigError(
                f"data.k={k} needs identities with several images, but every one of the "
                f"{singles} training identities has a single image (set data.k=1 and a loss "
                "that needs no positive pair, or use another dataset)"
            )
        if k > 1 and singles:
            warnings.warn(
                f"{singles} of {len(self.members)} training identities have a single image: "
                "their positives in a P×K batch are repeats of that image",
                stacklevel=2,
            )
        self.p, self.k, self.seed = p, k, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.with_seeds = with_seeds
        global_batch = p * k * num_replicas
        self.num_batches = (
            batches_per_epoch
            if batches_per_epoch is not None
            else max(1, len(labels) // global_batch)
        )
        self.epoch = 0
        self.start_batch = 0  # batches to skip when resuming mid-epoch
        self.plan: dict[int, list[list[int]]] = {}  # absolute step → per-rank batches
        self.next_step = 0  # absolute step of the next batch __iter__ yields

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> PKBatchSampler:
        """This sampler: Lightning calls ``set_epoch`` at each epoch on a loader's ``sampler``
        and on its ``batch_sampler.sampler``, not on the batch sampler itself."""
        return self

    def __len__(self) -> int:
        return self.num_batches

    def global_batches(self) -> Iterator[list[list[int]]]:
        """Yield, for each step, the list of W per-rank batches (all ranks compute the same)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order: deque[int] = deque()
        pools: dict[int, deque[int]] = {i: deque() for i in self.members}
        queues: dict[int, deque[int]] = {g: deque() for g in self.by_group or {}}  # per group
        groups = self.num_replicas if self.shared else 1
        needed = self.p * self.num_replicas // groups
        for _ in range(self.num_batches):
            chosen: list[int] = []
            for _ in range(groups):
                if self.by_group is None:
                    chosen += _distinct(needed, order, self.identities, rng)
                    continue
                shares = np.full(len(self.by_group), needed // len(self.by_group))
                shares[rng.permutation(len(shares))[: needed % len(shares)]] += 1
                for (g, ids), share in zip(self.by_group.items(), shares, strict=True):
                    chosen += _distinct(int(share), queues[g], ids, rng)
            flat = [idx for pid in chosen for idx in self._draw(pid, pools[pid], rng)]
            size = self.p * self.k
            yield [flat[r * size : (r + 1) * size] for r in range(self.num_replicas)]

    def serve(self, batches: Sequence[Sequence[Sequence[int]]]) -> int:
        """Serve ``batches`` (global batches: ``num_replicas`` lists of ``P·K`` dataset
        indices each, rank r taking the r-th) for the next ``len(batches)`` steps, from the
        first batch not yet drawn; a previous plan is replaced from there on. Every rank must
        serve the same plan. Returns the absolute step of the first planned batch.

        Batches the data loader already prefetched (``num_workers · prefetch_factor``, plus
        one by Lightning) are served as they were drawn.
        """
        size = self.p * self.k
        for i, batch in enumerate(batches):
            if len(batch) != self.num_replicas or any(len(b) != size for b in batch):
                raise ValueError(
                    f"serve(): batch {i} must hold {self.num_replicas} per-rank lists of "
                    f"p·k = {size} indices, got sizes {[len(b) for b in batch]}"
                )
        start = self.next_step
        first_of_epoch = self.epoch * self.num_batches
        kept = {s: b for s, b in self.plan.items() if first_of_epoch <= s < start}
        new = {start + i: [[int(j) for j in b] for b in batch] for i, batch in enumerate(batches)}
        self.plan = {**kept, **new}
        return start

    def clear_plan(self) -> None:
        """Serve P×K batches again from the next batch not yet drawn."""
        self.plan = {s: b for s, b in self.plan.items() if s < self.next_step}

    def _draw(self, pid: int, pool: deque[int], rng: np.random.Generator) -> list[int]:
        members = self.members[pid]
        if len(members) < self.k:
            extra = rng.choice(members, self.k - len(members), replace=True)
            return [int(i) for i in np.concatenate([rng.permutation(members), extra])]
        taken = [pool.popleft() for _ in range(min(self.k, len(pool)))]
        if len(taken) < self.k:
            fresh = [int(i) for i in rng.permutation(members)]
            fill = [i for i in fresh if i not in taken][: self.k - len(taken)]
            taken += fill
            pool.extend(i for i in fresh if i not in fill)
        return taken

    def __iter__(self) -> Iterator[list[Any]]:
        start, self.start_batch = self.start_batch, 0
        size = self.p * self.k
        first = self.epoch * self.num_batches
        self.next_step = first + start
        for step, batches in enumerate(self.global_batches()):
            if step < start:
                continue
            planned = self.plan.get(first + step)
            batch = planned[self.rank] if planned is not None else batches[self.rank]
            self.next_step = first + step + 1
            if not self.with_seeds:
                yield batch
                continue
            rng = np.random.default_rng([self.seed, self.epoch, step, 1])
            seeds = rng.integers(0, 2**62, size=size * self.num_replicas)[self.rank * size :]
            yield [(i, int(s)) for i, s in zip(batch, seeds, strict=False)]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "seed": self.seed}
        if self.plan:
            state["plan"] = {s: [list(b) for b in batch] for s, batch in self.plan.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])
        plan = state.get("plan") or {}
        self.plan = {int(s): [[int(i) for i in b] for b in batch] for s, batch in plan.items()}
        self.next_step = self.epoch * self.num_batches


class SeededDataset(Dataset[Any]):
    """Fetches ``dataset[index]`` under ``torch.manual_seed(seed)`` for ``(index, seed)`` keys.

    The global RNG is left untouched (``fork_rng``), so data loading never changes the
    random stream of the model (dropout) either.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.dataset[index]
        return self.dataset[key]


def _distinct(
    count: int, order: deque[int], identities: np.ndarray, rng: np.random.Generator
) -> list[int]:
    """``count`` distinct identities from the front of ``order``, refilled with seeded
    permutations of ``identities``; ones skipped as repeats stay first in line."""
    taken: list[int] = []
    skipped: list[int] = []
    while len(taken) < count:
        if not order:
            order.extend(int(i) for i in rng.permutation(identities))
        pid = order.popleft()
        (skipped if pid in taken else taken).append(pid)
    order.extendleft(reversed(skipped))
    return taken

"""FaceNet's offline triplet mining (Schroff, Kalenichenko, Philbin 2015, section 3.2) as a
Lightning callback.

Every ``every_n_steps`` optimisation steps (and before the first), the current network embeds
a seeded subset of the training set, the triplets are mined over that subset with embedlab's
miners (``BatchHardMiner`` for ``"hardest"``, ``SemiHardMiner`` for ``"semi_hard"``), and the
P×K sampler serves batches built from the mined triplets until the next refresh. With
``train_on="mined"`` (the default, FaceNet's setting) the loss is computed on exactly those
triplets (:class:`ServedTripletMiner`); with ``train_on="batch"`` it mines each batch again.

Add it to ``trainer.callbacks`` by ``class_path``::

    trainer:
      callbacks:
        - class_path: embedlab.callbacks.OfflineTripletMining
          init_args: {every_n_steps: 20, subset_size: 400, strategy: semi_hard}
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import default_collate

from embedlab.data.sampler import PKBatchSampler
from embedlab.distances import pairwise_distance
from embedlab.distributed import all_gather_parts
from embedlab.errors import ConfigError
from embedlab.miners import BatchHardMiner, SemiHardMiner, TripletMiner, TripletSelection

Strategy = Literal["hardest", "semi_hard"]
TrainOn = Literal["mined", "batch"]

__all__ = [
    "OfflineTripletMining",
    "ServedTripletMiner",
    "batch_plan",
    "mine_triplets",
    "shard",
    "unshard",
]


def mine_triplets(
    embeddings: Tensor, labels: Tensor, strategy: Strategy, margin: float, squared: bool = False
) -> Tensor:
    """The triplets ``[T, 3]`` (anchor, positive, negative; positions in ``embeddings``) of a set.

    D is the euclidean distance d = ‖x_i − x_j‖, or d² with ``squared`` (FaceNet's
    ‖f(a) − f(p)‖²). ``"hardest"``: per anchor, its farthest positive and its closest negative
    (``BatchHardMiner``), one triplet per anchor that has both. ``"semi_hard"``: per
    anchor–positive pair, the closest negative farther than the positive (``SemiHardMiner``),
    kept when it lies inside the margin, D(a, p) < D(a, n) < D(a, p) + margin (FaceNet's
    semi-hard negatives; a pair without one gives no triplet). Float64 embeddings are mined in
    float64, others in float32.
    """
    if strategy not in ("hardest", "semi_hard"):
        raise ValueError(f"strategy must be 'hardest' or 'semi_hard', got {strategy!r}")
    with torch.no_grad():
        x = embeddings if embeddings.dtype == torch.float64 else embeddings.float()
        dist = pairwise_distance(x, distance="squared_euclidean" if squared else "euclidean")
        if strategy == "hardest":
            selection = BatchHardMiner()(dist, labels)
        else:
            selection = SemiHardMiner(fallback="none")(dist, labels)
        assert selection.negative is not None
        d_ap, d_an = selection.distances(dist)
        valid = selection.valid
        if strategy == "semi_hard":
            valid = valid & (d_an < d_ap + margin)
        anchor, slot = valid.nonzero(as_tuple=True)
        return torch.stack(
            [anchor, selection.positive[anchor, slot], selection.negative[anchor, slot]], 1
        )


class ServedTripletMiner(TripletMiner):
    """The triplets a served batch was built from, or ``within``'s own selection.

    While ``block`` is set (by :class:`OfflineTripletMining`, for the batches of its plan),
    the batch is read as blocks of ``block`` items (one per rank when the loss sees the
    embeddings of every rank, else one), each laid out by :func:`batch_plan`: triplet i of a
    block is (3i, 3i + 1, 3i + 2), i < ⌊block / 3⌋. One slot per anchor, exactly those
    triplets; the ``block mod 3`` filler items and any references (``CrossBatchMemory``)
    are not in any triplet. While ``block`` is ``None`` (a P×K batch), ``within`` mines.
    """

    def __init__(self, within: TripletMiner, block: int | None = None) -> None:
        self.within = within
        self.block = block

    @torch.no_grad()
    def __call__(
        self,
        dist: Tensor,
        labels: Tensor,
        embedding_dim: int | None = None,
        ref_labels: Tensor | None = None,
    ) -> TripletSelection:
        if self.block is None:
            if ref_labels is None:
                return self.within(dist, labels, embedding_dim)
            return self.within(dist, labels, embedding_dim, ref_labels=ref_labels)
        rows = torch.arange(len(labels), device=dist.device)
        place = rows % self.block
        anchor = (place % 3 == 0) & (place < 3 * (self.block // 3)) & (rows + 2 < len(labels))
        positive = torch.where(anchor, rows + 1, rows)[:, None]
        negative = torch.where(anchor, rows + 2, rows)[:, None]
        return TripletSelection(positive, negative, anchor[:, None])


def shard(n: int, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s positions of a set of ``n``: ``rank, rank + world, …``, padded with the
    last one to ``ceil(n / world)`` so that every rank gathers the same shape."""
    size = -(-n // world)
    positions = np.arange(rank, n, world)
    pad = np.full(size - len(positions), positions[-1] if len(positions) else n - 1)
    return np.concatenate([positions, pad]).astype(np.int64)


def unshard(gathered: Tensor, n: int) -> Tensor:
    """The set of ``n`` back in its order from the all-gathered shards ``[world, m, ...]``."""
    return gathered.transpose(0, 1).reshape(-1, *gathered.shape[2:])[:n]


def batch_plan(
    triplets: np.ndarray, steps: int, world: int, batch_size: int, rng: np.random.Generator
) -> list[list[list[int]]]:
    """``steps`` global batches of ``world`` per-rank batches built from triplets ``[T, 3]``
    (dataset indices).

    Each per-rank batch holds the anchor, positive and negative of ``batch_size // 3``
    triplets, in that order; the ``batch_size % 3`` slots left repeat the anchor and positive
    of its first triplet. Triplets are taken in a seeded shuffled order, reshuffled when used up.
    """
    per_batch = batch_size // 3
    if per_batch < 1:
        raise ConfigError(f"OfflineTripletMining needs batches of at least 3, got {batch_size}")
    needed = steps * world * per_batch
    order: list[int] = []
    while len(order) < needed:
        order += [int(i) for i in rng.permutation(len(triplets))]
    plan: list[list[list[int]]] = []
    for step in range(steps):
        ranks: list[list[int]] = []
        for rank in range(world):
            first = (step * world + rank) * per_batch
            chosen = triplets[order[first : first + per_batch]]
            batch = [int(i) for i in chosen.reshape(-1)]
            batch += [int(i) for i in chosen[0, :2]][: batch_size % 3]
            ranks.append(batch)
        plan.append(ranks)
    return plan


class OfflineTripletMining(pl.Callback):
    """FaceNet's offline triplet mining: refresh the training batches from triplets mined on
    a subset every ``every_n_steps`` steps.

    At step 0 and every ``every_n_steps`` optimisation steps, a seeded subset of about
    ``subset_size`` training images is drawn by identity (shuffled identities, up to
    ``images_per_identity`` images of each and at most half the subset, so that it has
    positives and negatives; FaceNet draws about 40 faces per identity), embedded by the
    current network in eval mode without gradients (the ``features`` the metric losses see;
    the training images through the evaluation transforms), and the triplets are mined over
    it (:func:`mine_triplets`). The training sampler then serves batches of the P×K size, each
    the anchors, positives and negatives of ``P·K // 3`` mined triplets (:func:`batch_plan`),
    from the next batch it has not yet drawn: the batches the loader has prefetched
    (``num_workers · prefetch_factor``, plus one by Lightning) are served as drawn, so a plan
    covers ``2 · every_n_steps`` steps and the next refresh cuts it short.

    What the loss sees (``train_on``):

    * ``"mined"`` (default; FaceNet's offline setting): the loss of a served batch is computed
      on exactly its triplets, L = (1/T) Σ_{(a,p,n)} [D(a, p) − D(a, n) + α]₊ over its T
      triplets for ``TripletLoss`` (FaceNet's sum divided by T, fixed by the batch size). For
      the fit, every loss of the module with a triplet miner (``TripletLoss``,
      ``ImprovedTripletLoss``, ``MarginLoss``) gets a :class:`ServedTripletMiner` around its
      own; a batch outside any plan (the last refresh found no triplet) is a P×K batch that
      the loss's own miner mines. A module without such a loss is a :class:`ConfigError`.
    * ``"batch"``: the loss mines again within each batch, with its own miner.

    Under DDP each rank embeds every W-th image of the subset, the shards are all-gathered,
    every rank mines the same gathered set and derives the same plan from the seed; rank r
    trains on the r-th batch of each step (with ``"mined"``, on that batch's triplets). A
    resumed run serves the rest of the plan saved with the sampler's state.

    Args:
        every_n_steps: optimisation steps between two refreshes.
        subset_size: images embedded at each refresh.
        strategy: ``"hardest"`` (per anchor the farthest positive and the closest negative)
            or ``"semi_hard"`` (per anchor–positive pair the closest negative farther than the
            positive, inside the margin).
        margin: α of the semi-hard rule D(a, p) < D(a, n) < D(a, p) + α, in the distance D
            that ``squared`` chooses (FaceNet: 0.2 on squared distances).
        squared: mine on squared euclidean distances D = d² (FaceNet) or on D = d. ``None``
            (default): follow the module's triplet losses, d² when they have ``squared=True``
            (``TripletLoss(squared=True)``, ``ImprovedTripletLoss``), d otherwise or without
            one; losses that disagree are a :class:`ConfigError` (then set it).
        train_on: ``"mined"`` (the loss on the served triplets) or ``"batch"`` (the loss mines
            each batch again), see above.
        seed: seeds the subsets and the plans (refresh i uses ``(seed, i)``).
        images_per_identity: most images of one identity in the subset.
        chunk_size: images embedded per forward pass.
    """

    def __init__(
        self,
        every_n_steps: int,
        subset_size: int,
        strategy: Strategy = "semi_hard",
        margin: float = 0.2,
        squared: bool | None = None,
        train_on: TrainOn = "mined",
        seed: int = 0,
        images_per_identity: int = 40,
        chunk_size: int = 256,
    ) -> None:
        if every_n_steps < 1:
            raise ConfigError(
                f"OfflineTripletMining: every_n_steps must be >= 1, got {every_n_steps}"
            )
        if subset_size < 4:
            raise ConfigError(f"OfflineTripletMining: subset_size must be >= 4, got {subset_size}")
        if images_per_identity < 2:
            raise ConfigError(
                f"OfflineTripletMining: images_per_identity must be >= 2, got {images_per_identity}"
            )
        if strategy not in ("hardest", "semi_hard"):
            raise ConfigError(
                f"OfflineTripletMining: strategy must be 'hardest' or 'semi_hard', got {strategy!r}"
            )
        if train_on not in ("mined", "batch"):
            raise ConfigError(
                f"OfflineTripletMining: train_on must be 'mined' or 'batch', got {train_on!r}"
            )
        self.every_n_steps = every_n_steps
        self.subset_size = subset_size
        self.strategy: Strategy = strategy
        self.margin = margin
        self.squared = squared
        self.train_on: TrainOn = train_on
        self.seed = seed
        self.images_per_identity = images_per_identity
        self.chunk_size = chunk_size
        self.last_refresh = -1
        #: What the last refresh did: ``subset`` (dataset indices), ``embeddings``,
        #: ``triplets`` (dataset indices, [T, 3]), ``start`` (first planned absolute step),
        #: ``squared`` (the distance it mined on).
        self.last: dict[str, Any] = {}
        self._eval_view: Any = None  # the training set with eval transforms, made on first use
        #: with ``train_on="mined"``, during a fit: the served miners put around the losses'
        self.served: list[tuple[Any, ServedTripletMiner]] = []

    # -- the subset ----------------------------------------------------------------------------
    def subset(self, labels: np.ndarray, refresh: int) -> np.ndarray:
        """The dataset indices embedded at refresh ``refresh`` (seeded by identity)."""
        rng = np.random.default_rng([self.seed, refresh])
        chosen: list[np.ndarray] = []
        total = 0
        per_identity = min(self.images_per_identity, max(2, self.subset_size // 2))
        for pid in rng.permutation(np.unique(labels)):
            members = np.flatnonzero(labels == pid)
            if len(members) < 2:
                continue
            take = min(per_identity, len(members), self.subset_size - total)
            if take < 2:
                break
            chosen.append(rng.choice(members, take, replace=False))
            total += take
        if len(chosen) < 2:
            raise ConfigError(
                "OfflineTripletMining: the subset needs two identities with two images each "
                f"(subset_size={self.subset_size})"
            )
        return np.concatenate(chosen).astype(np.int64)

    # -- the module's triplet losses --------------------------------------------------------
    @staticmethod
    def triplet_losses(pl_module: pl.LightningModule) -> list[Any]:
        """The module's losses that take a triplet miner (their ``miner`` attribute)."""
        found = []
        for module in pl_module.modules():
            miner = getattr(module, "miner", None)
            if isinstance(miner, TripletMiner):  # a ServedTripletMiner too
                found.append(module)
        return found

    def mining_squared(self, pl_module: pl.LightningModule) -> bool:
        """Whether to mine on squared distances: ``squared`` if given, else the module's
        triplet losses' ``squared`` (False without one)."""
        if self.squared is not None:
            return self.squared
        kinds = {bool(getattr(loss, "squared", False)) for loss in self.triplet_losses(pl_module)}
        if len(kinds) > 1:
            raise ConfigError(
                "OfflineTripletMining.squared: the module's triplet losses disagree on squared "
                "distances; set squared: true or false"
            )
        return kinds.pop() if kinds else False

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.train_on != "mined" or self.served:
            return
        losses = self.triplet_losses(pl_module)
        if not losses:
            raise ConfigError(
                "OfflineTripletMining.train_on: 'mined' needs a loss with a triplet miner "
                "(e.g. TripletLoss) in model.loss or model.aux_losses; use train_on: batch"
            )
        for loss in losses:
            if not isinstance(loss.miner, ServedTripletMiner):
                served = ServedTripletMiner(loss.miner)
                loss.miner = served
                self.served.append((loss, served))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give the losses their own miners back."""
        if stage != "fit":
            return
        for loss, served in self.served:
            if loss.miner is served:
                loss.miner = served.within
        self.served = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            self.refresh(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """With ``train_on="mined"``: tell the served miners whether this batch is planned
        (looked up by its absolute step in the sampler's plan, no device access)."""
        if not self.served:
            return
        sampler = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
        block = None
        if isinstance(sampler, PKBatchSampler) and self._planned(sampler, batch_idx):
            block = sampler.p * sampler.k
        for _, served in self.served:
            served.block = block

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self.last_refresh:
            self.refresh(trainer, pl_module)
            pl_module.log("mining/triplets", float(len(self.last["triplets"])))

    @staticmethod
    def _planned(sampler: PKBatchSampler, batch_idx: int) -> bool:
        """Whether the sampler served batch ``batch_idx`` of its epoch from a plan (a plan
        is keyed by absolute step and keeps the steps already drawn)."""
        return sampler.epoch * len(sampler) + batch_idx in sampler.plan

    # -- one refresh -----------------------------------------------------------------------------
    def _sampler(self, trainer: pl.Trainer) -> tuple[PKBatchSampler, Any]:
        datamodule = getattr(trainer, "datamodule", None)
        sampler = getattr(datamodule, "train_sampler", None)
        dataset = getattr(datamodule, "train_set", None)
        if not isinstance(sampler, PKBatchSampler) or dataset is None:
            raise ConfigError(
                "OfflineTripletMining needs the P×K training sampler of "
                "embedlab.data.RetrievalDataModule (trainer.datamodule.train_sampler)"
            )
        view = getattr(datamodule, "torch_dataset", None)
        if self._eval_view is None and callable(view):
            # the training items as evaluation sees them (eval transforms, no augmentation),
            # in the training set's order
            frame = datamodule.frame  # type: ignore[union-attr]
            self._eval_view = view(frame[frame["split"] == "train"], train=False)
        if self._eval_view is not None and len(self._eval_view) == len(dataset):
            return sampler, self._eval_view
        return sampler, dataset

    @torch.no_grad()
    def embed(self, pl_module: pl.LightningModule, dataset: Any, indices: np.ndarray) -> Tensor:
        """Embed ``dataset[indices]`` with the module in eval mode (any augmentation seeded)."""
        model: Any = getattr(pl_module, "model", pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            parts: list[Tensor] = []
            for start in range(0, len(indices), self.chunk_size):
                items = []
                for index in indices[start : start + self.chunk_size]:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(self.seed * 1_000_003 + int(index))
                        items.append(dataset[int(index)][0])
                images = default_collate(items).to(pl_module.device)
                if hasattr(model, "forward_train"):
                    parts.append(model.forward_train(images).features.float())
                else:
                    parts.append(model(images).float())
            return torch.cat(parts)
        finally:
            pl_module.train(was_training)

    def refresh(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Embed a subset, mine it and hand the sampler its plan for the next interval."""
        sampler, dataset = self._sampler(trainer)
        step = trainer.global_step
        refresh = step // self.every_n_steps
        labels = np.asarray(dataset.labels)
        subset = self.subset(labels, refresh)
        world, rank = trainer.world_size, trainer.global_rank
        mine = shard(len(subset), rank, world)
        local = self.embed(pl_module, dataset, subset[mine])
        embeddings = local
        if world > 1:
            embeddings = unshard(torch.stack(all_gather_parts(local)), len(subset))
        subset_labels = torch.as_tensor(labels[subset], device=embeddings.device)
        squared = self.mining_squared(pl_module)
        found = mine_triplets(embeddings, subset_labels, self.strategy, self.margin, squared)
        triplets = subset[found.cpu().numpy()]
        self.last_refresh = step
        self.last = {
            "subset": subset,
            "embeddings": embeddings,
            "triplets": triplets,
            "squared": squared,
        }
        if len(triplets) == 0:
            if rank == 0:
                warnings.warn(
                    f"OfflineTripletMining: no {self.strategy} triplet in the subset at step "
                    f"{step}; P×K batches until the next refresh",
                    stacklevel=2,
                )
            sampler.clear_plan()
            self.last["start"] = None
            return
        rng = np.random.default_rng([self.seed, refresh, 1])
        # twice the interval: the next refresh replaces it from its first undrawn batch on, so
        # the batches prefetched meanwhile come from this plan too
        steps = 2 * self.every_n_steps
        plan = batch_plan(triplets, steps, world, sampler.p * sampler.k, rng)
        self.last["start"] = sampler.serve(plan)

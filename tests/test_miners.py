"""embedlab.miners against brute-force selections written from the papers' definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import loss_reference as ref
from embedlab.distances import pairwise_distance
from embedlab.losses import ImprovedTripletLoss, MarginLoss, TripletLoss
from embedlab.miners import (
    BatchAllMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    SemiHardMiner,
    TripletMiner,
    TripletSelection,
)

LABELS = {
    "P4K2": [1, 0, 3, 2, 0, 1, 2, 3],
    "unequalK": [0, 2, 0, 1, 1, 2, 2, 0, 2, 3, 3, 4],
    "with-singleton": [0, 0, 1, 1, 1, 7],
}


def batch(labels: list[int], seed: int = 0, dim: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x, pairwise_distance(x), torch.tensor(labels)


def check_layout(sel: TripletSelection, n: int) -> None:
    shape = torch.broadcast_shapes(sel.pos_dist.shape, sel.neg_dist.shape)
    assert sel.valid.shape == shape and sel.valid.dtype == torch.bool
    assert sel.anchor.shape == shape[:1] and bool((sel.anchor < n).all())
    assert torch.isfinite(sel.pos_dist).all() and torch.isfinite(sel.neg_dist).all()


@pytest.mark.parametrize("batch_id", list(LABELS))
def test_batch_hard_matches_reference(batch_id: str) -> None:
    labels = LABELS[batch_id]
    x, dist, y = batch(labels)
    sel = BatchHardMiner()(dist, y)
    check_layout(sel, len(labels))
    d = ref.distances(x)
    expected = {
        a: (ref.val(d[a][p]), ref.val(d[a][n])) for a, p, n in ref.batch_hard_triplets(d, labels)
    }
    assert sel.valid.tolist() == [a in expected for a in range(len(labels))]
    for a, (ap, an) in expected.items():
        assert sel.pos_dist[a].item() == pytest.approx(ap, abs=1e-9)
        assert sel.neg_dist[a].item() == pytest.approx(an, abs=1e-9)


@pytest.mark.parametrize("batch_id", list(LABELS))
def test_batch_all_matches_reference(batch_id: str) -> None:
    labels = LABELS[batch_id]
    x, dist, y = batch(labels)
    sel = BatchAllMiner()(dist, y)
    check_layout(sel, len(labels))
    d = ref.distances(x)
    expected = sorted(
        (ref.val(d[a][p]), ref.val(d[a][n])) for a, p, n in ref.batch_all_triplets(d, labels)
    )
    ap, an = torch.broadcast_tensors(sel.pos_dist, sel.neg_dist)
    got = sorted(zip(ap[sel.valid].tolist(), an[sel.valid].tolist(), strict=True))
    assert len(got) == len(expected)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected))


@pytest.mark.parametrize("batch_id", list(LABELS))
def test_semi_hard_matches_reference(batch_id: str) -> None:
    labels = LABELS[batch_id]
    x, dist, y = batch(labels, seed=4)
    sel = SemiHardMiner()(dist, y)
    check_layout(sel, len(labels))
    d = ref.distances(x)
    expected = sorted(
        (a, ref.val(d[a][p]), ref.val(d[a][n])) for a, p, n in ref.semi_hard_triplets(d, labels)
    )
    got = sorted(
        zip(
            sel.anchor[sel.valid].tolist(),
            sel.pos_dist[sel.valid].tolist(),
            sel.neg_dist[sel.valid].tolist(),
            strict=True,
        )
    )
    assert [g[0] for g in got] == [e[0] for e in expected]
    torch.testing.assert_close(
        torch.tensor([g[1:] for g in got]), torch.tensor([e[1:] for e in expected])
    )


def test_semi_hard_prefers_the_closest_negative_farther_than_the_positive() -> None:
    # 1-d points: anchor 0 at 0, positive at 1; negatives at 0.5 (hard), 1.5 and 3 (semi-hard: 1.5)
    x = torch.tensor([[0.0], [1.0], [0.5], [1.5], [3.0]])
    y = torch.tensor([0, 0, 1, 2, 3])
    sel = SemiHardMiner()(pairwise_distance(x), y)
    row = (sel.anchor == 0).nonzero().item()
    assert sel.neg_dist[row].item() == pytest.approx(1.5)
    # no negative farther than the positive: the hardest negative
    x2 = torch.tensor([[0.0], [5.0], [0.5], [1.5], [3.0]])
    sel2 = SemiHardMiner()(pairwise_distance(x2), y)
    assert sel2.neg_dist[(sel2.anchor == 0).nonzero().item()].item() == pytest.approx(0.5)


def sphere(n: int, dim: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)


def test_distance_weighted_samples_follow_inverse_density() -> None:
    dim = 4
    labels = [0] * 21 + list(range(1, 9))  # anchor 0 has 20 positives: 20 draws per call
    x = sphere(len(labels), dim, seed=3)
    dist, y = pairwise_distance(x), torch.tensor(labels)
    miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))
    neg_d = dist[0, 21:]
    probs = torch.tensor(ref.unit_sphere_weights(neg_d.tolist(), dim, 0.5, 1.4))
    counts = torch.zeros(len(neg_d))
    for _ in range(150):
        sel = miner(dist, y, dim)
        drawn = sel.neg_dist[sel.anchor == 0]
        chosen = (drawn[:, None] - neg_d[None, :]).abs().argmin(1)
        counts += torch.bincount(chosen, minlength=len(neg_d))
    freq = counts / counts.sum()
    torch.testing.assert_close(freq, probs.to(freq.dtype), atol=0.03, rtol=0)
    assert (counts[probs == 0] == 0).all()


def test_distance_weighted_only_negatives_below_cutoff_and_uniform_fallback() -> None:
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x = sphere(len(labels), 8, seed=5)
    dist, y = pairwise_distance(x), torch.tensor(labels)
    sel = DistanceWeightedMiner(generator=torch.Generator().manual_seed(1))(dist, y, 8)
    check_layout(sel, len(labels))
    assert sel.valid.all()
    for a, an in zip(sel.anchor.tolist(), sel.neg_dist.tolist(), strict=True):
        candidates = [n for n in range(len(labels)) if labels[n] != labels[a]]
        below = [n for n in candidates if dist[a, n] < 1.4]
        pool = below or candidates
        assert min(abs(dist[a, n].item() - an) for n in pool) < 1e-12
    # every negative beyond the cutoff: uniform over the negatives
    far = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    sel = DistanceWeightedMiner()(pairwise_distance(far), torch.tensor([0, 0, 1, 1]), 2)
    assert sel.valid.all() and torch.allclose(
        sel.neg_dist, torch.full((4,), 2.0, dtype=torch.float64)
    )


def test_distance_weighted_is_reproducible_with_a_seeded_generator() -> None:
    labels = torch.arange(16).repeat_interleave(4)
    dist = pairwise_distance(sphere(64, 32, seed=0))

    def draw(seed: int) -> Tensor:
        miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(seed))
        return torch.stack([miner(dist, labels, 32).neg_dist for _ in range(3)])

    assert torch.equal(draw(11), draw(11))
    assert not torch.equal(draw(11), draw(12))


def test_distance_weighted_needs_the_dimension() -> None:
    with pytest.raises(ValueError, match="dimension"):
        DistanceWeightedMiner()(torch.zeros(2, 2), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "miner", [BatchHardMiner, BatchAllMiner, SemiHardMiner, DistanceWeightedMiner]
)
def test_degenerate_batches_give_no_valid_term(miner: type[TripletMiner]) -> None:
    for labels in ([0, 0, 0, 0], [0, 1, 2, 3]):
        x = sphere(4, 3, seed=0)
        sel = miner()(pairwise_distance(x), torch.tensor(labels), 3)
        check_layout(sel, 4)
        assert not sel.valid.any()


@pytest.mark.parametrize(
    "miner", [BatchHardMiner, BatchAllMiner, SemiHardMiner, DistanceWeightedMiner]
)
@pytest.mark.parametrize("loss_cls", [TripletLoss, ImprovedTripletLoss, MarginLoss])
def test_every_miner_plugs_into_every_triplet_loss(
    miner: type[TripletMiner], loss_cls: type
) -> None:
    x = F.normalize(torch.randn(16, 8), dim=1).requires_grad_()
    loss = loss_cls(miner=miner())
    value = loss(x, torch.arange(4).repeat_interleave(4))
    value.backward()
    assert torch.isfinite(value) and x.grad is not None and torch.isfinite(x.grad).all()
    assert repr(miner()) in repr(loss)


def test_a_custom_miner_is_accepted() -> None:
    class FirstPositiveFirstNegative(TripletMiner):
        def __call__(
            self, dist: Tensor, labels: Tensor, embedding_dim: int | None = None
        ) -> TripletSelection:
            same = labels[:, None] == labels[None, :]
            pos = (same & ~torch.eye(len(labels), dtype=torch.bool)).float().argmax(1)
            neg = (~same).float().argmax(1)
            rows = torch.arange(len(labels))
            return TripletSelection(
                rows, dist[rows, pos], dist[rows, neg], torch.ones(len(labels), dtype=torch.bool)
            )

    x = torch.tensor([[0.0], [1.0], [3.0], [3.5]], requires_grad=True)
    loss = TripletLoss(margin=1.0, miner=FirstPositiveFirstNegative())
    # anchors: 0 (p=1 d=1, n=2 d=3) → 0; 1 (p=0 d=1, n=2 d=2) → 0; 2 (p=3 .5, n=0 3) → 0; 3 (p=2 .5, n=0 3.5) → 0
    assert loss(x, torch.tensor([0, 0, 1, 1])).item() == 0.0

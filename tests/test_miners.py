"""embedlab.miners against brute-force selections written from the papers' definitions."""

from __future__ import annotations

from collections.abc import Callable

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
MINERS = [BatchHardMiner, BatchAllMiner, SemiHardMiner, DistanceWeightedMiner]


def batch(labels: list[int], seed: int = 0, dim: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x, pairwise_distance(x), torch.tensor(labels)


def sphere(n: int, dim: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)


def check_layout(sel: TripletSelection, labels: list[int]) -> None:
    """Fixed-shape [N, J] tensors, indices in range; valid slots are real triplets."""
    n, y = len(labels), torch.tensor(labels)
    assert sel.positive.dim() == 2 and sel.positive.shape[0] == n
    assert sel.valid.shape == sel.positive.shape and sel.valid.dtype == torch.bool
    for idx in (sel.positive, sel.negative):
        if idx is not None:
            assert idx.dtype == torch.long and bool(((idx >= 0) & (idx < n)).all())
    anchor = torch.arange(n)[:, None].expand_as(sel.positive)
    real = sel.valid
    assert bool((y[sel.positive][real] == y[anchor][real]).all())
    assert bool((sel.positive != anchor)[real].all())
    if sel.negative is None:
        assert sel.negatives is not None
        assert torch.equal(sel.negatives, y[:, None] != y[None, :])
    else:
        assert sel.negative.shape == sel.positive.shape
        assert bool((y[sel.negative][real] != y[anchor][real]).all())


def triplets(sel: TripletSelection) -> list[tuple[int, int, int]]:
    out = []
    for a, j in sel.valid.nonzero().tolist():
        p = int(sel.positive[a, j])
        if sel.negative is None:
            assert sel.negatives is not None
            out += [(a, p, int(n)) for n in sel.negatives[a].nonzero().flatten()]
        else:
            out.append((a, p, int(sel.negative[a, j])))
    return sorted(out)


Reference = Callable[[ref.Dist, list[int]], list[tuple[int, int, int]]]


@pytest.mark.parametrize("batch_id", list(LABELS))
@pytest.mark.parametrize(
    ("miner", "reference"),
    [
        (BatchHardMiner(), ref.batch_hard_triplets),
        (BatchAllMiner(), ref.batch_all_triplets),
        (SemiHardMiner(), ref.semi_hard_triplets),
        (SemiHardMiner("hardest"), ref.MINERS["semi_hard_hardest"]),
        (SemiHardMiner("none"), ref.MINERS["semi_hard_none"]),
    ],
    ids=["batch-hard", "batch-all", "semi-hard", "semi-hard-hardest", "semi-hard-none"],
)
def test_miner_matches_reference(batch_id: str, miner: TripletMiner, reference: Reference) -> None:
    labels = LABELS[batch_id]
    x, dist, y = batch(labels, seed=4)
    sel = miner(dist, y)
    check_layout(sel, labels)
    assert triplets(sel) == sorted(reference(ref.distances(x), labels))


def test_selection_distances_gather_from_the_matrix() -> None:
    _, dist, y = batch(LABELS["with-singleton"])  # label 7 has no positive
    rows = torch.arange(len(y))[:, None]
    for miner in (BatchHardMiner(), SemiHardMiner()):
        sel = miner(dist, y)
        assert sel.negative is not None
        d_ap, d_an = sel.distances(dist)
        assert torch.isfinite(d_ap).all() and torch.isfinite(d_an).all()
        if isinstance(miner, BatchHardMiner):
            assert sel.valid[:, 0].tolist() == [True] * 5 + [False]
        torch.testing.assert_close(d_ap, dist[rows, sel.positive])
        torch.testing.assert_close(d_an, dist[rows, sel.negative])
    sel = BatchAllMiner()(dist, y)
    d_ap, d_an = sel.distances(dist)
    assert d_ap.shape == (len(y), len(y)) and d_an.shape == (len(y), len(y))


def test_semi_hard_prefers_the_closest_negative_farther_than_the_positive() -> None:
    # 1-d points: anchor 0 at 0, positive at 1; negatives at 0.5 (hard), 1.5 (semi-hard), 3
    y = torch.tensor([0, 0, 1, 2, 3])
    sel = SemiHardMiner()(pairwise_distance(torch.tensor([[0.0], [1.0], [0.5], [1.5], [3.0]])), y)
    assert sel.negative is not None and int(sel.negative[0, 1]) == 3
    # no negative farther than the positive: the farthest negative (TensorFlow's choice) ...
    far = pairwise_distance(torch.tensor([[0.0], [5.0], [0.5], [1.5], [3.0]]))
    sel = SemiHardMiner()(far, y)
    assert sel.negative is not None and int(sel.negative[0, 1]) == 4 and sel.valid[0, 1]
    # ... or the closest one, or none
    sel = SemiHardMiner(fallback="hardest")(far, y)
    assert sel.negative is not None and int(sel.negative[0, 1]) == 2 and sel.valid[0, 1]
    assert not SemiHardMiner(fallback="none")(far, y).valid[0, 1]
    with pytest.raises(ValueError, match="fallback"):
        SemiHardMiner(fallback="farthest")  # type: ignore[arg-type]


def test_distance_weighted_samples_follow_inverse_density() -> None:
    dim = 4
    labels = [0] * 21 + list(range(1, 9))  # anchor 0 has 20 positives: 20 draws per call
    x = sphere(len(labels), dim, seed=3)
    dist, y = pairwise_distance(x), torch.tensor(labels)
    miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))
    probs = torch.tensor(ref.unit_sphere_weights(dist[0, 21:].tolist(), dim, 0.5, 1.4))
    assert 0 < int((probs > 0).sum()) < len(probs)  # the cutoff matters in this batch
    counts = torch.zeros(len(probs))
    for _ in range(150):
        sel = miner(dist, y, dim)
        assert sel.negative is not None
        drawn = sel.negative[0][sel.valid[0]]  # anchor 0's 20 positive slots
        counts += torch.bincount(drawn - 21, minlength=len(probs))
    torch.testing.assert_close(counts / counts.sum(), probs.float(), atol=0.03, rtol=0)
    assert (counts[probs == 0] == 0).all()


def test_distance_weighted_only_negatives_below_cutoff_and_uniform_fallback() -> None:
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    dist = pairwise_distance(sphere(len(labels), 8, seed=5))
    sel = DistanceWeightedMiner(generator=torch.Generator().manual_seed(1))(
        dist, torch.tensor(labels), 8
    )
    check_layout(sel, labels)
    assert sel.negative is not None
    y = torch.tensor(labels)
    assert torch.equal(sel.valid, (y[:, None] == y) & ~torch.eye(9, dtype=torch.bool))
    for a, j in sel.valid.nonzero().tolist():
        n = int(sel.negative[a, j])
        candidates = [j for j in range(len(labels)) if labels[j] != labels[a]]
        below = [j for j in candidates if dist[a, j] < 1.4]
        assert n in (below or candidates)
    # every negative beyond the cutoff: drawn uniformly among the negatives
    far = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    sel = DistanceWeightedMiner()(pairwise_distance(far), torch.tensor([0, 0, 1, 1]), 2)
    check_layout(sel, [0, 0, 1, 1])
    assert int(sel.valid.sum()) == 4  # every anchor–positive pair


def test_distance_weighted_is_reproducible_with_a_seeded_generator() -> None:
    labels = torch.arange(16).repeat_interleave(4)
    dist = pairwise_distance(sphere(64, 32, seed=0))

    def draw(seed: int) -> list[list[int]]:
        miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(seed))
        out = []
        for _ in range(3):
            negative = miner(dist, labels, 32).negative
            assert negative is not None
            out.append(negative.tolist())
        return out

    assert draw(11) == draw(11)
    assert draw(11) != draw(12)


def test_distance_weighted_needs_the_dimension() -> None:
    with pytest.raises(ValueError, match="dimension"):
        DistanceWeightedMiner()(torch.zeros(2, 2), torch.tensor([0, 1]))


@pytest.mark.parametrize("miner", MINERS)
def test_degenerate_batches_give_no_valid_term(miner: type[TripletMiner]) -> None:
    for labels in ([0, 0, 0, 0], [0, 1, 2, 3]):
        sel = miner()(pairwise_distance(sphere(4, 3, seed=0)), torch.tensor(labels), 3)
        check_layout(sel, labels)
        assert not sel.valid.any()


@pytest.mark.parametrize("miner", MINERS)
@pytest.mark.parametrize("loss_cls", [TripletLoss, ImprovedTripletLoss, MarginLoss])
def test_every_miner_plugs_into_every_triplet_loss(
    miner: type[TripletMiner], loss_cls: type[TripletLoss | ImprovedTripletLoss | MarginLoss]
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
            valid = torch.ones(len(labels), 1, dtype=torch.bool)
            return TripletSelection(pos[:, None], neg[:, None], valid)

    x = torch.tensor([[0.0], [1.0], [3.0], [3.5]], requires_grad=True)
    loss = TripletLoss(margin=1.0, miner=FirstPositiveFirstNegative())
    # rows (a, p, n): (0, 1, 2) 1 + 1 − 3 < 0; (1, 0, 2) 1 + 1 − 2 = 0; (2, 3, 0), (3, 2, 0) < 0
    assert loss(x, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.0, abs=1e-6)
    loss = TripletLoss(margin=2.0, miner=FirstPositiveFirstNegative())
    # (0, 1, 2): 2 + 1 − 3 = 0; (1, 0, 2): 2 + 1 − 2 = 1; (2, 3, 0): 2 + .5 − 3 < 0; (3, 2, 0): < 0
    assert loss(x, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.25, abs=1e-6)

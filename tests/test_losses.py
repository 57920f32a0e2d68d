"""embedlab.losses against brute-force references written from the papers' formulas."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import loss_reference as ref
from embedlab import losses as L
from embedlab.miners import (
    BatchAllMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
)


def shuffled(labels: list[int], seed: int = 0) -> list[int]:
    labels = list(labels)
    random.Random(seed).shuffle(labels)
    return labels


# P×K batches (K=2 included) and one with unequal K, in a shuffled order.
LABELS = {
    "P4K2": shuffled([i // 2 for i in range(8)]),
    "P3K4": shuffled([i // 4 for i in range(12)]),
    "P5K3": shuffled([i // 3 for i in range(15)], seed=1),
    "unequalK": shuffled([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4], seed=2),
}


def make_batch(labels: list[int], dim: int = 5, seed: int = 0, scale: float = 0.5) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (
        scale * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    ).requires_grad_()


def fresh_dws() -> DistanceWeightedMiner:
    return DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))


Factory = Callable[[], L.MetricLoss]
Reference = Callable[[Any, Tensor, list[int]], Tensor]

# id -> (embedlab loss factory, brute-force reference)
CASES: dict[str, tuple[Factory, Reference]] = {
    "contrastive": (L.ContrastiveLoss, lambda m, x, y: ref.contrastive(x, y, 0.0, 1.0)),
    "contrastive-margins": (
        lambda: L.ContrastiveLoss(pos_margin=0.3, neg_margin=1.4),
        lambda m, x, y: ref.contrastive(x, y, 0.3, 1.4),
    ),
    "cosine-contrastive": (
        L.CosineContrastiveLoss,
        lambda m, x, y: ref.cosine_contrastive(x, y, 1.0, 0.5),
    ),
    "cosine-contrastive-margins": (
        lambda: L.CosineContrastiveLoss(pos_margin=0.8, neg_margin=0.1),
        lambda m, x, y: ref.cosine_contrastive(x, y, 0.8, 0.1),
    ),
    "triplet-hard": (L.TripletLoss, lambda m, x, y: ref.triplet(x, y, "batch_hard", 0.3)),
    "triplet-hard-squared": (
        lambda: L.TripletLoss(margin=0.2, squared=True),
        lambda m, x, y: ref.triplet(x, y, "batch_hard", 0.2, squared=True),
    ),
    "triplet-hard-soft": (
        lambda: L.TripletLoss(soft_margin=True),
        lambda m, x, y: ref.triplet(x, y, "batch_hard", 0.3, soft_margin=True),
    ),
    "triplet-all": (
        lambda: L.TripletLoss(miner=BatchAllMiner()),
        lambda m, x, y: ref.triplet(x, y, "batch_all", 0.3),
    ),
    "triplet-all-nonzero": (
        lambda: L.TripletLoss(miner=BatchAllMiner(), nonzero_mean=True),
        lambda m, x, y: ref.triplet(x, y, "batch_all", 0.3, nonzero_mean=True),
    ),
    "triplet-semihard": (
        lambda: L.TripletLoss(miner=SemiHardMiner()),
        lambda m, x, y: ref.triplet(x, y, "semi_hard", 0.3),
    ),
    "triplet-semihard-squared": (
        lambda: L.TripletLoss(margin=0.2, miner=SemiHardMiner(), squared=True),
        lambda m, x, y: ref.triplet(x, y, "semi_hard", 0.2, squared=True),
    ),
    "triplet-semihard-hardest-fallback": (
        lambda: L.TripletLoss(miner=SemiHardMiner(fallback="hardest")),
        lambda m, x, y: ref.triplet(x, y, "semi_hard_hardest", 0.3),
    ),
    "triplet-semihard-no-fallback": (
        lambda: L.TripletLoss(miner=SemiHardMiner(fallback="none")),
        lambda m, x, y: ref.triplet(x, y, "semi_hard_none", 0.3),
    ),
    "triplet-all-soft": (
        lambda: L.TripletLoss(miner=BatchAllMiner(), soft_margin=True),
        lambda m, x, y: ref.triplet(x, y, "batch_all", 0.3, soft_margin=True),
    ),
    "triplet-all-squared": (
        lambda: L.TripletLoss(margin=0.5, miner=BatchAllMiner(), squared=True),
        lambda m, x, y: ref.triplet(x, y, "batch_all", 0.5, squared=True),
    ),
    "improved-triplet": (
        L.ImprovedTripletLoss,
        lambda m, x, y: ref.improved_triplet(x, y, "batch_hard", 1.0, 1.0, 1.0, 0.002, 0.01),
    ),
    "improved-triplet-no-intra": (
        lambda: L.ImprovedTripletLoss(intra_weight=0.0),
        lambda m, x, y: ref.improved_triplet(x, y, "batch_hard", 1.0, 1.0, 1.0, 0.0, 0.01),
    ),
    "improved-triplet-intra": (
        lambda: L.ImprovedTripletLoss(0.5, 1.5, 0.7, 0.4, 0.3, miner=BatchAllMiner()),
        lambda m, x, y: ref.improved_triplet(x, y, "batch_all", 0.5, 1.5, 0.7, 0.4, 0.3),
    ),
    "improved-triplet-plain-distances": (
        lambda: L.ImprovedTripletLoss(0.3, 1.0, 1.0, 0.5, 0.2, squared=False),
        lambda m, x, y: ref.improved_triplet(x, y, "batch_hard", 0.3, 1.0, 1.0, 0.5, 0.2, False),
    ),
    "improved-triplet-semihard": (
        lambda: L.ImprovedTripletLoss(intra_weight=0.002, miner=SemiHardMiner()),
        lambda m, x, y: ref.improved_triplet(x, y, "semi_hard", 1.0, 1.0, 1.0, 0.002, 0.01),
    ),
    "quadruplet": (L.QuadrupletLoss, lambda m, x, y: ref.quadruplet(x, y, 1.0, 0.5)),
    "quadruplet-adaptive": (
        lambda: L.QuadrupletLoss(adaptive=True),
        lambda m, x, y: ref.quadruplet(x, y, 1.0, 0.5, adaptive=True),
    ),
    "msml": (L.MSMLLoss, lambda m, x, y: ref.msml(x, y, 0.6)),
    "coupled-clusters": (L.CoupledClustersLoss, lambda m, x, y: ref.coupled_clusters(x, y, 1.0)),
    "coupled-clusters-small-margin": (
        lambda: L.CoupledClustersLoss(margin=0.2),
        lambda m, x, y: ref.coupled_clusters(x, y, 0.2),
    ),
    "coupled-clusters-centre-gradient": (
        lambda: L.CoupledClustersLoss(centre_gradient=True),
        lambda m, x, y: ref.coupled_clusters(x, y, 1.0, centre_gradient=True),
    ),
    "ranked-list": (L.RankedListLoss, lambda m, x, y: ref.ranked_list(x, y, 1.2, 0.4, 10.0, 1.0)),
    "ranked-list-hot": (
        lambda: L.RankedListLoss(boundary=1.0, margin=0.3, temperature=60.0, neg_weight=0.5),
        lambda m, x, y: ref.ranked_list(x, y, 1.0, 0.3, 60.0, 0.5),
    ),
    "ranked-list-autograd": (
        lambda: L.RankedListLoss(paper_gradient=False),
        lambda m, x, y: ref.ranked_list(x, y, 1.2, 0.4, 10.0, 1.0, paper_gradient=False),
    ),
    "margin-hard": (
        lambda: L.MarginLoss(miner=BatchHardMiner()),
        lambda m, x, y: ref.margin_loss(x, y, "batch_hard", 0.2, m.beta, 0.0, False),
    ),
    "margin-all-per-class": (
        lambda: L.MarginLoss(num_classes=16, nu=0.1, miner=BatchAllMiner()),
        lambda m, x, y: ref.margin_loss(x, y, "batch_all", 0.2, m.beta, 0.1, True),
    ),
    "margin-semihard": (
        lambda: L.MarginLoss(nu=0.05, miner=SemiHardMiner()),
        lambda m, x, y: ref.margin_loss(x, y, "semi_hard", 0.2, m.beta, 0.05, False),
    ),
    "center": (
        lambda: L.CenterLoss(num_classes=16, embedding_dim=5),
        lambda m, x, y: ref.center(x, y, m.centers),
    ),
    "circle": (L.CircleLoss, lambda m, x, y: ref.circle(x, y, 0.25, 128.0)),
    "circle-dml": (
        lambda: L.CircleLoss(m=0.4, gamma=80.0),
        lambda m, x, y: ref.circle(x, y, 0.4, 80.0),
    ),
    "circle-low-scale": (
        lambda: L.CircleLoss(m=0.25, gamma=8.0),
        lambda m, x, y: ref.circle(x, y, 0.25, 8.0),
    ),
    "multi-similarity": (
        L.MultiSimilarityLoss,
        lambda m, x, y: ref.multi_similarity(x, y, 2.0, 50.0, 0.5),
    ),
    "multi-similarity-mined": (
        lambda: L.MultiSimilarityLoss(miner=MultiSimilarityMiner(0.1)),
        lambda m, x, y: ref.multi_similarity(x, y, 2.0, 50.0, 0.5, epsilon=0.1),
    ),
    "supcon": (L.SupConLoss, lambda m, x, y: ref.supcon(x, y, 0.1)),
    "proxy-anchor": (
        lambda: L.ProxyAnchorLoss(num_classes=16, embedding_dim=5),
        lambda m, x, y: ref.proxy_anchor(x, y, m.proxies, 0.1, 32.0),
    ),
    "arcface": (
        lambda: L.ArcFaceLoss(num_classes=16, embedding_dim=5, scale=16.0),
        lambda m, x, y: ref.margin_softmax(x, y, m.weight, "arcface", 0.5, 16.0),
    ),
    "arcface-wide-margin": (  # θ + m passes π for some targets
        lambda: L.ArcFaceLoss(num_classes=16, embedding_dim=5, margin=2.5, scale=8.0),
        lambda m, x, y: ref.margin_softmax(x, y, m.weight, "arcface", 2.5, 8.0),
    ),
    "cosface": (
        lambda: L.CosFaceLoss(num_classes=16, embedding_dim=5, scale=16.0),
        lambda m, x, y: ref.margin_softmax(x, y, m.weight, "cosface", 0.35, 16.0),
    ),
    "subcenter-arcface": (
        lambda: L.SubCenterArcFaceLoss(num_classes=16, embedding_dim=5, scale=16.0),
        lambda m, x, y: ref.margin_softmax(x, y, m.weight, "arcface", 0.5, 16.0, k=3),
    ),
}
# classification-style losses with one parameter row per class: no degenerate batch
CLASS_LOSSES = {
    "center",
    "proxy-anchor",
    "arcface",
    "arcface-wide-margin",
    "cosface",
    "subcenter-arcface",
}
# Losses that are not checked against a reference (random sampling), but everywhere else.
EXTRA: dict[str, Factory] = {
    "margin-dws": lambda: L.MarginLoss(miner=fresh_dws()),
    "triplet-dws": lambda: L.TripletLoss(miner=fresh_dws()),
}
ALL: dict[str, Factory] = {k: v[0] for k, v in CASES.items()} | EXTRA
PAIR_LOSSES = [k for k in ALL if k not in CLASS_LOSSES]  # those with a degenerate batch
# every pair is a term of XBM's contrastive loss: one identity or no positive is no degenerate batch
EVERY_PAIR_A_TERM = {"cosine-contrastive", "cosine-contrastive-margins"}


@pytest.mark.parametrize("batch", list(LABELS))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_brute_force_reference(case: str, batch: str) -> None:
    factory, reference = CASES[case]
    loss = factory().double()
    labels = LABELS[batch]
    x = make_batch(labels, seed=len(case))
    ours = loss(x, torch.tensor(labels))
    expected = reference(loss, x, labels)
    torch.testing.assert_close(ours, expected.to(ours.dtype), atol=1e-6, rtol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, x)
    (g_ref,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-6)


def test_cross_entropy_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    loss = L.CrossEntropyLoss()
    ours = loss(logits, torch.tensor(labels))
    torch.testing.assert_close(ours, ref.cross_entropy(logits, labels, 0.1), atol=1e-6, rtol=1e-6)
    assert 0.0 <= loss.stats["accuracy"].item() <= 1.0
    assert L.CrossEntropyLoss().label_smoothing == 0.1


# The adaptive quadruplet margins are batch statistics held constant in the backward
# pass, the ranked-list paper gradient holds the softmax weights and the other samples of
# each list constant, and the coupled clusters gradient holds the class centres constant,
# so finite differences (which move them) disagree by design; their gradients are checked
# against the references' in test_matches_brute_force_reference.
NOT_TRUE_GRADIENT = (
    "quadruplet-adaptive",
    "ranked-list",
    "ranked-list-hot",
    "coupled-clusters",  # the class centres are constants in the backward pass (Liu et al.)
    "coupled-clusters-small-margin",
    "circle",  # its self-paced weights α are constants in the backward pass (authors' code)
    "circle-dml",
    "circle-low-scale",
)


@pytest.mark.parametrize("case", [c for c in ALL if c not in NOT_TRUE_GRADIENT])
def test_gradcheck(case: str) -> None:
    labels = LABELS["P3K4"]
    x = make_batch(labels, seed=3)
    y = torch.tensor(labels)
    loss = ALL[case]().double()
    if case in EXTRA:  # a new seeded miner per call draws the same negatives every time
        assert torch.autograd.gradcheck(
            lambda e: EXTRA[case]().double()(e, y), (x,), atol=1e-5, fast_mode=True
        )
    else:
        assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), atol=1e-5, fast_mode=True)


def _finite(case: str, x: Tensor, y: Tensor) -> None:
    loss = ALL[case]()
    value = loss(x, y)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value), (case, value)
    assert torch.isfinite(grad).all(), case


@pytest.mark.parametrize("case", list(ALL))
def test_zero_distances_give_finite_loss_and_gradients(case: str) -> None:
    labels = torch.tensor(LABELS["P4K2"])
    base = F.normalize(make_batch(LABELS["P4K2"], seed=5).detach().float(), dim=1)
    # the same embeddings twice, as positives and as negatives of each other
    dup = torch.cat([base, base]).requires_grad_()
    _finite(case, dup, torch.cat([labels, labels]))
    _finite(case, dup, torch.cat([labels, labels + 8]))
    # every embedding identical
    same = torch.ones(8, 5).div(5**0.5).requires_grad_()
    _finite(case, same, labels)
    _finite(case, torch.zeros(8, 5, requires_grad=True), labels)


@pytest.mark.parametrize("labels", [[3] * 6, list(range(6))], ids=["one-identity", "no-positive"])
@pytest.mark.parametrize("case", [c for c in PAIR_LOSSES if c not in EVERY_PAIR_A_TERM])
def test_degenerate_batch_zero_loss_with_warning_when_stats_are_read(
    case: str, labels: list[int]
) -> None:
    x = F.normalize(make_batch(labels).detach(), dim=1).requires_grad_()
    loss = ALL[case]().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forward itself never warns
        value = loss(x, torch.tensor(labels))
    assert value.item() == 0.0
    assert value.requires_grad
    (grad,) = torch.autograd.grad(value, x)
    assert torch.equal(grad, torch.zeros_like(grad))
    with pytest.warns(UserWarning, match="no valid term"):
        stats = loss.stats
    assert all(isinstance(v, Tensor) and v.dim() == 0 for v in stats.values())
    assert all(torch.isfinite(v) for v in stats.values())


def test_a_valid_batch_reads_its_stats_without_warning() -> None:
    loss = L.TripletLoss()
    loss(F.normalize(torch.randn(12, 5), dim=1), torch.tensor(LABELS["P3K4"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(loss.stats) == {"active_fraction", "pos_dist", "neg_dist"}


@pytest.mark.parametrize("case", list(CASES))
def test_permutation_invariance(case: str) -> None:
    labels = LABELS["unequalK"]
    x = make_batch(labels, seed=11)
    y = torch.tensor(labels)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    loss = CASES[case][0]().double()
    torch.testing.assert_close(loss(x[perm], y[perm]), loss(x, y), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("case", [*ALL, "cross-entropy"])
def test_bf16_autocast_cpu_is_finite(case: str) -> None:
    torch.manual_seed(0)
    labels = torch.tensor(LABELS["P5K3"])
    model = nn.Linear(7, 5)
    inputs = torch.randn(len(labels), 7)
    loss: nn.Module = L.CrossEntropyLoss() if case == "cross-entropy" else ALL[case]()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs)
        assert out.dtype == torch.bfloat16
        value = loss(out if case == "cross-entropy" else F.normalize(out, dim=1), labels)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    value.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()


def test_stats_are_tensors_and_match_reference_triplet() -> None:
    labels = LABELS["P3K4"]
    x = make_batch(labels, seed=2)
    loss = L.TripletLoss()
    loss(x, torch.tensor(labels))
    assert set(loss.stats) == {"active_fraction", "pos_dist", "neg_dist"}
    assert all(isinstance(v, Tensor) and v.dim() == 0 for v in loss.stats.values())
    d = ref.distances(x)
    triplets = ref.batch_hard_triplets(d, labels)
    pos = sum(ref.val(d[a][p]) for a, p, _ in triplets) / len(triplets)
    neg = sum(ref.val(d[a][n]) for a, _, n in triplets) / len(triplets)
    active = sum(0.3 + ref.val(d[a][p]) - ref.val(d[a][n]) > 0 for a, p, n in triplets)
    assert loss.stats["pos_dist"].item() == pytest.approx(pos, rel=1e-6)
    assert loss.stats["neg_dist"].item() == pytest.approx(neg, rel=1e-6)
    assert loss.stats["active_fraction"].item() == pytest.approx(active / len(triplets))


@pytest.mark.parametrize("case", [c for c in ALL if "dws" not in c])  # DW mining is random
def test_stats_read_late_describe_the_last_call(case: str) -> None:
    """Stats are computed when read: reading after a second call gives that call's."""
    y = torch.tensor(LABELS["P3K4"])
    g = torch.Generator().manual_seed(4)
    first, second = (F.normalize(torch.randn(12, 5, generator=g), dim=1) for _ in range(2))
    loss = ALL[case]()
    loss(second, y)
    alone = {k: v.item() for k, v in loss.stats.items()}
    loss(first, y)
    assert {k: v.item() for k, v in loss.stats.items()} != pytest.approx(alone)
    loss(second, y)
    assert {k: v.item() for k, v in loss.stats.items()} == pytest.approx(alone)


@pytest.mark.parametrize("case", list(ALL))
def test_every_loss_exposes_stats(case: str) -> None:
    loss = ALL[case]()
    loss(F.normalize(torch.randn(12, 5), dim=1), torch.tensor(LABELS["P3K4"]))
    assert loss.stats and all(isinstance(v, Tensor) for v in loss.stats.values())


def test_margin_loss_learns_beta_per_class() -> None:
    loss = L.MarginLoss(num_classes=4, miner=BatchHardMiner())
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    # tight classes: no pull is active, so ∂L/∂β_c = (active pushes of class c) / n_active
    x = F.normalize(torch.randn(4, 5, generator=g)[y] + 0.01 * torch.randn(8, 5, generator=g))
    loss(x, y).backward()
    assert loss.beta.shape == (4,) and loss.beta.grad is not None
    d = torch.cdist(x, x)
    d_an = torch.where(y[:, None] == y[None, :], torch.inf, d).min(1).values
    pushes = (0.2 - (d_an - 1.2) > 0).double()
    want = torch.zeros(4, dtype=torch.float64).index_add_(0, y, pushes) / pushes.sum()
    assert pushes.sum() > 0
    torch.testing.assert_close(loss.beta.grad.double(), want)
    frozen = L.MarginLoss(learn_beta=False)
    assert not frozen.beta.requires_grad and torch.allclose(frozen.beta, torch.tensor([1.2]))


def test_dws_margin_loss_is_reproducible_with_a_seeded_generator() -> None:
    x = F.normalize(torch.randn(32, 16), dim=1)
    y = torch.arange(8).repeat_interleave(4)
    a = L.MarginLoss(miner=DistanceWeightedMiner(generator=torch.Generator().manual_seed(7)))
    b = L.MarginLoss(miner=DistanceWeightedMiner(generator=torch.Generator().manual_seed(7)))
    assert [a(x, y).item() for _ in range(3)] == [b(x, y).item() for _ in range(3)]


def test_defaults_follow_the_papers() -> None:
    t = L.TripletLoss()
    assert (t.margin, t.squared, t.soft_margin, t.nonzero_mean) == (0.3, False, False, False)
    assert isinstance(t.miner, BatchHardMiner)
    q = L.QuadrupletLoss()
    assert (q.margin1, q.margin2, q.adaptive) == (1.0, 0.5, False)
    assert L.MSMLLoss().margin == 0.6
    r = L.RankedListLoss()
    assert (r.boundary, r.margin, r.temperature, r.neg_weight) == (1.2, 0.4, 10.0, 1.0)
    m = L.MarginLoss()
    assert (m.margin, m.nu, m.learn_beta) == (0.2, 0.0, True)
    assert isinstance(m.miner, DistanceWeightedMiner)
    assert (m.miner.cutoff, m.miner.nonzero_loss_cutoff) == (0.5, 1.4)
    c = L.ContrastiveLoss()
    assert (c.pos_margin, c.neg_margin) == (0.0, 1.0)
    i = L.ImprovedTripletLoss()
    assert (i.margin, i.pos_weight, i.neg_weight, i.intra_weight, i.intra_margin) == (
        1.0,
        1.0,
        1.0,
        0.002,
        0.01,
    )
    assert i.squared and isinstance(i.miner, BatchHardMiner)
    assert L.CoupledClustersLoss().centre_gradient is False


def test_improved_triplet_is_the_papers_value_without_a_constant() -> None:
    # 1-D, batch hard: anchors 0 and 1 (label 0), 2 and 3 (label 1)
    x = torch.tensor([[0.0], [0.5], [0.7], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # squared distances: (a, p, n) = (0, 1, 2): .25, .49; (1, 0, 2): .25, .04;
    # (2, 3, 1): 1.69, .04; (3, 2, 1): 1.69, 2.25
    terms = [
        max(0.0, 1 + ap - an) + 0.002 * max(0.0, ap - 0.01)
        for ap, an in ((0.25, 0.49), (0.25, 0.04), (1.69, 0.04), (1.69, 2.25))
    ]
    assert L.ImprovedTripletLoss()(x, y).item() == pytest.approx(sum(terms) / 4, abs=1e-12)
    # the paper's clamp form max{d⁺ − d⁻, τ1} + β·max{d⁺, τ2} is the same plus τ1 + β·τ2
    clamps = [
        max(ap - an, -1.0) + 0.002 * max(ap, 0.01)
        for ap, an in ((0.25, 0.49), (0.25, 0.04), (1.69, 0.04), (1.69, 2.25))
    ]
    assert sum(clamps) / 4 - (-1.0 + 0.002 * 0.01) == pytest.approx(sum(terms) / 4, abs=1e-12)
    # both constraints met (d⁺ ≤ τ2, d⁻ ≥ d⁺ + 1): exactly zero
    far = torch.tensor([[0.0], [0.05], [3.0], [3.05]], dtype=torch.float64)
    assert L.ImprovedTripletLoss()(far, y).item() == 0.0


def test_coupled_clusters_gradient_holds_the_centre_constant() -> None:
    # 1-D: class 0 at 0 and 1 (centre 0.5), class 1 at 1.2 and 3 (centre 2.1), margin 1
    x = torch.tensor([[0.0], [1.0], [1.2], [3.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss = L.CoupledClustersLoss()(x, y)
    # class 0: f* = 1.2, ‖f* − c‖² = .49; members .25 + 1 − .49 > 0 (both active)
    # class 1: f* = 1.0, ‖f* − c‖² = 1.21; members .81 + 1 − 1.21 > 0 (both active)
    assert loss.item() == pytest.approx((2 * 0.5 * 0.76 + 2 * 0.5 * 0.6) / 4, abs=1e-12)
    (grad,) = torch.autograd.grad(loss, x)
    # the paper's partials, c held constant: ∂/∂f_i = f_i − c, ∂/∂f* = c − f* per active term
    by_hand = torch.tensor(
        [[0.0 - 0.5], [1.0 - 0.5 + 2 * (2.1 - 1.0)], [1.2 - 2.1 + 2 * (0.5 - 1.2)], [3.0 - 2.1]]
    )
    torch.testing.assert_close(grad, by_hand.double() / 4)
    # centre_gradient=True: the same value, the gradient of the mean as well
    through = L.CoupledClustersLoss(centre_gradient=True)(x, y)
    assert through.item() == pytest.approx(loss.item(), abs=1e-12)
    assert not torch.allclose(torch.autograd.grad(through, x)[0], grad)


def test_losses_build_from_class_path_config() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--loss", type=nn.Module)
    config: dict[str, Any] = {
        "class_path": "embedlab.losses.TripletLoss",
        "init_args": {"margin": 0.2, "miner": {"class_path": "embedlab.miners.SemiHardMiner"}},
    }
    cfg = parser.parse_object({"loss": config})
    loss = parser.instantiate_classes(cfg).loss
    assert isinstance(loss, L.TripletLoss) and isinstance(loss.miner, SemiHardMiner)
    assert loss.margin == 0.2


@pytest.mark.parametrize("case", PAIR_LOSSES)
@settings(max_examples=20, deadline=None)
@given(
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    p=st.integers(1, 4),
    k=st.integers(1, 3),
    duplicate=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_finite_values_and_gradients(
    case: str, scale: float, p: int, k: int, duplicate: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)
    x = torch.randn(p * k, 6, generator=g) * scale
    if duplicate:
        x = torch.cat([x, x[: max(1, len(x) // 2)]])
        labels = torch.cat([labels, labels[: max(1, len(labels) // 2)]])
    x.requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = ALL[case]()(x, labels)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value), (case, value)
    assert torch.isfinite(grad).all(), case

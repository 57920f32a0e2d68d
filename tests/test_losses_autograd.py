"""Every loss is a plain autograd formula: double backward, torch.func and torch.compile work."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import loss_reference as ref
from embedlab import losses as L
from embedlab.distances import pairwise_distance
from embedlab.miners import DistanceWeightedMiner as DWS
from test_losses import ALL, CASES, EXTRA, LABELS, make_batch

SRC = Path(__file__).resolve().parents[1] / "src" / "embedlab"


def _penalty_gradient(value_fn, x: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """∂/∂x of the gradient penalty ‖∂L/∂x‖²."""
    (g,) = torch.autograd.grad(value_fn(x), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    return gg


# At γ = 80–128 the circle loss's second derivatives are products of e^{±γ·…} terms whose
# float64 evaluation differs between any two orderings of the sum (the penalty's gradient
# is ~4e5 there): its double backward is checked at γ = 8 ("circle-low-scale").
ILL_CONDITIONED = {"circle", "circle-dml"}


@pytest.mark.parametrize("case", [c for c in CASES if c not in ILL_CONDITIONED])
def test_double_backward_equals_the_reference_formula(case: str) -> None:
    factory, reference = CASES[case]
    loss = factory().double()
    labels = LABELS["unequalK"]
    y = torch.tensor(labels)
    x = make_batch(labels, seed=7)
    ours = _penalty_gradient(lambda e: loss(e, y), x)
    expected = _penalty_gradient(lambda e: reference(loss, e, labels), x)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", ["triplet-hard", "contrastive", "ranked-list", "msml"])
def test_double_backward_of_a_loss_plus_cross_entropy(case: str) -> None:
    """The combined objective of a ReID recipe, differentiated twice."""
    factory, reference = CASES[case]
    loss, ce = factory().double(), L.CrossEntropyLoss()
    labels = LABELS["P3K4"]
    y = torch.tensor(labels)
    head = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = make_batch(labels, seed=1)

    def objective(e: Tensor, metric_loss) -> Tensor:  # type: ignore[no-untyped-def]
        return metric_loss(e) + ce(e @ head.T, y)

    ours = _penalty_gradient(lambda e: objective(e, lambda v: loss(v, y)), x)
    expected = _penalty_gradient(lambda e: objective(e, lambda v: reference(loss, v, labels)), x)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", [c for c in ALL if c not in EXTRA])
def test_torch_func_grad_equals_autograd(case: str) -> None:
    labels = torch.tensor(LABELS["P3K4"])
    x = make_batch(LABELS["P3K4"], seed=2)
    loss = ALL[case]().double()
    (expected,) = torch.autograd.grad(loss(x, labels), x)
    ours = torch.func.grad(lambda e: loss(e, labels))(x.detach())
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)


def test_torch_func_vmap_per_sample_losses() -> None:
    """vmap over independent batches (e.g. per-task losses) gives each batch's own loss."""
    loss = L.TripletLoss()
    labels = torch.tensor(LABELS["P3K4"])
    batches = torch.randn(3, 12, 5, generator=torch.Generator().manual_seed(3))
    batched = torch.func.vmap(lambda e: loss(e, labels))(batches)
    torch.testing.assert_close(batched, torch.stack([loss(b, labels) for b in batches]))


# a seeded torch.Generator cannot be traced: the sampling losses compile with their default miner
COMPILED = ALL | {"margin-dws": L.MarginLoss, "triplet-dws": lambda: L.TripletLoss(miner=DWS())}


@pytest.mark.parametrize("case", list(COMPILED))
def test_torch_compile_traces_the_whole_loss(case: str) -> None:
    torch._dynamo.reset()
    labels = torch.tensor(LABELS["P3K4"])
    x = F.normalize(torch.randn(12, 5, generator=torch.Generator().manual_seed(4)), dim=1)
    loss = COMPILED[case]()
    expected = loss(x, labels) if case not in EXTRA else None
    # aot_eager: Dynamo's graph plus AOTAutograd's functionalisation (what inductor compiles)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = compiled(x.requires_grad_(), labels)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if expected is not None:
        torch.testing.assert_close(value, expected)
    assert loss.stats  # statistics survive compilation


def test_no_hand_written_backward_in_losses_or_miners() -> None:
    forbidden = {"Function", "once_differentiable", "with_gradient", "backward"}
    for folder in ("losses", "miners"):
        for path in (SRC / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert not names & forbidden, (path.name, names & forbidden)


def test_near_coincident_points_float32() -> None:
    """‖x‖ = 20 and a pair 1e-2 apart: distance within 1 %, and the loss pushes them apart."""
    g = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(8, 16, generator=g), dim=1) * 20
    direction = F.normalize(torch.randn(16, generator=g), dim=0)
    x = torch.cat([base, base[:1] + 1e-2 * direction]).requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4])  # the close pair (0, 8) are negatives
    dist = pairwise_distance(x)
    assert dist[0, 8].item() == pytest.approx(1e-2, rel=1e-2)
    assert dist[8, 0].item() == pytest.approx(1e-2, rel=1e-2)
    loss = L.ContrastiveLoss(neg_margin=1.0)(x, labels)
    (grad,) = torch.autograd.grad(loss, x)
    step = x.detach() - 0.1 * grad  # one gradient step
    assert torch.linalg.vector_norm(step[8] - step[0]) > 1e-2
    # the gradient on the pair is along their difference (it separates them)
    cosine = F.cosine_similarity(-grad[8], direction, dim=0)
    assert cosine > 0.99


def test_paper_gradient_moves_only_the_anchor_of_each_list() -> None:
    """With one anchor's list only, the others receive no gradient (Wang et al.)."""
    labels = LABELS["P3K4"]
    x = make_batch(labels, seed=5)
    d = ref.distances(x, fixed_others=True)
    (g,) = torch.autograd.grad(sum(d[0][j] for j in range(1, len(labels))), x)
    assert torch.count_nonzero(g[1:]) == 0 and torch.count_nonzero(g[0]) > 0
    paper = L.RankedListLoss().double()
    plain = L.RankedListLoss(paper_gradient=False).double()
    y = torch.tensor(labels)
    torch.testing.assert_close(paper(x, y), plain(x, y))  # same value, different gradient
    (g_paper,) = torch.autograd.grad(paper(x, y), x)
    (g_plain,) = torch.autograd.grad(plain(x, y), x)
    assert not torch.allclose(g_paper, g_plain)

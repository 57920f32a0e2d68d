"""embedlab.distances: the one pairwise-distance function and the label masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from embedlab.distances import (
    Distance,
    label_masks,
    pairwise_distance,
    same_label,
)

METRICS: list[Distance] = ["euclidean", "squared_euclidean", "cosine"]


def reference(x: torch.Tensor, y: torch.Tensor, metric: Distance) -> torch.Tensor:
    out = torch.empty(len(x), len(y), dtype=x.dtype)
    for i in range(len(x)):
        for j in range(len(y)):
            if metric == "cosine":
                out[i, j] = 1 - torch.dot(x[i], y[j]) / (x[i].norm() * y[j].norm())
            else:
                sq = torch.sum((x[i] - y[j]) ** 2)
                out[i, j] = sq if metric == "squared_euclidean" else sq.sqrt()
    return out


@pytest.mark.parametrize("metric", METRICS)
def test_matches_pairwise_loops_float64(metric: Distance) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        pairwise_distance(x, distance=metric), reference(x, x, metric), atol=1e-6, rtol=1e-6
    )
    torch.testing.assert_close(
        pairwise_distance(x, y, distance=metric), reference(x, y, metric), atol=1e-6, rtol=1e-6
    )
    d = pairwise_distance(x, distance=metric)
    assert torch.equal(d.diagonal(), torch.zeros(9, dtype=torch.float64))
    torch.testing.assert_close(d, d.T)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric: Distance) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: pairwise_distance(a, distance=metric), (x,))
    assert torch.autograd.gradcheck(lambda a, b: pairwise_distance(a, b, distance=metric), (x, y))
    # a gradient on a few pairs only
    few = lambda a: pairwise_distance(a, distance=metric)[[0, 3, 7], [5, 2, 19]].sum()  # noqa: E731
    assert torch.autograd.gradcheck(few, (x,))


@pytest.mark.parametrize("metric", METRICS)
def test_coincident_points_have_zero_distance_and_finite_gradient(metric: Distance) -> None:
    base = torch.randn(4, 8)
    x = torch.cat([base, base, torch.ones(2, 8), torch.ones(2, 8)]).requires_grad_()
    d = pairwise_distance(x, distance=metric)
    assert d[0, 4].item() == pytest.approx(0.0, abs=1e-6)
    assert d[8, 10].item() == pytest.approx(0.0, abs=1e-6)
    (grad,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(grad).all()
    zeros = torch.zeros(5, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(pairwise_distance(zeros, distance=metric).sum(), zeros)
    assert torch.isfinite(grad).all()


def test_euclidean_gradient_at_coincidence_is_the_zero_subgradient() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], requires_grad=True)
    d = pairwise_distance(x)
    (grad,) = torch.autograd.grad(d[0, 1] + d[0, 2], x)
    # d(0,1) = 0 contributes nothing; d(0,2) = 5 contributes (x0 - x2)/5
    torch.testing.assert_close(grad, torch.tensor([[-0.6, -0.8], [0.0, 0.0], [0.6, 0.8]]))


@pytest.mark.parametrize("metric", METRICS)
def test_bf16_autocast_is_float32_and_finite(metric: Distance) -> None:
    lin = torch.nn.Linear(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = lin(torch.randn(12, 6))
        d = pairwise_distance(e, distance=metric)
    assert d.dtype == torch.float32 and torch.isfinite(d).all()
    d.sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    half = pairwise_distance(torch.randn(5, 3).bfloat16(), distance=metric)
    assert half.dtype == torch.float32


@pytest.mark.parametrize("metric", METRICS)
def test_twice_differentiable_and_torch_func(metric: Distance) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a: pairwise_distance(a, distance=metric), (x,))
    assert torch.autograd.gradgradcheck(
        lambda a, b: pairwise_distance(a, b, distance=metric), (x, y)
    )
    weights = torch.rand(7, 7, generator=g, dtype=torch.float64)
    f = lambda a: (pairwise_distance(a, distance=metric) * weights).sum()  # noqa: E731
    (want,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(torch.func.grad(f)(x.detach()), want)


def test_second_derivative_is_finite_at_coincident_points() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(pairwise_distance(x).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()


@pytest.mark.parametrize("norm", [1.0, 20.0, 300.0])
def test_near_coincident_points_are_accurate_in_float32(norm: float) -> None:
    """The matrix-product form alone gives 0 or ±50 % here; the exact recompute gives < 1 %."""
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(32, 64, generator=g), dim=1) * norm
    direction = F.normalize(torch.randn(64, generator=g), dim=0)
    for gap in (1e-2, 1e-3):
        pts = torch.cat([x, x[5:6] + gap * norm / 20 * direction])
        true = gap * norm / 20
        d = pairwise_distance(pts)
        assert d[5, 32].item() == pytest.approx(true, rel=1e-2)
        assert d[32, 5].item() == pytest.approx(true, rel=1e-2)
        cross = pairwise_distance(pts[-1:], x)
        assert cross[0, 5].item() == pytest.approx(true, rel=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_label_mask_matches_boolean(dtype: torch.dtype) -> None:
    labels = torch.tensor([5, 2**40 + 1, 5, 2**40, 7])  # large ids stay distinct
    mask = same_label(labels, dtype)
    assert mask.dtype == dtype
    assert torch.equal(mask.bool(), same_label(labels))


def test_unknown_metric_raises() -> None:
    with pytest.raises(ValueError, match="unknown distance"):
        pairwise_distance(torch.randn(3, 2), distance="manhattan")  # type: ignore[arg-type]


def test_label_masks() -> None:
    labels = torch.tensor([0, 1, 0, 2])
    positive, negative = label_masks(labels)
    for i in range(4):
        for j in range(4):
            assert positive[i, j] == (i != j and labels[i] == labels[j])
            assert negative[i, j] == (labels[i] != labels[j])
    assert torch.equal(same_label(labels), positive | torch.eye(4, dtype=torch.bool))


@settings(max_examples=25, deadline=None)
@given(
    metric=st.sampled_from(METRICS),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    n=st.integers(1, 8),
    duplicates=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_property_finite(
    metric: Distance, scale: float, n: int, duplicates: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g) * scale
    x = torch.cat([x, x[:duplicates]]).requires_grad_()
    d = pairwise_distance(x, distance=metric)
    assert torch.isfinite(d).all() and (d >= 0).all()
    weights = torch.rand(d.shape, generator=g)
    (grad,) = torch.autograd.grad((d * weights).sum(), x)
    assert torch.isfinite(grad).all()
    if metric == "euclidean" and scale == 1.0:
        torch.testing.assert_close(d, torch.cdist(x, x), atol=1e-3, rtol=1e-3)


def test_normalised_inputs_distance_range() -> None:
    x = F.normalize(torch.randn(64, 32), dim=1)
    d = pairwise_distance(x)
    assert d.max() <= 2.0 + 1e-5

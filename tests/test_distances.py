"""embedlab.distances: the one pairwise-distance function and the label masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from embedlab.distances import (
    Metric,
    distance_matrix,
    label_masks,
    pairwise_distance,
    same_label,
)

METRICS: list[Metric] = ["euclidean", "squared_euclidean", "cosine"]


def reference(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
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
def test_matches_pairwise_loops_float64(metric: Metric) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        pairwise_distance(x, metric=metric), reference(x, x, metric), atol=1e-6, rtol=1e-6
    )
    torch.testing.assert_close(
        pairwise_distance(x, y, metric=metric), reference(x, y, metric), atol=1e-6, rtol=1e-6
    )
    d = pairwise_distance(x, metric=metric)
    assert torch.equal(d.diagonal(), torch.zeros(9, dtype=torch.float64))
    torch.testing.assert_close(d, d.T)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck_dense_and_sparse_backward(metric: Metric) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: pairwise_distance(a, metric=metric), (x,))
    assert torch.autograd.gradcheck(lambda a, b: pairwise_distance(a, b, metric=metric), (x, y))
    # a gradient on only a few pairs per row takes the sparse backward path
    few = lambda a: pairwise_distance(a, metric=metric)[[0, 3, 7], [5, 2, 19]].sum()  # noqa: E731
    assert torch.autograd.gradcheck(few, (x,))


@pytest.mark.parametrize("metric", METRICS)
def test_coincident_points_have_zero_distance_and_finite_gradient(metric: Metric) -> None:
    base = torch.randn(4, 8)
    x = torch.cat([base, base, torch.ones(2, 8), torch.ones(2, 8)]).requires_grad_()
    d = pairwise_distance(x, metric=metric)
    assert d[0, 4].item() == pytest.approx(0.0, abs=1e-6)
    assert d[8, 10].item() == pytest.approx(0.0, abs=1e-6)
    (grad,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(grad).all()
    zeros = torch.zeros(5, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(pairwise_distance(zeros, metric=metric).sum(), zeros)
    assert torch.isfinite(grad).all()


def test_euclidean_gradient_at_coincidence_is_the_zero_subgradient() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]], requires_grad=True)
    d = pairwise_distance(x)
    (grad,) = torch.autograd.grad(d[0, 1] + d[0, 2], x)
    # d(0,1) = 0 contributes nothing; d(0,2) = 5 contributes (x0 - x2)/5
    torch.testing.assert_close(grad, torch.tensor([[-0.6, -0.8], [0.0, 0.0], [0.6, 0.8]]))


@pytest.mark.parametrize("metric", METRICS)
def test_bf16_autocast_is_float32_and_finite(metric: Metric) -> None:
    lin = torch.nn.Linear(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = lin(torch.randn(12, 6))
        d = pairwise_distance(e, metric=metric)
    assert d.dtype == torch.float32 and torch.isfinite(d).all()
    d.sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    half = pairwise_distance(torch.randn(5, 3).bfloat16(), metric=metric)
    assert half.dtype == torch.float32


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
@pytest.mark.parametrize("sparse", [False, True])
def test_distance_matrix_pullback_equals_autograd(metric: Metric, sparse: bool) -> None:
    g = torch.Generator().manual_seed(3)
    n, dim = (96, 512) if sparse else (10, 4)  # the large case takes the sparse product
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x[3] = x[1]  # a coincident pair: zero distance, zero sub-gradient
    grad = torch.randn(n, n, generator=g, dtype=torch.float64)
    if sparse:
        grad = grad * (torch.rand(n, n, generator=g, dtype=torch.float64) < 0.03)
    dist, pullback = distance_matrix(x, metric)  # type: ignore[arg-type]
    leaf = x.clone().requires_grad_()
    expected = pairwise_distance(leaf, metric=metric)
    torch.testing.assert_close(dist, expected.detach())
    (want,) = torch.autograd.grad((expected * grad).sum(), leaf, retain_graph=True)
    torch.testing.assert_close(pullback(grad.clone()), want)
    sym = grad + grad.T
    (want_sym,) = torch.autograd.grad((expected * sym).sum(), leaf)
    torch.testing.assert_close(pullback(sym.clone(), symmetric=True), want_sym)
    assert torch.isfinite(want).all()


def test_distance_matrix_low_precision_and_errors() -> None:
    x = torch.randn(6, 3).bfloat16()
    dist, pullback = distance_matrix(x)
    assert dist.dtype == torch.float32 and torch.isfinite(dist).all()
    assert pullback(torch.ones(6, 6)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown metric"):
        distance_matrix(x, "cosine")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_label_mask_matches_boolean(dtype: torch.dtype) -> None:
    labels = torch.tensor([5, 2**40 + 1, 5, 2**40, 7])  # large ids stay distinct
    mask = same_label(labels, dtype)
    assert mask.dtype == dtype
    assert torch.equal(mask.bool(), same_label(labels))


def test_unknown_metric_raises() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_distance(torch.randn(3, 2), metric="manhattan")  # type: ignore[arg-type]


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
def test_property_finite(metric: Metric, scale: float, n: int, duplicates: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g) * scale
    x = torch.cat([x, x[:duplicates]]).requires_grad_()
    d = pairwise_distance(x, metric=metric)
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

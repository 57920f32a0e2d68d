"""The baseline losses equal pytorch-metric-learning's implementations (float64, 1e-5)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from embedlab import losses as L
from embedlab.miners import MultiSimilarityMiner
from test_losses import LABELS, make_batch

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import losses as pl  # noqa: E402
from pytorch_metric_learning import miners as pm  # noqa: E402

Pair = tuple[
    Callable[[], torch.nn.Module], Callable[[torch.nn.Module], Callable[[Tensor, Tensor], Tensor]]
]


def mined(loss: torch.nn.Module, miner: torch.nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda x, y: loss(x, y, miner(x, y))


def _same(module: torch.nn.Module, name: str, value: Tensor) -> torch.nn.Module:
    getattr(module, name).data = value.detach().clone()
    return module


CASES: dict[str, Pair] = {
    "circle-reid": (L.CircleLoss, lambda ours: pl.CircleLoss(m=0.25, gamma=128)),
    "circle-dml": (lambda: L.CircleLoss(m=0.4, gamma=80), lambda ours: pl.CircleLoss()),
    "multi-similarity": (L.MultiSimilarityLoss, lambda ours: pl.MultiSimilarityLoss(2, 50, 0.5)),
    "multi-similarity-mined": (
        lambda: L.MultiSimilarityLoss(miner=MultiSimilarityMiner(0.1)),
        lambda ours: mined(pl.MultiSimilarityLoss(2, 50, 0.5), pm.MultiSimilarityMiner(0.1)),
    ),
    "supcon": (L.SupConLoss, lambda ours: pl.SupConLoss(temperature=0.1)),
    "proxy-anchor": (
        lambda: L.ProxyAnchorLoss(16, 5),
        lambda ours: _same(
            pl.ProxyAnchorLoss(16, 5, margin=0.1, alpha=32), "proxies", ours.proxies
        ),
    ),
    "arcface": (
        lambda: L.ArcFaceLoss(16, 5),
        lambda ours: _same(
            pl.ArcFaceLoss(16, 5, margin=math.degrees(0.5), scale=64), "W", ours.weight.T
        ),
    ),
    "cosface": (
        lambda: L.CosFaceLoss(16, 5),
        lambda ours: _same(pl.CosFaceLoss(16, 5, margin=0.35, scale=64), "W", ours.weight.T),
    ),
    "subcenter-arcface": (
        lambda: L.SubCenterArcFaceLoss(16, 5),
        lambda ours: _same(
            pl.SubCenterArcFaceLoss(
                num_classes=16, embedding_size=5, margin=math.degrees(0.5), scale=64, sub_centers=3
            ),
            "W",
            ours.weight.T,
        ),
    ),
}


@pytest.mark.parametrize("batch", ["P4K2", "P3K4", "unequalK"])
@pytest.mark.parametrize("case", list(CASES))
def test_equals_pytorch_metric_learning(case: str, batch: str) -> None:
    make_ours, make_theirs = CASES[case]
    ours = make_ours().double()
    theirs = make_theirs(ours)
    labels = torch.tensor(LABELS[batch])
    x = make_batch(LABELS[batch], seed=3)
    value = ours(x, labels)
    expected = theirs(x, labels)
    torch.testing.assert_close(value, expected.to(value.dtype), atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(value, x)
    (g_theirs,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=1e-5)

"""Learning-rate schedules of MetricLearningModule, against their formulas."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from embedlab.losses import TripletLoss
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import MetricLearningModule


def module(**kwargs: Any) -> MetricLearningModule:
    return MetricLearningModule(
        EmbeddingModel(SmallCNN(), embedding_dim=8), TripletLoss(), **kwargs
    )


def test_warmup_then_multistep() -> None:
    m = module(scheduler="multistep", milestones=[4, 6], gamma=0.5, warmup_epochs=2)
    got = [m.lr_factor(e) for e in range(8)]
    assert got == pytest.approx([0.1, 0.55, 1, 1, 0.5, 0.5, 0.25, 0.25])


def test_exponential_decay_of_hermans_et_al() -> None:
    # ε(t) = ε0 for t <= t0, ε0 · 0.001^((t − t0)/(t1 − t0)) up to t1, then constant
    m = module(scheduler="exponential", milestones=[150, 250], gamma=0.001)
    for epoch in (0, 149, 150, 175, 200, 250, 300):
        want = 0.001 ** (min(max(epoch - 150, 0), 100) / 100)
        assert m.lr_factor(epoch) == pytest.approx(want)
    assert m.lr_factor(200) == pytest.approx(10**-1.5)


@pytest.mark.parametrize("milestones", [[], [10], [20, 10], [1, 2, 3]])
def test_exponential_needs_start_and_end(milestones: list[int]) -> None:
    with pytest.raises(ValueError, match="model.milestones"):
        module(scheduler="exponential", milestones=milestones)


def test_cosine_after_warmup() -> None:
    m = module(scheduler="cosine", warmup_epochs=2)
    m._trainer = SimpleNamespace(max_epochs=12)  # type: ignore[assignment]
    assert m.lr_factor(2) == pytest.approx(1.0)
    assert m.lr_factor(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert m.lr_factor(12) == pytest.approx(0.0, abs=1e-12)


def test_scheduler_drives_the_optimiser() -> None:
    m = module(scheduler="exponential", milestones=[1, 3], gamma=0.01)
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    base = opt.param_groups[0]["lr"]
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"] / base)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.01])
    assert isinstance(opt, torch.optim.Optimizer)

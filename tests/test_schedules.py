"""Learning-rate schedules (embedlab.schedules), against their formulas, through the module."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from embedlab.cli import main
from embedlab.errors import ConfigError
from embedlab.losses import TripletLoss
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import MetricLearningModule
from embedlab.schedules import ExponentialDecay, WarmupCosine, WarmupMultiStep, WarmupSchedule

DIGITS = str(Path(__file__).resolve().parents[1] / "experiments" / "digits.yaml")


def optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def factors(schedule: WarmupSchedule, epochs: range) -> list[float]:
    return [schedule.factor(e) for e in epochs]


def test_warmup_then_multistep() -> None:
    s = WarmupMultiStep(optimizer(), milestones=[4, 6], gamma=0.5, warmup_epochs=2)
    assert factors(s, range(8)) == pytest.approx([0.1, 0.55, 1, 1, 0.5, 0.5, 0.25, 0.25])


def test_exponential_decay_of_hermans_et_al() -> None:
    # ε(t) = ε0 for t <= t0, ε0 · 0.001^((t − t0)/(t1 − t0)) up to t1, then constant
    s = ExponentialDecay(optimizer(), start=150, end=250, gamma=0.001)
    for epoch in (0, 149, 150, 175, 200, 250, 300):
        want = 0.001 ** (min(max(epoch - 150, 0), 100) / 100)
        assert s.factor(epoch) == pytest.approx(want)
    assert s.factor(200) == pytest.approx(10**-1.5)


@pytest.mark.parametrize(("start", "end"), [(10, 10), (20, 10)])
def test_exponential_needs_start_before_end(start: int, end: int) -> None:
    with pytest.raises(ConfigError, match="start"):
        ExponentialDecay(optimizer(), start=start, end=end)


def test_cosine_after_warmup() -> None:
    s = WarmupCosine(optimizer(), epochs=12, warmup_epochs=2)
    assert s.factor(2) == pytest.approx(1.0)
    assert s.factor(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s.factor(12) == pytest.approx(0.0, abs=1e-12)
    assert s.factor(20) == pytest.approx(0.0, abs=1e-12)


def module(**kwargs: Any) -> MetricLearningModule:
    return MetricLearningModule(
        EmbeddingModel(SmallCNN(), embedding_dim=8), TripletLoss(), **kwargs
    )


def test_the_module_steps_its_schedule_once_per_epoch() -> None:
    m = module(lr_scheduler=partial(ExponentialDecay, start=1, end=3, gamma=0.01))
    conf = m.configure_optimizers()
    assert conf["lr_scheduler"]["interval"] == "epoch"
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    base = opt.param_groups[0]["lr"]
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"] / base)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_a_cosine_without_epochs_ends_at_max_epochs() -> None:
    m = module(lr_scheduler=partial(WarmupCosine, warmup_epochs=2))
    m._trainer = SimpleNamespace(max_epochs=12)  # type: ignore[assignment]
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert sched.epochs == 12 and sched.factor(7) == pytest.approx(0.5)


def test_no_schedule_is_a_constant_learning_rate() -> None:
    conf = module().configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.Adam) and "lr_scheduler" not in conf


def test_any_torch_scheduler_by_class_path(capsys: pytest.CaptureFixture[str]) -> None:
    step = "torch.optim.lr_scheduler.StepLR"
    with pytest.raises(SystemExit):
        main(
            ["fit", "--config", DIGITS, f"--model.lr_scheduler={step}"]
            + ["--model.lr_scheduler.init_args.step_size=5", "--print_config"]
        )
    printed = capsys.readouterr().out
    assert step in printed and "step_size: 5" in printed

"""Numerical guards: a non-finite loss stops training with the step, the term and the labels."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from embedlab.data import RetrievalDataModule
from embedlab.losses import TripletLoss
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import LossTerm, MetricLearningModule, NonFiniteLossError


class NaNOnSecondCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        self.calls += 1
        return x.sum() * (torch.nan if self.calls == 2 else 0.0)


def fit(nonfinite: str, tmp_path: Path) -> MetricLearningModule:
    module = MetricLearningModule(
        EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=8, normalize=True),
        TripletLoss(margin=0.2),
        aux_losses=[LossTerm(NaNOnSecondCall(), name="probe")],
        nonfinite=nonfinite,  # type: ignore[arg-type]
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, RetrievalDataModule(p=4, k=2, batches_per_epoch=4))
    return module


def test_nan_loss_stops_with_step_term_and_labels(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"'probe' at global step 1 .*batch labels: \[\d"):
        fit("error", tmp_path)


def test_nan_loss_step_is_skipped_when_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = fit("skip", tmp_path)
    assert module.losses[1].loss.calls == 4  # training went on after the bad batch
    # had the NaN reached the optimiser, every weight would now be NaN
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert "skipping step" in capsys.readouterr().out


def test_loss_parameters_get_their_own_optimiser_group() -> None:
    from embedlab.losses import CenterLoss, MarginLoss

    module = MetricLearningModule(
        EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=8, normalize=True),
        MarginLoss(),
        loss_lr=0.1,
        aux_losses=[LossTerm(CenterLoss(num_classes=10, embedding_dim=8), weight=5e-4, lr=0.5)],
        optimizer=partial(torch.optim.SGD, lr=0.01),
    )
    optimizer = module.configure_optimizers()["optimizer"]
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"model": 0.01, "MarginLoss": 0.1, "CenterLoss": 0.5}
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in module.parameters() if p.requires_grad)

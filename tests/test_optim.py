"""A loss term with its own optimiser: CenterLoss centres by SGD at lr 0.5 (Bag-of-Tricks code)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch

from embedlab.data import RetrievalDataModule
from embedlab.losses import CenterLoss, TripletLoss
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import LossTerm, MetricLearningModule
from embedlab.optim import ChainedOptimizer

WEIGHT = 5e-4


def bot_like_module() -> MetricLearningModule:
    torch.manual_seed(0)
    return MetricLearningModule(
        EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=8, normalize=False),
        TripletLoss(margin=0.3),
        aux_losses=[
            LossTerm(
                CenterLoss(num_classes=10, embedding_dim=8),
                weight=WEIGHT,
                optimizer=partial(torch.optim.SGD, lr=0.5),
            )
        ],
        num_classes=10,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.1),
    )


def test_centres_follow_sgd_on_the_unweighted_loss_and_the_schedule_skips_them() -> None:
    module = bot_like_module()
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, ChainedOptimizer)
    centres = module.losses[1].loss.centers
    model_params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(centres) not in model_params  # Adam and the schedule never see the centres
    features = torch.randn(16, 8, requires_grad=True)
    labels = torch.arange(16) % 4
    before = centres.detach().clone()
    optimizer.zero_grad()
    loss = WEIGHT * module.losses[1].loss(features, labels)
    loss.backward()
    grad = centres.grad.detach().clone() / WEIGHT  # the unweighted loss's gradient
    optimizer.step()
    torch.testing.assert_close(centres.detach(), before - 0.5 * grad)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 1e-4  # the model's lr is scheduled ...
    assert optimizer.others[0].param_groups[0]["lr"] == 0.5  # ... the centres' is not
    state = optimizer.state_dict()
    fresh = bot_like_module().configure_optimizers()["optimizer"]
    fresh.load_state_dict(state)
    assert fresh.others[0].state_dict() == optimizer.others[0].state_dict()


def test_a_fit_with_a_term_optimiser(tmp_path: Path) -> None:
    module = bot_like_module()
    before = module.losses[1].loss.centers.detach().clone()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, RetrievalDataModule(p=4, k=2, batches_per_epoch=2))
    after = module.losses[1].loss.centers.detach()
    assert torch.isfinite(after).all() and not torch.equal(before, after)


def test_fp16_with_a_term_optimiser_is_a_config_error() -> None:
    from types import SimpleNamespace

    import pytest

    from embedlab.errors import ConfigError

    module = bot_like_module()
    module._trainer = SimpleNamespace(precision="16-mixed", max_epochs=1)  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="trainer.precision=16-mixed"):
        module.configure_optimizers()

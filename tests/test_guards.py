"""Numerical guards: a non-finite loss stops training with the step, the term and the labels."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from embedlab.callbacks import NonFiniteLossError
from embedlab.data import RetrievalDataModule
from embedlab.losses import TripletLoss
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import LossTerm, MetricLearningModule


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


# -- host synchronisations ------------------------------------------------------------------------
class SyncCounter(pl.Callback):
    """Counts Tensor -> Python conversions between the start and the end of each training batch."""

    PATCHED = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self) -> None:
        self.per_step: list[int] = []
        self._count = 0
        self._active = False
        self._originals = {name: getattr(Tensor, name) for name in self.PATCHED}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, original in self._originals.items():

            def counted(t: Tensor, *args: object, _original: object = original) -> object:
                if self._active:
                    self._count += 1
                return _original(t, *args)  # type: ignore[operator]

            monkeypatch.setattr(Tensor, name, counted)

    def on_train_batch_start(self, *args: object) -> None:
        self._count, self._active = 0, True

    def on_train_batch_end(self, *args: object) -> None:
        self._active = False
        self.per_step.append(self._count)


def test_at_most_one_host_sync_per_training_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedlab.losses import CenterLoss

    module = MetricLearningModule(
        EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=8, normalize=True),
        TripletLoss(margin=0.2),
        aux_losses=[LossTerm(CenterLoss(num_classes=10, embedding_dim=8), weight=5e-4)],
        num_classes=10,
        # Adam would add one `.item()` per parameter: its step counter, a CPU tensor even when
        # the parameters are on an accelerator (no device synchronisation)
        optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9),
    )
    counter = SyncCounter()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        log_every_n_steps=1000,  # Lightning reduces the logged tensors at the log interval
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[counter],
        default_root_dir=tmp_path,
    )
    data = RetrievalDataModule(p=4, k=2, batches_per_epoch=4)
    data.setup("fit")
    loader = data.train_dataloader()
    counter.install(monkeypatch)
    trainer.fit(module, train_dataloaders=loader)
    assert len(counter.per_step) == 4
    assert max(counter.per_step) <= 1, counter.per_step
    assert min(counter.per_step) >= 1  # the counter sees the fused check itself


# -- nonfinite: skip under DDP ---------------------------------------------------------------------
class NaNValueOnRank1(nn.Module):
    """A loss whose value (not its gradient) is NaN on rank 1 at its second call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        self.calls += 1
        bad = self.calls == 2 and torch.distributed.get_rank() == 1
        return x.sum() * 0.0 + (torch.tensor(torch.nan) if bad else torch.tensor(0.0))


class RecordSkips(pl.Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.skipped: list[int] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, *args: object
    ) -> None:
        if all(p.grad is None for p in module.parameters()):
            self.skipped.append(trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        weights = torch.cat([p.detach().flatten() for p in module.parameters()])
        torch.save(
            {"skipped": self.skipped, "weights": weights},
            self.folder / f"rank{trainer.global_rank}.pt",
        )


@pytest.mark.slow
def test_ddp_nan_on_one_rank_every_rank_skips_the_same_step(tmp_path: Path) -> None:
    module = MetricLearningModule(
        EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=8, normalize=True),
        TripletLoss(margin=0.2),
        aux_losses=[LossTerm(NaNValueOnRank1(), name="probe")],
        nonfinite="skip",
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[RecordSkips(tmp_path)],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, RetrievalDataModule(p=2, k=2, batches_per_epoch=3))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # the second step (global_step 2 once it is done), on both ranks, although only rank 1 saw
    # the NaN and every gradient was finite: without the all-reduce rank 0 would have stepped
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == [2]
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)
    assert torch.isfinite(ranks[0]["weights"]).all()


class NaNValueOnFirstCall(nn.Module):
    """A NaN loss value without a NaN gradient, at the first call only."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        self.calls += 1
        return x.sum() * 0.0 + (torch.tensor(torch.nan) if self.calls == 1 else torch.tensor(0.0))


def test_nan_in_an_accumulated_micro_batch_is_caught(tmp_path: Path) -> None:
    module = MetricLearningModule(
        EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=8, normalize=True),
        TripletLoss(margin=0.2),
        aux_losses=[LossTerm(NaNValueOnFirstCall(), name="probe")],
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        accumulate_grad_batches=2,  # the NaN is in the first of the two micro-batches
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match="'probe' at global step 0"):
        trainer.fit(module, RetrievalDataModule(p=4, k=2, batches_per_epoch=2))

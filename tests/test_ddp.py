"""DDP on the CPU (gloo, 2 processes, ddp_spawn) computes what one process computes."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from embedlab.cli import main
from embedlab.data import RetrievalDataModule
from embedlab.losses import TripletLoss
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import MetricLearningModule

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class RecordSteps(pl.Callback):
    """Writes, per rank, the labels of each training batch and the logged loss."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        row = {
            "step": trainer.global_step,
            "labels": batch[1].tolist(),
            "loss": float(trainer.callback_metrics["train/loss"]),
        }
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def make_module() -> MetricLearningModule:
    torch.manual_seed(0)
    model = EmbeddingModel(
        SmallCNN(width=8, depth=2, batch_norm=False), embedding_dim=16, normalize=True
    )
    return MetricLearningModule(
        model,
        TripletLoss(margin=0.2),
        optimizer=partial(torch.optim.SGD, lr=0.5),
        gather_embeddings=True,
    )


def train(devices: int, p: int, folder: Path) -> dict[str, torch.Tensor]:
    folder.mkdir()
    module = make_module()
    data = RetrievalDataModule(p=p, k=3, batches_per_epoch=3, seed=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        precision="64-true",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordSteps(folder)],
    )
    trainer.fit(module, data)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_ranks_with_gathered_mining_equal_one_process(tmp_path: Path) -> None:
    single = train(1, 6, tmp_path / "single")
    ddp = train(2, 3, tmp_path / "ddp")
    one = read(tmp_path / "single" / "rank0.jsonl")
    r0, r1 = read(tmp_path / "ddp" / "rank0.jsonl"), read(tmp_path / "ddp" / "rank1.jsonl")
    assert len(one) == len(r0) == len(r1) == 6
    for a, b0, b1 in zip(one, r0, r1, strict=True):
        assert not set(b0["labels"]) & set(b1["labels"]), "an identity on two ranks in one step"
        assert b0["labels"] + b1["labels"] == a["labels"]
        assert b0["loss"] == pytest.approx(a["loss"], abs=1e-10)
        assert b1["loss"] == pytest.approx(a["loss"], abs=1e-10)
    moved = max((single[k] - make_module().state_dict()[k]).abs().max().item() for k in single)
    assert moved > 1e-3  # the test trains for real
    # ddp_spawn hands rank 0's float64 weights back to the parent's float32 module
    for key in single:
        torch.testing.assert_close(
            ddp[key], single[key].to(ddp[key].dtype), atol=1e-7, rtol=0, msg=key
        )


def test_evaluation_metrics_under_ddp_equal_one_process(tmp_path: Path) -> None:
    # Lightning gives each of the 2 spawned CPU processes 1 thread; BLAS sums depend on the thread
    # count in the last bit, so the single process uses 1 thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    results = []
    for devices in (1, 2):
        # batches of one: a sample's embedding then cannot depend on which rank's batch it is in
        data = RetrievalDataModule(p=4, k=2, eval_batch_size=1)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy="ddp_spawn" if devices > 1 else "auto",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        results.append(trainer.test(make_module(), data, verbose=False)[0])
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    single, ddp = results
    assert single["test/num_valid_queries"] == 237  # 719 test images: odd, so one is padded
    assert single == ddp


def test_cli_fit_with_ddp_spawn_logs_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = [
        "fit",
        "--config",
        str(ROOT / "experiments" / "digits.yaml"),
        f"--output_root={tmp_path}",
        "--trainer.strategy=ddp_spawn",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=2",
        "--trainer.check_val_every_n_epoch=1",
        "--data.p=5",
        "--data.batches_per_epoch=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--model.gather_embeddings=true",
    ]
    assert main(args) == 0
    out, err = capfd.readouterr()
    for noise in ("sync_dist", "Warning", "deprecat", "v_num"):  # the ranks' consoles as well
        assert noise not in out + err, (noise, (out + err)[-3000:])
    runs = list((tmp_path / "digits").iterdir())
    assert [r.name for r in runs] == ["version_0"]
    metrics = pd.read_csv(runs[0] / "metrics.csv")
    val = metrics.dropna(subset=["val/map@r"])
    assert val["epoch"].tolist() == [0, 1]  # one row per validation: rank 0 only
    assert metrics.dropna(subset=["train/loss"])["step"].is_unique
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()

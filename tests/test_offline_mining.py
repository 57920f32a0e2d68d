"""FaceNet's offline triplet mining: brute-force mining reference, the batches the sampler
serves, resume of a plan, the gather/plan logic of a fake DDP world, and `embedlab fit`."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from embedlab.callbacks.offline_mining import (
    OfflineTripletMining,
    ServedTripletMiner,
    batch_plan,
    mine_triplets,
    shard,
    unshard,
)
from embedlab.cli import main
from embedlab.data import RetrievalDataModule
from embedlab.data.sampler import PKBatchSampler
from embedlab.errors import ConfigError
from embedlab.losses import ContrastiveLoss, ImprovedTripletLoss, TripletLoss
from embedlab.miners import BatchHardMiner, SemiHardMiner
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import LossTerm, MetricLearningModule

ROOT = Path(__file__).resolve().parents[1]


def brute_force(x: torch.Tensor, y: torch.Tensor, strategy: str, margin: float) -> set[tuple]:
    d = torch.cdist(x, x)
    n = len(y)
    found: set[tuple] = set()
    for a in range(n):
        pos = [p for p in range(n) if p != a and y[p] == y[a]]
        neg = [j for j in range(n) if y[j] != y[a]]
        if not pos or not neg:
            continue
        if strategy == "hardest":
            p = max(pos, key=lambda j: d[a, j].item())
            found.add((a, p, min(neg, key=lambda j: d[a, j].item())))
            continue
        for p in pos:
            semi = [j for j in neg if d[a, p] < d[a, j] < d[a, p] + margin]
            if semi:
                found.add((a, p, min(semi, key=lambda j: d[a, j].item())))
    return found


@pytest.mark.parametrize("strategy", ["hardest", "semi_hard"])
def test_mined_triplets_equal_brute_force(strategy: str) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, generator=generator)
    y = torch.randint(0, 6, (40,), generator=generator)
    y[0] = 99  # an anchor without a positive gives no triplet
    got = {tuple(t) for t in mine_triplets(x, y, strategy, 0.5).tolist()}  # type: ignore[arg-type]
    want = brute_force(x, y, strategy, 0.5)
    assert got == want
    assert len(want) > 10
    assert not any(t[0] == 0 for t in got)
    if strategy == "semi_hard":
        assert got != {tuple(t) for t in mine_triplets(x, y, "semi_hard", 5.0).tolist()}


def test_batch_plan_is_made_of_triplets_and_seeded() -> None:
    triplets = np.arange(30).reshape(10, 3) + 100
    plan = batch_plan(triplets, 4, 2, 8, np.random.default_rng(0))
    assert len(plan) == 4 and all(len(step) == 2 for step in plan)
    rows = {tuple(t) for t in triplets.tolist()}
    for step in plan:
        for batch in step:
            assert len(batch) == 8
            assert (batch[0], batch[1], batch[2]) in rows and (batch[3], batch[4], batch[5]) in rows
            assert batch[6:] == batch[:2]
    assert plan == batch_plan(triplets, 4, 2, 8, np.random.default_rng(0))
    assert plan != batch_plan(triplets, 4, 2, 8, np.random.default_rng(1))
    with pytest.raises(ConfigError, match="at least 3"):
        batch_plan(triplets, 1, 1, 2, np.random.default_rng(0))


def test_fake_world_gathers_the_subset_and_agrees_on_the_plan() -> None:
    """What 3 ranks do: each embeds its shard, the all-gather stacks them; the gathered set is
    the whole subset in order and the seeded plan is the same on every rank."""
    n, world = 11, 3
    full = torch.randn(n, 5)
    gathered = torch.stack([full[torch.as_tensor(shard(n, r, world))] for r in range(world)])
    assert gathered.shape == (world, 4, 5)
    torch.testing.assert_close(unshard(gathered, n), full)
    labels = torch.arange(n) % 3
    triplets = mine_triplets(unshard(gathered, n), labels, "hardest", 0.2).numpy()
    plans = [batch_plan(triplets, 2, world, 6, np.random.default_rng([0, 1, 1])) for _ in range(3)]
    assert plans[0] == plans[1] == plans[2]
    assert sorted(np.concatenate([shard(n, r, world) for r in range(world)])[:n].tolist()) != []
    assert set(np.concatenate([shard(n, r, world) for r in range(world)]).tolist()) == set(range(n))


def test_sampler_serves_a_plan_and_resumes_it() -> None:
    labels = np.repeat(np.arange(6), 5)
    sampler = PKBatchSampler(labels, p=2, k=3, seed=1, batches_per_epoch=6)
    plain = list(sampler)
    plan = [[[i, i, i, i + 1, i + 1, i + 1]] for i in range(3)]
    assert sampler.serve(plan) == 6  # the next undrawn batch: epoch 0 was drawn
    sampler.set_epoch(1)
    assert sampler.serve(plan) == 6
    epoch1 = list(sampler)
    assert epoch1[:3] == [b[0] for b in plan]
    fresh = PKBatchSampler(labels, p=2, k=3, seed=1, batches_per_epoch=6)
    fresh.set_epoch(1)
    assert epoch1[3:] == list(fresh)[3:]  # the P×K stream underneath is untouched
    assert plain != epoch1
    # resume two batches into epoch 1: the rest of the plan, then P×K
    resumed = PKBatchSampler(labels, p=2, k=3, seed=1, batches_per_epoch=6)
    resumed.load_state_dict(sampler.state_dict())
    resumed.start_batch = 2
    assert list(resumed) == epoch1[2:]
    assert sampler.serve(plan) == 12  # for epoch 2, then withdrawn
    sampler.clear_plan()
    sampler.set_epoch(2)
    fresh.set_epoch(2)
    assert list(sampler) == list(fresh)
    with pytest.raises(ValueError, match="batch 0 must hold 1 per-rank lists of p·k = 6"):
        sampler.serve([[[1, 2]]])


class Record(pl.Callback):
    """The dataset indices of each training batch, and each refresh of the mining callback."""

    def __init__(self, mining: OfflineTripletMining) -> None:
        self.mining = mining
        self.batches: list[list[int]] = []
        self.refreshes: list[dict[str, Any]] = []
        self.blocks: list[list[int | None]] = []  # train_on="mined": the served miners' blocks

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        self.batches.append(batch[3].tolist())
        self.blocks.append([served.block for _, served in self.mining.served])
        self._note()

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self._note()

    def _note(self) -> None:
        last = self.mining.last
        if last and (not self.refreshes or self.refreshes[-1]["start"] != last["start"]):
            self.refreshes.append(dict(last))


def test_callback_serves_mined_batches_at_its_interval() -> None:
    torch.manual_seed(0)
    model = EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=16, normalize=True)
    module = MetricLearningModule(
        model, TripletLoss(margin=0.2), optimizer=partial(torch.optim.SGD, lr=0.1)
    )
    data = RetrievalDataModule(p=4, k=4, batches_per_epoch=5, seed=2)
    mining = OfflineTripletMining(every_n_steps=3, subset_size=60, strategy="hardest", seed=4)
    record = Record(mining)  # runs after the mining callback
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=8,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[mining, record],
    )
    trainer.fit(module, data)
    assert len(record.batches) == 8
    starts = [r["start"] for r in record.refreshes]
    assert starts[0] == 0 and len(starts) == 3  # at steps 0, 3 and 6
    assert starts[1] in (3, 4) and starts[2] in (6, 7)  # from the first batch not yet drawn
    labels = data.train_set.labels
    for number, refresh in enumerate(record.refreshes):
        subset = refresh["subset"]
        assert len(subset) <= 60 and len(np.unique(labels[subset])) < len(subset)  # has positives
        local = brute_force(refresh["embeddings"], torch.as_tensor(labels[subset]), "hardest", 0.2)
        mined = {tuple(t) for t in refresh["triplets"].tolist()}
        assert mined == {tuple(subset[list(t)].tolist()) for t in local}
        end = starts[number + 1] if number + 1 < len(starts) else len(record.batches)
        for step in range(refresh["start"], end):
            batch = record.batches[step]
            for t in range(5):  # 16 = 5 triplets + anchor and positive of the first
                assert tuple(batch[3 * t : 3 * t + 3]) in mined
    first, second = record.refreshes[0]["start"], record.refreshes[1]["start"]
    assert record.batches[first] != record.batches[second]
    assert record.refreshes[0]["subset"].tolist() != record.refreshes[1]["subset"].tolist()
    # the batches in between came from the first plan, none is a P×K batch
    for step in range(first, second):
        assert len(set(labels[record.batches[step]].tolist())) != 4


def test_fit_on_digits_with_the_callback_by_class_path(tmp_path: Path) -> None:
    extra = tmp_path / "mining.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "embedlab.callbacks.OfflineTripletMining",
                            "init_args": {"every_n_steps": 2, "subset_size": 100},
                        }
                    ]
                }
            }
        )
    )
    code = main(
        [
            "fit",
            "--config",
            str(ROOT / "experiments" / "digits.yaml"),
            "--config",
            str(extra),
            f"--output_root={tmp_path}",
            "--trainer.max_epochs=1",
            "--data.batches_per_epoch=5",
            "--trainer.limit_val_batches=0",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert code in (0, None)
    metrics = pd.read_csv(tmp_path / "digits" / "version_0" / "metrics.csv")
    assert metrics["mining/triplets"].dropna().gt(0).all()
    assert metrics["mining/triplets"].dropna().nunique() == 2  # refreshes at steps 2 and 4


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="every_n_steps"):
        OfflineTripletMining(every_n_steps=0, subset_size=10)
    with pytest.raises(ConfigError, match="strategy"):
        OfflineTripletMining(every_n_steps=1, subset_size=10, strategy="easy")  # type: ignore[arg-type]


def test_lightning_advances_the_pk_sampler_epoch() -> None:
    """The plan is keyed by absolute step, so the sampler must know the epoch: Lightning's
    ``set_epoch`` reaches it through ``batch_sampler.sampler``."""
    torch.manual_seed(0)
    model = EmbeddingModel(SmallCNN(width=4, depth=1), embedding_dim=8)
    module = MetricLearningModule(model, TripletLoss(margin=0.2))
    data = RetrievalDataModule(p=3, k=2, batches_per_epoch=2, seed=0)
    mining = OfflineTripletMining(every_n_steps=100, subset_size=8)
    record = Record(mining)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(module, data)
    assert data.train_sampler is not None and data.train_sampler.epoch == 1
    assert record.batches[:2] != record.batches[2:]


class RecordRank(pl.Callback):
    """Per rank, writes each training batch's indices and the plan the mining callback served."""

    def __init__(self, mining: OfflineTripletMining, folder: Path) -> None:
        self.mining, self.folder = mining, folder

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        sampler = trainer.datamodule.train_sampler
        row = {
            "step": trainer.global_step - 1,
            "batch": batch[3].tolist(),
            "plan": {str(k): v for k, v in sampler.plan.items()},
            "subset": self.mining.last["subset"].tolist(),
            "triplets": self.mining.last["triplets"].tolist(),
        }
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.slow
def test_two_ranks_mine_the_gathered_subset_and_share_one_plan(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EmbeddingModel(SmallCNN(width=4, depth=1, batch_norm=False), embedding_dim=8)
    module = MetricLearningModule(model, TripletLoss(margin=0.2))
    data = RetrievalDataModule(p=3, k=2, batches_per_epoch=4, seed=0)
    mining = OfflineTripletMining(every_n_steps=2, subset_size=30, strategy="hardest")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[mining, RecordRank(mining, tmp_path)],
    )
    trainer.fit(module, data)
    ranks = [
        [json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()]
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 4
    for r0, r1 in zip(*ranks, strict=True):
        assert r0["plan"] == r1["plan"] and r0["triplets"] == r1["triplets"]
        assert r0["subset"] == r1["subset"]
        for r, row in enumerate((r0, r1)):
            assert row["batch"] == row["plan"][str(row["step"])][r]
        assert r0["batch"] != r1["batch"]
    # the gathered subset was mined as a whole: triplets span both ranks' shards
    subset = ranks[0][0]["subset"]
    positions = {i: n for n, i in enumerate(subset)}
    shards = {positions[i] % 2 for t in ranks[0][0]["triplets"] for i in t}
    assert shards == {0, 1}


def test_subset_is_seeded_by_identity_with_positives_and_negatives() -> None:
    labels = np.repeat(np.arange(10), 50)
    mining = OfflineTripletMining(every_n_steps=5, subset_size=100, seed=3)
    first = mining.subset(labels, 0)
    assert len(first) == 100 and len(set(first.tolist())) == 100
    counts = np.bincount(labels[first])
    assert counts.max() == 40 and (counts > 0).sum() == 3  # 40 + 40 + 20
    assert first.tolist() == mining.subset(labels, 0).tolist()
    assert first.tolist() != mining.subset(labels, 1).tolist()
    small = OfflineTripletMining(every_n_steps=5, subset_size=30).subset(labels, 0)
    assert np.bincount(labels[small]).max() == 15  # at most half: two identities at least
    with pytest.raises(ConfigError, match="two identities"):
        OfflineTripletMining(every_n_steps=1, subset_size=10).subset(np.arange(10), 0)


def _mining_run(max_steps: int, ckpt: Path | None, save: Path | None) -> Record:
    """Train with the callback; ``save``: checkpoint every 4 steps there (mid-epoch at 4)."""
    torch.manual_seed(0)
    model = EmbeddingModel(SmallCNN(width=8, depth=2), embedding_dim=16, normalize=True)
    module = MetricLearningModule(
        model, TripletLoss(margin=0.2), optimizer=partial(torch.optim.SGD, lr=0.1)
    )
    data = RetrievalDataModule(p=4, k=3, batches_per_epoch=5, seed=2)
    mining = OfflineTripletMining(every_n_steps=3, subset_size=40, strategy="semi_hard", seed=1)
    record = Record(mining)
    callbacks: list[pl.Callback] = [mining, record]
    if save is not None:
        callbacks.append(ModelCheckpoint(save, every_n_train_steps=4, save_top_k=-1))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=save is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=callbacks,
    )
    trainer.fit(module, data, ckpt_path=ckpt, weights_only=False)  # our own checkpoint
    return record


def test_resume_mid_plan_serves_the_uninterrupted_batches(tmp_path: Path) -> None:
    whole = _mining_run(8, None, tmp_path)  # step 4: mid-epoch, inside the second plan
    resumed = _mining_run(8, tmp_path / "epoch=0-step=4.ckpt", None)
    assert len(whole.batches) == 8 and len(resumed.batches) == 4
    assert resumed.batches == whole.batches[4:]
    assert resumed.blocks == whole.blocks[4:] == [[12]] * 4  # the loss on the served triplets
    # the refresh at step 6 happened after the resume: the plans served were mined ones
    mined = {tuple(t) for t in whole.refreshes[-1]["triplets"].tolist()}
    assert tuple(whole.batches[7][:3]) in mined


def test_the_subset_is_embedded_without_training_augmentation() -> None:
    """Mining sees the training items through the eval transforms (digits: no random shift)."""
    dm = RetrievalDataModule(p=4, k=4)
    dm.setup("fit")
    dm.train_dataloader()
    trainer: Any = type("FakeTrainer", (), {"datamodule": dm})()
    _, view = OfflineTripletMining(every_n_steps=2, subset_size=32)._sampler(trainer)
    assert len(view) == len(dm.train_set) and view is not dm.train_set
    plain = dm.train_set.images.clone()  # the unshifted 8×8 images, in training order
    for i in (0, 5, len(view) - 1):
        image, label, _, _ = view[i]
        torch.testing.assert_close(image, dm.transforms.eval(plain[i]))  # no shift, same item
        assert label == dm.train_set.labels[i]


# -- FaceNet's squared distances and training on the mined triplets ------------------------------
ALPHA = 0.2  # FaceNet's margin, on squared distances


def facenet_semi_hard_loop(x: torch.Tensor, y: torch.Tensor, alpha: float) -> set[tuple]:
    """FaceNet's semi-hard rule written out: for every anchor–positive pair, the negatives with
    ‖a−p‖² < ‖a−n‖² < ‖a−p‖² + α, of which the closest one makes the triplet."""
    n = len(y)
    found: set[tuple] = set()
    for a in range(n):
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            ap = float(((x[a] - x[p]) ** 2).sum())
            semi = []
            for j in range(n):
                if y[j] == y[a]:
                    continue
                an = float(((x[a] - x[j]) ** 2).sum())
                if ap < an < ap + alpha:
                    semi.append((an, j))
            if semi:
                found.add((a, p, min(semi)[1]))
    return found


def test_squared_semi_hard_mining_equals_the_facenet_loop() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.nn.functional.normalize(torch.randn(36, 3, generator=generator, dtype=torch.float64))
    y = torch.arange(36) % 6
    got = {tuple(t) for t in mine_triplets(x, y, "semi_hard", ALPHA, squared=True).tolist()}
    want = facenet_semi_hard_loop(x, y, ALPHA)
    assert got == want and len(want) > 20
    # the same α on plain distances picks other triplets (the bug this guards against)
    plain = {tuple(t) for t in mine_triplets(x, y, "semi_hard", ALPHA).tolist()}
    assert plain != want


def test_mining_distance_follows_the_module_loss_unless_given() -> None:
    def module(loss: Any, *aux: Any) -> MetricLearningModule:
        model = EmbeddingModel(SmallCNN(width=4, depth=1), embedding_dim=8)
        terms = [LossTerm(a) for a in aux]
        return MetricLearningModule(model, loss, aux_losses=terms)

    follow = OfflineTripletMining(every_n_steps=1, subset_size=8)
    assert follow.mining_squared(module(TripletLoss(squared=True)))
    assert not follow.mining_squared(module(TripletLoss()))
    assert not follow.mining_squared(module(ContrastiveLoss()))  # no triplet loss: d
    assert follow.mining_squared(module(ImprovedTripletLoss()))  # the paper's d²
    given = OfflineTripletMining(every_n_steps=1, subset_size=8, squared=False)
    assert not given.mining_squared(module(TripletLoss(squared=True)))
    both = module(TripletLoss(squared=True), TripletLoss())
    with pytest.raises(ConfigError, match="OfflineTripletMining.squared: .* disagree"):
        follow.mining_squared(both)


def test_served_miner_reads_the_plan_layout_per_rank_block() -> None:
    labels = torch.arange(16) % 4
    dist = torch.rand(16, 16)
    within = BatchHardMiner()
    served = ServedTripletMiner(within)
    own = served(dist, labels)  # no plan: the loss's own miner
    torch.testing.assert_close(own.positive, within(dist, labels).positive)
    served.block = 8  # two ranks' batches of 8: triplets (0,1,2), (3,4,5); 6, 7 fill
    chosen = served(dist, labels)
    assert chosen.negative is not None
    anchors = chosen.valid[:, 0].nonzero()[:, 0].tolist()
    assert anchors == [0, 3, 8, 11]
    assert chosen.positive[anchors, 0].tolist() == [1, 4, 9, 12]
    assert chosen.negative[anchors, 0].tolist() == [2, 5, 10, 13]


class LossReference(pl.Callback):
    """Per training batch: the loss the module returned, the loop sum of FaceNet's formula over
    the batch's served triplets, the loss re-mined within the batch, and whether the batch's
    triplets are mined ones (of any refresh so far)."""

    def __init__(self, mining: OfflineTripletMining) -> None:
        self.mining = mining
        self.mined: set[tuple] = set()
        self.rows: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
        self.mined |= {tuple(t) for t in self.mining.last["triplets"].tolist()}
        items = batch[3].tolist()
        with torch.no_grad():  # no batch norm or dropout: the features of the training step
            x = module.model.forward_train(batch[0]).features.double()
        count = len(x) // 3
        total = 0.0
        for t in range(count):
            a, p, n = x[3 * t], x[3 * t + 1], x[3 * t + 2]
            total += max(0.0, float(((a - p) ** 2).sum() - ((a - n) ** 2).sum()) + ALPHA)
        remined = TripletLoss(margin=ALPHA, squared=True, miner=SemiHardMiner())(x, batch[1])
        served = all(tuple(items[3 * t : 3 * t + 3]) in self.mined for t in range(count))
        self.rows.append({"loop": total / count, "remined": float(remined), "served": served})

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        self.rows[-1]["loss"] = float(outputs["loss"])


def _facenet_run(train_on: str) -> tuple[LossReference, OfflineTripletMining, TripletLoss]:
    torch.manual_seed(0)
    backbone = SmallCNN(width=8, depth=2, batch_norm=False)
    model = EmbeddingModel(backbone, embedding_dim=16, normalize=True)
    loss = TripletLoss(margin=ALPHA, squared=True, miner=SemiHardMiner())
    module = MetricLearningModule(model, loss, optimizer=partial(torch.optim.SGD, lr=0.1))
    data = RetrievalDataModule(p=4, k=4, batches_per_epoch=4, seed=2)
    mining = OfflineTripletMining(every_n_steps=3, subset_size=60, train_on=train_on, seed=4)  # type: ignore[arg-type]
    reference = LossReference(mining)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=6,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[mining, reference],
    )
    trainer.fit(module, data)
    return reference, mining, loss


def test_mined_mode_loss_is_the_loop_sum_over_the_served_triplets() -> None:
    reference, mining, loss = _facenet_run("mined")
    assert mining.last["squared"] is True  # followed TripletLoss(squared=True)
    assert len(reference.rows) == 6
    assert all(row["served"] for row in reference.rows)
    for row in reference.rows:  # 16 items: 5 triplets and a filler anchor and positive
        assert row["loss"] == pytest.approx(row["loop"], rel=1e-5, abs=1e-7)
    assert any(r["remined"] != pytest.approx(r["loop"], rel=1e-3) for r in reference.rows)
    assert isinstance(loss.miner, SemiHardMiner)  # its own miner again after the fit


def test_batch_mode_mines_each_batch_again() -> None:
    reference, _, _ = _facenet_run("batch")
    for row in reference.rows:
        assert row["loss"] == pytest.approx(row["remined"], rel=1e-5, abs=1e-7)
    assert any(r["remined"] != pytest.approx(r["loop"], rel=1e-3) for r in reference.rows)


def test_mined_mode_needs_a_triplet_loss() -> None:
    model = EmbeddingModel(SmallCNN(width=4, depth=1), embedding_dim=8)
    module = MetricLearningModule(model, ContrastiveLoss())
    mining = OfflineTripletMining(every_n_steps=1, subset_size=8)
    with pytest.raises(ConfigError, match="OfflineTripletMining.train_on: 'mined' needs"):
        mining.setup(Any, module, "fit")  # type: ignore[arg-type]
    OfflineTripletMining(every_n_steps=1, subset_size=8, train_on="batch").setup(
        Any,  # type: ignore[arg-type]
        module,
        "fit",
    )
    with pytest.raises(ConfigError, match="train_on"):
        OfflineTripletMining(every_n_steps=1, subset_size=8, train_on="all")  # type: ignore[arg-type]

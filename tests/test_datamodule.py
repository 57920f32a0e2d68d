from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedlab.cli import main
from embedlab.data import Market1501, ReIDTransforms, RetrievalDataModule, digits_frame
from fake_datasets import make_market1501

ROOT = Path(__file__).resolve().parents[1]


def test_digits_image_disjoint_split_is_seeded_and_disjoint() -> None:
    a, b, c = digits_frame(seed=0), digits_frame(seed=0), digits_frame(seed=1)
    assert a.equals(b)
    assert not a["split"].equals(c["split"])
    assert len(a) == 1797 and a["path"].is_unique
    counts = a["split"].value_counts()
    assert counts["train"] == pytest.approx(0.6 * 1797, abs=10)
    assert counts["gallery"] == pytest.approx(2 * counts["query"], abs=10)
    for split in ("train", "query", "gallery"):
        assert set(a.loc[a["split"] == split, "label"]) == set(range(10))


def test_digits_class_disjoint_split() -> None:
    frame = digits_frame("class_disjoint")
    assert set(frame.loc[frame["split"] == "train", "label"]) == {0, 1, 2, 3, 4}
    held = frame[frame["split"] != "train"]
    assert set(held["label"]) == {5, 6, 7, 8, 9}


def test_eval_set_roles_and_items() -> None:
    dm = RetrievalDataModule(p=10, k=4)
    dm.setup("fit")
    assert dm.eval_set is not None
    q, g = dm.eval_set.is_query, dm.eval_set.is_gallery
    assert q.sum() + g.sum() == len(dm.eval_set) and not (q & g).any()
    image, label, camera, index = dm.eval_set[int(q.sum())]  # first gallery item
    assert image.shape == (1, 8, 8) and camera == -1 and index == int(q.sum())
    assert label == dm.eval_set.labels[index]
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (40, 1, 8, 8)
    assert torch.bincount(batch[1]).tolist() == [4] * 10
    assert dm.num_classes == 10


def test_market1501_frame_and_train_label_remap(tmp_path: Path) -> None:
    root = make_market1501(tmp_path / "market")
    dm = RetrievalDataModule(dataset=Market1501(root), p=3, k=2, transforms=ReIDTransforms(32, 16))
    dm.setup("fit")
    frame = dm.frame
    train = frame[frame["split"] == "train"]
    # one of the 6 training identities is held out for validation
    assert sorted(train["label"].unique()) == list(range(dm.num_classes)) == list(range(5))
    val = frame[frame["split"].isin(["val_query", "val_gallery"])]
    assert val["label"].unique().tolist() == [5]
    gallery = frame[frame["split"] == "gallery"]
    assert (gallery["label"] == -1).sum() == 2 and (gallery["label"] == 0).sum() == 2
    image, label, camera, index = dm.eval_set[0]
    assert image.shape == (3, 32, 16) and camera in (0, 1)


def test_missing_dataset_root_names_the_folder(tmp_path: Path) -> None:
    dm = RetrievalDataModule(dataset=Market1501(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dm.setup("fit")


@pytest.mark.slow
def test_fit_one_epoch_on_market1501_tree_with_reid_protocol(tmp_path: Path) -> None:
    root = make_market1501(tmp_path / "market")
    main(
        [
            "fit",
            "--config",
            str(ROOT / "experiments" / "digits.yaml"),
            f"--output_root={tmp_path / 'runs'}",
            "--experiment=market",
            "--data.dataset=Market1501",
            f"--data.dataset.root={root}",
            "--data.p=3",
            "--data.k=4",
            "--data.transforms=embedlab.data.ReIDTransforms",
            "--data.transforms.init_args.height=32",
            "--data.transforms.init_args.width=16",
            "--data.batches_per_epoch=2",
            "--model.model.init_args.backbone.init_args.in_channels=3",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    metrics = pd.read_csv(tmp_path / "runs" / "market" / "version_0" / "metrics.csv")
    val = metrics.dropna(subset=["val/map"]).iloc[-1]
    # the held-out training identity: a query per camera, matched on the other camera
    assert val["val/num_valid_queries"] == 2
    test = metrics.dropna(subset=["test/map"]).iloc[-1]
    # 6 test identities × 2 cameras: every query has a valid match on the other camera
    assert test["test/num_valid_queries"] == 12
    for key in ("recall@1", "map", "map@r", "minp"):
        assert 0.0 <= test[f"test/{key}"] <= 1.0 and np.isfinite(test[f"test/{key}"])


def test_data_check_subcommand_reports_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_market1501(tmp_path / "market")
    assert main(["data", "check", "--dataset", "Market1501", "--dataset.root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "24" in out and "gallery" in out and "28" in out
    assert (
        main(["data", "check", "--dataset", "Market1501", "--dataset.root", str(tmp_path / "nope")])
        == 1
    )


def test_a_union_offsets_identities_and_cameras_and_keeps_each_members_evaluation(
    tmp_path: Path,
) -> None:
    a = make_market1501(tmp_path / "a")
    b = make_market1501(tmp_path / "b", num_train_ids=4, num_cameras=3)
    dm = RetrievalDataModule(
        [Market1501(a), Market1501(b)], p=3, k=2, transforms=ReIDTransforms(32, 16)
    )
    dm.setup("fit")
    frame = dm.frame
    train = frame[frame["split"] == "train"]
    # 5 + 3 training identities after one of each is held out: numbered 0..7, never shared
    assert dm.num_classes == 8 and sorted(train["label"].unique()) == list(range(8))
    by_member = train.groupby("source")["label"].unique()
    assert not set(by_member[0]) & set(by_member[1])
    # cameras: a's 0-1, b's shifted to 2-4
    assert set(frame.loc[frame["source"] == 0, "camera"]) == {0, 1}
    assert set(frame.loc[frame["source"] == 1, "camera"]) == {2, 3, 4}
    assert dm.names == ["market1501", "market1501_2"] == dm.eval_names
    assert len(dm.val_sets) == len(dm.test_sets) == 2
    assert len(dm.test_sets[0]) == len(Market1501(a).frame().query("split != 'train'"))
    batch = next(iter(dm.train_dataloader()))
    assert len(batch[1]) == 6 and set(batch[1].tolist()) <= set(range(8))
    assert len(dm.train_set) == len(train)
    # the served training items carry the union's labels
    assert np.array_equal(np.sort(dm.train_set.labels), np.sort(train["label"].to_numpy()))
    table = dm.splits_table()
    assert set(table["dataset"]) == {"market1501", "market1501_2"}


@pytest.mark.slow
def test_a_union_trains_and_logs_each_members_metrics_and_their_mean(tmp_path: Path) -> None:
    a = make_market1501(tmp_path / "a")
    b = make_market1501(tmp_path / "b", num_test_ids=4)
    members = json.dumps(
        [
            {"class_path": "embedlab.data.Market1501", "init_args": {"root": str(a)}},
            {"class_path": "embedlab.data.Market1501", "init_args": {"root": str(b)}},
        ]
    )
    code = main(
        [
            "fit",
            "--config",
            str(ROOT / "experiments" / "digits.yaml"),
            f"--output_root={tmp_path / 'runs'}",
            "--experiment=union",
            f"--data.dataset={members}",
            "--data.p=3",
            "--data.k=2",
            "--data.transforms=embedlab.data.PlainTransforms",
            "--data.transforms.init_args.height=32",
            "--data.transforms.init_args.width=16",
            "--data.batches_per_epoch=2",
            "--model.model.init_args.backbone.init_args.in_channels=3",
            "--model.lr_scheduler=null",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert code == 0
    metrics = pd.read_csv(tmp_path / "runs" / "union" / "version_0" / "metrics.csv")
    for stage in ("val", "test"):
        row = metrics.dropna(subset=[f"{stage}/market1501/map"]).iloc[-1]
        first, second = row[f"{stage}/market1501/map@r"], row[f"{stage}/market1501_2/map@r"]
        assert row[f"{stage}/map@r"] == pytest.approx((first + second) / 2)
    test = metrics.dropna(subset=["test/market1501/map"]).iloc[-1]
    # each member's own queries: 6 and 4 test identities × 2 cameras
    assert test["test/market1501/num_valid_queries"] == 12
    assert test["test/market1501_2/num_valid_queries"] == 8


class TrainOnly:
    """A duck-typed dataset (no embedlab base class): absolute paths, training rows only."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.rows = frame

    def frame(self) -> pd.DataFrame:
        return self.rows


def test_a_unions_train_only_member_trains_unevaluated(tmp_path: Path) -> None:
    a = make_market1501(tmp_path / "a")
    extra = Market1501(make_market1501(tmp_path / "b", num_train_ids=4)).frame()
    extra = extra[extra["split"] == "train"].assign(
        path=lambda f: [str(tmp_path / "b" / p) for p in f["path"]]
    )
    dm = RetrievalDataModule(
        [Market1501(a), TrainOnly(extra)], p=3, k=2, transforms=ReIDTransforms(32, 16)
    )
    dm.setup("fit")
    # 5 of a's 6 training identities (one validates) + all 4 of the extra member's
    assert dm.num_classes == 9
    assert dm.eval_names == ["market1501"] and len(dm.val_sets) == len(dm.test_sets) == 1
    image, label, _, _ = dm.train_set[len(dm.train_set) - 1]
    assert image.shape == (3, 32, 16) and 5 <= label < 9


@pytest.mark.parametrize("balance", ["identities", "datasets"])
def test_a_union_balanced_by_dataset_draws_each_member_equally(balance: str) -> None:
    from embedlab.data import Digits

    # 10 training digits in one member, 5 (class-disjoint digits 0-4) in the other
    dm = RetrievalDataModule(
        [Digits(), Digits("class_disjoint")], val="none", p=4, k=2, balance=balance
    )
    dm.setup("fit")
    sources = dm._train_sources()
    counts = []
    for batch in dm.train_dataloader():
        members = sources[batch[3].numpy()]
        counts.append(int((members == 1).sum()) // 2)  # identities of the second member
    if balance == "datasets":
        assert counts == [2] * len(counts)  # every batch: 2 identities of each member
    else:
        assert len(set(counts)) > 1  # uniform over 15 identities: the share varies
    assert len(counts) == len(dm.train_dataloader())

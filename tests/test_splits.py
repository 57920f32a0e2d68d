"""The validation split: disjoint from train and test, written to splits.csv as served."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from embedlab.cli import main
from embedlab.data import Digits, Market1501, PlainTransforms, RetrievalDataModule
from embedlab.data.splits import ValSplit, held_out_classes, split_validation
from fake_datasets import (
    make_cars196,
    make_cub200,
    make_cuhk03np,
    make_dukemtmc,
    make_imagefolder,
    make_inshop,
    make_market1501,
    make_msmt17,
    make_sop,
    make_table,
    make_vehicleid,
    source,
)

ROOT = Path(__file__).resolve().parents[1]

# name -> (tree maker, its arguments, val split style, whether val holds out identities)
FORMATS: dict[str, tuple[Callable[..., Path], dict[str, Any], set[str], bool]] = {
    "market1501": (make_market1501, {}, {"val_query", "val_gallery"}, True),
    "dukemtmc": (make_dukemtmc, {}, {"val_query", "val_gallery"}, True),
    "msmt17": (make_msmt17, {"val_per_id": 2}, {"val_query", "val_gallery"}, False),
    "cuhk03np": (make_cuhk03np, {}, {"val_query", "val_gallery"}, True),
    "cub200": (make_cub200, {}, {"val"}, True),
    "cars196": (make_cars196, {}, {"val"}, True),
    "sop": (make_sop, {}, {"val"}, True),
    "inshop": (make_inshop, {}, {"val_query", "val_gallery"}, True),
    "vehicleid": (make_vehicleid, {}, {"val_query", "val_gallery"}, True),
    "table": (make_table, {"num_ids": 8}, {"val_query", "val_gallery"}, True),
    "imagefolder": (make_imagefolder, {}, {"val"}, True),
}

OPTIONS: dict[str, dict[str, Any]] = {"vehicleid": {"test_size": 3}}


def served(dm: RetrievalDataModule) -> pd.DataFrame:
    """What the loaders serve, as splits.csv rows: train set, then every val and test batch."""
    rows = [
        {"path": p, "label": int(y), "camera": int(c), "split": "train"}
        for p, y, c in zip(
            dm.train_set.paths, dm.train_set.labels, dm.train_set.cameras, strict=True
        )
    ]
    batch = next(iter(dm.train_dataloader()))
    assert set(batch[3].tolist()) <= set(range(len(dm.train_set)))
    for loader, (query, gallery, both) in (
        (dm.val_dataloader(), ("val_query", "val_gallery", "val")),
        (dm.test_dataloader(), ("query", "gallery", "test")),
    ):
        dataset = loader.dataset
        for _, labels, cameras, indices in loader:
            for y, c, i in zip(labels.tolist(), cameras.tolist(), indices.tolist(), strict=True):
                q, g = bool(dataset.is_query[i]), bool(dataset.is_gallery[i])
                split = both if q and g else query if q else gallery
                rows.append({"path": dataset.paths[i], "label": y, "camera": c, "split": split})
    return pd.DataFrame(rows)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["split", "path"]).reset_index(drop=True)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_train_val_test_are_disjoint_and_splits_csv_is_what_was_served(
    tmp_path: Path, name: str
) -> None:
    make, kwargs, val_splits, identity_disjoint = FORMATS[name]
    root = make(tmp_path / name, **kwargs)
    dm = RetrievalDataModule(
        dataset=source(name, root, **OPTIONS.get(name, {})),
        p=2,
        k=2,
        transforms=PlainTransforms(16, 16),
    )
    dm.setup("fit")
    csv = pd.read_csv(dm.write_splits(tmp_path / "run"))
    assert list(csv.columns) == ["path", "label", "camera", "split"]
    assert csv["path"].is_unique
    pd.testing.assert_frame_equal(canonical(csv), canonical(served(dm)), check_dtype=False)

    assert set(csv["split"]) & {"val_query", "val_gallery", "val"} == val_splits
    raw = source(name, root, **OPTIONS.get(name, {})).frame().set_index("path")["label"]
    identity = csv["path"].map(raw)  # the dataset's own labels
    part = {
        role: set(csv.loc[csv["split"].isin(splits), "path"])
        for role, splits in {
            "train": ["train"],
            "val": ["val_query", "val_gallery", "val"],
            "test": ["query", "gallery", "test"],
        }.items()
    }
    assert all(part.values())
    assert not part["train"] & part["val"] and not part["val"] & part["test"]
    assert not part["train"] & part["test"]
    ids = {role: set(identity[csv["path"].isin(paths)]) - {-1} for role, paths in part.items()}
    if identity_disjoint:
        assert not ids["train"] & ids["val"]
    else:  # MSMT17's official val list holds other images of the training identities
        assert ids["val"] <= ids["train"]
    if not ids["train"] & ids["test"]:  # an identity-disjoint benchmark stays so
        assert not ids["val"] & ids["test"]
    # training labels are 0..num_classes-1 (the classifier's), val classes numbered after them
    train_labels = set(csv.loc[csv["split"] == "train", "label"])
    assert train_labels == set(range(dm.num_classes))


def test_digits_protocols_hold_out_images_or_classes() -> None:
    image = RetrievalDataModule(p=10, k=4).frame
    train = image[image["split"] == "train"]
    val = image[image["split"].isin(["val_query", "val_gallery"])]
    assert set(val["label"]) == set(train["label"]) == set(range(10))  # images, every class
    assert len(val) == pytest.approx(0.2 * (len(train) + len(val)), abs=10)
    assert not set(val["path"]) & set(train["path"])
    classes = RetrievalDataModule(Digits("class_disjoint"), val=ValSplit(size=2), p=3).frame
    held = classes[classes["split"].isin(["val_query", "val_gallery"])]
    assert held["label"].nunique() == 2  # two of the training digits 0-4
    assert not set(held["label"]) & set(classes.loc[classes["split"] == "train", "label"])
    assert not set(classes.loc[classes["split"].isin(["query", "gallery"]), "label"]) & set(
        range(5)
    )


def test_val_is_seeded_and_folds_partition_the_training_classes() -> None:
    labels = torch.arange(40).repeat(2).numpy()
    a, b = held_out_classes(labels, ValSplit(seed=1)), held_out_classes(labels, ValSplit(seed=1))
    assert a.tolist() == b.tolist() and len(a) == 8
    assert a.tolist() != held_out_classes(labels, ValSplit(seed=2)).tolist()
    folds = [held_out_classes(labels, ValSplit(folds=4, fold=f)).tolist() for f in range(4)]
    assert sorted(sum(folds, [])) == list(range(40))
    with pytest.raises(ValueError, match="data.val.fold=4"):
        held_out_classes(labels, ValSplit(folds=4, fold=4))
    with pytest.raises(ValueError, match="data.val.size=40"):
        held_out_classes(labels, ValSplit(size=40))


def test_val_none_trains_on_everything_including_a_shipped_val_list(tmp_path: Path) -> None:
    frame = source("msmt17", make_msmt17(tmp_path / "msmt")).frame()
    merged = split_validation(frame, None)
    assert (merged["split"] == "train").sum() == (frame["split"].isin(["train", "val"])).sum()
    dm = RetrievalDataModule(val="none", p=10, k=4)
    dm.setup("fit")
    assert dm.val_set is None and dm.val_dataloader() == []
    assert len(dm.train_set) == 1078  # the 60 % training images, none held out


def test_reid_val_has_a_query_per_identity_and_camera(tmp_path: Path) -> None:
    root = make_market1501(tmp_path / "market", num_train_ids=10)
    frame = RetrievalDataModule(dataset=Market1501(root)).frame
    query = frame[frame["split"] == "val_query"]
    gallery = frame[frame["split"] == "val_gallery"]
    assert query["label"].nunique() == 2  # 20 % of the 10 training identities
    # 2 images per camera: one is the camera's query, the other is in the gallery
    assert query.groupby("label")["camera"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    assert len(gallery) == len(query)


def fit(tmp_path: Path, *extra: str) -> Path:
    args = [
        "fit",
        "--config",
        str(ROOT / "experiments" / "digits.yaml"),
        f"--output_root={tmp_path}",
        "--trainer.max_epochs=3",
        "--trainer.check_val_every_n_epoch=1",
        "--data.batches_per_epoch=2",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    assert main(args) == 0
    (run,) = (tmp_path / "digits").iterdir()
    return run


def test_fit_selects_on_val_and_tests_once(tmp_path: Path) -> None:
    run = fit(tmp_path)
    metrics = pd.read_csv(run / "metrics.csv")
    val = metrics.dropna(subset=["val/map@r"])
    assert val["epoch"].tolist() == [0, 1, 2]  # every validation
    test = metrics.dropna(subset=["test/map@r"])
    assert len(test) == 1  # once, after training
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["map@r"] == pytest.approx(test["test/map@r"].iloc[0])
    best = int(val["val/map@r"].to_numpy().argmax())
    assert summary["val"]["epochs"] == summary["test"]["epochs"] == best + 1
    assert summary["val"]["map@r"] == pytest.approx(val["val/map@r"].iloc[best])
    assert summary["val"]["num_valid_queries"] == 70  # the val split, not the 237 test queries
    assert summary["test"]["num_valid_queries"] == 237
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["monitor"] == "val/map@r"
    splits = pd.read_csv(run / "splits.csv")
    assert splits["split"].value_counts().to_dict() == {
        "train": 862,
        "gallery": 482,
        "query": 237,
        "val_gallery": 146,
        "val_query": 70,
    }


def test_fit_without_val_monitors_nothing_and_tests_the_last_checkpoint(tmp_path: Path) -> None:
    run = fit(tmp_path, "--data.val=none", "--trainer.max_epochs=2")
    metrics = pd.read_csv(run / "metrics.csv")
    assert not [c for c in metrics.columns if c.startswith("val/")]
    assert metrics["test/map@r"].notna().sum() == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    summary = json.loads((run / "summary.json").read_text())
    assert "val" not in summary and summary["test"]["epochs"] == 2

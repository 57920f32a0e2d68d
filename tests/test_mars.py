"""MARS on a miniature tree in the exact layout: parsing, clips, temporal pooling, the
tracklet-level ReID protocol against a loop reference, and one `embedlab fit` epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.io import savemat

from embedlab.cli import main
from embedlab.data import Mars, PlainTransforms, RetrievalDataModule
from embedlab.data.formats import DatasetFormatError, DatasetLayoutError
from embedlab.data.formats.mars import frame_positions
from embedlab.metrics import evaluate
from embedlab.models import EmbeddingModel, SmallCNN, TemporalAttention
from fake_datasets import MARS_QUERY as QUERY
from fake_datasets import MARS_TEST as TEST
from fake_datasets import MARS_TRAIN as TRAIN
from fake_datasets import make_mars
from metrics_reference import reference_evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mars(tmp_path_factory.mktemp("mars") / "MARS")


def test_the_tree_is_read_exactly(mars: Path) -> None:
    frame = Mars(mars).frame()
    assert list(frame.columns) == ["path", "label", "camera", "split", "tracklet"]
    assert len(frame) == sum(t[2] for t in TRAIN + TEST)
    per_tracklet = frame.groupby("tracklet").agg(
        label=("label", "first"),
        camera=("camera", "first"),
        split=("split", "first"),
        n=("path", "size"),
    )
    expected = [(p, c - 1, n) for p, c, n in TRAIN + TEST]
    assert (
        list(zip(per_tracklet["label"], per_tracklet["camera"], per_tracklet["n"], strict=True))
        == expected
    )
    roles = per_tracklet["split"].tolist()
    assert roles[: len(TRAIN)] == ["train"] * len(TRAIN)
    test_roles = ["query" if i + 1 in QUERY else "gallery" for i in range(len(TEST))]
    assert roles[len(TRAIN) :] == test_roles
    assert frame["path"].iloc[0] == "bbox_train/0001/0001C1T0001F001.jpg"
    junk = frame[frame["label"] == -1]
    assert (junk["split"] == "gallery").all() and junk["path"].str.startswith(
        "bbox_test/00-1/"
    ).all()
    assert all((mars / p).is_file() for p in frame["path"])


def test_malformed_files_are_one_line_errors(mars: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(mars, copy)
    savemat(copy / "info" / "query_IDX.mat", {"query_IDX": np.array([[1, 99]], dtype=float)})
    with pytest.raises(DatasetFormatError, match="query_IDX outside 1..8"):
        Mars(copy).frame()
    savemat(copy / "info" / "query_IDX.mat", {"wrong": np.array([[1]])})
    with pytest.raises(DatasetFormatError, match=r"no variable 'query_IDX' \(found \['wrong'\]\)"):
        Mars(copy).frame()
    savemat(copy / "info" / "tracks_test_info.mat", {"track_test_info": np.array([[3, 99, 6, 1]])})
    with pytest.raises(DatasetFormatError, match="track_test_info row 1: frames"):
        Mars(copy).frame()
    shutil.copy(mars / "info" / "tracks_test_info.mat", copy / "info")
    shutil.copy(mars / "info" / "query_IDX.mat", copy / "info")
    (copy / "info" / "train_name.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="train_name.txt"):
        Mars(copy).frame()


def test_restricted_random_takes_one_frame_per_chunk_and_is_seeded() -> None:
    for length, frames in ((12, 4), (7, 3), (2, 4)):
        for seed in range(20):
            g = torch.Generator().manual_seed(seed)
            picked = frame_positions(length, frames, "restricted_random", g)
            assert len(picked) == frames and all(0 <= p < length for p in picked)
            if length >= frames:
                edges = np.linspace(0, length, frames + 1).astype(int)
                assert all(edges[k] <= p < edges[k + 1] for k, p in enumerate(picked))
        again = [
            frame_positions(length, frames, "restricted_random", torch.Generator().manual_seed(3))
            for _ in range(2)
        ]
        assert again[0] == again[1]
    assert frame_positions(9, 3, "evenly") == [0, 4, 8]
    assert frame_positions(5, 3, "all") == [0, 1, 2, 3, 4]


def test_clips_come_from_one_tracklet(mars: Path) -> None:
    dm = RetrievalDataModule(Mars(mars, frames=3), p=2, k=2, transforms=PlainTransforms(16, 8))
    dm.setup("fit")
    clips = dm.train_set
    assert len(clips) == len(set(dm.frame.loc[dm.frame["split"] == "train", "tracklet"]))
    clip, label, camera, index = clips[0]
    assert clip.shape == (3, 3, 16, 8) and index == 0
    assert (clips.labels[0], clips.cameras[0]) == (label, camera)
    # the P×K sampler draws P identities × K tracklets
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (4, 3, 3, 16, 8)
    assert sorted(torch.bincount(batch[1]).tolist())[-2:] == [2, 2]
    # validation holds out whole tracklets: a tracklet's frames share one val role
    val = dm.frame[dm.frame["split"].isin(["val_query", "val_gallery"])]
    assert (val.groupby("tracklet")["split"].nunique() == 1).all() and len(val)
    assert dm.test_set is not None and len(dm.test_set) == len(TEST)


def test_temporal_pooling() -> None:
    attention = TemporalAttention(hidden=8)
    features = torch.randn(2, 5, 6)
    weights = attention.weights(features)
    assert weights.shape == (2, 5)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    torch.testing.assert_close(attention(features), (weights[..., None] * features).sum(1))
    model = EmbeddingModel(SmallCNN(in_channels=3, width=4, depth=2), embedding_dim=5).eval()
    clips = torch.randn(2, 3, 3, 16, 8)
    frames = model.pool(model.backbone(clips.flatten(0, 1))).reshape(2, 3, -1)
    torch.testing.assert_close(model(clips), model.projection(frames.mean(1)))
    video = EmbeddingModel(SmallCNN(in_channels=3, width=4, depth=2), temporal=TemporalAttention(4))
    assert video(clips).shape == (2, video.embedding_dim)


def test_tracklet_evaluation_is_the_reid_protocol(mars: Path) -> None:
    """Tracklet embeddings (the mean of every frame's embedding) scored by `evaluate` equal a
    loop reference over the tracklets' identities and cameras."""
    source = Mars(mars, eval_sampling="all")
    frame = source.frame()
    test = frame[frame["split"] != "train"].reset_index(drop=True)
    clips = source.images(test, False, PlainTransforms(16, 8), "error")
    model = EmbeddingModel(SmallCNN(in_channels=3, width=4, depth=2), embedding_dim=6).eval()
    with torch.no_grad():
        embedded = torch.stack([model(clips[i][0][None])[0] for i in range(len(clips))])
    is_query = np.array([test.loc[m[0], "split"] == "query" for m in clips.members])
    labels, cameras = clips.labels, clips.cameras
    ours = evaluate(
        embedded[is_query],
        labels[is_query],
        embedded[~is_query],
        labels[~is_query],
        cameras[is_query],
        cameras[~is_query],
        distance="euclidean",
    )
    reference = reference_evaluate(
        embedded[is_query],
        labels[is_query],
        embedded[~is_query],
        labels[~is_query],
        cameras[is_query],
        cameras[~is_query],
        metric="euclidean",
    )
    for key in ("map", "recall@1", "map@r"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
    assert ours["num_valid_queries"] == 3


@pytest.mark.slow
def test_fit_one_epoch_on_mars(mars: Path, tmp_path: Path) -> None:
    code = main(
        [
            "fit",
            f"--config={ROOT / 'experiments' / 'digits.yaml'}",
            f"--output_root={tmp_path}",
            "--experiment=mars",
            "--data.dataset=Mars",
            f"--data.dataset.root={mars}",
            "--data.dataset.frames=2",
            "--data.p=2",
            "--data.k=2",
            "--data.transforms=embedlab.data.PlainTransforms",
            "--data.transforms.init_args.height=16",
            "--data.transforms.init_args.width=8",
            "--data.batches_per_epoch=2",
            "--model.model.init_args.backbone.init_args.in_channels=3",
            "--model.model.init_args.temporal=embedlab.models.TemporalAttention",
            "--model.lr_scheduler=null",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert code == 0
    metrics = pd.read_csv(tmp_path / "mars" / "version_0" / "metrics.csv")
    test = metrics.dropna(subset=["test/map"]).iloc[-1]
    assert test["test/num_valid_queries"] == 3  # the three query tracklets, junk ignored
    assert 0 <= test["test/map"] <= 1 and metrics["val/map"].notna().any()

"""MARS on a miniature tree in the exact layout: parsing, clips, temporal pooling, the
tracklet-level ReID protocol against a loop reference, and one `embedlab fit` epoch."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.io import savemat
from torch import Tensor

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


def mars_fit(mars: Path, out: Path, *extra: str) -> list[str]:
    """One epoch of two batches on the miniature MARS tree, 16×8 colour frames."""
    return [
        "fit",
        f"--config={ROOT / 'experiments' / 'digits.yaml'}",
        f"--output_root={out}",
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
        "--model.lr_scheduler=null",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.mark.slow
def test_fit_one_epoch_on_mars(mars: Path, tmp_path: Path) -> None:
    temporal = "--model.model.init_args.temporal=embedlab.models.TemporalAttention"
    every_epoch = "--trainer.check_val_every_n_epoch=1"
    assert main(mars_fit(mars, tmp_path, temporal, every_epoch)) == 0
    metrics = pd.read_csv(tmp_path / "mars" / "version_0" / "metrics.csv")
    test = metrics.dropna(subset=["test/map"]).iloc[-1]
    assert test["test/num_valid_queries"] == 3  # the three query tracklets, junk ignored
    assert 0 <= test["test/map"] <= 1 and metrics["val/map"].notna().any()


def _count_frames(calls: list[int], module: Any, inputs: tuple[Tensor, ...], out: Any) -> None:
    calls.append(inputs[0].shape[0])


def test_frames_of_long_clips_are_embedded_in_chunks() -> None:
    """In eval mode a clip's frames go through the backbone `frame_chunk` at a time: the same
    embedding as all at once, for both temporal poolings."""
    for temporal in (None, TemporalAttention(4)):
        torch.manual_seed(0)
        model = EmbeddingModel(
            SmallCNN(in_channels=3, width=4, depth=2), embedding_dim=5, temporal=temporal
        ).eval()
        clip = torch.randn(1, 7, 3, 16, 8)
        whole = model(clip)
        calls: list[int] = []
        model.backbone.register_forward_hook(partial(_count_frames, calls))
        model.frame_chunk = 3
        torch.testing.assert_close(model(clip), whole, atol=1e-5, rtol=1e-5)
        assert calls == [3, 3, 1]


def test_official_convention_puts_the_mars_queries_in_the_gallery(mars: Path) -> None:
    """The flags the evaluator gets: under `official` a MARS query tracklet is a gallery item
    too (its own entry is then ignored by dataset index); under `torchreid` it is not."""
    from types import SimpleNamespace

    from embedlab.evaluation import EvalRoles

    dm = RetrievalDataModule(Mars(mars, frames=2), p=2, k=2, transforms=PlainTransforms(16, 8))
    dm.setup("test")
    trainer: Any = SimpleNamespace(test_dataloaders=dm.test_dataloader())
    everything = torch.arange(len(TEST))
    query, gallery = EvalRoles()(trainer, "test", everything, 0, "torchreid")
    assert query.sum() == len(QUERY) and not (query & gallery).any()
    assert (query | gallery).all()
    query2, gallery2 = EvalRoles()(trainer, "test", everything, 0, "official")
    assert torch.equal(query2, query) and gallery2.all()


@pytest.mark.slow
def test_evaluate_convention_official_ranks_all_test_tracklets(
    mars: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`embedlab evaluate --convention official` on MARS: the queries join the gallery, `map`
    is the MATLAB code's, and evaluation.json / evaluation.csv record the convention; every
    frame of a tracklet is embedded (eval_sampling: all) whatever the eval batch size."""
    from embedlab.analysis.runs import compute_embeddings
    from embedlab.runs import load_module

    every_frame = ["--data.dataset.eval_sampling=all", "--data.eval_batch_size=4"]
    assert main(mars_fit(mars, tmp_path, *every_frame)) == 0
    run = tmp_path / "mars" / "version_0"
    assert json.loads((run / "summary.json").read_text())["convention"] == "torchreid"
    ckpt = run / "checkpoints" / "last.ckpt"
    results = {}
    for convention in ("torchreid", "official"):
        out = tmp_path / convention
        argv = ["evaluate", f"--ckpt_path={ckpt}", f"--out={out}", f"--convention={convention}"]
        assert main(argv) == 0
        written = json.loads((out / "evaluation.json").read_text())
        assert written["convention"] == convention
        assert pd.read_csv(out / "evaluation.csv")["convention"].iloc[0] == convention
        results[convention] = written["metrics"]
    # the same numbers from the tracklet embeddings, as test_mars.m would rank them
    module, data = load_module(run, "last")
    data.setup("test")
    emb = compute_embeddings(module.model, data.test_dataloader())
    q = emb.is_query
    distance = str(module.hparams["distance"])
    common: dict[str, Any] = {"distance": distance, "chunk_size": 1024}
    official = evaluate(
        emb.embeddings[q], emb.labels[q], emb.embeddings, emb.labels,
        emb.cameras[q], emb.cameras, convention="official", **common,
    )  # fmt: skip
    torchreid = evaluate(
        emb.embeddings[q], emb.labels[q], emb.embeddings[~q], emb.labels[~q],
        emb.cameras[q], emb.cameras[~q], **common,
    )  # fmt: skip
    for key in ("map", "recall@1", "map@r"):
        assert results["official"][key] == pytest.approx(official[key], abs=1e-6), key
        assert results["torchreid"][key] == pytest.approx(torchreid[key], abs=1e-6), key
    assert results["official"]["num_valid_queries"] == 3
    capsys.readouterr()
    # the choices are listed, and a bad one is a one-line error
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "official" in capsys.readouterr().out
    assert main(["evaluate", f"--ckpt_path={ckpt}", "--convention=matlab"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "convention" in err[0]

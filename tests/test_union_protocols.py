"""A union of datasets scores each member by its own protocol (MSML's union, issue 24): a MARS
member per tracklet, a CUHK-SYSU member by person search, and the summary has a row per member
naming the protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import yaml

from embedlab.cli import main
from embedlab.data import CUHKSYSU, Mars, PlainTransforms, RetrievalDataModule
from embedlab.data.formats import Market1501
from embedlab.data.image_dataset import load_image
from embedlab.data.prepare import prepare_cuhksysu
from embedlab.losses import TripletLoss
from embedlab.metrics import Convention, person_search
from embedlab.models import EmbeddingModel, SmallCNN
from embedlab.module import MetricLearningModule
from fake_datasets import MARS_QUERY, make_market1501, make_mars, tiny_recipe
from test_cuhksysu import make_release

TRANSFORMS = PlainTransforms(16, 8)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("members")
    prepare_cuhksysu(make_release(base / "release"), base / "cuhksysu")
    return {
        "market": make_market1501(base / "market"),
        "mars": make_mars(base / "mars"),
        "cuhksysu": base / "cuhksysu",
    }


def frame_model(convention: Convention = "torchreid") -> MetricLearningModule:
    """An untrained image model (no temporal module configured: clips get the default mean)."""
    torch.manual_seed(0)
    backbone = SmallCNN(in_channels=3, width=8, depth=2)
    model = EmbeddingModel(backbone, embedding_dim=8, normalize=True)
    return MetricLearningModule(model, TripletLoss(), eval_convention=convention)


def run_test(module: MetricLearningModule, data: RetrievalDataModule) -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.test(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


@pytest.mark.parametrize("convention", ["torchreid", "official"])
def test_a_union_scores_mars_per_tracklet_as_mars_alone(
    roots: dict[str, Path], convention: Convention
) -> None:
    module = frame_model(convention)
    union = RetrievalDataModule(
        [Market1501(roots["market"]), Mars(roots["mars"], clips=False)],
        val="none",
        transforms=TRANSFORMS,
    )
    got = run_test(module, union)
    alone = run_test(
        module, RetrievalDataModule(Mars(roots["mars"]), val="none", transforms=TRANSFORMS)
    )
    # one query per query tracklet, not per frame
    assert alone["test/num_valid_queries"] == got["test/mars/num_valid_queries"] == len(MARS_QUERY)
    assert {k.removeprefix("test/") for k in alone} == {
        k.removeprefix("test/mars/") for k in got if k.startswith("test/mars/")
    }
    for key, value in alone.items():
        assert got[key.replace("test/", "test/mars/")] == pytest.approx(value, abs=1e-6), key
    # the union's members: Market-1501 by images, MARS by clips of its tracklets
    assert union.test_sets[1].parts[0].tracklet_ids is not None
    assert union.member_protocols("test", convention)["mars"] == (
        f"query/gallery, per tracklet (4 frames evenly), {convention} convention"
        + (" (queries in the gallery)" if convention == "official" else "")
    )


def embed(module: MetricLearningModule, root: Path, paths: list[str]) -> torch.Tensor:
    images = torch.stack([TRANSFORMS.eval(load_image(root / p)) for p in paths])
    module.eval()
    with torch.no_grad():
        return module.model(images)


def test_a_union_scores_cuhksysu_by_person_search(roots: dict[str, Path]) -> None:
    module = frame_model()
    member = CUHKSYSU(roots["cuhksysu"], test=True, gallery_size=3)
    union = RetrievalDataModule(
        [Market1501(roots["market"]), member], val="none", transforms=TRANSFORMS
    )
    got = run_test(module, union)
    protocol = member.protocol(3)
    assert protocol.queries is not None and protocol.gallery is not None
    expected = person_search(
        embed(module, roots["cuhksysu"], protocol.queries["path"].tolist()),
        embed(module, roots["cuhksysu"], protocol.gallery["path"].tolist()),
        protocol,
    )
    for key in ("map", "recall@1", "recall@5", "recall@10", "num_valid_queries"):
        assert got[f"test/cuhksysu/{key}"] == pytest.approx(expected[key], abs=1e-6), key
    # person search reports its own metrics, not the ReID ones of the shared gallery
    assert "test/cuhksysu/map@r" not in got and "test/market1501/map@r" in got
    # TestG2 is another protocol: a different gallery per query
    other = person_search(
        embed(module, roots["cuhksysu"], protocol.queries["path"].tolist()),
        embed(module, roots["cuhksysu"], protocol.gallery["path"].tolist()),
        member.protocol(2),
    )
    assert union.member_protocols("test")["cuhksysu"] == "person search, TestG3"
    assert other["map"] != pytest.approx(expected["map"]) or other["recall@1"] != pytest.approx(
        expected["recall@1"]
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*single training class.*:UserWarning")
def test_the_summary_has_a_row_per_member_with_its_protocol(
    roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members: list[dict[str, Any]] = [
        {
            "class_path": "embedlab.data.Mars",
            "init_args": {"root": str(roots["mars"]), "clips": False},
        },
        {
            "class_path": "embedlab.data.CUHKSYSU",
            "init_args": {"root": str(roots["cuhksysu"]), "test": True, "gallery_size": 3},
        },
    ]
    recipe = tiny_recipe(members)  # type: ignore[arg-type]
    del recipe["data"]["val"]  # each member holds out a validation split
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["fit", "--config", str(tmp_path / "recipe.yaml"), "--output_root", str(tmp_path)]
    assert main([*argv, "--experiment", "u"]) in (0, None)
    summary = json.loads((tmp_path / "u" / "version_0" / "summary.json").read_text())
    rows = summary["members"]
    assert set(rows) == {"mars", "cuhksysu"}
    assert all(set(rows[name]) == {"val", "test"} for name in rows)
    for split in ("val", "test"):
        assert rows["mars"][split]["protocol"] == (
            "query/gallery, per tracklet (4 frames evenly), torchreid convention"
        )
    # CUHK-SYSU validates on held-out training identities (no scenes): ReID ranking
    assert rows["cuhksysu"]["val"]["protocol"] == "query/gallery, torchreid convention"
    assert rows["mars"]["test"]["num_valid_queries"] == len(MARS_QUERY)
    assert rows["cuhksysu"]["test"]["protocol"] == "person search, TestG3"
    # the member rows are the logged per-member metrics
    for name in rows:
        for split in ("val", "test"):
            assert rows[name][split]["map"] == summary[split][f"{name}/map"]
    assert summary["test"]["map"] == pytest.approx(
        (rows["mars"]["test"]["map"] + rows["cuhksysu"]["test"]["map"]) / 2
    )
    out = capsys.readouterr().out
    assert "each member" in out and "person search, TestG3" in out
    assert "per tracklet" in out

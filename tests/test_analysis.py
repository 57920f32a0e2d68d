"""Analysis: the run comparison (table, files, plots) and the retrieval pictures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from embedlab.analysis import (
    Embeddings,
    RetrievalPictures,
    compare_runs,
    find_runs,
    projection_figure,
    ranked_list_figure,
    ranked_lists,
    save_figure,
    summary_table,
    to_markdown,
    write_comparison,
)
from embedlab.analysis.pictures import choose_queries, metric_embeddings, to_display
from embedlab.analysis.runs import loss_label, validation_history
from embedlab.cli import main
from embedlab.data import Market1501, PlainTransforms, RetrievalDataModule
from embedlab.metrics import RetrievalEvaluator
from fake_datasets import make_market1501

VAL = ["recall@1", "recall@2", "recall@4", "map", "map@r", "r_precision", "minp"]


def fake_run(
    folder: Path,
    loss: dict[str, Any],
    map_r: list[float],
    every: int = 5,
    params: dict[str, Any] | None = None,
    lr: float = 0.002,
) -> Path:
    """A run directory as `embedlab fit` writes it, with validation every `every` epochs."""
    folder.mkdir(parents=True)
    rows = []
    for i, value in enumerate(map_r):
        epoch = (i + 1) * every - 1
        rows.append({"epoch": epoch, "step": 10 * epoch, "train/loss": 1.0 / (i + 1)})
        val = {f"val/{m}": min(1.0, value + 0.05 * j) for j, m in enumerate(VAL)}
        val["val/map@r"] = value
        rows.append({"epoch": epoch, "step": 10 * epoch + 9, **val})
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    config = {
        "trainer": {"max_epochs": every * len(map_r)},
        "model": {
            "loss": loss,
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}},
        },
        "data": {"dataset": "digits"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"raw pixels": {m: 0.5 for m in [*VAL, "recall@5"]}, "trained": {m: 0.9 for m in VAL}}
    (folder / "summary.json").write_text(json.dumps(summary))
    if params is not None:
        (folder / "sweep_trial.json").write_text(json.dumps({"params": params}))
    return folder


TRIPLET = {
    "class_path": "embedlab.losses.TripletLoss",
    "init_args": {"margin": 0.2, "miner": {"class_path": "embedlab.miners.SemiHardMiner"}},
}
MSML = {"class_path": "embedlab.losses.MSMLLoss", "init_args": {"margin": 0.6}}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "cmp"
    fake_run(root / "version_0", TRIPLET, [0.5, 0.7, 0.6])
    fake_run(
        root / "version_1",
        MSML,
        [0.4, 0.8],
        params={"model.loss": "experiments/losses/msml.yaml", "model.loss.init_args.margin": 0.4},
    )
    fake_run(root / "version_2", TRIPLET, [0.3, 0.35, 0.45], lr=0.01)
    return root


def test_validation_history_is_one_row_per_validation(runs: Path) -> None:
    metrics = pd.read_csv(runs / "version_0" / "metrics.csv")
    history = validation_history(metrics)
    assert list(history.index) == [5, 10, 15]
    assert history["map@r"].tolist() == [0.5, 0.7, 0.6]


def test_compare_runs_final_best_and_labels(runs: Path) -> None:
    assert find_runs(runs) == [runs / f"version_{i}" for i in range(3)]
    frame = compare_runs(runs)
    assert len(frame) == 3
    first = frame.iloc[0]
    assert first["final/map@r"] == pytest.approx(0.6)
    assert first["best/map@r"] == pytest.approx(0.7)
    assert first["best_epoch"] == 10 and first["epochs"] == 15
    assert first["loss_class"] == "TripletLoss"
    # a sweep trial is labelled by its preset and parameters; equal objectives by what differs
    assert frame.iloc[1]["loss"] == "msml (margin=0.4)"
    assert frame.iloc[1]["param/model.loss"] == "msml"
    assert frame.iloc[0]["loss"] == "Triplet[SemiHard] (lr=0.002)"
    assert frame.iloc[2]["loss"] == "Triplet[SemiHard] (lr=0.01)"
    with_baseline = compare_runs(runs, baseline=True)
    assert with_baseline.iloc[0]["loss"] == "raw pixels" and len(with_baseline) == 4


def test_loss_label_names_the_aux_terms() -> None:
    config = {
        "model": {
            "loss": TRIPLET,
            "aux_losses": [
                {
                    "class_path": "embedlab.module.LossTerm",
                    "init_args": {
                        "loss": {"class_path": "embedlab.losses.CrossEntropyLoss"},
                        "input": "logits",
                    },
                },
                {
                    "class_path": "embedlab.module.LossTerm",
                    "init_args": {
                        "loss": {"class_path": "embedlab.losses.CenterLoss"},
                        "weight": 0.0005,
                    },
                },
            ],
        }
    }
    assert loss_label(config) == "Triplet[SemiHard] + CrossEntropy + 0.0005×Center"


def test_summary_table_and_markdown(runs: Path) -> None:
    frame = compare_runs(runs)
    table = summary_table(frame, sort="map@r")
    assert list(table.columns[:3]) == ["run", "loss", "R@1"]  # runs without a test: val
    assert table["run"].str.match(r"\w+/version_\d").all()
    assert "MAP@R" in table.columns and "best val MAP@R" in table.columns
    assert table["MAP@R"].tolist() == pytest.approx([80.0, 60.0, 45.0])
    assert table["best epoch"].tolist() == [10, 10, 15]
    markdown = to_markdown(table).splitlines()
    assert [c.strip() for c in markdown[0].split("|")[2:4]] == ["loss", "R@1"]
    assert [c[0] + c[-1] for c in markdown[1].split("|")[2:4]] == [":-", "-:"]  # left, right
    assert markdown[2].split("|")[2].strip() == "msml (margin=0.4)" and "80.00" in markdown[2]


def test_summary_table_shows_test_beside_the_val_selection(runs: Path) -> None:
    for i, run in enumerate(find_runs(runs)):
        summary = json.loads((run / "summary.json").read_text())
        summary["val"] = {"map@r": 0.7, "epochs": 10}
        summary["test"] = {"map@r": 0.5 + i / 10, "recall@1": 0.9, "epochs": 10}
        (run / "summary.json").write_text(json.dumps(summary))
    table = summary_table(compare_runs(runs), sort="map@r")
    assert list(table.columns[:2]) == ["run", "loss"]
    assert {"test R@1", "test MAP@R"} <= set(table.columns[2:4])
    assert table["test MAP@R"].tolist() == pytest.approx([70.0, 60.0, 50.0])
    assert "best val MAP@R" in table.columns and "best epoch" in table.columns


def png_ok(path: Path) -> bool:
    data = path.read_bytes()
    with Image.open(path) as image:
        size = image.size
    return data.startswith(b"\x89PNG") and len(data) > 8_000 and min(size) >= 200


def test_write_comparison_and_the_command(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = write_comparison(compare_runs(runs), tmp_path / "out")
    assert set(written) == {"csv", "markdown", "curves", "recall_at_k", "training_loss"}
    for key in ("curves", "recall_at_k", "training_loss"):
        assert png_ok(written[key]), key
    assert len(pd.read_csv(written["csv"])) == 3
    assert main(["compare", str(runs), "--baseline", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "raw pixels" in out and "msml (margin=0.4)" in out
    markdown = (tmp_path / "cli" / "comparison.md").read_text()
    assert markdown.count("\n") == 2 + 4
    assert "R@5" not in markdown  # only the baseline has it: no empty column
    assert main(["compare", str(tmp_path / "missing")]) == 2


# -- ranked lists ------------------------------------------------------------------------------
def embeddings(
    points: list[float], labels: list[int], cameras: list[int], queries: int
) -> Embeddings:
    n = len(points)
    x = np.stack([np.asarray(points, float), np.ones(n)], 1)  # 1-D positions on a line
    return Embeddings(
        x.astype(np.float32),
        np.asarray(labels),
        np.asarray(cameras),
        np.arange(n) < queries,
        np.arange(n) >= queries,
    )


def test_ranked_lists_follow_the_reid_protocol() -> None:
    # query 0 (id 1, camera 0) at 0; gallery by distance: same id & camera (excluded), junk
    # (excluded), another id (wrong), same id other camera (correct), another id (wrong)
    emb = embeddings([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [1, 1, -1, 2, 1, 3], [0, 0, 1, 1, 1, 0], 1)
    [ranked] = ranked_lists(emb, [0], top_k=3, metric="euclidean")
    assert ranked.results == [1, 2, 3, 4, 5]
    assert ranked.status == ["excluded", "excluded", "wrong", "correct", "wrong"]
    assert ranked.ranks == [None, None, 1, 2, 3]
    # unknown cameras everywhere: nothing is excluded but junk
    emb.cameras[:] = -1
    [ranked] = ranked_lists(emb, [0], top_k=2, metric="euclidean")
    assert ranked.status == ["correct", "excluded", "wrong"]


def test_leave_one_out_never_lists_the_query() -> None:
    emb = embeddings([0.0, 0.1, 0.2, 0.3], [0, 0, 1, 1], [-1] * 4, 4)
    emb.is_gallery[:] = True
    lists = ranked_lists(emb, [0, 3], top_k=3, metric="euclidean")
    assert lists[0].results == [1, 2, 3] and lists[1].results == [2, 1, 0]
    assert lists[0].status == ["correct", "wrong", "wrong"]
    assert choose_queries(emb.is_query, 2, seed=0) == choose_queries(emb.is_query, 2, seed=0)


def test_ranked_list_figure_of_real_image_files(tmp_path: Path) -> None:
    root = make_market1501(tmp_path / "market")
    data = RetrievalDataModule(Market1501(root), transforms=PlainTransforms(16, 8))
    data.setup("validate")
    eval_set = data.eval_set
    assert eval_set is not None
    rng = np.random.default_rng(0)
    n = len(eval_set)
    emb = Embeddings(
        rng.normal(size=(n, 8)).astype(np.float32),
        eval_set.labels,
        eval_set.cameras,
        eval_set.is_query,
        eval_set.is_gallery,
    )
    lists = ranked_lists(emb, choose_queries(emb.is_query, 4), top_k=5)
    assert {s for r in lists for s in r.status} >= {"wrong", "excluded"}
    for ranked in lists:
        assert sum(rank is not None for rank in ranked.ranks) == 5
    fig = ranked_list_figure(lists, eval_set, emb.labels, title="fake market", cameras=emb.cameras)
    assert any("cam" in ax.get_title() for ax in fig.axes)
    assert png_ok(save_figure(fig, tmp_path / "ranked.png"))


def test_to_display_handles_tensors_arrays_and_images() -> None:
    gray = to_display(torch.linspace(-1, 1, 64).reshape(1, 8, 8))
    assert gray.shape == (8, 8, 3) and gray.min() == 0.0 and gray.max() == 1.0
    rgb = to_display(np.full((4, 2, 3), 255, np.uint8))
    assert rgb.shape == (4, 2, 3) and np.allclose(rgb, 1.0)
    assert to_display(Image.new("RGB", (3, 5))).shape == (5, 3, 3)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_figure(method: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(25), 3)
    x = rng.normal(size=(len(labels), 16)) + labels[:, None]
    fig = projection_figure(x, labels, method=method, max_identities=12)  # type: ignore[arg-type]
    ax = fig.axes[0]
    assert len(ax.collections) == 12  # one scatter per shown identity
    assert png_ok(save_figure(fig, tmp_path / f"{method}.png"))


# -- the callback's inputs ------------------------------------------------------------------------
def test_metric_embeddings_are_deduplicated_and_ordered() -> None:
    metric = RetrievalEvaluator()
    x = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    metric.update(
        x[3:],
        torch.tensor([1, 1, 0]),
        None,
        torch.tensor([3, 4, 5]),
        torch.tensor([False] * 3),
        torch.tensor([True] * 3),
    )
    metric.update(
        x[:4],
        torch.tensor([0, 1, 0, 1]),
        None,
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([True, True, False, False]),
        torch.tensor([False, False, True, True]),
    )
    emb = metric_embeddings(metric)
    assert emb is not None
    assert np.array_equal(emb.embeddings, x.numpy())
    assert emb.labels.tolist() == [0, 1, 0, 1, 1, 0]
    assert emb.is_query.tolist() == [True, True, False, False, False, False]
    assert emb.is_gallery.tolist() == [False, False, True, True, True, True]
    assert metric_embeddings(RetrievalEvaluator()) is None


def test_callback_schedule_and_wandb_images(tmp_path: Path) -> None:
    from pytorch_lightning.loggers import WandbLogger

    callback = RetrievalPictures(every_n_epochs=10)
    assert [
        callback._due(SimpleNamespace(current_epoch=e, max_epochs=25)) for e in (8, 9, 19, 23, 24)
    ] == [  # type: ignore[arg-type]
        False,
        True,
        True,
        False,
        True,
    ]
    logged: list[tuple[str, list[str], int]] = []
    wandb_logger = WandbLogger.__new__(WandbLogger)
    wandb_logger.log_image = lambda key, images, step=None: logged.append((key, images, step))  # type: ignore[method-assign]
    trainer = SimpleNamespace(loggers=[object(), wandb_logger], global_step=7)
    RetrievalPictures._log_wandb(trainer, "pictures/x", tmp_path / "x.png")  # type: ignore[arg-type]
    assert logged == [("pictures/x", [str(tmp_path / "x.png")], 7)]
    with pytest.raises(ValueError):
        RetrievalPictures(every_n_epochs=0)

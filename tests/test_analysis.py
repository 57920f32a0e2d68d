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
    plot_metric_curves,
    plot_recall_at_k,
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
from embedlab.report import BASELINE_ROW
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
    raw = with_baseline.iloc[0]
    assert raw["test/map@r"] == 0.5  # the raw pixels are measured on the test split: only there
    assert raw.filter(regex=r"^(val|final|best)/").isna().all()


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
    # runs without a test evaluation: every val metric, at the epoch selected on val
    assert list(table.columns[:4]) == ["run", "loss", "best epoch (val)", "val R@1"]
    assert table["run"].str.match(r"\w+/version_\d").all()
    assert all(c.startswith(("val ", "test ")) for c in table.columns[3:])
    assert "val MAP@R" in table.columns and "best val MAP@R" not in table.columns
    assert table["val MAP@R"].tolist() == pytest.approx([80.0, 70.0, 45.0])
    assert table["best epoch (val)"].tolist() == [10, 10, 15]
    assert table.attrs["ranked_by"] == "val/map@r" and table.attrs["note"] == ""
    assert table.attrs["title"] == "ranked by val MAP@R"
    markdown = to_markdown(table).splitlines()
    assert [c.strip() for c in markdown[0].split("|")[2:4]] == ["loss", "best epoch (val)"]
    assert [c[0] + c[-1] for c in markdown[1].split("|")[2:4]] == [":-", "-:"]  # left, right
    assert markdown[2].split("|")[2].strip() == "msml (margin=0.4)" and "80.00" in markdown[2]


def test_summary_table_shows_test_beside_the_val_selection(runs: Path) -> None:
    for i, run in enumerate(find_runs(runs)):
        summary = json.loads((run / "summary.json").read_text())
        summary["val"] = {"map@r": 0.9 - i / 10, "epochs": 10}
        summary["test"] = {"map@r": 0.5 + i / 10, "recall@1": 0.9, "epochs": 10}
        (run / "summary.json").write_text(json.dumps(summary))
    table = summary_table(compare_runs(runs), sort="map@r")
    # the selection metric on val, then the test evaluation
    assert list(table.columns[:4]) == ["run", "loss", "best epoch (val)", "val MAP@R"]
    assert set(table.columns[4:]) == {"test R@1", "test MAP@R"}
    # ranked on val (the test split would rank them the other way round)
    assert table["val MAP@R"].tolist() == pytest.approx([90.0, 80.0, 70.0])
    assert table["test MAP@R"].tolist() == pytest.approx([50.0, 60.0, 70.0])
    assert table["best epoch (val)"].tolist() == [10, 10, 10]
    assert table.attrs["ranked_by"] == "val/map@r"


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
    assert "3 runs, ranked by val MAP@R; raw pixels: test split" in " ".join(out.split())
    assert main(["compare", str(tmp_path / "missing")]) == 2


# -- splits never mix: runs with and without validation, folders of `embedlab test` -----------
METRICS = ["recall@1", "recall@2", "recall@4", "map", "map@r", "r_precision", "minp"]
RAW, TEST = 0.21, 0.41  # every raw-pixel number starts at RAW, every test number at TEST
COUNTS = {"num_valid_queries": 70.0, "num_skipped_queries": 0.0}


def split_values(base: float, run: int) -> dict[str, float]:
    """Distinct numbers per split, run and metric (no val number equals any test number)."""
    return {m: round(base + run / 100 + j / 1000, 6) for j, m in enumerate(METRICS)}


def cli_run(folder: Path, run: int, val_every: int | None, epochs: int = 5) -> Path:
    """A run folder as `embedlab fit` writes it (metrics.csv with train/, val/ and the final
    test/ rows; summary.json with `raw pixels`, `val` when validated, `test`, `checkpoint`);
    `val_every=None`: `--data.val none`, no validation at all."""
    folder.mkdir(parents=True)
    rows: list[dict[str, Any]] = [{"data/skipped_files": 0.0, "epoch": None, "step": 0}]
    val_rows: dict[int, dict[str, float]] = {}
    for epoch in range(epochs):
        for step in range(2):
            rows.append({"epoch": epoch, "step": 2 * epoch + step, "train/loss": 1 / (epoch + 1)})
        if val_every and (epoch + 1) % val_every == 0:  # validation rises, then falls
            val = split_values(0.61 + 0.1 * min(epoch, epochs - 1 - epoch), run)
            val_rows[epoch + 1] = val
            rows.append(
                {
                    "epoch": epoch,
                    "step": 2 * epoch + 1,
                    **{f"val/{k}": v for k, v in {**val, **COUNTS}.items()},
                }
            )
    test = {**split_values(TEST, run), **COUNTS}
    rows.append({"epoch": epochs, "step": 2 * epochs, **{f"test/{k}": v for k, v in test.items()}})
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    config = {
        "trainer": {"max_epochs": epochs, "check_val_every_n_epoch": val_every or 1},
        "model": {"loss": TRIPLET if run % 2 == 0 else MSML},
        "data": {"dataset": "digits", "val": None if val_every is None else {"fraction": 0.1}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    summary: dict[str, Any] = {"raw pixels": {**split_values(RAW, 0), **COUNTS}}
    if val_rows:  # the checkpoint selected on val (the best MAP@R)
        best = max(val_rows, key=lambda e: val_rows[e]["map@r"])
        summary["val"] = {**val_rows[best], **COUNTS, "epochs": float(best)}
        selected = best
    else:
        selected = epochs
    summary["test"] = {**test, "epochs": float(selected)}
    summary["checkpoint"] = {
        "path": str(folder / "checkpoints" / "x.ckpt"),
        "epoch": selected,
        "step": 2 * selected,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return folder


def evaluation_folder(folder: Path, split: str, base: float) -> Path:
    """What `embedlab test` / `embedlab validate` left: a config, the evaluated split's rows in
    metrics.csv and, for test, test_metrics.json; no training."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"loss": TRIPLET}}))
    values = split_values(base, 9)
    row = {"epoch": 0, "step": 0, **{f"{split}/{k}": v for k, v in values.items()}}
    pd.DataFrame([row]).to_csv(folder / "metrics.csv", index=False)
    if split == "test":
        (folder / "test_metrics.json").write_text(json.dumps({"test": values}))
    return folder


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """version_0: validated every epoch; version_1: `data.val: none`; version_2: `embedlab test`
    (test_metrics.json, test/ rows); version_3: `embedlab validate`; version_4: test only."""
    root = tmp_path / "runs" / "mixed"
    cli_run(root / "version_0", 0, val_every=1)
    cli_run(root / "version_1", 1, val_every=None)
    evaluation_folder(root / "version_2", "test", 0.91)
    evaluation_folder(root / "version_3", "val", 0.95)
    (root / "version_4").mkdir()
    (root / "version_4" / "test_metrics.json").write_text(json.dumps({"test": {"map@r": 0.99}}))
    return root


def numbers(frame: pd.DataFrame, regex: str) -> set[float]:
    values = frame.filter(regex=regex).to_numpy(dtype=float).ravel()
    return {round(float(v), 6) for v in values if np.isfinite(v)}


def test_folders_without_a_training_run_are_not_runs(mixed: Path) -> None:
    assert find_runs(mixed) == [mixed / "version_0", mixed / "version_1"]
    assert find_runs(mixed / "version_2") == []  # named directly: still no run
    frame = compare_runs(mixed)
    assert frame["name"].tolist() == ["mixed/version_0", "mixed/version_1"]
    assert not numbers(frame, r"/") & {0.91, 0.95, 0.99}  # none of their numbers is anywhere


def test_compare_runs_keeps_each_number_in_its_split(mixed: Path) -> None:
    frame = compare_runs(mixed, baseline=True)
    assert frame["loss"].tolist()[0] == "raw pixels" and len(frame) == 3
    raw, validated, unvalidated = (frame.iloc[i] for i in range(3))
    test_numbers = numbers(frame, r"^test/")
    assert test_numbers == {
        *split_values(RAW, 0).values(),
        *split_values(TEST, 0).values(),
        *split_values(TEST, 1).values(),
    }
    # the validation columns hold validation numbers only: none of the test split's
    assert not numbers(frame, r"^(val|final|best)/") & test_numbers
    assert validated["val/map@r"] == pytest.approx(0.814)  # the best epoch's (summary.json)
    assert validated["best/map@r"] == validated["val/map@r"] and validated["best_epoch"] == 3
    assert validated["val_epoch"] == 3 and validated["val_from"] == "summary.json"
    assert (
        validated["test/map@r"] == pytest.approx(0.414) and validated["test_from"] == "summary.json"
    )
    # a run without validation: empty val columns, its test numbers only in test columns
    assert unvalidated.filter(regex=r"^(val|final|best)/").isna().all()
    assert pd.isna(unvalidated["best_epoch"]) and pd.isna(unvalidated["val_epoch"])
    assert unvalidated["test/map@r"] == pytest.approx(0.424) and unvalidated["epochs"] == 5
    # the raw pixels: test numbers only, in test columns
    assert raw.filter(regex=r"^(val|final|best)/").isna().all()
    assert raw["test/map@r"] == pytest.approx(0.214)


def test_summary_table_names_each_split_and_what_ranks_the_runs(mixed: Path) -> None:
    frame = compare_runs(mixed, baseline=True)
    table = summary_table(frame, sort="map@r")
    assert table["run"].tolist() == ["", "mixed/version_1", "mixed/version_0"]
    assert table["loss"].tolist()[0] == "raw pixels"
    metric_columns = [c for c in table.columns if c not in ("run", "loss", "best epoch (val)")]
    assert metric_columns and all(c.startswith(("val ", "test ")) for c in metric_columns)
    assert not any("best val" in c for c in table.columns)
    assert metric_columns[0] == "val MAP@R"  # the selection metric, then every test metric
    val_cells = table.filter(regex=r"^val ").to_numpy(dtype=float)
    test_cells = table.filter(regex=r"^test ").to_numpy(dtype=float)
    assert np.isnan(val_cells[:2]).all()  # raw pixels and the run without validation
    assert val_cells[2, 0] == pytest.approx(81.4)
    assert not {round(v, 4) for v in val_cells.ravel() if np.isfinite(v)} & {
        round(v, 4) for v in test_cells.ravel() if np.isfinite(v)
    }
    assert table["test MAP@R"].tolist() == pytest.approx([21.4, 42.4, 41.4])
    assert table["best epoch (val)"].isna().tolist() == [True, True, False]
    # one run has no validation: they are ranked on test, and the title says so
    assert table.attrs["ranked_by"] == "test/map@r"
    assert "ranked by test MAP@R: 1 of 2 runs have no validation MAP@R" in table.attrs["title"]
    assert "raw pixels: test split" in table.attrs["title"]
    # without the run lacking validation, validation ranks them
    only_validated = summary_table(frame.iloc[[0, 1]], sort="map@r")
    assert only_validated.attrs["ranked_by"] == "val/map@r" and only_validated.attrs["note"] == ""


def test_recall_at_k_plots_each_split_in_its_own_panel(mixed: Path) -> None:
    frame = compare_runs(mixed, baseline=True)
    fig = plot_recall_at_k(frame)
    val_ax, test_ax = fig.axes[:2]
    assert "validation" in val_ax.get_title() and "test" in test_ax.get_title()
    val_lines = {line.get_label(): line for line in val_ax.get_lines()}
    assert list(val_lines) == [
        "Triplet[SemiHard]"
    ]  # neither the raw pixels nor the unvalidated run
    expected = [100 * frame.iloc[1][f"val/recall@{k}"] for k in (1, 2, 4)]
    assert val_lines["Triplet[SemiHard]"].get_ydata() == pytest.approx(expected)
    test_labels = [line.get_label() for line in test_ax.get_lines()]
    assert test_labels == ["raw pixels (test split)", "Triplet[SemiHard]", "MSML"]
    for ax in (val_ax, test_ax):
        assert ax.get_legend() is not None
    curves = plot_metric_curves(frame)  # validation history: the validated run only
    assert {line.get_label() for ax in curves.axes for line in ax.get_lines()} == {
        "Triplet[SemiHard]"
    }


def test_compare_command_on_runs_with_and_without_validation(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "cmp"
    assert main(["compare", str(mixed), "--baseline", "--out", str(out_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 runs, ranked by test MAP@R: 1 of 2 runs have no validation" in out
    assert "version_2" not in out and "version_3" not in out
    markdown = (out_dir / "comparison.md").read_text().splitlines()
    header = [c.strip() for c in markdown[0].split("|")[1:-1]]
    assert header[:4] == ["run", "loss", "best epoch (val)", "val MAP@R"]
    assert len(markdown) == 2 + 3 + 2  # header, 3 rows, a blank line, what ranks them
    assert markdown[-1].startswith("Ranked by test MAP@R: 1 of 2 runs have no validation")
    rows = {r.split("|")[2].strip(): [c.strip() for c in r.split("|")[1:-1]] for r in markdown[2:5]}
    assert rows["MSML"][3] == "" and rows["raw pixels"][3] == ""  # empty val cells
    assert rows["Triplet[SemiHard]"][3] == "81.40"
    csv = pd.read_csv(out_dir / "comparison.csv")
    assert len(csv) == 3 and csv["test_from"].tolist() == ["summary.json"] * 3
    for name in ("curves", "recall_at_k", "training_loss"):
        assert png_ok(out_dir / f"{name}.png"), name


def test_test_metrics_in_a_trained_run_fill_only_its_test_columns(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "x" / "version_0", TRIPLET, [0.5, 0.7, 0.6])
    (run / "summary.json").unlink()  # killed before the final test
    (run / "test_metrics.json").write_text(json.dumps({"test": {"map@r": 0.33, "recall@1": 0.44}}))
    [row] = compare_runs(run).to_dict("records")
    assert row["test/map@r"] == 0.33 and row["test_from"] == "test_metrics.json"
    assert row["val/map@r"] == 0.7 and row["val_from"] == "metrics.csv"  # the best epoch
    assert row["best/map@r"] == 0.7 and row["final/map@r"] == 0.6
    table = summary_table(compare_runs(run), sort="map@r")
    assert table["test MAP@R"].tolist() == pytest.approx([33.0])
    assert table["val MAP@R"].tolist() == pytest.approx([70.0])


@pytest.mark.slow
def test_compare_on_real_runs_with_and_without_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The files of real tiny runs (the shared digits sweep, read only): one as trained, one made
    a run without validation, one an `embedlab test` folder; then `embedlab compare`."""
    from digits_runs import digits_sweep

    result = digits_sweep()
    assert result.exit_code == 0
    real = find_runs(result.folder)[0]
    root = tmp_path / "runs" / "real"
    for name in ("version_0", "version_1", "version_2"):
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text((real / "config.yaml").read_text())
    metrics = pd.read_csv(real / "metrics.csv")
    summary = json.loads((real / "summary.json").read_text())
    assert {"raw pixels", "val", "test", "checkpoint"} <= set(summary)
    metrics.to_csv(root / "version_0" / "metrics.csv", index=False)
    (root / "version_0" / "summary.json").write_text(json.dumps(summary))
    # data.val none: no val/ column, no val row
    no_val = metrics[[c for c in metrics.columns if not c.startswith("val/")]]
    no_val.to_csv(root / "version_1" / "metrics.csv", index=False)
    (root / "version_1" / "summary.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "val"})
    )
    # `embedlab test`: its test/ row and test_metrics.json only
    tested = metrics.dropna(subset=["test/map@r"])[["epoch", "step", *metrics.filter(like="test/")]]
    tested.to_csv(root / "version_2" / "metrics.csv", index=False)
    (root / "version_2" / "test_metrics.json").write_text(json.dumps({"test": summary["test"]}))

    assert main(["compare", str(root), "--baseline", "--out", str(tmp_path / "cmp")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 runs, ranked by test MAP@R: 1 of 2 runs have no validation" in out
    frame = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert frame["name"].fillna("").tolist() == ["", "real/version_0", "real/version_1"]
    test_numbers = numbers(frame, r"^test/")
    assert round(summary["test"]["map@r"], 6) in test_numbers
    assert round(summary[BASELINE_ROW]["map@r"], 6) in test_numbers
    assert not numbers(frame, r"^(val|final|best)/") & test_numbers
    assert frame.loc[1, "val/map@r"] == pytest.approx(summary["val"]["map@r"])
    assert frame.loc[2].filter(regex=r"^(val|final|best)/").isna().all()
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "val MAP@R" in table and "test MAP@R" in table and "best val" not in table


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

"""The paths users walk between embedlab's parts, with the real commands.

(a) train, kill -9, resume: the same final state as a run that was never interrupted;
(b) the default digits model embeds a folder of PNG files, indexes and searches it;
(d) fit → test → validate → compare: one row per run, each column says its split.
The README's "Extending" command is run as printed by ``test_extending.py``; every README
command by ``test_readme.py`` and every README figure by ``test_readme_figures.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from embedlab.data.digits import digit_pixels, digits_frame

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "experiments" / "digits.yaml")
QUIET = ["--trainer.enable_progress_bar=false"]
# 12 epochs of 10 steps, validated at epochs 5 and 10
TWELVE = ["--trainer.max_epochs=12", "--trainer.check_val_every_n_epoch=5", *QUIET]


def embedlab(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "embedlab", *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def run_ok(*args: str, cwd: Path | None = None) -> str:
    return finish(embedlab(*args, cwd=cwd))


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_kill_then_resume_ends_as_the_uninterrupted_run(tmp_path: Path) -> None:
    whole = embedlab("fit", "--config", DIGITS, *TWELVE, f"--output_root={tmp_path / 'a'}")
    killed = embedlab("fit", "--config", DIGITS, *TWELVE, f"--output_root={tmp_path / 'b'}")
    run_b = tmp_path / "b" / "digits" / "version_0"
    last = run_b / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    step = -1
    while time.time() < deadline and killed.poll() is None:  # kill -9 during epoch 11
        if last.is_file() and (step := checkpoint_step(last)) >= 100:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert step in (100, 110), step  # last.ckpt is the latest epoch end, not the best (epoch 10)
    finish(whole)

    out = run_ok("fit", "--config", str(run_b / "config.yaml"), f"--ckpt_path={last}", *QUIET)
    assert f"epoch {step // 10 + 1}" in out and f"{step} steps done" in out, out[-2000:]

    run_a = tmp_path / "a" / "digits" / "version_0"
    for run in (run_a, run_b):
        names = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert names == ["best-step100.ckpt", "last.ckpt"], names  # one last, one best
        assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 120
    summary_a = json.loads((run_a / "summary.json").read_text())
    summary_b = json.loads((run_b / "summary.json").read_text())
    for split in ("val", "test"):
        assert summary_a[split] == summary_b[split], split  # bit-equal
    tested = summary_b["checkpoint"]
    assert Path(tested["path"]).name == "best-step100.ckpt"
    assert (tested["epoch"], tested["step"]) == (10, 100)
    assert checkpoint_step(Path(tested["path"])) == tested["step"]
    weights_a = torch.load(run_a / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights_b = torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    # resuming the finished run trains nothing and tests the same checkpoint
    again = run_ok("fit", "--config", str(run_b / "config.yaml"), f"--ckpt_path={last}", *QUIET)
    assert "12 epochs and 120 steps done" in again or "max_epochs=12" in again, again[-2000:]
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir()) == names
    assert json.loads((run_b / "summary.json").read_text())["test"] == summary_a["test"]


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_run_resumes(tmp_path: Path) -> None:
    args = ["fit", "--config", DIGITS, *TWELVE, "--trainer.max_epochs=3"]
    process = embedlab(*args, f"--output_root={tmp_path}")
    metrics = tmp_path / "digits" / "version_0" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:  # a few steps into training
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode != 0, "a stopped run must not look finished"
    last = tmp_path / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    step = checkpoint_step(last)
    assert 0 < step < 30 and f"holds step {step}" in out, out[-2000:]
    config = tmp_path / "digits" / "version_0" / "config.yaml"
    run_ok("fit", "--config", str(config), f"--ckpt_path={last}", *QUIET)
    assert checkpoint_step(last) == 30


def write_digit_pngs(folder: Path, split: str) -> pd.DataFrame:
    """The digits of ``split`` as 8×8 grey PNG files ``<label>/<n>.png``."""
    frame = digits_frame()
    rows = frame[frame["split"] == split].copy()
    pixels = digit_pixels()
    files = []
    for path, label in zip(rows["path"], rows["label"], strict=True):
        index = int(path.removeprefix("digits/"))
        file = folder / str(label) / f"{index}.png"
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index]).save(file)
        files.append(str(file))
    rows["file"] = files
    return rows


@pytest.mark.slow
def test_default_model_embeds_and_searches_png_files(tmp_path: Path) -> None:
    run_ok("fit", "--config", DIGITS, "--trainer.max_epochs=10", *QUIET, cwd=tmp_path)
    ckpt = "runs/digits/version_0/checkpoints/last.ckpt"
    gallery = write_digit_pngs(tmp_path / "photos", "gallery")
    queries = write_digit_pngs(tmp_path / "queries", "query")
    run_ok(
        "embed", "--ckpt_path", ckpt, "--images", "photos", "--out", "photos.parquet", cwd=tmp_path
    )
    run_ok("index", "build", "--embeddings", "photos.parquet", "--out", "photos.index",
           "--factory", "Flat", "--metric", "cosine", cwd=tmp_path)  # fmt: skip
    run_ok("search", "--index", "photos.index", "--ckpt_path", ckpt, "--images", "queries",
           "--k", "10", "--out", "hits.csv", cwd=tmp_path)  # fmt: skip

    # the PNG files embed exactly as the same digits in memory (the run's own test split)
    run_ok("embed", "--ckpt_path", ckpt, "--data_split", "gallery", "--out", "split.parquet",
           cwd=tmp_path)  # fmt: skip
    files = pd.read_parquet(tmp_path / "photos.parquet")
    split = pd.read_parquet(tmp_path / "split.parquet")
    by_file = dict(zip(files["path"].map(lambda p: Path(p).stem), files["embedding"], strict=True))
    by_row = dict(zip(split["path"].str.removeprefix("digits/"), split["embedding"], strict=True))
    assert len(by_file) == len(gallery) and by_file.keys() == by_row.keys()
    for key, vector in by_row.items():
        np.testing.assert_allclose(by_file[key], vector, atol=1e-5)

    hits = pd.read_csv(tmp_path / "hits.csv")
    assert hits["query"].nunique() == len(queries) and hits["rank"].max() == 10
    label_of = lambda p: Path(p).parent.name  # noqa: E731
    first = hits[hits["rank"] == 1]
    precision_at_1 = (first["query"].map(label_of) == first["path"].map(label_of)).mean()
    assert precision_at_1 >= 0.9, precision_at_1


@pytest.mark.slow
def test_fit_test_validate_compare_keeps_one_row_per_run_and_each_split_apart(
    tmp_path: Path,
) -> None:
    """(d) Two runs, one without validation; ``embedlab test`` / ``validate`` on the first
    write into it; ``compare`` lists two rows whose val and test columns come from their
    own splits."""
    four = ["--trainer.max_epochs=4", "--trainer.check_val_every_n_epoch=2", *QUIET]
    four += ["--data.batches_per_epoch=4"]
    run_ok("fit", "--config", DIGITS, *four, cwd=tmp_path)
    run_ok("fit", "--config", DIGITS, *four, "--data.val=none", cwd=tmp_path)
    first, second = tmp_path / "runs/digits/version_0", tmp_path / "runs/digits/version_1"
    summary = json.loads((first / "summary.json").read_text())
    best = summary["checkpoint"]["path"]
    again = ["--config", str(first / "config.yaml"), "--ckpt_path", best]
    test_out = run_ok("test", *again, cwd=tmp_path)
    run_ok("validate", *again, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs/digits").iterdir()) == [
        "version_0",
        "version_1",
    ]  # test and validate wrote into the run, not into new version folders
    assert test_out.count("map@r") == 1, test_out  # one table
    assert "warn" not in test_out.lower(), test_out  # e.g. Lightning's note on callbacks
    tested = json.loads((first / "test_metrics.json").read_text())
    validated = json.loads((first / "val_metrics.json").read_text())
    assert tested["checkpoint"] == summary["checkpoint"]
    for key in ("map@r", "recall@1", "map"):  # the selected checkpoint, tested again
        assert tested["test"][key] == pytest.approx(summary["test"][key], abs=1e-6)
    metrics = pd.read_csv(first / "metrics.csv")
    done = summary["checkpoint"]["epoch"]  # epochs completed; metrics.csv counts from 0
    selected_val = metrics.loc[metrics["epoch"] == done - 1, "val/map@r"]
    assert validated["val"]["map@r"] == pytest.approx(selected_val.dropna().iloc[-1], abs=1e-6)

    run_ok("compare", "runs/digits", "--baseline", "--out", "comparison", cwd=tmp_path)
    table = pd.read_csv(tmp_path / "comparison" / "comparison.csv")
    raw = table[table["loss"] == "raw pixels"]
    runs = table[table["loss"] != "raw pixels"]
    assert sorted(runs["name"]) == ["digits/version_0", "digits/version_1"], table
    row = {str(r["name"]).split("/")[1]: r for _, r in runs.iterrows()}
    assert row["version_0"]["val/map@r"] == pytest.approx(selected_val.dropna().max(), abs=1e-6)
    assert row["version_0"]["test/map@r"] == pytest.approx(summary["test"]["map@r"], abs=1e-6)
    assert pd.isna(row["version_1"]["val/map@r"])  # no validation: no val number
    second_test = json.loads((second / "summary.json").read_text())["test"]["map@r"]
    assert row["version_1"]["test/map@r"] == pytest.approx(second_test, abs=1e-6)
    assert len(raw) == 1 and pd.isna(raw.iloc[0]["val/map@r"])  # raw pixels: test only
    assert raw.iloc[0]["test/map@r"] == pytest.approx(summary["raw pixels"]["map@r"], abs=1e-6)


@pytest.mark.slow
def test_the_readmes_first_override_changes_the_run(tmp_path: Path) -> None:
    """``--model.loss.init_args.margin=0.3`` (the README's first example) must change what is
    learned: in a collapsed regime every triplet is active and a margin only adds a constant."""
    short = ["--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=3", *QUIET]
    for margin in ("0.2", "0.3"):
        run_ok("fit", "--config", DIGITS, *short, f"--model.loss.init_args.margin={margin}",
               f"--output_root={tmp_path / margin}")  # fmt: skip
    val = {
        margin: pd.read_csv(tmp_path / margin / "digits/version_0/metrics.csv")["val/map@r"]
        .dropna()
        .iloc[-1]
        for margin in ("0.2", "0.3")
    }
    assert val["0.2"] != val["0.3"], val

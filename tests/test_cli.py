"""The embedlab command: config round-trip, overrides, and the real training path on digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from embedlab.cli import main
from embedlab.runs import new_run_dir

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "experiments" / "digits.yaml")
FAST = [
    "--trainer.max_epochs=12",
    "--trainer.check_val_every_n_epoch=6",
    "--data.batches_per_epoch=10",
    "--trainer.enable_progress_bar=false",
]


def print_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", DIGITS, *args, "--print_config"])
    assert stop.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_round_trip_and_dotted_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = print_config(["--model.loss.init_args.margin=0.35"], capsys)
    loss = config["model"]["loss"]
    assert loss["class_path"] == "embedlab.losses.TripletLoss"
    assert loss["init_args"]["margin"] == 0.35
    assert config["model"]["model"]["init_args"]["embedding_dim"] == 64
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(saved), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == config


def test_unknown_loss_class_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fit", "--config", DIGITS, "--model.loss=embedlab.losses.NoSuchLoss", "--print_config"]
    assert main(args) == 2
    assert "NoSuchLoss" in capsys.readouterr().err


def test_run_dirs_are_never_reused(tmp_path: Path) -> None:
    first, second = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert (first.name, second.name) == ("version_0", "version_1")


@pytest.mark.slow
def test_fit_on_digits_beats_raw_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", *FAST])
    run = tmp_path / "digits" / "version_0"
    metrics = pd.read_csv(run / "metrics.csv")
    for key in (
        "val/recall@1",
        "val/map",
        "val/map@r",
        "train/loss",
        "train/TripletLoss/active_fraction",
    ):
        assert key in metrics.columns, key
    val = metrics.dropna(subset=["val/map@r"])
    assert len(val) == 2  # validated at epochs 6 and 12
    summary = json.loads((run / "summary.json").read_text())
    raw, selected, test = summary["raw pixels"], summary["val"], summary["test"]
    assert selected["map@r"] == pytest.approx(val["val/map@r"].max())
    assert test["map@r"] == pytest.approx(metrics["test/map@r"].dropna().item())
    assert test["map@r"] > raw["map@r"] + 0.1  # raw pixels: the test split too
    assert test["map"] > raw["map"] + 0.05
    out = capsys.readouterr().out
    assert "raw pixels" in out and "test" in out
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    # a second run gets a new folder
    main(
        [
            "fit",
            "--config",
            DIGITS,
            f"--output_root={tmp_path}",
            *FAST,
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=0",
        ]
    )
    assert (tmp_path / "digits" / "version_1" / "metrics.csv").is_file()


@pytest.mark.slow
def test_console_script_and_module_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "embedlab"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "fit" in out.stdout and "validate" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "embedlab", "fit", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--model.loss" in out.stdout


#: what a run must not print: colour codes in a log, the logger's version, a FLOPs count
#: of 0, the seed line, Python warnings (Lightning's, wandb's deprecations)
NOISE = ("\x1b[", "v_num", "FLOPs", "Seed set to", "Warning:", "warn(", "anonymous setting")


def assert_quiet(output: str) -> None:
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in:\n{output[-3000:]}"


def test_a_bad_option_prints_one_line_and_nothing_else(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    argv = [sys.executable, "-m", "embedlab", "fit", "--config", DIGITS]
    argv += [f"--output_root={tmp_path}", "--data.batches_per_epoch=0"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.splitlines() == [
        "embedlab: error: data.batches_per_epoch: expected a positive int or null, got 0"
    ]
    assert not tmp_path.joinpath("digits").exists()


@pytest.mark.slow
def test_wandb_offline_run_records_the_validation_metrics(tmp_path: Path) -> None:
    from wandb_records import history

    env = {**os.environ, "WANDB_MODE": "offline", "EMBEDLAB_WANDB": "offline"}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedlab",
            "fit",
            "--config",
            DIGITS,
            f"--output_root={tmp_path}",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1",
            "--data.batches_per_epoch=3",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert_quiet(done.stdout + done.stderr)
    run = tmp_path / "digits" / "version_0"
    (log,) = run.glob("wandb/offline-run-*/run-*.wandb")
    rows = history(log)
    val = [r for r in rows if "val/map@r" in r]
    assert [r["epoch"] for r in val] == [0, 1]
    csv = pd.read_csv(run / "metrics.csv").dropna(subset=["val/map@r"])
    assert [r["val/map@r"] for r in val] == pytest.approx(csv["val/map@r"].tolist(), abs=1e-6)
    assert any("train/loss" in r for r in rows)


@pytest.mark.slow
def test_evaluate_a_checkpoint_writes_metrics_next_to_the_run(tmp_path: Path) -> None:
    main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", *FAST, "--trainer.max_epochs=6"])
    run = tmp_path / "digits" / "version_0"
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert main(["evaluate", "--ckpt_path", str(best)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())["metrics"]
    tested = json.loads((run / "summary.json").read_text())["test"]
    # fit tested the checkpoint selected on val: evaluating it again gives the same numbers
    for key in ("recall@1", "map", "map@r", "minp"):
        assert evaluation[key] == pytest.approx(tested[key], abs=1e-6)
    assert pd.read_csv(run / "evaluation.csv")["map@r"].iloc[0] == pytest.approx(tested["map@r"])
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["version_0"]
    assert not (Path.cwd() / "config.yaml").exists()  # nothing written outside the run folder
    # --rerank / --flip_test: the same numbers as evaluate() on the checkpoint's embeddings
    from embedlab.analysis.runs import compute_embeddings
    from embedlab.metrics import evaluate
    from embedlab.runs import load_module

    module, data = load_module(run, "best")
    data.setup("test")
    emb = compute_embeddings(module.model, data.test_dataloader())
    metric = str(module.hparams["distance"])
    q, g = emb.is_query, emb.is_gallery
    assert not (q.all() and g.all())  # a query / gallery split, not leave-one-out
    args = (emb.embeddings[q], emb.labels[q], emb.embeddings[g], emb.labels[g])
    for flag, expected in [
        ("--rerank", evaluate(*args, distance=metric, rerank=True, chunk_size=1024)),
        ("--flip_test", None),
    ]:
        out = tmp_path / flag.strip("-")
        out.mkdir()
        assert main(["evaluate", "--ckpt_path", str(best), "--out", str(out), flag]) == 0
        written = json.loads((out / "evaluation.json").read_text())
        assert written[flag.strip("-")] is True  # the file says how its numbers were made
        assert pd.read_csv(out / "evaluation.csv")[flag.strip("-")].iloc[0]
        got = written["metrics"]
        assert got["map"] != pytest.approx(evaluation["map"], abs=1e-6)
        if expected is not None:
            for key in ("recall@1", "map", "map@r", "minp"):
                assert got[key] == pytest.approx(expected[key], abs=1e-6)
    # another digits split would test on training images: refused unless --resplit
    resplit = tmp_path / "resplit"
    other_split = ["evaluate", "--ckpt_path", str(best), "--out", str(resplit)]
    other_split += ["--data", "{dataset: {init_args: {seed: 3}}}"]
    assert main(other_split) == 2
    assert not (resplit / "evaluation.json").exists()
    assert main([*other_split, "--resplit"]) == 0
    assert json.loads((resplit / "evaluation.json").read_text())["resplit"] is True


def help_text(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text([], capsys)
    listed = text.split("Available subcommands:")[1]
    for command in ("fit", "validate", "test", "evaluate", "compare", "sweep", "data"):
        assert f"\n    {command} " in listed, command
    assert "predict" not in listed  # it would discard its embeddings
    assert "\n    check " in help_text(["data"], capsys)


def test_fit_help_is_readable_and_lists_embedlab_losses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(["fit"], capsys)
    assert len(text.splitlines()) < 420
    loss = text.split("--model.loss LOSS")[1].split("--model.loss_weight")[0]
    assert "embedlab.losses.TripletLoss" in loss and "torch.nn" not in loss
    assert "embedlab.schedules.WarmupMultiStep" in text  # model.lr_scheduler's known classes


def test_tool_flags_use_one_style(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--no_plots" in help_text(["compare"], capsys)
    assert "--no_images" in help_text(["data", "check"], capsys)
    text = help_text(["evaluate"], capsys)
    assert "--ckpt_path" in text and "--flip_test" in text
    assert "--dry_run" in help_text(["sweep"], capsys)


def test_any_torch_module_is_still_a_loss(capsys: pytest.CaptureFixture[str]) -> None:
    config = print_config(["--model.loss=torch.nn.TripletMarginLoss"], capsys)
    assert config["model"]["loss"]["class_path"] == "torch.nn.TripletMarginLoss"

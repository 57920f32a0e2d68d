"""embedlab sweep: wandb sweep files run locally (grid / random) and through a (faked) wandb."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from digits_runs import LOSSES, ROOT, SWEEP, digits_sweep
from embedlab import sweep
from embedlab.analysis import compare_runs, find_runs
from embedlab.cli import main


def write_sweep(tmp_path: Path, config: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


BASE = {
    "method": "grid",
    "parameters": {
        "model.loss.init_args.margin": {"values": [0.1, 0.2]},
        "model.loss": {"values": ["experiments/losses/msml.yaml", "a.b.C"]},
        "seed_everything": {"value": 3},
    },
    "command": ["${env}", "embedlab", "fit", "--config", "x.yaml", "--wandb=online", "${args}"],
}


# -- the sweep file -> trials ----------------------------------------------------------------
def test_grid_is_the_full_product_with_parents_before_children() -> None:
    points = sweep.grid_points(BASE["parameters"])
    assert len(points) == 4
    assert {(p["model.loss"], p["model.loss.init_args.margin"]) for p in points} == {
        (loss, m) for loss in BASE["parameters"]["model.loss"]["values"] for m in (0.1, 0.2)
    }
    for point in points:
        keys = list(point)
        assert keys.index("model.loss") < keys.index("model.loss.init_args.margin")
        assert point["seed_everything"] == 3


def test_commands_mirror_wandb_agent_and_append_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"model.loss": "experiments/losses/msml.yaml", "model.loss.init_args.margin": 0.4}
    command = sweep.build_command(BASE, params, ["--wandb=off", "--trainer.max_epochs=1"])
    assert command == [
        "embedlab",
        "fit",
        "--config",
        "x.yaml",
        "--wandb=online",
        "--model.loss=experiments/losses/msml.yaml",
        "--model.loss.init_args.margin=0.4",
        "--wandb=off",
        "--trainer.max_epochs=1",
    ]
    assert sweep.embedlab_args(command) == command[1:]
    assert sweep.embedlab_args(["/usr/bin/env", "python", "-m", "embedlab", "fit"]) == ["fit"]
    assert sweep.embedlab_args(["python", "train.py"]) is None
    monkeypatch.setenv("MY_CONFIG", "y.yaml")
    other = {
        "command": ["${interpreter}", "${program}", "${envvar:MY_CONFIG}", "${args_no_hyphens}"],
        "program": "p.py",
    }
    assert sweep.build_command(other, {"a": 1}) == [sys.executable, "p.py", "y.yaml", "a=1"]
    flags = sweep.format_args({"x": True, "y": False, "z": 2})
    assert flags["args_no_boolean_flags"] == ["--x", "--z=2"]
    assert json.loads(flags["args_json"][0]) == {"x": True, "y": False, "z": 2}


def test_embedlab_options_go_only_to_embedlab_commands() -> None:
    other = {**BASE, "command": ["python", "train.py", "${args}"]}
    [trial] = sweep.local_trials(
        other, count=1, overrides=["--x=1"], embedlab_overrides=["--wandb=off"]
    )
    assert trial.command == ["python", "train.py", *trial.command[2:-1], "--x=1"]
    assert "--wandb=off" not in trial.command
    [trial] = sweep.local_trials(
        BASE, count=1, overrides=["--x=1"], embedlab_overrides=["--wandb=off"]
    )
    assert trial.command[-2:] == ["--wandb=off", "--x=1"]


def test_random_search_samples_inside_the_ranges_reproducibly() -> None:
    parameters = {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "wd": {"values": [0.0, 0.1]},
        "k": {"min": 2, "max": 5},
        "m": {"min": 0.1, "max": 0.9},
        "q": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
        "c": {"value": "fixed"},
    }
    points = sweep.random_points(parameters, 50, seed=1)
    assert points == sweep.random_points(parameters, 50, seed=1)
    assert points != sweep.random_points(parameters, 50, seed=2)
    lrs = np.array([p["lr"] for p in points])
    assert ((lrs >= 1e-4) & (lrs <= 1e-2)).all() and lrs.min() < 1e-3 < lrs.max()
    assert {p["wd"] for p in points} == {0.0, 0.1}
    assert {p["k"] for p in points} <= {2, 3, 4, 5} and all(isinstance(p["k"], int) for p in points)
    assert all(0.1 <= p["m"] <= 0.9 for p in points)
    assert all(p["q"] % 2 == 0 for p in points)
    assert all(p["c"] == "fixed" for p in points)


def test_count_and_run_cap() -> None:
    random_config = {"method": "random", "run_cap": 5, "parameters": {"a": {"values": [1, 2]}}}
    assert len(sweep.trial_points(random_config)) == 5
    assert len(sweep.trial_points(random_config, count=2)) == 2
    assert len(sweep.trial_points({**BASE, "method": "grid"}, count=3)) == 3


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "hyper", "parameters": {"a": {"value": 1}}}, "method"),
        ({"method": "grid", "parameters": {}}, "parameters"),
        ({"method": "grid", "parameters": {"a": {"min": 0.1, "max": 1.0}}}, "grid search needs"),
        ({"method": "random", "parameters": {"a": {"distribution": "zipf"}}}, "unsupported"),
        ({"method": "grid", "parameters": {"a": {"parameters": {"b": {"value": 1}}}}}, "nested"),
        (
            {"method": "grid", "parameters": {"a": {"value": 1}}, "command": ["${program}"]},
            "program",
        ),
    ],
)
def test_bad_sweep_files_are_clear_errors(
    tmp_path: Path, config: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(sweep.SweepError, match=message):
        sweep.validate_sweep(config)
    assert main(["sweep", str(write_sweep(tmp_path, config)), "--dry_run"]) == 2
    assert message.split()[0] in capsys.readouterr().err


def test_every_repository_sweep_has_the_wandb_shape() -> None:
    for path in sorted((ROOT / "experiments" / "sweeps").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert config["method"] in ("grid", "random", "bayes"), path
        assert config["metric"]["name"].startswith("val/"), path
        command = config["command"]
        assert "${args}" in command and command[1:3] == ["embedlab", "fit"], path


def test_dry_run_prints_one_command_per_trial(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "sweep",
                str(SWEEP),
                "--dry_run",
                "--output_root=/tmp/x",
                "--",
                "--trainer.max_epochs=1",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    config = sweep.load_sweep(SWEEP)
    assert len(lines) == len(config["parameters"]["model.loss"]["values"])
    for line in lines:
        assert line.startswith("embedlab fit --config experiments/digits_compare.yaml")
        assert "--wandb=off" in line and line.endswith("--trainer.max_epochs=1")
        assert f"--experiment={config['name']}" in line


def test_bayes_runs_as_random_search_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(
        tmp_path, {**BASE, "method": "bayes", "parameters": {"lr": {"min": 0.001, "max": 0.01}}}
    )
    assert main(["sweep", str(path), "--dry_run", "--count=3"]) == 0
    out = capsys.readouterr().out
    assert "random search" in out and out.count("--lr=") == 3


def test_auto_mode_stays_local_when_wandb_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not sweep.wandb_reachable()


def test_online_creates_the_sweep_and_runs_an_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    calls: dict[str, Any] = {}

    def fake_sweep(
        config: dict[str, Any], project: str | None = None, entity: str | None = None
    ) -> str:
        calls["config"], calls["project"] = config, project
        return "abc123"

    def fake_agent(sweep_id: str, **kwargs: Any) -> None:
        calls["agent"] = (sweep_id, kwargs)

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    monkeypatch.setenv("EMBEDLAB_WANDB", "off")
    path = write_sweep(tmp_path, {**BASE, "name": "grid_test"})
    assert (
        main(
            [
                "sweep",
                str(path),
                "--online",
                "--count=2",
                "--project=p",
                "--",
                "--trainer.max_epochs=1",
            ]
        )
        == 0
    )
    assert calls["project"] == "p"
    assert calls["config"]["command"][-2:] == ["--experiment=grid_test", "--trainer.max_epochs=1"]
    assert calls["config"]["parameters"] == BASE["parameters"]
    assert calls["agent"] == ("abc123", {"project": "p", "entity": None, "count": 2})
    assert os.environ["EMBEDLAB_WANDB"] == "online"


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    config = {
        "name": "broken",
        "method": "grid",
        "parameters": {"model.loss": {"values": ["embedlab.losses.NoSuchLoss"]}},
        "command": ["embedlab", "fit", "--config", "experiments/digits.yaml", "${args}"],
    }
    path = write_sweep(tmp_path, config)
    code = main(
        ["sweep", str(path), "--offline", "--in_process", f"--output_root={tmp_path / 'runs'}"]
    )
    assert code == 1
    manifest = json.loads((tmp_path / "runs" / "broken" / "sweep_0" / "trials.json").read_text())
    assert [t["status"] for t in manifest["trials"]] == ["failed"]
    assert "failed" in capsys.readouterr().err


def test_the_sweep_command_is_wired_into_embedlab() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedlab", "sweep", str(SWEEP), "--dry_run", "--count=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) == 2


# -- the digits loss comparison, end to end ---------------------------------------------------
def is_png(path: Path, min_bytes: int = 8_000) -> bool:
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < min_bytes:
        return False
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    return width >= 300 and height >= 200


@pytest.mark.slow
def test_offline_loss_sweep_end_to_end() -> None:
    result = digits_sweep()
    assert result.exit_code == 0
    runs = find_runs(result.folder)
    assert len(runs) == LOSSES
    for run in runs:
        trial = json.loads((run / "sweep_trial.json").read_text())
        assert trial["status"] == "finished" and trial["params"]["model.loss"].endswith(".yaml")
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        pictures = sorted((run / "pictures").glob("*.png"))
        assert {p.name.split("_epoch")[0] for p in pictures} == {"ranked_lists", "projection"}
        assert all(is_png(p) for p in pictures)

    frame = compare_runs(runs)
    assert len(frame) == LOSSES and frame["loss"].is_unique
    expected = [
        Path(v).stem for v in sweep.load_sweep(SWEEP)["parameters"]["model.loss"]["values"][:LOSSES]
    ]
    assert sorted(frame["loss"]) == sorted(expected)
    assert frame["loss_class"].nunique() >= 2
    for column in ("final/recall@1", "final/map@r", "best/map@r", "final/map", "final/minp"):
        values = frame[column].to_numpy(dtype=float)
        assert np.isfinite(values).all() and ((values > 0) & (values <= 1)).all(), column
    assert (frame["best/map@r"] >= frame["final/map@r"] - 1e-12).all()
    assert (frame["epochs"] == 2).all()

    sweep_dir = result.folder / "sweep_0"
    manifest = json.loads((sweep_dir / "trials.json").read_text())
    assert [t["status"] for t in manifest["trials"]] == ["finished"] * LOSSES
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert len(table) == LOSSES
    markdown = (sweep_dir / "comparison.md").read_text().splitlines()
    assert markdown[0].startswith("| loss |") and len(markdown) == 2 + LOSSES
    for name in ("curves", "recall_at_k", "training_loss"):
        assert is_png(sweep_dir / f"{name}.png"), name
    assert not any(math.isnan(v) for v in table["final/map@r"])

"""embedlab sweep: wandb sweep files on Optuna offline, and through a (faked) wandb online."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.trial import TrialState
from PIL import Image

from digits_runs import LOSSES, ROOT, SWEEP, TINY_BUDGET, digits_sweep
from embedlab import sweep
from embedlab.analysis import compare_runs, find_runs
from embedlab.cli import main

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


def fake(
    config: dict[str, Any], value: Callable[[dict[str, Any]], float] = lambda p: 0.5
) -> Callable[[optuna.Study, optuna.Trial], float]:
    """An objective that draws the sweep's point and scores it without training."""

    def objective(study: optuna.Study, trial: optuna.Trial) -> float:
        params = sweep.suggest(trial, config)
        trial.set_user_attr("params", params)
        return value(params)

    return objective


def points(study: optuna.Study, state: TrialState = TrialState.COMPLETE) -> list[dict[str, Any]]:
    return [t.user_attrs["params"] for t in study.get_trials(states=(state,))]


# -- wandb's distributions -> Optuna --------------------------------------------------------
E = math.e
SPECS: dict[str, tuple[dict[str, Any], Callable[[np.ndarray], bool]]] = {
    "categorical": ({"values": ["a", "b", 3]}, lambda v: set(v) == {"a", "b", 3}),
    "constant": ({"value": "fixed"}, lambda v: set(v) == {"fixed"}),
    "int_uniform": (
        {"min": 2, "max": 5},
        lambda v: set(v.tolist()) == {2, 3, 4, 5} and v.dtype.kind == "i",
    ),
    "uniform": ({"min": 0.1, "max": 0.9}, lambda v: v.min() >= 0.1 and v.max() <= 0.9),
    "q_uniform": (
        {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
        lambda v: np.allclose(v % 2, 0) and v.min() >= 0 and v.max() <= 10 and len(set(v)) > 3,
    ),
    "log_uniform_values": (  # log scale: about half the draws below the geometric middle
        {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        lambda v: v.min() >= 1e-4 and v.max() <= 1e-2 and 0.35 < (v < 1e-3).mean() < 0.65,
    ),
    "q_log_uniform_values": (
        {"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 5},
        lambda v: np.allclose(v % 5, 0) and v.max() <= 1000 and 0.3 < (v < 32).mean() < 0.7,
    ),
    "log_uniform": (  # min/max are natural logs
        {"distribution": "log_uniform", "min": 0, "max": 3},
        lambda v: v.min() >= 1 and v.max() <= E**3 and 0.35 < (v < E**1.5).mean() < 0.65,
    ),
    "q_log_uniform": (
        {"distribution": "q_log_uniform", "min": 0, "max": 6, "q": 1},
        lambda v: np.allclose(v % 1, 0) and v.max() <= round(E**6),
    ),
    "inv_log_uniform_values": (
        {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1},
        lambda v: v.min() >= 0.01 and v.max() <= 1 and 0.35 < (v < 0.1).mean() < 0.65,
    ),
    "inv_log_uniform": (  # 1 / exp(u), u uniform in [min, max]
        {"distribution": "inv_log_uniform", "min": 0, "max": 2},
        lambda v: v.min() >= E**-2 and v.max() <= 1 and 0.35 < (v < E**-1).mean() < 0.65,
    ),
    "normal": (
        {"distribution": "normal", "mu": 1.0, "sigma": 0.5},
        lambda v: abs(v.mean() - 1) < 0.1 and abs(v.std() - 0.5) < 0.1,
    ),
    "q_normal": (
        {"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 2},
        lambda v: np.allclose(v % 2, 0) and abs(v.mean() - 10) < 1,
    ),
    "log_normal": (
        {"distribution": "log_normal", "mu": 0.0, "sigma": 1.0},
        lambda v: v.min() > 0 and 0.35 < (v < 1).mean() < 0.65,
    ),
    "q_log_normal": (
        {"distribution": "q_log_normal", "mu": 2.0, "sigma": 0.5, "q": 1},
        lambda v: np.allclose(v % 1, 0) and v.min() >= 0,
    ),
    "beta": (
        {"distribution": "beta", "a": 2, "b": 5},
        lambda v: v.min() >= 0 and v.max() <= 1 and abs(v.mean() - 2 / 7) < 0.05,
    ),
    "q_beta": (
        {"distribution": "q_beta", "a": 2, "b": 2, "q": 0.25},
        lambda v: np.allclose(v % 0.25, 0) and set(v) <= {0, 0.25, 0.5, 0.75, 1},
    ),
}


def test_every_wandb_distribution_has_a_test() -> None:
    assert set(SPECS) == {*sweep.DISTRIBUTIONS, "constant"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_wandb_distributions_map_to_optuna(name: str) -> None:
    spec, check = SPECS[name]
    config = {"method": "random", "parameters": {"p": spec}}
    study = sweep.open_study(config, None, "s", seed=0)
    sweep.run_sweep(study, 200, fake(config))
    raw = [p["p"] for p in points(study)]
    values = np.array(
        raw, dtype=object if isinstance(raw[0], str) or name == "categorical" else None
    )
    assert len(values) == 200 and check(values), (name, values[:10])


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_tpe_are_reproducible_with_a_seed(method: str) -> None:
    config = {
        "method": method,
        "parameters": {
            "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
            "k": {"min": 1, "max": 9},
        },
    }

    def draws(seed: int) -> list[dict[str, Any]]:
        study = sweep.open_study(config, None, "s", seed=seed)
        sweep.run_sweep(study, 14, fake(config, lambda p: -abs(math.log10(p["lr"]) + 2)))
        return points(study)

    first = draws(1)
    assert first == draws(1) and first != draws(2)
    assert len({p["lr"] for p in first}) == 14


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "hyper", "parameters": {"a": {"value": 1}}}, "method"),
        ({"method": "grid", "parameters": {}}, "parameters"),
        ({"method": "grid", "parameters": {"a": {"min": 0.1, "max": 1.0}}}, "grid search needs"),
        ({"method": "random", "parameters": {"a": {"distribution": "zipf"}}}, "unsupported"),
        ({"method": "random", "parameters": {"a": {"min": 2.0, "max": 1.0}}}, "min must be"),
        ({"method": "grid", "parameters": {"a": {"parameters": {"b": {"value": 1}}}}}, "nested"),
        (
            {"method": "grid", "parameters": {"a": {"value": 1}}, "early_terminate": {"type": "x"}},
            "early_terminate",
        ),
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
    assert main(["sweep", str(write_sweep(tmp_path, config)), "--dry_run", "--offline"]) == 2
    assert message.split()[0] in capsys.readouterr().err


def test_every_repository_sweep_translates_to_a_study() -> None:
    files = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        config = sweep.load_sweep(path)
        assert config["metric"]["name"].startswith("val/"), path
        command = config["command"]
        assert "${args}" in command and command[1:3] == ["embedlab", "fit"], path
        study = sweep.open_study(config, None, str(config["name"]))
        sweep.run_sweep(study, 3, fake(config))
        for params in points(study):
            assert list(params) == sorted(config["parameters"]), path
            for name, value in params.items():
                spec = config["parameters"][name]
                if "values" in spec:
                    assert value in spec["values"], (path, name)
                elif "min" in spec:
                    assert spec["min"] <= value <= spec["max"], (path, name)
                else:
                    assert value == spec["value"], (path, name)
        stop = config.get("early_terminate")
        kind = optuna.pruners.HyperbandPruner if stop else optuna.pruners.NopPruner
        assert isinstance(study.pruner, kind), path


# -- the study: grid, resuming, several processes, pruning -----------------------------------
GRID = {
    "method": "grid",
    "parameters": {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}, "c": {"value": 0}},
}


def test_grid_covers_every_point_once_with_two_workers_and_a_relaunch_adds_none(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    study = sweep.open_study(GRID, url, "g")
    n = sweep.trials_to_start(GRID, study, None)
    assert n == 6
    objective = fake(GRID, lambda p: time.sleep(0.05) or p["a"])  # type: ignore[func-returns-value]
    sweep.run_sweep(study, n, objective, workers=2, cap=sweep.study_cap(GRID, None))
    done = sorted((p["a"], p["b"]) for p in points(study))
    assert done == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
    assert all(p["c"] == 0 for p in points(study))
    again = sweep.open_study(GRID, url, "g")
    assert sweep.trials_to_start(GRID, again, None) == 0
    assert sweep.trials_to_start(GRID, again, 4) == 0
    assert len(again.trials) == 6


def test_a_relaunch_continues_the_study_without_repeating(tmp_path: Path) -> None:
    config = {"method": "random", "run_cap": 5, "parameters": {"x": {"min": 0.0, "max": 1.0}}}
    url = f"sqlite:///{tmp_path / 'r.db'}"
    calls = []

    def killed_at_third(study: optuna.Study, trial: optuna.Trial) -> float:
        calls.append(trial.number)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the sweep is stopped during its third trial
        return fake(config)(study, trial)

    study = sweep.open_study(config, url, "r")
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(study, sweep.trials_to_start(config, study, None), killed_at_third)
    study = sweep.open_study(config, url, "r")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert sweep.trials_to_start(config, study, None) == 2  # up to run_cap
    sweep.run_sweep(study, 2, fake(config), cap=sweep.study_cap(config, None))
    assert len(study.trials) == 5 and len(points(study)) == 4
    assert len({p["x"] for p in points(study)}) == 4  # a continued sampler, not a restart
    # `--count 2` twice: each launch adds two trials
    for launch in (1, 2):
        study = sweep.open_study(config, url, "r")
        sweep.run_sweep(study, sweep.trials_to_start(config, study, 2), fake(config))
        assert len(study.trials) == 5 + 2 * launch


def test_a_killed_trial_is_failed_and_run_once_more_by_a_relaunch(tmp_path: Path) -> None:
    config = {"method": "grid", "parameters": {"a": {"values": [1, 2, 3]}}}

    def storage() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'k.db'}",
            heartbeat_interval=1,
            grace_period=1,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(1),
        )

    study = sweep.open_study(config, storage(), "k")
    killed = study.ask()  # its process dies during training: no more heartbeats
    sweep.suggest(killed, config)
    study._storage.record_heartbeat(killed._trial_id)  # type: ignore[attr-defined]
    time.sleep(2.5)
    study = sweep.open_study(config, storage(), "k")  # the relaunch
    n = sweep.trials_to_start(config, study, None)
    assert study.trials[0].state == TrialState.FAIL and n == 3  # the retry and two new points
    sweep.run_sweep(study, n, fake(config), cap=sweep.study_cap(config, None))
    assert sorted(p["a"] for p in points(study)) == [1, 2, 3]
    assert sweep.trials_to_start(config, study, None) == 0


WORKER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_sweep import GRID, fake
from embedlab import sweep
study = sweep.open_study(GRID, {storage!r}, "shared")
objective = fake(GRID, lambda p: time.sleep({pause}) or 1.0)
n = sweep.trials_to_start(GRID, study, None)
sweep.run_sweep(study, n, objective, cap=sweep.study_cap(GRID, None))
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_processes_sharing_one_storage_run_disjoint_trials(tmp_path: Path, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else str(tmp_path / "s.log")
    sweep.open_study(GRID, storage, "shared")  # created once, as by a first launch
    tests = str(Path(__file__).parent)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER.format(tests=tests, storage=storage, pause=pause)]
        )
        for pause in (0.3, 0.45)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    study = sweep.open_study(GRID, storage, "shared")
    done = sorted((p["a"], p["b"]) for p in points(study))
    assert done == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
    # a trial asked for by both at the very same moment is never run twice
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.number >= 6)


def test_a_trial_asked_for_after_the_study_is_full_does_not_run() -> None:
    study = sweep.open_study(GRID, None, "g")
    for _ in range(6):
        study.tell(study.ask(), 1.0)
    late = study.ask()  # another process's, asked for at the moment the sixth was
    assert sweep.surplus(study, late.number, 6) and not sweep.surplus(study, 5, 6)
    ran: list[int] = []
    sweep.run_sweep(study, 1, lambda s, t: ran.append(t.number) or 1.0, cap=7)  # type: ignore[func-returns-value]
    assert ran == [] and study.trials[-1].user_attrs["surplus"]


HYPERBAND = {
    "method": "random",
    "metric": {"name": "val/map@r", "goal": "maximize"},
    "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3},
    "parameters": {"quality": {"values": ["good", "bad"]}},
}


def curve(quality: str, step: int) -> float:
    """A learning curve: ``bad`` stays far below ``good`` at every validation."""
    return (0.9 if quality == "good" else 0.1) * (1 - 0.5 ** (step + 1))


def test_hyperband_prunes_a_clearly_worse_configuration() -> None:
    def objective(study: optuna.Study, trial: optuna.Trial) -> float:
        quality = sweep.suggest(trial, HYPERBAND)["quality"]
        trial.set_user_attr("params", {"quality": quality})
        for step in range(1, 10):
            trial.report(curve(quality, step), step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return curve(quality, 9)

    study = sweep.open_study(HYPERBAND, None, "h", seed=0)
    sweep.run_sweep(study, 24, objective)
    pruned = points(study, TrialState.PRUNED)
    assert pruned and all(p["quality"] == "bad" for p in pruned)
    assert any(p["quality"] == "good" for p in points(study))


def test_the_trial_callback_records_the_run_folder_reports_and_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = sweep.open_study(HYPERBAND, url, "h")
    for _ in range(12):  # finished good trials: what the pruner compares a new trial with
        trial = study.ask()
        for step in range(1, 10):
            trial.report(curve("good", step), step)
            assert not trial.should_prune()  # the pruner's rungs record the good values
        study.tell(trial, curve("good", 9))
    trial = study.ask()
    spec = {"storage": url, "study_name": "h", "number": trial.number, "metric": "map@r"}
    monkeypatch.setenv(
        sweep.TRIAL_ENV, json.dumps({**spec, "early_terminate": HYPERBAND["early_terminate"]})
    )
    callback = sweep.OptunaTrialCallback.from_env()
    assert callback is not None
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        log_dir=str(tmp_path / "version_0"),
        callback_metrics={"val/map@r": torch.tensor(curve("bad", 1))},
        should_stop=False,
    )
    callback.setup(trainer, None, "fit")  # type: ignore[arg-type]
    for _ in range(9):
        callback.on_validation_end(trainer, None)  # type: ignore[arg-type]
        if trainer.should_stop:
            break
    [frozen] = [t for t in study.get_trials() if t.number == trial.number]
    assert frozen.user_attrs["run_dir"] == str((tmp_path / "version_0").resolve())
    assert trainer.should_stop and frozen.user_attrs["pruned_at"] == len(frozen.intermediate_values)
    assert frozen.intermediate_values[1] == pytest.approx(curve("bad", 1))
    monkeypatch.delenv(sweep.TRIAL_ENV)
    assert sweep.OptunaTrialCallback.from_env() is None


# -- commands ------------------------------------------------------------------------------
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
    python = {**BASE, "command": ["python", "train.py", "${args}"]}
    assert sweep.trial_command(python, {"a": 1}, ["--x=1"], ["--wandb=off"]) == [
        "python",
        "train.py",
        "--a=1",
        "--x=1",
    ]
    assert sweep.trial_command(BASE, {"a": 1}, ["--x=1"], ["--wandb=off"])[-2:] == [
        "--wandb=off",
        "--x=1",
    ]


def test_dry_run_prints_the_commands_this_launch_would_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sweep", str(SWEEP), "--offline", "--dry_run", f"--output_root={tmp_path}"]
    assert main([*argv, "--", "--trainer.max_epochs=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    config = sweep.load_sweep(SWEEP)
    presets = config["parameters"]["model.loss"]["values"]
    assert [line.split("--model.loss=")[1].split()[0] for line in lines] == presets
    for line in lines:
        assert line.startswith("embedlab fit --config experiments/digits_compare.yaml")
        assert "--wandb=off" in line and line.endswith("--trainer.max_epochs=1")
        assert f"--experiment={config['name']} --output_root={tmp_path}" in line
    # a study that ran two points: the dry run lists only the others
    url = f"sqlite:///{tmp_path / 'digits_losses' / 'optuna.db'}"
    study = sweep.open_study(config, url, str(config["name"]))
    sweep.run_sweep(study, 2, fake(config))
    assert main([*argv, "--count=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("--model.loss=")[1].split()[0] for line in lines] == presets[2:5]


def test_without_a_flag_the_choice_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["sweep", str(SWEEP), "--dry_run", "--count=1", f"--output_root={tmp_path}"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "embedlab sweep: running offline (Optuna): WANDB_MODE=disabled; "
        "--online or --offline to choose"
    ]


def test_online_creates_the_sweep_and_runs_an_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
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
    argv = ["sweep", str(path), "--online", "--count=2", "--project=p"]
    assert main([*argv, "--dry_run", "--", "--trainer.max_epochs=1"]) == 0
    printed = capsys.readouterr().out.strip()
    assert not calls
    assert main([*argv, "--", "--trainer.max_epochs=1"]) == 0
    assert calls["project"] == "p"
    assert calls["config"]["command"][-2:] == ["--experiment=grid_test", "--trainer.max_epochs=1"]
    assert printed == shlex.join(calls["config"]["command"])  # the dry run: what wandb runs
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
        "parameters": {"model.loss": {"values": ["embedlab.losses.NoSuchLoss", "a.b.Nope"]}},
        "command": ["embedlab", "fit", "--config", "experiments/digits.yaml", "${args}"],
    }
    path = write_sweep(tmp_path, config)
    argv = ["sweep", str(path), "--offline", "--in_process", f"--output_root={tmp_path / 'r'}"]
    assert main(argv) == 1
    study = optuna.load_study(
        study_name="broken", storage=f"sqlite:///{tmp_path / 'r' / 'broken' / 'optuna.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("exit status 2" in t.user_attrs["error"] for t in study.trials)
    assert "failed" in capsys.readouterr().err
    assert main(argv) == 0  # a relaunch: nothing left to run, failures are not retried
    assert (tmp_path / "r" / "broken" / "report" / "trials.csv").is_file()


def test_the_sweep_command_is_wired_into_embedlab(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedlab", "sweep", str(SWEEP), "--offline", "--dry_run"]
        + ["--count=2", f"--output_root={tmp_path}"],
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
def test_a_digits_grid_with_two_workers_runs_each_point_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    config = {
        "name": "margins",
        "method": "grid",
        "metric": {"name": "val/map@r", "goal": "maximize"},
        "parameters": {"model.loss.init_args.margin": {"values": [0.1, 0.2, 0.4]}},
        "command": ["embedlab", "fit", "--config", "experiments/digits.yaml", "${args}"],
    }
    path = write_sweep(tmp_path, config)
    argv = ["sweep", str(path), "--offline", "--workers=2", f"--output_root={tmp_path / 'r'}"]
    budget = ["--", *TINY_BUDGET[:4]]
    assert main([*argv, "--no_plots", *budget]) == 0  # each trial a child process
    storage = f"sqlite:///{tmp_path / 'r' / 'margins' / 'optuna.db'}"
    study = optuna.load_study(study_name="margins", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    margins = sorted(t.user_attrs["params"]["model.loss.init_args.margin"] for t in study.trials)
    assert margins == [0.1, 0.2, 0.4]
    folders = {t.user_attrs["run_dir"] for t in study.trials}
    assert folders == {str(p) for p in find_runs(tmp_path / "r" / "margins")}
    for t in study.trials:
        recorded = json.loads((Path(t.user_attrs["run_dir"]) / "sweep_trial.json").read_text())
        assert recorded["number"] == t.number and recorded["params"] == t.user_attrs["params"]
    assert main([*argv, "--no_plots", *budget]) == 0  # a relaunch: the grid is done
    assert len(optuna.load_study(study_name="margins", storage=storage).trials) == 3


@pytest.mark.slow
def test_offline_loss_sweep_end_to_end() -> None:
    result = digits_sweep()
    assert result.exit_code == 0
    runs = find_runs(result.folder)
    assert len(runs) == LOSSES
    config = sweep.load_sweep(SWEEP)
    study = optuna.load_study(
        study_name=str(config["name"]), storage=f"sqlite:///{result.folder / 'optuna.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * LOSSES
    assert sorted(Path(t.user_attrs["run_dir"]) for t in study.trials) == sorted(runs)
    for t in study.trials:  # the objective: the run's best validation MAP@R
        history = pd.read_csv(Path(t.user_attrs["run_dir"]) / "metrics.csv")["val/map@r"]
        assert t.value == pytest.approx(history.max())
        assert len(t.intermediate_values) == 2  # reported at each validation
    for run in runs:
        trial = json.loads((run / "sweep_trial.json").read_text())
        assert trial["status"] == "finished" and trial["params"]["model.loss"].endswith(".yaml")
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        pictures = sorted((run / "pictures").glob("*.png"))
        assert {"ranked_lists", "projection"} <= {p.name.split("_epoch")[0] for p in pictures}
        assert all(is_png(p) for p in pictures)

    frame = compare_runs(runs)
    assert len(frame) == LOSSES and frame["loss"].is_unique
    expected = [Path(v).stem for v in config["parameters"]["model.loss"]["values"][:LOSSES]]
    assert sorted(frame["loss"]) == sorted(expected)
    assert frame["loss_class"].nunique() >= 2
    for column in ("final/recall@1", "final/map@r", "best/map@r", "final/map", "final/minp"):
        values = frame[column].to_numpy(dtype=float)
        assert np.isfinite(values).all() and ((values > 0) & (values <= 1)).all(), column
    assert (frame["best/map@r"] >= frame["final/map@r"] - 1e-12).all()
    assert (frame["epochs"] == 2).all()

    report = result.folder / "report"
    assert len(pd.read_csv(report / "trials.csv")) == LOSSES
    table = pd.read_csv(report / "comparison.csv")
    assert len(table) == LOSSES
    markdown = (report / "comparison.md").read_text().splitlines()
    assert "loss" in [c.strip() for c in markdown[0].split("|")] and len(markdown) == 2 + LOSSES
    for name in ("curves", "recall_at_k", "training_loss", "optimization_history"):
        assert is_png(report / f"{name}.png", min_bytes=4_000), name
    assert not any(math.isnan(v) for v in table["final/map@r"])


def test_a_yaml_syntax_error_in_a_sweep_file_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters:\n  x: {values: [1, 2}\n")
    assert main(["sweep", str(bad), "--dry_run", "--offline"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"embedlab: error: {bad}:3: YAML syntax error")


def test_a_dry_run_creates_no_storage(tmp_path: Path) -> None:
    argv = ["sweep", str(SWEEP), "--offline", "--dry_run", "--count=1", f"--output_root={tmp_path}"]
    assert main(argv) == 0
    assert main([*argv, f"--storage={tmp_path / 'shared' / 'journal.log'}"]) == 0
    assert main([*argv, f"--storage=sqlite:///{tmp_path / 'other.db'}"]) == 0
    assert not list(tmp_path.iterdir())


def test_a_metric_the_trials_do_not_log_fails_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {**sweep.load_sweep(SWEEP), "metric": {"name": "val/mapr", "goal": "maximize"}}
    file = write_sweep(tmp_path, config)
    argv = ["sweep", str(file), "--offline", f"--output_root={tmp_path}"]
    assert main([*argv, "--dry_run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "metric.name: val/mapr is not logged by the trials" in line
    assert "val/map@r" in line and "val/recall@1" in line
    assert main([*argv, "--count=1"]) == 2  # no trial starts
    assert not list(tmp_path.glob("*/version_*")) and not list(tmp_path.glob("*/optuna.db"))
    # a metric of the run's own configuration is one the trials log
    ok = write_sweep(tmp_path, {**config, "metric": {"name": "val/recall@16"}}, "ok.yaml")
    assert main(["sweep", str(ok), "--offline", "--dry_run", "--count=1"]) == 0

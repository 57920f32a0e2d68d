"""``embedlab sweep``: run a wandb sweep file through wandb's server, or locally without it.

    embedlab sweep experiments/sweeps/losses.yaml                 # online if wandb is, else local
    embedlab sweep experiments/sweeps/losses.yaml --offline -- --trainer.max_epochs=5
    embedlab sweep experiments/sweeps/lr.yaml --count 8 --dry_run

The sweep file is in wandb's format (``method``, ``metric``, ``parameters``, ``command``). Each
parameter name is a dotted ``embedlab fit`` option and each value is passed as
``--name=value``, exactly as ``wandb agent`` does with ``${args}``; a loss is chosen with
``model.loss``, whose values may be class paths or preset files (``experiments/losses/*.yaml``
holding ``class_path``/``init_args``).

Online (wandb reachable and not in offline/disabled mode, or ``--online``): the sweep is created
with ``wandb.sweep`` and ``wandb.agent`` runs its command; every trial logs to wandb.

Locally (``--offline``, or when wandb is unavailable): ``grid`` runs every combination,
``random`` samples ``--count`` points (``run_cap`` or 10 by default) from the parameters'
distributions, and ``bayes``, which needs wandb's server, falls back to random search. Each trial
is a normal run directory ``OUTPUT_ROOT/EXPERIMENT/version_N`` (``EXPERIMENT`` is the sweep's
``name``) with a ``sweep_trial.json`` recording its parameters; at the end the trials are
compared (:mod:`embedlab.analysis.compare`) and ``OUTPUT_ROOT/EXPERIMENT/sweep_K/`` receives
``trials.json``, the comparison table (CSV, Markdown) and plots.

Arguments after ``--`` are appended to every trial's command (e.g. a smaller budget).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import yaml

from embedlab.analysis.compare import (
    PRIMARY,
    compare_runs,
    print_table,
    summary_table,
    write_comparison,
)
from embedlab.analysis.runs import TRIAL_FILE
from embedlab.errors import ConfigError

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
METHODS = ("grid", "random", "bayes")
DEFAULT_RANDOM_COUNT = 10


class SweepError(ConfigError):
    """The sweep file is not usable."""


# -- the sweep file ------------------------------------------------------------------------
def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep file."""
    file = Path(path)
    if not file.is_file():
        raise SweepError(f"sweep file not found: {file}")
    config = yaml.safe_load(file.read_text())
    if not isinstance(config, dict):
        raise SweepError(f"{file}: a sweep file is a mapping")
    validate_sweep(config, str(file))
    config.setdefault("name", file.stem)
    return config


def validate_sweep(config: dict[str, Any], where: str = "sweep") -> None:
    method = config.get("method")
    if method not in METHODS:
        raise SweepError(f"{where}: method must be one of {METHODS}, got {method!r}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"{where}: `parameters` must be a non-empty mapping")
    for name, spec in parameters.items():
        if not isinstance(spec, dict):
            raise SweepError(f"{where}: parameter {name!r} must be a mapping")
        if "parameters" in spec:
            raise SweepError(
                f"{where}: nested parameters ({name!r}) are not supported; use dotted names"
            )
        if method == "grid" and _grid_values(spec) is None:
            raise SweepError(
                f"{where}: grid search needs `values`, `value` or an int_uniform range for {name!r}"
            )
        if method != "grid":
            _distribution(spec, name)  # raises on unknown distributions
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise SweepError(f"{where}: `command` must be a list of strings")
    if "${program}" in command and "program" not in config:
        raise SweepError(f"{where}: the command uses ${{program}} but there is no `program`")


def _grid_values(spec: dict[str, Any]) -> list[Any] | None:
    if "values" in spec:
        values = spec["values"]
        return list(values) if isinstance(values, list) and values else None
    if "value" in spec:
        return [spec["value"]]
    if spec.get("distribution", "int_uniform") == "int_uniform" and _ints(spec):
        return list(range(int(spec["min"]), int(spec["max"]) + 1))
    return None


def _ints(spec: dict[str, Any]) -> bool:
    return all(
        isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("min", "max")
    )


def _distribution(spec: dict[str, Any], name: str) -> str:
    """The distribution of a parameter, inferred as wandb does when not given."""
    if "distribution" in spec:
        dist = str(spec["distribution"])
    elif "values" in spec:
        dist = "categorical"
    elif "value" in spec:
        dist = "constant"
    elif "min" in spec and "max" in spec:
        dist = "int_uniform" if _ints(spec) else "uniform"
    elif "mu" in spec or "sigma" in spec:
        dist = "normal"
    else:
        raise SweepError(
            f"parameter {name!r}: give `values`, `value`, `min`/`max` or a distribution"
        )
    if dist not in SAMPLERS:
        raise SweepError(
            f"parameter {name!r}: unsupported distribution {dist!r} ({sorted(SAMPLERS)})"
        )
    return dist


def _quantise(x: float, spec: dict[str, Any]) -> float:
    q = float(spec.get("q", 1.0))
    return round(x / q) * q


def _categorical(spec: dict[str, Any], rng: np.random.Generator) -> Any:
    values = spec["values"]
    probs = spec.get("probabilities")
    index = int(rng.choice(len(values), p=None if probs is None else np.asarray(probs, float)))
    return values[index]


def _uniform(spec: dict[str, Any], rng: np.random.Generator) -> float:
    return float(rng.uniform(float(spec["min"]), float(spec["max"])))


def _log_uniform_values(spec: dict[str, Any], rng: np.random.Generator) -> float:
    low, high = math.log(float(spec["min"])), math.log(float(spec["max"]))
    return math.exp(rng.uniform(low, high))


def _normal(spec: dict[str, Any], rng: np.random.Generator) -> float:
    return float(rng.normal(float(spec.get("mu", 0.0)), float(spec.get("sigma", 1.0))))


SAMPLERS: dict[str, Any] = {
    "constant": lambda s, r: s["value"],
    "categorical": _categorical,
    "int_uniform": lambda s, r: int(r.integers(int(s["min"]), int(s["max"]) + 1)),
    "uniform": _uniform,
    "q_uniform": lambda s, r: _quantise(_uniform(s, r), s),
    "log_uniform": lambda s, r: math.exp(_uniform(s, r)),  # min/max are natural logs
    "log_uniform_values": _log_uniform_values,
    "q_log_uniform": lambda s, r: _quantise(math.exp(_uniform(s, r)), s),
    "q_log_uniform_values": lambda s, r: _quantise(_log_uniform_values(s, r), s),
    "inv_log_uniform": lambda s, r: 1.0 / math.exp(_uniform(s, r)),
    "inv_log_uniform_values": lambda s, r: (
        1.0 / _log_uniform_values({"min": 1.0 / float(s["max"]), "max": 1.0 / float(s["min"])}, r)
    ),
    "normal": _normal,
    "q_normal": lambda s, r: _quantise(_normal(s, r), s),
    "log_normal": lambda s, r: math.exp(_normal(s, r)),
    "q_log_normal": lambda s, r: _quantise(math.exp(_normal(s, r)), s),
    "beta": lambda s, r: float(r.beta(float(s.get("a", 1.0)), float(s.get("b", 1.0)))),
    "q_beta": lambda s, r: _quantise(
        float(r.beta(float(s.get("a", 1.0)), float(s.get("b", 1.0)))), s
    ),
}


def sample_value(spec: dict[str, Any], rng: np.random.Generator, name: str = "?") -> Any:
    """One draw of a parameter from its (wandb) distribution."""
    value = SAMPLERS[_distribution(spec, name)](spec, rng)
    if isinstance(value, float):
        value = float(f"{value:.6g}")  # readable command lines; far finer than any search needs
    return value


def _ordered(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters sorted by name, so an option precedes its sub-options
    (``model.loss`` before ``model.loss.init_args.margin``)."""
    return {k: params[k] for k in sorted(params)}


def grid_points(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the parameters' values (the first parameter varies slowest)."""
    names = list(parameters)
    values = [_grid_values(parameters[n]) or [] for n in names]
    return [_ordered(dict(zip(names, combo, strict=True))) for combo in itertools.product(*values)]


def random_points(parameters: dict[str, Any], count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        _ordered({name: sample_value(spec, rng, name) for name, spec in parameters.items()})
        for _ in range(count)
    ]


# -- commands ------------------------------------------------------------------------------
def format_args(params: dict[str, Any]) -> dict[str, list[str]]:
    """The argument macros of a trial, formatted as ``wandb agent`` formats them."""
    flags = [f"--{k}={v}" for k, v in params.items()]
    return {
        "args": flags,
        "args_no_hyphens": [f"{k}={v}" for k, v in params.items()],
        "args_no_equals": [x for k, v in params.items() for x in (f"--{k}", str(v))],
        "args_no_boolean_flags": [
            f"--{k}" if v is True else f"--{k}={v}" for k, v in params.items() if v is not False
        ],
        "args_json": [json.dumps(params)],
    }


def build_command(
    config: dict[str, Any], params: dict[str, Any], extra: Sequence[str] = ()
) -> list[str]:
    """The trial's command line: the sweep's ``command`` with its macros filled in, then ``extra``."""
    macros: dict[str, list[str]] = {
        "env": [],
        "interpreter": [sys.executable],
        "program": [str(config.get("program", ""))],
        **format_args(params),
    }
    command: list[str] = []
    for chunk in config.get("command", DEFAULT_COMMAND):
        text = str(chunk)
        if text.startswith("${envvar:") and text.endswith("}"):
            command.append(os.environ.get(text[9:-1], text[9:-1]))
        elif text.startswith("${") and text.endswith("}"):
            if text[2:-1] not in macros:
                raise SweepError(f"unsupported macro {text} in the sweep command")
            command.extend(macros[text[2:-1]])
        else:
            command.append(text)
    return [*command, *extra]


def embedlab_args(command: Sequence[str]) -> list[str] | None:
    """The arguments after ``embedlab`` when the command runs embedlab, else ``None``."""
    parts = list(command)
    if parts and (Path(parts[0]).name == "env" or parts[0] == "${env}"):
        parts = parts[1:]
    if parts and Path(parts[0]).name == "embedlab":
        return parts[1:]
    if (
        len(parts) >= 3
        and Path(parts[0]).name.startswith("python")
        and parts[1:3] == ["-m", "embedlab"]
    ):
        return parts[3:]
    return None


@dataclass
class Trial:
    index: int
    params: dict[str, Any]
    command: list[str]
    status: str = "pending"
    run_dir: str | None = None
    seconds: float | None = None
    error: str | None = None


def trial_points(
    config: dict[str, Any], count: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """The parameter points a local run visits (grid: all, truncated by ``count``)."""
    parameters = config["parameters"]
    if config["method"] == "grid":
        points = grid_points(parameters)
        return points[:count] if count is not None else points
    n = count if count is not None else int(config.get("run_cap") or DEFAULT_RANDOM_COUNT)
    return random_points(parameters, n, seed)


def local_trials(
    config: dict[str, Any],
    count: int | None = None,
    seed: int = 0,
    overrides: Sequence[str] = (),
    embedlab_overrides: Sequence[str] = (),
) -> list[Trial]:
    """The trials of a local run, each with its full command line.

    ``embedlab_overrides`` (run placement, wandb mode) are added only to commands that run
    embedlab; ``overrides`` (the user's arguments after ``--``) to every command, last.
    """
    trials = []
    for i, params in enumerate(trial_points(config, count, seed)):
        command = build_command(config, params)
        if embedlab_args(command) is not None:
            command += embedlab_overrides
        trials.append(Trial(i, params, [*command, *overrides]))
    return trials


# -- online --------------------------------------------------------------------------------
def wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether wandb may go online: not in offline/disabled mode and its server answers."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.hostname or "api.wandb.ai"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_online(
    config: dict[str, Any],
    overrides: Sequence[str],
    count: int | None,
    project: str | None,
    entity: str | None,
) -> int:
    """Create the sweep on wandb's server and run an agent on this machine."""
    import wandb

    sweep = dict(config)
    sweep["command"] = [*config.get("command", DEFAULT_COMMAND), *overrides]
    project = project or os.environ.get("WANDB_PROJECT", "embedlab")
    sweep_id = wandb.sweep(sweep, project=project, entity=entity)
    print(f"embedlab sweep: created wandb sweep {sweep_id} (project {project})")
    os.environ["EMBEDLAB_WANDB"] = "online"
    wandb.agent(sweep_id, project=project, entity=entity, count=count)
    return 0


# -- local ---------------------------------------------------------------------------------
def _versions(folder: Path) -> set[Path]:
    return {p for p in folder.glob("version_*") if p.is_dir()}


def _run_trial(trial: Trial, runner: Callable[[list[str]], int] | None) -> tuple[int, str | None]:
    """Run one trial: with ``runner`` (``embedlab.cli.main``) in this process, else as a child."""
    args = embedlab_args(trial.command)
    if runner is not None and args is not None:
        try:
            code = runner(args)
            return code, None if code == 0 else f"exit status {code}"
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
            return code, None if code == 0 else f"exit status {stop.code}"
        except Exception as error:  # a failed trial must not end the sweep
            return 1, f"{type(error).__name__}: {error}"
    command = [sys.executable, "-m", "embedlab", *args] if args is not None else trial.command
    code = subprocess.run(command, check=False).returncode
    return code, None if code == 0 else f"exit status {code}"


def _next_sweep_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        try:
            (folder / f"sweep_{k}").mkdir()
            return folder / f"sweep_{k}"
        except FileExistsError:
            k += 1


def run_local(
    config: dict[str, Any],
    trials: list[Trial],
    output_root: Path,
    experiment: str,
    runner: Callable[[list[str]], int] | None = None,
    compare: bool = True,
    plots: bool = True,
) -> tuple[list[Trial], Path]:
    """Run the trials one after another; record them and compare the finished ones.

    ``runner`` runs embedlab trials in this process (``embedlab.cli.main``); without it each
    trial is a child process.
    """
    folder = output_root / experiment
    folder.mkdir(parents=True, exist_ok=True)
    sweep_dir = _next_sweep_dir(folder)
    for trial in trials:
        print(f"\n=== embedlab sweep: trial {trial.index + 1}/{len(trials)}: {trial.params}")
        print("    " + shlex.join(trial.command), flush=True)
        before = _versions(folder)
        start = time.perf_counter()
        code, error = _run_trial(trial, runner)
        trial.seconds = round(time.perf_counter() - start, 2)
        new = sorted(_versions(folder) - before, key=lambda p: p.stat().st_mtime)
        trial.run_dir = str(new[-1]) if new else None
        trial.status = "finished" if code == 0 else "failed"
        trial.error = error
        if trial.run_dir is not None:
            record = {"sweep": config.get("name"), "method": config["method"], **asdict(trial)}
            (Path(trial.run_dir) / TRIAL_FILE).write_text(json.dumps(record, indent=2, default=str))
        if error:
            print(f"embedlab sweep: trial {trial.index + 1} failed: {error}", file=sys.stderr)
    manifest = {
        "sweep": config.get("name"),
        "method": config["method"],
        "metric": config.get("metric"),
        "trials": [asdict(t) for t in trials],
    }
    (sweep_dir / "trials.json").write_text(json.dumps(manifest, indent=2, default=str))
    finished = [Path(t.run_dir) for t in trials if t.status == "finished" and t.run_dir]
    if compare and finished:
        metric = str((config.get("metric") or {}).get("name", PRIMARY)).removeprefix("val/")
        frame = compare_runs(finished, primary=metric)
        print_table(
            summary_table(frame, primary=metric, sort=metric), title=f"sweep {config.get('name')}"
        )
        for path in write_comparison(
            frame, sweep_dir, primary=metric, sort=metric, plots=plots
        ).values():
            print(f"wrote {path}")
    return trials, sweep_dir

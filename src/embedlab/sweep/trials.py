"""A sweep trial: the ``embedlab fit`` command it runs, the callback that reports its validations
to the study, and running trials (in processes or in this one)."""

from __future__ import annotations

import importlib
import io
import json
import os
import shlex
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import yaml
from optuna.trial import TrialState

from embedlab.analysis.runs import validation_history
from embedlab.metrics import RecallAtK, scalar_metrics
from embedlab.runs import TRIAL_ENV, TRIAL_FILE, read_metrics
from embedlab.sweep.spec import DEFAULT_COMMAND, SweepError, metric_name, suggest
from embedlab.sweep.study import open_storage, pruner, sampler, takes_a_place


# -- commands ------------------------------------------------------------------------------
def format_args(params: dict[str, Any]) -> dict[str, list[str]]:
    """The argument macros of a trial, formatted as ``wandb agent`` formats them."""
    return {
        "args": [f"--{k}={v}" for k, v in params.items()],
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


def trial_command(
    config: dict[str, Any],
    params: dict[str, Any],
    overrides: Sequence[str] = (),
    embedlab_overrides: Sequence[str] = (),
) -> list[str]:
    """A trial's full command: ``embedlab_overrides`` (run placement, wandb mode) only when it
    runs embedlab, then the user's ``overrides`` (the arguments after ``--``)."""
    command = build_command(config, params)
    if embedlab_args(command) is not None:
        command += embedlab_overrides
    return [*command, *overrides]


# -- inside a trial's `embedlab fit` ---------------------------------------------------------
class OptunaTrialCallback(pl.Callback):
    """Connects a sweep trial's training to its Optuna trial.

    Records the run folder (user attribute ``run_dir``) and reports ``val/<metric>`` after
    each validation; when the study's pruner prunes, training stops and the trial is marked
    ``pruned_at`` (the sweep then records it as pruned).
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        number: int,
        metric: str,
        early_terminate: dict[str, Any] | None = None,
    ) -> None:
        self.metric = metric
        self.reported = 0
        store = open_storage(storage)
        stop = pruner({"early_terminate": early_terminate})
        study = optuna.load_study(study_name=study_name, storage=store, pruner=stop)
        study_id = store.get_study_id_from_name(study_name)
        trial_id = store.get_trial_id_from_study_id_trial_number(study_id, number)
        self.trial = optuna.Trial(study, trial_id)

    @classmethod
    def from_env(cls) -> OptunaTrialCallback | None:
        """The callback of the trial named by ``$EMBEDLAB_OPTUNA_TRIAL`` (``None`` when unset)."""
        text = os.environ.get(TRIAL_ENV)
        if not text:
            return None
        spec = json.loads(text)
        return cls(**spec)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and trainer.log_dir:
            self.trial.set_user_attr("run_dir", str(Path(trainer.log_dir).resolve()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(f"val/{self.metric}")
        if value is None:
            return
        self.reported += 1
        self.trial.report(float(value), step=self.reported)  # once per validation, not per step
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at", self.reported)
            trainer.should_stop = True


# -- running trials --------------------------------------------------------------------------
@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def best_value(run_dir: str | Path, metric: str, goal: str = "maximize") -> float | None:
    """The best validation value of ``metric`` in a run's ``metrics.csv`` (``None``: none)."""
    history = validation_history(read_metrics(run_dir))
    if metric not in history.columns or history[metric].dropna().empty:
        return None
    column = history[metric].dropna()
    return float(column.max() if goal == "maximize" else column.min())


@dataclass
class SweepRun:
    """What ``run_sweep`` needs besides the study: the sweep and how to run a trial."""

    config: dict[str, Any]
    storage: str
    study_name: str
    output_root: Path
    experiment: str
    overrides: Sequence[str] = ()
    wandb: str = "off"
    runner: Callable[[list[str]], int] | None = None

    def command(self, params: dict[str, Any]) -> list[str]:
        placement = [
            f"--experiment={self.experiment}",
            f"--output_root={self.output_root}",
            f"--wandb={self.wandb}",
        ]
        return trial_command(self.config, params, self.overrides, placement)

    def execute(self, command: list[str], number: int) -> str | None:
        """Run a trial's command (``runner``: in this process); the error, or ``None``."""
        spec = {
            "storage": self.storage,
            "study_name": self.study_name,
            "number": number,
            "metric": metric_name(self.config),
            "early_terminate": self.config.get("early_terminate"),
        }
        args = embedlab_args(command)
        if self.runner is not None and args is not None:  # one worker: this process's env
            with _environment(TRIAL_ENV, json.dumps(spec)):
                try:
                    code = self.runner(args)
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else 1
                except Exception:  # a failed trial must not end the sweep; keep its traceback
                    trace = traceback.format_exc()
                    print(trace, file=sys.stderr)
                    return trace.strip().splitlines()[-1]
        else:
            child = [sys.executable, "-m", "embedlab", *args] if args is not None else command
            env = {**os.environ, TRIAL_ENV: json.dumps(spec)}
            code = subprocess.run(child, env=env, check=False).returncode
        return None if code == 0 else f"exit status {code}"

    def objective(self, study: optuna.Study, trial: optuna.Trial) -> float:
        """Run one trial; its value is the best ``val/<metric>`` of its run folder."""
        params = suggest(trial, self.config)
        command = self.command(params)
        trial.set_user_attr("params", params)
        trial.set_user_attr("command", shlex.join(command))
        print(f"\n=== embedlab sweep: trial {trial.number}: {params}", flush=True)
        print("    " + shlex.join(command), flush=True)
        error = self.execute(command, trial.number)
        # the storage as the trial's run left it (`run_dir`, `pruned_at`), not a cached copy
        [frozen] = [t for t in study.get_trials(deepcopy=False) if t.number == trial.number]
        attrs = frozen.user_attrs
        run_dir = attrs.get("run_dir")
        status = "failed" if error else ("pruned" if "pruned_at" in attrs else "finished")
        if run_dir and Path(run_dir).is_dir():
            record = {
                "sweep": self.config.get("name"),
                "method": self.config["method"],
                "study": self.study_name,
                "storage": self.storage,
                "number": trial.number,
                "params": params,
                "command": command,
                "status": status,
                "error": error,
            }
            (Path(run_dir) / TRIAL_FILE).write_text(json.dumps(record, indent=2, default=str))
        if error:
            raise RuntimeError(error)
        if status == "pruned":
            raise optuna.TrialPruned(f"pruned after validation {attrs['pruned_at']}")
        goal = (self.config.get("metric") or {}).get("goal", "maximize")
        value = best_value(run_dir, metric_name(self.config), goal) if run_dir else None
        if value is None:
            raise RuntimeError(f"no val/{metric_name(self.config)} in {run_dir}/metrics.csv")
        return value


class SurplusTrial(RuntimeError):
    """A trial asked for after the study was full (by another process at the same moment)."""


def surplus(study: optuna.Study, number: int, cap: int) -> bool:
    """Whether trial ``number`` comes after the study's ``cap`` trials: trial numbers are
    given out by the storage, so of two processes asking at once only the later one is."""
    trials = study.get_trials(deepcopy=False)
    [mine] = [t for t in trials if t.number == number]
    if mine.state == TrialState.RUNNING and not takes_a_place(mine):
        return False  # a retry of a killed trial takes that trial's place
    return sum(1 for t in trials if t.number < number and takes_a_place(t)) >= cap


def run_sweep(
    study: optuna.Study,
    n_trials: int,
    objective: Callable[[optuna.Study, optuna.Trial], float],
    workers: int = 1,
    cap: int | None = None,
) -> list[int]:
    """Run ``n_trials`` trials of ``study`` on ``workers`` threads (``Study.optimize``), none
    once the study holds ``cap`` trials (also those of other processes); the numbers of the
    trials run. A raising trial is recorded as failed (user attribute ``error``) and the sweep
    goes on; ``optuna.TrialPruned`` records it as pruned. A trial asked for once the study is
    full is not run (failed, user attribute ``surplus``) and stops this process."""
    started: list[int] = []

    def run(trial: optuna.Trial) -> float:
        if cap is not None and surplus(study, trial.number, cap):
            trial.set_user_attr("surplus", True)
            print(f"embedlab sweep: the study holds its {cap} trials; stopping", flush=True)
            study.stop()
            raise SurplusTrial(f"trial {trial.number}: the study already holds {cap} trials")
        started.append(trial.number)
        try:
            return objective(study, trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            print(f"embedlab sweep: trial {trial.number} failed: {error}", file=sys.stderr)
            raise

    if n_trials > 0:

        def full(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            places = sum(1 for t in study.get_trials(deepcopy=False) if takes_a_place(t))
            if cap is not None and places >= cap:
                study.stop()

        jobs = min(workers, n_trials)
        study.optimize(run, n_trials=n_trials, n_jobs=jobs, catch=(Exception,), callbacks=[full])
    return sorted(started)


#: What every validation logs besides the metrics: the query counts.
QUERY_COUNTS = ("num_valid_queries", "num_skipped_queries")


def logged_metrics(model: dict[str, Any]) -> set[str]:
    """The ``val/*`` names (without ``val/``) that ``embedlab fit`` logs with a ``model``
    section as ``--print_config`` prints it: ``recall@k`` of ``ks``, the ``metrics`` (the
    built-ins when none are given), ``nmi`` with ``eval_nmi``, and the query counts."""
    names = {RecallAtK(int(k)).name for k in model.get("ks") or ()}
    metrics = model.get("metrics")
    if metrics is None:
        names.update(m.name for m in scalar_metrics())
    for entry in metrics or ():
        spec = entry if isinstance(entry, dict) else {"class_path": entry}
        module, _, attr = str(spec["class_path"]).rpartition(".")
        metric = getattr(importlib.import_module(module), attr)(**(spec.get("init_args") or {}))
        names.add(str(metric.name))
    if model.get("eval_nmi"):
        names.add("nmi")
    return names | set(QUERY_COUNTS)


def check_metric(
    config: dict[str, Any],
    overrides: Sequence[str],
    runner: Callable[[list[str]], int] | None,
    where: str = "sweep",
) -> None:
    """Before any trial: a :class:`SweepError` listing the valid names when the sweep's
    ``metric.name`` is none that its trials log.

    The names come from the configuration of one trial (a point drawn as the sweep draws
    them), printed by ``runner`` (``embedlab.cli.main``) with ``--print_config``; nothing is
    checked without a runner, for a command that is no ``embedlab fit``, or when that
    configuration does not parse (the trials then say why).
    """
    if runner is None:
        return
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
    try:
        study = optuna.create_study(sampler=sampler(config, 0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    args = embedlab_args(trial_command(config, suggest(study.ask(), config), overrides))
    if not args or args[0] != "fit":
        return
    printed = io.StringIO()
    try:
        with redirect_stdout(printed), redirect_stderr(io.StringIO()):
            code = runner([*args, "--print_config"])
    except SystemExit as stop:  # --print_config prints, then exits
        code = stop.code if isinstance(stop.code, int) else 0
    except Exception:
        return
    if code != 0:
        return
    try:
        model = dict((yaml.safe_load(printed.getvalue()) or {}).get("model") or {})
        names = logged_metrics(model)
    except Exception:  # a metric class that cannot be built alone: the trials will tell
        return
    metric = metric_name(config)
    if metric.rpartition("/")[2] not in names:  # `market1501/map@r`: a member of a union
        valid = ", ".join(f"val/{n}" for n in sorted(names))
        raise SweepError(
            f"{where}: metric.name: val/{metric} is not logged by the trials ({valid})"
        )

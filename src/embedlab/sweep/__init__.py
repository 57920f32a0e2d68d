"""``embedlab sweep``: a wandb sweep file run by wandb's agent (online) or by Optuna (offline).

    embedlab sweep experiments/sweeps/losses.yaml --offline -- --trainer.max_epochs=5
    embedlab sweep experiments/sweeps/lr.yaml --offline --count 8 --storage sqlite:///lr.db
    embedlab sweep experiments/sweeps/lr.yaml --online

The sweep file is in wandb's format (``method``, ``metric``, ``parameters``, ``run_cap``,
``early_terminate``, ``command``). Each parameter name is a dotted ``embedlab fit`` option and
each value is passed as ``--name=value``, as ``wandb agent`` does with ``${args}``.

Online (``--online``): ``wandb.sweep`` creates the sweep and ``wandb.agent`` runs its command.

Offline (``--offline``): an Optuna study named after the sweep's ``name`` in ``--storage``
(default ``sqlite:///OUTPUT_ROOT/NAME/optuna.db``): ``grid`` -> ``GridSampler``, ``random`` ->
``RandomSampler(seed)``, ``bayes`` -> ``TPESampler(seed)``, ``early_terminate: {type: hyperband}``
-> ``HyperbandPruner`` fed by each validation of the trial (:class:`OptunaTrialCallback`). A
relaunch loads the study and continues it; several processes or machines on one storage share
it. Each trial runs the sweep's command (``embedlab fit``) and is a normal run folder
``OUTPUT_ROOT/NAME/version_N``, which the trial itself records in the study (user attribute
``run_dir``) and which holds ``sweep_trial.json``. The objective is the trial's best validation
value of the sweep's ``metric``.
"""

from __future__ import annotations

import importlib
import io
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from scipy import stats

from embedlab.analysis.compare import (
    compare_runs,
    print_table,
    summary_table,
    write_comparison,
)
from embedlab.analysis.runs import validation_history
from embedlab.errors import ConfigError, read_yaml
from embedlab.metrics import RecallAtK, scalar_metrics
from embedlab.options import PRIMARY_METRIC
from embedlab.runs import TRIAL_FILE, read_metrics

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
METHODS = ("grid", "random", "bayes")
DEFAULT_RUN_CAP = 10
#: Set for a trial's ``embedlab fit``: JSON with the study and trial it reports to.
TRIAL_ENV = "EMBEDLAB_OPTUNA_TRIAL"
#: Storage files written as Optuna journals (for shared filesystems) rather than URLs.
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
#: Database storages: a trial whose process sent no heartbeat for 3 intervals (a minute) is
#: failed, and queued to run once more, by the next launch or trial.
HEARTBEAT_S = 20


class SweepError(ConfigError):
    """The sweep file is not usable."""


# -- the sweep file ------------------------------------------------------------------------
def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep file; ``name`` defaults to the file's stem."""
    file = Path(path)
    if not file.is_file():
        raise SweepError(f"sweep file not found: {file}")
    config = read_yaml(file)
    if not isinstance(config, dict):
        raise SweepError(f"{file}: a sweep file is a mapping")
    validate_sweep(config, str(file))
    config.setdefault("name", file.stem)
    return config


def validate_sweep(config: dict[str, Any], where: str = "sweep") -> None:
    """Raise :class:`SweepError` naming the first unusable entry."""
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
        try:
            if method == "grid":
                grid_values(spec, name)
            else:
                searched(spec, name)
        except SweepError as err:
            raise SweepError(f"{where}: {err}") from None
    metric = config.get("metric") or {}
    if metric.get("goal", "maximize") not in ("maximize", "minimize"):
        raise SweepError(f"{where}: metric.goal must be maximize or minimize")
    stop = config.get("early_terminate")
    if stop is not None and (not isinstance(stop, dict) or stop.get("type") != "hyperband"):
        raise SweepError(f"{where}: early_terminate: only {{type: hyperband}} is supported")
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise SweepError(f"{where}: `command` must be a list of strings")
    if "${program}" in command and "program" not in config:
        raise SweepError(f"{where}: the command uses ${{program}} but there is no `program`")


# -- wandb's parameters -> Optuna's distributions --------------------------------------------
@dataclass(frozen=True)
class Searched:
    """A wandb parameter as Optuna searches it: ``value(x)`` turns Optuna's draw into wandb's."""

    distribution: BaseDistribution
    value: Callable[[Any], Any] = lambda x: x


def _bounds(spec: dict[str, Any], name: str) -> tuple[float, float]:
    try:
        low, high = float(spec["min"]), float(spec["max"])
    except (KeyError, TypeError, ValueError):
        raise SweepError(f"parameter {name!r}: needs numeric `min` and `max`") from None
    if not low < high:
        raise SweepError(f"parameter {name!r}: min must be below max ({low} >= {high})")
    return low, high


def _quantised(spec: dict[str, Any], inner: Callable[[Any], float]) -> Callable[[Any], float]:
    q = float(spec.get("q", 1.0))
    return lambda x: round(inner(x) / q) * q


def _unit() -> FloatDistribution:
    """The quantile searched for distributions Optuna lacks (normal, beta): a value in (0, 1)."""
    return FloatDistribution(1e-6, 1 - 1e-6)


def _normal(spec: dict[str, Any]) -> Callable[[Any], float]:
    law = stats.norm(float(spec.get("mu", 0.0)), float(spec.get("sigma", 1.0)))
    return lambda u: float(law.ppf(u))


def _beta(spec: dict[str, Any]) -> Callable[[Any], float]:
    law = stats.beta(float(spec.get("a", 1.0)), float(spec.get("b", 1.0)))
    return lambda u: float(law.ppf(u))


def _log(spec: dict[str, Any], name: str, natural: bool = False, inverse: bool = False) -> Searched:
    """``log_uniform*``: log-uniform between the values (``natural``: min/max are logs);
    ``inverse``: 1/x of a log-uniform x, itself log-uniform on the reciprocal range."""
    low, high = _bounds(spec, name)
    if natural:
        low, high = (
            (math.exp(-high), math.exp(-low)) if inverse else (math.exp(low), math.exp(high))
        )
    elif low <= 0:
        raise SweepError(f"parameter {name!r}: log-uniform values need min > 0")
    return Searched(FloatDistribution(low, high, log=True))


def _mapping(spec: dict[str, Any], name: str) -> dict[str, Callable[[], Searched]]:
    """wandb's distributions (https://docs.wandb.ai/guides/sweeps/sweep-config-keys)."""

    def q(inner: Searched) -> Searched:
        return Searched(inner.distribution, _quantised(spec, inner.value))

    def uniform() -> Searched:
        return Searched(FloatDistribution(*_bounds(spec, name)))

    def int_uniform() -> Searched:
        low, high = _bounds(spec, name)
        return Searched(IntDistribution(int(low), int(high)))

    def log_normal() -> Searched:
        return Searched(_unit(), lambda u: math.exp(_normal(spec)(u)))

    return {
        "categorical": lambda: categorical(spec, name),
        "int_uniform": int_uniform,
        "uniform": uniform,
        "q_uniform": lambda: q(uniform()),
        "log_uniform": lambda: _log(spec, name, natural=True),
        "log_uniform_values": lambda: _log(spec, name),
        "q_log_uniform": lambda: q(_log(spec, name, natural=True)),
        "q_log_uniform_values": lambda: q(_log(spec, name)),
        "inv_log_uniform": lambda: _log(spec, name, natural=True, inverse=True),
        "inv_log_uniform_values": lambda: _log(spec, name),
        "normal": lambda: Searched(_unit(), _normal(spec)),
        "q_normal": lambda: q(Searched(_unit(), _normal(spec))),
        "log_normal": log_normal,
        "q_log_normal": lambda: q(log_normal()),
        "beta": lambda: Searched(_unit(), _beta(spec)),
        "q_beta": lambda: q(Searched(_unit(), _beta(spec))),
    }


DISTRIBUTIONS = tuple(_mapping({}, "").keys())


def categorical(spec: dict[str, Any], name: str) -> Searched:
    """``values``: Optuna's categorical distribution (choices are numbers, strings or bools)."""
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise SweepError(f"parameter {name!r}: `values` must be a non-empty list")
    if "probabilities" in spec:
        raise SweepError(f"parameter {name!r}: `probabilities` are not supported offline")
    if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        raise SweepError(f"parameter {name!r}: values must be numbers, strings or booleans")
    return Searched(CategoricalDistribution(values))


def distribution_name(spec: dict[str, Any], name: str) -> str:
    """The wandb distribution of a parameter, inferred as wandb does when not given."""
    if "distribution" in spec:
        dist = str(spec["distribution"])
    elif "values" in spec:
        dist = "categorical"
    elif "value" in spec:
        return "constant"
    elif "min" in spec and "max" in spec:
        ints = all(
            isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")
        )
        dist = "int_uniform" if ints else "uniform"
    elif "mu" in spec or "sigma" in spec:
        dist = "normal"
    else:
        raise SweepError(
            f"parameter {name!r}: give `values`, `value`, `min`/`max` or a distribution"
        )
    if dist not in DISTRIBUTIONS:
        raise SweepError(
            f"parameter {name!r}: unsupported distribution {dist!r} ({sorted(DISTRIBUTIONS)})"
        )
    return dist


def searched(spec: dict[str, Any], name: str) -> Searched | None:
    """The Optuna counterpart of a wandb parameter (``None`` for a constant ``value``)."""
    dist = distribution_name(spec, name)
    if dist == "constant":
        return None
    return _mapping(spec, name)[dist]()


def grid_values(spec: dict[str, Any], name: str) -> list[CategoricalChoiceType]:
    """A grid parameter's points: its ``values``, its ``value``, or an integer range."""
    if "values" in spec:
        return list(categorical(spec, name).distribution.choices)  # type: ignore[attr-defined]
    if "value" in spec:
        return [spec["value"]]
    if distribution_name(spec, name) == "int_uniform":
        low, high = _bounds(spec, name)
        return list(range(int(low), int(high) + 1))
    raise SweepError(f"grid search needs `values`, `value` or an int_uniform range for {name!r}")


def suggest(trial: optuna.Trial, config: dict[str, Any]) -> dict[str, Any]:
    """One point of the sweep drawn by ``trial``: wandb's values, by parameter name (sorted, so
    an option precedes its sub-options: ``model.loss`` before ``model.loss.init_args.margin``)."""
    params: dict[str, Any] = {}
    for name in sorted(config["parameters"]):
        spec = config["parameters"][name]
        if config["method"] == "grid":
            values = grid_values(spec, name)
            params[name] = (
                values[0] if len(values) == 1 else trial.suggest_categorical(name, values)
            )
            continue
        found = searched(spec, name)
        if found is None:
            params[name] = spec["value"]
            continue
        value = found.value(draw(trial, name, found.distribution))
        params[name] = float(f"{value:.6g}") if isinstance(value, float) else value
    return params


def draw(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """``trial``'s value of ``name`` from one of the distributions :func:`searched` builds."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, list(dist.choices))


# -- the study -------------------------------------------------------------------------------
def metric_name(config: dict[str, Any]) -> str:
    """The sweep's metric without its ``val/`` prefix (default: embedlab's primary metric)."""
    return str((config.get("metric") or {}).get("name", f"val/{PRIMARY_METRIC}")).removeprefix(
        "val/"
    )


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


def storage_file(url: str) -> Path | None:
    """The local file a storage is kept in (a journal file, an SQLite database), ``None`` for a
    database server."""
    if "://" not in url:
        return Path(url)
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler in the grid's order (parameters by name, the first varying
    slowest; not shuffled, so every process of a shared sweep maps trial numbers to the same
    points whatever its seed), and without stopping the study when the grid is exhausted: the
    sweep starts only as many trials as points are left (:func:`trials_to_start`)."""

    def __init__(self, search_space: dict[str, list[Any]], seed: int | None = None) -> None:
        super().__init__(search_space, seed=seed)
        self._all_grids = list(itertools.product(*self._search_space.values()))

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Nothing: ``Study.stop`` only works inside ``Study.optimize``."""


def sampler(config: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """``grid`` -> GridSampler, ``random`` -> RandomSampler, ``bayes`` -> TPESampler."""
    if config["method"] == "grid":
        space = {
            name: values
            for name, spec in config["parameters"].items()
            if len(values := grid_values(spec, name)) > 1
        }
        return GridSampler(space or {"_": [0]}, seed=seed)
    if config["method"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(config: dict[str, Any]) -> optuna.pruners.BasePruner:
    """wandb's ``early_terminate: {type: hyperband, min_iter, max_iter, eta}`` -> Hyperband;
    no early termination -> never prune."""
    stop = config.get("early_terminate")
    if not stop:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(
        min_resource=int(stop.get("min_iter", 1)),
        max_resource=int(stop["max_iter"]) if "max_iter" in stop else "auto",
        reduction_factor=int(stop.get("eta", 3)),
    )


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage: a journal file (``*.log``, ``*.journal``, ``*.jsonl``: for shared
    filesystems) or a database URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``)."""
    if "://" not in url:
        if not url.endswith(JOURNAL_SUFFIXES):
            raise ConfigError(
                f"storage: {url!r} is neither a database URL nor a journal file "
                f"({', '.join(JOURNAL_SUFFIXES)})"
            )
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=3 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def open_study(
    config: dict[str, Any], storage: str | BaseStorage | None, study_name: str, seed: int = 0
) -> optuna.Study:
    """Create the sweep's study or load it (``load_if_exists``): a relaunch continues it.

    The sampler's seed is ``seed`` plus the number of trials already in the study, so a
    relaunch draws new points (and a fresh study with one seed is reproducible); processes
    that share a random or bayes sweep from the start need different seeds.
    """
    store = open_storage(storage) if isinstance(storage, str) else storage
    goal = (config.get("metric") or {}).get("goal", "maximize")
    study = optuna.create_study(
        storage=store,
        study_name=study_name,
        sampler=sampler(config, seed),
        pruner=pruner(config),
        direction=goal,
        load_if_exists=True,
    )
    if config["method"] != "grid" and (existing := len(study.get_trials(deepcopy=False))):
        study.sampler = sampler(config, seed + existing)
    return study


def study_cap(config: dict[str, Any], count: int | None) -> int | None:
    """The most trials the study may hold: grid: its size; random/bayes: ``run_cap`` (default
    10) unless ``count`` asks for more trials in this launch."""
    if config["method"] == "grid":
        return math.prod(len(grid_values(s, n)) for n, s in config["parameters"].items())
    return None if count is not None else int(config.get("run_cap") or DEFAULT_RUN_CAP)


#: The trials that take a place in the study (not the queued retries).
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def trials_to_start(config: dict[str, Any], study: optuna.Study, count: int | None) -> int:
    """Trials this launch starts: the queued retries of killed trials, then grid: the points no
    trial has taken (at most ``count``); random/bayes: ``count``, or up to ``run_cap`` (default
    10) trials in the study."""
    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # killed trials: failed, and queued once more
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    cap = study_cap(config, count)
    if cap is None:
        return waiting + (count or 0)
    left = max(0, cap - sum(1 for t in study.get_trials(deepcopy=False) if _takes_a_place(t)))
    return waiting + (left if count is None else min(count, left))


def _takes_a_place(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that counts toward the study's cap: any but a queued one or a retry."""
    with warnings.catch_warnings():  # `retried_trial_number` is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None
    return trial.state in TAKEN and not retry


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
    if mine.state == TrialState.RUNNING and not _takes_a_place(mine):
        return False  # a retry of a killed trial takes that trial's place
    return sum(1 for t in trials if t.number < number and _takes_a_place(t)) >= cap


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
            places = sum(1 for t in study.get_trials(deepcopy=False) if _takes_a_place(t))
            if cap is not None and places >= cap:
                study.stop()

        jobs = min(workers, n_trials)
        study.optimize(run, n_trials=n_trials, n_jobs=jobs, catch=(Exception,), callbacks=[full])
    return sorted(started)


def report(
    study: optuna.Study, config: dict[str, Any], folder: Path, plots: bool = True
) -> list[Path]:
    """``trials.csv``, the comparison of the finished trials' run folders and, with ``plots``,
    Optuna's optimisation history and parameter importances, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "trials.csv"]
    study.trials_dataframe().to_csv(written[0], index=False)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    runs = [Path(t.user_attrs["run_dir"]) for t in complete if "run_dir" in t.user_attrs]
    metric = metric_name(config)
    if runs:
        frame = compare_runs(runs, primary=metric)
        print_table(
            summary_table(frame, primary=metric, sort=metric), title=f"sweep {config.get('name')}"
        )
        written += write_comparison(
            frame, folder, primary=metric, sort=metric, plots=plots
        ).values()
    if plots and complete:
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots

        pictures: dict[str, Callable[[optuna.Study], Any]] = {
            "optimization_history": optuna_plots.plot_optimization_history
        }
        if len(complete) >= 2 and complete[0].distributions:
            pictures["param_importances"] = optuna_plots.plot_param_importances
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for name, plot in pictures.items():
                figure = plot(study).get_figure()
                figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(figure)
                written.append(folder / f"{name}.png")
    return written


# -- online --------------------------------------------------------------------------------
def wandb_command(config: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """The command wandb's agent runs: the sweep's, then ``overrides``."""
    return [str(c) for c in config.get("command", DEFAULT_COMMAND)] + list(overrides)


def run_online(
    config: dict[str, Any],
    overrides: Sequence[str],
    count: int | None,
    project: str | None,
    entity: str | None,
) -> int:
    """Create the sweep on wandb's server and run an agent on this machine."""
    import wandb

    sweep = {**config, "command": wandb_command(config, overrides)}
    project = project or os.environ.get("WANDB_PROJECT", "embedlab")
    sweep_id = wandb.sweep(sweep, project=project, entity=entity)
    print(f"embedlab sweep: created wandb sweep {sweep_id} (project {project})")
    os.environ["EMBEDLAB_WANDB"] = "online"
    wandb.agent(sweep_id, project=project, entity=entity, count=count)
    return 0

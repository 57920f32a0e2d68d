"""The Optuna study of an offline sweep: storage (a database URL or a journal file), sampler,
pruner, and how many trials a launch starts."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from embedlab.errors import ConfigError
from embedlab.sweep.spec import DEFAULT_RUN_CAP, grid_values

#: Storage files written as Optuna journals (for shared filesystems) rather than URLs.
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


#: Database storages: a trial whose process sent no heartbeat for 3 intervals (a minute) is
#: failed, and queued to run once more, by the next launch or trial.
HEARTBEAT_S = 20


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
    left = max(0, cap - sum(1 for t in study.get_trials(deepcopy=False) if takes_a_place(t)))
    return waiting + (left if count is None else min(count, left))


def takes_a_place(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that counts toward the study's cap: any but a queued one or a retry."""
    with warnings.catch_warnings():  # `retried_trial_number` is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None
    return trial.state in TAKEN and not retry

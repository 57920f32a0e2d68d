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

from embedlab.sweep.online import (
    run_online,
    wandb_command,
)
from embedlab.sweep.report import (
    report,
)
from embedlab.sweep.spec import (
    DEFAULT_COMMAND,
    DEFAULT_RUN_CAP,
    DISTRIBUTIONS,
    METHODS,
    Searched,
    SweepError,
    categorical,
    distribution_name,
    draw,
    grid_values,
    load_sweep,
    metric_name,
    searched,
    suggest,
    validate_sweep,
)
from embedlab.sweep.study import (
    HEARTBEAT_S,
    JOURNAL_SUFFIXES,
    TAKEN,
    GridSampler,
    open_storage,
    open_study,
    pruner,
    sampler,
    storage_file,
    study_cap,
    trials_to_start,
)
from embedlab.sweep.trials import (
    QUERY_COUNTS,
    TRIAL_ENV,
    OptunaTrialCallback,
    SurplusTrial,
    SweepRun,
    best_value,
    build_command,
    check_metric,
    embedlab_args,
    format_args,
    logged_metrics,
    run_sweep,
    surplus,
    trial_command,
)

__all__ = [
    "DEFAULT_COMMAND",
    "DEFAULT_RUN_CAP",
    "DISTRIBUTIONS",
    "GridSampler",
    "HEARTBEAT_S",
    "JOURNAL_SUFFIXES",
    "METHODS",
    "OptunaTrialCallback",
    "QUERY_COUNTS",
    "Searched",
    "SurplusTrial",
    "SweepError",
    "SweepRun",
    "TAKEN",
    "TRIAL_ENV",
    "best_value",
    "build_command",
    "categorical",
    "check_metric",
    "distribution_name",
    "draw",
    "embedlab_args",
    "format_args",
    "grid_values",
    "load_sweep",
    "logged_metrics",
    "metric_name",
    "open_storage",
    "open_study",
    "pruner",
    "report",
    "run_online",
    "run_sweep",
    "sampler",
    "searched",
    "storage_file",
    "study_cap",
    "suggest",
    "surplus",
    "trial_command",
    "trials_to_start",
    "validate_sweep",
    "wandb_command",
]

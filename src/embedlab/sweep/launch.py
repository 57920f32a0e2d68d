"""Launching a sweep: online through wandb's agent, or offline as an Optuna study whose
trials run ``embedlab fit``."""

from __future__ import annotations

import netrc
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from embedlab.errors import ConfigError

__all__ = ["launch"]


def _go_online(online: bool, offline: bool) -> bool:
    """Online or offline, from the flags; without them from wandb's settings, said in one line."""
    if online and offline:
        raise ConfigError("online, offline: choose one")
    if online or offline:
        return online
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        why, go = f"WANDB_MODE={mode}", False
    elif os.environ.get("WANDB_API_KEY"):
        why, go = "WANDB_API_KEY is set", True
    else:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        try:
            logged_in = netrc.netrc().authenticators(host or "api.wandb.ai") is not None
        except (OSError, netrc.NetrcParseError):
            logged_in = False
        why, go = ("a wandb login is in ~/.netrc", True) if logged_in else ("no wandb login", False)
    where = "online (wandb agent)" if go else "offline (Optuna)"
    print(
        f"embedlab sweep: running {where}: {why}; --online or --offline to choose", file=sys.stderr
    )
    return go


def launch(
    file: Path,
    online: bool = False,
    offline: bool = False,
    count: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    output_root: Path | None = None,
    experiment: str | None = None,
    seed: int = 0,
    wandb: str = "off",
    in_process: bool = False,
    dry_run: bool = False,
    report: bool = False,
    compare: bool = True,
    plots: bool = True,
    project: str | None = None,
    entity: str | None = None,
    trial_args: Sequence[str] = (),
    runner: Callable[[list[str]], int] | None = None,
) -> int:
    """Run the sweep ``file`` (the options of ``embedlab sweep``, documented in
    :func:`embedlab.commands.sweep.sweep`); returns the exit status."""
    # optuna, scipy and the sweep machinery only for this subcommand (fast `embedlab --help`)
    import optuna

    from embedlab.sweep import (
        SweepRun,
        check_metric,
        embedlab_args,
        load_sweep,
        open_storage,
        open_study,
        run_online,
        run_sweep,
        storage_file,
        study_cap,
        suggest,
        trials_to_start,
        wandb_command,
    )
    from embedlab.sweep import (
        report as write_report,
    )

    if count is not None and count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    if workers < 1 or (in_process and workers > 1):
        raise ConfigError(f"workers must be >= 1 (1 with --in_process), got {workers}")
    if wandb not in ("off", "offline"):
        raise ConfigError(f"wandb must be off or offline for offline trials, got {wandb!r}")
    config = load_sweep(file)
    name = experiment or str(config["name"])
    overrides = list(trial_args)
    check_metric(config, overrides, runner, str(file))  # a typo fails here, not after a trial
    if _go_online(online, offline):
        template = [str(c) for c in config.get("command", ())]
        runs_embedlab = embedlab_args(template) is not None
        extra = [f"--experiment={name}", *overrides] if runs_embedlab else overrides
        if dry_run:
            print(shlex.join(wandb_command(config, extra)))
            return 0
        return run_online(config, extra, count, project, entity)
    root = Path(output_root or os.environ.get("EMBEDLAB_OUTPUT_ROOT", "runs"))
    url = storage or f"sqlite:///{(root / name / 'optuna.db').resolve()}"
    study_name = study_name or str(config["name"])
    plan = SweepRun(
        config, url, study_name, root, name, overrides, wandb, runner if in_process else None
    )
    if dry_run:  # the same sampler on a copy of the study's trials, in memory
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        memory = optuna.storages.InMemoryStorage()
        kept_in = storage_file(url)  # a dry run creates no storage file
        if (kept_in is None or kept_in.is_file()) and study_name in (
            optuna.study.get_all_study_names(open_storage(url))
        ):
            optuna.copy_study(from_study_name=study_name, from_storage=url, to_storage=memory)
        study = open_study(config, memory, study_name, seed)
        for _ in range(trials_to_start(config, study, count)):
            trial = study.ask()
            print(shlex.join(plan.command(suggest(trial, config))))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return 0
    study = open_study(config, url, study_name, seed)
    n = 0 if report else trials_to_start(config, study, count)
    print(
        f"embedlab sweep: study {study_name!r} in {url}: {len(study.trials)} trials, starting {n}"
    )
    cap = study_cap(config, count)
    started = run_sweep(study, n, plan.objective, workers=workers, cap=cap)
    if compare or report:
        for path in write_report(study, config, root / name / "report", plots=plots):
            print(f"wrote {path}")
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    failed = [k for k in started if states[k] == optuna.trial.TrialState.FAIL]
    print(
        f"\nembedlab sweep: {len(started) - len(failed)}/{len(started)} trials ran to the end or were pruned"
    )
    return 1 if failed else 0

"""``embedlab sweep``: a wandb sweep file, online (wandb's agent) or offline (Optuna)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


def sweep(
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
    """Run a wandb sweep file online (wandb's agent) or offline (an Optuna study).

    Arguments after ``--`` on the command line are appended to every trial's command. Offline,
    a relaunch with the same storage continues the study; processes on several machines with
    one ``--storage`` share it.

    Args:
        file: sweep file in wandb's format (``experiments/sweeps/*.yaml``).
        online: run wandb's agent on wandb's server.
        offline: run an Optuna study (grid, random, TPE for ``bayes``; Hyperband pruning).
        count: trials this launch starts (default: up to ``run_cap`` (10) trials in the
            study; grid: every point no trial has taken).
        workers: trials run at once by this process (offline).
        storage: Optuna storage: a database URL (default
            ``sqlite:///OUTPUT_ROOT/EXPERIMENT/optuna.db``; ``postgresql://...``) or a journal
            file ``*.log`` on a shared filesystem.
        study_name: the Optuna study (default: the sweep's name).
        output_root: trials are written to ``OUTPUT_ROOT/EXPERIMENT/version_N`` (default:
            ``$EMBEDLAB_OUTPUT_ROOT`` or ``runs``).
        experiment: run folder of the trials (default: the sweep's name).
        seed: seed of Optuna's sampler.
        wandb: offline trials: ``off`` (no wandb logging) or ``offline`` (sync later).
        in_process: run the trials in this process (faster start; one worker).
        dry_run: print the commands of the trials this launch would start, and stop.
        report: write the report of the study so far (``OUTPUT_ROOT/EXPERIMENT/report``)
            and stop.
        compare: write the report at the end (``--no_compare``: skip).
        plots: the report's plots (``--no_plots``: tables only).
        project: wandb project (online; default ``$WANDB_PROJECT`` or ``embedlab``).
        entity: wandb entity (online).
        trial_args: arguments appended to every trial's command.
        runner: runs one trial in this process (``embedlab.cli.main``) with ``in_process``.
    """
    from embedlab.sweep.launch import launch

    return launch(
        file,
        online,
        offline,
        count,
        workers,
        storage,
        study_name,
        output_root,
        experiment,
        seed,
        wandb,
        in_process,
        dry_run,
        report,
        compare,
        plots,
        project,
        entity,
        trial_args,
        runner,
    )

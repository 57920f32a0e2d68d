"""The subcommands that are not Lightning trainer methods, as typed functions.

``embedlab.cli`` builds one parser from their signatures and docstrings and calls them with
Python values; each returns the process exit status. They can as well be called from Python.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pytorch_lightning import Trainer

from embedlab.analysis.compare import (
    PRIMARY,
    compare_runs,
    default_out_dir,
    print_table,
    summary_table,
    write_comparison,
)
from embedlab.analysis.runs import find_runs, instantiate_config
from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.data.check import check_dataset, format_report
from embedlab.data.formats import READERS
from embedlab.errors import ConfigError
from embedlab.report import print_summary, write_json
from embedlab.sweep import (
    DEFAULT_COMMAND,
    embedlab_args,
    load_sweep,
    local_trials,
    run_local,
    run_online,
    wandb_reachable,
)

#: Runs ``embedlab`` in this process on an argument list (``embedlab.cli.main``).
Runner = Callable[[list[str]], int]


def evaluate(
    ckpt_path: Path,
    config: Path | None = None,
    out: Path | None = None,
    rerank: bool = False,
    flip_test: bool = False,
    data: dict[str, Any] | None = None,
) -> int:
    """Embed the evaluation split with a checkpoint; print and save the retrieval metrics.

    Writes ``evaluation.json`` and ``evaluation.csv`` into the run folder (or ``out``).

    Args:
        ckpt_path: checkpoint, e.g. ``runs/X/version_N/checkpoints/last.ckpt``.
        config: run configuration (default: ``config.yaml`` of the checkpoint's run folder).
        out: output folder (default: the checkpoint's run folder).
        rerank: k-reciprocal re-ranking (Zhong et al. 2017).
        flip_test: average each image's and its mirror's embedding.
        data: data module arguments replacing the run's (mappings are merged), e.g.
            ``{options: {seed: 3}}`` (another VehicleID gallery draw).
    """
    ckpt = Path(ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    config_file = Path(config) if config else run_dir / "config.yaml"
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: checkpoint not found: {ckpt}")
    if not config_file.is_file():
        raise ConfigError(f"config: no run configuration at {config_file}; pass --config")
    recipe = yaml.safe_load(config_file.read_text()) or {}
    model = dict(recipe.get("model") or {})
    if rerank:
        model["test_rerank"] = True
    if flip_test:
        net = dict(model.get("model") or {})
        net["init_args"] = {**(net.get("init_args") or {}), "flip_test": True}
        model["model"] = net
    settings_data = dict(recipe.get("data") or {})
    for key, value in (data or {}).items():  # `{options: {seed: 3}}` keeps the other options
        old = settings_data.get(key)
        settings_data[key] = (
            {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
        )
    module, datamodule = instantiate_config({**recipe, "model": model, "data": settings_data})
    settings = recipe.get("trainer") or {}
    trainer = Trainer(
        accelerator=settings.get("accelerator", "auto"),
        devices=1,
        precision=settings.get("precision"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.test(module, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False)
    results = {
        k.removeprefix("test/"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("test/")
    }
    print_summary({"test": results})
    folder = Path(out) if out else run_dir
    write_json(folder / "evaluation.json", {"checkpoint": str(ckpt), "metrics": results})
    pd.DataFrame([results]).to_csv(folder / "evaluation.csv", index=False)
    print(f"wrote {folder / 'evaluation.json'} and {folder / 'evaluation.csv'}")
    return 0


def compare(
    runs: Sequence[str | Path],
    out: Path | None = None,
    metric: str = PRIMARY,
    metrics: Sequence[str] | None = None,
    sort: str | None = PRIMARY,
    baseline: bool = False,
    plots: bool = True,
) -> int:
    """Tabulate and plot the validation metrics of runs written by ``embedlab fit``.

    Args:
        runs: run folders, or folders holding ``version_*`` runs.
        out: output folder (default: ``<common parent>/comparison``).
        metric: the metric defining each run's best epoch.
        metrics: the metrics of the table (default: every metric the runs logged).
        sort: sort rows by this final metric, best first (``null``: keep the order).
        baseline: add the raw-pixel baseline row.
        plots: write the PNG plots (``--no_plots``: the tables only).
    """
    try:
        run_dirs = find_runs([str(r) for r in runs])
    except FileNotFoundError as err:
        raise ConfigError(f"runs: {err}") from err
    if not run_dirs:
        raise ConfigError(f"runs: no run folders found in {[str(r) for r in runs]}")
    frame = compare_runs(run_dirs, primary=metric, baseline=baseline)
    folder = Path(out) if out else default_out_dir(run_dirs)
    print_table(summary_table(frame, metrics, metric, sort=sort), title=f"{len(run_dirs)} runs")
    written = write_comparison(frame, folder, metrics, metric, sort, plots=plots)
    for path in written.values():
        print(f"wrote {path}")
    return 0


def data_check(
    dataset: str,
    root: Path | None = None,
    options: dict[str, Any] | None = None,
    images: bool = True,
    max_items: int = 10,
    strict: bool = False,
) -> int:
    """Read a dataset as training would; print per-split counts and every problem.

    Returns 0 when clean, 1 on errors (or on warnings with ``--strict``).

    Args:
        dataset: format name, e.g. ``market1501``, ``cuhk03np``, ``vehicleid``, ``table``.
        root: folder the dataset lies in (default: ``$EMBEDLAB_DATA_ROOT/<dataset>``, or
            ``data/<dataset>`` when the variable is unset).
        options: reader options, e.g. ``{variant: labeled}`` (cuhk03np), ``{include_val: true}``
            (msmt17), ``{test_size: 1600}`` (vehicleid), ``{table: train.csv}`` (table).
        images: decode every image (``--no_images``: only check that the files exist).
        max_items: items listed per problem (-1: all).
        strict: exit with 1 on warnings too.
    """
    if dataset not in READERS:
        raise ConfigError(f"dataset: unknown format {dataset!r}; choose one of {sorted(READERS)}")
    folder = root or Path(os.environ.get("EMBEDLAB_DATA_ROOT", "data")) / dataset
    report = check_dataset(dataset, folder, verify_images=images, **(options or {}))
    print(format_report(report, max_items=max_items))
    return 1 if report.errors or (strict and report.warnings) else 0


def sweep(
    file: Path,
    online: bool = False,
    offline: bool = False,
    count: int | None = None,
    output_root: Path | None = None,
    experiment: str | None = None,
    seed: int = 0,
    wandb: str = "off",
    in_process: bool = False,
    dry_run: bool = False,
    compare: bool = True,
    plots: bool = True,
    project: str | None = None,
    entity: str | None = None,
    trial_args: Sequence[str] = (),
    runner: Runner | None = None,
) -> int:
    """Run a wandb sweep file online (wandb agent) or locally (grid/random search).

    Arguments after ``--`` on the command line are appended to every trial's command.

    Args:
        file: sweep file in wandb's format (``experiments/sweeps/*.yaml``).
        online: use wandb's server (fail if it is unavailable).
        offline: run locally, without wandb's server.
        count: number of trials (grid: at most; random: default ``run_cap`` or 10).
        output_root: trials are written to ``OUTPUT_ROOT/EXPERIMENT/version_N`` (default:
            ``$EMBEDLAB_OUTPUT_ROOT`` or ``runs``).
        experiment: run folder of the trials (default: the sweep's name).
        seed: seed of the local random search.
        wandb: local trials: ``off`` (no wandb logging) or ``offline`` (sync later).
        in_process: run the local trials in this process (faster start).
        dry_run: print the local trials' commands and stop.
        compare: compare the finished trials at the end (``--no_compare``: skip).
        plots: comparison plots (``--no_plots``: tables only).
        project: wandb project (online; default ``$WANDB_PROJECT`` or ``embedlab``).
        entity: wandb entity (online).
        trial_args: arguments appended to every trial's command.
        runner: runs one trial in this process (``embedlab.cli.main``) with ``in_process``.
    """
    if online and offline:
        raise ConfigError("online, offline: choose one")
    if count is not None and count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    if wandb not in ("off", "offline"):
        raise ConfigError(f"wandb must be off or offline for local trials, got {wandb!r}")
    config = load_sweep(file)
    output_root = output_root or Path(os.environ.get("EMBEDLAB_OUTPUT_ROOT", "runs"))
    name = experiment or str(config["name"])
    placement = [f"--experiment={name}"]
    template = [str(c) for c in config.get("command", DEFAULT_COMMAND)]
    runs_embedlab = embedlab_args(template) is not None
    overrides = list(trial_args)
    if not dry_run and (online or (not offline and wandb_reachable())):
        try:
            extra = [*placement, *overrides] if runs_embedlab else overrides
            return run_online(config, extra, count, project, entity)
        except Exception as error:
            if online:
                raise
            print(
                f"embedlab sweep: wandb is unavailable ({error}); running locally", file=sys.stderr
            )
    if config["method"] == "bayes":
        print("embedlab sweep: bayes search needs wandb's server; running random search locally")
    local = [*placement, f"--output_root={output_root}", f"--wandb={wandb}"]
    trials = local_trials(config, count, seed, overrides, local)
    if dry_run:
        for trial in trials:
            print(shlex.join(trial.command))
        return 0
    done, sweep_dir = run_local(
        config,
        trials,
        Path(output_root),
        name,
        runner=runner if in_process else None,
        compare=compare,
        plots=plots,
    )
    failed = [t for t in done if t.status != "finished"]
    print(
        f"\nembedlab sweep: {len(done) - len(failed)}/{len(done)} trials finished; records in {sweep_dir}"
    )
    return 1 if failed else 0

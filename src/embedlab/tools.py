"""The subcommands that are not Lightning trainer methods, as typed functions.

``embedlab.cli`` builds one parser from their signatures and docstrings and calls them with
Python values; each returns the process exit status. They can as well be called from Python.
"""

from __future__ import annotations

import netrc
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import torch
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
from embedlab.atomic import atomic_write
from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.data.check import check_dataset, format_report
from embedlab.data.pairs import LFWPairs, YouTubeFacesPairs, open_pairs
from embedlab.data.source import DataSource, FrameSource
from embedlab.errors import ConfigError, expect_suffix
from embedlab.inference import (
    Index,
    embed_to_parquet,
    image_files,
    load_embedder,
    read_embeddings,
)
from embedlab.inference.embed import check_shard, shard_from_env
from embedlab.inference.embed import settings_of as embedding_settings
from embedlab.inference.embedder import (
    IMAGE_SUFFIXES,
    Embedder,
    RunFiles,
    build_run,
    load_weights,
    merge_data,
    run_files,
)
from embedlab.inference.export import example_input, export_embedder
from embedlab.inference.streamed import chunks as stream_chunks
from embedlab.inference.streamed import embedding_sources, parse_memory, stream_into
from embedlab.metrics import Convention
from embedlab.metrics.verification import (
    SetDistance,
    frame_distance,
    pair_distances,
    set_distances,
    verify_distances,
)
from embedlab.report import print_summary, write_json

#: Runs ``embedlab`` in this process on an argument list (``embedlab.cli.main``).
Runner = Callable[[list[str]], int]


def evaluate(
    ckpt_path: Path,
    config: Path | None = None,
    out: Path | None = None,
    rerank: bool = False,
    flip_test: bool = False,
    data: dict[str, Any] | None = None,
    protocol: Literal["retrieval", "cuhksysu", "verification"] = "retrieval",
    convention: Convention | None = None,
    gallery_size: int = 50,
    pairs: Path | None = None,
    video_frames: int = 100,
    video_distance: SetDistance = "mean_pairwise",
    trust_checkpoint: bool = False,
    resplit: bool = False,
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
        protocol: ``retrieval`` (the run's test split); ``cuhksysu``: person search with each
            query's own gallery (``embedlab.metrics.person_search``) on the run's
            ``embedlab.data.CUHKSYSU`` crops, written to ``evaluation_cuhksysu<size>.json``.
        convention: with ``--protocol retrieval``: ``torchreid`` (torchreid's
            ``eval_market1501``) or ``official`` (the Market-1501 / MARS MATLAB code: its
            trapezoidal ``map``; for MARS every test tracklet in the gallery); default: the
            run's ``model.eval_convention`` (``torchreid`` unless set). Recorded in
            ``evaluation.json``.
        gallery_size: with ``--protocol cuhksysu``: the protocol ``TestG<gallery_size>``.
        pairs: with ``--protocol verification``: the LFW folder (``pairs.txt`` and ``lfw/``)
            or the YouTube Faces folder (``splits.txt`` and ``aligned_images_DB/``); writes
            ``verification.json``, ``roc.csv`` and ``roc.png``
            (:func:`embedlab.metrics.verify`, the folds of the pairs file).
        video_frames: YouTube Faces: the first that many frames of each video (0: all).
        video_distance: YouTube Faces: ``mean_pairwise`` (the mean distance over all frame
            pairs, FaceNet's protocol) or ``mean_embedding``. A euclidean run compares frames
            by the squared euclidean distance, as FaceNet (so its thresholds are squared
            distances), a cosine run by the cosine distance; ``verification.json`` names it.
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
        resplit: evaluate although ``data`` puts images the run trained or validated on (its
            ``splits.csv``) into the evaluation split; without it such options are refused.
    """
    files = run_files(ckpt_path, config)
    ckpt, run_dir = files.checkpoint, files.run_dir
    recipe = files.recipe()
    model = dict(recipe.get("model") or {})
    if rerank:
        model["test_rerank"] = True
    if convention is not None:
        if protocol != "retrieval":
            raise ConfigError(f"convention: only with --protocol retrieval (not {protocol})")
        model["eval_convention"] = convention
    if flip_test:
        net = dict(model.get("model") or {})
        net["init_args"] = {**(net.get("init_args") or {}), "flip_test": True}
        model["model"] = net
    settings_data = merge_data(recipe, data)
    if protocol == "verification":
        if rerank or pairs is None:
            raise ConfigError(
                "protocol: verification takes --pairs <LFW or YouTube Faces folder> and no --rerank"
            )
        run = {**recipe, "model": model, "data": settings_data}
        source = open_pairs(pairs, video_frames)
        folder = Path(out) if out else run_dir
        return evaluate_verification(files, run, folder, source, video_distance, trust_checkpoint)
    if protocol == "cuhksysu":
        if rerank:
            raise ConfigError("rerank: not available with --protocol cuhksysu")
        run = {**recipe, "model": model, "data": settings_data}
        return evaluate_person_search(
            files, run, Path(out) if out else run_dir, gallery_size, trust_checkpoint
        )
    module, datamodule = instantiate_config({**recipe, "model": model, "data": settings_data})
    if data and not resplit:
        check_held_out(datamodule, run_dir / "splits.csv")
    settings = recipe.get("trainer") or {}
    trainer = Trainer(
        accelerator=settings.get("accelerator", "auto"),
        devices=1,
        precision=settings.get("precision"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO(trust_flag="--trust_checkpoint")],
    )
    trainer.test(
        module,
        datamodule=datamodule,
        ckpt_path=str(ckpt),
        verbose=False,
        weights_only=not trust_checkpoint,
    )
    results = {
        k.removeprefix("test/"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("test/")
    }
    used = module.eval_convention
    print_summary({"test": results}, f"retrieval on held-out data ({used} convention)")
    folder = Path(out) if out else run_dir
    options = {"rerank": rerank, "flip_test": flip_test, "data": data or {}, "resplit": resplit}
    write_json(
        folder / "evaluation.json",
        {"checkpoint": str(ckpt), "convention": used, **options, "metrics": results},
    )
    flags = {"rerank": rerank, "flip_test": flip_test, "convention": used}
    pd.DataFrame([{**results, **flags}]).to_csv(folder / "evaluation.csv", index=False)
    print(f"wrote {folder / 'evaluation.json'} and {folder / 'evaluation.csv'}")
    return 0


def check_held_out(datamodule: Any, splits_file: Path) -> None:
    """Refuse data options that move images the run trained or validated on (``splits.csv``)
    into the evaluation split: its numbers would no longer be held-out numbers."""
    if not splits_file.is_file():
        return
    before = pd.read_csv(splits_file)
    seen = before[before["split"].isin(["train", "val"])]
    now = datamodule.splits_table()
    keys = [c for c in ("dataset", "path") if c in seen.columns and c in now.columns]
    evaluated = now[~now["split"].isin(["train", "val"])]
    leaked = seen.merge(evaluated[keys], on=keys)
    if len(leaked):
        raise ConfigError(
            f"data: with these options {len(leaked)} images the run trained or validated on "
            f"(in {splits_file}, e.g. {leaked['path'].iloc[0]}) are in the evaluation split; "
            "add --resplit to evaluate anyway"
        )


def evaluate_verification(
    files: RunFiles,
    recipe: dict[str, Any],
    folder: Path,
    source: LFWPairs | YouTubeFacesPairs,
    video_distance: SetDistance = "mean_pairwise",
    trust_checkpoint: bool = False,
) -> int:
    """``evaluate --protocol verification``: embed every image of the pairs once with the
    checkpoint and run the verification protocol over the folds of the pairs file (for
    YouTube Faces, each video's frames, compared by ``video_distance``)."""
    from embedlab.analysis.pictures import save_figure

    table = source.pairs()
    model, datamodule = build_run(recipe)
    load_weights(model, files.checkpoint, trust_checkpoint=trust_checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    embedder = Embedder(model, datamodule.transforms.eval, files, datamodule).to(device)
    unique = pd.unique(pd.concat([table["path1"], table["path2"]]))
    videos = isinstance(source, YouTubeFacesPairs)
    members = [[p] for p in unique]  # LFW: each side one image
    if isinstance(source, YouTubeFacesPairs):
        members = [source.frames(p) for p in unique]
    embedded = torch.from_numpy(
        embedder.embed_images([str(source.root / f) for m in members for f in m])
    )
    ends = np.cumsum([len(m) for m in members])
    sets = dict(zip(unique, torch.tensor_split(embedded, ends[:-1].tolist()), strict=True))
    distance = (recipe.get("model") or {}).get("distance", "cosine")
    first = [sets[p] for p in table["path1"]]
    second = [sets[p] for p in table["path2"]]
    folds = int(table["fold"].max()) + 1
    if videos:  # FaceNet's squared euclidean frame distance for a euclidean run
        distance = frame_distance(distance)
        d = set_distances(first, second, distance, video_distance)
    else:
        d = pair_distances(torch.cat(first), torch.cat(second), distance)
    results = verify_distances(d, table["same"].to_numpy(), folds=folds)
    scalars = {k: v for k, v in results.items() if isinstance(v, float)}
    print_summary({"pairs": scalars}, f"verification, {folds} folds, {len(table)} pairs")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / "verification.json",
        {"checkpoint": str(files.checkpoint), "distance": distance, **results},
    )
    roc = pd.DataFrame({"fpr": results.get("fpr", []), "tpr": results.get("tpr", [])})
    roc.to_csv(folder / "roc.csv", index=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.plot(roc["fpr"], roc["tpr"])
    ax.set(xscale="log", xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    save_figure(fig, folder / "roc.png")
    print(f"wrote {folder / 'verification.json'}, {folder / 'roc.csv'} and {folder / 'roc.png'}")
    return 0


def evaluate_person_search(
    files: RunFiles,
    recipe: dict[str, Any],
    folder: Path,
    gallery_size: int,
    trust_checkpoint: bool = False,
) -> int:
    """``evaluate --protocol cuhksysu``: embed the protocol's query and gallery crops with the
    checkpoint and score each query against its own gallery (``TestG<gallery_size>``)."""
    from embedlab.data.formats.cuhksysu import CUHKSYSU
    from embedlab.metrics.person_search import person_search

    model, datamodule = build_run(recipe)
    load_weights(model, files.checkpoint, trust_checkpoint=trust_checkpoint)
    sources = [s for s in datamodule.sources if isinstance(s, CUHKSYSU)]
    if not sources:
        raise ConfigError(
            "protocol: cuhksysu needs an embedlab.data.CUHKSYSU dataset in the run's data "
            "(or give one with --data '{dataset: {class_path: embedlab.data.CUHKSYSU, "
            "init_args: {root: …}}}')"
        )
    source = sources[0]
    protocol = source.protocol(gallery_size)
    assert protocol.queries is not None and protocol.gallery is not None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    embedder = Embedder(model, datamodule.transforms.eval, files, datamodule).to(device)
    query = embedder.embed_images([str(source.root / p) for p in protocol.queries["path"]])
    gallery = embedder.embed_images([str(source.root / p) for p in protocol.gallery["path"]])
    distance = (recipe.get("model") or {}).get("distance", "cosine")
    results = person_search(query, gallery, protocol, distance=distance)
    scalars = {k: float(v) for k, v in results.items() if np.ndim(v) == 0}
    print_summary({f"TestG{gallery_size}": scalars}, "person search, each query's own gallery")
    name = f"evaluation_cuhksysu{gallery_size}"
    write_json(folder / f"{name}.json", {"checkpoint": str(files.checkpoint), "metrics": results})
    pd.DataFrame([results]).to_csv(folder / f"{name}.csv", index=False)
    print(f"wrote {folder / (name + '.json')} and {folder / (name + '.csv')}")
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
    dataset: DataSource | FrameSource,
    images: bool = True,
    max_items: int = 10,
    strict: bool = False,
) -> int:
    """Read a dataset as training would; print per-split counts and every problem.

    Returns 0 when clean, 1 on errors (or on warnings with ``--strict``).

    Args:
        dataset: the dataset, as in ``data.dataset``: ``--dataset Market1501 --dataset.root
            /data/market1501`` (root default: ``$EMBEDLAB_DATA_ROOT/<name>``, or ``data/<name>``
            when the variable is unset), ``--dataset CUHK03NP --dataset.variant labeled``.
        images: decode every image (``--no_images``: only check that the files exist).
        max_items: items listed per problem (-1: all).
        strict: exit with 1 on warnings too.
    """
    report = check_dataset(dataset, verify_images=images)
    print(format_report(report, max_items=max_items))
    return 1 if report.errors or (strict and report.warnings) else 0


def data_prepare(
    dataset: str,
    source: Path,
    out: Path,
    persons: Literal["train", "all"] = "train",
    test: bool = True,
    gallery_sizes: list[int] | None = None,
) -> int:
    """Write a dataset's crops from its official release (``cuhksysu``: CUHK-SYSU person crops).

    Args:
        dataset: which dataset: ``cuhksysu``.
        source: the official release root (``Image/SSM``, ``annotation``).
        out: the dataset root to write (``cropped_images/``, ``test/``).
        persons: ``train``: the persons of ``Train.mat``; ``all``: every person of ``Person.mat``.
        test: also write the test protocol's crops and tables (``--no_test``: training crops only).
        gallery_sizes: the protocols ``TestG<size>.mat`` to write, e.g. ``[50,100]`` (default: every
            one there; TestG4000 lists about 11.6 million gallery scenes and takes minutes).
    """
    if dataset != "cuhksysu":
        raise ConfigError(f"dataset: {dataset!r} has no prepare step (choose from: cuhksysu)")
    from embedlab.data.formats.cuhksysu import prepare_cuhksysu

    counts = prepare_cuhksysu(source, out, persons, test, gallery_sizes)
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {out}")
    if counts["unmatched"]:
        print(f"{counts['unmatched']} ground-truth boxes match no annotated box of their scene")
    return 0


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
    runner: Runner | None = None,
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


def embed(
    ckpt_path: Path,
    out: Path,
    images: Path | None = None,
    data_split: Literal["query", "gallery", "test", "train"] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    config: Path | None = None,
    data: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
    shard: str | None = None,
) -> int:
    """Embed every image under a folder, or a split of the run's dataset, into a Parquet file.

    Columns ``path``, ``embedding`` (list of float32) and, for a split, ``label`` and
    ``camera``. A rerun skips the rows already written (resumes a killed run); unreadable
    images are skipped and listed in ``<out stem>.skipped.tsv``.

    Args:
        ckpt_path: checkpoint, e.g. ``runs/X/version_N/checkpoints/last.ckpt``.
        out: the Parquet file written, e.g. ``gallery.parquet``.
        images: a folder; every jpg/jpeg/png/webp/bmp below it is embedded.
        data_split: instead of ``images``: ``query``, ``gallery``, ``test`` (query and gallery,
            or the leave-one-out test split) or ``train`` of the run's dataset.
        batch_size: images per forward pass.
        num_workers: data loader processes decoding the images.
        device: ``cpu``, ``cuda``, ``cuda:1`` (default: CUDA if available).
        config: run configuration (default: ``config.yaml`` of the checkpoint's run folder).
        data: data module arguments replacing the run's (mappings are merged), e.g.
            ``{root: /data/market1501}``.
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
        shard: ``auto`` (the rank and world size of ``torchrun`` or ``srun``: ``RANK`` /
            ``WORLD_SIZE``, else ``SLURM_PROCID`` / ``SLURM_NTASKS``) or ``RANK/WORLD``, e.g.
            ``1/4``: ``out`` is a folder and this process embeds its contiguous block of the
            images into ``<out>/part-<rank>.parquet`` (resumable per shard).
    """
    if (images is None) == (data_split is None):
        raise ConfigError("images, data_split: give one of them")
    rank_world = parse_shard(shard) if shard is not None else None
    if rank_world is None:
        expect_suffix(out, "out", (".parquet", ".pq"), "Parquet embeddings")
    else:
        if out.suffix.lower() in (".parquet", ".pq"):
            raise ConfigError(
                f"out: with --shard, a folder that receives part-<rank>.parquet, not {out}"
            )
        if device is None and torch.cuda.is_available():  # this process's GPU of the node
            local = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
            device = f"cuda:{int(local) % torch.cuda.device_count()}"
    embedder = load_embedder(ckpt_path, device, config, data, trust_checkpoint)
    paths = image_files(images) if images is not None else None
    result = embed_to_parquet(
        embedder,
        out,
        paths,
        data_split,
        batch_size=batch_size,
        num_workers=num_workers,
        shard=rank_world,
    )
    print(
        f"wrote {result.out}: {result.rows} rows ({result.embedded} embedded now, "
        f"{len(result.skipped)} unreadable skipped)"
    )
    return 0


def parse_shard(value: str) -> tuple[int, int]:
    """``auto`` (from the environment) or ``RANK/WORLD`` as ``(rank, world)``."""
    if value == "auto":
        return shard_from_env()
    rank, _, world = value.partition("/")
    try:
        return check_shard(int(rank), int(world))
    except ValueError:
        raise ConfigError(f"shard: expected auto or RANK/WORLD (e.g. 1/4), got {value!r}") from None


def index_build(
    embeddings: Path,
    out: Path,
    factory: str = "Flat",
    metric: Literal["cosine", "euclidean"] = "cosine",
    add: bool = False,
    train_size: int = 262_144,
    max_memory: str | None = None,
    on_disk: bool = False,
) -> int:
    """Build a faiss index of an embeddings file (``embedlab embed``) and save it in a folder.

    The folder holds ``index.faiss``, ``paths.parquet`` and ``meta.json`` (metric, factory,
    dim, count, the checkpoint and config of the embeddings).

    Args:
        embeddings: Parquet file written by ``embedlab embed``, or a folder of shards
            (``embed --shard``: every ``part-*.parquet`` in it, all of one model).
        out: the index folder.
        factory: ``faiss.index_factory`` string: ``Flat`` (exact), ``IVF4096,PQ64``
            (compressed, trained on a sample), ``HNSW32`` (graph), ...
        metric: ``cosine`` (L2-normalised, inner product) or ``euclidean``.
        add: append to the index already in ``out`` (its factory and metric are kept).
        train_size: vectors sampled to train a factory that needs training.
        max_memory: stream the embeddings in chunks of at most this many bytes of vectors,
            e.g. ``512MB`` (default for a folder of shards: ``1GB``; a file without it is read
            at once).
        on_disk: IVF factories: keep the inverted lists in ``out/index.ivfdata`` instead of
            memory (searches read them through mmap); streams the embeddings.
    """
    sources = embedding_sources(embeddings)
    settings = embedding_settings(sources[0])
    for file in sources[1:]:
        other = embedding_settings(file)
        if settings.get("model") and other.get("model") and settings["model"] != other["model"]:
            raise ConfigError(
                f"embeddings: {file} holds model {other['model']} ({other.get('checkpoint')}), "
                f"{sources[0]} model {settings['model']} ({settings.get('checkpoint')}): "
                "an index holds the embeddings of one model"
            )
        check_same_model(settings, other, f"embeddings: {file}")
    if len(sources) > 1 or embeddings.is_dir() or max_memory is not None or on_disk:
        return _index_build_streamed(
            sources, settings, out, factory, metric, add, train_size, max_memory, on_disk
        )
    frame, vectors = read_embeddings(embeddings)
    paths = frame["path"].astype(str).tolist()
    if add:
        index = Index.load(out)
        check_same_model(index.meta, settings, f"embeddings: {embeddings}")
        if index.meta.get("on_disk"):
            raise ConfigError(f"add: {out} keeps its inverted lists on disk; build it again")
        added = index.add(vectors, paths, train_size=train_size)
    else:
        meta = {key: settings.get(key) for key in ("checkpoint", "config", "model")}
        index = Index.build(vectors, paths, factory, metric, train_size=train_size, meta=meta)
        added = len(index)
    index.save(out)
    print(
        f"wrote {out}: {index.factory} index ({index.metric}), {added} added, {len(index)} in all"
    )
    return 0


def _index_build_streamed(
    sources: list[Path],
    settings: dict[str, Any],
    out: Path,
    factory: str,
    metric: Literal["cosine", "euclidean"],
    add: bool,
    train_size: int,
    max_memory: str | None,
    on_disk: bool,
) -> int:
    """``index build`` reading the embeddings in bounded chunks (:func:`stream_into`)."""
    budget = parse_memory(max_memory or "1GB")
    if add:
        index = Index.load(out)
        check_same_model(index.meta, settings, f"embeddings: {sources[0]}")
        if on_disk or index.meta.get("on_disk"):
            raise ConfigError(
                f"add: {out} keeps (or would keep) its inverted lists on disk; "
                "build it again from all the embeddings"
            )
    else:
        dim = settings.get("dim") or read_embeddings_dim(sources)
        meta = {key: settings.get(key) for key in ("checkpoint", "config", "model")}
        index = Index.empty(int(dim), factory, metric, meta)
        if on_disk:
            out.mkdir(parents=True, exist_ok=True)
    before = len(index)
    stream_into(index, sources, budget, train_size, on_disk=out if on_disk else None)
    index.save(out)
    where = ", inverted lists on disk" if index.meta.get("on_disk") else ""
    print(
        f"wrote {out}: {index.factory} index ({index.metric}{where}), "
        f"{len(index) - before} added, {len(index)} in all"
    )
    return 0


def read_embeddings_dim(sources: list[Path]) -> int:
    """The dimension of the first embedding of ``sources`` (files without a ``dim`` setting)."""
    for _, _, vectors in stream_chunks(sources, 1):
        return int(vectors.shape[1])
    raise ConfigError(f"embeddings: {', '.join(map(str, sources))} hold no embeddings")


def check_same_model(index: dict[str, Any], queries: dict[str, Any], what: str) -> None:
    """Refuse to mix embeddings of two models (their ``model`` fingerprints differ) in one
    index or one search: their distances mean nothing. Files without a fingerprint (written
    before embedlab recorded one) are compared by checkpoint path, with a warning."""
    if index.get("model") and queries.get("model"):
        if index["model"] != queries["model"]:
            raise ConfigError(
                f"{what} embeds with model {queries['model']} ({queries.get('checkpoint')}), "
                f"the index holds model {index['model']} ({index.get('checkpoint')}): "
                "rebuild the index with this model, or query it with the index's"
            )
    elif index.get("checkpoint") != queries.get("checkpoint"):
        print(
            f"embedlab: warning: {what} comes from {queries.get('checkpoint')}, "
            f"the index from {index.get('checkpoint')}",
            file=sys.stderr,
        )


def search(
    index: Path,
    out: Path,
    k: int = 10,
    ckpt_path: Path | None = None,
    images: Path | None = None,
    embeddings: Path | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    trust_checkpoint: bool = False,
) -> int:
    """Find the k nearest indexed images of each query; write ``query, rank, path, distance``.

    Queries are images (embedded with ``ckpt_path``) or an embeddings file. Rank 1 is the
    nearest; an indexed image finds itself first, at distance 0.

    Args:
        index: index folder written by ``embedlab index build``.
        out: the CSV file written, e.g. ``hits.csv``.
        k: hits per query.
        ckpt_path: with ``images``: the checkpoint that embeds them.
        images: a query image, or a folder of them (recursively).
        embeddings: instead of ``images``: a Parquet file written by ``embedlab embed``.
        nprobe: IVF indexes: lists visited per query (default: faiss's, 1).
        ef_search: HNSW indexes: candidates kept per query (default: faiss's, 16).
        batch_size: images per forward pass.
        device: where ``ckpt_path``'s model runs (default: CUDA if available).
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
    """
    if (images is None) == (embeddings is None):
        raise ConfigError("images, embeddings: give one of them")
    expect_suffix(out, "out", (".csv",), "CSV hits")
    built = Index.load(index)
    if images is not None:
        if ckpt_path is None:
            raise ConfigError("ckpt_path: needed to embed the query images")
        embedder = load_embedder(ckpt_path, device, trust_checkpoint=trust_checkpoint)
        source = embedder.files.checkpoint if embedder.files else ckpt_path
        queries = {"checkpoint": str(source), "model": embedder.fingerprint}
        check_same_model(built.meta, queries, f"ckpt_path: {ckpt_path}")
        files = [str(images)] if Path(images).is_file() else image_files(images)
        if not files:
            raise ConfigError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {images}")
        unreadable = Path(out).with_name(f"{Path(out).stem}.skipped.tsv")
        with tempfile.TemporaryDirectory() as folder:
            result = embed_to_parquet(
                embedder,
                Path(folder) / "queries.parquet",
                files,
                batch_size=batch_size,
                skipped_file=unreadable,
                command="embedlab search",
            )
            frame, vectors = read_embeddings(result.out)
        if not len(frame):  # every query image unreadable (each one named above)
            path, reason = result.skipped[0]
            raise ConfigError(
                f"images: none of the {len(files)} query images can be read (e.g. {path}: "
                f"{reason}); they are listed in {unreadable}"
            )
    else:
        frame, vectors = read_embeddings(embeddings)  # type: ignore[arg-type]
        check_same_model(built.meta, embedding_settings(embeddings), f"embeddings: {embeddings}")  # type: ignore[arg-type]
        if not len(frame):
            raise ConfigError(f"embeddings: {embeddings} holds no embeddings to search with")
    if len(frame) and vectors.shape[1] != built.dim:
        raise ConfigError(f"queries have {vectors.shape[1]} dimensions, the index {built.dim}")
    names = frame["path"].astype(str).tolist()
    hits = built.search(vectors, k, names, nprobe=nprobe, ef_search=ef_search)
    with atomic_write(out, "w", newline="") as handle:
        hits.to_csv(handle, index=False)
    print(f"wrote {out}: {len(hits)} hits of {len(frame)} queries")
    return 0


def export(
    ckpt_path: Path,
    out: Path,
    format: Literal["onnx", "torchscript"] = "onnx",
    input_shape: list[int] | None = None,
    config: Path | None = None,
    trust_checkpoint: bool = False,
) -> int:
    """Export a checkpoint's embedding model to ONNX or TorchScript.

    Input ``images``: a preprocessed float batch ``(N, C, H, W)`` (dynamic N: the run's
    evaluation transform applied to each image); output ``embeddings`` ``(N, D)``, normalised
    as at evaluation.

    Args:
        ckpt_path: checkpoint, e.g. ``runs/X/version_N/checkpoints/last.ckpt``.
        out: the file written, e.g. ``model.onnx`` or ``model.pt``.
        format: ``onnx`` (onnxruntime, TensorRT) or ``torchscript`` (``torch.jit.load``).
        input_shape: ``[C, H, W]`` of one input (default: what the evaluation transform gives).
        config: run configuration (default: ``config.yaml`` of the checkpoint's run folder).
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
    """
    embedder = load_embedder(ckpt_path, "cpu", config, trust_checkpoint=trust_checkpoint)
    target = export_embedder(embedder, out, format, input_shape)
    shape = tuple(example_input(embedder, input_shape).shape[1:])
    print(f"wrote {target}: {format}, input images (N, {', '.join(map(str, shape))}), ", end="")
    print(f"output embeddings (N, {embedder.embedding_dim}); preprocessing: {embedder.transform}")
    return 0

"""``embedlab evaluate``: a checkpoint on the run's evaluation split (retrieval), on pairs
(verification) or on person-search galleries, written next to the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pytorch_lightning import Trainer

from embedlab.checkpoint_io import AtomicCheckpointIO
from embedlab.data.pairs import open_pairs
from embedlab.errors import ConfigError
from embedlab.evaluation.person_search import evaluate_person_search
from embedlab.evaluation.verification import evaluate_verification
from embedlab.options import Convention, Protocol, SetDistance
from embedlab.report import print_summary, write_json
from embedlab.runs import instantiate_config, merge_data, run_files

__all__ = ["check_held_out", "evaluate_checkpoint"]


def evaluate_checkpoint(
    ckpt_path: Path,
    config: Path | None = None,
    out: Path | None = None,
    rerank: bool = False,
    flip_test: bool = False,
    data: dict[str, Any] | None = None,
    protocol: Protocol = "retrieval",
    convention: Convention | None = None,
    gallery_size: int = 50,
    pairs: Path | None = None,
    video_frames: int = 100,
    video_distance: SetDistance = "mean_pairwise",
    trust_checkpoint: bool = False,
    resplit: bool = False,
) -> int:
    """Evaluate ``ckpt_path`` with ``protocol`` and write the results (the options of
    ``embedlab evaluate``, documented in :func:`embedlab.commands.evaluate.evaluate`)."""
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

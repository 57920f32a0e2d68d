"""``embedlab embed``: images (a folder, or a split of the run's dataset) into Parquet embeddings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from embedlab.errors import ConfigError, expect_suffix


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
    import torch

    from embedlab.inference import embed_to_parquet, image_files, load_embedder

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
    from embedlab.inference.embed import check_shard, shard_from_env

    if value == "auto":
        return shard_from_env()
    rank, _, world = value.partition("/")
    try:
        return check_shard(int(rank), int(world))
    except ValueError:
        raise ConfigError(f"shard: expected auto or RANK/WORLD (e.g. 1/4), got {value!r}") from None

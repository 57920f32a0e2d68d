"""``embedlab index build``: a faiss index of embeddings, saved in a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def build(
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
            at once). What it bounds: the chunk being added, and the training sample drawn
            first (at most as much again). On top: 16 bytes per embedding of path hashes
            (repeated paths are left out) and, without ``on_disk``, the index and its paths.
        on_disk: IVF factories: write the inverted lists to ``out/index.ivfdata`` and the
            paths to ``out/paths.parquet`` chunk by chunk instead of keeping them in memory
            (searches read the lists through mmap); streams the embeddings.
    """
    from embedlab.inference.build import index_build

    return index_build(embeddings, out, factory, metric, add, train_size, max_memory, on_disk)

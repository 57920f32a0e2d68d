"""``embedlab search``: the nearest indexed images of query images or embeddings."""

from __future__ import annotations

from pathlib import Path


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
    from embedlab.inference.search import search_to_csv

    return search_to_csv(
        index,
        out,
        k,
        ckpt_path,
        images,
        embeddings,
        nprobe,
        ef_search,
        batch_size,
        device,
        trust_checkpoint,
    )

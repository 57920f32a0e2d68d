"""Indexes built from embeddings that need not fit in memory: read in bounded chunks.

:func:`stream_into` reads one or many Parquet files (e.g. the ``part-<rank>.parquet`` shards of
``embedlab embed --shard``) in row batches of at most ``max_memory`` bytes of vectors: a pass
draws the seeded training sample (the same rows :meth:`Index.add` would sample from all the
vectors at once), a second pass adds the vectors chunk by chunk. With ``on_disk`` an IVF
index's inverted lists go to ``index.ivfdata`` next to the index: each chunk becomes a small
block index on disk, and ``faiss.contrib.ondisk.merge_ondisk`` merges the blocks into
``faiss.OnDiskInvertedLists``, which searches read through ``mmap``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from faiss.contrib.ondisk import merge_ondisk

from embedlab.errors import ConfigError
from embedlab.inference.embed import not_parquet
from embedlab.inference.index import IVFDATA_FILE, Index, _reason

__all__ = ["StreamStats", "embedding_sources", "parse_memory", "stream_into"]

#: bytes per unit of ``max_memory`` (binary: ``MB`` is 2**20 bytes)
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: copies of a chunk alive at once (Arrow buffers, the float32 array, its normalised copy, faiss)
COPIES = 4


def parse_memory(text: str) -> int:
    """``"512MB"``, ``"2GiB"``, ``"64M"`` or a number of bytes, as bytes (K/M/G/T: powers of 1024)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not found or float(found.group(1)) <= 0:
        raise ConfigError(f"max_memory: expected a size such as 512MB or 2GB, got {text!r}")
    return int(float(found.group(1)) * UNITS[found.group(2)])


def embedding_sources(path: str | Path) -> list[Path]:
    """An embeddings file, or every ``part-*.parquet`` of a folder of shards (in name order)."""
    source = Path(path)
    if source.is_dir():
        files = sorted(source.glob("part-*.parquet"))
        if not files:
            raise ConfigError(f"embeddings: {source} holds no part-*.parquet shards")
        return files
    if not source.is_file():
        raise ConfigError(f"embeddings: no such file or folder: {source}")
    return [source]


@dataclass
class StreamStats:
    """What :func:`stream_into` read: chunks, the largest one, the training sample, vectors added."""

    chunks: int = 0
    max_chunk_rows: int = 0
    trained_on: int = 0
    added: int = 0


def _rows(file: Path) -> int:
    try:
        return int(pq.ParquetFile(file).metadata.num_rows)
    except (pa.ArrowInvalid, OSError) as err:
        raise not_parquet(file, "embeddings", err) from err


def chunks(files: Sequence[Path], rows: int) -> Iterator[tuple[Path, list[str], np.ndarray]]:
    """``(file, paths, (n, d) float32)`` batches of at most ``rows`` rows, file after file."""
    for file in files:
        source = pq.ParquetFile(file)
        names = source.schema_arrow.names
        for column in ("path", "embedding"):
            if column not in names:
                raise ConfigError(f"embeddings: {file} has no {column!r} column")
        for batch in source.iter_batches(batch_size=rows, columns=["path", "embedding"]):
            column = batch.column("embedding")
            n = len(column)
            if n == 0:
                continue
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            if (lengths != lengths[0]).any():
                raise ConfigError(f"embeddings: {file} rows have {sorted(set(lengths))} values")
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            vectors = np.asarray(values, dtype=np.float32).reshape(n, int(lengths[0]))
            yield file, [str(p) for p in batch.column("path").to_pylist()], vectors


def _sample(
    files: Sequence[Path], total: int, size: int, seed: int, rows: int, dim: int
) -> np.ndarray:
    """The rows :meth:`Index.add` samples (same seed, same draw), read chunk by chunk."""
    picked = np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
    sample = np.empty((size, dim), dtype=np.float32)
    start = filled = 0
    for _, _, vectors in chunks(files, rows):
        stop = start + len(vectors)
        lo, hi = np.searchsorted(picked, [start, stop])
        sample[filled : filled + hi - lo] = vectors[picked[lo:hi] - start]
        filled += int(hi - lo)
        start = stop
    return sample


def stream_into(
    index: Index,
    files: Sequence[Path],
    max_memory: int,
    train_size: int = 262_144,
    seed: int = 0,
    on_disk: Path | None = None,
) -> StreamStats:
    """Add the vectors of ``files`` to ``index`` (training it first if needed) in chunks of at
    most ``max_memory`` bytes of vectors; ``on_disk``: write an IVF index's inverted lists to
    ``on_disk/index.ivfdata`` (the index must be empty). Paths already indexed are left out."""
    stats = StreamStats()
    total = sum(_rows(f) for f in files)
    if total == 0:
        raise ConfigError(f"embeddings: {', '.join(map(str, files))} hold no embeddings")
    rows = max(1, max_memory // (COPIES * 4 * index.dim))
    ivf = faiss.try_extract_index_ivf(index.index)
    if on_disk is not None and (ivf is None or len(index)):
        raise ConfigError(
            f"on_disk: keeps the inverted lists of a new IVF index on disk, not of {index.factory!r}"
            + (" holding vectors already" if ivf is not None else "")
        )
    if not index.index.is_trained:
        size = min(train_size, total, max(1, max_memory // (4 * index.dim)))
        if size < min(train_size, total):
            warnings.warn(
                f"max_memory: training on {size} vectors, not {min(train_size, total)}",
                RuntimeWarning,
                stacklevel=2,
            )
        sample = index._prepare(_sample(files, total, size, seed, rows, index.dim))
        try:
            index.index.train(sample)
        except RuntimeError as err:
            raise ConfigError(
                f"factory: training {index.factory!r} on {len(sample)} vectors failed: "
                f"{_reason(err)}"
            ) from err
        stats.trained_on = len(sample)
        del sample
    known = set(index.paths)
    blocks = Path(tempfile.mkdtemp(prefix=".blocks-", dir=on_disk)) if on_disk else None
    try:
        block_files: list[str] = []
        for file, paths, vectors in chunks(files, rows):
            stats.chunks += 1
            stats.max_chunk_rows = max(stats.max_chunk_rows, len(paths))
            x = index._prepare(vectors, f"embeddings: {file}")
            keep = np.array([p not in known for p in paths], dtype=bool)
            if not keep.all():
                warnings.warn(
                    f"{int((~keep).sum())} path(s) of {file} already in the index left out",
                    RuntimeWarning,
                    stacklevel=2,
                )
                x, paths = x[keep], [p for p, k in zip(paths, keep, strict=True) if k]
            start = len(index.paths)
            if blocks is None:
                index.index.add(x)
            else:  # a block index holding this chunk, merged below
                block = faiss.clone_index(index.index)
                block.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
                block_files.append(str(blocks / f"{len(block_files):06d}.index"))
                faiss.write_index(block, block_files[-1])
                del block
            known.update(paths)
            index.paths.extend(paths)
            stats.added += len(x)
        if blocks is not None and on_disk is not None:
            (on_disk / IVFDATA_FILE).unlink(missing_ok=True)
            merge_ondisk(index.index, block_files, str(on_disk / IVFDATA_FILE))
            index.meta["on_disk"] = IVFDATA_FILE
    finally:
        if blocks is not None:
            shutil.rmtree(blocks, ignore_errors=True)
    return stats

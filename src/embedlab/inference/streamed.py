"""Indexes built from embeddings that need not fit in memory: read in bounded chunks.

:func:`stream_into` reads one or many Parquet files (e.g. the ``part-<rank>.parquet`` shards of
``embedlab embed --shard``) in row batches of at most ``max_memory`` bytes of vectors: a pass
draws the seeded training sample (the same rows :meth:`Index.add` would sample from all the
vectors at once), a second pass adds the vectors chunk by chunk. With ``on_disk`` an IVF
index's inverted lists go to ``index.ivfdata`` next to the index: each chunk becomes a block
of inverted lists in a temporary folder, and the blocks are then copied list by list into
``index.ivfdata`` with plain file writes (no ``mmap`` while building, so the file's pages are
not the process's memory), read by searches as ``faiss.OnDiskInvertedLists``.

Memory: a chunk (at most ``max_memory``), the training sample, and 16 bytes per path for
duplicate detection (:class:`_Seen`). With ``on_disk`` the paths go to ``paths.parquet`` chunk
by chunk instead of memory; without it the index, and its paths, are in memory.
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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedlab.atomic import atomic_write
from embedlab.errors import ConfigError
from embedlab.inference.embed import not_parquet
from embedlab.inference.index import IVFDATA_FILE, PATHS_FILE, Index, _reason

__all__ = ["StreamStats", "embedding_sources", "parse_memory", "stream_into"]

#: bytes per unit of ``max_memory`` (binary: ``MB`` is 2**20 bytes)
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: copies of a chunk alive at once (Arrow buffers, the float32 array, its normalised copy, faiss)
COPIES = 4
#: bytes pyarrow reads from a file at a time (neither a row group nor the file is read whole)
READ_BUFFER = 1 << 20
#: rows pyarrow decodes at a time (a row group of ``embedlab embed``)
READ_ROWS = 4096
#: ``faiss.InvertedLists.INVALID_CODE_SIZE``: codes stored in blocks (fast-scan indexes)
VARIABLE_CODE_SIZE = 2**64 - 1


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
    """What :func:`stream_into` read: chunks, the largest one, the training sample, vectors
    added and rows left out (their path indexed already)."""

    chunks: int = 0
    max_chunk_rows: int = 0
    trained_on: int = 0
    added: int = 0
    left_out: int = 0


def _rows(file: Path) -> int:
    try:
        return int(pq.ParquetFile(file).metadata.num_rows)
    except (pa.ArrowInvalid, OSError) as err:
        raise not_parquet(file, "embeddings", err) from err


def _batches(file: Path, rows: int) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """``(paths, vectors)`` of ``file`` as pyarrow decodes them, at most ``rows`` at a time."""
    try:
        source = pq.ParquetFile(file, buffer_size=READ_BUFFER, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as err:
        raise not_parquet(file, "embeddings", err) from err
    names = source.schema_arrow.names
    for column in ("path", "embedding"):
        if column not in names:
            raise ConfigError(f"embeddings: {file} has no {column!r} column")
    start = 0
    for batch in source.iter_batches(rows, columns=["path", "embedding"], use_threads=False):
        column, paths = batch.column("embedding"), batch.column("path")
        n = len(column)
        if n == 0:
            continue
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if (lengths != lengths[0]).any():
            raise ConfigError(f"embeddings: {file} rows have {sorted(set(lengths))} values")
        if paths.null_count:
            row = start + int(np.flatnonzero(paths.is_null().to_numpy(zero_copy_only=False))[0])
            raise ConfigError(f"embeddings: {file} row {row} has no path")
        values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        vectors = np.asarray(values, np.float32).reshape(n, int(lengths[0]))
        yield paths.cast(pa.large_string()), vectors
        start += n


def chunks(files: Sequence[Path], rows: int) -> Iterator[tuple[Path, pa.Array, np.ndarray]]:
    """``(file, paths, (n, d) float32)`` chunks of at most ``rows`` rows, file after file (the
    paths an Arrow ``large_string`` array). pyarrow decodes :data:`READ_ROWS` rows at a time
    into the chunk (its decoding buffers are several times the vectors' size)."""
    pool = pa.default_memory_pool()
    for file in files:
        parts: list[pa.Array] = []
        chunk: np.ndarray | None = None
        filled = 0
        for paths, vectors in _batches(file, min(rows, READ_ROWS)):
            if chunk is not None and vectors.shape[1] != chunk.shape[1]:
                dims = sorted({vectors.shape[1], chunk.shape[1]})
                raise ConfigError(f"embeddings: {file} rows have {dims} values")
            done = 0
            while done < len(vectors):
                if chunk is None:
                    chunk = np.empty((rows, vectors.shape[1]), np.float32)
                take = min(len(vectors) - done, rows - filled)
                chunk[filled : filled + take] = vectors[done : done + take]
                parts.append(paths.slice(done, take))
                filled, done = filled + take, done + take
                if filled == rows:
                    yield file, pa.concat_arrays(parts), chunk
                    parts, chunk, filled = [], None, 0
                    pool.release_unused()  # pyarrow's allocator keeps freed memory otherwise
        if chunk is not None:
            yield file, pa.concat_arrays(parts), chunk[:filled]
            pool.release_unused()


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


def _hashes(paths: np.ndarray) -> np.ndarray:
    """A 64-bit hash (pandas' SipHash) of each path (an array of str)."""
    return np.asarray(pd.util.hash_array(paths, categorize=False), np.uint64)


class _Seen:
    """The 64-bit hash of each path indexed so far (16 bytes per path): in id order, to find
    the ids of a hash, and as sorted runs merged in place as they grow (as in a log-structured
    merge: ``log2(n / chunk)`` runs at most), to look hashes up in ``O(log n)``."""

    def __init__(self, capacity: int) -> None:
        self.by_id = np.empty(capacity, np.uint64)
        self.ordered = np.empty(capacity, np.uint64)
        self.runs: list[int] = []  # where each sorted run of ``ordered`` starts
        self.count = 0

    def add(self, hashes: np.ndarray) -> None:
        """Record the hashes of the next ``len(hashes)`` ids."""
        start, stop = self.count, self.count + len(hashes)
        if start == stop:
            return
        self.by_id[start:stop] = hashes
        self.ordered[start:stop] = hashes
        self.ordered[start:stop].sort()
        self.runs.append(start)
        self.count = stop
        # merge the last two runs while the newer is as long as the older
        while len(self.runs) > 1 and stop - self.runs[-1] >= self.runs[-1] - self.runs[-2]:
            self.runs.pop()
            self.ordered[self.runs[-1] : stop].sort()

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash was recorded."""
        found = np.zeros(len(hashes), dtype=bool)
        for lo, hi in zip(self.runs, [*self.runs[1:], self.count], strict=False):
            run = self.ordered[lo:hi]
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[at] == hashes
        return found

    def ids_of(self, hashes: np.ndarray, step: int = 1 << 20) -> np.ndarray:
        """The ids whose hash is one of ``hashes`` (a scan, in blocks of ``step`` ids)."""
        wanted = np.unique(hashes)
        ids = []
        for lo in range(0, self.count, step):
            block = self.by_id[lo : min(lo + step, self.count)]
            at = np.minimum(np.searchsorted(wanted, block), len(wanted) - 1)
            ids.append(lo + np.flatnonzero(wanted[at] == block))
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)


class _PathLog:
    """The paths of the index, in id order: the ones it held (``before``), then one block per
    chunk, kept in memory or, with a ``folder``, written there as Parquet files."""

    def __init__(self, before: pa.Array, folder: Path | None) -> None:
        self.before = before
        self.folder = folder
        self.blocks: list[pa.Array | Path] = []
        self.starts: list[int] = []
        self.count = len(before)

    def append(self, paths: pa.Array) -> None:
        if self.folder is None:
            self.blocks.append(paths)
        else:
            file = self.folder / f"{len(self.blocks):06d}.paths.parquet"
            pq.write_table(pa.table({"path": paths}), file)
            self.blocks.append(file)
        self.starts.append(self.count)
        self.count += len(paths)

    def block(self, number: int) -> pa.Array:
        found = self.blocks[number]
        if isinstance(found, Path):
            table = pq.ParquetFile(found, pre_buffer=False).read(use_threads=False)
            return table.column("path").combine_chunks()
        return found

    def paths_of(self, ids: np.ndarray) -> set[str]:
        """The paths of ``ids``."""
        old, new = ids[ids < len(self.before)], ids[ids >= len(self.before)]
        paths = set(self.before.take(pa.array(old)).to_pylist())
        which = np.searchsorted(self.starts, new, side="right") - 1
        for number in np.unique(which):
            local = new[which == number] - self.starts[number]
            paths.update(self.block(int(number)).take(pa.array(local)).to_pylist())
        return paths


def _new(paths: pa.Array, seen: _Seen, log: _PathLog) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``paths`` are not indexed yet (nor repeated earlier in ``paths``), and their
    hashes. A hash found among the indexed paths' is checked against their paths, so that two
    paths of one hash are both kept."""
    names = paths.to_numpy(zero_copy_only=False)
    hashes = _hashes(names)
    keep = ~pd.Index(names).duplicated(keep="first")
    suspect = np.flatnonzero(keep & seen.contains(hashes))
    if len(suspect):
        indexed = log.paths_of(seen.ids_of(hashes[suspect]))
        keep[suspect] = [names[i] not in indexed for i in suspect]
    return keep, hashes


def _on_disk_ivf(index: Index) -> faiss.IndexIVF | None:
    """The IVF index whose inverted lists can go on disk: ``index.index`` itself or behind a
    vector transform (PCA, OPQ), with codes of a fixed size; else None."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if not isinstance(inner, faiss.IndexIVF) or isinstance(inner, faiss.IndexIVFPQR):
        return None
    if inner.invlists is None or inner.invlists.code_size == VARIABLE_CODE_SIZE:
        return None  # fast-scan codes are stored in blocks
    return inner


def _write_block(index: faiss.Index, x: np.ndarray, start: int, file: Path) -> np.ndarray:
    """Add ``x`` (ids ``start`` on) to an empty copy of the trained ``index`` and write its
    inverted lists to ``file``: the list sizes (int64), every list's codes, every list's ids.
    Returns the list sizes."""
    block = faiss.clone_index(index)
    block.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
    lists = faiss.extract_index_ivf(block).invlists
    assert lists is not None
    sizes = np.array([lists.list_size(j) for j in range(lists.nlist)], dtype=np.int64)
    filled = [int(j) for j in np.flatnonzero(sizes)]
    with open(file, "wb") as handle:
        handle.write(sizes.tobytes())
        for j in filled:  # views of faiss's memory, no copies
            handle.write(
                faiss.rev_swig_ptr(lists.get_codes(j), int(sizes[j]) * lists.code_size).data
            )
        for j in filled:
            handle.write(faiss.rev_swig_ptr(lists.get_ids(j), int(sizes[j])).data)
    return sizes


def _merge_blocks(ivf: faiss.IndexIVF, blocks: Sequence[Path], sizes: np.ndarray, out: Path) -> int:
    """Lay the blocks' inverted lists out in ``out`` as ``faiss.OnDiskInvertedLists`` do (list
    after list: codes, then ids) with plain writes, one block in memory at a time, and give
    ``ivf`` those lists. Returns the number of vectors."""
    code_size, nlist = int(ivf.code_size), int(ivf.nlist)
    offsets = np.concatenate([[0], np.cumsum(sizes * (code_size + 8))])
    out.unlink(missing_ok=True)  # a search that maps the old file keeps it
    with open(out, "wb") as handle:
        handle.truncate(int(offsets[-1]))
        filled = np.zeros(nlist, dtype=np.int64)
        for file in blocks:
            with open(file, "rb") as source:
                counts = np.fromfile(source, np.int64, nlist)
                codes = np.fromfile(source, np.uint8, int(counts.sum()) * code_size)
                ids = np.fromfile(source, np.int64, int(counts.sum()))
            ends = np.cumsum(counts)
            for j in np.flatnonzero(counts):
                lo, hi, at = ends[j] - counts[j], ends[j], offsets[j]
                handle.seek(at + filled[j] * code_size)
                handle.write(codes[lo * code_size : hi * code_size].data)
                handle.seek(at + sizes[j] * code_size + filled[j] * 8)
                handle.write(ids[lo:hi].data)
            filled += counts
            del codes, ids
    lists = faiss.OnDiskInvertedLists(nlist, code_size, str(out))
    lists.totsize = int(offsets[-1])
    lists.do_mmap()
    lists.set_all_lists_sizes(faiss.swig_ptr(sizes.astype(np.uint64)))
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # type: ignore[attr-defined]  # (the IVF index deletes them)
    return int(sizes.sum())


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
    ``on_disk/index.ivfdata`` and its paths to ``on_disk/paths.parquet`` (the index must be
    empty). Paths already indexed, or repeated, are left out with a warning per file."""
    stats = StreamStats()
    total = sum(_rows(f) for f in files)
    if total == 0:
        raise ConfigError(f"embeddings: {', '.join(map(str, files))} hold no embeddings")
    rows = max(1, max_memory // (COPIES * 4 * index.dim))
    ivf = _on_disk_ivf(index) if on_disk is not None else None
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
        sample = _sample(files, total, size, seed, rows, index.dim)
        sample = index._prepare(sample, inplace=True)
        try:
            index.index.train(sample)
        except RuntimeError as err:
            raise ConfigError(
                f"factory: training {index.factory!r} on {len(sample)} vectors failed: "
                f"{_reason(err)}"
            ) from err
        stats.trained_on = len(sample)
        del sample
    before = index.path_array()
    seen = _Seen(len(before) + total)
    for lo in range(0, len(before), rows):
        seen.add(_hashes(before.slice(lo, rows).to_numpy(zero_copy_only=False)))
    blocks = Path(tempfile.mkdtemp(prefix=".blocks-", dir=on_disk)) if on_disk else None
    log = _PathLog(before, blocks)
    left_out: dict[Path, int] = {}
    try:
        block_files: list[Path] = []
        sizes = np.zeros(ivf.nlist if ivf is not None else 0, dtype=np.int64)
        for file, paths, vectors in chunks(files, rows):
            stats.chunks += 1
            stats.max_chunk_rows = max(stats.max_chunk_rows, len(paths))
            x = index._prepare(vectors, f"embeddings: {file}", inplace=True)
            keep, hashes = _new(paths, seen, log)
            if not keep.all():
                left_out[file] = left_out.get(file, 0) + int((~keep).sum())
                x, paths, hashes = x[keep], paths.filter(pa.array(keep)), hashes[keep]
            if blocks is None:
                index.index.add(x)
            elif len(x):  # a block of inverted lists, merged below
                block_files.append(blocks / f"{len(block_files):06d}.lists")
                sizes += _write_block(index.index, x, log.count, block_files[-1])
            seen.add(hashes)
            log.append(paths)
            stats.added += len(x)
            del x, vectors, paths
        for file, count in left_out.items():
            warnings.warn(
                f"{count} path(s) of {file} already in the index left out",
                RuntimeWarning,
                stacklevel=2,
            )
        stats.left_out = sum(left_out.values())
        if ivf is not None and on_disk is not None:
            ntotal = _merge_blocks(ivf, block_files, sizes, on_disk / IVFDATA_FILE)
            index.index.ntotal = ivf.ntotal = ntotal
            with (
                atomic_write(on_disk / PATHS_FILE, "wb") as handle,
                pq.ParquetWriter(handle, pa.schema([("path", pa.large_string())])) as writer,
            ):
                for number in range(len(log.blocks)):
                    writer.write_table(pa.table({"path": log.block(number)}))
                    pa.default_memory_pool().release_unused()
            index._set_paths(on_disk / PATHS_FILE)
            index.meta["on_disk"] = IVFDATA_FILE
        else:
            added = [log.block(number) for number in range(len(log.blocks))]
            index._set_paths(pa.chunked_array([before, *added], pa.large_string()))
    finally:
        if blocks is not None:
            shutil.rmtree(blocks, ignore_errors=True)
    return stats

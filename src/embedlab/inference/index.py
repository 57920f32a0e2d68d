"""A saved, queryable faiss index of embeddings and the paths they belong to.

An index folder holds ``index.faiss`` (``faiss.write_index``), ``paths.parquet`` (one row per
indexed vector, in faiss id order) and ``meta.json`` (metric, factory, dim, count and the
checkpoint/config the embeddings came from). ``cosine`` L2-normalises every vector and
searches by inner product, reporting the distance ``1 - cosine``; ``euclidean`` reports the
(not squared) L2 distance. Either way an indexed vector finds itself at distance 0. An IVF
index built on disk (:mod:`embedlab.inference.streamed`) keeps its inverted lists in
``index.ivfdata`` of the same folder, read through ``mmap``.

The paths are kept as one Arrow string array (about ``len + 8`` bytes each, no Python objects)
until :attr:`Index.paths` is asked for them as a list; a search takes the paths of its hits
from that array.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embedlab.atomic import atomic_write
from embedlab.errors import ConfigError

__all__ = ["Index", "IndexMetric"]

IndexMetric = Literal["cosine", "euclidean"]
INDEX_FILE, PATHS_FILE, META_FILE = "index.faiss", "paths.parquet", "meta.json"
#: the inverted lists of an index built ``on_disk`` (``faiss.OnDiskInvertedLists``)
IVFDATA_FILE = "index.ivfdata"


def _reason(err: RuntimeError) -> str:
    """The cause of a faiss error, without its C++ location."""
    return re.split(r":\s", str(err).strip())[-1]


def _no_polysemous_training(index: faiss.Index) -> None:
    """Skip the polysemous code training of (IVF-)PQ indexes: it serves only Hamming-filtered
    search, which embedlab does not use, and takes most of the training time."""
    inner = faiss.try_extract_index_ivf(index) or index
    inner = faiss.downcast_index(inner)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False


def _gpus() -> int:
    """Number of GPUs faiss can use (0 for faiss-cpu)."""
    count = getattr(faiss, "get_num_gpus", None)
    return int(count()) if count is not None else 0


class Index:
    """A faiss index (built with ``faiss.index_factory``) and the path of each vector.

    Args:
        index: the faiss index (on the CPU).
        paths: the path of each indexed vector, in id order.
        metric: ``cosine`` or ``euclidean``.
        factory: the ``index_factory`` string it was built with.
        meta: further settings kept in ``meta.json`` (e.g. the embedding checkpoint).
    """

    def __init__(
        self,
        index: faiss.Index,
        paths: Sequence[str] | pa.Array | pa.ChunkedArray,
        metric: IndexMetric = "cosine",
        factory: str = "Flat",
        meta: dict[str, Any] | None = None,
    ) -> None:
        if index.ntotal != len(paths):
            raise ConfigError(f"index: {index.ntotal} vectors but {len(paths)} paths")
        self.index = index
        # the paths: a list once asked for as one, else an Arrow array or a Parquet file
        self._list: list[str] | None = None
        self._array: pa.Array | None = None
        self._file: Path | None = None
        if isinstance(paths, pa.Array | pa.ChunkedArray):
            self._set_paths(paths)
        else:
            self._list = [str(p) for p in paths]
        self.metric: IndexMetric = metric
        self.factory = factory
        self.meta = dict(meta or {})

    @property
    def paths(self) -> list[str]:
        """The path of each indexed vector, in id order (a list, made on first use)."""
        if self._list is None:
            self._list = self.path_array().to_pylist()
            self._array = self._file = None
        return self._list

    @paths.setter
    def paths(self, paths: Sequence[str]) -> None:
        self._list, self._array, self._file = [str(p) for p in paths], None, None

    def path_array(self) -> pa.Array:
        """The paths as one Arrow ``large_string`` array (read from the paths file if needed)."""
        if self._list is not None:
            return pa.array(self._list, pa.large_string())
        if self._array is None:
            assert self._file is not None
            self._array = _path_column(self._file)
        return self._array

    def _set_paths(self, paths: pa.Array | pa.ChunkedArray | Path) -> None:
        """Replace the paths by an Arrow array, or by a Parquet file of them (read when needed;
        :meth:`save` into its folder keeps the file as it is)."""
        self._list = None
        if isinstance(paths, Path):
            self._array, self._file = None, paths.resolve()
        else:
            self._array, self._file = _large_strings(paths), None

    def _path_count(self) -> int:
        if self._list is not None:
            return len(self._list)
        if self._array is not None:
            return len(self._array)
        assert self._file is not None
        return int(pq.ParquetFile(self._file).metadata.num_rows)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -- building ----------------------------------------------------------------------------
    def _prepare(
        self, vectors: np.ndarray, what: str = "embeddings", inplace: bool = False
    ) -> np.ndarray:
        """``vectors`` as a contiguous float32 array, checked (shape, finite) and, for cosine,
        L2-normalised: in a copy, or in place with ``inplace`` (an array the caller gives up)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"{what}: expected shape (n, {self.dim}), got {tuple(x.shape)}")
        # a row's float64 sum is finite exactly when its values are (8 bytes of check per row)
        finite = np.isfinite(x.sum(axis=1, dtype=np.float64))
        if not finite.all():
            raise ConfigError(f"{what}: row {int(np.flatnonzero(~finite)[0])} is not finite")
        if self.metric == "cosine":
            if x is vectors and not inplace:
                x = x.copy()
            faiss.normalize_L2(x)
        return x

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        paths: Sequence[str],
        factory: str = "Flat",
        metric: IndexMetric = "cosine",
        train_size: int = 262_144,
        seed: int = 0,
        gpu: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> Index:
        """An index of ``embeddings`` ``(n, d)``; a factory that needs training (IVF, PQ) is
        trained on a random sample of at most ``train_size`` vectors. ``gpu``: train and add on
        the GPUs when faiss has any."""
        array = np.asarray(embeddings)
        if array.ndim != 2 or array.shape[0] == 0:
            raise ConfigError(f"embeddings: expected a non-empty (n, d) array, got {array.shape}")
        built = cls.empty(int(array.shape[1]), factory, metric, meta)
        built.add(array, paths, seed=seed, train_size=train_size, gpu=gpu)
        return built

    @classmethod
    def empty(
        cls,
        dim: int,
        factory: str = "Flat",
        metric: IndexMetric = "cosine",
        meta: dict[str, Any] | None = None,
    ) -> Index:
        """An empty (untrained where the factory needs training) index of ``dim``-d vectors."""
        if metric not in ("cosine", "euclidean"):
            raise ConfigError(f"metric must be cosine or euclidean, got {metric!r}")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(dim, factory, faiss_metric)
        except RuntimeError as err:
            raise ConfigError(
                f"factory: faiss cannot build {factory!r} for {dim}-d vectors: {_reason(err)}"
            ) from err
        _no_polysemous_training(index)
        return cls(index, [], metric, factory, meta)

    def add(
        self,
        embeddings: np.ndarray,
        paths: Sequence[str],
        seed: int = 0,
        train_size: int = 262_144,
        gpu: bool = True,
    ) -> int:
        """Append vectors (training the index first if it is untrained); paths already in the
        index are left out with a warning. Returns the number added."""
        if len(paths) != len(embeddings):
            raise ConfigError(f"embeddings: {len(embeddings)} vectors but {len(paths)} paths")
        x = self._prepare(embeddings)
        known = set(self.paths)
        keep = np.array([str(p) not in known for p in paths], dtype=bool)
        if not keep.all():
            warnings.warn(
                f"{int((~keep).sum())} path(s) already in the index left out",
                RuntimeWarning,
                stacklevel=2,
            )
            x, paths = x[keep], [p for p, k in zip(paths, keep, strict=True) if k]
        index = self._on_gpu() if gpu else self.index
        if not index.is_trained:
            sample = x
            if len(x) > train_size:
                rng = np.random.default_rng(seed)
                sample = x[np.sort(rng.choice(len(x), train_size, replace=False))]
            try:
                index.train(sample)
            except RuntimeError as err:
                raise ConfigError(
                    f"factory: training {self.factory!r} on {len(sample)} vectors failed: "
                    f"{_reason(err)}"
                ) from err
        index.add(x)
        self.index = faiss.index_gpu_to_cpu(index) if index is not self.index else index
        self.paths.extend(str(p) for p in paths)
        return len(x)

    def _on_gpu(self) -> faiss.Index:
        """The index on all GPUs when faiss has any and supports it, else itself."""
        if _gpus() == 0:
            return self.index
        try:  # pragma: no cover (faiss-gpu only)
            return faiss.index_cpu_to_all_gpus(self.index)
        except (RuntimeError, AttributeError):  # e.g. HNSW has no GPU version
            return self.index

    # -- searching ---------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        query_names: Sequence[str] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> pd.DataFrame:
        """The ``k`` nearest indexed paths of each query: columns ``query, rank, path,
        distance`` (rank 1-based, nearest first). ``nprobe``: IVF lists visited;
        ``ef_search``: HNSW candidate list size (larger: better recall, slower)."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        x = self._prepare(queries, "queries")
        names = [str(n) for n in query_names] if query_names is not None else list(range(len(x)))
        if len(names) != len(x):
            raise ConfigError(f"queries: {len(x)} vectors but {len(names)} names")
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            if value is not None:
                try:
                    faiss.ParameterSpace().set_index_parameter(self.index, name, value)
                except RuntimeError as err:
                    raise ConfigError(f"{name}: not a parameter of {self.factory!r}") from err
        if len(self) == 0:
            return pd.DataFrame(columns=["query", "rank", "path", "distance"])
        scores, ids = self.index.search(x, min(k, len(self)))
        cosine = self.metric == "cosine"
        distance: np.ndarray = 1.0 - scores if cosine else np.sqrt(np.maximum(scores, 0.0))
        found = ids >= 0  # faiss pads with -1 when fewer than k are found
        rows, ranks = np.nonzero(found)
        hit_ids = ids[found]
        if self._list is not None:
            hit_paths = np.array([self._list[i] for i in hit_ids], dtype=object)
        else:
            hit_paths = self.path_array().take(pa.array(hit_ids)).to_numpy(zero_copy_only=False)
        return pd.DataFrame(
            {
                "query": np.asarray(names, dtype=object)[rows],
                "rank": ranks + 1,
                "path": hit_paths,
                "distance": np.maximum(distance[found], 0.0).astype(np.float32),
            }
        )

    # -- saving ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``paths.parquet`` and ``meta.json`` into ``folder``."""
        if self._path_count() != len(self):
            raise ConfigError(f"index: {len(self)} vectors but {self._path_count()} paths")
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".{INDEX_FILE}.tmp"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, target / INDEX_FILE)
        kept = self._file if self._list is None else None  # the paths are this file's
        if kept is None or kept != (target / PATHS_FILE).resolve():
            with atomic_write(target / PATHS_FILE, "wb") as handle:
                if kept is not None:  # copied, not read
                    with open(kept, "rb") as source:
                        shutil.copyfileobj(source, handle)
                else:
                    pq.write_table(pa.table({"path": self.path_array()}), handle)
        meta = {
            **self.meta,
            "metric": self.metric,
            "factory": self.factory,
            "dim": self.dim,
            "count": len(self),
        }
        with atomic_write(target / META_FILE) as handle:
            json.dump(meta, handle, indent=2)
        return target

    @classmethod
    def load(cls, folder: str | Path) -> Index:
        """The index saved in ``folder`` by :meth:`save`."""
        source = Path(folder)
        missing = [n for n in (INDEX_FILE, PATHS_FILE, META_FILE) if not (source / n).is_file()]
        if missing:
            raise ConfigError(f"index: {source} is not an index folder (missing {missing})")
        meta = json.loads((source / META_FILE).read_text())
        # an on-disk index finds its index.ivfdata next to index.faiss, wherever the folder is
        index = faiss.read_index(str(source / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)
        paths = _path_column(source / PATHS_FILE)
        extra = {k: v for k, v in meta.items() if k not in ("metric", "factory", "dim", "count")}
        return cls(index, paths, meta.get("metric", "cosine"), meta.get("factory", "?"), extra)


def _large_strings(paths: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``paths`` as one ``large_string`` array (a chunked array's chunks joined: a search's
    ``take`` of one array copies nothing)."""
    if isinstance(paths, pa.ChunkedArray):
        paths = paths.combine_chunks() if paths.num_chunks != 1 else paths.chunk(0)
    return paths if paths.type == pa.large_string() else paths.cast(pa.large_string())


def _path_column(file: Path) -> pa.Array:
    """The ``path`` column of an index's ``paths.parquet``."""
    try:
        column = pq.read_table(file, columns=["path"]).column("path")
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"index: cannot read the paths of {file}: {reason}") from err
    return _large_strings(column)

"""A saved, queryable faiss index of embeddings and the paths they belong to.

An index folder holds ``index.faiss`` (``faiss.write_index``), ``paths.parquet`` (one row per
indexed vector, in faiss id order) and ``meta.json`` (metric, factory, dim, count and the
checkpoint/config the embeddings came from). ``cosine`` L2-normalises every vector and
searches by inner product, reporting the distance ``1 - cosine``; ``euclidean`` reports the
(not squared) L2 distance. Either way an indexed vector finds itself at distance 0. An IVF
index built on disk (:mod:`embedlab.inference.streamed`) keeps its inverted lists in
``index.ivfdata`` of the same folder, read through ``mmap``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd

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
        paths: Sequence[str],
        metric: IndexMetric = "cosine",
        factory: str = "Flat",
        meta: dict[str, Any] | None = None,
    ) -> None:
        if index.ntotal != len(paths):
            raise ConfigError(f"index: {index.ntotal} vectors but {len(paths)} paths")
        self.index = index
        self.paths = [str(p) for p in paths]
        self.metric: IndexMetric = metric
        self.factory = factory
        self.meta = dict(meta or {})

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -- building ----------------------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray, what: str = "embeddings") -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"{what}: expected shape (n, {self.dim}), got {tuple(x.shape)}")
        if not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise ConfigError(f"{what}: row {row} is not finite")
        if self.metric == "cosine":
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
        paths = np.asarray(self.paths, dtype=object)
        return pd.DataFrame(
            {
                "query": np.asarray(names, dtype=object)[rows],
                "rank": ranks + 1,
                "path": paths[ids[found]],
                "distance": np.maximum(distance[found], 0.0).astype(np.float32),
            }
        )

    # -- saving ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``paths.parquet`` and ``meta.json`` into ``folder``."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".{INDEX_FILE}.tmp"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, target / INDEX_FILE)
        with atomic_write(target / PATHS_FILE, "wb") as handle:
            pd.DataFrame({"path": self.paths}).to_parquet(handle, index=False)
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
        paths = pd.read_parquet(source / PATHS_FILE)["path"].astype(str).tolist()
        extra = {k: v for k, v in meta.items() if k not in ("metric", "factory", "dim", "count")}
        return cls(index, paths, meta.get("metric", "cosine"), meta.get("factory", "?"), extra)

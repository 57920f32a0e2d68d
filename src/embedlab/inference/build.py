"""Building an index folder from embeddings: in memory, or streamed in bounded chunks
(:mod:`embedlab.inference.streamed`) from a file or a folder of shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from embedlab.errors import ConfigError
from embedlab.inference import Index, read_embeddings
from embedlab.inference.embed import settings_of as embedding_settings
from embedlab.inference.embedder import check_same_model
from embedlab.inference.streamed import chunks as stream_chunks
from embedlab.inference.streamed import embedding_sources, parse_memory, stream_into


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
    """Build (or with ``add`` extend) the index folder ``out`` from an embeddings file or a folder
    of shards; the options of ``embedlab index build`` (:func:`embedlab.commands.index.build`).
    Returns the exit status."""
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

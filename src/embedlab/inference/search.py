"""Searching a saved index with query images (embedded with a checkpoint) or an embeddings
file: the hits as a CSV file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from embedlab.atomic import atomic_write
from embedlab.errors import ConfigError, expect_suffix
from embedlab.inference.embed import embed_to_parquet, image_files, read_embeddings
from embedlab.inference.embed import settings_of as embedding_settings
from embedlab.inference.embedder import IMAGE_SUFFIXES, check_same_model, load_embedder
from embedlab.inference.index import Index

__all__ = ["search_to_csv"]


def search_to_csv(
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
    """Search ``index`` with query images or embeddings and write the hits to the CSV file
    ``out`` (the options of ``embedlab search``: :func:`embedlab.commands.search.search`)."""
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

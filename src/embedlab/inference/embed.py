"""Embeddings of image files or a dataset split, streamed to Parquet with ``Trainer.predict``.

The output has one row per image: ``path``, ``embedding`` (list of float32) and, for a
dataset split, ``label`` and ``camera``. Batches are written as part files into
``<out>.parts/`` while predicting (every ``flush_rows`` rows) and merged into ``<out>`` at the
end, so a killed run loses at most one buffer: the rerun skips every path already in ``<out>``
or in a part. Unreadable images are skipped, warned about and listed in
``<out stem>.skipped.tsv`` (path, reason).

Sharded (``shard=(rank, world)``, e.g. one process of ``torchrun`` or ``srun`` each), ``out`` is
a folder and each process embeds the contiguous block ``[rank·n/world, (rank+1)·n/world)`` of the
sorted images into ``<out>/part-<rank>.parquet`` (rank zero-padded to 5 digits) through the
same parts and resume machinery, with no communication between the processes: a rerun of one
rank resumes that rank's block only, and the shards read in rank order are the rows of a
one-process run in the same order.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.plugins.environments import LightningEnvironment
from torch.utils.data import DataLoader, Dataset

from embedlab.atomic import atomic_write
from embedlab.data.datamodule import RetrievalDataModule
from embedlab.data.source import source_root
from embedlab.errors import ConfigError
from embedlab.inference.embedder import IMAGE_SUFFIXES, Batch, Embedder, ImageFiles, Item, collate

__all__ = [
    "EmbedResult",
    "embed_to_parquet",
    "image_files",
    "read_embeddings",
    "shard_file",
    "shard_from_env",
    "shard_files",
    "split_rows",
]

#: Parquet schema metadata key holding the embedding settings (checkpoint, config, dim).
META_KEY = b"embedlab"
#: ``embedlab embed --data_split`` values.
SPLITS = ("query", "gallery", "test", "train")

#: (rank, world size) of a sharded embedding.
Shard = tuple[int, int]


def shard_from_env(environ: dict[str, str] | None = None) -> Shard:
    """``(rank, world size)`` as ``torchrun`` (``RANK``, ``WORLD_SIZE``) or SLURM
    (``SLURM_PROCID``, ``SLURM_NTASKS``) set them; ``(0, 1)`` outside both."""
    env = dict(os.environ if environ is None else environ)
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in env and world_key in env:
            return check_shard(int(env[rank_key]), int(env[world_key]))
    return (0, 1)


def check_shard(rank: int, world: int) -> Shard:
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"shard: rank {rank} of {world} processes is not a shard")
    return (rank, world)


def shard_file(folder: str | Path, rank: int) -> Path:
    """The Parquet file that shard ``rank`` writes into ``folder``."""
    return Path(folder) / f"part-{rank:05d}.parquet"


def shard_files(folder: str | Path) -> list[Path]:
    """The shard files of a sharded embedding's folder, in rank order."""
    return sorted(Path(folder).glob("part-*.parquet"))


def image_files(folder: str | Path) -> list[str]:
    """Every image under ``folder`` (recursively, by suffix), sorted, as ``folder/...`` paths."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"images: no such folder: {root}")
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(str(p) for p in found)


def split_rows(datamodule: RetrievalDataModule, split: str) -> pd.DataFrame:
    """The rows (``path, label, camera``) of a split of the run's dataset; ``test`` is the
    whole evaluation set (query and gallery, or the leave-one-out test split)."""
    if split not in SPLITS:
        raise ConfigError(f"data_split must be one of {list(SPLITS)}, got {split!r}")
    frame = datamodule.frame
    names = ["query", "gallery", "test"] if split == "test" else [split]
    rows = frame[frame["split"].isin(names)].reset_index(drop=True)
    if rows.empty:
        found = sorted(set(frame["split"]))
        raise ConfigError(f"data_split: the dataset has no {split!r} rows (splits: {found})")
    return rows[["path", "label", "camera", "source"]]


class DatasetImages(Dataset[Item]):
    """The images of a dataset yielding ``(image, ...)`` items (e.g. digits), as :class:`ImageFiles`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        return self.dataset[index][0], index, ""


class EmbedStep(pl.LightningModule):
    """``Trainer.predict`` of an :class:`Embedder`: ``{embeddings, indices, bad}`` per batch."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.embedder = embedder

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        if batch.images.shape[0] == 0:  # every image of the batch was unreadable
            embeddings = batch.images.new_zeros((0, self.embedder.embedding_dim))
        else:
            embeddings = self.embedder(batch.images)
        return {"embeddings": embeddings, "indices": batch.indices, "bad": batch.bad}


def embedding_array(embeddings: np.ndarray) -> pa.Array:
    """``(n, d)`` float32 as a Parquet ``list<float32>`` column."""
    n, d = embeddings.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int64))
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))
    return pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.float32()))


class ParquetPartsWriter(BasePredictionWriter):
    """Buffers each batch's rows and writes them as ``part-N.parquet`` files of ``folder``.

    Args:
        folder: the parts folder (created).
        rows: per dataset position: ``path`` and optionally ``label``, ``camera``.
        metadata: the embedding settings stored in each part's schema metadata.
        flush_rows: rows per part file.
    """

    def __init__(
        self,
        folder: Path,
        rows: pd.DataFrame,
        metadata: dict[str, Any],
        flush_rows: int = 4096,
    ) -> None:
        super().__init__(write_interval="batch")
        self.folder = folder
        self.rows = rows
        self.metadata = {META_KEY: json.dumps(metadata).encode()}
        self.flush_rows = flush_rows
        self.skipped: list[tuple[str, str]] = []
        self.written = 0
        self._indices: list[np.ndarray] = []
        self._embeddings: list[np.ndarray] = []
        self._buffered = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in parts(folder)), default=-1)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for index, reason in prediction["bad"]:
            path = str(self.rows["path"].iloc[index])
            self.skipped.append((path, reason))
            warnings.warn(f"cannot read image {path}: {reason}; skipped", RuntimeWarning, 2)
        self._indices.append(prediction["indices"].cpu().numpy())
        self._embeddings.append(prediction["embeddings"].float().cpu().numpy())
        self._buffered += len(self._indices[-1])
        if self._buffered >= self.flush_rows:
            self.flush()

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next part file (atomically)."""
        if not self._buffered:
            return
        indices = np.concatenate(self._indices)
        rows = self.rows.iloc[indices].reset_index(drop=True)
        table = pa.table(
            {
                **{c: pa.array(rows[c].to_numpy()) for c in rows.columns},
                "embedding": embedding_array(np.concatenate(self._embeddings)),
            }
        ).replace_schema_metadata(self.metadata)
        with atomic_write(self.folder / f"part-{self._next:06d}.parquet", "wb") as handle:
            pq.write_table(table, handle)
        self._next += 1
        self.written += len(indices)
        self._indices, self._embeddings, self._buffered = [], [], 0


def parts(folder: Path) -> list[Path]:
    """The part files of a parts folder, in writing order."""
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def not_parquet(file: str | Path, key: str, err: Exception) -> ConfigError:
    """The error of a file that pyarrow cannot read as Parquet, naming the option and file."""
    return ConfigError(
        f"{key}: {file} is not a Parquet file (embedlab embed writes .parquet files): "
        + str(err).split(": ")[-1].split(". ")[0]
    )


def read_parquet(
    file: str | Path, key: str = "embeddings", columns: list[str] | None = None
) -> pa.Table:
    """``pq.read_table``; a file that is no Parquet is a ConfigError naming ``key``."""
    try:
        return pq.read_table(file, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise not_parquet(file, key, err) from err


def settings_of(file: Path, key: str = "embeddings") -> dict[str, Any]:
    """The embedding settings stored in a Parquet file's schema metadata (empty if none)."""
    try:
        metadata = pq.read_schema(file).metadata or {}
    except (pa.ArrowInvalid, OSError) as err:
        raise not_parquet(file, key, err) from err
    raw = metadata.get(META_KEY)
    return dict(json.loads(raw)) if raw else {}


def done_paths(files: Sequence[Path]) -> set[str]:
    """The paths already embedded in ``files``."""
    done: set[str] = set()
    for file in files:
        done.update(str(p) for p in read_parquet(file, "out", ["path"]).column("path").to_pylist())
    return done


def merge(files: Sequence[Path], out: Path, metadata: dict[str, Any]) -> int:
    """Stream ``files`` into ``out`` (atomically: a temporary file next to it); returns rows."""
    schema: pa.Schema | None = None
    total = 0
    with atomic_write(out, "wb") as handle:
        writer: pq.ParquetWriter | None = None
        for file in files:
            source = pq.ParquetFile(file)
            for batch in source.iter_batches():
                table = pa.Table.from_batches([batch])
                if schema is None:
                    schema = table.schema.with_metadata({META_KEY: json.dumps(metadata).encode()})
                    writer = pq.ParquetWriter(handle, schema)
                assert writer is not None
                writer.write_table(table.cast(schema))
                total += table.num_rows
        if writer is not None:
            writer.close()
    return total


@dataclass
class EmbedResult:
    """What :func:`embed_to_parquet` did."""

    out: Path
    rows: int
    embedded: int
    skipped: list[tuple[str, str]]


def embed_to_parquet(
    embedder: Embedder,
    out: str | Path,
    paths: Sequence[str] | None = None,
    split: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    flush_rows: int = 4096,
    progress: bool = True,
    skipped_file: str | Path | None = None,
    command: str = "embedlab embed",
    shard: Shard | None = None,
) -> EmbedResult:
    """Embed image files (``paths``) or a split of the run's dataset into ``out`` (Parquet).

    Rows already in ``out`` or its parts folder are skipped (a rerun resumes); unreadable
    images are listed in ``skipped_file`` (default ``<out stem>.skipped.tsv``) and said in a
    line on stderr that begins with ``command``. ``shard=(rank, world)``: ``out`` is a folder
    and this process embeds its block of the images into :func:`shard_file` ``(out, rank)``.
    """
    if (paths is None) == (split is None):
        raise ConfigError("give images or data_split (one of them)")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    target = Path(out) if shard is None else shard_file(out, check_shard(*shard)[0])
    folder = target.with_name(target.name + ".parts")
    metadata: dict[str, Any] = {
        "checkpoint": str(embedder.files.checkpoint) if embedder.files else None,
        "config": str(embedder.files.config) if embedder.files else None,
        "dim": embedder.embedding_dim,
        "model": embedder.fingerprint,
    }
    if shard is not None:
        metadata["shard"] = list(shard)
    if paths is not None:
        if embedder.transform is None:
            embedder.preprocess(Path())  # the ConfigError saying why
        rows = pd.DataFrame({"path": [str(p) for p in paths]})
        full = list(rows["path"])
    else:
        datamodule = embedder.datamodule
        if datamodule is None:
            raise ConfigError("data_split: this embedder was not loaded from a run")
        rows = split_rows(datamodule, str(split))
        roots = [source_root(s) for s in datamodule.sources]
        full = [str(roots[i] / p) for p, i in zip(rows["path"], rows["source"], strict=True)]
    if shard is not None:  # this rank's contiguous block
        rank, world = shard
        lo, hi = rank * len(rows) // world, (rank + 1) * len(rows) // world
        rows, full = rows.iloc[lo:hi].reset_index(drop=True), full[lo:hi]
    earlier = [*([target] if target.is_file() else []), *parts(folder)]
    for file in earlier:
        earlier_settings = settings_of(file, "out")
        written_by = earlier_settings.get("checkpoint")
        if earlier_settings.get("model", metadata["model"]) != metadata["model"] or (
            written_by != metadata["checkpoint"]
        ):
            raise ConfigError(
                f"out: {file} holds embeddings of another model ({written_by}, model "
                f"{earlier_settings.get('model')}); "
                "choose another --out"
            )
        if earlier_settings.get("shard", metadata.get("shard")) != metadata.get("shard"):
            rank, world = earlier_settings["shard"]
            raise ConfigError(
                f"out: {file} is shard {rank} of {world} processes; resume with {world} "
                "processes or choose another --out"
            )
    done = done_paths(earlier)
    todo = np.flatnonzero(~rows["path"].astype(str).isin(done).to_numpy())
    if paths is not None:
        dataset: Dataset[Item] = ImageFiles([full[i] for i in todo], embedder.transform)
    else:
        datamodule = embedder.datamodule
        assert datamodule is not None
        if all(getattr(s, "on_disk", True) for s in datamodule.sources):
            dataset = ImageFiles([full[i] for i in todo], datamodule.transforms.eval)
        else:  # in-memory data (digits): the dataset's own images
            dataset = DatasetImages(datamodule.torch_dataset(rows.iloc[todo], train=False))
        rows = rows.drop(columns="source")
    writer = ParquetPartsWriter(
        folder, rows.iloc[todo].reset_index(drop=True), metadata, flush_rows
    )
    if len(todo):
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate
        )
        device = embedder.device
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=[writer],
            # one device per process, even inside torchrun or a SLURM job of several tasks
            plugins=[LightningEnvironment()],
        )
        trainer.predict(EmbedStep(embedder), dataloaders=loader, return_predictions=False)
    files = [*([target] if target.is_file() else []), *parts(folder)]
    if parts(folder):
        total = merge(files, target, metadata)
    elif files:  # nothing new: the output is complete as it is
        total = pq.ParquetFile(target).metadata.num_rows
    else:  # nothing readable: still an (empty) file with the columns
        total = 0
        columns = {c: pa.array(rows[c].to_numpy()[:0]) for c in rows.columns}
        empty = pa.table({**columns, "embedding": pa.array([], pa.list_(pa.float32()))})
        with atomic_write(target, "wb") as handle:
            pq.write_table(empty.replace_schema_metadata(writer.metadata), handle)
    shutil.rmtree(folder, ignore_errors=True)
    skipped_file = Path(skipped_file or target.with_name(f"{target.stem}.skipped.tsv"))
    if writer.skipped:
        frame = pd.DataFrame(writer.skipped, columns=["path", "reason"])
        with atomic_write(skipped_file, "w", newline="") as handle:
            frame.to_csv(handle, sep="\t", index=False)
        print(
            f"{command}: {len(writer.skipped)} unreadable image(s) skipped (first "
            f"{writer.skipped[0][0]}: {writer.skipped[0][1]}), listed in {skipped_file}",
            file=sys.stderr,
        )
    elif skipped_file.is_file():
        os.remove(skipped_file)
    return EmbedResult(target, total, writer.written, writer.skipped)


def read_embeddings(file: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """An embeddings file: its other columns (``path``, …) and the ``(n, d)`` float32 array."""
    source = Path(file)
    if not source.is_file():
        raise ConfigError(f"embeddings: no such file: {source}")
    table = read_parquet(source)
    for column in ("path", "embedding"):
        if column not in table.column_names:
            raise ConfigError(f"embeddings: {source} has no {column!r} column")
    column = table.column("embedding").combine_chunks()
    n = len(column)
    if n == 0:
        return table.drop(["embedding"]).to_pandas(), np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ConfigError(
            f"embeddings: {source} row {row} has {lengths[row]} values, row 0 {lengths[0]}"
        )
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    array = np.asarray(values, dtype=np.float32).reshape(n, int(lengths[0]))
    return table.drop(["embedding"]).to_pandas(), array

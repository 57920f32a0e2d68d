"""RetrievalDataModule: files → DataFrame → Dataset → P×K batches (train) / val and test sets.

The validation split is held out of the training split (:mod:`embedlab.data.splits`):
``val_dataloader`` serves it and ``test_dataloader`` serves the dataset's test split, so model
selection never sees the test images.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from jsonargparse import lazy_instance
from torch.utils.data import DataLoader, DistributedSampler

import embedlab.ddp  # noqa: F401  (registers ddp_spawn workers that tear down together)
from embedlab.compat import disable_distributed_sampler
from embedlab.constraints import NonNegativeInt, PositiveInt
from embedlab.data.digits import Digits
from embedlab.data.eval_sets import EvalDataset, JoinedDataset, ResumableLoader, protocol_of
from embedlab.data.formats import SPLITS
from embedlab.data.image_dataset import unreadable_reasons
from embedlab.data.sampler import PKBatchSampler
from embedlab.data.source import (
    DataSource,
    FrameSource,
    source_images,
    source_name,
    source_root,
)
from embedlab.data.splits import (
    RUN_SPLITS,
    TEST_SPLITS,
    VAL_SPLITS,
    ValSplit,
    split_validation,
)
from embedlab.data.transforms import ReIDTransforms, Transforms
from embedlab.errors import ConfigError


def default_transforms(source: Any) -> Transforms:
    """``source.default_transforms()``, or ``ReIDTransforms()`` for a dataset without one."""
    make = getattr(source, "default_transforms", None)
    return make() if callable(make) else ReIDTransforms()


Dataset_ = DataSource | FrameSource


class RetrievalDataModule(pl.LightningDataModule):
    """P×K training batches and query/gallery evaluation sets for any dataset.

    Args:
        dataset: the dataset, by ``class_path`` (``embedlab.data.Digits`` (default, bundled),
            ``Market1501``, ``DukeMTMC``, ``MSMT17``, ``CUHK03NP``, ``CUB200``, ``Cars196``,
            ``SOP``, ``InShop``, ``VehicleID``, ``ImageFolder``, ``Table`` or any object with
            ``frame()``, see :mod:`embedlab.data.source`), or a list of them: a union trained
            as one set (identities and cameras offset so they never collide) and evaluated on
            each member's own val / test split, logged as ``val/<name>/<metric>`` plus the
            mean over members as ``val/<metric>``. Inside a union a MARS member is evaluated
            per tracklet even when it trains on frames (``Mars(clips=False)``), and a
            CUHK-SYSU member with ``test: true`` has its test split scored by person search
            (each query against its own gallery, ``TestG<gallery_size>``); its val split,
            held-out training identities, is ranked as ReID query/gallery.
        val: the validation split held out of the training split
            (:class:`~embedlab.data.splits.ValSplit`: ``size``, ``seed``, ``folds``, ``fold``),
            or ``none``: train on the whole training split, validate nothing (then the CLI
            monitors nothing and tests the last checkpoint).
        p, k: identities per batch and images per identity (per rank under DDP).
        batches_per_epoch: fixed epoch length; default ``len(train) // (world_size·P·K)``.
        transforms: the train and eval transforms of image datasets, by ``class_path``:
            ``embedlab.data.ReIDTransforms`` (``height``, ``width``, …), ``DMLTransforms``,
            ``DigitsTransforms``, ``PlainTransforms`` or ``Transforms(train=..., eval=...)``;
            default: the first dataset's ``default_transforms()`` (``ReIDTransforms`` for
            image folders, ``DigitsTransforms`` for digits).
        bad_data: ``error`` stops on an unreadable image naming it; ``skip`` decodes every image
            once at setup, leaves the unreadable ones out with a warning, logs their count as
            ``data/skipped_files`` and lists them in ``skipped_files.tsv`` in the run folder.
        balance: how a union's batches draw identities: ``identities`` (uniformly over all of
            them, so in proportion to each member's identities) or ``datasets`` (from each
            member in turn: about P / members of each in every batch).
    """

    def __init__(
        self,
        dataset: Dataset_ | list[Dataset_] = lazy_instance(Digits),  # noqa: B008
        val: ValSplit | Literal["none"] | None = ValSplit(),  # noqa: B008 (a frozen-by-use value)
        p: PositiveInt = 8,
        k: PositiveInt = 4,
        batches_per_epoch: PositiveInt | None = None,
        eval_batch_size: PositiveInt = 256,
        num_workers: NonNegativeInt = 0,
        seed: int = 0,
        transforms: Transforms | None = None,
        bad_data: Literal["error", "skip"] = "error",
        balance: Literal["identities", "datasets"] = "identities",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["dataset", "transforms"])
        self.sources: list[Any] = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset]
        if not self.sources:
            raise ConfigError("data.dataset: the list of datasets is empty")
        for i, source in enumerate(self.sources):
            if not callable(getattr(source, "frame", None)):
                where = "data.dataset" if len(self.sources) == 1 else f"data.dataset[{i}]"
                raise ConfigError(f"{where}: {type(source).__name__} has no frame() method")
        self.names = _unique_names([source_name(s) for s in self.sources])
        self.val: ValSplit | None = None if val in (None, "none") else val  # type: ignore[assignment]
        self.p, self.k = p, k
        self.batches_per_epoch = batches_per_epoch
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.transforms = (
            transforms if transforms is not None else default_transforms(self.sources[0])
        )
        self.bad_data = bad_data
        self.balance = balance
        self._frame: pd.DataFrame | None = None
        self._scanned = False
        self.skipped: list[tuple[str, str]] = []
        self.train_set: Any = None
        self.val_sets: list[EvalDataset] = []
        self.test_sets: list[EvalDataset] = []
        self.train_sampler: PKBatchSampler | None = None

    # -- the DataFrame ---------------------------------------------------------------------
    @property
    def dataset(self) -> Any:
        """The dataset, or the list of datasets of a union."""
        return self.sources[0] if len(self.sources) == 1 else self.sources

    @property
    def dataset_name(self) -> str:
        """The dataset's name (``a+b`` for a union)."""
        return "+".join(self.names)

    @property
    def data_root(self) -> Path:
        """The (first) dataset's root: where its relative image paths start."""
        return source_root(self.sources[0])

    @property
    def val_set(self) -> EvalDataset | None:
        """The (first) dataset's validation set, after :meth:`setup`."""
        return self.val_sets[0] if self.val_sets else None

    @property
    def test_set(self) -> EvalDataset | None:
        """The (first) dataset's test set, after :meth:`setup`."""
        return self.test_sets[0] if self.test_sets else None

    @property
    def eval_set(self) -> EvalDataset | None:
        """The test set (query/gallery or leave-one-out), after :meth:`setup`."""
        return self.test_set

    @property
    def eval_names(self) -> list[str]:
        """The names under which each val / test loader's metrics are logged (union only:
        the members with a test split, in order)."""
        if len(self.sources) == 1:
            return []
        tested = self.frame.loc[self.frame["split"].isin(TEST_SPLITS), "source"].unique()
        return [name for i, name in enumerate(self.names) if i in set(tested.tolist())]

    @property
    def frame(self) -> pd.DataFrame:
        """The run's table (``path, label, camera, split, source``, split in :data:`RUN_SPLITS`).

        ``source`` numbers the member of a union (0 for a single dataset). Training classes are
        numbered ``0..num_classes-1`` across the members, held-out validation classes after
        them; test labels stay as each dataset numbers them; cameras are offset per member.
        """
        if self._frame is None:
            parts = [self._member_frame(i) for i in range(len(self.sources))]
            frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            train = (frame["split"] == "train").to_numpy()
            held = frame["split"].isin(VAL_SPLITS).to_numpy()
            key = frame["source"].to_numpy(np.int64) * (1 << 40) + frame["label"].to_numpy()
            train_classes = np.unique(key[train])
            other = np.setdiff1d(np.unique(key[held]), train_classes)
            codes = pd.Series(np.arange(len(train_classes) + len(other)), [*train_classes, *other])
            mask = train | held
            labels = frame["label"].to_numpy(np.int64).copy()
            labels[mask] = codes.loc[key[mask]].to_numpy()
            frame["label"] = labels
            self._frame = self._offset_cameras(frame)
        return self._frame

    def _member_frame(self, i: int) -> pd.DataFrame:
        source, name = self.sources[i], self.names[i]
        frame = source.frame()
        if not isinstance(frame, pd.DataFrame):
            raise ConfigError(f"{name}: frame() returned {type(frame).__name__}, not a DataFrame")
        missing = [c for c in ("path", "label", "camera", "split") if c not in frame.columns]
        if missing:
            raise ConfigError(f"{name}: frame() lacks the column(s) {missing}")
        unknown = sorted(set(frame["split"]) - {*SPLITS, "val"})
        if unknown:
            raise ConfigError(f"{name}: frame() has unknown split(s) {unknown}; use {SPLITS}")
        # a union's train-only member (e.g. CUHK-SYSU crops) trains on all of it, unevaluated
        train_only = len(self.sources) > 1 and not frame["split"].isin(TEST_SPLITS).any()
        frame = split_validation(
            frame.reset_index(drop=True),
            None if train_only else self.val,
            getattr(source, "val_style", None),
            bool(getattr(source, "image_disjoint", False)),
        )
        frame["label"] = frame["label"].astype(np.int64)
        frame["camera"] = frame["camera"].astype(np.int64)
        frame["source"] = i
        return frame

    def _offset_cameras(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(self.sources) == 1:
            return frame
        cameras = frame["camera"].to_numpy(np.int64).copy()
        offset = 0
        for i in range(len(self.sources)):
            own = (frame["source"] == i).to_numpy() & (cameras >= 0)
            if own.any():
                cameras[own] += offset
                offset = int(cameras[own].max()) + 1
        return frame.assign(camera=cameras)

    def splits_table(self) -> pd.DataFrame:
        """One row per image (``path, label, camera, split``, plus ``dataset`` for a union)."""
        frame = self.frame
        order = pd.Categorical(frame["split"], categories=list(RUN_SPLITS), ordered=True)
        columns = ["path", "label", "camera", "split"]
        if len(self.sources) > 1:
            frame = frame.assign(dataset=[self.names[i] for i in frame["source"]])
            columns.append("dataset")
        return (
            frame.assign(_order=order)
            .sort_values("_order", kind="stable")
            .drop(columns="_order")
            .reset_index(drop=True)[columns]
        )

    def write_splits(self, folder: str | Path) -> Path:
        """Write ``splits.csv`` (see :meth:`splits_table`) into ``folder``."""
        target = Path(folder) / "splits.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.splits_table().to_csv(target, index=False)
        return target

    @property
    def num_classes(self) -> int:
        """Number of training identities (size of an identity classifier)."""
        return int(self.frame.loc[self.frame["split"] == "train", "label"].nunique())

    # -- datasets --------------------------------------------------------------------------
    def torch_dataset(self, rows: pd.DataFrame, train: bool) -> Any:
        """The torch dataset of ``rows`` (one or several members' rows), in row order."""
        parts = []
        for i, group in rows.groupby("source", sort=False):
            rows_i = group.drop(columns="source").reset_index(drop=True)
            source = self.sources[int(i)]
            parts.append(source_images(source, rows_i, train, self.transforms, self.bad_data))
        return parts[0] if len(parts) == 1 else JoinedDataset(parts)

    def _drop_unreadable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``bad_data=skip``: decode every image once, drop and record the unreadable ones.

        Scanning up front gives the complete list whatever the number of workers, and keeps
        a bad query or gallery image from being silently replaced by another one. In-memory
        datasets (``on_disk = False``) are not scanned.
        """
        roots = [source_root(s) for s in self.sources]
        scanned = [bool(getattr(s, "on_disk", True)) for s in self.sources]
        files = [
            roots[i] / path if scanned[i] else None
            for path, i in zip(frame["path"], frame["source"], strict=True)
        ]
        reasons = unreadable_reasons(files, workers=self.num_workers or 4)
        bad = np.array([r is not None for r in reasons], dtype=bool)
        self.skipped = [
            (p, r) for p, r in zip(frame["path"], reasons, strict=True) if r is not None
        ]
        if self.skipped:
            warnings.warn(
                f"bad_data=skip: {len(self.skipped)} unreadable image(s) left out, first "
                f"{self.skipped[0][0]} ({self.skipped[0][1]})",
                RuntimeWarning,
                stacklevel=2,
            )
        return frame[~bad].reset_index(drop=True)

    def write_skipped(self, folder: str | Path) -> Path | None:
        """Write ``skipped_files.tsv`` (path, reason) into ``folder`` when files were skipped."""
        if not self.skipped:
            return None
        target = Path(folder) / "skipped_files.tsv"
        target.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.skipped, columns=["path", "reason"]).to_csv(target, sep="\t", index=False)
        return target

    def setup(self, stage: str | None = None) -> None:
        frame = self.frame
        if self.bad_data == "skip" and not self._scanned:
            frame = self._frame = self._drop_unreadable(frame)
            self._scanned = True
        train_rows = frame[frame["split"] == "train"]
        if len(train_rows) == 0 and stage in (None, "fit"):
            raise ConfigError(f"dataset {self.dataset_name!r} has no train split")
        if self.train_set is None and len(train_rows):
            self.train_set = self.torch_dataset(train_rows, train=True)
        if not self.val_sets and not self.test_sets:
            tested = set(frame.loc[frame["split"].isin(TEST_SPLITS), "source"].tolist())
            for i, name in enumerate(self.names):
                rows = frame[frame["source"] == i]
                if len(self.sources) > 1 and i not in tested:
                    continue  # a train-only member of a union
                val = self._eval_set(rows, "val_query", "val_gallery", "val")
                test = self._eval_set(rows, "query", "gallery", "test")
                if test is not None and len(self.sources) > 1:
                    self._person_search(i, rows, test)
                if test is None:
                    splits = sorted(set(rows["split"]))
                    raise ConfigError(
                        f"dataset {name!r} has no query/gallery or test split (found {splits})"
                    )
                # MARS's official protocol ranks the queries too (embedlab.evaluation.EvalRoles)
                official = bool(getattr(self.sources[i], "queries_in_official_gallery", False))
                for found in (val, test):
                    if found is not None:
                        found.queries_in_official_gallery = official
                        found.protocol = found.protocol or protocol_of(found)
                if val is not None:
                    self.val_sets.append(val)
                self.test_sets.append(test)
            if not self.test_sets:
                raise ConfigError("data.dataset: no member of the union has a test split")
            if 0 < len(self.val_sets) < len(self.test_sets):
                raise ConfigError("data.dataset: every member of a union needs a val split")
        if self.trainer is not None:
            # The P×K sampler shards by identity itself; Lightning must not replace it.
            disable_distributed_sampler(self.trainer)
            trainer = self.trainer
            # trainer.log_dir broadcasts rank 0's folder: every rank must ask
            log_dir = trainer.log_dir if trainer.logger is not None else None
            if trainer.is_global_zero and log_dir:
                self.write_splits(log_dir)

    def _eval_set(
        self, frame: pd.DataFrame, query: str, gallery: str, both: str
    ) -> EvalDataset | None:
        """Query + gallery rows, or leave-one-out rows (``both``) of one member; ``None`` when
        there are none."""
        split = frame["split"]
        if (split == query).any() or (split == gallery).any():
            return EvalDataset(
                self._eval_items(frame[split == query]), self._eval_items(frame[split == gallery])
            )
        if (split == both).any():
            return EvalDataset(self._eval_items(frame[split == both]))
        return None

    def _eval_items(self, rows: pd.DataFrame) -> Any:
        """The torch dataset evaluating ``rows`` (one member's): per tracklet for a video member
        of a union (``tracklet_images``, e.g. MARS trained on frames), else as it serves them."""
        source = self.sources[int(rows["source"].iloc[0])] if len(rows) else None
        tracklets = getattr(source, "tracklet_images", None)
        if len(self.sources) > 1 and callable(tracklets) and "tracklet" in rows.columns:
            own = rows.drop(columns="source").reset_index(drop=True)
            return tracklets(own, self.transforms, self.bad_data)
        return self.torch_dataset(rows, train=False)

    def _person_search(self, i: int, rows: pd.DataFrame, test: EvalDataset) -> None:
        """Score member ``i``'s test split by its person-search protocol when it has one
        (``search_protocol()``, e.g. CUHK-SYSU with ``test: true``)."""
        search = getattr(self.sources[i], "search_protocol", None)
        protocol = search() if callable(search) else None
        if protocol is None:
            return
        name = self.names[i]
        for split, table in (("query", protocol.queries), ("gallery", protocol.gallery)):
            served = rows.loc[rows["split"] == split, "path"].astype(str).tolist()
            if table is not None and served != table["path"].astype(str).tolist():
                raise ConfigError(
                    f"{name}: the {split} images served ({len(served)}) are not the person-search "
                    f"protocol's ({len(table)}) in its order (unreadable images skipped?)"
                )
        test.person_search = protocol
        size = getattr(self.sources[i], "gallery_size", None)
        test.protocol = "person search" + (f", TestG{size}" if size is not None else "")

    def member_protocols(self, stage: str, convention: str = "torchreid") -> dict[str, str]:
        """How each evaluated member's ``stage`` (``val`` / ``test``) split is scored, in words,
        by member name (the dataset's name when it is alone), after :meth:`setup`."""
        sets = self.val_sets if stage == "val" else self.test_sets
        names = self.eval_names or [self.dataset_name]
        out = {}
        for name, found in zip(names, sets, strict=False):
            words = found.protocol or protocol_of(found)
            if found.person_search is None:
                words += f", {convention} convention"
                if convention == "official" and found.queries_in_official_gallery:
                    words += " (queries in the gallery)"
            out[name] = words
        return out

    # -- loaders ---------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.world_size, self.trainer.global_rank
        return 1, 0

    def train_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        self.train_sampler = PKBatchSampler(
            self.train_set.labels,
            self.p,
            self.k,
            seed=self.seed,
            batches_per_epoch=self.batches_per_epoch,
            num_replicas=world_size,
            rank=rank,
            with_seeds=True,
            groups=self._train_sources() if self.balance == "datasets" else None,
        )
        return ResumableLoader(
            self.train_set, self.train_sampler, self.num_workers, self._batches_done
        )

    def _train_sources(self) -> np.ndarray:
        """The union member of each training item, in the training set's order."""
        frame = self.frame
        return frame.loc[frame["split"] == "train", "source"].to_numpy(np.int64)

    def _batches_done(self) -> int:
        if self.trainer is None:
            return 0
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return int(getattr(progress, "processed", progress.completed))

    def eval_dataloader(self, dataset: EvalDataset | None = None) -> DataLoader:
        """A loader over ``dataset`` (default: the test set), sharded across DDP ranks."""
        dataset = dataset if dataset is not None else self.test_set
        assert dataset is not None, "call setup() first"
        world_size, rank = self._world()
        sampler: DistributedSampler[Any] | None = None
        if world_size > 1:
            # Pads with duplicates to equal length; the metric drops them by index.
            sampler = DistributedSampler(dataset, world_size, rank, shuffle=False)
        # clips of different lengths (MARS, eval_sampling: all): one per batch, never padded
        varying = any(getattr(p, "clip_lengths_vary", False) for p in dataset.parts)
        return DataLoader(
            dataset,
            batch_size=1 if varying else self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation split only (one loader per member of a union); none with ``val: none``."""
        loaders = [self.eval_dataloader(s) for s in self.val_sets]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test split (one loader per member of a union)."""
        loaders = [self.eval_dataloader(s) for s in self.test_sets]
        return loaders[0] if len(loaders) == 1 else loaders


def _unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats numbered (``market1501``, ``market1501_2``)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out

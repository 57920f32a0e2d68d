"""RetrievalDataModule: files → DataFrame → Dataset → P×K batches (train) / val and test sets.

The validation split is held out of the training split (:mod:`embedlab.data.splits`):
``val_dataloader`` serves it and ``test_dataloader`` serves the dataset's test split, so model
selection never sees the test images.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from embedlab.data.digits import DigitsDataset, Protocol, digits_frame
from embedlab.data.formats import read_dataset
from embedlab.data.image_dataset import BadImageError, ImageDataset, load_image
from embedlab.data.sampler import PKBatchSampler, SeededDataset
from embedlab.data.splits import RUN_SPLITS, ValSplit, split_validation
from embedlab.data.transforms import ReIDTransforms, Transforms
from embedlab.errors import ConfigError

Item = tuple[Tensor, int, int, int]


class EvalDataset(Dataset[Item]):
    """Query items followed by gallery items, with their roles.

    Without a gallery (leave-one-out datasets such as CUB, Cars196, SOP), every item is
    both a query and a gallery item.
    """

    def __init__(self, query: Any, gallery: Any | None = None) -> None:
        self.parts = [query] if gallery is None else [query, gallery]
        self.offset = len(query)
        n = len(query) + (len(gallery) if gallery is not None else 0)
        self.labels = np.concatenate([np.asarray(p.labels) for p in self.parts])
        self.paths: list[str] = [str(x) for p in self.parts for x in p.paths]
        self.cameras = np.concatenate([np.asarray(p.cameras) for p in self.parts])
        self.is_query = np.arange(n) < self.offset if gallery is not None else np.ones(n, bool)
        self.is_gallery = ~self.is_query if gallery is not None else np.ones(n, bool)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        part = 0 if index < self.offset else 1
        image, label, camera, _ = self.parts[part][index - part * self.offset]
        return image, label, camera, index

    def raw_pixels(self) -> Tensor | None:
        if not all(hasattr(p, "raw_pixels") for p in self.parts):
            return None
        return torch.cat([p.raw_pixels() for p in self.parts])


class ResumableLoader(DataLoader):
    """A P×K training loader whose position is saved in Lightning checkpoints.

    Lightning stores ``state_dict()`` of a training loader in the checkpoint and calls
    ``load_state_dict()`` on resume; the sampler then skips the batches already trained on,
    so a run resumed mid-epoch sees exactly the batches the uninterrupted run would have.
    ``batches_done`` reports how many batches of the current epoch were trained (not merely
    prefetched).
    """

    def __init__(
        self, dataset: Any, sampler: PKBatchSampler, num_workers: int, batches_done: Any
    ) -> None:
        super().__init__(
            SeededDataset(dataset),
            batch_sampler=sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(sampler.seed),
        )
        self.pk_sampler = sampler
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, Any]:
        return {**self.pk_sampler.state_dict(), "batches_done": int(self.batches_done())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pk_sampler.load_state_dict(state)
        done = int(state.get("batches_done", 0))
        self.pk_sampler.start_batch = done if done < len(self.pk_sampler) else 0


class RetrievalDataModule(pl.LightningDataModule):
    """P×K training batches and a query/gallery evaluation set for any supported dataset.

    Args:
        dataset: ``digits`` (bundled, no download) or an on-disk format name
            (``market1501``, ``dukemtmc``, ``msmt17``, ``cuhk03np``, ``cub200``, ``cars196``,
            ``sop``, ``inshop``, ``vehicleid``, ``table``).
        root: dataset folder; defaults to ``$EMBEDLAB_DATA_ROOT/<dataset>``.
        protocol: digits only, ``image_disjoint`` or ``class_disjoint``.
        val: the validation split held out of the training split
            (:class:`~embedlab.data.splits.ValSplit`: ``size``, ``seed``, ``folds``, ``fold``),
            or ``none``: train on the whole training split, validate nothing (then the CLI
            monitors nothing and tests the last checkpoint).
        p, k: identities per batch and images per identity (per rank under DDP).
        batches_per_epoch: fixed epoch length; default ``len(train) // (world_size·P·K)``.
        transforms: the train and eval transforms of image datasets, by ``class_path``:
            ``embedlab.data.ReIDTransforms`` (default; ``height``, ``width``, …),
            ``DMLTransforms``, ``PlainTransforms`` or ``Transforms(train=..., eval=...)``.
        bad_data: ``error`` stops on an unreadable image naming it; ``skip`` decodes every image
            once at setup, leaves the unreadable ones out with a warning, logs their count as
            ``data/skipped_files`` and lists them in ``skipped_files.tsv`` in the run folder.
        options: reader options, e.g. ``{variant: labeled}`` (CUHK03-NP),
            ``{include_val: true}`` (MSMT17) or ``{test_size: 1600, seed: 3}`` (VehicleID).
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str | None = None,
        protocol: Protocol = "image_disjoint",
        val: ValSplit | Literal["none"] | None = ValSplit(),  # noqa: B008 (a frozen-by-use value)
        p: int = 8,
        k: int = 4,
        batches_per_epoch: int | None = None,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        transforms: Transforms | None = None,
        bad_data: Literal["error", "skip"] = "error",
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["transforms"])
        self.dataset_name = dataset
        self.root = root
        self.protocol: Protocol = protocol
        self.val: ValSplit | None = None if val in (None, "none") else val  # type: ignore[assignment]
        self.p, self.k = p, k
        self.batches_per_epoch = batches_per_epoch
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.transforms = transforms if transforms is not None else ReIDTransforms()
        self.bad_data = bad_data
        self.options = dict(options or {})
        self._frame: pd.DataFrame | None = None
        self._scanned = False
        self.skipped: list[tuple[str, str]] = []
        self.train_set: Any = None
        self.val_set: EvalDataset | None = None
        self.test_set: EvalDataset | None = None
        self.train_sampler: PKBatchSampler | None = None

    # -- the DataFrame ---------------------------------------------------------------------
    @property
    def data_root(self) -> Path:
        if self.root:
            return Path(self.root)
        return Path(os.environ.get("EMBEDLAB_DATA_ROOT", "data")) / self.dataset_name

    @property
    def eval_set(self) -> EvalDataset | None:
        """The test set (query/gallery or leave-one-out), after :meth:`setup`."""
        return self.test_set

    @property
    def frame(self) -> pd.DataFrame:
        """The run's table (``path, label, camera, split``, split in :data:`RUN_SPLITS`).

        Training classes are numbered ``0..num_classes-1``, held-out validation classes after
        them; test labels stay as the dataset numbers them.
        """
        if self._frame is None:
            if self.dataset_name == "digits":
                frame = digits_frame(self.protocol, self.seed)
            else:
                frame = read_dataset(self.dataset_name, self.data_root, **self.options)
            image_disjoint = self.dataset_name == "digits" and self.protocol == "image_disjoint"
            frame = split_validation(frame, self.val, self.dataset_name, image_disjoint)
            frame["label"] = frame["label"].astype(np.int64)
            train = (frame["split"] == "train").to_numpy()
            held = frame["split"].isin(["val", "val_query", "val_gallery"]).to_numpy()
            train_classes = np.unique(frame.loc[train, "label"])
            other = np.setdiff1d(np.unique(frame.loc[held, "label"]), train_classes)
            codes = {int(c): i for i, c in enumerate([*train_classes, *other])}
            mask = train | held
            frame.loc[mask, "label"] = frame.loc[mask, "label"].map(codes).astype(np.int64)
            self._frame = frame
        return self._frame

    def splits_table(self) -> pd.DataFrame:
        """One row per image (``path, label, camera, split``), ordered by split, as served."""
        frame = self.frame
        order = pd.Categorical(frame["split"], categories=list(RUN_SPLITS), ordered=True)
        return (
            frame.assign(_order=order)
            .sort_values("_order", kind="stable")
            .drop(columns="_order")
            .reset_index(drop=True)[["path", "label", "camera", "split"]]
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
    def _dataset(self, rows: pd.DataFrame, train: bool) -> Any:
        if self.dataset_name == "digits":
            return DigitsDataset(rows.reset_index(drop=True), augment=train)
        transform = self.transforms.train if train else self.transforms.eval
        return ImageDataset(rows.reset_index(drop=True), self.data_root, transform, self.bad_data)

    def _drop_unreadable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``bad_data=skip``: decode every image once, drop and record the unreadable ones.

        Scanning up front gives the complete list whatever the number of workers, and keeps
        a bad query or gallery image from being silently replaced by another one.
        """

        def problem(path: str) -> str | None:
            try:
                load_image(self.data_root / path)
            except BadImageError as err:
                return err.reason
            return None

        with ThreadPoolExecutor(max_workers=max(1, self.num_workers or 4)) as pool:
            reasons = list(pool.map(problem, frame["path"]))
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
        if self.bad_data == "skip" and self.dataset_name != "digits" and not self._scanned:
            frame = self._frame = self._drop_unreadable(frame)
            self._scanned = True
        splits = set(frame["split"])
        train_rows = frame[frame["split"] == "train"]
        if len(train_rows) == 0 and stage in (None, "fit"):
            raise ConfigError(
                f"dataset {self.dataset_name!r} at {self.data_root} has no train split"
            )
        if self.train_set is None and len(train_rows):
            self.train_set = self._dataset(train_rows, train=True)
        if self.val_set is None:
            self.val_set = self._eval_set(frame, "val_query", "val_gallery", "val")
        if self.test_set is None:
            self.test_set = self._eval_set(frame, "query", "gallery", "test")
            if self.test_set is None:
                raise ConfigError(
                    f"dataset {self.dataset_name!r} has no query/gallery or test split "
                    f"(found {sorted(splits)})"
                )
        if self.trainer is not None:
            # The P×K sampler shards by identity itself; Lightning must not replace it.
            self.trainer._accelerator_connector.use_distributed_sampler = False
            trainer = self.trainer
            # trainer.log_dir broadcasts rank 0's folder: every rank must ask
            log_dir = trainer.log_dir if trainer.logger is not None else None
            if trainer.is_global_zero and log_dir:
                self.write_splits(log_dir)

    def _eval_set(
        self, frame: pd.DataFrame, query: str, gallery: str, both: str
    ) -> EvalDataset | None:
        """Query + gallery rows, or leave-one-out rows (``both``); ``None`` when there are none."""
        split = frame["split"]
        if (split == query).any() or (split == gallery).any():
            return EvalDataset(
                self._dataset(frame[split == query], train=False),
                self._dataset(frame[split == gallery], train=False),
            )
        if (split == both).any():
            return EvalDataset(self._dataset(frame[split == both], train=False))
        return None

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
        )
        return ResumableLoader(
            self.train_set, self.train_sampler, self.num_workers, self._batches_done
        )

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
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation split only; no loader (no validation) with ``val: none``."""
        if self.val_set is None:
            return []
        return self.eval_dataloader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.test_set)

"""The validation split: held out from the training split, disjoint from the test split.

Model selection (the best checkpoint, a sweep's objective, ``compare``'s best epoch) reads
``val/*`` only; the test split is evaluated once, after training (Musgrave, Belongie & Lim,
"A Metric Learning Reality Check", ECCV 2020). :func:`split_validation` turns a dataset table
(``split`` ∈ train / val / query / gallery / test) into the table a run uses, whose ``split`` is
one of :data:`RUN_SPLITS`:

* class-disjoint benchmarks (CUB-200-2011, Cars196, SOP, In-Shop, digits ``class_disjoint``)
  and ReID benchmarks hold out a seeded set of training classes / identities;
* image-disjoint data (digits ``image_disjoint``) holds out a seeded subset of the training
  images of every class;
* a dataset that ships its own validation list (MSMT17's ``list_val.txt``, a table or image
  folder with ``val`` rows) uses it as it is.

The held-out images become an evaluation set shaped like the test one:

* leave-one-out test (``test``): every val image is a query and a gallery item (``val``);
* ReID (cameras): per identity and camera with two or more images, one seeded image is a
  ``val_query`` and the others ``val_gallery`` (Market-1501's construction: a query per camera,
  matched across cameras); an identity whose cameras all hold a single image gives one query;
* VehicleID: one seeded ``val_gallery`` image per vehicle, the rest ``val_query`` (the
  paper's test protocol);
* other query/gallery data (In-Shop, digits): per class a third of the images (at least one)
  are ``val_query``, the rest ``val_gallery``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedlab.constraints import NonNegativeInt, OpenUnitInterval, PositiveInt
from embedlab.errors import ConfigError

RUN_SPLITS: tuple[str, ...] = (
    "train",
    "val_query",
    "val_gallery",
    "val",
    "query",
    "gallery",
    "test",
)
VAL_SPLITS: tuple[str, ...] = ("val_query", "val_gallery", "val")
TEST_SPLITS: tuple[str, ...] = ("query", "gallery", "test")


@dataclass
class ValSplit:
    """How the validation split is held out of the training split.

    Args:
        size: a fraction (``0 < size < 1``) or a count (``size >= 1``) of the training
            classes / identities held out (of the training images, per class, for
            image-disjoint data). A fraction holds out at least one class; a single held-out
            class makes every val metric 1.0 (a warning says so).
        seed: seed of the draw (and of the val query / gallery assignment).
        folds: Musgrave's k-fold protocol: the training classes (images for image-disjoint
            data) are split into ``folds`` seeded parts and part ``fold`` is the validation
            split; ``size`` is then unused. A sweep can grid over ``data.val.fold``.
        fold: the fold held out, ``0 <= fold < folds``.
    """

    size: OpenUnitInterval | PositiveInt = 0.2
    seed: int = 0
    folds: PositiveInt | None = None
    fold: NonNegativeInt = 0


def _count(size: float, n: int, what: str) -> int:
    if size <= 0:
        raise ConfigError(f"data.val.size={size} must be a fraction in (0, 1) or a count >= 1")
    count = max(1, round(size * n)) if size < 1 else int(size)
    if count >= n:
        raise ConfigError(
            f"data.val.size={size} holds out {count} of the {n} training {what}, "
            "leaving none to train on (set a smaller data.val.size, or data.val=none)"
        )
    return count


def _fold_members(items: np.ndarray, val: ValSplit, rng: np.random.Generator) -> np.ndarray:
    """The items of fold ``val.fold`` after a seeded shuffle into ``val.folds`` parts."""
    assert val.folds is not None
    return np.array_split(rng.permutation(items), val.folds)[val.fold]


def _check_folds(val: ValSplit, n: int, what: str) -> None:
    if val.folds is None:
        return
    if val.folds < 2 or val.folds > n:
        raise ConfigError(
            f"data.val.folds={val.folds} must be between 2 and the {n} training {what}"
        )
    if not 0 <= val.fold < val.folds:
        raise ConfigError(f"data.val.fold={val.fold} must be in [0, data.val.folds={val.folds})")


def held_out_classes(labels: np.ndarray, val: ValSplit) -> np.ndarray:
    """The training classes held out for validation (sorted)."""
    classes = np.unique(labels)
    rng = np.random.default_rng([val.seed, 1])
    _check_folds(val, len(classes), "classes")
    if val.folds is not None:
        return np.sort(_fold_members(classes, val, rng))
    held = np.sort(rng.permutation(classes)[: _count(val.size, len(classes), "classes")])
    if len(held) == 1:
        warnings.warn(
            f"data.val holds out a single training class ({held[0]}): every val metric is 1.0 "
            "and selects nothing; hold out more (data.val.size) or set data.val=none",
            UserWarning,
            stacklevel=2,
        )
    return held


def held_out_images(labels: np.ndarray, val: ValSplit) -> np.ndarray:
    """Positions of the training images held out for validation, per class (image-disjoint)."""
    rng = np.random.default_rng([val.seed, 2])
    fraction = val.size if val.size < 1 else val.size / len(labels)
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        _check_folds(val, len(members), f"images of class {c}")
        if val.folds is not None:
            chosen.append(_fold_members(members, val, rng))
            continue
        if not 0 < fraction < 1:
            raise ConfigError(f"data.val.size={val.size} must leave training images in every class")
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen))


def val_roles(rows: pd.DataFrame, style: str, seed: int) -> np.ndarray:
    """``split`` values (``val_query`` / ``val_gallery`` / ``val``) for the held-out rows.

    ``style`` is ``leave_one_out``, ``reid``, ``vehicleid`` or ``query_gallery`` (see the
    module docstring). Rows with a ``tracklet`` column (video) get roles per tracklet: a
    tracklet's frames are all val queries or all val gallery items.
    """
    if "tracklet" in rows.columns:
        first = rows.reset_index(drop=True).drop_duplicates("tracklet")
        roles = val_roles(first.drop(columns="tracklet"), style, seed)
        by_tracklet = dict(zip(first["tracklet"], roles, strict=True))
        return np.array([by_tracklet[t] for t in rows["tracklet"]], dtype=object)
    if style == "leave_one_out":
        return np.full(len(rows), "val", dtype=object)
    rng = np.random.default_rng([seed, 3])
    roles = np.full(len(rows), "val_gallery", dtype=object)
    labels = rows["label"].to_numpy()
    cameras = rows["camera"].to_numpy()
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            continue
        if style == "reid":
            queries = []
            for cam in np.unique(cameras[members]):
                same = members[cameras[members] == cam]
                if len(same) >= 2:
                    queries.append(same[0])
            roles[queries or members[:1]] = "val_query"
        elif style == "vehicleid":
            roles[members[1:]] = "val_query"
        else:
            roles[members[: max(1, len(members) // 3)]] = "val_query"
    return roles


def eval_style(frame: pd.DataFrame, style: str | None = None) -> str:
    """How the val split mirrors the test split of ``frame`` (see :func:`val_roles`).

    ``style`` is the dataset's own choice (its ``val_style`` attribute, e.g. VehicleID's
    ``vehicleid``), used when the test split has a query / gallery.
    """
    splits = set(frame["split"])
    if "query" not in splits and "gallery" not in splits:
        return "leave_one_out"
    if style is not None:
        return style
    if (frame["camera"] >= 0).any():
        return "reid"
    return "query_gallery"


def split_validation(
    frame: pd.DataFrame,
    val: ValSplit | None,
    style: str | None = None,
    image_disjoint: bool = False,
) -> pd.DataFrame:
    """The run's table: ``frame`` with a validation split held out of its training split.

    ``val=None`` trains on everything (a dataset's own ``val`` rows join the training split).
    ``style`` is the dataset's ``val_style`` (see :func:`eval_style`); ``image_disjoint`` holds
    out images instead of classes. The labels are left as they are.
    """
    frame = frame.copy()
    split = frame["split"].to_numpy(dtype=object).copy()
    own_val = split == "val"
    if val is None:
        split[own_val] = "train"
        frame["split"] = split
        return frame
    style = eval_style(frame[~own_val], style)
    train = np.flatnonzero(split == "train")
    if own_val.any():
        held = np.flatnonzero(own_val)
    elif len(train) == 0:
        return frame
    elif image_disjoint:
        held = train[held_out_images(frame["label"].to_numpy()[train], val)]
    else:
        labels = frame["label"].to_numpy()[train]
        held = train[np.isin(labels, held_out_classes(labels, val))]
    split[held] = val_roles(frame.iloc[held], style, val.seed)
    frame["split"] = split
    return frame

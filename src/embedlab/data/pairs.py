"""Verification pairs as a table ``path1, path2, same, fold`` (``fold`` 0-based, paths relative
to the source's ``root``): LFW's image pairs and YouTube Faces' video pairs.

LFW (the release)::

    <root>/pairs.txt                       first line ``<folds>\\t<pairs per fold>``, then per
                                           fold that many matched lines ``name\\ti\\tj`` and as
                                           many mismatched lines ``name1\\ti\\tname2\\tj``
    <root>/lfw/<name>/<name>_<i:04d>.jpg   (or ``lfw-deepfunneled/`` or ``lfw_funneled/``)

YouTube Faces (the release; 10 splits × 500 pairs)::

    <root>/splits.txt          header ``split number, pair id, first name, second name,
                               is physically the same, is the same``, then one line per pair
                               ``1, 1, Aaron_Eckhart/0, Aaron_Eckhart/1, 1, 1`` (split 1-based)
    <root>/aligned_images_DB/<name>/<video>/aligned_detect_<video>.<frame>.jpg
    <root>/frame_images_DB/<name>/<video>/<video>.<frame>.jpg

A YouTube Faces pair is two videos (``path1``/``path2`` are video folders); their frames come
from :meth:`YouTubeFacesPairs.frames`, in frame order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pandas as pd

from embedlab.data.formats._common import IMAGE_SUFFIXES, DatasetFormatError, DatasetLayoutError
from embedlab.errors import ConfigError

__all__ = ["LFWPairs", "YouTubeFacesPairs", "open_pairs", "read_lfw_pairs", "read_ytf_splits"]

IMAGE_FOLDERS = ("lfw", "lfw-deepfunneled", "lfw_funneled")
LAYOUT = """\
<root>/
├── pairs.txt                   <folds>\\t<n>, then per fold n matched + n mismatched lines
└── lfw/<name>/<name>_0001.jpg  (or lfw-deepfunneled/, lfw_funneled/)
"""


def _image_folder(root: Path) -> str:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return name
    raise DatasetLayoutError("lfw", root / IMAGE_FOLDERS[0], LAYOUT)


def read_lfw_pairs(root: str | Path, pairs: str = "pairs.txt") -> pd.DataFrame:
    """Read LFW's ``pairs.txt`` under ``root`` (see the module docstring)."""
    root = Path(root).expanduser()
    file = root / pairs
    if not file.is_file():
        raise DatasetLayoutError("lfw", file, LAYOUT)
    images = _image_folder(root)
    lines = file.read_text().splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or not all(x.isdigit() for x in head):
        raise DatasetFormatError(file, "expected '<folds>\\t<pairs per fold>'", line=1)
    folds, per_fold = int(head[0]), int(head[1])
    expected = 1 + folds * 2 * per_fold
    if len([x for x in lines if x.strip()]) != expected:
        raise DatasetFormatError(
            file, f"{folds} folds × 2 × {per_fold} pairs need {expected - 1} pair lines"
        )

    def path(name: str, number: str, line: int) -> str:
        if not number.isdigit():
            raise DatasetFormatError(file, f"image number {number!r} is not an integer", line)
        return f"{images}/{name}/{name}_{int(number):04d}.jpg"

    rows = []
    for n, text in enumerate(lines[1:expected], start=2):
        fields = text.split()
        fold, position = divmod(n - 2, 2 * per_fold)
        same = position < per_fold
        if same and len(fields) == 3:
            rows.append((path(fields[0], fields[1], n), path(fields[0], fields[2], n), True, fold))
        elif not same and len(fields) == 4:
            first, second = path(fields[0], fields[1], n), path(fields[2], fields[3], n)
            rows.append((first, second, False, fold))
        else:
            kind = "matched 'name i j'" if same else "mismatched 'name1 i name2 j'"
            raise DatasetFormatError(file, f"expected a {kind} line, got {text!r}", n)
    return pd.DataFrame(rows, columns=["path1", "path2", "same", "fold"])


class LFWPairs:
    """LFW's verification pairs (10 folds × 600 in ``pairs.txt``), by ``class_path``.

    Args:
        root: the LFW folder (``pairs.txt`` and ``lfw/``).
        pairs: the pairs file under ``root`` (``pairs.txt``; ``pairsDevTest.txt`` for the
            development split).
    """

    def __init__(self, root: str | Path, pairs: str = "pairs.txt") -> None:
        self.root = Path(root).expanduser()
        self.pairs_file = pairs

    def pairs(self) -> pd.DataFrame:
        """``path1, path2, same, fold`` with paths relative to ``root``."""
        return read_lfw_pairs(self.root, self.pairs_file)


YTFImages = Literal["aligned_images_DB", "frame_images_DB"]
YTF_FOLDERS: tuple[YTFImages, ...] = ("aligned_images_DB", "frame_images_DB")
YTF_LAYOUT = """\
<root>/
├── splits.txt                  split, pair id, first name, second name, ..., is the same
└── aligned_images_DB/<name>/<video>/aligned_detect_<video>.<frame>.jpg
                                (or frame_images_DB/<name>/<video>/<video>.<frame>.jpg)
"""
LABEL_COLUMN = "is the same"
_FRAME_NUMBER = re.compile(r"(\d+)$")


def read_ytf_splits(
    root: str | Path, splits: str = "splits.txt", images: str = "aligned_images_DB"
) -> pd.DataFrame:
    """Read YouTube Faces' ``splits.txt`` under ``root`` (see the module docstring).

    The label is the column headed ``is the same`` (the last one when there is no header);
    ``splits_corrected.txt``, the authors' errata, has the same columns. Rows are ordered by
    split, so the folds are contiguous blocks as :func:`embedlab.metrics.verify` expects.
    """
    root = Path(root).expanduser()
    file = root / splits
    if not file.is_file():
        raise DatasetLayoutError("youtube_faces", file, YTF_LAYOUT)
    if not (root / images).is_dir():
        raise DatasetLayoutError("youtube_faces", root / images, YTF_LAYOUT)
    lines = file.read_text().splitlines()
    label = -1
    first = [x.strip().lower() for x in lines[0].split(",")] if lines else []
    start = 1 if first and not first[0].isdigit() else 0
    if start and LABEL_COLUMN in first:
        label = first.index(LABEL_COLUMN)
    rows = []
    for n, text in enumerate(lines[start:], start=start + 1):
        fields = [x.strip() for x in text.split(",")]
        while fields and not fields[-1]:
            fields.pop()  # a trailing comma
        if not fields:
            continue
        if len(fields) < 5 or not fields[0].isdigit() or fields[label] not in ("0", "1"):
            raise DatasetFormatError(
                file, f"expected 'split, pair id, first, second, ..., same (0/1)', got {text!r}", n
            )
        for video in (fields[2], fields[3]):
            if not (root / images / video).is_dir():
                raise DatasetFormatError(file, f"video folder {images}/{video} does not exist", n)
        rows.append(
            (f"{images}/{fields[2]}", f"{images}/{fields[3]}", fields[label] == "1", int(fields[0]))
        )
    if not rows:
        raise DatasetFormatError(file, "no pairs")
    table = pd.DataFrame(rows, columns=["path1", "path2", "same", "fold"])
    table["fold"] -= table["fold"].min()
    sizes = table["fold"].value_counts()
    if sizes.nunique() > 1 or len(sizes) != table["fold"].max() + 1:
        counts = ", ".join(f"{k + 1}: {v}" for k, v in sizes.sort_index().items())
        raise DatasetFormatError(
            file, f"the splits are not numbered 1..n with equal sizes ({counts})"
        )
    return table.sort_values("fold", kind="stable", ignore_index=True)


class YouTubeFacesPairs:
    """YouTube Faces' video pairs (10 splits × 500 in ``splits.txt``), by ``class_path``.

    FaceNet's protocol (Schroff et al. 2015, 95.12 % ± 0.39): the distance of two videos is the
    mean distance over all pairs of their first 100 frames.

    Args:
        root: the YouTube Faces folder (``splits.txt`` and the image folders).
        splits: the pairs file under ``root`` (``splits_corrected.txt``: the errata).
        images: ``aligned_images_DB`` (the aligned face crops) or ``frame_images_DB``.
        frames: the first that many frames of each video (0: all).
    """

    def __init__(
        self,
        root: str | Path,
        splits: str = "splits.txt",
        images: YTFImages = "aligned_images_DB",
        frames: int = 100,
    ) -> None:
        if frames < 0:
            raise ConfigError(f"frames must be >= 0 (0: all), got {frames}")
        self.root = Path(root).expanduser()
        self.splits_file = splits
        self.images = images
        self.frames_per_video = frames

    def pairs(self) -> pd.DataFrame:
        """``path1, path2, same, fold``: video folders relative to ``root``."""
        return read_ytf_splits(self.root, self.splits_file, self.images)

    def frames(self, video: str) -> list[str]:
        """The first ``frames`` image files of a video folder (relative to ``root``), in frame
        order (the number after the last ``.`` of the file stem)."""
        folder = self.root / video
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DatasetLayoutError("youtube_faces", folder / "<frames>.jpg", YTF_LAYOUT)

        def order(path: Path) -> tuple[int, str]:
            number = _FRAME_NUMBER.search(path.stem)
            return (int(number.group(1)) if number else -1, path.name)

        chosen = sorted(files, key=order)
        if self.frames_per_video:
            chosen = chosen[: self.frames_per_video]
        return [f"{video}/{p.name}" for p in chosen]


def open_pairs(root: str | Path, frames: int = 100) -> LFWPairs | YouTubeFacesPairs:
    """The pairs source of a folder: YouTube Faces where ``splits.txt`` is, else LFW."""
    root = Path(root).expanduser()
    if (root / "splits.txt").is_file():
        images = next((x for x in YTF_FOLDERS if (root / x).is_dir()), YTF_FOLDERS[0])
        return YouTubeFacesPairs(root, images=images, frames=frames)
    return LFWPairs(root)

"""Pieces shared by the on-disk format readers.

Every reader returns the same table: one row per image with the columns
``path`` (relative to the root it was given, POSIX separators), ``label``
(int, as the dataset numbers it; ``-1`` marks junk), ``camera`` (int, 0-based,
``-1`` where the dataset has no camera) and ``split`` (one of
:data:`SPLITS`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.errors import ConfigError

COLUMNS: tuple[str, ...] = ("path", "label", "camera", "split")
SPLITS: tuple[str, ...] = ("train", "val", "query", "gallery", "test")
"""``val``: a validation list shipped with the dataset (MSMT17's ``list_val.txt``)."""
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


class DatasetLayoutError(ConfigError, FileNotFoundError):
    """A folder or file the format needs is not where the layout says it is.

    The message names the missing path and shows the expected layout.
    """

    def __init__(self, dataset: str, missing: str | Path, layout: str, hint: str = "") -> None:
        self.dataset = dataset
        self.missing = Path(missing)
        self.layout = layout
        text = f"{dataset}: expected '{self.missing}' but it does not exist."
        if hint:
            text += f" {hint}"
        text += f"\nExpected layout:\n{layout.rstrip()}"
        super().__init__(text)

    def __str__(self) -> str:  # OSError formats its args oddly; keep our own text
        return str(self.args[0])


class DatasetFormatError(ConfigError):
    """A list file, annotation file or image name could not be parsed.

    The message names the file and, where there is one, the line.
    """

    def __init__(self, file: str | Path, message: str, line: int | None = None) -> None:
        self.file = Path(file)
        self.line = line
        where = f"{self.file}:{line}" if line is not None else f"{self.file}"
        super().__init__(f"{where}: {message}")


def check_root(dataset: str, root: str | Path, layout: str) -> Path:
    """Return ``root`` as a Path, raising a layout error if it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(dataset, path, layout, hint="The dataset root must be a folder.")
    return path


def find_base(root: Path, marker: str | Sequence[str], subdirs: Iterable[str] = ()) -> Path | None:
    """Find the folder holding ``marker`` (any of several names) at ``root`` or one level down.

    Downloads often unpack into a versioned folder (``Market-1501-v15.09.15``,
    ``CUB_200_2011``); ``subdirs`` lists those names so either the folder
    itself or its parent can be given as root.
    """
    markers = [marker] if isinstance(marker, str) else list(marker)
    for base in (root, *(root / sub for sub in subdirs)):
        if any((base / name).exists() for name in markers):
            return base
    return None


def rel(base: Path, root: Path, *parts: str) -> str:
    """POSIX path of ``base/parts`` relative to ``root``."""
    return (base.relative_to(root).joinpath(*parts)).as_posix().removeprefix("./")


def list_images(folder: Path) -> list[str]:
    """Names of the image files directly inside ``folder``, sorted."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                names.append(entry.name)
    return sorted(names)


def iter_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_text)`` for the non-blank lines of a text file."""
    with open(file, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if text:
                yield number, text


def parse_int(text: str, file: Path, line: int | None, what: str) -> int:
    """``int(text)`` with an error naming file, line and field on failure."""
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(file, f"{what} {text!r} is not an integer", line) from None


_REID_NAME = re.compile(r"^([-\d]+)_c(\d+)")


def parse_reid_name(name: str, file: Path) -> tuple[int, int]:
    """Identity and 1-based camera from a Market-style name such as ``0002_c1s1_000451_03.jpg``."""
    match = _REID_NAME.match(name)
    if match is None:
        raise DatasetFormatError(
            file, "file name does not start with '<pid>_c<camera>' (e.g. 0002_c1s1_000451_03.jpg)"
        )
    pid, cam = int(match.group(1)), int(match.group(2))
    if cam < 1:
        raise DatasetFormatError(file, f"camera number {cam} in the file name is not 1-based")
    return pid, cam


def make_frame(
    paths: Sequence[str],
    labels: Sequence[int],
    cameras: Sequence[int],
    splits: Sequence[str],
) -> pd.DataFrame:
    """Assemble the common table with the proper column order and dtypes."""
    return pd.DataFrame(
        {
            "path": pd.Series(list(paths), dtype=object).astype(str),
            "label": np.asarray(labels, dtype=np.int64),
            "camera": np.asarray(cameras, dtype=np.int64),
            "split": pd.Series(list(splits), dtype=object).astype(str),
        },
        columns=list(COLUMNS),
    )


class FrameBuilder:
    """Collects rows one at a time and turns them into the common table."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.labels: list[int] = []
        self.cameras: list[int] = []
        self.splits: list[str] = []

    def add(self, path: str, label: int, camera: int, split: str) -> None:
        self.paths.append(path)
        self.labels.append(label)
        self.cameras.append(camera)
        self.splits.append(split)

    def frame(self) -> pd.DataFrame:
        return make_frame(self.paths, self.labels, self.cameras, self.splits)

"""Verification pairs: LFW's ``pairs.txt``, as a table ``path1, path2, same, fold``.

Layout (the LFW release)::

    <root>/pairs.txt                       first line ``<folds>\\t<pairs per fold>``, then per
                                           fold that many matched lines ``name\\ti\\tj`` and as
                                           many mismatched lines ``name1\\ti\\tname2\\tj``
    <root>/lfw/<name>/<name>_<i:04d>.jpg   (or ``lfw-deepfunneled/`` or ``lfw_funneled/``)

``fold`` is 0-based; ``path1`` / ``path2`` are relative to ``root``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from embedlab.data.formats._common import DatasetFormatError, DatasetLayoutError

__all__ = ["LFWPairs", "read_lfw_pairs"]

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

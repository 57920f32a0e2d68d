"""PKU VehicleID (Liu, Tian, Wang, Pang, Huang, CVPR 2016), with its test protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.source import DataSource

from ._common import (
    DatasetFormatError,
    DatasetLayoutError,
    FrameBuilder,
    check_root,
    find_base,
    iter_lines,
    parse_int,
    rel,
)

LAYOUT = """\
<root>/                              (VehicleID_V1.0/, or its parent)
├── image/                           0000001.jpg ...
└── train_test_split/
    ├── train_list.txt               '<image name without .jpg> <vehicle id>' -> split train
    └── test_list_<size>.txt         same format; size 800 / 1600 / 2400 (the paper's small /
                                     medium / large test sets), 3200, 6000 or 13164
"""


def _read_list(file: Path) -> list[tuple[str, int]]:
    """``(image name, vehicle id)`` per line of a VehicleID list file."""
    if not file.is_file():
        raise DatasetLayoutError("vehicleid", file, LAYOUT)
    out = []
    for number, text in iter_lines(file):
        fields = text.split()
        if len(fields) != 2:
            raise DatasetFormatError(file, f"expected '<image> <vehicle id>', got {text!r}", number)
        out.append((fields[0], parse_int(fields[1], file, number, "vehicle id")))
    if not out:
        raise DatasetFormatError(file, "the list is empty")
    return out


def read_vehicleid(root: str | Path, test_size: int = 800, seed: int = 0) -> pd.DataFrame:
    """Read VehicleID's training list and one test list, split the way the paper evaluates.

    Layout::

        <root>/image/<name>.jpg
        <root>/train_test_split/train_list.txt         -> train
        <root>/train_test_split/test_list_<size>.txt   -> query / gallery

    List lines are ``<image name without .jpg> <vehicle id>``. VehicleID has no camera
    ids (camera ``-1``). Test protocol (Liu et al. 2016): from every test vehicle one
    image, drawn at random, goes to the gallery and its other images are queries, so
    each query has exactly one true match. The draw is seeded by ``seed`` (the paper
    reports the mean of 10 draws: run seeds 0–9).

    Args:
        root: the ``VehicleID_V1.0`` folder or its parent.
        test_size: number of test vehicles, i.e. which ``test_list_<size>.txt`` to read.
        seed: seed of the gallery draw.
    """
    root_path = check_root("vehicleid", root, LAYOUT)
    base = find_base(root_path, "train_test_split", ("VehicleID_V1.0", "VehicleID"))
    if base is None:
        raise DatasetLayoutError("vehicleid", root_path / "train_test_split", LAYOUT)
    if not (base / "image").is_dir():
        raise DatasetLayoutError("vehicleid", base / "image", LAYOUT)
    split_dir = base / "train_test_split"
    test_file = split_dir / f"test_list_{test_size}.txt"
    if not test_file.is_file():
        sizes = sorted(p.stem.removeprefix("test_list_") for p in split_dir.glob("test_list_*.txt"))
        raise DatasetLayoutError(
            "vehicleid",
            test_file,
            LAYOUT,
            hint=f"Test lists present: {', '.join(sizes) or 'none'}.",
        )
    rows = FrameBuilder()
    for name, vid in _read_list(split_dir / "train_list.txt"):
        rows.add(rel(base, root_path, "image", f"{name}.jpg"), vid, -1, "train")
    test = pd.DataFrame(_read_list(test_file), columns=["name", "vid"])
    # one seeded draw per vehicle: a random permutation, then the first image of each vehicle
    order = np.random.default_rng(seed).permutation(len(test))
    gallery = np.zeros(len(test), dtype=bool)
    gallery[test.iloc[order].drop_duplicates("vid").index] = True
    for (name, vid), in_gallery in zip(test.itertuples(index=False), gallery, strict=True):
        split = "gallery" if in_gallery else "query"
        rows.add(rel(base, root_path, "image", f"{name}.jpg"), int(vid), -1, split)
    return rows.frame()


class VehicleID(DataSource):
    """PKU VehicleID: one seeded gallery image per vehicle of the chosen test list.

    Args:
        test_size: 800, 1600 or 2400 (small / medium / large test list), or 13164.
        seed: picks each test vehicle's gallery image.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/vehicleid``.
    """

    folder = "vehicleid"
    val_style = "vehicleid"  # one val gallery image per vehicle, as in the test split

    def __init__(self, root: str | Path | None = None, test_size: int = 800, seed: int = 0) -> None:
        super().__init__(root)
        self.test_size, self.seed = test_size, seed

    def frame(self) -> pd.DataFrame:
        return read_vehicleid(self.root, test_size=self.test_size, seed=self.seed)

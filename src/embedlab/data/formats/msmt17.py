"""MSMT17, versions 1 and 2 (V2 only renames the image folders and blurs faces)."""

from __future__ import annotations

from pathlib import Path

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
<root>/                       (MSMT17_V1/ or MSMT17_V2/, or their parent)
├── train/  or mask_train_v2/ 0000/0000_000_01_0303morning_0015_0.jpg ...
├── test/   or mask_test_v2/  0000/0000_000_01_0303morning_0036_1.jpg ...
├── list_train.txt            '<path under train dir> <pid>'  -> split train
├── list_val.txt              same, train dir               -> split val (train with include_val)
├── list_query.txt            '<path under test dir> <pid>'   -> split query
└── list_gallery.txt          '<path under test dir> <pid>'   -> split gallery
"""

TRAIN_DIRS = ("train", "mask_train_v2", "mask_train_V2")
TEST_DIRS = ("test", "mask_test_v2", "mask_test_V2")


def _pick_dir(dataset: str, base: Path, names: tuple[str, ...]) -> str:
    for name in names:
        if (base / name).is_dir():
            return name
    raise DatasetLayoutError(
        dataset, base / names[0], LAYOUT, hint=f"(nor any of {', '.join(names[1:])})."
    )


def _camera_of(name: str, file: Path, line: int) -> int:
    """Camera is the third ``_`` field of the image name, 1-based in the file."""
    fields = Path(name).name.split("_")
    if len(fields) < 3:
        raise DatasetFormatError(
            file,
            f"image name {name!r} has no camera field (expected e.g. 0000_000_01_...jpg)",
            line,
        )
    camera = parse_int(fields[2], file, line, "camera field")
    if camera < 1:
        raise DatasetFormatError(file, f"camera {camera} in {name!r} is not 1-based", line)
    return camera - 1


def read_msmt17(root: str | Path, include_val: bool = False) -> pd.DataFrame:
    """Read MSMT17 from its list files.

    Layout (V1 shown; V2 names the folders ``mask_train_v2`` / ``mask_test_v2``)::

        <root>/train/<pid>/<name>.jpg       <root>/list_train.txt    -> train
                                            <root>/list_val.txt      -> val (train if include_val)
        <root>/test/<pid>/<name>.jpg        <root>/list_query.txt    -> query
                                            <root>/list_gallery.txt  -> gallery

    Each list line is ``<path relative to the image folder> <pid>``. The pids
    are used as written (train and test each count from 0). The camera is the
    third ``_`` field of the name (``0000_000_01_0303morning_0015_0.jpg`` is
    camera 1 of 15, stored 0-based). The official validation list is the ``val`` split
    (the run's validation set, see :mod:`embedlab.data.splits`); ``include_val=True``
    merges it into train.
    """
    root_path = check_root("msmt17", root, LAYOUT)
    base = find_base(root_path, "list_train.txt", ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17"))
    if base is None:
        raise DatasetLayoutError("msmt17", root_path / "list_train.txt", LAYOUT)
    train_dir = _pick_dir("msmt17", base, TRAIN_DIRS)
    test_dir = _pick_dir("msmt17", base, TEST_DIRS)
    lists = [("list_train.txt", train_dir, "train")]
    lists.append(("list_val.txt", train_dir, "train" if include_val else "val"))
    lists += [("list_query.txt", test_dir, "query"), ("list_gallery.txt", test_dir, "gallery")]

    rows = FrameBuilder()
    for list_name, image_dir, split in lists:
        list_file = base / list_name
        if not list_file.is_file():
            raise DatasetLayoutError("msmt17", list_file, LAYOUT)
        for number, text in iter_lines(list_file):
            fields = text.split()
            if len(fields) != 2:
                raise DatasetFormatError(
                    list_file, f"expected '<path> <pid>', got {text!r}", number
                )
            name, pid_text = fields
            pid = parse_int(pid_text, list_file, number, "pid")
            camera = _camera_of(name, list_file, number)
            rows.add(rel(base, root_path, image_dir, name), pid, camera, split)
    return rows.frame()


class MSMT17(DataSource):
    """MSMT17 (V1 or V2 lists).

    Args:
        include_val: also train on the official ``list_val.txt`` images.

    ``root`` defaults to ``$EMBEDLAB_DATA_ROOT/msmt17``.
    """

    folder = "msmt17"

    def __init__(self, root: str | Path | None = None, include_val: bool = False) -> None:
        super().__init__(root)
        self.include_val = include_val

    def frame(self) -> pd.DataFrame:
        return read_msmt17(self.root, include_val=self.include_val)

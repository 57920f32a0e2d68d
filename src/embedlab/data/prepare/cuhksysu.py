"""``embedlab data prepare cuhksysu``: CUHK-SYSU's person crops and test protocol, written from
the official release (Xiao et al., CVPR 2017) into the layout :mod:`embedlab.data.formats.cuhksysu`
reads.

The release is a person-search benchmark (scene images with boxes). ReID training (torchreid,
MSML's union of datasets) uses crops of the annotated persons; ``embedlab data prepare cuhksysu``
writes them, and the crops of the test protocol, from the official release::

    <source>/Image/SSM/s1.jpg ...                      scene images
    <source>/annotation/Person.mat                     Person: struct array (idname, nAppear,
                                                         scene: struct array (imname, idlocate,
                                                         ishard)), every annotated person
    <source>/annotation/Images.mat                     Img: struct array (imname, nAppear,
                                                         box: struct array (idlocate)), every
                                                         person box of every scene
    <source>/annotation/test/train_test/Train.mat      Train: cell array of structs (idname,
                                                         nAppear, scene), the training persons
    <source>/annotation/test/train_test/TestG50.mat    TestG50: struct array (Query: struct
                                                         (imname, idlocate, ishard, idname;
                                                         without idname a query's label is its
                                                         1-based index),
                                                         Gallery: struct array (imname, idlocate,
                                                         ishard), idlocate empty when the scene
                                                         lacks the query person); also TestG100,
                                                         TestG500, TestG1000, TestG2000, TestG4000

Boxes are ``idlocate = [x, y, w, h]`` in pixels; a crop is the PIL box ``(x, y, x + w, y + h)``
(clipped to the image), i.e. ``w x h`` pixels from 0-based ``(x, y)`` as Python person-search
code reads them (a MATLAB crop ``im(y:y+h, x:x+w)`` is one pixel larger and shifted by one). These structures are as public person-search code reads them
(``scipy.io.loadmat``; ShuangLI59/person_search, SeqNet); embedlab's tests reproduce them in a
miniature release, not the real files.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from embedlab.data.formats._common import DatasetFormatError, DatasetLayoutError, check_root

__all__ = ["SOURCE_LAYOUT", "prepare", "prepare_cuhksysu"]

SOURCE_LAYOUT = """\
<source>/
├── Image/SSM/                         s1.jpg ... (scene images)
└── annotation/
    ├── Person.mat                     (for --persons all)
    ├── Images.mat                     (for the test protocol)
    └── test/train_test/
        ├── Train.mat                  (for --persons train)
        └── TestG50.mat ...            (TestG100, TestG500, TestG1000, TestG2000, TestG4000)
"""

_IDNAME = re.compile(r"^p(\d+)$")
_SCENE = re.compile(r"^s(\d+)\.jpg$")


# ----------------------------------------------------------------------------- .mat reading


class _Mat:
    """One ``.mat`` file and error messages naming it and the field at fault."""

    def __init__(self, path: Path) -> None:
        from scipy.io import loadmat

        if not path.is_file():
            raise DatasetLayoutError("cuhksysu", path, SOURCE_LAYOUT)
        self.path = path
        try:
            self.data = loadmat(str(path))
        except Exception as err:  # scipy raises several types for a broken file
            raise DatasetFormatError(path, f"not a readable .mat file ({err})") from None

    def error(self, message: str) -> DatasetFormatError:
        return DatasetFormatError(self.path, message)

    def variable(self, name: str) -> np.ndarray:
        if name not in self.data:
            raise self.error(
                f"no variable {name!r} (found: {sorted(k for k in self.data if not k.startswith('__'))})"
            )
        return np.asarray(self.data[name])

    def records(self, value: Any, where: str) -> list[np.void]:
        """The structs of a struct array or of a cell array of structs, in order."""
        arr = np.asarray(value)
        if arr.dtype.names:
            return list(arr.ravel())
        if arr.dtype == object:
            return [rec for item in arr.ravel() for rec in self.records(item, where)]
        raise self.error(f"{where}: expected a struct array, got an array of {arr.dtype}")

    def field(self, record: np.void, name: str, where: str) -> Any:
        names = record.dtype.names or ()
        if name not in names:
            raise self.error(f"{where}: no field {name!r} (fields: {', '.join(names)})")
        return record[name]

    def text(self, record: np.void, name: str, where: str) -> str:
        arr = _unwrap(self.field(record, name, where))
        if arr.dtype.kind == "U" and arr.size == 1:
            return str(arr.ravel()[0]).strip()
        raise self.error(f"{where}.{name}: expected a string, got {arr.dtype} of shape {arr.shape}")

    def box(self, record: np.void, name: str, where: str) -> tuple[int, int, int, int] | None:
        """``[x, y, w, h]`` as ints, ``None`` when empty."""
        arr = _unwrap(self.field(record, name, where))
        if arr.size == 0:
            return None
        if arr.dtype.kind not in "fiu" or arr.size != 4:
            raise self.error(
                f"{where}.{name}: expected a box [x, y, w, h], got {arr.dtype} of shape {arr.shape}"
            )
        x, y, w, h = (int(round(float(v))) for v in arr.ravel())
        return x, y, w, h


def _unwrap(value: Any) -> np.ndarray:
    """Strip the 1x1 object (cell) wrappers loadmat puts around values."""
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.ravel()[0])
    return arr


def _pid(idname: str, mat: _Mat, where: str) -> int:
    match = _IDNAME.match(idname)
    if match is None:
        raise mat.error(f"{where}.idname: {idname!r} is not 'p<number>'")
    return int(match.group(1))


def _scene_stem(imname: str, mat: _Mat, where: str) -> str:
    if _SCENE.match(imname) is None:
        raise mat.error(f"{where}.imname: {imname!r} is not 's<number>.jpg'")
    return imname[:-4]


# ----------------------------------------------------------------------------- prepare


class _Scenes:
    """Scene images cropped one scene at a time (each scene file is decoded once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.jobs: dict[str, list[tuple[tuple[int, int, int, int], Path]]] = defaultdict(list)

    def add(self, imname: str, box: tuple[int, int, int, int], out: Path) -> None:
        self.jobs[imname].append((box, out))

    def run(self) -> int:
        from PIL import Image

        count = 0
        for imname in sorted(self.jobs):
            path = self.folder / imname
            if not path.is_file():
                raise DatasetLayoutError("cuhksysu", path, SOURCE_LAYOUT)
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            for (x, y, w, h), out in self.jobs[imname]:
                left, top = max(0, x), max(0, y)
                right, bottom = min(image.width, x + w), min(image.height, y + h)
                if right <= left or bottom <= top:
                    raise DatasetFormatError(
                        path,
                        f"box [x, y, w, h] = {[x, y, w, h]} lies outside the {image.size} image",
                    )
                out.parent.mkdir(parents=True, exist_ok=True)
                image.crop((left, top, right, bottom)).save(out, quality=95)
                count += 1
        return count


def _train_persons(
    source: Path, persons: Literal["train", "all"]
) -> tuple[_Mat, list[tuple[str, list[tuple[str, tuple[int, int, int, int]]]]]]:
    """``(idname, [(imname, box), ...])`` of the training persons (Train.mat) or all (Person.mat)."""
    if persons == "train":
        mat = _Mat(source / "annotation" / "test" / "train_test" / "Train.mat")
        var = "Train"
    else:
        mat = _Mat(source / "annotation" / "Person.mat")
        var = "Person"
    out = []
    for i, person in enumerate(mat.records(mat.variable(var), var)):
        where = f"{var}[{i}]"
        idname = mat.text(person, "idname", where)
        _pid(idname, mat, where)
        scenes = []
        for j, scene in enumerate(mat.records(mat.field(person, "scene", where), where), start=1):
            at = f"{where}.scene[{j - 1}]"
            imname = mat.text(scene, "imname", at)
            _scene_stem(imname, mat, at)
            box = mat.box(scene, "idlocate", at)
            if box is None:
                raise mat.error(f"{at}.idlocate: is empty")
            scenes.append((imname, box))
        out.append((idname, scenes))
    return mat, out


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _match(gt: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> int | None:
    """The index of the scene box that is ``gt``: equal, else the best IoU reaching the protocol's
    threshold ``min(0.5, w h / ((w + 10) (h + 10)))``; ``None`` when none does."""
    for k, box in enumerate(boxes):
        if box == gt:
            return k
    w, h = gt[2], gt[3]
    thresh = min(0.5, w * h / ((w + 10) * (h + 10)))
    best = max(range(len(boxes)), key=lambda k: _iou(gt, boxes[k]), default=None)
    if best is not None and _iou(gt, boxes[best]) >= thresh:
        return best
    return None


def prepare_cuhksysu(
    source: str | Path,
    out: str | Path,
    persons: Literal["train", "all"] = "train",
    test: bool = True,
    gallery_sizes: Iterable[int] | None = None,
) -> dict[str, int]:
    """Write the crops of :data:`LAYOUT` under ``out`` from the official release at ``source``.

    Args:
        source: the release root (``Image/SSM``, ``annotation``).
        out: the dataset root to write (``cropped_images/``, ``test/``).
        persons: ``train``: the persons of ``Train.mat`` (5,532 identities in the release,
            disjoint from the test protocol); ``all``: every person of ``Person.mat`` (torchreid
            counts 11,934 identities and 34,574 crops, test identities included).
        test: also write the test protocol (``Images.mat`` and the ``TestG*.mat`` found).
        gallery_sizes: the protocol files to read, ``TestG<size>.mat``; default every one there
            (the release has 50, 100, 500, 1000, 2000 and 4000).

    Returns:
        Counts: ``train`` crops, ``queries``, ``boxes``, ``unmatched`` ground-truth boxes (no
        annotated box of their scene matches them) and ``protocols`` written.
    """
    src = check_root("cuhksysu", source, SOURCE_LAYOUT)
    root = Path(out).expanduser()
    scenes = _Scenes(src / "Image" / "SSM")
    if not scenes.folder.is_dir():
        raise DatasetLayoutError("cuhksysu", scenes.folder, SOURCE_LAYOUT)
    _, people = _train_persons(src, persons)
    crops = root / "cropped_images"
    names: set[str] = set()
    for idname, appearances in people:
        for n, (imname, box) in enumerate(appearances, start=1):
            name = f"{idname}_{imname[:-4]}_{n}.jpg"
            if name in names:
                continue  # the same person twice in the list: one crop
            names.add(name)
            scenes.add(imname, box, crops / name)
    counts = {"train": len(names), "queries": 0, "boxes": 0, "unmatched": 0, "protocols": 0}
    if test:
        counts.update(_prepare_test(src, root, scenes, gallery_sizes))
    scenes.run()
    return counts


def _prepare_test(
    src: Path, root: Path, scenes: _Scenes, gallery_sizes: Iterable[int] | None
) -> dict[str, int]:
    folder = src / "annotation" / "test" / "train_test"
    if gallery_sizes is None:
        found = (re.fullmatch(r"TestG(\d+)\.mat", p.name) for p in folder.glob("TestG*.mat"))
        gallery_sizes = sorted(int(m.group(1)) for m in found if m)
    files = [(size, folder / f"TestG{size}.mat") for size in gallery_sizes]
    files = [(size, f) for size, f in files if f.is_file()]
    if not files:
        return {}
    images = _Mat(src / "annotation" / "Images.mat")
    scene_boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    box_index: dict[str, list[int]] = {}  # the 1-based position of each kept box in Images.mat
    for i, img in enumerate(images.records(images.variable("Img"), "Img")):
        where = f"Img[{i}]"
        imname = images.text(img, "imname", where)
        _scene_stem(imname, images, where)
        kept, index = [], []
        for k, rec in enumerate(images.records(images.field(img, "box", where), where), start=1):
            box = images.box(rec, "idlocate", f"{where}.box[{k - 1}]")
            if box is not None and box[2] > 0 and box[3] > 0:  # as person-search code does
                kept.append(box)
                index.append(k)
        scene_boxes[imname], box_index[imname] = kept, index

    def box_path(imname: str, k: int) -> str:
        return f"test/boxes/{imname[:-4]}_{box_index[imname][k]}.jpg"

    queries: list[tuple[str, str, tuple[int, int, int, int]]] | None = None
    labels: dict[str, int] = {}
    tables: dict[int, list[tuple[int, str, bool, str]]] = {}
    used: set[str] = set()
    unmatched = 0
    for size, path in files:
        mat = _Mat(path)
        var = f"TestG{size}"
        items = mat.records(mat.variable(var), var)
        these = []
        rows: list[tuple[int, str, bool, str]] = []
        for i, item in enumerate(items):
            where = f"{var}[{i}]"
            query = mat.records(mat.field(item, "Query", where), f"{where}.Query")
            if len(query) != 1:
                raise mat.error(f"{where}.Query: expected one struct, got {len(query)}")
            q_where = f"{where}.Query"
            q_name = mat.text(query[0], "imname", q_where)
            _scene_stem(q_name, mat, q_where)
            q_box = mat.box(query[0], "idlocate", q_where)
            if q_box is None:
                raise mat.error(f"{q_where}.idlocate: is empty")
            names = query[0].dtype.names or ()
            idname = mat.text(query[0], "idname", q_where) if "idname" in names else f"p{i + 1}"
            _pid(idname, mat, q_where)
            these.append((idname, q_name, q_box))
            used.add(q_name)
            for j, entry in enumerate(mat.records(mat.field(item, "Gallery", where), where)):
                g_where = f"{where}.Gallery[{j}]"
                g_name = mat.text(entry, "imname", g_where)
                _scene_stem(g_name, mat, g_where)
                if g_name not in scene_boxes:
                    raise mat.error(f"{g_where}.imname: {g_name!r} is not in {images.path.name}")
                used.add(g_name)
                gt = mat.box(entry, "idlocate", g_where)
                positive = ""
                if gt is not None:
                    hit = _match(gt, scene_boxes[g_name])
                    if hit is None:
                        unmatched += 1
                    else:
                        positive = box_path(g_name, hit)
                        pid = _pid(idname, mat, q_where)
                        if labels.setdefault(positive, pid) != pid:
                            raise mat.error(
                                f"{g_where}.idlocate: box {positive} is the ground truth of "
                                f"p{labels[positive]} and of {idname}"
                            )
                rows.append((i, g_name, gt is not None, positive))
        if queries is None:
            queries = these
        elif these != queries:
            raise mat.error(f"{var}: its queries differ from TestG{files[0][0]}.mat's")
        tables[size] = rows
    assert queries is not None
    test = root / "test"
    test.mkdir(parents=True, exist_ok=True)
    q_rows = []
    for i, (idname, imname, box) in enumerate(queries):
        name = f"test/query/{i + 1:05d}_{idname}_{imname[:-4]}.jpg"
        scenes.add(imname, box, root / name)
        q_rows.append((i, name, int(idname[1:]), imname[:-4]))
    pd.DataFrame(q_rows, columns=["query", "path", "label", "scene"]).to_csv(
        test / "queries.csv", index=False
    )
    b_rows = []
    for imname in sorted(used):
        if imname not in scene_boxes:
            raise images.error(f"Img: no entry for the protocol's scene {imname!r}")
        for k, box in enumerate(scene_boxes[imname]):
            name = box_path(imname, k)
            scenes.add(imname, box, root / name)
            b_rows.append((name, labels.get(name, 0), imname[:-4], box_index[imname][k], *box))
    pd.DataFrame(b_rows, columns=["path", "label", "scene", "box", "x", "y", "w", "h"]).to_csv(
        test / "boxes.csv", index=False
    )
    for size, rows in tables.items():
        table = pd.DataFrame(rows, columns=["query", "scene", "has_gt", "positive"])
        table["scene"] = table["scene"].str.removesuffix(".jpg")
        table.to_csv(test / f"TestG{size}.csv", index=False)
    return {
        "queries": len(q_rows),
        "boxes": len(b_rows),
        "unmatched": unmatched,
        "protocols": len(tables),
    }


#: The hook of ``embedlab data prepare``.
prepare = prepare_cuhksysu

"""CUHK-SYSU (Xiao et al., CVPR 2017) as person crops: the training set and the test protocol.

The release is a person-search benchmark (scene images with boxes). ReID training (torchreid,
MSML's union of datasets) uses crops of the annotated persons, which ``embedlab data prepare
cuhksysu`` writes from the official release (:mod:`embedlab.data.prepare.cuhksysu`); this
module reads them (:data:`LAYOUT`) and the test protocol.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.source import DataSource
from embedlab.metrics.person_search import PersonSearchProtocol

from ._common import (
    DatasetFormatError,
    DatasetLayoutError,
    FrameBuilder,
    check_root,
    list_images,
)

LAYOUT = """\
<root>/                                 (written by `embedlab data prepare cuhksysu`)
├── cropped_images/  p11422_s16929_1.jpg ...  -> train (pid 11422, scene s16929, 1st appearance)
└── test/            the test protocol on crops (optional)
    ├── query/       00001_p5614_s15535.jpg ...   one crop per protocol query
    ├── boxes/       s15535_1.jpg ...             every person box of the test scenes
    ├── queries.csv  query, path, label, scene
    ├── boxes.csv    path, label, scene, box, x, y, w, h   (label 0: unlabelled person)
    └── TestG50.csv  query, scene, has_gt, positive         (also TestG100.csv, ...)
"""


_CROP = re.compile(r"^p(\d+)_s(\d+)_(\d+)\.jpg$")


# ----------------------------------------------------------------------------- reading


def read_cuhksysu(root: str | Path, test: bool = False) -> pd.DataFrame:
    """Read the prepared crops: ``path, label, camera, split, scene``.

    Training crops ``cropped_images/p<pid>_s<scene>_<n>.jpg``: label ``pid`` (as the release
    numbers persons; torchreid relabels them 0..N-1 in set order, embedlab's data module relabels
    the training split itself), camera ``-1``, split ``train``, scene ``s<scene>``. With ``test``, also the
    test protocol's query crops (split ``query``) and every person box of the test scenes (split
    ``gallery``; label ``0`` for unlabelled people, who are negatives like Market-1501's
    distractors); their camera is the scene number, so the ReID rule "same identity and same
    camera is ignored" drops a query's own box from the shared gallery. That shared gallery is
    the whole test pool; the official per-query galleries are :meth:`CUHKSYSU.protocol`.
    """
    base = check_root("cuhksysu", root, LAYOUT)
    folder = base / "cropped_images"
    if not folder.is_dir():
        raise DatasetLayoutError(
            "cuhksysu", folder, LAYOUT, hint="Write it with `embedlab data prepare cuhksysu`."
        )
    rows = FrameBuilder()
    scene_col: list[str] = []
    for name in list_images(folder):
        match = _CROP.match(name)
        if match is None:
            raise DatasetFormatError(
                folder / name,
                "file name is not 'p<pid>_s<scene>_<n>.jpg' (e.g. p11422_s16929_1.jpg)",
            )
        rows.add(f"cropped_images/{name}", int(match.group(1)), -1, "train")
        scene_col.append(f"s{match.group(2)}")
    frame = rows.frame().assign(scene=scene_col)
    if not test:
        return frame
    parts = [frame]
    for split, file in (("query", "queries.csv"), ("gallery", "boxes.csv")):
        table = _read_csv(base / "test" / file, ["path", "label", "scene"])
        cams = table["scene"].str.removeprefix("s").astype(np.int64)
        parts.append(
            pd.DataFrame(
                {
                    "path": table["path"].astype(str),
                    "label": table["label"].astype(np.int64),
                    "camera": cams,
                    "split": split,
                    "scene": table["scene"].astype(str),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetLayoutError(
            "cuhksysu", path, LAYOUT, hint="Write it with `embedlab data prepare cuhksysu`."
        )
    table = pd.read_csv(path, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetFormatError(path, f"missing column(s) {', '.join(missing)}")
    return table


def read_protocol(root: str | Path, gallery_size: int = 50) -> PersonSearchProtocol:
    """The per-query galleries of ``test/TestG<gallery_size>.csv`` over ``test/boxes.csv``."""
    base = Path(root).expanduser()
    queries = _read_csv(base / "test" / "queries.csv", ["query", "path", "label", "scene"])
    boxes = _read_csv(base / "test" / "boxes.csv", ["path", "label", "scene"])
    file = base / "test" / f"TestG{gallery_size}.csv"
    table = _read_csv(file, ["query", "scene", "has_gt", "positive"])
    num_q = len(queries)
    q = pd.to_numeric(table["query"], errors="coerce")
    bad = ~q.between(0, num_q - 1) | (q != q.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        value = str(table["query"].iloc[row])
        raise DatasetFormatError(file, f"query {value} is not in queries.csv", row + 2)
    table = table.assign(query=q.astype(np.int64), scene=table["scene"].astype(str))
    table = table.drop_duplicates(["query", "scene"])  # a scene listed twice counts once
    table = table.sort_values("query", kind="stable")
    # the boxes of each scene: ``order[start : start + count]``
    scene_codes, scene_names = pd.factorize(boxes["scene"].astype(str))
    order = np.argsort(scene_codes, kind="stable")
    count = np.bincount(scene_codes, minlength=len(scene_names))
    start = np.cumsum(count) - count
    code = pd.Index(scene_names).get_indexer(table["scene"])
    row_count = np.where(code >= 0, count[code], 0)
    row_start = np.where(code >= 0, start[code], 0)
    total = int(row_count.sum())
    offsets = np.repeat(np.cumsum(row_count) - row_count, row_count)
    flat = order[np.repeat(row_start, row_count) + np.arange(total) - offsets]
    rows_q = table["query"].to_numpy()
    per_query = np.bincount(rows_q, weights=row_count, minlength=num_q).astype(np.int64)
    galleries = np.split(flat, np.cumsum(per_query)[:-1])
    num_gt = np.bincount(
        rows_q[table["has_gt"].astype(str).str.lower().eq("true").to_numpy()], minlength=num_q
    ).astype(np.int64)
    positive = table["positive"].astype(str)
    has = positive.ne("").to_numpy()
    index = pd.Index(boxes["path"].astype(str)).get_indexer(positive[has])
    if (index < 0).any():
        row = table.index[has][int(np.flatnonzero(index < 0)[0])]
        raise DatasetFormatError(
            file, f"positive {positive.loc[row]!r} is not in boxes.csv", int(row) + 2
        )
    pos_q = rows_q[has]
    positives = np.split(
        index.astype(np.int64), np.cumsum(np.bincount(pos_q, minlength=num_q))[:-1]
    )
    return PersonSearchProtocol(
        galleries=galleries,
        positives=positives,
        num_gt=num_gt,
        queries=queries[["path", "label", "scene"]],
        gallery=boxes[["path", "label", "scene"]],
    )


class CUHKSYSU(DataSource):
    """CUHK-SYSU person crops (``embedlab data prepare cuhksysu`` writes them).

    Args:
        root: the prepared root (``cropped_images/``, ``test/``); default
            ``$EMBEDLAB_DATA_ROOT/cuhksysu``.
        test: ``False`` (default): training crops only, as torchreid uses the dataset;
            ``True``: also the test queries and gallery boxes (see :func:`read_cuhksysu`).
        gallery_size: the person-search protocol (``TestG<gallery_size>``) that scores the test
            split when this dataset is a member of a union (``data.dataset: [...]``): each query
            against its own gallery, :func:`embedlab.metrics.person_search`, as
            ``embedlab evaluate --protocol cuhksysu`` does. Alone, the test split is the shared
            ReID gallery of :func:`read_cuhksysu` (``evaluate --protocol cuhksysu`` scores the
            person search).
    """

    folder = "cuhksysu"

    def __init__(
        self, root: str | Path | None = None, test: bool = False, gallery_size: int = 50
    ) -> None:
        super().__init__(root)
        self.test = test
        self.gallery_size = gallery_size

    def frame(self) -> pd.DataFrame:
        return read_cuhksysu(self.root, test=self.test)

    def protocol(self, gallery_size: int = 50) -> PersonSearchProtocol:
        """The official per-query galleries (``TestG<gallery_size>``) on the prepared crops."""
        return read_protocol(self.root, gallery_size)

    def search_protocol(self) -> PersonSearchProtocol | None:
        """The protocol a union scores the test split by (``TestG<gallery_size>``); ``None``
        without ``test``."""
        return self.protocol(self.gallery_size) if self.test else None

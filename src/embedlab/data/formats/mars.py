"""MARS (Zheng et al., ECCV 2016): video person re-identification, one row per frame.

Layout (as the dataset ships)::

    <root>/bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg   e.g. 0001/0001C1T0001F001.jpg
    <root>/bbox_test/<pid>/...                                     (junk folder 00-1)
    <root>/info/train_name.txt          one image name per line
    <root>/info/test_name.txt
    <root>/info/tracks_train_info.mat   track_train_info: rows [start, end, pid, camera],
                                        1-based inclusive rows of train_name.txt, camera 1..6
    <root>/info/tracks_test_info.mat    track_test_info (rows of test_name.txt)
    <root>/info/query_IDX.mat           query_IDX: 1-based rows of track_test_info; the
                                        gallery is every other test tracklet

The frame has the extra column ``tracklet`` (0.. over train then test tracklets). Cameras are
0-based; pid −1 (junk) and 0 (distractors) stay in the gallery as they are, so the ReID
protocol ignores the first and ranks the second as negatives. (torchreid drops junk tracklets;
embedlab keeps them for the protocol to ignore, as for Market-1501.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from embedlab.data.image_dataset import BadData, ImageDataset
from embedlab.data.source import DataSource
from embedlab.data.transforms import Transforms

from ._common import DatasetFormatError, DatasetLayoutError

__all__ = ["Mars", "Tracklets", "frame_positions", "read_mars"]

Sampling = Literal["restricted_random", "evenly", "all"]
LAYOUT = """\
<root>/
├── bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg
├── bbox_test/<pid>/...            (junk folder 00-1)
└── info/train_name.txt, test_name.txt, tracks_train_info.mat (track_train_info),
         tracks_test_info.mat (track_test_info), query_IDX.mat (query_IDX)
"""


def _mat(file: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    if not file.is_file():
        raise DatasetLayoutError("mars", file, LAYOUT)
    content = loadmat(file)
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DatasetFormatError(file, f"no variable {key!r} (found {found})")
    return np.asarray(content[key])


def _names(file: Path) -> list[str]:
    if not file.is_file():
        raise DatasetLayoutError("mars", file, LAYOUT)
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def _tracks(file: Path, key: str, names: Sequence[str]) -> np.ndarray:
    tracks = _mat(file, key)
    if tracks.ndim != 2 or tracks.shape[1] != 4:
        raise DatasetFormatError(file, f"{key} has shape {tracks.shape}, expected (N, 4)")
    tracks = tracks.astype(np.int64)
    bad = (tracks[:, 0] < 1) | (tracks[:, 1] < tracks[:, 0]) | (tracks[:, 1] > len(names))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(
            file, f"{key} row {row + 1}: frames {tracks[row, :2].tolist()} outside 1..{len(names)}"
        )
    return tracks


def read_mars(root: str | Path) -> pd.DataFrame:
    """Read MARS under ``root`` (see the module docstring)."""
    root = Path(root).expanduser()
    info = root / "info"
    if not root.is_dir():
        raise DatasetLayoutError("mars", root, LAYOUT)
    parts = []
    start = 0
    test_names = _names(info / "test_name.txt")
    test_tracks = _tracks(info / "tracks_test_info.mat", "track_test_info", test_names)
    query = _mat(info / "query_IDX.mat", "query_IDX").astype(np.int64).reshape(-1) - 1
    if query.size and (query.min() < 0 or query.max() >= len(test_tracks)):
        raise DatasetFormatError(
            info / "query_IDX.mat", f"query_IDX outside 1..{len(test_tracks)} test tracklets"
        )
    is_query = np.zeros(len(test_tracks), bool)
    is_query[query] = True
    train_names = _names(info / "train_name.txt")
    train_tracks = _tracks(info / "tracks_train_info.mat", "track_train_info", train_names)
    for folder, names, tracks, roles in (
        ("bbox_train", train_names, train_tracks, np.full(len(train_tracks), "train")),
        ("bbox_test", test_names, test_tracks, np.where(is_query, "query", "gallery")),
    ):
        lengths = tracks[:, 1] - tracks[:, 0] + 1
        spans = [np.arange(a - 1, b) for a, b, _, _ in tracks]
        rows: np.ndarray = np.concatenate(spans) if spans else np.zeros(0, np.int64)
        picked = [names[i] for i in rows]
        parts.append(
            pd.DataFrame(
                {
                    "path": [f"{folder}/{n[:4]}/{n}" for n in picked],
                    "label": np.repeat(tracks[:, 2], lengths),
                    "camera": np.repeat(tracks[:, 3] - 1, lengths),
                    "split": np.repeat(roles, lengths),
                    "tracklet": np.repeat(np.arange(start, start + len(tracks)), lengths),
                }
            )
        )
        start += len(tracks)
    return pd.concat(parts, ignore_index=True)


def frame_positions(
    length: int, frames: int, sampling: Sampling, generator: torch.Generator | None = None
) -> list[int]:
    """Which of a tracklet's ``length`` frames a clip takes.

    ``restricted_random``: the tracklet cut into ``frames`` equal chunks, one random frame of
    each (Li et al., CVPR 2018); ``evenly``: ``frames`` evenly spaced frames; ``all``: every
    frame. Tracklets shorter than ``frames`` repeat frames.
    """
    if sampling == "all":
        return list(range(length))
    if sampling == "evenly":
        return np.linspace(0, length - 1, frames).round().astype(int).tolist()
    edges = np.linspace(0, length, frames + 1)
    positions = []
    for k in range(frames):
        low = min(int(edges[k]), length - 1)
        high = max(low + 1, int(edges[k + 1]))
        positions.append(low + int(torch.randint(high - low, (1,), generator=generator)))
    return positions


class Tracklets(Dataset[tuple[Tensor, int, int, int]]):
    """One item per tracklet: ``(clip [T, C, H, W], label, camera, index)``.

    ``labels``, ``cameras`` and ``paths`` (the first frame) are per tracklet, so the P×K sampler
    draws P identities × K tracklets, each a clip of T frames. Frames are read by
    :class:`~embedlab.data.ImageDataset` (its transform and bad-data handling).
    """

    def __init__(
        self, frames: ImageDataset, tracklets: np.ndarray, length: int, sampling: Sampling
    ):
        self.frames = frames
        self.length, self.sampling = length, sampling
        order = np.argsort(tracklets, kind="stable")
        ids, starts = np.unique(tracklets[order], return_index=True)
        self.members = np.split(order, starts[1:])
        first = np.array([m[0] for m in self.members], dtype=np.int64)
        self.tracklet_ids = ids
        self.labels = frames.labels[first]
        self.cameras = frames.cameras[first]
        self.paths = [frames.paths[i] for i in first]

    @property
    def clip_lengths_vary(self) -> bool:
        """``all`` frames: clips differ in length, so evaluation loads one tracklet per batch."""
        return self.sampling == "all"

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        members = self.members[int(index)]
        positions = frame_positions(len(members), self.length, self.sampling)
        clip = torch.stack([self.frames[int(members[p])][0] for p in positions])
        return clip, int(self.labels[index]), int(self.cameras[index]), int(index)


class Mars(DataSource):
    """MARS video ReID; each item a clip of a tracklet (see :class:`Tracklets`).

    Args:
        root: the MARS folder (default ``$EMBEDLAB_DATA_ROOT/mars``).
        frames: T, frames per clip.
        train_sampling: ``restricted_random`` (default) or ``evenly``.
        eval_sampling: ``evenly`` (default), ``restricted_random``, or ``all`` (every frame,
            as the MARS papers evaluate: clips differ in length, so evaluation batches hold one
            tracklet each, whatever ``data.eval_batch_size``; nothing is padded).
        clips: ``False`` serves single frames instead (MARS as an image dataset, e.g. in MSML's
            union of datasets). Alone, such a MARS is then evaluated frame by frame; as a member
            of a union (``data.dataset: [...]``) it is still evaluated per tracklet, with the
            clips ``eval_sampling`` and ``frames`` describe (:meth:`tracklet_images`).

    A model embeds a clip [B, T, C, H, W] with ``EmbeddingModel(temporal=...)`` pooling frame
    features over T (:mod:`embedlab.models.temporal`; in eval mode the frames go through the
    backbone ``frame_chunk`` at a time, so a long tracklet under ``all`` fits in memory); the
    query/gallery ReID protocol then runs on tracklet embeddings. Under the ``official``
    evaluation convention (``model.eval_convention``) each query tracklet is ranked against all
    test tracklets, the queries included, as MARS's ``evaluation_mars.m`` does; ``torchreid``
    ranks it against the test tracklets that are not queries.
    """

    folder = "mars"
    #: the official protocol's gallery holds the query tracklets too
    queries_in_official_gallery = True

    def __init__(
        self,
        root: str | Path | None = None,
        frames: int = 4,
        train_sampling: Literal["restricted_random", "evenly"] = "restricted_random",
        eval_sampling: Sampling = "evenly",
        clips: bool = True,
    ) -> None:
        super().__init__(root)
        self.frames = frames
        self.train_sampling: Sampling = train_sampling
        self.eval_sampling: Sampling = eval_sampling
        self.clips = clips

    def frame(self) -> pd.DataFrame:
        return read_mars(self.root)

    def images(
        self, rows: pd.DataFrame, train: bool, transforms: Transforms, bad_data: BadData
    ) -> Any:
        if self.clips and not train:
            return self.tracklet_images(rows, transforms, bad_data)
        transform = transforms.train if train else transforms.eval
        frames = ImageDataset(rows.reset_index(drop=True), self.root, transform, bad_data)
        if not self.clips:
            return frames
        return Tracklets(frames, rows["tracklet"].to_numpy(), self.frames, self.train_sampling)

    def tracklet_images(
        self, rows: pd.DataFrame, transforms: Transforms, bad_data: BadData
    ) -> Tracklets:
        """Evaluation items per tracklet (clips as ``eval_sampling`` draws them), whatever
        ``clips`` says: how a union evaluates MARS. A frame model embeds such a clip like any
        clip: frame features pooled over time by ``EmbeddingModel.temporal``
        (``TemporalAverage``, the mean of the frames, unless configured otherwise)."""
        frames = ImageDataset(rows.reset_index(drop=True), self.root, transforms.eval, bad_data)
        return Tracklets(frames, rows["tracklet"].to_numpy(), self.frames, self.eval_sampling)

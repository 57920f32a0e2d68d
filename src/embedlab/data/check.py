"""``embedlab data check``: read a dataset as the training run would and report problems.

For each split it counts images, identities and cameras, then lists every
problem found:

errors (the run would fail or be meaningless)
    missing folders or list files (with the expected layout), malformed list
    lines, image files that are missing, empty, truncated or not images, a
    query split without a gallery (or the reverse), and a ReID test set in
    which no query has a valid match;
warnings (the run works but some data is wasted)
    identities with a single image in ``train`` (no positive pair) or ``test``
    (nothing to retrieve), query identities absent from the gallery, and
    identities whose query and gallery images all come from the same camera,
    which the ReID protocol (same identity + same camera = ignored) leaves
    without a valid match; the same file listed twice in a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from .formats import SPLITS, DatasetFormatError, DatasetLayoutError
from .image_dataset import unreadable_reasons
from .source import FrameSource, source_name, source_root

Severity = Literal["error", "warning"]


@dataclass
class SplitStats:
    """Counts for one split; ``identities`` and ``cameras`` leave out -1."""

    images: int
    identities: int
    cameras: int
    junk: int


@dataclass
class Problem:
    """One kind of problem, with every offending item (file, identity, ...)."""

    severity: Severity
    kind: str
    message: str
    items: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    dataset: str
    root: Path
    splits: dict[str, SplitStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """``'1 image'`` / ``'3 images'``."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def split_stats(frame: pd.DataFrame) -> dict[str, SplitStats]:
    """Images / identities / cameras / junk per split, in the order of :data:`SPLITS`."""
    stats: dict[str, SplitStats] = {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        labels = part["label"]
        cameras = part["camera"]
        stats[split] = SplitStats(
            images=len(part),
            identities=int(labels[labels != -1].nunique()),
            cameras=int(cameras[cameras != -1].nunique()),
            junk=int((labels == -1).sum()),
        )
    return stats


def _image_problems(frame: pd.DataFrame, root: Path, verify_images: bool) -> list[Problem]:
    files = list(dict.fromkeys(frame["path"]))  # each file once, in order
    missing = [str(path) for path in files if not (root / path).is_file()]
    present = [path for path in files if (root / path).is_file()] if verify_images else []
    reasons = unreadable_reasons([root / path for path in present])
    unreadable = [f"{p}: {r}" for p, r in zip(present, reasons, strict=True) if r is not None]
    problems = []
    if missing:
        problems.append(
            Problem(
                "error",
                "missing-image",
                f"{_count(len(missing), 'listed image')} not found",
                missing,
            )
        )
    if unreadable:
        problems.append(
            Problem(
                "error",
                "unreadable-image",
                f"{_count(len(unreadable), 'image')} cannot be read (empty, truncated or not an image)",
                unreadable,
            )
        )
    return problems


def _identity_problems(frame: pd.DataFrame) -> list[Problem]:
    problems: list[Problem] = []
    real = frame[frame["label"] != -1]

    duplicated = frame[frame.duplicated(["split", "path"])]
    if not duplicated.empty:
        problems.append(
            Problem(
                "warning",
                "duplicate-image",
                f"{_count(len(duplicated), 'file')} listed more than once in the same split",
                [f"{row.split}: {row.path}" for row in duplicated.itertuples()],
            )
        )

    consequences = {
        "train": "no positive pair can be drawn for them",
        "test": "as queries they have nothing to retrieve",
    }
    for split, consequence in consequences.items():
        part = real[real["split"] == split]
        counts = part["label"].value_counts()
        single = sorted(int(label) for label in counts[counts == 1].index)
        if single:
            first_path = part.drop_duplicates("label").set_index("label")["path"]
            problems.append(
                Problem(
                    "warning",
                    "single-image-identity",
                    f"{split}: {_count(len(single), 'identity', 'identities')} with a single image; "
                    f"{consequence}",
                    [f"label {label}: {first_path[label]}" for label in single],
                )
            )

    query = real[real["split"] == "query"]
    gallery = real[real["split"] == "gallery"]
    has_query = (frame["split"] == "query").any()
    has_gallery = (frame["split"] == "gallery").any()
    if has_query != has_gallery:
        present, absent = ("query", "gallery") if has_query else ("gallery", "query")
        problems.append(
            Problem("error", "unpaired-split", f"there is a {present} split but no {absent} split")
        )
    if not has_query and not (frame["split"] == "test").any():
        problems.append(
            Problem(
                "warning", "no-evaluation-split", "no query/gallery or test split to evaluate on"
            )
        )
    if query.empty or gallery.empty:
        return problems

    gallery_cams: dict[int, set[int]] = {
        int(label): set(int(c) for c in cams) for label, cams in gallery.groupby("label")["camera"]
    }
    absent_items: list[str] = []
    same_camera_items: list[str] = []
    queries_without_match = 0
    for label, part in query.groupby("label"):
        label = int(label)
        query_cams = {int(c) for c in part["camera"]}
        cams = gallery_cams.get(label)
        if not cams:
            absent_items.append(f"label {label} ({_count(len(part), 'query image')})")
            queries_without_match += len(part)
        elif -1 not in cams and -1 not in query_cams and len(cams) == 1 and query_cams == cams:
            (camera,) = cams
            same_camera_items.append(
                f"label {label}: query and gallery images all on camera {camera}"
            )
            queries_without_match += len(part)
    if absent_items:
        problems.append(
            Problem(
                "warning",
                "query-not-in-gallery",
                f"{_count(len(absent_items), 'query identity', 'query identities')} not in the gallery",
                absent_items,
            )
        )
    if same_camera_items:
        problems.append(
            Problem(
                "warning",
                "no-cross-camera-match",
                f"{_count(len(same_camera_items), 'identity', 'identities')} with query and gallery "
                "images from one and the same camera; the ReID protocol drops same-camera "
                "matches, so these queries have no valid match",
                same_camera_items,
            )
        )
    if queries_without_match == len(query):
        problems.append(
            Problem(
                "error",
                "no-valid-query",
                f"none of the {len(query)} queries has a valid gallery match; check the camera "
                "ids (query and gallery must differ in camera for a match to count) and labels",
            )
        )
    return problems


def check_frame(
    frame: pd.DataFrame, root: str | Path | None, verify_images: bool = True
) -> list[Problem]:
    """Problems with an already-read dataset table (see the module docstring).

    ``root=None``: an in-memory dataset, whose files are not checked.
    """
    files = [] if root is None else _image_problems(frame, Path(root), verify_images)
    return files + _identity_problems(frame)


def check_dataset(source: FrameSource, *, verify_images: bool = True) -> CheckReport:
    """Read the dataset ``source`` (its ``frame()``) and collect its statistics and problems.

    Reading errors (missing folders, malformed lines) become error problems instead of
    exceptions. ``verify_images=False`` only checks that files exist instead of decoding
    every image.
    """
    root = source_root(source)
    report = CheckReport(dataset=source_name(source), root=root)
    try:
        frame = source.frame()
    except DatasetLayoutError as exc:
        report.problems.append(Problem("error", "missing-path", str(exc)))
        return report
    except DatasetFormatError as exc:
        report.problems.append(Problem("error", "malformed", str(exc)))
        return report
    except (ValueError, ImportError) as exc:
        report.problems.append(Problem("error", "cannot-read", str(exc)))
        return report
    report.splits = split_stats(frame)
    if frame.empty:
        report.problems.append(Problem("error", "empty", "the dataset lists no images"))
        return report
    on_disk = bool(getattr(source, "on_disk", True))
    report.problems.extend(check_frame(frame, root if on_disk else None, verify_images))
    return report


def format_report(report: CheckReport, max_items: int = 10) -> str:
    """Human-readable report: a per-split table, then each problem with up to ``max_items`` items."""
    lines = [f"Dataset {report.dataset} at {report.root}"]
    if report.splits:
        header = f"{'split':<8} {'images':>8} {'identities':>10} {'cameras':>8} {'junk':>6}"
        lines += ["", header, "-" * len(header)]
        for split, stats in report.splits.items():
            lines.append(
                f"{split:<8} {stats.images:>8} {stats.identities:>10} "
                f"{stats.cameras if stats.cameras else '-':>8} {stats.junk:>6}"
            )
    lines.append("")
    if not report.problems:
        lines.append("No problems found.")
        return "\n".join(lines)
    n_err, n_warn = len(report.errors), len(report.warnings)
    lines.append(f"{_count(n_err, 'error')}, {_count(n_warn, 'warning')}:")
    for problem in sorted(report.problems, key=lambda p: p.severity != "error"):
        body = problem.message.splitlines() or [""]
        lines.append(f"[{problem.severity}] {problem.kind}: {body[0]}")
        lines += [f"    {text}" for text in body[1:]]
        shown = problem.items if max_items < 0 else problem.items[:max_items]
        lines += [f"    - {item}" for item in shown]
        if len(shown) < len(problem.items):
            lines.append(f"    ... and {len(problem.items) - len(shown)} more")
    return "\n".join(lines)

"""``embedlab data prepare``: a dataset's training crops written from its official release."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def prepare(
    dataset: str,
    source: Path,
    out: Path,
    persons: Literal["train", "all"] = "train",
    test: bool = True,
    gallery_sizes: list[int] | None = None,
) -> int:
    """Write a dataset's crops from its official release (``cuhksysu``: CUHK-SYSU person crops).

    Args:
        dataset: which dataset: ``cuhksysu``.
        source: the official release root (``Image/SSM``, ``annotation``).
        out: the dataset root to write (``cropped_images/``, ``test/``).
        persons: ``train``: the persons of ``Train.mat``; ``all``: every person of ``Person.mat``.
        test: also write the test protocol's crops and tables (``--no_test``: training crops only).
        gallery_sizes: the protocols ``TestG<size>.mat`` to write, e.g. ``[50,100]`` (default: every
            one there; TestG4000 lists about 11.6 million gallery scenes and takes minutes).
    """
    from embedlab.data.prepare import prepare as prepare_dataset

    options = {"persons": persons, "test": test, "gallery_sizes": gallery_sizes}
    counts = prepare_dataset(dataset, source, out, **options)
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {out}")
    if counts["unmatched"]:
        print(f"{counts['unmatched']} ground-truth boxes match no annotated box of their scene")
    return 0

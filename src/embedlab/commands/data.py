"""``embedlab data check``: a dataset read as training reads it, every problem listed."""

from __future__ import annotations

from embedlab.data.source import DataSource, FrameSource


def check(
    dataset: DataSource | FrameSource,
    images: bool = True,
    max_items: int = 10,
    strict: bool = False,
) -> int:
    """Read a dataset as training would; print per-split counts and every problem.

    Returns 0 when clean, 1 on errors (or on warnings with ``--strict``).

    Args:
        dataset: the dataset, as in ``data.dataset``: ``--dataset Market1501 --dataset.root
            /data/market1501`` (root default: ``$EMBEDLAB_DATA_ROOT/<name>``, or ``data/<name>``
            when the variable is unset), ``--dataset CUHK03NP --dataset.variant labeled``.
        images: decode every image (``--no_images``: only check that the files exist).
        max_items: items listed per problem (-1: all).
        strict: exit with 1 on warnings too.
    """
    from embedlab.data.check import check_dataset, format_report

    report = check_dataset(dataset, verify_images=images)
    print(format_report(report, max_items=max_items))
    return 1 if report.errors or (strict and report.warnings) else 0

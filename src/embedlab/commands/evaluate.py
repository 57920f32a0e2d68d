"""``embedlab evaluate``: metrics of a checkpoint on held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedlab.options import Convention, Protocol, SetDistance


def evaluate(
    ckpt_path: Path,
    config: Path | None = None,
    out: Path | None = None,
    rerank: bool = False,
    flip_test: bool = False,
    data: dict[str, Any] | None = None,
    protocol: Protocol = "retrieval",
    convention: Convention | None = None,
    gallery_size: int = 50,
    pairs: Path | None = None,
    video_frames: int = 100,
    video_distance: SetDistance = "mean_pairwise",
    trust_checkpoint: bool = False,
    resplit: bool = False,
) -> int:
    """Embed the evaluation split with a checkpoint; print and save the retrieval metrics.

    Writes ``evaluation.json`` and ``evaluation.csv`` into the run folder (or ``out``).

    Args:
        ckpt_path: checkpoint, e.g. ``runs/X/version_N/checkpoints/last.ckpt``.
        config: run configuration (default: ``config.yaml`` of the checkpoint's run folder).
        out: output folder (default: the checkpoint's run folder).
        rerank: k-reciprocal re-ranking (Zhong et al. 2017).
        flip_test: average each image's and its mirror's embedding.
        data: data module arguments replacing the run's (mappings are merged), e.g.
            ``{options: {seed: 3}}`` (another VehicleID gallery draw).
        protocol: ``retrieval`` (the run's test split); ``cuhksysu``: person search with each
            query's own gallery (``embedlab.metrics.person_search``) on the run's
            ``embedlab.data.CUHKSYSU`` crops, written to ``evaluation_cuhksysu<size>.json``.
        convention: with ``--protocol retrieval``: ``torchreid`` (torchreid's
            ``eval_market1501``) or ``official`` (the Market-1501 / MARS MATLAB code: its
            trapezoidal ``map``; for MARS every test tracklet in the gallery); default: the
            run's ``model.eval_convention`` (``torchreid`` unless set). Recorded in
            ``evaluation.json``.
        gallery_size: with ``--protocol cuhksysu``: the protocol ``TestG<gallery_size>``.
        pairs: with ``--protocol verification``: the LFW folder (``pairs.txt`` and ``lfw/``)
            or the YouTube Faces folder (``splits.txt`` and ``aligned_images_DB/``); writes
            ``verification.json``, ``roc.csv`` and ``roc.png``
            (:func:`embedlab.metrics.verify`, the folds of the pairs file).
        video_frames: YouTube Faces: the first that many frames of each video (0: all).
        video_distance: YouTube Faces: ``mean_pairwise`` (the mean distance over all frame
            pairs, FaceNet's protocol) or ``mean_embedding``. A euclidean run compares frames
            by the squared euclidean distance, as FaceNet (so its thresholds are squared
            distances), a cosine run by the cosine distance; ``verification.json`` names it.
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
        resplit: evaluate although ``data`` puts images the run trained or validated on (its
            ``splits.csv``) into the evaluation split; without it such options are refused.
    """
    from embedlab.evaluation.checkpoint import evaluate_checkpoint

    return evaluate_checkpoint(
        ckpt_path,
        config,
        out,
        rerank,
        flip_test,
        data,
        protocol,
        convention,
        gallery_size,
        pairs,
        video_frames,
        video_distance,
        trust_checkpoint,
        resplit,
    )

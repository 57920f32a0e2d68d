"""`convention="official"` against a line-by-line Python transcription of the MATLAB evaluation
code of Market-1501 and MARS (Zheng et al.: `compute_AP.m`, `evaluation_mars.m`), on a
Market-shaped and a MARS-shaped random problem; `torchreid` (the default) against the
brute-force reference of tests/metrics_reference.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from embedlab.metrics import (
    EvalOptions,
    MeanAveragePrecision,
    OfficialAveragePrecision,
    RetrievalEvaluator,
    evaluate,
    for_convention,
)
from metrics_reference import reference_distances, reference_evaluate

MAX_RANK = 20


# -- the MATLAB code, transcribed (1-based loop variables kept as in the original) --------------
def matlab_compute_ap(good: np.ndarray, junk: np.ndarray, index: np.ndarray) -> tuple[float, Any]:
    """compute_AP.m: ``index`` is the gallery sorted by distance, ascending (1-based)."""
    cmc = np.zeros(len(index))
    ngood = len(good)
    old_recall = 0.0
    old_precision = 1.0
    ap = 0.0
    intersect_size = 0
    j = 0
    good_now = 0
    njunk = 0
    for n in range(1, len(index) + 1):
        flag = 0
        if index[n - 1] in good:
            cmc[n - njunk - 1 :] = 1  # cmc(n-njunk:end) = 1
            flag = 1
            good_now += 1
        if index[n - 1] in junk:
            njunk += 1
            continue
        if flag == 1:
            intersect_size += 1
        recall = intersect_size / ngood
        precision = intersect_size / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall = recall
        old_precision = precision
        j += 1
        if good_now == ngood:
            return ap, cmc
    return ap, cmc


def matlab_evaluation(
    dist: np.ndarray,
    label_gallery: np.ndarray,
    label_query: np.ndarray,
    cam_gallery: np.ndarray,
    cam_query: np.ndarray,
) -> tuple[np.ndarray, float, int]:
    """evaluation_mars.m (the Market-1501 evaluation loop is the same): ``dist`` is
    gallery × query. Returns CMC, mAP and the number of queries, over the queries that have a
    good match (the MATLAB code has no such query in its datasets; embedlab skips them)."""
    junk0 = np.flatnonzero(label_gallery == -1) + 1
    aps, cmcs = [], []
    for k in range(dist.shape[1]):
        score = dist[:, k]
        pos = np.flatnonzero(label_gallery == label_query[k]) + 1
        good_image = pos[cam_gallery[pos - 1] != cam_query[k]]
        junk = pos[cam_gallery[pos - 1] == cam_query[k]]
        junk_image = np.concatenate([junk0, junk])
        if len(good_image) == 0:
            continue
        index = np.argsort(score, kind="stable") + 1  # [~, index] = sort(score, 'ascend')
        ap, cmc = matlab_compute_ap(good_image, junk_image, index)
        aps.append(ap)
        cmcs.append(cmc)
    return np.mean(cmcs, axis=0), float(np.mean(aps)), len(aps)


# -- random problems ------------------------------------------------------------------------------
def _embeddings(rng: np.random.Generator, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    x = centres[labels + 1] + 0.7 * rng.standard_normal((len(labels), centres.shape[1]))
    return (np.round(x * 32) / 32).astype(np.float32)  # exact squared distances: no fp ties


def market_problem(seed: int = 0) -> dict[str, Any]:
    """Queries and a gallery of identities 1..30 over 6 cameras, with junk (-1) and
    distractors (0) in the gallery."""
    rng = np.random.default_rng(seed)
    dim, ids = 10, 30
    centres = rng.standard_normal((ids + 2, dim))
    ql = rng.integers(1, ids + 1, 50)
    gl = rng.integers(1, ids + 1, 300)
    gl[rng.random(300) < 0.12] = -1
    gl[rng.random(300) < 0.12] = 0
    return {
        "query": _embeddings(rng, ql, centres),
        "query_labels": ql,
        "gallery": _embeddings(rng, gl, centres),
        "gallery_labels": gl,
        "query_cams": rng.integers(0, 6, 50),
        "gallery_cams": rng.integers(0, 6, 300),
    }


def mars_problem(seed: int = 1) -> dict[str, Any]:
    """Test tracklets (identities 1..25, junk -1, distractors 0) and 40 query tracklets
    taken from them, as MARS's ``query_IDX`` does."""
    rng = np.random.default_rng(seed)
    dim, ids, n = 10, 25, 200
    centres = rng.standard_normal((ids + 2, dim))
    labels = rng.integers(1, ids + 1, n)
    labels[rng.random(n) < 0.1] = -1
    labels[rng.random(n) < 0.1] = 0
    cams = rng.integers(0, 6, n)
    candidates = np.flatnonzero(labels > 0)
    query_idx = np.sort(rng.choice(candidates, 40, replace=False))
    return {
        "test": _embeddings(rng, labels, centres),
        "labels": labels,
        "cams": cams,
        "query_idx": query_idx,
    }


def _official(case: dict[str, Any], distance: str) -> dict[str, Any]:
    return evaluate(**case, distance=distance, max_rank=MAX_RANK, convention="official")


def _matlab(case: dict[str, Any], distance: str) -> tuple[np.ndarray, float, int]:
    # the MATLAB code sorts distances ascending; cosine similarity enters as 1 - similarity
    dist = reference_distances(case["query"], case["gallery"], distance).T
    return matlab_evaluation(
        dist, case["gallery_labels"], case["query_labels"], case["gallery_cams"],
        case["query_cams"],
    )  # fmt: skip


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_official_market_equals_the_matlab_code(distance: str) -> None:
    case = market_problem()
    got = _official(case, distance)
    cmc, mean_ap, n = _matlab(case, distance)
    assert got["num_valid_queries"] == n
    assert got["map"] == pytest.approx(mean_ap, abs=1e-9)
    np.testing.assert_allclose(got["cmc"], cmc[:MAX_RANK], rtol=0, atol=1e-9)
    assert got["recall@1"] == pytest.approx(cmc[0], abs=1e-9)
    # the convention changes the AP, and only the AP
    torchreid = evaluate(**case, distance=distance, max_rank=MAX_RANK)
    assert abs(torchreid["map"] - got["map"]) > 1e-4
    np.testing.assert_array_equal(torchreid["cmc"], got["cmc"])
    for key in ("map@r", "r_precision", "minp", "num_skipped_queries"):
        assert torchreid[key] == got[key], key


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_torchreid_is_the_default_and_equals_the_reference(distance: str) -> None:
    case = market_problem()
    default = evaluate(**case, distance=distance, max_rank=MAX_RANK)
    named = evaluate(**case, distance=distance, max_rank=MAX_RANK, convention="torchreid")
    ref = reference_evaluate(**case, metric=distance, max_rank=MAX_RANK)
    assert default["map"] == named["map"] == pytest.approx(ref["map"], abs=1e-9)
    np.testing.assert_allclose(default["cmc"], ref["cmc"], rtol=0, atol=1e-9)


def test_official_mars_ranks_all_test_tracklets_as_the_matlab_code() -> None:
    """MARS: every query tracklet against all test tracklets (itself included: same identity
    and camera, so junk), against evaluation_mars.m on the same distances."""
    case = mars_problem()
    test, labels, cams, q = case["test"], case["labels"], case["cams"], case["query_idx"]
    got = evaluate(
        test[q], labels[q], test, labels, cams[q], cams,
        distance="euclidean", max_rank=MAX_RANK, convention="official",
    )  # fmt: skip
    dist = reference_distances(test, test[q], "euclidean")  # gallery × query, as in test_mars.m
    cmc, mean_ap, n = matlab_evaluation(dist, labels, labels[q], cams, cams[q])
    assert got["num_valid_queries"] == n
    assert got["map"] == pytest.approx(mean_ap, abs=1e-9)
    np.testing.assert_allclose(got["cmc"], cmc[:MAX_RANK], rtol=0, atol=1e-9)
    # the torchreid convention: the gallery is the test tracklets that are not queries
    rest = np.setdiff1d(np.arange(len(labels)), q)
    torchreid = evaluate(
        test[q], labels[q], test[rest], labels[rest], cams[q], cams[rest],
        distance="euclidean", max_rank=MAX_RANK,
    )  # fmt: skip
    ref = reference_evaluate(
        test[q], labels[q], test[rest], labels[rest], cams[q], cams[rest],
        metric="euclidean", max_rank=MAX_RANK,
    )  # fmt: skip
    assert torchreid["map"] == pytest.approx(ref["map"], abs=1e-9)
    assert abs(torchreid["map"] - got["map"]) > 1e-4


def test_official_mars_through_the_evaluator_flags() -> None:
    """The evaluator with the queries flagged as gallery items too (what the pipeline does for
    MARS under `official`) equals evaluate on all test tracklets."""
    case = mars_problem()
    test, labels, cams, q = case["test"], case["labels"], case["cams"], case["query_idx"]
    is_query = np.zeros(len(labels), bool)
    is_query[q] = True
    options = EvalOptions(distance="euclidean", convention="official")
    metric = RetrievalEvaluator(options=options)
    metric.update(
        torch.from_numpy(test), torch.from_numpy(labels), torch.from_numpy(cams),
        torch.arange(len(labels)), torch.from_numpy(is_query), torch.ones(len(labels)).bool(),
    )  # fmt: skip
    got = metric.compute()
    dist = reference_distances(test, test[q], "euclidean")
    cmc, mean_ap, n = matlab_evaluation(dist, labels, labels[q], cams, cams[q])
    assert got["num_valid_queries"] == n
    assert got["map"] == pytest.approx(mean_ap, abs=1e-9)
    assert got["recall@1"] == pytest.approx(cmc[0], abs=1e-9)


def test_official_ap_on_hand_written_ranks() -> None:
    # positives at ranks 1 and 3 of the non-junk ranking, R = 2:
    # (1/2) [ (1/1 + 1)/2 + (2/3 + 1/2)/2 ] = (1/2) [1 + 7/12] = 19/24
    ranks = torch.tensor([[1.0, 3.0], [2.0, float("inf")]], dtype=torch.float64)
    got = OfficialAveragePrecision()(ranks, torch.tensor([2, 1]))
    # second query: one positive at rank 2: (1/2 + 0)/2 = 1/4
    torch.testing.assert_close(got, torch.tensor([19 / 24, 1 / 4], dtype=torch.float64))


def test_the_convention_is_checked_and_replaces_only_the_builtin_map() -> None:
    with pytest.raises(ValueError, match="convention: expected one of"):
        EvalOptions(convention="matlab")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="convention: expected one of"):
        evaluate(np.eye(3, dtype=np.float32), np.arange(3), convention="bad")

    class OwnMap(MeanAveragePrecision):
        name = "own_map"

    swapped = for_convention([MeanAveragePrecision(), OwnMap()], "official")
    assert isinstance(swapped[0], OfficialAveragePrecision) and type(swapped[1]) is OwnMap
    kept = for_convention([MeanAveragePrecision()], "torchreid")
    assert type(kept[0]) is MeanAveragePrecision

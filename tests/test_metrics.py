"""embedlab.metrics against a brute-force reference written from the protocol definitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from embedlab.metrics import (
    EvalOptions,
    RetrievalEvaluator,
    average_query_expansion,
    default_metrics,
    evaluate,
    k_reciprocal_rerank,
    knn,
)
from metrics_reference import reference_distances, reference_evaluate, reference_k_reciprocal

KS = (1, 3, 5, 10, 100)
MAX_RANK = 20
STRATEGIES = ["auto", "candidates", "sort", "alternate", "torch"]


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under every ranking strategy (they must agree exactly)."""
    import embedlab.metrics.positive_ranks as ranking

    monkeypatch.setattr(ranking, "CPU_STRATEGY", request.param)
    return str(request.param)


def assert_same(got: dict[str, Any], ref: dict[str, Any], atol: float = 1e-6) -> None:
    for key, value in ref.items():
        assert key in got, key
        if key == "cmc":
            assert isinstance(got[key], np.ndarray)
            np.testing.assert_allclose(got[key], value, atol=atol, rtol=0, err_msg=key)
        elif key.startswith("num_"):
            assert got[key] == value, key
        else:
            assert isinstance(got[key], float), key
            assert 0.0 <= got[key] <= 1.0, key
            assert got[key] == pytest.approx(value, abs=atol), key


def random_set(
    rng: np.random.Generator,
    n: int,
    dim: int,
    num_labels: int,
    clustered: bool,
    centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = rng.integers(0, num_labels, n)
    if clustered:
        assert centres is not None
        x = centres[labels] + 0.6 * rng.standard_normal((n, dim))
    else:
        x = rng.standard_normal((n, dim))
    cams = rng.integers(0, 4, n)
    # Multiples of 1/32: squared Euclidean distances are exact in float32 and float64 alike, so
    # the float32 implementation and the float64 reference see the same ties.
    return (np.round(x * 32) / 32).astype(np.float32), labels, cams


def reid_case(seed: int, clustered: bool) -> dict[str, Any]:
    """Query/gallery with cameras, junk (-1), distractors (0) and queries without positives."""
    rng = np.random.default_rng(seed)
    dim, num_labels = 12, 25
    centres = rng.standard_normal((num_labels + 5, dim))
    q, ql, qc = random_set(rng, 60, dim, num_labels, clustered, centres)
    g, gl, gc = random_set(rng, 240, dim, num_labels, clustered, centres)
    gl[rng.random(240) < 0.1] = -1  # junk
    gl[rng.random(240) < 0.1] = 0  # distractors: an ordinary label
    ql[:3] = num_labels + 2  # labels absent from the gallery: skipped
    # a query whose only gallery matches share its camera: skipped
    ql[3], qc[3] = num_labels + 3, 1
    gl[:2], gc[:2] = num_labels + 3, 1
    return {"query": q, "query_labels": ql, "gallery": g, "gallery_labels": gl,
            "query_cams": qc, "gallery_cams": gc}  # fmt: skip


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("clustered", [False, True])
def test_reid_protocol_matches_reference(metric: str, clustered: bool, strategy: str) -> None:
    case = reid_case(0, clustered)
    got = evaluate(**case, distance=metric, ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(**case, metric=metric, ks=KS, max_rank=MAX_RANK)
    assert ref["num_skipped_queries"] >= 4
    assert_same(got, ref)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_query_gallery_without_cameras(metric: str) -> None:
    case = reid_case(1, True)
    del case["query_cams"], case["gallery_cams"]
    got = evaluate(**case, distance=metric, ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(**case, metric=metric, ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("clustered", [False, True])
def test_leave_one_out_matches_reference(metric: str, clustered: bool, strategy: str) -> None:
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((30, 10))
    x, labels, _ = random_set(rng, 250, 10, 30, clustered, centres)
    labels[:2] = [98, 99]  # singletons: no positive besides themselves
    got = evaluate(x, labels, distance=metric, ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(x, labels, metric=metric, ks=KS, max_rank=MAX_RANK)
    assert got["num_skipped_queries"] == ref["num_skipped_queries"] == 2
    assert_same(got, ref)


def test_junk_queries_and_leave_one_out_with_junk(strategy: str) -> None:
    case = reid_case(19, True)
    case["query_labels"][5:9] = -1  # junk queries: skipped
    got = evaluate(**case, ks=KS, max_rank=MAX_RANK, return_per_query=True)
    ref = reference_evaluate(**case, ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)
    assert (got["per_query"]["num_positives"][5:9] == 0).all()
    x, labels = case["gallery"], case["gallery_labels"]
    assert_same(evaluate(x, labels, ks=KS), reference_evaluate(x, labels, ks=KS))
    # everything junk: nothing to evaluate, but no crash
    with pytest.warns(RuntimeWarning):
        res = evaluate(x[:5], np.full(5, -1), ks=(1,))
    assert res["num_skipped_queries"] == 5


def test_leave_one_out_with_cameras(strategy: str) -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((15, 8))
    x, labels, cams = random_set(rng, 150, 8, 15, True, centres)
    got = evaluate(x, labels, query_cams=cams, ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(x, labels, query_cams=cams, ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ties_with_duplicated_embeddings(metric: str, strategy: str) -> None:
    """Duplicates tie exactly; ties must go to the smaller gallery index."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((20, 6)).astype(np.float32)
    g_src = rng.integers(0, 20, 200)
    g = base[g_src]  # many exact duplicates
    gl = rng.integers(0, 8, 200)
    gl[rng.random(200) < 0.1] = -1
    q = base[rng.integers(0, 20, 50)]  # queries equal to gallery items: distance 0 ties
    ql = rng.integers(0, 8, 50)
    qc, gc = rng.integers(0, 2, 50), rng.integers(0, 2, 200)
    got = evaluate(q, ql, g, gl, qc, gc, distance=metric, ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(q, ql, g, gl, qc, gc, metric=metric, ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)
    got = evaluate(g, gl, distance=metric, ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(g, gl, metric=metric, ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)


def test_ties_with_integer_embeddings_euclidean(strategy: str) -> None:
    """Small integer vectors: distances are exact integers and massively tied."""
    rng = np.random.default_rng(5)
    g = rng.integers(-2, 3, (300, 3)).astype(np.float32)
    gl = rng.integers(0, 10, 300)
    q = rng.integers(-2, 3, (40, 3)).astype(np.float32)
    ql = rng.integers(0, 10, 40)
    got = evaluate(q, ql, g, gl, distance="euclidean", ks=KS, max_rank=MAX_RANK)
    ref = reference_evaluate(q, ql, g, gl, metric="euclidean", ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)
    got = evaluate(g, gl, distance="euclidean", ks=KS, max_rank=MAX_RANK, chunk_size=7)
    ref = reference_evaluate(g, gl, metric="euclidean", ks=KS, max_rank=MAX_RANK)
    assert_same(got, ref)


def test_query_and_gallery_ids_exclude_shared_samples() -> None:
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((10, 8))
    x, labels, _ = random_set(rng, 120, 8, 10, True, centres)
    ids = rng.permutation(1000)[:120]
    qi = np.arange(0, 80)  # queries 0..79, gallery 40..119: 40 shared samples
    gi = np.arange(40, 120)
    got = evaluate(
        x[qi], labels[qi], x[gi], labels[gi], query_ids=ids[qi], gallery_ids=ids[gi], ks=KS
    )
    ref = reference_evaluate(
        x[qi], labels[qi], x[gi], labels[gi], query_ids=ids[qi], gallery_ids=ids[gi], ks=KS
    )
    assert_same(got, ref)


def test_chunk_size_does_not_change_results(strategy: str) -> None:
    case = reid_case(7, True)
    full = evaluate(**case, ks=KS, max_rank=MAX_RANK, chunk_size=10_000)
    for chunk in (1, 7, 60):
        other = evaluate(**case, ks=KS, max_rank=MAX_RANK, chunk_size=chunk)
        for key, value in full.items():
            if key == "cmc":
                assert np.array_equal(value, other[key])
            else:
                assert value == other[key], (chunk, key)
    loo = evaluate(case["gallery"], case["gallery_labels"], chunk_size=None)
    loo1 = evaluate(case["gallery"], case["gallery_labels"], chunk_size=1)
    assert np.array_equal(loo.pop("cmc"), loo1.pop("cmc"))
    assert loo == loo1


def test_perfect_and_inputs_types() -> None:
    x = torch.eye(6).repeat(2, 1)  # two identical copies of 6 orthogonal items
    labels = torch.arange(6).repeat(2)
    res = evaluate(x, labels, ks=(1,), max_rank=3)
    for key in ("recall@1", "map", "map@r", "r_precision", "precision@1", "minp"):
        assert res[key] == 1.0
    np.testing.assert_array_equal(res["cmc"], np.ones(3))
    assert res["num_valid_queries"] == 12
    res_np = evaluate(x.numpy().astype(np.float64), labels.numpy(), ks=(1,), max_rank=3)
    assert res_np["map"] == 1.0


def test_hand_computed_example() -> None:
    """One query, gallery ranked by construction: + - + - - + (positives at ranks 1, 3, 6)."""
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    angles = np.linspace(0.0, 1.5, 6)
    g = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    gl = np.array([7, 1, 7, 2, 3, 7])
    res = evaluate(q, [7], g, gl, ks=(1, 2, 3), max_rank=6)
    assert res["map"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert res["map@r"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert res["r_precision"] == pytest.approx(2 / 3)
    assert res["minp"] == pytest.approx(3 / 6)
    assert res["recall@2"] == 1.0
    np.testing.assert_array_equal(res["cmc"], np.ones(6))


def test_per_query_output_and_nmi() -> None:
    case = reid_case(8, True)
    res = evaluate(**case, return_per_query=True, compute_nmi=True)
    per = res["per_query"]
    valid = per["num_positives"] > 0
    assert valid.sum() == res["num_valid_queries"]
    assert per["map"][valid].mean() == pytest.approx(res["map"])
    assert np.nanmean(per["minp"]) == pytest.approx(res["minp"])
    assert np.isnan(per["map"][~valid]).all() and per["cmc"].shape == (len(valid), 50)
    ranks = per["ranks"][valid]
    with np.errstate(invalid="ignore"):  # inf - inf in the padding
        steps = np.diff(ranks, axis=1)
    assert (steps[np.isfinite(ranks[:, 1:])] > 0).all()  # increasing, then inf-padded
    assert 0.0 <= res["nmi"] <= 1.0
    x = np.repeat(np.eye(4, dtype=np.float32) * 10, 5, axis=0)
    assert evaluate(x, np.repeat(np.arange(4), 5), compute_nmi=True)["nmi"] == pytest.approx(1.0)


def test_no_valid_query_warns_and_returns_zeros() -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="no query"):
        res = evaluate(x, np.arange(5), ks=(1,), max_rank=4)
    assert res["num_valid_queries"] == 0 and res["num_skipped_queries"] == 5
    assert res["map"] == 0.0 and res["recall@1"] == 0.0
    assert res["cmc"].shape == (4,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"query": np.zeros((0, 4))}, "query"),
        ({"query_labels": np.zeros(3)}, "query_labels"),
        ({"gallery": np.ones((6, 5))}, "gallery"),
        ({"gallery_labels": np.zeros(5)}, "gallery_labels"),
        ({"gallery_labels": None}, "gallery_labels"),
        ({"query": np.full((4, 4), np.nan)}, "query"),
        ({"gallery": np.array([[np.inf] * 4] * 6)}, "gallery"),
        ({"query_cams": np.zeros(4)}, "gallery_cams"),
        ({"query_cams": np.zeros(3), "gallery_cams": np.zeros(6)}, "query_cams"),
        ({"distance": "manhattan"}, "distance"),
        ({"metrics": [object()]}, "metrics"),
        ({"ks": (0, 1)}, "ks"),
        ({"max_rank": 0}, "max_rank"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"query": np.ones(4)}, "query"),
        ({"query_labels": np.full(4, 0.5)}, "query_labels"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "query": np.ones((4, 4), dtype=np.float32),
        "query_labels": np.zeros(4, dtype=np.int64),
        "gallery": np.ones((6, 4), dtype=np.float32),
        "gallery_labels": np.zeros(6, dtype=np.int64),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        evaluate(**args)


def test_bad_input_leave_one_out() -> None:
    with pytest.raises(ValueError, match="gallery_cams"):
        evaluate(np.ones((3, 2)), np.zeros(3), gallery_cams=np.zeros(3))
    with pytest.raises(ValueError, match="gallery_labels"):
        evaluate(np.ones((3, 2)), np.zeros(3), gallery_labels=np.zeros(3))


# --------------------------------------------------------------------------- torchmetrics wrapper


def _wrapper_dataset(seed: int) -> dict[str, torch.Tensor]:
    case = reid_case(seed, True)
    nq, ng = len(case["query"]), len(case["gallery"])
    return {
        "embeddings": torch.from_numpy(np.concatenate([case["query"], case["gallery"]])),
        "labels": torch.from_numpy(np.concatenate([case["query_labels"], case["gallery_labels"]])),
        "cameras": torch.from_numpy(np.concatenate([case["query_cams"], case["gallery_cams"]])),
        "is_query": torch.arange(nq + ng) < nq,
    }


def test_wrapper_shuffled_with_padding_duplicates_equals_evaluate() -> None:
    data = _wrapper_dataset(9)
    n = len(data["labels"])
    # indices as a dataset would number them: a random permutation of positions
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    order = torch.cat([perm, perm[:5]])  # padding: the first items again, as DistributedSampler
    metric = RetrievalEvaluator(default_metrics(KS, MAX_RANK), EvalOptions(chunk_size=13))
    for batch in order.split(17):
        metric.update(
            data["embeddings"][batch],
            data["labels"][batch],
            data["cameras"][batch],
            batch,
            data["is_query"][batch],
            ~data["is_query"][batch],
        )
    got = metric.compute()
    q = data["is_query"]
    ref = evaluate(
        data["embeddings"][q],
        data["labels"][q],
        data["embeddings"][~q],
        data["labels"][~q],
        data["cameras"][q],
        data["cameras"][~q],
        ks=KS,
        max_rank=MAX_RANK,
    )
    assert set(got) == set(ref)
    for key, value in got.items():
        np.testing.assert_array_equal(value, ref[key], err_msg=key)
    metric.reset()
    assert metric.embeddings == []


def test_wrapper_leave_one_out_and_unknown_cameras() -> None:
    rng = np.random.default_rng(10)
    centres = rng.standard_normal((12, 8))
    x, labels, _ = random_set(rng, 100, 8, 12, True, centres)
    metric = RetrievalEvaluator(default_metrics((1, 5)))
    idx = torch.arange(100)
    for batch in idx.flip(0).split(30):
        metric.update(
            torch.from_numpy(x)[batch],
            torch.from_numpy(labels)[batch],
            torch.full((len(batch),), -1),
            batch,
            torch.ones(len(batch), dtype=torch.bool),
            torch.ones(len(batch), dtype=torch.bool),
        )
    got = metric.compute()
    ref = evaluate(x, labels, ks=(1, 5))
    for key, value in got.items():
        np.testing.assert_array_equal(value, ref[key], err_msg=key)


def test_wrapper_mixed_flags_excludes_the_query_itself() -> None:
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((10, 8))
    x, labels, _ = random_set(rng, 90, 8, 10, True, centres)
    is_query = torch.arange(90) < 60
    is_gallery = torch.arange(90) >= 30  # items 30..59 are both
    metric = RetrievalEvaluator(default_metrics((1,)))
    metric.update(torch.from_numpy(x), torch.from_numpy(labels), None, torch.arange(90),
                  is_query, is_gallery)  # fmt: skip
    got = metric.compute()
    ref = reference_evaluate(
        x[:60], labels[:60], x[30:], labels[30:], ks=(1,),
        query_ids=np.arange(60), gallery_ids=np.arange(30, 90),
    )  # fmt: skip
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, atol=1e-9, rtol=0, err_msg=key)


def test_wrapper_after_sync_state_is_a_tensor() -> None:
    """After a DDP sync torchmetrics may leave a list state as one concatenated tensor."""
    rng = np.random.default_rng(12)
    x = torch.from_numpy(rng.standard_normal((40, 4)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 5, 40))
    metric = RetrievalEvaluator(default_metrics((1,)))
    metric.update(x[:20], labels[:20], None, torch.arange(20))
    metric.update(x[20:], labels[20:], None, torch.arange(20, 40))
    expected = metric.compute()
    metric.update(x[:0], labels[:0], None, torch.arange(0))  # a new update drops the cache
    for name in ("embeddings", "labels", "cameras", "indices", "flags"):
        setattr(metric, name, torch.cat(getattr(metric, name)))
    got = metric.compute()
    assert got is not expected
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


# ------------------------------------------------------------------------------------ re-ranking


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_k_reciprocal_matches_dense_reference(metric: str) -> None:
    rng = np.random.default_rng(13)
    centres = rng.standard_normal((8, 6))
    q, ql, _ = random_set(rng, 30, 6, 8, True, centres)
    g, gl, _ = random_set(rng, 90, 6, 8, True, centres)
    k1, k2 = 8, 3
    ref = reference_k_reciprocal(q, g, metric, k1=k1, k2=k2, lambda_value=0.3)
    got = k_reciprocal_rerank(q, g, metric, k1=k1, k2=k2, lambda_value=0.3, chunk_size=7)
    np.testing.assert_allclose(got.numpy(), ref, atol=2e-6)
    res = evaluate(q, ql, g, gl, distance=metric, ks=KS, max_rank=MAX_RANK, chunk_size=11,
                   rerank=True, rerank_k1=k1, rerank_k2=k2)  # fmt: skip
    expected = reference_evaluate(q, ql, g, gl, ks=KS, max_rank=MAX_RANK, distances=ref)
    assert_same(res, expected)


def test_k_reciprocal_leave_one_out_and_defaults() -> None:
    rng = np.random.default_rng(14)
    centres = rng.standard_normal((6, 5))
    x, labels, _ = random_set(rng, 80, 5, 6, True, centres)
    ref = reference_k_reciprocal(x, None, "cosine")
    got = k_reciprocal_rerank(x, None)
    np.testing.assert_allclose(got.numpy(), ref, atol=2e-6)
    res = evaluate(x, labels, rerank=True, ks=KS, max_rank=MAX_RANK)
    assert_same(res, reference_evaluate(x, labels, ks=KS, max_rank=MAX_RANK, distances=ref))


def test_average_query_expansion() -> None:
    rng = np.random.default_rng(15)
    q = rng.standard_normal((10, 4)).astype(np.float32)
    g = rng.standard_normal((50, 4)).astype(np.float32)
    got = average_query_expansion(q, g, 3, distance="euclidean").numpy()
    d = reference_distances(q, g, "euclidean")
    for i in range(10):
        nearest = sorted(range(50), key=lambda j, i=i: (d[i, j], j))[:3]
        np.testing.assert_allclose(got[i], (q[i] + g[nearest].sum(0)) / 4, atol=1e-6)
    cos = average_query_expansion(q, g, 3).numpy()
    np.testing.assert_allclose(np.linalg.norm(cos, axis=1), 1.0, atol=1e-6)
    res = evaluate(q, rng.integers(0, 3, 10), g, rng.integers(0, 3, 50), query_expansion=2)
    assert res["num_valid_queries"] == 10
    # leave-one-out: the neighbours come from the set itself, never the item itself
    loo = average_query_expansion(g, None, 2, distance="euclidean", exclude_self=True).numpy()
    d = reference_distances(g, g, "euclidean")
    nearest = [j for j in sorted(range(50), key=lambda j: (d[0, j], j)) if j != 0][:2]
    np.testing.assert_allclose(loo[0], (g[0] + g[nearest].sum(0)) / 3, atol=1e-6)
    res = evaluate(g, rng.integers(0, 3, 50), query_expansion=2)
    assert res["num_valid_queries"] == 50


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_is_exact_with_ties_by_index(metric: str) -> None:
    rng = np.random.default_rng(16)
    base = rng.standard_normal((15, 5)).astype(np.float32)
    g = base[rng.integers(0, 15, 120)]  # heavy ties
    q = base[rng.integers(0, 15, 30)]
    dist, idx = knn(q, g, 12, distance=metric)
    ref = reference_distances(q, g, metric)
    for i in range(30):
        expected = sorted(range(120), key=lambda j, i=i: (ref[i, j], j))[:12]
        assert idx[i].tolist() == expected
        np.testing.assert_allclose(dist[i].numpy(), ref[i, expected], atol=1e-5)
    _, idx_self = knn(g, None, 10, distance=metric, exclude_self=True)
    ref_self = reference_distances(g, g, metric)
    for i in range(120):
        expected = [j for j in sorted(range(120), key=lambda j, i=i: (ref_self[i, j], j)) if j != i]
        assert idx_self[i].tolist() == expected[:10]


# ------------------------------------------------------------------------------ metric objects


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize(
    "metric",
    [*default_metrics(KS, MAX_RANK)],
    ids=lambda m: m.name,
)
def test_each_builtin_metric_object_equals_the_reference(metric: Any, distance: str) -> None:
    for case in (reid_case(21, True), reid_case(22, False)):
        got = evaluate(**case, metrics=[metric], distance=distance)
        ref = reference_evaluate(**case, metric=distance, ks=KS, max_rank=MAX_RANK)
        assert set(got) == {metric.name, "num_valid_queries", "num_skipped_queries"}
        np.testing.assert_allclose(got[metric.name], ref[metric.name], atol=1e-6, rtol=0)


def test_builtin_metrics_on_hand_written_ranks() -> None:
    from embedlab.metrics import MAPAtR, MeanAveragePrecision, RecallAtK

    inf = float("inf")
    ranks = torch.tensor([[1.0, 3.0, 6.0], [2.0, inf, inf]], dtype=torch.float64)
    num_pos = torch.tensor([3, 1])
    torch.testing.assert_close(
        MeanAveragePrecision()(ranks, num_pos),
        torch.tensor([(1 + 2 / 3 + 3 / 6) / 3, 1 / 2], dtype=torch.float64),
    )
    torch.testing.assert_close(
        MAPAtR()(ranks, num_pos), torch.tensor([(1 + 2 / 3) / 3, 0.0], dtype=torch.float64)
    )
    assert RecallAtK(2)(ranks, num_pos).tolist() == [1.0, 1.0]
    assert RecallAtK(1)(ranks, num_pos).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="RecallAtK.k"):
        RecallAtK(0)


def test_a_metric_from_outside_embedlab_is_averaged_over_valid_queries() -> None:
    from custom_metric import NDCG

    case = reid_case(23, True)
    res = evaluate(**case, metrics=[NDCG(k=5)], return_per_query=True)
    per = res["per_query"]
    valid = per["num_positives"] > 0
    assert res["ndcg@5"] == pytest.approx(per["ndcg@5"][valid].mean())
    # by hand from the reference ranking
    ql, gl, qc, gc = (
        case[k] for k in ("query_labels", "gallery_labels", "query_cams", "gallery_cams")
    )
    dist = reference_distances(case["query"], case["gallery"], "cosine")
    expected = []
    for i in range(len(ql)):
        order = sorted(range(len(gl)), key=lambda j, i=i: (dist[i, j], j))
        kept = [j for j in order if gl[j] != -1 and not (gl[j] == ql[i] and gc[j] == qc[i])]
        rel = [float(gl[j] == ql[i]) for j in kept]
        if sum(rel) == 0:
            continue
        dcg = sum(r / np.log2(p + 2) for p, r in enumerate(rel[:5]))
        ideal = sum(1 / np.log2(p + 2) for p in range(min(5, int(sum(rel)))))
        expected.append(dcg / ideal)
    assert res["ndcg@5"] == pytest.approx(float(np.mean(expected)), abs=1e-6)
    with pytest.raises(ValueError, match="two metrics are named 'ndcg@5'"):
        evaluate(**case, metrics=[NDCG(k=5), NDCG(k=5)])


def test_the_exclusion_rule_is_the_protocol() -> None:
    from embedlab.metrics.retrieval import excluded

    case = reid_case(25, True)
    ql, qc = case["query_labels"], case["query_cams"]
    gl, gc = case["gallery_labels"], case["gallery_cams"]
    for i in range(len(ql)):
        expected = [gl[j] == -1 or (gl[j] == ql[i] and gc[j] == qc[i]) for j in range(len(gl))]
        assert excluded(ql[i], qc[i], gl, gc).tolist() == expected
    assert excluded(ql[0], qc[0], gl, None, junk_label=None).sum() == 0


def test_any_object_with_a_name_and_call_is_a_metric() -> None:
    class HitsAt3:  # no embedlab base class
        name = "hits@3"

        def __call__(self, ranks: torch.Tensor, num_positives: torch.Tensor) -> torch.Tensor:
            return (ranks <= 3).sum(1, dtype=torch.float64)

    case = reid_case(24, True)
    res = evaluate(**case, metrics=[HitsAt3()], return_per_query=True)
    ranks = res["per_query"]["ranks"][res["per_query"]["num_positives"] > 0]
    assert res["hits@3"] == pytest.approx((ranks <= 3).sum(1).mean())
    with pytest.raises(ValueError, match="metric 'bad': returned shape"):
        bad = HitsAt3()
        bad.name = "bad"
        bad.__class__.__call__ = lambda self, r, n: r.sum()  # type: ignore[method-assign]
        evaluate(**case, metrics=[bad])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    case = reid_case(18, True)
    cpu = evaluate(**case)
    cuda_case = {k: torch.as_tensor(v).cuda() for k, v in case.items()}
    gpu = evaluate(**cuda_case)
    assert_same(gpu, cpu, atol=1e-5)

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from embedlab.data.sampler import PKBatchSampler


def labels_with_sizes(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("p,k", [(4, 2), (3, 4), (8, 3)])
def test_every_batch_is_p_by_k_with_distinct_identities(p: int, k: int) -> None:
    labels = labels_with_sizes([5, 1, 7, 2, 9, 3, 4, 6, 8, 2, 3])
    with pytest.warns(UserWarning, match="single image"):
        sampler = PKBatchSampler(labels, p, k, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // (p * k)
    for batch in batches:
        assert len(batch) == p * k
        counts = Counter(labels[batch].tolist())
        assert len(counts) == p
        assert set(counts.values()) == {k}


def test_identity_with_enough_images_has_no_repeats_in_a_batch() -> None:
    labels = labels_with_sizes([6] * 6)
    for batch in PKBatchSampler(labels, 3, 4, seed=0, batches_per_epoch=20):
        assert len(set(batch)) == len(batch)


def test_small_identities_are_drawn_with_replacement() -> None:
    labels = labels_with_sizes([1, 1, 1, 2])
    with pytest.warns(UserWarning, match="3 of 4 training identities have a single image"):
        sampler = PKBatchSampler(labels, 4, 3, seed=0)
    batch = next(iter(sampler))
    assert Counter(labels[batch].tolist()) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert sorted(Counter(batch).values()) == [1, 2, 3, 3, 3]  # identity 3 uses both its images


def test_deterministic_by_seed_and_epoch() -> None:
    labels = labels_with_sizes([4] * 12)
    a, b, c = (PKBatchSampler(labels, 4, 2, seed=s) for s in (1, 1, 2))
    assert list(a) == list(b)
    assert list(a) != list(c)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_every_image_is_visited_evenly() -> None:
    labels = labels_with_sizes([4] * 10)
    sampler = PKBatchSampler(labels, 5, 4, seed=0, batches_per_epoch=20)
    seen = Counter(i for batch in sampler for i in batch)
    assert set(seen) == set(range(len(labels)))
    assert max(seen.values()) - min(seen.values()) <= 1


def test_ranks_get_disjoint_identities_and_equal_length() -> None:
    labels = labels_with_sizes([3, 5, 4, 6, 2, 7, 3, 5, 4, 4])
    ranks = [PKBatchSampler(labels, 2, 3, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(labels) // 12
    for b0, b1 in zip(*ranks, strict=True):
        assert not set(labels[b0]) & set(labels[b1])
    # both ranks together draw what one process drawing 2·P identities would
    whole = PKBatchSampler(labels, 4, 3, seed=7)
    merged = [b0 + b1 for b0, b1 in zip(*ranks, strict=True)]
    assert merged == list(whole)


def test_too_few_identities_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"data\.p=6.*only 5"):
        PKBatchSampler(labels_with_sizes([2] * 5), 6, 2)


def test_more_ranks_than_identities_allow_draw_p_per_rank_with_one_warning() -> None:
    labels = labels_with_sizes([4] * 10)
    with pytest.warns(UserWarning, match=r"data\.p=6 × 2 ranks exceeds the 10") as record:
        ranks = [PKBatchSampler(labels, 6, 2, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(record) == 1  # rank 0 only
    assert len(ranks[0]) == len(ranks[1]) == len(labels) // 24
    overlap = 0
    for b0, b1 in zip(*ranks, strict=True):
        for batch in (b0, b1):
            assert len(batch) == 12 and len(set(labels[batch])) == 6
        overlap += len(set(labels[b0]) & set(labels[b1]))
    assert overlap > 0  # 12 identities wanted, 10 exist: some are on both ranks

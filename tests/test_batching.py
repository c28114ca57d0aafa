"""Batching: negative sampling, fixed-shape batches, multi-domain batches, sharding."""

import numpy as np
import pytest

from jaxrec import batching as B
from jaxrec import data as D


@pytest.fixture(scope="module")
def ds():
    dataset, _ = D.synthetic(n_users=400, n_items=(120, 80), interactions_per_user=(10.0, 6.0), seed=1)
    return dataset


def test_negatives_exclude_seen_items(ds):
    seen = ds.seen("target")
    sampler = B.NegativeSampler(ds.n_items("target"), seen=seen)
    users = np.repeat(np.arange(ds.n_users), 5)
    neg = sampler(np.random.default_rng(0), users, n=7)
    assert neg.shape == (users.size, 7) and neg.dtype == np.int32
    assert neg.min() >= 0 and neg.max() < ds.n_items("target")
    for u, row in zip(users, neg):
        assert not np.isin(row, seen.row(u)).any()


def test_uniform_negatives_are_uniform():
    sampler = B.NegativeSampler(10)
    neg = sampler(np.random.default_rng(0), np.zeros(50_000, np.int32), n=2)
    freq = np.bincount(neg.ravel(), minlength=10) / neg.size
    np.testing.assert_allclose(freq, 0.1, atol=0.01)


def test_popularity_negatives_follow_count_power():
    counts = np.array([0, 1, 3, 7, 15])
    sampler = B.NegativeSampler(5, alpha=0.5, item_counts=counts)
    neg = sampler(np.random.default_rng(0), np.zeros(200_000, np.int32))
    expected = np.sqrt(counts + 1.0) / np.sqrt(counts + 1.0).sum()
    np.testing.assert_allclose(np.bincount(neg.ravel(), minlength=5) / neg.size, expected, atol=0.005)


def test_sampler_errors():
    with pytest.raises(D.DataError, match="needs item_counts of shape"):
        B.NegativeSampler(5, alpha=1.0)
    seen = D.CSR.from_pairs(np.zeros(3, int), np.arange(3), 1)
    with pytest.raises(D.DataError, match="has seen all 3 items"):
        B.NegativeSampler(3, seen=seen)


def test_negatives_deterministic_given_seed(ds):
    sampler = B.NegativeSampler(ds.n_items("source"), seen=ds.seen("source"))
    users = np.arange(ds.n_users)
    a = sampler(np.random.default_rng(3), users, 4)
    b = sampler(np.random.default_rng(3), users, 4)
    np.testing.assert_array_equal(a, b)


def test_iterate_batches_fixed_shape_padding_and_coverage(ds):
    inter = ds.interactions("target")
    batches = list(
        B.iterate_batches(
            inter, 64, rng=np.random.default_rng(0), n_items=ds.n_items("target"), n_negatives=3, seen=ds.seen("target")
        )
    )
    assert len(batches) == -(-inter.size // 64)
    for b in batches:
        assert b["users"].shape == (64,) and b["negatives"].shape == (64, 3) and b["mask"].shape == (64,)
    assert int(sum(b["mask"].sum() for b in batches)) == inter.size
    assert not batches[-1]["mask"].all() or inter.size % 64 == 0
    # every interaction appears exactly once
    pairs = np.concatenate([b["users"][b["mask"]].astype(np.int64) * 1000 + b["items"][b["mask"]] for b in batches])
    expected = inter.users.astype(np.int64) * 1000 + inter.items
    np.testing.assert_array_equal(np.sort(pairs), np.sort(expected))
    dropped = list(B.iterate_batches(inter, 64, rng=np.random.default_rng(0), drop_remainder=True))
    assert len(dropped) == inter.size // 64 and all(b["mask"].all() for b in dropped)


def test_iterate_batches_deterministic(ds):
    inter = ds.interactions("source")
    a = [b["users"] for b in B.iterate_batches(inter, 100, rng=np.random.default_rng(9))]
    b = [b["users"] for b in B.iterate_batches(inter, 100, rng=np.random.default_rng(9))]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))


def test_multi_domain_batches_unequal_sizes(ds):
    inters = {name: ds.interactions(name) for name in ds.domain_names}
    sizes = {"source": 128, "target": 32}
    steps = list(
        B.multi_domain_batches(
            inters,
            sizes,
            rng=np.random.default_rng(0),
            n_items={n: ds.n_items(n) for n in ds.domain_names},
            n_negatives=1,
        )
    )
    assert len(steps) == max(-(-inters[n].size // sizes[n]) for n in sizes)
    for step in steps:
        assert step["source"]["users"].shape == (128,) and step["target"]["users"].shape == (32,)
        assert step["target"]["negatives"].shape == (32, 1)
    with pytest.raises(D.DataError, match="batch_sizes has domains"):
        next(B.multi_domain_batches(inters, {"source": 4}, rng=np.random.default_rng(0)))


def test_shard():
    batch = {"users": np.arange(16), "negatives": np.zeros((16, 3)), "nested": {"mask": np.ones(16, bool)}}
    out = B.shard(batch, 8)
    assert out["users"].shape == (8, 2) and out["negatives"].shape == (8, 2, 3)
    assert out["nested"]["mask"].shape == (8, 2)
    np.testing.assert_array_equal(out["users"][3], [6, 7])
    with pytest.raises(D.DataError, match=r"'users' with shape \(10,\) .* multiple of 8"):
        B.shard({"users": np.arange(10)}, 8)

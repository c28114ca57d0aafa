"""Tests for jaxrec.metrics: hand-worked examples, float64 numpy references, protocol details."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_negatives, ref_user_metrics
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import metrics as M

TOL = dict(rtol=1e-5, atol=1e-6)  # float32 metrics vs float64 references

_ranking = jax.jit(M.ranking_metrics, static_argnames="ks")
_ranking_per_user = jax.jit(M.ranking_metrics_per_user, static_argnames="ks")
_sampled = jax.jit(M.sampled_metrics, static_argnames="ks")
_rank = jax.jit(M.sampled_rank)


# --------------------------------------------------------------------------------------------------
# Independent float64 references.


def _ref_ranking(topk, positives, ks, where=None):
    """Loop-per-user float64 reference of the full-ranking metrics (means + count)."""
    sums, count = {}, 0
    for u in range(topk.shape[0]):
        if not (positives[u] >= 0).any() or (where is not None and not where[u]):
            continue
        count += 1
        for name, v in ref_user_metrics(topk[u], positives[u], ks).items():
            sums[name] = sums.get(name, 0.0) + v
    names = [f"{m}@{k}" for k in ks for m in ("Recall", "Precision", "NDCG", "HR", "MRR")] + ["MRR"]
    return {n: (sums.get(n, 0.0) / count if count else 0.0) for n in names}, count


def _ref_sampled(pos, neg, ks):
    """Float64 reference: rank with ties against the positive, then MRR/NDCG/HR/AUC per pair, averaged."""
    pos = np.asarray(pos, np.float64)
    neg = np.asarray(neg, np.float64)
    ranks = 1 + (neg >= pos[:, None]).sum(1)
    out = {"MRR": np.mean(1.0 / ranks)}
    for k in ks:
        out[f"NDCG@{k}"] = np.mean(np.where(ranks <= k, 1.0 / np.log2(1.0 + ranks), 0.0))
        out[f"HR@{k}"] = np.mean(ranks <= k)
    out["AUC"] = np.mean((neg < pos[:, None]).mean(1))
    return ranks, out


# --------------------------------------------------------------------------------------------------
# Full ranking: hand-worked.


def test_ranking_hand_worked():
    topk = jnp.array(
        [
            [3, 7, 1, 8, 2],  # user 0: positives {7, 2, 9}; hits at ranks 2 and 5
            [4, -1, -1, -1, -1],  # user 1: no positives -> excluded from every mean
            [0, 5, 6, -1, -1],  # user 2: positive {0}; hit at rank 1
        ]
    )
    pos = jnp.array([[7, 2, 9, -1], [-1, -1, -1, -1], [0, -1, -1, -1]])
    m = _ranking(topk, pos, ks=(1, 3, 5))
    l3 = 1 / math.log2(3)  # discount at rank 2
    l6 = 1 / math.log2(6)  # discount at rank 5
    # user 0: Recall@1 0, @3 1/3, @5 2/3; Precision@3 1/3, @5 2/5; NDCG@3 = l3 / (1 + l3 + 1/2),
    #         NDCG@5 = (l3 + l6) / (1 + l3 + 1/2); HR@1 0, HR@3 1; MRR 1/2 (MRR@1 0).
    # user 2: every Recall/NDCG/HR = 1, Precision@k = 1/k, MRR 1.
    expected = {
        "Recall@1": (0 + 1) / 2,
        "Recall@3": (1 / 3 + 1) / 2,
        "Recall@5": (2 / 3 + 1) / 2,
        "Precision@1": (0 + 1) / 2,
        "Precision@3": (1 / 3 + 1 / 3) / 2,
        "Precision@5": (2 / 5 + 1 / 5) / 2,
        "NDCG@1": (0 + 1) / 2,
        "NDCG@3": (l3 / (1 + l3 + 0.5) + 1) / 2,
        "NDCG@5": ((l3 + l6) / (1 + l3 + 0.5) + 1) / 2,
        "HR@1": 0.5,
        "HR@3": 1.0,
        "HR@5": 1.0,
        "MRR@1": 0.5,
        "MRR@3": (0.5 + 1) / 2,
        "MRR": (0.5 + 1) / 2,
    }
    for name, v in expected.items():
        np.testing.assert_allclose(float(m[name]), v, err_msg=name, **TOL)
    assert int(m["num_users"]) == 2


def test_ndcg_idcg_uses_min_pos_k():
    # 4 positives, K = 2, both top-2 items are positives:
    # IDCG@2 = 1 + 1/log2(3) -> NDCG@2 = 1, Recall@2 = 0.5.
    m = _ranking(jnp.array([[1, 2]]), jnp.array([[1, 2, 3, 4]]), ks=(2,))
    np.testing.assert_allclose(float(m["NDCG@2"]), 1.0, **TOL)
    np.testing.assert_allclose(float(m["Recall@2"]), 0.5, **TOL)


def test_ndcg_not_monotone_in_k_but_dcg_style_metrics_are():
    # Positives {5, 6}; list [5, 9]: NDCG@1 = 1/1 = 1, NDCG@2 = 1 / (1 + 1/log2 3) ≈ 0.613: NDCG drops.
    m = _ranking(jnp.array([[5, 9]]), jnp.array([[5, 6]]), ks=(1, 2))
    np.testing.assert_allclose(float(m["NDCG@1"]), 1.0, **TOL)
    np.testing.assert_allclose(float(m["NDCG@2"]), 1 / (1 + 1 / math.log2(3)), **TOL)
    assert float(m["NDCG@2"]) < float(m["NDCG@1"])


def test_padding_never_hits_and_duplicates_count_once():
    # -1 in both the list and the positives: no hit; the user still counts (one real positive).
    m = _ranking(jnp.array([[-1, -1, -1]]), jnp.array([[-1, 5, -1]]), ks=(3,))
    assert float(m["Recall@3"]) == 0.0 and float(m["HR@3"]) == 0.0 and int(m["num_users"]) == 1
    # Duplicated positive 4 counts once (|pos| = 2); item 4 listed twice in the top-k hits once.
    m = _ranking(jnp.array([[4, 4, 8]]), jnp.array([[4, 4, 8, -1]]), ks=(3,))
    np.testing.assert_allclose(float(m["Recall@3"]), 1.0, **TOL)  # hits at ranks 1 and 3 of {4, 8}
    np.testing.assert_allclose(float(m["Precision@3"]), 2 / 3, **TOL)
    ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    np.testing.assert_allclose(float(m["NDCG@3"]), ndcg, **TOL)


def test_masks_and_all_masked_is_zero_not_nan():
    topk = jnp.array([[1, 2], [3, 4]])
    pos = jnp.array([[1, -1], [9, -1]])
    m = _ranking(topk, pos, ks=(2,), where=jnp.array([False, True]))
    assert int(m["num_users"]) == 1 and float(m["HR@2"]) == 0.0  # only user 1 (a miss) counts
    m = _ranking(topk, pos, ks=(2,), where=jnp.array([False, False]))
    assert int(m["num_users"]) == 0
    for name, v in m.items():
        assert np.isfinite(float(v)) and float(v) == 0.0, name
    m = _ranking(topk, jnp.full((2, 3), -1), ks=(1, 2))  # nobody has positives
    assert all(float(v) == 0.0 for v in m.values())


def test_per_user_then_average_equals_batched():
    rng = np.random.default_rng(0)
    topk = np.stack([rng.permutation(30)[:10] for _ in range(12)])
    pos = np.where(rng.random((12, 6)) < 0.6, rng.integers(0, 30, (12, 6)), -1)
    whole = _ranking(jnp.asarray(topk), jnp.asarray(pos), ks=(5, 10))
    parts = [
        _ranking_per_user(jnp.asarray(topk[s]), jnp.asarray(pos[s]), ks=(5, 10)) for s in (slice(0, 6), slice(6, 12))
    ]
    per_user = {n: jnp.concatenate([p[0][n] for p in parts]) for n in parts[0][0]}
    valid = jnp.concatenate([p[1] for p in parts])
    avg = M.average_metrics(per_user, valid, count_key="num_users")
    for name in whole:
        np.testing.assert_allclose(float(avg[name]), float(whole[name]), err_msg=name, **TOL)


_U, _K, _P = 6, 8, 6  # fixed shapes so that jit compiles once across hypothesis examples
_KS = (1, 2, 3, 5, 8)


@st.composite
def _ranking_case(draw):
    n_items = draw(st.integers(_K, 25))
    list_len = draw(st.integers(1, _K))  # real list length; the tail is -1 padding
    pad_rate = draw(st.sampled_from([0.0, 0.15, 0.5]))
    pos_rate = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    topk = np.stack([rng.permutation(n_items)[:_K] for _ in range(_U)])
    topk[:, list_len:] = -1
    topk = np.where(rng.random(topk.shape) < pad_rate, -1, topk)
    pos = np.where(rng.random((_U, _P)) < pos_rate, rng.integers(0, n_items, (_U, _P)), -1)
    where = rng.random(_U) < 0.8
    return topk, pos, where, _KS


@settings(max_examples=25, deadline=None)
@given(_ranking_case())
def test_ranking_matches_numpy_reference(case):
    topk, pos, where, ks = case
    m = _ranking(jnp.asarray(topk), jnp.asarray(pos), ks=ks, where=jnp.asarray(where))
    ref, count = _ref_ranking(topk, pos, ks, where)
    assert int(m["num_users"]) == count
    for name, v in ref.items():
        np.testing.assert_allclose(float(m[name]), v, err_msg=name, **TOL)


@settings(max_examples=15, deadline=None)
@given(_ranking_case())
def test_recall_hr_mrr_monotone_in_k(case):
    topk, pos, _, _ = case
    ks = tuple(range(1, _K + 1))
    per_user, _ = _ranking_per_user(jnp.asarray(topk), jnp.asarray(pos), ks=ks)
    for metric in ("Recall", "HR", "MRR"):
        vals = np.stack([np.asarray(per_user[f"{metric}@{k}"]) for k in ks], axis=1)  # [U, K]
        assert np.all(np.diff(vals, axis=1) >= 0), metric
    # Precision@k * k (= hits) is non-decreasing too; Recall and HR stay within [0, 1].
    hits = np.stack([np.asarray(per_user[f"Precision@{k}"]) * k for k in ks], axis=1)
    assert np.all(np.diff(hits, axis=1) >= -1e-5)
    assert np.all(np.asarray(per_user[f"Recall@{ks[-1]}"]) <= 1.0)


def test_ranking_no_recompile():
    f = jax.jit(M.ranking_metrics, static_argnames="ks")
    a = jnp.array([[1, 2, 3]])
    f(a, a, ks=(1, 3))
    before = f._cache_size()
    f(a + 1, a, ks=(1, 3))
    assert f._cache_size() == before


def test_ranking_bad_inputs():
    a = jnp.array([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"k=5 exceeds .* length 3"):
        M.ranking_metrics(a, a, ks=(1, 5))
    with pytest.raises(TypeError, match="integer"):
        M.ranking_metrics(a.astype(jnp.float32), a, ks=(1,))
    with pytest.raises(ValueError, match=r"\(1, 3\) and positives \(2, 3\)"):
        M.ranking_metrics(a, jnp.ones((2, 3), jnp.int32), ks=(1,))
    with pytest.raises(ValueError, match="rank 2"):
        M.ranking_metrics(a[0], a, ks=(1,))
    with pytest.raises(ValueError, match="positive int"):
        M.ranking_metrics(a, a, ks=(0,))
    with pytest.raises(ValueError, match=r"where must have shape \(1,\)"):
        M.ranking_metrics(a, a, ks=(1,), where=jnp.ones(2, bool))


# --------------------------------------------------------------------------------------------------
# Sampled protocol.


def test_sampled_rank_ties_count_against_positive():
    pos = jnp.array([0.5, 0.5, 0.5, 0.5, jnp.nan])
    neg = jnp.array(
        [
            [0.1, 0.2, 0.3],  # all below -> rank 1
            [0.5, 0.5, 0.5],  # all tie -> rank 4 (ties lose)
            [0.5, 0.9, 0.1],  # one tie, one above -> rank 3
            [jnp.nan, 0.1, 0.1],  # NaN negative counts against -> rank 2
            [0.1, 0.2, 0.3],  # NaN positive loses to everything -> rank 4
        ]
    )
    np.testing.assert_array_equal(np.asarray(_rank(pos, neg)), [1, 4, 3, 2, 4])
    # Padding negatives (mask False) are ignored: the tie in row 1 column 0 no longer counts.
    mask = jnp.ones((5, 3), bool).at[1, 0].set(False)
    np.testing.assert_array_equal(np.asarray(_rank(pos, neg, neg_mask=mask)), [1, 3, 3, 2, 4])


def test_sampled_hand_worked():
    # ranks 1, 3, 20 (n = 99): MRR = (1 + 1/3 + 1/20)/3; NDCG@5 = (1 + 1/log2(4) + 0)/3 = 0.5;
    # HR@1 = 1/3, HR@5 = 2/3, HR@10 = 2/3; AUC = (99/99 + 97/99 + 80/99)/3.
    m = _sampled(jnp.array([1, 3, 20]), ks=(1, 5, 10), num_negatives=99)
    expected = {
        "MRR": (1 + 1 / 3 + 1 / 20) / 3,
        "NDCG@1": 1 / 3,
        "NDCG@5": 0.5,
        "NDCG@10": 0.5,
        "HR@1": 1 / 3,
        "HR@5": 2 / 3,
        "HR@10": 2 / 3,
        "AUC": (99 + 97 + 80) / 99 / 3,
    }
    for name, v in expected.items():
        np.testing.assert_allclose(float(m[name]), v, err_msg=name, **TOL)
    assert int(m["num_pairs"]) == 3
    m = _sampled(jnp.array([1, 3]), ks=(1,), where=jnp.array([False, False]))
    assert all(float(v) == 0.0 for v in m.values())


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_sampled_matches_numpy_reference(levels, seed):
    n_pairs, n_neg = 16, 24  # fixed shapes: one compilation
    rng = np.random.default_rng(seed)
    # Scores on a coarse grid (`levels` values) so that ties actually happen.
    pos = rng.integers(0, levels, n_pairs).astype(np.float32)
    neg = rng.integers(0, levels, (n_pairs, n_neg)).astype(np.float32)
    ranks = _rank(jnp.asarray(pos), jnp.asarray(neg))
    ref_ranks, ref = _ref_sampled(pos, neg, (1, 5, 10))
    np.testing.assert_array_equal(np.asarray(ranks), ref_ranks)
    m = _sampled(ranks, ks=(1, 5, 10), num_negatives=n_neg)
    for name, v in ref.items():
        np.testing.assert_allclose(float(m[name]), v, err_msg=name, **TOL)


def test_sampled_equal_scores_are_never_a_win():
    # A constant scorer must get the worst rank, HR@10 = 0 and AUC = 0 (not 1, not 0.5).
    ranks = _rank(jnp.zeros(4), jnp.zeros((4, 999)))
    np.testing.assert_array_equal(np.asarray(ranks), 1000)
    m = _sampled(ranks, ks=(10,), num_negatives=999)
    assert float(m["HR@10"]) == 0.0 and float(m["AUC"]) == 0.0


def test_auc_from_ranks_per_row_negatives():
    auc = M.auc_from_ranks(jnp.array([1, 2, 1]), num_negatives=jnp.array([4, 4, 0]))
    np.testing.assert_allclose(np.asarray(auc), [1.0, 0.75, 0.0], **TOL)


# --------------------------------------------------------------------------------------------------
# Negative sampling.


def test_sample_negatives_deterministic_and_excludes_positive():
    pool = np.array([3, 5, 5, 7, 11, 13, 17])  # duplicates in the pool do not matter
    held_out = np.array([3, 5, 7, 11, 13, 17] * 50)
    a = M.sample_negatives(42, held_out.size, pool, 99, exclude=held_out)
    b = M.sample_negatives(42, held_out.size, pool, 99, exclude=held_out)
    c = M.sample_negatives(43, held_out.size, pool, 99, exclude=held_out)
    assert a.shape == (300, 99)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a != held_out[:, None])  # never the positive
    assert np.all(np.isin(a, pool))


def test_sample_negatives_follows_the_documented_draw():
    pool = np.array([9, 2, 2, 4, 7, 7, 7, 1])  # 5 distinct items: collisions with the positive are frequent
    held_out = np.array([2, 4, 9, 1, 7, 3] * 20)  # 3 is not in the pool: nothing to exclude for it
    got = M.sample_negatives(11, held_out.size, pool, 30, exclude=held_out)
    np.testing.assert_array_equal(got, ref_negatives(11, held_out, pool, 30))


def test_sample_negatives_uniform_over_distinct_items():
    pool = np.repeat(np.arange(50), np.arange(1, 51))  # item i listed i+1 times
    neg = M.sample_negatives(0, 400, pool, 250)  # 100k draws, 2000 expected per item
    counts = np.bincount(neg.ravel(), minlength=50)
    assert np.abs(counts / 2000 - 1).max() < 0.1


def test_sample_negatives_2d_exclude_and_without_replacement():
    pool = np.arange(20)
    excl = np.array([[0, 1, 2, -1], [5, 5, 6, 7]])
    neg = M.sample_negatives(1, 2, pool, 16, exclude=excl, replace=False)
    for row, ex in zip(neg, excl):
        assert len(set(row.tolist())) == 16  # distinct
        assert not set(row.tolist()) & set(ex[ex >= 0].tolist())
    # Row 0 excludes 3 items: 17 remain, 18 distinct cannot be drawn.
    with pytest.raises(ValueError, match="only 17 candidate items remain"):
        M.sample_negatives(1, 2, pool, 18, exclude=excl, replace=False)
    with pytest.raises(ValueError, match="only 0 candidate items remain"):
        M.sample_negatives(1, 1, np.array([4, 4]), 3, exclude=np.array([4]))
    with pytest.raises(ValueError, match="empty"):
        M.sample_negatives(1, 1, np.array([], np.int64), 3)
    with pytest.raises(ValueError, match=r"exclude must have shape \(3,\)"):
        M.sample_negatives(1, 3, pool, 3, exclude=np.array([1, 2]))


def test_sampling_end_to_end_rank_of_perfect_scorer():
    # Scores = -item id distance to the positive: the positive always ranks 1 when excluded from negatives.
    held_out = np.arange(0, 40)
    neg = M.sample_negatives(7, held_out.size, np.arange(40), 999, exclude=held_out)
    pos_scores = jnp.ones(held_out.size)
    neg_scores = -jnp.abs(jnp.asarray(neg) - jnp.asarray(held_out)[:, None]).astype(jnp.float32) + 0.5
    ranks = _rank(pos_scores, neg_scores)
    np.testing.assert_array_equal(np.asarray(ranks), 1)


# --------------------------------------------------------------------------------------------------
# Seeds.


def test_aggregate_seeds():
    runs = [{"HR@10": 0.1, "MRR": jnp.float32(0.5)}, {"HR@10": 0.3, "MRR": 0.7}, {"HR@10": 0.2, "MRR": 0.6}]
    agg = M.aggregate_seeds(runs)
    np.testing.assert_allclose(agg["HR@10"]["mean"], 0.2, rtol=1e-12)
    np.testing.assert_allclose(agg["HR@10"]["std"], np.std([0.1, 0.3, 0.2], ddof=1), rtol=1e-12)
    np.testing.assert_allclose(agg["MRR"]["mean"], 0.6, rtol=1e-6)
    assert agg["MRR"]["n"] == 3
    assert M.aggregate_seeds([{"a": 1.0}])["a"] == {"mean": 1.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError, match=r"missing \['MRR'\]"):
        M.aggregate_seeds([{"HR@10": 0.1, "MRR": 0.2}, {"HR@10": 0.1}])
    with pytest.raises(ValueError, match="empty"):
        M.aggregate_seeds([])

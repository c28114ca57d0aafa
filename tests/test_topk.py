"""Tests for jaxrec.topk against brute-force numpy float64 references.

Most tests use integer-valued float32 inputs: every score is then an exact integer in float32 and float64 alike,
so results must equal the reference *exactly*, ties included (order: score descending, then lower item id).
Tests share one kernel configuration (``_CFG``) where they can, so that the jitted kernels compile once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import topk
from jaxrec.topk.bucket import _bucket_stats, _f2key, _key2f, _kth_of_sorted, _order_ties, default_absorb_every
from jaxrec.topk.exact import _default_blocks, _similarity_topk

# Small chunks and buckets so that a few hundred items exercise groups, the remainder and the padded tail.
_CFG = dict(chunk_size=64, query_block=16, bucket_size=4, merge_chunks=4)
Q, N, D, K = 37, 1000, 8, 7  # N is not a multiple of the chunk (64) nor of a merge group (256)


def _ints(rng, shape, lo=-20, hi=21):
    return rng.integers(lo, hi, shape).astype(np.float32)


def ref_scores(q, x, metric="dot"):
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "dot":
        return q @ x.T
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-15)
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-15)
        return qn @ xn.T
    return -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def ref_topk(s, k, exclude=None):
    """Brute force: argsort by (score desc, id asc); excluded ids removed; missing slots (-inf, -1)."""
    s = np.array(s, np.float64)
    n = s.shape[1]
    if exclude is not None:
        for r, row in enumerate(np.asarray(exclude)):
            row = row[(row >= 0) & (row < n)]
            s[r, row] = -np.inf
    ids = np.broadcast_to(np.arange(n), s.shape)
    order = np.lexsort((ids, -s), axis=1)[:, :k]
    vals = np.take_along_axis(s, order, axis=1)
    return vals, np.where(np.isfinite(vals), order, -1)


def assert_exact(got, ref):
    v, i = (np.asarray(a) for a in got)
    rv, ri = ref
    assert v.dtype == np.float32 and i.dtype == np.int32
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(v, rv.astype(np.float32))


def assert_close(got, s_ref, k, *, tol):
    """Float inputs: scores match the reference k-th-by-k-th; returned ids are distinct, really have those scores,
    and any id outside the reference set is a near-tie of the k-th score."""
    v, i = (np.asarray(a) for a in got)
    rv, ri = ref_topk(s_ref, k)
    np.testing.assert_allclose(v, rv, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.take_along_axis(s_ref, i, axis=1), rv, rtol=tol, atol=tol)
    for r in range(i.shape[0]):
        assert len(set(i[r])) == k
        for j in set(i[r]) - set(ri[r]):
            assert s_ref[r, j] >= rv[r, -1] - 2 * tol * (1 + abs(rv[r, -1]))


@pytest.fixture(scope="module")
def data():
    # Wide integer range: scores stay exact (|s| < 2^22) and ties are rare, so the bucket kernel's fast path
    # (not its "scan" fallback) produces the answer; test_ties_broken_by_lower_index covers heavy ties.
    rng = np.random.default_rng(0)
    return _ints(rng, (Q, D), -500, 501), _ints(rng, (N, D), -500, 501)


# --------------------------------------------------------------------------------------------------
# Exactness of every kernel.


@pytest.mark.parametrize("method", ["dense", "scan", "bucket"])
def test_exact_integer_data_all_methods(data, method):
    q, x = data
    ref = ref_topk(ref_scores(q, x), K)
    assert not np.any(ref[0][:, :-1] == ref[0][:, 1:])
    assert_exact(topk.similarity_topk(q, x, K, method=method, **_CFG), ref)
    if method == "bucket":  # the fast path alone (no fallback to "scan") is exact too
        fast = _similarity_topk(
            jnp.asarray(q),
            jnp.asarray(x),
            None,
            k=K,
            metric="dot",
            method="bucket",
            repair_buckets=None,
            checked=False,
            **_CFG,
        )
        assert_exact(fast, ref)


def test_ties_broken_by_lower_index(data):
    # Four distinct item rows repeated: every score is tied many times over; the lower id must win every tie.
    q, _ = data
    rng = np.random.default_rng(1)
    x = np.tile(_ints(rng, (4, D), -2, 3), (N // 4, 1))
    ref = ref_topk(ref_scores(q, x), K)
    assert np.any(ref[0][:, :-1] == ref[0][:, 1:])  # the data really has ties inside the top-k
    for method in ("dense", "scan", "bucket"):
        assert_exact(topk.similarity_topk(q, x, K, method=method, **_CFG), ref)


def test_chunked_equals_unchunked(data):
    q, x = data
    one_chunk = topk.similarity_topk(q, x, K, method="scan", chunk_size=1024, query_block=64)
    for got in (
        topk.similarity_topk(q, x, K, method="scan", **_CFG),
        topk.similarity_topk(q, x, K, method="bucket", **_CFG),
    ):
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(one_chunk[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(one_chunk[0]))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_metrics_float_data(metric):
    rng = np.random.default_rng(2)
    q = rng.standard_normal((Q, D)).astype(np.float32)
    x = rng.standard_normal((N, D)).astype(np.float32)
    method = "bucket" if metric == "l2" else "dense"
    got = topk.similarity_topk(q, x, K, metric=metric, method=method, **_CFG)
    assert_close(got, ref_scores(q, x, metric), K, tol=1e-4)
    # Normalising inputs once outside and using "dot" ranks like "cosine".
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        assert_close(topk.similarity_topk(qn, xn, K, method="dense", **_CFG), ref_scores(q, x, metric), K, tol=1e-4)


def test_default_configuration_float_data():
    # The shipped defaults (method "auto" → "bucket" here, automatic bucket size, merge groups, repairs).
    rng = np.random.default_rng(3)
    q = rng.standard_normal((300, 16)).astype(np.float32)
    x = rng.standard_normal((20000, 16)).astype(np.float32)
    got = topk.similarity_topk(q, x, 10)
    assert_close(got, ref_scores(q, x), 10, tol=1e-4)


def test_edge_sizes_k1_q1_and_k_equals_n(data):
    q, x = data
    for method in ("scan", "bucket"):
        assert_exact(topk.similarity_topk(q[:1], x, 1, method=method, **_CFG), ref_topk(ref_scores(q[:1], x), 1))
    small = x[:50]
    for method in ("dense", "scan", "bucket"):
        assert_exact(topk.similarity_topk(q, small, 50, method=method, **_CFG), ref_topk(ref_scores(q, small), 50))


def test_bfloat16_inputs_accumulate_in_float32():
    rng = np.random.default_rng(4)
    q, x = _ints(rng, (Q, D), -8, 9), _ints(rng, (N, D), -8, 9)  # exact in bfloat16
    got = topk.similarity_topk(jnp.asarray(q, jnp.bfloat16), jnp.asarray(x, jnp.bfloat16), K, **_CFG)
    assert got[0].dtype == jnp.float32
    assert_exact(got, ref_topk(ref_scores(q, x), K))


@settings(max_examples=8, deadline=None)
@given(
    nq=st.integers(1, 9),
    n=st.integers(1, 150),
    d=st.integers(1, 5),
    k_frac=st.floats(0.0, 1.0),
    method=st.sampled_from(["dense", "scan"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes(nq, n, d, k_frac, method, seed):
    rng = np.random.default_rng(seed)
    q, x = _ints(rng, (nq, d), -3, 4), _ints(rng, (n, d), -3, 4)  # small values: plenty of ties
    k = max(1, int(round(k_frac * n)))
    assert_exact(
        topk.similarity_topk(q, x, k, method=method, chunk_size=32, query_block=4), ref_topk(ref_scores(q, x), k)
    )


# --------------------------------------------------------------------------------------------------
# The bucket kernel's own pieces.


def test_bucket_stats_best_offset_and_second_bound():
    rng = np.random.default_rng(5)
    s = rng.integers(-5, 5, (64, 3)).astype(np.float32)  # ties inside buckets
    s[8:16, 1] = -np.inf  # an empty (all padding) bucket
    st_ = np.asarray(jax.jit(_bucket_stats, static_argnums=1)(jnp.asarray(s), 8))
    b = s.reshape(8, 8, 3)
    best = b.max(axis=1)
    off = np.argmax(b, axis=1)  # first (lowest) offset among ties
    second = np.sort(b, axis=1)[:, -2]
    np.testing.assert_array_equal(st_.real, best)
    packed = st_.imag
    np.testing.assert_array_equal(np.asarray(_f2key(jnp.asarray(packed))) & 7, off)
    assert np.all(packed >= second)
    assert np.all(packed <= np.where(np.isfinite(second), second + 1e-3 * (1 + np.abs(second)), packed))


def test_order_ties_sorts_equal_runs_by_id():
    v = jnp.asarray([[9.0, 7.0, 7.0, 7.0, 3.0, 3.0, -np.inf, -np.inf]])
    i = jnp.asarray([[4, 30, 2, 11, 8, 1, 0, 0]])
    got = np.asarray(jax.jit(_order_ties, static_argnums=2)(v, i, 4))
    np.testing.assert_array_equal(got, [[4, 2, 11, 30, 1, 8, 0, 0]])  # only ids within equal scores move


def test_float_key_roundtrip_and_order():
    f = jnp.asarray([-np.inf, -3.5, -0.0, 0.0, 1e-30, 2.0, np.inf], jnp.float32)
    key = np.asarray(_f2key(f))
    assert np.all(np.diff(key) > 0)
    np.testing.assert_array_equal(np.asarray(_key2f(jnp.asarray(key))), np.asarray(f))


@pytest.mark.parametrize("absorb_every", [1, 2, 3, 100])
def test_bucket_stored_merge_groups_are_exact(data, absorb_every):
    """Stats of several merge groups stored and merged by one top_k (15 chunks of 64 → 3 groups of 4, 3 chunks
    left and a partial tail): every grouping, with and without a leftover group, gives the reference."""
    q, x = data
    rng = np.random.default_rng(3)
    ex = _exclusions(rng, Q, 5, N)
    ref = ref_topk(ref_scores(q, x), K, ex)
    got = _similarity_topk(
        jnp.asarray(q),
        jnp.asarray(x),
        jnp.asarray(ex),
        k=K,
        metric="dot",
        method="bucket",
        repair_buckets=None,
        checked=False,
        absorb_every=absorb_every,
        **_CFG,
    )
    assert_exact(got, ref)


def test_kth_of_sorted_rows_with_holes():
    rng = np.random.default_rng(4)
    v = -np.sort(-rng.normal(size=(50, 30)).astype(np.float32), axis=1)
    v[rng.random(v.shape) < 0.3] = -np.inf  # dropped entries anywhere; the rest stay in descending order
    v[0] = -np.inf  # a row with nothing left
    for k in (1, 5, 12, 30):
        got = np.asarray(jax.jit(_kth_of_sorted, static_argnums=1)(jnp.asarray(v), k))
        want = -np.sort(-v, axis=1)[:, k - 1]
        np.testing.assert_array_equal(got, want)


def test_absorb_every_heuristic():
    # ~2048 bucket bests per merge, stored stats within Q·N/64 floats
    assert default_absorb_every(256, 100_000, 4, 64, 256, 100) == 3  # target 8, memory cap 3
    assert default_absorb_every(1024, 1_000_000, 16, 32, 256, 100) == 4
    assert default_absorb_every(16, 1000, 4, 16, 16, 100) == 1  # tiny: the memory cap wins
    assert default_absorb_every(1024, 1_000_000, 16, 32, 256, 10) == 1  # small k: every group merged at once
    assert default_absorb_every(1024, 1_000_000, 16, 32, 256, 33) == 4


def test_absorb_every_on_accelerators_stores_groups_for_every_k():
    # ~16384 bucket bests per merge whatever k (each top_k call has a large fixed cost on a GPU)
    assert default_absorb_every(1024, 1_000_000, 2, 1024, 1024, 10, accelerator=True) == 3  # memory cap 3.8
    assert default_absorb_every(1024, 1_000_000, 2, 1024, 1024, 100, accelerator=True) == 3
    assert default_absorb_every(4096, 200_000, 2, 128, 4096, 10, accelerator=True) == 6  # memory cap 6.1


def test_default_blocks_cpu_and_accelerator():
    assert _default_blocks(1024, 1_000_000, None, None, accelerator=False) == (1024, 256)
    assert _default_blocks(1024, 1_000_000, 512, None, accelerator=False) == (512, 256)
    # accelerator: Qb = min(Q, 4096); the largest power-of-two chunk in [2048, 65536] with C·Qb <= Q·N / 32
    assert _default_blocks(1024, 1_000_000, None, None, accelerator=True) == (16384, 1024)
    assert _default_blocks(4096, 200_000, None, None, accelerator=True) == (4096, 4096)
    assert _default_blocks(256, 100_000, None, None, accelerator=True) == (2048, 256)
    assert _default_blocks(20_000, 10_000_000, None, None, accelerator=True) == (65536, 4096)
    assert _default_blocks(8, 100, None, 4, accelerator=True) == (2048, 4)
    for nq, n in ((1024, 1_000_000), (4096, 200_000), (20_000, 10_000_000)):
        c, qb = _default_blocks(nq, n, None, None, accelerator=True)
        assert 32 * c * qb <= nq * n


@pytest.mark.parametrize("ties", [False, True])
def test_accelerator_settings_are_exact_on_cpu(ties):
    """The accelerator path (groups stored for every k; a smaller-chunk scan fallback) is exact; with many ties
    the fallback runs."""
    rng = np.random.default_rng(21)
    n, nq = 9000, 40
    x = _ints(rng, (n, D), -2, 3) if ties else rng.normal(size=(n, D)).astype(np.float32)
    q = _ints(rng, (nq, D), -2, 3) if ties else rng.normal(size=(nq, D)).astype(np.float32)
    ex = _exclusions(rng, nq, 4, n)
    for k in (3, 40):
        got = _similarity_topk(
            jnp.asarray(q),
            jnp.asarray(x),
            jnp.asarray(ex),
            k=k,
            metric="dot",
            method="bucket",
            chunk_size=4096,
            query_block=16,
            bucket_size=None,
            merge_chunks=None,
            repair_buckets=None,
            accelerator=True,
            precision="highest",
        )
        if ties:
            assert_exact(got, ref_topk(ref_scores(q, x), k, ex))
        else:
            s = ref_scores(q, x)
            for r, row in enumerate(ex):
                s[r, row[(row >= 0) & (row < n)]] = -np.inf
            assert_close(got, s, k, tol=1e-5)


def test_precision_reaches_every_product():
    q, x = np.ones((3, 4), np.float32), np.ones((5000, 4), np.float32)

    def hlo(fn, **kw):
        return jax.jit(lambda a, b: fn(a, b, **kw)).lower(q, x).as_text()

    for method in ("bucket", "scan", "dense"):
        text = hlo(lambda a, b, **kw: topk.similarity_topk(a, b, 2, method=method, **kw))
        assert text.count("dot_general") >= 1
        assert text.count("precision = [HIGHEST, HIGHEST]") == text.count("dot_general"), method
        text = hlo(lambda a, b, **kw: topk.similarity_topk(a, b, 2, method=method, **kw), precision=None)
        assert "HIGHEST" not in text
    c = np.zeros((3, 4), np.int32)
    for fn in (
        lambda a, b: topk.approx_similarity_topk(a, b, 2),
        lambda a, b: topk.approx_similarity_topk(a, b, 2, exact_off_tpu=False),
        lambda a, b: topk.similarity_scores(a, b),
        lambda a, b: topk.candidate_scores(a, b, c),
        lambda a, b: topk.candidate_topk(a, b, c, 2),
    ):
        text = hlo(fn)
        assert text.count("precision = [HIGHEST, HIGHEST]") == text.count("dot_general") >= 1
    with pytest.raises(ValueError, match="precision='fp31' is not a matmul precision"):
        topk.similarity_topk(q, x, 2, precision="fp31")


def test_bucket_fast_path_negative_zero_scores_are_zero_and_tie_by_id():
    # q = -1 against zero items gives -0.0 scores; the bucket summaries must report +0.0 (lax.top_k orders
    # -0 < +0) and equal scores must come in id order, on the fast path (checked=False), not via the fallback.
    n = 4096
    rng = np.random.default_rng(11)
    x = (1.0 + rng.permutation(n) / n).astype(np.float32)[:, None]
    zeros = np.array([3000, 70, 1500])  # one per bucket, out of id order in the catalogue
    x[zeros] = 0.0
    q = np.array([[-1.0], [1.0]], np.float32)
    v, i = _similarity_topk(
        jnp.asarray(q),
        jnp.asarray(x),
        None,
        k=5,
        metric="dot",
        method="bucket",
        repair_buckets=None,
        checked=False,
        **_CFG,
    )
    v, i = np.asarray(v), np.asarray(i)
    np.testing.assert_array_equal(i[0, :3], np.sort(zeros))
    assert np.all(v[0, :3] == 0.0) and not np.any(np.signbit(v[0, :3]))
    ref = ref_topk(ref_scores(q, x), 5)
    np.testing.assert_array_equal(i, ref[1])


def test_bucket_fast_path_with_repairs_is_exact_without_fallback():
    # Clustered catalogue: each run of 4 consecutive ids is near-identical, so buckets hold several of the top-k
    # and must be repaired. checked=False returns the fast path's answer even where it would fall back.
    rng = np.random.default_rng(6)
    centers = _ints(rng, (N // 4, D), -20, 21)
    x = np.repeat(centers, 4, axis=0) + _ints(rng, (N, D), 0, 2)
    q = _ints(rng, (Q, D))
    got = _similarity_topk(
        jnp.asarray(q),
        jnp.asarray(x),
        None,
        k=K,
        metric="dot",
        method="bucket",
        repair_buckets=4 * Q,
        checked=False,
        **_CFG,
    )
    ref = ref_topk(ref_scores(q, x), K)
    if np.any(ref[0][:, :-1] == ref[0][:, 1:]):  # exact ties make the fast path defer to "scan"; skip those rows
        ok = ~np.any(ref[0][:, :-1] == ref[0][:, 1:], axis=1)
        np.testing.assert_array_equal(np.asarray(got[1])[ok], ref[1][ok])
        assert ok.sum() > Q // 2
    else:
        assert_exact(got, ref)
    # With the default capacity the checked kernel is exact whatever path it takes.
    assert_exact(topk.similarity_topk(q, x, K, method="bucket", **_CFG), ref)


# --------------------------------------------------------------------------------------------------
# Exclusion and candidates.


def _exclusions(rng, nq, m, n):
    ex = rng.integers(-1, n, (nq, m)).astype(np.int32)
    ex[:, 0] = ex[:, 1]  # duplicates are allowed
    ex[0, :] = -1  # an all-padding row
    ex[1, -1] = n + 5  # out-of-range ids are ignored
    return ex


def test_exclusion_matches_reference_and_never_returns_excluded(data):
    q, x = data
    rng = np.random.default_rng(7)
    s = ref_scores(q, x)
    ex = _exclusions(rng, Q, 12, N)
    ex[2, :K] = ref_topk(s[2:3], K)[1][0]  # a row that excludes its whole unconstrained top-k
    ref = ref_topk(s, K, ex)
    for method in ("dense", "scan", "bucket"):
        v, i = topk.similarity_topk(q, x, K, exclude=jnp.asarray(ex), method=method, **_CFG)
        assert_exact((v, i), ref)
        assert not np.any((np.asarray(i)[:, :, None] == ex[:, None, :]) & (ex[:, None, :] >= 0))


def test_exclusion_from_csr(data):
    q, x = data
    rng = np.random.default_rng(8)
    lengths = rng.integers(0, 6, Q)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = rng.integers(0, N, indptr[-1])
    ex = topk.csr_to_padded(indptr, indices, multiple=4)
    assert ex.shape == (Q, 8) and ex.dtype == np.int32
    for r in range(Q):
        np.testing.assert_array_equal(ex[r, : lengths[r]], indices[indptr[r] : indptr[r + 1]])
        assert np.all(ex[r, lengths[r] :] == -1)
    assert_exact(topk.similarity_topk(q, x, K, exclude=ex, method="scan", **_CFG), ref_topk(ref_scores(q, x), K, ex))


def test_exclusion_leaving_fewer_than_k_items():
    q = np.ones((2, 1), np.float32)
    x = np.arange(6, dtype=np.float32)[:, None]
    ex = np.array([[0, 1, 2, 3, -1], [-1, -1, -1, -1, -1]], np.int32)
    with pytest.raises(ValueError, match=r"k=3 exceeds N minus exclusions.*leaving 2"):
        topk.similarity_topk(q, x, 3, exclude=ex)  # host array: checked up front
    v, i = jax.jit(lambda e: topk.similarity_topk(q, x, 3, exclude=e))(jnp.asarray(ex))  # traced: padded result
    np.testing.assert_array_equal(np.asarray(i), [[5, 4, -1], [5, 4, 3]])
    assert np.isneginf(np.asarray(v)[0, 2])


def test_candidate_scores_and_topk():
    rng = np.random.default_rng(9)
    q, x = _ints(rng, (6, D)), _ints(rng, (40, D), -2, 3)
    cand = rng.integers(-1, 40, (6, 15)).astype(np.int32)
    cand[:, 3] = cand[:, 4]  # duplicate ids count once
    s = ref_scores(q, x)
    got = np.asarray(topk.candidate_scores(q, x, cand, metric="dot"))
    np.testing.assert_array_equal(got, np.where(cand >= 0, np.take_along_axis(s, np.maximum(cand, 0), 1), -np.inf))
    ex = np.full((6, 2), -1, np.int32)
    ex[:, 0] = cand[:, 0]
    v, i = topk.candidate_topk(q, x, cand, 4, exclude=ex)
    # Reference: restrict the full scores to each row's allowed, non-excluded candidates.
    allowed = np.full(s.shape, -np.inf)
    for r in range(6):
        ok = cand[r][(cand[r] >= 0) & (cand[r] != ex[r, 0])]
        allowed[r, ok] = s[r, ok]
    assert_exact((v, i), ref_topk(allowed, 4))
    np.testing.assert_allclose(
        np.asarray(topk.candidate_scores(q, x, cand, metric="l2"))[cand >= 0],
        ref_scores(q, x, "l2")[np.nonzero(cand >= 0)[0], cand[cand >= 0]],
        rtol=1e-6,
    )


def test_scores_topk_with_exclusion():
    rng = np.random.default_rng(10)
    s = _ints(rng, (9, 30), -3, 4)
    ex = _exclusions(rng, 9, 5, 30)
    assert_exact(topk.scores_topk(s, 6, exclude=jnp.asarray(ex)), ref_topk(s, 6, ex))


def test_similarity_scores_dense():
    rng = np.random.default_rng(11)
    q, x = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    for metric in topk.METRICS:
        np.testing.assert_allclose(
            np.asarray(topk.similarity_scores(q, x, metric=metric)), ref_scores(q, x, metric), rtol=1e-5, atol=1e-5
        )


# --------------------------------------------------------------------------------------------------
# Approximate, transformations, sharding, compilation.


def test_approx_on_cpu_recall_and_exactness(data):
    q, x = data
    rng = np.random.default_rng(14)
    ex = _exclusions(rng, Q, 3, N)
    ref = ref_topk(ref_scores(q, x), K, ex)
    # The approx_max_k path itself (on CPU XLA lowers it to an exact top-k per chunk).
    v, i = topk.approx_similarity_topk(q, x, K, recall_target=0.9, chunk_size=256, exclude=ex, exact_off_tpu=False)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(np.asarray(i), ref[1])])
    assert recall >= 0.9
    np.testing.assert_array_equal(np.asarray(v), ref[0].astype(np.float32))
    # Default off the TPU: the exact kernel (faster there), ties by id included.
    assert_exact(topk.approx_similarity_topk(q, x, K, recall_target=0.9, exclude=ex), ref)


def test_vmap_over_query_batches(data):
    q, x = data
    qs = np.stack([q, q[::-1], q * 2])  # [3, Q, d]
    fn = jax.vmap(lambda a: topk.similarity_topk(a, x, K, method="bucket", **_CFG))
    v, i = fn(jnp.asarray(qs))
    for b in range(3):
        assert_exact((v[b], i[b]), ref_topk(ref_scores(qs[b], x), K))


def test_pmap_over_devices(data):
    q, x = data
    n_dev = jax.local_device_count()
    assert n_dev == 8, "tests/conftest.py sets 8 fake CPU devices"
    qs = np.stack([np.roll(q[:8], r, axis=0) for r in range(n_dev)])  # [8, 8, d]
    v, i = jax.pmap(lambda a, b: topk.similarity_topk(a, b, K, method="scan", **_CFG), in_axes=(0, None))(qs, x)
    for dev in range(n_dev):
        assert_exact((v[dev], i[dev]), ref_topk(ref_scores(qs[dev], x), K))


def test_sharded_items_equal_single_device(data):
    q, x = data
    mesh = jax.make_mesh((8,), ("items",))
    xs = x[:992]  # 8 shards of 124 rows
    rng = np.random.default_rng(12)
    ex = _exclusions(rng, Q, 6, 992)
    single = topk.similarity_topk(q, xs, K, exclude=jnp.asarray(ex))
    sharded = topk.sharded_similarity_topk(q, xs, K, mesh=mesh, axis_name="items", exclude=jnp.asarray(ex))
    np.testing.assert_array_equal(np.asarray(sharded[1]), np.asarray(single[1]))
    np.testing.assert_array_equal(np.asarray(sharded[0]), np.asarray(single[0]))
    assert_exact(sharded, ref_topk(ref_scores(q, xs), K, ex))
    # Ties across shard boundaries still go to the lower id; k larger than one shard.
    tied = np.tile(_ints(rng, (2, D), -1, 2), (496, 1))
    auto = jax.make_mesh((8,), ("items",), axis_types=(jax.sharding.AxisType.Auto,))
    got = topk.sharded_similarity_topk(q, tied, 130, mesh=auto, axis_name="items")
    assert_exact(got, ref_topk(ref_scores(q, tied), 130))


def test_no_recompilation_on_second_call(data):
    q, x = data
    topk.similarity_topk(q, x, K, method="bucket", **_CFG)
    before = _similarity_topk._cache_size()
    rng = np.random.default_rng(13)
    q2, x2 = _ints(rng, (Q, D)), _ints(rng, (N, D))
    got = topk.similarity_topk(q2, x2, K, method="bucket", **_CFG)
    assert _similarity_topk._cache_size() == before
    assert_exact(got, ref_topk(ref_scores(q2, x2), K))

    traces = []

    @jax.jit
    def user_fn(a, b):
        traces.append(1)
        return topk.similarity_topk(a, b, K, **_CFG)

    user_fn(q, x)
    user_fn(q2, x2)
    assert len(traces) == 1


# --------------------------------------------------------------------------------------------------
# Static errors.


def test_errors_quote_shapes():
    q, x = np.zeros((4, 3), np.float32), np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match=r"k must be positive.*queries \(4, 3\), items \(10, 3\)"):
        topk.similarity_topk(q, x, 0)
    with pytest.raises(ValueError, match=r"k=11 exceeds the number of items N \(10\).*items \(10, 3\)"):
        topk.similarity_topk(q, x, 11)
    with pytest.raises(TypeError, match="k must be a static Python int"):
        topk.similarity_topk(q, x, 2.0)
    with pytest.raises(ValueError, match=r"must share d; got queries \(4, 3\) and items \(10, 5\)"):
        topk.similarity_topk(q, np.zeros((10, 5), np.float32), 2)
    with pytest.raises(ValueError, match=r"rank 2.*queries \(4,\) and items \(10, 3\)"):
        topk.similarity_topk(np.zeros(4, np.float32), x, 2)
    with pytest.raises(TypeError, match=r"queries \[Q, d\] must be floating.*int32.*\(4, 3\)"):
        topk.similarity_topk(np.zeros((4, 3), np.int32), x, 2)
    with pytest.raises(ValueError, match="unknown metric 'euclid'; valid metrics are dot, cosine, l2"):
        topk.similarity_topk(q, x, 2, metric="euclid")
    with pytest.raises(ValueError, match="unknown method 'fast'; valid methods are auto, bucket, scan, dense"):
        topk.similarity_topk(q, x, 2, method="fast")
    with pytest.raises(ValueError, match=r"exclude \[Q, m\] needs one row per query; got exclude \(3, 2\)"):
        topk.similarity_topk(q, x, 2, exclude=np.zeros((3, 2), np.int32))
    with pytest.raises(TypeError, match=r"exclude \[Q, m\] must hold integer item ids"):
        topk.similarity_topk(q, x, 2, exclude=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="bucket_size must be a power of two"):
        topk.similarity_topk(q, x, 2, bucket_size=6, chunk_size=60)
    with pytest.raises(ValueError, match="chunk_size=100 must be a multiple of bucket_size=32"):
        topk.similarity_topk(q, x, 2, chunk_size=100)
    with pytest.raises(ValueError, match=r"k=5 exceeds the number of candidates C \(4\)"):
        topk.candidate_topk(q, x, np.zeros((4, 4), np.int32), 5)
    with pytest.raises(ValueError, match=r"candidates \[Q, C\] needs one row per query"):
        topk.candidate_scores(q, x, np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"scores must be \[Q, N\]"):
        topk.scores_topk(np.zeros(3, np.float32), 1)
    with pytest.raises(ValueError, match="recall_target must be in"):
        topk.approx_similarity_topk(q, x, 2, recall_target=1.5)
    with pytest.raises(ValueError, match=r"items \[N, d\] = \(10, 3\) must split evenly over the 8 devices"):
        topk.sharded_similarity_topk(q, x, 2, mesh=jax.make_mesh((8,), ("items",)), axis_name="items")
    with pytest.raises(ValueError, match="indptr"):
        topk.csr_to_padded(np.array([0, 3]), np.array([1, 2]))
    with pytest.raises(ValueError, match="more than width=1"):
        topk.csr_to_padded(np.array([0, 2]), np.array([1, 2]), width=1)

"""Bad and unusual inputs of jaxrec.topk: non-finite values, zero queries, array-likes, wrong ranks and dtypes.

Every error case checks the exception type and that the message names the argument (and, for non-finite values,
the offending rows). Results are compared with a brute-force numpy float64 reference on integer-valued inputs,
whose float32 scores are exact, so ties (lower id first) must match exactly.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import topk
from jaxrec.topk.exact import _similarity_topk
from jaxrec.topk.inputs import require_finite

Q, N, D, K = 4, 16, 3, 2  # N = 16 splits over the 8 fake CPU devices of tests/conftest.py


def ref_topk(q, x, k, exclude=None):
    """Brute force: float64 dot scores, excluded ids removed, sorted by (score desc, id asc)."""
    s = np.asarray(q, np.float64) @ np.asarray(x, np.float64).T
    if exclude is not None:
        for r, row in enumerate(exclude):
            row = [i for i in row if 0 <= i < s.shape[1]]
            s[r, row] = -np.inf
    ids = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    order = np.lexsort((ids, -s), axis=1)[:, :k]
    vals = np.take_along_axis(s, order, axis=1)
    return vals.astype(np.float32), np.where(np.isfinite(vals), order, -1).astype(np.int32)


def assert_equal(got, ref):
    v, i = (np.asarray(a) for a in got)
    assert v.dtype == np.float32 and i.dtype == np.int32
    np.testing.assert_array_equal(i, ref[1])
    np.testing.assert_array_equal(v, ref[0])


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-5, 6, (Q, D)).astype(np.float32), rng.integers(-5, 6, (N, D)).astype(np.float32)


def _with(a, rows, value):
    a = np.array(a, copy=True)
    a[rows, 0] = value
    return a


def _mesh():
    return jax.make_mesh((8,), ("items",))


# --------------------------------------------------------------------------------------------------
# Errors: (id, call, exception type, message regex). Each message names the argument.

_Q, _X = _data()
_NAN_X = _with(_X, [4], np.nan)

ERROR_CASES = [
    # Non-finite values, every function.
    (
        "nan-item-row",
        lambda: topk.similarity_topk(_Q, _NAN_X, K),
        ValueError,
        r"items \[N, d\] = \(16, 3\) holds NaN or infinite values in 1 of 16 rows \(row 4\).*check_finite=False",
    ),
    (
        "inf-query",
        lambda: topk.similarity_topk(_with(_Q, [2], np.inf), _X, K),
        ValueError,
        r"queries \[Q, d\] = \(4, 3\) holds NaN or infinite values in 1 of 4 rows \(row 2\)",
    ),
    (
        "many-neg-inf-rows",
        lambda: topk.similarity_topk(_Q, _with(_X, [0, 1, 2, 3, 5, 9, 15], -np.inf), K),
        ValueError,
        r"items \[N, d\] .* in 7 of 16 rows \(rows 0, 1, 2, 3, 5, \.\.\.\)",
    ),
    ("approx", lambda: topk.approx_similarity_topk(_Q, _NAN_X, K), ValueError, r"items \[N, d\] .*\(row 4\)"),
    (
        "approx-tpu-path",
        lambda: topk.approx_similarity_topk(_with(_Q, [1], np.nan), _X, K, exact_off_tpu=False),
        ValueError,
        r"queries \[Q, d\] .*\(row 1\)",
    ),
    (
        "sharded",
        lambda: topk.sharded_similarity_topk(_Q, _NAN_X, K, mesh=_mesh(), axis_name="items"),
        ValueError,
        r"items \[N, d\] .*\(row 4\)",
    ),
    ("scores", lambda: topk.similarity_scores(_Q, _NAN_X), ValueError, r"items \[N, d\] .*\(row 4\)"),
    (
        "candidate-scores",
        lambda: topk.candidate_scores(_with(_Q, [3], np.nan), _X, [[0, 1]] * Q),
        ValueError,
        r"queries \[Q, d\] .*\(row 3\)",
    ),
    ("candidate-topk", lambda: topk.candidate_topk(_Q, _NAN_X, [[0, 1]] * Q, 1), ValueError, r"items \[N, d\]"),
    (
        "scores-topk-nan",
        lambda: topk.scores_topk(_with(np.zeros((3, 5)), [1], np.nan), 2),
        ValueError,
        r"scores \[Q, N\] = \(3, 5\) holds NaN in 1 of 3 rows \(row 1\)",
    ),
    ("check-finite-not-bool", lambda: topk.similarity_topk(_Q, _X, K, check_finite="no"), TypeError, "check_finite"),
    # Empty catalogue.
    ("no-items", lambda: topk.similarity_topk(_Q, np.zeros((0, D), np.float32), 1), ValueError, r"items \[N, d\]"),
    ("scores-no-items", lambda: topk.scores_topk(np.zeros((2, 0)), 1), ValueError, r"scores \[Q, N\] has no items"),
    ("k-beyond-n", lambda: topk.similarity_topk(_Q, _X, N + 1), ValueError, r"k=17 exceeds .*items \(16, 3\)"),
    # Array-likes that cannot be arrays.
    (
        "ragged-exclude",
        lambda: topk.similarity_topk(_Q, _X, K, exclude=[[1, 2], [3], [], [4]]),
        ValueError,
        r"exclude must be a rectangular \[Q, m\] id list.*csr_to_padded",
    ),
    (
        "ragged-candidates",
        lambda: topk.candidate_topk(_Q, _X, [[1, 2], [3], [0], [4]], 1),
        ValueError,
        r"candidates must be a rectangular \[Q, C\].*csr_to_padded",
    ),
    (
        "ragged-queries",
        lambda: topk.similarity_topk([[1.0, 2.0, 3.0], [1.0]], _X, K),
        ValueError,
        r"queries must be a rectangular \[Q, d\]",
    ),
    (
        "string-items",
        lambda: topk.similarity_topk(_Q, [["a", "b", "c"]] * 3, 1),
        TypeError,
        r"items \[N, d\] must be floating",
    ),
    # Wrong dtypes.
    (
        "int64-queries",
        lambda: topk.similarity_topk(_Q.astype(np.int64), _X, K),
        TypeError,
        r"queries \[Q, d\] must be floating.*int64.*\(4, 3\)",
    ),
    (
        "float-exclude-list",
        lambda: topk.similarity_topk(_Q, _X, K, exclude=[[1.5]] * Q),
        TypeError,
        r"exclude \[Q, m\] must hold integer item ids, got dtype float",
    ),
    (
        "bool-exclude",
        lambda: topk.similarity_topk(_Q, _X, K, exclude=np.ones((Q, 2), bool)),
        TypeError,
        r"exclude \[Q, m\] must hold integer item ids, got dtype bool",
    ),
    (
        "float-candidates",
        lambda: topk.candidate_scores(_Q, _X, np.zeros((Q, 2), np.float32)),
        TypeError,
        r"candidates \[Q, C\] must hold integer item ids",
    ),
    ("int-scores", lambda: topk.scores_topk(np.zeros((2, 3), np.int32), 1), TypeError, r"scores \[Q, N\] must be"),
    # Wrong ranks and mismatched shapes: both shapes quoted.
    (
        "rank3-queries",
        lambda: topk.similarity_topk(np.zeros((2, 2, 3), np.float32), _X, K),
        ValueError,
        r"queries must be \[Q, d\] .*queries \(2, 2, 3\) and items \(16, 3\)",
    ),
    (
        "list-d-mismatch",
        lambda: topk.similarity_topk([[1.0, 2.0]], _X.tolist(), K),
        ValueError,
        r"must share d; got queries \(1, 2\) and items \(16, 3\)",
    ),
    (
        "rank1-exclude",
        lambda: topk.similarity_topk(_Q, _X, K, exclude=[1, 2, 3, 4]),
        ValueError,
        r"exclude must be \[Q, m\] \(rank 2\), got shape \(4,\)",
    ),
    (
        "exclude-rows",
        lambda: topk.similarity_topk(_Q, _X, K, exclude=[[1], [2]]),
        ValueError,
        r"exclude \[Q, m\] needs one row per query; got exclude \(2, 1\)",
    ),
    (
        "exclude-list-too-many",
        lambda: topk.similarity_topk(_Q, _X[:3], 2, exclude=[[0, 1]] * Q),
        ValueError,
        r"k=2 exceeds N minus exclusions.*exclude \(4, 2\)",
    ),
    (
        "scores-rank1",
        lambda: topk.scores_topk([0.1, 0.2, 0.3], 1),
        ValueError,
        r"scores must be \[Q, N\] \(rank 2\), got shape \(3,\)",
    ),
]


@pytest.mark.parametrize("call, exc, pattern", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_input_raises_naming_the_argument(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_opt_out_skips_the_finite_check():
    v, i = topk.similarity_topk(_Q, _NAN_X, K, check_finite=False)  # undefined lists, but no error
    assert v.shape == (Q, K) and i.shape == (Q, K)
    assert topk.scores_topk(_with(np.zeros((3, 5)), [1], np.nan), 2, check_finite=False)[1].shape == (3, 2)


def test_traced_inputs_skip_the_check_and_keep_working():
    # Inside jit the values are unknown: no check, no error (documented); outside, the same call raises.
    v, i = jax.jit(lambda q, x: topk.similarity_topk(q, x, K))(_Q, _NAN_X)
    assert i.shape == (Q, K)
    v, i = jax.jit(lambda q, x: topk.similarity_topk(q, x, K))(_Q, _X)
    assert_equal((v, i), ref_topk(_Q, _X, K))


def test_scores_topk_allows_infinite_scores():
    s = np.array([[np.inf, 1.0, -np.inf, 2.0], [-np.inf, -np.inf, -np.inf, 0.5]])
    v, i = topk.scores_topk(s, 2)
    np.testing.assert_array_equal(np.asarray(i), [[0, 3], [3, -1]])
    np.testing.assert_array_equal(np.asarray(v), np.array([[np.inf, 2.0], [0.5, -np.inf]], np.float32))


def test_require_finite_quotes_rows_and_skips_empty_arrays():
    require_finite(("items [N, d]", jnp.zeros((0, 3))))
    big = np.ones((4, 3), np.float32) * 3e38  # the sum overflows, the values are finite
    require_finite(("items [N, d]", jnp.asarray(big)))
    with pytest.raises(ValueError, match=r"x \[R, c\] = \(3, 2\) holds NaN or infinite values in 2 of 3 rows"):
        require_finite(("x [R, c]", jnp.array([[0.0, jnp.nan], [1.0, 2.0], [jnp.inf, 0.0]])))


# --------------------------------------------------------------------------------------------------
# Zero queries: empty results of the right shapes and dtypes.

_Q0 = np.zeros((0, D), np.float32)

ZERO_QUERY_CALLS = {
    "auto": lambda: topk.similarity_topk(_Q0, _X, K),
    "bucket": lambda: topk.similarity_topk(_Q0, _X, K, method="bucket", chunk_size=8, bucket_size=2),
    "scan": lambda: topk.similarity_topk(_Q0, _X, K, method="scan", exclude=np.zeros((0, 3), np.int32)),
    "dense": lambda: topk.similarity_topk(_Q0, _X, K, method="dense"),
    "approx": lambda: topk.approx_similarity_topk(_Q0, _X, K),
    "approx-tpu-path": lambda: topk.approx_similarity_topk(_Q0, _X, K, exact_off_tpu=False),
    "sharded": lambda: topk.sharded_similarity_topk(_Q0, _X, K, mesh=_mesh(), axis_name="items"),
    "scores-topk": lambda: topk.scores_topk(np.zeros((0, N), np.float32), K),
    "candidate-topk": lambda: topk.candidate_topk(_Q0, _X, np.zeros((0, 5), np.int32), K),
    "jit": lambda: jax.jit(lambda q, x: topk.similarity_topk(q, x, K))(_Q0, _X),
}


@pytest.mark.parametrize("name", sorted(ZERO_QUERY_CALLS))
def test_zero_queries_return_empty_results(name):
    v, i = ZERO_QUERY_CALLS[name]()
    assert v.shape == (0, K) and v.dtype == jnp.float32
    assert i.shape == (0, K) and i.dtype == jnp.int32


def test_zero_queries_dense_scores():
    assert topk.similarity_scores(_Q0, _X).shape == (0, N)
    assert topk.candidate_scores(_Q0, _X, np.zeros((0, 5), np.int32)).shape == (0, 5)


# --------------------------------------------------------------------------------------------------
# Array-likes.


def test_lists_tuples_and_numpy_dtypes_equal_arrays():
    ref = ref_topk(_Q, _X, K)
    assert_equal(topk.similarity_topk(_Q.tolist(), _X.tolist(), K), ref)
    assert_equal(topk.similarity_topk(tuple(map(tuple, _Q.tolist())), _X, K), ref)
    assert_equal(topk.similarity_topk(_Q.astype(np.float64), _X.astype(np.float64), K), ref)  # float64 -> float32
    assert_equal(topk.similarity_topk(_Q.astype(int).tolist(), _X, K), ref)  # Python ints -> float32
    assert_equal(topk.similarity_topk(_Q.astype(np.float16), _X, K), ref)  # small integers: exact in float16
    assert_equal(topk.approx_similarity_topk(_Q.tolist(), _X.tolist(), K), ref)
    got = topk.sharded_similarity_topk(_Q.tolist(), _X.tolist(), K, mesh=_mesh(), axis_name="items")
    assert_equal(got, ref)
    s = (_Q.astype(np.float64) @ _X.T.astype(np.float64)).tolist()
    assert_equal(topk.scores_topk(s, K), ref)
    np.testing.assert_array_equal(np.asarray(topk.similarity_scores(_Q.tolist(), _X.tolist())), np.array(s))


def test_exclusion_and_candidate_lists():
    ex = [[0, 1, -1], [2, 2, 2], [-1, -1, -1], [5, 6, 7]]
    ref = ref_topk(_Q, _X, K, ex)
    assert_equal(topk.similarity_topk(_Q, _X, K, exclude=ex), ref)
    assert_equal(topk.similarity_topk(_Q, _X, K, exclude=tuple(map(tuple, ex))), ref)
    assert_equal(topk.similarity_topk(_Q, _X, K, exclude=np.array(ex, np.int64)), ref)
    huge = np.array(ex, np.int64)
    huge[:, 2] = 2**40 + 3  # outside int32 and outside [0, N): padding, never wrapped onto id 3
    assert_equal(topk.similarity_topk(_Q, _X, K, exclude=huge), ref_topk(_Q, _X, K, [r[:2] for r in ex]))
    assert_equal(topk.similarity_topk(_Q, _X, K, exclude=[[] for _ in range(Q)]), ref_topk(_Q, _X, K))
    assert_equal(topk.scores_topk((_Q @ _X.T).tolist(), K, exclude=ex), ref)
    cand = [[0, 3, 5], [1, 2, 3], [4, 4, 6], [7, 8, 9]]
    v, i = topk.candidate_topk(_Q.tolist(), _X.tolist(), cand, 1)
    s = _Q @ _X.T
    for r, row in enumerate(cand):
        best = max(row, key=lambda j: (s[r, j], -j))
        assert int(i[r, 0]) == best and float(v[r, 0]) == s[r, best]


def test_list_inputs_do_not_recompile():
    q, x = _data(1)
    topk.similarity_topk(q, x, K, method="scan", chunk_size=8, bucket_size=8)
    before = _similarity_topk._cache_size()
    got = topk.similarity_topk(q.tolist(), x.tolist(), K, method="scan", chunk_size=8, bucket_size=8)
    assert _similarity_topk._cache_size() == before
    assert_equal(got, ref_topk(q, x, K))


# --------------------------------------------------------------------------------------------------
# Properties: random finite inputs (arrays or lists) equal the argsort reference; one NaN/inf anywhere raises.


@st.composite
def problems(draw):
    nq = draw(st.integers(0, 5))
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, n))
    vals = st.integers(-3, 3)  # small integers: exact float32 scores, many ties
    q = np.array(draw(st.lists(st.lists(vals, min_size=d, max_size=d), min_size=nq, max_size=nq)), np.float32)
    x = np.array(draw(st.lists(st.lists(vals, min_size=d, max_size=d), min_size=n, max_size=n)), np.float32)
    return q.reshape(nq, d), x, k


@settings(max_examples=25, deadline=None)
@given(problem=problems(), as_list=st.booleans(), method=st.sampled_from(["auto", "bucket", "scan", "dense"]))
def test_property_kernel_equals_argsort_reference(problem, as_list, method):
    q, x, k = problem
    # A list cannot spell [0, d] ([] is rank 1): zero queries stay an array.
    qa, xa = (q.tolist() if q.shape[0] else q, x.tolist()) if as_list else (q, x)
    got = topk.similarity_topk(qa, xa, k, method=method, chunk_size=8, bucket_size=8)
    assert_equal(got, ref_topk(q, x, k))


@settings(max_examples=25, deadline=None)
@given(
    problem=problems(),
    which=st.sampled_from(["queries", "items"]),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    data=st.data(),
)
def test_property_one_non_finite_value_anywhere_raises(problem, which, value, data):
    q, x, k = problem
    a = q if which == "queries" else x
    if a.shape[0] == 0:
        return
    row = data.draw(st.integers(0, a.shape[0] - 1))
    col = data.draw(st.integers(0, a.shape[1] - 1))
    a[row, col] = value
    spec = "[Q, d]" if which == "queries" else "[N, d]"
    pattern = re.escape(f"{which} {spec} = {a.shape}") + rf".* in 1 of {a.shape[0]} rows \(row {row}\)"
    with pytest.raises(ValueError, match=pattern):
        topk.similarity_topk(q.tolist() if q.shape[0] and data.draw(st.booleans()) else q, x, k)

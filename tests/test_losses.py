"""Tests for jaxrec.losses against independent numpy/float64 references written here.

Conventions: hs [n, dim] source rows, ht [m, dim] target rows; task losses are per-example [batch].
Every jax computation runs under jax.jit; float32 results are compared with explicit tolerances.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxrec import losses as L

F32 = dict(rtol=1e-5, atol=1e-6)
F32_LOOSE = dict(rtol=2e-4, atol=2e-5)  # pairwise-distance based terms (MMD) in float32
HYP = settings(max_examples=8, deadline=None, derandomize=True)

DISC_NAMES = ["mean_l2", "linear_mmd", "mmd", "coral", "sliced_wasserstein"]
SIGMAS = (0.5, 1.0, 2.0)


# ----------------------------------------------------------------------------------------------------------------
# numpy float64 references
# ----------------------------------------------------------------------------------------------------------------
def np_logsumexp(v):
    v = np.asarray(v, np.float64)
    top = v.max()
    return top + math.log(np.exp(v - top).sum())


def np_sq_dists(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def np_gauss(a, b, sigmas):
    d2 = np_sq_dists(a, b)
    return sum(np.exp(-d2 / (2.0 * s * s)) for s in sigmas)


def np_imq(a, b, sigmas):
    d2 = np_sq_dists(a, b)
    return sum(1.0 / np.sqrt(1.0 + d2 / (2.0 * s * s)) for s in sigmas)


def np_median_sigma(x, y):
    """σ₀ with σ₀² = median of squared distances over pairs i < j of the pooled sample."""
    z = np.concatenate([x, y])
    d2 = np_sq_dists(z, z)[np.triu_indices(len(z), 1)]
    return math.sqrt(np.median(d2))


def np_mmd(x, y, sigmas=None, kernel=np_gauss):
    """Unbiased MMD²: mean over i≠i' of k(x,x') + mean over j≠j' of k(y,y') − 2 mean k(x,y)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if sigmas is None:
        sigmas = [np_median_sigma(x, y)]
    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x, sigmas), kernel(y, y, sigmas), kernel(x, y, sigmas)
    within_s = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))  # i != i'
    within_t = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))  # j != j'
    return within_s + within_t - 2.0 * kxy.sum() / (n * m)


def np_mean_l2(x, y):
    d = np.asarray(x, np.float64).mean(0) - np.asarray(y, np.float64).mean(0)
    return 0.5 * float(d @ d)


def np_linear_mmd(x, y):
    return 2.0 * np_mean_l2(x, y)


def np_coral(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    cs = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))
    ct = np.atleast_2d(np.cov(y, rowvar=False, ddof=1))
    return float(((cs - ct) ** 2).sum() / (4.0 * d * d))


def np_sliced_w2(x, y, theta):
    """Exact ∫₀¹ (F⁻¹_x(u) − F⁻¹_y(u))² du per direction (integrated over the merged breakpoints), averaged."""
    x, y, theta = (np.asarray(a, np.float64) for a in (x, y, theta))
    n, m = len(x), len(y)
    cuts = np.unique(np.concatenate([np.arange(n + 1) / n, np.arange(m + 1) / m]))
    out = []
    for p in range(theta.shape[1]):
        a, b = np.sort(x @ theta[:, p]), np.sort(y @ theta[:, p])
        acc = 0.0
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            mid = 0.5 * (lo + hi)
            acc += (hi - lo) * (a[int(mid * n)] - b[int(mid * m)]) ** 2
        out.append(acc)
    return float(np.mean(out))


def unit_columns(rng, dim, count):
    theta = rng.normal(size=(dim, count))
    return (theta / np.linalg.norm(theta, axis=0, keepdims=True)).astype(np.float32)


def disc_call(name, *, sigmas=SIGMAS, theta=None, num_quantiles=None):
    """A jitted ``(hs, ht, hs_mask, ht_mask) -> D`` for the named discrepancy with fixed options."""
    fn = L.get_discrepancy(name)
    kw = {}
    if name == "mmd":
        kw = dict(bandwidths=sigmas)
    if name == "sliced_wasserstein":
        kw = dict(projections=theta, num_quantiles=num_quantiles)
    return jax.jit(lambda a, b, ma=None, mb=None: fn(a, b, hs_mask=ma, ht_mask=mb, **kw))


def np_disc(name, x, y, *, sigmas=SIGMAS, theta=None):
    return {
        "mean_l2": lambda: np_mean_l2(x, y),
        "linear_mmd": lambda: np_linear_mmd(x, y),
        "mmd": lambda: np_mmd(x, y, sigmas),
        "coral": lambda: np_coral(x, y),
        "sliced_wasserstein": lambda: np_sliced_w2(x, y, theta),
    }[name]()


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    hs = rng.normal(size=(7, 3)).astype(np.float32)
    ht = (1.5 * rng.normal(size=(5, 3)) + 0.7).astype(np.float32)
    theta = unit_columns(rng, 3, 4)
    return hs, ht, theta


# ----------------------------------------------------------------------------------------------------------------
# reduction and task losses
# ----------------------------------------------------------------------------------------------------------------
def test_mean_where_masks_and_all_masked_gives_zero():
    f = jax.jit(lambda v, w: L.mean_where(v, where=w))
    v = jnp.array([1.0, 3.0, jnp.nan, 100.0])
    np.testing.assert_allclose(f(v, jnp.array([True, True, False, False])), 2.0, **F32)
    assert float(f(v, jnp.zeros(4, bool))) == 0.0
    g = jax.jit(jax.grad(lambda v: L.mean_where(v, where=jnp.array([True, False, False, True]))))(v)
    np.testing.assert_array_equal(g, [0.5, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(jax.jit(L.mean_where)(jnp.arange(4.0)), 1.5, **F32)


def test_mse_matches_numpy_with_mask():
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    w = np.array([1, 1, 0, 1, 0, 1], bool)
    out = jax.jit(lambda p, t, w: L.mse(p, t, where=w))(p, t, w)
    np.testing.assert_allclose(out, np.where(w, (p.astype(np.float64) - t) ** 2, 0.0), **F32)
    red = jax.jit(lambda p, t, w: L.mean_where(L.mse(p, t, where=w), where=w))(p, t, w)
    np.testing.assert_allclose(red, ((p - t)[w].astype(np.float64) ** 2).mean(), **F32)


def test_sigmoid_bce_matches_numpy_and_is_stable():
    rng = np.random.default_rng(2)
    x = rng.normal(scale=3.0, size=8).astype(np.float32)
    z = rng.uniform(size=8).astype(np.float32)
    f = jax.jit(L.sigmoid_bce)
    s = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(f(x, z), -(z * np.log(s) + (1 - z) * np.log1p(-s)), **F32)
    # Large logits: exact values are 100 (confidently wrong) and e^-100 ≈ 3.7e-44 (confidently right).
    big = f(jnp.array([100.0, -100.0, 100.0]), jnp.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(big, [100.0, 0.0, 0.0], atol=1e-6)
    # Gradient is σ(x) − z, including at x = 0 where |x|-based formulas give the wrong subgradient.
    grad = jax.jit(jax.grad(lambda x, z: jnp.sum(L.sigmoid_bce(x, z))))(
        jnp.array([0.0, 0.0, 2.0]), jnp.array([1.0, 0.0, 0.3])
    )
    np.testing.assert_allclose(grad, [-0.5, 0.5, 1.0 / (1.0 + math.exp(-2.0)) - 0.3], **F32)


def test_bpr_matches_numpy_single_and_multi_negative():
    rng = np.random.default_rng(3)
    pos = rng.normal(size=5).astype(np.float32)
    neg1 = rng.normal(size=5).astype(np.float32)
    neg3 = rng.normal(size=(5, 3)).astype(np.float32)
    ref1 = -np.log(1.0 / (1.0 + np.exp(-(pos.astype(np.float64) - neg1))))
    np.testing.assert_allclose(jax.jit(L.bpr)(pos, neg1), ref1, **F32)
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]], bool)
    out = jax.jit(lambda p, n, w: L.bpr(p, n, where=w))(pos, neg3, mask)
    per = -np.log(1.0 / (1.0 + np.exp(-(pos[:, None].astype(np.float64) - neg3))))
    ref = [per[b][mask[b]].mean() if mask[b].any() else 0.0 for b in range(5)]
    np.testing.assert_allclose(out, ref, **F32)
    # A [batch] mask with [batch, num_neg] negatives masks whole examples.
    out_rows = jax.jit(lambda p, n, w: L.bpr(p, n, where=w))(pos, neg3, np.array([1, 0, 1, 1, 0], bool))
    np.testing.assert_allclose(out_rows, np.where([1, 0, 1, 1, 0], per.mean(1), 0.0), **F32)


def np_sampled_softmax(pos, neg, plq, nlq, pid, nid, where, nwhere, temp):
    out = []
    for b in range(len(pos)):
        if not where[b]:
            out.append(0.0)
            continue
        cand = [pos[b] / temp - plq[b]]
        for j in range(neg.shape[1]):
            if nwhere[b, j] and nid[b, j] != pid[b]:
                cand.append(neg[b, j] / temp - nlq[b, j])
        out.append(np_logsumexp(cand) - cand[0])
    return np.array(out)


def test_sampled_softmax_logq_and_accidental_hits_match_numpy():
    rng = np.random.default_rng(4)
    batch, k = 4, 5
    pos = rng.normal(size=batch).astype(np.float32)
    neg = rng.normal(size=(batch, k)).astype(np.float32)
    plq = np.log(rng.uniform(0.05, 0.5, size=batch)).astype(np.float32)
    nlq_shared = np.log(rng.uniform(0.05, 0.5, size=k)).astype(np.float32)
    pid = np.array([3, 7, 1, 9])
    nid_shared = np.array([7, 2, 3, 3, 5])  # hits: row 0 (id 3) twice, row 1 (id 7) once
    where = np.array([1, 1, 0, 1], bool)
    nwhere = np.array([1, 1, 1, 1, 0], bool)  # last shared negative is padding
    f = jax.jit(
        lambda *a: L.sampled_softmax(
            a[0],
            a[1],
            pos_log_q=a[2],
            neg_log_q=a[3],
            pos_ids=a[4],
            neg_ids=a[5],
            where=a[6],
            neg_where=a[7],
            temperature=0.5,
        )
    )
    out = f(pos, neg, plq, nlq_shared, pid, nid_shared, where, nwhere)
    tile = lambda v: np.broadcast_to(v, (batch, k))  # noqa: E731
    ref = np_sampled_softmax(pos, neg, plq, tile(nlq_shared), pid, tile(nid_shared), where, tile(nwhere), 0.5)
    np.testing.assert_allclose(out, ref, **F32)
    # Without any option it is plain softmax cross-entropy with the positive in column 0.
    plain = jax.jit(L.sampled_softmax)(pos, neg)
    full = np.concatenate([pos[:, None], neg], 1).astype(np.float64)
    np.testing.assert_allclose(plain, [np_logsumexp(r) - r[0] for r in full], **F32)


def test_in_batch_softmax_matches_numpy():
    rng = np.random.default_rng(5)
    batch = 5
    logits = rng.normal(size=(batch, batch)).astype(np.float32)
    log_q = np.log(rng.uniform(0.05, 0.5, size=batch)).astype(np.float32)
    ids = np.array([4, 8, 4, 1, 6])  # rows 0 and 2 hold the same item: an accidental hit for each other
    where = np.array([1, 1, 1, 1, 0], bool)  # row/column 4 is padding
    f = jax.jit(lambda x, q, i, w: L.in_batch_softmax(x, log_q=q, ids=i, where=w, temperature=2.0))
    out = f(logits, log_q, ids, where)
    ref = []
    for i in range(batch):
        if not where[i]:
            ref.append(0.0)
            continue
        z = logits[i].astype(np.float64) / 2.0 - log_q
        keep = [j for j in range(batch) if j == i or (where[j] and ids[j] != ids[i])]
        ref.append(np_logsumexp(z[keep]) - z[i])
    np.testing.assert_allclose(out, ref, **F32)


def test_task_losses_all_masked_give_zero_and_nan_padding_does_not_leak():
    nan = jnp.full((3,), jnp.nan)
    none = jnp.zeros(3, bool)
    partial = jnp.array([True, False, True])
    vals = jnp.array([0.5, jnp.nan, -1.0])
    cases = {
        "mse": lambda v, w: L.mse(v, jnp.zeros(3), where=w),
        "sigmoid_bce": lambda v, w: L.sigmoid_bce(v, jnp.ones(3), where=w),
        "bpr": lambda v, w: L.bpr(v, jnp.zeros(3), where=w),
        "sampled_softmax": lambda v, w: L.sampled_softmax(v, jnp.zeros((3, 2)), where=w),
        "in_batch_softmax": lambda v, w: L.in_batch_softmax(jnp.diag(v), where=w),
    }
    for name, loss in cases.items():

        def run(v, w, loss=loss):
            mean = lambda v: L.mean_where(loss(v, w), where=w)  # noqa: E731
            return loss(v, w), mean(v), jax.grad(mean)(v)

        f = jax.jit(run)
        per_example, mean, _ = f(nan, none)
        np.testing.assert_array_equal(per_example, np.zeros(3), err_msg=name)
        assert float(mean) == 0.0, name
        _, mean, grad = f(vals, partial)
        assert np.isfinite(float(mean)), name
        assert np.all(np.isfinite(grad)) and float(grad[1]) == 0.0, (name, grad)


# ----------------------------------------------------------------------------------------------------------------
# discrepancy terms
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DISC_NAMES)
def test_discrepancy_matches_numpy_unequal_sizes(name, pair):
    hs, ht, theta = pair  # n = 7, m = 5
    f = disc_call(name, theta=theta, num_quantiles=35)  # 35 = lcm(7, 5): the quantile integral is exact
    tol = F32_LOOSE if name == "mmd" else F32
    np.testing.assert_allclose(f(hs, ht), np_disc(name, hs, ht, theta=theta), **tol)


@pytest.mark.parametrize("name", DISC_NAMES)
def test_discrepancy_masks_equal_slicing_and_symmetry(name, pair):
    hs, ht, theta = pair
    f = disc_call(name, theta=theta, num_quantiles=140)  # 140 = lcm(7, 5, 4): exact for full and masked sizes
    ms = np.array([1, 0, 1, 1, 0, 1, 1], bool)
    mt = np.array([1, 1, 0, 1, 1], bool)
    # Padding rows hold garbage: they must not matter.
    hs_pad = np.where(ms[:, None], hs, 1e3).astype(np.float32)
    masked = f(hs_pad, ht, ms, mt)
    sliced = disc_call(name, theta=theta, num_quantiles=20)(hs[ms], ht[mt])  # 20 = lcm(5, 4)
    tol = F32_LOOSE if name == "mmd" else F32
    np.testing.assert_allclose(masked, sliced, **tol)
    np.testing.assert_allclose(f(hs, ht), f(ht, hs), **tol)  # symmetric in its two arguments


@pytest.mark.parametrize("name", DISC_NAMES)
def test_discrepancy_empty_side_gives_zero_with_zero_gradient(name, pair):
    hs, ht, theta = pair
    f = disc_call(name, theta=theta)
    empty_s, full_t = np.zeros(7, bool), np.ones(5, bool)
    assert float(f(hs, ht, empty_s, full_t)) == 0.0
    assert float(f(hs, ht, np.ones(7, bool), np.zeros(5, bool))) == 0.0
    grads = jax.jit(jax.grad(lambda a, b: f(a, b, empty_s, full_t), argnums=(0, 1)))(hs, ht)
    for g in grads:
        np.testing.assert_array_equal(g, np.zeros_like(g))
    # Statically empty side: also 0.
    assert float(f(np.zeros((0, 3), np.float32), ht)) == 0.0


def test_mmd_and_coral_need_two_valid_rows_per_side(pair):
    hs, ht, _ = pair
    one = np.eye(7, dtype=bool)[0]
    for name in ("mmd", "coral"):
        assert float(disc_call(name)(hs, ht, one, np.ones(5, bool))) == 0.0, name


@pytest.mark.parametrize("name", DISC_NAMES)
def test_discrepancy_check_grads_float64(name):
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        hs = jnp.asarray(rng.normal(size=(5, 3)))
        ht = jnp.asarray(rng.normal(size=(4, 3)) + 0.5)
        mt = jnp.array([True, True, False, True])
        theta = jnp.asarray(unit_columns(rng, 3, 3), jnp.float64)
        f = disc_call(name, theta=theta, num_quantiles=15)
        check_grads(lambda a, b: f(a, b, None, mt), (hs, ht), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", DISC_NAMES)
def test_discrepancy_finite_gradients_at_degenerate_inputs(name):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    same_row = np.tile(x[:1], (4, 1))  # identical points, zero variance in every column
    const_col = x.copy()
    const_col[:, 1] = 2.0  # one zero-variance column
    fns = [L.get_discrepancy(name)]
    if name == "mmd":
        fns.append(lambda a, b: L.mmd(a, b, bandwidths=SIGMAS))
    for fn in fns:
        f = jax.jit(jax.value_and_grad(lambda a, b: fn(a, b), argnums=(0, 1)))
        for hs, ht in [(x, x), (same_row, same_row), (same_row, x), (const_col, same_row)]:
            value, grads = f(hs, ht)
            assert np.isfinite(float(value)), (name, value)
            assert all(np.all(np.isfinite(g)) for g in grads), (name, grads)
        value, _ = f(same_row, same_row)
        np.testing.assert_allclose(value, 0.0, atol=1e-6)  # no discrepancy between identical samples


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.data())
def test_masked_discrepancies_equal_numpy_on_sliced_rows(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    hs = rng.normal(size=(6, 2)).astype(np.float32)
    ht = (rng.normal(size=(5, 2)) * 2.0 + 1.0).astype(np.float32)
    ms = np.array(data.draw(st.lists(st.booleans(), min_size=6, max_size=6), label="hs_mask"))
    mt = np.array(data.draw(st.lists(st.booleans(), min_size=5, max_size=5), label="ht_mask"))
    theta = unit_columns(np.random.default_rng(0), 2, 3)
    for name in DISC_NAMES:
        got = _CACHED[name](hs, ht, ms, mt)
        need = 2 if name in ("mmd", "coral") else 1
        if ms.sum() < need or mt.sum() < need:
            assert float(got) == 0.0, name
            continue
        ref = np_disc(name, hs[ms], ht[mt], theta=theta)
        np.testing.assert_allclose(got, ref, **(F32_LOOSE if name == "mmd" else F32), err_msg=name)


# Jitted once for the hypothesis test (60 = lcm(1..6): exact quantile integral for every valid count).
_CACHED = {
    name: disc_call(name, theta=unit_columns(np.random.default_rng(0), 2, 3), num_quantiles=60) for name in DISC_NAMES
}


@HYP
@given(
    st.lists(st.booleans(), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=5, max_size=5),
    st.floats(-3.0, 3.0),
    st.integers(0, 1000),
)
def test_linear_mmd_nonnegative_and_coral_invariant_to_mean_shift(ms, mt, shift, seed):
    rng = np.random.default_rng(seed)
    hs = rng.normal(size=(6, 2)).astype(np.float32)
    ht = rng.normal(size=(5, 2)).astype(np.float32)
    ms, mt = np.array(ms), np.array(mt)
    assert float(_CACHED["linear_mmd"](hs, ht, ms, mt)) >= 0.0
    base = _CACHED["coral"](hs, ht, ms, mt)
    np.testing.assert_allclose(_CACHED["coral"](hs + shift, ht - 2 * shift, ms, mt), base, rtol=1e-4, atol=1e-5)


def test_mmd_of_a_sample_with_itself_is_the_known_small_negative():
    # MMD²_u(X, X) = 2(Ā − K(x, x)) / n with Ā the mean off-diagonal kernel value: ≈ 0, of order 1/n.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    got = float(jax.jit(lambda a: L.mmd(a, a, bandwidths=SIGMAS))(x))
    k = np_gauss(x.astype(np.float64), x.astype(np.float64), SIGMAS)
    off_mean = (k.sum() - np.trace(k)) / (40 * 39)
    np.testing.assert_allclose(got, 2.0 * (off_mean - len(SIGMAS)) / 40, **F32_LOOSE)
    assert abs(got) <= 2.0 * len(SIGMAS) / 40
    # Two samples of one distribution vs a shifted one: the shift is clearly detected.
    y = rng.normal(size=(40, 3)).astype(np.float32)
    f = jax.jit(L.mmd)
    same, shifted = float(f(x, y)), float(f(x, y + 1.5))
    assert abs(same) < 0.05 < shifted


def test_mmd_inverse_multiquadric_kernel_matches_numpy(pair):
    hs, ht, _ = pair
    got = jax.jit(lambda a, b: L.mmd(a, b, bandwidths=SIGMAS, kernel="imq"))(hs, ht)
    np.testing.assert_allclose(got, np_mmd(hs, ht, SIGMAS, kernel=np_imq), **F32_LOOSE)
    with pytest.raises(ValueError, match=r"unknown kernel 'laplace'; valid names: \['gaussian', 'imq'\]"):
        L.mmd(hs, ht, kernel="laplace")


def test_mmd_median_heuristic_matches_numpy_and_is_stop_gradient(pair):
    hs, ht, _ = pair
    sigma0 = np_median_sigma(hs.astype(np.float64), ht.astype(np.float64))
    np.testing.assert_allclose(jax.jit(L.mmd)(hs, ht), np_mmd(hs, ht, [sigma0]), **F32_LOOSE)
    scales = (0.5, 2.0)
    got = jax.jit(lambda a, b: L.mmd(a, b, median_scales=scales))(hs, ht)
    np.testing.assert_allclose(got, np_mmd(hs, ht, [sigma0 * s for s in scales]), **F32_LOOSE)
    # The gradient treats the median bandwidth as a constant: it equals the fixed-bandwidth gradient.
    g_median = jax.jit(jax.grad(L.mmd, argnums=(0, 1)))(hs, ht)
    g_fixed = jax.jit(jax.grad(lambda a, b: L.mmd(a, b, bandwidths=[sigma0]), argnums=(0, 1)))(hs, ht)
    for a, b in zip(g_median, g_fixed):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_sliced_wasserstein_equal_sizes_is_sorted_matching_and_default_is_deterministic(pair):
    rng = np.random.default_rng(9)
    a = rng.normal(size=(6, 3)).astype(np.float32)
    b = (rng.normal(size=(6, 3)) + 1.0).astype(np.float32)
    theta = unit_columns(rng, 3, 5)
    got = jax.jit(lambda x, y: L.sliced_wasserstein(x, y, projections=theta))(a, b)
    ref = np.mean([np.mean((np.sort(a @ theta[:, p]) - np.sort(b @ theta[:, p])) ** 2) for p in range(5)])
    np.testing.assert_allclose(got, ref, **F32)
    f = jax.jit(lambda x, y, key: L.sliced_wasserstein(x, y, key=key, num_projections=256))
    default_key = jax.jit(L.sliced_wasserstein, static_argnames="num_projections")
    assert float(f(a, b, jax.random.PRNGKey(0))) == float(default_key(a, b, num_projections=256))
    other = float(f(a, b, jax.random.PRNGKey(3)))
    assert other > 0.5  # a unit shift in every coordinate: E[(θ·1)²] = 1 for unit θ in 3-D


def test_registry_and_unknown_name():
    assert set(L.DISCREPANCIES) == set(DISC_NAMES)
    for name in DISC_NAMES:
        assert L.get_discrepancy(name) is getattr(L, name)
    with pytest.raises(ValueError, match=r"unknown discrepancy 'wasserstein'.*coral.*mmd"):
        L.get_discrepancy("wasserstein")
    with pytest.raises(TypeError):
        L.DISCREPANCIES["mine"] = L.mmd  # read-only


# ----------------------------------------------------------------------------------------------------------------
# adversarial loss, schedules, combined loss
# ----------------------------------------------------------------------------------------------------------------
def test_domain_adversarial_loss_matches_numpy_balanced_and_masked():
    rng = np.random.default_rng(10)
    s = rng.normal(size=6).astype(np.float32)
    t = rng.normal(size=3).astype(np.float32)
    ms = np.array([1, 1, 0, 1, 1, 0], bool)
    f = jax.jit(lambda s, t, ms: L.domain_adversarial_loss(s, t, source_mask=ms))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v.astype(np.float64)))  # noqa: E731
    ref = 0.5 * np.mean(-np.log(sig(s[ms]))) + 0.5 * np.mean(-np.log(1.0 - sig(t)))
    np.testing.assert_allclose(f(s, t, ms), ref, **F32)
    # [rows, 1] classifier outputs are accepted; gradient on a valid source logit is (σ(s) − 1) / (2 n_valid).
    g = jax.jit(jax.grad(lambda s: L.domain_adversarial_loss(s[:, None], t, source_mask=ms)))(s)
    np.testing.assert_allclose(g, np.where(ms, (sig(s) - 1.0) / (2 * ms.sum()), 0.0), **F32)
    both_empty = jax.jit(lambda s, t, ms, mt: L.domain_adversarial_loss(s, t, source_mask=ms, target_mask=mt))
    assert float(both_empty(s, t, np.zeros(6, bool), np.zeros(3, bool))) == 0.0


def test_dann_lambda_schedule_matches_formula_and_jits():
    sched = L.dann_lambda_schedule(total_steps=200, gamma=10.0, max_value=0.5)
    steps = np.array([0, 1, 50, 100, 199, 200, 500])
    got = jax.jit(jax.vmap(sched))(jnp.asarray(steps))
    p = np.clip(steps / 200.0, 0.0, 1.0)
    np.testing.assert_allclose(got, 0.5 * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0), **F32)
    assert np.all(np.diff(np.asarray(got)) >= 0) and float(got[0]) == 0.0
    np.testing.assert_allclose(jax.jit(L.constant_schedule(0.25))(17), 0.25, **F32)
    warm = jax.jit(L.linear_warmup_schedule(warmup_steps=10, max_value=2.0, init_value=1.0))
    np.testing.assert_allclose(warm(jnp.array([0, 5, 10, 30])), [1.0, 1.5, 2.0, 2.0], **F32)
    np.testing.assert_allclose(L.linear_warmup_schedule(warmup_steps=0, max_value=3.0)(0), 3.0, **F32)


def test_combined_loss_total_and_parts_under_jit():
    f = jax.jit(
        lambda a, b, d, lam: L.combined_loss(
            {"source": a, "target": b}, d, lam=lam, weights={"source": 0.5, "target": 2.0}
        )
    )
    total, parts = f(1.0, 3.0, 0.25, 4.0)
    np.testing.assert_allclose(total, 0.5 * 1.0 + 2.0 * 3.0 + 4.0 * 0.25, **F32)
    expected = {
        "task/source": 1.0,
        "task/target": 3.0,
        "task": 6.5,
        "discrepancy": 0.25,
        "lam": 4.0,
        "weighted_discrepancy": 1.0,
        "total": 7.5,
    }
    assert set(parts) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(parts[k], v, err_msg=k, **F32)
    total, parts = L.combined_loss({"target": jnp.float32(2.0)}, None, lam=0.0)
    assert float(total) == 2.0 and float(parts["discrepancy"]) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DISC_NAMES)
def test_discrepancy_bad_shapes_and_dtypes(name):
    fn = L.get_discrepancy(name)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\).*same embedding dim"):
        fn(jnp.zeros((4, 3)), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"hs must have rank 2.*\(4,\)"):
        fn(jnp.zeros(4), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"ht must have rank 2.*\(2, 5, 2\)"):
        fn(jnp.zeros((4, 2)), jnp.zeros((2, 5, 2)))
    with pytest.raises(TypeError, match="floating dtype"):
        fn(jnp.zeros((4, 2), jnp.int32), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"hs_mask of shape \(3,\).*\(4,\)"):
        fn(jnp.zeros((4, 2)), jnp.zeros((5, 2)), hs_mask=jnp.ones(3, bool))


def test_bad_bandwidths_lambda_weights_and_options():
    x, y = jnp.zeros((4, 2)), jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"bandwidths must be > 0, got \[1.0, -0.5\]"):
        L.mmd(x, y, bandwidths=[1.0, -0.5])
    with pytest.raises(ValueError, match="bandwidths must be > 0"):
        L.mmd(x, y, bandwidths=0.0)
    with pytest.raises(ValueError, match="median_scales must be > 0"):
        L.mmd(x, y, median_scales=(1.0, -2.0))
    with pytest.raises(ValueError, match=r"lam must be >= 0, got -0.1"):
        L.combined_loss({"t": 1.0}, 0.5, lam=-0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        L.combined_loss({"t": 1.0}, 0.5, lam=float("nan"))
    with pytest.raises(ValueError, match=r"weights\['t'\] must be >= 0"):
        L.combined_loss({"t": 1.0}, 0.5, lam=1.0, weights={"t": -1.0})
    with pytest.raises(ValueError, match=r"exactly the task_losses keys \['s', 't'\]"):
        L.combined_loss({"s": 1.0, "t": 1.0}, 0.5, lam=1.0, weights={"s": 1.0})
    with pytest.raises(ValueError, match=r"task_losses\['t'\] must be a scalar, got shape \(3,\)"):
        L.combined_loss({"t": jnp.ones(3)}, 0.5, lam=1.0)
    with pytest.raises(ValueError, match="max_value must be >= 0"):
        L.dann_lambda_schedule(total_steps=10, max_value=-1.0)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        L.dann_lambda_schedule(total_steps=0)
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative int"):
        L.linear_warmup_schedule(warmup_steps=-1)
    with pytest.raises(ValueError, match="value must be >= 0"):
        L.constant_schedule(-0.5)


def test_task_loss_bad_input():
    with pytest.raises(ValueError, match=r"predictions \(4,\) and targets \(4, 1\)"):
        L.mse(jnp.zeros(4), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"logits \(3,\) and labels \(2,\)"):
        L.sigmoid_bce(jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"neg_scores must be .* batch = 4 .*\(3, 2\)"):
        L.bpr(jnp.zeros(4), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        L.sampled_softmax(jnp.zeros(2), jnp.zeros((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match=r"neg_ids must be \[num_neg\]"):
        L.sampled_softmax(jnp.zeros(2), jnp.zeros((2, 3)), pos_ids=jnp.zeros(2, int), neg_ids=jnp.zeros(4, int))
    with pytest.raises(ValueError, match="needs both pos_ids and neg_ids"):
        L.sampled_softmax(jnp.zeros(2), jnp.zeros((2, 3)), pos_ids=jnp.zeros(2, int))
    with pytest.raises(ValueError, match=r"square \[batch, batch\], got \(2, 3\)"):
        L.in_batch_softmax(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"where of shape \(3,\) does not broadcast"):
        L.mean_where(jnp.zeros(4), where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"source_logits must be \[rows\] or \[rows, 1\].*\(3, 2\)"):
        L.domain_adversarial_loss(jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(TypeError, match="floating dtype"):
        L.sigmoid_bce(jnp.zeros(3, jnp.int32), jnp.zeros(3))


# ----------------------------------------------------------------------------------------------------------------
# end-to-end: aligning with MMD reduces the measured MMD between the domains' user embeddings
# ----------------------------------------------------------------------------------------------------------------
def _two_domain_problem(seed, users=64, feat=8, rank=4, items=24):
    """Shared users with features x; ratings in each domain from a different linear user map (target shifted)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(users, feat))
    u_s = x @ rng.normal(size=(feat, rank)) / np.sqrt(feat)
    u_t = x @ rng.normal(size=(feat, rank)) / np.sqrt(feat) + 2.0
    r_s = u_s @ rng.normal(size=(items, rank)).T + 0.1 * rng.normal(size=(users, items))
    r_t = u_t @ rng.normal(size=(items, rank)).T + 0.1 * rng.normal(size=(users, items))
    return [jnp.asarray(a, jnp.float32) for a in (x, r_s, r_t)]


@jax.jit
def _train_two_domains(lam, x, r_s, r_t, key):
    """300 full-batch Adam steps on MSE(source) + MSE(target) + lam · MMD(h_s, h_t); returns final h_s, h_t."""
    feat, rank, items = x.shape[1], 4, r_s.shape[1]
    k = jax.random.split(key, 4)
    params = {
        "w_s": 0.3 * jax.random.normal(k[0], (feat, rank)),
        "w_t": 0.3 * jax.random.normal(k[1], (feat, rank)),
        "b_s": jnp.zeros(rank),
        "b_t": jnp.zeros(rank),
        "v_s": 0.3 * jax.random.normal(k[2], (items, rank)),
        "v_t": 0.3 * jax.random.normal(k[3], (items, rank)),
    }

    def users(p):
        return x @ p["w_s"] + p["b_s"], x @ p["w_t"] + p["b_t"]

    def loss_fn(p):
        h_s, h_t = users(p)
        task = {
            "source": L.mean_where(L.mse(h_s @ p["v_s"].T, r_s)),
            "target": L.mean_where(L.mse(h_t @ p["v_t"].T, r_t)),
        }
        return L.combined_loss(task, L.mmd(h_s, h_t), lam=lam)

    opt = optax.adam(0.03)

    def step(carry, _):
        p, state = carry
        (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), parts

    (params, _), parts = jax.lax.scan(step, (params, opt.init(params)), None, length=300)
    h_s, h_t = users(params)
    return h_s, h_t, jax.tree.map(lambda v: v[-1], parts)


def test_mmd_training_cuts_measured_user_mmd_5x_vs_lambda0():
    x, r_s, r_t = _two_domain_problem(0)
    results = {}
    for lam in (0.0, 2.0):
        h_s, h_t, parts = _train_two_domains(jnp.float32(lam), x, r_s, r_t, jax.random.PRNGKey(0))
        measured = np_mmd(np.asarray(h_s, np.float64), np.asarray(h_t, np.float64))  # numpy, median heuristic
        results[lam] = (measured, float(parts["task/source"]), float(parts["task/target"]))
    (mmd0, src0, tgt0), (mmd2, src2, tgt2) = results[0.0], results[2.0]
    assert mmd0 > 0.05, results  # without alignment the two user-embedding distributions differ
    assert mmd2 <= mmd0 / 5.0, results  # measured: ≈ 0.178 → ≈ 0.0034 (about 50x)
    # Both domains are still fitted: MSE well under 5% of the rating variance (≈ 4 and ≈ 22 here).
    for mse_value, r in ((src0, r_s), (tgt0, r_t), (src2, r_s), (tgt2, r_t)):
        assert mse_value < 0.05 * float(jnp.var(r)), results


def test_mmd_median_rows_subsample():
    rng = np.random.default_rng(0)
    hs = rng.normal(size=(40, 5)).astype(np.float32)
    ht = (rng.normal(size=(30, 5)) + 0.3).astype(np.float32)
    full = float(jax.jit(lambda a, b: L.mmd(a, b))(hs, ht))
    # at least all rows: identical to the full heuristic
    np.testing.assert_allclose(float(L.mmd(hs, ht, median_rows=80)), full, rtol=1e-4)
    # the heuristic on the leading 8 + 8 rows equals the full estimator with that bandwidth
    pooled = np.concatenate([hs[:8], ht[:8]]).astype(np.float64)
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)[np.triu_indices(16, 1)]
    expected = float(L.mmd(hs, ht, bandwidths=[np.sqrt(np.median(d2))]))
    np.testing.assert_allclose(float(L.mmd(hs, ht, median_rows=16)), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="median_rows=2 must be >= 4"):
        L.mmd(hs, ht, median_rows=2)

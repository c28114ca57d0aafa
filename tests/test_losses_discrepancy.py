"""Tests for jaxrec.losses' discrepancy terms and their registry, against independent numpy/float64 references.

Conventions: hs [n, dim] source rows, ht [m, dim] target rows. Every jax computation runs under jax.jit; float32
results are compared with explicit tolerances.
"""

import inspect
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

DISC_NAMES = ["mean_l2", "linear_mmd", "mmd", "coral", "sliced_wasserstein"]  # on representations [rows, dim]
SIGMAS = (0.5, 1.0, 2.0)


# ----------------------------------------------------------------------------------------------------------------
# numpy float64 references
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# the registry: one function per name, options as parameters
# ----------------------------------------------------------------------------------------------------------------
def test_registry_maps_each_name_to_one_function_with_the_common_signature():
    assert list(L.DISCREPANCIES) == DISC_NAMES + ["adversarial"]
    functions = {name: getattr(L, name) for name in DISC_NAMES}
    functions["adversarial"] = L.adversarial_discrepancy
    for name, fn in functions.items():
        assert L.DISCREPANCIES[name] is fn and L.get_discrepancy(name) is fn, name
        params = inspect.signature(fn).parameters
        positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        assert positional == ["hs", "ht"], name
        for mask in ("hs_mask", "ht_mask"):
            assert params[mask].kind is inspect.Parameter.KEYWORD_ONLY and params[mask].default is None, name
    assert len(set(map(id, functions.values()))) == len(functions)  # no two names share a function
    with pytest.raises(TypeError):
        L.DISCREPANCIES["mine"] = L.mmd  # read-only


def test_get_discrepancy_binds_options(pair):
    hs, ht, theta = pair
    # the mmd recipe's variant: three kernels around the median heuristic, here taken on the leading 2 + 2 rows
    bound = L.get_discrepancy("mmd", median_scales=(0.5, 1.0, 2.0), median_rows=4)
    assert bound.keywords == {"median_scales": (0.5, 1.0, 2.0), "median_rows": 4}
    sigma0 = np_median_sigma(hs[:2].astype(np.float64), ht[:2].astype(np.float64))
    ref = np_mmd(hs, ht, [sigma0 * s for s in (0.5, 1.0, 2.0)])
    np.testing.assert_allclose(jax.jit(bound)(hs, ht), ref, **F32_LOOSE)
    bound = L.get_discrepancy("mmd", bandwidths=SIGMAS, kernel="imq")
    np.testing.assert_allclose(jax.jit(bound)(hs, ht), np_mmd(hs, ht, SIGMAS, kernel=np_imq), **F32_LOOSE)
    sw = L.get_discrepancy("sliced_wasserstein", projections=theta, num_quantiles=35)
    np.testing.assert_allclose(jax.jit(sw)(hs, ht), np_sliced_w2(hs, ht, theta), **F32)


def test_unknown_discrepancy_name_or_option_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown discrepancy 'wasserstein'; valid names: "
        r"\['adversarial', 'coral', 'linear_mmd', 'mean_l2', 'mmd', 'sliced_wasserstein'\]",
    ):
        L.get_discrepancy("wasserstein")
    with pytest.raises(ValueError, match="unknown discrepancy None"):
        L.get_discrepancy(None)
    with pytest.raises(
        ValueError,
        match=r"discrepancy 'mmd' has no option\(s\) \['sigma'\]; "
        r"its options are \['bandwidths', 'median_scales', 'median_rows', 'kernel'\]",
    ):
        L.get_discrepancy("mmd", sigma=1.0)
    with pytest.raises(ValueError, match=r"'coral' has no option\(s\) \['hs_mask'\]; its options are \[\]"):
        L.get_discrepancy("coral", hs_mask=None)  # masks are per call, not options
    with pytest.raises(ValueError, match=r"'adversarial' has no option\(s\) \['gamma'\]; its options are \[\]"):
        L.get_discrepancy("adversarial", gamma=10.0)


def test_bad_bandwidths():
    x, y = jnp.zeros((4, 2)), jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"bandwidths must be > 0, got \[1.0, -0.5\]"):
        L.mmd(x, y, bandwidths=[1.0, -0.5])
    with pytest.raises(ValueError, match="bandwidths must be > 0"):
        L.mmd(x, y, bandwidths=0.0)
    with pytest.raises(ValueError, match="median_scales must be > 0"):
        L.mmd(x, y, median_scales=(1.0, -2.0))


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
    x, y = hs.astype(np.float64), ht.astype(np.float64)
    f = jax.jit(L.mmd, static_argnames="median_rows")
    # at least all rows: the heuristic on every row
    np.testing.assert_allclose(f(hs, ht, median_rows=80), np_mmd(x, y, [np_median_sigma(x, y)]), **F32_LOOSE)
    # 16 rows: σ₀ from the leading 8 + 8 rows only, the estimator on all 40 + 30 rows
    sigma0 = np_median_sigma(x[:8], y[:8])
    assert not np.isclose(sigma0, np_median_sigma(x, y), rtol=1e-2)  # the subsample really changes σ₀
    np.testing.assert_allclose(f(hs, ht, median_rows=16), np_mmd(x, y, [sigma0]), **F32_LOOSE)
    with pytest.raises(ValueError, match="median_rows=2 must be >= 4"):
        L.mmd(hs, ht, median_rows=2)

"""jaxrec.diagnostics: proxy A-distance, domain_gap against float64 references, overlap counts, diagnose."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data, diagnostics, methods
from jaxrec.diagnostics.gap import _fit_domain_classifier

# ----------------------------------------------------------------------------------------------------------------
# float64 references, written independently of the library
# ----------------------------------------------------------------------------------------------------------------


def _ref_mmd_median(a, b):
    """Unbiased MMD² with one Gaussian kernel, σ² = median of pooled pairwise squared distances (i < j)."""
    z = np.concatenate([a, b])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    sigma_sq = np.median(d2[np.triu_indices(z.shape[0], k=1)])
    k = np.exp(-d2 / (2 * sigma_sq))
    n, m = len(a), len(b)
    kss, ktt, kst = k[:n, :n], k[n:, n:], k[:n, n:]
    return (kss.sum() - np.trace(kss)) / (n * (n - 1)) + (ktt.sum() - np.trace(ktt)) / (m * (m - 1)) - 2 * kst.mean()


def _ref_coral(a, b):
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return ((ca - cb) ** 2).sum() / (4 * a.shape[1] ** 2)


def _normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# ----------------------------------------------------------------------------------------------------------------
# proxy A-distance
# ----------------------------------------------------------------------------------------------------------------


def test_proxy_a_distance_same_distribution_is_near_zero():
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        a, b = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 4))
        assert 0.0 <= diagnostics.proxy_a_distance(a, b, seed=seed) < 0.3
    # very unequal sizes: the balanced error keeps chance level at ε = 1/2 (plain error would reward "always a").
    a, b = rng.normal(size=(1500, 4)), rng.normal(size=(150, 4))
    assert diagnostics.proxy_a_distance(a, b) < 0.3


def test_proxy_a_distance_well_separated_is_near_two():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 4))
    b = rng.normal(size=(200, 4)) + 3.0
    assert diagnostics.proxy_a_distance(a, b) > 1.5
    # perfectly separable along one coordinate: exactly 2
    x = np.linspace(-1, 1, 64)[:, None]
    assert diagnostics.proxy_a_distance(x - 10.0, x + 10.0) == 2.0


def test_proxy_a_distance_matches_the_bayes_error():
    # Two unit Gaussians 1.0 apart along one axis: the best linear classifier errs with ε = Φ(−½), so the
    # proxy A-distance is 2 (1 − 2Φ(−½)) = 0.766; 500 held-out rows per domain give a std of about 0.06.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 4))
    b[:, 0] += 1.0
    expected = 2 * (1 - 2 * _normal_cdf(-0.5))
    assert abs(diagnostics.proxy_a_distance(a, b) - expected) < 0.15


def test_proxy_a_distance_is_deterministic_and_scale_free():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(150, 4)) + 0.3
    first = diagnostics.proxy_a_distance(a, b, seed=4)
    assert diagnostics.proxy_a_distance(a, b, seed=4) == first
    # features are standardized first: an affine change of units moves at most a borderline point or two
    scaled = diagnostics.proxy_a_distance(1e3 * a + 50.0, 1e3 * b + 50.0, seed=4)
    assert abs(scaled - first) <= 0.05
    # float32 inputs give the same answer as float64 ones up to rounding of borderline points
    assert abs(diagnostics.proxy_a_distance(a.astype(np.float32), b.astype(np.float32), seed=4) - first) <= 0.05


def test_proxy_a_distance_compiles_once_per_size_bucket():
    rng = np.random.default_rng(5)
    diagnostics.proxy_a_distance(rng.normal(size=(40, 4)), rng.normal(size=(30, 4)))
    size = _fit_domain_classifier._cache_size()
    diagnostics.proxy_a_distance(rng.normal(size=(50, 4)), rng.normal(size=(20, 4)), seed=1)
    assert _fit_domain_classifier._cache_size() == size


@pytest.mark.parametrize(
    "hs, ht, kwargs, error, text",
    [
        (np.zeros(5), np.zeros((5, 2)), {}, ValueError, "(5,)"),
        (np.zeros((5, 2)), np.zeros((5, 3)), {}, ValueError, "(5, 3)"),
        (np.zeros((5, 2), np.int32), np.zeros((5, 2)), {}, TypeError, "int32"),
        (np.zeros((1, 2)), np.zeros((5, 2)), {}, ValueError, "at least 2 rows"),
        (np.zeros((5, 2)), np.full((5, 2), np.nan), {}, ValueError, "finite"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"train_fraction": 1.0}, ValueError, "train_fraction"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"steps": 0}, ValueError, "steps"),
    ],
)
def test_proxy_a_distance_bad_input(hs, ht, kwargs, error, text):
    with pytest.raises(error) as info:
        diagnostics.proxy_a_distance(hs, ht, **kwargs)
    assert text in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# domain_gap
# ----------------------------------------------------------------------------------------------------------------


def test_domain_gap_matches_float64_references():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(120, 4)) + 0.2
    b = 1.3 * rng.normal(size=(90, 4)) - 0.1
    gap = diagnostics.domain_gap(a, b, seed=0)
    mu_a, mu_b = a.mean(0), b.mean(0)
    np.testing.assert_allclose(gap["mmd"], _ref_mmd_median(a, b), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gap["linear_mmd"], ((mu_a - mu_b) ** 2).sum(), rtol=1e-4)
    np.testing.assert_allclose(gap["coral"], _ref_coral(a, b), rtol=1e-4)
    np.testing.assert_allclose(gap["mean_distance"], np.linalg.norm(mu_a - mu_b), rtol=1e-10)
    cos = mu_a @ mu_b / (np.linalg.norm(mu_a) * np.linalg.norm(mu_b))
    np.testing.assert_allclose(gap["mean_cosine"], cos, rtol=1e-10)
    assert gap["proxy_a_distance"] == diagnostics.proxy_a_distance(a, b, seed=0)
    assert (gap["n_a"], gap["n_b"]) == (120, 90)
    assert set(diagnostics.GAP_MEASURES) <= set(gap)
    json.dumps(gap)  # plain Python numbers


def test_domain_gap_ranks_aligned_below_shifted_on_every_measure():
    rng = np.random.default_rng(7)
    cov = np.diag([1.0, 0.5, 0.25, 2.0])
    mu = np.full(4, 1.0)
    draw = lambda n, m=mu, c=cov: rng.multivariate_normal(m, c, size=n)  # noqa: E731
    aligned = diagnostics.domain_gap(draw(200), draw(150))
    shifted = diagnostics.domain_gap(draw(200), draw(150, mu + np.array([1.0, -1.0, 0.5, 0.0]), 2.0 * cov))
    for measure in ("mmd", "linear_mmd", "coral", "proxy_a_distance", "mean_distance"):
        assert aligned[measure] < shifted[measure], (measure, aligned[measure], shifted[measure])
    assert aligned["mean_cosine"] > shifted["mean_cosine"]  # a similarity: higher = closer


def test_domain_gap_subsamples_deterministically():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(70, 4)) + 1.0
    gap = diagnostics.domain_gap(a, b, seed=3, max_rows=64)
    assert (gap["n_a"], gap["n_b"]) == (64, 64)
    assert diagnostics.domain_gap(a, b, seed=3, max_rows=64) == gap
    with pytest.raises(ValueError, match="max_rows"):
        diagnostics.domain_gap(a, b, max_rows=0)


# ----------------------------------------------------------------------------------------------------------------
# overlap statistics on a hand-made dataset
# ----------------------------------------------------------------------------------------------------------------


def _tiny():
    """u1..u4 in source; u3, u4, u5 in target train; u2 (valid) and u1 (test) are cold; u5 is a warm test user;
    u6 appears only in target test (no source history: not cold)."""
    source = {"train": (["u1", "u1", "u2", "u3", "u4", "u4", "u4"], ["i1", "i2", "i1", "i3", "i2", "i3", "i1"])}
    target = {
        "train": (["u3", "u4", "u4", "u5"], ["j1", "j1", "j2", "j2"]),
        "valid": (["u2"], ["j1"]),
        "test": (["u1", "u5", "u6"], ["j2", "j1", "j1"]),
    }
    return data.from_arrays({"src": source, "tgt": target})


def test_overlap_stats_equal_a_hand_count():
    stats = diagnostics.overlap_stats(_tiny(), "src", "tgt")
    assert stats["n_users"] == 6
    assert stats["overlap_users"] == 2  # u3, u4
    assert stats["source_only_users"] == 2  # u1, u2
    assert stats["target_only_users"] == 1  # u5
    assert stats["cold_users"] == {"valid": 1, "test": 1}  # u2; u1
    src, tgt = stats["domains"]["src"], stats["domains"]["tgt"]
    # src: per-user counts u1 2, u2 1, u3 1, u4 3
    assert (src["users"], src["items"], src["interactions"]) == (4, 3, 7)
    assert src["interactions_per_user_mean"] == pytest.approx(7 / 4)
    assert src["interactions_per_user_median"] == pytest.approx(1.5)
    assert src["density"] == pytest.approx(7 / (4 * 3))
    # tgt: per-user counts u3 1, u4 2, u5 1
    assert (tgt["users"], tgt["items"], tgt["interactions"]) == (3, 2, 4)
    assert tgt["interactions_per_user_mean"] == pytest.approx(4 / 3)
    assert tgt["interactions_per_user_median"] == pytest.approx(1.0)
    assert tgt["density"] == pytest.approx(4 / (3 * 2))
    with pytest.raises(ValueError, match="must differ"):
        diagnostics.overlap_stats(_tiny(), "src", "src")
    with pytest.raises(ValueError, match="unknown domain"):
        diagnostics.overlap_stats(_tiny(), "src", "nope")


# ----------------------------------------------------------------------------------------------------------------
# diagnose
# ----------------------------------------------------------------------------------------------------------------


def test_diagnose_compares_the_documented_user_sets():
    ds = _tiny()
    rng = np.random.default_rng(9)
    tables = {"src": rng.normal(size=(6, 3)), "tgt": rng.normal(size=(6, 3))}
    report = diagnostics.diagnose(ds, tables, source="src", target="tgt", seed=2)
    src_users, tgt_users = ds.users_with("src"), ds.users_with("tgt")  # contiguous ids: u1 = 0, ..., u6 = 5
    cold = np.array([0, 1])  # u1 (test), u2 (valid)
    assert report["gaps"]["domains"] == diagnostics.domain_gap(
        tables["src"][src_users], tables["tgt"][tgt_users], seed=2
    )
    assert report["gaps"]["cold_vs_warm"] == diagnostics.domain_gap(
        tables["tgt"][cold], tables["tgt"][tgt_users], seed=2
    )
    assert report["overlap"] == diagnostics.overlap_stats(ds, "src", "tgt")
    assert report["notes"] == []
    # the callable form gives the same report
    as_callable = diagnostics.diagnose(ds, lambda u, d: tables[d][u], source="src", target="tgt", seed=2)
    assert as_callable == report
    text = diagnostics.format_report(report)
    assert "proxy A-distance" in text and "cold_vs_warm" in text and "users in both: 2" in text
    json.dumps(report)


def test_diagnose_skips_what_it_cannot_compare_and_checks_tables():
    ds = _tiny()
    only_target = {"tgt": np.ones((6, 2)) * np.arange(6)[:, None]}
    report = diagnostics.diagnose(ds, only_target, source="src", target="tgt", cold_splits=("test",))
    assert report["gaps"]["domains"] is None
    assert report["gaps"]["cold_vs_warm"] is None  # only u1 is a cold test user: fewer than 2
    assert any("'src'" in n for n in report["notes"]) and any("only 1 user" in n for n in report["notes"])
    assert "n/a" in diagnostics.format_report(report)
    with pytest.raises(ValueError, match=r"\[6, d\]"):
        diagnostics.diagnose(ds, {"src": np.ones((5, 2)), "tgt": np.ones((6, 2))}, source="src", target="tgt")
    with pytest.raises(ValueError, match="not a diagnose"):
        diagnostics.format_report({"gaps": {}})


@pytest.fixture(scope="module")
def trained_mmd():
    ds, _ = data.synthetic(n_users=160, n_items=(40, 30), interactions_per_user=(8.0, 4.0))
    ds = data.cold_start_split(ds, "source", "target", fraction=0.3)
    trained = methods.run("mmd", ds, source="source", target="target", epochs=1, progress=False, dim=8)
    return ds, trained


def test_diagnose_on_a_trained_model(trained_mmd):
    ds, trained = trained_mmd
    tables = diagnostics.scorer_user_tables(trained, n_users=ds.n_users, batch_size=64)
    assert set(tables) == {"source", "target"} and tables["target"].shape == (ds.n_users, 8 + 1)
    # the tables are the model's per-domain user representations (independent path: re-apply the module)
    model = methods.SharedEmbeddingModel(
        ds.n_users, (ds.n_items("source"), ds.n_items("target")), ("source", "target"), 8, (64,)
    )
    users = jnp.asarray(ds.users_with("target"))
    expected = model.apply({"params": trained.params}, users, 1, method=methods.SharedEmbeddingModel.user_vectors)
    np.testing.assert_allclose(tables["target"][np.asarray(users), :8], np.asarray(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tables["target"][np.asarray(users), 8], 0.0)  # users with history: no fallback

    report = diagnostics.diagnose(ds, tables, source="source", target="target")
    for name in ("domains", "cold_vs_warm"):
        gap = report["gaps"][name]
        assert all(math.isfinite(gap[m]) for m in diagnostics.GAP_MEASURES)
        assert 0.0 <= gap["proxy_a_distance"] <= 2.0
    assert report["gaps"]["domains"]["n_a"] == ds.users_with("source").size
    cold = np.union1d(ds.cold_users("source", "target", "valid"), ds.cold_users("source", "target", "test"))
    assert report["gaps"]["cold_vs_warm"]["n_a"] == cold.size
    assert "source -> target" in diagnostics.format_report(report)
    fig = diagnostics.diagnostics_figure(report)
    assert len(fig.axes) == 4
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx(
        [report["gaps"]["domains"]["mmd"], report["gaps"]["cold_vs_warm"]["mmd"]]
    )


# ---------------------------------------------------------------------------------------------- link test


def _scramble_target(ds, first_scrambled: int, seed: int = 0):
    """``ds`` with the target rows of users ``>= first_scrambled`` permuted among them (links broken)."""
    perm = np.arange(ds.n_users)
    tail = np.arange(first_scrambled, ds.n_users)
    perm[tail] = np.random.default_rng(seed).permutation(tail)
    arrays = {}
    for d in ds.domain_names:
        arrays[d] = {}
        for split in ds.splits(d):
            inter = ds.interactions(d, split)
            arrays[d][split] = (perm[inter.users] if d == "target" else inter.users, inter.items)
    return data.from_arrays(arrays)


def test_link_test_finds_the_users_whose_links_are_broken():
    ds, _ = data.synthetic(n_users=1200, n_items=(200, 150), seed=0)
    intact = diagnostics.link_test(ds, "source", "target", bands=4)
    assert intact["auc"] > intact["auc_permuted"] + 0.08
    assert all(b["auc"] - b["auc_permuted"] > 0.08 for b in intact["bands"])
    broken = diagnostics.link_test(_scramble_target(ds, 600), "source", "target", bands=4)
    gains = [b["auc"] - b["auc_permuted"] for b in broken["bands"]]
    assert gains[0] > 0.04 and gains[1] > 0.04  # users 0..~600 keep their links
    assert abs(gains[2]) < 0.03 and abs(gains[3]) < 0.03  # the scrambled ones look like broken links
    assert broken["bands"][0]["first_user"] == 0 and broken["bands"][-1]["last_user"] == 1199
    text = diagnostics.format_link_test(broken)
    assert "link test source -> target" in text and len(text.splitlines()) == 2 + 4
    json.dumps(broken)


def test_link_test_matches_a_dense_float64_reference():
    ds, _ = data.synthetic(n_users=150, n_items=(30, 20), seed=4)
    report = diagnostics.link_test(ds, "source", "target", n_negatives=4000, bands=1, seed=1)
    overlap = np.intersect1d(ds.users_with("source"), ds.users_with("target"))
    xs = np.zeros((ds.n_users, ds.n_items("source")))
    xt = np.zeros((ds.n_users, ds.n_items("target")))
    for x, d in ((xs, "source"), (xt, "target")):
        inter = ds.interactions(d, "train")
        x[inter.users, inter.items] = 1.0
    xs, xt = xs[overlap], xt[overlap]
    shared = xs @ xs.T
    np.fill_diagonal(shared, 0.0)  # leave the user out of their own map
    scores = shared @ xt
    catalogue = xt.sum(0) > 0
    aucs = []
    for u in range(overlap.size):
        pos, neg = scores[u, xt[u] > 0], scores[u, catalogue & (xt[u] == 0)]
        aucs.append((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    assert report["evaluated"] == overlap.size
    assert report["auc"] == pytest.approx(np.mean(aucs), abs=0.01)  # 4000 sampled negatives vs all of them


def test_link_test_bad_input():
    ds, _ = data.synthetic(n_users=100, n_items=(40, 30), seed=0)
    with pytest.raises(data.DataError, match="must differ"):
        diagnostics.link_test(ds, "source", "source")
    with pytest.raises(data.DataError, match="unknown domain 'nope'"):
        diagnostics.link_test(ds, "source", "nope")
    with pytest.raises(ValueError, match="max_users"):
        diagnostics.link_test(ds, "source", "target", max_users=0)
    lonely = data.from_arrays({"a": {"train": ([0, 1], [0, 0])}, "b": {"train": ([1, 2], [0, 0])}})
    with pytest.raises(data.DataError, match="at least 3 users"):
        diagnostics.link_test(lonely, "a", "b")


@pytest.mark.shared_data
def test_link_test_on_amazon_shows_the_per_domain_ids(amazon_dir):
    # Read as shared, only the lowest ids (the 1,736 true common users) link the domains; read correctly, all do.
    plain = diagnostics.link_test(data.load_dir(amazon_dir), "game", "video", max_users=3000)
    gains = [b["auc"] - b["auc_permuted"] for b in plain["bands"]]
    assert gains[0] > 0.03 and np.mean(gains[1:]) < 0.01
    fixed = diagnostics.link_test(data.load_dir(amazon_dir, shared_users="below_heldout"), "game", "video")
    assert fixed["overlap_users"] == 1_736 and min(b["auc"] - b["auc_permuted"] for b in fixed["bands"]) > 0.03

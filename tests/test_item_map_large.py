"""item_map's low-rank solver: equal to the dense solver at full rank, close at a truncated rank, against float64
numpy references; the solver choice and its config checks; the factors as a public function; the saved scorer."""

import json

import numpy as np
import pytest

from jaxrec import data, methods, runs
from jaxrec.methods import item_map_lowrank as lr


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=300, n_items=(60, 40), interactions_per_user=(8.0, 4.0), seed=1)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


def _rows(ds, domain):
    x = np.zeros((ds.n_users, ds.n_items(domain)))
    inter = ds.interactions(domain)
    x[inter.users, inter.items] = 1.0
    return x


def _reference_map(ds, lam, lam_t, weight):
    """Float64 ``W' = W (I + γ B_t)`` from dense numpy matrices (test_methods.py checks the dense solver with it)."""
    xs, xt = _rows(ds, "source"), _rows(ds, "target")
    counts = xs.sum(0)
    scale = np.where(counts > 0, np.maximum(counts, 1.0) ** -0.5, 0.0)
    overlap = (xs.sum(1) > 0) & (xt.sum(1) > 0)
    a = xs[overlap] * scale
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ xt[overlap])
    p = np.linalg.inv(xt.T @ xt + lam_t * np.eye(xt.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return w + weight * w @ b, xs * scale


def _truncated_reference_map(ds, lam, lam_t, weight, rank):
    """Float64 ``W'`` from the exact rank-``rank`` SVDs of the scaled source rows of the overlapping users and of the
    target rows: ``W = V diag(S / (S² + λ)) Uᵀ X_t``; ``B_t = I − P diag(g)`` with the exact ``P = (G + λ_t I)⁻¹``
    and ``g = 1 / diag`` of the same inverse with ``G`` replaced by ``V_t S_t² V_tᵀ`` plus the diagonal it misses."""
    xs, xt = _rows(ds, "source"), _rows(ds, "target")
    counts = xs.sum(0)
    scale = np.where(counts > 0, np.maximum(counts, 1.0) ** -0.5, 0.0)
    overlap = (xs.sum(1) > 0) & (xt.sum(1) > 0)
    u, s, vt = np.linalg.svd(xs[overlap] * scale, full_matrices=False)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    w = (vt.T * (s / (s**2 + lam))) @ (u.T @ xt[overlap])
    _, st, vtt = np.linalg.svd(xt, full_matrices=False)
    v, st = vtt[:rank].T, st[:rank]
    approx = (v * st**2) @ v.T
    approx += np.diag(np.maximum(xt.sum(0) - np.diag(approx), 0.0))
    g = 1.0 / np.diag(np.linalg.inv(approx + lam_t * np.eye(xt.shape[1])))
    p = np.linalg.inv(xt.T @ xt + lam_t * np.eye(xt.shape[1]))
    return w + weight * w @ (np.eye(len(g)) - p * g[None, :])


def test_randomized_svd_full_rank_is_exact_and_truncated_is_the_leading_part():
    rng = np.random.default_rng(0)
    x = (rng.random((50, 30)) < 0.2).astype(np.float32)
    import scipy.sparse

    u, s, vt = lr.randomized_svd(scipy.sparse.csr_matrix(x), 100, seed=0)
    assert u.shape == (50, 30) and s.shape == (30,) and vt.shape == (30, 30)
    np.testing.assert_allclose(u * s @ vt, x, atol=2e-5)
    want = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(s, want, rtol=1e-4, atol=1e-5)
    _, s5, _ = lr.randomized_svd(scipy.sparse.csr_matrix(x), 5, seed=0)
    np.testing.assert_allclose(s5, want[:5], rtol=2e-2)


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_lowrank_at_full_rank_equals_the_dense_map(tiny, weight):
    kw = dict(lams=(5.0,), target_lams=(3.0,), target_weights=(weight,), pop_weight=0.1)
    dense = methods.run("item_map", tiny, source="source", target="target", solver="dense", **kw)
    low = methods.run("item_map", tiny, source="source", target="target", solver="lowrank", rank=500, **kw)
    assert dense.params["solver"] == "dense" and low.params["solver"] == "lowrank"
    assert low.config.solver == "lowrank"
    want, _ = _reference_map(tiny, 5.0, 3.0, weight)
    got = np.asarray(low.params["source_factors"]) @ np.asarray(low.params["target_factors"])
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(np.asarray(dense.params["W"]), want, rtol=5e-3, atol=5e-5)
    users = np.arange(tiny.n_users, dtype=np.int32)  # with and without source history
    np.testing.assert_allclose(
        np.asarray(low.scorers["target"].users_fn(users)),
        np.asarray(dense.scorers["target"].users_fn(users)),
        rtol=5e-3,
        atol=5e-5,
    )


def test_lowrank_at_a_truncated_rank_is_close_and_selects_on_valid(tiny):
    kw = dict(lams=(1.0, 10.0), target_lams=(3.0,), target_weights=(0.0, 2.0), pop_weight=0.1)
    dense = methods.run("item_map", tiny, source="source", target="target", solver="dense", **kw)
    low = methods.run("item_map", tiny, source="source", target="target", solver="lowrank", rank=24, **kw)
    assert [(r["lam"], r["target_weight"]) for r in low.history] == [(1.0, 0.0), (10.0, 0.0)] + [
        (low.params["lam"], 2.0)
    ]
    assert np.asarray(low.params["source_factors"]).shape == (60, 24)
    assert np.asarray(low.params["target_factors"]).shape == (24, 40)
    lam, weight = low.params["lam"], low.params["target_weight"]
    got = np.asarray(low.params["source_factors"]) @ np.asarray(low.params["target_factors"])
    want = _truncated_reference_map(tiny, lam, 3.0, weight, 24)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.03  # the randomised SVD's error, at 4 iterations
    full, _ = _reference_map(tiny, lam, 3.0, weight)
    assert np.linalg.norm(got - full) / np.linalg.norm(full) > 0.1  # truncation did cut (a flat synthetic spectrum)
    for d, lo in zip(dense.history, low.history):
        assert lo["valid_NDCG@10"] == pytest.approx(d["valid_NDCG@10"], abs=0.05)


def test_auto_chooses_dense_below_the_limit_and_config_checks():
    assert methods.item_map.item_map_solver(methods.ItemMapConfig(), 10_000, 10_000) == "dense"
    limit = methods.item_map.DENSE_ITEM_LIMIT
    assert methods.item_map.item_map_solver(methods.ItemMapConfig(), limit - 100, 100) == "dense"
    assert methods.item_map.item_map_solver(methods.ItemMapConfig(), limit, 1) == "lowrank"
    assert methods.item_map.item_map_solver(methods.ItemMapConfig(solver="dense"), limit, 1) == "dense"
    assert methods.item_map.item_map_solver(methods.ItemMapConfig(solver="lowrank"), 5, 5) == "lowrank"
    with pytest.raises(ValueError, match=r"ItemMapConfig.solver='sparse'; expected one of auto, dense, lowrank"):
        methods.ItemMapConfig(solver="sparse")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="ItemMapConfig.rank must be a positive int"):
            methods.ItemMapConfig(rank=bad)
    with pytest.raises(ValueError, match="ItemMapConfig.rank must be an int"):
        methods.common.make_config(methods.ItemMapConfig(), {"rank": "many"}, from_strings=True)
    config = methods.common.make_config(methods.ItemMapConfig(), {"solver": "lowrank", "rank": "64"}, from_strings=True)
    assert (config.solver, config.rank) == ("lowrank", 64)


def test_item_map_factors_shapes_and_scores(tiny):
    config = methods.ItemMapConfig(lams=(5.0,), target_lams=(3.0,), target_weights=(2.0,))
    f = methods.item_map_factors(tiny, source="source", target="target", config=config, rank=80)
    n_s, n_t = tiny.n_items("source"), tiny.n_items("target")
    assert f.source.shape == (n_s, 80) and f.target.shape == (n_t, 80) and f.scale.shape == (n_s,)
    assert f.extras["users"].shape == (tiny.n_users, 80) and f.extras["log_pop"].shape == (n_t,)
    k = f.extras["rank"]
    assert k == min(n_s, int(np.sum(_rows(tiny, "source").any(1) & _rows(tiny, "target").any(1))))
    assert not f.source[:, k:].any() and not f.target[:, k:].any()
    np.testing.assert_allclose(
        np.linalg.norm(f.source[:, :k], axis=0), np.linalg.norm(f.target[:, :k], axis=0), rtol=1e-5
    )
    want, x_scaled = _reference_map(tiny, 5.0, 3.0, 2.0)
    np.testing.assert_allclose(f.source @ f.target.T, want, rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(f.extras["users"] @ f.target.T, x_scaled @ want, rtol=2e-3, atol=5e-5)
    again = methods.item_map_factors(tiny, source="source", target="target", config=config, rank=80)
    np.testing.assert_array_equal(f.source, again.source)  # pure and seeded
    small = methods.item_map_factors(tiny, source="source", target="target", config=config, rank=8)
    assert small.source.shape == (n_s, 8) and small.extras["rank"] == 8
    with pytest.raises(ValueError, match="rank must be a positive int"):
        methods.item_map_factors(tiny, source="source", target="target", config=config, rank=0)
    with pytest.raises(data.DataError, match="source and target must differ"):
        methods.item_map_factors(tiny, source="source", target="source", config=config)


def test_lowrank_run_saves_and_loads_its_scorer(tiny, tmp_path):
    kw = dict(lams=(5.0,), target_lams=(3.0,), target_weights=(2.0,), solver="lowrank", rank=16)
    trained, run_dir = runs.train_run(
        tiny, method="item_map", source="source", target="target", out=tmp_path / "r", **kw
    )
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["scorers"]["target"]["users_fn"]["partial"] == "item_map_factored_scores"
    restored = runs.load_scorers(run_dir)["target"]
    users = np.arange(20, dtype=np.int32)
    np.testing.assert_array_equal(
        np.asarray(restored.users_fn(users)), np.asarray(trained.scorers["target"].users_fn(users))
    )


def test_valid_subset_keeps_a_seeded_subset_of_the_cold_users(tiny):
    from jaxrec.methods.common import valid_subset

    cold = tiny.cold_users("source", "target", "valid")
    assert cold.size > 10
    sub = valid_subset(tiny, "source", "target", 10, seed=3)
    kept = np.unique(sub.interactions("target", "valid").users)
    assert kept.size == 10 and np.isin(kept, cold).all()
    np.testing.assert_array_equal(
        kept, np.unique(valid_subset(tiny, "source", "target", 10, seed=3).interactions("target", "valid").users)
    )
    valid = tiny.interactions("target", "valid")
    assert sub.interactions("target", "valid").size == np.isin(valid.users, kept).sum()  # every item of a kept user
    for domain, split in (("target", "train"), ("target", "test"), ("source", "train")):
        np.testing.assert_array_equal(sub.interactions(domain, split).users, tiny.interactions(domain, split).users)
    assert valid_subset(tiny, "source", "target", None, seed=0) is tiny
    assert valid_subset(tiny, "source", "target", cold.size, seed=0) is tiny
    with pytest.raises(ValueError, match="max_users must be a positive int, got 0"):
        valid_subset(tiny, "source", "target", 0, seed=0)
    with pytest.raises(ValueError, match="ItemMapConfig.valid_users must be a positive int, got 0"):
        methods.ItemMapConfig(valid_users=0)


def test_item_map_selects_on_the_valid_subset(tiny):
    grid = {"lams": (1.0, 30.0), "target_lams": (10.0,), "target_weights": (0.0,)}
    every = methods.run("item_map", tiny, source="source", target="target", valid_users=None, **grid)
    capped = methods.run("item_map", tiny, source="source", target="target", valid_users=10**6, **grid)
    np.testing.assert_array_equal(np.asarray(every.params["W"]), np.asarray(capped.params["W"]))
    assert [r["valid_NDCG@10"] for r in every.history] == [r["valid_NDCG@10"] for r in capped.history]
    few = methods.run("item_map", tiny, source="source", target="target", valid_users=5, **grid)
    assert [r["valid_NDCG@10"] for r in few.history] != [r["valid_NDCG@10"] for r in every.history]

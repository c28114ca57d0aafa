"""``factor_map``: the randomised factorisation against numpy's SVD, the initial model against ``item_map``'s scores,
the trained scorer against a numpy reference, the recipe's groups and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data, methods
from jaxrec.methods import factor_map, factor_model, item_map

GRID = dict(lams=(10.0,), target_lams=(10.0,), target_weights=(1.0,))
SMALL = dict(GRID, rank=8, history_length=12, positives=4, batch_size=32, side_batch_size=32, epochs=2, progress=False)


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=300, n_items=(60, 40), interactions_per_user=(8.0, 4.0), seed=1)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# The factorisation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [3, 10, 40])
def test_low_rank_factors_are_the_best_rank_r_approximation(rank):
    rng = np.random.default_rng(0)
    # a decaying spectrum, as item maps have
    u, _ = np.linalg.qr(rng.normal(size=(50, 30)))
    v, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    matrix = (u * 0.7 ** np.arange(30)) @ v.T
    left, right = jax.jit(factor_model.low_rank_factors, static_argnums=1)(
        jnp.asarray(matrix, jnp.float32), rank, jax.random.key(1)
    )
    r = min(rank, 30)
    assert left.shape == (50, r) and right.shape == (30, r)
    np.testing.assert_allclose(np.asarray(right).T @ np.asarray(right), np.eye(r), atol=1e-4)
    uu, s, vt = np.linalg.svd(matrix)
    best = (uu[:, :r] * s[:r]) @ vt[:r]
    np.testing.assert_allclose(np.asarray(left) @ np.asarray(right).T, best, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# The initial model scores as item_map does
# ----------------------------------------------------------------------------------------------------------------


def _dense(scorer, users):
    q = np.asarray(scorer.users_fn(jnp.asarray(users, jnp.int32)))
    return q if scorer.items is None else q @ np.asarray(scorer.items).T


def test_full_rank_initial_model_scores_as_item_map(tiny):
    config = methods.FactorMapConfig(**(SMALL | {"rank": 1000}))
    init, chosen = factor_map.factor_map_init(tiny, "source", "target", config)
    assert init["source"].shape == (60, 40) and init["target"].shape == (40, 40)  # rank clipped to min(N_s, N_t)
    model = factor_model.FactorMapModel((60, 40), 40)
    scorer = factor_map.factor_map_scorer(model, tiny, "source", "target")(init)
    reference = item_map.train_item_map(tiny, source="source", target="target", config=config.item_map_config())
    assert chosen == reference.config
    users = np.arange(tiny.n_users)
    users = users[tiny.seen("source").lengths[users] > 0]
    np.testing.assert_allclose(_dense(scorer, users), _dense(reference.scorers["target"], users), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------------------

RUNS = {
    "cross": {},
    "target": {"target_weight": 1.0},
    "aligned": {"target_weight": 1.0, "discrepancy": "mmd", "lam": 0.5},
}


@pytest.fixture(scope="module")
def runs(tiny):
    return {
        name: methods.run("factor_map", tiny, source="source", target="target", **SMALL, **o)
        for name, o in RUNS.items()
    }


@pytest.mark.parametrize("name", sorted(RUNS))
def test_recipe_trains_its_groups(runs, name):
    trained = runs[name]
    records = [r for r in trained.history if "loss" in r]
    assert records and all(np.isfinite(r["loss"]) for r in records)
    evals = [r for r in trained.history if "eval/NDCG@10" in r]
    assert evals[0]["step"] == 0 and len(evals) == 1 + SMALL["epochs"]  # the initial model, then every epoch
    tasks = {k for r in records for k in r if k.startswith("task/")}
    assert tasks == ({"task/cross"} if name == "cross" else {"task/cross", "task/target"})
    assert all((r["discrepancy"] != 0) == (name == "aligned") for r in records)
    assert ("target_history" in trained.params) == (name != "cross")
    assert trained.config.lams == GRID["lams"]


def test_scorer_equals_numpy(runs, tiny):
    trained = runs["target"]
    p = {k: np.asarray(v, np.float64) for k, v in trained.params.items()}
    seen = tiny.seen("source")
    has = np.flatnonzero(seen.lengths > 0)[:20]
    u = np.stack([p["source"][seen.indices[seen.indptr[i] : seen.indptr[i + 1]]].sum(0) for i in has])
    raw = u @ p["target"].T
    want = raw / np.abs(raw).max(1, keepdims=True) + p["bias"]
    got = _dense(trained.scorers["target"], has)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # users without source history: target popularity
    none = np.flatnonzero(seen.lengths == 0)[:3]
    assert none.size
    np.testing.assert_allclose(
        _dense(trained.scorers["target"], none), np.log1p(tiny.item_popularity("target"))[None].repeat(3, 0), rtol=1e-6
    )


def test_config_errors(tiny):
    with pytest.raises(ValueError, match="FactorMapConfig.rank must be a positive int, got 0"):
        methods.FactorMapConfig(rank=0)
    with pytest.raises(ValueError, match=r"FactorMapConfig.temperature must be a number in \(0, inf\)"):
        methods.FactorMapConfig(temperature=0.0)
    with pytest.raises(ValueError, match=r"FactorMapConfig.target_weight must be a number in \[0, inf\)"):
        methods.FactorMapConfig(target_weight=-1.0)
    with pytest.raises(ValueError, match="ItemMapConfig.lams"):
        methods.FactorMapConfig(lams=())
    with pytest.raises(ValueError, match="unknown discrepancy"):
        methods.FactorMapConfig(discrepancy="wasserstein9")
    unlinked = data.limit_overlap(tiny, "source", "target", ratio=0.0)
    with pytest.raises(data.DataError, match="both"):
        methods.run("factor_map", unlinked, source="source", target="target", **SMALL)


def test_truncating_a_factored_map_is_the_best_rank_r_approximation():
    rng = np.random.default_rng(3)
    a, c = rng.normal(size=(40, 12)), rng.normal(size=(12, 25))
    left, right = factor_map._truncate(jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32), 5)
    uu, s, vt = np.linalg.svd(a @ c)
    np.testing.assert_allclose(np.asarray(left) @ np.asarray(right).T, (uu[:, :5] * s[:5]) @ vt[:5], atol=1e-3)

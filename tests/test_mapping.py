"""Transfer-by-mapping recipes: EMCDR's mapping against numpy, PTUPCDR's frozen tables and histories, finetune's
frozen parts (that every recipe beats popularity is tested in test_methods.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import batching, data, methods
from jaxrec.methods import ptupcdr

RECIPES = ("emcdr", "finetune", "ptupcdr")
SMALL = dict(dim=8, batch_size=256, progress=False)
ONE_EPOCH = {
    "emcdr": dict(SMALL, epochs=1, map_epochs=2, linear=False, hidden=(16,)),
    "finetune": dict(SMALL, pretrain_epochs=1, epochs=2),
}


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=300, n_items=(60, 40), interactions_per_user=(8.0, 4.0), seed=1)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def trained(tiny):
    """emcdr and finetune trained for one or two epochs on ``tiny`` (shared by several tests: compiling dominates)."""
    return {name: _train(name, tiny, **overrides) for name, overrides in ONE_EPOCH.items()}


def _train(name, ds, **overrides):
    recipe = methods.METHODS[name]
    return recipe.train(
        ds, source="source", target="target", config=dataclasses.replace(recipe.default_config, **overrides)
    )


# ----------------------------------------------------------------------------------------------------------------
# configs and registry
# ----------------------------------------------------------------------------------------------------------------


def test_recipes_registry_and_config_errors():
    for name in RECIPES:
        recipe = methods.METHODS[name]
        assert isinstance(recipe, methods.Method) and recipe.name == name
        fields = {f.name for f in dataclasses.fields(recipe.default_config)}
        assert {"dim", "epochs", "batch_size", "seed", "progress"} <= fields  # the options every recipe accepts
    with pytest.raises(ValueError, match="EMCDRConfig.dim must be a positive int, got 0"):
        methods.EMCDRConfig(dim=0)
    with pytest.raises(ValueError, match=r"unknown PTUPCDRConfig.loss 'mse'; valid losses: \['bpr', 'softmax'\]"):
        methods.PTUPCDRConfig(loss="mse")
    with pytest.raises(ValueError, match="FinetuneConfig.pretrain='target'"):
        methods.FinetuneConfig(pretrain="target")
    with pytest.raises(ValueError, match=r"EMCDRConfig.map_learning_rate must be a number in \(0, inf\), got 0"):
        methods.EMCDRConfig(map_learning_rate=0)


def test_same_source_and_target_is_an_error(tiny):
    for recipe in (methods.METHODS[name] for name in RECIPES):
        with pytest.raises(data.DataError, match="source and target must differ"):
            recipe.train(tiny, source="target", target="target", config=recipe.default_config)


# ----------------------------------------------------------------------------------------------------------------
# EMCDR's mapping
# ----------------------------------------------------------------------------------------------------------------


def test_fit_mapping_recovers_a_planted_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    m = rng.normal(size=(6, 4)).astype(np.float32) / np.sqrt(6)
    y = x @ m + 0.01 * rng.normal(size=(256, 4)).astype(np.float32)
    module, params, history = methods.fit_mapping(x, y, linear=True, epochs=60, batch_size=64, learning_rate=2e-2)
    reference, *_ = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)  # float64 least squares
    np.testing.assert_allclose(np.asarray(params["linear"]["kernel"]), reference, atol=2e-2)
    np.testing.assert_allclose(np.asarray(module.apply({"params": params}, x)), x @ reference, atol=5e-2)
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < 0.01 * losses[0]


def test_fit_mapping_mlp_fits_a_nonlinear_relation_better_than_linear():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(512, 4)).astype(np.float32)
    y = np.tanh(2.0 * x[:, :2]) * x[:, 2:]  # no linear map explains it
    kw = dict(epochs=60, batch_size=128, learning_rate=1e-2)
    lin_module, lin, _ = methods.fit_mapping(x, y, linear=True, **kw)
    mlp_module, mlp, _ = methods.fit_mapping(x, y, hidden=(64,), **kw)
    err_lin = np.mean((np.asarray(lin_module.apply({"params": lin}, x)) - y) ** 2)
    err_mlp = np.mean((np.asarray(mlp_module.apply({"params": mlp}, x)) - y) ** 2)
    assert err_mlp < 0.5 * err_lin, (err_mlp, err_lin)


def test_fit_mapping_rejects_bad_inputs():
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"same M, got \(5, 3\) and \(4, 3\)"):
        methods.fit_mapping(x, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"rank 2"):
        methods.fit_mapping(x[0], x[0])
    with pytest.raises(TypeError, match="must be floats"):
        methods.fit_mapping(x.astype(np.int32), x)
    with pytest.raises(ValueError, match="patience needs evaluate"):
        methods.fit_mapping(x, x, patience=2)


def _np_mlp(params, x):
    h = np.tanh(x @ np.asarray(params["mlp"]["dense_0"]["kernel"]) + np.asarray(params["mlp"]["dense_0"]["bias"]))
    return h @ np.asarray(params["mlp"]["dense_1"]["kernel"]) + np.asarray(params["mlp"]["dense_1"]["bias"])


def test_emcdr_scores_cold_users_by_the_mapped_source_vector(tiny, trained):
    trained = trained["emcdr"]
    src_users, _ = trained.params["source"]
    tgt_users, tgt_items = trained.params["target"]
    scorer = trained.scorers["target"]
    cold = tiny.cold_users("source", "target", "test")
    warm = tiny.users_with("target", "train")[:5]
    q_cold = np.asarray(scorer.users_fn(jnp.asarray(cold, jnp.int32)))
    q_warm = np.asarray(scorer.users_fn(jnp.asarray(warm, jnp.int32)))
    d = tgt_items.shape[1]
    np.testing.assert_allclose(q_cold[:, :d], _np_mlp(trained.params["mapping"], src_users[cold]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q_warm[:, :d], tgt_users[warm], rtol=1e-6)
    np.testing.assert_array_equal(q_cold[:, d], 0.0)  # no popularity column for users with history


# ----------------------------------------------------------------------------------------------------------------
# PTUPCDR
# ----------------------------------------------------------------------------------------------------------------


def test_padded_history_matches_the_seen_sets():
    ds = data.from_arrays(
        {
            "a": {"train": ([0, 0, 0, 0, 0, 1, 1, 2], [0, 1, 2, 3, 4, 2, 4, 1])},
            "b": {"train": ([0, 1, 2, 3], [0, 0, 1, 1])},
        }
    )
    hist = methods.padded_history(ds, "a", length=3, seed=0)
    assert hist.shape == (4, 3) and hist.dtype == np.int32
    seen = ds.seen("a")
    for user in range(4):
        row = hist[user]
        valid = row[row >= 0]
        assert np.all(row[valid.size :] == -1)  # padding at the end
        assert valid.size == min(3, seen.lengths[user]) and len(set(valid.tolist())) == valid.size
        assert set(valid.tolist()) <= set(seen.row(user).tolist())
        if seen.lengths[user] <= 3:
            assert sorted(valid.tolist()) == sorted(seen.row(user).tolist())
    np.testing.assert_array_equal(hist, methods.padded_history(ds, "a", length=3, seed=0))  # deterministic
    subsets = {tuple(sorted(methods.padded_history(ds, "a", length=3, seed=s)[0])) for s in range(20)}
    assert len(subsets) > 1  # long histories are subsampled at random, not truncated


def test_ptupcdr_updates_only_the_meta_network(tiny):
    model = ptupcdr._BridgeModel(tiny.n_users, (tiny.n_items("source"), tiny.n_items("target")), 8, 8, (8,))
    seen = tiny.seen("target")
    users = tiny.users_with("target")[:16]
    sampler = batching.NegativeSampler(tiny.n_items("target"), seen=seen)
    history = methods.padded_history(tiny, "source", length=5)
    batch = next(
        ptupcdr._user_batches(
            users, history, seen, sampler, batch_size=16, positives=5, negatives=2, rng=np.random.default_rng(0)
        )
    )
    assert batch["items"].shape == (16, 5) and batch["negatives"].shape == (16, 5, 2)
    assert 0 < batch["mask"].sum() < batch["mask"].size  # some users have fewer than 5 target items
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]

    @jax.jit
    def loss(p, b):
        out = model.apply({"params": p}, b)
        return ptupcdr._bpr_task(out["pos"], out["neg"], out["mask"])

    grads = jax.jit(jax.grad(loss))(params, batch)
    for table in ("user_table", "items_0", "items_1"):
        assert not np.any(np.asarray(grads["embed"][table]["embedding"])), table  # frozen: exactly zero
    assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads["meta"])) > 0
    # padded positives do not count: changing their negatives leaves the loss unchanged
    other = dict(batch, negatives=np.where(batch["mask"][..., None], batch["negatives"], 0))
    np.testing.assert_allclose(loss(params, batch), loss(params, other), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------------------------


def _tables(trained):
    embed = trained.params["embed"]
    return {k: np.asarray(embed[k]["embedding"]) for k in ("user_table", "items_0", "items_1")}


def test_finetune_leaves_frozen_parts_unchanged(tiny, trained):
    kw = ONE_EPOCH["finetune"]
    a = _tables(trained["finetune"])  # finetune_learning_rate=1e-2
    b = _tables(_train("finetune", tiny, **kw, finetune_learning_rate=3e-2))
    # phase 1 is the same run in both; phase 2 freezes users and source items, so only the target items differ
    np.testing.assert_array_equal(a["user_table"], b["user_table"])
    np.testing.assert_array_equal(a["items_0"], b["items_0"])
    assert not np.allclose(a["items_1"], b["items_1"])
    # freeze_users=False: overlapping users move, cold users (no target interaction) keep their pretrained rows
    c = _tables(_train("finetune", tiny, **kw, finetune_learning_rate=3e-2, freeze_users=False))
    cold = np.concatenate([tiny.cold_users("source", "target", s) for s in ("valid", "test")])
    warm = tiny.users_with("target", "train")
    np.testing.assert_array_equal(c["user_table"][cold], a["user_table"][cold])
    assert not np.allclose(c["user_table"][warm], a["user_table"][warm])
    np.testing.assert_array_equal(c["items_0"], a["items_0"])

"""Joint multi-domain recipes: the scorers equal the model and an independent LightGCN reference; the models'
contracts and errors (that every recipe beats popularity is tested in test_methods.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data, methods, models

RECIPE_NAMES = ("conet", "cross_stitch", "lightgcn", "mmoe", "ple", "shared_bottom", "star")
FAST = dict(epochs=1, progress=False, dim=8, batch_size=256)


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=300, n_items=(60, 40), interactions_per_user=(8.0, 4.0), seed=1)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def trained_tiny(tiny):
    """Each recipe trained for one epoch on the tiny data (shared by the tests below)."""
    out = {}
    for name in RECIPE_NAMES:
        method = methods.METHODS[name]
        config = dataclasses.replace(method.default_config, **FAST)
        out[name] = method.train(tiny, source="source", target="target", config=config)
    return out


def _scores(scorer, users):
    return np.asarray(scorer.users_fn(jnp.asarray(users, jnp.int32))) @ np.asarray(scorer.items).T


def test_registry_entries():
    for name in RECIPE_NAMES:
        method = methods.METHODS[name]
        assert isinstance(method, methods.Method) and method.name == name
        assert isinstance(method.default_config, methods.JointConfig)


def test_config_errors_quote_the_values():
    with pytest.raises(ValueError, match=r"MMoEConfig.dim must be a positive int, got 0"):
        methods.MMoEConfig(dim=0)
    with pytest.raises(ValueError, match=r"PLEConfig.num_shared_experts must be a positive int, got 0"):
        methods.PLEConfig(num_shared_experts=0)
    with pytest.raises(ValueError, match=r"CoNetConfig.tower_hidden must be a non-empty sequence of positive ints"):
        methods.CoNetConfig(tower_hidden=())
    with pytest.raises(ValueError, match=r"LightGCNConfig.num_layers must be a non-negative int, got -1"):
        methods.LightGCNConfig(num_layers=-1)
    with pytest.raises(ValueError, match=r"LightGCNConfig.max_steps_per_epoch must be a positive int, got 0"):
        methods.LightGCNConfig(max_steps_per_epoch=0)
    with pytest.raises(ValueError, match=r"JointConfig.sparse_min_rows=0; expected a positive int or None"):
        methods.JointConfig(sparse_min_rows=0)
    with pytest.raises(ValueError, match=r"STARConfig.learning_rate must be a number in \(0, inf\), got 0.0"):
        methods.STARConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"MMoEConfig.dropout_rate must be a number in \[0, 1\), got 1.0"):
        methods.MMoEConfig(dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"SharedBottomConfig.bottom_features must be a non-empty sequence"):
        methods.SharedBottomConfig(bottom_features=())
    with pytest.raises(ValueError, match=r"CrossStitchConfig.tower_hidden must be a non-empty sequence"):
        methods.CrossStitchConfig(tower_hidden=())


def test_same_source_and_target_is_an_error(tiny):
    with pytest.raises(data.DataError, match="source and target must differ"):
        methods.train_mmoe(tiny, source="target", target="target", config=methods.MMoEConfig(**FAST))


def _network(name, config):
    """The recipe's user network, built here independently of the recipe code."""
    out = (config.dim,)
    if name == "mmoe":
        return models.MMoE(
            num_domains=2,
            num_experts=config.num_experts,
            expert_features=config.expert_features,
            tower_features=config.tower_hidden + out,
        )
    if name == "ple":
        return models.PLE(
            num_domains=2,
            num_layers=config.num_layers,
            expert_features=config.expert_features,
            num_specific_experts=config.num_specific_experts,
            num_shared_experts=config.num_shared_experts,
            tower_features=config.tower_hidden + out,
        )
    if name == "star":
        return models.STAR(num_domains=2, features=config.tower_hidden + out)
    if name == "shared_bottom":
        return models.SharedBottom(
            num_domains=2, bottom_features=config.bottom_features, tower_features=config.tower_hidden + out
        )
    if name == "cross_stitch":
        return models.CrossStitch(features=config.tower_hidden + out)
    return models.CoNet(features=config.tower_hidden + out)


#: The submodule of the two-tower networks inside ``params["network"]``.
DUAL = {"conet": "conet", "cross_stitch": "cross_stitch"}


@pytest.mark.parametrize("name", ["conet", "cross_stitch", "mmoe", "ple", "shared_bottom", "star"])
def test_network_scorer_equals_direct_apply(trained_tiny, tiny, name):
    trained = trained_tiny[name]
    params, config = trained.params, trained.config
    users = np.arange(0, tiny.n_users, 7)  # every user of the synthetic data has training history
    e = np.asarray(params["embed"]["user_table"]["embedding"])[users]
    net = _network(name, config)
    net_params = params["network"][DUAL[name]] if name in DUAL else params["network"]
    for k, domain in enumerate(("source", "target")):
        if name in DUAL:
            h = net.apply({"params": net_params}, jnp.asarray(e), jnp.asarray(e))[k]
        else:
            h = net.apply({"params": net_params}, jnp.asarray(e), k)
        user_vectors = e + np.asarray(h) if config.residual else np.asarray(h)
        items = np.asarray(params["embed"][f"items_{k}"]["embedding"])
        np.testing.assert_allclose(
            _scores(trained.scorers[domain], users), user_vectors @ items.T, rtol=1e-4, atol=1e-5
        )


def test_user_network_model_is_the_network_over_the_shared_embedding():
    star = models.STAR(num_domains=2, features=(8, 4))
    batch = {
        d: {"users": np.arange(3), "items": np.arange(3), "negatives": np.zeros((3, 2), int), "mask": np.ones(3, bool)}
        for d in "ab"
    }
    params = jax.jit(methods.UserNetworkModel(6, (5, 4), ("a", "b"), star, 4).init)(jax.random.key(0), batch)["params"]
    e = params["embed"]["user_table"]["embedding"][:3]
    for residual in (False, True):  # the parameters do not depend on residual
        out = methods.UserNetworkModel(6, (5, 4), ("a", "b"), star, 4, residual).apply({"params": params}, batch)
        for k, d in enumerate("ab"):
            h = star.apply({"params": params["network"]}, e, k)
            h = e + h if residual else h
            items = params["embed"][f"items_{k}"]["embedding"]
            np.testing.assert_allclose(out[d]["pos"], np.sum(h * items[:3], -1), rtol=1e-5, atol=1e-6)
            expected_neg = np.asarray(h) @ np.asarray(items[0])[:, None].repeat(2, 1)  # negatives are all item 0
            np.testing.assert_allclose(out[d]["neg"], expected_neg, rtol=1e-5, atol=1e-6)
    bad = methods.UserNetworkModel(6, (5, 4), ("a", "b"), models.STAR(num_domains=2, features=(8,)), 4)
    with pytest.raises(ValueError, match=r"must map \[B, D\] = \(1, 4\) to the same shape, got \(1, 8\)"):
        jax.eval_shape(bad.init, jax.random.key(0), batch)


def _dense_lightgcn(ds, params, num_layers):
    """float64 numpy LightGCN: dense Â = D^-1/2 A D^-1/2 over users + source items + target items."""
    n_u, n_s, n_t = ds.n_users, ds.n_items("source"), ds.n_items("target")
    a = np.zeros((n_u + n_s + n_t,) * 2)
    for offset, domain in ((n_u, "source"), (n_u + n_s, "target")):
        inter = ds.interactions(domain, "train")
        a[inter.users, offset + inter.items] = a[offset + inter.items, inter.users] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0)
    norm = inv[:, None] * a * inv[None, :]
    e = np.concatenate(
        [np.asarray(params["embed"][key]["embedding"], np.float64) for key in ("user_table", "items_0", "items_1")]
    )
    layer, total = e, e.copy()
    for _ in range(num_layers):
        layer = norm @ layer
        total += layer
    total /= num_layers + 1
    return total[:n_u], total[n_u : n_u + n_s], total[n_u + n_s :]


def test_lightgcn_scorer_equals_dense_reference(trained_tiny, tiny):
    trained = trained_tiny["lightgcn"]
    users_ref, source_ref, target_ref = _dense_lightgcn(tiny, trained.params, trained.config.num_layers)
    users = np.arange(0, tiny.n_users, 5)
    np.testing.assert_allclose(_scores(trained.scorers["source"], users), users_ref[users] @ source_ref.T, atol=1e-5)
    np.testing.assert_allclose(_scores(trained.scorers["target"], users), users_ref[users] @ target_ref.T, atol=1e-5)


def test_lightgcn_without_layers_is_plain_dot_products(tiny):
    domains = ("source", "target")
    graph = methods.joint_graph(tiny, domains)
    model = methods.LightGCNModel(tiny.n_users, (tiny.n_items("source"), tiny.n_items("target")), domains, 8, 0)
    rng = np.random.default_rng(0)
    batch = {
        d: {
            "users": rng.integers(0, tiny.n_users, 16),
            "items": rng.integers(0, tiny.n_items(d), 16),
            "negatives": rng.integers(0, tiny.n_items(d), (16, 3)),
            "mask": np.ones(16, bool),
        }
        for d in domains
    }
    tables = {
        "user_table": (tiny.n_users, 8),
        "items_0": (tiny.n_items("source"), 8),
        "items_1": (tiny.n_items("target"), 8),
    }
    params = {"embed": {k: {"embedding": rng.normal(size=shape).astype(np.float32)} for k, shape in tables.items()}}
    out = model.apply({"params": params}, {"graph": graph, **batch})
    u = np.asarray(params["embed"]["user_table"]["embedding"])
    for k, d in enumerate(domains):
        items = np.asarray(params["embed"][f"items_{k}"]["embedding"])
        b = batch[d]
        np.testing.assert_allclose(out[d]["pos"], np.sum(u[b["users"]] * items[b["items"]], -1), rtol=1e-5, atol=1e-6)
        expected_neg = np.einsum("bd,bnd->bn", u[b["users"]], items[b["negatives"]])
        np.testing.assert_allclose(out[d]["neg"], expected_neg, rtol=1e-5, atol=1e-6)
        tables = methods.LightGCNModel.tables
        users_table, items_table = model.apply({"params": params}, {"graph": graph}, k, method=tables)
        np.testing.assert_allclose(users_table, u, rtol=1e-6)
        np.testing.assert_allclose(items_table, items, rtol=1e-6)


def test_lightgcn_model_rejects_a_mismatched_graph(tiny):
    graph = methods.joint_graph(tiny, ("source", "target"))
    n_items = (tiny.n_items("source"), tiny.n_items("target") + 1)
    model = methods.LightGCNModel(tiny.n_users, n_items, ("source", "target"))
    with pytest.raises(ValueError, match=r"graph has 300 users and items \(60, 40\), the model 300 users and items"):
        jax.eval_shape(model.init, jax.random.key(0), {"graph": graph})


@pytest.mark.parametrize("towers", [methods.CoNetUserTowers, methods.CrossStitchUserTowers])
def test_dual_towers_have_two_domains(towers):
    with pytest.raises(ValueError, match="domain must be 0 or 1, got 2"):
        towers(features=(4, 4)).init(jax.random.key(0), jnp.ones((2, 4)), 2)


def test_a_domain_named_like_a_model_input_is_rejected(tiny):
    names = {"source": "source", "target": "graph"}
    domains = {names[k]: dataclasses.replace(d, name=names[k]) for k, d in tiny.domains.items()}
    renamed = data.CrossDomainDataset(domains, tiny.n_users, tiny.user_ids)
    with pytest.raises(ValueError, match=r"domain names \['graph'\] clash with the model inputs"):
        methods.train_lightgcn(renamed, source="source", target="graph", config=methods.LightGCNConfig(**FAST))


def test_lightgcn_bounds_the_steps_of_an_epoch(tiny):
    from jaxrec.methods.lightgcn import epoch_batch_size

    pairs = max(tiny.interactions(d, "train").size for d in ("source", "target"))
    domains = ("source", "target")
    assert epoch_batch_size(tiny, domains, methods.LightGCNConfig(batch_size=8, max_steps_per_epoch=None)) == 8
    three_steps = methods.LightGCNConfig(batch_size=8, max_steps_per_epoch=3)
    assert epoch_batch_size(tiny, domains, three_steps) == -(-pairs // 3)
    assert epoch_batch_size(tiny, domains, methods.LightGCNConfig(batch_size=4096, max_steps_per_epoch=3)) == 4096

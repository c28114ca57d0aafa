"""Tests for jaxrec.graph: LightGCN propagation against a dense numpy float64 reference."""

import jax
import jax.numpy as jnp
import jax.test_util  # noqa: F401  (check_grads)
import numpy as np
import pytest

from jaxrec import graph as G

RTOL, ATOL = 1e-5, 1e-6  # float32 propagation vs float64 reference


def _dense_reference(n_users, domains, emb, num_layers, domain_weights=None):
    """Float64 dense Â = D^-1/2 A D^-1/2 (+ item→user domain scaling) and the layer-mean readout."""
    n_items = [d[2] for d in domains]
    n = n_users + sum(n_items)
    a = np.zeros((n, n))
    dom_of_node = np.full(n, -1)
    off = n_users
    for d, (u, i, ni) in enumerate(domains):
        for uu, ii in zip(u, i):
            a[uu, off + ii] = 1.0
            a[off + ii, uu] = 1.0
        dom_of_node[off : off + ni] = d
        off += ni
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    a_hat = inv[:, None] * a * inv[None, :]
    if domain_weights is not None:
        # Row r = receiver, column s = sender: scale item(d) -> user messages by w_d.
        w = np.ones((n, n))
        for s in range(n_users, n):
            w[:n_users, s] = domain_weights[dom_of_node[s]]
        a_hat = a_hat * w
    e = np.asarray(emb, np.float64)
    total = e.copy()
    for _ in range(num_layers):
        e = a_hat @ e
        total += e
    return total / (num_layers + 1)


def _two_domain():
    # 5 users (user 4 isolated), domain A: 4 items (item 3 isolated), domain B: 3 items.
    # (0, 1) in A is listed twice: must count once.
    dom_a = (np.array([0, 0, 1, 2, 0]), np.array([0, 1, 1, 2, 1]), 4)
    dom_b = (np.array([1, 2, 3, 3]), np.array([0, 0, 1, 2]), 3)
    return 5, [dom_a, dom_b]


def _three_domain(seed=0):
    rng = np.random.default_rng(seed)
    n_users = 7
    domains = []
    for n_items, nnz in [(5, 9), (4, 6), (6, 8)]:
        u = rng.integers(0, n_users - 1, nnz)  # last user isolated
        i = rng.integers(0, n_items, nnz)
        domains.append((u, i, n_items))
    return n_users, domains


_prop = jax.jit(G.propagate, static_argnames="num_layers")


@pytest.mark.parametrize("num_layers", [0, 1, 3])
@pytest.mark.parametrize("make", [_two_domain, _three_domain])
def test_propagate_matches_dense_reference(make, num_layers):
    n_users, domains = make()
    g = G.build_joint_graph(n_users, domains)
    emb = np.random.default_rng(1).normal(size=(g.n_nodes, 6)).astype(np.float32)
    out = _prop(g, jnp.asarray(emb), num_layers=num_layers)
    ref = _dense_reference(n_users, domains, emb, num_layers)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=RTOL, atol=ATOL)


def test_graph_layout_dedup_and_normalization():
    n_users, domains = _two_domain()
    g = G.build_joint_graph(n_users, domains)
    assert g.n_nodes == 5 + 4 + 3
    assert g.item_offsets == (5, 9)
    assert g.n_items == (4, 3)
    # Distinct pairs: A has (0,0),(0,1),(1,1),(2,2) = 4; B has 4 -> 8 undirected, 16 directed edges.
    assert g.n_edges == 16
    # Degrees: user 0 -> A0, A1 = 2; user 3 -> B1, B2 = 2; user 4 isolated; A item 1 <- users 0, 1 = 2.
    deg = np.asarray(g.degrees)
    assert deg[0] == 2 and deg[3] == 2 and deg[4] == 0
    assert deg[5 + 1] == 2 and deg[5 + 3] == 0
    # Edge (user 0 -> A item 1) has weight 1/sqrt(2*2) = 0.5.
    s, r, w = map(np.asarray, (g.senders, g.receivers, g.weights))
    (e,) = np.nonzero((s == 0) & (r == 6))
    np.testing.assert_allclose(w[e], 0.5)
    assert np.all(np.diff(r) >= 0), "receivers must be sorted"
    # Each undirected edge appears in both directions with the same domain and weight.
    fwd = {(a, b): (dd, ww) for a, b, dd, ww in zip(s, r, np.asarray(g.edge_domain), w)}
    for (a, b), v in fwd.items():
        assert fwd[(b, a)] == v
    np.testing.assert_array_equal(np.asarray(g.user_to_item), s < n_users)


def test_isolated_nodes_finite_and_shrunk():
    n_users, domains = _two_domain()
    g = G.build_joint_graph(n_users, domains)
    emb = jnp.asarray(np.random.default_rng(2).normal(size=(g.n_nodes, 4)), jnp.float32)
    out = _prop(g, emb, num_layers=3)
    assert np.all(np.isfinite(np.asarray(out)))
    # Isolated user 4 and isolated A item 3 (node 8): readout = e0 / (K + 1).
    np.testing.assert_allclose(np.asarray(out[4]), np.asarray(emb[4]) / 4, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out[8]), np.asarray(emb[8]) / 4, rtol=1e-6)


def test_graph_with_no_interactions_is_finite():
    g = G.build_joint_graph(3, [(np.array([], np.int64), np.array([], np.int64), 2)])
    assert g.n_edges == 0
    out = _prop(g, jnp.ones((5, 2)), num_layers=2)
    np.testing.assert_allclose(np.asarray(out), np.full((5, 2), 1 / 3), rtol=1e-6)


def test_domain_weights_one_equals_unweighted():
    n_users, domains = _three_domain()
    g = G.build_joint_graph(n_users, domains)
    emb = jnp.asarray(np.random.default_rng(3).normal(size=(g.n_nodes, 5)), jnp.float32)
    a = _prop(g, emb, num_layers=2)
    b = _prop(g, emb, num_layers=2, domain_weights=jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_domain_weights_match_dense_reference():
    n_users, domains = _three_domain(seed=5)
    g = G.build_joint_graph(n_users, domains)
    emb = np.random.default_rng(4).normal(size=(g.n_nodes, 3)).astype(np.float32)
    w = np.array([0.5, 2.0, 0.0])
    out = _prop(g, jnp.asarray(emb), num_layers=3, domain_weights=jnp.asarray(w, jnp.float32))
    ref = _dense_reference(n_users, domains, emb, 3, domain_weights=w)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=RTOL, atol=ATOL)


def test_zero_weight_removes_domain_influence_on_users():
    n_users, domains = _two_domain()
    g = G.build_joint_graph(n_users, domains)
    emb = jnp.asarray(np.random.default_rng(6).normal(size=(g.n_nodes, 4)), jnp.float32)
    w = jnp.array([1.0, 0.0])  # cut domain B -> users

    def users_out(e):
        users, _ = G.split_nodes(g, G.propagate(g, e, num_layers=3, domain_weights=w))
        return users

    # Jacobian of user outputs w.r.t. domain-B item embeddings is exactly zero ...
    jac = jax.jit(jax.jacrev(users_out))(emb)  # [n_users, 4, n_nodes, 4]
    lo, hi = g.item_offsets[1], g.item_offsets[1] + g.n_items[1]
    assert np.all(np.asarray(jac[:, :, lo:hi, :]) == 0.0)
    # ... while with weight 1 it is not (user 1, 2, 3 touch domain B).
    w_one = jnp.ones(2)
    jac1 = jax.jacrev(lambda e: G.split_nodes(g, G.propagate(g, e, num_layers=3, domain_weights=w_one))[0])(emb)
    assert np.abs(np.asarray(jac1[:, :, lo:hi, :])).sum() > 0.1
    # User 3 interacts only with domain B: with w_B = 0 it keeps only its own layer-0 share e0/(K+1)
    # plus what comes back through itself (nothing: no other path), i.e. exactly e0/4.
    users = jax.jit(users_out)(emb)
    np.testing.assert_allclose(np.asarray(users[3]), np.asarray(emb[3]) / 4, rtol=1e-6)


def test_gradients_finite_and_match_numerical():
    n_users, domains = _two_domain()
    g = G.build_joint_graph(n_users, domains)
    emb_np = np.random.default_rng(7).normal(size=(g.n_nodes, 3))
    w_np = np.array([0.7, 1.3])

    def loss(e, w):
        return jnp.sum(jnp.sin(G.propagate(g, e, num_layers=2, domain_weights=w)))

    ge, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(emb_np, jnp.float32), jnp.asarray(w_np, jnp.float32))
    assert np.all(np.isfinite(np.asarray(ge))) and np.all(np.isfinite(np.asarray(gw)))
    assert np.abs(np.asarray(ge)).sum() > 0 and np.abs(np.asarray(gw)).sum() > 0
    with jax.enable_x64(True):
        emb, w = jnp.asarray(emb_np, jnp.float64), jnp.asarray(w_np, jnp.float64)
        jax.test_util.check_grads(loss, (emb, w), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_split_join_roundtrip_and_item_ids():
    n_users, domains = _three_domain()
    g = G.build_joint_graph(n_users, domains)
    table = jnp.arange(g.n_nodes * 2, dtype=jnp.float32).reshape(g.n_nodes, 2)
    users, items = G.split_nodes(g, table)
    assert users.shape == (n_users, 2)
    assert [t.shape[0] for t in items] == list(g.n_items)
    np.testing.assert_array_equal(np.asarray(G.join_nodes(g, users, items)), np.asarray(table))
    ids = G.item_node_ids(g, 2, jnp.array([0, 3]))
    np.testing.assert_array_equal(np.asarray(table[ids]), np.asarray(items[2][jnp.array([0, 3])]))


def test_no_recompile_for_same_graph_shape():
    n_users, domains = _two_domain()
    g = G.build_joint_graph(n_users, domains)
    f = jax.jit(G.propagate, static_argnames="num_layers")
    emb = jnp.ones((g.n_nodes, 4))
    f(g, emb, num_layers=2)
    before = f._cache_size()
    f(g, emb * 2, num_layers=2)
    assert f._cache_size() == before


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"user ids must lie in \[0, 2\)"):
        G.build_joint_graph(2, [(np.array([0, 2]), np.array([0, 0]), 1)])
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 1\)"):
        G.build_joint_graph(2, [(np.array([0]), np.array([1]), 1)])
    with pytest.raises(ValueError, match="same shape"):
        G.build_joint_graph(2, [(np.array([0, 1]), np.array([0]), 1)])
    with pytest.raises(TypeError, match="integers"):
        G.build_joint_graph(2, [(np.array([0.0]), np.array([0]), 1)])
    with pytest.raises(ValueError, match="at least one"):
        G.build_joint_graph(2, [])
    g = G.build_joint_graph(2, [(np.array([0]), np.array([0]), 1)])
    with pytest.raises(ValueError, match=r"n_nodes=3.*\(4, 2\)"):
        G.propagate(g, jnp.ones((4, 2)), num_layers=1)
    with pytest.raises(ValueError, match=r"\(1,\).*\(2,\)"):
        G.propagate(g, jnp.ones((3, 2)), num_layers=1, domain_weights=jnp.ones(2))
    with pytest.raises(ValueError, match="num_layers"):
        G.propagate(g, jnp.ones((3, 2)), num_layers=-1)
    with pytest.raises(TypeError, match="floating"):
        G.propagate(g, jnp.ones((3, 2), jnp.int32), num_layers=1)
    with pytest.raises(ValueError, match="item tables"):
        G.join_nodes(g, jnp.ones((2, 2)), [])

"""Tests for jaxrec.models: shapes, numpy/float64 references, invariances, dropout, gradients, bad input.

Conventions: B = 4 rows; every forward pass runs under `jax.jit` (see `_jit`); references are numpy float64
written here from the papers' formulas, fed with the module's own parameters.
"""

import ast
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.test_util import check_grads

from jaxrec import models
from jaxrec.models import (
    MLP,
    PLE,
    STAR,
    CoNet,
    CrossDomainEmbedding,
    CrossStitch,
    DomainClassifier,
    EMCDRMapping,
    HistoryEncoder,
    MMoE,
    PTUPCDRMeta,
    SharedBottom,
    SharedSpecificEncoder,
    TwoTower,
    gradient_reversal,
)

B = 4
ATOL = RTOL = 1e-5  # float32 forward vs float64 numpy on tiny widths

# Jitted functions here (except those handed to check_grads, which nests them) are compiled with XLA's backend
# optimizations off: same semantics, ~3× faster compiles, which dominate this file's runtime on 2 cores.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _key(i=0):
    return jax.random.key(i)


def _rbg(i):
    # Dropout / initializer keys in tests use the "rbg" implementation: the modules accept any key type, and
    # its random-bit ops compile several times faster on CPU than threefry's.
    return jax.random.key(i, impl="rbg")


def _normal(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _init(module, *args, method=None, **static):
    """Parameters with the structure of ``module.init`` but filled from a seeded numpy generator.

    `jax.eval_shape` gives the structure without compiling the (slow to compile) random initializers; kernels
    get N(0, 1/fan_in), biases N(0, 0.1²), LayerNorm scales 1 + N(0, 0.1²). Real initializers are tested in
    `test_initializers`.
    """
    return _fill(jax.eval_shape(lambda *a: module.init(_key(0), *a, method=method, **static), *args))


def _fill(shapes):
    rng = np.random.default_rng(1234)

    def fill(path, leaf):
        name = str(path[-1])
        if len(leaf.shape) >= 2:
            value = rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[-2])
        else:
            value = (1.0 if "scale" in name else 0.0) + 0.1 * rng.normal(size=leaf.shape)
        return np.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _jitted(module, method, static_items):
    static = dict(static_items)

    def f(p, r, *a):
        rngs = None if r is None else {"dropout": r}
        return module.apply(p, *a, rngs=rngs, method=method, **static)

    return _jit(f)


def _apply(module, params, *args, rng=None, method=None, **static):
    """``module.apply`` under `jax.jit` (one compiled function per module, method and static options).

    Outputs come back as numpy arrays, so that checks on them run no (separately compiled) eager jax ops.
    """
    out = _jitted(module, method, tuple(sorted(static.items())))(params, rng, *args)
    return jax.tree.map(np.asarray, out)


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _set(params, path, value):
    """Returns a copy of a params dict with params['params'][path[0]]...[path[-1]] = value."""
    params = jax.tree.map(lambda a: a, params)
    node = params["params"]
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = np.asarray(value, np.float32)
    return params


# -------------------------------------------------------------------------------- numpy references (float64)
def _relu(x):
    return np.maximum(x, 0.0)


def _gelu(x):  # flax nn.gelu default: tanh approximation
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _ln(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_mlp(p, x, act=_relu, activate_final=False, layer_norm=False):
    n = len([k for k in p if k.startswith("dense_")])
    for i in range(n):
        x = x @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"]
        if i < n - 1 or activate_final:
            if layer_norm:
                x = _ln(x, p[f"norm_{i}"])
            x = act(x)
    return x


def _np_experts(p, x):
    """Expert bank reference: returns [B, E, D], expert e = relu MLP with kernels p['kernel_i'][e]."""
    n_exp = p["kernel_0"].shape[0]
    outs = []
    for e in range(n_exp):
        h = x
        i = 0
        while f"kernel_{i}" in p:
            h = _relu(h @ p[f"kernel_{i}"][e] + p[f"bias_{i}"][e])
            i += 1
        outs.append(h)
    return np.stack(outs, axis=1)


# --------------------------------------------------------------------------------------------- case table
X = _normal((B, 5), 1)
DOM = np.array([0, 2, 1, 2], np.int32)
DOM2 = np.array([1, 0, 0, 1], np.int32)
IDS = np.array([[3, 4, 5, -1, -1, -1], [1, -1, 2, 7, -1, 9], [-1] * 6, [0, 1, 2, 3, 4, 5]], np.int32)
HIST = _normal((B, 6, 5), 2)
HMASK = IDS >= 0

# name: (factory(dropout_rate) -> module, array args, static kwargs, expected output shapes)
CASES = {
    "mlp": (lambda r: MLP((8, 3), dropout_rate=r, use_layer_norm=True), (X,), {}, (B, 3)),
    "embedding": (
        lambda r: CrossDomainEmbedding(num_users=10, num_items=(6, 7), dim=4),
        (np.arange(B, dtype=np.int32), IDS[:, :3]),
        {"domain": 1},
        ((B, 4), (B, 3, 4)),
    ),
    "two_tower_dot": (lambda r: TwoTower((8, 4), (6, 4), dropout_rate=r), (X, _normal((B, 6), 3)), {}, (B,)),
    "two_tower_cos": (
        lambda r: TwoTower((8, 4), similarity="cosine", dropout_rate=r),
        (X, _normal((B, 6), 3)),
        {},
        (B,),
    ),
    "history_mean": (
        lambda r: HistoryEncoder(num_items=20, max_length=8, dim=8, num_heads=2, num_layers=2, dropout_rate=r),
        (IDS,),
        {},
        (B, 8),
    ),
    "history_cls": (
        lambda r: HistoryEncoder(
            num_items=20, max_length=8, dim=8, num_heads=2, num_layers=1, pooling="cls", dropout_rate=r
        ),
        (IDS,),
        {},
        (B, 8),
    ),
    "shared_specific": (
        lambda r: SharedSpecificEncoder(3, (8, 4), dropout_rate=r),
        (X, DOM),
        {},
        ((B, 8), (B, 4), (B, 4)),
    ),
    "shared_specific_all": (
        lambda r: SharedSpecificEncoder(3, (8, 4), combine="sum", dropout_rate=r),
        (X,),
        {"domain": None},
        ((B, 3, 4), (B, 4), (B, 3, 4)),
    ),
    "shared_bottom": (lambda r: SharedBottom(3, (8,), (4, 2), dropout_rate=r), (X, DOM), {}, (B, 2)),
    "shared_bottom_all": (lambda r: SharedBottom(3, (8,), (4, 2), dropout_rate=r), (X,), {"domain": None}, (B, 3, 2)),
    "mmoe": (lambda r: MMoE(3, 3, (8,), (4, 2), dropout_rate=r), (X, DOM), {}, (B, 2)),
    "mmoe_gates": (
        lambda r: MMoE(3, 3, (8,), (4, 2), dropout_rate=r),
        (X,),
        {"domain": 1, "return_gates": True},
        ((B, 2), (B, 3, 3)),
    ),
    "ple": (lambda r: PLE(2, 1, 2, 1, (8,), (4, 1), dropout_rate=r), (X, DOM2), {}, (B, 1)),
    "ple_gates": (
        lambda r: PLE(2, 2, 2, 1, (8,), (4, 1), dropout_rate=r),
        (X,),
        {"domain": None, "return_gates": True},
        ((B, 2, 1), ({"domain": (B, 2, 3), "shared": (B, 5)}, {"domain": (B, 2, 3)})),
    ),
    "star": (lambda r: STAR(3, (8, 2), dropout_rate=r), (X, DOM), {}, (B, 2)),
    "star_pn_static": (lambda r: STAR(3, (8, 2), partitioned_norm=True, dropout_rate=r), (X,), {"domain": 2}, (B, 2)),
    "star_all": (lambda r: STAR(3, (8, 2), dropout_rate=r), (X,), {"domain": None}, (B, 3, 2)),
    "conet": (lambda r: CoNet((8, 3), dropout_rate=r), (X, _normal((B, 5), 4)), {}, ((B, 3), (B, 3))),
    "conet_unshared": (
        lambda r: CoNet((8, 3), shared_transfer=False, dropout_rate=r),
        (X, _normal((B, 6), 4)),
        {},
        ((B, 3), (B, 3)),
    ),
    "cross_stitch": (lambda r: CrossStitch((8, 3), dropout_rate=r), (X, _normal((B, 6), 4)), {}, ((B, 3), (B, 3))),
    "emcdr": (lambda r: EMCDRMapping(hidden=(8,), dropout_rate=r), (X,), {}, (B, 5)),
    "emcdr_linear": (lambda r: EMCDRMapping(out_dim=3, linear=True), (X,), {}, (B, 3)),
    "ptupcdr": (
        lambda r: PTUPCDRMeta(dim=4, attention_hidden=8, meta_hidden=(8,)),
        (_normal((B, 4), 5), HIST, HMASK),
        {},
        (B, 4),
    ),
    "domain_classifier": (lambda r: DomainClassifier((8,), dropout_rate=r), (X, np.float32(0.5)), {}, (B,)),
}
DROPOUT_CASES = [
    "mlp",
    "two_tower_dot",
    "history_cls",
    "shared_specific",
    "shared_bottom",
    "mmoe",
    "ple",
    "star",
    "conet",
    "cross_stitch",
    "emcdr",
    "domain_classifier",
]


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shapes_eval_shape_and_jit(name):
    factory, args, static, expected = CASES[name]
    module = factory(0.0)
    abstract = jax.eval_shape(lambda k, *a: module.init(k, *a, **static), _key(0), *args)
    out = jax.eval_shape(lambda p, *a: module.apply(p, *a, **static), abstract, *args)
    assert _shapes(out) == expected
    params = _fill(abstract)
    real = _apply(module, params, *args, **static)
    assert _shapes(real) == expected
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(real))


@pytest.mark.parametrize("name", DROPOUT_CASES)
def test_dropout_deterministic_vs_stochastic(name):
    factory, args, static, _ = CASES[name]
    module, plain = factory(0.5), factory(0.0)
    params = _init(module, *args, **static)
    no_dropout = _apply(plain, params, *args, **static)
    det = _apply(module, params, *args, rng=_rbg(1), **static)  # deterministic (default) with an rng at hand
    sto1 = _apply(module, params, *args, rng=_rbg(1), deterministic=False, **static)
    sto1b = _apply(module, params, *args, rng=_rbg(1), deterministic=False, **static)
    sto2 = _apply(module, params, *args, rng=_rbg(2), deterministic=False, **static)
    for a, c, s1, s1b, s2 in zip(*map(jax.tree.leaves, (det, no_dropout, sto1, sto1b, sto2))):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)  # deterministic == no dropout at all
        np.testing.assert_array_equal(s1, s1b)  # same rng, same mask
        assert not np.allclose(s1, s2)  # other rng, other mask
        assert not np.allclose(s1, a)
    with pytest.raises(Exception, match="dropout"):  # stochastic without an rng fails loudly
        module.apply(params, *args, deterministic=False, **static)


def test_initializers():
    """The real (random) initializers, on small modules."""
    emb = CrossDomainEmbedding(num_users=200, num_items=(6, 7), dim=8)
    p = _np(_jit(lambda k: emb.init(k, jnp.arange(2), jnp.arange(2), 1))(_rbg(3)))["params"]
    assert {k: v["embedding"].shape for k, v in p.items()} == {
        "user_table": (200, 8),
        "items_0": (6, 8),
        "items_1": (7, 8),
    }
    assert 0.08 < float(np.std(p["user_table"]["embedding"])) < 0.12  # N(0, 0.1²)
    star = _np(_jit(STAR(2, (3, 1), partitioned_norm=True).init, static_argnums=2)(_rbg(4), X, 0))["params"]
    np.testing.assert_array_equal(star["domain_kernel_0"], np.ones((2, 5, 3)))
    np.testing.assert_array_equal(star["domain_bias_1"], np.zeros((2, 1)))
    np.testing.assert_array_equal(star["pn_domain_scale"], np.ones((2, 5)))
    assert float(np.std(star["shared_kernel_0"])) > 0
    stitch = _np(_jit(CrossStitch((3, 1)).init)(_rbg(5), X, X))["params"]
    np.testing.assert_allclose(stitch["stitch_0"], [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)


# ------------------------------------------------------------------------------------------- gradient reversal
def _f(x):
    return jnp.sum(jnp.sin(x) * jnp.arange(1.0, x.shape[-1] + 1.0))


def test_gradient_reversal_identity_forward_and_reversed_scaled_gradient():
    x = _normal((3, 4), 7)
    grl_grad = _jit(jax.grad(lambda x, a: _f(gradient_reversal(x, a))))
    grl_grad_batched = _jit(jax.vmap(jax.grad(lambda x, a: _f(gradient_reversal(x, a))), in_axes=(None, 0)))
    plain = np.asarray(_jit(jax.grad(_f))(x), np.float64)
    np.testing.assert_array_equal(_jit(gradient_reversal)(x, 0.3), x)
    for alpha in (0.0, 0.5, 1.0, 2.5):
        np.testing.assert_allclose(grl_grad(x, np.float32(alpha)), -alpha * plain, rtol=1e-6, atol=1e-7)
    # default alpha = 1, and alpha batched under vmap
    np.testing.assert_allclose(_jit(jax.grad(lambda x: _f(gradient_reversal(x))))(x), -plain, rtol=1e-6)
    alphas = np.array([0.1, 1.0, 3.0], np.float32)
    batched = grl_grad_batched(x, alphas)
    np.testing.assert_allclose(batched, -np.asarray(alphas)[:, None, None] * plain, rtol=1e-6, atol=1e-7)


def test_gradient_reversal_alpha_gets_no_gradient_and_second_order():
    x = _normal((5,), 8)
    assert float(_jit(jax.grad(lambda a: _f(gradient_reversal(x, a))))(0.7)) == 0.0
    # d/dx of (grad through GRL) is -alpha times the Hessian-vector product of f.
    hvp = _jit(jax.grad(lambda x: jnp.sum(jax.grad(lambda y: _f(gradient_reversal(y, 2.0)))(x))))(x)
    ref = _jit(jax.grad(lambda x: jnp.sum(jax.grad(_f)(x))))(x)
    np.testing.assert_allclose(hvp, -2.0 * np.asarray(ref), rtol=1e-6, atol=1e-7)


def test_gradient_reversal_bad_input():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        gradient_reversal(np.ones(3, np.float32), -1.0)
    with pytest.raises(ValueError, match=r"scalar, got shape \(2,\)"):
        gradient_reversal(np.ones(3, np.float32), np.ones(2))
    with pytest.raises(TypeError, match="floating"):
        gradient_reversal(np.arange(3), 1.0)


def test_domain_classifier_reverses_gradient_of_its_mlp():
    clf = DomainClassifier((8,), activation="tanh")
    h = _normal((B, 5), 9)
    params = _init(clf, h, np.float32(1.0))
    w = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    inner = MLP((8, 1), activation="tanh")
    inner_params = {"params": params["params"]["mlp"]}
    logits = _apply(clf, params, h, np.float32(0.3))
    np.testing.assert_allclose(logits, _apply(inner, inner_params, h)[:, 0], rtol=1e-6)
    g = _jit(jax.grad(lambda h, a: jnp.sum(w * clf.apply(params, h, a))))(h, np.float32(0.3))
    g_ref = _jit(jax.grad(lambda h: jnp.sum(w * inner.apply(inner_params, h)[:, 0])))(h)
    np.testing.assert_allclose(g, -0.3 * np.asarray(g_ref), rtol=1e-5, atol=1e-7)
    # the classifier's own parameters get the ordinary (not reversed) gradient
    gp = _jit(jax.grad(lambda p: jnp.sum(w * clf.apply(p, h, 0.3))))(params)["params"]["mlp"]
    gp_ref = _jit(jax.grad(lambda p: jnp.sum(w * inner.apply(p, h)[:, 0])))(inner_params)["params"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), gp, gp_ref)


# ------------------------------------------------------------------------------------------------ towers
def test_mlp_matches_numpy_with_layer_norm():
    mlp = MLP((8, 6, 3), activation="gelu", use_layer_norm=True)
    params = _init(mlp, X)
    params = _set(params, ("norm_0", "scale"), _normal((8,), 10) + 1.0)
    ref = _np_mlp(_np(params)["params"], np.asarray(X, np.float64), act=_gelu, layer_norm=True)
    np.testing.assert_allclose(_apply(mlp, params, X), ref, rtol=RTOL, atol=ATOL)


def test_embedding_lookup_padding_and_tables():
    emb = CrossDomainEmbedding(num_users=10, num_items=(6, 7), dim=4)
    users, items = np.array([0, 9, -1, 3], np.int32), np.array([[5, -1], [0, 6]], np.int32)
    params = _init(emb, users, items, domain=0)
    p = _np(params)["params"]
    assert p["items_0"]["embedding"].shape == (6, 4) and p["items_1"]["embedding"].shape == (7, 4)
    u, i = _apply(emb, params, users, items, domain=1)
    np.testing.assert_array_equal(u[[0, 1, 3]], p["user_table"]["embedding"][[0, 9, 3]].astype(np.float32))
    np.testing.assert_array_equal(u[2], np.zeros(4))  # padding id -> zero vector
    np.testing.assert_array_equal(i[0, 1], np.zeros(4))
    np.testing.assert_array_equal(i[1, 1], p["items_1"]["embedding"][6].astype(np.float32))
    table = _apply(emb, params, domain=0, method=CrossDomainEmbedding.item_table)
    assert table.shape == (6, 4)
    with pytest.raises(ValueError, match=r"domain 2 out of range \[0, 2\)"):
        emb.apply(params, users, items, 2)
    with pytest.raises(TypeError, match="integer"):
        emb.apply(params, np.ones(3, np.float32), items, 0)


def test_embedding_create_tables_from_a_parent_that_reads_one_domain():
    """A parent that looks up only domain 0 gets every table from `init` once it calls `create_tables`."""

    class Parent(nn.Module):
        create: bool

        def setup(self):
            self.embed = CrossDomainEmbedding(num_users=10, num_items=(6, 7, 3), dim=4)

        def __call__(self, users, items):
            if self.create:  # unguarded, so that apply runs it too
                self.embed.create_tables()
            return self.embed.users(users) + self.embed.items(items, 0)

    users, items = np.arange(3, dtype=np.int32), np.array([5, -1, 0], np.int32)
    shapes = {
        create: _shapes(jax.eval_shape(Parent(create).init, _key(0), users, items)["params"]["embed"])
        for create in (False, True)
    }
    assert shapes[False] == {"user_table": {"embedding": (10, 4)}, "items_0": {"embedding": (6, 4)}}
    assert shapes[True] == {
        "user_table": {"embedding": (10, 4)},
        "items_0": {"embedding": (6, 4)},
        "items_1": {"embedding": (7, 4)},
        "items_2": {"embedding": (3, 4)},
    }
    # outside init it changes nothing: same output as the parent without it
    params = _init(Parent(True), users, items)
    out = _apply(Parent(True), params, users, items)
    np.testing.assert_array_equal(out, _apply(Parent(False), params, users, items))
    p = _np(params)["params"]["embed"]
    np.testing.assert_allclose(out[0], p["user_table"]["embedding"][0] + p["items_0"]["embedding"][5], rtol=1e-6)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_two_tower_scores_match_numpy(similarity):
    tt = TwoTower((8, 4), (6, 4), similarity=similarity)
    ux, ix = X, _normal((B, 6), 3)
    params = _init(tt, ux, ix)
    p = _np(params)["params"]
    u = _np_mlp(p["user_tower"], np.asarray(ux, np.float64))
    i = _np_mlp(p["item_tower"], np.asarray(ix, np.float64))
    if similarity == "cosine":
        u, i = u / np.linalg.norm(u, axis=1, keepdims=True), i / np.linalg.norm(i, axis=1, keepdims=True)
    np.testing.assert_allclose(_apply(tt, params, ux, ix), (u * i).sum(1), rtol=RTOL, atol=ATOL)
    mat = _apply(tt, params, ux, ix, method=TwoTower.score_matrix)
    np.testing.assert_allclose(mat, u @ i.T, rtol=RTOL, atol=ATOL)
    emb = _apply(tt, params, ux, method=TwoTower.user_embed)
    np.testing.assert_allclose(emb, u, rtol=RTOL, atol=ATOL)


def test_two_tower_cosine_gradient_and_zero_vector():
    tt = TwoTower((4,), similarity="cosine", activation="tanh")
    ux, ix = _normal((3, 5), 11), _normal((3, 5), 12)
    params = _init(tt, ux, ix)
    with jax.enable_x64(True):
        check_grads(
            jax.jit(lambda u, i: tt.apply(_np(params), u, i)),
            (ux.astype(np.float64), ix.astype(np.float64)),
            order=1,
            modes=("rev",),
        )
    # a tower output of exactly 0 gives score 0 and a finite gradient (no 0/0)
    zero = jax.tree.map(np.zeros_like, params)
    score, grad = _jit(jax.value_and_grad(lambda p: jnp.sum(tt.apply(p, ux, ix))))(zero)
    assert float(score) == 0.0
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(_np(grad)))


# ------------------------------------------------------------------------------------------ history encoder
def _np_history(p, ids, num_heads):
    ids = np.asarray(ids)
    valid = ids >= 0
    table = p["item_embedding"]["embedding"]
    x = np.where(valid[..., None], table[np.where(valid, ids, 0)], 0.0) + p["positions"][: ids.shape[1]]
    keys = valid | ~valid.any(1, keepdims=True)
    layer = 0
    while f"blocks_{layer}" in p:
        blk = p[f"blocks_{layer}"]
        att = blk["MultiHeadDotProductAttention_0"]
        h = _ln(x, blk["LayerNorm_0"])
        q, k, v = (np.einsum("bld,dhk->blhk", h, att[n]["kernel"]) + att[n]["bias"] for n in ("query", "key", "value"))
        s = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(q.shape[-1])
        s = np.where(keys[:, None, None, :], s, -np.inf)
        o = np.einsum("bhqt,bthk->bqhk", _softmax(s), v)
        x = x + np.einsum("bqhk,hkd->bqd", o, att["out"]["kernel"]) + att["out"]["bias"]
        h = _ln(x, blk["LayerNorm_1"])
        h = _gelu(h @ blk["Dense_0"]["kernel"] + blk["Dense_0"]["bias"])
        x = x + h @ blk["Dense_1"]["kernel"] + blk["Dense_1"]["bias"]
        layer += 1
    x = _ln(x, p["final_norm"])
    count = valid.sum(1, keepdims=True)
    return (x * valid[..., None]).sum(1) / np.maximum(count, 1)


def _history(pooling="mean", layers=2):
    return HistoryEncoder(num_items=20, max_length=8, dim=8, num_heads=2, num_layers=layers, pooling=pooling)


def test_history_encoder_matches_numpy_transformer():
    enc = _history()
    params = _init(enc, IDS)
    ref = _np_history(_np(params)["params"], IDS, num_heads=2)
    out = _apply(enc, params, IDS)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[2], np.zeros(8))  # fully padded row, mean pooling -> zero vector


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_history_encoder_padding_does_not_matter(pooling):
    enc = _history(pooling, layers=2 if pooling == "mean" else 1)
    params = _init(enc, IDS)
    pad = np.asarray(IDS) < 0
    out = _apply(enc, params, IDS, np.ones(IDS.shape, bool))  # mask = ids >= 0 only
    # (a) padded positions hidden by an explicit mask hold arbitrary (valid-looking) ids
    junk = np.where(pad, np.random.default_rng(0).integers(0, 20, IDS.shape), IDS).astype(np.int32)
    np.testing.assert_allclose(_apply(enc, params, junk, ~pad), out, rtol=1e-6, atol=1e-6)
    # (b) permuting those hidden ids among the padded positions
    perm = junk.copy()
    perm[pad] = np.roll(junk[pad], 3)
    np.testing.assert_allclose(_apply(enc, params, perm, ~pad), out, rtol=1e-6, atol=1e-6)
    # (c) trailing padding = a shorter sequence (positions of valid items unchanged)
    short = np.array([[3, 4, 5], [1, 2, 7], [-1, -1, -1], [0, 1, 2]], np.int32)
    longer = np.concatenate([short, np.full((B, 5), -1, np.int32)], axis=1)
    np.testing.assert_allclose(_apply(enc, params, longer), _apply(enc, params, short), rtol=1e-5, atol=1e-5)


def test_history_encoder_fully_padded_is_finite_with_finite_gradients():
    ids = np.full((B, 6), -1, np.int32)
    ids[0, :2] = [1, 2]
    everything, nothing = np.ones(ids.shape, bool), np.zeros(ids.shape, bool)
    # mean pooling: the zero vector, and finite parameter gradients through the empty rows
    enc = _history("mean", layers=1)
    params = _init(enc, ids)

    @_jit
    def out_and_grad(p):  # outputs and the gradient of ½‖outputs‖² w.r.t. the parameters
        out, vjp = jax.vjp(lambda p: enc.apply(p, ids), p)
        return out, vjp(out)[0]

    out, grads = _np(out_and_grad(params))
    np.testing.assert_array_equal(out[1:], 0.0)
    assert np.all(np.isfinite(out)) and np.linalg.norm(out[0]) > 0.1
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # cls pooling: the learned "empty history" vector, the same for every empty row whatever its ids
    enc = _history("cls", layers=1)
    params = _init(enc, ids)
    out = _apply(enc, params, ids, everything)
    other = _apply(enc, params, ids, nothing)  # everything masked, ids ignored
    assert np.all(np.isfinite(out)) and np.linalg.norm(out[1]) > 0.1
    np.testing.assert_allclose(out[1:], np.broadcast_to(out[1], out[1:].shape), atol=1e-6)
    np.testing.assert_allclose(other, np.broadcast_to(out[1], other.shape), atol=1e-6)


def test_history_encoder_encode_gradients_float64():
    enc = HistoryEncoder(num_items=None, max_length=4, dim=4, num_heads=2, num_layers=1)
    emb, valid = _normal((2, 4, 4), 13), np.array([[True, True, False, True], [True, False, False, False]])
    params = _init(enc, emb, valid, method=HistoryEncoder.encode)
    with jax.enable_x64(True):
        check_grads(
            jax.jit(lambda e: enc.apply(_np(params), e, valid, method=HistoryEncoder.encode)),
            (emb.astype(np.float64),),
            order=1,
            modes=("rev",),
            atol=1e-4,
            rtol=1e-4,
        )


def test_history_encoder_bad_input():
    enc = _history()
    params = _init(enc, IDS)
    with pytest.raises(ValueError, match=r"max_length=8.*\(4, 9, 8\)"):
        enc.apply(params, np.zeros((4, 9), np.int32))
    with pytest.raises(ValueError, match=r"rank 2.*\(6,\)"):
        enc.apply(params, np.zeros((6,), np.int32))
    with pytest.raises(TypeError, match="integer"):
        enc.apply(params, np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match=r"mask must match item_ids \(4, 6\)"):
        enc.apply(params, IDS, np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        HistoryEncoder(num_items=5, max_length=4, dim=6, num_heads=4)
    with pytest.raises(ValueError, match=r"unknown pooling 'max'; valid: \['cls', 'mean'\]"):
        HistoryEncoder(num_items=5, max_length=4, pooling="max")


# ---------------------------------------------------------------------------------- shared + specific parts
def test_shared_specific_encoder_matches_numpy():
    enc = SharedSpecificEncoder(3, (8, 4))
    params = _init(enc, X, DOM)
    p, x = _np(params)["params"], np.asarray(X, np.float64)
    shared = _np_mlp(p["shared"], x)
    specific_all = np.stack([_np_mlp(p[f"specific_{k}"], x) for k in range(3)], axis=1)
    specific = specific_all[np.arange(B), np.asarray(DOM)]
    combined, s, sp = _apply(enc, params, X, DOM)
    np.testing.assert_allclose(s, shared, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(sp, specific, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(combined, np.concatenate([shared, specific], 1), rtol=RTOL, atol=ATOL)
    summed = SharedSpecificEncoder(3, (8, 4), combine="sum")
    c_all, _, sp_all = _apply(summed, params, X, domain=None)
    np.testing.assert_allclose(sp_all, specific_all, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c_all, shared[:, None] + specific_all, rtol=RTOL, atol=ATOL)
    c1, _, _ = _apply(enc, params, X, domain=1)
    np.testing.assert_allclose(c1[:, 4:], specific_all[:, 1], rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------- multi-domain
def test_shared_bottom_matches_numpy():
    m = SharedBottom(3, (8,), (4, 2))
    params = _init(m, X, DOM)
    p, x = _np(params)["params"], np.asarray(X, np.float64)
    h = _np_mlp(p["bottom"], x, activate_final=True)
    ref = np.stack([_np_mlp(p[f"tower_{k}"], h) for k in range(3)], 1)
    np.testing.assert_allclose(_apply(m, params, X, DOM), ref[np.arange(B), np.asarray(DOM)], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_apply(m, params, X, domain=None), ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_apply(m, params, X, domain=2), ref[:, 2], rtol=RTOL, atol=ATOL)


def test_mmoe_matches_numpy_and_gates_sum_to_one():
    m = MMoE(3, 4, (8, 6), (4, 2))
    params = _init(m, X, DOM)
    p, x = _np(params)["params"], np.asarray(X, np.float64)
    experts = _np_experts(p["experts"], x)  # [B, E, D]
    gates = _softmax((x @ p["gates"]["kernel"] + p["gates"]["bias"]).reshape(B, 3, 4))  # [B, K, E]
    mixed = np.einsum("bke,bed->bkd", gates, experts)
    ref = np.stack([_np_mlp(p[f"tower_{k}"], mixed[:, k]) for k in range(3)], 1)
    out, g = _apply(m, params, X, DOM, return_gates=True)
    np.testing.assert_allclose(out, ref[np.arange(B), np.asarray(DOM)], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g, gates, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g).sum(-1), 1.0, atol=1e-6)
    assert np.all(np.asarray(g) >= 0)


def test_ple_matches_numpy_and_gates_sum_to_one():
    K, Es, Sh = 2, 2, 1
    m = PLE(
        K, num_layers=2, num_specific_experts=Es, num_shared_experts=Sh, expert_features=(6,), tower_features=(3, 1)
    )
    params = _init(m, X, DOM2)
    p, x = _np(params)["params"], np.asarray(X, np.float64)
    # reference written per the paper: CGC layer = specific experts of k + shared experts, gated per domain.
    h_dom, h_sh, ref_gates = [x, x], x, []
    for layer in range(2):
        spec = [_np_experts(p[f"layer{layer}_domain{k}_experts"], h_dom[k]) for k in range(K)]
        sh = _np_experts(p[f"layer{layer}_shared_experts"], h_sh)
        new, gs = [], []
        for k in range(K):
            gp = p[f"layer{layer}_domain{k}_gate"]
            g = _softmax(h_dom[k] @ gp["kernel"] + gp["bias"])
            new.append(np.einsum("be,bed->bd", g, np.concatenate([spec[k], sh], 1)))
            gs.append(g)
        layer_gates = {"domain": np.stack(gs, 1)}
        if layer == 0:
            gp = p["layer0_shared_gate"]
            g = _softmax(h_sh @ gp["kernel"] + gp["bias"])
            h_sh = np.einsum("be,bed->bd", g, np.concatenate(spec + [sh], 1))
            layer_gates["shared"] = g
        h_dom = new
        ref_gates.append(layer_gates)
    ref = np.stack([_np_mlp(p[f"tower_{k}"], h_dom[k]) for k in range(K)], 1)
    out, gates = _apply(m, params, X, DOM2, return_gates=True)
    np.testing.assert_allclose(out, ref[np.arange(B), np.asarray(DOM2)], rtol=RTOL, atol=ATOL)
    assert len(gates) == 2 and "shared" not in gates[1]
    for got, want in zip(gates, ref_gates):
        assert sorted(got) == sorted(want)
        for key in got:
            np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=1e-6)
            np.testing.assert_allclose(np.asarray(got[key]).sum(-1), 1.0, atol=1e-6)


def _star_params_random_domains(params, seed):
    rng = np.random.default_rng(seed)
    p = jax.tree.map(lambda a: a, params)
    for name, v in p["params"].items():
        if name.startswith("domain_kernel") or name == "pn_domain_scale":
            p["params"][name] = (1.0 + 0.5 * rng.normal(size=v.shape)).astype(np.float32)
        elif name.startswith("domain_bias") or name in ("pn_domain_bias", "pn_bias"):
            p["params"][name] = (0.3 * rng.normal(size=v.shape)).astype(np.float32)
    return p


def test_star_reduces_to_mlp_with_unit_domain_weights():
    star = STAR(3, (8, 6, 2))
    params = _star_params_random_domains(_init(star, X, DOM), 14)
    for i in range(3):  # domain weights -> ones, domain biases -> zeros
        params = _set(params, (f"domain_kernel_{i}",), np.ones(params["params"][f"domain_kernel_{i}"].shape))
        params = _set(params, (f"domain_bias_{i}",), np.zeros(params["params"][f"domain_bias_{i}"].shape))
    mlp_params = {
        "params": {
            f"dense_{i}": {
                "kernel": params["params"][f"shared_kernel_{i}"],
                "bias": params["params"][f"shared_bias_{i}"],
            }
            for i in range(3)
        }
    }
    plain = _apply(MLP((8, 6, 2)), mlp_params, X)
    np.testing.assert_allclose(_apply(star, params, X, DOM), plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_apply(star, params, X, domain=2), plain, rtol=1e-6, atol=1e-6)  # static domain


@pytest.mark.parametrize("pn", [False, True])
def test_star_matches_numpy(pn):
    star = STAR(3, (8, 6, 2), partitioned_norm=pn)
    params = _star_params_random_domains(_init(star, X, DOM), 15)
    p, x, dom = _np(params)["params"], np.asarray(X, np.float64), np.asarray(DOM)
    ref = np.zeros((B, 2))
    for b in range(B):  # row by row, each with its own domain's weights
        h, d = x[b], dom[b]
        if pn:
            z = (h - h.mean()) / np.sqrt(h.var() + 1e-6)
            h = p["pn_scale"] * p["pn_domain_scale"][d] * z + p["pn_bias"] + p["pn_domain_bias"][d]
        for i in range(3):
            h = (
                h @ (p[f"shared_kernel_{i}"] * p[f"domain_kernel_{i}"][d])
                + p[f"shared_bias_{i}"]
                + p[f"domain_bias_{i}"][d]
            )
            h = _relu(h) if i < 2 else h
        ref[b] = h
    np.testing.assert_allclose(_apply(star, params, X, DOM), ref, rtol=1e-4, atol=1e-5)
    every = np.asarray(_apply(star, params, X, domain=None))
    # a static domain computes only its own stream; it must match that stream of domain=None
    np.testing.assert_allclose(_apply(star, params, X, domain=1), every[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(every[np.arange(B), dom], ref, rtol=1e-4, atol=1e-5)


def test_star_gradient_float64():
    star = STAR(2, (4, 1), activation="tanh", partitioned_norm=True)
    x, dom = _normal((3, 5), 16), np.array([1, 0, 1], np.int32)
    params = _star_params_random_domains(_init(star, x, dom), 17)
    with jax.enable_x64(True):
        check_grads(
            jax.jit(lambda x: star.apply(_np(params), x, dom)), (x.astype(np.float64),), order=1, modes=("rev",)
        )


def test_domain_index_validation():
    m = SharedBottom(3, (4,), (1,))
    params = _init(m, X, DOM)
    with pytest.raises(ValueError, match=r"domain 3 out of range \[0, 3\)"):
        m.apply(params, X, 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\), got min 0 max 5"):
        m.apply(params, X, np.array([0, 5, 1, 1]))
    with pytest.raises(ValueError, match=r"\[batch\] = \(4,\), got shape \(3,\)"):
        m.apply(params, X, np.array([0, 1, 2], np.int32))
    with pytest.raises(TypeError, match="integer"):
        m.apply(params, X, np.array([0.0, 1.0, 2.0, 1.0], np.float32))
    with pytest.raises(TypeError, match="domain"):
        m.apply(params, X, True)
    # a 0-d array broadcasts to every row, like the static int
    np.testing.assert_allclose(_apply(m, params, X, np.array(2, np.int32)), _apply(m, params, X, domain=2), rtol=1e-6)


# ---------------------------------------------------------------------------------------- cross connections
def test_conet_zero_transfer_is_two_independent_towers_and_matches_numpy():
    m = CoNet((8, 6, 3))
    xa, xb = X, _normal((B, 5), 4)
    params = _init(m, xa, xb)
    p = _np(params)["params"]
    tower = lambda prefix: {f"dense_{i}": p[f"{prefix}_dense_{i}"] for i in range(3)}
    # numpy reference with the learned transfer matrices
    a, b = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
    for i in range(3):
        za = a @ p[f"a_dense_{i}"]["kernel"] + p[f"a_dense_{i}"]["bias"]
        zb = b @ p[f"b_dense_{i}"]["kernel"] + p[f"b_dense_{i}"]["bias"]
        if i < 2:
            za, zb = _relu(za + b @ p[f"transfer_{i}"]), _relu(zb + a @ p[f"transfer_{i}"])
        a, b = za, zb
    out_a, out_b = _apply(m, params, xa, xb)
    np.testing.assert_allclose(out_a, a, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out_b, b, rtol=RTOL, atol=ATOL)
    # zero transfer: each tower is a plain MLP and ignores the other domain
    for i in range(2):
        params = _set(params, (f"transfer_{i}",), np.zeros(p[f"transfer_{i}"].shape))
    out_a, out_b = _apply(m, params, xa, xb)
    np.testing.assert_allclose(out_a, _np_mlp(tower("a"), np.asarray(xa, np.float64)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out_b, _np_mlp(tower("b"), np.asarray(xb, np.float64)), rtol=RTOL, atol=ATOL)
    out_a2, _ = _apply(m, params, xa, 10.0 * xb)
    np.testing.assert_array_equal(out_a, out_a2)
    with pytest.raises(ValueError, match=r"shared_transfer needs equal input widths.*\(4, 6\)"):
        m.apply(params, xa, _normal((B, 6)))


def test_conet_unshared_transfer_directions():
    m = CoNet((8, 3), shared_transfer=False)
    xa, xb = X, _normal((B, 6), 4)
    params = _init(m, xa, xb)
    p = _np(params)["params"]
    assert p["transfer_ab_0"].shape == (6, 8) and p["transfer_ba_0"].shape == (5, 8)
    a, b = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
    ha = _relu(a @ p["a_dense_0"]["kernel"] + p["a_dense_0"]["bias"] + b @ p["transfer_ab_0"])
    hb = _relu(b @ p["b_dense_0"]["kernel"] + p["b_dense_0"]["bias"] + a @ p["transfer_ba_0"])
    out_a, out_b = _apply(m, params, xa, xb)
    np.testing.assert_allclose(out_a, ha @ p["a_dense_1"]["kernel"] + p["a_dense_1"]["bias"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out_b, hb @ p["b_dense_1"]["kernel"] + p["b_dense_1"]["bias"], rtol=RTOL, atol=ATOL)


def test_cross_stitch_matches_numpy_and_identity_is_independent():
    m = CrossStitch((8, 6, 3))
    xa, xb = X, _normal((B, 6), 4)
    params = _init(m, xa, xb)
    params = _set(params, ("stitch_1",), [[0.7, -0.2], [0.4, 1.1]])
    p = _np(params)["params"]
    a, b = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
    for i in range(3):
        a = a @ p[f"a_dense_{i}"]["kernel"] + p[f"a_dense_{i}"]["bias"]
        b = b @ p[f"b_dense_{i}"]["kernel"] + p[f"b_dense_{i}"]["bias"]
        if i < 2:
            s = p[f"stitch_{i}"]
            a, b = _relu(a), _relu(b)
            a, b = s[0, 0] * a + s[0, 1] * b, s[1, 0] * a + s[1, 1] * b
    out_a, out_b = _apply(m, params, xa, xb)
    np.testing.assert_allclose(out_a, a, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out_b, b, rtol=RTOL, atol=ATOL)
    for i in range(2):
        params = _set(params, (f"stitch_{i}",), np.eye(2))
    out_a, out_b = _apply(m, params, xa, xb)
    tower = lambda prefix: {f"dense_{i}": p[f"{prefix}_dense_{i}"] for i in range(3)}
    np.testing.assert_allclose(out_a, _np_mlp(tower("a"), np.asarray(xa, np.float64)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out_b, _np_mlp(tower("b"), np.asarray(xb, np.float64)), rtol=RTOL, atol=ATOL)


# -------------------------------------------------------------------------------------------- mapping networks
def test_emcdr_mapping_matches_numpy():
    u = np.asarray(X, np.float64)
    lin = EMCDRMapping(out_dim=3, linear=True)
    params = _init(lin, X)
    p = _np(params)["params"]
    assert list(p) == ["linear"] and "bias" not in p["linear"]
    np.testing.assert_allclose(_apply(lin, params, X), u @ p["linear"]["kernel"], rtol=RTOL, atol=ATOL)
    mlp = EMCDRMapping(hidden=(8,))
    params = _init(mlp, X)
    ref = _np_mlp(_np(params)["params"]["mlp"], u, act=np.tanh)
    np.testing.assert_allclose(_apply(mlp, params, X), ref, rtol=RTOL, atol=ATOL)


def _np_ptupcdr(p, user, hist, mask):
    att = p["attention"]
    logits = (
        np.maximum(hist @ att["dense_0"]["kernel"] + att["dense_0"]["bias"], 0) @ att["dense_1"]["kernel"]
        + att["dense_1"]["bias"]
    )[..., 0]
    bridges, outs = [], []
    for b in range(hist.shape[0]):
        m = mask[b]
        pu = np.zeros(hist.shape[-1])
        if m.any():
            w = _softmax(logits[b, m])
            pu = (w[:, None] * hist[b, m]).sum(0)
        d = user.shape[1]
        bridge = _np_mlp(p["meta"], pu[None])[0].reshape(d, d)
        bridges.append(bridge)
        outs.append(user[b] @ bridge)
    return np.stack(outs), np.stack(bridges)


def test_ptupcdr_bridge_matches_numpy_and_ignores_masked_items():
    m = PTUPCDRMeta(dim=4, attention_hidden=8, meta_hidden=(8,))
    user = _normal((B, 4), 5)
    params = _init(m, user, HIST, HMASK)
    out_ref, bridge_ref = _np_ptupcdr(
        _np(params)["params"], np.asarray(user, np.float64), np.asarray(HIST, np.float64), np.asarray(HMASK)
    )
    out = _apply(m, params, user, HIST, HMASK)
    bridge = _apply(m, params, HIST, HMASK, method=PTUPCDRMeta.bridge)
    assert bridge.shape == (B, 4, 4)
    np.testing.assert_allclose(bridge, bridge_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out, out_ref, rtol=RTOL, atol=ATOL)
    # masked history items (row 2 is fully masked) may hold anything
    junk = np.where(HMASK[..., None], HIST, 1e3 * _normal(HIST.shape, 6))
    np.testing.assert_allclose(_apply(m, params, user, junk, HMASK), out, rtol=1e-6, atol=1e-6)
    _, weights = _apply(m, params, junk, HMASK, method=PTUPCDRMeta.characteristic)
    np.testing.assert_array_equal(weights[~HMASK], 0.0)
    np.testing.assert_allclose(weights.sum(1), [1, 1, 0, 1], atol=1e-6)
    # no mask = everything valid
    full = _apply(m, params, user, HIST)
    np.testing.assert_allclose(full, _apply(m, params, user, HIST, np.ones((B, 6), bool)), rtol=1e-6)


def test_ptupcdr_gradients_float64_with_padding():
    m = PTUPCDRMeta(dim=3, attention_hidden=4, meta_hidden=(5,), activation="tanh")
    user, hist = _normal((2, 3), 18), _normal((2, 4, 3), 19)
    mask = np.array([[True, False, True, True], [False, False, False, False]])
    params = _init(m, user, hist, mask)
    with jax.enable_x64(True):
        check_grads(
            jax.jit(lambda u, h: m.apply(_np(params), u, h, mask)),
            (user.astype(np.float64), hist.astype(np.float64)),
            order=1,
            modes=("rev",),
        )


# ------------------------------------------------------------------------------------------------ bad input
ACTIVATION_FACTORIES = [
    lambda a: MLP(activation=a),
    lambda a: TwoTower(activation=a),
    lambda a: HistoryEncoder(num_items=3, max_length=2, activation=a),
    lambda a: SharedSpecificEncoder(2, activation=a),
    lambda a: SharedBottom(2, activation=a),
    lambda a: MMoE(2, activation=a),
    lambda a: PLE(2, activation=a),
    lambda a: STAR(2, activation=a),
    lambda a: CoNet(activation=a),
    lambda a: CrossStitch(activation=a),
    lambda a: EMCDRMapping(activation=a),
    lambda a: PTUPCDRMeta(4, activation=a),
    lambda a: DomainClassifier(activation=a),
]


@pytest.mark.parametrize("factory", ACTIVATION_FACTORIES)
def test_unknown_activation_raises_listing_valid_names(factory):
    with pytest.raises(ValueError, match=r"unknown activation 'swishy'; valid names: \[.*'gelu'.*'relu'.*\]"):
        factory("swishy")


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\), got 1.0"):
        MLP(dropout_rate=1.0)
    with pytest.raises(ValueError, match=r"features must be a non-empty sequence of positive ints, got \(\)"):
        MLP(features=())
    with pytest.raises(ValueError, match=r"same width.*\(8, 4\).*\(8, 3\)"):
        TwoTower((8, 4), (8, 3))
    with pytest.raises(ValueError, match=r"unknown similarity 'l2'; valid: \['cosine', 'dot'\]"):
        TwoTower(similarity="l2")
    with pytest.raises(ValueError, match=r"unknown combine 'mul'; valid: \['concat', 'sum'\]"):
        SharedSpecificEncoder(2, combine="mul")
    with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
        PLE(2, num_layers=0)
    with pytest.raises(ValueError, match="num_domains must be a positive int, got 0"):
        STAR(0)


def test_rank_and_dtype_errors_quote_shapes():
    x3 = np.ones((4, 5, 2), np.float32)
    mlp = MLP((3,))
    with pytest.raises(ValueError, match=r"rank >= 1.*\(\)"):
        mlp.init(_key(), np.float32(1.0))
    with pytest.raises(TypeError, match=r"floating.*int32.*\(4, 5\)"):
        mlp.init(_key(), np.ones((4, 5), np.int32))
    with pytest.raises(ValueError, match=r"x must be \[batch, d_in\] \(rank 2\), got shape \(4, 5, 2\)"):
        STAR(2, (3,)).init(_key(), x3, 0)
    with pytest.raises(ValueError, match=r"\(4, 5, 2\)"):
        MMoE(2).init(_key(), x3, 0)
    with pytest.raises(ValueError, match=r"user_x must be \[batch, d_user\].*\(5,\)"):
        TwoTower((3,)).init(_key(), np.ones(5, np.float32), X)
    with pytest.raises(ValueError, match=r"history must be \[batch, length, d_item\].*\(4, 6\)"):
        PTUPCDRMeta(4).init(_key(), X[:, :4], np.ones((4, 6), np.float32))
    with pytest.raises(ValueError, match=r"mask must be \[batch, length\] = \(4, 6\), got shape \(4, 5\)"):
        PTUPCDRMeta(4).init(_key(), X[:, :4], HIST, np.ones((4, 5), bool))
    with pytest.raises(ValueError, match=r"same batch.*\(4, 5\) and \(3, 5\)"):
        CoNet((3,)).init(_key(), X, X[:3])
    with pytest.raises(ValueError, match=r"h must be \[batch, dim\].*\(4, 5, 2\)"):
        DomainClassifier().init(_key(), x3)
    with pytest.raises(ValueError, match=r"user_src must be \[batch, d_src\].*\(5,\)"):
        EMCDRMapping().init(_key(), np.ones(5, np.float32))


# ------------------------------------------------------------------------------------------------- package
def test_package_surface_and_one_way_imports():
    """`jaxrec.models` re-exports its public names; each module imports only `layers` (and `jaxrec.checks`)."""
    classes = (MLP, PLE, STAR, CoNet, CrossDomainEmbedding, CrossStitch, DomainClassifier, EMCDRMapping)
    classes += (HistoryEncoder, MMoE, PTUPCDRMeta, SharedBottom, SharedSpecificEncoder, TwoTower)
    others = ["ACTIVATIONS", "DEFAULT_EMBEDDING_INIT", "Activation", "gradient_reversal"]
    assert sorted(models.__all__) == sorted(others + [c.__name__ for c in classes])
    assert all(hasattr(models, name) for name in models.__all__)
    for path in pathlib.Path(models.__file__).parent.glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        froms = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        plain = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules = {node.module for node in froms if node.module} | plain
        allowed = {"jaxrec"} if path.name == "layers.py" else {"jaxrec", "jaxrec.models.layers"}
        assert {m for m in modules if m.split(".")[0] == "jaxrec"} <= allowed, (path.name, modules)
        from_jaxrec = {alias.name for node in froms if node.module == "jaxrec" for alias in node.names}
        assert from_jaxrec <= {"checks"}, (path.name, from_jaxrec)

"""Tests for jaxrec.evaluate against a brute-force numpy/float64 evaluation written here.

Scores are made exact in float32 (small-integer embeddings, ×1000, plus a distinct per-item tie-breaker in
[0, N)), so the jitted top-k and the float64 argsort see the same strict order and the comparison is exact
up to float32 rounding of the metric means. The references draw their own negatives (the documented rule, in
plain numpy) and compute every metric by hand, so they share no code with jaxrec.
"""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_negatives, ref_user_metrics

from jaxrec import data
from jaxrec import evaluate as ev

TOL = dict(rtol=1e-5, atol=1e-6)  # float32 per-user metrics averaged in float64 vs float64 references
KS = (5, 10, 20)
SKS = (1, 5, 10)
N_NEG = 25
BS = 16  # one batch size (and the same ks) in most tests, so the jitted batch functions are shared


def _ev(scorer, ds, **kw):
    """``evaluate`` with this file's small defaults."""
    kw = {
        "target": "target",
        "ks": KS,
        "sampled_ks": SKS,
        "n_negatives": N_NEG,
        "seeds": (0, 1),
        "batch_size": BS,
        **kw,
    }
    return ev.evaluate(scorer, ds, **kw)


# --------------------------------------------------------------------------------------------------
# Data: 300 users, source 80 items, target 60 items; cold test users (cold_start_split), plus warm test
# users (one train item moved to test) and cold test users without any source history.


def _with_extra_heldout(ds: data.CrossDomainDataset) -> data.CrossDomainDataset:
    train = ds.interactions("target", "train")
    counts = np.bincount(train.users, minlength=ds.n_users)
    has_source = np.isin(np.arange(ds.n_users), ds.users_with("source", "train"))
    warm = np.flatnonzero((counts >= 4) & has_source)[:15]  # keep >= 3 train items each
    no_source = np.flatnonzero((counts >= 3) & ~has_source)[:4]  # made cold, but without source history
    first = np.zeros(train.size, bool)
    for u in warm:
        first[np.flatnonzero(train.users == u)[0]] = True
    to_test = first | np.isin(train.users, no_source)
    test = data.Interactions.concat([ds.interactions("target", "test"), train.take(to_test)])
    splits = {"train": train.take(~to_test), "valid": ds.interactions("target", "valid"), "test": test}
    return ds.replace_splits({"target": splits}, "test: warm held-out users and cold users without source")


@pytest.fixture(scope="module")
def ds():
    base, _ = data.synthetic(n_users=300, n_items=(80, 60), seed=0)
    return _with_extra_heldout(data.cold_start_split(base, "source", "target", fraction=0.3, seed=0))


def _exact_tables(ds, seed=0):
    """Integer user/item tables whose float32 dot products are exact and all distinct per user."""
    rng = np.random.default_rng(seed)
    n = ds.n_items("target")
    u = rng.integers(-3, 4, size=(ds.n_users, 8)).astype(np.float32)
    v = rng.integers(-3, 4, size=(n, 8)).astype(np.float32)
    users = np.concatenate([1000.0 * u, np.ones((ds.n_users, 1), np.float32)], axis=1)
    items = np.concatenate([v, rng.permutation(n).astype(np.float32)[:, None]], axis=1)
    return users, items


# --------------------------------------------------------------------------------------------------
# Independent float64 brute-force references.


def _ref_selection(ds, users, source=None):
    held = set(np.unique(ds.interactions("target", "test").users).tolist())
    with_train = set(np.unique(ds.interactions("target", "train").users).tolist())
    with_source = set(np.unique(ds.interactions("source", "train").users).tolist())
    if users == "all":
        sel = held
    elif users == "warm":
        sel = held & with_train
    else:
        sel = held - with_train
        if source is not None:
            sel &= with_source
    return np.array(sorted(sel), np.int64)


def _ref_full(scores, ds, users, ks):
    """Brute-force full ranking: argsort with the user's seen train items removed; metrics by hand."""
    train = ds.interactions("target", "train")
    test = ds.interactions("target", "test")
    sums = {}
    for u in users:
        s = scores[u].astype(np.float64).copy()
        s[train.items[train.users == u]] = -np.inf
        ranked = np.argsort(-s, kind="stable")
        vals = ref_user_metrics(ranked[: max(ks)], test.items[test.users == u], ks)
        for name, v in vals.items():
            sums[name] = sums.get(name, 0.0) + v
    return {name: v / len(users) for name, v in sums.items()}


def _ref_pairs(ds, users):
    """Held-out pairs in the documented order: by user, then item (distinct)."""
    test = ds.interactions("target", "test")
    keep = np.isin(test.users, users)
    pairs = np.unique(np.stack([test.users[keep], test.items[keep]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _ref_sampled(scores, ds, users, seeds, ks, n_neg):
    """Negatives drawn here, ranks by hand: 1 + #negatives scoring >= the positive (ties against); mean over
    pairs, then seeds."""
    pu, pi = _ref_pairs(ds, users)
    pool = np.unique(ds.interactions("target", "train").items)
    runs = []
    for seed in seeds:
        neg = ref_negatives(seed, pi, pool, n_neg)
        assert not (neg == pi[:, None]).any() and np.isin(neg, pool).all()
        pos_s = scores[pu, pi].astype(np.float64)
        neg_s = scores[pu[:, None], neg].astype(np.float64)
        rank = 1 + np.sum(neg_s >= pos_s[:, None], axis=1)
        run = {"MRR": np.mean(1.0 / rank), "AUC": np.mean((n_neg - (rank - 1)) / n_neg)}
        for k in ks:
            run[f"HR@{k}"] = np.mean(rank <= k)
            run[f"NDCG@{k}"] = np.mean(np.where(rank <= k, 1.0 / np.log2(1.0 + rank), 0.0))
        runs.append(run)
    mean = {n: float(np.mean([r[n] for r in runs])) for n in runs[0]}
    std = {n: float(np.std([r[n] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for n in runs[0]}
    return mean, std, pu.size


def _assert_close(got, want):
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], err_msg=name, **TOL)


# --------------------------------------------------------------------------------------------------
# Agreement with the brute force.


@pytest.mark.parametrize("users", ["cold", "warm", "all"])
def test_matches_bruteforce(ds, users):
    ut, it = _exact_tables(ds)
    scorer = ev.embedding_scorer(ut, it)
    source = "source" if users == "cold" else None
    res = _ev(scorer, ds, source=source, users=users, seeds=(0, 1, 2))
    sel = _ref_selection(ds, users, source)
    scores = ut.astype(np.float64) @ it.astype(np.float64).T
    _assert_close(res["full"], _ref_full(scores, ds, sel, KS))
    mean, std, n_pairs = _ref_sampled(scores, ds, sel, (0, 1, 2), SKS, N_NEG)
    _assert_close(res["sampled"], mean)
    _assert_close(res["sampled_std"], std)
    assert res["counts"] == {"users": sel.size, "pairs": n_pairs, "seeds": 3}
    assert any(v > 0 for v in res["sampled_std"].values())  # the spread over seeds is real


def test_dense_scorer_matches_embedding_scorer(ds):
    ut, it = _exact_tables(ds, seed=1)
    dense = jnp.asarray(ut) @ jnp.asarray(it).T  # [U, N], exact integers
    a = _ev(ev.embedding_scorer(ut, it), ds, users="all", seeds=(4, 5))
    b = _ev(ev.Scorer(lambda u: dense[u], None), ds, users="all", seeds=(4, 5))
    assert a == b


def test_dense_scorer_scores_each_user_once_per_batch(ds):
    ut, it = _exact_tables(ds, seed=3)
    dense = jnp.asarray(ut) @ jnp.asarray(it).T
    ref = _ev(ev.embedding_scorer(ut, it), ds, users="all", seeds=(1,))
    for batch_size in (1, 2, 7):  # one user per batch: a user's pairs span batches of at most 8 pairs
        got = _ev(ev.Scorer(lambda u: dense[u], None), ds, users="all", seeds=(1,), batch_size=batch_size)
        _assert_close(got["sampled"], ref["sampled"])


def test_grouped_pairs_cut_by_users_and_pairs():
    pair_users = np.array([3, 3, 3, 5, 8, 8, 9], np.int32)
    got = [(lo, hi, u.tolist(), r.tolist()) for lo, hi, u, r in ev.scorers.grouped_pairs(pair_users, 2, 3)]
    assert got == [(0, 3, [3], [0, 0, 0]), (3, 6, [5, 8], [0, 1, 1]), (6, 7, [9], [0])]
    rows = np.concatenate([u[r] for _, _, u, r in ev.scorers.grouped_pairs(pair_users, 3, 4)])
    np.testing.assert_array_equal(rows, pair_users)
    assert list(ev.scorers.grouped_pairs(np.zeros(0, np.int32), 2, 3)) == []


def test_batch_size_does_not_change_results(ds):
    ut, it = _exact_tables(ds, seed=2)
    ref = _ev(ev.embedding_scorer(ut, it), ds, users="all")
    for batch_size in (5, 1024):  # 1024: a single batch holding every user / pair
        got = _ev(ev.embedding_scorer(ut, it), ds, users="all", batch_size=batch_size)
        for proto in ("full", "sampled", "sampled_std"):
            _assert_close(got[proto], ref[proto])


# --------------------------------------------------------------------------------------------------
# Protocol properties.


def test_perfect_scorer_full_ranking(ds):
    test = ds.interactions("target", "test")
    rng = np.random.default_rng(0)
    dense = rng.random((ds.n_users, ds.n_items("target"))).astype(np.float32)
    dense[test.users, test.items] = 2.0 + rng.random(test.size)  # held-out items above everything else
    dense = jnp.asarray(dense)
    res = _ev(
        ev.Scorer(lambda u: dense[u], None), ds, users="cold", ks=(10, 20, 50), protocols=("full",)
    )  # cold users: nothing excluded, so K = 50 fits the 60 items
    longest = np.bincount(test.users).max()
    assert longest <= 50
    for k in (10, 20, 50):
        assert res["full"][f"HR@{k}"] == pytest.approx(1.0)
        assert res["full"][f"NDCG@{k}"] == pytest.approx(1.0, rel=1e-6)
    assert res["full"]["Recall@50"] == pytest.approx(1.0)
    assert res["full"]["MRR"] == pytest.approx(1.0)
    assert "sampled" not in res


def test_constant_scorer_sampled_ties_lose(ds):
    n = ds.n_items("target")
    scorer = ev.embedding_scorer(jnp.zeros((ds.n_users, 4)), jnp.zeros((n, 4)))
    res = _ev(scorer, ds, users="all", protocols=("sampled",))
    s = res["sampled"]
    assert s["HR@10"] == 0.0 and s["HR@1"] == 0.0 and s["NDCG@10"] == 0.0 and s["AUC"] == 0.0
    assert s["MRR"] == pytest.approx(1.0 / (N_NEG + 1))
    assert all(v == 0.0 for v in res["sampled_std"].values())
    assert "full" not in res


def test_popularity_scorer(ds):
    counts = ds.item_popularity("target")
    scorer = ev.popularity_scorer(counts)
    got = jax.jit(lambda u: scorer.users_fn(u) @ scorer.items.T)(jnp.arange(3))
    np.testing.assert_array_equal(np.asarray(got), np.broadcast_to(counts, (3, counts.size)))
    # Popular items tie a lot: the sampled protocol counts every tie against the positive.
    res = _ev(scorer, ds, users="all", protocols=("sampled",))
    scores = np.broadcast_to(counts.astype(np.float64), (ds.n_users, counts.size))
    mean, std, _ = _ref_sampled(scores, ds, _ref_selection(ds, "all"), (0, 1), SKS, N_NEG)
    _assert_close(res["sampled"], mean)
    _assert_close(res["sampled_std"], std)


def test_seen_train_items_never_recommended(ds):
    warm = _ref_selection(ds, "warm")
    train = ds.interactions("target", "train")
    rng = np.random.default_rng(1)
    dense = rng.random((ds.n_users, ds.n_items("target"))).astype(np.float32)
    dense[train.users, train.items] += 10.0  # seen items would otherwise fill the top of the list
    table = jnp.asarray(dense)
    k = ds.n_items("target") - int(ds.seen("target").lengths[warm].max())  # the largest allowed K
    scores, idx = ev.recommend(ev.Scorer(lambda u: table[u], None), ds, warm, domain="target", k=k, batch_size=4)
    assert idx.shape == (warm.size, k) and scores.shape == (warm.size, k)
    for row, u in enumerate(warm):
        seen = set(ds.seen("target").row(u).tolist())
        assert not seen & set(idx[row].tolist())
        s = dense[u].astype(np.float64)
        s[list(seen)] = -np.inf
        np.testing.assert_array_equal(idx[row], np.argsort(-s, kind="stable")[:k])
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        ev.recommend(ev.Scorer(lambda u: table[u], None), ds, warm, domain="target", k=k + 1)


def test_sampled_deterministic_per_seed(ds):
    ut, it = _exact_tables(ds, seed=3)
    scorer = ev.embedding_scorer(ut, it)
    kw = dict(users="all", protocols=("sampled",))
    a = _ev(scorer, ds, seeds=(7,), **kw)
    b = _ev(scorer, ds, seeds=(7,), **kw)
    c = _ev(scorer, ds, seeds=(8,), **kw)
    assert a == b
    assert a["sampled"] != c["sampled"]
    both = _ev(scorer, ds, seeds=(7, 8), **kw)
    for name in a["sampled"]:
        pair = [a["sampled"][name], c["sampled"][name]]
        assert both["sampled"][name] == pytest.approx(np.mean(pair), rel=1e-12)
        assert both["sampled_std"][name] == pytest.approx(np.std(pair, ddof=1), rel=1e-9, abs=1e-15)


# --------------------------------------------------------------------------------------------------
# User selection.


def test_cold_warm_selection(ds):
    for users, source in (("cold", None), ("cold", "source"), ("warm", None), ("all", None)):
        got = ev.select_users(ds, target="target", split="test", source=source, users=users)
        np.testing.assert_array_equal(got, _ref_selection(ds, users, source))
    cold_any = ev.select_users(ds, target="target", users="cold")
    cold_src = ev.select_users(ds, target="target", users="cold", source="source")
    assert cold_src.size < cold_any.size  # the cold users without source history drop out
    np.testing.assert_array_equal(cold_src, ds.cold_users("source", "target", "test"))

    ut, it = _exact_tables(ds)
    res = ev.evaluate_cold_warm(
        ev.embedding_scorer(ut, it), ds, target="target", source="source", ks=KS, protocols=("full",), batch_size=BS
    )
    assert set(res) == {"cold", "warm"}
    assert res["cold"]["counts"]["users"] == cold_src.size
    assert res["warm"]["counts"]["users"] == _ref_selection(ds, "warm").size


def test_evaluate_domains_both_directions(ds):
    both = data.cold_start_split(ds, "target", "source", fraction=0.3, seed=1)  # cold users in source too
    rng = np.random.default_rng(0)
    scorers = {
        d: ev.embedding_scorer(rng.normal(size=(both.n_users, 4)), rng.normal(size=(both.n_items(d), 4)))
        for d in ("source", "target")
    }
    kw = dict(ks=KS, sampled_ks=SKS, n_negatives=N_NEG, seeds=(0, 1), batch_size=BS)
    pairs = {"target": "source", "source": "target"}
    res = ev.evaluate_domains(scorers, both, split="test", pairs=pairs, **kw)
    assert set(res) == {"source", "target"}
    for target, source in (("target", "source"), ("source", "target")):
        alone = ev.evaluate(scorers[target], both, target=target, source=source, **kw)
        assert res[target] == alone
    # Only one direction has held-out users: only that one is reported.
    one = ev.evaluate_domains(scorers, ds, pairs={"target": "source", "source": "target"}, **kw)
    assert set(one) == {"target"}
    with pytest.raises(ValueError, match="no scorer for target domain 'source'"):
        ev.evaluate_domains({"target": scorers["target"]}, both, pairs={"source": "target"})


# --------------------------------------------------------------------------------------------------
# Compilation: one trace per protocol whatever the number of batches and seeds.


def test_no_recompilation_over_batches(ds):
    ut, it = _exact_tables(ds)
    table, items = jnp.asarray(ut), jnp.asarray(it)
    traces = []

    def users_fn(u):
        traces.append(u.shape)  # runs only while tracing
        return table[u]

    scorer = ev.Scorer(users_fn, items)
    n_users = _ref_selection(ds, "all").size
    assert n_users > 3 * 4
    _ev(scorer, ds, users="all", protocols=("full",), batch_size=4)
    assert traces == [(4,)]
    traces.clear()
    res = _ev(scorer, ds, users="all", seeds=(0, 1, 2), protocols=("sampled",), batch_size=4)
    assert res["counts"]["pairs"] > 3 * 4
    assert traces == [(4,)]


_MODULE_TRACES = []


def _counting_rows(table, users):
    _MODULE_TRACES.append(users.shape)
    return table[users]


def test_partial_scorer_compiles_once_across_calls(ds):
    ut, it = _exact_tables(ds)
    _MODULE_TRACES.clear()
    for scale in (1.0, 2.0, 3.0):  # new parameter values, same shapes: no new trace
        scorer = ev.Scorer(jax.tree_util.Partial(_counting_rows, jnp.asarray(ut) * scale), jnp.asarray(it))
        _ev(scorer, ds, users="all", protocols=("full",))
    assert _MODULE_TRACES == [(BS,)]


def test_closure_scorer_not_kept_alive(ds):
    def make():
        table = jnp.asarray(_exact_tables(ds)[0])
        return lambda u: table[u]  # a closure over its parameters, as training code builds them

    users_fn = make()
    alive = weakref.ref(users_fn)
    _ev(ev.Scorer(users_fn, jnp.asarray(_exact_tables(ds)[1])), ds, users="all")
    del users_fn
    gc.collect()
    assert alive() is None  # no JAX cache holds the closure (and the arrays it closes over)


# --------------------------------------------------------------------------------------------------
# Errors.


def test_errors(ds):
    ut, it = _exact_tables(ds)
    scorer = ev.embedding_scorer(ut, it)
    kw = dict(target="target", users="all")
    with pytest.raises(ValueError, match=r"K=50 exceeds .* 60 items minus up to \d+ seen train items"):
        ev.evaluate(scorer, ds, **kw)  # the default ks reach 50; warm users have seen items excluded
    kw["ks"] = (10,)
    with pytest.raises(ValueError, match=r"K=61 exceeds the catalogue of domain 'target'"):
        ev.evaluate(scorer, ds, **{**kw, "ks": (10, 61)})
    warm_most = int(ds.seen("target").lengths[_ref_selection(ds, "warm")].max())
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        ev.evaluate(scorer, ds, **{**kw, "ks": (60 - warm_most + 1,)})
    with pytest.raises(ValueError, match=r"unknown protocol 'loo'; valid: \['full', 'sampled'\]"):
        ev.evaluate(scorer, ds, protocols=("full", "loo"), **kw)
    with pytest.raises(ValueError, match=r"unknown user selection 'new'; valid: \['cold', 'warm', 'all'\]"):
        ev.evaluate(scorer, ds, target="target", users="new")
    with pytest.raises(ValueError, match="Scorer.items must have shape"):
        ev.evaluate(ev.embedding_scorer(ut, it[:50]), ds, **kw)
    with pytest.raises(ValueError, match="users_fn must return"):
        ev.evaluate(ev.Scorer(lambda u: jnp.zeros((u.shape[0], 3)), jnp.asarray(it)), ds, **kw)
    with pytest.raises(ValueError, match="dense scorer"):
        ev.evaluate(ev.Scorer(lambda u: jnp.zeros((u.shape[0], 59)), None), ds, **kw)
    with pytest.raises(ValueError, match="ks must be"):
        ev.evaluate(scorer, ds, **{**kw, "ks": (0,)})
    with pytest.raises(ValueError, match="seeds must be"):
        ev.evaluate(scorer, ds, seeds=(), **kw)


def test_no_cold_users_error():
    base, _ = data.synthetic(n_users=120, n_items=(40, 30), seed=1)
    warm_only = data.leave_one_out(base, "target", seed=0)  # every test user keeps target train history
    ut = np.ones((warm_only.n_users, 2), np.float32)
    scorer = ev.embedding_scorer(ut, np.ones((30, 2), np.float32))
    with pytest.raises(ValueError, match=r"no 'cold' users .*target='target', split='test'"):
        ev.evaluate(scorer, warm_only, target="target", split="test", users="cold")
    with pytest.raises(ValueError, match=r"no 'cold' users with 'source' train history .*split='valid'"):
        ev.evaluate(scorer, warm_only, target="target", split="valid", source="source")
    with pytest.raises(ValueError, match="no cold or warm users"):
        ev.evaluate_cold_warm(scorer, base, target="target", split="test")
    res = ev.evaluate_cold_warm(scorer, warm_only, target="target", ks=(5,), protocols=("full",))
    assert set(res) == {"warm"}

"""Streamed full-ranking evaluation against a dense numpy/float64 evaluation: users in batches, items in chunks
through the top-k kernel (a catalogue several kernel chunks long), and a dense scorer whose user batches are
cut to a score-tile budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_user_metrics

from jaxrec import data
from jaxrec import evaluate as ev
from jaxrec.evaluate import scorers

KS = (5, 20)
N_ITEMS = 3000  # about three chunks of the CPU top-k kernel (1024 items): the items stream through it


@pytest.fixture(scope="module")
def ds():
    base = data.synthetic_large(n_users=800, n_items=(300, N_ITEMS), interactions_per_user=(6.0, 4.0), n_topics=16)
    return data.cold_start_split(base, "source", "target", fraction=0.3, seed=0)


def _exact_tables(ds, seed=0):
    """Integer user/item tables whose float32 dot products are exact and distinct per user."""
    rng = np.random.default_rng(seed)
    n = ds.n_items("target")
    u = rng.integers(-3, 4, size=(ds.n_users, 8)).astype(np.float32)
    v = rng.integers(-3, 4, size=(n, 8)).astype(np.float32)
    users = np.concatenate([10000.0 * u, np.ones((ds.n_users, 1), np.float32)], axis=1)
    items = np.concatenate([v, rng.permutation(n).astype(np.float32)[:, None]], axis=1)
    return users, items


def _dense_reference(scores, ds, users, ks):
    """Full ranking of the whole ``[U, N]`` float64 score matrix, seen train items removed; metrics by hand."""
    train, test = ds.seen("target", "train"), ds.seen("target", "test")
    sums = {}
    for u in users:
        s = scores[u].copy()
        s[train.row(u)] = -np.inf
        for name, v in ref_user_metrics(np.argsort(-s, kind="stable")[: max(ks)], test.row(u), ks).items():
            sums[name] = sums.get(name, 0.0) + v
    return {name: v / len(users) for name, v in sums.items()}


def _close(got, want):
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_streamed_full_ranking_equals_the_dense_evaluation(ds):
    ut, it = _exact_tables(ds)
    users = ev.select_users(ds, target="target", split="test", source="source", users="cold")
    assert users.size > 2 * 32 and ds.n_items("target") > 2 * 1024  # several user batches, several item chunks
    got = ev.evaluate(ev.embedding_scorer(ut, it), ds, target="target", source="source", ks=KS, protocols="full",
                      batch_size=32)  # fmt: skip
    want = _dense_reference(ut.astype(np.float64) @ it.astype(np.float64).T, ds, users, KS)
    _close(got["full"], want)


def test_dense_scorer_batches_are_cut_to_the_tile_budget(ds, monkeypatch):
    ut, it = _exact_tables(ds, seed=1)
    table = jnp.asarray(ut @ it.T)  # [U, N] exact integers
    dense = ev.Scorer(jax.tree_util.Partial(scorers.take_rows, table), None)  # rows of [U, N]: dense scores
    kw = dict(target="target", source="source", ks=KS, protocols="full")
    full = ev.evaluate(dense, ds, **kw)
    monkeypatch.setattr(scorers, "TILE_FLOATS", 3 * N_ITEMS + 5)
    assert scorers.batch_rows(dense, 1024, ds.n_items("target")) == 3
    assert scorers.batch_rows(ev.embedding_scorer(ut, it), 1024, ds.n_items("target")) == 1024
    cut = ev.evaluate(dense, ds, **kw)
    assert cut == full  # the same per-user computations, in batches of 3
    users = ev.select_users(ds, target="target", split="test", source="source", users="cold")
    _close(cut["full"], _dense_reference(ut.astype(np.float64) @ it.astype(np.float64).T, ds, users, KS))
    lists = ev.recommend(dense, ds, users[:7], domain="target", k=5)[1]
    seen = ds.seen("target", "train")
    for u, got in zip(users[:7], lists):
        s = ut[u].astype(np.float64) @ it.astype(np.float64).T
        s[seen.row(u)] = -np.inf
        np.testing.assert_array_equal(got, np.argsort(-s, kind="stable")[:5])

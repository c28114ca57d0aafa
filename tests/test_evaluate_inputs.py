"""Bad inputs of jaxrec.evaluate: every option mistake and every bad scorer output is a clear error, raised
before any scoring; non-finite scorer outputs are refused (``check_finite``, on by default).

Option errors are checked with a scorer whose ``users_fn`` raises if it is ever called or traced: the error
must come from the checks that run before any work. Each case checks the exception type and that the message
names the option and its value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data
from jaxrec import evaluate as ev
from jaxrec.evaluate import protocols

KW = dict(target="target", ks=(5,), sampled_ks=(1, 5), n_negatives=10, seeds=(0,), batch_size=16)


@pytest.fixture(scope="module")
def ds():
    base, _ = data.synthetic(n_users=200, n_items=(50, 40), seed=3)
    return data.cold_start_split(base, "source", "target", fraction=0.3, seed=0)


def _tables(ds, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(-3, 4, (ds.n_users, 4)).astype(np.float32),
        rng.integers(-3, 4, (ds.n_items("target"), 4)).astype(np.float32),
    )


def _boom(users):
    raise AssertionError("users_fn was called before the options were checked")


def _untouchable(ds):
    """A scorer whose users_fn must never run (nor be traced)."""
    return ev.Scorer(jax.tree_util.Partial(_boom), jnp.ones((ds.n_items("target"), 4)))


# --------------------------------------------------------------------------------------------------
# Option errors, raised before any work: (id, overrides of KW, exception, message regex).

OPTION_CASES = [
    ("unknown-split", {"split": "tset"}, ValueError, r"unknown split 'tset'; valid: \['valid', 'test'\]"),
    ("train-split", {"split": "train"}, ValueError, r"unknown split 'train'"),
    ("unknown-target", {"target": "tgt"}, ValueError, r"unknown target domain 'tgt'; valid: \['source', 'target'\]"),
    ("unknown-source", {"source": "src"}, ValueError, r"unknown source domain 'src'"),
    ("source-is-target", {"source": "target"}, ValueError, r"source and target must differ"),
    ("unknown-users", {"users": "new"}, ValueError, r"unknown user selection 'new'; valid: \['cold', 'warm', 'all'\]"),
    ("ks-empty", {"ks": ()}, ValueError, r"ks must be a non-empty sequence of positive ints, got \(\)"),
    ("ks-zero", {"ks": (0, 5)}, ValueError, r"ks must be .*got \(0, 5\)"),
    ("ks-string", {"ks": "10"}, ValueError, r"ks must be .*got '10'"),
    ("ks-float", {"ks": (2.5,)}, ValueError, r"ks must be .*got \(2\.5,\)"),
    (
        "k-beyond-catalogue",
        {"ks": (5, 41)},
        ValueError,
        r"ks=\(5, 41\): K=41 exceeds the catalogue of domain 'target': 40 items",
    ),
    ("sampled-ks-empty", {"sampled_ks": []}, ValueError, r"sampled_ks must be a non-empty sequence"),
    ("seeds-negative", {"seeds": (0, -1)}, ValueError, r"seeds must be .*non-negative ints, got \(0, -1\)"),
    ("seeds-empty", {"seeds": ()}, ValueError, r"seeds must be a non-empty sequence"),
    ("seeds-float", {"seeds": (0.5,)}, ValueError, r"seeds must be .*got \(0\.5,\)"),
    ("seeds-int", {"seeds": 3}, ValueError, r"seeds must be .*got 3"),
    ("n-negatives-zero", {"n_negatives": 0}, ValueError, r"n_negatives must be a positive int, got 0"),
    ("batch-size-zero", {"batch_size": 0}, ValueError, r"batch_size must be a positive int, got 0"),
    ("protocols-empty", {"protocols": ()}, ValueError, r"protocols is empty"),
    ("protocol-unknown", {"protocols": ("loo",)}, ValueError, r"unknown protocol 'loo'"),
    ("check-finite-string", {"check_finite": "no"}, TypeError, r"check_finite must be True or False, got 'no'"),
    ("no-warm-users", {"users": "warm"}, ValueError, r"no 'warm' users to evaluate in target='target'"),
]


@pytest.mark.parametrize("overrides, exc, pattern", [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES])
def test_option_errors_name_the_option_before_any_work(ds, overrides, exc, pattern):
    with pytest.raises(exc, match=pattern):
        ev.evaluate(_untouchable(ds), ds, **{**KW, **overrides})
    with pytest.raises(exc, match=pattern):  # the same check, without a scorer (e.g. before training)
        ev.check_options(ds, **{**KW, **overrides})


def test_not_a_dataset():
    with pytest.raises(TypeError, match=r"ds must be a jaxrec.data.CrossDomainDataset, got dict"):
        ev.check_options({}, target="target")


def test_check_options_returns_the_plan(ds):
    plan = ev.check_options(ds, **{**KW, "ks": (10, 5, 10)})
    np.testing.assert_array_equal(plan.selected, ev.select_users(ds, target="target"))
    assert plan.ks == (5, 10) and plan.seeds == (0,) and plan.protocols == ("full", "sampled")
    assert plan.exclude.shape[0] == plan.selected.size and plan.pool.size > 0
    assert ev.check_options(ds, **{**KW, "protocols": "sampled"}).exclude is None


# --------------------------------------------------------------------------------------------------
# Scorer errors: shapes and dtypes found by tracing the first batch, before any scoring.


def _rows(table, users):
    return table[users]


def _first_column(table, users):
    return table[users][:, 0]


def _as_int(table, users):
    return table[users].astype(jnp.int32)


def _as_list(table, users):
    return [table[users]]


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (
            lambda u, i: ev.Scorer(jax.tree_util.Partial(_first_column, u), i),
            ValueError,
            r"users_fn must return \[B, d\]",
        ),
        (
            lambda u, i: ev.Scorer(jax.tree_util.Partial(_rows, u[:, :3]), i),
            ValueError,
            r"users_fn must return \[B, d\]",
        ),
        (lambda u, i: ev.Scorer(jax.tree_util.Partial(_as_int, u), i), TypeError, r"users_fn must return floating"),
        (lambda u, i: ev.Scorer(jax.tree_util.Partial(_as_list, u), i), TypeError, r"users_fn must return an array"),
        (lambda u, i: ev.Scorer(jax.tree_util.Partial(_rows, u @ i[:-1].T), None), ValueError, r"dense scorer"),
        (lambda u, i: ev.Scorer(jax.tree_util.Partial(_rows, u), i[:-1]), ValueError, r"Scorer.items must have shape"),
        (lambda u, i: (_rows, i), TypeError, r"expected an evaluate.Scorer, got tuple"),
    ],
    ids=["rank1", "width", "int-dtype", "list", "dense-width", "items-rows", "not-a-scorer"],
)
@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_scorer_output_errors_before_any_work(ds, monkeypatch, make, exc, pattern, protocol):
    ut, it = _tables(ds)

    def no_sampling(*args, **kwargs):
        raise AssertionError("negatives were drawn before the scorer was checked")

    monkeypatch.setattr(protocols.metrics, "sample_negatives", no_sampling)
    with pytest.raises(exc, match=pattern):
        ev.evaluate(make(jnp.asarray(ut), jnp.asarray(it)), ds, **{**KW, "protocols": (protocol,)})


# --------------------------------------------------------------------------------------------------
# Non-finite scorer outputs.


def test_nan_item_row_refused_before_any_work(ds):
    ut, it = _tables(ds)
    it[7, 2] = np.nan
    bad = ev.Scorer(jax.tree_util.Partial(_boom), jnp.asarray(it))
    with pytest.raises(
        ValueError, match=r"Scorer.items \[N, d\] of domain 'target' = \(40, 4\) .* 1 of 40 rows \(row 7\)"
    ):
        ev.evaluate(bad, ds, **KW)


@pytest.mark.parametrize("protocol", ["full", "sampled"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_user_vectors_name_the_users(ds, protocol, value):
    ut, it = _tables(ds)
    selected = ev.select_users(ds, target="target")
    bad_users = selected[[1, -1]]
    ut[bad_users, 0] = value
    scorer = ev.embedding_scorer(ut, it)
    kw = {**KW, "protocols": (protocol,), "batch_size": 8}  # the bad users sit in different batches
    pattern = rf"users_fn returned user vectors holding NaN or infinite values for 2 of {selected.size} users "
    pattern += rf"\(users {bad_users[0]}, {bad_users[1]}\) in target='target', split='test'.*check_finite=False"
    with pytest.raises(ValueError, match=pattern):
        ev.evaluate(scorer, ds, **kw)
    res = ev.evaluate(scorer, ds, **kw, check_finite=False)  # opted out: numbers, no error
    assert res["counts"]["users"] == selected.size


def _dense_rows(scores, users):
    return scores[users]


def test_dense_scorer_nan_scores_refused_and_minus_inf_allowed(ds):
    ut, it = _tables(ds)
    scores = ut @ it.T
    scores[:, 3] = -np.inf  # an item masked out for everyone: allowed
    res = ev.evaluate(ev.Scorer(jax.tree_util.Partial(_dense_rows, jnp.asarray(scores)), None), ds, **KW)
    assert set(res) == {"full", "sampled", "sampled_std", "counts"}
    user = ev.select_users(ds, target="target")[0]
    scores[user, 5] = np.nan
    with pytest.raises(ValueError, match=rf"returned NaN scores for 1 of \d+ users \(user {user}\)"):
        ev.evaluate(ev.Scorer(jax.tree_util.Partial(_dense_rows, jnp.asarray(scores)), None), ds, **KW)


def test_check_finite_reaches_cold_warm_and_domains(ds):
    ut, it = _tables(ds)
    ut[:] = np.nan
    scorer = ev.embedding_scorer(ut, it)
    kw = {k: v for k, v in KW.items() if k != "target"}
    with pytest.raises(ValueError, match="users_fn returned user vectors holding NaN"):
        ev.evaluate_cold_warm(scorer, ds, target="target", **kw)
    res = ev.evaluate_domains({"target": scorer}, ds, pairs={"target": "source"}, check_finite=False, **kw)
    assert set(res) == {"target"}


# --------------------------------------------------------------------------------------------------
# recommend.


def test_recommend_inputs(ds):
    ut, it = _tables(ds)
    scorer = ev.embedding_scorer(ut, it)
    users = [0, 5, 9]  # a list of ids
    s, i = ev.recommend(scorer, ds, users, domain="target", k=3)
    assert s.shape == (3, 3) and i.shape == (3, 3)
    with pytest.raises(ValueError, match=r"unknown domain 'tgt'"):
        ev.recommend(scorer, ds, users, domain="tgt")
    with pytest.raises(TypeError, match=r"users must be integer user ids, got dtype float64"):
        ev.recommend(scorer, ds, [0.5, 1.0], domain="target")
    with pytest.raises(ValueError, match=r"k=41 exceeds the catalogue of domain 'target'"):
        ev.recommend(scorer, ds, users, domain="target", k=41)
    ut[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"for 1 of 3 users \(user 5\) in domain='target'"):
        ev.recommend(ev.embedding_scorer(ut, it), ds, users, domain="target", k=3)

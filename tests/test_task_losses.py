"""The pair recipes' task losses (``task_loss``: softmax, sampled softmax with the logQ correction, BPR): each
against a numpy float64 reference under ``jit``, the full-softmax memory limit, the option's checks, and every
learned recipe training with each loss."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data, methods
from jaxrec.methods import retrieval

B, n, N, D = 5, 3, 7, 4


def _logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


@pytest.fixture(scope="module")
def record():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(B, D))
    items = rng.normal(size=(N, D))
    pos_ids = rng.integers(0, N, B)
    neg_ids = rng.integers(0, N, (B, n))
    neg_ids[0, 1] = pos_ids[0]  # an accidental hit
    neg_ids[3, 0] = pos_ids[1]  # another row's positive drawn as a negative: a hit for row 1 only
    mask = np.array([True, True, True, False, True])
    return h, items, pos_ids, neg_ids, mask


def _loss(task_loss, h, items, pos_ids, neg_ids, mask):
    h, items = jnp.asarray(h, jnp.float32), jnp.asarray(items, jnp.float32)
    pos_item, neg_item = items[pos_ids], items[neg_ids]
    rec = methods.pair_outputs(h, pos_item, neg_item, jnp.asarray(mask), (h, pos_item, neg_item), items=items)
    return retrieval.pair_task_loss(task_loss, rec, {"items": jnp.asarray(pos_ids), "negatives": jnp.asarray(neg_ids)})


def _jitted(task_loss, *args):
    return float(jax.jit(lambda *a: _loss(task_loss, *a))(*args))


def test_bpr_against_numpy(record):
    h, items, pos_ids, neg_ids, mask = record
    pos = np.sum(h * items[pos_ids], -1)
    neg = np.einsum("bd,bnd->bn", h, items[neg_ids])
    per = np.mean(np.logaddexp(0.0, neg - pos[:, None]), -1)
    np.testing.assert_allclose(_jitted("bpr", *record), per[mask].mean(), rtol=1e-5)


def test_full_softmax_against_numpy(record):
    h, items, pos_ids, neg_ids, mask = record
    logits = h @ items.T
    per = _logsumexp(logits) - logits[np.arange(B), pos_ids]
    np.testing.assert_allclose(_jitted("softmax", *record), per[mask].mean(), rtol=1e-5)


def test_sampled_softmax_against_numpy(record):
    """Each positive against the batch's B·n negatives: padding rows' negatives and its own id removed, every
    negative logit minus log(K/N)."""
    h, items, pos_ids, neg_ids, mask = record
    k = B * n
    flat_ids = neg_ids.reshape(k)
    flat_ok = np.repeat(mask, n)
    per = np.zeros(B)
    for b in range(B):
        pos = h[b] @ items[pos_ids[b]]
        keep = flat_ok & (flat_ids != pos_ids[b])
        neg = h[b] @ items[flat_ids[keep]].T - math.log(k / N)
        per[b] = _logsumexp(np.concatenate([[pos], neg])) - pos
    np.testing.assert_allclose(_jitted("sampled_softmax", *record), per[mask].mean(), rtol=1e-5)


def test_sampled_softmax_estimates_the_full_softmax():
    """With many uniform draws the logQ-corrected loss approaches the full softmax (the plain sampled one does
    not)."""
    rng = np.random.default_rng(1)
    rows, draws, items_n = 64, 64, 50
    h = rng.normal(size=(rows, D)) * 0.5
    items = rng.normal(size=(items_n, D)) * 0.5
    pos_ids = rng.integers(0, items_n, rows)
    neg_ids = rng.integers(0, items_n, (rows, draws))
    mask = np.ones(rows, bool)
    full = _jitted("softmax", h, items, pos_ids, neg_ids, mask)
    sampled = _jitted("sampled_softmax", h, items, pos_ids, neg_ids, mask)
    assert abs(sampled - full) < 0.05 * full, (sampled, full)


def test_softmax_falls_back_to_sampled_above_the_limit(record, monkeypatch):
    assert retrieval.resolve_task_loss("softmax", 1024, 12_319) == "softmax"  # Amazon Game: full softmax fits
    monkeypatch.setattr(retrieval, "FULL_SOFTMAX_LIMIT", B * N - 1)
    with pytest.warns(UserWarning, match="FULL_SOFTMAX_LIMIT"):
        value = float(_loss("softmax", *record))
    np.testing.assert_allclose(value, _jitted("sampled_softmax", *record), rtol=1e-6)
    assert retrieval.resolve_task_loss("bpr", 10**9, 10**9) == "bpr"


def test_softmax_needs_the_item_table(record):
    h, items, pos_ids, neg_ids, mask = (jnp.asarray(x) for x in record)
    rec = methods.pair_outputs(h, items[pos_ids], items[neg_ids], mask, (h, items[pos_ids], items[neg_ids]))
    with pytest.raises(ValueError, match="item table"):
        retrieval.pair_task_loss("softmax", rec, {"items": pos_ids, "negatives": neg_ids})


# ----------------------------------------------------------------------------------------------------------------
# The option, in every learned recipe
# ----------------------------------------------------------------------------------------------------------------

#: Every learned pair recipe (``item_map`` is closed form, ``popularity`` learns nothing, ``history`` has its own
#: tests of the same three losses in tests/test_inductive.py, ``factor_map`` trains the full softmax its
#: per-user max-scaled scores need).
PAIR_RECIPES = sorted(set(methods.METHODS) - {"item_map", "popularity", "history", "factor_map"})


def test_every_learned_recipe_has_the_option_and_checks_it():
    for name in PAIR_RECIPES + ["history"]:
        config = methods.METHODS[name].default_config
        assert config.task_loss in methods.TASK_LOSSES
        owner = type(config).__name__
        with pytest.raises(ValueError, match=rf"unknown {owner}.task_loss 'xent'; valid: \['softmax'"):
            dataclasses.replace(config, task_loss="xent")
        with pytest.raises(ValueError, match="task_loss"):
            methods.run(name, None, source="a", target="b", task_loss="xent")
    with pytest.raises(ValueError, match="unknown task_loss 'xent'"):
        methods.task_objective(0.0, "xent")


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=160, n_items=(40, 30), interactions_per_user=(6.0, 4.0), seed=2)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


def _fast(name: str) -> dict:
    config = methods.METHODS[name].default_config
    kw = {"progress": False, "dim": 8}
    for field, value in (("epochs", 1), ("batch_size", 64), ("meta_epochs", 1), ("map_epochs", 1)):
        if hasattr(config, field):
            kw[field] = value
    if hasattr(config, "pretrain_epochs"):
        kw["pretrain_epochs"] = 1
    return kw


#: Each model family with both softmax losses; the other recipes (the same models and objective) with one.
FAMILIES = ["cmf", "dann", "mmoe", "lightgcn", "finetune", "emcdr"]
CASES = [(r, loss) for r in FAMILIES for loss in ("softmax", "sampled_softmax")]
CASES += [(r, ("softmax", "sampled_softmax")[i % 2]) for i, r in enumerate(sorted(set(PAIR_RECIPES) - set(FAMILIES)))]


@pytest.mark.parametrize("name,task_loss", CASES)
def test_every_learned_recipe_trains_with_the_softmax_losses(tiny, name, task_loss):
    """The loss reaches training: at near-zero scores a softmax over ~30 items starts near log 30 ≈ 3.4 (the
    sampled one, corrected by log(K/N), too), far above BPR's log 2."""
    trained = methods.run(name, tiny, source="source", target="target", task_loss=task_loss, **_fast(name))
    assert trained.config.task_loss == task_loss
    tasks = [v for r in trained.history for k, v in r.items() if k.startswith("task/")]
    assert tasks and np.all(np.isfinite(tasks))
    assert max(tasks) > 2.0, tasks
    scorer = trained.scorers["target"]
    users = tiny.cold_users("source", "target", "test")[:4].astype(np.int32)
    assert np.isfinite(np.asarray(scorer.users_fn(users))).all()


def test_bpr_stays_bpr(tiny):
    trained = methods.run("cmf", tiny, source="source", target="target", **_fast("cmf"))
    tasks = [v for r in trained.history for k, v in r.items() if k.startswith("task/")]
    assert trained.config.task_loss == "bpr" and max(tasks) < 1.0, tasks

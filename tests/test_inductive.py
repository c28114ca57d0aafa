"""The inductive recipe ``history`` and its retrieval losses: codes ignore padding, each task loss equals a float64
numpy formula, the logQ correction removes the sampling bias, the batches keep one shape (one compilation), the
scorer encodes cold users, and training runs with and without the discrepancy term (that it beats popularity on
planted cold users is tested in test_methods.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data, methods
from jaxrec.methods import history_model, inductive, retrieval

SMALL = dict(dim=8, history_length=6, num_heads=2, positives=4, batch_size=32, side_batch_size=32, progress=False)


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=300, n_items=(60, 40), interactions_per_user=(8.0, 4.0), seed=1)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


def _logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


# ----------------------------------------------------------------------------------------------------------------
# The model: shapes, and padding never changes a code
# ----------------------------------------------------------------------------------------------------------------


def _model_batch(rng, n_items=(11, 7), rows=3, length=5, positives=2, negatives=4):
    def group(hk, sk):
        hist = rng.integers(0, n_items[hk], (rows, length)).astype(np.int32)
        hist[0, 3:] = -1
        pos = rng.integers(0, n_items[sk], (rows, positives)).astype(np.int32)
        pos[1, 1] = -1
        return {
            "history": hist,
            "positives": pos,
            "mask": pos >= 0,
            "rows": np.ones(rows, bool),
            "negatives": rng.integers(0, n_items[sk], negatives).astype(np.int32),
        }

    return {g: group(*ks) for g, ks in history_model.GROUPS.items()}


@pytest.mark.parametrize("pooling,align", [("mean", False), ("cls", True)])
def test_model_shapes_and_padding(pooling, align):
    rng = np.random.default_rng(0)
    batch = _model_batch(rng)
    kw = dict(dim=8, history_length=5, pooling=pooling, num_heads=2, align=align, align_size=2)
    full = history_model.HistoryModel((11, 7), full_softmax=True, **kw)
    sampled = history_model.HistoryModel((11, 7), full_softmax=False, **kw)  # the same parameters
    params = jax.jit(full.init)(jax.random.key(0), batch)["params"]
    out, out_s = jax.jit(lambda p: (full.apply({"params": p}, batch), sampled.apply({"params": p}, batch)))(params)
    for g, (_, sk) in history_model.GROUPS.items():
        assert out[g]["pos"].shape == (3, 2) and out[g]["logits"].shape == (3, (11, 7)[sk])
        logits = np.asarray(out[g]["logits"])
        np.testing.assert_allclose(out[g]["pos"], np.take_along_axis(logits, np.maximum(batch[g]["positives"], 0), 1))
        # the sampled-loss model scores the positives and the shared negatives alike
        np.testing.assert_allclose(out_s[g]["pos"], out[g]["pos"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out_s[g]["neg"], logits[:, batch[g]["negatives"]], rtol=1e-5, atol=1e-6)
    assert ("align" in out) == align
    if align:
        hs, ht, hs_mask, ht_mask = out["align"]
        assert hs.shape == ht.shape == (2, 8) and hs_mask.shape == ht_mask.shape == (2,)
    # a right-padded history gives the code of the unpadded one, whatever the padding
    vectors = jax.jit(lambda p, h: full.apply({"params": p}, h, 0, method=history_model.HistoryModel.user_vectors))
    hist = batch["cross"]["history"][:1, :3]
    short = vectors(params, hist)
    assert short.shape == (1, 8)
    for width in (4, 5):
        padded = np.concatenate([hist, np.full((1, width - 3), -1, np.int32)], axis=1)
        np.testing.assert_allclose(vectors(params, padded), short, rtol=1e-5, atol=1e-6)
    assert full.apply({"params": params}, 1, method=history_model.HistoryModel.item_vectors).shape == (7, 8)


# ----------------------------------------------------------------------------------------------------------------
# Task losses against float64 numpy, and the logQ correction
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 7))
    pos_ids = np.array([[0, 3], [5, -1], [2, 2]])
    mask = pos_ids >= 0
    mask[2, 1] = False  # a padded positive holding a real id
    neg_ids = np.array([3, 1, 6, 2])  # hits: row 0 positive 3, row 2 positive 2
    pos = np.take_along_axis(logits, np.maximum(pos_ids, 0), 1)
    return logits, pos, logits[:, neg_ids], pos_ids, neg_ids, mask


def test_full_softmax_equals_numpy(scores):
    logits, pos, _, _, _, mask = scores
    want = np.mean((_logsumexp(logits)[:, None] - pos)[mask])
    got = retrieval.full_softmax_loss(jnp.asarray(pos, jnp.float32), jnp.asarray(logits, jnp.float32), mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _numpy_sampled(pos, neg, pos_ids, neg_ids, mask, pos_log_q, neg_log_q):
    values = []
    for b, p in zip(*np.nonzero(mask)):
        keep = neg_ids != pos_ids[b, p]
        z = np.concatenate([[pos[b, p] - pos_log_q[b, p]], (neg[b] - neg_log_q)[keep]])
        values.append(_logsumexp(z) - z[0])
    return np.mean(values)


@pytest.mark.parametrize("corrected", [False, True])
def test_sampled_softmax_equals_numpy(scores, corrected):
    _, pos, neg, pos_ids, neg_ids, mask = scores
    rng = np.random.default_rng(2)
    pos_log_q = np.log(rng.uniform(0.01, 0.2, pos.shape)) if corrected else np.zeros(pos.shape)
    neg_log_q = np.log(rng.uniform(0.01, 0.2, neg_ids.shape)) if corrected else np.zeros(neg_ids.shape)
    want = _numpy_sampled(pos, neg, pos_ids, neg_ids, mask, pos_log_q, neg_log_q)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    q = dict(pos_log_q=f32(pos_log_q), neg_log_q=f32(neg_log_q)) if corrected else {}
    got = retrieval.sampled_softmax_loss(f32(pos), f32(neg), mask, pos_ids=pos_ids, neg_ids=neg_ids, **q)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bpr_equals_numpy(scores):
    _, pos, neg, pos_ids, neg_ids, mask = scores
    values = []
    for b, p in zip(*np.nonzero(mask)):
        keep = neg_ids != pos_ids[b, p]
        values.append(np.mean(np.log1p(np.exp(neg[b][keep] - pos[b, p]))))
    got = retrieval.bpr_loss(
        jnp.asarray(pos, jnp.float32), jnp.asarray(neg, jnp.float32), mask, pos_ids=pos_ids, neg_ids=neg_ids
    )
    np.testing.assert_allclose(got, np.mean(values), rtol=1e-5)


def test_log_q_correction_removes_the_popularity_bias():
    """Negatives drawn ∝ popularity: with the logQ correction, the sampled-softmax gradient of the scores points
    where the full softmax's does; without it, it is biased against popular items."""
    rng = np.random.default_rng(3)
    n = 50
    counts = np.floor(1000.0 / np.arange(1, n + 1) ** 1.2)
    log_q = retrieval.negative_log_q(counts, "popularity")
    np.testing.assert_allclose(np.exp(log_q.astype(np.float64)).sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(retrieval.negative_log_q(counts, "uniform"), np.full(n, -np.log(n)), rtol=1e-6)
    s = jnp.asarray(rng.normal(size=n), jnp.float32)
    target = 7
    full = jax.grad(lambda s: retrieval.full_softmax_loss(s[target][None, None], s[None], np.ones((1, 1), bool)))(s)
    ids, neg_log_q = retrieval.sample_negatives(rng, log_q, 20000)
    freq = np.bincount(ids, minlength=n) / ids.size
    np.testing.assert_allclose(freq, np.exp(log_q), atol=0.01)  # drawn as documented

    def sampled(correct):
        def loss(s):
            q = dict(pos_log_q=jnp.asarray(log_q[[[target]]]), neg_log_q=jnp.asarray(neg_log_q)) if correct else {}
            return retrieval.sampled_softmax_loss(
                s[target][None, None],
                s[ids][None],
                np.ones((1, 1), bool),
                pos_ids=np.array([[target]]),
                neg_ids=ids,
                **q,
            )

        return jax.grad(loss)(s)

    err_corrected = np.linalg.norm(sampled(True) - full)
    err_plain = np.linalg.norm(sampled(False) - full)
    assert err_corrected < 0.05 and err_plain > 5 * err_corrected, (err_corrected, err_plain)


# ----------------------------------------------------------------------------------------------------------------
# Data: held-out rows, fixed-shape batches, one compilation of the train step
# ----------------------------------------------------------------------------------------------------------------


def test_holdout_rows_split_each_users_items(tiny):
    seen = tiny.seen("source", "train")
    users = np.arange(40)
    hist, pos = inductive.holdout_rows(seen, users, history_length=6, positives=4, rng=np.random.default_rng(0))
    assert hist.shape == (40, 6) and pos.shape == (40, 4)
    for u, h, p in zip(users, hist, pos):
        items = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
        h, p = h[h >= 0], p[p >= 0]
        n = min(len(items), 10)
        assert p.size == min(4, n // 2) and h.size == n - p.size
        assert set(h) <= items and set(p) <= items and not set(h) & set(p)


def test_batches_keep_one_shape(tiny):
    config = methods.HistoryConfig(**SMALL, task_loss="sampled_softmax", n_negatives=8, discrepancy="coral")
    batches, steps, groups = inductive.history_batches(tiny, "source", "target", config)
    assert groups == ("cross", "source", "target")
    epochs = [list(batches(np.random.default_rng([0, e]))) for e in range(2)]
    assert all(len(e) == steps for e in epochs)
    shapes = {repr(jax.tree.map(lambda x: (x.shape, x.dtype), b)) for e in epochs for b in e}
    assert len(shapes) == 1
    # every overlapping user is a "cross" row once per epoch; negatives are drawn from the scored domain
    n_src, n_tgt = tiny.seen("source").lengths, tiny.seen("target").lengths
    assert np.concatenate([b["cross"]["rows"] for b in epochs[0]]).sum() == np.sum((n_src > 0) & (n_tgt > 0))
    for g, (_, sk) in history_model.GROUPS.items():
        negatives = np.concatenate([b[g]["negatives"] for b in epochs[0]])
        assert negatives.min() >= 0 and negatives.max() < tiny.n_items(("source", "target")[sk])
    # training starts from the items' popularity: biases at the centred log(1 + train count)
    model = history_model.HistoryModel((60, 40), 8, 6, num_heads=2, full_softmax=False, biased=True, align=True)
    params = inductive.initial_params(model, epochs[0][0], tiny, ("source", "target"), seed=0)
    for k, domain in enumerate(("source", "target")):
        log_pop = np.log1p(tiny.item_popularity(domain))
        np.testing.assert_allclose(params[f"item_bias_{k}"], log_pop - log_pop.mean(), rtol=1e-5, atol=1e-6)


#: The two trainings of the recipe tests: without the discrepancy term (BPR, only the "cross" group), and with it
#: (logQ-corrected sampled softmax over popularity-drawn negatives, CORAL on the shared codes, item biases, 2 epochs).
RUNS = {
    "off": dict(task_loss="bpr", n_negatives=8, source_weight=0.0, target_weight=0.0, epochs=1),
    "on": dict(task_loss="sampled_softmax", n_negatives=8, sampling="popularity", discrepancy="coral", lam=0.5)
    | dict(source_weight=0.0, item_bias=True, epochs=2),
}


@pytest.fixture(scope="module")
def runs(tiny):
    """``{name: (config, Trained, traces of the train step's loss)}`` for each of :data:`RUNS`."""
    out = {}
    for name, overrides in RUNS.items():
        config = methods.HistoryConfig(**SMALL, **overrides)
        traces = []

        def counting(config, groups, *, total_steps, _make=inductive.history_objective, _traces=traces):
            objective = _make(config, groups, total_steps=total_steps)

            def task_loss(outputs, batch):
                _traces.append(1)  # a Python side effect: runs once per trace of the step
                return objective.task_loss(outputs, batch)

            return dataclasses.replace(objective, task_loss=task_loss)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(inductive, "history_objective", counting)
            trained = methods.train_history(tiny, source="source", target="target", config=config)
        out[name] = (config, trained, traces)
    return out


@pytest.mark.parametrize("name", sorted(RUNS))
def test_recipe_trains_with_and_without_discrepancy(runs, name):
    config, trained, traces = runs[name]
    assert set(trained.scorers) == {"target"} and trained.config == config
    records = [r for r in trained.history if "loss" in r]
    assert records and all(np.isfinite(r["loss"]) for r in records)
    assert sum("eval/NDCG@10" in r for r in trained.history) == config.epochs
    assert len(traces) == 1  # one compilation of the train step, every epoch and the padded last batch included
    tasks = {k for r in records for k in r if k.startswith("task/")}
    if name == "on":  # the source group (weight 0) is only aligned
        assert all(r["discrepancy"] != 0 and r["lam"] == 0.5 for r in records)
        assert tasks == {"task/cross", "task/target"}
    else:
        assert all(r["discrepancy"] == 0 for r in records) and tasks == {"task/cross"}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_scorer_encodes_cold_users_and_ranks_the_others_by_popularity(runs, tiny, name):
    config, trained, _ = runs[name]
    model = history_model.HistoryModel(
        (60, 40), 8, 6, num_heads=2, full_softmax=False, biased=config.item_bias, align=config.discrepancy is not None
    )
    params = {"params": trained.params}
    scorer = trained.scorers["target"]
    # cold users: their padded source history through the encoder and the user tower, against the item tower,
    # plus the item biases
    history = methods.padded_history(tiny, "source", length=6, seed=config.seed)
    cold = tiny.cold_users("source", "target", "test")[:5].astype(np.int32)
    users = model.apply(params, jnp.asarray(history[cold]), 0, method=history_model.HistoryModel.user_vectors)
    items = model.apply(params, 1, method=history_model.HistoryModel.item_vectors)
    bias = np.asarray(trained.params["item_bias_1"]) if config.item_bias else 0.0
    assert ("item_bias_1" in trained.params) == config.item_bias
    got = np.asarray(scorer.users_fn(cold)) @ np.asarray(scorer.items).T
    np.testing.assert_allclose(got, np.asarray(users) @ np.asarray(items).T + bias, rtol=1e-4, atol=1e-5)
    # users without source history: target popularity
    no_source = np.flatnonzero(tiny.seen("source").lengths == 0)[:3].astype(np.int32)
    assert no_source.size
    got = np.asarray(scorer.users_fn(no_source)) @ np.asarray(scorer.items).T
    np.testing.assert_allclose(got, np.log1p(tiny.item_popularity("target"))[None].repeat(3, 0), rtol=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown HistoryConfig.task_loss 'listwise'; valid: \['softmax'"):
        methods.HistoryConfig(task_loss="listwise")
    with pytest.raises(ValueError, match=r"unknown HistoryConfig.sampling 'zipf'"):
        methods.HistoryConfig(sampling="zipf")
    with pytest.raises(ValueError, match=r"HistoryConfig.source_weight must be a number in \[0, inf\), got -1"):
        methods.HistoryConfig(source_weight=-1)
    with pytest.raises(ValueError, match=r"dim \(10\) must be divisible by num_heads \(4\)"):
        methods.HistoryConfig(dim=10)
    with pytest.raises(ValueError, match="pooling"):
        methods.HistoryConfig(pooling="max")
    with pytest.raises(ValueError, match="unknown discrepancy"):
        methods.HistoryConfig(discrepancy="wasserstein")
    config = methods.HistoryConfig(discrepancy="mmd", discrepancy_options={"median_rows": 64})
    assert config.discrepancy_options == {"median_rows": 64}  # frozen: the config stays hashable
    hash(config)

"""Tests for jaxrec.losses.task (per-example task losses and mean_where) against numpy/float64 references.

Conventions: task losses are per-example [batch]. Every jax computation runs under jax.jit; float32 results are
compared with explicit tolerances.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import losses as L

F32 = dict(rtol=1e-5, atol=1e-6)


def np_logsumexp(v):
    v = np.asarray(v, np.float64)
    top = v.max()
    return top + math.log(np.exp(v - top).sum())


def test_mean_where_masks_and_all_masked_gives_zero():
    f = jax.jit(lambda v, w: L.mean_where(v, where=w))
    v = jnp.array([1.0, 3.0, jnp.nan, 100.0])
    np.testing.assert_allclose(f(v, jnp.array([True, True, False, False])), 2.0, **F32)
    assert float(f(v, jnp.zeros(4, bool))) == 0.0
    g = jax.jit(jax.grad(lambda v: L.mean_where(v, where=jnp.array([True, False, False, True]))))(v)
    np.testing.assert_array_equal(g, [0.5, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(jax.jit(L.mean_where)(jnp.arange(4.0)), 1.5, **F32)


def test_mse_matches_numpy_with_mask():
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    w = np.array([1, 1, 0, 1, 0, 1], bool)
    out = jax.jit(lambda p, t, w: L.mse(p, t, where=w))(p, t, w)
    np.testing.assert_allclose(out, np.where(w, (p.astype(np.float64) - t) ** 2, 0.0), **F32)
    red = jax.jit(lambda p, t, w: L.mean_where(L.mse(p, t, where=w), where=w))(p, t, w)
    np.testing.assert_allclose(red, ((p - t)[w].astype(np.float64) ** 2).mean(), **F32)


def test_sigmoid_bce_matches_numpy_and_is_stable():
    rng = np.random.default_rng(2)
    x = rng.normal(scale=3.0, size=8).astype(np.float32)
    z = rng.uniform(size=8).astype(np.float32)
    f = jax.jit(L.sigmoid_bce)
    s = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(f(x, z), -(z * np.log(s) + (1 - z) * np.log1p(-s)), **F32)
    # Large logits: exact values are 100 (confidently wrong) and e^-100 ≈ 3.7e-44 (confidently right).
    big = f(jnp.array([100.0, -100.0, 100.0]), jnp.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(big, [100.0, 0.0, 0.0], atol=1e-6)
    # Gradient is σ(x) − z, including at x = 0 where |x|-based formulas give the wrong subgradient.
    grad = jax.jit(jax.grad(lambda x, z: jnp.sum(L.sigmoid_bce(x, z))))(
        jnp.array([0.0, 0.0, 2.0]), jnp.array([1.0, 0.0, 0.3])
    )
    np.testing.assert_allclose(grad, [-0.5, 0.5, 1.0 / (1.0 + math.exp(-2.0)) - 0.3], **F32)


def test_bpr_matches_numpy_single_and_multi_negative():
    rng = np.random.default_rng(3)
    pos = rng.normal(size=5).astype(np.float32)
    neg1 = rng.normal(size=5).astype(np.float32)
    neg3 = rng.normal(size=(5, 3)).astype(np.float32)
    ref1 = -np.log(1.0 / (1.0 + np.exp(-(pos.astype(np.float64) - neg1))))
    np.testing.assert_allclose(jax.jit(L.bpr)(pos, neg1), ref1, **F32)
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]], bool)
    out = jax.jit(lambda p, n, w: L.bpr(p, n, where=w))(pos, neg3, mask)
    per = -np.log(1.0 / (1.0 + np.exp(-(pos[:, None].astype(np.float64) - neg3))))
    ref = [per[b][mask[b]].mean() if mask[b].any() else 0.0 for b in range(5)]
    np.testing.assert_allclose(out, ref, **F32)
    # A [batch] mask with [batch, num_neg] negatives masks whole examples.
    out_rows = jax.jit(lambda p, n, w: L.bpr(p, n, where=w))(pos, neg3, np.array([1, 0, 1, 1, 0], bool))
    np.testing.assert_allclose(out_rows, np.where([1, 0, 1, 1, 0], per.mean(1), 0.0), **F32)


def np_sampled_softmax(pos, neg, plq, nlq, pid, nid, where, nwhere, temp):
    out = []
    for b in range(len(pos)):
        if not where[b]:
            out.append(0.0)
            continue
        cand = [pos[b] / temp - plq[b]]
        for j in range(neg.shape[1]):
            if nwhere[b, j] and nid[b, j] != pid[b]:
                cand.append(neg[b, j] / temp - nlq[b, j])
        out.append(np_logsumexp(cand) - cand[0])
    return np.array(out)


def test_sampled_softmax_logq_and_accidental_hits_match_numpy():
    rng = np.random.default_rng(4)
    batch, k = 4, 5
    pos = rng.normal(size=batch).astype(np.float32)
    neg = rng.normal(size=(batch, k)).astype(np.float32)
    plq = np.log(rng.uniform(0.05, 0.5, size=batch)).astype(np.float32)
    nlq_shared = np.log(rng.uniform(0.05, 0.5, size=k)).astype(np.float32)
    pid = np.array([3, 7, 1, 9])
    nid_shared = np.array([7, 2, 3, 3, 5])  # hits: row 0 (id 3) twice, row 1 (id 7) once
    where = np.array([1, 1, 0, 1], bool)
    nwhere = np.array([1, 1, 1, 1, 0], bool)  # last shared negative is padding
    f = jax.jit(
        lambda *a: L.sampled_softmax(
            a[0],
            a[1],
            pos_log_q=a[2],
            neg_log_q=a[3],
            pos_ids=a[4],
            neg_ids=a[5],
            where=a[6],
            neg_where=a[7],
            temperature=0.5,
        )
    )
    out = f(pos, neg, plq, nlq_shared, pid, nid_shared, where, nwhere)
    tile = lambda v: np.broadcast_to(v, (batch, k))  # noqa: E731
    ref = np_sampled_softmax(pos, neg, plq, tile(nlq_shared), pid, tile(nid_shared), where, tile(nwhere), 0.5)
    np.testing.assert_allclose(out, ref, **F32)
    # Without any option it is plain softmax cross-entropy with the positive in column 0.
    plain = jax.jit(L.sampled_softmax)(pos, neg)
    full = np.concatenate([pos[:, None], neg], 1).astype(np.float64)
    np.testing.assert_allclose(plain, [np_logsumexp(r) - r[0] for r in full], **F32)


def test_in_batch_softmax_matches_numpy():
    rng = np.random.default_rng(5)
    batch = 5
    logits = rng.normal(size=(batch, batch)).astype(np.float32)
    log_q = np.log(rng.uniform(0.05, 0.5, size=batch)).astype(np.float32)
    ids = np.array([4, 8, 4, 1, 6])  # rows 0 and 2 hold the same item: an accidental hit for each other
    where = np.array([1, 1, 1, 1, 0], bool)  # row/column 4 is padding
    f = jax.jit(lambda x, q, i, w: L.in_batch_softmax(x, log_q=q, ids=i, where=w, temperature=2.0))
    out = f(logits, log_q, ids, where)
    ref = []
    for i in range(batch):
        if not where[i]:
            ref.append(0.0)
            continue
        z = logits[i].astype(np.float64) / 2.0 - log_q
        keep = [j for j in range(batch) if j == i or (where[j] and ids[j] != ids[i])]
        ref.append(np_logsumexp(z[keep]) - z[i])
    np.testing.assert_allclose(out, ref, **F32)


def test_task_losses_all_masked_give_zero_and_nan_padding_does_not_leak():
    nan = jnp.full((3,), jnp.nan)
    none = jnp.zeros(3, bool)
    partial = jnp.array([True, False, True])
    vals = jnp.array([0.5, jnp.nan, -1.0])
    cases = {
        "mse": lambda v, w: L.mse(v, jnp.zeros(3), where=w),
        "sigmoid_bce": lambda v, w: L.sigmoid_bce(v, jnp.ones(3), where=w),
        "bpr": lambda v, w: L.bpr(v, jnp.zeros(3), where=w),
        "sampled_softmax": lambda v, w: L.sampled_softmax(v, jnp.zeros((3, 2)), where=w),
        "in_batch_softmax": lambda v, w: L.in_batch_softmax(jnp.diag(v), where=w),
    }
    for name, loss in cases.items():

        def run(v, w, loss=loss):
            mean = lambda v: L.mean_where(loss(v, w), where=w)  # noqa: E731
            return loss(v, w), mean(v), jax.grad(mean)(v)

        f = jax.jit(run)
        per_example, mean, _ = f(nan, none)
        np.testing.assert_array_equal(per_example, np.zeros(3), err_msg=name)
        assert float(mean) == 0.0, name
        _, mean, grad = f(vals, partial)
        assert np.isfinite(float(mean)), name
        assert np.all(np.isfinite(grad)) and float(grad[1]) == 0.0, (name, grad)


def test_task_loss_bad_input():
    with pytest.raises(ValueError, match=r"predictions \(4,\) and targets \(4, 1\)"):
        L.mse(jnp.zeros(4), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"logits \(3,\) and labels \(2,\)"):
        L.sigmoid_bce(jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"neg_scores must be .* batch = 4 .*\(3, 2\)"):
        L.bpr(jnp.zeros(4), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        L.sampled_softmax(jnp.zeros(2), jnp.zeros((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match=r"neg_ids must be \[num_neg\]"):
        L.sampled_softmax(jnp.zeros(2), jnp.zeros((2, 3)), pos_ids=jnp.zeros(2, int), neg_ids=jnp.zeros(4, int))
    with pytest.raises(ValueError, match="needs both pos_ids and neg_ids"):
        L.sampled_softmax(jnp.zeros(2), jnp.zeros((2, 3)), pos_ids=jnp.zeros(2, int))
    with pytest.raises(ValueError, match=r"square \[batch, batch\], got \(2, 3\)"):
        L.in_batch_softmax(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"where of shape \(3,\) does not broadcast"):
        L.mean_where(jnp.zeros(4), where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"source_logits must be \[rows\] or \[rows, 1\].*\(3, 2\)"):
        L.domain_adversarial_loss(jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(TypeError, match="floating dtype"):
        L.sigmoid_bce(jnp.zeros(3, jnp.int32), jnp.zeros(3))

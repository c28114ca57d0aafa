"""Tests for jaxrec.losses' adversarial domain loss, λ schedules and combined loss, against numpy/float64.

Every jax computation runs under jax.jit; float32 results are compared with explicit tolerances.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import losses as L

F32 = dict(rtol=1e-5, atol=1e-6)


def test_domain_adversarial_loss_matches_numpy_balanced_and_masked():
    rng = np.random.default_rng(10)
    s = rng.normal(size=6).astype(np.float32)
    t = rng.normal(size=3).astype(np.float32)
    ms = np.array([1, 1, 0, 1, 1, 0], bool)
    f = jax.jit(lambda s, t, ms: L.domain_adversarial_loss(s, t, source_mask=ms))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v.astype(np.float64)))  # noqa: E731
    ref = 0.5 * np.mean(-np.log(sig(s[ms]))) + 0.5 * np.mean(-np.log(1.0 - sig(t)))
    np.testing.assert_allclose(f(s, t, ms), ref, **F32)
    # [rows, 1] classifier outputs are accepted; gradient on a valid source logit is (σ(s) − 1) / (2 n_valid).
    g = jax.jit(jax.grad(lambda s: L.domain_adversarial_loss(s[:, None], t, source_mask=ms)))(s)
    np.testing.assert_allclose(g, np.where(ms, (sig(s) - 1.0) / (2 * ms.sum()), 0.0), **F32)
    both_empty = jax.jit(lambda s, t, ms, mt: L.domain_adversarial_loss(s, t, source_mask=ms, target_mask=mt))
    assert float(both_empty(s, t, np.zeros(6, bool), np.zeros(3, bool))) == 0.0


def test_registered_adversarial_term_is_the_domain_loss_on_classifier_logits():
    rng = np.random.default_rng(11)
    s = rng.normal(size=(6, 1)).astype(np.float32)  # [n, 1] classifier logits, as a model's "align" output
    t = rng.normal(size=4).astype(np.float32)
    ms, mt = np.array([1, 0, 1, 1, 1, 0], bool), np.array([1, 1, 0, 1], bool)
    d = jax.jit(lambda s, t, ms, mt: L.get_discrepancy("adversarial")(s, t, hs_mask=ms, ht_mask=mt))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v.astype(np.float64)))  # noqa: E731
    ref = 0.5 * np.mean(-np.log(sig(s[ms, 0]))) + 0.5 * np.mean(-np.log(1.0 - sig(t[mt])))
    np.testing.assert_allclose(d(s, t, ms, mt), ref, **F32)


def test_dann_lambda_schedule_matches_formula_and_jits():
    sched = L.dann_lambda_schedule(total_steps=200, gamma=10.0, max_value=0.5)
    steps = np.array([0, 1, 50, 100, 199, 200, 500])
    got = jax.jit(jax.vmap(sched))(jnp.asarray(steps))
    p = np.clip(steps / 200.0, 0.0, 1.0)
    np.testing.assert_allclose(got, 0.5 * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0), **F32)
    assert np.all(np.diff(np.asarray(got)) >= 0) and float(got[0]) == 0.0
    np.testing.assert_allclose(jax.jit(L.constant_schedule(0.25))(17), 0.25, **F32)
    warm = jax.jit(L.linear_warmup_schedule(warmup_steps=10, max_value=2.0, init_value=1.0))
    np.testing.assert_allclose(warm(jnp.array([0, 5, 10, 30])), [1.0, 1.5, 2.0, 2.0], **F32)
    np.testing.assert_allclose(L.linear_warmup_schedule(warmup_steps=0, max_value=3.0)(0), 3.0, **F32)


def test_combined_loss_total_and_parts_under_jit():
    f = jax.jit(
        lambda a, b, d, lam: L.combined_loss(
            {"source": a, "target": b}, d, lam=lam, weights={"source": 0.5, "target": 2.0}
        )
    )
    total, parts = f(1.0, 3.0, 0.25, 4.0)
    np.testing.assert_allclose(total, 0.5 * 1.0 + 2.0 * 3.0 + 4.0 * 0.25, **F32)
    expected = {
        "task/source": 1.0,
        "task/target": 3.0,
        "task": 6.5,
        "discrepancy": 0.25,
        "lam": 4.0,
        "weighted_discrepancy": 1.0,
        "total": 7.5,
    }
    assert set(parts) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(parts[k], v, err_msg=k, **F32)
    total, parts = L.combined_loss({"target": jnp.float32(2.0)}, None, lam=0.0)
    assert float(total) == 2.0 and float(parts["discrepancy"]) == 0.0


def test_bad_lambda_weights_and_schedule_options():
    with pytest.raises(ValueError, match=r"lam must be >= 0, got -0.1"):
        L.combined_loss({"t": 1.0}, 0.5, lam=-0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        L.combined_loss({"t": 1.0}, 0.5, lam=float("nan"))
    with pytest.raises(ValueError, match=r"weights\['t'\] must be >= 0"):
        L.combined_loss({"t": 1.0}, 0.5, lam=1.0, weights={"t": -1.0})
    with pytest.raises(ValueError, match=r"exactly the task_losses keys \['s', 't'\]"):
        L.combined_loss({"s": 1.0, "t": 1.0}, 0.5, lam=1.0, weights={"s": 1.0})
    with pytest.raises(ValueError, match=r"task_losses\['t'\] must be a scalar, got shape \(3,\)"):
        L.combined_loss({"t": jnp.ones(3)}, 0.5, lam=1.0)
    with pytest.raises(ValueError, match="max_value must be >= 0"):
        L.dann_lambda_schedule(total_steps=10, max_value=-1.0)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        L.dann_lambda_schedule(total_steps=0)
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative int"):
        L.linear_warmup_schedule(warmup_steps=-1)
    with pytest.raises(ValueError, match="value must be >= 0"):
        L.constant_schedule(-0.5)

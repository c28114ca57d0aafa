"""The vmapped stack (jaxrec.train.stack): S models in one program equal S separate ``train_step``s.

The reference for each model is the ordinary path: ``train.create_train_state`` with its key, the same optimizer
family with its learning rate injected (``optax.inject_hyperparams(optax.adam)(learning_rate=lr)``, built here,
not the stack's object), and ``jax.jit(train_step)`` on an :class:`Objective` built for that model's λ alone.

Tolerance: the stack runs ``train_step`` itself under ``vmap`` with the same optimizer code, so the only
difference is vmap's batching of the kernels (a dot over ``[S, B, D]`` may reassociate reductions): ``STACK_TOL``
= ``rtol=1e-5, atol=1e-6`` on parameters (O(0.1)) and metrics after 3 Adam steps, far below the effect of λ
itself (the models differ by more than 1e-3).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TinyCDR, assert_trees_close, bpr_tasks, fixed_batches

from jaxrec import models
from jaxrec import train as T

STACK_TOL = dict(rtol=1e-5, atol=1e-6)
LAMS = [0.0, 0.5, 2.0]
RATES = [1e-2, 2e-2, 5e-2]
SEEDS = [0, 1, 2]
STEPS = 3


class TinyDANN(nn.Module):
    """TinyCDR plus a domain classifier on gradient-reversed user representations (the "align" pair = logits)."""

    @nn.compact
    def __call__(self, batch, *, deterministic=True, grl_alpha=1.0):
        out = TinyCDR(dropout=0.1, name="cdr")(batch, deterministic=deterministic)
        hs, ht, hs_mask, ht_mask = out["align"]
        classifier = nn.Dense(1, name="classifier")
        logits = [classifier(models.gradient_reversal(h, grl_alpha)) for h in (hs, ht)]
        out["align"] = (logits[0], logits[1], hs_mask, ht_mask)
        return out


def _keys():
    """``[S]`` init keys and ``[S]`` step keys, split from each model's seed as ``fit`` splits its seed."""
    keys = jnp.stack([jax.random.split(jax.random.key(s)) for s in SEEDS])
    return keys[:, 0], keys[:, 1]


def _separate(model, objective_for, batches):
    """Each model trained alone with the ordinary jitted train_step; returns params and metrics per model."""
    init_keys, step_keys = _keys()
    params, metrics = [], []
    for s, (lam, lr) in enumerate(zip(LAMS, RATES)):
        tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
        state = T.create_train_state(init_keys[s], model, batches[0], tx)
        objective = objective_for(lam)
        step = jax.jit(lambda st, b, k, objective=objective: T.train_step(st, b, k, objective=objective))
        for b in batches:
            state, m = step(state, b, step_keys[s])
        params.append(state.params)
        metrics.append(m)
    return params, metrics


def _stacked(model, objective, batches, **step_kw):
    init_keys, step_keys = _keys()
    states = T.create_stacked_state(init_keys, model, batches[0], T.stack_optimizer("adam"), learning_rate=RATES)
    step = T.make_stacked_step(objective, **step_kw)
    for b in batches:
        states, metrics = step(states, b, step_keys, jnp.asarray(LAMS))
    return states, metrics, step


def _assert_equal_to_separate(states, metrics, ref_params, ref_metrics):
    for s in range(len(LAMS)):
        assert_trees_close(T.unstack(states.params, s), ref_params[s], **STACK_TOL)
        for name in ("loss", "task", "discrepancy", "lam", "grad_norm"):
            np.testing.assert_allclose(metrics[name][s], ref_metrics[s][name], err_msg=f"{name}[{s}]", **STACK_TOL)


@pytest.mark.parametrize("chunk", [None, 2])
def test_stacked_step_equals_separate_train_steps_with_lam_as_weight(ds, chunk):
    # chunk=2 with S=3: one vmapped group of 2, then the remaining model (both code paths of lax.map)
    batches = fixed_batches(ds, STEPS)
    model = TinyCDR(dropout=0.1)
    objective = T.Objective(bpr_tasks, discrepancy="mean_l2")
    states, metrics, _ = _stacked(model, objective, batches, chunk=chunk)
    assert metrics["loss"].shape == (3,) and states.step.tolist() == [STEPS] * 3
    ref_params, ref_metrics = _separate(
        model, lambda lam: T.Objective(bpr_tasks, discrepancy="mean_l2", lam=lam), batches
    )
    _assert_equal_to_separate(states, metrics, ref_params, ref_metrics)
    # λ is applied per model: the weight in each loss, and models 0 and 2 end up far apart
    np.testing.assert_allclose(metrics["lam"], LAMS, **STACK_TOL)
    weighted = np.asarray(LAMS) * metrics["discrepancy"]
    np.testing.assert_allclose(metrics["weighted_discrepancy"], weighted, **STACK_TOL)
    np.testing.assert_allclose(metrics["loss"][0], metrics["task"][0], **STACK_TOL)  # λ = 0: the task loss alone
    gap = jax.tree.map(lambda x: float(jnp.max(jnp.abs(x[0] - x[2]))), states.params)
    assert max(jax.tree.leaves(gap)) > 1e-3


def test_lam_as_reversal_equals_separate_adversarial_objectives(ds):
    batches = fixed_batches(ds, STEPS)
    model = TinyDANN()
    total = 10
    objective = T.Objective(bpr_tasks, **T.alignment("adversarial", 1.0, total_steps=total))
    bind = functools.partial(T.lam_as_reversal, total_steps=total)
    states, metrics, _ = _stacked(model, objective, batches, bind_lam=bind)

    def objective_for(lam):  # exactly what a recipe builds for one model
        return T.Objective(bpr_tasks, **T.alignment("adversarial", lam, total_steps=total))

    ref_params, ref_metrics = _separate(model, objective_for, batches)
    _assert_equal_to_separate(states, metrics, ref_params, ref_metrics)
    np.testing.assert_allclose(metrics["lam"], [1.0, 1.0, 1.0], **STACK_TOL)  # the loss weight stays 1
    # λ acts through the reversal strength: same classifier loss weight, different encoders
    tower = states.params["cdr"]["tower"]["kernel"]
    assert float(jnp.max(jnp.abs(tower[0] - tower[2]))) > 1e-4


def test_second_call_does_not_recompile(ds):
    batches = fixed_batches(ds, 2)
    traces = []

    def counted_tasks(outputs, batch):
        traces.append(1)  # Python side effect: runs once per trace
        return bpr_tasks(outputs, batch)

    init_keys, step_keys = _keys()
    model, tx = TinyCDR(), T.stack_optimizer("adam")
    step = T.make_stacked_step(T.Objective(counted_tasks, discrepancy="coral"), donate=False)
    states = T.create_stacked_state(init_keys, model, batches[0], tx, learning_rate=RATES)
    states, _ = step(states, batches[0], step_keys, jnp.asarray(LAMS))
    # new λ values, new states from new keys and rates, another batch of the same shapes: nothing retraces
    other = T.create_stacked_state(step_keys, model, batches[0], tx, learning_rate=[0.1, 0.2, 0.3])
    step(other, batches[1], init_keys, jnp.asarray([3.0, 2.0, 1.0]))
    step(states, batches[1], step_keys, jnp.asarray(LAMS))
    assert len(traces) == 1 and step._cache_size() == 1


def test_stack_errors():
    keys = jax.random.split(jax.random.key(0), 2)
    assert T.stack_optimizer("adam") is T.stack_optimizer("adam")  # cached: one static tx for every state
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; valid names: \['adagrad', 'adam'"):
        T.stack_optimizer("adamm")
    with pytest.raises(ValueError, match="no learning_rate in its state"):
        T.create_stacked_state(keys, None, {}, T.make_optimizer(T.OptimizerConfig()), learning_rate=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"keys \[S\] and learning_rate \[S\], got shapes \(2,\) and \(3,\)"):
        T.create_stacked_state(keys, None, {}, T.stack_optimizer(), learning_rate=[0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="typed PRNG keys"):
        T.create_stacked_state(jax.random.PRNGKey(0)[None], None, {}, T.stack_optimizer(), learning_rate=[0.1])
    with pytest.raises(ValueError, match="chunk=0 must be None or an int >= 1"):
        T.make_stacked_step(T.Objective(bpr_tasks), chunk=0)
    states = jax.tree.map(lambda x: jnp.stack([x, x]), T.TrainState.create(apply_fn=None, params={}, tx=optax.sgd(1)))
    step = T.make_stacked_step(T.Objective(bpr_tasks), donate=False)
    with pytest.raises(ValueError, match=r"step \(2,\), keys \(2,\), lam \(3,\)"):
        step(states, {}, keys, jnp.zeros(3))

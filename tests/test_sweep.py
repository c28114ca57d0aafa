"""Vectorized sweeps: the vmapped sweep equals a Python loop of ordinary train steps; shapes; errors; no retrace.

The reference for every equality test is the ordinary, non-vmapped path: ``train.create_train_state`` with a
plain ``train.OptimizerConfig`` (``optax.adam(lr)``, no injected hyper-parameters) and ``jax.jit(train.train_step)``
with the recipe's objective built for that one λ, fed the batch stream that ``sweep`` documents
(``multi_domain_batches`` with ``default_rng([config.seed, epoch])``), one configuration at a time.

Tolerance (float32, 24 Adam steps of lr 1e-2). Two things separate the sweep from the loop, neither a bug:
(1) the sweep's Adam takes its hyper-parameters (lr, b1, b2, eps) as arrays in its state
(``optax.inject_hyperparams``) while ``optax.adam(lr)`` compiles them in as constants, which XLA folds
differently: 1 ulp (~1e-7) after the first step; (2) vmap batches the kernels (a dot over ``[S, B, D]``), which
may reassociate reductions. Adam's ``m / (sqrt(v) + eps)`` does not shrink such a difference (it amplifies it
where a gradient is ~eps), so it grows with the steps: measured here, the largest parameter difference after 24
steps is ~1.5e-5 against ``optax.adam`` — of which vmap alone accounts for ~1e-6 (non-vmapped train_step with the
same injected optimizer vs the sweep; that vmap-only comparison is checked tightly, after 2 steps, in
``test_lower_level_step_vmaps_and_reuses_its_compilation``). Parameters are O(0.1) and one Adam step moves
them by up to 1e-2, so we assert ``atol=5e-5, rtol=1e-4`` on parameters and ``rtol=1e-5`` on the per-epoch mean
losses — far below the effect of the swept values themselves (models differ by > 1e-3), but not bit equality,
which neither vmap nor a change of optimizer implementation promises.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import batching, data, losses, methods
from jaxrec import sweep as sw
from jaxrec import train as tr

PARAM_RTOL, PARAM_ATOL = 1e-4, 5e-5  # see the module docstring
LOSS_RTOL = 1e-5
EPOCHS = 2
TOWER = ()  # the recipes' per-domain user towers off: the same sweep code, a smaller program to compile


@pytest.fixture(scope="module")
def ds():
    dataset, _ = data.synthetic(n_users=240, n_items=(50, 40), interactions_per_user=(8.0, 4.0), seed=3)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


def _config(method, **kw):
    return sw.sweep_config(
        method, dim=8, user_tower=TOWER, batch_size=128, align_size=64, n_negatives=2, progress=False, **kw
    )


def _stream(ds, config, epoch):
    """The documented batch stream, rebuilt independently of the sweep."""
    domains = ("source", "target")
    return list(
        batching.multi_domain_batches(
            {d: ds.interactions(d, "train") for d in domains},
            {d: config.batch_size for d in domains},
            rng=np.random.default_rng([config.seed, epoch]),
            n_negatives=config.n_negatives,
            samplers={d: batching.NegativeSampler(ds.n_items(d), seen=ds.seen(d, "train")) for d in domains},
        )
    )


def _loop_reference(ds, config, configs):
    """Trains each ``(lam, lr, seed)`` separately with the ordinary jitted train_step; returns params and losses."""
    streams = [_stream(ds, config, e) for e in range(EPOCHS)]
    adversarial = config.discrepancy == "adversarial"
    model = methods.SharedEmbeddingModel(
        ds.n_users,
        (ds.n_items("source"), ds.n_items("target")),
        ("source", "target"),
        config.dim,
        config.user_tower,
        adversarial,
        config.align_size,
    )
    total_steps = EPOCHS * len(streams[0])
    out_params, out_losses = [], []
    # create_train_state under one outer jit: its inner init is inlined, so one compilation serves every seed
    init = jax.jit(lambda key: tr.create_train_state(key, model, streams[0][0], tr.OptimizerConfig()).params)
    for lam, lr, seed in configs:
        init_key, step_key = jax.random.split(jax.random.key(seed))
        state = tr.create_train_state(
            init_key, model, streams[0][0], tr.OptimizerConfig(learning_rate=lr), params=init(init_key)
        )
        if adversarial:  # as methods.fit_embedding builds the dann objective
            ramp = losses.dann_lambda_schedule(total_steps=total_steps, max_value=max(lam, 1e-6))
            objective = methods.bpr_objective(
                config.l2, "adversarial", 1.0, model_kwargs=lambda step, ramp=ramp: {"grl_alpha": ramp(step)}
            )
        else:
            disc = (
                functools.partial(losses.mmd, **methods.MMD_OPTIONS)
                if config.discrepancy == "mmd"
                else config.discrepancy
            )
            objective = methods.bpr_objective(config.l2, disc, lam)
        step = jax.jit(lambda s, b, k, objective=objective: tr.train_step(s, b, k, objective=objective))
        epoch_losses = []
        for batches in streams:
            losses_e = []
            for batch in batches:
                state, metrics = step(state, batch, step_key)
                losses_e.append(float(metrics["loss"]))
            epoch_losses.append(np.mean(losses_e))
        out_params.append(jax.device_get(state.params))
        out_losses.append(epoch_losses)
    return out_params, np.asarray(out_losses).T  # [E, S]


def _assert_params_close(stacked, reference):
    for s, ref in enumerate(reference):
        got = jax.device_get(sw.unstack(stacked, s))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=PARAM_RTOL, atol=PARAM_ATOL), got, ref)


def test_lam_sweep_equals_loop_mmd(ds):
    config = _config("mmd")
    lams = [0.0, 0.5, 4.0]
    result = sw.sweep(ds, source="source", target="target", config=config, lam=lams, epochs=EPOCHS)

    # -- shapes and bookkeeping --
    assert result.lam.tolist() == lams
    assert result.learning_rate.tolist() == [config.learning_rate] * 3 and result.seed.tolist() == [0, 0, 0]
    for leaf in jax.tree.leaves(result.params):
        assert leaf.shape[0] == 3
    assert {"loss", "task", "task/source", "task/target", "discrepancy", "grad_norm"} <= set(result.history)
    for name, rows in result.history.items():
        assert rows.shape == (EPOCHS, 3), (name, rows.shape)
    np.testing.assert_allclose(result.history["lam"], np.broadcast_to(lams, (EPOCHS, 3)), rtol=1e-6)

    # -- equal to the loop --
    ref_params, ref_losses = _loop_reference(ds, config, [(lam, config.learning_rate, 0) for lam in lams])
    assert jax.tree.structure(sw.unstack(result.params, 0)) == jax.tree.structure(ref_params[0])
    _assert_params_close(result.params, ref_params)
    np.testing.assert_allclose(result.history["loss"], ref_losses, rtol=LOSS_RTOL)
    # λ really acts: the models differ by far more than the tolerance
    gap = jax.tree.map(lambda x: float(jnp.max(jnp.abs(x[0] - x[2]))), result.params)
    assert max(jax.tree.leaves(gap)) > 1e-3

    # -- evaluation on valid cold users, and the best index --
    assert result.valid is not None and result.valid["NDCG@10"].shape == (3,)
    assert np.all((result.valid["NDCG@10"] >= 0) & (result.valid["NDCG@10"] <= 1))
    assert result.best == int(np.argmax(result.valid["NDCG@10"]))
    table = sw.sweep_table(result)
    lines = table.splitlines()
    assert len(lines) == 4 and "NDCG@10" in lines[0]
    assert lines[1 + result.best].split()[0].endswith("*")


def test_learning_rate_and_seed_sweep_equals_loop_adversarial(ds):
    # dann: λ (shared, length 1) is the maximum of the gradient-reversal ramp; lr and seed vary per model
    config = _config("dann")
    rates, seeds = [3e-3, 1e-2, 3e-2], [0, 1, 2]
    result = sw.sweep(
        ds,
        source="source",
        target="target",
        config=config,
        lam=[0.5],
        learning_rate=rates,
        seed=seeds,
        epochs=EPOCHS,
    )
    assert result.lam.tolist() == [0.5] * 3
    np.testing.assert_allclose(result.learning_rate, rates)
    assert result.seed.tolist() == seeds
    assert "classifier" in str(jax.tree.structure(result.params))
    ref_params, ref_losses = _loop_reference(ds, config, list(zip([0.5] * 3, rates, seeds)))
    _assert_params_close(result.params, ref_params)
    np.testing.assert_allclose(result.history["loss"], ref_losses, rtol=LOSS_RTOL)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": [0.1, 1.0], "learning_rate": [1e-3, 1e-2, 1e-1]}, r"same length S .*'lam': 2, 'learning_rate': 3"),
        ({"lam": [0.1, 1.0, 3.0], "seed": [0, 1]}, r"'lam': 3, 'seed': 2"),
        ({"lam": []}, "lam must not be empty"),
        ({"lam": [-1.0]}, r"lam values must be >= 0, got \[-1.0\]"),
        ({"learning_rate": [0.0]}, "learning_rate values must be > 0"),
        ({"epochs": 0}, "epochs=0"),
    ],
)
def test_bad_sweep_values_raise(ds, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sw.sweep(ds, source="source", target="target", config=_config("mmd"), **kwargs)


def test_other_errors(ds):
    with pytest.raises(ValueError, match=r"lam sweep needs an alignment term"):
        sw.sweep(ds, source="source", target="target", config=_config("cmf"), lam=[0.1, 1.0])
    with pytest.raises(TypeError, match="seed must be integers"):
        sw.sweep(ds, source="source", target="target", config=_config("mmd"), seed=[0.5])
    with pytest.raises(ValueError, match=r"cannot be swept; valid methods: \['cmf', 'mmd', 'coral', 'dann'\]"):
        sw.sweep_config("popularity")
    with pytest.raises(ValueError, match=r"no option\(s\) \['epoch'\]"):
        sw.sweep_config("mmd", epoch=3)
    with pytest.raises(data.DataError, match="source and target must differ"):
        sw.sweep(ds, source="target", target="target", config=_config("mmd"))
    with pytest.raises(ValueError, match="no learning_rate in its state"):
        sw.create_sweep_state(
            jax.random.split(jax.random.key(0), 2),
            None,
            {},
            tr.make_optimizer(tr.OptimizerConfig()),
            learning_rate=[0.1, 0.2],
        )
    with pytest.raises(ValueError, match=r"keys \[S\] and learning_rate \[S\], got shapes \(2,\) and \(3,\)"):
        sw.create_sweep_state(
            jax.random.split(jax.random.key(0), 2), None, {}, sw.sweep_optimizer(), learning_rate=[0.1, 0.2, 0.3]
        )


def test_second_sweep_compiles_nothing_and_a_diverging_model_is_isolated(ds):
    # The same recipe and S as test_lam_sweep_equals_loop_mmd: after one call, a sweep over new λ values and new
    # seeds (same S, same shapes) reuses every compiled program — init, step, evaluation — and compiles nothing.
    config = _config("mmd")
    first = sw.sweep(ds, source="source", target="target", config=config, lam=[0.1, 1.0, 0.0], epochs=1)
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        # model 1 diverges (λ = inf: an infinite loss, NaN parameters); models 0 and 2 must not notice
        second = sw.sweep(
            ds, source="source", target="target", config=config, lam=[2.0, np.inf, 0.0], seed=[3, 4, 0], epochs=1
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert not np.isclose(first.history["loss"][0, 0], second.history["loss"][0, 0])  # new λ and seed: new model
    # model 2 has the same (λ, lr, seed) in both calls: the same numbers, whatever its neighbours do
    np.testing.assert_allclose(second.history["loss"][:, 2], first.history["loss"][:, 2], rtol=1e-6)
    assert not np.isfinite(second.history["loss"][0, 1]) and np.isnan(second.valid["NDCG@10"][1])
    assert np.isfinite(second.valid["NDCG@10"][[0, 2]]).all() and second.best in (0, 2)
    assert "nan" in sw.sweep_table(second).splitlines()[2]


def test_lower_level_step_vmaps_and_reuses_its_compilation(ds):
    # make_sweep_step over a hand-built objective (CORAL, λ as the weight); a λ of 0 must equal the task-only loss.
    # chunk=2 with S=3: one vmapped group of 2, then the remaining model (both code paths of lax.map).
    config = _config("coral")
    batches = _stream(ds, config, 0)[:2]
    model = methods.SharedEmbeddingModel(ds.n_users, (50, 40), ("source", "target"), 8, TOWER, False, 64)
    keys = jax.random.split(jax.random.key(0), 3)
    states = sw.create_sweep_state(keys, model, batches[0], sw.sweep_optimizer(), learning_rate=[1e-2, 1e-2, 3e-2])
    step = sw.make_sweep_step(methods.bpr_objective(1e-4, "coral", 0.0), chunk=2, donate=False)
    lam = jnp.array([0.0, 1.0, 10.0])
    new, metrics = step(states, batches[0], keys, lam)
    assert metrics["loss"].shape == (3,) and new.step.tolist() == [1, 1, 1]
    np.testing.assert_allclose(metrics["loss"][0], metrics["task"][0], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"][2], metrics["task"][2] + 10.0 * metrics["discrepancy"][2], rtol=1e-5)
    new, _ = step(new, batches[1], keys, lam)
    assert step._cache_size() == 1
    # model 2 (the remainder group of lax.map) equals the non-vmapped train_step on its own unstacked state,
    # with the same injected Adam: no optimizer difference, so a tight tolerance
    objective = methods.bpr_objective(1e-4, "coral", 10.0)
    one = jax.jit(lambda st, b, k: tr.train_step(st, b, k, objective=objective))
    ref = sw.unstack(states, 2)
    for b in batches:
        ref, _ = one(ref, b, keys[2])
    check = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    jax.tree.map(check, sw.unstack(new.params, 2), ref.params)
    with pytest.raises(ValueError, match=r"step \(3,\), keys \(3,\), lam \(2,\)"):
        step(new, batches[0], keys, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="chunk=0 must be None or an int >= 1"):
        sw.make_sweep_step(methods.bpr_objective(1e-4, "coral", 0.0), chunk=0)


def test_early_stopping_stops_each_model_where_it_would_stop_alone():
    # scripted valid NDCG@10 per epoch for 3 models, patience 2 (the recipes' rule: stop after 2 evaluations
    # without a strictly better score). Model 0 stalls after epoch 1 and recovers at epoch 4, after it stopped:
    # that later epoch must not be kept. Model 1 improves up to epoch 3. Model 2 is never finite.
    from types import SimpleNamespace

    from jaxrec.sweep.driver import _early_stopping

    nan = np.nan
    scores = iter([[0.10, 0.20, nan], [0.05, 0.30, nan], [0.10, 0.40, nan], [0.50, 0.35, nan], [0.50, 0.35, nan]])

    def valid_of(params, finite):
        row = np.asarray(next(scores))
        return {"NDCG@10": row, "Recall@10": row}

    after_epoch, state = _early_stopping(valid_of, 3, patience=2, deadline=None)
    stops = [after_epoch(e, SimpleNamespace(params={"w": jnp.asarray([e, e, nan])})) for e in range(5)]
    assert state["epoch"].tolist() == [1, 3, 0]  # model 0 keeps epoch 1, not its later 0.50
    np.testing.assert_allclose(state["valid"]["NDCG@10"][:2], [0.10, 0.40])
    np.testing.assert_allclose(np.asarray(state["params"]["w"][:2]), [0.0, 2.0])
    # the sweep goes on while model 1 can still improve and stops once every model has exhausted its patience
    assert stops == [False, False, False, False, True]

"""Training engine: optimizers, the objective, the pure step, alignment, pmap / mesh data parallelism.

References are independent of the code under test: the step's loss is recomputed in numpy float64 from the batch
and the parameters; ``make_optimizer`` is compared with an Optax chain built here by hand; the data-parallel steps
are compared with one device.

``TinyCDR``, ``bpr_tasks``, ``make_batches``, ``PARALLEL_TOL`` and the ``ds`` fixture live in ``conftest.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    PARALLEL_TOL,
    TRACES,
    TinyCDR,
    assert_trees_close,
    bpr_tasks,
    fixed_batches,
)

from jaxrec import batching, losses
from jaxrec import train as T

F32 = dict(rtol=1e-5, atol=1e-6)  # float32 against a float64 reference


# ---------------------------------------------------------------------------------------------- optimizers


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; valid names: \['adagrad', 'adam'"):
        T.OptimizerConfig(name="adamm")
    with pytest.raises(ValueError, match="weight_decay=0.1 needs a decoupled-decay optimizer"):
        T.OptimizerConfig(name="sgd", weight_decay=0.1)


@pytest.mark.parametrize(
    "cfg",
    [
        T.OptimizerConfig(),
        T.OptimizerConfig(name="adamw", weight_decay=1e-4),
        T.OptimizerConfig(name="adagrad", learning_rate=0.1),
        T.OptimizerConfig(name="sgd", warmup_steps=2, decay_steps=10, clip_norm=1.0),
    ],
)
def test_optimizers_reduce_the_loss(ds, cfg):
    batch = fixed_batches(ds, 1)[0]
    objective = T.Objective(bpr_tasks)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, cfg)
    step = T.make_train_step(objective)
    first = None
    for _ in range(30):
        state, m = step(state, batch, jax.random.key(1))
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < first


def _warmup_cosine(peak, warmup, decay):
    """The documented learning rate: linear 0 → peak over ``warmup`` steps, then cosine to 0 over ``decay``."""

    def lr(count):
        count = jnp.asarray(count, jnp.float32)
        ramp = peak * count / max(warmup, 1)
        cosine = peak * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(count - warmup, 0, decay) / decay))
        return jnp.where(count < warmup, ramp, cosine)

    return lr


@pytest.mark.parametrize(
    "cfg, reference",
    [
        # warm-up + cosine decay + clipping, with plain SGD: updates are -lr(t) · clip(g)
        (
            T.OptimizerConfig(name="sgd", learning_rate=0.1, warmup_steps=2, decay_steps=5, clip_norm=0.5),
            optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(_warmup_cosine(0.1, 2, 5))),
        ),
        # cosine decay from the first step (no warm-up)
        (
            T.OptimizerConfig(name="adam", learning_rate=0.01, decay_steps=4),
            optax.adam(_warmup_cosine(0.01, 0, 4)),
        ),
        # warm-up only: constant after it
        (
            T.OptimizerConfig(name="sgd", learning_rate=0.1, warmup_steps=3),
            optax.sgd(lambda count: 0.1 * jnp.minimum(count / 3.0, 1.0)),
        ),
        # decoupled weight decay: Adam's direction, plus wd · params, times -lr; gradients clipped first
        (
            T.OptimizerConfig(name="adamw", learning_rate=0.01, weight_decay=0.1, clip_norm=1.0),
            optax.chain(
                optax.clip_by_global_norm(1.0),
                optax.scale_by_adam(),
                optax.add_decayed_weights(0.1),
                optax.scale(-0.01),
            ),
        ),
    ],
    ids=["sgd-warmup-cosine-clip", "adam-cosine", "sgd-warmup", "adamw-decay-clip"],
)
def test_make_optimizer_equals_an_optax_chain_built_by_hand(cfg, reference):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=2), jnp.float32)}
    tx = T.make_optimizer(cfg)
    state, ref_state = tx.init(params), reference.init(params)
    p, ref_p = params, params
    for t in range(8):
        scale = 3.0 if t % 2 else 0.1  # every other gradient is large enough to be clipped
        grads = {k: jnp.asarray(scale * rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        updates, state = tx.update(grads, state, p)
        ref_updates, ref_state = reference.update(grads, ref_state, ref_p)
        assert_trees_close(updates, ref_updates, rtol=1e-5, atol=1e-7)
        p, ref_p = optax.apply_updates(p, updates), optax.apply_updates(ref_p, ref_updates)


def test_skip_nonfinite_skips_the_update_and_counts_it():
    tx = T.make_optimizer(T.OptimizerConfig(name="sgd", learning_rate=0.1, skip_nonfinite=True))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])
    assert int(state.notfinite_count) == 1
    updates, state = tx.update({"w": jnp.array([1.0, 2.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1, -0.2], **F32)


# ---------------------------------------------------------------------------------------------- objective


def test_unknown_discrepancy_raises_on_construction():
    with pytest.raises(ValueError, match="unknown discrepancy 'mmdd'"):
        T.Objective(bpr_tasks, discrepancy="mmdd")
    with pytest.raises(ValueError, match="lam=-1"):
        T.Objective(bpr_tasks, lam=-1.0)
    with pytest.raises(ValueError, match=r"'mmd' has no option\(s\) \['sigma'\]; its options are \['bandwidths'"):
        T.Objective(bpr_tasks, discrepancy="mmd", discrepancy_options={"sigma": 1.0})
    with pytest.raises(ValueError, match="need a registered discrepancy name, got None"):
        T.Objective(bpr_tasks, discrepancy_options={"median_rows": 128})
    with pytest.raises(ValueError, match="need a registered discrepancy name"):
        T.Objective(bpr_tasks, discrepancy=losses.coral, discrepancy_options={"median_rows": 128})
    with pytest.raises(TypeError, match=r"discrepancy_options\['bandwidths'\] must be hashable"):
        T.Objective(bpr_tasks, discrepancy="mmd", discrepancy_options={"bandwidths": {1.0}})


def test_objective_options_are_frozen_hashable_and_a_static_jit_argument():
    kw = dict(discrepancy="mmd", lam=1.0)
    a = T.Objective(bpr_tasks, **kw, discrepancy_options={"median_scales": [0.5, 1.0, 2.0], "median_rows": 128})
    b = T.Objective(bpr_tasks, **kw, discrepancy_options={"median_rows": 128, "median_scales": np.array([0.5, 1, 2])})
    assert a.discrepancy_options == {"median_scales": (0.5, 1.0, 2.0), "median_rows": 128}
    assert a == b and hash(a) == hash(b)
    assert T.Objective(bpr_tasks, **kw, discrepancy_options={}) == T.Objective(bpr_tasks, **kw)
    with pytest.raises(ValueError, match="immutable"):
        a.discrepancy_options["median_rows"] = 64
    traces = []

    @functools.partial(jax.jit, static_argnums=1)
    def discrepancy(h, objective):
        traces.append(objective)
        return T.resolve_discrepancy(objective.discrepancy, objective.discrepancy_options)(h, h + 1.0)

    h = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
    assert float(discrepancy(h, a)) == float(discrepancy(h, b))
    assert len(traces) == 1  # equal objectives share one compilation


def test_named_options_equal_a_partial(ds):
    """``discrepancy="mmd"`` with options is the same objective as the partial the mmd recipe builds."""
    batch = fixed_batches(ds, 1)[0]
    options = {"median_scales": (0.5, 1.0, 2.0), "median_rows": 16}
    named = T.Objective(bpr_tasks, discrepancy="mmd", discrepancy_options=options, lam=0.7)
    partial = T.Objective(bpr_tasks, discrepancy=functools.partial(losses.mmd, **options), lam=0.7)
    plain = T.Objective(bpr_tasks, discrepancy="mmd", lam=0.7)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, T.OptimizerConfig())
    m_named, m_partial, m_plain = (
        T.make_train_step(o, donate=False)(state, batch, jax.random.key(0))[1] for o in (named, partial, plain)
    )
    assert float(m_named["discrepancy"]) == float(m_partial["discrepancy"])
    assert float(m_named["discrepancy"]) != float(m_plain["discrepancy"])  # the options really act


def test_alignment_writes_the_adversarial_schedule_once():
    # a weight: λ·D with the named term, nothing passed to the model
    kw = T.alignment("mmd", 0.5, options={"median_rows": 128})
    assert kw == {"discrepancy": "mmd", "discrepancy_options": {"median_rows": 128}, "lam": 0.5, "model_kwargs": None}
    assert T.alignment("coral", 0.5, total_steps=100)["lam"] == 0.5
    # adversarial: loss weight 1, λ is the maximum of the DANN ramp of grl_alpha
    total = 200
    steps = np.array([0, 1, 50, 100, 199, 200, 500])
    p = np.clip(steps / total, 0.0, 1.0)
    for lam in (0.3, 0.0):
        kw = T.alignment("adversarial", lam, total_steps=total)
        assert (kw["discrepancy"], kw["lam"], kw["discrepancy_options"]) == ("adversarial", 1.0, None)
        alpha = jax.vmap(lambda s: kw["model_kwargs"](s)["grl_alpha"])(jnp.asarray(steps))
        peak = max(lam, 1e-6)
        np.testing.assert_allclose(alpha, peak * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0), **F32)
        # bit-equal to the ramp the recipes built by hand: dann_lambda_schedule(max_value=max(λ, 1e-6))
        by_hand = losses.dann_lambda_schedule(total_steps=total, max_value=max(lam, 1e-6))
        np.testing.assert_array_equal(alpha, jax.vmap(by_hand)(jnp.asarray(steps)))

        # a traced λ (one model of a vmapped stack): bit-equal to the ramp the sweep built by hand on a traced λ,
        # and equal to the Python-float ramp up to XLA's constant folding
        def both(lam_t):
            ramp = T.alignment("adversarial", lam_t, total_steps=total)["model_kwargs"]
            by_hand = losses.dann_lambda_schedule(total_steps=total, max_value=jnp.maximum(lam_t, 1e-6))
            return jax.vmap(lambda s: (ramp(s)["grl_alpha"], by_hand(s)))(jnp.asarray(steps))

        traced, traced_by_hand = jax.jit(both)(jnp.float32(lam))
        np.testing.assert_array_equal(traced, traced_by_hand)
        np.testing.assert_allclose(traced, alpha, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="needs total_steps"):
        T.alignment("adversarial", 0.1)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        T.alignment("adversarial", 0.1, total_steps=0)
    with pytest.raises(TypeError, match="not a schedule"):
        T.alignment("adversarial", losses.constant_schedule(0.1), total_steps=10)
    objective = T.Objective(bpr_tasks, **T.alignment("adversarial", 0.3, total_steps=total))
    assert objective.lam == 1.0 and T.resolve_discrepancy(objective.discrepancy) is losses.adversarial_discrepancy


# ---------------------------------------------------------------------------------------------- the step


def _np_step_loss(params, batch, lam):
    """The combined loss of TinyCDR + bpr_tasks + λ·mean_l2, in numpy float64 from the batch and parameters."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    parts, reps = {}, []
    for name in ("source", "target"):
        b = batch[name]
        u = p["users"]["embedding"][b["users"]] @ p["tower"]["kernel"] + p["tower"]["bias"]
        items = p[f"items_{name}"]["embedding"]
        pos = np.sum(u * items[b["items"]], -1)
        neg = np.sum(u * items[b["negatives"][:, 0]], -1)
        mask = np.asarray(b["mask"], bool)
        parts[f"task/{name}"] = np.log1p(np.exp(neg - pos))[mask].mean()  # -log σ(pos - neg)
        reps.append(u[mask])
    diff = reps[0].mean(0) - reps[1].mean(0)
    parts["discrepancy"] = 0.5 * diff @ diff
    parts["loss"] = parts["task/source"] + parts["task/target"] + lam * parts["discrepancy"]
    return parts


def test_train_step_loss_matches_numpy(ds):
    batch = fixed_batches(ds, 6)[5]
    assert not batch["source"]["mask"].all()  # padding rows, which the reference excludes by slicing
    objective = T.Objective(bpr_tasks, discrepancy="mean_l2", lam=0.5)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, T.OptimizerConfig())
    _, m = T.make_train_step(objective, donate=False)(state, batch, jax.random.key(0))
    ref = _np_step_loss(state.params, batch, 0.5)
    for key in ("loss", "task/source", "task/target", "discrepancy"):
        np.testing.assert_allclose(float(m[key]), ref[key], err_msg=key, **F32)
    np.testing.assert_allclose(float(m["lam"]), 0.5, **F32)


def test_train_step_metrics_and_combined_loss(ds):
    batch = fixed_batches(ds, 1)[0]
    objective = T.Objective(bpr_tasks, discrepancy="mmd", lam=0.5)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, T.OptimizerConfig())
    _, m = T.make_train_step(objective, donate=False)(state, batch, jax.random.key(0))
    for key in ("loss", "grad_norm", "task/source", "task/target", "discrepancy", "lam", "total"):
        assert key in m
    # the same discrepancy computed outside the step
    out = state.apply_fn({"params": state.params}, batch, deterministic=True)
    d = losses.mmd(*out["align"][:2], hs_mask=out["align"][2], ht_mask=out["align"][3])
    np.testing.assert_allclose(float(m["discrepancy"]), float(d), rtol=1e-4, atol=1e-6)


def test_no_recompilation_after_first_step(ds):
    batches = fixed_batches(ds, 4)
    objective = T.Objective(bpr_tasks, discrepancy="coral", lam=losses.dann_lambda_schedule(total_steps=10))
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batches[0], T.OptimizerConfig())
    step = T.make_train_step(objective)
    before = TRACES["n"]
    for b in batches:
        state, _ = step(state, b, jax.random.key(0))
    assert TRACES["n"] - before == 1


def test_alternating_weights(ds):
    batch = fixed_batches(ds, 1)[0]
    objective = T.Objective(bpr_tasks, weights=T.alternating_weights(("source", "target")))
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, T.OptimizerConfig())
    step = T.make_train_step(objective)
    state, m0 = step(state, batch, jax.random.key(0))
    state, m1 = step(state, batch, jax.random.key(0))
    np.testing.assert_allclose(float(m0["task"]), float(m0["task/source"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["task"]), float(m1["task/target"]), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- data parallelism


def _run(step, state, batches, place):
    for b in batches:
        state, m = step(state, place(b), jax.random.key(3))
    return state, m


@pytest.mark.parametrize("discrepancy", [None, "mmd"])
def test_pmap_equals_single_device_emulation(ds, discrepancy):
    """pmap on 8 devices == the same per-shard computation vmapped on one device (any loss, incl. MMD)."""
    assert jax.local_device_count() == 8
    batches = fixed_batches(ds, 4)
    objective = T.Objective(bpr_tasks, discrepancy=discrepancy, lam=0.3)
    model = TinyCDR(dropout=0.2)
    state = T.create_train_state(jax.random.key(0), model, batches[0], T.OptimizerConfig(learning_rate=0.05))
    p_state, p_m = _run(
        T.make_train_step(objective, parallel="pmap"), T.replicate(state), batches, lambda b: batching.shard(b, 8)
    )
    emulated = jax.jit(
        jax.vmap(
            lambda s, b, r: T.train_step(s, b, r, objective=objective, axis_name=T.AXIS),
            in_axes=(None, 0, None),
            axis_name=T.AXIS,
        )
    )
    e_state = state
    for b in batches:
        e_state, e_m = emulated(e_state, batching.shard(b, 8), jax.random.key(3))
        e_state = T.unreplicate(e_state)  # identical across the mapped axis after pmean
    assert_trees_close(T.unreplicate(p_state.params), e_state.params, **PARALLEL_TOL)
    np.testing.assert_allclose(float(p_m["loss"][0]), float(e_m["loss"][0]), **PARALLEL_TOL)


def test_pmap_equals_one_device_on_the_global_batch(ds):
    """A per-example task loss on full shards: 8 devices give one device's parameters."""
    batches = [b for b in fixed_batches(ds, 6) if b["source"]["mask"].all() and b["target"]["mask"].all()][:4]
    objective = T.Objective(bpr_tasks)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batches[0], T.OptimizerConfig(learning_rate=0.05))
    single, s_m = _run(T.make_train_step(objective, donate=False), state, batches, lambda b: b)
    place = T.placement("pmap")
    multi, p_m = _run(T.make_train_step(objective, parallel="pmap"), place.put_state(state), batches, place.put_batch)
    assert_trees_close(single.params, place.take_back(multi.params), **PARALLEL_TOL)
    np.testing.assert_allclose(float(s_m["loss"]), float(place.take_back(p_m)["loss"]), **PARALLEL_TOL)


@pytest.mark.parametrize("discrepancy", [None, "mmd"])
def test_mesh_equals_one_device(ds, discrepancy):
    """jit + NamedSharding over 8 devices computes the global-batch loss: equal to one device."""
    batches = fixed_batches(ds, 4)
    objective = T.Objective(bpr_tasks, discrepancy=discrepancy, lam=0.3)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batches[0], T.OptimizerConfig(learning_rate=0.05))
    single, s_m = _run(T.make_train_step(objective, donate=False), state, batches, lambda b: b)
    mesh = T.make_mesh()
    sharded, m = _run(
        T.make_train_step(objective, parallel="mesh", mesh=mesh),
        T.put_replicated(state, mesh),
        batches,
        lambda b: T.put_batch(b, mesh),
    )
    assert_trees_close(single.params, sharded.params, **PARALLEL_TOL)
    np.testing.assert_allclose(float(s_m["loss"]), float(m["loss"]), **PARALLEL_TOL)
    assert len(m["loss"].sharding.device_set) == 8


def test_placement_by_parallel():
    tree = {"w": np.arange(6.0).reshape(3, 2)}
    batch = {"x": np.arange(16.0).reshape(16, 1)}
    none = T.placement("none")
    assert none.mesh is None and none.put_state(tree) is tree and none.put_batch(batch) is batch
    pmap = T.placement("pmap")
    assert pmap.put_state(tree)["w"].shape == (8, 3, 2) and pmap.put_batch(batch)["x"].shape == (8, 2, 1)
    np.testing.assert_array_equal(pmap.take_back(pmap.put_state(tree))["w"], tree["w"])
    mesh = T.placement("mesh")
    assert mesh.mesh.axis_names == (T.MESH_AXIS,) and mesh.mesh.size == 8
    placed = mesh.put_batch(batch)["x"]
    assert placed.shape == (16, 1) and len(placed.sharding.device_set) == 8
    np.testing.assert_array_equal(mesh.take_back(mesh.put_state(tree))["w"], tree["w"])
    with pytest.raises(ValueError, match="parallel='tpu'; expected 'none', 'pmap' or 'mesh'"):
        T.placement("tpu")

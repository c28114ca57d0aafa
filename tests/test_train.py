"""Training engine: optimizers, the pure step, pmap / mesh data parallelism, fit, checkpoints, NaN guard."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import batching, data, losses
from jaxrec import train as T

N_USERS, N_ITEMS = 60, (30, 20)


class TinyCDR(nn.Module):
    """Shared user embeddings, per-domain items, BPR scores; aligns user representations of the two domains."""

    dim: int = 8
    dropout: float = 0.0

    @nn.compact
    def __call__(self, batch, *, deterministic=True, poison=False):
        users = nn.Embed(N_USERS, self.dim, name="users")
        tower = nn.Dense(self.dim, name="tower")
        out, reps = {}, []
        for k, name in enumerate(("source", "target")):
            b = batch[name]
            items = nn.Embed(N_ITEMS[k], self.dim, name=f"items_{name}")
            u = tower(users(b["users"]))
            u = nn.Dropout(self.dropout)(u, deterministic=deterministic)
            pos = jnp.sum(u * items(b["items"]), -1)
            neg = jnp.sum(u * items(b["negatives"][:, 0]), -1)
            out[name] = (pos, neg)
            reps.append(u)
        out["align"] = (reps[0], reps[1], batch["source"]["mask"], batch["target"]["mask"])
        if poison is not False:
            out["source"] = (out["source"][0] * jnp.where(poison, jnp.nan, 1.0), out["source"][1])
        return out


TRACES = {"n": 0}


def _bpr_tasks(outputs, batch):
    TRACES["n"] += 1  # Python side effect: runs once per trace
    return {
        name: losses.mean_where(losses.bpr(*outputs[name]), where=batch[name]["mask"]) for name in ("source", "target")
    }


@pytest.fixture(scope="module")
def ds():
    dataset, _ = data.synthetic(
        n_users=N_USERS, n_items=N_ITEMS, interactions_per_user=(8.0, 5.0), min_interactions=2, seed=0
    )
    return dataset


def _batches(ds, sizes=(64, 32)):
    inters = {n: ds.interactions(n) for n in ("source", "target")}
    n_items = {n: ds.n_items(n) for n in ("source", "target")}

    def make(rng):
        return batching.multi_domain_batches(
            inters, dict(zip(("source", "target"), sizes)), rng=rng, n_items=n_items, n_negatives=1
        )

    return make


def _fixed_batches(ds, n=6, sizes=(64, 32)):
    return list(_batches(ds, sizes)(np.random.default_rng(0)))[:n]


def _close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


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
    batch = _fixed_batches(ds, 1)[0]
    objective = T.Objective(_bpr_tasks)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, cfg)
    step = T.make_train_step(objective)
    first = None
    for _ in range(30):
        state, m = step(state, batch, jax.random.key(1))
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < first


def test_unknown_discrepancy_raises_on_construction():
    with pytest.raises(ValueError, match="unknown discrepancy 'mmdd'"):
        T.Objective(_bpr_tasks, discrepancy="mmdd")
    with pytest.raises(ValueError, match="lam=-1"):
        T.Objective(_bpr_tasks, lam=-1.0)


# ---------------------------------------------------------------------------------------------- the step


def test_train_step_metrics_and_combined_loss(ds):
    batch = _fixed_batches(ds, 1)[0]
    objective = T.Objective(_bpr_tasks, discrepancy="mmd", lam=0.5)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batch, T.OptimizerConfig())
    _, m = T.make_train_step(objective, donate=False)(state, batch, jax.random.key(0))
    for key in ("loss", "grad_norm", "task/source", "task/target", "discrepancy", "lam", "total"):
        assert key in m
    expected = float(m["task/source"] + m["task/target"] + 0.5 * m["discrepancy"])
    np.testing.assert_allclose(float(m["loss"]), expected, rtol=1e-6)
    # the same number computed outside the step
    out = state.apply_fn({"params": state.params}, batch, deterministic=True)
    d = losses.mmd(*out["align"][:2], hs_mask=out["align"][2], ht_mask=out["align"][3])
    np.testing.assert_allclose(float(m["discrepancy"]), float(d), rtol=1e-4, atol=1e-6)


def test_no_recompilation_after_first_step(ds):
    batches = _fixed_batches(ds, 4)
    objective = T.Objective(_bpr_tasks, discrepancy="coral", lam=losses.dann_lambda_schedule(total_steps=10))
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batches[0], T.OptimizerConfig())
    step = T.make_train_step(objective)
    before = TRACES["n"]
    for b in batches:
        state, _ = step(state, b, jax.random.key(0))
    assert TRACES["n"] - before == 1


def test_alternating_weights(ds):
    batch = _fixed_batches(ds, 1)[0]
    objective = T.Objective(_bpr_tasks, weights=T.alternating_weights(("source", "target")))
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
    batches = _fixed_batches(ds, 4)
    objective = T.Objective(_bpr_tasks, discrepancy=discrepancy, lam=0.3)
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
    _close(T.unreplicate(p_state.params), e_state.params)
    np.testing.assert_allclose(float(p_m["loss"][0]), float(e_m["loss"][0]), rtol=1e-5)


def test_pmap_equals_one_device_on_the_global_batch(ds):
    """A per-example task loss on full shards: 8 devices give one device's parameters (to 1e-5)."""
    batches = [b for b in _fixed_batches(ds, 6) if b["source"]["mask"].all() and b["target"]["mask"].all()][:4]
    objective = T.Objective(_bpr_tasks)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batches[0], T.OptimizerConfig(learning_rate=0.05))
    single, _ = _run(T.make_train_step(objective, donate=False), state, batches, lambda b: b)
    multi, _ = _run(
        T.make_train_step(objective, parallel="pmap"), T.replicate(state), batches, lambda b: batching.shard(b, 8)
    )
    _close(single.params, T.unreplicate(multi.params))


@pytest.mark.parametrize("discrepancy", [None, "mmd"])
def test_mesh_equals_one_device(ds, discrepancy):
    """jit + NamedSharding over 8 devices computes the global-batch loss: equal to one device."""
    batches = _fixed_batches(ds, 4)
    objective = T.Objective(_bpr_tasks, discrepancy=discrepancy, lam=0.3)
    state = T.create_train_state(jax.random.key(0), TinyCDR(), batches[0], T.OptimizerConfig(learning_rate=0.05))
    single, _ = _run(T.make_train_step(objective, donate=False), state, batches, lambda b: b)
    mesh = T.make_mesh()
    sharded, m = _run(
        T.make_train_step(objective, parallel="mesh", mesh=mesh),
        T.put_replicated(state, mesh),
        batches,
        lambda b: T.put_batch(b, mesh),
    )
    _close(single.params, sharded.params)
    assert len(m["loss"].sharding.device_set) == 8


# ---------------------------------------------------------------------------------------------- fit


def _task(ds, **kw):
    objective = kw.pop("objective", T.Objective(_bpr_tasks, discrepancy="mmd", lam=0.1))
    return T.Task(model=kw.pop("model", TinyCDR(dropout=0.1)), objective=objective, batches=_batches(ds), **kw)


def _cfg(**kw):
    base = dict(epochs=2, progress=False, log_every=3, optimizer=T.OptimizerConfig(learning_rate=0.02))
    base.update(kw)
    return T.TrainConfig(**base)


def test_fit_is_deterministic(ds):
    a = T.fit(_cfg(), _task(ds))
    b = T.fit(_cfg(), _task(ds))
    assert a.history == b.history
    _close(a.params, b.params, tol=0)
    c = T.fit(_cfg(seed=1), _task(ds))
    assert a.history != c.history
    assert a.history[-1]["loss"] < a.history[0]["loss"]


@pytest.mark.parametrize("parallel", ["none", "pmap"])
def test_resume_is_bit_identical(ds, tmp_path, parallel):
    evaluate = lambda p: {"norm": float(jnp.sum(p["users"]["embedding"] ** 2))}
    full = T.fit(_cfg(epochs=3, parallel=parallel), _task(ds, evaluate=evaluate))
    steps_per_epoch = sum(1 for _ in _batches(ds)(np.random.default_rng(0)))
    ckpt = str(tmp_path / "ckpt")
    interrupted = T.fit(
        _cfg(epochs=3, parallel=parallel, checkpoint_dir=ckpt, checkpoint_every=2, max_steps=steps_per_epoch + 3),
        _task(ds, evaluate=evaluate),
    )
    assert int(interrupted.state.step) == steps_per_epoch + 3
    resumed = T.fit(
        _cfg(epochs=3, parallel=parallel, checkpoint_dir=ckpt, checkpoint_every=2, resume=True),
        _task(ds, evaluate=evaluate),
    )
    _close(full.params, resumed.params, tol=0)
    assert [r for r in full.history if "eval/norm" in r] == [r for r in resumed.history if "eval/norm" in r]


def test_corrupt_or_incompatible_checkpoint_is_a_clear_error(ds, tmp_path):
    ckpt = tmp_path / "ckpt"
    T.fit(_cfg(epochs=1, checkpoint_dir=str(ckpt)), _task(ds))
    with pytest.raises(ValueError, match="cannot be restored into this model"):
        T.fit(_cfg(epochs=2, checkpoint_dir=str(ckpt), resume=True), _task(ds, model=TinyCDR(dim=4)))
    for f in ckpt.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "meta" not in str(f):
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or incompatible"):
        T.fit(_cfg(epochs=2, checkpoint_dir=str(ckpt), resume=True), _task(ds))


def test_nan_guard_names_the_step_and_writes_no_checkpoint_after_it(ds, tmp_path):
    objective = T.Objective(_bpr_tasks, model_kwargs=lambda step: {"poison": step >= 4})
    ckpt = tmp_path / "ckpt"
    with pytest.raises(T.NonFiniteError, match=r"step 5: \[.*'loss'.*'task/source'"):
        T.fit(_cfg(checkpoint_dir=str(ckpt), checkpoint_every=2, log_every=100), _task(ds, objective=objective))
    saved = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert saved and max(saved) <= 4


def test_nan_policy_skip_counts_and_keeps_params_finite(ds):
    objective = T.Objective(_bpr_tasks, model_kwargs=lambda step: {"poison": step % 5 == 4})
    result = T.fit(_cfg(nan_policy="skip"), _task(ds, objective=objective))
    assert sum(r.get("skipped", 0) for r in result.history) >= 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.params))


def test_early_stopping_keeps_best_params(ds, tmp_path):
    calls = []

    def evaluate(params):
        calls.append(params)
        return {"ndcg": [0.5, 0.7, 0.6, 0.4, 0.3, 0.2][len(calls) - 1]}

    log = tmp_path / "log.jsonl"
    result = T.fit(
        _cfg(epochs=20, eval_every=2, early_stopping_metric="ndcg", patience=2, jsonl=str(log)),
        _task(ds, evaluate=evaluate),
    )
    assert len(calls) == 4  # best at the 2nd evaluation, two without improvement, stop
    assert result.best["eval/ndcg"] == 0.7
    _close(result.best_params, calls[1], tol=0)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records == result.history
    with pytest.raises(KeyError, match="early_stopping_metric='recall'"):
        T.fit(_cfg(early_stopping_metric="recall"), _task(ds, evaluate=evaluate))


def test_run_phases_pretrain_then_finetune(ds):
    source_only = T.Objective(lambda o, b: {"source": _bpr_tasks(o, b)["source"]})
    target_only = T.Objective(lambda o, b: {"target": _bpr_tasks(o, b)["target"]})
    results = T.run_phases(
        [
            (_cfg(epochs=1), _task(ds, objective=source_only, name="pretrain")),
            (
                _cfg(epochs=1, optimizer=T.OptimizerConfig(name="sgd", learning_rate=0.1)),
                _task(ds, objective=target_only, name="finetune"),
            ),
        ]
    )
    pre, fine = results
    # the fine-tuning phase starts from the pretrained parameters: source item table untouched by target loss
    np.testing.assert_array_equal(
        np.asarray(pre.params["items_source"]["embedding"]), np.asarray(fine.params["items_source"]["embedding"])
    )
    assert not np.array_equal(
        np.asarray(pre.params["items_target"]["embedding"]), np.asarray(fine.params["items_target"]["embedding"])
    )


def test_config_validation():
    with pytest.raises(ValueError, match="parallel='tpu'"):
        T.TrainConfig(parallel="tpu")
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        T.TrainConfig(resume=True)
    with pytest.raises(ValueError, match="nan_policy='ignore'"):
        T.TrainConfig(nan_policy="ignore")

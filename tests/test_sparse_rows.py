"""Row-sparse (lazy) table updates: equal to the dense step where they must be, a lazy Adam reference otherwise."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import N_ITEMS, N_USERS, PARALLEL_TOL, TinyCDR, assert_trees_close, bpr_tasks, fixed_batches

from jaxrec import losses, train
from jaxrec.train import sparse


@pytest.fixture(scope="module")
def batches(ds):
    return fixed_batches(ds, n=3)


def _state(model, batch, tx, seed=0):
    return train.create_train_state(jax.random.key(seed), model, batch, tx)


def _run(step, state, batches):
    for batch in batches:
        state, metrics = step(state, batch, jax.random.key(1))
    return state, metrics


def test_sgd_equals_the_dense_step(batches):
    objective = train.Objective(bpr_tasks)
    state = _state(TinyCDR(), batches[0], optax.sgd(0.5))
    dense, m_dense = _run(train.make_train_step(objective, donate=False), state, batches)
    lazy, m_lazy = _run(train.make_train_step(objective, donate=False, sparse_min_rows=1), state, batches)
    assert_trees_close(lazy.params, dense.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_lazy["loss"], m_dense["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_lazy["grad_norm"], m_dense["grad_norm"], rtol=1e-5)


def _lazy_adam_reference(table, mu, nu, grad_rows, rows, count, lr, b1=0.9, b2=0.999, eps=1e-8):
    """numpy: Adam on ``rows`` only (moments and parameters of the other rows untouched)."""
    table, mu, nu = table.copy(), mu.copy(), nu.copy()
    mu[rows] = b1 * mu[rows] + (1 - b1) * grad_rows
    nu[rows] = b2 * nu[rows] + (1 - b2) * grad_rows**2
    m_hat = mu[rows] / (1 - b1**count)
    v_hat = nu[rows] / (1 - b2**count)
    table[rows] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return table, mu, nu


def test_adam_is_lazy_on_the_rows_a_batch_looks_up(batches):
    objective = train.Objective(bpr_tasks)
    state = _state(TinyCDR(), batches[0], optax.adam(0.01))
    state, _ = _run(train.make_train_step(objective, donate=False), state, batches[:1])  # non-zero moments
    batch = batches[1]

    # the gradient of the user table from the dense loss: only the looked-up rows are non-zero
    def loss(params):
        outputs = state.apply_fn({"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.key(0)})
        return objective.loss(outputs, batch, state.step)[0]

    grad = np.asarray(jax.grad(loss)(state.params)["users"]["embedding"])
    rows = np.unique(np.concatenate([np.ravel(batch[d]["users"]) for d in ("source", "target")]))
    rows = rows[(rows >= 0) & (rows < N_USERS)]
    adam = state.opt_state[0]
    ref_table, ref_mu, ref_nu = _lazy_adam_reference(
        np.asarray(state.params["users"]["embedding"]),
        np.asarray(adam.mu["users"]["embedding"]),
        np.asarray(adam.nu["users"]["embedding"]),
        grad[rows],
        rows,
        count=2,
        lr=0.01,
    )
    new, _ = train.make_train_step(objective, donate=False, sparse_min_rows=N_USERS)(state, batch, jax.random.key(1))
    np.testing.assert_allclose(new.params["users"]["embedding"], ref_table, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new.opt_state[0].mu["users"]["embedding"], ref_mu, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(new.opt_state[0].nu["users"]["embedding"], ref_nu, rtol=1e-5, atol=1e-12)
    untouched = np.setdiff1d(np.arange(N_USERS), rows)
    np.testing.assert_array_equal(new.params["users"]["embedding"][untouched], ref_table[untouched])
    # the item tables (fewer rows than min_rows) took the dense Adam step: equal to the dense step's
    dense, _ = train.make_train_step(objective, donate=False)(state, batch, jax.random.key(1))
    for name in ("items_source", "items_target", "tower"):
        assert_trees_close(new.params[name], dense.params[name], rtol=1e-5, atol=1e-7)
    assert int(new.opt_state[0].count) == int(dense.opt_state[0].count) == 2


class WholeTable(nn.Module):
    """Users looked up; the item table also read whole (a full softmax), so it must stay dense."""

    @nn.compact
    def __call__(self, batch, *, deterministic=True):
        users = nn.Embed(N_USERS, 8, name="users")
        items = nn.Embed(N_ITEMS[1], 8, name="items")
        u = users(batch["target"]["users"])
        logits = items.attend(u)
        return {"logits": logits, "pos": items(batch["target"]["items"])}


def _softmax_loss(outputs, batch):
    target = batch["target"]
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], target["items"])
    return {"target": losses.mean_where(ce, where=target["mask"]) + 0.0 * jnp.sum(outputs["pos"])}


def test_a_table_read_whole_keeps_the_dense_update(batches):
    objective = train.Objective(_softmax_loss)
    state = _state(WholeTable(), batches[0], optax.adam(0.01))
    state, _ = _run(train.make_train_step(objective, donate=False), state, batches[:1])  # non-zero moments
    dense, _ = train.make_train_step(objective, donate=False)(state, batches[1], jax.random.key(1))
    lazy, _ = train.make_train_step(objective, donate=False, sparse_min_rows=1)(state, batches[1], jax.random.key(1))
    assert_trees_close(lazy.params["items"], dense.params["items"], rtol=1e-5, atol=1e-7)
    # the user table went lazy: the rows this batch does not look up keep their values (dense Adam moves them)
    never = np.setdiff1d(np.arange(N_USERS), np.ravel(batches[1]["target"]["users"]))
    before = state.params["users"]["embedding"][never]
    np.testing.assert_array_equal(lazy.params["users"]["embedding"][never], before)
    assert not np.allclose(dense.params["users"]["embedding"][never], before)


def test_ids_are_read_as_embed_reads_them():
    rows = sparse.unique_rows([jnp.array([3, -1, 3, 9, 12, -20])], 10)
    np.testing.assert_array_equal(rows, [3, 9, 10, 10, 10, 10])  # -1 → 9; 12 and -20 out of range → padding


def test_mesh_sharded_rows_equal_one_device(batches):
    objective = train.Objective(bpr_tasks, discrepancy="mean_l2", lam=0.5)
    model = TinyCDR()
    state = _state(model, batches[0], optax.adam(0.01))
    one, _ = _run(train.make_train_step(objective, donate=False, sparse_min_rows=1), state, batches)
    place = train.placement("mesh", mesh=train.make_mesh(jax.devices()[:2]), shard_rows=True)  # rows divide by 2
    step = train.make_train_step(
        objective,
        parallel="mesh",
        mesh=place.mesh,
        state_sharding=place.state_sharding(state),
        sparse_min_rows=1,
    )
    placed = place.put_state(state)
    for batch in batches:
        placed, _ = step(placed, place.put_batch(batch), jax.random.key(1))
    assert_trees_close(placed.params, one.params, **PARALLEL_TOL)


def test_pmap_is_refused():
    with pytest.raises(ValueError, match="sparse_min_rows needs parallel='none' or 'mesh'"):
        train.make_train_step(train.Objective(bpr_tasks), parallel="pmap", sparse_min_rows=1)


def test_fit_uses_the_lazy_step(ds):
    from conftest import make_batches

    task = train.Task(TinyCDR(), train.Objective(bpr_tasks), make_batches(ds), name="lazy")
    sgd = train.OptimizerConfig(name="sgd", learning_rate=0.5)
    runs = {
        rows: train.fit(train.TrainConfig(epochs=1, optimizer=sgd, sparse_min_rows=rows, progress=False), task)
        for rows in (None, 1)
    }
    assert_trees_close(runs[1].params, runs[None].params, rtol=1e-4, atol=1e-6)
    adam = train.OptimizerConfig(learning_rate=0.05)
    lazy = train.fit(train.TrainConfig(epochs=1, optimizer=adam, sparse_min_rows=1, progress=False), task)
    dense = train.fit(train.TrainConfig(epochs=1, optimizer=adam, sparse_min_rows=None, progress=False), task)
    assert not np.allclose(lazy.params["users"]["embedding"], dense.params["users"]["embedding"])

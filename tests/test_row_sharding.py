"""Embedding tables sharded on their rows over the 8 fake devices: the same model as replicated tables, to
``PARALLEL_TOL``; padding rows never reach a score; the option is checked."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PARALLEL_TOL, assert_trees_close
from jax.sharding import PartitionSpec

from jaxrec import data, methods, models
from jaxrec import train as T
from jaxrec.losses import bpr, mean_where

N_USERS, N_ITEMS = 61, (29, 20)  # none a multiple of 8: every table is padded


class PaddedCDR(nn.Module):
    """BPR scores over a :class:`CrossDomainEmbedding` whose tables are padded to ``row_multiple`` rows."""

    row_multiple: int = 1

    @nn.compact
    def __call__(self, batch, *, deterministic=True):
        embed = models.CrossDomainEmbedding(N_USERS, N_ITEMS, 8, row_multiple=self.row_multiple)
        if self.is_initializing():
            embed.create_tables()
        out = {}
        for k, name in enumerate(("source", "target")):
            b = batch[name]
            u, i = embed(b["users"], b["items"], k)
            n = embed.items(b["negatives"][:, 0], k)
            out[name] = (jnp.sum(u * i, -1), jnp.sum(u * n, -1))
        return out


def _tasks(outputs, batch):
    return {d: mean_where(bpr(*outputs[d]), where=batch[d]["mask"]) for d in ("source", "target")}


def _batches(n=4, size=32):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        b = {}
        for k, name in enumerate(("source", "target")):
            b[name] = {
                "users": rng.integers(0, N_USERS, size).astype(np.int32),
                "items": rng.integers(0, N_ITEMS[k], size).astype(np.int32),
                "negatives": rng.integers(0, N_ITEMS[k], (size, 1)).astype(np.int32),
                "mask": np.arange(size) < size - 3,
            }
        out.append(b)
    return out


def _unpad(params):
    """The tables cut to their logical rows (``CrossDomainEmbedding``'s padding dropped)."""
    rows = {"user_table": N_USERS, "items_0": N_ITEMS[0], "items_1": N_ITEMS[1]}
    return {k: {"embedding": v["embedding"][: rows[k]]} for k, v in params["CrossDomainEmbedding_0"].items()}


def test_padded_tables_hold_the_unpadded_values_and_padding_is_never_scored():
    ids = jnp.array([0, 5, N_ITEMS[0] - 1, -1])
    plain = models.CrossDomainEmbedding(N_USERS, N_ITEMS, 8)
    padded = models.CrossDomainEmbedding(N_USERS, N_ITEMS, 8, row_multiple=8)
    p0 = plain.init(jax.random.key(0), ids, ids, 0)["params"]
    p1 = padded.init(jax.random.key(0), ids, ids, 0)["params"]
    assert p1["user_table"]["embedding"].shape == (64, 8) and p1["items_0"]["embedding"].shape == (32, 8)
    for name in p0:
        n = p0[name]["embedding"].shape[0]
        np.testing.assert_array_equal(p1[name]["embedding"][:n], p0[name]["embedding"])
        assert not np.asarray(p1[name]["embedding"][n:]).any()
    for method, args in ((None, (ids, ids, 0)), ("item_table", (0,)), ("item_table", (1,))):
        fn = None if method is None else getattr(models.CrossDomainEmbedding, method)
        a = plain.apply({"params": p0}, *args, method=fn)
        b = padded.apply({"params": p1}, *args, method=fn)
        assert_trees_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="row_multiple must be a positive int"):
        models.CrossDomainEmbedding(N_USERS, N_ITEMS, 8, row_multiple=0)


def test_row_sharded_step_equals_replicated_and_one_device():
    assert jax.device_count() == 8
    batches = _batches()
    objective = T.Objective(_tasks)
    model = PaddedCDR(row_multiple=8)
    state = T.create_train_state(jax.random.key(0), model, batches[0], T.OptimizerConfig(learning_rate=0.05))
    results = {}
    for name, place in (
        ("none", T.placement("none")),
        ("replicated", T.placement("mesh")),
        ("rows", T.placement("mesh", shard_rows=True)),
    ):
        sharding = None if place.state_sharding is None else place.state_sharding(state)
        step = T.make_train_step(
            objective, parallel=place.parallel, mesh=place.mesh, donate=False, state_sharding=sharding
        )
        s = place.put_state(state)
        for b in batches:
            s, m = step(s, place.put_batch(b), jax.random.key(1))
        results[name] = (s, m)
    rows_state = results["rows"][0]
    # every table, and Adam's moments of it, is sharded on its rows: each device holds 1/8 of them
    tables = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(rows_state)
        if jax.tree_util.keystr(path).endswith("['embedding']")
    ]
    assert len(tables) == 9  # 3 tables x (params, mu, nu)
    for path, leaf in tables:
        assert leaf.sharding.spec == PartitionSpec(T.MESH_AXIS, None), path
        assert leaf.addressable_shards[0].data.shape == (leaf.shape[0] // 8, 8)
    replicated_leaf = results["replicated"][0].params["CrossDomainEmbedding_0"]["user_table"]["embedding"]
    assert replicated_leaf.addressable_shards[0].data.shape == replicated_leaf.shape
    for name in ("none", "replicated"):
        assert_trees_close(_unpad(results[name][0].params), _unpad(rows_state.params), **PARALLEL_TOL)
        np.testing.assert_allclose(float(results[name][1]["loss"]), float(results["rows"][1]["loss"]), **PARALLEL_TOL)
    # the padding rows are never looked up: they stay at zero, in the parameters and in Adam's moments
    for _, leaf in tables:
        n = {64: N_USERS, 32: N_ITEMS[0], 24: N_ITEMS[1]}[leaf.shape[0]]
        assert not np.asarray(leaf[n:]).any()


def test_row_sharding_is_checked():
    state = {"users": {"embedding": jnp.zeros((60, 4))}, "dense": {"kernel": jnp.zeros((60, 4))}}
    with pytest.raises(ValueError, match=r"cannot shard the rows of \['users'\]\['embedding'\] \(shape \(60, 4\)\) "):
        T.row_shardings(state, T.make_mesh())
    ok = T.put_row_sharded(
        {"users": {"embedding": jnp.zeros((64, 4))}, "dense": {"kernel": jnp.zeros((60, 4))}}, T.make_mesh()
    )
    assert ok["users"]["embedding"].sharding.spec == PartitionSpec(T.MESH_AXIS, None)
    assert ok["dense"]["kernel"].sharding.spec == PartitionSpec()
    with pytest.raises(ValueError, match="shard_rows=True needs parallel='mesh'"):
        T.placement("pmap", shard_rows=True)
    with pytest.raises(ValueError, match="shard_rows=True needs parallel='mesh'"):
        T.TrainConfig(shard_rows=True)
    with pytest.raises(ValueError, match="EmbeddingConfig.shard_rows=True needs parallel='mesh'"):
        methods.EmbeddingConfig(shard_rows=True, parallel="none")


@pytest.fixture(scope="module")
def tiny():
    dataset, _ = data.synthetic(n_users=301, n_items=(61, 43), interactions_per_user=(8.0, 4.0), seed=1)
    return data.cold_start_split(dataset, "source", "target", fraction=0.25, seed=0)


@pytest.mark.parametrize("name", ["cmf", "mmd"])
def test_recipes_with_row_sharded_tables_equal_replicated(tiny, name):
    kw = dict(epochs=1, progress=False, dim=8, batch_size=64, patience=5, parallel="mesh")
    if name == "mmd":
        kw |= dict(user_tower=(8,), align_size=32)
    users = np.arange(tiny.n_users, dtype=np.int32)
    out = {}
    for shard_rows in (False, True):
        trained = methods.run(name, tiny, source="source", target="target", shard_rows=shard_rows, **kw)
        assert trained.config.shard_rows == shard_rows
        scorer = trained.scorers["target"]
        assert scorer.items.shape[0] == tiny.n_items("target")  # padding rows are not scored
        out[shard_rows] = (trained, np.asarray(scorer.users_fn(users)) @ np.asarray(scorer.items).T)
    table = out[True][0].params["embed"]["user_table"]["embedding"]
    assert table.shape[0] == 304 and table.sharding.spec == PartitionSpec(T.MESH_AXIS, None)
    np.testing.assert_allclose(out[True][1], out[False][1], **PARALLEL_TOL)
    np.testing.assert_allclose(
        np.asarray(table)[: tiny.n_users], out[False][0].params["embed"]["user_table"]["embedding"], **PARALLEL_TOL
    )

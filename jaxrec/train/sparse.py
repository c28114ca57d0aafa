"""Row-sparse (lazy) updates of large embedding tables: a train step whose cost follows the rows a batch touches.

A dense step on a model with a table of ``N`` rows costs ``O(N · D)`` per step whatever the batch: the gradient
of a lookup is scattered into an ``[N, D]`` array, and the optimizer reads and writes every row of the table and
of its moments. An epoch has ``O(interactions / B)`` steps and ``N`` grows with the data, so an epoch costs
``O(interactions · N)``. :func:`sparse_train_step` computes the same combined loss but updates, for every large
table, only the rows the batch looks up:

1. **Which rows.** The model runs once under :func:`flax.linen.intercept_methods`, recording the ids given to
   each ``flax.linen.Embed`` (only the ids are used, so the compiler drops the rest of that pass). Per table,
   ``rows = unique(ids)`` (``[M]``, ``M`` = the number of ids looked up, padded with the out-of-range id ``N``).
2. **A loss over the rows.** The model runs again with every lookup of a sparse table answered from the gathered
   rows ``table[rows]`` (``[M, D]``), so the gradient is ``[M, D]``.
3. **A lazy optimizer step.** The optimizer state is gathered at ``rows`` wherever a leaf mirrors the table
   (Adam's moments), ``tx.update`` runs on the gathered rows and the dense parameters, and the new rows of the
   table and of its moments are scattered back.

A table is sparse when it has at least ``min_rows`` rows and the model reaches it only through
``Embed.__call__``. One that is also read whole (``Embed.attend``, a full-catalogue score through
``.embedding``) is found by tracing (its parameter is still used after step 2) and keeps the dense update.

The result equals the dense step for optimizers that act row by row without state (SGD): a row outside the
batch has a zero gradient. With moments (Adam) it is the "lazy" variant: untouched rows and their moments stay
as they are, where the dense step would keep moving them with the decaying moments; the step count, learning-rate
schedule and global-norm clipping are the dense step's. Optimizers with per-tensor statistics (LAMB's trust ratio)
see the gathered rows only. ``pmap`` is not supported (each device would gather different rows); ``jit`` and the
mesh path (with tables replicated or row-sharded) are.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from flax.linen.dtypes import promote_dtype
from jax.interpreters import partial_eval as pe

from jaxrec.train.objective import Objective

#: Tables with at least this many rows get row-sparse updates by default (:class:`jaxrec.train.TrainConfig`).
SPARSE_MIN_ROWS = 2**16

Path = tuple[str, ...]


def _is_lookup(context) -> bool:
    return isinstance(context.module, nn.Embed) and context.method_name == "__call__"


def record_lookups(apply_fn, params: Any, *args, **kwargs) -> dict[Path, list[jax.Array]]:
    """The ids given to each ``flax.linen.Embed`` during ``apply_fn({"params": params}, *args, **kwargs)``.

    Returns:
      ``{parameter path of the table (ending in "embedding"): [ids arrays, in call order]}``.
    """
    store: dict[Path, list[jax.Array]] = {}

    def interceptor(next_fun, call_args, call_kwargs, context):
        if _is_lookup(context):
            store.setdefault(tuple(context.module.path) + ("embedding",), []).append(jnp.asarray(call_args[0]))
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(interceptor):
        apply_fn({"params": params}, *args, **kwargs)
    return store


def unique_rows(ids: list[jax.Array], num_rows: int) -> jax.Array:
    """The sorted distinct rows ``[M]`` that ``ids`` look up (``M`` = their total size), padded with ``num_rows``.

    Negative ids count from the end (as ``jnp.take`` reads them); ids outside ``[-num_rows, num_rows)`` look up
    nothing and become padding.
    """
    flat = jnp.concatenate([jnp.ravel(_normalized(x, num_rows)) for x in ids])
    return jnp.unique(flat, size=flat.shape[0], fill_value=num_rows)


def _normalized(ids: jax.Array, num_rows: int) -> jax.Array:
    """``ids`` with negative ones counted from the end; out-of-range ones → ``num_rows``."""
    ids = jnp.where(ids < 0, ids + num_rows, ids)
    return jnp.where((ids >= 0) & (ids < num_rows), ids, num_rows).astype(jnp.int32)


def _row_lookups(tables: dict[Path, tuple[jax.Array, jax.Array]]):
    """An interceptor that answers ``Embed.__call__`` of the tables in ``tables`` (``{path: (rows [M], sub [M, D])}``)
    from ``sub``, as the full table would: ``sub[position of id in rows]``, NaN for out-of-range ids."""

    def interceptor(next_fun, call_args, call_kwargs, context):
        if _is_lookup(context):
            path = tuple(context.module.path) + ("embedding",)
            if path in tables:
                ids = jnp.asarray(call_args[0])
                if not jnp.issubdtype(ids.dtype, jnp.integer):
                    raise ValueError(f"Input type must be an integer or unsigned integer, got {ids.dtype}")
                rows, sub = tables[path]
                (sub,) = promote_dtype(sub, dtype=context.module.dtype, inexact=False)
                local = jnp.searchsorted(rows, _normalized(ids, context.module.num_embeddings))
                return jnp.take(sub, local, axis=0, mode="fill", fill_value=jnp.nan)
        return next_fun(*call_args, **call_kwargs)

    return interceptor


def _unused(fn, tables: dict[Path, jax.Array]) -> set[Path]:
    """The keys of ``tables`` whose values ``fn(tables)`` does not use (after dead-code elimination)."""
    keys = list(tables)
    closed = jax.make_jaxpr(lambda values: fn(dict(zip(keys, values))))([tables[k] for k in keys])
    jaxpr, used_inputs = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return {k for k, used in zip(keys, used_inputs) if not used}


def _path_keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def _mirrors(path, leaf, tables: dict[Path, jax.Array]) -> Path | None:
    """The table that an optimizer-state leaf mirrors (same path suffix and shape), or None."""
    keys = _path_keys(path)
    for table_path, table in tables.items():
        n = len(table_path)
        if keys[-n:] == table_path and jnp.shape(leaf) == jnp.shape(table):
            return table_path
    return None


def sparse_train_step(
    state, batch: Any, rng: jax.Array, *, objective: Objective, min_rows: int = SPARSE_MIN_ROWS
) -> tuple[Any, dict[str, jax.Array]]:
    """:func:`jaxrec.train.train_step` with row-sparse updates of the tables of at least ``min_rows`` rows.

    Args:
      state: the current :class:`jaxrec.train.TrainState`.
      batch: the model's input, as the objective expects it.
      rng: a PRNG key for dropout (folded with the step, as the dense step does).
      objective: the task losses and the discrepancy term.
      min_rows: tables (2-D ``embedding`` parameters of ``flax.linen.Embed``) with at least this many rows that
        the model reaches only through lookups are updated row by row (see the module docstring).

    Returns:
      ``(state, metrics)``, as :func:`jaxrec.train.train_step`.
    """
    rng = jax.random.fold_in(rng, state.step)
    extra = dict(objective.model_kwargs(state.step)) if objective.model_kwargs is not None else {}
    call = {"deterministic": False, "rngs": {"dropout": rng}, **extra}
    flat = traverse_util.flatten_dict(state.params)

    # 1. which rows each large table's lookups reach
    looked_up = record_lookups(state.apply_fn, state.params, batch, **call)
    candidates = {p: flat[p] for p in looked_up if p in flat and jnp.ndim(flat[p]) == 2 and len(flat[p]) >= min_rows}
    rows = {p: unique_rows(looked_up[p], len(candidates[p])) for p in candidates}

    def gather(table, p):
        return table.at[rows[p]].get(mode="fill", fill_value=0)

    def loss_fn(dense: dict, subs: dict, tables: dict):
        params = traverse_util.unflatten_dict({**dense, **tables})
        with nn.intercept_methods(_row_lookups({p: (rows[p], subs[p]) for p in subs})):
            outputs = state.apply_fn({"params": params}, batch, **call)
        return objective.loss(outputs, batch, state.step)

    # 2. the tables also read whole stay dense
    sparse: set[Path] = set()
    if candidates:
        rest = {p: v for p, v in flat.items() if p not in candidates}
        subs = {p: gather(candidates[p], p) for p in candidates}
        sparse = _unused(lambda tables: loss_fn(rest, subs, tables)[0], candidates)
    tables = {p: jax.lax.stop_gradient(flat[p]) for p in sparse}
    dense = {p: v for p, v in flat.items() if p not in sparse}
    subs = {p: gather(flat[p], p) for p in sparse}
    (loss, parts), (g_dense, g_subs) = jax.value_and_grad(
        lambda d, s: loss_fn(d, s, tables), argnums=(0, 1), has_aux=True
    )(dense, subs)

    # 3. the optimizer on the gathered rows and the dense parameters; the rows scattered back
    def mirrored(path, leaf):
        return _mirrors(path, leaf, {p: flat[p] for p in sparse})

    sub_grads = traverse_util.unflatten_dict({**g_dense, **g_subs})
    sub_state = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf if (p := mirrored(path, leaf)) is None else gather(leaf, p), state.opt_state
    )
    updates, new_sub_state = state.tx.update(sub_grads, sub_state, traverse_util.unflatten_dict({**dense, **subs}))
    updates = traverse_util.flatten_dict(updates)
    params = {
        p: v.at[rows[p]].add(updates[p], mode="drop") if p in sparse else optax.apply_updates(v, updates[p])
        for p, v in flat.items()
    }
    opt_state = jax.tree_util.tree_map_with_path(
        lambda path, old, new: new if (p := mirrored(path, old)) is None else old.at[rows[p]].set(new, mode="drop"),
        state.opt_state,
        new_sub_state,
    )
    new_state = state.replace(step=state.step + 1, params=traverse_util.unflatten_dict(params), opt_state=opt_state)
    return new_state, dict(parts, loss=loss, grad_norm=optax.tree.norm(sub_grads))

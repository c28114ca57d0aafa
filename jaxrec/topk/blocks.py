"""The ``"dense"`` and ``"scan"`` kernels on one query block, the pieces every kernel shares, and the query
blocking that maps a kernel over all queries; :func:`run_topk`, the host-side call of a jitted top-k kernel.

A kernel on one query block takes ``q [Qb, d]`` (prepared by :func:`scores.prepare`), items ``x [N, d]``,
``bias float32[N] | None`` and ``exclude int32[Qb, m] | None`` (``-1`` padded) and returns ``(scores
float32[Qb, k], ids int32[Qb, k])`` before the query offset: sorted by score descending, equal scores by lower
id, ``(-inf, -1)`` where no item is left. Item chunks are ``[C, d]``; a running top-``K`` list is
``vals float32[Qb, K]``, ``ids int32[Qb, K]``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrec.topk.scores import NEG_INF, dot_qx


def padded_tail(x: jax.Array, bias: jax.Array | None, lo: int, stop: int, multiple: int):
    """Item rows ``[lo, stop)`` padded to a multiple of ``multiple`` rows.

    Returns ``(x_tail [T, d], bias_tail float32[T])``; padding rows are zero and score ``-inf`` via the bias.
    """
    rows = stop - lo
    padded = -(-rows // multiple) * multiple
    xt = jnp.pad(x[lo:stop], ((0, padded - rows), (0, 0)))
    bt = jnp.zeros((rows,), jnp.float32) if bias is None else bias[lo:stop]
    return xt, jnp.pad(bt, (0, padded - rows), constant_values=NEG_INF)


def chunk_at(x: jax.Array, bias: jax.Array | None, lo: jax.Array, chunk: int):
    """Item rows ``[lo, lo + chunk)``: ``(x_chunk [C, d], bias_chunk float32[C] | None)``; ``lo`` may be traced."""
    xc = lax.dynamic_slice_in_dim(x, lo, chunk, axis=0)
    bc = None if bias is None else lax.dynamic_slice_in_dim(bias, lo, chunk, axis=0)
    return xc, bc


def drop_excluded(vals: jax.Array, ids: jax.Array, exclude: jax.Array | None) -> jax.Array:
    """``vals [Qb, L]`` with ``-inf`` where ``ids [Qb, L]`` is listed in ``exclude [Qb, m]`` (or is ``-1``)."""
    vals = jnp.where(ids >= 0, vals, NEG_INF)
    if exclude is None or exclude.shape[1] == 0:
        return vals
    hit = jnp.any(ids[:, :, None] == exclude[:, None, :], axis=2)
    return jnp.where(hit, NEG_INF, vals)


def finish(vals: jax.Array, ids: jax.Array, exclude: jax.Array | None, k: int):
    """Top-``k`` of a running list ``vals/ids [Qb, K]`` sorted by (score desc, id asc), minus exclusions."""
    vals = drop_excluded(vals, ids, exclude)
    if vals.shape[1] == k and exclude is None:
        return vals, jnp.where(vals > NEG_INF, ids, -1)
    v, pos = lax.top_k(vals, k)  # ties keep list order, i.e. lower id first
    i = jnp.take_along_axis(ids, pos, axis=1)
    return v, jnp.where(v > NEG_INF, i, -1)


def merge_topk(vals: jax.Array, ids: jax.Array, new_vals: jax.Array, new_ids: jax.Array, kk: int):
    """Running top-``kk`` of ``vals/ids [Qb, K]`` and a later (higher-id) block ``new_vals/new_ids [Qb, C]``."""
    v, pos = lax.top_k(jnp.concatenate([vals, new_vals], axis=1), kk)
    return v, jnp.take_along_axis(jnp.concatenate([ids, new_ids], axis=1), pos, axis=1)


def dense_block(q, x, bias, exclude, *, k: int, kk: int):
    """The whole score block ``[Qb, N]``, then one ``lax.top_k`` of ``kk`` and the exclusions dropped."""
    s = dot_qx(q, x)
    if bias is not None:
        s = s + bias[None, :]
    v, i = lax.top_k(s, kk)
    return finish(v, i.astype(jnp.int32), exclude, k)


def scan_block(q, x, bias, tail, exclude, *, k: int, kk: int, chunk: int, select: Callable | None = None):
    """Streams ``chunk``-row item blocks, merging scores into a running top-``kk`` (``select`` may replace the
    per-chunk pre-selection, e.g. with ``approx_max_k``). ``tail`` is ``padded_tail(x, bias, n_full * chunk, N,
    chunk)`` (computed once, outside the query-block loop) or ``None`` when ``chunk`` divides ``N``."""
    n = x.shape[0]
    qb = q.shape[0]
    arange = jnp.arange(chunk, dtype=jnp.int32)

    def absorb(run, s, lo):
        ids = lo + arange
        if select is not None:
            s, pos = select(s)
            ids = jnp.take_along_axis(jnp.broadcast_to(ids, (qb, chunk)), pos, axis=1)
        else:
            ids = jnp.broadcast_to(ids, s.shape)
        return merge_topk(run[0], run[1], s, ids, kk)

    run = (jnp.full((qb, kk), NEG_INF, jnp.float32), jnp.full((qb, kk), -1, jnp.int32))
    n_full = n // chunk

    def step(run, j):
        lo = j * chunk
        xc, bc = chunk_at(x, bias, lo, chunk)
        s = dot_qx(q, xc)
        if bc is not None:
            s = s + bc[None, :]
        return absorb(run, s, lo), None

    if n_full:
        run, _ = lax.scan(step, run, jnp.arange(n_full, dtype=jnp.int32))
    if tail is not None:  # the last, partial chunk (padded; padding scores -inf)
        xt, bt = tail
        run = absorb(run, dot_qx(q, xt) + bt[None, :], n_full * chunk)
    return finish(run[0], run[1], exclude, k)


def run_topk(kernel: Callable, queries: jax.Array, items: jax.Array, exclude, *, k: int, **static):
    """``kernel(queries, items, exclude, k=k, **static)`` after the host-side steps of every top-k entry point.

    Zero queries give ``(float32[0, k], int32[0, k])`` without calling ``kernel``; a host (numpy) ``exclude
    [Q, m]`` goes onto the device first.
    """
    if queries.shape[0] == 0:
        return jnp.zeros((0, k), jnp.float32), jnp.zeros((0, k), jnp.int32)
    if isinstance(exclude, np.ndarray):
        exclude = jnp.asarray(exclude)
    return kernel(queries, items, exclude, k=k, **static)


def map_query_blocks(block_fn: Callable, q: jax.Array, exclude: jax.Array | None, qblock: int):
    """Applies ``block_fn(q [Qb, d], exclude [Qb, m] | None, valid bool[Qb])`` over query blocks (``lax.map``).

    ``q [Q, d]`` and ``exclude [Q, m]`` are padded to whole blocks (``valid`` marks the real queries); returns
    the blocks' outputs ``[Q, k]`` stacked in query order.
    """
    nq = q.shape[0]
    qb = min(qblock, nq)
    nblk = -(-nq // qb)
    pad = nblk * qb - nq
    qp = jnp.pad(q, ((0, pad), (0, 0))).reshape(nblk, qb, q.shape[1])
    valid = (jnp.arange(nblk * qb) < nq).reshape(nblk, qb)
    ex = (
        None
        if exclude is None
        else jnp.pad(exclude, ((0, pad), (0, 0)), constant_values=-1).reshape(nblk, qb, exclude.shape[1])
    )
    if nblk == 1:
        v, i = block_fn(qp[0], None if ex is None else ex[0], valid[0])
        return v[:nq], i[:nq]
    v, i = lax.map(lambda a: block_fn(*a), (qp, ex, valid))
    return v.reshape(nblk * qb, -1)[:nq], i.reshape(nblk * qb, -1)[:nq]

"""Approximate top-``k``: :func:`approx_similarity_topk` (``lax.approx_max_k`` per item chunk on TPU).

``jax.lax.approx_max_k`` is the TPU's partial-reduce top-k; on CPU and GPU, where XLA lowers it to a slower
exact top-k, :func:`approx_similarity_topk` runs the exact :func:`similarity_topk` instead (recall 1.0).
Shapes as in :mod:`jaxrec.topk.exact`: queries ``[Q, d]``, items ``[N, d]``, ``exclude [Q, m]``, results ``[Q, k]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxrec import checks
from jaxrec.topk import validate
from jaxrec.topk.blocks import map_query_blocks, padded_tail, run_topk, scan_block
from jaxrec.topk.exact import similarity_topk
from jaxrec.topk.inputs import pair_inputs, require_finite_pair
from jaxrec.topk.scores import prepare


@functools.partial(jax.jit, static_argnames=("k", "metric", "recall_target", "chunk_size", "query_block", "precision"))
@validate.with_precision
def _approx_topk(queries, items, exclude, *, k, metric, recall_target, chunk_size, query_block):
    n = items.shape[0]
    q, x, bias, offset = prepare(queries, items, metric)
    if exclude is not None:
        exclude = exclude.astype(jnp.int32)
    kk = min(k + (0 if exclude is None else exclude.shape[1]), n)
    chunk = min(chunk_size, n)
    kc = min(kk, chunk)

    def select(s):
        v, pos = lax.approx_max_k(s, kc, recall_target=recall_target)
        return v, pos.astype(jnp.int32)

    tail = padded_tail(x, bias, n - n % chunk, n, chunk) if n % chunk else None

    def block(qb, ex, valid):
        return scan_block(qb, x, bias, tail, ex, k=k, kk=kk, chunk=chunk, select=select)

    v, i = map_query_blocks(block, q, exclude, query_block)
    if offset is not None:
        v = v + offset[:, None]
    return v, i


def approx_similarity_topk(
    queries: jax.Array,
    items: jax.Array,
    k: int,
    *,
    recall_target: float = 0.95,
    metric: str = "dot",
    exclude: jax.Array | None = None,
    chunk_size: int = 16384,
    query_block: int = 256,
    precision: str | None = "highest",
    exact_off_tpu: bool = True,
    check_finite: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Approximate top-``k``: ``jax.lax.approx_max_k`` on each item chunk, exact merge across chunks.

    ``approx_max_k`` is the TPU's partial-reduce top-k: on TPU each chunk keeps about ``recall_target`` of its
    true top-k at a fraction of the cost. On CPU and GPU XLA lowers it to an exact top-k over every chunk, which
    is slower than the exact bucket kernel (bench/topk.py: 2–4× on a 2-core CPU, 4–7× on an H200). So off the
    TPU (JAX's default backend) this function runs :func:`similarity_topk` instead, unless
    ``exact_off_tpu=False``: the result is then exact (recall 1.0, ties by id). Shapes, ``exclude`` and
    ``metric`` are as in :func:`similarity_topk`; on the ``approx_max_k`` path equal scores are not guaranteed to
    be ordered by id.

    Args:
        queries: ``[Q, d]`` floating, or an array-like (as for :func:`similarity_topk`); ``Q = 0`` gives ``[0, k]``.
        items: ``[N, d]`` floating or an array-like, ``N >= 1``.
        k: static, ``1 <= k <= N``.
        recall_target: in ``(0, 1]``, passed to ``approx_max_k``.
        metric: one of :data:`~jaxrec.topk.METRICS`.
        exclude: optional int ``[Q, m]``, ``-1`` padded (an array or a rectangular list of lists).
        chunk_size: items per chunk of the ``approx_max_k`` path.
        query_block: queries per block of the ``approx_max_k`` path.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).
        exact_off_tpu: off the TPU, run the exact :func:`similarity_topk` (faster there); ``False`` always takes
            the ``approx_max_k`` path.
        check_finite: refuse concrete ``queries`` / ``items`` holding ``NaN`` or ``±inf`` (as in
            :func:`similarity_topk`: outside the compiled kernel, skipped under ``jit``); ``False`` skips it.

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])`` sorted descending.

    Example:
        >>> s, i = approx_similarity_topk(jnp.eye(2), jnp.eye(2) * 2, 1, recall_target=0.9)
        >>> i.tolist()
        [[0], [1]]
    """
    queries, items, exclude = pair_inputs(queries, items, exclude)
    validate.check_metric(metric)
    if exclude is not None:
        validate.check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
    validate.check_k(k, items.shape[0], "items N", validate.describe_shapes(queries, items, exclude))
    if not 0.0 < float(recall_target) <= 1.0:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    checks.positive_int("chunk_size", chunk_size)
    checks.positive_int("query_block", query_block)
    validate.check_precision(precision)
    validate.check_concrete_exclusions(exclude, items.shape[0], k, validate.describe_shapes(queries, items, exclude))
    require_finite_pair(check_finite, queries, items)
    if exact_off_tpu and jax.default_backend() != "tpu":
        return similarity_topk(
            queries, items, k, metric=metric, exclude=exclude, precision=precision, check_finite=False
        )
    return run_topk(
        _approx_topk,
        queries,
        items,
        exclude,
        k=int(k),
        metric=metric,
        recall_target=float(recall_target),
        chunk_size=int(chunk_size),
        query_block=int(query_block),
        precision=precision,
    )

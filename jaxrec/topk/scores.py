"""Similarity scores: every metric rewritten as one matrix product, and the products the kernels run.

Queries ``[Q, d]`` (a query block ``[Qb, d]`` inside the kernels), items ``[N, d]`` (an item chunk ``[C, d]``);
scores are float32 whatever the input dtype (float32, bfloat16, float16; accumulation in float32).

Metrics (:data:`METRICS`): ``"dot"`` = ``q·x``; ``"cosine"`` = ``q·x / (|q||x|)`` (both sides normalised once,
not per chunk); ``"l2"`` = ``-|q - x|²`` (computed as ``2q·x - |x|² - |q|²``, so ranking needs one matrix
product).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxrec.topk import validate
from jaxrec.topk.inputs import pair_inputs, require_finite_pair

NEG_INF = float("-inf")  # the score of padding, exclusions and "no item left"


def prepare(queries: jax.Array, items: jax.Array, metric: str):
    """Rewrites every metric as ``q'·x + bias[x]`` (ranking) plus ``offset[q]`` (reported score).

    Returns ``(q' [Q, d], x' [N, d], bias float32[N] | None, offset float32[Q] | None)``.
    """
    dtype = jnp.promote_types(queries.dtype, items.dtype)
    q, x = queries.astype(dtype), items.astype(dtype)
    if metric == "dot":
        return q, x, None, None
    qf, xf = q.astype(jnp.float32), x.astype(jnp.float32)
    if metric == "cosine":
        qn = qf * lax.rsqrt(jnp.maximum(jnp.sum(qf * qf, axis=1, keepdims=True), 1e-30))
        xn = xf * lax.rsqrt(jnp.maximum(jnp.sum(xf * xf, axis=1, keepdims=True), 1e-30))
        return qn.astype(dtype), xn.astype(dtype), None, None
    # l2: -|q - x|^2 = 2 q·x - |x|^2 - |q|^2; doubling is exact in every float dtype.
    return q * 2, x, -jnp.sum(xf * xf, axis=1), -jnp.sum(qf * qf, axis=1)


def plus_zero(s: jax.Array) -> jax.Array:
    """``-0.0`` → ``+0.0``: ``lax.top_k`` orders ``-0 < +0``, but they are equal scores and must tie by id."""
    return jnp.where(s == 0, jnp.zeros((), s.dtype), s)


def dot_qx(q: jax.Array, x: jax.Array) -> jax.Array:
    """``q [Qb, d]``, ``x [C, d]`` → float32 ``[Qb, C]``."""
    return plus_zero(lax.dot_general(q, x, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32))


def dot_xq(x: jax.Array, q: jax.Array) -> jax.Array:
    """``x [C, d]``, ``q [Qb, d]`` → float32 ``[C, Qb]`` (items-major: bucket reductions vectorise over Qb).

    May hold ``-0.0``: its one user, the bucket kernel's statistics, clears the sign on its summaries, which is
    cheaper than a separate pass over every score (XLA:CPU does not fuse that pass into the product).
    """
    return lax.dot_general(x, q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def similarity_scores(
    queries: jax.Array,
    items: jax.Array,
    *,
    metric: str = "dot",
    precision: str | None = "highest",
    check_finite: bool = True,
) -> jax.Array:
    """Dense scores of every query against every item (for small ``N``; the top-k kernels never build this).

    Args:
        queries: ``[Q, d]`` floating, or an array-like (as for :func:`similarity_topk`); ``Q`` may be 0.
        items: ``[N, d]`` floating or an array-like, ``N >= 1``.
        metric: one of :data:`~jaxrec.topk.METRICS`.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).
        check_finite: refuse concrete inputs holding ``NaN`` or ``±inf`` (as in :func:`similarity_topk`);
            ``False`` skips the check.

    Returns:
        float32 ``[Q, N]``.

    Example:
        >>> similarity_scores(jnp.ones((1, 2)), jnp.array([[1.0, 2.0], [0.0, 0.0]]), metric="l2").tolist()
        [[-1.0, -2.0]]
    """
    queries, items, _ = pair_inputs(queries, items)
    validate.check_metric(metric)
    validate.check_precision(precision)
    require_finite_pair(check_finite, queries, items)
    q, x, bias, off = prepare(queries, items, metric)
    with validate.precision_context(precision):
        s = dot_qx(q, x)
    if bias is not None:
        s = s + bias[None, :]
    if off is not None:
        s = s + off[:, None]
    return s

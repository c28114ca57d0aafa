"""Top-``k`` of precomputed scores and of per-query candidate lists, and the CSR → padded id list helper.

Scores ``[Q, N]``; candidate and exclusion id lists ``[Q, C]`` / ``[Q, m]`` are int, ``-1`` padded (ids outside
``[0, N)`` count as padding); results ``(scores float32[Q, k], ids int32[Q, k])`` sorted by score descending,
ties by lower id, ``(-inf, -1)`` where no item is left.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrec import checks
from jaxrec.topk import validate
from jaxrec.topk.blocks import drop_excluded
from jaxrec.topk.inputs import as_ids, as_vectors, check_flag, require_finite, require_finite_pair
from jaxrec.topk.scores import NEG_INF, plus_zero, prepare


@functools.partial(jax.jit, static_argnames=("k",))
def _scores_topk(scores, exclude, *, k):
    n = scores.shape[1]
    scores = plus_zero(scores.astype(jnp.float32))
    if exclude is not None and exclude.shape[1]:
        ex = exclude.astype(jnp.int32)
        ex = jnp.where((ex >= 0) & (ex < n), ex, n)  # out of range → dropped by the scatter
        rows = jnp.broadcast_to(jnp.arange(scores.shape[0])[:, None], ex.shape)
        scores = scores.at[rows, ex].set(NEG_INF, mode="drop")
    v, i = lax.top_k(scores, k)
    return v, jnp.where(v > NEG_INF, i.astype(jnp.int32), -1)


def scores_topk(
    scores: jax.Array, k: int, *, exclude: jax.Array | None = None, check_finite: bool = True
) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of a precomputed score matrix, with the same conventions as :func:`similarity_topk`.

    Args:
        scores: ``[Q, N]`` floating, or an array-like (float64 becomes float32, lists float32); ``Q`` may be 0,
            ``N >= 1``. ``-inf`` marks an item out (it is never returned); ``+inf`` ranks first.
        k: static, ``1 <= k <= N``.
        exclude: optional int ``[Q, m]`` item ids to leave out, ``-1`` padded (a scatter of ``Q·m`` values, no
            dense mask); an int array or a rectangular list of lists.
        check_finite: refuse concrete ``scores`` holding ``NaN`` (it would rank first); ``±inf`` are allowed.
            Runs outside the compiled kernel and is skipped under ``jit`` (see :func:`similarity_topk`).

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])`` sorted descending, ties by lower index.

    Example:
        >>> scores_topk(jnp.array([[0.1, 0.9, 0.9, 0.5]]), 2, exclude=jnp.array([[1]]))[1].tolist()
        [[2, 3]]
    """
    scores = as_vectors("scores", scores, "[Q, N]")
    if exclude is not None:
        exclude = as_ids("exclude", exclude, "[Q, m]")
    if jnp.ndim(scores) != 2:
        raise ValueError(f"scores must be [Q, N] (rank 2), got shape {jnp.shape(scores)}")
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"scores [Q, N] must be floating, got dtype {scores.dtype} with shape {scores.shape}")
    if scores.shape[1] == 0:
        raise ValueError(f"scores [Q, N] has no items (N = 0, shape {tuple(scores.shape)}): there is nothing to rank")
    if exclude is not None:
        validate.check_ids("exclude", exclude, scores.shape[0], "[Q, m]", f"scores [Q, N] = {tuple(scores.shape)}")
    validate.check_k(k, scores.shape[1], "items N", f"scores {tuple(scores.shape)}")
    validate.check_concrete_exclusions(exclude, scores.shape[1], k, f"scores {tuple(scores.shape)}")
    if check_flag("check_finite", check_finite):
        require_finite(("scores [Q, N]", scores), allow_inf=True)
    if isinstance(exclude, np.ndarray):
        exclude = jnp.asarray(exclude)
    return _scores_topk(scores, exclude, k=int(k))


def _candidate_inputs(queries, items, candidates, metric):
    """The array-like inputs of the candidate functions converted and checked (shapes, dtypes, metric)."""
    queries = as_vectors("queries", queries, "[Q, d]")
    items = as_vectors("items", items, "[N, d]")
    candidates = as_ids("candidates", candidates, "[Q, C]")
    validate.check_pair(queries, items)
    validate.check_metric(metric)
    validate.check_ids("candidates", candidates, queries.shape[0], "[Q, C]", f"[Q, d] = {tuple(queries.shape)}")
    return queries, items, candidates


@functools.partial(jax.jit, static_argnames=("metric", "precision"))
@validate.with_precision
def _candidate_scores(queries, items, candidates, *, metric):
    n = items.shape[0]
    q, x, bias, offset = prepare(queries, items, metric)
    c = candidates.astype(jnp.int32)
    ok = (c >= 0) & (c < n)
    safe = jnp.where(ok, c, 0)
    s = plus_zero(jnp.einsum("qcd,qd->qc", x[safe], q, preferred_element_type=jnp.float32))
    if bias is not None:
        s = s + bias[safe]
    if offset is not None:
        s = s + offset[:, None]
    return jnp.where(ok, s, NEG_INF)


def candidate_scores(
    queries: jax.Array,
    items: jax.Array,
    candidates: jax.Array,
    *,
    metric: str = "dot",
    precision: str | None = "highest",
    check_finite: bool = True,
) -> jax.Array:
    """Scores of each query against its own candidate item ids only (sampled evaluation, re-ranking).

    Args:
        queries: ``[Q, d]`` floating, or an array-like (as for :func:`similarity_topk`); ``Q`` may be 0.
        items: ``[N, d]`` floating or an array-like, ``N >= 1``.
        candidates: int ``[Q, C]`` item ids (an array or a rectangular list); ``-1`` (or any id outside
            ``[0, N)``) is padding.
        metric: one of :data:`~jaxrec.topk.METRICS`.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).
        check_finite: refuse concrete inputs holding ``NaN`` or ``±inf`` (as in :func:`similarity_topk`);
            ``False`` skips the check.

    Returns:
        float32 ``[Q, C]``; ``-inf`` at padding. Gathers ``Q·C`` item rows (``Q·C·d`` values at once).

    Example:
        >>> candidate_scores(jnp.ones((1, 2)), jnp.eye(3, 2), jnp.array([[1, -1, 2]])).tolist()
        [[1.0, -inf, 0.0]]
    """
    queries, items, candidates = _candidate_inputs(queries, items, candidates, metric)
    validate.check_precision(precision)
    require_finite_pair(check_finite, queries, items)
    return _candidate_scores(queries, items, jnp.asarray(candidates), metric=metric, precision=precision)


@functools.partial(jax.jit, static_argnames=("k", "metric", "precision"))
def _candidate_topk(queries, items, candidates, exclude, *, k, metric, precision):
    n = items.shape[0]
    c = candidates.astype(jnp.int32)
    c = jnp.sort(jnp.where((c >= 0) & (c < n), c, jnp.iinfo(jnp.int32).max), axis=1)
    dup = jnp.concatenate([jnp.zeros((c.shape[0], 1), bool), c[:, 1:] == c[:, :-1]], axis=1)
    c = jnp.where(dup | (c >= n), -1, c)
    s = _candidate_scores(queries, items, c, metric=metric, precision=precision)
    s = drop_excluded(s, c, None if exclude is None else exclude.astype(jnp.int32))
    v, pos = lax.top_k(s, k)  # candidates sorted by id: ties go to the lower id
    i = jnp.take_along_axis(c, pos, axis=1)
    return v, jnp.where(v > NEG_INF, i, -1)


def candidate_topk(
    queries: jax.Array,
    items: jax.Array,
    candidates: jax.Array,
    k: int,
    *,
    metric: str = "dot",
    exclude: jax.Array | None = None,
    precision: str | None = "highest",
    check_finite: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of each query's own candidate ids (an allow-list), e.g. to re-rank a retrieved shortlist.

    Duplicate ids in a row count once; ``-1`` and ids outside ``[0, N)`` are padding.

    Args:
        queries: ``[Q, d]`` floating, or an array-like (as for :func:`similarity_topk`); ``Q`` may be 0.
        items: ``[N, d]`` floating or an array-like, ``N >= 1``.
        candidates: int ``[Q, C]`` item ids, ``-1`` padded (an array or a rectangular list).
        k: static, ``1 <= k <= C``.
        metric: one of :data:`~jaxrec.topk.METRICS`.
        exclude: optional int ``[Q, m]`` ids to leave out, ``-1`` padded (an array or a rectangular list).
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).
        check_finite: refuse concrete inputs holding ``NaN`` or ``±inf`` (as in :func:`similarity_topk`);
            ``False`` skips the check.

    Returns:
        ``(scores float32[Q, k], item ids int32[Q, k])`` sorted descending, ties by lower item id; rows with
        fewer than ``k`` usable candidates end in ``(-inf, -1)``.

    Example:
        >>> x = jnp.array([[1.0], [3.0], [2.0], [5.0]])
        >>> candidate_topk(jnp.ones((1, 1)), x, jnp.array([[0, 2, 1, -1]]), 2)[1].tolist()
        [[1, 2]]
    """
    queries, items, candidates = _candidate_inputs(queries, items, candidates, metric)
    if exclude is not None:
        exclude = as_ids("exclude", exclude, "[Q, m]")
        validate.check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
    validate.check_k(
        k, candidates.shape[1], "candidates C", f"queries {tuple(queries.shape)}, candidates {tuple(candidates.shape)}"
    )
    validate.check_precision(precision)
    require_finite_pair(check_finite, queries, items)
    ex = None if exclude is None else jnp.asarray(exclude)
    return _candidate_topk(queries, items, jnp.asarray(candidates), ex, k=int(k), metric=metric, precision=precision)


def csr_to_padded(
    indptr: np.ndarray, indices: np.ndarray, *, width: int | None = None, multiple: int = 1
) -> np.ndarray:
    """Host-side: CSR rows (``indptr [Q + 1]``, ``indices [nnz]``) → padded int32 ``[Q, m]`` with ``-1``.

    Args:
        indptr: int ``[Q + 1]``, non-decreasing, ``indptr[0] == 0``.
        indices: int ``[nnz]`` item ids.
        width: ``m``; default the longest row (rounded up to ``multiple``). Rows longer than ``width`` raise.
        multiple: round the default width up to a multiple of this (fewer distinct shapes → fewer compiles).

    Returns:
        numpy int32 ``[Q, m]``.

    Example:
        >>> csr_to_padded(np.array([0, 2, 2, 3]), np.array([4, 1, 7])).tolist()
        [[4, 1], [-1, -1], [7, -1]]
    """
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    if indptr.ndim != 1 or indptr.size == 0 or indices.ndim != 1:
        raise ValueError(f"indptr must be [Q + 1] and indices [nnz]; got {indptr.shape} and {indices.shape}")
    if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
        raise ValueError(f"indptr {indptr.shape} must start at 0, be non-decreasing and end at nnz={indices.size}")
    checks.positive_int("multiple", multiple)
    lengths = np.diff(indptr)
    longest = int(lengths.max()) if lengths.size else 0
    if width is None:
        width = -(-longest // multiple) * multiple
    elif longest > width:
        raise ValueError(f"a CSR row has {longest} ids, more than width={width}")
    rows = lengths.size
    out = np.full((rows, width), -1, np.int32)
    if indices.size:
        row_of = np.repeat(np.arange(rows), lengths)
        col = np.arange(indices.size) - np.repeat(indptr[:-1], lengths)
        out[row_of, col] = indices
    return out

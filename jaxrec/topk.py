"""Similarity scores and exact / approximate / masked / sharded top-k.

Axis conventions (the whole file): queries ``[Q, d]``, items ``[N, d]``, a score matrix ``[Q, N]`` (built only
by :func:`similarity_scores` and the ``"dense"`` method; the streaming kernels never hold more than a chunk of
it), results ``[Q, k]``. Item ids are ``int32`` in ``[0, N)``. In inputs (``exclude``, ``candidates``) ``-1``
is padding; in outputs an id of ``-1`` with score ``-inf`` means "no item left" (a row whose exclusions leave
fewer than ``k`` items). Every result row is sorted by score, descending, and equal scores are ordered by lower
item id. Scores are float32 whatever the input dtype (float32, bfloat16, float16; accumulation in float32).
"Exact" means exact for the float32 scores computed here; kernels sum the ``d`` products in different orders
(and the bucket kernel rescores a few items separately), so scores can differ in the last bit between methods and
two items within float32 rounding of each other may swap places against a float64 reference. NaN scores are not
supported. Products run at ``precision="highest"`` by default: full float32 on GPU and TPU too, whose own
default for float32 is TF32 / bfloat16 passes (``precision=None`` keeps JAX's setting: faster, not exact).

Defaults follow the backend (JAX's default backend at call time): on the CPU, 1024-item chunks and 256-query
blocks (a chunk's scores stay in cache); on a GPU/TPU, query blocks of up to 4096 and chunks of up to 65536
items within ``Q·N/32`` floats per block, with the bucket summaries of many chunks merged by one ``top_k``
(each ``top_k`` call has a large fixed cost there). Measured on an H200 in ``bench/RESULTS.md``.

Metrics: ``"dot"`` = ``q·x``; ``"cosine"`` = ``q·x / (|q||x|)`` (both sides normalised once, not per chunk);
``"l2"`` = ``-|q - x|²`` (computed as ``2q·x - |x|² - |q|²``, so ranking needs one matrix product).

Kernels of :func:`similarity_topk` (all exact; ``method="auto"`` picks one from the sizes):

* ``"dense"`` — the whole ``[Qb, N]`` score block per query block, then ``lax.top_k``. For small ``N``.
* ``"scan"`` — streams item chunks: scores ``[Qb, C]`` are merged into a running top-``K`` with ``lax.top_k``.
  Extra memory ``O(Qb·(K + C))``; selection work ``O(N)`` per query.
* ``"bucket"`` — the CPU-fast kernel. Pass 1 streams item chunks and keeps, per *bucket* of ``B`` consecutive
  items, only its best score, that item's offset and an upper bound on the bucket's second-best score (one
  fused, vectorised pass over the in-cache chunk: no gathers). The summaries of ``merge_chunks`` chunks
  (unrolled) form a group, merged with one ``lax.top_k`` into a running top-``K`` of buckets (``K = k + m``);
  for ``K > 32`` the summaries of several groups (about 2048 bucket bests per query, at most ``Q·N/64`` floats)
  are stored and merged at once: XLA:CPU's TopK costs far more per element on short rows at large k. The
  answer is read from the ``K`` bucket bests; the few buckets whose second-best could still reach the top-``k``
  are rescored item by item (at most ``repair_buckets`` per query block, 8 per query); equal scores inside the
  top-``k`` are put in id order.
  A block that needs more repairs, or has a tie across the ``k``-th place, is recomputed by ``"scan"``
  (``lax.cond``), so the result is always exact. Extra memory ``O(Qb·(K + merge_chunks·C))``; selection work
  ``O(N/B)`` per query.

Why buckets: on XLA:CPU, ``lax.top_k`` is a single-threaded partial sort costing 3.5–5 ns per element scanned at
k = 10 and 6–17 ns at k = 100, and gathers run at 1–2 GB/s, so running ``top_k`` over every chunk costs more
than the matrix product itself, while reducing each in-cache chunk to one summary per bucket costs a few percent
of it (when the chunks are unrolled: inside a loop XLA fuses that pass into the loop's in-place update, which
runs on one thread). See ``bench/topk.py`` and ``bench/RESULTS.md`` for the measurements.

:func:`approx_similarity_topk` uses ``jax.lax.approx_max_k`` on TPU; on CPU and GPU, where XLA would lower that
to a slower exact top-k, it runs the exact kernel instead (recall 1.0). :func:`sharded_similarity_topk` splits
the items over a mesh axis with ``jax.shard_map``: a local top-``k`` per device, then an ``all_gather`` and a
merge.

Example:
    >>> import jax.numpy as jnp
    >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> x = jnp.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    >>> scores, ids = similarity_topk(q, x, 2)
    >>> ids.tolist()
    [[3, 0], [1, 2]]
    >>> similarity_topk(q, x, 2, exclude=jnp.array([[3, -1], [-1, -1]]))[1].tolist()
    [[0, 2], [1, 2]]
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "METRICS",
    "METHODS",
    "similarity_scores",
    "similarity_topk",
    "approx_similarity_topk",
    "sharded_similarity_topk",
    "scores_topk",
    "candidate_scores",
    "candidate_topk",
    "csr_to_padded",
]

METRICS = ("dot", "cosine", "l2")
METHODS = ("auto", "bucket", "scan", "dense")

_NEG_INF = float("-inf")
_TIE_PASSES = 4  # odd-even passes ordering equal scores by id in the bucket kernel's answer
_REPAIR_PER_QUERY = 8  # buckets rescored per query at most (the block's shared capacity is ``repair_buckets``)
_SIGN_FLIP = np.int32(0x7FFFFFFF)
_ABSORB_TARGET = 2048  # bucket bests per query merged by one top_k (see _absorb_every)
_ABSORB_MIN_K = 32  # at k + m up to this, every group is merged at once (CPU)
_ACCEL_ABSORB_TARGET = 16384  # bucket bests per query per merge on GPU/TPU, for every k (see _absorb_every)
_CPU_BLOCKS = (1024, 256)  # default (chunk_size, query_block) on the CPU
_ACCEL_QBLOCK = 4096  # default query_block on an accelerator
_ACCEL_CHUNKS = (2048, 65536)  # default chunk_size range on an accelerator (see _default_blocks)
_ACCEL_FALLBACK_CHUNK = 2048  # chunk of the bucket kernel's "scan" fallback on an accelerator
_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


# --------------------------------------------------------------------------------------------------
# Static checks (trace time; never look at values of traced arrays).


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")


def _check_pos_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_precision(precision: Any) -> None:
    if precision is None:
        return
    try:
        with jax.default_matmul_precision(precision):
            pass
    except (ValueError, TypeError) as e:
        raise ValueError(f"precision={precision!r} is not a matmul precision JAX knows: {e}") from None


def _precision_ctx(precision: str | None):
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


def _with_precision(fn: Callable) -> Callable:
    """``fn(..., precision=p)`` traces ``fn`` under ``jax.default_matmul_precision(p)`` (``None``: JAX's config).

    Every product of the kernels (``dot_general`` / ``einsum`` with ``precision=None``) takes that precision.
    """

    def wrapped(*args, precision=None, **kwargs):
        with _precision_ctx(precision):
            return fn(*args, **kwargs)

    wrapped.__name__, wrapped.__qualname__, wrapped.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return wrapped


def _check_float(name: str, x: Any, spec: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} {spec} must be floating (float32, bfloat16 or float16), got dtype {x.dtype} "
            f"with shape {tuple(x.shape)}"
        )
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} {spec} must be float32, bfloat16 or float16, got dtype {x.dtype} with shape {tuple(x.shape)}"
        )


def _check_pair(queries: Any, items: Any) -> None:
    """Ranks, dtypes and the shared width ``d`` of ``queries [Q, d]`` and ``items [N, d]``."""
    if jnp.ndim(queries) != 2 or jnp.ndim(items) != 2:
        raise ValueError(
            f"queries must be [Q, d] and items [N, d] (rank 2); got queries {jnp.shape(queries)} and "
            f"items {jnp.shape(items)}"
        )
    _check_float("queries", queries, "[Q, d]")
    _check_float("items", items, "[N, d]")
    if queries.shape[1] != items.shape[1]:
        raise ValueError(
            f"queries [Q, d] and items [N, d] must share d; got queries {queries.shape} and items {items.shape}"
        )
    if items.shape[0] == 0:
        raise ValueError(f"items [N, d] is empty: {items.shape}")


def _check_ids(name: str, ids: Any, n_rows: int, spec: str, other: str) -> None:
    if jnp.ndim(ids) != 2:
        raise ValueError(f"{name} must be {spec} (rank 2), got shape {jnp.shape(ids)}; queries are {other}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} {spec} must hold integer item ids, got dtype {ids.dtype} with shape {ids.shape}")
    if ids.shape[0] != n_rows:
        raise ValueError(f"{name} {spec} needs one row per query; got {name} {ids.shape} for queries {other}")


def _check_k(k: Any, n: int, what: str, shapes: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a static Python int, got {type(k).__name__} ({shapes})")
    if k <= 0:
        raise ValueError(f"k must be positive, got k={k} ({shapes})")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of {what} ({n}); {shapes}")


def _check_concrete_exclusions(exclude: Any, n: int, k: int, shapes: str) -> None:
    """When ``exclude`` is a host array, check that every row leaves at least ``k`` items."""
    if not isinstance(exclude, np.ndarray) or exclude.size == 0:
        return
    ids = np.where((exclude >= 0) & (exclude < n), exclude, -1)
    ids = np.sort(ids, axis=1)
    distinct = (ids >= 0) & np.concatenate([np.ones((ids.shape[0], 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    worst = int(distinct.sum(axis=1).max())
    if n - worst < k:
        raise ValueError(
            f"k={k} exceeds N minus exclusions: a row of exclude excludes {worst} of N={n} items, "
            f"leaving {n - worst}; {shapes}"
        )


def _shapes(queries: Any, items: Any, exclude: Any = None) -> str:
    s = f"queries {tuple(queries.shape)}, items {tuple(items.shape)}"
    return s if exclude is None else s + f", exclude {tuple(exclude.shape)}"


# --------------------------------------------------------------------------------------------------
# Scores.


def _prepare(queries: jax.Array, items: jax.Array, metric: str):
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


def _plus_zero(s: jax.Array) -> jax.Array:
    """``-0.0`` → ``+0.0``: ``lax.top_k`` orders ``-0 < +0``, but they are equal scores and must tie by id."""
    return jnp.where(s == 0, jnp.zeros((), s.dtype), s)


def _dot_qx(q: jax.Array, x: jax.Array) -> jax.Array:
    """``q [Qb, d]``, ``x [C, d]`` → float32 ``[Qb, C]``."""
    return _plus_zero(lax.dot_general(q, x, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32))


def _dot_xq(x: jax.Array, q: jax.Array) -> jax.Array:
    """``x [C, d]``, ``q [Qb, d]`` → float32 ``[C, Qb]`` (items-major: bucket reductions vectorise over Qb).

    May hold ``-0.0``: its one user, :func:`_bucket_stats`, clears the sign on its summaries, which is cheaper than
    a separate pass over every score (XLA:CPU does not fuse that pass into the product).
    """
    return lax.dot_general(x, q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def similarity_scores(
    queries: jax.Array, items: jax.Array, *, metric: str = "dot", precision: str | None = "highest"
) -> jax.Array:
    """Dense scores of every query against every item (for small ``N``; the top-k kernels never build this).

    Args:
        queries: ``[Q, d]`` floating.
        items: ``[N, d]`` floating.
        metric: one of :data:`METRICS`.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).

    Returns:
        float32 ``[Q, N]``.

    Example:
        >>> similarity_scores(jnp.ones((1, 2)), jnp.array([[1.0, 2.0], [0.0, 0.0]]), metric="l2").tolist()
        [[-1.0, -2.0]]
    """
    _check_pair(queries, items)
    _check_metric(metric)
    _check_precision(precision)
    q, x, bias, off = _prepare(queries, items, metric)
    with _precision_ctx(precision):
        s = _dot_qx(q, x)
    if bias is not None:
        s = s + bias[None, :]
    if off is not None:
        s = s + off[:, None]
    return s


# --------------------------------------------------------------------------------------------------
# Shared pieces of the kernels.


def _tail(x: jax.Array, bias: jax.Array | None, lo: int, stop: int, multiple: int):
    """Item rows ``[lo, stop)`` padded to a multiple of ``multiple`` rows.

    Returns ``(x_tail [T, d], bias_tail float32[T])``; padding rows are zero and score ``-inf`` via the bias.
    """
    rows = stop - lo
    padded = -(-rows // multiple) * multiple
    xt = jnp.pad(x[lo:stop], ((0, padded - rows), (0, 0)))
    bt = jnp.zeros((rows,), jnp.float32) if bias is None else bias[lo:stop]
    return xt, jnp.pad(bt, (0, padded - rows), constant_values=_NEG_INF)


def _chunk_at(x: jax.Array, bias: jax.Array | None, lo: jax.Array, chunk: int):
    xc = lax.dynamic_slice_in_dim(x, lo, chunk, axis=0)
    bc = None if bias is None else lax.dynamic_slice_in_dim(bias, lo, chunk, axis=0)
    return xc, bc


def _drop_excluded(vals: jax.Array, ids: jax.Array, exclude: jax.Array | None) -> jax.Array:
    """``vals [Qb, L]`` with ``-inf`` where ``ids [Qb, L]`` is listed in ``exclude [Qb, m]`` (or is ``-1``)."""
    vals = jnp.where(ids >= 0, vals, _NEG_INF)
    if exclude is None or exclude.shape[1] == 0:
        return vals
    hit = jnp.any(ids[:, :, None] == exclude[:, None, :], axis=2)
    return jnp.where(hit, _NEG_INF, vals)


def _finish(vals: jax.Array, ids: jax.Array, exclude: jax.Array | None, k: int):
    """Top-``k`` of a running list ``vals/ids [Qb, K]`` sorted by (score desc, id asc), minus exclusions."""
    vals = _drop_excluded(vals, ids, exclude)
    if vals.shape[1] == k and exclude is None:
        return vals, jnp.where(vals > _NEG_INF, ids, -1)
    v, pos = lax.top_k(vals, k)  # ties keep list order, i.e. lower id first
    i = jnp.take_along_axis(ids, pos, axis=1)
    return v, jnp.where(v > _NEG_INF, i, -1)


def _merge_topk(vals: jax.Array, ids: jax.Array, new_vals: jax.Array, new_ids: jax.Array, kk: int):
    """Running top-``kk`` of ``vals/ids [Qb, K]`` and a later (higher-id) block ``new_vals/new_ids [Qb, C]``."""
    v, pos = lax.top_k(jnp.concatenate([vals, new_vals], axis=1), kk)
    return v, jnp.take_along_axis(jnp.concatenate([ids, new_ids], axis=1), pos, axis=1)


# --------------------------------------------------------------------------------------------------
# Kernels on one query block. Each takes q [Qb, d] (prepared), x [N, d], bias float32[N] | None,
# exclude int32[Qb, m] | None and returns (scores float32[Qb, k], ids int32[Qb, k]) before the query offset.


def _dense_block(q, x, bias, exclude, *, k: int, kk: int):
    s = _dot_qx(q, x)
    if bias is not None:
        s = s + bias[None, :]
    v, i = lax.top_k(s, kk)
    return _finish(v, i.astype(jnp.int32), exclude, k)


def _scan_block(q, x, bias, tail, exclude, *, k: int, kk: int, chunk: int, select: Callable | None = None):
    """Streams ``chunk``-row item blocks, merging scores into a running top-``kk`` (``select`` may replace the
    per-chunk pre-selection, e.g. with ``approx_max_k``). ``tail`` is ``_tail(x, bias, n_full * chunk, N,
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
        return _merge_topk(run[0], run[1], s, ids, kk)

    run = (jnp.full((qb, kk), _NEG_INF, jnp.float32), jnp.full((qb, kk), -1, jnp.int32))
    n_full = n // chunk

    def step(run, j):
        lo = j * chunk
        xc, bc = _chunk_at(x, bias, lo, chunk)
        s = _dot_qx(q, xc)
        if bc is not None:
            s = s + bc[None, :]
        return absorb(run, s, lo), None

    if n_full:
        run, _ = lax.scan(step, run, jnp.arange(n_full, dtype=jnp.int32))
    if tail is not None:  # the last, partial chunk (padded; padding scores -inf)
        xt, bt = tail
        run = absorb(run, _dot_qx(q, xt) + bt[None, :], n_full * chunk)
    return _finish(run[0], run[1], exclude, k)


def _f2key(f: jax.Array) -> jax.Array:
    """float32 → int32 with the same order (for finite values and ±inf)."""
    b = lax.bitcast_convert_type(f, jnp.int32)
    return jnp.where(b < 0, b ^ _SIGN_FLIP, b)


def _key2f(key: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(jnp.where(key < 0, key ^ _SIGN_FLIP, key), jnp.float32)


def _bucket_stats(s: jax.Array, bucket: int) -> jax.Array:
    """Per-bucket summary of an items-major score chunk ``s float32[C, Qb]``.

    Returns complex64 ``[C / bucket, Qb]``: the real part is the bucket's best score (ties: lowest offset); the
    imaginary part is a float ``>=`` the bucket's second-best score whose low ``log2(bucket)`` key bits hold the
    best item's offset. One output keeps XLA from recomputing the chain per output. ``-0.0`` in ``s`` is allowed
    (the outputs are ``+0.0`` then; ``lax.top_k`` would order ``-0 < +0``).
    """
    c, qb = s.shape
    s3 = s.reshape(c // bucket, bucket, qb)
    best = s3[:, 0]
    second = jnp.full(best.shape, _NEG_INF, jnp.float32)
    off = jnp.zeros(best.shape, jnp.int32)
    for j in range(1, bucket):  # unrolled: elementwise over [C/B, Qb], vectorised along Qb
        v = s3[:, j]
        second = jnp.maximum(second, jnp.minimum(v, best))
        off = jnp.where(v > best, j, off)
        best = jnp.maximum(best, v)
    bits = bucket.bit_length() - 1
    packed = _key2f((((_f2key(_plus_zero(second)) >> bits) + 1) << bits) | off)
    return lax.complex(_plus_zero(best), packed)


def _kth_of_sorted(v: jax.Array, k: int) -> jax.Array:
    """The k-th largest value of each row of ``v [Qb, L]`` whose finite entries are in descending order (``-inf``
    anywhere, e.g. dropped exclusions), or ``-inf`` for rows with fewer than k: one cumulative count instead of a
    ``top_k`` (XLA:CPU's TopK costs ~25 µs per row at k=100 on short rows)."""
    count = jnp.cumsum(v > _NEG_INF, axis=1, dtype=jnp.int32)
    at = jnp.argmax(count >= k, axis=1)
    kth = jnp.take_along_axis(v, at[:, None], axis=1)[:, 0]
    return jnp.where(count[:, -1] >= k, kth, _NEG_INF)


def _order_ties(v: jax.Array, i: jax.Array, passes: int) -> jax.Array:
    """Ids ``i [Qb, k]`` of descending scores ``v [Qb, k]`` with each run of equal scores put in id order.

    ``passes`` rounds of odd-even transposition (compare-exchange of neighbours with equal scores); runs longer
    than ``passes`` may stay unordered (the caller checks).
    """
    k = v.shape[1]
    for p in range(min(passes, k - 1)):
        lo, hi = slice(p % 2, k - 1, 2), slice(p % 2 + 1, k, 2)
        swap = (v[:, lo] == v[:, hi]) & (i[:, lo] > i[:, hi])
        i_lo, i_hi = i[:, lo], i[:, hi]
        i = i.at[:, lo].set(jnp.where(swap, i_hi, i_lo)).at[:, hi].set(jnp.where(swap, i_lo, i_hi))
    return i


def _bucket_block(
    q,
    x,
    bias,
    tail,
    exclude,
    valid,
    *,
    k: int,
    kk: int,
    chunk: int,
    bucket: int,
    merge: int,
    repair: int,
    fallback: Callable | None,
    absorb_every: int = 1,
):
    n, _ = x.shape
    qb = q.shape[0]
    per_chunk = chunk // bucket

    def stats(xc, bc):
        s = _dot_xq(xc, q)  # may hold -0.0: _bucket_stats clears the sign on its summaries
        if bc is not None:
            s = s + bc[:, None]
        return _bucket_stats(s, bucket)

    def absorb(run, st, first_bucket):
        # st complex64[nb, Qb] → merge the nb bucket bests into the running top-kk buckets.
        best, packed = jnp.real(st).T, jnp.imag(st).T
        nb = best.shape[1]
        v, pos = lax.top_k(jnp.concatenate([run[0], best], axis=1), kk)
        p = jnp.take_along_axis(jnp.concatenate([run[1], packed], axis=1), pos, axis=1)
        bid = first_bucket + jnp.arange(nb, dtype=jnp.int32)
        b = jnp.take_along_axis(jnp.concatenate([run[2], jnp.broadcast_to(bid, (qb, nb))], axis=1), pos, axis=1)
        return v, p, b

    def chunks_stats(first, count):
        """Stats of ``count`` whole chunks starting at chunk index ``first``: complex64[count * C/B, Qb]."""

        def chunk_step(_, j):
            xc, bc = _chunk_at(x, bias, (first + j) * chunk, chunk)
            return None, stats(xc, bc)

        # Fully unrolled: with a loop, XLA fuses the stats into the scan's in-place update, which XLA:CPU runs
        # on one thread; unrolled, they are stacked by a concatenation that runs on all of them.
        _, st = lax.scan(chunk_step, None, jnp.arange(count, dtype=jnp.int32), unroll=True)
        return st.reshape(count * per_chunk, qb)

    run = (
        jnp.full((qb, kk), _NEG_INF, jnp.float32),
        jnp.full((qb, kk), _NEG_INF, jnp.float32),
        jnp.full((qb, kk), -1, jnp.int32),
    )

    def groups_stats(first, count):
        """Stats of ``count`` merge groups from group index ``first``, stacked by a scan (stored, not merged)."""
        if count == 1:
            return chunks_stats(first * merge, merge)
        _, st = lax.scan(lambda _, g: (None, chunks_stats((first + g) * merge, merge)), None, jnp.arange(count))
        return st.reshape(count * merge * per_chunk, qb)

    n_chunks = n // chunk
    n_groups = n_chunks // merge
    # ``absorb_every`` groups' stats are stored, then merged by one ``top_k``: XLA:CPU's TopK has a large cost per
    # call that grows with k, so fewer, longer merges are cheaper (bounded by the memory of the stored stats).
    every = max(1, min(absorb_every, n_groups))
    n_super = n_groups // every
    if n_super:
        run, _ = lax.scan(
            lambda r, g: (absorb(r, groups_stats(g * every, every), g * every * merge * per_chunk), None),
            run,
            jnp.arange(n_super, dtype=jnp.int32),
        )
    if n_groups > n_super * every:
        first = n_super * every
        run = absorb(run, groups_stats(first, n_groups - first), first * merge * per_chunk)
    rest = []  # whole chunks after the last group, then the padded partial chunk (the only copied rows)
    if n_chunks > n_groups * merge:
        rest.append(chunks_stats(n_groups * merge, n_chunks - n_groups * merge))
    if tail is not None:
        rest.append(stats(*tail))
    if rest:
        run = absorb(run, jnp.concatenate(rest), n_groups * merge * per_chunk)

    best, packed, bid = run
    off = _f2key(packed) & (bucket - 1)
    ids = jnp.where(bid >= 0, bid * bucket + off, -1)
    ids = jnp.where(ids < n, ids, -1)
    cand = _drop_excluded(best, ids, exclude)
    kth = _kth_of_sorted(cand, k)  # cand: the last merge's top_k order, with dropped exclusions at -inf
    # A bucket may hold more of the answer only if its second-best (upper bound) reaches the k-th best. Those
    # buckets (``repair`` per query block, shared) are rescored item by item for the one query that needs them.
    need = valid[:, None] & (bid >= 0) & (packed >= kth[:, None])
    n_need = jnp.sum(need)
    per_query = min(_REPAIR_PER_QUERY, kk)
    repair = min(repair, qb * kk)
    rank = jnp.cumsum(need, axis=1, dtype=jnp.int32) - 1  # order of a needed bucket within its query

    def with_repair(_):
        on, p = lax.top_k(need.reshape(-1).astype(jnp.float32), repair)  # the first `repair` needed pairs
        on = on > 0
        owner, slot = p // kk, p % kk
        rids = bid.reshape(-1)[p][:, None] * bucket + jnp.arange(bucket, dtype=jnp.int32)  # [R, B]
        rids = jnp.where(on[:, None] & (rids < n), rids, -1)
        safe = jnp.maximum(rids, 0)
        s = _plus_zero(jnp.einsum("rbd,rd->rb", x[safe], q[owner], preferred_element_type=jnp.float32))
        if bias is not None:
            s = s + bias[safe]
        s = _drop_excluded(s, rids, None if exclude is None else exclude[owner])
        r = jnp.where(on, rank.reshape(-1)[p], per_query)  # ranks >= per_query are dropped (and fall back)
        ev = jnp.full((qb, per_query, bucket), _NEG_INF, jnp.float32).at[owner, r].set(s, mode="drop")
        ei = jnp.full((qb, per_query, bucket), -1, jnp.int32).at[owner, r].set(rids, mode="drop")
        taken = jnp.zeros((qb, kk), bool).at[owner, slot].max(on & (r < per_query))
        allv = jnp.concatenate([jnp.where(taken, _NEG_INF, cand), ev.reshape(qb, -1)], 1)
        v, pos = lax.top_k(allv, k + 1)
        return v, jnp.take_along_axis(jnp.concatenate([ids, ei.reshape(qb, -1)], 1), pos, axis=1)

    def without_repair(_):
        v, pos = lax.top_k(jnp.concatenate([cand, jnp.full((qb, 1), _NEG_INF, jnp.float32)], 1), k + 1)
        return v, jnp.take_along_axis(jnp.concatenate([ids, jnp.full((qb, 1), -1, jnp.int32)], 1), pos, axis=1)

    # The final top_k runs inside each branch: applied to the output of a cond, XLA:CPU lowers it to a full
    # stable sort (~100 ns per element: 7 ms per query block of 256 at k = 10) instead of its TopK routine.
    v, i = lax.cond(n_need > 0, with_repair, without_repair, None)
    # Equal scores inside the top-k: the candidates are not in id order, so order each run of equal scores by id.
    # A tie across the k-th / (k+1)-th place (or a run too long to order here) defers the block to "scan".
    boundary_tie = (v[:, k - 1] == v[:, k]) & (v[:, k] > _NEG_INF)
    v, i = v[:, :k], _order_ties(v[:, :k], i[:, :k], _TIE_PASSES)
    unordered = jnp.any((v[:, :-1] == v[:, 1:]) & (i[:, :-1] > i[:, 1:]) & (v[:, 1:] > _NEG_INF), axis=1)
    bad = (n_need > repair) | jnp.any(valid & (boundary_tie | unordered | (rank[:, -1] >= per_query)))
    fast = (v, jnp.where(v > _NEG_INF, i, -1))
    if fallback is None:  # tests / diagnostics only: the unchecked fast result
        return fast
    return lax.cond(bad, lambda _: fallback(q, exclude), lambda _: fast, None)


# --------------------------------------------------------------------------------------------------
# Drivers.


def _bucket_plan(n: int, kk: int, qb: int, bucket: int | None, repair: int | None) -> tuple[int, int]:
    """Bucket size ``B`` and per-block repair capacity for the ``"bucket"`` kernel.

    For random scores a bucket needs a repair when it holds two of the top ``kk`` items: about
    ``lam = kk² B / (2N)`` buckets per query. Fewer, larger buckets make the merges cheaper (XLA:CPU's top-k
    costs 4–9 ns per element scanned at k ≈ 100) and repairs more frequent, so ``B`` is the largest power of two
    ≤ 32 with ``lam ≤ 1`` (at most 8 repairs per query then fail with probability ~1e-6). The block capacity
    covers the mean ``qb·lam`` plus four standard deviations (and 4).
    """
    if bucket is None:
        bucket = 32
        while bucket > 2 and kk * kk * bucket > 2 * n:
            bucket //= 2
    if repair is None:
        lam = qb * kk * kk * bucket / (2 * n)
        repair = int(math.ceil(lam + 4 * math.sqrt(lam) + 4))
    return bucket, repair


def _merge_chunks(nq: int, n: int, chunk: int, qb: int) -> int:
    """Chunks per bucket merge: up to 16 (fewer, longer ``lax.top_k`` calls are cheaper per element), as long as
    the unrolled group's score blocks (``merge·chunk·qb`` floats, possibly all live) stay ≤ ``Q·N / 16``."""
    merge = 16
    while merge > 2 and merge * chunk * qb * 16 > nq * n:
        merge //= 2
    return merge


def _absorb_every(nq: int, n: int, merge: int, per_chunk: int, qb: int, kk: int, accelerator: bool = False) -> int:
    """Merge groups whose bucket bests are stored and then merged by one ``top_k``: about ``_ABSORB_TARGET``
    bests per query per merge, with the stored complex64 stats ``[every·merge·per_chunk, Qb]`` ≤ ``Q·N / 64`` floats;
    1 (merge every group) when ``kk <= _ABSORB_MIN_K``. On an accelerator, where each ``top_k`` call has a large
    fixed cost whatever k (H200, Q=1024, N=1M, k=10: 26 ms with 30 merges, 13 ms with 8), the target is
    ``_ACCEL_ABSORB_TARGET`` bests for every k.

    XLA:CPU's TopK costs much more per element on short rows at large k (29 ns at 1.1k elements, 9.5 ns at 6k,
    k=100), so at k = 100 fewer, longer merges cut the selection time (Q=256, N=100k, d=64: 109 ms merging every
    group, 82 ms every 3). At k = 10 TopK is cheap and storing groups costs more than it saves (the stored stats
    go through a loop's in-place update, which XLA:CPU runs on one thread): 46 ms merging every group, 59 ms every
    4 (medians of 13 rounds in random order).
    """
    if kk <= _ABSORB_MIN_K and not accelerator:
        return 1
    group = merge * per_chunk
    target = -(-(_ACCEL_ABSORB_TARGET if accelerator else _ABSORB_TARGET) // group)
    budget = (nq * n) // (64 * 2 * group * qb)
    return max(1, min(target, budget))


def _default_blocks(nq: int, n: int, chunk: int | None, qblock: int | None, accelerator: bool) -> tuple[int, int]:
    """Default ``(chunk_size, query_block)``.

    CPU: ``(1024, 256)`` — a chunk's scores stay in cache while the bucket summaries are taken (bench/topk.py).
    Accelerator: few, large steps, since each loop step and each ``top_k`` has a fixed cost: query blocks of up
    to ``4096`` and the largest power-of-two chunk in ``[2048, 65536]`` with ``chunk·Qb ≤ Q·N / 32`` floats, so
    that the two chunks of a merge group stay within ``Q·N / 16`` (the memory target is ``Q·N / 8``).
    """
    if not accelerator:
        return chunk or _CPU_BLOCKS[0], qblock or _CPU_BLOCKS[1]
    qblock = qblock or min(nq, _ACCEL_QBLOCK)
    if chunk is None:
        lo, chunk = _ACCEL_CHUNKS
        while chunk > lo and 32 * chunk * min(qblock, nq) > nq * n:
            chunk //= 2
    return chunk, qblock


def _on_accelerator() -> bool:
    """Whether JAX's default backend is an accelerator (GPU/TPU): the kernels then use accelerator defaults."""
    return jax.default_backend() != "cpu"


def _resolve_method(method: str, n: int, kk: int, *, chunk: int, bucket: int) -> str:
    if method != "auto":
        return method
    if n <= chunk:
        return "dense"
    if n >= 8 * kk * bucket:
        return "bucket"
    return "scan"


def _blocked(block_fn: Callable, q: jax.Array, exclude: jax.Array | None, qblock: int):
    """Applies ``block_fn(q [Qb, d], exclude [Qb, m] | None, valid bool[Qb])`` over query blocks (``lax.map``)."""
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


@functools.partial(
    jax.jit,
    static_argnames=(
        "k",
        "metric",
        "method",
        "chunk_size",
        "query_block",
        "bucket_size",
        "merge_chunks",
        "repair_buckets",
        "checked",
        "absorb_every",
        "accelerator",
        "precision",
    ),
)
@_with_precision
def _similarity_topk(
    queries,
    items,
    exclude,
    *,
    k,
    metric,
    method,
    chunk_size,
    query_block,
    bucket_size,
    merge_chunks,
    repair_buckets,
    checked=True,
    absorb_every=None,
    accelerator=False,
):
    n = items.shape[0]
    q, x, bias, offset = _prepare(queries, items, metric)
    if exclude is not None:
        exclude = exclude.astype(jnp.int32)
    m = 0 if exclude is None else exclude.shape[1]
    kk = min(k + m, n)
    bucket, repair = _bucket_plan(n, k + m, min(query_block, queries.shape[0]), bucket_size, repair_buckets)
    method = _resolve_method(method, n, kk, chunk=chunk_size, bucket=bucket)
    chunk = min(chunk_size, -(-n // bucket) * bucket) if method == "bucket" else min(chunk_size, n)
    # The padded last partial chunk, built once outside the query-block loop.
    tail = _tail(x, bias, n - n % chunk, n, chunk) if n % chunk else None
    merge = merge_chunks or _merge_chunks(queries.shape[0], n, chunk, min(query_block, queries.shape[0]))
    every = 1
    if method == "bucket":
        every = absorb_every or _absorb_every(
            queries.shape[0], n, merge, chunk // bucket, min(query_block, queries.shape[0]), k + m, accelerator
        )

    def scan_fn(qb, ex):
        return _scan_block(qb, x, bias, tail, ex, k=k, kk=kk, chunk=chunk)

    fallback = scan_fn
    if method == "bucket" and accelerator and chunk > _ACCEL_FALLBACK_CHUNK:
        # The rare fallback streams smaller chunks: its top_k over [Qb, K + C] (a sort on GPU) would otherwise
        # set the kernel's peak memory.
        fc = _ACCEL_FALLBACK_CHUNK
        ftail = _tail(x, bias, n - n % fc, n, fc) if n % fc else None

        def fallback(qb, ex):
            return _scan_block(qb, x, bias, ftail, ex, k=k, kk=kk, chunk=fc)

    if method == "dense":

        def block(qb, ex, valid):
            return _dense_block(qb, x, bias, ex, k=k, kk=kk)
    elif method == "scan":

        def block(qb, ex, valid):
            return scan_fn(qb, ex)
    else:

        def block(qb, ex, valid):
            return _bucket_block(
                qb,
                x,
                bias,
                tail,
                ex,
                valid,
                k=k,
                kk=k + m,
                chunk=chunk,
                bucket=bucket,
                merge=merge,
                repair=repair,
                fallback=fallback if checked else None,
                absorb_every=every,
            )

    v, i = _blocked(block, q, exclude, query_block)
    if offset is not None:
        v = v + offset[:, None]
    return v, i


def _check_topk_args(
    queries, items, k, metric, exclude, method, chunk_size, bucket_size, merge_chunks, repair_buckets, precision
):
    """The checks of :func:`similarity_topk` after the pair, the block sizes and their defaults were resolved."""
    _check_metric(metric)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    shapes = _shapes(queries, items, exclude)
    if exclude is not None:
        _check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
    _check_k(k, items.shape[0], "items N", shapes)
    if merge_chunks is not None:
        _check_pos_int("merge_chunks", merge_chunks)
    if repair_buckets is not None:
        _check_pos_int("repair_buckets", repair_buckets)
    if bucket_size is not None:
        _check_pos_int("bucket_size", bucket_size)
        if bucket_size & (bucket_size - 1) or not 2 <= bucket_size <= 256:
            raise ValueError(f"bucket_size must be a power of two in [2, 256], got {bucket_size}")
    need = 32 if bucket_size is None else bucket_size
    if chunk_size % need:
        raise ValueError(
            f"chunk_size={chunk_size} must be a multiple of bucket_size={need} (32 when bucket_size "
            "is None, the largest automatic bucket)"
        )
    _check_precision(precision)
    _check_concrete_exclusions(exclude, items.shape[0], k, shapes)


def similarity_topk(
    queries: jax.Array,
    items: jax.Array,
    k: int,
    *,
    metric: str = "dot",
    exclude: jax.Array | None = None,
    method: str = "auto",
    chunk_size: int | None = None,
    query_block: int | None = None,
    bucket_size: int | None = None,
    merge_chunks: int | None = None,
    repair_buckets: int | None = None,
    precision: str | None = "highest",
) -> tuple[jax.Array, jax.Array]:
    """Exact top-``k`` items per query, streamed over item chunks (never builds ``[Q, N]`` for large ``N``).

    Args:
        queries: ``[Q, d]`` float32 / bfloat16 / float16.
        items: ``[N, d]`` same kinds of dtype (mixed inputs are promoted).
        k: static, ``1 <= k <= N``.
        metric: one of :data:`METRICS`.
        exclude: optional int ``[Q, m]`` item ids to leave out per query (``-1`` = padding; ids outside
            ``[0, N)`` are ignored). For CSR rows use :func:`csr_to_padded`. A host (numpy) array is checked to
            leave at least ``k`` items per row; otherwise rows with too few items end in ``(-inf, -1)``.
        method: ``"auto"`` (from the sizes), ``"bucket"``, ``"scan"`` or ``"dense"``; see the module docstring.
            All are exact and return the same result up to float32 rounding of the scores.
        chunk_size: items per streamed chunk ``C`` (static); a multiple of ``bucket_size`` (of 32 by default).
            Default: 1024 on the CPU; on an accelerator (JAX's default backend is a GPU/TPU) the largest power of
            two in [2048, 65536] with ``C·Qb ≤ Q·N / 32``.
        query_block: queries per block ``Qb`` (static); blocks run one after another (``lax.map``). Default: 256
            on the CPU, ``min(Q, 4096)`` on an accelerator.
        bucket_size: items per bucket ``B`` of the ``"bucket"`` kernel (power of two in [2, 256]); default: the
            largest of 2..32 with at most one bucket per query expected to hold two of the top ``k + m``
            (``(k+m)² B / 2N ≤ 1``).
        merge_chunks: chunks whose bucket bests are merged into the running top-k at once (``"bucket"``; the
            chunks of a group are unrolled, so this also sets compile time); default: up to 16, fewer when
            ``merge·C·Qb`` would exceed ``Q·N / 16`` floats.
        repair_buckets: buckets per query block rescored item by item before the block falls back to
            ``"scan"``; default from the expected number (mean + 4 standard deviations).
        precision: matmul precision of the products (static), any value of ``jax.default_matmul_precision``.
            ``"highest"`` (default): full float32 products of float32 inputs on every backend, so the result is
            the exact top-k of float32 scores. ``None`` keeps JAX's setting, which on GPU multiplies float32
            inputs in TF32 (about 3e-4 relative error: items within that of each other may swap or be
            replaced) and on TPU in bfloat16 passes; faster, not exact. bfloat16 / float16 inputs are
            multiplied exactly (accumulated in float32) either way.

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])``, sorted by score descending, ties by lower index.

    Raises:
        ValueError / TypeError at trace time for wrong ranks, mismatched ``d``, non-floating inputs, ``k <= 0``
        or ``k > N``, an unknown metric, method or precision.

    Example:
        >>> q = jnp.array([[1.0, 0.0]])
        >>> x = jnp.array([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
        >>> s, i = similarity_topk(q, x, 2, metric="cosine")
        >>> i.tolist(), [round(v, 3) for v in s[0].tolist()]
        ([[1, 2]], [1.0, 0.707])
    """
    _check_pair(queries, items)
    for name, value in (("chunk_size", chunk_size), ("query_block", query_block)):
        if value is not None:
            _check_pos_int(name, value)
    accelerator = _on_accelerator()
    chunk_size, query_block = _default_blocks(queries.shape[0], items.shape[0], chunk_size, query_block, accelerator)
    _check_topk_args(
        queries, items, k, metric, exclude, method, chunk_size, bucket_size, merge_chunks, repair_buckets, precision
    )
    if isinstance(exclude, np.ndarray):
        exclude = jnp.asarray(exclude)
    return _similarity_topk(
        queries,
        items,
        exclude,
        k=int(k),
        metric=metric,
        method=method,
        chunk_size=int(chunk_size),
        query_block=int(query_block),
        bucket_size=None if bucket_size is None else int(bucket_size),
        merge_chunks=None if merge_chunks is None else int(merge_chunks),
        repair_buckets=None if repair_buckets is None else int(repair_buckets),
        accelerator=accelerator,
        precision=precision,
    )


# --------------------------------------------------------------------------------------------------
# Approximate.


@functools.partial(jax.jit, static_argnames=("k", "metric", "recall_target", "chunk_size", "query_block", "precision"))
@_with_precision
def _approx_topk(queries, items, exclude, *, k, metric, recall_target, chunk_size, query_block):
    n = items.shape[0]
    q, x, bias, offset = _prepare(queries, items, metric)
    if exclude is not None:
        exclude = exclude.astype(jnp.int32)
    kk = min(k + (0 if exclude is None else exclude.shape[1]), n)
    chunk = min(chunk_size, n)
    kc = min(kk, chunk)

    def select(s):
        v, pos = lax.approx_max_k(s, kc, recall_target=recall_target)
        return v, pos.astype(jnp.int32)

    tail = _tail(x, bias, n - n % chunk, n, chunk) if n % chunk else None

    def block(qb, ex, valid):
        return _scan_block(qb, x, bias, tail, ex, k=k, kk=kk, chunk=chunk, select=select)

    v, i = _blocked(block, q, exclude, query_block)
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
        queries: ``[Q, d]`` floating.
        items: ``[N, d]`` floating.
        k: static, ``1 <= k <= N``.
        recall_target: in ``(0, 1]``, passed to ``approx_max_k``.
        metric: one of :data:`METRICS`.
        exclude: optional int ``[Q, m]``, ``-1`` padded.
        chunk_size: items per chunk of the ``approx_max_k`` path.
        query_block: queries per block of the ``approx_max_k`` path.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).
        exact_off_tpu: off the TPU, run the exact :func:`similarity_topk` (faster there); ``False`` always takes
            the ``approx_max_k`` path.

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])`` sorted descending.

    Example:
        >>> s, i = approx_similarity_topk(jnp.eye(2), jnp.eye(2) * 2, 1, recall_target=0.9)
        >>> i.tolist()
        [[0], [1]]
    """
    _check_pair(queries, items)
    _check_metric(metric)
    if exclude is not None:
        _check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
    _check_k(k, items.shape[0], "items N", _shapes(queries, items, exclude))
    if not 0.0 < float(recall_target) <= 1.0:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    _check_pos_int("chunk_size", chunk_size)
    _check_pos_int("query_block", query_block)
    _check_precision(precision)
    _check_concrete_exclusions(exclude, items.shape[0], k, _shapes(queries, items, exclude))
    if exact_off_tpu and jax.default_backend() != "tpu":
        return similarity_topk(queries, items, k, metric=metric, exclude=exclude, precision=precision)
    if isinstance(exclude, np.ndarray):
        exclude = jnp.asarray(exclude)
    return _approx_topk(
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


# --------------------------------------------------------------------------------------------------
# Sharded over items.


def sharded_similarity_topk(
    queries: jax.Array,
    items: jax.Array,
    k: int,
    *,
    mesh: jax.sharding.Mesh,
    axis_name: str,
    metric: str = "dot",
    exclude: jax.Array | None = None,
    **kernel_options: Any,
) -> tuple[jax.Array, jax.Array]:
    """Exact top-``k`` with the items split over mesh axis ``axis_name`` (each device holds ``N / D`` rows).

    Each device runs :func:`similarity_topk` on its rows (ids shifted to global ids, exclusions translated to
    local ids), the ``D`` lists are gathered with ``lax.all_gather`` and merged with one ``lax.top_k``; the
    device order equals the id order, so ties still go to the lower id and the result equals the single-device
    kernel. Implemented with ``jax.shard_map``; queries and ``exclude`` are replicated.

    Args:
        queries: ``[Q, d]`` floating.
        items: ``[N, d]`` floating, ``N`` divisible by the size ``D`` of ``axis_name``.
        k: static, ``1 <= k <= N``.
        mesh: a ``jax.sharding.Mesh`` containing ``axis_name``.
        axis_name: the mesh axis the items are split over.
        metric: one of :data:`METRICS`.
        exclude: optional int ``[Q, m]`` global item ids, ``-1`` padded.
        **kernel_options: keyword options of :func:`similarity_topk` (``method``, ``chunk_size``, ...).

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])``, replicated.

    Example:
        >>> mesh = jax.make_mesh((jax.device_count(),), ("items",))
        >>> x = jnp.arange(8.0 * jax.device_count()).reshape(-1, 1)
        >>> sharded_similarity_topk(jnp.ones((1, 1)), x, 2, mesh=mesh, axis_name="items")[1].shape
        (1, 2)
    """
    _check_pair(queries, items)
    _check_metric(metric)
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}")
    shapes = _shapes(queries, items, exclude)
    _check_k(k, items.shape[0], "items N", shapes)
    n_dev = mesh.shape[axis_name]
    n = items.shape[0]
    if n % n_dev:
        raise ValueError(
            f"items [N, d] = {items.shape} must split evenly over the {n_dev} devices of mesh axis "
            f"{axis_name!r}; pad N to a multiple of {n_dev}"
        )
    if exclude is not None:
        _check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
        exclude = jnp.asarray(exclude, jnp.int32)
    return _sharded_topk(
        queries,
        items,
        exclude,
        k=int(k),
        mesh=mesh,
        axis_name=axis_name,
        metric=metric,
        options=tuple(sorted(kernel_options.items())),
    )


@functools.partial(jax.jit, static_argnames=("k", "mesh", "axis_name", "metric", "options"))
def _sharded_topk(queries, items, exclude, *, k, mesh, axis_name, metric, options):
    n_local = items.shape[0] // mesh.shape[axis_name]
    k_local = min(k, n_local)

    def local(q, x, ex):
        first = lax.axis_index(axis_name) * n_local
        if ex is not None:
            ex = jnp.where((ex >= first) & (ex < first + n_local), ex - first, -1)
        v, i = similarity_topk(q, x, k_local, metric=metric, exclude=ex, **dict(options))
        i = jnp.where(i >= 0, i + first, -1)
        v = lax.all_gather(v, axis_name, axis=1, tiled=True)  # [Q, D * k_local], device (= id) order
        i = lax.all_gather(i, axis_name, axis=1, tiled=True)
        v, pos = lax.top_k(v, k)
        i = jnp.take_along_axis(i, pos, axis=1)
        return v, jnp.where(v > _NEG_INF, i, -1)

    # Lay the operands out as shard_map expects: reshard on Explicit mesh axes, a constraint on Auto ones.
    explicit = mesh.axis_types[mesh.axis_names.index(axis_name)] == jax.sharding.AxisType.Explicit
    place = jax.reshard if explicit else lax.with_sharding_constraint
    queries = place(queries, NamedSharding(mesh, P()))
    items = place(items, NamedSharding(mesh, P(axis_name)))
    if exclude is None:
        fn = jax.shard_map(
            lambda q, x: local(q, x, None),
            mesh=mesh,
            in_specs=(P(), P(axis_name)),
            out_specs=(P(), P()),
            check_vma=False,
        )
        return fn(queries, items)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis_name), P()), out_specs=(P(), P()), check_vma=False)
    return fn(queries, items, place(exclude, NamedSharding(mesh, P())))


# --------------------------------------------------------------------------------------------------
# Precomputed scores and candidate subsets.


@functools.partial(jax.jit, static_argnames=("k",))
def _scores_topk(scores, exclude, *, k):
    n = scores.shape[1]
    scores = _plus_zero(scores.astype(jnp.float32))
    if exclude is not None and exclude.shape[1]:
        ex = exclude.astype(jnp.int32)
        ex = jnp.where((ex >= 0) & (ex < n), ex, n)  # out of range → dropped by the scatter
        rows = jnp.broadcast_to(jnp.arange(scores.shape[0])[:, None], ex.shape)
        scores = scores.at[rows, ex].set(_NEG_INF, mode="drop")
    v, i = lax.top_k(scores, k)
    return v, jnp.where(v > _NEG_INF, i.astype(jnp.int32), -1)


def scores_topk(scores: jax.Array, k: int, *, exclude: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of a precomputed score matrix, with the same conventions as :func:`similarity_topk`.

    Args:
        scores: ``[Q, N]`` floating.
        k: static, ``1 <= k <= N``.
        exclude: optional int ``[Q, m]`` item ids to leave out, ``-1`` padded (a scatter of ``Q·m`` values, no
            dense mask).

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])`` sorted descending, ties by lower index.

    Example:
        >>> scores_topk(jnp.array([[0.1, 0.9, 0.9, 0.5]]), 2, exclude=jnp.array([[1]]))[1].tolist()
        [[2, 3]]
    """
    if jnp.ndim(scores) != 2:
        raise ValueError(f"scores must be [Q, N] (rank 2), got shape {jnp.shape(scores)}")
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"scores [Q, N] must be floating, got dtype {scores.dtype} with shape {scores.shape}")
    if exclude is not None:
        _check_ids("exclude", exclude, scores.shape[0], "[Q, m]", f"scores [Q, N] = {tuple(scores.shape)}")
    _check_k(k, scores.shape[1], "items N", f"scores {tuple(scores.shape)}")
    _check_concrete_exclusions(exclude, scores.shape[1], k, f"scores {tuple(scores.shape)}")
    if isinstance(exclude, np.ndarray):
        exclude = jnp.asarray(exclude)
    return _scores_topk(scores, exclude, k=int(k))


def _check_candidates(queries, items, candidates, metric):
    _check_pair(queries, items)
    _check_metric(metric)
    _check_ids("candidates", candidates, queries.shape[0], "[Q, C]", f"[Q, d] = {tuple(queries.shape)}")


@functools.partial(jax.jit, static_argnames=("metric", "precision"))
@_with_precision
def _candidate_scores(queries, items, candidates, *, metric):
    n = items.shape[0]
    q, x, bias, offset = _prepare(queries, items, metric)
    c = candidates.astype(jnp.int32)
    ok = (c >= 0) & (c < n)
    safe = jnp.where(ok, c, 0)
    s = _plus_zero(jnp.einsum("qcd,qd->qc", x[safe], q, preferred_element_type=jnp.float32))
    if bias is not None:
        s = s + bias[safe]
    if offset is not None:
        s = s + offset[:, None]
    return jnp.where(ok, s, _NEG_INF)


def candidate_scores(
    queries: jax.Array,
    items: jax.Array,
    candidates: jax.Array,
    *,
    metric: str = "dot",
    precision: str | None = "highest",
) -> jax.Array:
    """Scores of each query against its own candidate item ids only (sampled evaluation, re-ranking).

    Args:
        queries: ``[Q, d]`` floating.
        items: ``[N, d]`` floating.
        candidates: int ``[Q, C]`` item ids; ``-1`` (or any id outside ``[0, N)``) is padding.
        metric: one of :data:`METRICS`.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).

    Returns:
        float32 ``[Q, C]``; ``-inf`` at padding. Gathers ``Q·C`` item rows (``Q·C·d`` values at once).

    Example:
        >>> candidate_scores(jnp.ones((1, 2)), jnp.eye(3, 2), jnp.array([[1, -1, 2]])).tolist()
        [[1.0, -inf, 0.0]]
    """
    _check_candidates(queries, items, candidates, metric)
    _check_precision(precision)
    return _candidate_scores(queries, items, jnp.asarray(candidates), metric=metric, precision=precision)


@functools.partial(jax.jit, static_argnames=("k", "metric", "precision"))
def _candidate_topk(queries, items, candidates, exclude, *, k, metric, precision):
    n = items.shape[0]
    c = candidates.astype(jnp.int32)
    c = jnp.sort(jnp.where((c >= 0) & (c < n), c, jnp.iinfo(jnp.int32).max), axis=1)
    dup = jnp.concatenate([jnp.zeros((c.shape[0], 1), bool), c[:, 1:] == c[:, :-1]], axis=1)
    c = jnp.where(dup | (c >= n), -1, c)
    s = _candidate_scores(queries, items, c, metric=metric, precision=precision)
    s = _drop_excluded(s, c, None if exclude is None else exclude.astype(jnp.int32))
    v, pos = lax.top_k(s, k)  # candidates sorted by id: ties go to the lower id
    i = jnp.take_along_axis(c, pos, axis=1)
    return v, jnp.where(v > _NEG_INF, i, -1)


def candidate_topk(
    queries: jax.Array,
    items: jax.Array,
    candidates: jax.Array,
    k: int,
    *,
    metric: str = "dot",
    exclude: jax.Array | None = None,
    precision: str | None = "highest",
) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of each query's own candidate ids (an allow-list), e.g. to re-rank a retrieved shortlist.

    Duplicate ids in a row count once; ``-1`` and ids outside ``[0, N)`` are padding.

    Args:
        queries: ``[Q, d]`` floating.
        items: ``[N, d]`` floating.
        candidates: int ``[Q, C]`` item ids, ``-1`` padded.
        k: static, ``1 <= k <= C``.
        metric: one of :data:`METRICS`.
        exclude: optional int ``[Q, m]`` ids to leave out, ``-1`` padded.
        precision: matmul precision (see :func:`similarity_topk`); default ``"highest"`` (full float32).

    Returns:
        ``(scores float32[Q, k], item ids int32[Q, k])`` sorted descending, ties by lower item id; rows with
        fewer than ``k`` usable candidates end in ``(-inf, -1)``.

    Example:
        >>> x = jnp.array([[1.0], [3.0], [2.0], [5.0]])
        >>> candidate_topk(jnp.ones((1, 1)), x, jnp.array([[0, 2, 1, -1]]), 2)[1].tolist()
        [[1, 2]]
    """
    _check_candidates(queries, items, candidates, metric)
    if exclude is not None:
        _check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
    _check_k(
        k, candidates.shape[1], "candidates C", f"queries {tuple(queries.shape)}, candidates {tuple(candidates.shape)}"
    )
    _check_precision(precision)
    ex = None if exclude is None else jnp.asarray(exclude)
    return _candidate_topk(queries, items, jnp.asarray(candidates), ex, k=int(k), metric=metric, precision=precision)


# --------------------------------------------------------------------------------------------------
# Host helpers.


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
    _check_pos_int("multiple", multiple)
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

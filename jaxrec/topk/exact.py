"""Exact top-``k``: :func:`similarity_topk`, its jitted core and the choice of kernel and block sizes.

Kernels (all exact; ``method="auto"`` picks one from the sizes):

* ``"dense"`` — the whole ``[Qb, N]`` score block per query block, then ``lax.top_k``. For small ``N``.
* ``"scan"`` — streams item chunks: scores ``[Qb, C]`` are merged into a running top-``K`` with ``lax.top_k``.
  Extra memory ``O(Qb·(K + C))``; selection work ``O(N)`` per query.
* ``"bucket"`` — the CPU-fast kernel of :mod:`jaxrec.topk.bucket`: one summary per bucket of ``B`` items,
  a top-``K`` over the summaries, a few buckets rescored, ``"scan"`` as the exact fallback. Extra memory
  ``O(Qb·(K + merge_chunks·C))``; selection work ``O(N/B)`` per query.

Defaults follow the backend (JAX's default backend at call time): on the CPU, 1024-item chunks and 256-query
blocks (a chunk's scores stay in cache); on a GPU/TPU, query blocks of up to 4096 and chunks of up to 65536
items within ``Q·N/32`` floats per block, with the bucket summaries of many chunks merged by one ``top_k``
(each ``top_k`` call has a large fixed cost there). Measured on an H200 in ``bench/RESULTS.md``.

Queries ``[Q, d]`` run in blocks ``[Qb, d]`` one after another; items ``[N, d]`` stream in chunks ``[C, d]``;
``exclude [Q, m]`` (``-1`` padded) widens the running lists to ``K = k + m``; results are ``[Q, k]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrec import checks
from jaxrec.topk import validate
from jaxrec.topk.blocks import dense_block, map_query_blocks, padded_tail, run_topk, scan_block
from jaxrec.topk.bucket import bucket_block, bucket_plan, default_absorb_every, default_merge_chunks
from jaxrec.topk.inputs import pair_inputs, require_finite_pair
from jaxrec.topk.scores import prepare

METHODS = ("auto", "bucket", "scan", "dense")

_CPU_BLOCKS = (1024, 256)  # default (chunk_size, query_block) on the CPU
_ACCEL_QBLOCK = 4096  # default query_block on an accelerator
_ACCEL_CHUNKS = (2048, 65536)  # default chunk_size range on an accelerator (see _default_blocks)
_ACCEL_FALLBACK_CHUNK = 2048  # chunk of the bucket kernel's "scan" fallback on an accelerator


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
@validate.with_precision
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
    """:func:`similarity_topk` after its checks, with every size static. ``checked=False`` returns the bucket
    kernel's fast path without its fallback and ``absorb_every`` overrides its merge grouping (tests, benchmarks).
    """
    n = items.shape[0]
    q, x, bias, offset = prepare(queries, items, metric)
    if exclude is not None:
        exclude = exclude.astype(jnp.int32)
    m = 0 if exclude is None else exclude.shape[1]
    kk = min(k + m, n)
    bucket, repair = bucket_plan(n, k + m, min(query_block, queries.shape[0]), bucket_size, repair_buckets)
    method = _resolve_method(method, n, kk, chunk=chunk_size, bucket=bucket)
    chunk = min(chunk_size, -(-n // bucket) * bucket) if method == "bucket" else min(chunk_size, n)
    # The padded last partial chunk, built once outside the query-block loop.
    tail = padded_tail(x, bias, n - n % chunk, n, chunk) if n % chunk else None
    merge = merge_chunks or default_merge_chunks(queries.shape[0], n, chunk, min(query_block, queries.shape[0]))
    every = 1
    if method == "bucket":
        every = absorb_every or default_absorb_every(
            queries.shape[0], n, merge, chunk // bucket, min(query_block, queries.shape[0]), k + m, accelerator
        )

    def scan_fn(qb, ex):
        return scan_block(qb, x, bias, tail, ex, k=k, kk=kk, chunk=chunk)

    fallback = scan_fn
    if method == "bucket" and accelerator and chunk > _ACCEL_FALLBACK_CHUNK:
        # The rare fallback streams smaller chunks: its top_k over [Qb, K + C] (a sort on GPU) would otherwise
        # set the kernel's peak memory.
        fc = _ACCEL_FALLBACK_CHUNK
        ftail = padded_tail(x, bias, n - n % fc, n, fc) if n % fc else None

        def fallback(qb, ex):
            return scan_block(qb, x, bias, ftail, ex, k=k, kk=kk, chunk=fc)

    if method == "dense":

        def block(qb, ex, valid):
            return dense_block(qb, x, bias, ex, k=k, kk=kk)
    elif method == "scan":

        def block(qb, ex, valid):
            return scan_fn(qb, ex)
    else:

        def block(qb, ex, valid):
            return bucket_block(
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

    v, i = map_query_blocks(block, q, exclude, query_block)
    if offset is not None:
        v = v + offset[:, None]
    return v, i


def _check_topk_args(
    queries, items, k, metric, exclude, method, chunk_size, bucket_size, merge_chunks, repair_buckets, precision
):
    """The checks of :func:`similarity_topk` after the pair, the block sizes and their defaults were resolved."""
    validate.check_metric(metric)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    shapes = validate.describe_shapes(queries, items, exclude)
    if exclude is not None:
        validate.check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
    validate.check_k(k, items.shape[0], "items N", shapes)
    if merge_chunks is not None:
        checks.positive_int("merge_chunks", merge_chunks)
    if repair_buckets is not None:
        checks.positive_int("repair_buckets", repair_buckets)
    if bucket_size is not None:
        checks.positive_int("bucket_size", bucket_size)
        if bucket_size & (bucket_size - 1) or not 2 <= bucket_size <= 256:
            raise ValueError(f"bucket_size must be a power of two in [2, 256], got {bucket_size}")
    need = 32 if bucket_size is None else bucket_size
    if chunk_size % need:
        raise ValueError(
            f"chunk_size={chunk_size} must be a multiple of bucket_size={need} (32 when bucket_size "
            "is None, the largest automatic bucket)"
        )
    validate.check_precision(precision)
    validate.check_concrete_exclusions(exclude, items.shape[0], k, shapes)


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
    check_finite: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Exact top-``k`` items per query, streamed over item chunks (never builds ``[Q, N]`` for large ``N``).

    Args:
        queries: ``[Q, d]`` float32 / bfloat16 / float16, or an array-like: a numpy array of any floating dtype
            (float64 becomes float32), a Python list / tuple of numbers (float32). ``Q = 0`` gives empty results
            ``[0, k]``.
        items: ``[N, d]``, ``N >= 1``, the same kinds of input (mixed dtypes are promoted).
        k: static, ``1 <= k <= N``.
        metric: one of :data:`~jaxrec.topk.METRICS`.
        exclude: optional int ``[Q, m]`` item ids to leave out per query (``-1`` = padding; ids outside
            ``[0, N)`` are ignored): an int array or a rectangular list of lists (a ragged one raises; pad it
            with :func:`csr_to_padded`). A host (numpy / list) one is checked to leave at least ``k`` items per
            row; otherwise rows with too few items end in ``(-inf, -1)``.
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
        check_finite: refuse ``queries`` / ``items`` holding ``NaN`` or ``±inf`` (one of them would put
            ``(nan, -1)`` first in every list). The check runs before the kernel, outside the compiled code, on
            concrete arrays: one fused pass over each input (cheap next to the kernel's ``Q·N·d`` products) plus one
            read back to the host, which waits for the inputs to be computed.
            Under ``jit`` / ``vmap`` / ``shard_map`` the inputs are tracers and the check is skipped (check the
            concrete arrays outside). ``False`` skips it: non-finite inputs then give undefined lists.

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])``, sorted by score descending, ties by lower index.

    Raises:
        ValueError: at trace time, for wrong ranks, mismatched ``d``, ``N = 0``, ``k <= 0`` or ``k > N``, an
            unknown metric, method or precision, or a ragged ``exclude``; for non-finite concrete inputs (naming
            the argument and the first offending rows).
        TypeError: at trace time, for non-floating inputs, a non-integer ``exclude`` or a non-int ``k``.

    Example:
        >>> q = jnp.array([[1.0, 0.0]])
        >>> x = jnp.array([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
        >>> s, i = similarity_topk(q, x, 2, metric="cosine")
        >>> i.tolist(), [round(v, 3) for v in s[0].tolist()]
        ([[1, 2]], [1.0, 0.707])
    """
    queries, items, exclude = pair_inputs(queries, items, exclude)
    for name, value in (("chunk_size", chunk_size), ("query_block", query_block)):
        if value is not None:
            checks.positive_int(name, value)
    accelerator = _on_accelerator()
    chunk_size, query_block = _default_blocks(queries.shape[0], items.shape[0], chunk_size, query_block, accelerator)
    _check_topk_args(
        queries, items, k, metric, exclude, method, chunk_size, bucket_size, merge_chunks, repair_buckets, precision
    )
    require_finite_pair(check_finite, queries, items)
    return run_topk(
        _similarity_topk,
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

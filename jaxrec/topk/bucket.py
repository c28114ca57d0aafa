"""The ``"bucket"`` kernel on one query block, and the plan of its sizes (bucket, repairs, merge groups).

The kernel (:func:`bucket_block`). Pass 1 streams item chunks and keeps, per *bucket* of ``B`` consecutive items,
only its best score, that item's offset and an upper bound on the bucket's second-best score (one fused,
vectorised pass over the in-cache chunk: no gathers). The summaries of ``merge`` chunks (unrolled) form a group,
merged with one ``lax.top_k`` into a running top-``K`` of buckets (``K = k + m``); for ``K > 32`` the summaries
of several groups (about 2048 bucket bests per query, at most ``Q·N/64`` floats) are stored and merged at once:
XLA:CPU's TopK costs far more per element on short rows at large k. The answer is read from the ``K`` bucket
bests; the few buckets whose second-best could still reach the top-``k`` are rescored item by item (at most
``repair`` per query block, 8 per query); equal scores inside the top-``k`` are put in id order. A block that
needs more repairs, or has a tie across the ``k``-th place, is recomputed by the ``fallback`` (``"scan"``, under
``lax.cond``), so the result is always exact. Extra memory ``O(Qb·(K + merge·C))``; selection work ``O(N/B)``
per query.

Why buckets: on XLA:CPU, ``lax.top_k`` is a single-threaded partial sort costing 3.5–5 ns per element scanned at
k = 10 and 6–17 ns at k = 100, and gathers run at 1–2 GB/s, so running ``top_k`` over every chunk costs more
than the matrix product itself, while reducing each in-cache chunk to one summary per bucket costs a few percent
of it (when the chunks are unrolled: inside a loop XLA fuses that pass into the loop's in-place update, which
runs on one thread). See ``bench/topk.py`` and ``bench/RESULTS.md`` for the measurements.

Shapes: score chunks are items-major, ``float32[C, Qb]`` (the bucket reductions vectorise over ``Qb``); bucket
summaries are complex64 ``[C / B, Qb]`` (see :func:`_bucket_stats`); the running top-``K`` of buckets is a triple
``(best float32[Qb, K], packed float32[Qb, K], bucket id int32[Qb, K])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrec.topk.blocks import chunk_at, drop_excluded
from jaxrec.topk.scores import NEG_INF, dot_xq, plus_zero

_TIE_PASSES = 4  # odd-even passes ordering equal scores by id in the answer
_REPAIR_PER_QUERY = 8  # buckets rescored per query at most (the block's shared capacity is ``repair``)
_SIGN_FLIP = np.int32(0x7FFFFFFF)
_ABSORB_TARGET = 2048  # bucket bests per query merged by one top_k (see default_absorb_every)
_ABSORB_MIN_K = 32  # at k + m up to this, every group is merged at once (CPU)
_ACCEL_ABSORB_TARGET = 16384  # bucket bests per query per merge on GPU/TPU, for every k (see default_absorb_every)


# --------------------------------------------------------------------------------------------------
# Order-preserving float keys, bucket statistics and small helpers on sorted rows.


def _f2key(f: jax.Array) -> jax.Array:
    """float32 → int32 with the same order (for finite values and ±inf)."""
    b = lax.bitcast_convert_type(f, jnp.int32)
    return jnp.where(b < 0, b ^ _SIGN_FLIP, b)


def _key2f(key: jax.Array) -> jax.Array:
    """The inverse of :func:`_f2key`."""
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
    second = jnp.full(best.shape, NEG_INF, jnp.float32)
    off = jnp.zeros(best.shape, jnp.int32)
    for j in range(1, bucket):  # unrolled: elementwise over [C/B, Qb], vectorised along Qb
        v = s3[:, j]
        second = jnp.maximum(second, jnp.minimum(v, best))
        off = jnp.where(v > best, j, off)
        best = jnp.maximum(best, v)
    bits = bucket.bit_length() - 1
    packed = _key2f((((_f2key(plus_zero(second)) >> bits) + 1) << bits) | off)
    return lax.complex(plus_zero(best), packed)


def _kth_of_sorted(v: jax.Array, k: int) -> jax.Array:
    """The k-th largest value of each row of ``v [Qb, L]`` whose finite entries are in descending order (``-inf``
    anywhere, e.g. dropped exclusions), or ``-inf`` for rows with fewer than k: one cumulative count instead of a
    ``top_k`` (XLA:CPU's TopK costs ~25 µs per row at k=100 on short rows)."""
    count = jnp.cumsum(v > NEG_INF, axis=1, dtype=jnp.int32)
    at = jnp.argmax(count >= k, axis=1)
    kth = jnp.take_along_axis(v, at[:, None], axis=1)[:, 0]
    return jnp.where(count[:, -1] >= k, kth, NEG_INF)


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


# --------------------------------------------------------------------------------------------------
# Step 1: bucket statistics, streamed over item chunks into a running top-K of buckets.


def _chunk_stats(q, xc, bc, bucket: int) -> jax.Array:
    """Summaries complex64 ``[C / B, Qb]`` of one item chunk ``xc [C, d]`` (``bc float32[C] | None``)."""
    s = dot_xq(xc, q)  # may hold -0.0: _bucket_stats clears the sign on its summaries
    if bc is not None:
        s = s + bc[:, None]
    return _bucket_stats(s, bucket)


def _absorb(run, st, first_bucket):
    """Merges the ``nb`` bucket bests of ``st complex64[nb, Qb]`` (bucket ids from ``first_bucket``) into the
    running top-``K`` buckets ``run``."""
    qb, kk = run[0].shape
    best, packed = jnp.real(st).T, jnp.imag(st).T
    nb = best.shape[1]
    v, pos = lax.top_k(jnp.concatenate([run[0], best], axis=1), kk)
    p = jnp.take_along_axis(jnp.concatenate([run[1], packed], axis=1), pos, axis=1)
    bid = first_bucket + jnp.arange(nb, dtype=jnp.int32)
    b = jnp.take_along_axis(jnp.concatenate([run[2], jnp.broadcast_to(bid, (qb, nb))], axis=1), pos, axis=1)
    return v, p, b


def _chunks_stats(q, x, bias, first, count: int, *, chunk: int, bucket: int) -> jax.Array:
    """Stats of ``count`` whole chunks starting at chunk index ``first``: complex64 ``[count * C/B, Qb]``."""

    def chunk_step(_, j):
        xc, bc = chunk_at(x, bias, (first + j) * chunk, chunk)
        return None, _chunk_stats(q, xc, bc, bucket)

    # Fully unrolled: with a loop, XLA fuses the stats into the scan's in-place update, which XLA:CPU runs
    # on one thread; unrolled, they are stacked by a concatenation that runs on all of them.
    _, st = lax.scan(chunk_step, None, jnp.arange(count, dtype=jnp.int32), unroll=True)
    return st.reshape(count * (chunk // bucket), q.shape[0])


def _groups_stats(q, x, bias, first, count: int, *, chunk: int, bucket: int, merge: int) -> jax.Array:
    """Stats of ``count`` merge groups from group index ``first``, stacked by a scan (stored, not merged)."""
    if count == 1:
        return _chunks_stats(q, x, bias, first * merge, merge, chunk=chunk, bucket=bucket)
    _, st = lax.scan(
        lambda _, g: (None, _chunks_stats(q, x, bias, (first + g) * merge, merge, chunk=chunk, bucket=bucket)),
        None,
        jnp.arange(count),
    )
    return st.reshape(count * merge * (chunk // bucket), q.shape[0])


def _top_buckets(q, x, bias, tail, *, kk: int, chunk: int, bucket: int, merge: int, absorb_every: int):
    """Pass 1 over all items: the running top-``kk`` buckets ``(best, packed, bucket id)``, each ``[Qb, kk]``."""
    n = x.shape[0]
    qb = q.shape[0]
    per_chunk = chunk // bucket

    def groups(first, count):
        return _groups_stats(q, x, bias, first, count, chunk=chunk, bucket=bucket, merge=merge)

    run = (
        jnp.full((qb, kk), NEG_INF, jnp.float32),
        jnp.full((qb, kk), NEG_INF, jnp.float32),
        jnp.full((qb, kk), -1, jnp.int32),
    )
    n_chunks = n // chunk
    n_groups = n_chunks // merge
    # ``absorb_every`` groups' stats are stored, then merged by one ``top_k``: XLA:CPU's TopK has a large cost per
    # call that grows with k, so fewer, longer merges are cheaper (bounded by the memory of the stored stats).
    every = max(1, min(absorb_every, n_groups))
    n_super = n_groups // every
    if n_super:
        run, _ = lax.scan(
            lambda r, g: (_absorb(r, groups(g * every, every), g * every * merge * per_chunk), None),
            run,
            jnp.arange(n_super, dtype=jnp.int32),
        )
    if n_groups > n_super * every:
        first = n_super * every
        run = _absorb(run, groups(first, n_groups - first), first * merge * per_chunk)
    rest = []  # whole chunks after the last group, then the padded partial chunk (the only copied rows)
    if n_chunks > n_groups * merge:
        rest.append(
            _chunks_stats(q, x, bias, n_groups * merge, n_chunks - n_groups * merge, chunk=chunk, bucket=bucket)
        )
    if tail is not None:
        rest.append(_chunk_stats(q, *tail, bucket))
    if rest:
        run = _absorb(run, jnp.concatenate(rest), n_groups * merge * per_chunk)
    return run


# --------------------------------------------------------------------------------------------------
# Steps 2–4: candidates from the bucket bests, repair of the buckets that may hold more, tie ordering.


def _candidates(run, exclude, *, k: int, n: int, bucket: int):
    """The answer as read from the bucket bests ``run`` (each ``[Qb, K]``).

    Returns ``(ids int32[Qb, K], vals float32[Qb, K], kth float32[Qb])``: the best item of each bucket (``-1``
    for none), its score (``-inf`` where excluded) and the ``k``-th best of those scores.
    """
    best, packed, bid = run
    off = _f2key(packed) & (bucket - 1)
    ids = jnp.where(bid >= 0, bid * bucket + off, -1)
    ids = jnp.where(ids < n, ids, -1)
    cand = drop_excluded(best, ids, exclude)
    kth = _kth_of_sorted(cand, k)  # cand: the last merge's top_k order, with dropped exclusions at -inf
    return ids, cand, kth


def _rescore(q, x, bias, exclude, bid, need, rank, *, bucket: int, repair: int, per_query: int):
    """Rescores item by item the first ``repair`` buckets marked in ``need bool[Qb, K]``, each for its own query.

    ``rank int32[Qb, K]`` is a needed bucket's order within its query; ranks ``>= per_query`` are dropped (the
    caller falls back for them). Returns ``(taken bool[Qb, K], vals float32[Qb, per_query, B], ids int32[Qb,
    per_query, B])``: ``taken`` marks the rescored buckets of the running list, whose items are now in
    ``vals/ids`` (other slots ``-inf`` / ``-1``).
    """
    n = x.shape[0]
    qb, kk = need.shape
    on, p = lax.top_k(need.reshape(-1).astype(jnp.float32), repair)  # the first `repair` needed pairs
    on = on > 0
    owner, slot = p // kk, p % kk
    rids = bid.reshape(-1)[p][:, None] * bucket + jnp.arange(bucket, dtype=jnp.int32)  # [R, B]
    rids = jnp.where(on[:, None] & (rids < n), rids, -1)
    safe = jnp.maximum(rids, 0)
    s = plus_zero(jnp.einsum("rbd,rd->rb", x[safe], q[owner], preferred_element_type=jnp.float32))
    if bias is not None:
        s = s + bias[safe]
    s = drop_excluded(s, rids, None if exclude is None else exclude[owner])
    r = jnp.where(on, rank.reshape(-1)[p], per_query)  # ranks >= per_query are dropped (and fall back)
    ev = jnp.full((qb, per_query, bucket), NEG_INF, jnp.float32).at[owner, r].set(s, mode="drop")
    ei = jnp.full((qb, per_query, bucket), -1, jnp.int32).at[owner, r].set(rids, mode="drop")
    taken = jnp.zeros((qb, kk), bool).at[owner, slot].max(on & (r < per_query))
    return taken, ev, ei


def _order_answer(v, i, k: int):
    """The top-``k`` of a top-``(k + 1)`` ``v, i [Qb, k + 1]`` with each run of equal scores put in id order.

    Returns ``(v float32[Qb, k], i int32[Qb, k], unsure bool[Qb])``; ``unsure`` marks rows with a tie across the
    ``k``-th / ``(k+1)``-th place or a run of equal scores too long to order here.
    """
    boundary_tie = (v[:, k - 1] == v[:, k]) & (v[:, k] > NEG_INF)
    v, i = v[:, :k], _order_ties(v[:, :k], i[:, :k], _TIE_PASSES)
    unordered = jnp.any((v[:, :-1] == v[:, 1:]) & (i[:, :-1] > i[:, 1:]) & (v[:, 1:] > NEG_INF), axis=1)
    return v, i, boundary_tie | unordered


def bucket_block(
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
    """The ``"bucket"`` kernel on one query block (see the module docstring).

    Args:
        q: ``[Qb, d]`` prepared queries.
        x: ``[N, d]`` prepared items; ``bias``: ``float32[N] | None``.
        tail: ``padded_tail(x, bias, N - N % chunk, N, chunk)`` or ``None`` when ``chunk`` divides ``N``.
        exclude: ``int32[Qb, m] | None``; ``valid``: ``bool[Qb]``, the real (not padding) queries.
        k: results per query; ``kk``: buckets kept (``k + m``).
        chunk: items per chunk ``C`` (a multiple of ``bucket``); ``bucket``: items per bucket ``B``.
        merge: chunks per merge group; ``absorb_every``: groups stored and merged by one ``top_k``.
        repair: buckets rescored per query block at most.
        fallback: ``fallback(q, exclude)`` recomputes the block exactly when the fast path cannot vouch for it;
            ``None`` returns the unchecked fast result (tests and diagnostics only).

    Returns:
        ``(scores float32[Qb, k], ids int32[Qb, k])`` before the query offset.
    """
    qb = q.shape[0]
    run = _top_buckets(q, x, bias, tail, kk=kk, chunk=chunk, bucket=bucket, merge=merge, absorb_every=absorb_every)
    ids, cand, kth = _candidates(run, exclude, k=k, n=x.shape[0], bucket=bucket)
    # A bucket may hold more of the answer only if its second-best (upper bound) reaches the k-th best. Those
    # buckets (``repair`` per query block, shared) are rescored item by item for the one query that needs them.
    _, packed, bid = run
    need = valid[:, None] & (bid >= 0) & (packed >= kth[:, None])
    n_need = jnp.sum(need)
    per_query = min(_REPAIR_PER_QUERY, kk)
    repair = min(repair, qb * kk)
    rank = jnp.cumsum(need, axis=1, dtype=jnp.int32) - 1  # order of a needed bucket within its query

    def with_repair(_):
        taken, ev, ei = _rescore(
            q, x, bias, exclude, bid, need, rank, bucket=bucket, repair=repair, per_query=per_query
        )
        v, pos = lax.top_k(jnp.concatenate([jnp.where(taken, NEG_INF, cand), ev.reshape(qb, -1)], 1), k + 1)
        return v, jnp.take_along_axis(jnp.concatenate([ids, ei.reshape(qb, -1)], 1), pos, axis=1)

    def without_repair(_):
        v, pos = lax.top_k(jnp.concatenate([cand, jnp.full((qb, 1), NEG_INF, jnp.float32)], 1), k + 1)
        return v, jnp.take_along_axis(jnp.concatenate([ids, jnp.full((qb, 1), -1, jnp.int32)], 1), pos, axis=1)

    # The final top_k runs inside each branch: applied to the output of a cond, XLA:CPU lowers it to a full
    # stable sort (~100 ns per element: 7 ms per query block of 256 at k = 10) instead of its TopK routine.
    v, i = lax.cond(n_need > 0, with_repair, without_repair, None)
    # Equal scores inside the top-k: the candidates are not in id order, so order each run of equal scores by id.
    # A tie across the k-th / (k+1)-th place (or a run too long to order here) defers the block to the fallback.
    v, i, unsure = _order_answer(v, i, k)
    bad = (n_need > repair) | jnp.any(valid & (unsure | (rank[:, -1] >= per_query)))
    fast = (v, jnp.where(v > NEG_INF, i, -1))
    if fallback is None:  # tests / diagnostics only: the unchecked fast result
        return fast
    return lax.cond(bad, lambda _: fallback(q, exclude), lambda _: fast, None)


# --------------------------------------------------------------------------------------------------
# Planning: bucket size, repair capacity and merge grouping from the sizes.


def bucket_plan(n: int, kk: int, qb: int, bucket: int | None, repair: int | None) -> tuple[int, int]:
    """Bucket size ``B`` and per-block repair capacity for the ``"bucket"`` kernel (``None``: chosen here).

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


def default_merge_chunks(nq: int, n: int, chunk: int, qb: int) -> int:
    """Chunks per bucket merge: up to 16 (fewer, longer ``lax.top_k`` calls are cheaper per element), as long as
    the unrolled group's score blocks (``merge·chunk·qb`` floats, possibly all live) stay ≤ ``Q·N / 16``."""
    merge = 16
    while merge > 2 and merge * chunk * qb * 16 > nq * n:
        merge //= 2
    return merge


def default_absorb_every(
    nq: int, n: int, merge: int, per_chunk: int, qb: int, kk: int, accelerator: bool = False
) -> int:
    """Merge groups whose bucket bests are stored and then merged by one ``top_k``: about ``_ABSORB_TARGET``
    bests per query per merge, with the stored complex64 stats ``[every·merge·per_chunk, Qb]`` ≤ ``Q·N / 64``
    floats; 1 (merge every group) when ``kk <= _ABSORB_MIN_K``. On an accelerator, where each ``top_k`` call has a large
    fixed cost whatever k, the target is ``_ACCEL_ABSORB_TARGET`` bests for every k.

    XLA:CPU's TopK costs much more per element on short rows at large k, so at large k fewer, longer merges cut
    the selection time; at small k TopK is cheap and storing groups costs more than it saves (the stored stats go
    through a loop's in-place update, which XLA:CPU runs on one thread). Measurements: ``bench/RESULTS.md``.
    """
    if kk <= _ABSORB_MIN_K and not accelerator:
        return 1
    group = merge * per_chunk
    target = -(-(_ACCEL_ABSORB_TARGET if accelerator else _ABSORB_TARGET) // group)
    budget = (nq * n) // (64 * 2 * group * qb)
    return max(1, min(target, budget))

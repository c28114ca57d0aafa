"""Ranking metrics for the two evaluation protocols: full ranking and sampled (999 negatives).

Axis conventions in this file: ``U`` = users in a batch, ``K`` = length of a ranked top-k list (best first),
``P`` = padded number of held-out positives per user (full ranking) or number of held-out (user, item)
pairs (sampled protocol), ``n`` = negatives per pair. Item ids are non-negative; ``-1`` is padding
everywhere and never counts as a hit. Ranks are 1-based.

Definitions (all per user / per pair, then averaged over the valid ones):

Full ranking, from ``topk_indices [U, K]`` and ``positives [U, P]`` (``hit_r`` = 1 if the item at rank r
is a positive; ``|pos|`` = number of distinct non-padding positives):

* ``Recall@k    = Σ_{r≤k} hit_r / |pos|`` — the denominator is ``|pos|``, not ``min(|pos|, k)`` (the
  convention of the cold-start CDR literature), so Recall@k < 1 when |pos| > k.
* ``Precision@k = Σ_{r≤k} hit_r / k`` (k, even when the list is padded with -1).
* ``NDCG@k      = DCG@k / IDCG@k`` with ``DCG@k = Σ_{r≤k} hit_r / log2(r + 1)`` and
  ``IDCG@k = Σ_{r ≤ min(|pos|, k)} 1 / log2(r + 1)`` (binary relevance, several positives).
* ``HR@k        = 1`` if any hit in the first k, else 0.
* ``MRR@k       = 1 / (rank of the first hit)`` if that rank is ≤ k, else 0; ``MRR`` without suffix is
  MRR over the whole given list (``k = K``).

Users with no positive (or masked out by ``where``) are excluded from the averages and not counted.
Positives listed twice count once; an item listed twice in the top-k list counts as a hit only at its
first (best) rank. Recall@k, HR@k, MRR@k and DCG@k are non-decreasing in k; Precision@k and NDCG@k are
not monotone in general (NDCG@k can drop when a larger k raises IDCG more than DCG).

Sampled protocol (CDRIB, Cao et al. ICDE 2022): each held-out (user, item) pair is scored against ``n``
negatives drawn from the domain's training items (:func:`sample_negatives`), and

* ``rank = 1 + #{j : not (neg_j < pos)}`` — **ties count against the positive** (a negative scoring
  exactly the positive's score is ranked above it), and so does a NaN on either side.
* ``MRR = 1 / rank``; ``NDCG@k = 1 / log2(1 + rank)`` if rank ≤ k else 0; ``HR@k = [rank ≤ k]``;
* ``AUC = #{j : neg_j < pos} / n = (n - (rank - 1)) / n`` — the fraction of negatives scored strictly
  below the positive, so ties count as losses (never as wins or halves).

Example:
    >>> import jax.numpy as jnp
    >>> m = ranking_metrics(jnp.array([[3, 7, 1]]), jnp.array([[7, 1, 9, -1]]), ks=(1, 3))
    >>> [round(float(m[k]), 4) for k in ("Recall@3", "HR@1", "MRR")]  # hits at ranks 2, 3; |pos| = 3
    [0.6667, 0.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ranking_metrics",
    "ranking_metrics_per_user",
    "average_metrics",
    "sample_negatives",
    "sampled_rank",
    "sampled_metrics",
    "sampled_metrics_per_pair",
    "auc_from_ranks",
    "aggregate_seeds",
]


# --------------------------------------------------------------------------------------------------
# Checks and small helpers.


def _check_ks(ks: Sequence[int], max_k: int | None, what: str) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must hold at least one cutoff, got ()")
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"every k in ks must be a positive int, got ks={ks}")
        if max_k is not None and k > max_k:
            raise ValueError(f"k={k} exceeds the {what} length {max_k} (ks={ks})")
    return tuple(sorted({int(k) for k in ks}))


def _check_int(x: jax.Array, name: str, ndim: int) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
    return x


def _check_where(where: jax.Array | None, n: int, name: str) -> jax.Array:
    if where is None:
        return jnp.ones((n,), bool)
    where = jnp.asarray(where)
    if where.shape != (n,):
        raise ValueError(f"where must have shape ({n},) like the {name}, got {where.shape}")
    if where.dtype != jnp.bool_:
        raise TypeError(f"where must be boolean, got dtype {where.dtype}")
    return where


def _first_occurrence(x: jax.Array) -> jax.Array:
    """``bool[U, K]``: True where ``x[u, r]`` does not occur in ``x[u, :r]``. O(K log K) per row."""
    order = jnp.argsort(x, axis=1, stable=True)
    s = jnp.take_along_axis(x, order, axis=1)
    new = jnp.concatenate([jnp.ones_like(s[:, :1], bool), s[:, 1:] != s[:, :-1]], axis=1)
    inverse = jnp.argsort(order, axis=1)
    return jnp.take_along_axis(new, inverse, axis=1)


def _hits_and_counts(topk: jax.Array, positives: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``hit bool[U, K]`` (first occurrence of a positive, never -1) and ``n_pos int32[U]`` (distinct)."""
    pos = jnp.sort(positives, axis=1)  # padding (-1) first
    if pos.shape[1] == 0:
        return jnp.zeros(topk.shape, bool), jnp.zeros(topk.shape[:1], jnp.int32)
    distinct = jnp.concatenate([jnp.ones_like(pos[:, :1], bool), pos[:, 1:] != pos[:, :-1]], axis=1)
    n_pos = jnp.sum((pos >= 0) & distinct, axis=1, dtype=jnp.int32)
    idx = jax.vmap(jnp.searchsorted)(pos, topk)  # [U, K]
    found = jnp.take_along_axis(pos, jnp.minimum(idx, pos.shape[1] - 1), axis=1) == topk
    hit = found & (topk >= 0) & _first_occurrence(topk)
    return hit, n_pos


def average_metrics(
    per_example: Mapping[str, jax.Array], where: jax.Array, *, count_key: str = "count"
) -> dict[str, jax.Array]:
    """Averages per-example metrics over the valid examples; an all-invalid batch gives 0, never NaN.

    Args:
        per_example: name → ``float[N]`` values.
        where: ``bool[N]`` which examples count.
        count_key: key under which the number of valid examples (``int32`` scalar) is returned.

    Returns:
        name → ``float32`` scalar mean, plus ``count_key`` → number of valid examples.

    Example:
        >>> average_metrics({"HR@1": jnp.array([1.0, 0.0, 1.0])}, jnp.array([True, True, False]))
        {'HR@1': Array(0.5, dtype=float32), 'count': Array(2, dtype=int32)}
    """
    where = jnp.asarray(where)
    count = jnp.sum(where, dtype=jnp.int32)
    denom = jnp.maximum(count, 1).astype(jnp.float32)
    out = {}
    for name, v in per_example.items():
        if v.shape != where.shape:
            raise ValueError(f"metric {name!r} has shape {v.shape}, where has shape {where.shape}")
        out[name] = jnp.sum(jnp.where(where, v, 0.0).astype(jnp.float32)) / denom
    out[count_key] = count
    return out


# --------------------------------------------------------------------------------------------------
# Full ranking.


def ranking_metrics_per_user(
    topk_indices: jax.Array,
    positives: jax.Array,
    *,
    ks: Sequence[int] = (10, 20, 50),
    where: jax.Array | None = None,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Per-user Recall@k, Precision@k, NDCG@k, HR@k, MRR@k for several k from one top-K list.

    Use this when evaluating users in batches: concatenate the per-user values and the valid masks over
    batches, then call :func:`average_metrics` once.

    Args:
        topk_indices: ``int[U, K]`` ranked item ids, best first; ``-1`` is padding (never a hit).
        positives: ``int[U, P]`` held-out item ids, padded with ``-1``.
        ks: static cutoffs, each ``<= K``.
        where: optional ``bool[U]``; False drops a user (e.g. batch padding).

    Returns:
        ``(metrics, valid)``: ``metrics`` maps ``"Recall@k"``, ``"Precision@k"``, ``"NDCG@k"``, ``"HR@k"``,
        ``"MRR@k"`` (every k in ``ks``) and ``"MRR"`` (over all K) to ``float32[U]`` (0 for invalid users);
        ``valid`` is ``bool[U]`` = ``where`` and at least one positive.

    Raises:
        ValueError: on rank/shape mismatches or a k outside ``[1, K]``.
        TypeError: on non-integer ids or a non-boolean mask.
    """
    topk = _check_int(topk_indices, "topk_indices", 2)
    positives = _check_int(positives, "positives", 2)
    n_users, list_len = topk.shape
    if positives.shape[0] != n_users:
        raise ValueError(
            f"topk_indices {topk.shape} and positives {positives.shape} must have the same number of users"
        )
    ks = _check_ks(ks, list_len, "top-k list")
    where = _check_where(where, n_users, "users")
    if positives.dtype != topk.dtype:
        positives = positives.astype(jnp.promote_types(positives.dtype, topk.dtype))
        topk = topk.astype(positives.dtype)

    hit, n_pos = _hits_and_counts(topk, positives)
    valid = where & (n_pos > 0)
    hitf = hit.astype(jnp.float32)
    discount = 1.0 / jnp.log2(jnp.arange(2, list_len + 2, dtype=jnp.float32))  # [K], rank r -> 1/log2(r+1)
    ideal = jnp.cumsum(discount)  # [K], IDCG for min(|pos|, k) = 1..K
    cum_hits = jnp.cumsum(hitf, axis=1)  # [U, K]
    cum_dcg = jnp.cumsum(hitf * discount, axis=1)  # [U, K]
    any_hit = cum_hits > 0
    first = jnp.argmax(hit, axis=1)  # [U], 0 when there is no hit (guarded below)
    n_pos_f = jnp.maximum(n_pos, 1).astype(jnp.float32)

    out: dict[str, jax.Array] = {}
    for k in ks:
        hits_k = cum_hits[:, k - 1]
        idcg = ideal[jnp.clip(jnp.minimum(n_pos, k) - 1, 0, list_len - 1)]
        out[f"Recall@{k}"] = hits_k / n_pos_f
        out[f"Precision@{k}"] = hits_k / k
        out[f"NDCG@{k}"] = cum_dcg[:, k - 1] / idcg
        out[f"HR@{k}"] = any_hit[:, k - 1].astype(jnp.float32)
        out[f"MRR@{k}"] = jnp.where(any_hit[:, k - 1], 1.0 / (first + 1).astype(jnp.float32), 0.0)
    out["MRR"] = jnp.where(any_hit[:, -1], 1.0 / (first + 1).astype(jnp.float32), 0.0)
    out = {name: jnp.where(valid, v, 0.0) for name, v in out.items()}
    return out, valid


def ranking_metrics(
    topk_indices: jax.Array,
    positives: jax.Array,
    *,
    ks: Sequence[int] = (10, 20, 50),
    where: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Full-ranking metrics averaged over users with at least one positive.

    Args:
        topk_indices: ``int[U, K]`` ranked item ids, best first (seen items already excluded by the
            top-k kernel); ``-1`` padding.
        positives: ``int[U, P]`` held-out item ids padded with ``-1``.
        ks: static cutoffs, each ``<= K``; one top-``max(ks)`` list serves all of them.
        where: optional ``bool[U]`` user mask.

    Returns:
        ``{"Recall@k", "Precision@k", "NDCG@k", "HR@k", "MRR@k" for k in ks, "MRR": float32 scalars,
        "num_users": int32 scalar}``; the means are 0 (not NaN) when no user is valid.

    Example:
        >>> topk = jnp.array([[5, 2, 9], [4, 0, -1]])
        >>> pos = jnp.array([[2, 9], [-1, -1]])  # second user has no positive: excluded
        >>> m = jax.jit(ranking_metrics, static_argnames="ks")(topk, pos, ks=(1, 3))
        >>> float(m["Recall@3"]), float(m["Precision@1"]), int(m["num_users"])
        (1.0, 0.0, 1)
    """
    per_user, valid = ranking_metrics_per_user(topk_indices, positives, ks=ks, where=where)
    return average_metrics(per_user, valid, count_key="num_users")


# --------------------------------------------------------------------------------------------------
# Sampled protocol.


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")


def _collisions(draws: np.ndarray, rows: np.ndarray, excl_codes: np.ndarray, width: int) -> np.ndarray:
    """``bool`` like ``draws [R, n]``: True where ``draws[r, j]`` is excluded for pair ``rows[r]``."""
    codes = rows[:, None] * width + draws
    return np.isin(codes, excl_codes)


def sample_negatives(
    seed: int | np.random.Generator,
    n_pairs: int,
    candidate_items: np.ndarray,
    n_neg: int = 999,
    *,
    exclude: np.ndarray | None = None,
    replace: bool = True,
) -> np.ndarray:
    """Draws negatives for the sampled protocol (host side, vectorized numpy, deterministic per seed).

    Each pair gets ``n_neg`` items drawn uniformly from the *distinct* ids in ``candidate_items`` (pass the
    domain's training items; duplicates there do not raise an item's probability). ``replace=True`` (the
    default) draws i.i.d., so a row may repeat a negative, as uniform draws do; ``replace=False`` draws
    ``n_neg`` distinct items per row.

    ``exclude`` (``int[n_pairs]`` or ``int[n_pairs, m]`` padded with ``-1``) lists, per pair, items that
    must never be drawn: pass the held-out positive items (what the evaluation driver does; recommended) and
    every collision is resampled, so the rank of the positive is never disturbed by a copy of itself.
    With ``exclude=None`` draws are purely uniform and a draw equal to the positive scores a tie, which
    :func:`sampled_rank` counts against the positive (at 999 negatives out of ~10k items, ~10% of pairs
    would meet one such collision).

    Args:
        seed: int seed or a ``numpy.random.Generator`` (consumed).
        n_pairs: number of (user, item) pairs.
        candidate_items: ``int[N]`` pool of candidate ids (non-negative).
        n_neg: negatives per pair.
        exclude: optional ``int[n_pairs]`` / ``int[n_pairs, m]`` ids never drawn for that pair.
        replace: draw with (True) or without (False) replacement within a row.

    Returns:
        ``int64[n_pairs, n_neg]`` negative item ids; the same for the same seed and inputs.

    Raises:
        ValueError: on bad shapes, an empty pool, or a row whose exclusions leave too few candidates.

    Example:
        >>> neg = sample_negatives(0, 3, np.arange(100), 5, exclude=np.array([1, 2, 3]))
        >>> neg.shape, bool((neg != np.array([[1], [2], [3]])).all())
        ((3, 5), True)
    """
    rng = _rng(seed)
    n_pairs, n_neg = int(n_pairs), int(n_neg)
    if n_pairs < 0 or n_neg < 0:
        raise ValueError(f"n_pairs and n_neg must be >= 0, got n_pairs={n_pairs}, n_neg={n_neg}")
    pool = np.asarray(candidate_items)
    if pool.ndim != 1 or (pool.size and not np.issubdtype(pool.dtype, np.integer)):
        raise ValueError(f"candidate_items must be a 1-D integer array, got shape {pool.shape} {pool.dtype}")
    pool = np.unique(pool.astype(np.int64))
    if pool.size == 0:
        raise ValueError("candidate_items is empty: nothing to draw negatives from")
    if pool[0] < 0:
        raise ValueError(f"candidate_items must be non-negative ids, got {pool[0]}")
    width = int(pool[-1]) + 1

    excl_codes = np.empty((0,), np.int64)
    n_excluded = np.zeros((n_pairs,), np.int64)
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.ndim == 1:
            ex = ex[:, None]
        if ex.ndim != 2 or ex.shape[0] != n_pairs:
            raise ValueError(f"exclude must have shape ({n_pairs},) or ({n_pairs}, m), got {np.asarray(exclude).shape}")
        ex = ex.astype(np.int64)
        rows = np.broadcast_to(np.arange(n_pairs)[:, None], ex.shape)
        keep = np.isin(ex, pool)  # only excluded ids that could be drawn matter (-1 never can)
        excl_codes = np.unique(rows[keep] * width + ex[keep])
        n_excluded = np.bincount(excl_codes // width, minlength=n_pairs)
    available = pool.size - n_excluded
    need = 1 if replace else n_neg
    if n_neg > 0 and n_pairs > 0 and available.min() < need:
        bad = int(np.argmin(available))
        raise ValueError(
            f"pair {bad}: only {available[bad]} candidate items remain after exclusions, "
            f"need {need} (n_neg={n_neg}, replace={replace}, pool size {pool.size})"
        )
    if n_pairs == 0 or n_neg == 0:
        return np.zeros((n_pairs, n_neg), np.int64)

    if replace:
        draws = pool[rng.integers(0, pool.size, size=(n_pairs, n_neg))]
        if excl_codes.size:
            rows = np.arange(n_pairs)
            bad = _collisions(draws, rows, excl_codes, width)
            while bad.any():  # geometric: each round keeps a fraction n_excluded / pool.size
                r, c = np.nonzero(bad)
                draws[r, c] = pool[rng.integers(0, pool.size, size=r.size)]
                bad[r, c] = np.isin(r * width + draws[r, c], excl_codes)
        return draws

    # Without replacement: the n_neg smallest of uniform random keys; excluded items get key +inf.
    out = np.empty((n_pairs, n_neg), np.int64)
    chunk = max(1, 4_000_000 // pool.size)
    for start in range(0, n_pairs, chunk):
        stop = min(n_pairs, start + chunk)
        keys = rng.random((stop - start, pool.size))
        if excl_codes.size:
            rows = np.arange(start, stop)
            keys[_collisions(np.broadcast_to(pool, keys.shape), rows, excl_codes, width)] = np.inf
        part = (
            np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]
            if n_neg < pool.size
            else (np.argsort(keys, axis=1)[:, :n_neg])
        )
        out[start:stop] = pool[part]
    return out


def sampled_rank(pos_scores: jax.Array, neg_scores: jax.Array, *, neg_mask: jax.Array | None = None) -> jax.Array:
    """1-based rank of each positive among its negatives; ties (and NaNs) count against the positive.

    ``rank = 1 + #{j : neg_mask[j] and not (neg_scores[j] < pos_score)}``.

    Args:
        pos_scores: ``float[P]`` score of each held-out pair's positive item.
        neg_scores: ``float[P, n]`` scores of its negatives.
        neg_mask: optional ``bool[P, n]``; False marks padding negatives, which are ignored.

    Returns:
        ``int32[P]`` ranks in ``[1, n + 1]``.

    Example:
        >>> sampled_rank(jnp.array([0.5, 0.5]), jnp.array([[0.1, 0.5, 0.9], [0.1, 0.2, 0.3]]))
        Array([3, 1], dtype=int32)
    """
    pos_scores = jnp.asarray(pos_scores)
    neg_scores = jnp.asarray(neg_scores)
    if pos_scores.ndim != 1 or neg_scores.ndim != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(
            f"expected pos_scores [P] and neg_scores [P, n], got {pos_scores.shape} and {neg_scores.shape}"
        )
    against = ~(neg_scores < pos_scores[:, None])
    if neg_mask is not None:
        neg_mask = jnp.asarray(neg_mask)
        if neg_mask.shape != neg_scores.shape:
            raise ValueError(f"neg_mask must have shape {neg_scores.shape}, got {neg_mask.shape}")
        if neg_mask.dtype != jnp.bool_:
            raise TypeError(f"neg_mask must be boolean, got dtype {neg_mask.dtype}")
        against = against & neg_mask
    return 1 + jnp.sum(against, axis=1, dtype=jnp.int32)


def auc_from_ranks(ranks: jax.Array, *, num_negatives: int | jax.Array) -> jax.Array:
    """Per-pair AUC from ranks: the fraction of negatives scored strictly below the positive.

    With ranks from :func:`sampled_rank`, ``AUC = (n - (rank - 1)) / n``: ties count as losses.

    Args:
        ranks: ``int[P]`` 1-based ranks.
        num_negatives: ``n``, an int or ``int[P]`` (when rows have different numbers of real negatives).

    Returns:
        ``float32[P]`` in ``[0, 1]``; 0 where ``n = 0``.
    """
    ranks = _check_int(ranks, "ranks", 1)
    n = jnp.asarray(num_negatives, jnp.float32)
    if n.ndim not in (0, 1) or (n.ndim == 1 and n.shape != ranks.shape):
        raise ValueError(f"num_negatives must be a scalar or shape {ranks.shape}, got {n.shape}")
    wins = n - (ranks - 1).astype(jnp.float32)
    return jnp.where(n > 0, wins / jnp.maximum(n, 1.0), 0.0)


def sampled_metrics_per_pair(
    ranks: jax.Array,
    *,
    ks: Sequence[int] = (1, 5, 10),
    num_negatives: int | jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Per-pair MRR, NDCG@k, HR@k (and AUC when ``num_negatives`` is given) from 1-based ranks.

    Args:
        ranks: ``int[P]`` ranks from :func:`sampled_rank`.
        ks: static cutoffs.
        num_negatives: optional ``n`` (int or ``int[P]``); adds ``"AUC"``.

    Returns:
        ``{"MRR", "NDCG@k", "HR@k" for k in ks[, "AUC"]}`` → ``float32[P]``.
    """
    ranks = _check_int(ranks, "ranks", 1)
    ks = _check_ks(ks, None, "")
    r = ranks.astype(jnp.float32)
    out = {"MRR": 1.0 / r}
    gain = 1.0 / jnp.log2(1.0 + r)
    for k in ks:
        inside = ranks <= k
        out[f"NDCG@{k}"] = jnp.where(inside, gain, 0.0)
        out[f"HR@{k}"] = inside.astype(jnp.float32)
    if num_negatives is not None:
        out["AUC"] = auc_from_ranks(ranks, num_negatives=num_negatives)
    return out


def sampled_metrics(
    ranks: jax.Array,
    *,
    ks: Sequence[int] = (1, 5, 10),
    where: jax.Array | None = None,
    num_negatives: int | jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Sampled-protocol metrics averaged over pairs.

    Args:
        ranks: ``int[P]`` 1-based ranks from :func:`sampled_rank`.
        ks: static cutoffs (CDRIB reports 1, 5, 10).
        where: optional ``bool[P]`` pair mask (padding pairs False).
        num_negatives: optional ``n``; adds ``"AUC"`` (ties as losses).

    Returns:
        ``{"MRR", "NDCG@k", "HR@k"[, "AUC"]: float32 scalars, "num_pairs": int32}``; 0 when no pair is valid.

    Example:
        >>> m = sampled_metrics(jnp.array([1, 3, 20]), ks=(1, 10))
        >>> round(float(m["MRR"]), 4), round(float(m["HR@10"]), 4)  # MRR = (1 + 1/3 + 1/20) / 3
        (0.4611, 0.6667)
    """
    ranks = _check_int(ranks, "ranks", 1)
    where = _check_where(where, ranks.shape[0], "ranks")
    per_pair = sampled_metrics_per_pair(ranks, ks=ks, num_negatives=num_negatives)
    return average_metrics(per_pair, where, count_key="num_pairs")


# --------------------------------------------------------------------------------------------------
# Several seeds.


def aggregate_seeds(results: Sequence[Mapping[str, float]], *, ddof: int = 1) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric over runs with different seeds (host side).

    Args:
        results: one metrics mapping per seed (values are scalars: floats or 0-d arrays); every mapping
            must have the same keys.
        ddof: delta degrees of freedom of the std; 1 (default) is the sample std. With a single run the
            std is reported as 0.0 (not NaN).

    Returns:
        ``{name: {"mean": float, "std": float, "n": int}}`` in the key order of the first run.

    Example:
        >>> aggregate_seeds([{"HR@10": 0.2}, {"HR@10": 0.4}])["HR@10"]
        {'mean': 0.30000000000000004, 'std': 0.14142135623730953, 'n': 2}
    """
    results = list(results)
    if not results:
        raise ValueError("results is empty: need at least one run to aggregate")
    names = list(results[0].keys())
    for i, r in enumerate(results[1:], start=1):
        if set(r.keys()) != set(names):
            missing = sorted(set(names) - set(r.keys()))
            extra = sorted(set(r.keys()) - set(names))
            raise ValueError(f"run {i} has different metrics than run 0: missing {missing}, extra {extra}")
    out = {}
    for name in names:
        vals = np.array([float(np.asarray(r[name])) for r in results], np.float64)
        std = float(np.std(vals, ddof=ddof)) if vals.size > ddof else 0.0
        out[name] = {"mean": float(vals.mean()), "std": std, "n": int(vals.size)}
    return out

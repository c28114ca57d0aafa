"""The sampled evaluation protocol (CDRIB, Cao et al. ICDE 2022): negatives, ranks among them, metrics, and the
mean and spread over seeds.

Axis conventions in this file: ``P`` = held-out (user, item) pairs, ``n`` = negatives per pair. Item ids are
non-negative; ranks are 1-based.

Each held-out pair is scored against ``n`` negatives drawn from the domain's training items
(:func:`sample_negatives`), and

* ``rank = 1 + #{j : not (neg_j < pos)}`` — **ties count against the positive** (a negative scoring
  exactly the positive's score is ranked above it), and so does a NaN on either side.
* ``MRR = 1 / rank``; ``NDCG@k = 1 / log2(1 + rank)`` if rank ≤ k else 0; ``HR@k = [rank ≤ k]``;
* ``AUC = #{j : neg_j < pos} / n = (n - (rank - 1)) / n`` — the fraction of negatives scored strictly
  below the positive, so ties count as losses (never as wins or halves).

Per-pair values are averaged over the valid pairs (:func:`jaxrec.metrics.ranking.average_metrics`); one run per
negative-sampling seed, summarised by :func:`aggregate_seeds`.

Example:
    >>> import jax.numpy as jnp
    >>> ranks = sampled_rank(jnp.array([0.9, 0.2]), jnp.array([[0.1, 0.5], [0.2, 0.3]]))  # tie counts against
    >>> ranks.tolist(), round(float(sampled_metrics(ranks, ks=(1,))["HR@1"]), 4)
    ([1, 3], 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.metrics.ranking import average_metrics, check_int, check_ks, check_where

__all__ = [
    "aggregate_seeds",
    "auc_from_ranks",
    "sample_negatives",
    "sampled_metrics",
    "sampled_metrics_per_pair",
    "sampled_rank",
]


# --------------------------------------------------------------------------------------------------
# Negatives.


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")


_BLOCK = 1 << 22  # draws per block of the collision check


def _collisions(draws: np.ndarray, rows: np.ndarray, excl_codes: np.ndarray, width: int) -> np.ndarray:
    """``bool`` like ``draws [R, n]``: True where ``draws[r, j]`` is excluded for pair ``rows[r]``.

    Rows are checked in blocks of about :data:`_BLOCK` draws, so the temporaries stay small whatever ``R``.
    """
    out = np.empty(draws.shape, bool)
    step = max(1, _BLOCK // max(1, draws.shape[1]))
    for lo in range(0, draws.shape[0], step):
        out[lo : lo + step] = np.isin(rows[lo : lo + step, None] * width + draws[lo : lo + step], excl_codes)
    return out


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

    The draws, for a given seed (``rng = np.random.default_rng(seed)``, ``pool = np.unique(candidate_items)``):
    with ``replace=True``, ``pool[rng.integers(0, pool.size, size=(n_pairs, n_neg))]``; then, while any draw is
    excluded for its pair, all such draws are replaced at once, in row-major order, by
    ``pool[rng.integers(0, pool.size, size=count)]``. With ``replace=False``, each row takes the ``n_neg`` items
    of ``pool`` with the smallest keys of ``rng.random`` (excluded items never), rows drawn in chunks.

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
        draws = rng.integers(0, pool.size, size=(n_pairs, n_neg))
        np.take(pool, draws, out=draws, mode="clip")  # in place: ids, not positions (all positions are valid)
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


# --------------------------------------------------------------------------------------------------
# Ranks and metrics.


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
    ranks = check_int(ranks, "ranks", 1)
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
    ranks = check_int(ranks, "ranks", 1)
    ks = check_ks(ks, None, "")
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
    ranks = check_int(ranks, "ranks", 1)
    where = check_where(where, ranks.shape[0], "ranks")
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

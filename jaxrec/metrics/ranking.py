"""Full-ranking metrics: Recall, Precision, NDCG, HR and MRR at several cutoffs from one top-K list per user,
plus the argument checks and the masked average that :mod:`jaxrec.metrics.sampled` shares.

Axis conventions in this file: ``U`` = users in a batch, ``K`` = length of a ranked top-k list (best first),
``P`` = padded number of held-out positives per user, ``N`` = examples averaged by :func:`average_metrics`.
Item ids are non-negative; ``-1`` is padding everywhere and never counts as a hit. Ranks are 1-based.

Definitions (per user, then averaged over the valid users), from ``topk_indices [U, K]`` and
``positives [U, P]`` (``hit_r`` = 1 if the item at rank r is a positive; ``|pos|`` = number of distinct
non-padding positives):

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
    "average_metrics",
    "check_int",
    "check_ks",
    "check_where",
    "ranking_metrics",
    "ranking_metrics_per_user",
]


# --------------------------------------------------------------------------------------------------
# Checks (run at trace time, on shapes and dtypes only) and small helpers.


def check_ks(ks: Sequence[int], max_k: int | None, what: str) -> tuple[int, ...]:
    """Cutoffs ``ks`` (an int or a non-empty sequence of positive ints) as a sorted tuple without repeats.

    Args:
        ks: the cutoffs.
        max_k: the largest allowed cutoff (the list length), or None for no bound.
        what: what ``max_k`` is the length of, for the message (e.g. ``"top-k list"``).

    Raises:
        ValueError: an empty ``ks``, a cutoff that is not a positive int, or one above ``max_k``.
    """
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


def check_int(x: jax.Array, name: str, ndim: int) -> jax.Array:
    """``x`` as a jax array; ``ValueError`` unless it has rank ``ndim``, ``TypeError`` unless its dtype is integer."""
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
    return x


def check_where(where: jax.Array | None, n: int, name: str) -> jax.Array:
    """The ``bool[n]`` mask ``where`` (all True when None); ``ValueError``/``TypeError`` on another shape or dtype.

    ``name`` says what the ``n`` rows are (``"users"``, ``"ranks"``), for the message.
    """
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
    topk = check_int(topk_indices, "topk_indices", 2)
    positives = check_int(positives, "positives", 2)
    n_users, list_len = topk.shape
    if positives.shape[0] != n_users:
        raise ValueError(
            f"topk_indices {topk.shape} and positives {positives.shape} must have the same number of users"
        )
    ks = check_ks(ks, list_len, "top-k list")
    where = check_where(where, n_users, "users")
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
        The means,
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

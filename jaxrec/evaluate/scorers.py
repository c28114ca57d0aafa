"""Scorers and the jitted batch functions that evaluate them.

Axis conventions in this file: ``B`` = users (or held-out pairs) in one batch, ``N`` = items of the scored
domain, ``d`` = embedding width, ``k`` = top-k list length, ``m`` = padded number of excluded items per user,
``n`` = negatives per pair. Item ids are the domain's contiguous ids; ``-1`` is padding everywhere.

A :class:`Scorer` scores users against every item of one domain: ``users_fn(users [B]) @ items.T``, or, with
``items=None``, ``users_fn`` returns the dense ``[B, N]`` scores itself. :func:`topk_batch` (full ranking)
and :func:`pair_batch` (sampled protocol) score one fixed-shape batch; :func:`jit_for` hands out their jitted
versions, built once at import and shared by every scorer over module-level code (a
:class:`jax.tree_util.Partial`, as the scorers built here are), so repeated evaluations compile once.

Non-finite values: :func:`check_scorer` checks a scorer's item table once (no ``NaN`` / ``±inf``); the batch
functions return, with their results, a ``bool[B]`` flag per user that is False where the user's vector holds
``NaN`` / ``±inf`` (dense scores: a ``NaN``), computed in the same compiled program (one reduction over ``[B, d]``
or ``[B, N]``), and the drivers raise :func:`nonfinite_users_error` when a flag of a real (not padding) row is off.

Example:
    >>> s = embedding_scorer(jnp.eye(3), 2.0 * jnp.eye(3))
    >>> (s.users_fn(jnp.array([1])) @ s.items.T).tolist()
    [[0.0, 2.0, 0.0]]
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import metrics, topk
from jaxrec.topk.inputs import describe_rows, require_finite

__all__ = [
    "Scorer",
    "batch_rows",
    "batches",
    "check_flags",
    "check_scorer",
    "embedding_scorer",
    "grouped_pairs",
    "jit_for",
    "nonfinite_users_error",
    "ones_column",
    "pad_rows",
    "pair_batch",
    "popularity_scorer",
    "take_rows",
    "topk_batch",
    "user_batches",
    "user_pair_batch",
]


# --------------------------------------------------------------------------------------------------
# Scorers.


class Scorer(NamedTuple):
    """Scores users against all items of one domain.

    Attributes:
        users_fn: jittable ``int32[B] -> float[B, d]`` user vectors (closing over its parameters), or, when
            ``items`` is None, ``int32[B] -> float[B, N]`` dense scores. Prefer
            ``jax.tree_util.Partial(module_level_fn, *params)`` to a closure: the parameters are then traced
            arguments, not constants compiled into the program, and repeated evaluations (e.g. on valid after
            every epoch) reuse one compilation; a closure is recompiled at every call.
        items: ``float[N, d]`` item vectors (scores are ``users_fn(u) @ items.T``), or None.
    """

    users_fn: Callable[[jax.Array], jax.Array]
    items: jax.Array | None = None


def take_rows(table: jax.Array, users: jax.Array) -> jax.Array:
    """``table [U, d]`` rows of ``users int[B]``, ``[B, d]``: the ``users_fn`` of :func:`embedding_scorer`.

    Run directories name it (``runs.save_run`` stores a scorer's function by its import path).
    """
    return table[users]


def ones_column(users: jax.Array) -> jax.Array:
    """``float32[B, 1]`` ones: the ``users_fn`` of :func:`popularity_scorer` (every user scores ``items[:, 0]``).

    Run directories name it (``runs.save_run`` stores a scorer's function by its import path).
    """
    return jnp.ones(users.shape + (1,), jnp.float32)


def embedding_scorer(user_table: jax.Array, item_table: jax.Array) -> Scorer:
    """A dot-product scorer from embedding tables.

    Args:
        user_table: ``float[U, d]`` user vectors (row = user id).
        item_table: ``float[N, d]`` item vectors of the domain.

    Returns:
        ``Scorer`` with ``users_fn(u) = user_table[u]`` and ``items = item_table``.

    Raises:
        ValueError: if the tables are not rank 2 or their widths differ.

    Example:
        >>> s = embedding_scorer(jnp.eye(3), 2.0 * jnp.eye(3))
        >>> (s.users_fn(jnp.array([1])) @ s.items.T).tolist()
        [[0.0, 2.0, 0.0]]
    """
    user_table = jnp.asarray(user_table)
    item_table = jnp.asarray(item_table)
    if user_table.ndim != 2 or item_table.ndim != 2 or user_table.shape[1] != item_table.shape[1]:
        raise ValueError(
            f"expected user_table [U, d] and item_table [N, d], got {user_table.shape} and {item_table.shape}"
        )
    return Scorer(jax.tree_util.Partial(take_rows, user_table), item_table)


def popularity_scorer(counts: jax.Array) -> Scorer:
    """Scores every user's items by their train popularity (the same ranking for everyone).

    Args:
        counts: ``[N]`` interaction counts (e.g. ``ds.item_popularity(domain)``).

    Returns:
        ``Scorer`` whose scores are ``counts`` as float32 (an embedding scorer of width 1).

    Example:
        >>> s = popularity_scorer(np.array([3, 0, 7]))
        >>> (s.users_fn(jnp.array([0, 5])) @ s.items.T).tolist()
        [[3.0, 0.0, 7.0], [3.0, 0.0, 7.0]]
    """
    counts = jnp.asarray(counts, jnp.float32)
    if counts.ndim != 1:
        raise ValueError(f"counts must have shape [N], got {counts.shape}")
    return Scorer(jax.tree_util.Partial(ones_column), counts[:, None])


def _as_partial(fn: Callable) -> jax.tree_util.Partial:
    """``fn`` as a pytree that jit can take as an argument (its arrays traced, its code static)."""
    return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)


def _user_scores(fn, items, users, *, n_items: int) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """Calls ``fn`` and checks its output: ``([B, d], items, finite bool[B])`` or ``([B, N], None, finite)``.

    ``finite`` is False for the rows holding ``NaN`` or ``±inf`` (vectors) or ``NaN`` (dense scores, where
    ``-inf`` may mark an item out).
    """
    out = fn(users)
    if not hasattr(out, "ndim"):
        raise TypeError(f"users_fn must return an array, got {type(out).__name__} for users {users.shape}")
    if items is None:
        if out.ndim != 2 or out.shape != (users.shape[0], n_items):
            raise ValueError(
                f"a dense scorer (items=None) must return [B, N] = {(users.shape[0], n_items)} scores for "
                f"users {users.shape}, got {out.shape}"
            )
    elif out.ndim != 2 or out.shape != (users.shape[0], items.shape[1]):
        raise ValueError(
            f"users_fn must return [B, d] = {(users.shape[0], items.shape[1])} for users {users.shape} and "
            f"items {items.shape}, got {out.shape}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"users_fn must return floating scores/vectors, got dtype {out.dtype}")
    finite = ~jnp.any(jnp.isnan(out), axis=1) if items is None else jnp.all(jnp.isfinite(out), axis=1)
    return out, items, finite


def nonfinite_users_error(users: np.ndarray, finite: np.ndarray, *, dense: bool, where: str) -> ValueError:
    """The error for user rows whose vectors (or dense scores) were not finite.

    Args:
        users: ``int[R]`` user id of each evaluated row (pairs repeat their user).
        finite: ``bool[R]`` flags from the batch functions (real rows only, no padding).
        dense: the scorer returns dense scores (the message then speaks of ``NaN`` scores).
        where: what was evaluated, e.g. ``"target='target', split='test'"``.
    """
    bad = np.unique(np.asarray(users)[~np.asarray(finite, bool)])
    what = "NaN scores" if dense else "user vectors holding NaN or infinite values"
    return ValueError(
        f"Scorer.users_fn returned {what} for {describe_rows(bad, np.unique(users).size, 'users')} in {where}; "
        "their rankings are undefined (a diverged model or a corrupted checkpoint?). Fix the scorer, or pass "
        "check_finite=False to skip this check"
    )


def check_scorer(scorer: Scorer, n_items: int, domain: str, *, check_finite: bool = True) -> Scorer:
    """``scorer`` with its ``users_fn`` as a :class:`jax.tree_util.Partial` and its ``items`` as a jax array.

    With ``check_finite``, concrete ``items`` are checked for ``NaN`` / ``±inf`` (one fused pass).

    Raises:
        TypeError: not a :class:`Scorer`, a ``users_fn`` that is not callable, or non-floating ``items``.
        ValueError: ``items`` that is not ``[N=n_items, d]`` for ``domain``, or holds non-finite values (the
            message names the first rows).
    """
    if not isinstance(scorer, Scorer):
        raise TypeError(f"expected an evaluate.Scorer, got {type(scorer).__name__}")
    if not callable(scorer.users_fn):
        raise TypeError(f"Scorer.users_fn must be callable, got {type(scorer.users_fn).__name__}")
    items = scorer.items
    if items is not None:
        items = jnp.asarray(items)
        if items.ndim != 2 or items.shape[0] != n_items:
            raise ValueError(f"Scorer.items must have shape [N={n_items}, d] for domain {domain!r}, got {items.shape}")
        if not jnp.issubdtype(items.dtype, jnp.floating):
            raise TypeError(f"Scorer.items must be floating, got dtype {items.dtype}")
        if check_finite:
            require_finite((f"Scorer.items [N, d] of domain {domain!r}", items))
    return Scorer(_as_partial(scorer.users_fn), items)


# --------------------------------------------------------------------------------------------------
# Jitted batch functions (fixed shapes: one compilation per scorer code and configuration).


def topk_batch(fn, items, users, exclude, *, k: int, n_items: int):
    """Top-``k`` of ``users [B]`` over all ``N`` items, leaving out ``exclude [B, m]``.

    Args:
        fn: the scorer's ``users_fn`` (a :class:`jax.tree_util.Partial`, see :func:`check_scorer`).
        items: the scorer's ``float[N, d]`` item vectors, or None for a dense scorer.
        users: ``int32[B]`` user ids.
        exclude: ``int32[B, m]`` item ids left out of each user's list, ``-1`` padded.
        k: list length (static).
        n_items: ``N`` (static).

    Returns:
        ``(scores float32[B, k], indices int32[B, k], finite bool[B])``, best first; ``finite`` is False for users
        whose vector holds ``NaN`` / ``±inf`` (dense scores: a ``NaN``).
    """
    q, items, finite = _user_scores(fn, items, users, n_items=n_items)
    if items is None:
        return (*topk.scores_topk(q, k, exclude=exclude), finite)
    return (*topk.similarity_topk(q, items, k, metric="dot", exclude=exclude), finite)


def pair_batch(fn, items, users, candidates, *, n_items: int, ks: tuple[int, ...]):
    """Per-pair sampled metrics of ``users [B]``: ``candidates [B, 1 + n]`` = positive, then negatives.

    Args:
        fn, items: as for :func:`topk_batch`.
        users: ``int32[B]`` user id of each pair.
        candidates: ``int32[B, 1 + n]`` item ids: the pair's held-out item, then its ``n`` negatives.
        n_items: ``N`` (static).
        ks: cutoffs (static).

    Returns:
        ``({"MRR", "NDCG@k", "HR@k", "AUC"} -> float32[B], finite bool[B])`` (ties count against the positive;
        ``finite`` as for :func:`topk_batch`).
    """
    q, items, finite = _user_scores(fn, items, users, n_items=n_items)
    if items is None:
        scores = jnp.take_along_axis(q, candidates, axis=1)
    else:
        scores = topk.candidate_scores(q, items, candidates, metric="dot")
    ranks = metrics.sampled_rank(scores[:, 0], scores[:, 1:])
    return metrics.sampled_metrics_per_pair(ranks, ks=ks, num_negatives=candidates.shape[1] - 1), finite


def user_pair_batch(fn, items, users, rows, candidates, *, n_items: int, ks: tuple[int, ...]):
    """:func:`pair_batch` for a dense scorer, scoring each user once for all their pairs.

    Args:
        fn, items: as for :func:`topk_batch` (``items`` is None: ``fn`` returns ``[U, N]`` scores).
        users: ``int32[U]`` distinct users of the batch.
        rows: ``int32[B]`` position in ``users`` of each pair's user.
        candidates: ``int32[B, 1 + n]`` as for :func:`pair_batch`.
        n_items, ks: as for :func:`pair_batch`.

    Returns:
        ``({"MRR", "NDCG@k", "HR@k", "AUC"} -> float32[B], finite bool[B])``, as :func:`pair_batch` returns them.
    """
    q, _, finite = _user_scores(fn, items, users, n_items=n_items)
    scores = q[rows[:, None], candidates]
    ranks = metrics.sampled_rank(scores[:, 0], scores[:, 1:])
    per_pair = metrics.sampled_metrics_per_pair(ranks, ks=ks, num_negatives=candidates.shape[1] - 1)
    return per_pair, finite[rows]


def grouped_pairs(pair_users: np.ndarray, max_users: int, max_pairs: int):
    """Cuts pairs ordered by user into batches of at most ``max_users`` distinct users and ``max_pairs`` pairs.

    Yields ``(lo, hi, users int32[u], rows int32[hi - lo])``: pairs ``[lo, hi)``, their distinct users in order,
    and each pair's position in ``users`` (a user with more than ``max_pairs`` pairs spans several batches).
    """
    n = pair_users.shape[0]
    starts = np.flatnonzero(np.r_[True, pair_users[1:] != pair_users[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n]
    lo = pos = 0
    users: list[int] = []
    counts: list[int] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        while s < e:
            if len(users) == max_users or pos - lo == max_pairs:
                yield lo, pos, np.asarray(users, np.int32), np.repeat(np.arange(len(users), dtype=np.int32), counts)
                lo, users, counts = pos, [], []
            take = min(e - s, max_pairs - (pos - lo))
            users.append(int(pair_users[s]))
            counts.append(take)
            s, pos = s + take, pos + take
    if pos > lo:
        yield lo, pos, np.asarray(users, np.int32), np.repeat(np.arange(len(users), dtype=np.int32), counts)


_STATIC = {topk_batch: ("k", "n_items"), pair_batch: ("n_items", "ks"), user_pair_batch: ("n_items", "ks")}
_JITTED = {f: jax.jit(f, static_argnames=names) for f, names in _STATIC.items()}


def _is_module_level(users_fn) -> bool:
    """True for a Partial over a plain module-level function (no closure) whose leaves are all arrays."""
    fn = users_fn.func if isinstance(users_fn, jax.tree_util.Partial) else users_fn
    if not isinstance(fn, types.FunctionType) or fn.__closure__ is not None or "<locals>" in fn.__qualname__:
        return False
    leaves = jax.tree_util.tree_leaves(users_fn)
    return all(isinstance(x, (jax.Array, np.ndarray, np.generic, int, float)) for x in leaves)


def jit_for(users_fn, impl):
    """The jitted ``impl`` (:func:`topk_batch` or :func:`pair_batch`), called as ``f(users_fn, items, ...)``.

    Code defined at module level (a :class:`jax.tree_util.Partial` over it, as the scorers built here are)
    is passed as a traced pytree argument to the module-level jit, so repeated evaluations compile once.
    Any other callable (a closure over parameters) is captured by a fresh jit instead: a closure inside an
    argument's tree structure would be kept alive by JAX's global caches, with every array it closes over.
    """
    if _is_module_level(users_fn):
        return _JITTED[impl]

    def captured(*args, **kwargs):
        return impl(users_fn, *args, **kwargs)

    jitted = jax.jit(captured, static_argnames=_STATIC[impl])
    return lambda _, *args, **kwargs: jitted(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# Fixed-size batches on the host, and the check of their finite flags.


# Most float32 scores a dense scorer (``items=None``) returns at once: its user batches are cut to
# ``TILE_FLOATS // N`` users, so that one ``[b, N]`` score tile stays within 128 MiB whatever the catalogue.
TILE_FLOATS = 1 << 25


def batch_rows(scorer: Scorer, batch_size: int, n_items: int) -> int:
    """Users per jitted batch: ``batch_size``, or for a dense scorer at most ``TILE_FLOATS // n_items`` (at least
    1). An embedding scorer never builds a ``[b, N]`` tile for large ``N``: :func:`jaxrec.topk.similarity_topk`
    streams the items in chunks."""
    if scorer.items is not None:
        return batch_size
    return max(1, min(batch_size, TILE_FLOATS // max(n_items, 1)))


def batches(n: int, batch_size: int):
    """Yields ``(lo, hi)`` bounds of consecutive batches of ``batch_size`` rows over ``n`` rows."""
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def pad_rows(a: np.ndarray, size: int, fill) -> np.ndarray:
    """``a [r, ...]`` padded with ``fill`` to ``[size, ...]``."""
    if a.shape[0] == size:
        return a
    pad = np.full((size - a.shape[0],) + a.shape[1:], fill, a.dtype)
    return np.concatenate([a, pad])


def user_batches(users: np.ndarray, exclude: np.ndarray, batch_size: int):
    """Yields ``(lo, hi, users int32[b], exclude int32[b, m])``; the last batch padded (user 0, no items)."""
    b = min(batch_size, users.shape[0])
    for lo, hi in batches(users.shape[0], b):
        yield lo, hi, pad_rows(users[lo:hi].astype(np.int32), b, 0), pad_rows(exclude[lo:hi], b, -1)


def check_flags(rows: np.ndarray, flags: list, scorer: Scorer, where: str) -> None:
    """Raises :func:`nonfinite_users_error` unless every flag of a real row is True.

    Args:
        rows: ``int[R]`` user id of each real row, in batch order (pairs repeat their user).
        flags: one ``(n, finite bool[b])`` per batch (as returned by the batch functions, on device or host);
            the first ``n`` rows of a batch are real, the rest padding.
        scorer: the scorer (dense or not, for the message).
        where: what was evaluated, e.g. ``"target='target', split='test'"``.
    """
    finite = np.concatenate([np.asarray(f)[:n] for n, f in flags])
    if not finite.all():
        raise nonfinite_users_error(rows, finite, dense=scorer.items is None, where=where)

"""Evaluation driver: full-ranking and sampled-protocol metrics of a scorer on held-out users.

Axis conventions in this file: ``B`` = users (or held-out pairs) in one batch, ``N`` = items of the target
domain, ``d`` = embedding width, ``K = max(ks)``, ``m`` = padded number of excluded (seen train) items per
user, ``P`` = padded number of held-out items per user, ``n`` = negatives per pair. Item ids are the
domain's contiguous ids; ``-1`` is padding everywhere.

A :class:`Scorer` scores users against every item of one domain: ``users_fn(users [B]) @ items.T``, or, with
``items=None``, ``users_fn`` returns the dense ``[B, N]`` scores itself. Two protocols (issue 6):

* **full** — each held-out user's items are ranked among *all* ``N`` items of the target domain, minus the
  user's seen *train* items of that domain; the top-``K`` list comes from :mod:`jaxrec.topk` and the metrics
  (:func:`jaxrec.metrics.ranking_metrics_per_user`) are averaged over users.
* **sampled** (the shared dataset's published protocol, CDRIB's) — each held-out ``(user, item)`` pair is
  ranked among ``n`` negatives drawn uniformly from the *distinct* items of the domain's train split, never
  the positive itself (:func:`jaxrec.metrics.sample_negatives`, deterministic per seed); ties count against
  the positive; metrics are averaged over pairs, then the mean and std over seeds are reported.

Held-out pairs are the distinct ``(user, item)`` pairs of ``target``/``split`` for the selected users,
ordered by user id, then item id. Users are processed in fixed-size batches (the last one padded and
masked), so each jitted batch function compiles once per call of :func:`evaluate` — and once for all calls
when ``users_fn`` is a :class:`jax.tree_util.Partial` over module-level code, as the scorers built here are.

Example:
    >>> from jaxrec import data
    >>> ds, _ = data.synthetic(n_users=300, n_items=(80, 60))
    >>> ds = data.cold_start_split(ds, "source", "target")
    >>> scorer = popularity_scorer(ds.item_popularity("target"))
    >>> res = evaluate(scorer, ds, target="target", source="source", ks=(10,), seeds=(0, 1))
    >>> sorted(res)
    ['counts', 'full', 'sampled', 'sampled_std']
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import metrics, topk
from jaxrec.data import CrossDomainDataset

__all__ = [
    "Scorer",
    "embedding_scorer",
    "popularity_scorer",
    "select_users",
    "recommend",
    "evaluate",
    "evaluate_cold_warm",
    "evaluate_domains",
    "PROTOCOLS",
    "USER_SELECTIONS",
]

PROTOCOLS = ("full", "sampled")
USER_SELECTIONS = ("cold", "warm", "all")

# Most float32 values gathered at once when scoring sampled candidates: a pair batch holds at most
# _GATHER_BUDGET // ((1 + n) * width) pairs, width = d (embeddings) or N (dense scores). 2**24 = 64 MiB.
_GATHER_BUDGET = 1 << 24


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


def _take_rows(table: jax.Array, users: jax.Array) -> jax.Array:
    return table[users]


def _ones_column(users: jax.Array) -> jax.Array:
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
    return Scorer(jax.tree_util.Partial(_take_rows, user_table), item_table)


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
    return Scorer(jax.tree_util.Partial(_ones_column), counts[:, None])


def _as_partial(fn: Callable) -> jax.tree_util.Partial:
    """``fn`` as a pytree that jit can take as an argument (its arrays traced, its code static)."""
    return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)


def _user_scores(fn, items, users, *, n_items: int) -> tuple[jax.Array, jax.Array | None]:
    """Calls ``fn`` and checks its output: ``([B, d], items)`` or ``([B, N], None)`` for dense scorers."""
    out = fn(users)
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
    return out, items


def _check_scorer(scorer: Scorer, n_items: int, domain: str) -> Scorer:
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
    return Scorer(_as_partial(scorer.users_fn), items)


# --------------------------------------------------------------------------------------------------
# Jitted batch functions (fixed shapes: one compilation per scorer code and configuration).


def _topk_batch(fn, items, users, exclude, *, k: int, n_items: int):
    """Top-``k`` of ``users [B]`` over all ``N`` items, leaving out ``exclude [B, m]``.

    Returns ``(scores float32[B, k], indices int32[B, k])``.
    """
    q, items = _user_scores(fn, items, users, n_items=n_items)
    if items is None:
        return topk.scores_topk(q, k, exclude=exclude)
    return topk.similarity_topk(q, items, k, metric="dot", exclude=exclude)


def _pair_batch(fn, items, users, candidates, *, n_items: int, ks: tuple[int, ...]):
    """Per-pair sampled metrics of ``users [B]``: ``candidates [B, 1 + n]`` = positive, then negatives.

    Returns ``{"MRR", "NDCG@k", "HR@k", "AUC"} -> float32[B]`` (ties count against the positive).
    """
    q, items = _user_scores(fn, items, users, n_items=n_items)
    if items is None:
        scores = jnp.take_along_axis(q, candidates, axis=1)
    else:
        scores = topk.candidate_scores(q, items, candidates, metric="dot")
    ranks = metrics.sampled_rank(scores[:, 0], scores[:, 1:])
    return metrics.sampled_metrics_per_pair(ranks, ks=ks, num_negatives=candidates.shape[1] - 1)


_STATIC = {_topk_batch: ("k", "n_items"), _pair_batch: ("n_items", "ks")}
_JITTED = {f: jax.jit(f, static_argnames=names) for f, names in _STATIC.items()}
_ranking_batch = jax.jit(metrics.ranking_metrics_per_user, static_argnames=("ks",))


def _is_module_level(users_fn) -> bool:
    """True for a Partial over a plain module-level function (no closure) whose leaves are all arrays."""
    fn = users_fn.func if isinstance(users_fn, jax.tree_util.Partial) else users_fn
    if not isinstance(fn, types.FunctionType) or fn.__closure__ is not None or "<locals>" in fn.__qualname__:
        return False
    leaves = jax.tree_util.tree_leaves(users_fn)
    return all(isinstance(x, (jax.Array, np.ndarray, np.generic, int, float)) for x in leaves)


def _jit_for(users_fn, impl):
    """The jitted ``impl``, called as ``f(users_fn, items, ...)``.

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


def _round_width(width: int) -> int:
    """Padded row width: a multiple of 8 (at least 8), so that similar selections share compiled shapes."""
    return max(8, -(-width // 8) * 8)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _pad_rows(a: np.ndarray, size: int, fill) -> np.ndarray:
    """``a [r, ...]`` padded with ``fill`` to ``[size, ...]``."""
    if a.shape[0] == size:
        return a
    pad = np.full((size - a.shape[0],) + a.shape[1:], fill, a.dtype)
    return np.concatenate([a, pad])


# --------------------------------------------------------------------------------------------------
# Checks.


def _check_choice(value, valid: Sequence[str], what: str):
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {list(valid)}")


def _check_protocols(protocols) -> tuple[str, ...]:
    if isinstance(protocols, str):
        protocols = (protocols,)
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError(f"protocols is empty; valid protocols: {list(PROTOCOLS)}")
    for p in protocols:
        _check_choice(p, PROTOCOLS, "protocol")
    return tuple(p for p in PROTOCOLS if p in protocols)


def _check_ks(ks, name: str) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {ks}")
    return tuple(sorted({int(k) for k in ks}))


def _check_positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# User selection and top-k lists.


def _selection(ds: CrossDomainDataset, target: str, split: str, source: str | None, users: str) -> np.ndarray:
    """The (possibly empty) ``int64[U]`` sorted selection of :func:`select_users`."""
    _check_choice(users, USER_SELECTIONS, "user selection")
    ds.domain(target)
    if source is not None:
        ds.domain(source)
        if source == target:
            raise ValueError(f"source and target must differ, got {source!r} for both")
    held = ds.users_with(target, split)
    if users == "all":
        selected = held
    elif users == "cold" and source is not None:
        selected = ds.cold_users(source, target, split)
    else:
        has_train = np.isin(held, ds.users_with(target, "train"))
        selected = held[~has_train] if users == "cold" else held[has_train]
    return selected.astype(np.int64)


def select_users(
    ds: CrossDomainDataset,
    *,
    target: str,
    split: str = "test",
    source: str | None = None,
    users: str = "cold",
) -> np.ndarray:
    """Held-out users of ``target``/``split`` to evaluate.

    Args:
        ds: the dataset.
        target: domain whose held-out items are ranked.
        split: held-out split (``"valid"`` or ``"test"``).
        source: for ``users="cold"``, also require ``source`` train history
            (:meth:`CrossDomainDataset.cold_users`); ignored by ``"warm"`` and ``"all"``.
        users: ``"cold"`` (no ``target`` train history), ``"warm"`` (some ``target`` train history) or
            ``"all"`` held-out users.

    Returns:
        ``int64[U]`` sorted user ids, ``U >= 1``.

    Raises:
        ValueError: unknown selection or domain, or an empty selection (the message names target, split and
            the selection).

    Example:
        >>> from jaxrec import data
        >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(80, 60))[0], "source", "target")
        >>> select_users(ds, target="target", split="test", source="source").size
        18
        >>> select_users(ds, target="target", split="test", users="warm")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: no 'warm' users to evaluate in target='target', split='test' (18 held-out users ...)
    """
    selected = _selection(ds, target, split, source, users)
    if selected.size == 0:
        extra = f" with {source!r} train history" if users == "cold" and source is not None else ""
        raise ValueError(
            f"no {users!r} users{extra} to evaluate in target={target!r}, split={split!r} "
            f"({ds.users_with(target, split).size} held-out users in that split)"
        )
    return selected


def _user_batches(users: np.ndarray, exclude: np.ndarray, batch_size: int):
    """Yields ``(lo, hi, users int32[b], exclude int32[b, m])``; the last batch padded (user 0, no items)."""
    b = min(batch_size, users.shape[0])
    for lo, hi in _batches(users.shape[0], b):
        yield lo, hi, _pad_rows(users[lo:hi].astype(np.int32), b, 0), _pad_rows(exclude[lo:hi], b, -1)


def _topk_lists(
    scorer: Scorer, users: np.ndarray, exclude: np.ndarray, *, k: int, n_items: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``k`` over ``users [U]`` with ``exclude [U, m]``: ``(scores [U, k], indices [U, k])``."""
    fn = _jit_for(scorer.users_fn, _topk_batch)
    out = [
        (hi - lo, fn(scorer.users_fn, scorer.items, u, ex, k=k, n_items=n_items))
        for lo, hi, u, ex in _user_batches(users, exclude, batch_size)
    ]  # all dispatched, then fetched
    scores = np.concatenate([np.asarray(s)[:n] for n, (s, _) in out])
    indices = np.concatenate([np.asarray(i)[:n] for n, (_, i) in out])
    return scores, indices


def _exclusions(ds: CrossDomainDataset, domain: str, users: np.ndarray, k: int) -> np.ndarray:
    """``int32[U, max(1, m)]`` seen train items of ``users``; raises when fewer than ``k`` items remain."""
    seen = ds.seen(domain, "train")
    n_items = ds.n_items(domain)
    most = int(seen.lengths[users].max()) if users.size else 0
    if k > n_items - most:
        raise ValueError(
            f"K={k} exceeds the catalogue of domain {domain!r}: {n_items} items minus up to {most} seen "
            f"train items excluded per user leaves {n_items - most}"
        )
    return seen.to_padded(users, width=_round_width(most))


def recommend(
    scorer: Scorer,
    ds: CrossDomainDataset,
    users: np.ndarray,
    *,
    domain: str,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items of ``domain`` for ``users``, excluding each user's seen train items of that domain.

    Args:
        scorer: a :class:`Scorer` over the items of ``domain``.
        ds: the dataset (for the item count and the seen train items).
        users: ``int[U]`` user ids.
        domain: the domain to recommend from.
        k: list length (static).
        exclude_seen: leave out each user's ``domain`` train items.
        batch_size: users per jitted batch (the last batch is padded).

    Returns:
        ``(scores float32[U, k], indices int32[U, k])``, best first.

    Raises:
        ValueError: ``k`` larger than the catalogue minus a user's exclusions, or bad shapes.
    """
    n_items = ds.n_items(domain)
    scorer = _check_scorer(scorer, n_items, domain)
    k = _check_positive_int(k, "k")
    batch_size = _check_positive_int(batch_size, "batch_size")
    users = np.asarray(users, np.int64)
    if users.ndim != 1 or users.size == 0:
        raise ValueError(f"users must be a non-empty 1-D array of ids, got shape {users.shape}")
    if users.min() < 0 or users.max() >= ds.n_users:
        raise ValueError(f"user ids must lie in [0, {ds.n_users}), got [{users.min()}, {users.max()}]")
    if exclude_seen:
        exclude = _exclusions(ds, domain, users, k)
    else:
        if k > n_items:
            raise ValueError(f"k={k} exceeds the {n_items} items of domain {domain!r}")
        exclude = np.full((users.size, 1), -1, np.int32)
    return _topk_lists(scorer, users, exclude, k=k, n_items=n_items, batch_size=batch_size)


# --------------------------------------------------------------------------------------------------
# The two protocols.


def _full_ranking(scorer, ds, target, split, selected, ks, batch_size) -> dict[str, float]:
    n_items = ds.n_items(target)
    exclude = _exclusions(ds, target, selected, max(ks))
    heldout = ds.seen(target, split)
    positives = heldout.to_padded(selected, width=_round_width(int(heldout.lengths[selected].max())))
    top = _jit_for(scorer.users_fn, _topk_batch)
    parts = []
    for lo, hi, u, ex in _user_batches(selected, exclude, batch_size):
        _, indices = top(scorer.users_fn, scorer.items, u, ex, k=max(ks), n_items=n_items)
        where = _pad_rows(np.ones(hi - lo, bool), u.shape[0], False)
        pos = _pad_rows(positives[lo:hi], u.shape[0], -1)
        parts.append(_ranking_batch(indices, pos, where=where, ks=ks))  # stays on device until the end
    valid = np.concatenate([np.asarray(v) for _, v in parts])
    count = max(int(valid.sum()), 1)
    names = parts[0][0].keys()
    return {
        name: float(np.concatenate([np.asarray(m[name], np.float64) for m, _ in parts])[valid].sum() / count)
        for name in names
    }


def _pair_batch_size(batch_size: int, n_candidates: int, width: int) -> int:
    return max(1, min(batch_size, _GATHER_BUDGET // max(1, n_candidates * width)))


def _sampled(scorer, ds, target, split, selected, sampled_ks, n_negatives, seeds, batch_size):
    heldout = ds.seen(target, split)
    pair_users = np.repeat(selected, heldout.lengths[selected]).astype(np.int32)
    pair_items = heldout.to_padded(selected)
    pair_items = pair_items[pair_items >= 0].astype(np.int64)  # row-major: by user, then item
    n_pairs = pair_users.shape[0]
    pool = np.unique(ds.interactions(target, "train").items)
    n_items = ds.n_items(target)
    if scorer.items is None:  # dense scores: one [B, N] score row per pair, then a [B, 1 + n] gather
        b = min(max(1, min(batch_size, _GATHER_BUDGET // max(n_items, 1 + n_negatives))), n_pairs)
    else:  # a [B, 1 + n, d] gather of item vectors
        b = min(_pair_batch_size(batch_size, 1 + n_negatives, scorer.items.shape[1]), n_pairs)
    fn = _jit_for(scorer.users_fn, _pair_batch)
    runs = []
    for seed in seeds:
        negatives = metrics.sample_negatives(int(seed), n_pairs, pool, n_negatives, exclude=pair_items)
        candidates = np.concatenate([pair_items[:, None], negatives], axis=1).astype(np.int32)
        parts = [
            (
                hi - lo,
                fn(
                    scorer.users_fn,
                    scorer.items,
                    _pad_rows(pair_users[lo:hi], b, 0),
                    _pad_rows(candidates[lo:hi], b, 0),
                    n_items=n_items,
                    ks=sampled_ks,
                ),
            )
            for lo, hi in _batches(n_pairs, b)
        ]
        names = parts[0][1].keys()
        runs.append(
            {name: float(sum(np.asarray(m[name], np.float64)[:n].sum() for n, m in parts) / n_pairs) for name in names}
        )
    agg = metrics.aggregate_seeds(runs)
    return {n: a["mean"] for n, a in agg.items()}, {n: a["std"] for n, a in agg.items()}, n_pairs


def evaluate(
    scorer: Scorer,
    ds: CrossDomainDataset,
    *,
    target: str,
    split: str = "test",
    source: str | None = None,
    users: str = "cold",
    ks: Sequence[int] = (10, 20, 50),
    sampled_ks: Sequence[int] = (1, 5, 10),
    n_negatives: int = 999,
    seeds: Sequence[int] = (0, 1, 2),
    protocols: Sequence[str] = PROTOCOLS,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Evaluates ``scorer`` on the held-out users of ``target``/``split`` under both protocols.

    Full ranking leaves out each user's seen ``target`` *train* items only (a held-out item that is also a
    train item of the same user is therefore never ranked, and counts as a miss); the sampled protocol draws
    its negatives from the distinct ``target`` train items, excluding only the pair's own positive.

    Args:
        scorer: a :class:`Scorer` over the items of ``target``.
        ds: the dataset.
        target: domain whose held-out items are ranked.
        split: held-out split, ``"test"`` or ``"valid"``.
        source: for ``users="cold"``, also require ``source`` train history.
        users: ``"cold"``, ``"warm"`` or ``"all"`` (see :func:`select_users`).
        ks: full-ranking cutoffs; ``max(ks)`` must not exceed the catalogue minus any user's exclusions.
        sampled_ks: sampled-protocol cutoffs.
        n_negatives: negatives per held-out pair (999 in the published protocol).
        seeds: one sampled run per seed (the negatives are a function of the seed).
        protocols: any of ``"full"``, ``"sampled"``.
        batch_size: users per jitted batch; pairs per batch are capped so one gather holds at most 2**24
            floats.

    Returns:
        ``{"full": {"Recall@k", "Precision@k", "NDCG@k", "HR@k", "MRR@k" for k in ks, "MRR"},
        "sampled": {"MRR", "NDCG@k", "HR@k" for k in sampled_ks, "AUC"} (means over seeds),
        "sampled_std": {same names: sample std over seeds, 0 for one seed},
        "counts": {"users": U, "pairs": held-out pairs, "seeds": len(seeds)}}`` of Python floats/ints;
        the protocol keys are present only for the protocols asked for.

    Raises:
        ValueError: unknown protocol or user selection (listing the valid ones), empty selection, ``K``
            larger than the catalogue minus exclusions, bad ks/seeds/batch size or scorer shapes.

    Example:
        >>> from jaxrec import data
        >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(80, 60))[0], "source", "target")
        >>> res = evaluate(popularity_scorer(ds.item_popularity("target")), ds, target="target",
        ...                source="source", ks=(10, 20), seeds=(0, 1))
        >>> res["counts"]
        {'users': 18, 'pairs': 136, 'seeds': 2}
        >>> round(res["full"]["Recall@10"], 3), round(res["sampled"]["HR@10"], 3)  # doctest: +SKIP
        (0.334, 0.059)
    """
    protocols = _check_protocols(protocols)
    ks = _check_ks(ks, "ks")
    sampled_ks = _check_ks(sampled_ks, "sampled_ks")
    n_negatives = _check_positive_int(n_negatives, "n_negatives")
    batch_size = _check_positive_int(batch_size, "batch_size")
    seeds = tuple(seeds)
    if not seeds or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds}")
    selected = select_users(ds, target=target, split=split, source=source, users=users)
    scorer = _check_scorer(scorer, ds.n_items(target), target)

    out: dict[str, Any] = {}
    if "full" in protocols:
        out["full"] = _full_ranking(scorer, ds, target, split, selected, ks, batch_size)
    n_pairs = int(ds.seen(target, split).lengths[selected].sum())
    if "sampled" in protocols:
        out["sampled"], out["sampled_std"], n_pairs = _sampled(
            scorer, ds, target, split, selected, sampled_ks, n_negatives, seeds, batch_size
        )
    out["counts"] = {"users": int(selected.size), "pairs": int(n_pairs), "seeds": len(seeds)}
    return out


def evaluate_cold_warm(
    scorer: Scorer,
    ds: CrossDomainDataset,
    *,
    target: str,
    split: str = "test",
    source: str | None = None,
    **kwargs,
) -> dict[str, dict[str, Any]]:
    """Cold and warm users of ``target``/``split`` evaluated separately.

    Args:
        scorer, ds, target, split, source: as for :func:`evaluate` (``source`` narrows the cold users only).
        **kwargs: any other keyword of :func:`evaluate` except ``users``.

    Returns:
        ``{"cold": evaluate(...), "warm": evaluate(...)}``, each only when that selection is non-empty.

    Raises:
        ValueError: when neither selection has users, or ``users`` is passed.
    """
    if "users" in kwargs:
        raise ValueError("evaluate_cold_warm chooses users itself; do not pass users=")
    out = {}
    for kind in ("cold", "warm"):
        src = source if kind == "cold" else None
        if _selection(ds, target, split, src, kind).size == 0:
            continue
        out[kind] = evaluate(scorer, ds, target=target, split=split, source=src, users=kind, **kwargs)
    if not out:
        raise ValueError(f"no cold or warm users to evaluate in target={target!r}, split={split!r}")
    return out


def evaluate_domains(
    scorers: Mapping[str, Scorer],
    ds: CrossDomainDataset,
    *,
    split: str = "test",
    pairs: Mapping[str, str],
    users: str = "cold",
    **kwargs,
) -> dict[str, dict[str, Any]]:
    """Evaluates several directions (e.g. Game→Video and Video→Game) in one call.

    Args:
        scorers: domain → :class:`Scorer` over that domain's items.
        ds: the dataset.
        split: held-out split.
        pairs: target → source; each target with held-out users of the selection is evaluated.
        users: user selection for every direction (see :func:`select_users`).
        **kwargs: other keywords of :func:`evaluate`.

    Returns:
        ``{target: evaluate(scorers[target], ds, target=target, source=pairs[target], ...)}`` for every
        target that has selected users; targets without any are left out.

    Raises:
        ValueError: a target without a scorer (listing the available ones), or no direction with users.
    """
    out = {}
    for target, source in pairs.items():
        if target not in scorers:
            raise ValueError(f"no scorer for target domain {target!r}; scorers given for {sorted(scorers)}")
        if _selection(ds, target, split, source, users).size == 0:
            continue
        out[target] = evaluate(scorers[target], ds, target=target, split=split, source=source, users=users, **kwargs)
    if not out:
        raise ValueError(f"no {users!r} users in split {split!r} for any of the directions {dict(pairs)}")
    return out

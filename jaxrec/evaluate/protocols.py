"""The evaluation protocols: full ranking and sampled metrics of a scorer on held-out users, and top-k lists.

Axis conventions in this file: ``B`` = users (or held-out pairs) in one batch, ``N`` = items of the target
domain, ``d`` = embedding width, ``K = max(ks)``, ``m`` = padded number of excluded (seen train) items per
user, ``P`` = padded number of held-out items per user, ``n`` = negatives per pair. Item ids are the
domain's contiguous ids; ``-1`` is padding everywhere.

Two protocols:

* **full** — each held-out user's items are ranked among *all* ``N`` items of the target domain, minus the
  user's seen *train* items of that domain; the top-``K`` list comes from :mod:`jaxrec.topk` and the metrics
  (:func:`jaxrec.metrics.ranking_metrics_per_user`) are averaged over users.
* **sampled** (the shared dataset's published protocol, CDRIB's) — each held-out ``(user, item)`` pair is
  ranked among ``n`` negatives drawn uniformly from the *distinct* items of the domain's train split, never
  the positive itself (:func:`jaxrec.metrics.sample_negatives`, deterministic per seed); ties count against
  the positive; metrics are averaged over pairs, then the mean and std over seeds are reported.

Held-out pairs are the distinct ``(user, item)`` pairs of ``target``/``split`` for the selected users
(:mod:`jaxrec.evaluate.users`), ordered by user id, then item id. Users are processed in fixed-size batches
(the last one padded and masked), so each jitted batch function compiles once per call of :func:`evaluate` —
and once for all calls when ``users_fn`` is a :class:`jax.tree_util.Partial` over module-level code, as the
scorers of :mod:`jaxrec.evaluate.scorers` are.

Example:
    >>> from jaxrec import data
    >>> from jaxrec.evaluate import popularity_scorer
    >>> ds, _ = data.synthetic(n_users=300, n_items=(80, 60))
    >>> ds = data.cold_start_split(ds, "source", "target")
    >>> scorer = popularity_scorer(ds.item_popularity("target"))
    >>> res = evaluate(scorer, ds, target="target", source="source", ks=(10,), seeds=(0, 1))
    >>> sorted(res)
    ['counts', 'full', 'sampled', 'sampled_std']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxrec import checks, metrics
from jaxrec.data import CrossDomainDataset
from jaxrec.evaluate.scorers import Scorer, check_scorer, jit_for, pair_batch, topk_batch
from jaxrec.evaluate.users import select_users, user_selection

__all__ = ["PROTOCOLS", "evaluate", "evaluate_cold_warm", "evaluate_domains", "recommend"]

PROTOCOLS = ("full", "sampled")

# Most float32 values gathered at once when scoring sampled candidates: a pair batch holds at most
# _GATHER_BUDGET // ((1 + n) * width) pairs, width = d (embeddings) or N (dense scores). 2**24 = 64 MiB.
_GATHER_BUDGET = 1 << 24

_ranking_batch = jax.jit(metrics.ranking_metrics_per_user, static_argnames=("ks",))


# --------------------------------------------------------------------------------------------------
# Padding and batches.


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


def _check_protocols(protocols) -> tuple[str, ...]:
    if isinstance(protocols, str):
        protocols = (protocols,)
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError(f"protocols is empty; valid protocols: {list(PROTOCOLS)}")
    for p in protocols:
        checks.choice("protocol", p, PROTOCOLS)
    return tuple(p for p in PROTOCOLS if p in protocols)


def _check_ks(ks, name: str) -> tuple[int, ...]:
    """Cutoffs as a sorted tuple without repeats; the error quotes them as a tuple."""
    ks = checks.positive_ints(name, ks if isinstance(ks, (int, np.integer)) else tuple(ks))
    return tuple(sorted(set(ks)))


# --------------------------------------------------------------------------------------------------
# Top-k lists.


def _user_batches(users: np.ndarray, exclude: np.ndarray, batch_size: int):
    """Yields ``(lo, hi, users int32[b], exclude int32[b, m])``; the last batch padded (user 0, no items)."""
    b = min(batch_size, users.shape[0])
    for lo, hi in _batches(users.shape[0], b):
        yield lo, hi, _pad_rows(users[lo:hi].astype(np.int32), b, 0), _pad_rows(exclude[lo:hi], b, -1)


def _topk_lists(
    scorer: Scorer, users: np.ndarray, exclude: np.ndarray, *, k: int, n_items: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``k`` over ``users [U]`` with ``exclude [U, m]``: ``(scores [U, k], indices [U, k])``."""
    fn = jit_for(scorer.users_fn, topk_batch)
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
    scorer = check_scorer(scorer, n_items, domain)
    k = checks.positive_int("k", k)
    batch_size = checks.positive_int("batch_size", batch_size)
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
    top = jit_for(scorer.users_fn, topk_batch)
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
    fn = jit_for(scorer.users_fn, pair_batch)
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
        >>> from jaxrec.evaluate import popularity_scorer
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
    n_negatives = checks.positive_int("n_negatives", n_negatives)
    batch_size = checks.positive_int("batch_size", batch_size)
    seeds = tuple(seeds)
    if not seeds or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds}")
    selected = select_users(ds, target=target, split=split, source=source, users=users)
    scorer = check_scorer(scorer, ds.n_items(target), target)

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
        if user_selection(ds, target, split, src, kind).size == 0:
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
        if user_selection(ds, target, split, source, users).size == 0:
            continue
        out[target] = evaluate(scorers[target], ds, target=target, split=split, source=source, users=users, **kwargs)
    if not out:
        raise ValueError(f"no {users!r} users in split {split!r} for any of the directions {dict(pairs)}")
    return out

"""Top-``k`` lists of a scorer for given users: :func:`recommend`.

Axis conventions: ``U`` = users asked for, ``b`` = users per jitted batch, ``N`` = items of the domain, ``k`` =
list length, ``m`` = padded number of excluded (seen train) items per user; ``-1`` is padding.
"""

from __future__ import annotations

import numpy as np

from jaxrec import checks
from jaxrec.data import CrossDomainDataset
from jaxrec.evaluate.options import seen_exclusions
from jaxrec.evaluate.scorers import (
    Scorer,
    batch_rows,
    check_flags,
    check_scorer,
    jit_for,
    topk_batch,
    user_batches,
)
from jaxrec.topk.inputs import check_flag

__all__ = ["recommend", "topk_lists"]


def topk_lists(
    scorer: Scorer,
    users: np.ndarray,
    exclude: np.ndarray,
    *,
    k: int,
    n_items: int,
    batch_size: int,
    check_finite: bool,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``k`` over ``users [U]`` with ``exclude [U, m]``: ``(scores [U, k], indices [U, k])``."""
    fn = jit_for(scorer.users_fn, topk_batch)
    out = [
        (hi - lo, fn(scorer.users_fn, scorer.items, u, ex, k=k, n_items=n_items))
        for lo, hi, u, ex in user_batches(users, exclude, batch_rows(scorer, batch_size, n_items))
    ]  # all dispatched, then fetched
    if check_finite:
        check_flags(users, [(n, f) for n, (_, _, f) in out], scorer, where)
    scores = np.concatenate([np.asarray(s)[:n] for n, (s, _, _) in out])
    indices = np.concatenate([np.asarray(i)[:n] for n, (_, i, _) in out])
    return scores, indices


def recommend(
    scorer: Scorer,
    ds: CrossDomainDataset,
    users: np.ndarray,
    *,
    domain: str,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 1024,
    check_finite: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items of ``domain`` for ``users``, excluding each user's seen train items of that domain.

    Args:
        scorer: a :class:`Scorer` over the items of ``domain``.
        ds: the dataset (for the item count and the seen train items).
        users: ``int[U]`` user ids (any integer array-like).
        domain: the domain to recommend from.
        k: list length (static).
        exclude_seen: leave out each user's ``domain`` train items.
        batch_size: users per jitted batch (the last batch is padded).
        check_finite: refuse a scorer whose item table or user vectors hold ``NaN`` / ``±inf`` (dense scores:
            ``NaN``); the user vectors are checked in the same compiled batch program, at negligible cost.

    Returns:
        ``(scores float32[U, k], indices int32[U, k])``, best first.

    Raises:
        ValueError: ``k`` larger than the catalogue minus a user's exclusions, bad shapes, non-finite scorer
            outputs (naming the first users).
    """
    checks.choice("domain", domain, ds.domain_names)
    n_items = ds.n_items(domain)
    check_finite = check_flag("check_finite", check_finite)
    scorer = check_scorer(scorer, n_items, domain, check_finite=check_finite)
    k = checks.positive_int("k", k)
    batch_size = checks.positive_int("batch_size", batch_size)
    users = np.asarray(users)
    if users.size and not np.issubdtype(users.dtype, np.integer):
        raise TypeError(f"users must be integer user ids, got dtype {users.dtype}")
    users = users.astype(np.int64)
    if users.ndim != 1 or users.size == 0:
        raise ValueError(f"users must be a non-empty 1-D array of ids, got shape {users.shape}")
    if users.min() < 0 or users.max() >= ds.n_users:
        raise ValueError(f"user ids must lie in [0, {ds.n_users}), got [{users.min()}, {users.max()}]")
    if exclude_seen:
        exclude = seen_exclusions(ds, domain, users, k, f"k={k}")
    else:
        if k > n_items:
            raise ValueError(f"k={k} exceeds the {n_items} items of domain {domain!r}")
        exclude = np.full((users.size, 1), -1, np.int32)
    return topk_lists(
        scorer,
        users,
        exclude,
        k=k,
        n_items=n_items,
        batch_size=batch_size,
        check_finite=check_finite,
        where=f"domain={domain!r}",
    )

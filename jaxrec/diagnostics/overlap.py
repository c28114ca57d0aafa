"""The users two domains share: overlap and sparsity counts, and a permutation test of the user links.

Host-side numpy over the ``train`` split of a :class:`jaxrec.data.CrossDomainDataset`; every result is made of
Python numbers and strings (JSON-serialisable).

Example:
  >>> from jaxrec import data
  >>> ds, _ = data.synthetic(n_users=300, n_items=(80, 60))
  >>> overlap_stats(ds, "source", "target")["overlap_users"]
  182
  >>> report = link_test(ds, "source", "target")  # the synthetic users are one person in both domains
  >>> report["auc"] > report["auc_permuted"]
  True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxrec import checks
from jaxrec.data import CrossDomainDataset, DataError

__all__ = ["format_link_test", "link_test", "overlap_stats"]


# --------------------------------------------------------------------------------------------------------------
# overlap counts
# --------------------------------------------------------------------------------------------------------------
def _domain_stats(ds: CrossDomainDataset, domain: str) -> dict[str, Any]:
    inter = ds.interactions(domain, "train")
    per_user = np.bincount(inter.users, minlength=ds.n_users)
    per_user = per_user[per_user > 0]
    users, items = int(per_user.size), ds.n_items(domain)
    return {
        "users": users,
        "items": items,
        "interactions": inter.size,
        "interactions_per_user_mean": float(per_user.mean()) if users else 0.0,
        "interactions_per_user_median": float(np.median(per_user)) if users else 0.0,
        "density": inter.size / max(users * items, 1),
    }


def overlap_stats(ds: CrossDomainDataset, source: str, target: str) -> dict[str, Any]:
    """User overlap and sparsity of a source/target pair, counted on the ``train`` split.

    Args:
      ds: the dataset.
      source: the data-rich domain.
      target: the domain whose cold-start users are to be served.

    Returns:
      The statistics,
      ``{"source": name, "target": name, "n_users": size of the shared user id space,
      "domains": {name: {"users", "items", "interactions", "interactions_per_user_mean",
      "interactions_per_user_median", "density"}} for source and target — users with ≥ 1 train interaction,
      the item id space, train rows, rows per such user, rows / (users × items),
      "overlap_users": users with train interactions in both, "source_only_users", "target_only_users",
      "cold_users": {"valid": n, "test": n} — held-out target users with source train history and no target
      train history (:meth:`CrossDomainDataset.cold_users`)}``.

    Raises:
      DataError: unknown domain (listing the valid ones) or ``source == target``.

    Example:
      >>> overlap_stats(ds, "source", "target")["overlap_users"]
      103
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"source and target must differ, both are {source!r}")
    src, tgt = ds.users_with(source, "train"), ds.users_with(target, "train")
    both = np.intersect1d(src, tgt).size
    return {
        "source": source,
        "target": target,
        "n_users": int(ds.n_users),
        "domains": {source: _domain_stats(ds, source), target: _domain_stats(ds, target)},
        "overlap_users": int(both),
        "source_only_users": int(src.size - both),
        "target_only_users": int(tgt.size - both),
        "cold_users": {split: int(ds.cold_users(source, target, split).size) for split in ("valid", "test")},
    }


# --------------------------------------------------------------------------------------------------------------
# link test
# --------------------------------------------------------------------------------------------------------------
def _inverted(ds: CrossDomainDataset, domain: str, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr [N + 1], positions)``: for each item of ``domain``, the positions in ``users`` of the users who
    have it in train (CSR over items)."""
    seen = ds.seen(domain, "train")
    lengths = seen.lengths[users]
    pos = np.repeat(np.arange(users.size), lengths)
    items = np.concatenate([seen.row(u) for u in users]) if users.size else np.zeros(0, np.int32)
    order = np.argsort(items, kind="stable")
    indptr = np.zeros(ds.n_items(domain) + 1, np.int64)
    np.cumsum(np.bincount(items, minlength=ds.n_items(domain)), out=indptr[1:])
    return indptr, pos[order]


def _gather_sum(matrix: np.ndarray, rows: np.ndarray, items: np.ndarray, inv: tuple) -> np.ndarray:
    """``Σ_{p ∈ inv[item]} matrix[row, p]`` for each ``(row, item)`` pair."""
    indptr, positions = inv
    counts = indptr[items + 1] - indptr[items]
    owner = np.repeat(np.arange(items.size), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    values = matrix[rows[owner], positions[indptr[items][owner] + offsets]]
    return np.bincount(owner, weights=values, minlength=items.size)


def _link_aucs(ds, source, target, overlap, partner, evaluated, n_negatives, rng, batch) -> np.ndarray:
    """Per evaluated position: AUC of its partner's target items under the leave-one-out co-occurrence map."""
    inv_s = _inverted(ds, source, overlap)
    inv_t = _inverted(ds, target, overlap[partner])
    seen_s, seen_t = ds.seen(source, "train"), ds.seen(target, "train")
    items_t = np.unique(ds.interactions(target, "train").items)
    aucs = np.zeros(evaluated.size)
    for lo in range(0, evaluated.size, batch):
        pos_b = evaluated[lo : lo + batch]
        # shared[r, p] = |S(u_r) ∩ S(overlap[p])|, the leave-one-out column of u_r itself zeroed
        shared = np.zeros((pos_b.size, overlap.size), np.float32)
        for r, p in enumerate(pos_b):
            own = seen_s.row(overlap[p])
            cols = np.concatenate([inv_s[1][inv_s[0][i] : inv_s[0][i + 1]] for i in own])
            np.add.at(shared[r], cols, 1.0)
            shared[r, p] = 0.0
        rows, items, label = [], [], []
        for r, p in enumerate(pos_b):
            positives = seen_t.row(overlap[partner[p]])
            negatives = rng.choice(items_t, n_negatives)
            negatives = negatives[~np.isin(negatives, positives)]
            rows += [np.full(positives.size + negatives.size, r)]
            items += [positives, negatives]
            label += [np.ones(positives.size, bool), np.zeros(negatives.size, bool)]
        rows, items, label = np.concatenate(rows), np.concatenate(items).astype(np.int64), np.concatenate(label)
        scores = _gather_sum(shared, rows, items, inv_t)
        for r in range(pos_b.size):
            mine = rows == r
            sp, sn = scores[mine & label], scores[mine & ~label]
            if sp.size and sn.size:
                wins = (sp[:, None] > sn[None, :]).mean() + 0.5 * (sp[:, None] == sn[None, :]).mean()
                aucs[lo + r] = wins
            else:
                aucs[lo + r] = np.nan
    return aucs


def _natural_key(raw_id) -> tuple:
    """Sort key of a raw user id: numbers numerically, ``"<domain>:<number>"`` by domain then number."""
    text = str(raw_id)
    head, _, tail = text.rpartition(":")
    return (head, 0, int(tail), "") if tail.isdigit() else (head, 1, 0, tail)


def link_test(
    ds: CrossDomainDataset,
    source: str,
    target: str,
    *,
    max_users: int = 4000,
    n_negatives: int = 100,
    bands: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Are the overlapping users really one person in both domains? A permutation test of the user links.

    For an evaluated overlapping user ``u``, the items of ``u``'s *target* history are ranked against
    ``n_negatives`` uniformly drawn target train items by the leave-one-out item co-occurrence map of the other
    overlapping users (score of item ``j``: ``Σ_v |S(u) ∩ S(v)| · [j ∈ T(v)]`` over ``v ≠ u``, ``S``/``T`` the
    source/target train histories), and the per-user AUC is recorded. The same is done with the target histories
    randomly permuted among the overlapping users (every link broken). Correct links give a clearly higher AUC
    than the permuted ones; a block of users whose AUC equals the permuted one carries no cross-domain signal,
    which is what users numbered independently in each domain look like (see ``shared_users`` of
    :func:`jaxrec.data.load_dir`). Popularity lifts both AUCs above 0.5, so compare the two, not either with 0.5.

    Args:
      ds: the dataset.
      source, target: the two domains (the map goes from ``source`` histories to ``target`` items).
      max_users: overlapping users evaluated (a uniform sample; the map always uses all of them).
      n_negatives: target items drawn per evaluated user (a user's own target items are removed from them).
      bands: the evaluated users are cut into this many groups of consecutive raw user ids (numbers in numeric
        order; ``"<domain>:<id>"`` ids of :func:`jaxrec.data.load_dir`'s ``shared_users`` after them), each
        reported separately.
      seed: sampling of users, negatives and the permutation.

    Returns:
      The report,
      ``{"source", "target", "overlap_users", "evaluated", "auc": mean AUC with the links as given,
      "auc_permuted": mean AUC with the links broken, "bands": [{"first_user", "last_user" (raw ids), "users",
      "auc", "auc_permuted"}]}``.

    Raises:
      DataError: unknown domain, ``source == target``, or fewer than 3 overlapping users.

    Example:
      >>> report = link_test(ds, "game", "video")
      >>> print(format_link_test(report))
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"source and target must differ, both are {source!r}")
    max_users = checks.positive_int("max_users", max_users)
    n_negatives = checks.positive_int("n_negatives", n_negatives)
    bands = checks.positive_int("bands", bands)
    overlap = np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train"))
    if overlap.size < 3:
        raise DataError(f"link_test needs at least 3 users with train history in both {source!r} and {target!r}")
    rng = np.random.default_rng(seed)
    evaluated = np.sort(rng.choice(overlap.size, min(max_users, overlap.size), replace=False))
    identity = np.arange(overlap.size)
    permuted = rng.permutation(overlap.size)
    fixed = permuted == identity
    permuted[fixed] = np.roll(permuted[fixed], 1)  # a derangement wherever possible: no link survives
    args = (n_negatives,)
    true = _link_aucs(ds, source, target, overlap, identity, evaluated, *args, np.random.default_rng(seed + 1), 256)
    broken = _link_aucs(ds, source, target, overlap, permuted, evaluated, *args, np.random.default_rng(seed + 1), 256)
    order = sorted(range(evaluated.size), key=lambda r: _natural_key(ds.raw_users(overlap[evaluated[r : r + 1]])[0]))
    order = np.asarray(order)
    out_bands = []
    for chunk in np.array_split(order, min(bands, evaluated.size)):
        users = overlap[evaluated[chunk]]
        out_bands.append(
            {
                "first_user": ds.raw_users(users[:1])[0].item(),
                "last_user": ds.raw_users(users[-1:])[0].item(),
                "users": int(chunk.size),
                "auc": float(np.nanmean(true[chunk])),
                "auc_permuted": float(np.nanmean(broken[chunk])),
            }
        )
    return {
        "source": source,
        "target": target,
        "overlap_users": int(overlap.size),
        "evaluated": int(evaluated.size),
        "auc": float(np.nanmean(true)),
        "auc_permuted": float(np.nanmean(broken)),
        "bands": out_bands,
    }


def format_link_test(report: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`link_test`: AUC with the user links as given and with them broken, per band.

    Args:
      report: the result of :func:`link_test`.

    Returns:
      The table as one string.
    """
    lines = [
        f"link test {report['source']} -> {report['target']}: {report['evaluated']} of {report['overlap_users']} "
        f"overlapping users; AUC {report['auc']:.3f} with the links as given, {report['auc_permuted']:.3f} broken",
        f"{'users (raw ids)':<30}{'n':>6}{'AUC':>8}{'broken':>8}{'gain':>8}",
    ]
    for b in report["bands"]:
        span = f"{b['first_user']} .. {b['last_user']}"
        gain = b["auc"] - b["auc_permuted"]
        lines.append(f"{span:<30}{b['users']:>6}{b['auc']:>8.3f}{b['auc_permuted']:>8.3f}{gain:>8.3f}")
    return "\n".join(lines)

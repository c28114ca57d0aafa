"""Splits of a dataset into train/valid/test and the overlap knob; each returns a new
:class:`~jaxrec.data.dataset.CrossDomainDataset` with the same id spaces and a line added to ``notes``.

* :func:`cold_start_split`: a share of the users of two domains lose all their target history (cold start).
* :func:`leave_one_out`, :func:`ratio_split`: warm splits of each user's interactions (by timestamp, else random).
* :func:`limit_overlap`: unlinks a share of the users present in both domains' train splits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.dataset import SPLITS, CrossDomainDataset, DataError, Interactions, distinct_ids


def _check_fraction(name: str, value: float):
    if not 0.0 < float(value) < 1.0:
        raise DataError(f"{name}={value} must be strictly between 0 and 1")


def cold_start_split(
    ds: CrossDomainDataset,
    source: str,
    target: str,
    *,
    fraction: float = 0.2,
    valid_fraction: float = 0.5,
    seed: int = 0,
) -> CrossDomainDataset:
    """Makes a ``fraction`` of the source/target overlapping users cold in ``target``.

    The overlapping users (with interactions in both domains) are shuffled with ``seed``; the first ``fraction``
    of them lose **all** their ``target`` interactions from train, which go to ``valid`` (a ``valid_fraction`` of
    those users) or ``test`` (the rest). Their ``source`` history is kept. Every other ``target`` interaction
    (of all splits) goes to train. Held-out items that no longer occur in the target's train split are dropped
    and counted in ``notes`` (a model never trained on them could not rank them).

    Args:
      ds: the dataset.
      source: the domain whose history the cold users keep.
      target: the domain in which they become cold.
      fraction: share of the overlapping users made cold, in (0, 1).
      valid_fraction: share of the cold users whose target interactions go to ``valid`` (the rest to ``test``).
      seed: the shuffle of the overlapping users.

    Returns:
      The split dataset (``ds`` itself is not modified).

    Raises:
      DataError: unknown domains, ``source == target``, fractions outside (0, 1), or no overlapping users.
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"cold_start_split needs two different domains, got source=target={source!r}")
    _check_fraction("fraction", fraction)
    _check_fraction("valid_fraction", valid_fraction)
    all_target = Interactions.concat([ds.interactions(target, s) for s in ds.splits(target)])
    src_users = distinct_ids(
        Interactions.concat([ds.interactions(source, s) for s in ds.splits(source)]).users, ds.n_users
    )
    overlap = np.intersect1d(src_users, distinct_ids(all_target.users, ds.n_users), assume_unique=True)
    if overlap.size == 0:
        raise DataError(f"cold_start_split: domains {source!r} and {target!r} share no users")
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(fraction * overlap.size)))
    if n_cold >= overlap.size:
        raise DataError(
            f"cold_start_split: fraction={fraction} of {overlap.size} overlapping users leaves none "
            f"to learn the transfer from"
        )
    cold = rng.permutation(overlap)[:n_cold]
    n_valid = int(round(valid_fraction * n_cold))
    valid_users, test_users = cold[:n_valid], cold[n_valid:]
    to_valid = np.isin(all_target.users, valid_users)
    to_test = np.isin(all_target.users, test_users)
    train = all_target.take(~(to_valid | to_test))
    in_train = np.zeros(ds.n_items(target), bool)
    in_train[train.items] = True
    dropped = {}
    splits = {"train": train}
    for name, mask in (("valid", to_valid), ("test", to_test)):
        held = all_target.take(mask)
        ok = in_train[held.items]
        dropped[name] = int((~ok).sum())
        splits[name] = held.take(ok)
    note = (
        f"cold_start_split({source}->{target}, fraction={fraction}, seed={seed}): {n_cold} of {overlap.size} "
        f"overlapping users made cold ({valid_users.size} valid, {test_users.size} test); dropped "
        f"{dropped['valid']} valid and {dropped['test']} test interactions whose item left {target} train"
    )
    return ds.replace_splits({target: splits}, note)


def _order_within_users(inter: Interactions, rng: np.random.Generator) -> np.ndarray:
    """Row order grouping by user, each user's rows by timestamp (ties/none: random)."""
    noise = rng.random(inter.size)
    keys = [noise] if inter.timestamps is None else [noise, inter.timestamps]
    return np.lexsort(keys + [inter.users])


def _group_by_user(inter: Interactions, n_users: int, rng: np.random.Generator):
    """``(order, users[order], counts per user, start offset per user [n_users + 1])`` of the grouped rows."""
    order = _order_within_users(inter, rng)
    users = inter.users[order]
    counts = np.bincount(users, minlength=n_users)
    start = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    return order, users, counts, start


def leave_one_out(
    ds: CrossDomainDataset, domain: str | None = None, *, valid: bool = True, min_interactions: int = 3, seed: int = 0
) -> CrossDomainDataset:
    """Warm split: per user, the last interaction (by timestamp, else random) to test, the one before to valid.

    Users with fewer than ``min_interactions`` train interactions keep them all in train. Applies to one domain
    or (``domain=None``) to every domain; existing valid/test splits are replaced.

    Args:
      ds: the dataset.
      domain: the domain to split; ``None`` splits every domain.
      valid: also hold out the interaction before the last as ``valid`` (else only ``test``).
      min_interactions: users with fewer train interactions keep them all in train.
      seed: the order of interactions without timestamps.

    Returns:
      The split dataset (``ds`` itself is not modified).
    """
    names = ds.domain_names if domain is None else (ds.domain(domain).name,)
    if min_interactions < 1 + int(valid) + 1:
        raise DataError(
            f"min_interactions={min_interactions} must be at least {2 + int(valid)} so a user keeps "
            f"one train interaction"
        )
    rng = np.random.default_rng(seed)
    new = {}
    for name in names:
        inter = ds.interactions(name, "train")
        order, users, counts, start = _group_by_user(inter, ds.n_users, rng)
        rank_from_end = start[users + 1] - 1 - np.arange(len(users))  # 0 = last of the user
        eligible = counts[users] >= min_interactions
        test = eligible & (rank_from_end == 0)
        val = eligible & (rank_from_end == 1) if valid else np.zeros_like(test)
        splits = {"train": inter.take(order[~(test | val)]), "test": inter.take(order[test])}
        if valid:
            splits["valid"] = inter.take(order[val])
        new[name] = splits
    return ds.replace_splits(new, f"leave_one_out(domains={list(names)}, valid={valid}, seed={seed})")


def ratio_split(
    ds: CrossDomainDataset,
    domain: str | None = None,
    *,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> CrossDomainDataset:
    """Warm split: each user's interactions (by timestamp, else random order) split by ``ratios``.

    Args:
      ds: the dataset.
      domain: the domain to split; ``None`` splits every domain.
      ratios: ``(train, valid, test)`` shares of each user's interactions.
      seed: the order of interactions without timestamps.

    Returns:
      The split dataset (``ds`` itself is not modified).
    """
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0) or ratios[0] <= 0:
        raise DataError(f"ratios={ratios} must be three non-negative numbers summing to 1 with train > 0")
    names = ds.domain_names if domain is None else (ds.domain(domain).name,)
    rng = np.random.default_rng(seed)
    new = {}
    for name in names:
        inter = ds.interactions(name, "train")
        order, users, counts, start = _group_by_user(inter, ds.n_users, rng)
        pos = (np.arange(len(users)) - start[users]) / np.maximum(counts[users], 1)
        cut1, cut2 = ratios[0], ratios[0] + ratios[1]
        part = np.where(pos < cut1, 0, np.where(pos < cut2, 1, 2))
        new[name] = {s: inter.take(order[part == k]) for k, s in enumerate(SPLITS)}
    return ds.replace_splits(new, f"ratio_split(domains={list(names)}, ratios={ratios}, seed={seed})")


def limit_overlap(
    ds: CrossDomainDataset, source: str, target: str, *, ratio: float, mode: str = "drop", seed: int = 0
) -> CrossDomainDataset:
    """Keeps only a ``ratio`` of the users linked across ``source`` and ``target`` train (the overlap knob).

    Among users with train interactions in both domains, a ``1 - ratio`` share (chosen with ``seed``) is unlinked:
    ``mode="drop"`` removes their ``source`` history; ``mode="split"`` moves it to new user ids (appended to the
    user space, raw id ``"<raw>#<source>"``) so they count as different people. Users cold in ``target`` (no
    target train) are never touched, so evaluation is unchanged.

    Args:
      ds: the dataset.
      source: the domain whose history is unlinked.
      target: the other domain of the pair.
      ratio: share of the linked users that stay linked, in [0, 1].
      mode: ``"drop"`` (remove the unlinked users' ``source`` history) or ``"split"`` (move it to new user ids).
      seed: which users are unlinked.

    Returns:
      The dataset with fewer linked users (``ds`` itself is not modified).
    """
    if mode not in ("drop", "split"):
        raise DataError(f"mode={mode!r}; expected 'drop' or 'split'")
    if not 0.0 <= float(ratio) <= 1.0:
        raise DataError(f"ratio={ratio} must be in [0, 1]")
    linked = np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train"))
    if linked.size == 0:
        raise DataError(f"limit_overlap: domains {source!r} and {target!r} share no train users")
    rng = np.random.default_rng(seed)
    unlink = rng.permutation(linked)[: linked.size - int(round(ratio * linked.size))]
    is_unlinked = np.zeros(ds.n_users, bool)
    is_unlinked[unlink] = True
    note = (
        f"limit_overlap({source}<->{target}, ratio={ratio}, mode={mode}, seed={seed}): unlinked "
        f"{unlink.size} of {linked.size} overlapping users"
    )
    new_source = {}
    n_users, user_ids = ds.n_users, ds.user_ids
    if mode == "split":
        new_id = np.full(ds.n_users, -1, np.int64)
        new_id[unlink] = ds.n_users + np.arange(unlink.size)
        n_users = ds.n_users + unlink.size
        user_ids = np.concatenate([ds.user_ids.astype(str), np.char.add(ds.user_ids[unlink].astype(str), f"#{source}")])
    for split in ds.splits(source):
        inter = ds.interactions(source, split)
        hit = is_unlinked[inter.users]
        if mode == "drop":
            new_source[split] = inter.take(~hit)
        else:
            users = np.where(hit, new_id[inter.users], inter.users).astype(np.int32)
            new_source[split] = inter._replace(users=users)
    domains = {}
    for name, d in ds.domains.items():
        splits = new_source if name == source else d.splits
        domains[name] = dataclasses.replace(d, splits=dict(splits))
    return CrossDomainDataset(domains, int(n_users), user_ids, ds.notes + (note,))

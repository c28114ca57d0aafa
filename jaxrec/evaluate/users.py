"""Which held-out users an evaluation ranks: cold, warm or all held-out users of a domain's split.

A *cold* user has held-out items in the target domain and no target train history (and, when a source domain
is named, source train history: :meth:`jaxrec.data.CrossDomainDataset.cold_users`); a *warm* user has both
held-out items and target train history. Selections are ``int64[U]`` user ids in increasing order.
"""

from __future__ import annotations

import numpy as np

from jaxrec import checks
from jaxrec.data import CrossDomainDataset

__all__ = ["USER_SELECTIONS", "select_users", "user_selection"]

USER_SELECTIONS = ("cold", "warm", "all")


def user_selection(ds: CrossDomainDataset, target: str, split: str, source: str | None, users: str) -> np.ndarray:
    """The ``int64[U]`` sorted selection of :func:`select_users`, possibly empty (``U = 0``).

    Raises:
        ValueError: an unknown selection (listing the valid ones), an unknown domain, or ``source == target``.
    """
    checks.choice("user selection", users, USER_SELECTIONS)
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
    selected = user_selection(ds, target, split, source, users)
    if selected.size == 0:
        extra = f" with {source!r} train history" if users == "cold" and source is not None else ""
        raise ValueError(
            f"no {users!r} users{extra} to evaluate in target={target!r}, split={split!r} "
            f"({ds.users_with(target, split).size} held-out users in that split)"
        )
    return selected

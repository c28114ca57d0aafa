"""The options of an evaluation, checked and resolved before any work: :func:`check_options` and its :class:`Plan`.

Everything here is host-side numpy over the dataset's index arrays (no model, no device work), so a caller can
check an evaluation's options before training (the CLI does) and :func:`jaxrec.evaluate.evaluate` checks them
before it scores anything. Every error is a ``ValueError`` (``TypeError`` for a wrong kind of value) naming the
option and its value.

Axis conventions: ``U`` = selected users, ``m`` = padded number of excluded (seen train) items per user; item
ids are the target domain's contiguous ids, ``-1`` is padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxrec import checks
from jaxrec.data import CrossDomainDataset
from jaxrec.evaluate.users import USER_SELECTIONS, select_users
from jaxrec.topk.inputs import check_flag

__all__ = ["EVAL_SPLITS", "PROTOCOLS", "Plan", "check_options", "round_width", "seen_exclusions"]

PROTOCOLS = ("full", "sampled")
EVAL_SPLITS = ("valid", "test")  # the held-out splits an evaluation ranks


class Plan(NamedTuple):
    """An evaluation's resolved options and the host-side arrays every protocol starts from.

    Attributes:
        protocols: the protocols asked for, in :data:`PROTOCOLS` order.
        ks: full-ranking cutoffs, sorted, without repeats.
        sampled_ks: sampled-protocol cutoffs, sorted, without repeats.
        n_negatives: negatives per held-out pair.
        seeds: one sampled run per seed (non-negative ints).
        batch_size: users per jitted batch.
        check_finite: whether scorer outputs are checked for ``NaN`` / ``±inf``.
        selected: ``int64[U]`` sorted user ids (``U >= 1``).
        exclude: ``int32[U, m]`` seen train items of the selected users (``-1`` padded), or None without
            ``"full"``.
        pool: the distinct train items of the target (the negatives' pool), or None without ``"sampled"``.
    """

    protocols: tuple[str, ...]
    ks: tuple[int, ...]
    sampled_ks: tuple[int, ...]
    n_negatives: int
    seeds: tuple[int, ...]
    batch_size: int
    check_finite: bool
    selected: np.ndarray
    exclude: np.ndarray | None
    pool: np.ndarray | None


def round_width(width: int) -> int:
    """Padded row width: a multiple of 8 (at least 8), so that similar selections share compiled shapes."""
    return max(8, -(-width // 8) * 8)


def _protocols(protocols: Any) -> tuple[str, ...]:
    if isinstance(protocols, str):
        protocols = (protocols,)
    protocols = tuple(protocols)
    if not protocols:
        raise ValueError(f"protocols is empty; valid protocols: {list(PROTOCOLS)}")
    for p in protocols:
        checks.choice("protocol", p, PROTOCOLS)
    return tuple(p for p in PROTOCOLS if p in protocols)


def _ks(ks: Any, name: str) -> tuple[int, ...]:
    """Cutoffs as a sorted tuple without repeats; the error quotes them as a tuple."""
    if not isinstance(ks, (int, np.integer, str, bytes)):
        try:
            ks = tuple(ks)
        except TypeError:
            pass
    return tuple(sorted(set(checks.positive_ints(name, ks))))


def _seeds(seeds: Any) -> tuple[int, ...]:
    try:
        out = tuple(seeds) if not isinstance(seeds, (str, bytes)) else None
    except TypeError:
        out = None
    if (
        not out
        or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) for s in out)
        or any(s < 0 for s in out)
    ):
        raise ValueError(f"seeds must be a non-empty sequence of non-negative ints, got {seeds!r}")
    return tuple(int(s) for s in out)


def seen_exclusions(ds: CrossDomainDataset, domain: str, users: np.ndarray, k: int, label: str) -> np.ndarray:
    """``int32[U, max(8, m)]`` seen train items of ``users`` in ``domain``, ``-1`` padded.

    Raises:
        ValueError: ``"{label} exceeds the catalogue of domain ..."`` when a user's exclusions leave fewer than
            ``k`` items (``label`` names the option, e.g. ``"ks=(10, 61): K=61"``).
    """
    seen = ds.seen(domain, "train")
    n_items = ds.n_items(domain)
    most = int(seen.lengths[users].max()) if users.size else 0
    if k > n_items - most:
        raise ValueError(
            f"{label} exceeds the catalogue of domain {domain!r}: {n_items} items minus up to {most} seen "
            f"train items excluded per user leaves {n_items - most}"
        )
    return seen.to_padded(users, width=round_width(most))


def check_options(
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
    check_finite: bool = True,
) -> Plan:
    """Checks the options of :func:`jaxrec.evaluate.evaluate` against ``ds`` and resolves them (no scorer needed).

    Cheap (host-side index arrays only): call it before training to fail early on options that would only
    fail once the model is trained. The keywords and defaults are those of ``evaluate``.

    Returns:
        the :class:`Plan`.

    Raises:
        ValueError: naming the option and its value: an unknown protocol, split (``"valid"`` / ``"test"``),
            target or source domain or user selection (listing the valid ones); empty or non-positive ``ks`` /
            ``sampled_ks``; ``max(ks)`` larger than the catalogue minus a selected user's seen items; a
            non-positive ``n_negatives`` or ``batch_size``; empty or negative ``seeds``; no selected users; no
            target train items to draw negatives from.
        TypeError: ``ds`` is not a :class:`CrossDomainDataset`, ``check_finite`` is not a bool.

    Example:
        >>> from jaxrec import data
        >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(80, 60))[0], "source", "target")
        >>> check_options(ds, target="target", source="source", ks=(10,)).selected.size
        18
        >>> check_options(ds, target="target", ks=(100,))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: ks=(100,): K=100 exceeds the catalogue of domain 'target': 60 items minus up to ...
    """
    if not isinstance(ds, CrossDomainDataset):
        raise TypeError(f"ds must be a jaxrec.data.CrossDomainDataset, got {type(ds).__name__}")
    protocols = _protocols(protocols)
    ks = _ks(ks, "ks")
    sampled_ks = _ks(sampled_ks, "sampled_ks")
    n_negatives = checks.positive_int("n_negatives", n_negatives)
    batch_size = checks.positive_int("batch_size", batch_size)
    seeds = _seeds(seeds)
    check_finite = check_flag("check_finite", check_finite)
    checks.choice("target domain", target, ds.domain_names)
    if source is not None:
        checks.choice("source domain", source, ds.domain_names)
    checks.choice("split", split, EVAL_SPLITS)
    checks.choice("user selection", users, USER_SELECTIONS)
    selected = select_users(ds, target=target, split=split, source=source, users=users)
    exclude = pool = None
    if "full" in protocols:
        exclude = seen_exclusions(ds, target, selected, max(ks), f"ks={ks!r}: K={max(ks)}")
    if "sampled" in protocols:
        pool = np.unique(ds.interactions(target, "train").items)
        if pool.size == 0:
            raise ValueError(
                f"protocols={protocols!r}: the sampled protocol draws negatives from the train items of "
                f"target {target!r}, and it has none"
            )
    return Plan(protocols, ks, sampled_ks, n_negatives, seeds, batch_size, check_finite, selected, exclude, pool)

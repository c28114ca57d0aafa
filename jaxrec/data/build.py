"""Building a :class:`~jaxrec.data.dataset.CrossDomainDataset` from raw ids: every loader ends here.

A loader reads each split's raw columns into a :class:`RawSplit` (raw user and item ids, ints or strings, with
the file and line numbers they came from) and hands ``{domain: {split: RawSplit}}`` to :func:`from_raw`, which
applies the shared-user rule (``shared_users``), remaps raw ids to contiguous ids in sorted raw order, checks
held-out items against train and drops or rejects duplicates, recording every change in ``dataset.notes``.
:func:`from_arrays` does the same for in-memory arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from jaxrec.data import idmap, parse
from jaxrec.data.dataset import SPLITS, CrossDomainDataset, DataError, Domain, Interactions, snippet


@dataclasses.dataclass
class RawSplit:
    """Raw columns of one split, with provenance for error messages.

    Attributes:
      users: ``[n]`` raw user ids (int64 or strings).
      items: ``[n]`` raw item ids (int64 or strings).
      ratings: optional ``float32 [n]``.
      timestamps: optional ``float64 [n]``.
      source: the file name or a description, quoted in error messages.
      lines: optional 1-based line number of each row in ``source``, ``int64 [n]`` or a
        :class:`~jaxrec.data.parse.LineNumbers` (else errors name the row).
      unit: what ``lines`` count, ``"line"`` of a file or ``"row"`` of a table.
      owned: the loader made ``users`` and ``items`` for this split alone: :func:`from_raw` may overwrite them
        with the contiguous ids (no second copy of the ids; never set for a caller's arrays).
    """

    users: np.ndarray  # raw ids (int64 or str)
    items: np.ndarray
    ratings: np.ndarray | None = None  # float32
    timestamps: np.ndarray | None = None  # float64
    source: str = "<arrays>"  # file name or description
    lines: np.ndarray | parse.LineNumbers | None = None  # 1-based line number of each row in ``source``
    unit: str = "line"
    owned: bool = False


def _where(raw: RawSplit, row: int) -> str:
    return parse.Source(raw.source, raw.lines, unit=raw.unit).at(row)


def _compact(a: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """The rows ``keep`` of an array this module may overwrite, moved to its front: a view, no second copy."""
    if a is None:
        return None
    n = int(keep.sum())
    a[:n] = a[keep]
    return a[:n]


def _raw(ids: np.ndarray, index: np.ndarray, row: int):
    """The raw id of row ``row`` as a Python value, in the index's kind (for messages)."""
    value = ids[row]
    if index.size and value.dtype.kind != index.dtype.kind:
        value = np.asarray(value).astype(index.dtype)
    return value.item()


SHARED_USERS_RULES = ("below_heldout",)  # the named rules ``shared_users`` accepts besides None and an integer


def _shared_bound(raw: Mapping[str, Mapping[str, RawSplit]], shared_users: int | str) -> int:
    """The bound ``N`` of ``shared_users`` (already checked by :func:`check_options`): integer user ids ``< N``
    name one person in every domain."""
    if isinstance(shared_users, str):  # "below_heldout"
        held = [s.users for splits in raw.values() for k, s in splits.items() if k != "train" and len(s.users)]
        if not held:
            raise DataError("shared_users='below_heldout' needs valid/test users to find the bound; there are none")
        return int(max(int(np.max(u)) for u in held)) + 1
    return int(shared_users)


def _localize_users(
    raw: Mapping[str, Mapping[str, RawSplit]], shared_users: int | str
) -> tuple[dict[str, dict[str, RawSplit]], str]:
    """Renames every user id ``>= N`` to the string ``"<domain>:<id>"``, so equal numbers in two domains stay
    two people; ids ``< N`` become the string ``"<id>"`` and stay shared."""
    for name, splits in raw.items():
        for split, r in splits.items():
            if r.users.dtype.kind not in "iu":
                raise DataError(
                    f"shared_users={snippet(shared_users)} needs integer user ids, but domain {name!r} split {split!r} "
                    f"({r.source}) has {r.users.dtype} ids"
                )
    bound = _shared_bound(raw, shared_users)
    out: dict[str, dict[str, RawSplit]] = {}
    local = {}
    for name, splits in raw.items():
        out[name] = {}
        for split, r in splits.items():
            ids = r.users.astype(np.int64)
            is_local = ids >= bound
            names = np.where(is_local, np.char.add(f"{name}:", ids.astype(str)), ids.astype(str))
            out[name][split] = dataclasses.replace(r, users=names.astype(str))
            local.setdefault(name, set()).update(np.unique(ids[is_local]).tolist())
    counts = ", ".join(f"{name} {len(v):,}" for name, v in local.items())
    return out, f"user ids >= {bound} are local to their domain (shared_users={snippet(shared_users)}): {counts}"


def check_options(
    *,
    unknown_items: str = "error",
    duplicates: str = "drop",
    item_space: str = "train",
    shared_users: int | str | None = None,
) -> None:
    """Raises :class:`DataError` for an option of :func:`from_arrays` outside its choices (before any work)."""
    for option, value, valid in (
        ("unknown_items", unknown_items, ("error", "drop")),
        ("duplicates", duplicates, ("drop", "keep", "error")),
        ("item_space", item_space, ("train", "all")),
    ):
        if not isinstance(value, str) or value not in valid:
            raise DataError(f"{option}={snippet(value)}; expected one of {valid}")
    if shared_users is None or (isinstance(shared_users, str) and shared_users in SHARED_USERS_RULES):
        return
    if isinstance(shared_users, bool) or not isinstance(shared_users, (int, np.integer)) or shared_users < 0:
        raise DataError(
            f"shared_users={snippet(shared_users)}; expected None, an integer >= 0 or one of {SHARED_USERS_RULES}"
        )


def from_raw(
    raw: Mapping[str, Mapping[str, RawSplit]],
    *,
    unknown_items: str = "error",
    duplicates: str = "drop",
    item_space: str = "train",
    shared_users: int | str | None = None,
    notes: tuple[str, ...] = (),
) -> CrossDomainDataset:
    """Builds a dataset from raw splits: remaps raw ids to contiguous ids and validates.

    Args:
      raw: ``{domain: {split: RawSplit}}``; every domain needs a non-empty ``"train"`` split, split names are
        among ``SPLITS``.
      unknown_items, duplicates, item_space, shared_users: see :func:`from_arrays`.
      notes: the loader's own notes (e.g. skipped folders), put first in ``dataset.notes``.

    Returns:
      A :class:`~jaxrec.data.dataset.CrossDomainDataset` whose ``notes`` count everything dropped.

    Raises:
      DataError: an invalid option, an empty or unknown split, or bad ids (naming ``RawSplit.source`` and line).
    """
    check_options(unknown_items=unknown_items, duplicates=duplicates, item_space=item_space, shared_users=shared_users)
    if not raw:
        raise DataError("no domains given")
    notes = list(notes)
    for name, splits in raw.items():
        for split in splits:
            if split not in SPLITS:
                raise DataError(f"domain {snippet(name)}: unknown split {snippet(split)}; expected one of {SPLITS}")
        if "train" not in splits or len(splits["train"].users) == 0:
            where = splits["train"].source if "train" in splits else f"domain {snippet(name)}"
            raise DataError(
                f"domain {snippet(name)} has no train interactions ({where}): an empty domain cannot be used"
            )
    if shared_users is not None:
        raw, note = _localize_users(raw, shared_users)
        notes.append(note)

    user_ids = idmap.sorted_unique([s.users for splits in raw.values() for s in splits.values()])
    user_map = idmap.IdMap(user_ids)
    domains = {}
    for name, splits in raw.items():
        space = [splits["train"].items] if item_space == "train" else [s.items for s in splits.values()]
        item_ids = idmap.sorted_unique(space)
        item_map = idmap.IdMap(item_ids)
        out = {}
        for split, r in splits.items():
            u, _ = user_map(r.users, overwrite=r.owned)
            i, known = item_map(r.items, overwrite=r.owned)
            keep = None
            if known is not None:
                bad = int(np.flatnonzero(~known)[0])
                if unknown_items == "error":
                    raise DataError(
                        f"{_where(r, bad)}: item {snippet(_raw(r.items, item_ids, bad))} of domain {name!r} split "
                        f"{split!r} never occurs in that domain's train split ({int((~known).sum())} such rows); pass "
                        f"unknown_items='drop' to filter them (counted in dataset.notes)"
                    )
                notes.append(f"{name}/{split}: dropped {int((~known).sum())} interactions whose item is not in train")
                keep = known
            dup = None if duplicates == "keep" else idmap.repeated_rows(u, i, item_ids.size, keep)
            if dup is not None:
                if duplicates == "error":
                    row = int(np.flatnonzero(dup)[0])
                    raise DataError(
                        f"{_where(r, row)}: duplicate interaction (user {snippet(user_ids[u[row]].item())}, "
                        f"item {snippet(item_ids[i[row]].item())}) in domain {name!r} split {split!r}"
                    )
                notes.append(f"{name}/{split}: dropped {int(dup.sum())} duplicate interactions (kept the first)")
                keep = ~dup if keep is None else keep & ~dup
            inter = Interactions(u, i, r.ratings, r.timestamps)
            if keep is not None:
                inter = Interactions(*(_compact(a, keep) for a in inter)) if r.owned else inter.take(keep)
            out[split] = inter
        domains[name] = Domain(name=name, n_items=int(item_ids.size), splits=out, item_ids=item_ids)
    return CrossDomainDataset(domains, int(user_ids.size), user_ids, tuple(notes))


def from_arrays(
    domains: Mapping[str, Mapping[str, Any]],
    *,
    unknown_items: str = "error",
    duplicates: str = "drop",
    item_space: str = "train",
    shared_users: int | str | None = None,
) -> CrossDomainDataset:
    """Builds a dataset from in-memory arrays of raw ids.

    Args:
      domains: ``{domain: {split: (users, items[, ratings[, timestamps]])}}`` or with a dict
        ``{"users":…, "items":…, "ratings":…, "timestamps":…}`` per split. Raw ids may be ints or strings.
      unknown_items: a valid/test item absent from the domain's train split: ``"error"`` (default) or
        ``"drop"`` (filtered, counted in ``notes``).
      duplicates: repeated ``(user, item)`` pairs within a split: ``"drop"`` (default; keeps the first, counted
        in ``notes``), ``"keep"`` or ``"error"``.
      item_space: build each domain's item ids from its ``"train"`` split (default) or from ``"all"`` splits.
      shared_users: which integer user ids name the same person in every domain. ``None`` (default): all of
        them. An integer ``N``: ids ``< N`` are shared, and an id ``>= N`` is local to its domain (the same
        number in two domains is two people; its raw id becomes ``"<domain>:<id>"``, shared ones ``"<id>"``).
        ``"below_heldout"``: ``N`` is one more than the largest user id in any valid/test split, the layout of
        CDRIB's preprocessing (see :func:`jaxrec.data.load_dir`).

    Returns:
      A :class:`CrossDomainDataset`.

    Raises:
      DataError: naming the domain, split and row for: ``domains`` not a mapping of non-empty string names to
        mappings of splits; a split value that is not ``(users, items[, ratings[, timestamps]])`` or a dict
        with those keys; a column that is not 1-D or whose length differs from ``users``; ids that are negative,
        NaN, not whole, beyond int64, empty or space-padded strings, longer than ``parse.MAX_ID_LENGTH``, or a
        mix of integers and strings in one array; ratings or timestamps that are not finite numbers; an option
        outside its choices; an empty train split.
    """
    check_options(unknown_items=unknown_items, duplicates=duplicates, item_space=item_space, shared_users=shared_users)
    if not isinstance(domains, Mapping):
        raise DataError(
            f"domains must be a mapping {{domain: {{split: (users, items)}}}}, got {type(domains).__name__}"
        )
    raw = {}
    for name, splits in domains.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"domain names must be non-empty strings, got {snippet(name)}")
        if not isinstance(splits, Mapping):
            raise DataError(
                f"domain {snippet(name)}: expected a mapping {{split: (users, items)}}, got {type(splits).__name__}"
            )
        raw[name] = {}
        for split, value in splits.items():
            where = f"domain {snippet(name)} split {snippet(split)}"
            users, items, ratings, timestamps = _split_columns(value, where)
            src = parse.Source(where)
            users = parse.array_ids(users, "user id", src)
            items = parse.array_ids(items, "item id", src)
            if ratings is not None:
                ratings = parse.as_float32(parse.array_numbers(ratings, "rating", src), "rating", src)
            if timestamps is not None:
                timestamps = parse.array_numbers(timestamps, "timestamp", src)
            raw[name][split] = RawSplit(users, items, ratings, timestamps, source=where)
    return from_raw(
        raw, unknown_items=unknown_items, duplicates=duplicates, item_space=item_space, shared_users=shared_users
    )


_ARRAY_KEYS = ("users", "items", "ratings", "timestamps")


def _split_columns(value: Any, where: str) -> list[np.ndarray | None]:
    """The 1-D columns ``[users, items, ratings, timestamps]`` of one split (absent ones None), equal lengths."""
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in _ARRAY_KEYS]
        if unknown:
            raise DataError(f"{where}: unknown key {snippet(unknown[0])}; expected keys {_ARRAY_KEYS}")
        cols = [value.get(k) for k in _ARRAY_KEYS]
    else:
        try:
            cols = list(value) if not isinstance(value, (str, bytes)) else []
        except TypeError:
            cols = []
        if not 2 <= len(cols) <= 4:
            raise DataError(
                f"{where}: expected (users, items[, ratings[, timestamps]]) or a dict with keys {_ARRAY_KEYS}, got "
                f"{type(value).__name__}" + (f" of length {len(cols)}" if cols else "")
            )
        cols = cols + [None] * (4 - len(cols))
    out = []
    for col, key in zip(cols, _ARRAY_KEYS):
        if col is None:
            if key in ("users", "items"):
                raise DataError(f"{where}: no {key}; every split needs users and items")
            out.append(None)
            continue
        try:
            col = np.asarray(col)
        except (ValueError, TypeError) as e:
            raise DataError(f"{where}: {key} is not an array: {snippet(str(e))}") from None
        out.append(col)
    users, items = out[0], out[1]
    if users.ndim != 1 or users.shape != items.shape:
        raise DataError(f"{where}: users {users.shape} and items {items.shape} must be 1-D of equal length")
    for col, key in zip(out[2:], _ARRAY_KEYS[2:]):
        if col is not None and col.shape != users.shape:
            raise DataError(f"{where}: {key} {col.shape} must be 1-D with one value per interaction ({users.shape})")
    return out

"""Host-side cross-domain data: domains over one shared user id space, loaders, splits, synthetic data.

Everything here is numpy on the host and immutable: a loader returns a :class:`CrossDomainDataset`, a split
returns a new one. Devices only ever see the fixed-shape batches built from it (``jaxrec.batching``).

Conventions:
  * A *domain* (``"game"``, ``"video"``) has its own contiguous item id space ``[0, n_items)``.
  * All domains share one contiguous user id space ``[0, n_users)``: user 17 in every domain is one person.
    Loaders read equal raw user ids in two domains as one person unless told otherwise (``shared_users``:
    CDRIB's releases number the non-common users per domain, see :func:`load_dir`).
  * Each domain has named *splits* (``"train"``, ``"valid"``, ``"test"``), each an :class:`Interactions`
    (parallel arrays ``users int32 [n]``, ``items int32 [n]``, optional ``ratings float32 [n]`` and
    ``timestamps float64 [n]``).
  * Raw ids (strings or integers) are remapped to contiguous ids in sorted raw order; ``dataset.user_ids`` and
    ``domain.item_ids`` map back (``dataset.user_ids[u]`` is the raw id of user ``u``).
  * Seen-item sets are :class:`CSR` (``indptr [n_users + 1]``, ``indices [nnz]``, sorted per row).
  * Nothing is dropped silently: every deduplication or filtering is counted in ``dataset.notes``.

Example:
  >>> ds = jaxrec.data.load_dir("../shared/data/amazon-game-video", shared_users="below_heldout")
  >>> users, items, *_ = ds.interactions("video", "train")
  >>> print(ds.summary())
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Malformed or inconsistent input data; the message names the file/line or argument."""


# ----------------------------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------------------------


class Interactions(NamedTuple):
    """Parallel arrays of one domain split. Unpacks as ``users, items, ratings, timestamps``."""

    users: np.ndarray  # int32 [n]
    items: np.ndarray  # int32 [n]
    ratings: np.ndarray | None = None  # float32 [n]
    timestamps: np.ndarray | None = None  # float64 [n]

    @property
    def size(self) -> int:
        """Number of interactions (``len()`` of the tuple is its 4 fields, as for any NamedTuple)."""
        return int(self.users.shape[0])

    def take(self, index: np.ndarray) -> "Interactions":
        """Rows ``index`` (int array or bool mask) of every field."""
        return Interactions(*(None if a is None else a[index] for a in self))

    @staticmethod
    def concat(parts: Sequence["Interactions"]) -> "Interactions":
        parts = [p for p in parts if p is not None]
        fields = []
        for f in range(4):
            arrays = [p[f] for p in parts]
            fields.append(None if any(a is None for a in arrays) else np.concatenate(arrays))
        return Interactions(*fields)


class CSR(NamedTuple):
    """Compressed sparse rows: row ``r`` holds ``indices[indptr[r]:indptr[r + 1]]`` (sorted, unique)."""

    indptr: np.ndarray  # int64 [n_rows + 1]
    indices: np.ndarray  # int32 [nnz]

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n_rows]: entries per row."""
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        return self.indices[self.indptr[r] : self.indptr[r + 1]]

    def to_padded(self, rows: np.ndarray | None = None, *, width: int | None = None, pad: int = -1) -> np.ndarray:
        """Rows as a padded ``int32 [len(rows), width]`` array (``pad`` fills; default width = longest row).

        Raises:
          DataError: if ``width`` is smaller than the longest requested row (entries would be lost).
        """
        rows = np.arange(self.n_rows) if rows is None else np.asarray(rows)
        lengths = self.lengths[rows]
        longest = int(lengths.max()) if lengths.size else 0
        width = longest if width is None else int(width)
        if width < longest:
            raise DataError(f"to_padded(width={width}) would cut rows of length up to {longest}")
        out = np.full((rows.shape[0], width), pad, dtype=np.int32)
        if longest:
            starts = self.indptr[rows]
            col = np.arange(width)
            valid = col[None, :] < lengths[:, None]
            out[valid] = self.indices[(starts[:, None] + col[None, :])[valid]]
        return out

    @staticmethod
    def from_pairs(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> "CSR":
        """Builds a CSR from (row, col) pairs; duplicates are merged, columns sorted per row."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if rows.size:
            key = np.unique(rows * (int(cols.max()) + 1) + cols)
            width = int(cols.max()) + 1
            rows, cols = key // width, key % width
        counts = np.bincount(rows, minlength=n_rows) if rows.size else np.zeros(n_rows, np.int64)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return CSR(indptr, cols.astype(np.int32))


def _freeze(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True)
class Domain:
    """One domain: its item id space and its splits.

    Attributes:
      name: domain name.
      n_items: size of the contiguous item id space.
      splits: split name -> :class:`Interactions` (user ids in the dataset's shared space).
      item_ids: ``[n_items]`` raw item id of each contiguous id.
    """

    name: str
    n_items: int
    splits: Mapping[str, Interactions]
    item_ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class CrossDomainDataset:
    """Two or more named domains over one shared user id space (see the module docstring).

    Attributes:
      domains: domain name -> :class:`Domain`, in a fixed order.
      n_users: size of the shared user id space.
      user_ids: ``[n_users]`` raw user id of each contiguous id.
      notes: human-readable record of everything a loader or split deduplicated, filtered or moved.
    """

    domains: Mapping[str, Domain]
    n_users: int
    user_ids: np.ndarray
    notes: tuple[str, ...] = ()
    _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if len(self.domains) < 1:
            raise DataError("a dataset needs at least one domain")
        for d in self.domains.values():
            for split, inter in d.splits.items():
                for a in inter:
                    _freeze(a)
                if inter.size and (inter.users.max() >= self.n_users or inter.items.max() >= d.n_items):
                    raise DataError(f"domain {d.name!r} split {split!r}: ids out of range")
        _freeze(self.user_ids)

    # -- access ------------------------------------------------------------------------------------------------

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(self.domains)

    def domain(self, name: str) -> Domain:
        """The domain called ``name``; raises listing the valid names otherwise."""
        try:
            return self.domains[name]
        except KeyError:
            raise DataError(f"unknown domain {name!r}; this dataset has {list(self.domains)}") from None

    def n_items(self, domain: str) -> int:
        return self.domain(domain).n_items

    def splits(self, domain: str) -> tuple[str, ...]:
        return tuple(self.domain(domain).splits)

    def interactions(self, domain: str, split: str = "train") -> Interactions:
        """``(users, items, ratings, timestamps)`` of ``domain``/``split``; ratings/timestamps may be None.

        An absent split (e.g. no ``valid.txt``) is returned empty rather than raising; an unknown *domain* raises.
        """
        d = self.domain(domain)
        if split not in d.splits:
            if split not in SPLITS:
                raise DataError(f"unknown split {split!r} for domain {domain!r}; it has {list(d.splits)}")
            empty = np.zeros(0, np.int32)
            return Interactions(empty, empty)
        return d.splits[split]

    def seen(self, domain: str, split: str | Sequence[str] = "train") -> CSR:
        """Per-user seen items of ``domain`` in ``split`` (or the union of several splits), as CSR over all users."""
        splits = (split,) if isinstance(split, str) else tuple(split)
        key = ("seen", domain, splits)
        if key not in self._cache:
            parts = [self.interactions(domain, s) for s in splits]
            inter = Interactions.concat(parts)
            csr = CSR.from_pairs(inter.users, inter.items, self.n_users)
            _freeze(csr.indptr), _freeze(csr.indices)
            self._cache[key] = csr
        return self._cache[key]

    def users_with(self, domain: str, split: str = "train") -> np.ndarray:
        """Sorted unique user ids with at least one interaction in ``domain``/``split``."""
        return np.unique(self.interactions(domain, split).users)

    def overlap(self, split: str = "train") -> dict[tuple[str, str], int]:
        """Number of users with ``split`` interactions in both domains, for every unordered domain pair."""
        present = {name: np.zeros(self.n_users, bool) for name in self.domains}
        for name in self.domains:
            present[name][self.interactions(name, split).users] = True
        names = list(self.domains)
        return {(a, b): int(np.sum(present[a] & present[b])) for i, a in enumerate(names) for b in names[i + 1 :]}

    def cold_users(self, source: str, target: str, split: str = "test") -> np.ndarray:
        """Users in ``target``/``split`` who have ``source`` train history and no ``target`` train history."""
        held = self.users_with(target, split)
        has_source = np.isin(held, self.users_with(source, "train"))
        has_target = np.isin(held, self.users_with(target, "train"))
        return held[has_source & ~has_target]

    def item_popularity(self, domain: str, split: str = "train") -> np.ndarray:
        """int64 ``[n_items]``: interaction count of each item in ``domain``/``split``."""
        return np.bincount(self.interactions(domain, split).items, minlength=self.n_items(domain))

    def raw_users(self, users: np.ndarray) -> np.ndarray:
        """Raw (original) ids of contiguous user ids."""
        return self.user_ids[np.asarray(users)]

    def raw_items(self, domain: str, items: np.ndarray) -> np.ndarray:
        """Raw (original) ids of contiguous item ids of ``domain``."""
        return self.domain(domain).item_ids[np.asarray(items)]

    def replace_splits(self, new: Mapping[str, Mapping[str, Interactions]], note: str) -> "CrossDomainDataset":
        """A copy with the splits of some domains replaced (same id spaces), and ``note`` appended."""
        domains = {}
        for name, d in self.domains.items():
            splits = dict(new.get(name, d.splits))
            domains[name] = dataclasses.replace(d, splits=splits)
        return CrossDomainDataset(domains, self.n_users, self.user_ids, self.notes + (note,))

    def summary(self) -> str:
        """A plain-text table of users, items and interactions per domain and split, plus overlaps and notes."""
        lines = [f"users: {self.n_users}  domains: {len(self.domains)}"]
        lines.append(f"{'domain':<12}{'split':<8}{'interactions':>14}{'users':>9}{'items':>9}{'density':>10}")
        for name, d in self.domains.items():
            for split, inter in d.splits.items():
                nu = np.unique(inter.users).size
                ni = np.unique(inter.items).size
                dens = inter.size / max(nu * d.n_items, 1)
                lines.append(f"{name:<12}{split:<8}{inter.size:>14,}{nu:>9,}{ni:>9,}{dens:>10.5f}")
        for (a, b), n in self.overlap().items():
            lines.append(f"overlapping train users {a} & {b}: {n:,}")
        for name, d in self.domains.items():
            if "valid" in d.splits and "test" in d.splits:
                v, t = (np.unique(d.splits[k].users) for k in ("valid", "test"))
                both = np.intersect1d(v, t).size
                if both:
                    lines.append(f"users in both valid and test of {name}: {both:,} (of {v.size:,} / {t.size:,})")
        for name in self.domains:
            for other in self.domains:
                if other != name:
                    n = self.cold_users(other, name, "test").size
                    if n:
                        lines.append(f"cold-start test users {other} -> {name}: {n:,}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Building a dataset from raw ids (every loader ends here)
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _RawSplit:
    """Raw columns of one split, with provenance for error messages."""

    users: np.ndarray  # raw ids (int64 or str objects)
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    source: str = "<arrays>"  # file name or description
    lines: np.ndarray | None = None  # 1-based line number of each row in ``source``


def _where(raw: _RawSplit, row: int) -> str:
    line = f", line {int(raw.lines[row])}" if raw.lines is not None else f", row {row}"
    return f"{raw.source}{line}"


def _sorted_unique(values: list[np.ndarray]) -> np.ndarray:
    values = [v for v in values if v.size]
    if not values:
        return np.zeros(0, np.int64)
    kinds = {v.dtype.kind for v in values}
    if len(kinds) > 1:  # mixed ints and strings: compare as strings
        values = [v.astype(str) for v in values]
    return np.unique(np.concatenate(values))


SHARED_USERS_RULES = ("below_heldout",)


def _shared_bound(raw: Mapping[str, Mapping[str, _RawSplit]], shared_users: int | str) -> int:
    """The bound ``N`` of ``shared_users``: integer user ids ``< N`` name one person in every domain."""
    if isinstance(shared_users, str):
        if shared_users != "below_heldout":
            raise DataError(f"shared_users={shared_users!r}; expected None, an integer or one of {SHARED_USERS_RULES}")
        held = [s.users for splits in raw.values() for k, s in splits.items() if k != "train" and len(s.users)]
        if not held:
            raise DataError("shared_users='below_heldout' needs valid/test users to find the bound; there are none")
        return int(max(int(np.max(u)) for u in held)) + 1
    if isinstance(shared_users, bool) or not isinstance(shared_users, (int, np.integer)) or shared_users < 0:
        raise DataError(f"shared_users={shared_users!r}; expected None, an integer >= 0 or one of {SHARED_USERS_RULES}")
    return int(shared_users)


def _localize_users(
    raw: Mapping[str, Mapping[str, _RawSplit]], shared_users: int | str
) -> tuple[dict[str, dict[str, _RawSplit]], str]:
    """Renames every user id ``>= N`` to the string ``"<domain>:<id>"``, so equal numbers in two domains stay
    two people; ids ``< N`` become the string ``"<id>"`` and stay shared."""
    for name, splits in raw.items():
        for split, r in splits.items():
            if r.users.dtype.kind not in "iu":
                raise DataError(
                    f"shared_users={shared_users!r} needs integer user ids, but domain {name!r} split {split!r} "
                    f"({r.source}) has {r.users.dtype} ids"
                )
    bound = _shared_bound(raw, shared_users)
    out: dict[str, dict[str, _RawSplit]] = {}
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
    return out, f"user ids >= {bound} are local to their domain (shared_users={shared_users!r}): {counts}"


def _build(
    raw: Mapping[str, Mapping[str, _RawSplit]],
    *,
    unknown_items: str = "error",
    duplicates: str = "drop",
    item_space: str = "train",
    shared_users: int | str | None = None,
) -> CrossDomainDataset:
    """Remaps raw ids to contiguous ids and validates (see :func:`from_arrays` for the options)."""
    if unknown_items not in ("error", "drop"):
        raise DataError(f"unknown_items={unknown_items!r}; expected 'error' or 'drop'")
    if duplicates not in ("drop", "keep", "error"):
        raise DataError(f"duplicates={duplicates!r}; expected 'drop', 'keep' or 'error'")
    if item_space not in ("train", "all"):
        raise DataError(f"item_space={item_space!r}; expected 'train' or 'all'")
    if not raw:
        raise DataError("no domains given")
    notes: list[str] = []
    for name, splits in raw.items():
        if "train" not in splits or len(splits["train"].users) == 0:
            where = splits["train"].source if "train" in splits else f"domain {name!r}"
            raise DataError(f"domain {name!r} has no train interactions ({where}): an empty domain cannot be used")
        for split in splits:
            if split not in SPLITS:
                raise DataError(f"domain {name!r}: unknown split {split!r}; expected one of {SPLITS}")
    if shared_users is not None:
        raw, note = _localize_users(raw, shared_users)
        notes.append(note)

    user_ids = _sorted_unique([s.users for splits in raw.values() for s in splits.values()])
    domains = {}
    for name, splits in raw.items():
        space = [splits["train"].items] if item_space == "train" else [s.items for s in splits.values()]
        item_ids = _sorted_unique(space)
        out = {}
        for split, r in splits.items():
            users_raw, items_raw = r.users, r.items
            if user_ids.dtype.kind != users_raw.dtype.kind:
                users_raw = users_raw.astype(user_ids.dtype)
            if item_ids.dtype.kind != items_raw.dtype.kind:
                items_raw = items_raw.astype(item_ids.dtype)
            u = np.searchsorted(user_ids, users_raw).astype(np.int32)
            i = np.searchsorted(item_ids, items_raw)
            known = (i < item_ids.size) & (item_ids[np.minimum(i, item_ids.size - 1)] == items_raw)
            keep = np.ones(len(u), bool)
            if not known.all():
                bad = int(np.flatnonzero(~known)[0])
                if unknown_items == "error":
                    raise DataError(
                        f"{_where(r, bad)}: item {items_raw[bad].item()!r} of domain {name!r} split {split!r} "
                        f"never occurs in that domain's train split ({int((~known).sum())} such rows); pass "
                        f"unknown_items='drop' to filter them (counted in dataset.notes)"
                    )
                notes.append(f"{name}/{split}: dropped {int((~known).sum())} interactions whose item is not in train")
                keep &= known
            i = np.where(known, i, 0).astype(np.int32)
            if duplicates != "keep":
                key = u.astype(np.int64) * (item_ids.size + 1) + i
                key = np.where(keep, key, -1)
                _, first = np.unique(key, return_index=True)
                dup = np.ones(len(u), bool)
                dup[first] = False
                dup &= keep
                if dup.any():
                    if duplicates == "error":
                        row = int(np.flatnonzero(dup)[0])
                        raise DataError(
                            f"{_where(r, row)}: duplicate interaction (user {users_raw[row].item()!r}, item "
                            f"{items_raw[row].item()!r}) in domain {name!r} split {split!r}"
                        )
                    notes.append(f"{name}/{split}: dropped {int(dup.sum())} duplicate interactions (kept the first)")
                    keep &= ~dup
            inter = Interactions(u, i, r.ratings, r.timestamps)
            out[split] = inter if keep.all() else inter.take(keep)
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
        CDRIB's preprocessing (see :func:`load_dir`).

    Returns:
      A :class:`CrossDomainDataset`.
    """
    raw = {}
    for name, splits in domains.items():
        raw[name] = {}
        for split, value in splits.items():
            if isinstance(value, Mapping):
                cols = [value.get(k) for k in ("users", "items", "ratings", "timestamps")]
            else:
                cols = list(value) + [None] * (4 - len(value))
            users, items, ratings, timestamps = cols
            users, items = np.asarray(users), np.asarray(items)
            if users.ndim != 1 or users.shape != items.shape:
                raise DataError(
                    f"domain {name!r} split {split!r}: users {users.shape} and items {items.shape} must be "
                    f"1-D of equal length"
                )
            for arr, what in ((users, "user"), (items, "item")):
                if arr.dtype.kind in "iu" and arr.size and arr.min() < 0:
                    raise DataError(f"domain {name!r} split {split!r}: negative {what} id {int(arr.min())}")
                if arr.dtype.kind not in "iuUSO" and arr.size:
                    raise DataError(
                        f"domain {name!r} split {split!r}: {what} ids must be integers or strings, "
                        f"got dtype {arr.dtype}"
                    )
            if users.dtype.kind == "O":
                users = users.astype(str)
            if items.dtype.kind == "O":
                items = items.astype(str)
            ratings = None if ratings is None else np.asarray(ratings, np.float32)
            timestamps = None if timestamps is None else np.asarray(timestamps, np.float64)
            raw[name][split] = _RawSplit(users, items, ratings, timestamps, source=f"domain {name!r} split {split!r}")
    return _build(
        raw, unknown_items=unknown_items, duplicates=duplicates, item_space=item_space, shared_users=shared_users
    )


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------


def _read_lines(path: pathlib.Path) -> tuple[list[str], np.ndarray]:
    """Non-blank lines of a text file and their 1-based line numbers."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    numbers = [n for n, line in enumerate(lines, 1) if line.strip()]
    if len(numbers) != len(lines):
        lines = [lines[n - 1] for n in numbers]
    return lines, np.asarray(numbers, np.int64)


def _parse_ids(tokens: Sequence[str], path, numbers, lines, what: str, *, integer: bool) -> np.ndarray:
    """Converts id tokens, raising with file and line on the first bad one."""
    if not integer:
        return np.asarray(tokens, dtype=str)
    try:
        values = np.asarray(tokens, dtype=np.int64)
    except ValueError:
        values = None
    if values is None or (values.size and values.min() < 0):
        for row, tok in enumerate(tokens):
            try:
                ok = int(tok) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise DataError(
                    f"{path}, line {int(numbers[row])}: {what} id {tok!r} is not a non-negative integer: {lines[row]!r}"
                ) from None
    return values


def _read_tsv(path: pathlib.Path, *, integer_ids: bool = True) -> _RawSplit:
    """Reads ``user<TAB>item[<TAB>rating[<TAB>timestamp]]`` lines."""
    lines, numbers = _read_lines(path)
    if not lines:
        return _RawSplit(np.zeros(0, np.int64), np.zeros(0, np.int64), source=str(path), lines=numbers)
    fields = [line.rstrip("\r").split("\t") for line in lines]
    width = len(fields[0])
    for row, f in enumerate(fields):
        if len(f) != width or not 2 <= len(f) <= 4:
            raise DataError(
                f"{path}, line {int(numbers[row])}: expected {width if 2 <= width <= 4 else '2 to 4'} "
                f"tab-separated columns (user, item[, rating[, timestamp]]), got {len(f)}: {lines[row]!r}"
            )
    cols = list(zip(*fields))
    users = _parse_ids(cols[0], path, numbers, lines, "user", integer=integer_ids)
    items = _parse_ids(cols[1], path, numbers, lines, "item", integer=integer_ids)
    extra = []
    for c, what in zip(cols[2:], ("rating", "timestamp")):
        try:
            extra.append(np.asarray(c, dtype=np.float64))
        except ValueError:
            row = next(r for r, tok in enumerate(c) if not _is_float(tok))
            raise DataError(
                f"{path}, line {int(numbers[row])}: {what} {c[row]!r} is not a number: {lines[row]!r}"
            ) from None
    ratings = extra[0].astype(np.float32) if len(extra) > 0 else None
    timestamps = extra[1] if len(extra) > 1 else None
    return _RawSplit(users, items, ratings, timestamps, source=str(path), lines=numbers)


def _is_float(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def load_dir(
    path: str | os.PathLike,
    *,
    domains: Sequence[str] | None = None,
    integer_ids: bool = True,
    unknown_items: str = "error",
    duplicates: str = "drop",
    shared_users: int | str | None = None,
) -> CrossDomainDataset:
    """Loads the directory format ``PATH/<domain>/{train,valid,test}.txt``.

    Each line is ``user<TAB>item[<TAB>rating[<TAB>timestamp]]``; user ids are shared across domains (unless
    ``shared_users`` says otherwise), item ids are per domain. ``train.txt`` is required per domain,
    ``valid.txt``/``test.txt`` are optional.

    **CDRIB's releases** (``amazon-game-video`` and its siblings) need ``shared_users="below_heldout"``. Their
    preprocessing (``dataset/preprocessing/split_data.py`` of cjx96/CDRIB) numbers the users common to both
    domains first, ``0 … n_common - 1``, the cold-start valid/test users being the last of them, and then numbers
    every other user *separately per domain* from ``n_common`` on: above that bound, user 5000 of ``game`` and
    user 5000 of ``video`` are two unrelated people. Read as shared, game→video co-occurrence over those 17,278
    id collisions carries no signal (a co-occurrence map fitted on them alone: valid sampled NDCG@10 0.012,
    below popularity's 0.039; on the 1,736 true common users: 0.076).

    Args:
      path: the dataset folder; every sub-folder holding a ``train.txt`` is a domain (sorted by name).
      domains: load only these domain folders (each must exist).
      integer_ids: ids must be non-negative integers (the format's rule); False accepts any string token.
      unknown_items, duplicates, shared_users: see :func:`from_arrays`.

    Raises:
      DataError: naming the file and line for a missing file, a malformed line, a non-integer or negative id,
        a valid/test item never seen in train (unless ``unknown_items='drop'``), or an empty domain.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found")
    if domains is None:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train.txt").exists())
        if not names:
            raise DataError(f"{root}: no domain folders with a train.txt (expected {root}/<domain>/train.txt)")
    else:
        names = list(domains)
    raw = {}
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder}: domain folder not found (asked for domains={names})")
        raw[name] = {}
        for split in SPLITS:
            file = folder / f"{split}.txt"
            if split == "train" or file.exists():
                raw[name][split] = _read_tsv(file, integer_ids=integer_ids)
    return _build(raw, unknown_items=unknown_items, duplicates=duplicates, shared_users=shared_users)


_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")


def _read_recbole(path: pathlib.Path) -> _RawSplit:
    """Reads one RecBole atomic ``.inter`` file (typed header ``name:type`` per column)."""
    lines, numbers = _read_lines(path)
    if not lines:
        raise DataError(f"{path}: empty file (expected a header like 'user_id:token\\titem_id:token')")
    header = lines[0].rstrip("\r").split("\t")
    names = []
    for col in header:
        name, _, kind = col.partition(":")
        if kind not in _RECBOLE_TYPES:
            raise DataError(
                f"{path}, line {int(numbers[0])}: header field {col!r} must be 'name:type' with type in "
                f"{_RECBOLE_TYPES}"
            )
        names.append(name)
    for need in ("user_id", "item_id"):
        if need not in names:
            raise DataError(f"{path}, line {int(numbers[0])}: header {header} has no {need!r} column")
    body, nums = lines[1:], numbers[1:]
    fields = [line.rstrip("\r").split("\t") for line in body]
    for row, f in enumerate(fields):
        if len(f) != len(names):
            raise DataError(
                f"{path}, line {int(nums[row])}: expected {len(names)} columns {names}, got {len(f)}: {body[row]!r}"
            )
    cols = dict(zip(names, zip(*fields))) if fields else {n: () for n in names}

    def _floats(name):
        if name not in cols:
            return None
        try:
            return np.asarray(cols[name], dtype=np.float64)
        except ValueError:
            row = next(r for r, tok in enumerate(cols[name]) if not _is_float(tok))
            raise DataError(f"{path}, line {int(nums[row])}: {name} {cols[name][row]!r} is not a number") from None

    ratings = _floats("rating")
    return _RawSplit(
        np.asarray(cols["user_id"], str),
        np.asarray(cols["item_id"], str),
        None if ratings is None else ratings.astype(np.float32),
        _floats("timestamp"),
        source=str(path),
        lines=nums,
    )


def load_recbole(
    files: Mapping[str, str | os.PathLike | Mapping[str, str | os.PathLike]],
    *,
    unknown_items: str = "error",
    duplicates: str = "drop",
) -> CrossDomainDataset:
    """Loads RecBole atomic ``.inter`` files, one per domain; users are matched across domains by raw token.

    Args:
      files: ``{domain: path}`` (all interactions go to ``train``; split them with :func:`leave_one_out`,
        :func:`ratio_split` or :func:`cold_start_split`) or ``{domain: {split: path}}`` for pre-split files.
      unknown_items, duplicates: see :func:`from_arrays`.
    """
    raw = {}
    for name, spec in files.items():
        spec = {"train": spec} if not isinstance(spec, Mapping) else spec
        raw[name] = {split: _read_recbole(pathlib.Path(p)) for split, p in spec.items()}
    return _build(raw, unknown_items=unknown_items, duplicates=duplicates)


_TABLE_KEYS = ("user", "item", "domain", "rating", "timestamp", "split")


def from_table(
    table: Any, *, columns: Mapping[str, str] | None = None, unknown_items: str = "error", duplicates: str = "drop"
) -> CrossDomainDataset:
    """Loads one long table of interactions: a pandas DataFrame, a CSV path or a Parquet path.

    Args:
      table: a ``pandas.DataFrame`` or a path ending in ``.csv``/``.tsv``/``.parquet`` (needs pandas; Parquet
        needs pyarrow — the ``tables`` extra).
      columns: maps the roles ``user``, ``item``, ``domain`` (required) and ``rating``, ``timestamp``, ``split``
        (optional) to column names; by default each role is looked up under its own name. Without a ``split``
        column everything goes to ``train``.
    """
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - exercised only without pandas
        raise ImportError("from_table needs pandas: pip install 'jaxrec[tables]'") from e
    columns = dict(columns or {})
    for role in columns:
        if role not in _TABLE_KEYS:
            raise DataError(f"columns: unknown role {role!r}; valid roles are {_TABLE_KEYS}")
    source = "<DataFrame>"
    if not isinstance(table, pd.DataFrame):
        path = pathlib.Path(table)
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        source = str(path)
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        elif path.suffix in (".csv", ".tsv"):
            table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        else:
            raise DataError(f"{path}: unsupported table format {path.suffix!r}; expected .csv, .tsv or .parquet")
    names = {role: columns.get(role, role) for role in _TABLE_KEYS}
    for role in ("user", "item", "domain"):
        if names[role] not in table.columns:
            raise DataError(f"{source}: no column {names[role]!r} for role {role!r}; columns are {list(table.columns)}")
    split_col = names["split"] if names["split"] in table.columns else None
    domains: dict[str, dict[str, dict]] = {}
    keys = [names["domain"]] + ([split_col] if split_col else [])
    for key, frame in table.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        dom, split = key[0], (key[1] if split_col else "train")
        cols = {"users": _table_ids(frame[names["user"]]), "items": _table_ids(frame[names["item"]])}
        for role, field in (("rating", "ratings"), ("timestamp", "timestamps")):
            if names[role] in frame.columns:
                try:
                    cols[field] = frame[names[role]].to_numpy(np.float64)
                except ValueError:
                    raise DataError(f"{source}: column {names[role]!r} ({role}) has non-numeric values") from None
        domains.setdefault(str(dom), {})[str(split)] = cols
    return from_arrays(domains, unknown_items=unknown_items, duplicates=duplicates)


def _table_ids(series) -> np.ndarray:
    values = series.to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    return values.astype(str)


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------


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

    Raises:
      DataError: unknown domains, ``source == target``, fractions outside (0, 1), or no overlapping users.
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"cold_start_split needs two different domains, got source=target={source!r}")
    _check_fraction("fraction", fraction)
    _check_fraction("valid_fraction", valid_fraction)
    all_target = Interactions.concat([ds.interactions(target, s) for s in ds.splits(target)])
    src_users = np.unique(Interactions.concat([ds.interactions(source, s) for s in ds.splits(source)]).users)
    overlap = np.intersect1d(src_users, np.unique(all_target.users))
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
    """Warm split: each user's interactions (by timestamp, else random order) split by ``ratios``."""
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


# ----------------------------------------------------------------------------------------------------------------
# Synthetic data with a planted cross-domain structure (the embedded default)
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of :func:`synthetic`.

    Each user has a shared taste vector (``shared_dim``) and one private vector per domain (``private_dim``);
    in domain ``d`` the user's vector is ``[sqrt(s)·shared, sqrt(1-s)·private_d]`` with ``s = shared_fraction``.
    Items are random vectors; an item's log-popularity is ``-popularity_exponent·log(rank)`` (power law). A user
    draws ``~interactions_per_user[d]`` distinct items without replacement with probability ∝
    ``exp(score/temperature + log-popularity)``.
    """

    n_users: int = 3000
    domains: tuple[str, ...] = ("source", "target")
    n_items: tuple[int, ...] = (800, 600)
    interactions_per_user: tuple[float, ...] = (20.0, 8.0)
    overlap: float = 0.6  # share of users active in every domain; the rest are in exactly one
    shared_fraction: float = 0.8
    shared_dim: int = 8
    private_dim: int = 4
    temperature: float = 0.35
    popularity_exponent: float = 0.6
    min_interactions: int = 3
    seed: int = 0

    def __post_init__(self):
        k = len(self.domains)
        if k < 2:
            raise DataError(f"SyntheticConfig.domains={self.domains}: need at least two domains")
        for name in ("n_items", "interactions_per_user"):
            if len(getattr(self, name)) != k:
                raise DataError(f"SyntheticConfig.{name}={getattr(self, name)} needs one value per domain ({k})")
        if not 0.0 <= self.overlap <= 1.0 or not 0.0 <= self.shared_fraction <= 1.0:
            raise DataError(f"overlap={self.overlap} and shared_fraction={self.shared_fraction} must be in [0, 1]")
        if self.n_users < 10 or min(self.n_items) < 10:
            raise DataError(f"n_users={self.n_users} and n_items={self.n_items} must be at least 10")
        if self.temperature <= 0:
            raise DataError(f"temperature={self.temperature} must be > 0")
        if any(m >= n for m, n in zip(self.interactions_per_user, self.n_items)):
            raise DataError(f"interactions_per_user={self.interactions_per_user} must be below n_items={self.n_items}")


class Planted(NamedTuple):
    """The generator's ground truth: the oracle scores of user ``u`` on item ``i`` of domain ``d`` are
    ``users[d][u] @ items[d][i] / temperature + log_popularity[d][i]``."""

    users: dict  # domain -> float32 [n_users, shared_dim + private_dim]
    items: dict  # domain -> float32 [n_items_d, shared_dim + private_dim]
    log_popularity: dict  # domain -> float32 [n_items_d]
    temperature: float

    def scores(self, domain: str, users: np.ndarray) -> np.ndarray:
        """Oracle logits ``float32 [len(users), n_items]`` of ``domain``."""
        return (
            self.users[domain][users] @ self.items[domain].T / self.temperature + self.log_popularity[domain][None, :]
        )


def synthetic(config: SyntheticConfig = SyntheticConfig(), **overrides) -> tuple[CrossDomainDataset, Planted]:
    """Generates a cross-domain dataset where transfer provably helps (see :class:`SyntheticConfig`).

    All interactions are in ``train``; apply :func:`cold_start_split` for the cold-start protocol. Raw ids are
    the contiguous ids themselves. Deterministic given ``config.seed``.

    Returns:
      ``(dataset, planted)`` — the planted vectors give an oracle scorer for tests.
    """
    cfg = dataclasses.replace(config, **overrides) if overrides else config
    rng = np.random.default_rng(cfg.seed)
    k = len(cfg.domains)
    shared = rng.normal(size=(cfg.n_users, cfg.shared_dim)) / np.sqrt(cfg.shared_dim)
    # Which domains each user is active in: a share ``overlap`` in all, the rest in one (round-robin by domain).
    in_all = rng.random(cfg.n_users) < cfg.overlap
    only = rng.integers(0, k, cfg.n_users)
    planted_users, planted_items, planted_pop, splits = {}, {}, {}, {}
    s = np.sqrt(cfg.shared_fraction)
    p = np.sqrt(1.0 - cfg.shared_fraction)
    for d, name in enumerate(cfg.domains):
        private = rng.normal(size=(cfg.n_users, cfg.private_dim)) / np.sqrt(cfg.private_dim)
        u = np.concatenate([s * shared, p * private], axis=1).astype(np.float32)
        n_items = cfg.n_items[d]
        v = rng.normal(size=(n_items, cfg.shared_dim + cfg.private_dim)).astype(np.float32)
        log_pop = (-cfg.popularity_exponent * np.log1p(rng.permutation(n_items))).astype(np.float32)
        active = np.flatnonzero(in_all | (only == d))
        counts = np.maximum(cfg.min_interactions, rng.poisson(cfg.interactions_per_user[d], active.size))
        counts = np.minimum(counts, n_items - 1)
        users, items = [], []
        for lo in range(0, active.size, 1024):  # chunked Gumbel-top-k sampling without replacement
            idx = active[lo : lo + 1024]
            logits = u[idx] @ v.T / cfg.temperature + log_pop[None, :]
            perturbed = logits + rng.gumbel(size=logits.shape)
            order = np.argsort(-perturbed, axis=1)
            take = np.arange(n_items)[None, :] < counts[lo : lo + 1024, None]
            users.append(np.broadcast_to(idx[:, None], order.shape)[take])
            items.append(order[take])
        splits[name] = {"train": (np.concatenate(users), np.concatenate(items))}
        planted_users[name], planted_items[name], planted_pop[name] = u, v, log_pop
    domains = {}
    for d, name in enumerate(cfg.domains):
        users, items = splits[name]["train"]
        inter = Interactions(users.astype(np.int32), items.astype(np.int32))
        domains[name] = Domain(name, cfg.n_items[d], {"train": inter}, np.arange(cfg.n_items[d]))
    note = f"synthetic({cfg})"
    ds = CrossDomainDataset(domains, cfg.n_users, np.arange(cfg.n_users), (note,))
    return ds, Planted(planted_users, planted_items, planted_pop, cfg.temperature)

"""The in-memory types of a cross-domain dataset: :class:`CrossDomainDataset`, its :class:`Domain` s, their
:class:`Interactions` and the :class:`CSR` seen-item sets.

Everything here is numpy on the host and immutable: a loader returns a :class:`CrossDomainDataset`, a split
returns a new one. Devices only ever see the fixed-shape batches built from it (``jaxrec.batching``).

Conventions:
  * A *domain* (``"game"``, ``"video"``) has its own contiguous item id space ``[0, n_items)``.
  * All domains share one contiguous user id space ``[0, n_users)``: user 17 in every domain is one person.
    Loaders read equal raw user ids in two domains as one person unless told otherwise (``shared_users``:
    CDRIB's releases number the non-common users per domain, see :func:`jaxrec.data.load_dir`).
  * Each domain has named *splits* (``"train"``, ``"valid"``, ``"test"``), each an :class:`Interactions`
    (parallel arrays ``users int32 [n]``, ``items int32 [n]``, optional ``ratings float32 [n]`` and
    ``timestamps float64 [n]``).
  * Raw ids (strings or integers) are remapped to contiguous ids in sorted raw order; ``dataset.user_ids`` and
    ``domain.item_ids`` map back (``dataset.user_ids[u]`` is the raw id of user ``u``).
  * Seen-item sets are :class:`CSR` (``indptr [n_users + 1]``, ``indices [nnz]``, sorted per row).
  * Nothing is dropped silently: every deduplication or filtering is counted in ``dataset.notes``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Sequence

import numpy as np

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Malformed or inconsistent input data; the message names the file/line or argument."""


SNIPPET_CHARS = 100  # offending text quoted in a message is cut to about this many characters


def snippet(value: object, limit: int = SNIPPET_CHARS) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    Every message that quotes user input (a token, a line, a name) goes through here, so a 10 MB id gives a
    short message: ``snippet("x" * 10**7)`` is the repr of its first 100 characters, then
    ``... (10,000,000 characters)``.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


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
        """Entries per row, ``int64 [n_rows]``."""
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
            key = np.sort(rows * (int(cols.max()) + 1) + cols)
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
            width = int(cols.max()) + 1
            rows, cols = key // width, key % width
        counts = np.bincount(rows, minlength=n_rows) if rows.size else np.zeros(n_rows, np.int64)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return CSR(indptr, cols.astype(np.int32))


def distinct_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``ids`` (``int [m]``, each in ``[0, n)``), in their dtype: what
    ``np.unique(ids)`` gives, by one pass over a ``bool [n]`` mark (no sort, no hash table)."""
    mark = np.zeros(n, bool)
    mark[ids] = True
    return np.flatnonzero(mark).astype(ids.dtype)


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
    """Two or more named domains over one shared user id space (see the conventions of ``jaxrec.data.dataset``).

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
        except (KeyError, TypeError):
            raise DataError(f"unknown domain {snippet(name)}; this dataset has {list(self.domains)}") from None

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
                raise DataError(f"unknown split {snippet(split)} for domain {domain!r}; it has {list(d.splits)}")
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
        return distinct_ids(self.interactions(domain, split).users, self.n_users)

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
                nu = distinct_ids(inter.users, self.n_users).size
                ni = distinct_ids(inter.items, d.n_items).size
                dens = inter.size / max(nu * d.n_items, 1)
                lines.append(f"{name:<12}{split:<8}{inter.size:>14,}{nu:>9,}{ni:>9,}{dens:>10.5f}")
        for (a, b), n in self.overlap().items():
            lines.append(f"overlapping train users {a} & {b}: {n:,}")
        for name, d in self.domains.items():
            if "valid" in d.splits and "test" in d.splits:
                v, t = (distinct_ids(d.splits[k].users, self.n_users) for k in ("valid", "test"))
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

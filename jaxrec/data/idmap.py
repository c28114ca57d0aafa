"""Raw ids to contiguous ids, in memory and time linear in the rows: the id index of a set of raw columns
(:func:`sorted_unique`), each raw id's position in it (:class:`IdMap`), and the check for repeated
``(user, item)`` pairs (:func:`repeated_rows`).

Integer ids whose largest value is at most :data:`TABLE_ROWS_PER_ID` times the number of rows (plus
:data:`TABLE_MIN`) go through a dense lookup table over ``[0, max id]`` (a ``bool`` mark for the index, an
``int32`` table for positions), one pass over the rows and no sort; other ids (sparse integers, strings) are
sorted and searched, the rows in slices of :data:`SLICE_ROWS` so that the ``int64`` positions of a search stay
small. The result is the same either way: the index is sorted, and position ``p`` of raw id ``r`` has
``index[p] == r``.

Shapes: ``[n]`` = the rows of one raw column; ``[m]`` = the distinct ids of the index.
"""

from __future__ import annotations

import numpy as np

TABLE_ROWS_PER_ID = 4  # a lookup table spans at most this many entries per row...
TABLE_MIN = 1 << 22  # ...or this many (16 MiB of int32), whichever is larger
SLICE_ROWS = 1 << 20  # rows searched at a time in a sorted index


def _table_fits(largest: int, n_rows: int) -> bool:
    return largest < max(TABLE_MIN, TABLE_ROWS_PER_ID * n_rows)


def _distinct(ids: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (one sort, no hash table)."""
    ids = np.sort(ids)
    return ids[np.concatenate(([True], ids[1:] != ids[:-1]))] if ids.size else ids


def sorted_unique(values: list[np.ndarray]) -> np.ndarray:
    """The sorted distinct ids ``[m]`` of the raw columns ``values`` (ints, or strings; a mix compares as strings).

    Integer ids come back as ``int64``, as :func:`numpy.unique` of the joined columns gives them.
    """
    values = [v for v in values if v.size]
    if not values:
        return np.zeros(0, np.int64)
    kinds = {v.dtype.kind for v in values}
    if len(kinds) > 1:  # mixed ints and strings: compare as strings
        values = [v.astype(str) for v in values]
    elif kinds <= {"i", "u"}:
        largest = max(int(v.max()) for v in values)
        if _table_fits(largest, sum(v.size for v in values)):
            mark = np.zeros(largest + 1, bool)
            for v in values:
                mark[v] = True
            return np.flatnonzero(mark).astype(np.int64)
        return _distinct(np.concatenate([_distinct(v.astype(np.int64)) for v in values]))
    return np.unique(np.concatenate(values))


class IdMap:
    """Positions of raw ids in a sorted index: ``IdMap(index)(raw) -> (positions int32[n], known bool[n] | None)``.

    Args:
      index: ``[m]`` sorted distinct raw ids (from :func:`sorted_unique`).
    """

    def __init__(self, index: np.ndarray):
        self.index = index
        self._table = self._mark = None
        if index.size and index.dtype.kind in "iu" and _table_fits(int(index[-1]), index.size):
            self._table = np.full(int(index[-1]) + 1, -1, np.int32)
            self._table[index] = np.arange(index.size, dtype=np.int32)
            self._mark = self._table >= 0

    def __call__(self, raw: np.ndarray, *, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``(positions int32 [n], known)`` of ``raw [n]``: ``known`` is None when every id is in the index,
        else ``bool [n]`` (the position of an unknown id is 0).

        With ``overwrite``, an ``int32`` ``raw`` whose ids are all known is overwritten with the positions (and
        returned): no second array of ``n`` ids. A raw id is then ``index[position]``.
        """
        index = self.index
        if raw.dtype.kind != index.dtype.kind and index.size:
            raw = raw.astype(index.dtype)
        if self._table is not None and raw.dtype.kind in "iu":
            top = self._table.size - 1
            if raw.size == 0 or int(raw.max()) <= top:
                known = self._mark[raw]
                if known.all():
                    out = raw if overwrite and raw.dtype == np.int32 else None
                    return np.take(self._table, raw, out=out), None
            else:
                known = ~(raw > top)
                known[known] = self._mark[raw[known]]
            return np.where(known, self._table[np.where(known, raw, 0)], 0).astype(np.int32), known
        pos = np.empty(raw.shape[0], np.int32)
        known = np.ones(raw.shape[0], bool)
        last = max(index.size - 1, 0)
        for lo in range(0, raw.shape[0], SLICE_ROWS):
            part = raw[lo : lo + SLICE_ROWS]
            p = np.searchsorted(index, part)
            k = (p < index.size) & (index[np.minimum(p, last)] == part) if index.size else np.zeros(part.size, bool)
            pos[lo : lo + SLICE_ROWS] = np.where(k, p, 0)
            known[lo : lo + SLICE_ROWS] = k
        return pos, (None if known.all() else known)


def repeated_rows(users: np.ndarray, items: np.ndarray, n_items: int, keep: np.ndarray | None) -> np.ndarray | None:
    """The rows whose ``(users[r], items[r])`` pair occurs in an earlier row, among the rows where ``keep``.

    One in-place sort of an ``int64 [n]`` key finds the repeated pairs (none: the usual case, done); only the
    rows holding one of them are then ordered, to tell the first of each from the rest.

    Returns:
      ``bool [n]``, True for a repeat of an earlier kept row (never where ``keep`` is False); None if none.
    """
    key = users.astype(np.int64) * (n_items + 1) + items
    if keep is not None:
        key = key[keep]
    key.sort()
    repeated = key[1:][key[1:] == key[:-1]]
    if not repeated.size:
        return None
    repeated = _distinct(repeated)
    key = users.astype(np.int64) * (n_items + 1) + items
    hit = np.empty(key.shape[0], bool)
    for lo in range(0, key.shape[0], SLICE_ROWS):
        part = key[lo : lo + SLICE_ROWS]
        hit[lo : lo + SLICE_ROWS] = repeated[np.minimum(np.searchsorted(repeated, part), repeated.size - 1)] == part
    if keep is not None:
        hit &= keep
    rows = np.flatnonzero(hit)
    order = np.argsort(key[rows], kind="stable")
    sorted_keys = key[rows][order]
    later = np.concatenate(([False], sorted_keys[1:] == sorted_keys[:-1]))
    out = np.zeros(key.shape[0], bool)
    out[rows[order[later]]] = True
    return out

"""Chunked reading of ``user<TAB>item[<TAB>rating[<TAB>timestamp]]`` files with integer ids, straight from bytes
into numpy arrays: the fast path of :func:`jaxrec.data.load_dir`.

A file is read in chunks of about :data:`CHUNK_BYTES` bytes, each cut after its last newline; every step on a
chunk is a numpy operation over its bytes (no Python object per line or per field): line ends and tabs are
found with ``flatnonzero``, id digits are summed column by column of a right-aligned ``[lines, digits]``
gather, ratings and timestamps are read from a fixed-width ``S`` view of their bytes. Ids come back as
``int32 [n]`` (``int64 [n]`` where an id does not fit), line numbers as a :class:`~jaxrec.data.parse.LineNumbers`
(the numbers of the skipped blank lines only), so the columns cost 8 bytes per interaction plus 4 or 8 per
rating or timestamp column, and the transient memory is a few times one chunk.

:func:`read_int_tsv` returns None for any input this path does not read exactly as the strict reader of
:mod:`jaxrec.data.parse` does — a byte that is not printable ASCII (non-UTF-8 bytes, a control character, text
outside ASCII), a carriage return, a byte-order mark, a line whose number of columns differs from the first
line's or is not 2 to 4, an empty id, a non-digit byte in an id, an id longer than 18 digits, a rating or
timestamp that is not plain decimal, finite and (ratings) within float32. The loader then reads the file with
the strict reader, which either reads it (e.g. a ``\\r\\n`` file, a 19-digit id) or raises the
:class:`~jaxrec.data.dataset.DataError` naming the file and line. A well-formed file is never read twice.

Shapes: ``[n]`` = the non-blank lines of the file, in order.
"""

from __future__ import annotations

import os
import pathlib
from typing import NamedTuple

import numpy as np

from jaxrec.data import parse

CHUNK_BYTES = 1 << 22  # bytes per chunk: about 300,000 lines of a two-column file
MAX_DIGITS = 18  # longest id read here: 10**18 - 1 < 2**63, so the sum of digits cannot overflow int64
_INT32_MAX = int(np.iinfo(np.int32).max)
_NUMBER_BYTES = np.zeros(256, bool)  # bytes a plain decimal number may hold (and 0: padding of the S view)
_NUMBER_BYTES[[0, *b"0123456789.eE+-"]] = True


class Columns(NamedTuple):
    """The columns of a file read by :func:`read_int_tsv`.

    Attributes:
      users: ``int32 [n]`` raw user ids (``int64`` if one is ``>= 2**31``).
      items: ``int32 [n]`` raw item ids (``int64`` likewise).
      ratings: ``float32 [n]`` or None (two columns).
      timestamps: ``float64 [n]`` or None (fewer than four columns).
      lines: the 1-based line number of each row.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None
    timestamps: np.ndarray | None
    lines: parse.LineNumbers


def _ids(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """``int64 [n]`` ids of the fields ``buf[start:end]``, or None unless every field is 1 to 18 ASCII digits."""
    length = end - start
    if length.size == 0:
        return np.zeros(0, np.int64)
    longest = int(length.max())
    if int(length.min()) < 1 or longest > MAX_DIGITS:
        return None
    value = np.zeros(start.size, np.int64)
    for j in range(longest):  # digit j of a right-aligned field of `longest` digits (0 left of the field)
        pos = end - (longest - j)
        inside = pos >= start
        digit = buf[np.maximum(pos, 0)].astype(np.int64) - 48
        digit = np.where(inside, digit, 0)
        if ((digit < 0) | (digit > 9)).any():
            return None
        value *= 10
        value += digit
    return value


def _numbers(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """``float64 [n]`` finite numbers in plain decimal notation from the fields ``buf[start:end]``, else None."""
    length = end - start
    if length.size == 0:
        return np.zeros(0)
    if int(length.min()) < 1:
        return None
    width = int(length.max())
    text = np.zeros((start.size, width), np.uint8)
    for j in range(width):
        pos = start + j
        text[:, j] = np.where(pos < end, buf[np.minimum(pos, buf.size - 1)], 0)
    if not _NUMBER_BYTES[text].all():
        return None
    try:
        values = text.view(f"S{width}").ravel().astype(np.float64)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def _narrow(ids: np.ndarray) -> np.ndarray:
    """``ids`` as int32 when every one fits."""
    return ids.astype(np.int32) if ids.size == 0 or int(ids.max()) <= _INT32_MAX else ids


class _Chunk(NamedTuple):
    columns: list  # [users, items, ratings?, timestamps?] of the chunk's non-blank lines
    blank: np.ndarray  # int64 [b] 1-based line numbers of its blank lines
    n_lines: int  # lines in the chunk


def _read_chunk(buf: np.ndarray, first_line: int, width: int | None) -> tuple[_Chunk, int] | None:
    """The columns of the complete lines ``buf`` (the last one may lack its newline), numbered from
    ``first_line``; None for anything :func:`read_int_tsv` leaves to the strict reader."""
    if ((buf < 32) & (buf != 9) & (buf != 10)).any() or (buf > 126).any():
        return None
    newline = np.flatnonzero(buf == 10)
    ends = newline if newline.size and int(newline[-1]) == buf.size - 1 else np.append(newline, buf.size)
    n_lines = ends.size
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    tabs = np.flatnonzero(buf == 9)
    tab_line = np.searchsorted(ends, tabs)
    n_tabs = np.bincount(tab_line, minlength=n_lines)
    spaces = np.flatnonzero(buf == 32)
    n_spaces = np.bincount(np.searchsorted(ends, spaces), minlength=n_lines) if spaces.size else 0
    keep = (ends - starts) > n_tabs + n_spaces
    blank = np.flatnonzero(~keep) + first_line
    widths = n_tabs[keep] + 1
    if widths.size:
        width = int(widths[0]) if width is None else width
        if not 2 <= width <= 4 or (widths != width).any():
            return None
    kept_tabs = tabs[keep[tab_line]].reshape(-1, width - 1) if widths.size else None
    columns = []
    for c in range(width if widths.size else 0):
        lo = starts[keep] if c == 0 else kept_tabs[:, c - 1] + 1
        hi = ends[keep] if c == width - 1 else kept_tabs[:, c]
        col = _ids(buf, lo, hi) if c < 2 else _numbers(buf, lo, hi)
        if col is None:
            return None
        columns.append(_narrow(col) if c < 2 else col)
    return _Chunk(columns, blank, n_lines), width


def _pieces(path: pathlib.Path, chunk_bytes: int):
    """Yields the file's bytes in pieces of whole lines (the last may lack its newline); a file of at most
    ``chunk_bytes`` bytes is one piece, read at once."""
    if os.stat(path).st_size <= chunk_bytes:
        data = parse.read_bytes(path)
        if data:
            yield data
        return
    carry = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk_bytes)
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            if data:
                yield data
    if carry:
        yield carry


def read_int_tsv(path: str | os.PathLike, *, chunk_bytes: int = CHUNK_BYTES) -> Columns | None:
    """Reads a tab-separated file of integer ids in chunks (see the module docstring).

    Args:
      path: the file (checked by :func:`jaxrec.data.parse.check_file`).
      chunk_bytes: bytes read at a time (a chunk grows to hold one line longer than this).

    Returns:
      The :class:`Columns`, or None when the file must be read by the strict reader (which names any problem).

    Raises:
      DataError: for a file :func:`jaxrec.data.parse.check_file` refuses or that cannot be read.
    """
    path = pathlib.Path(path)
    parse.check_file(path)
    parts: list[_Chunk] = []
    width = None
    line = 1
    try:
        for data in _pieces(path, chunk_bytes):
            if line == 1 and data.startswith(b"\xef\xbb\xbf"):
                return None
            got = _read_chunk(np.frombuffer(data, np.uint8), line, width)
            if got is None:
                return None
            chunk, width = got
            parts.append(chunk)
            line += chunk.n_lines
    except OSError as e:
        raise parse.DataError(f"{path}: cannot be read: {e.strerror or e}") from None
    width = width or 2
    cols = []
    for c in range(4):
        if c >= width:
            cols.append(None)
            continue
        arrays = [p.columns[c] for p in parts if p.columns] or [np.zeros(0, np.int64 if c < 2 else np.float64)]
        cols.append(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
        for p in parts:
            if p.columns:
                p.columns[c] = None  # each chunk's column is freed once joined
    if cols[2] is not None:
        with np.errstate(over="ignore"):
            ratings = cols[2].astype(np.float32)
        if not np.isfinite(ratings).all():  # beyond float32: the strict reader names the line
            return None
        cols[2] = ratings
    blank = np.concatenate([p.blank for p in parts]) if parts else np.zeros(0, np.int64)
    return Columns(cols[0], cols[1], cols[2], cols[3], parse.LineNumbers(blank))

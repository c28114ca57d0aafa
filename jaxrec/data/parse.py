"""Strict reading of raw input: text files into lines and columns, and columns of tokens or arrays into validated
ids and numbers. Every loader reads through here, so every input gets the same checks and the same messages.

What is validated (each failure is a :class:`~jaxrec.data.dataset.DataError` naming the file and line, or the
source and row, and quoting the offending text cut to about 100 characters by
:func:`~jaxrec.data.dataset.snippet`):
  * Files (:func:`read_lines`): a readable regular file (not a folder, a pipe, a broken or looping symbolic
    link) of UTF-8 text. A UTF-8 byte-order mark is dropped; ``\\r\\n`` and a lone ``\\r`` end a line like
    ``\\n``; control characters other than tab are refused (a binary or UTF-16 file). A line that is empty or
    holds only spaces and tabs is skipped; line numbers count every line, from 1.
  * Integer ids (:func:`int_ids`): ASCII digits only, ``[0-9]+``: no sign, spaces, underscores, ``0x`` or
    digits of other scripts. Leading zeros are allowed and ignored (``007`` is id 7). At most ``2**63 - 1``.
  * String ids (:func:`str_ids`): non-empty, no leading or trailing whitespace, at most :data:`MAX_ID_LENGTH`
    characters.
  * Id arrays (:func:`array_ids`): integers ``>= 0``, whole floats below ``2**53`` (no NaN), or strings (as
    above); an object array holds all integers or all strings.
  * Numbers, i.e. ratings and timestamps (:func:`numbers`, :func:`array_numbers`): plain decimal notation in
    ASCII (``4``, ``-0.5``, ``1e9``; no underscores or surrounding spaces), finite (NaN and infinity refused).

Columns are 1-D, ``[n]``: row ``r`` of a column is line ``source.lines[r]`` of its file, or row ``r`` (0-based
position) of an in-memory table.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import stat
from typing import NamedTuple, Sequence

import numpy as np

from jaxrec.data.dataset import SNIPPET_CHARS, DataError, snippet

MAX_ID_LENGTH = 256  # characters of a string id; a longer token is a malformed file, not an id
INT64_MAX = int(np.iinfo(np.int64).max)
_FLOAT_EXACT = 2.0**53  # whole floats from 2**53 on are not exact: refused as ids
_OUT_OF_RANGE = f"is out of range: integer ids must fit in int64 (at most {INT64_MAX})"
_NOT_A_NUMBER = "is not a number (plain decimal notation expected, e.g. 4 or 3.5)"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the rows of a column come from, for messages.

    Attributes:
      name: a file path or a description (``"<DataFrame>"``, ``"domain 'a' split 'train'"``).
      lines: optional ``int64 [n]`` (or a :class:`LineNumbers`) number of each row in its source, e.g. its
        1-based line in the file (else messages name the 0-based position ``r``).
      text: optional ``[n]`` text of each row, quoted (cut) at the end of a message.
      unit: what ``lines`` count: ``"line"`` (of a file) or ``"row"`` (of a table).
    """

    name: str
    lines: np.ndarray | LineNumbers | None = None
    text: Sequence[str] | None = None
    unit: str = "line"

    def at(self, row: int) -> str:
        """``"name, line N"`` (or ``"name, row r"``) of row ``row``."""
        if self.lines is None:
            return f"{self.name}, row {row}"
        return f"{self.name}, {self.unit} {int(self.lines[row])}"

    def error(self, row: int, message: str, *, context: bool = True) -> DataError:
        """A :class:`DataError` for row ``row``: its place, ``message``, then the row's text (cut to about 60
        characters: it is context) if known and ``context``."""
        tail = f": {snippet(self.text[row], 60)}" if self.text is not None and context else ""
        return DataError(f"{self.at(row)}: {message}{tail}")


# ------------------------------------------------------------------------------------------------- text files


def check_file(path: pathlib.Path) -> None:
    """Raises unless ``path`` is an existing regular file (following symbolic links).

    Raises:
      DataError: naming ``path`` if it is missing (or a broken symbolic link), a folder, not a regular file
        (a pipe, which would block a read), or cannot be reached (permissions, a symbolic link loop).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if os.path.islink(path) else ""
        raise DataError(f"{path}: file not found{broken}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: is not a regular file (a pipe, socket or device), expected a file")


def read_bytes(path: pathlib.Path) -> bytes:
    """The bytes of a readable regular file.

    Raises:
      DataError: naming ``path`` for anything :func:`check_file` refuses, or a file that cannot be read
        (permissions).
    """
    check_file(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read: {e.strerror or e}") from None


def _decode(path: pathlib.Path, data: bytes) -> str:
    """UTF-8 text of ``data`` without a byte-order mark, every line ending turned into ``"\\n"``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start].replace(b"\r\n", b"\n")
        line = before.count(b"\n") + before.count(b"\r") + 1
        utf16 = " (the file is UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise DataError(
            f"{path}, line {line}: byte 0x{data[e.start]:02x} at offset {e.start:,} is not UTF-8{utf16}; "
            f"save the file as UTF-8 text"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


class LineNumbers:
    """The 1-based line numbers of the non-blank lines of a file, held as the numbers of its blank lines only.

    ``lines[r]`` is the number of the ``r``-th non-blank line (an int, or an ``int64`` array for an array of
    rows), as the ``int64 [n]`` array ``TextLines.numbers`` would give, without 8 bytes per line.

    Args:
      blank: ``int [b]`` sorted 1-based numbers of the blank lines.
    """

    def __init__(self, blank: np.ndarray):
        blank = np.asarray(blank, np.int64)
        self._before = blank - np.arange(blank.size)  # non-blank lines before each blank one, plus 1

    def __getitem__(self, rows):
        rows = np.asarray(rows, np.int64)
        out = rows + 1 + np.searchsorted(self._before, rows + 1, side="right")
        return int(out) if out.ndim == 0 else out


class TextLines(NamedTuple):
    """The non-blank lines of a text file.

    Attributes:
      text: the whole text (byte-order mark dropped, lines ended by ``"\\n"``).
      lines: ``[n]`` the lines that hold more than spaces and tabs.
      numbers: ``int64 [n]`` 1-based line number of each.
      widths: ``int64 [n]`` tab-separated fields of each (tabs + 1).
    """

    text: str
    lines: Sequence[str]
    numbers: np.ndarray
    widths: np.ndarray


def read_lines(path: str | os.PathLike) -> TextLines:
    """Reads a text file strictly (see the module docstring); the line structure is found with numpy, so a
    large file costs a few passes over its bytes, not a Python loop per line.

    Raises:
      DataError: naming the file (and line) for an unreadable file, a byte that is not UTF-8, or a control
        character.
    """
    path = pathlib.Path(path)
    text = _decode(path, read_bytes(path))
    buf = np.frombuffer(text.encode("utf-8"), np.uint8)
    newline = np.flatnonzero(buf == 10)
    control = np.flatnonzero(((buf < 32) & (buf != 9) & (buf != 10)) | (buf == 127))
    if control.size:
        pos = int(control[0])
        binary = " (a binary or UTF-16 file?)" if buf[pos] == 0 else ""
        raise DataError(
            f"{path}, line {int(np.searchsorted(newline, pos)) + 1}: control character 0x{int(buf[pos]):02x}"
            f"{binary}; expected plain UTF-8 text"
        )
    n = newline.size + 1
    length = np.diff(np.concatenate(([-1], newline, [buf.size]))) - 1
    tabs = np.bincount(np.searchsorted(newline, np.flatnonzero(buf == 9)), minlength=n)
    spaces = np.bincount(np.searchsorted(newline, np.flatnonzero(buf == 32)), minlength=n)
    keep = np.flatnonzero(length > tabs + spaces)
    every = text.split("\n")
    if keep.size and int(keep[-1]) == keep.size - 1:
        lines = every[: keep.size]
    else:
        lines = [every[i] for i in keep.tolist()]
    return TextLines(text, lines, (keep + 1).astype(np.int64), (tabs[keep] + 1).astype(np.int64))


def split_columns(lines: Sequence[str], width: int) -> list[list[str]]:
    """The ``width`` tab-separated columns of ``lines`` (each line must hold exactly ``width - 1`` tabs)."""
    if not lines:
        return [[] for _ in range(width)]
    flat = "\t".join(lines).split("\t")
    return [flat[c::width] for c in range(width)]


# ------------------------------------------------------------------------------------------------- tokens


def _int_problem(tok: str) -> str:
    if not tok:
        return "is empty"
    if not (tok.isascii() and tok.isdigit()):
        return "is not a non-negative integer (ASCII digits 0-9 only)"
    digits = tok.lstrip("0")
    if len(digits) > 19 or (digits and int(digits) > INT64_MAX):
        return _OUT_OF_RANGE
    return ""


def int_ids(tokens: Sequence[str], what: str, src: Source, *, hint: str = "") -> np.ndarray:
    """``int64 [n]`` ids from tokens of ASCII digits (checked on the whole column at once).

    Args:
      tokens: ``[n]`` id tokens.
      what: what a token is, for messages (``"user id"``).
      src: where the rows come from.
      hint: appended to the message for a token that is not digits.

    Raises:
      DataError: at the first empty, non-digit or out-of-range token.
    """
    tokens = list(tokens)
    joined = "".join(tokens)
    if joined.isascii() and joined.isdigit() and "" not in tokens:
        try:
            return np.asarray(tokens, dtype=np.int64)
        except (ValueError, OverflowError):
            pass
    elif not tokens:
        return np.zeros(0, np.int64)
    for row, tok in enumerate(tokens):
        problem = _int_problem(tok)
        if problem:
            extra = hint if problem.startswith("is not") else ""
            raise src.error(row, f"{what} {snippet(tok)} {problem}{extra}", context=len(tok) <= SNIPPET_CHARS)
    return np.asarray([int(t) for t in tokens], dtype=np.int64)


def check_str_ids(ids: np.ndarray, what: str, src: Source) -> np.ndarray:
    """``ids`` (``str [n]``) after checking none is empty or has leading or trailing whitespace."""
    if ids.size:
        bad = (ids == "") | (np.char.strip(ids) != ids)
        if bad.any():
            row = int(np.argmax(bad))
            tok = str(ids[row])
            problem = "is empty" if not tok else "has leading or trailing whitespace"
            raise src.error(row, f"{what} {snippet(tok)} {problem}", context=len(tok) <= SNIPPET_CHARS)
    return ids


def str_ids(tokens: Sequence[str], what: str, src: Source) -> np.ndarray:
    """``str [n]`` ids from string tokens: non-empty, no surrounding whitespace, at most ``MAX_ID_LENGTH`` long.

    Raises:
      DataError: at the first bad token.
    """
    tokens = list(tokens)
    if max(map(len, tokens), default=0) > MAX_ID_LENGTH:
        row = next(r for r, t in enumerate(tokens) if len(t) > MAX_ID_LENGTH)
        raise src.error(row, f"{what} {snippet(tokens[row])} is longer than {MAX_ID_LENGTH} characters", context=False)
    ids = np.asarray(tokens, dtype=str) if tokens else np.zeros(0, dtype=str)
    return check_str_ids(ids, what, src)


def _number_problem(tok: str) -> str:
    if not tok:
        return "is empty"
    if not tok.isascii() or "_" in tok or tok.strip() != tok:
        return _NOT_A_NUMBER
    try:
        value = float(tok)
    except ValueError:
        return _NOT_A_NUMBER
    return "" if math.isfinite(value) else "is not finite (NaN and infinity are refused)"


def numbers(tokens: Sequence[str], what: str, src: Source) -> np.ndarray:
    """``float64 [n]`` finite numbers from tokens in plain decimal notation.

    Raises:
      DataError: at the first empty, malformed or non-finite token.
    """
    tokens = list(tokens)
    joined = "".join(tokens)
    if joined.isascii() and "_" not in joined and " " not in joined and "" not in tokens:
        try:
            values = np.asarray(tokens, dtype=np.float64) if tokens else np.zeros(0)
        except ValueError:
            values = None
        if values is not None and np.isfinite(values).all():
            return values
    for row, tok in enumerate(tokens):
        problem = _number_problem(tok)
        if problem:
            raise src.error(row, f"{what} {snippet(tok)} {problem}", context=len(tok) <= SNIPPET_CHARS)
    return np.asarray([float(t) for t in tokens], dtype=np.float64)


# ------------------------------------------------------------------------------------------------- arrays


def _object_ids(values: list, what: str, src: Source) -> np.ndarray:
    """Ids from a list of Python objects: all strings, or all integers (whole floats count as integers)."""
    if all(issubclass(t, str) for t in set(map(type, values))):
        return str_ids(values, what, src)
    first = None
    for row, v in enumerate(values):
        if isinstance(v, str):
            kind = "a string"
        elif isinstance(v, (bool, np.bool_)):
            raise src.error(row, f"{what} {v!r} is a bool; ids must be integers or strings")
        elif isinstance(v, (int, np.integer)):
            kind = "an integer"
        elif v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
            raise src.error(row, f"{what} is missing ({v!r})")
        elif isinstance(v, (float, np.floating)) and abs(v) < _FLOAT_EXACT and float(v).is_integer():
            kind = "an integer"
        else:
            raise src.error(row, f"{what} {snippet(v)} ({type(v).__name__}) is not an integer or a string")
        if first is None:
            first = (row, kind)
        elif kind != first[1]:
            raise src.error(
                row, f"{what} {snippet(v)} is {kind} but row {first[0]}'s is {first[1]}: ids must be one or the other"
            )
    ints = [int(v) for v in values]
    for row, v in enumerate(ints):
        if v < 0:
            raise src.error(row, f"negative {what} {v}: ids must be non-negative integers or strings")
        if v > INT64_MAX:
            raise src.error(row, f"{what} {snippet(v)} {_OUT_OF_RANGE}")
    return np.asarray(ints, dtype=np.int64)


def array_ids(ids: np.ndarray, what: str, src: Source) -> np.ndarray:
    """``int64 [n]`` or ``str [n]`` ids from a 1-D array of integers, whole floats, strings or such objects.

    Raises:
      DataError: at the first negative, non-whole, NaN, out-of-range or malformed string id, or for a dtype
        that cannot hold ids (bool, complex, dates).
    """
    kind = ids.dtype.kind
    if kind == "O":
        return _object_ids(ids.tolist(), what, src)
    if kind in "iu":
        if kind == "u" and ids.size and ids.max() > INT64_MAX:
            row = int(np.argmax(ids > INT64_MAX))
            raise src.error(row, f"{what} {int(ids[row])} {_OUT_OF_RANGE}")
        ids = ids.astype(np.int64, copy=False)
        if ids.size and ids.min() < 0:
            row = int(np.argmax(ids < 0))
            raise src.error(row, f"negative {what} {int(ids[row])}: ids must be non-negative integers or strings")
        return ids
    if kind == "f":
        bad = ~np.isfinite(ids) | (ids != np.floor(ids)) | (ids < 0) | (ids >= _FLOAT_EXACT)
        if bad.any():
            row = int(np.argmax(bad))
            v = float(ids[row])
            if math.isnan(v):
                problem = "is missing (NaN)"
            elif v < 0:
                problem = "is negative"
            elif not math.isfinite(v) or v >= _FLOAT_EXACT:
                problem = "is too large for a float to hold exactly (pass integers)"
            else:
                problem = "is not a whole number"
            raise src.error(row, f"{what} {v!r} {problem}: ids must be non-negative integers or strings")
        return ids.astype(np.int64)
    if kind == "S":
        try:
            ids = np.char.decode(ids, "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{src.name}: {what}s are bytes that are not UTF-8; pass strings") from None
        kind = "U"
    if kind == "U":
        if ids.size and ids.dtype.itemsize // 4 > MAX_ID_LENGTH:
            lengths = np.char.str_len(ids)
            if lengths.max() > MAX_ID_LENGTH:
                row = int(np.argmax(lengths > MAX_ID_LENGTH))
                raise src.error(row, f"{what} {snippet(str(ids[row]))} is longer than {MAX_ID_LENGTH} characters")
        return check_str_ids(ids, what, src)
    raise DataError(f"{src.name}: {what}s must be integers or strings, got dtype {ids.dtype}")


def array_numbers(values: np.ndarray, what: str, src: Source) -> np.ndarray:
    """``float64 [n]`` finite numbers from a 1-D array of numbers (or of strings, read as :func:`numbers`).

    Raises:
      DataError: at the first value that is not a finite number, or for a dtype that does not hold numbers.
    """
    kind = values.dtype.kind
    if kind in "US" or (kind == "O" and all(isinstance(v, str) for v in values.tolist())):
        return numbers([str(v) for v in values.tolist()], what, src)
    if kind not in "biufO":
        raise DataError(f"{src.name}: {what}s must be numbers, got dtype {values.dtype}")
    try:
        out = values.astype(np.float64)
    except (TypeError, ValueError):
        for row, v in enumerate(values.tolist()):
            try:
                float(v)
            except (TypeError, ValueError):
                raise src.error(row, f"{what} {snippet(v)} {_NOT_A_NUMBER}") from None
        raise DataError(f"{src.name}: {what} could not be read as numbers") from None
    finite = np.isfinite(out)
    if not finite.all():
        row = int(np.argmin(finite))
        problem = "is missing (NaN)" if np.isnan(out[row]) else "is not finite (infinity is refused)"
        raise src.error(row, f"{what} {snippet(values[row].item() if kind != 'O' else values[row])} {problem}")
    return out


def as_float32(values: np.ndarray, what: str, src: Source) -> np.ndarray:
    """``float32 [n]`` of finite ``float64 [n]`` values, refusing any beyond the float32 range."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        row = int(np.argmin(finite))
        raise src.error(row, f"{what} {float(values[row])!r} is beyond the float32 range")
    return out

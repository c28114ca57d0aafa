"""Loaders of files: the ``PATH/<domain>/{train,valid,test}.txt`` folder format (:func:`load_dir`) and RecBole
atomic ``.inter`` files (:func:`load_recbole`); :func:`from_table` (one long table) lives in
``jaxrec.data.tables`` and is re-exported here.

Each reads raw ids into :class:`~jaxrec.data.build.RawSplit` s and builds the dataset with
:func:`~jaxrec.data.build.from_raw`. Files are read strictly by :mod:`jaxrec.data.parse` (its docstring lists
every check); a malformed input raises :class:`~jaxrec.data.dataset.DataError` naming the file and line and
quoting the offending text cut to about 100 characters, never another exception.
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from jaxrec.data import chunks, parse
from jaxrec.data.build import RawSplit, check_options, from_raw
from jaxrec.data.dataset import SPLITS, CrossDomainDataset, DataError, snippet
from jaxrec.data.tables import from_table

__all__ = ["from_table", "load_dir", "load_recbole"]

_TSV_COLUMNS = "user<TAB>item[<TAB>rating[<TAB>timestamp]]"


def _tsv_width(path: pathlib.Path, text: parse.TextLines) -> int:
    """The number of columns every line has (2 to 4), else a DataError naming the first line that differs from
    the most common width."""
    widths = text.widths
    if not widths.size:
        return 2
    counts = np.bincount(widths)
    width = int(counts.argmax())
    if 2 <= width <= 4:
        if counts[width] == widths.size:
            return width
        row, like = int(np.argmax(widths != width)), int(np.argmax(widths == width))
        raise DataError(
            f"{path}, line {int(text.numbers[row])}: expected {width} tab-separated columns like line "
            f"{int(text.numbers[like])} ({int(counts[width]):,} of {widths.size:,} lines have {width}), got "
            f"{int(widths[row])}; every line needs the same columns, {_TSV_COLUMNS}: {snippet(text.lines[row])}"
        )
    row = int(np.argmax((widths < 2) | (widths > 4)))
    line = text.lines[row]
    hint = ""
    if widths[row] == 1:
        sep = " (it has spaces)" if " " in line else " (it has commas)" if "," in line else ""
        hint = f"; columns are separated by tabs, and this line has none{sep}"
    raise DataError(
        f"{path}, line {int(text.numbers[row])}: expected 2 to 4 tab-separated columns, {_TSV_COLUMNS}, got "
        f"{int(widths[row])}{hint}: {snippet(line)}"
    )


def _read_tsv(path: pathlib.Path, *, integer_ids: bool = True) -> RawSplit:
    """Reads ``user<TAB>item[<TAB>rating[<TAB>timestamp]]`` lines (an empty file is an empty split): integer ids
    in chunks (:func:`jaxrec.data.chunks.read_int_tsv`), else, or for a file the chunked reader leaves to it,
    with the strict reader of :mod:`jaxrec.data.parse` (which names the line of any problem)."""
    if integer_ids:
        cols = chunks.read_int_tsv(path)
        if cols is not None:
            return RawSplit(*cols[:4], source=str(path), lines=cols.lines, owned=True)
    text = parse.read_lines(path)
    width = _tsv_width(path, text)
    cols = parse.split_columns(text.lines, width)
    src = parse.Source(str(path), text.numbers, text.lines)
    if integer_ids:
        hint = "; pass integer_ids=False to read string ids"
        users = parse.int_ids(cols[0], "user id", src, hint=hint)
        items = parse.int_ids(cols[1], "item id", src, hint=hint)
    else:
        users, items = parse.str_ids(cols[0], "user id", src), parse.str_ids(cols[1], "item id", src)
    ratings = parse.as_float32(parse.numbers(cols[2], "rating", src), "rating", src) if width > 2 else None
    timestamps = parse.numbers(cols[3], "timestamp", src) if width > 3 else None
    return RawSplit(users, items, ratings, timestamps, source=str(path), lines=text.numbers)


def _find_domains(root: pathlib.Path) -> tuple[list[str], list[str]]:
    """The domain folders of ``root`` (sorted by name) and notes on the folders skipped."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"{root}: cannot list the folder: {e.strerror or e}") from None
    names, notes = [], []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError as e:
            raise DataError(f"{entry}: cannot be read: {e.strerror or e}") from None
        if not is_dir:
            if entry.is_symlink() and not entry.exists():
                notes.append(f"skipped {snippet(entry.name)}: a broken or looping symbolic link")
            continue
        if entry.name.startswith("."):
            notes.append(f"skipped hidden folder {snippet(entry.name)}")
            continue
        if not os.access(entry, os.R_OK | os.X_OK):
            raise DataError(f"{entry}: cannot read the folder (permission denied)")
        present = [f"{s}.txt" for s in SPLITS if os.path.lexists(entry / f"{s}.txt")]
        if "train.txt" in present:
            names.append(entry.name)
        elif present:
            raise DataError(
                f"{entry}: has {' and '.join(present)} but no train.txt; every domain folder needs a train.txt "
                f"(or pass domains=[...] to load only some folders)"
            )
        else:
            notes.append(f"skipped folder {snippet(entry.name)}: no train.txt, valid.txt or test.txt")
    if not names:
        here = [f"{s}.txt" for s in SPLITS if os.path.lexists(root / f"{s}.txt")]
        hint = f"; {root} holds {here[0]} itself: pass the folder above it" if here else ""
        raise DataError(f"{root}: no domain folders with a train.txt (expected {root}/<domain>/train.txt){hint}")
    return names, notes


def _check_domains(root: pathlib.Path, domains: Sequence[str]) -> list[str]:
    """The ``domains`` argument as a list of existing folder names."""
    if isinstance(domains, (str, bytes)) or not isinstance(domains, Sequence):
        raise DataError(f"domains={snippet(domains)}; expected a list of domain folder names, e.g. ['game', 'video']")
    names = list(domains)
    if not names:
        raise DataError("domains=[] names no domain; pass None to load every domain folder")
    for name in names:
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name:
            raise DataError(f"domains: {snippet(name)} is not a folder name")
        if names.count(name) > 1:
            raise DataError(f"domains: {snippet(name)} is named twice")
        if not (root / name).is_dir():
            raise DataError(f"{root / name}: domain folder not found (asked for domains={snippet(names)})")
    return names


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

    Each line is ``user<TAB>item[<TAB>rating[<TAB>timestamp]]``, with the same number of columns on every line
    of a file; user ids are shared across domains (unless ``shared_users`` says otherwise), item ids are per
    domain. ``train.txt`` is required per domain, ``valid.txt``/``test.txt`` are optional; an empty
    ``valid.txt``/``test.txt`` is an empty split. Folders whose name starts with ``.`` (``.ipynb_checkpoints``)
    and folders with none of the three files are skipped, each with a line in ``dataset.notes``; files beside
    the domain folders (a README) are ignored.

    **CDRIB's releases** (``amazon-game-video`` and its siblings) need ``shared_users="below_heldout"``. Their
    preprocessing (``dataset/preprocessing/split_data.py`` of cjx96/CDRIB) numbers the users common to both
    domains first, ``0 … n_common - 1``, the cold-start valid/test users being the last of them, and then numbers
    every other user *separately per domain* from ``n_common`` on: above that bound, user 5000 of ``game`` and
    user 5000 of ``video`` are two unrelated people. Read as shared, game→video co-occurrence over those id
    collisions carries no signal (``bench/RESULTS.md`` has the measurement).

    Args:
      path: the dataset folder; every sub-folder holding a ``train.txt`` is a domain (sorted by name).
      domains: load only these domain folders (a list of names; each must exist).
      integer_ids: ids must be ASCII digits, ``[0-9]+`` below ``2**63`` (the format's rule; leading zeros are
        ignored, so ``007`` is id 7); False reads each id as a string (non-empty, no surrounding whitespace, at
        most ``jaxrec.data.parse.MAX_ID_LENGTH`` characters).
      unknown_items, duplicates, shared_users: see :func:`~jaxrec.data.from_arrays`.

    Returns:
      A :class:`~jaxrec.data.CrossDomainDataset`; ``notes`` records skipped folders and dropped rows.

    Raises:
      DataError: before reading, for an option outside its choices or a ``domains`` that is not a list of
        existing, distinct folder names. For the folder: missing, not a folder, no domain folder in it, a folder
        with ``valid.txt``/``test.txt`` but no ``train.txt``, two domain folders whose names differ only by
        case. For a file (naming it, and the line where there is one): missing, a folder, a pipe, a broken or
        looping symbolic link, unreadable; a byte that is not UTF-8 (with its offset); a control character
        (a binary or UTF-16 file); a line whose number of tab-separated columns differs from the other lines'
        (naming a line that has the common number) or is not 2 to 4; an empty id, an integer id that is not
        ASCII digits or beyond int64, a string id with surrounding whitespace or too long; a rating or
        timestamp that is not a plain decimal number or not finite; a valid/test item never seen in train
        (unless ``unknown_items='drop'``); a duplicate (with ``duplicates='error'``); an empty train file.
        Quoted text is cut to about 100 characters.
    """
    check_options(unknown_items=unknown_items, duplicates=duplicates, shared_users=shared_users)
    if not isinstance(integer_ids, bool):
        raise DataError(f"integer_ids={snippet(integer_ids)}; expected True or False")
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"path={snippet(path)}; expected the dataset folder as a str or path")
    root = pathlib.Path(path)
    if not root.is_dir():
        if root.exists():
            raise DataError(f"{root}: is a file; expected the dataset folder holding one folder per domain")
        raise DataError(f"{root}: dataset directory not found")
    notes: list[str] = []
    if domains is None:
        names, notes = _find_domains(root)
    else:
        names = _check_domains(root, domains)
    folded: dict[str, str] = {}
    for name in names:
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            raise DataError(f"{root}: domain folders {snippet(other)} and {snippet(name)} differ only by case")
    raw = {}
    for name in names:
        raw[name] = {}
        for split in SPLITS:
            file = root / name / f"{split}.txt"
            if split == "train" or os.path.lexists(file):
                raw[name][split] = _read_tsv(file, integer_ids=integer_ids)
    return from_raw(
        raw, unknown_items=unknown_items, duplicates=duplicates, shared_users=shared_users, notes=tuple(notes)
    )


_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")
_RECBOLE_COLUMNS = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}


def _recbole_header(path: pathlib.Path, header: str, line: int) -> list[str]:
    """The column names of a RecBole header line ``name:type<TAB>…``, checked."""
    names = []
    for field in header.split("\t"):
        name, _, kind = field.partition(":")
        if not name or kind not in _RECBOLE_TYPES:
            raise DataError(
                f"{path}, line {line}: header field {snippet(field)} must be 'name:type' with type in {_RECBOLE_TYPES}"
            )
        need = _RECBOLE_COLUMNS.get(name)
        if need is not None and kind != need:
            raise DataError(
                f"{path}, line {line}: header field {snippet(field)} must have type {need!r} ({name}:{need})"
            )
        if name in names:
            raise DataError(f"{path}, line {line}: header names column {snippet(name)} twice")
        names.append(name)
    for need in ("user_id", "item_id"):
        if need not in names:
            raise DataError(f"{path}, line {line}: header {snippet(header)} has no {need!r} column")
    return names


def _read_recbole(path: pathlib.Path) -> RawSplit:
    """Reads one RecBole atomic ``.inter`` file (typed header ``name:type`` per column)."""
    text = parse.read_lines(path)
    if not text.lines:
        raise DataError(f"{path}: empty file (expected a header like 'user_id:token\\titem_id:token')")
    names = _recbole_header(path, text.lines[0], int(text.numbers[0]))
    width = len(names)
    bad = np.flatnonzero(text.widths[1:] != width)
    if bad.size:
        row = int(bad[0]) + 1
        raise DataError(
            f"{path}, line {int(text.numbers[row])}: expected {width} columns {snippet(names)} as in the header "
            f"(line {int(text.numbers[0])}), got {int(text.widths[row])} tab-separated: {snippet(text.lines[row])}"
        )
    body, lines = text.lines[1:], text.numbers[1:]
    cols = dict(zip(names, parse.split_columns(body, width)))
    src = parse.Source(str(path), lines, body)
    ratings = None
    if "rating" in cols:
        ratings = parse.as_float32(parse.numbers(cols["rating"], "rating", src), "rating", src)
    return RawSplit(
        parse.str_ids(cols["user_id"], "user id", src),
        parse.str_ids(cols["item_id"], "item id", src),
        ratings,
        parse.numbers(cols["timestamp"], "timestamp", src) if "timestamp" in cols else None,
        source=str(path),
        lines=lines,
    )


def load_recbole(
    files: Mapping[str, str | os.PathLike | Mapping[str, str | os.PathLike]],
    *,
    unknown_items: str = "error",
    duplicates: str = "drop",
) -> CrossDomainDataset:
    """Loads RecBole atomic ``.inter`` files, one per domain; users are matched across domains by raw token.

    The first non-blank line is the header, ``name:type`` per tab-separated column; ``user_id`` and ``item_id``
    (type ``token``) are required, ``rating`` and ``timestamp`` (type ``float``) are read if present, other
    columns are ignored. Ids are read as strings.

    Args:
      files: ``{domain: path}`` (all interactions go to ``train``; split them with
        :func:`jaxrec.data.leave_one_out`, :func:`jaxrec.data.ratio_split` or :func:`jaxrec.data.cold_start_split`)
        or ``{domain: {split: path}}`` for pre-split files.
      unknown_items, duplicates: see :func:`~jaxrec.data.from_arrays`.

    Returns:
      A :class:`~jaxrec.data.CrossDomainDataset`.

    Raises:
      DataError: before reading, for an option outside its choices or a ``files`` that is not a non-empty
        mapping of domain names to paths (or to ``{split: path}``). For a file, naming it and the line: every
        file check of :func:`load_dir`; an empty file; a header field that is not ``name:type`` with a RecBole
        type, a required column missing, a known column of the wrong type, a column named twice; a line whose
        number of columns differs from the header's; an empty or space-padded id, or one longer than
        ``jaxrec.data.parse.MAX_ID_LENGTH``; a rating or timestamp that is not a finite plain decimal number.
    """
    check_options(unknown_items=unknown_items, duplicates=duplicates)
    if not isinstance(files, Mapping) or not files:
        raise DataError(
            f"files={snippet(files)}; expected a non-empty mapping {{domain: path}} or {{domain: {{split: path}}}}"
        )
    raw = {}
    for name, spec in files.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"files: domain names must be non-empty strings, got {snippet(name)}")
        spec = spec if isinstance(spec, Mapping) else {"train": spec}
        for split, file in spec.items():
            if split not in SPLITS:
                raise DataError(f"files[{snippet(name)}]: unknown split {snippet(split)}; expected one of {SPLITS}")
            if not isinstance(file, (str, os.PathLike)):
                raise DataError(f"files[{snippet(name)}][{split!r}]: expected a file path, got {type(file).__name__}")
        raw[name] = {split: _read_recbole(pathlib.Path(file)) for split, file in spec.items()}
    return from_raw(raw, unknown_items=unknown_items, duplicates=duplicates)

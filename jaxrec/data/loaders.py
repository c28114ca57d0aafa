"""Loaders of files and tables: the ``PATH/<domain>/{train,valid,test}.txt`` folder format (:func:`load_dir`),
RecBole atomic ``.inter`` files (:func:`load_recbole`) and one long table of interactions (:func:`from_table`).

Each reads raw ids into :class:`~jaxrec.data.build.RawSplit` s (or arrays) and builds the dataset with
:func:`~jaxrec.data.build.from_raw` (or :func:`~jaxrec.data.build.from_arrays`); a malformed input raises
:class:`~jaxrec.data.dataset.DataError` naming the file and line.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from jaxrec.data.build import RawSplit, from_arrays, from_raw
from jaxrec.data.dataset import SPLITS, CrossDomainDataset, DataError


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


def _read_tsv(path: pathlib.Path, *, integer_ids: bool = True) -> RawSplit:
    """Reads ``user<TAB>item[<TAB>rating[<TAB>timestamp]]`` lines."""
    lines, numbers = _read_lines(path)
    if not lines:
        return RawSplit(np.zeros(0, np.int64), np.zeros(0, np.int64), source=str(path), lines=numbers)
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
    return RawSplit(users, items, ratings, timestamps, source=str(path), lines=numbers)


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
    user 5000 of ``video`` are two unrelated people. Read as shared, game→video co-occurrence over those id
    collisions carries no signal (``bench/RESULTS.md`` has the measurement).

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
    return from_raw(raw, unknown_items=unknown_items, duplicates=duplicates, shared_users=shared_users)


_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")


def _read_recbole(path: pathlib.Path) -> RawSplit:
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
    return RawSplit(
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
      files: ``{domain: path}`` (all interactions go to ``train``; split them with
        :func:`jaxrec.data.leave_one_out`, :func:`jaxrec.data.ratio_split` or :func:`jaxrec.data.cold_start_split`)
        or ``{domain: {split: path}}`` for pre-split files.
      unknown_items, duplicates: see :func:`from_arrays`.
    """
    raw = {}
    for name, spec in files.items():
        spec = {"train": spec} if not isinstance(spec, Mapping) else spec
        raw[name] = {split: _read_recbole(pathlib.Path(p)) for split, p in spec.items()}
    return from_raw(raw, unknown_items=unknown_items, duplicates=duplicates)


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

"""One long table of interactions as a dataset (:func:`from_table`): a pandas DataFrame, or a CSV, TSV or
Parquet file, one row per interaction naming its user, item and domain (optionally rating, timestamp, split).

A CSV/TSV file goes through the file checks of every loader (:func:`jaxrec.data.parse.read_lines`), then
pandas reads every cell as a string, so ids from a CSV/TSV are strings; ids from a DataFrame or a Parquet file
keep their type (integers, whole floats or strings). A Parquet file is read through
``pyarrow.dataset``, only the columns a role reads (:mod:`jaxrec.data.parquet`). Messages name a row by its file
line (CSV/TSV) or by its 0-based position (DataFrame, Parquet).
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings
from typing import Any, Mapping

import numpy as np

from jaxrec.data import parquet, parse
from jaxrec.data.build import RawSplit, check_options, from_raw
from jaxrec.data.dataset import SPLITS, CrossDomainDataset, DataError, snippet

ROLES = ("user", "item", "domain", "rating", "timestamp", "split")  # what a column can hold


def _roles(columns: Mapping[str, Any] | None) -> dict[str, Any]:
    """The column name of every role: ``columns[role]``, else the role's own name."""
    columns = {} if columns is None else columns
    if not isinstance(columns, Mapping):
        raise DataError(f"columns={snippet(columns)}; expected a mapping {{role: column name}}")
    for role, name in columns.items():
        if role not in ROLES:
            raise DataError(f"columns: unknown role {snippet(role)}; valid roles are {ROLES}")
        try:
            hash(name)
        except TypeError:
            raise DataError(f"columns[{role!r}]: {snippet(name)} is not a column name") from None
    return {role: columns.get(role, role) for role in ROLES}


def _read(table: Any, pd: Any, wanted: list) -> tuple[parquet.Table, parse.Source]:
    """The columns ``wanted`` of the table (those present), and where its rows come from."""
    if isinstance(table, pd.DataFrame):
        return _frame_table(table, wanted), parse.Source("<DataFrame>", np.arange(len(table)), unit="row")
    if not isinstance(table, (str, os.PathLike)):
        raise DataError(
            f"table: expected a pandas DataFrame or the path of a .csv, .tsv or .parquet file, got "
            f"{type(table).__name__}"
        )
    path = pathlib.Path(table)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        read = parquet.read_parquet(path, wanted)
        return read, parse.Source(str(path), np.arange(read.n_rows), unit="row")
    if suffix not in (".csv", ".tsv"):
        parse.check_file(path)
        raise DataError(f"{path}: unsupported table format {snippet(path.suffix)}; expected .csv, .tsv or .parquet")
    text = parse.read_lines(path)
    kind = suffix[1:].upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # rows longer than the header lose data
            frame = pd.read_csv(
                io.StringIO(text.text),
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                index_col=False,
            )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: empty file (expected a header line naming the columns, then one row per line)"
        ) from None
    except pd.errors.ParserWarning:
        raise DataError(
            f"{path}: a row has more fields than the header; every {kind} row needs the same fields"
        ) from None
    except ValueError as e:  # pandas' ParserError is a ValueError
        raise DataError(f"{path}: not a well-formed {kind} table: {snippet(str(e).strip())}") from None
    read = _frame_table(frame, wanted)
    if len(text.lines) == len(frame) + 1:  # one line per row: messages can name the line
        return read, parse.Source(str(path), text.numbers[1:], text.lines[1:])
    return read, parse.Source(str(path), np.arange(1, len(frame) + 1), unit="data row")


def _present(col: parquet.Column, what: str, src: parse.Source) -> np.ndarray:
    """The values of a column, refusing a missing one (an empty cell of a short CSV row, NaN, None)."""
    if col.missing.any():
        raise src.error(int(np.argmax(col.missing)), f"{what} is missing (an empty cell, NaN or None)")
    return col.values


def _labels(col: parquet.Column, what: str, src: parse.Source) -> tuple[np.ndarray, np.ndarray]:
    """A domain or split column as ``(names str [k] sorted, codes int64 [n])``: row ``r`` is ``names[codes[r]]``.

    A dictionary-encoded column is checked once per distinct value; any problem is then named at its first row.
    """
    values = _present(col, what, src)
    if col.codes is not None:
        distinct = [str(v) for v in col.distinct]
        try:
            parse.str_ids(distinct, what, parse.Source(src.name))
        except DataError:
            pass  # the row-by-row check below names the first bad row
        else:
            names, inverse = np.unique(np.array(distinct, dtype=str), return_inverse=True)
            return names, inverse.astype(np.int64)[col.codes]
    labels = parse.str_ids([str(v) for v in values], what, src)
    names, codes = np.unique(labels, return_inverse=True)
    return names, codes.astype(np.int64)


def _frame_table(frame: Any, wanted: list) -> parquet.Table:
    """The role columns of a DataFrame as a :class:`~jaxrec.data.parquet.Table` (a name held twice is left out:
    it is refused by name)."""
    names = list(frame.columns)
    columns = {}
    for name in dict.fromkeys(wanted):
        if sum(1 for n in names if n == name) == 1:
            series = frame[name]
            columns[name] = parquet.Column(series.to_numpy(), np.asarray(series.isna()))
    return parquet.Table(columns, names, len(frame))


def from_table(
    table: Any, *, columns: Mapping[str, str] | None = None, unknown_items: str = "error", duplicates: str = "drop"
) -> CrossDomainDataset:
    """Loads one long table of interactions: a pandas DataFrame, a CSV path or a Parquet path.

    Args:
      table: a ``pandas.DataFrame`` or a path ending in ``.csv``/``.tsv``/``.parquet`` (needs pandas; Parquet
        needs pyarrow — the ``tables`` extra).
      columns: maps the roles ``user``, ``item``, ``domain`` (required) and ``rating``, ``timestamp``, ``split``
        (optional) to column names; by default each role is looked up under its own name. Other columns are
        ignored. Without a ``split`` column everything goes to ``train``.
      unknown_items, duplicates: see :func:`~jaxrec.data.from_arrays`.

    Returns:
      A :class:`~jaxrec.data.CrossDomainDataset` with its domains sorted by name.

    Raises:
      DataError: before reading, for an option outside its choices, or ``columns`` that is not a mapping of
        known roles to column names. For a file: every file check of :func:`~jaxrec.data.load_dir`, an empty
        file, a CSV/TSV pandas cannot parse, an unreadable Parquet file, another suffix. For the table (naming
        the line or row): a required column missing, two roles reading one column, a column appearing twice,
        no rows; a missing cell; an id that ``jaxrec.data.parse.array_ids`` refuses (negative, NaN, not
        whole, beyond int64, empty, space-padded, too long, integers mixed with strings); a domain or split
        empty or space-padded, a split outside ``("train", "valid", "test")``; a rating or timestamp that is not
        a finite number. Quoted text is cut to about 100 characters.
      ImportError: without pandas (or pyarrow, for Parquet).
    """
    check_options(unknown_items=unknown_items, duplicates=duplicates)
    names = _roles(columns)
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - exercised only without pandas
        raise ImportError("from_table needs pandas: pip install 'jaxrec[tables]'") from e
    table, src = _read(table, pd, [names[role] for role in ROLES])
    for role in ("user", "item", "domain"):
        if names[role] not in table.names:
            raise DataError(
                f"{src.name}: no column {snippet(names[role])} for role {role!r}; columns are {snippet(table.names)}"
            )
    present = {role: names[role] for role in ROLES if names[role] in table.names}
    readers: dict[Any, str] = {}
    for role, col in present.items():
        if col in readers:
            raise DataError(f"{src.name}: roles {readers[col]!r} and {role!r} both read column {snippet(col)}")
        readers[col] = role
        if sum(1 for name in table.names if name == col) > 1:
            raise DataError(f"{src.name}: column {snippet(col)} appears more than once")
    if table.n_rows == 0:
        raise DataError(f"{src.name}: the table has no rows")
    cols = table.columns

    domains, domain = _labels(cols[present["domain"]], "domain", src)
    if "split" in present:
        splits, split = _labels(cols[present["split"]], "split", src)
        unknown = ~np.isin(splits, SPLITS)
        if unknown.any():
            row = int(np.argmax(unknown[split]))
            raise src.error(row, f"split {snippet(str(splits[split[row]]))} is not one of {SPLITS}")
    else:
        splits, split = np.array(["train"]), np.zeros(table.n_rows, np.int64)
    users = parse.array_ids(_present(cols[present["user"]], "user id", src), "user id", src)
    items = parse.array_ids(_present(cols[present["item"]], "item id", src), "item id", src)
    ratings = timestamps = None
    if "rating" in present:
        ratings = parse.array_numbers(_present(cols[present["rating"]], "rating", src), "rating", src)
        ratings = parse.as_float32(ratings, "rating", src)
    if "timestamp" in present:
        timestamps = parse.array_numbers(_present(cols[present["timestamp"]], "timestamp", src), "timestamp", src)

    raw: dict[str, dict[str, RawSplit]] = {}
    group = domain.astype(np.int64) * splits.size + split
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    for rows in np.split(order, bounds):
        dom, part = divmod(int(group[rows[0]]), splits.size)
        raw.setdefault(str(domains[dom]), {})[str(splits[part])] = RawSplit(
            users[rows],
            items[rows],
            None if ratings is None else ratings[rows],
            None if timestamps is None else timestamps[rows],
            source=src.name,
            lines=src.lines[rows],
            unit=src.unit,
            owned=True,
        )
    return from_raw(raw, unknown_items=unknown_items, duplicates=duplicates)

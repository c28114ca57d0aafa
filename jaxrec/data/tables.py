"""One long table of interactions as a dataset (:func:`from_table`): a pandas DataFrame, or a CSV, TSV or
Parquet file, one row per interaction naming its user, item and domain (optionally rating, timestamp, split).

A CSV/TSV file goes through the file checks of every loader (:func:`jaxrec.data.parse.read_lines`), then
pandas reads every cell as a string, so ids from a CSV/TSV are strings; ids from a DataFrame or a Parquet file
keep their type (integers, whole floats or strings). Messages name a row by its file line (CSV/TSV) or by its
0-based position (DataFrame, Parquet).
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings
from typing import Any, Mapping

import numpy as np

from jaxrec.data import parse
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


def _read(table: Any, pd: Any) -> tuple[Any, parse.Source]:
    """The table as a DataFrame, and where its rows come from."""
    if isinstance(table, pd.DataFrame):
        return table, parse.Source("<DataFrame>", np.arange(len(table)), unit="row")
    if not isinstance(table, (str, os.PathLike)):
        raise DataError(
            f"table: expected a pandas DataFrame or the path of a .csv, .tsv or .parquet file, got "
            f"{type(table).__name__}"
        )
    path = pathlib.Path(table)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        parse.check_file(path)
        try:
            frame = pd.read_parquet(path)
        except ImportError:
            raise
        except Exception as e:  # pyarrow's errors share no base class narrower than Exception
            raise DataError(f"{path}: not a readable Parquet file: {snippet(str(e))}") from e
        return frame, parse.Source(str(path), np.arange(len(frame)), unit="row")
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
    if len(text.lines) == len(frame) + 1:  # one line per row: messages can name the line
        return frame, parse.Source(str(path), text.numbers[1:], text.lines[1:])
    return frame, parse.Source(str(path), np.arange(1, len(frame) + 1), unit="data row")


def _present(series: Any, what: str, src: parse.Source) -> np.ndarray:
    """The values of a column, refusing a missing one (an empty cell of a short CSV row, NaN, None)."""
    missing = np.asarray(series.isna())
    if missing.any():
        raise src.error(int(np.argmax(missing)), f"{what} is missing (an empty cell, NaN or None)")
    return series.to_numpy()


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
    frame, src = _read(table, pd)
    for role in ("user", "item", "domain"):
        if names[role] not in frame.columns:
            raise DataError(
                f"{src.name}: no column {snippet(names[role])} for role {role!r}; columns are "
                f"{snippet(list(frame.columns))}"
            )
    present = {role: names[role] for role in ROLES if names[role] in frame.columns}
    readers: dict[Any, str] = {}
    for role, col in present.items():
        if col in readers:
            raise DataError(f"{src.name}: roles {readers[col]!r} and {role!r} both read column {snippet(col)}")
        readers[col] = role
        if int(np.sum(frame.columns == col)) > 1:
            raise DataError(f"{src.name}: column {snippet(col)} appears more than once")
    if len(frame) == 0:
        raise DataError(f"{src.name}: the table has no rows")

    domain = parse.str_ids([str(v) for v in _present(frame[present["domain"]], "domain", src)], "domain", src)
    if "split" in present:
        split = parse.str_ids([str(v) for v in _present(frame[present["split"]], "split", src)], "split", src)
        unknown = ~np.isin(split, SPLITS)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise src.error(row, f"split {snippet(str(split[row]))} is not one of {SPLITS}")
    else:
        split = np.full(len(frame), "train")
    users = parse.array_ids(_present(frame[present["user"]], "user id", src), "user id", src)
    items = parse.array_ids(_present(frame[present["item"]], "item id", src), "item id", src)
    ratings = timestamps = None
    if "rating" in present:
        ratings = parse.array_numbers(_present(frame[present["rating"]], "rating", src), "rating", src)
        ratings = parse.as_float32(ratings, "rating", src)
    if "timestamp" in present:
        timestamps = parse.array_numbers(_present(frame[present["timestamp"]], "timestamp", src), "timestamp", src)

    raw: dict[str, dict[str, RawSplit]] = {}
    groups = pd.DataFrame({"domain": domain, "split": split}).groupby(["domain", "split"], sort=True).indices
    for (dom, part), rows in groups.items():
        raw.setdefault(str(dom), {})[str(part)] = RawSplit(
            users[rows],
            items[rows],
            None if ratings is None else ratings[rows],
            None if timestamps is None else timestamps[rows],
            source=src.name,
            lines=src.lines[rows],
            unit=src.unit,
        )
    return from_raw(raw, unknown_items=unknown_items, duplicates=duplicates)

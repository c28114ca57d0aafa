"""Parquet tables read through ``pyarrow.dataset``: only the columns a role reads, each as a numpy array with
its missing cells marked, without a pandas DataFrame or a Python object per cell for numeric columns.

A numeric (or boolean) column becomes its numpy array (no copy where Arrow allows); a column of strings (or any other
type) is dictionary-encoded by Arrow, and its rows are the numpy ``str`` array of the distinct values indexed
by the codes, so a string column costs one Python object per distinct value. Missing cells are nulls, and NaN
in a floating column (as pandas counts them).

Shapes: ``[n]`` = the rows of the table, in file order.
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxrec.data import parse
from jaxrec.data.dataset import DataError, snippet


class Column(NamedTuple):
    """One column of the table.

    Attributes:
      values: ``[n]`` numpy values (numbers, or ``str`` for a dictionary-encoded column; a missing cell holds
        an arbitrary value).
      missing: ``bool [n]``: null, or NaN in a floating column.
      codes: for a dictionary-encoded column, ``int32 [n]`` index of each row's value in ``distinct`` (-1
        where missing), else None.
      distinct: the distinct values of a dictionary-encoded column, as Python objects, else None.
    """

    values: np.ndarray
    missing: np.ndarray
    codes: np.ndarray | None = None
    distinct: list | None = None


class Table(NamedTuple):
    """The columns read, the names of every column of the file (in order, repeats kept) and its row count."""

    columns: dict
    names: list
    n_rows: int


def _column(chunked: Any, pa: Any, pc: Any) -> Column:
    """A :class:`Column` from an Arrow chunked array."""
    kind = chunked.type
    missing = chunked.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = chunked.to_numpy(zero_copy_only=False)
        if pa.types.is_floating(kind):
            missing = missing | np.isnan(values)
        return Column(values, missing)
    encoded = pc.dictionary_encode(chunked).combine_chunks()
    distinct = encoded.dictionary.to_pylist()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    if all(isinstance(v, str) for v in distinct):
        table = np.array(distinct, dtype=str) if distinct else np.zeros(0, str)
        values = table[np.maximum(codes, 0)] if table.size else np.full(codes.shape, "", str)
    else:  # dates, lists, ...: the values as objects, refused by the id and number checks
        values = np.array([None if c < 0 else distinct[c] for c in codes.tolist()], dtype=object)
    return Column(values, missing, codes, distinct)


def read_parquet(path: pathlib.Path, wanted: Sequence[Any]) -> Table:
    """The columns ``wanted`` (those that exist once in the file; each read once) of a Parquet file.

    Raises:
      DataError: naming ``path`` for a file :func:`jaxrec.data.parse.check_file` refuses or that is not
        readable Parquet.
      ImportError: without pyarrow.
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as pads
    except ImportError as e:  # pragma: no cover - exercised only without pyarrow
        raise ImportError("reading Parquet needs pyarrow: pip install 'jaxrec[tables]'") from e
    parse.check_file(path)
    try:
        dataset = pads.dataset(path, format="parquet")
        names = list(dataset.schema.names)
        read = [c for c in dict.fromkeys(wanted) if isinstance(c, str) and names.count(c) == 1]
        table = dataset.to_table(columns=read)
    except Exception as e:  # pyarrow's errors share no base class narrower than Exception
        raise DataError(f"{path}: not a readable Parquet file: {snippet(str(e))}") from e
    n_rows = table.num_rows
    columns = {}
    for name in read:
        columns[name] = _column(table.column(name), pa, pc)
        table = table.drop_columns([name])  # the Arrow buffers of a column go once it is converted
    return Table(columns, names, n_rows)

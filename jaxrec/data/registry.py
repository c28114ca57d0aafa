"""The loaders by name: :data:`LOADERS` and :func:`get_loader`, the way recipes (``methods.METHODS``) and
discrepancy terms (``losses.DISCREPANCIES``) are found.

Each loader returns a :class:`~jaxrec.data.CrossDomainDataset` and raises :class:`~jaxrec.data.DataError` naming
the file, line and expected form on bad input.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping

from jaxrec.data.build import from_arrays
from jaxrec.data.dataset import CrossDomainDataset
from jaxrec.data.loaders import from_table, load_dir, load_recbole

#: ``dir``: ``DIR/<domain>/{train,valid,test}.txt`` (:func:`load_dir`); ``recbole``: RecBole atomic ``.inter``
#: files (:func:`load_recbole`); ``table``: a DataFrame, CSV or Parquet (:func:`from_table`); ``arrays``: numpy
#: arrays of raw ids (:func:`from_arrays`).
LOADERS: Mapping[str, Callable[..., CrossDomainDataset]] = types.MappingProxyType(
    {"dir": load_dir, "recbole": load_recbole, "table": from_table, "arrays": from_arrays}
)


def get_loader(name: str) -> Callable[..., CrossDomainDataset]:
    """The loader called ``name`` in :data:`LOADERS`.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown loader {name!r}; valid loaders: {sorted(LOADERS)}")
    return LOADERS[name]

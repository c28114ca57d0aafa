"""Host-side cross-domain data: domains over one shared user id space, loaders, splits, synthetic data.

Everything here is numpy on the host and immutable: a loader returns a :class:`CrossDomainDataset`, a split
returns a new one. Devices only ever see the fixed-shape batches built from it (``jaxrec.batching``). The id
conventions (one shared user id space, per-domain item ids, raw ids kept in ``user_ids``/``item_ids``) are
stated in ``jaxrec.data.dataset``.

Modules, along the data path (each imports only those above it):
  * ``dataset``: the in-memory types :class:`CrossDomainDataset`, :class:`Domain`, :class:`Interactions`,
    :class:`CSR`, and :class:`DataError` (``dataset.snippet`` cuts quoted input in messages).
  * ``parse``: strict reading of files, ids and numbers; its docstring lists what every loader validates.
  * ``chunks``: the chunked reader of integer-id files (``load_dir``'s fast path, straight from bytes to int32).
  * ``idmap``: raw ids to contiguous ids (lookup tables or sliced searches) and repeated-pair detection.
  * ``build``: a dataset from raw ids (:func:`from_arrays`; ``build.RawSplit`` and ``build.from_raw`` for
    loaders), the ``shared_users`` rules.
  * ``parquet``: Parquet tables through ``pyarrow.dataset`` (only the columns a role reads).
  * ``tables``: :func:`from_table` (a DataFrame, CSV, TSV or Parquet table).
  * ``loaders``: :func:`load_dir`, :func:`load_recbole` (and :func:`from_table` re-exported).
  * ``splits``: :func:`cold_start_split`, :func:`leave_one_out`, :func:`ratio_split`, :func:`limit_overlap`.
  * ``registry``: :data:`LOADERS` by name and :func:`get_loader`.
  * ``synth``: :func:`synthetic` data with a planted cross-domain structure (:class:`SyntheticConfig`,
    :class:`Planted`).
  * ``stream``: :func:`synthetic_large`, generated in blocks of users in time linear in the interactions
    (:class:`LargeSyntheticConfig`, ``stream.synthetic_blocks``), and :func:`write_dir` (the ``load_dir`` format).

For bad input every loader raises :class:`DataError`, naming the file and line (or the argument, or the table
row) and quoting the offending text cut to about 100 characters; ``parse`` lists what is validated.

Example:
  >>> ds = jaxrec.data.load_dir("../shared/data/amazon-game-video", shared_users="below_heldout")
  >>> users, items, *_ = ds.interactions("video", "train")
  >>> print(ds.summary())
"""

from jaxrec.data.build import SHARED_USERS_RULES, from_arrays
from jaxrec.data.dataset import CSR, SPLITS, CrossDomainDataset, DataError, Domain, Interactions
from jaxrec.data.loaders import from_table, load_dir, load_recbole
from jaxrec.data.registry import LOADERS, get_loader
from jaxrec.data.splits import cold_start_split, leave_one_out, limit_overlap, ratio_split
from jaxrec.data.stream import LargeSyntheticConfig, synthetic_large, write_dir
from jaxrec.data.synth import Planted, SyntheticConfig, synthetic

__all__ = [
    "CSR",
    "LOADERS",
    "SHARED_USERS_RULES",
    "SPLITS",
    "CrossDomainDataset",
    "DataError",
    "Domain",
    "Interactions",
    "LargeSyntheticConfig",
    "Planted",
    "SyntheticConfig",
    "cold_start_split",
    "from_arrays",
    "from_table",
    "get_loader",
    "leave_one_out",
    "limit_overlap",
    "load_dir",
    "load_recbole",
    "ratio_split",
    "synthetic",
    "synthetic_large",
    "write_dir",
]

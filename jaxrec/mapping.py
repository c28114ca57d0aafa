"""Deprecated: the transfer-by-mapping recipes live in :mod:`jaxrec.methods` (``jaxrec.methods.mapping``,
``jaxrec.methods.ptupcdr``, ``jaxrec.methods.finetune``); import them from ``jaxrec.methods``.

This module re-exports the names it used to define and warns once, when imported.
"""

import warnings

from jaxrec.methods import (
    METHODS,
    EMCDRConfig,
    FinetuneConfig,
    PTUPCDRConfig,
    fit_mapping,
    padded_history,
    train_emcdr,
    train_finetune,
    train_ptupcdr,
)

warnings.warn(
    "jaxrec.mapping is deprecated; import its names from jaxrec.methods (e.g. jaxrec.methods.EMCDRConfig, "
    "jaxrec.methods.METHODS['emcdr'])",
    DeprecationWarning,
    stacklevel=2,
)

#: The mapping recipes' entries of :data:`jaxrec.methods.METHODS`.
RECIPES = {name: METHODS[name] for name in ("emcdr", "ptupcdr", "finetune")}

__all__ = [
    "EMCDRConfig",
    "PTUPCDRConfig",
    "FinetuneConfig",
    "fit_mapping",
    "padded_history",
    "train_emcdr",
    "train_ptupcdr",
    "train_finetune",
    "RECIPES",
]

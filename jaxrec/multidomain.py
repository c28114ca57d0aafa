"""Deprecated: the joint multi-domain recipes live in :mod:`jaxrec.methods` (``jaxrec.methods.joint``,
``jaxrec.methods.multidomain``, ``jaxrec.methods.lightgcn``); import them from ``jaxrec.methods``.

This module re-exports the names it used to define and warns once, when imported.
"""

import warnings

from jaxrec.methods import (
    METHODS,
    CoNetConfig,
    CoNetUserTowers,
    JointConfig,
    LightGCNConfig,
    LightGCNModel,
    MMoEConfig,
    PLEConfig,
    STARConfig,
    UserNetworkModel,
    joint_graph,
    train_conet,
    train_lightgcn,
    train_mmoe,
    train_ple,
    train_star,
)

warnings.warn(
    "jaxrec.multidomain is deprecated; import its names from jaxrec.methods (e.g. jaxrec.methods.MMoEConfig, "
    "jaxrec.methods.METHODS['lightgcn'])",
    DeprecationWarning,
    stacklevel=2,
)

#: The joint recipes' entries of :data:`jaxrec.methods.METHODS`.
RECIPES = {name: METHODS[name] for name in ("mmoe", "ple", "star", "conet", "lightgcn")}

__all__ = [
    "JointConfig",
    "MMoEConfig",
    "PLEConfig",
    "STARConfig",
    "CoNetConfig",
    "LightGCNConfig",
    "UserNetworkModel",
    "LightGCNModel",
    "CoNetUserTowers",
    "train_mmoe",
    "train_ple",
    "train_star",
    "train_conet",
    "train_lightgcn",
    "joint_graph",
    "RECIPES",
]

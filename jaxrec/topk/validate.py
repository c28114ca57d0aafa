"""Static checks of the top-k functions' arguments, and the matmul precision the kernels run under.

Every check runs at trace time on shapes, dtypes and Python values (never on the values of traced arrays) and
raises ``ValueError`` / ``TypeError`` quoting the shapes involved: queries ``[Q, d]``, items ``[N, d]``,
id lists such as ``exclude [Q, m]`` (``-1`` padded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("dot", "cosine", "l2")

_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def check_metric(metric: str) -> None:
    """Raises ``ValueError`` unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")


def check_precision(precision: Any) -> None:
    """Raises ``ValueError`` unless ``precision`` is ``None`` or a value ``jax.default_matmul_precision`` takes."""
    if precision is None:
        return
    try:
        with jax.default_matmul_precision(precision):
            pass
    except (ValueError, TypeError) as e:
        raise ValueError(f"precision={precision!r} is not a matmul precision JAX knows: {e}") from None


def precision_context(precision: str | None):
    """``jax.default_matmul_precision(precision)``, or a no-op context for ``None`` (JAX's own setting)."""
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


def with_precision(fn: Callable) -> Callable:
    """``fn(..., precision=p)`` traces ``fn`` under ``jax.default_matmul_precision(p)`` (``None``: JAX's config).

    Every product of the kernels (``dot_general`` / ``einsum`` with ``precision=None``) takes that precision.
    """

    def wrapped(*args, precision=None, **kwargs):
        with precision_context(precision):
            return fn(*args, **kwargs)

    wrapped.__name__, wrapped.__qualname__, wrapped.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return wrapped


def _check_float(name: str, x: Any, spec: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} {spec} must be floating (float32, bfloat16 or float16), got dtype {x.dtype} "
            f"with shape {tuple(x.shape)}"
        )
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} {spec} must be float32, bfloat16 or float16, got dtype {x.dtype} with shape {tuple(x.shape)}"
        )


def check_pair(queries: Any, items: Any) -> None:
    """Ranks, dtypes and the shared width ``d`` of ``queries [Q, d]`` and ``items [N, d]``."""
    if jnp.ndim(queries) != 2 or jnp.ndim(items) != 2:
        raise ValueError(
            f"queries must be [Q, d] and items [N, d] (rank 2); got queries {jnp.shape(queries)} and "
            f"items {jnp.shape(items)}"
        )
    _check_float("queries", queries, "[Q, d]")
    _check_float("items", items, "[N, d]")
    if queries.shape[1] != items.shape[1]:
        raise ValueError(
            f"queries [Q, d] and items [N, d] must share d; got queries {queries.shape} and items {items.shape}"
        )
    if items.shape[0] == 0:
        raise ValueError(f"items [N, d] is empty (N = 0, shape {tuple(items.shape)}): there is nothing to rank")


def check_ids(name: str, ids: Any, n_rows: int, spec: str, other: str) -> None:
    """An integer id list ``ids`` (``spec``, e.g. ``"[Q, m]"``) with one row per query (``other`` describes them)."""
    if jnp.ndim(ids) != 2:
        raise ValueError(f"{name} must be {spec} (rank 2), got shape {jnp.shape(ids)}; queries are {other}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} {spec} must hold integer item ids, got dtype {ids.dtype} with shape {ids.shape}")
    if ids.shape[0] != n_rows:
        raise ValueError(f"{name} {spec} needs one row per query; got {name} {ids.shape} for queries {other}")


def check_k(k: Any, n: int, what: str, shapes: str) -> None:
    """``k`` a static Python int in ``[1, n]``; ``what`` names the ``n`` things chosen from (e.g. ``"items N"``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a static Python int, got {type(k).__name__} ({shapes})")
    if k <= 0:
        raise ValueError(f"k must be positive, got k={k} ({shapes})")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of {what} ({n}); {shapes}")


def check_concrete_exclusions(exclude: Any, n: int, k: int, shapes: str) -> None:
    """When ``exclude`` is a host array, check that every row leaves at least ``k`` items."""
    if not isinstance(exclude, np.ndarray) or exclude.size == 0:
        return
    ids = np.where((exclude >= 0) & (exclude < n), exclude, -1)
    ids = np.sort(ids, axis=1)
    distinct = (ids >= 0) & np.concatenate([np.ones((ids.shape[0], 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    worst = int(distinct.sum(axis=1).max())
    if n - worst < k:
        raise ValueError(
            f"k={k} exceeds N minus exclusions: a row of exclude excludes {worst} of N={n} items, "
            f"leaving {n - worst}; {shapes}"
        )


def describe_shapes(queries: Any, items: Any, exclude: Any = None) -> str:
    """``"queries (Q, d), items (N, d)[, exclude (Q, m)]"``, quoted by the error messages."""
    s = f"queries {tuple(queries.shape)}, items {tuple(items.shape)}"
    return s if exclude is None else s + f", exclude {tuple(exclude.shape)}"

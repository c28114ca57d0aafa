"""Array-like inputs of the top-k functions, and the finite-value checks they run on concrete inputs.

Conversions, applied before the static checks of :mod:`jaxrec.topk.validate`:

* vectors (queries ``[Q, d]``, items ``[N, d]``) and score matrices ``[Q, N]``: jax arrays and tracers keep
  their dtype, except float64 (``jax_enable_x64``), which becomes float32. Anything else goes through
  ``np.asarray`` and onto the device: a numpy float64 array becomes float32, other floating dtypes (float32,
  float16, bfloat16) are kept, a numpy array of any other dtype is left for the dtype check (``TypeError``);
  Python lists and tuples of numbers (which carry no dtype) become float32.
* id lists (``exclude [Q, m]``, ``candidates [Q, C]``): rectangular Python lists / tuples become integer numpy
  arrays (an empty list is int32); a ragged list is a ``ValueError`` that points to :func:`csr_to_padded`.
  Host integer ids outside the int32 range become ``-1`` (padding: no item has such an id).

:func:`pair_inputs` converts ``queries``, ``items`` and ``exclude`` this way and checks the pair;
:func:`require_finite_pair` is the ``check_finite`` switch of the functions that take queries and items.

Finite checks (:func:`require_finite`) run on the host side of the call, outside the compiled kernels: one fused
reduction per array (``sum(x * 0) == 0``, exact: it is ``NaN`` exactly when some value is ``NaN`` or ``±inf``)
and one scalar read back. On failure a second pass lists the offending rows for the message. Under a JAX
transformation (``jit``, ``vmap``, ``shard_map``, ...) the inputs are tracers whose values are unknown, so the
check is skipped there: check the concrete arrays before the transformed call if needed.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.topk import validate

_INT32 = np.iinfo(np.int32)
_SHOWN_ROWS = 5  # row indices quoted in a non-finite message
_NARROW_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(jnp.bfloat16))


def is_traced(x: Any) -> bool:
    """Whether ``x`` is a tracer (inside ``jit``, ``vmap``, ``shard_map``, ...): its values are unknown."""
    return isinstance(x, jax.core.Tracer)


def _from_host(name: str, x: Any, spec: str, what: str) -> np.ndarray:
    """``np.asarray(x)``, with a ragged or non-numeric array-like reported against ``name``."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} must be a rectangular {spec} array-like of {what}; np.asarray failed: {e}") from None
    if a.dtype == object:
        raise ValueError(
            f"{name} must be a rectangular {spec} array-like of {what}, got a ragged or mixed "
            f"{type(x).__name__} (numpy dtype object)"
        )
    return a


def as_vectors(name: str, x: Any, spec: str) -> Any:
    """``x`` (queries / items ``[rows, d]``, or scores ``[Q, N]``) as a jax array (a tracer stays as it is).

    Float64 becomes float32; a Python list / tuple of numbers becomes float32; any other dtype is kept for the
    dtype check to report. ``name`` and ``spec`` (e.g. ``"items"``, ``"[N, d]"``) go into error messages.
    """
    if isinstance(x, jax.Array):  # concrete arrays and tracers
        return x.astype(jnp.float32) if x.dtype == jnp.float64 else x
    a = x if isinstance(x, np.ndarray) else _from_host(name, x, spec, "numbers")
    if not isinstance(x, np.ndarray) and (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        a = a.astype(np.float32)  # a list of Python numbers carries no dtype
    if not jnp.issubdtype(a.dtype, jnp.floating):
        return a  # left as it is for the dtype check, which quotes the dtype and shape
    if a.dtype not in _NARROW_FLOATS:
        a = a.astype(np.float32)  # float64, longdouble
    return jnp.asarray(a)


def as_ids(name: str, ids: Any, spec: str) -> Any:
    """``ids`` (``exclude [Q, m]`` / ``candidates [Q, C]``) as an integer array; jax arrays are kept as they are.

    Python lists / tuples must be rectangular (ragged rows: ``ValueError`` pointing to :func:`csr_to_padded`);
    an empty one is int32. Host int64 / uint ids outside the int32 range become ``-1``.
    """
    if isinstance(ids, jax.Array):
        return ids
    if isinstance(ids, np.ndarray):
        a = ids
    else:
        try:
            a = np.asarray(ids)
        except (ValueError, TypeError):
            a = np.empty(0, object)
        if a.dtype == object:
            raise ValueError(
                f"{name} must be a rectangular {spec} id list; got a ragged {type(ids).__name__} (rows of "
                f"different lengths). Pad the rows with -1, e.g. with jaxrec.topk.csr_to_padded(indptr, indices)"
            )
        if a.size == 0:
            a = a.astype(np.int32)
    if np.issubdtype(a.dtype, np.integer) and (a.dtype.itemsize > 4 or a.dtype == np.uint32):
        a = np.where((a >= -1) & (a <= _INT32.max), a, -1).astype(np.int32)
    return a


def pair_inputs(queries: Any, items: Any, exclude: Any = None) -> tuple[Any, Any, Any]:
    """``queries [Q, d]``, ``items [N, d]`` (:func:`as_vectors`) and ``exclude [Q, m]`` (:func:`as_ids`, unless
    ``None``) converted, then the pair checked by :func:`~jaxrec.topk.validate.check_pair`.

    Returns:
        ``(queries, items, exclude)``.
    """
    queries = as_vectors("queries", queries, "[Q, d]")
    items = as_vectors("items", items, "[N, d]")
    if exclude is not None:
        exclude = as_ids("exclude", exclude, "[Q, m]")
    validate.check_pair(queries, items)
    return queries, items, exclude


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool (``check_finite``-style switches); else ``TypeError`` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@functools.partial(jax.jit, static_argnames=("allow_inf",))
def _all_ok(arrays: tuple, *, allow_inf: bool) -> tuple:
    """One bool per array: no NaN (``allow_inf``) or no NaN / ±inf. One fused pass over each array."""
    if allow_inf:
        return tuple(~jnp.any(jnp.isnan(a)) for a in arrays)
    return tuple(jnp.sum(a * 0, dtype=jnp.float32) == 0 for a in arrays)


@functools.partial(jax.jit, static_argnames=("allow_inf",))
def _bad_rows(a: jax.Array, *, allow_inf: bool) -> jax.Array:
    """``bool[rows]``: rows of ``a [rows, ...]`` holding a NaN (or a ±inf unless ``allow_inf``)."""
    bad = jnp.isnan(a) if allow_inf else ~jnp.isfinite(a)
    return jnp.any(bad.reshape(a.shape[0], -1), axis=1)


def describe_rows(rows: np.ndarray, total: int, word: str = "rows") -> str:
    """``"3 of 1000 rows (rows 4, 17, 99)"``; at most five indices are quoted."""
    shown = ", ".join(str(int(r)) for r in rows[:_SHOWN_ROWS]) + (", ..." if rows.size > _SHOWN_ROWS else "")
    one = word[:-1] if word.endswith("s") else word
    return f"{rows.size} of {total} {word} ({one if rows.size == 1 else word} {shown})"


def require_finite(*named: tuple[str, Any], allow_inf: bool = False) -> None:
    """Raises ``ValueError`` when a concrete array of ``named`` holds ``NaN`` (or ``±inf``, unless ``allow_inf``).

    Args:
        *named: ``(label, array)`` pairs; ``label`` names the argument and its layout, e.g. ``"items [N, d]"``.
            Arrays are ``[rows, ...]``; the message counts and lists the rows that hold such values. Tracers
            (inside ``jit`` / ``vmap`` / ``shard_map``) and empty arrays are skipped.
        allow_inf: only ``NaN`` is refused (score matrices, where ``-inf`` marks an item out).

    Raises:
        ValueError: naming the first offending argument, its shape, how many rows hold such values and the first
            few row indices, and the ``check_finite=False`` opt-out.

    Example:
        >>> require_finite(("items [N, d]", jnp.array([[0.0, 1.0], [jnp.nan, 2.0]])))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: items [N, d] = (2, 2) holds NaN or infinite values in 1 of 2 rows (row 1); ...
    """
    concrete = [(label, a) for label, a in named if not is_traced(a) and a.size]
    if not concrete:
        return
    ok = jax.device_get(_all_ok(tuple(a for _, a in concrete), allow_inf=allow_inf))
    for (label, a), fine in zip(concrete, ok):
        if fine:
            continue
        rows = np.flatnonzero(np.asarray(_bad_rows(a, allow_inf=allow_inf)))
        what = "NaN" if allow_inf else "NaN or infinite values"
        raise ValueError(
            f"{label} = {tuple(a.shape)} holds {what} in {describe_rows(rows, a.shape[0])}; results against "
            f"such rows are undefined. Fix the input, or pass check_finite=False to skip this check"
        )


def require_finite_pair(check_finite: Any, queries: Any, items: Any) -> None:
    """The ``check_finite`` switch of the vector functions: unless it is ``False``, :func:`require_finite` on
    ``queries [Q, d]`` and ``items [N, d]`` (``TypeError`` for a switch that is not a bool)."""
    if check_flag("check_finite", check_finite):
        require_finite(("queries [Q, d]", queries), ("items [N, d]", items))

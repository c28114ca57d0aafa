"""Static checks and mask helpers shared by the loss modules.

Every check runs at trace time on static information (shapes, dtypes, and values only when they are concrete) and
raises ``ValueError``/``TypeError`` quoting the offending shape or value. Masks are boolean arrays that mark valid
entries (any nonzero value counts as valid); masked entries are replaced by 0 *before* any computation, so NaN or
inf padding never reaches a value or a gradient.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any  # jax.Array, np.ndarray or a Python scalar


def static_value(x: ArrayLike) -> np.ndarray | None:
    """The concrete value of ``x`` as numpy, or None when it is traced (then nothing can be checked)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic array-likes
        return None


def float_array(name: str, x: ArrayLike) -> jax.Array:
    """``x`` as a floating jax array computed in at least float32; TypeError for non-floating dtypes."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype} (shape {x.shape})")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def check_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
    """ValueError unless ``x`` has ``rank`` dimensions; ``layout`` (e.g. ``"[batch, num_neg]"``) is quoted."""
    if x.ndim != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {x.shape}")


def bool_mask(name: str, mask: ArrayLike | None, shape: tuple[int, ...]) -> jax.Array | None:
    """``mask`` as a boolean array of exactly ``shape`` (broadcasting allowed), or None."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    try:
        ok = jnp.broadcast_shapes(mask.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {mask.shape} does not broadcast to the expected shape {tuple(shape)}")
    return jnp.broadcast_to(mask.astype(bool), shape)


def zero_where_masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Replace masked entries by 0 *before* any computation, so NaN/inf padding cannot leak into gradients."""
    if mask is None:
        return x
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


def check_nonneg_static(name: str, x: ArrayLike, *, strict: bool = False) -> None:
    """Raise ValueError when ``x`` is concrete and negative (or not positive when ``strict``); NaN also raises."""
    value = static_value(x)
    if value is None:
        return
    if not np.issubdtype(value.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got {value!r}")
    bad = ~(value > 0) if strict else ~(value >= 0)
    if np.any(bad):
        relation = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be {relation}, got {value.tolist()}")

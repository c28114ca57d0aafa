"""Argument checks shared by every layer: each raises ``ValueError`` naming the argument, the value and what was
expected, and returns the value in canonical form.

This module imports nothing from jaxrec, so any module may use it. Checks of array shapes and dtypes stay next to
the functions they guard (they quote layouts only those functions know).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["choice", "fraction", "non_negative_int", "positive_int", "positive_ints"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer >= 1; else ``ValueError: {name} must be a positive int, got ...``.

    >>> positive_int("k", 10)
    10
    """
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer >= 0; else ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def positive_ints(name: str, values: Any, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A sequence of integers >= 1 as a tuple (a single int counts as a sequence of one).

    Raises:
      ValueError: naming ``name`` when ``values`` is empty (unless ``allow_empty``) or holds anything else.
    """
    if _is_int(values):
        values = (values,)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a sequence of positive ints, got {values!r}")
    out = tuple(values)
    if (not out and not allow_empty) or any(not _is_int(v) or v < 1 for v in out):
        empty = "" if allow_empty else "non-empty "
        raise ValueError(f"{name} must be a {empty}sequence of positive ints, got {values!r}")
    return tuple(int(v) for v in out)


def fraction(name: str, value: Any, *, low: float = 0.0, high: float = 1.0, closed: str = "both") -> float:
    """``value`` as a ``float`` within ``[low, high]`` (``closed``: ``"both"``, ``"left"``, ``"right"``, ``"neither"``).

    Raises:
      ValueError: naming ``name``, the value and the interval.
    """
    left = closed in ("both", "left")
    right = closed in ("both", "right")
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    ok = (x >= low if left else x > low) and (x <= high if right else x < high)
    if isinstance(value, bool) or not ok:
        interval = f"{'[' if left else '('}{low:g}, {high:g}{']' if right else ')'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return x


def choice(name: str, value: Any, valid: Sequence[Any]) -> Any:
    """``value`` if it is one of ``valid``; else ``ValueError: unknown {name} ...; valid: [...]``."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {list(valid)}")
    return value

"""Making and writing figures without pyplot, and the key check the figure functions share.

Every figure of :mod:`jaxrec.plot` is a ``matplotlib.figure.Figure`` built directly (never through ``pyplot``),
so nothing depends on pyplot's global state or on an interactive backend: figures render headless, are shown
inline by Jupyter/Colab when they are a cell's value, and are written with :func:`save`. Nothing here calls
``plt.show``. matplotlib is imported when a figure is made; without it a clear ImportError says what to install.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

__all__ = ["check_keys", "new_figure", "save"]

_INSTALL_HINT = 'jaxrec.plot needs matplotlib: pip install "jaxrec[notebooks]" (or pip install matplotlib)'


def new_figure(*, figsize: tuple[float, float]):
    """A pyplot-free ``Figure`` of ``figsize`` inches with a constrained layout (rendered by Agg when saved).

    Raises:
      ImportError: matplotlib is not installed (the message says what to install).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is installed in the test environment
        raise ImportError(_INSTALL_HINT) from e
    return Figure(figsize=figsize, layout="constrained")


def check_keys(what: str, keys: Sequence[str], available: Sequence[str]) -> list[str]:
    """``keys`` (a name or a non-empty sequence of names) as a list, if every one is in ``available``.

    Raises:
      ValueError: an empty ``keys`` or an unknown key; the message lists the available ones.
    """
    if isinstance(keys, str):
        keys = [keys]
    unknown = [k for k in keys if k not in available]
    if unknown or not keys:
        raise ValueError(f"unknown {what} key(s) {unknown or list(keys)}; the history has {sorted(available)}")
    return list(keys)


def save(fig: Any, path: str | pathlib.Path, *, dpi: int = 120) -> pathlib.Path:
    """Writes ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg), creating parent directories.

    Returns:
      The path written.
    """
    path = pathlib.Path(path)
    if not path.suffix:
        raise ValueError(f"path {str(path)!r} has no suffix; give .png, .pdf or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

"""Scatter plots of representations: a 2-D PCA of each domain's vectors, alone or before/after side by side.

Axis conventions:
  n_d       rows (users) of domain ``d`` in an embedding table
  dim       embedding width (the same in every domain of one plot)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxrec import checks
from jaxrec.plot.figure import new_figure

__all__ = ["embedding_scatter", "embedding_scatter_pair"]


def _pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean [dim], components [dim, 2], explained variance ratio [2])`` of the rows of ``x [rows, dim]``.

    Components are the top right singular vectors of the centred rows, each with its largest-magnitude entry made
    positive (a deterministic sign); a missing second component (``dim == 1`` or rank 1) is zero.
    """
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = np.zeros((x.shape[1], 2))
    k = min(2, vt.shape[0])
    comps[:, :k] = vt[:k].T
    signs = np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(2)])
    comps *= np.where(signs == 0, 1.0, signs)
    var = s**2
    ratio = np.zeros(2)
    ratio[:k] = var[:k] / var.sum() if var.sum() > 0 else 0.0
    return mean, comps, ratio


def _embedding_tables(embeddings_by_domain: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(embeddings_by_domain, Mapping) or not embeddings_by_domain:
        raise ValueError("embeddings_by_domain must be a non-empty mapping domain -> [n_d, dim] array")
    tables = {name: np.asarray(x, np.float64) for name, x in embeddings_by_domain.items()}
    shapes = {name: x.shape for name, x in tables.items()}
    if any(x.ndim != 2 or x.shape[0] == 0 for x in tables.values()) or len({x.shape[1] for x in tables.values()}) != 1:
        raise ValueError(f"embeddings must be non-empty [n_d, dim] arrays with one dim, got shapes {shapes}")
    if not all(np.all(np.isfinite(x)) for x in tables.values()):
        raise ValueError(f"embeddings must be finite (found NaN or inf); shapes {shapes}")
    return tables


def embedding_scatter(
    embeddings_by_domain: Mapping[str, Any],
    *,
    max_points: int = 2000,
    seed: int = 0,
    title: str | None = None,
    ax: Any = None,
):
    """2-D PCA scatter of representations coloured by domain.

    The PCA is fitted (numpy SVD) on the union of all rows of all domains, so the domains share one projection;
    then at most ``max_points`` rows per domain (a random subset, ``seed``) are drawn.

    Args:
      embeddings_by_domain: ``{domain: [n_d, dim]}`` (numpy or jax arrays; one ``dim``), e.g. the source-domain
        vectors of source users and the target-domain vectors of target users.
      max_points: points drawn per domain.
      seed: which points are drawn.
      title: axes title.
      ax: draw into this existing axes (e.g. a panel of :func:`embedding_scatter_pair`).

    Returns:
      The ``Figure`` (``ax.figure`` when ``ax`` is given); one scatter collection per domain, in the order given,
      labelled with the domain name and its point count; axis labels give each component's explained variance.

    Raises:
      ValueError: an empty mapping, non-[n_d, dim] or mismatched arrays (the shapes are quoted), non-finite
        values, or ``max_points < 1``.

    Example:
      >>> embedding_scatter({"source": hs, "target": ht}, title="user vectors")
    """
    max_points = checks.positive_int("max_points", max_points)
    tables = _embedding_tables(embeddings_by_domain)
    mean, comps, ratio = _pca_2d(np.concatenate(list(tables.values()), axis=0))
    rng = np.random.default_rng(seed)
    if ax is None:
        fig = new_figure(figsize=(5.0, 4.5))
        ax = fig.subplots()
    for i, (name, x) in enumerate(tables.items()):
        if x.shape[0] > max_points:
            x = x[np.sort(rng.choice(x.shape[0], max_points, replace=False))]
        xy = (x - mean) @ comps
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, color=f"C{i}", label=f"{name} ({x.shape[0]})", linewidths=0)
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} var.)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} var.)")
    ax.legend(fontsize="small", markerscale=2)
    if title:
        ax.set_title(title)
    return ax.figure


def embedding_scatter_pair(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    titles: tuple[str, str] = ("before alignment", "after alignment"),
    max_points: int = 2000,
    seed: int = 0,
):
    """Two :func:`embedding_scatter` panels side by side (e.g. user vectors before and after alignment).

    Each panel fits its own PCA (the two sets of vectors need not share a space or a width).

    Args:
      before: ``{domain: [n_d, dim]}`` for the left panel.
      after: ``{domain: [n_d, dim']}`` for the right panel.
      titles: the panel titles.
      max_points: points per domain per panel.
      seed: which points are drawn (the same rows in both panels when the row counts agree).

    Returns:
      A ``Figure`` with two axes.
    """
    fig = new_figure(figsize=(10.0, 4.5))
    left, right = fig.subplots(1, 2)
    embedding_scatter(before, max_points=max_points, seed=seed, title=titles[0], ax=left)
    embedding_scatter(after, max_points=max_points, seed=seed, title=titles[1], ax=right)
    return fig

"""Figures of training runs, evaluation results, embeddings and domain gaps (matplotlib, an optional extra).

* :mod:`jaxrec.plot.figure` — how figures are made without pyplot, and :func:`save`;
* :mod:`jaxrec.plot.history` — training histories: :func:`training_curves`, :func:`discrepancy_curve`,
  :func:`load_history`;
* :mod:`jaxrec.plot.bars` — :func:`metric_bars` over methods, :func:`gap_bars` over compared user sets;
* :mod:`jaxrec.plot.embeddings` — 2-D PCA scatters of representations by domain.

Every function returns a ``matplotlib.figure.Figure`` built directly (never through ``pyplot``): figures render
headless, are shown inline by Jupyter/Colab when they are a cell's value, and are written with :func:`save`.
matplotlib is imported when a figure is made; without it a clear ImportError says what to install.
"""

from jaxrec.plot.bars import gap_bars, metric_bars
from jaxrec.plot.embeddings import embedding_scatter, embedding_scatter_pair
from jaxrec.plot.figure import save
from jaxrec.plot.history import discrepancy_curve, load_history, training_curves

__all__ = [
    "discrepancy_curve",
    "embedding_scatter",
    "embedding_scatter_pair",
    "gap_bars",
    "load_history",
    "metric_bars",
    "save",
    "training_curves",
]

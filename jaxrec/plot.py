"""Figures of training runs, evaluation results, embeddings and domain gaps (matplotlib, an optional extra).

Every function returns a ``matplotlib.figure.Figure`` built directly (never through ``pyplot``), so nothing
depends on pyplot's global state or on an interactive backend: figures render headless, are shown inline by
Jupyter/Colab when they are a cell's value, and are written with :func:`save`. Nothing here calls ``plt.show``.

Axis conventions (used throughout this file):
  n_d       rows (users) of domain ``d`` in an embedding table
  dim       embedding width (the same in every domain of one plot)
  step      the global training step of a ``history`` record

A ``history`` is the list of records ``train.fit`` returns (``FitResult.history``, ``methods.Trained.history``)
or writes as JSONL (``TrainConfig.jsonl``, read back with :func:`load_history`): *training* records
``{"step", "epoch", "loss", "task", "task/<domain>", "discrepancy", "lam", "weighted_discrepancy",
"grad_norm", "total", "skipped"}`` (means over a logging window) and *evaluation* records
``{"step", "epoch", "eval/<metric>"}``.

matplotlib is imported when a function is called; without it a clear ImportError says what to install.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_INSTALL_HINT = 'jaxrec.plot needs matplotlib: pip install "jaxrec[notebooks]" (or pip install matplotlib)'
_NOT_SERIES = ("step", "epoch", "skipped")  # record keys that are not plotted as curves


def _new_figure(*, figsize: tuple[float, float]):
    """A pyplot-free ``Figure`` (rendered by the Agg canvas when saved)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is installed in the test environment
        raise ImportError(_INSTALL_HINT) from e
    return Figure(figsize=figsize, layout="constrained")


# --------------------------------------------------------------------------------------------------------------
# histories
# --------------------------------------------------------------------------------------------------------------
def load_history(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of a JSONL training log (``TrainConfig.jsonl``), one JSON object per line.

    Raises:
      ValueError: a line that is not a JSON object (the line number is named).
    """
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not JSON ({e})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def _records(history: Any) -> list[Mapping[str, Any]]:
    if isinstance(history, (str, pathlib.Path)):
        history = load_history(history)
    history = getattr(history, "history", history)  # FitResult / methods.Trained
    if not isinstance(history, Sequence) or not all(isinstance(r, Mapping) for r in history):
        raise TypeError(f"history must be a list of record dicts (train.fit's history), got {type(history)}")
    if not history:
        raise ValueError("history is empty: nothing to plot (was the model trained, e.g. popularity has no history?)")
    return list(history)


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the records holding ``key`` with a finite-or-not numeric value, in step order."""
    pairs = [(r["step"], r[key]) for r in records if key in r and isinstance(r[key], (int, float)) and "step" in r]
    steps = np.asarray([p[0] for p in pairs], np.float64)
    values = np.asarray([p[1] for p in pairs], np.float64)
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def _train_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in _NOT_SERIES and not k.startswith("eval/") and isinstance(v, (int, float)):
                keys[k] = None
    return list(keys)


def _eval_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k in r:
            if k.startswith("eval/"):
                keys[k] = None
    return sorted(keys)


def _default_loss_keys(records: Sequence[Mapping[str, Any]], available: list[str]) -> list[str]:
    """``loss``, each ``task/<domain>``, and the weighted discrepancy when it is ever non-zero."""
    keys = [k for k in ("loss",) if k in available]
    keys += sorted(k for k in available if k.startswith("task/"))
    if "weighted_discrepancy" in available and np.any(_series(records, "weighted_discrepancy")[1] != 0):
        keys.append("weighted_discrepancy")
    return keys


def _check_keys(what: str, keys: Sequence[str], available: Sequence[str]) -> list[str]:
    if isinstance(keys, str):
        keys = [keys]
    unknown = [k for k in keys if k not in available]
    if unknown or not keys:
        raise ValueError(f"unknown {what} key(s) {unknown or list(keys)}; the history has {sorted(available)}")
    return list(keys)


# --------------------------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------------------------
def training_curves(
    history: Any,
    *,
    keys: Sequence[str] | None = None,
    eval_keys: Sequence[str] | None = None,
    title: str | None = None,
):
    """Loss and its parts vs step (left panel) and validation metrics vs step (right panel).

    Args:
      history: ``train.fit``'s list of records, a ``FitResult`` / ``methods.Trained`` (its ``.history``), or the
        path of a JSONL log.
      keys: training-record keys on the loss panel; default ``"loss"``, every ``"task/<domain>"`` and
        ``"weighted_discrepancy"`` (λ·D) when it is ever non-zero.
      eval_keys: evaluation keys (``"eval/NDCG@10"``, ...) on the metric panel; default all of them. The panel
        is left out when the history has no evaluation record.
      title: figure title.

    Returns:
      A ``Figure`` with one axes (no evaluation records) or two; one line per key, its data the records'
      ``(step, value)`` pairs.

    Raises:
      ValueError: an empty history, or keys the history does not have (the available ones are listed).

    Example:
      >>> fig = training_curves(jaxrec.methods.run("cmf", ds, source="source", target="target").history)
      >>> save(fig, "runs/cmf/curves.png")
    """
    records = _records(history)
    available = _train_keys(records)
    evals = _eval_keys(records)
    if not available and not evals:
        raise ValueError(f"history has no numeric series to plot; its first record is {dict(records[0])}")
    keys = _default_loss_keys(records, available) if keys is None else _check_keys("training", keys, available)
    eval_keys = evals if eval_keys is None else _check_keys("evaluation", eval_keys, evals)
    panels = [p for p in (keys, eval_keys) if p]
    fig = _new_figure(figsize=(5.5 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for key in panel:
            steps, values = _series(records, key)
            ax.plot(steps, values, marker="o" if key.startswith("eval/") else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("validation metric" if panel is eval_keys else "training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def discrepancy_curve(history: Any, *, weighted: bool = False, ax: Any = None, title: str | None = None):
    """The alignment term ``D`` (or ``λ·D`` with ``weighted=True``) over training.

    Args:
      history: as for :func:`training_curves`.
      weighted: plot ``"weighted_discrepancy"`` instead of ``"discrepancy"``.
      ax: draw into this existing axes (e.g. a panel of a larger figure) instead of a new figure.
      title: axes title.

    Returns:
      The ``Figure`` (``ax.figure`` when ``ax`` is given), one line: the records' ``(step, D)``.

    Raises:
      ValueError: an empty history or one without the discrepancy key (the available keys are listed).
    """
    records = _records(history)
    key = "weighted_discrepancy" if weighted else "discrepancy"
    _check_keys("discrepancy", [key], _train_keys(records))
    if ax is None:
        fig = _new_figure(figsize=(5.5, 3.8))
        ax = fig.subplots()
    steps, values = _series(records, key)
    ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("λ·D" if weighted else "D (discrepancy)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax.figure


# --------------------------------------------------------------------------------------------------------------
# evaluation results
# --------------------------------------------------------------------------------------------------------------
def _protocols_of(result: Mapping[str, Any]) -> list[str]:
    return sorted(k for k, v in result.items() if isinstance(v, Mapping) and k != "counts" and not k.endswith("_std"))


def _value_and_std(name: str, result: Any, metric: str, protocol: str) -> tuple[float, float | None]:
    """Mean and error bar of one method: a single result uses its ``<protocol>_std`` entry (None without one);
    a list of results (e.g. one per training seed) uses their mean and sample standard deviation."""
    runs = [result] if isinstance(result, Mapping) else list(result)
    if not runs:
        raise ValueError(f"results[{name!r}] is an empty list")
    values = []
    for run in runs:
        if protocol not in run:
            raise ValueError(f"results[{name!r}] has no protocol {protocol!r}; it has {_protocols_of(run)}")
        if metric not in run[protocol]:
            raise ValueError(
                f"results[{name!r}][{protocol!r}] has no metric {metric!r}; it has {sorted(run[protocol])}"
            )
        values.append(float(run[protocol][metric]))
    if len(runs) > 1:
        return float(np.mean(values)), float(np.std(values, ddof=1))
    std = runs[0].get(f"{protocol}_std", {}).get(metric)
    return values[0], None if std is None else float(std)


def metric_bars(
    results: Mapping[str, Any],
    *,
    metric: str = "NDCG@10",
    protocol: str = "full",
    ax: Any = None,
    title: str | None = None,
):
    """One bar per method with error bars, from ``evaluate.evaluate`` results.

    Args:
      results: ``{method: evaluate(...) result}`` — error bars from the result's ``"<protocol>_std"`` entry
        (the std over negative-sampling seeds of the sampled protocol; full ranking has none) — or
        ``{method: [result, ...]}`` (e.g. one per training seed): the bar is the mean, the error bar the sample
        std over the list.
      metric: metric name, e.g. ``"NDCG@10"``, ``"Recall@20"``, ``"HR@10"``.
      protocol: ``"full"`` or ``"sampled"``.
      ax: draw into this existing axes instead of a new figure.
      title: axes title (default ``"<protocol>: <metric>"``).

    Returns:
      The ``Figure``, with ``len(results)`` bars in the order given, each labelled with its value.

    Raises:
      ValueError: no results, or a metric / protocol missing from a result (the available ones are listed).

    Example:
      >>> res = {m: evaluate(run(m, ds, ...).scorers["target"], ds, target="target", source="source")
      ...        for m in ("popularity", "cmf")}
      >>> metric_bars(res, metric="NDCG@10", protocol="sampled")
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError(f"results must be a non-empty mapping method -> evaluate() result, got {results!r}")
    names = list(results)
    stats = [_value_and_std(name, results[name], metric, protocol) for name in names]
    values = [v for v, _ in stats]
    errors = [e for _, e in stats]
    if ax is None:
        fig = _new_figure(figsize=(max(3.5, 1.1 * len(names) + 1.5), 3.8))
        ax = fig.subplots()
    x = np.arange(len(names))
    yerr = None if all(e is None for e in errors) else [0.0 if e is None else e for e in errors]
    bars = ax.bar(
        x, values, yerr=yerr, capsize=4 if yerr is not None else 0, color=[f"C{i}" for i in range(len(names))]
    )
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize="small")
    ax.set_xticks(x, names, rotation=20 if len(names) > 4 else 0)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{protocol}: {metric}")
    ax.grid(axis="y", alpha=0.3)
    return ax.figure


def gap_bars(gaps: Mapping[str, Mapping[str, float] | None], *, measures: Sequence[str] | None = None, title=None):
    """Domain-gap measures side by side: one panel per measure, one bar per compared pair.

    Args:
      gaps: ``{comparison: diagnostics.domain_gap(...) result or None}`` (``diagnose(...)["gaps"]``); None
        entries are skipped.
      measures: which measures; default ``mmd``, ``linear_mmd``, ``coral``, ``proxy_a_distance``.
      title: figure title.

    Returns:
      A ``Figure`` with one axes per measure.

    Raises:
      ValueError: no comparison with values, or an unknown measure (the available ones are listed).
    """
    present = {name: g for name, g in gaps.items() if g is not None}
    if not present:
        raise ValueError(f"no gap to plot: every comparison is None ({sorted(gaps)})")
    available = sorted(
        set.intersection(*(set(k for k, v in g.items() if isinstance(v, float)) for g in present.values()))
    )
    measures = ["mmd", "linear_mmd", "coral", "proxy_a_distance"] if measures is None else list(measures)
    _check_keys("gap measure", measures, available)
    fig = _new_figure(figsize=(2.8 * len(measures), 3.4))
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    names = list(present)
    for ax, measure in zip(axes, measures):
        values = [present[n][measure] for n in names]
        bars = ax.bar(np.arange(len(names)), values, color=[f"C{i}" for i in range(len(names))])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2, fontsize="small")
        ax.set_xticks(np.arange(len(names)), names, fontsize="small")
        ax.set_title(measure)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------------------------
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
    if not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points must be a positive int, got {max_points!r}")
    tables = _embedding_tables(embeddings_by_domain)
    mean, comps, ratio = _pca_2d(np.concatenate(list(tables.values()), axis=0))
    rng = np.random.default_rng(seed)
    if ax is None:
        fig = _new_figure(figsize=(5.0, 4.5))
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
    fig = _new_figure(figsize=(10.0, 4.5))
    left, right = fig.subplots(1, 2)
    embedding_scatter(before, max_points=max_points, seed=seed, title=titles[0], ax=left)
    embedding_scatter(after, max_points=max_points, seed=seed, title=titles[1], ax=right)
    return fig


# --------------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------------
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

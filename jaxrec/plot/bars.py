"""Bar charts: a metric of several methods with error bars, and domain-gap measures of compared user sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxrec.plot.figure import check_keys, new_figure

__all__ = ["gap_bars", "metric_bars"]


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
        fig = new_figure(figsize=(max(3.5, 1.1 * len(names) + 1.5), 3.8))
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
    check_keys("gap measure", measures, available)
    fig = new_figure(figsize=(2.8 * len(measures), 3.4))
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

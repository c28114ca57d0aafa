"""Figures of training histories: the loss and its parts, validation metrics and the discrepancy over steps.

Axis conventions: ``step`` is the global training step of a ``history`` record.

A ``history`` is the list of records ``train.fit`` returns (``FitResult.history``, ``methods.Trained.history``)
or writes as JSONL (``TrainConfig.jsonl``, read back with :func:`load_history`): *training* records
``{"step", "epoch", "loss", "task", "task/<domain>", "discrepancy", "lam", "weighted_discrepancy",
"grad_norm", "total", "skipped"}`` (means over a logging window) and *evaluation* records
``{"step", "epoch", "eval/<metric>"}``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxrec.plot.figure import check_keys, new_figure

__all__ = ["discrepancy_curve", "load_history", "training_curves"]

_NOT_SERIES = ("step", "epoch", "skipped")  # record keys that are not plotted as curves


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
    keys = _default_loss_keys(records, available) if keys is None else check_keys("training", keys, available)
    eval_keys = evals if eval_keys is None else check_keys("evaluation", eval_keys, evals)
    panels = [p for p in (keys, eval_keys) if p]
    fig = new_figure(figsize=(5.5 * len(panels), 3.8))
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
    check_keys("discrepancy", [key], _train_keys(records))
    if ax is None:
        fig = new_figure(figsize=(5.5, 3.8))
        ax = fig.subplots()
    steps, values = _series(records, key)
    ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("λ·D" if weighted else "D (discrepancy)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax.figure

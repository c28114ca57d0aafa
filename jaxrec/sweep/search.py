"""Hyper-parameter search of a recipe on the target's **valid** cold users within a time budget: :func:`tune`.

Every learned recipe has a default grid in :data:`TUNE_GRIDS`: ``{field: values}``, the axes in priority order
(the task loss first, then the learning rate, then the rest) and each axis's values in the order they are tried.
The search is one pass of coordinate ascent that is ordered so a budget cut still returns the best configuration
found so far:

1. trial 0 is the recipe's configuration as given (its defaults plus ``base`` overrides) — always measured, so
   the chosen configuration is never worse on valid than the starting one;
2. then, axis by axis, every other value of that axis with the other fields at the best configuration so far;
   after an axis its best value is kept.

A trial's score is the mean of the valid cold users' full-ranking NDCG@10 and sampled NDCG@10 (999 negatives,
sampling seed 0), averaged over ``seeds`` (the leaderboard's choice rule). Each trial trains with the recipe's own
early stopping on valid.

Two ways of training a trial:

* **vmapped** (the shared-embedding family, :data:`jaxrec.sweep.SWEEP_METHODS`): an axis of
  :data:`VMAPPED_AXES` (``learning_rate``, ``lam``) trains all its values (× seeds) in one vmapped program
  (:func:`jaxrec.sweep.sweep` with ``patience``), the other axes one such program per value (× seeds); the
  sweep stops at the budget's deadline with each model at its best epoch so far.
* **sequential** (every other recipe): ``methods.run`` per value and seed. A trial is not started when the
  time left is shorter than the longest trial so far; a started trial runs to its end, so the search can
  overrun the budget by one trial (one with a costlier task loss than the trials before it, typically).

Axes and trials not measured before the budget ran out are reported in :attr:`TuneResult.skipped`. The chosen
configuration is written (``out``) as JSON that ``jaxrec train --config FILE`` reads (its ``"set"`` entry; the
``"set_args"`` entry is the same as ``--set key=value ...`` text); a file that exists is never replaced unless
``overwrite``.

Axis conventions: ``S`` models of one vmapped program (values × seeds).

Example:
    >>> from jaxrec import data
    >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(60, 40))[0], "source", "target")
    >>> result = tune("cmf", ds, source="source", target="target", grid={"learning_rate": (1e-2, 3e-2)},
    ...               base={"dim": 8, "epochs": 2}, budget_s=60)  # doctest: +SKIP
    >>> result.chosen  # doctest: +SKIP
    {'learning_rate': 0.03}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import time
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jaxrec import evaluate as ev
from jaxrec import methods
from jaxrec.data import CrossDomainDataset
from jaxrec.sweep import driver

__all__ = ["TUNE_GRIDS", "VMAPPED_AXES", "TuneResult", "check_out", "default_grid", "tune", "write_choice"]

_LOSSES = ("softmax", "sampled_softmax", "bpr")
_JOINT = {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "l2": (1e-2, 1e-3, 3e-2)}

#: Each learned recipe's default grid: ``{field: values}``, axes in the order they are searched, values in the
#: order they are tried (the recipe's current value is measured first whatever its place). ``item_map`` chooses
#: its own grid on valid and ``popularity`` has none.
TUNE_GRIDS: Mapping[str, Mapping[str, tuple]] = {
    "target_only": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "l2": (1e-2, 1e-3)},
    "cmf": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3, 3e-2), "l2": (1e-2, 1e-3, 3e-2)},
    "mmd": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "lam": (1.0, 0.1, 0.3, 3.0), "l2": (1e-2, 1e-3)},
    "coral": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "lam": (1.0, 0.1, 0.3, 3.0), "l2": (1e-2, 1e-3)},
    "dann": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "lam": (0.1, 0.03, 0.3, 1.0), "l2": (1e-2, 1e-3)},
    "emcdr": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "l2": (0.03, 0.01), "epochs": (5, 10)},
    "ptupcdr": {
        "task_loss": _LOSSES,
        "meta_learning_rate": (1e-3, 3e-3),
        "loss": ("softmax", "bpr"),
        "l2": (0.03, 0.01),
    },
    "finetune": {"task_loss": _LOSSES, "finetune_learning_rate": (1e-2, 3e-3), "pretrain": ("source", "both")},
    "shared_bottom": _JOINT,
    "mmoe": _JOINT,
    "ple": _JOINT,
    "star": _JOINT,
    "conet": _JOINT,
    "cross_stitch": _JOINT,
    "lightgcn": {"task_loss": _LOSSES, "learning_rate": (1e-2, 3e-3), "num_layers": (3, 2), "l2": (1e-2, 1e-3)},
    "history": {"task_loss": _LOSSES, "learning_rate": (3e-3, 1e-3), "dropout_rate": (0.2, 0.0)},
    "factor_map": {"learning_rate": (3e-4, 1e-3, 1e-4), "rank": (256, 128, 512), "target_weight": (0.0, 1.0)},
}

#: Axes a vmapped trial trains side by side in one program (traced per model, not static in the step).
VMAPPED_AXES = ("learning_rate", "lam")


class TuneResult(NamedTuple):
    """What :func:`tune` returns.

    Attributes:
      method: the recipe.
      chosen: ``{field: value}``, the grid fields of the best configuration (and the ``base`` overrides).
      valid: the best configuration's valid cold-user measures: ``{"score", "full_NDCG@10", "sampled_NDCG@10"}``
        (means over the seeds) and ``"per_seed"``.
      start: the same measures of trial 0 (the configuration as given).
      trials: every measured configuration, in order: ``{"trial", "overrides", "score", "full_NDCG@10",
        "sampled_NDCG@10", "seconds", "epochs"}``.
      skipped: the ``{field: value}`` changes not measured before the budget ran out (``[]``: the whole grid).
      seconds: wall time of the search.
      grid: the grid searched.
      mode: ``"vmapped"`` or ``"sequential"``.
    """

    method: str
    chosen: dict
    valid: dict
    start: dict
    trials: list
    skipped: list
    seconds: float
    grid: dict
    mode: str


def default_grid(method: str) -> dict:
    """The default grid of ``method`` (:data:`TUNE_GRIDS`).

    Raises:
      ValueError: a method without a grid (listing the ones with one).
    """
    methods.get_method(method)
    if method not in TUNE_GRIDS:
        raise ValueError(f"method {method!r} has no tuning grid; tunable methods: {sorted(TUNE_GRIDS)}")
    return {k: tuple(v) for k, v in TUNE_GRIDS[method].items()}


# ----------------------------------------------------------------------------------------------------------------
# Arguments and the output file
# ----------------------------------------------------------------------------------------------------------------


def _check_grid(method: str, grid: Mapping[str, Sequence], base: Mapping[str, Any]) -> tuple[dict, Any]:
    """The grid as ``{field: tuple}`` and the starting config; every value checked by the recipe's config."""
    default = methods.get_method(method).default_config
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"grid must be a non-empty mapping of config field -> values, got {grid!r}")
    owner = f"method {method!r}"
    start = methods.make_config(default, dict(base), owner=owner)
    out = {}
    for field, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"grid[{field!r}] must be a non-empty sequence of values, got {values!r}")
        if field in ("seed", "progress"):
            raise ValueError(f"grid[{field!r}]: {field} is not tuned (give seeds with seeds=)")
        for v in values:
            methods.make_config(start, {field: v}, owner=owner)  # unknown fields and bad values raise here
        out[field] = tuple(values)
    return out, start


def check_out(out, overwrite: bool = False) -> pathlib.Path | None:
    """``out`` as a path, checked before any work (None stays None).

    Raises:
      IsADirectoryError: a folder; FileExistsError: an existing file without ``overwrite``; FileNotFoundError:
        its folder does not exist.
    """
    if out is None:
        return None
    path = pathlib.Path(out)
    if path.is_dir():
        raise IsADirectoryError(f"--out {path}: is a folder; give a file name such as {path / 'chosen.json'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"--out {path} exists; it is never replaced without --overwrite (overwrite=True)")
    if not path.parent.exists():
        raise FileNotFoundError(f"--out {path}: folder {path.parent} does not exist")
    return path


def _plain(value: Any) -> Any:
    """A config value as JSON (tuples as lists, numpy scalars as Python numbers)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _set_arg(field: str, value: Any) -> str:
    """``field=value`` as ``jaxrec train --set`` parses it."""
    if isinstance(value, bool):
        return f"{field}={'true' if value else 'false'}"
    if value is None:
        return f"{field}=none"
    if isinstance(value, (tuple, list)):
        return f"{field}=({', '.join(str(v) for v in value)}{',' if len(value) == 1 else ''})"
    return f"{field}={value}"


def write_choice(path, result: TuneResult, *, source: str, target: str, overwrite: bool = False) -> pathlib.Path:
    """Writes ``result`` as JSON to ``path`` (under a temporary name, then renamed).

    The file holds ``"method"``, ``"source"``, ``"target"``, ``"set"`` (``{field: value}``: what ``jaxrec train
    --config FILE`` applies), ``"set_args"`` (the same as ``--set`` text), ``"valid"``, ``"start"``, ``"trials"``,
    ``"skipped"``, ``"grid"``, ``"seconds"`` and ``"mode"``.

    Raises:
      FileExistsError: ``path`` exists and not ``overwrite``; IsADirectoryError: ``path`` is a folder.
    """
    path = check_out(path, overwrite)
    chosen = {k: _plain(v) for k, v in result.chosen.items()}
    record = {
        "method": result.method,
        "source": source,
        "target": target,
        "set": chosen,
        "set_args": [_set_arg(k, v) for k, v in chosen.items()],
        "valid": result.valid,
        "start": result.start,
        "trials": [dict(t, overrides={k: _plain(v) for k, v in t["overrides"].items()}) for t in result.trials],
        "skipped": [{k: _plain(v) for k, v in s.items()} for s in result.skipped],
        "grid": {k: [_plain(v) for v in vs] for k, vs in result.grid.items()},
        "seconds": result.seconds,
        "mode": result.mode,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, default=float)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------------------------------------------
# Measuring one trained model on valid
# ----------------------------------------------------------------------------------------------------------------


def _measure(scorer: ev.Scorer, ds: CrossDomainDataset, source: str, target: str) -> dict:
    """``{"full_NDCG@10", "sampled_NDCG@10", "score"}`` of ``scorer`` on the target's valid cold users."""
    result = ev.evaluate(
        scorer, ds, target=target, split="valid", source=source, users="cold", ks=(10,), sampled_ks=(10,), seeds=(0,)
    )
    full, sampled = result["full"]["NDCG@10"], result["sampled"]["NDCG@10"]
    return {"full_NDCG@10": full, "sampled_NDCG@10": sampled, "score": (full + sampled) / 2}


def _mean(rows: list[dict]) -> dict:
    keys = ("score", "full_NDCG@10", "sampled_NDCG@10")
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["per_seed"] = [{k: r[k] for k in keys} for r in rows]
    return out


_FAILED = {"score": -math.inf, "full_NDCG@10": math.nan, "sampled_NDCG@10": math.nan}


# ----------------------------------------------------------------------------------------------------------------
# Trials: sequential (methods.run) and vmapped (sweep)
# ----------------------------------------------------------------------------------------------------------------


def _sequential(method, ds, source, target, start, changes: list[dict], seeds) -> list[tuple[dict, int | None]]:
    """Each of ``changes`` (``{field: value}`` over ``start``) trained with ``methods.run`` for every seed."""
    out = []
    for change in changes:
        rows = []
        for seed in seeds:
            overrides = {**change, "seed": int(seed)}
            if hasattr(start, "progress"):
                overrides["progress"] = False
            config = methods.make_config(start, overrides)
            trained = methods.get_method(method).train(ds, source=source, target=target, config=config)
            rows.append(_measure(trained.scorers[target], ds, source, target))
        out.append((_mean(rows), None))
    return out


def _vmapped(ds, source, target, start, changes: list[dict], seeds, deadline) -> list[tuple[dict, int | None]]:
    """``changes`` that differ only in :data:`VMAPPED_AXES` trained together in one sweep, × seeds."""
    config = dataclasses.replace(methods.make_config(start, changes[0]), progress=False)
    rows = [(c, s) for c in changes for s in seeds]
    values = {
        axis: [float(c.get(axis, getattr(start, axis))) for c, _ in rows]
        for axis in VMAPPED_AXES
        if any(axis in c for c in changes)
    }
    result = driver.sweep(
        ds,
        source=source,
        target=target,
        config=config,
        lam=values.get("lam"),
        learning_rate=values.get("learning_rate"),
        seed=[int(s) for _, s in rows],
        patience=config.patience,
        deadline=deadline,
    )
    measured = []
    for s in range(len(rows)):
        finite = result.best_epoch is not None and result.best_epoch[s] > 0
        measured.append(_measure(result.scorer(ds, s, target), ds, source, target) if finite else dict(_FAILED))
    n = len(seeds)
    return [(_mean(measured[i * n : (i + 1) * n]), int(result.epochs_run)) for i in range(len(changes))]


# ----------------------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------------------


def tune(
    method: str,
    ds: CrossDomainDataset,
    *,
    source: str,
    target: str,
    grid: Mapping[str, Sequence] | None = None,
    budget_s: float = 600.0,
    seeds: Sequence[int] = (0,),
    base: Mapping[str, Any] | None = None,
    out=None,
    overwrite: bool = False,
    log=None,
) -> TuneResult:
    """Searches ``grid`` of recipe ``method`` on the target's valid cold users within ``budget_s`` seconds.

    Args:
      method: a learned recipe of :data:`jaxrec.methods.METHODS` with a grid (:data:`TUNE_GRIDS`) or ``grid``.
      ds: the dataset, with valid cold users of ``target``.
      source, target: the domains.
      grid: ``{field: values}`` (axes in search order); None: :func:`default_grid`.
      budget_s: seconds for the search (trial 0 always runs whole; see the module docstring for the cut).
      seeds: training seeds of every trial (its score is their mean).
      base: overrides of the recipe's defaults that every trial starts from (e.g. ``{"epochs": 5}``).
      out: a JSON file for the chosen configuration (:func:`write_choice`); checked before any training.
      overwrite: replace ``out`` when it exists.
      log: optional ``str -> None`` called with one line per trial (e.g. ``print``).

    Returns:
      A :class:`TuneResult`.

    Raises:
      ValueError: an unknown method or one without a grid, a bad grid (unknown field, invalid value, ``seed``),
        ``budget_s <= 0``, no seeds, or a target without valid cold users.
      FileExistsError: ``out`` exists and not ``overwrite``.
    """
    t0 = time.monotonic()
    methods.get_method(method)
    grid, start = _check_grid(method, default_grid(method) if grid is None else grid, base or {})
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s={budget_s!r} must be a finite number > 0")
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r} must be one or more integers >= 0")
    check_out(out, overwrite)
    methods.check_pair(ds, source, target)
    if ds.cold_users(source, target, "valid").size == 0:
        raise ValueError(f"tune measures the valid cold users of {target!r}, and there are none")
    deadline = t0 + budget_s
    vmapped = method in driver.SWEEP_METHODS
    log = log or (lambda line: None)

    trials: list[dict] = []
    longest = 0.0

    def run(changes: list[dict], cut: float | None) -> None:
        nonlocal longest
        t = time.monotonic()
        if vmapped:
            measured = _vmapped(ds, source, target, start, changes, seeds, cut)
        else:
            measured = _sequential(method, ds, source, target, start, changes, seeds)
        seconds = (time.monotonic() - t) / len(changes)
        longest = max(longest, seconds)
        for change, (m, epochs) in zip(changes, measured):
            trials.append({"trial": len(trials), "overrides": dict(change), **m, "seconds": seconds, "epochs": epochs})
            log(f"trial {trials[-1]['trial']}: {change or '(start)'} score {m['score']:.4f} ({seconds:.0f} s)")

    # -- trial 0: the configuration as given --
    current = {field: getattr(start, field) for field in grid}
    run([{}], None)
    best = trials[0]
    chosen: dict = {}
    skipped: list[dict] = []

    # -- axis by axis, the other fields at the best so far --
    for field, values in grid.items():
        others = [v for v in values if v != current[field]]
        if not others:
            continue
        changes = [{**chosen, field: v} for v in others]
        first = len(trials)
        if time.monotonic() + (0 if vmapped else longest) > deadline:
            skipped += [{field: v} for v in others]
            continue
        if vmapped and field in VMAPPED_AXES:
            groups = [changes]
        else:
            groups = [[c] for c in changes]
        for group in groups:
            if time.monotonic() + (0 if vmapped else longest) > deadline:
                skipped += [{field: c[field]} for c in group]
                continue
            run(group, deadline)
        winner = max(trials[first:], key=lambda t: t["score"], default=None)
        if winner is not None and winner["score"] > best["score"]:
            best = winner
            chosen = dict(winner["overrides"])
            current[field] = chosen[field]

    result = TuneResult(
        method=method,
        chosen={**dict(base or {}), **chosen},
        valid={k: best[k] for k in ("score", "full_NDCG@10", "sampled_NDCG@10")},
        start={k: trials[0][k] for k in ("score", "full_NDCG@10", "sampled_NDCG@10")},
        trials=trials,
        skipped=skipped,
        seconds=time.monotonic() - t0,
        grid=grid,
        mode="vmapped" if vmapped else "sequential",
    )
    if out is not None:
        write_choice(out, result, source=source, target=target, overwrite=overwrite)
    return result

"""Reading finished run directories: ``run.json``, the dataset it was trained on, its scorers, and the evaluation
that writes ``metrics.json``.

A finished run directory holds:

* ``run.json`` — its format (:data:`FORMAT`), method, source, target, dataset path and fingerprint, seed, the
  method's config, library versions, training wall time, the structure of each domain's scorer
  (:mod:`jaxrec.runs.scorers`) and the sha256 of each of its arrays (``"checksums"``, verified on load);
* ``checkpoint/`` — an Orbax checkpoint of the scorers' arrays (the trained model, as it ranks);
* ``history.jsonl`` — the training log records (one JSON object per line);
* ``metrics.json`` — written by :func:`evaluate_run`: ``{"valid": {...}, "test": {"sampled": {"MRR", "NDCG@5",
  "NDCG@10", "HR@1", "HR@5", "HR@10"}, "sampled_std": {...}, "full": {"Recall@K", "NDCG@K" for K in 10, 20,
  50}, "counts": {...}}, "method", "source", "target", "seed", "config", "versions", "wall_time", "checkpoint"}``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import platform
import time
from typing import Any, Mapping

import jax
import numpy as np

from jaxrec import data as _data
from jaxrec import evaluate as ev
from jaxrec.runs import layout
from jaxrec.runs.layout import RunError
from jaxrec.runs.scorers import decode_scorers, load_arrays
from jaxrec.version import __version__

__all__ = [
    "FORMAT",
    "FULL_KS",
    "READABLE_FORMATS",
    "SAMPLED_KS",
    "check_dataset",
    "check_evaluable",
    "evaluate_run",
    "fingerprint",
    "jsonable",
    "load_dataset",
    "load_scorers",
    "read_run",
    "versions",
]

FORMAT = "jaxrec-run/2"
READABLE_FORMATS = ("jaxrec-run/1", FORMAT)
FULL_KS = (10, 20, 50)
SAMPLED_KS = (1, 5, 10)


def versions() -> dict[str, str]:
    """Versions of Python, jaxrec and its core dependencies."""
    import flax
    import optax

    return {
        "python": platform.python_version(),
        "jaxrec": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
    }


def fingerprint(ds: _data.CrossDomainDataset) -> dict[str, Any]:
    """What a checkpoint depends on: the user count and, per domain, the item count and train size."""
    return {
        "n_users": int(ds.n_users),
        "domains": {
            d: {"n_items": int(ds.n_items(d)), "train": int(ds.interactions(d, "train").size)} for d in ds.domains
        },
    }


def jsonable(value):
    """``value`` with dataclasses, mappings, tuples and arrays turned into JSON types."""
    if dataclasses.is_dataclass(value):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    return value


def check_evaluable(ds: _data.CrossDomainDataset, *, source: str, target: str, ks: tuple[int, ...]) -> None:
    """Checks that a run of ``source`` → ``target`` can be evaluated on ``ds`` with full-ranking cutoffs ``ks``.

    Raises:
      ValueError: a K larger than the target's catalogue (its cold users have no seen items to exclude).
      DataError: no cold-start user of the target (source train history, no target train history) in valid or
        test.
    """
    n_items = ds.n_items(target)
    too_big = [k for k in ks if k > n_items]
    if too_big:
        raise ValueError(f"--ks {too_big[0]} exceeds the catalogue of domain {target!r} ({n_items} items)")
    if not any(ds.cold_users(source, target, split).size for split in ("valid", "test")):
        raise _data.DataError(
            f"no cold-start user of {target!r} in valid or test (a user with {source!r} train history and no "
            f"{target!r} train history): nothing to evaluate (train with --no-eval to skip evaluation)"
        )


def read_run(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """``run.json`` of ``run_dir``.

    Args:
      run_dir: the run directory.

    Returns:
      The parsed ``run.json``: method, source, target, seed, config, data path and fingerprint, versions, checksums.

    Raises:
      RunError: ``run_dir`` is missing, not a jaxrec run directory, or a run that did not finish (saying how to
        resume it).
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    path = run_dir / layout.RUN_FILE
    if not path.is_file():
        if layout.run_state(run_dir) == "unfinished":
            command = json.loads((run_dir / layout.TRAINING_FILE).read_text()).get("command")
            how = f"`{command} --resume`" if command else "`jaxrec train ... --resume`"
            raise RunError(f"{run_dir}: this run did not finish; resume it with {how}")
        raise RunError(
            f"{run_dir} is not a jaxrec run directory (no {layout.RUN_FILE}; create one with `jaxrec train`)"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") not in READABLE_FORMATS:
        raise RunError(f"{path}: not a jaxrec run file (expected format {' or '.join(map(repr, READABLE_FORMATS))})")
    return meta


def load_dataset(meta: dict, data_path: str | None = None) -> _data.CrossDomainDataset:
    """The run's dataset (``data_path`` overrides the recorded path), checked against the run's fingerprint."""
    path = data_path or meta.get("data")
    if path is None:
        raise RunError("this run was trained on in-memory data; pass the dataset directory with --data")
    ds = _data.load_dir(path, shared_users=meta.get("shared_users"))
    check_dataset(meta, ds, path)
    return ds


def check_dataset(meta: dict, ds: _data.CrossDomainDataset, where: str = "the dataset"):
    """Raises :class:`RunError` if ``ds`` is not the dataset the run was trained on."""
    want, got = meta["dataset"], fingerprint(ds)
    if want != got:
        raise RunError(
            f"{where} does not match the checkpoint: the run was trained on {json.dumps(want)}, "
            f"the dataset given has {json.dumps(got)}"
        )


def load_scorers(run_dir: str | pathlib.Path, meta: dict | None = None) -> dict[str, ev.Scorer]:
    """The run's scorers, ``{domain: evaluate.Scorer}``, restored from its Orbax checkpoint.

    Args:
      run_dir: the run directory.
      meta: its ``run.json``, if already read (:func:`read_run`).

    Returns:
      ``{domain: Scorer}`` for every domain the run's method ranks.

    Raises:
      RunError: the checkpoint is missing or corrupt (an array differs from its checksum in ``run.json``, naming
        it), or ``run.json`` describes the scorers wrongly.
    """
    run_dir = pathlib.Path(run_dir)
    meta = read_run(run_dir) if meta is None else meta
    checkpoint = run_dir / layout.CHECKPOINT_DIR
    try:
        leaves = load_arrays(checkpoint, int(meta["n_arrays"]), meta.get("checksums"), meta["scorers"])
    except RunError:
        raise
    except Exception as e:  # orbax raises many types for a missing or corrupt checkpoint
        text = str(e) if len(str(e)) <= 300 else f"{str(e)[:300]}..."
        raise RunError(
            f"cannot restore {checkpoint}: it is missing, incomplete or corrupt ({type(e).__name__}: {text})"
        ) from None
    return decode_scorers(meta["scorers"], leaves)


def evaluate_run(
    run_dir: str | pathlib.Path,
    *,
    ds: _data.CrossDomainDataset | None = None,
    data_path: str | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    ks: tuple[int, ...] = FULL_KS,
) -> dict[str, Any]:
    """Evaluates a run on its target's cold-start users (valid and test, both protocols); writes ``metrics.json``.

    Args:
      run_dir: the run directory.
      ds: the dataset, if already loaded (checked against the run's fingerprint); else it is loaded as the run
        records (:func:`load_dataset`).
      data_path: the dataset directory, replacing the one recorded in ``run.json``.
      seeds: the sampled protocol's seeds.
      ks: the full-ranking cutoffs.

    Returns:
      The metrics written to ``metrics.json``: ``{"valid": ..., "test": ...}`` (each with ``"sampled"``,
      ``"sampled_std"``, ``"full"`` and ``"counts"``, for the splits that have interactions) and the run's method,
      domains, seed, config, versions, wall times and checkpoint path.
    """
    run_dir = pathlib.Path(run_dir)
    meta = read_run(run_dir)
    if ds is None:
        ds = load_dataset(meta, data_path)
    else:
        check_dataset(meta, ds)
    scorers = load_scorers(run_dir, meta)
    source, target = meta["source"], meta["target"]
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    for split in ("valid", "test"):
        if split not in ds.splits(target) or ds.interactions(target, split).size == 0:
            continue
        result = ev.evaluate(
            scorers[target],
            ds,
            target=target,
            split=split,
            source=source,
            users="cold",
            ks=tuple(ks),
            sampled_ks=SAMPLED_KS,
            seeds=tuple(seeds),
        )
        keep_sampled = ["MRR"] + [f"NDCG@{k}" for k in (5, 10)] + [f"HR@{k}" for k in SAMPLED_KS]
        keep_full = [f"{m}@{k}" for k in ks for m in ("Recall", "NDCG")]
        out[split] = {
            "sampled": {k: result["sampled"][k] for k in keep_sampled},
            "sampled_std": {k: result["sampled_std"][k] for k in keep_sampled},
            "full": {k: result["full"][k] for k in keep_full},
            "counts": result["counts"],
        }
    if not out:
        raise RunError(f"target {target!r} has no valid or test interactions to evaluate")
    metrics = {
        **out,
        "method": meta["method"],
        "source": source,
        "target": target,
        "seed": meta["seed"],
        "config": meta["config"],
        "versions": versions(),
        "wall_time": {"train_s": meta["train_seconds"], "evaluate_s": time.perf_counter() - t0},
        "checkpoint": str((run_dir / layout.CHECKPOINT_DIR).absolute()),
    }
    layout.write_text(run_dir / layout.METRICS_FILE, json.dumps(metrics, indent=1))
    return metrics

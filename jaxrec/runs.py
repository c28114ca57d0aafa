"""Run directories: what ``jaxrec train`` writes and ``jaxrec evaluate`` / ``jaxrec diagnose`` read back.

A run directory holds:

* ``run.json`` — its format (:data:`FORMAT`), method, source, target, dataset path and fingerprint, seed, the
  method's config, library versions, training wall time, and the layout of each domain's scorer (see below);
* ``checkpoint/`` — an Orbax checkpoint of the scorers' arrays (the trained model, as it ranks);
* ``history.jsonl`` — the training log records (one JSON object per line);
* ``metrics.json`` — written by :func:`evaluate_run`: ``{"valid": {...}, "test": {"sampled": {"MRR", "NDCG@5",
  "NDCG@10", "HR@1", "HR@5", "HR@10"}, "sampled_std": {...}, "full": {"Recall@K", "NDCG@K" for K in 10, 20,
  50}, "counts": {...}}, "method", "source", "target", "seed", "config", "versions", "wall_time", "checkpoint"}``.

A scorer is saved as its arrays plus a JSON description of its structure: ``evaluate.Scorer(users_fn, items)``
where ``users_fn`` is a ``jax.tree_util.Partial`` over one of the functions of :func:`scorer_functions`, written
into ``run.json`` by its stable name there (every recipe builds its scorers that way):

* ``"warm_or_popularity"`` — :func:`jaxrec.methods.warm_or_popularity` (``methods.fallback_scorer``),
* ``"item_map_scores"`` — :func:`jaxrec.methods.item_map_scores` (the ``item_map`` recipe),
* ``"popularity"`` — the user side of :func:`jaxrec.evaluate.popularity_scorer`,
* ``"embedding"`` — the user side of :func:`jaxrec.evaluate.embedding_scorer`.

Saving a scorer over any other function raises :class:`RunError`. Run directories written by jaxrec 0.1.0
(format ``jaxrec-run/1``) named the functions by their qualified names; :data:`LEGACY_NAMES` maps those to the
stable names on load. Only the functions of that table are ever loaded back, so loading a run directory cannot
run arbitrary code (no pickle, no imports by name).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import platform
import time
import types
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxrec import data as _data
from jaxrec import evaluate as ev
from jaxrec import methods
from jaxrec.version import __version__

RUN_FILE = "run.json"
FORMAT = "jaxrec-run/2"
READABLE_FORMATS = ("jaxrec-run/1", FORMAT)
METRICS_FILE = "metrics.json"
FULL_KS = (10, 20, 50)
SAMPLED_KS = (1, 5, 10)


class RunError(ValueError):
    """A run directory that is missing, not a jaxrec run, or does not match the dataset it is evaluated on."""


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


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    return value


# ----------------------------------------------------------------------------------------------------------------
# Scorer (de)serialisation: structure as JSON, arrays through Orbax
# ----------------------------------------------------------------------------------------------------------------


#: Qualified names that format ``jaxrec-run/1`` wrote, and the stable name of the same function.
LEGACY_NAMES = {
    "jaxrec.methods:_warm_or_popularity": "warm_or_popularity",
    "jaxrec.methods:_item_map_scores": "item_map_scores",
    "jaxrec.evaluate:_ones_column": "popularity",
    "jaxrec.evaluate:_take_rows": "embedding",
}


#: The functions a saved scorer may be built on, by the stable name ``run.json`` stores.
SCORER_FUNCTIONS: Mapping[str, Callable] = types.MappingProxyType(
    {
        "warm_or_popularity": methods.warm_or_popularity,
        "item_map_scores": methods.item_map_scores,
        "popularity": ev.ones_column,
        "embedding": ev.take_rows,
    }
)


def scorer_functions() -> Mapping[str, Callable]:
    """The functions a saved scorer may be built on (:data:`SCORER_FUNCTIONS`), by the stable name ``run.json``
    stores: ``warm_or_popularity`` and ``item_map_scores`` of :mod:`jaxrec.methods`, and ``evaluate.ones_column``
    (``popularity``) and ``evaluate.take_rows`` (``embedding``)."""
    return SCORER_FUNCTIONS


def _function_name(fn) -> str:
    for name, known in scorer_functions().items():
        if fn is known:
            return name
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    raise RunError(
        f"cannot save a scorer over {where}: a saved scorer must be a jax.tree_util.Partial over one of "
        f"{sorted(scorer_functions())} (runs.scorer_functions)"
    )


def _encode(x, leaves: list) -> dict:
    if isinstance(x, jax.tree_util.Partial):
        return {
            "partial": _function_name(x.func),
            "args": [_encode(a, leaves) for a in x.args],
            "kwargs": {k: _encode(v, leaves) for k, v in x.keywords.items()},
        }
    if isinstance(x, dict):
        return {"dict": {str(k): _encode(v, leaves) for k, v in x.items()}}
    if isinstance(x, (tuple, list)):
        return {type(x).__name__: [_encode(v, leaves) for v in x]}
    if x is None:
        return {"none": None}
    if callable(x):
        raise RunError(f"cannot save a scorer holding the callable {x!r}: wrap it in jax.tree_util.Partial")
    leaves.append(np.asarray(x))
    return {"leaf": len(leaves) - 1}


def _resolve(name: str) -> Callable:
    """The function saved under ``name`` (a stable name, or a legacy qualified name)."""
    functions = scorer_functions()
    stable = LEGACY_NAMES.get(name, name)
    if stable not in functions:
        raise RunError(
            f"unknown scorer function {name!r} in the run file; known: {sorted(functions)} (and the jaxrec-run/1 "
            f"names {sorted(LEGACY_NAMES)})"
        )
    return functions[stable]


def _decode(node: dict, leaves: list):
    kind, value = next(iter(node.items()))
    if kind == "partial":
        args = [_decode(a, leaves) for a in node["args"]]
        kwargs = {k: _decode(v, leaves) for k, v in node["kwargs"].items()}
        return jax.tree_util.Partial(_resolve(value), *args, **kwargs)
    if kind == "dict":
        return {k: _decode(v, leaves) for k, v in value.items()}
    if kind in ("tuple", "list"):
        items = [_decode(v, leaves) for v in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "none":
        return None
    if kind == "leaf":
        return leaves[value]
    raise RunError(f"unknown scorer node {kind!r}")


def _save_arrays(path: pathlib.Path, leaves: list[np.ndarray]):
    import orbax.checkpoint as ocp

    tree = {f"a{i:05d}": leaf for i, leaf in enumerate(leaves)}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path.absolute(), tree)


def _load_arrays(path: pathlib.Path, n: int) -> list:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(path.absolute())
    return [jax.numpy.asarray(tree[f"a{i:05d}"]) for i in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Train / load / evaluate a run
# ----------------------------------------------------------------------------------------------------------------


def save_run(
    run_dir: str | pathlib.Path,
    trained: methods.Trained,
    *,
    method: str,
    source: str,
    target: str,
    ds: _data.CrossDomainDataset,
    data_path: str | None,
    seed: int,
    train_seconds: float,
    shared_users: int | str | None = None,
) -> pathlib.Path:
    """Writes ``run.json``, ``history.jsonl`` and the Orbax ``checkpoint/`` of ``trained``'s scorers.

    ``data_path`` and ``shared_users`` record how the dataset was loaded (``load_dir(data_path,
    shared_users=...)``), so that ``jaxrec evaluate`` loads it the same way.

    Raises:
      RunError: ``run_dir`` already holds a run, or a scorer is not a ``jax.tree_util.Partial`` over a function of
        :func:`scorer_functions` (then nothing is written).
    """
    run_dir = pathlib.Path(run_dir)
    if (run_dir / RUN_FILE).exists() or (run_dir / "checkpoint").exists():
        raise RunError(f"{run_dir} already holds a run; choose another --out or delete it")
    leaves: list[np.ndarray] = []
    scorers = {  # before anything is written: an unsaveable scorer raises RunError here
        d: {"users_fn": _encode(s.users_fn, leaves), "items": _encode(s.items, leaves)}
        for d, s in trained.scorers.items()
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_arrays(run_dir / "checkpoint", leaves)
    with open(run_dir / "history.jsonl", "w") as f:
        for record in trained.history:
            f.write(json.dumps(_jsonable(record)) + "\n")
    meta = {
        "format": FORMAT,
        "method": method,
        "source": source,
        "target": target,
        "data": None if data_path is None else str(pathlib.Path(data_path).absolute()),
        "shared_users": shared_users,
        "dataset": fingerprint(ds),
        "seed": int(seed),
        "config": _jsonable(trained.config),
        "versions": versions(),
        "train_seconds": float(train_seconds),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scorers": scorers,
        "n_arrays": len(leaves),
    }
    (run_dir / RUN_FILE).write_text(json.dumps(meta, indent=1))
    return run_dir


def read_run(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """``run.json`` of ``run_dir``; raises :class:`RunError` if it is not a jaxrec run directory."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a jaxrec run directory (no {RUN_FILE}; create one with `jaxrec train`)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
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
    """The run's scorers, ``{domain: evaluate.Scorer}``, restored from its Orbax checkpoint."""
    run_dir = pathlib.Path(run_dir)
    meta = read_run(run_dir) if meta is None else meta
    try:
        leaves = _load_arrays(run_dir / "checkpoint", int(meta["n_arrays"]))
    except Exception as e:  # orbax raises many types for a missing or corrupt checkpoint
        raise RunError(f"cannot restore {run_dir / 'checkpoint'}: {type(e).__name__}: {e}") from e
    return {
        d: ev.Scorer(_decode(s["users_fn"], leaves), _decode(s["items"], leaves)) for d, s in meta["scorers"].items()
    }


def evaluate_run(
    run_dir: str | pathlib.Path,
    *,
    ds: _data.CrossDomainDataset | None = None,
    data_path: str | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    ks: tuple[int, ...] = FULL_KS,
) -> dict[str, Any]:
    """Evaluates a run on its target's cold-start users (valid and test, both protocols); writes ``metrics.json``.

    Returns the metrics dict (see the module docstring).
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
        "checkpoint": str((run_dir / "checkpoint").absolute()),
    }
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    return metrics


def train_run(
    ds: _data.CrossDomainDataset,
    *,
    method: str,
    source: str,
    target: str,
    out: str | pathlib.Path,
    data_path: str | None = None,
    seed: int = 0,
    shared_users: int | str | None = None,
    **overrides,
) -> tuple[methods.Trained, pathlib.Path]:
    """Trains ``method`` (``methods.run`` with ``seed`` and ``overrides``) and saves it as a run directory."""
    methods.get_method(method)  # unknown names fail before any work
    if pathlib.Path(out).joinpath(RUN_FILE).exists():
        raise RunError(f"{out} already holds a run; choose another --out or delete it")
    t0 = time.perf_counter()
    trained = methods.run(method, ds, source=source, target=target, seed=seed, **overrides)
    seconds = time.perf_counter() - t0
    path = save_run(
        out,
        trained,
        method=method,
        source=source,
        target=target,
        ds=ds,
        data_path=data_path,
        seed=seed,
        train_seconds=seconds,
        shared_users=shared_users,
    )
    return trained, path

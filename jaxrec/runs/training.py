"""Training a run directory: :func:`train_run` checks everything first, marks the run unfinished
(``training.json``), trains with every ``fit`` checkpointed into ``train_checkpoints/``
(:func:`jaxrec.train.checkpoint.checkpointing`) and saves it (:func:`save_run`, ``run.json`` last). An interrupted
run resumes (``resume=True``) to the parameters an uninterrupted run reaches. The directory's states and the
rules for writing into it are in :mod:`jaxrec.runs.layout`.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from jaxrec import data as _data
from jaxrec import methods
from jaxrec.methods import common
from jaxrec.runs import layout
from jaxrec.runs.layout import RunError
from jaxrec.runs.reading import FORMAT, fingerprint, jsonable, versions
from jaxrec.runs.scorers import encode_scorers, save_arrays
from jaxrec.train.checkpoint import checkpointing

__all__ = ["TRANSFER_FREE", "TrainingInterrupted", "check_trainable", "save_run", "train_run"]

#: Recipes that learn nothing across domains, so they need no user with train history in both.
TRANSFER_FREE = ("popularity", "target_only")
#: The settings ``training.json`` records and a resumed run must repeat.
_SETTINGS = ("method", "source", "target", "shared_users", "dataset", "config")


class TrainingInterrupted(KeyboardInterrupt):
    """An interrupt (Ctrl-C) while :func:`train_run` trained or saved; the run directory is unfinished and
    ``train_run(..., resume=True)`` continues it.

    Attributes:
      run_dir: the run directory.
      epoch: the epoch (from 1) the recipe's current ``fit`` was training, None outside one.
    """

    def __init__(self, run_dir: pathlib.Path, epoch: int | None):
        super().__init__(f"interrupted at epoch {epoch}" if epoch else "interrupted")
        self.run_dir, self.epoch = run_dir, epoch


def check_trainable(ds: _data.CrossDomainDataset, *, method: str, source: str, target: str, config=None) -> None:
    """Checks that ``method`` (with ``config``, if given) can learn ``source`` → ``target`` from ``ds``.

    Raises:
      DataError: an unknown domain (``source``, ``target`` or one of ``config.auxiliary``) or ``source ==
        target``; a target without train interactions; no user with train history in both domains (except for
        :data:`TRANSFER_FREE` recipes).
      MemoryLimitError: the recipe's estimated peak memory exceeds the limit
        (:func:`jaxrec.methods.memory.check_memory`; ``JAXREC_MEMORY_GB`` sets the limit).
    """
    common.check_pair(ds, source, target)
    for name in getattr(config, "auxiliary", ()):
        if name != "all":
            ds.domain(name)
    if ds.interactions(target, "train").size == 0:
        raise _data.DataError(f"target domain {target!r} has no train interactions")
    if method not in TRANSFER_FREE and ds.overlap("train")[tuple(d for d in ds.domains if d in (source, target))] == 0:
        raise _data.DataError(
            f"no user has train interactions in both {source!r} and {target!r}: method {method!r} learns its "
            f"transfer from such users (check which user ids are shared: --shared-users, jaxrec.link_test)"
        )
    config = methods.get_method(method).default_config if config is None else config
    methods.check_memory(method, ds, source=source, target=target, config=config)


def _settings(method, source, target, ds, data_path, shared_users, config, command) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "method": method,
        "source": source,
        "target": target,
        "data": None if data_path is None else str(pathlib.Path(data_path).absolute()),
        "shared_users": shared_users,
        "dataset": fingerprint(ds),
        "seed": int(config.seed),
        "config": json.loads(json.dumps(jsonable(config))),
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_same_settings(run_dir: pathlib.Path, settings: dict) -> None:
    recorded = json.loads((run_dir / layout.TRAINING_FILE).read_text())
    differ = [k for k in _SETTINGS if recorded.get(k) != settings[k] and k != "config"]
    old, new = recorded.get("config") or {}, settings["config"]
    differ += [f"config.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        how = f": `{recorded['command']} --resume`" if recorded.get("command") else ""
        raise RunError(
            f"--resume: the run in {run_dir} was started with other settings ({', '.join(differ)} differ); resume "
            f"it with the command that started it{how}, or pass --overwrite to start again"
        )


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
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    **overrides,
) -> tuple[methods.Trained, pathlib.Path]:
    """Trains ``method`` (its default config updated by ``seed`` and ``overrides``) and saves it as a run
    directory, checkpointing every training phase into ``out/train_checkpoints/``.

    Everything is checked before training: the options (``common.make_config``), ``out``
    (:func:`jaxrec.runs.layout.check_out`) and the data (:func:`check_trainable`).

    Args:
      resume: continue the unfinished run in ``out`` (same settings) from its last checkpoints.
      overwrite: replace the jaxrec run in ``out`` (only the entries jaxrec writes are deleted).
      command: the command line that started the run, recorded for the messages that say how to resume it.

    Returns:
      ``(trained, run_dir)``: the trained recipe and the run directory.

    Raises:
      RunError: ``out`` is not a place for this run (see ``check_out``), or ``resume`` with other settings.
      TrainingInterrupted: Ctrl-C while training or saving; the run stays unfinished and resumable.
    """
    recipe = methods.get_method(method)
    config = common.make_config(recipe.default_config, {"seed": seed, **overrides}, owner=f"method {method!r}")
    out = pathlib.Path(out)
    state = layout.check_out(out, resume=resume, overwrite=overwrite)
    check_trainable(ds, method=method, source=source, target=target, config=config)
    settings = _settings(method, source, target, ds, data_path, shared_users, config, command)
    if resume and state == "unfinished":
        _check_same_settings(out, settings)
    else:
        layout.write_text(out / layout.TRAINING_FILE, json.dumps(settings, indent=1))
        layout.clear_run(out)
    session = None
    try:
        t0 = time.perf_counter()
        with checkpointing(out / layout.TRAIN_CHECKPOINTS, resume=resume) as session:
            trained = recipe.train(ds, source=source, target=target, config=config)
        seconds = time.perf_counter() - t0
        path = save_run(
            out,
            trained,
            method=method,
            source=source,
            target=target,
            ds=ds,
            data_path=data_path,
            seed=config.seed,
            train_seconds=seconds,
            shared_users=shared_users,
        )
    except KeyboardInterrupt as e:
        raise TrainingInterrupted(out, session.epoch if session else None) from e
    return trained, path


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
    """Writes the Orbax ``checkpoint/`` of ``trained``'s scorers, ``history.jsonl`` and, last, ``run.json``.

    ``run_dir`` is new, empty or unfinished (what :func:`train_run` trains into); every entry is written under a
    temporary name and renamed into place, and ``run.json`` comes last, so an interrupted save leaves an unfinished
    run. ``data_path`` and ``shared_users`` record how the dataset was loaded (``load_dir(data_path,
    shared_users=...)``), so that ``jaxrec evaluate`` loads it the same way.

    Args:
      run_dir: the run directory.
      trained: the trained recipe (its scorers and history are saved).
      method: the recipe's name.
      source: the source domain.
      target: the target domain.
      ds: the dataset it was trained on (its fingerprint is recorded).
      data_path: the dataset directory, or ``None`` for in-memory data.
      seed: the training seed.
      train_seconds: the training wall time.
      shared_users: the ``shared_users`` argument the dataset was loaded with.

    Returns:
      ``run_dir`` as a ``pathlib.Path``.

    Raises:
      RunError: ``run_dir`` already holds a run or other files, or a scorer is not a ``jax.tree_util.Partial``
        over a function of :func:`jaxrec.runs.scorer_functions` (then nothing is written).
    """
    run_dir = pathlib.Path(run_dir)
    state = layout.run_state(run_dir)
    if state == "finished":
        raise RunError(f"{run_dir} already holds a run; choose another --out, or pass --overwrite to replace it")
    if state in ("file", "foreign"):
        layout.check_out(run_dir)  # raises, saying what is there
    structure, leaves = encode_scorers(trained.scorers)  # before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    layout.remove_leftovers(run_dir)
    checkpoint = run_dir / layout.CHECKPOINT_DIR
    layout.remove(checkpoint)  # left by a save that was interrupted before run.json was written
    with layout.replacing(checkpoint) as tmp:
        checksums = save_arrays(tmp, leaves)
    history = "".join(json.dumps(jsonable(record)) + "\n" for record in trained.history)
    layout.write_text(run_dir / layout.HISTORY_FILE, history)
    meta = {
        "format": FORMAT,
        "method": method,
        "source": source,
        "target": target,
        "data": None if data_path is None else str(pathlib.Path(data_path).absolute()),
        "shared_users": shared_users,
        "dataset": fingerprint(ds),
        "seed": int(seed),
        "config": jsonable(trained.config),
        "versions": versions(),
        "train_seconds": float(train_seconds),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scorers": structure,
        "n_arrays": len(leaves),
        "checksums": checksums,
    }
    layout.write_text(run_dir / layout.RUN_FILE, json.dumps(meta, indent=1))
    layout.remove_training(run_dir)
    return run_dir

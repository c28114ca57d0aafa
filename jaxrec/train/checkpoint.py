"""Checkpoints of a :func:`jaxrec.train.fit` run: an Orbax manager, save and restore with checksums, and
:func:`checkpointing`, which gives every ``fit`` inside it a checkpoint directory of its own.

A checkpoint at global step ``s`` holds the tree ``{"params", "opt_state", "step", "best_params"}`` (one copy of the
state, never a replicated one) and a JSON ``meta`` record (where the run stands in its epoch, its history, its best
evaluation, and the sha256 of every array of the tree, checked on restore). Saving is synchronous, so a checkpoint
on disk is complete: Orbax writes step ``s`` into ``s.orbax-checkpoint-tmp`` and renames it to ``s`` when it is
whole, so an interrupted save leaves a temporary directory that restoring ignores and the next manager removes.

Orbax is imported on first use: it adds about a second to ``import jaxrec`` and most programs never checkpoint.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from flax.training.train_state import TrainState

__all__ = [
    "CheckpointSession",
    "array_checksum",
    "checkpoint_manager",
    "checkpointing",
    "current_session",
    "restore_checkpoint",
    "save_checkpoint",
    "tree_checksums",
]


def checkpoint_manager(directory: str, *, max_to_keep: int):
    """An ``orbax.checkpoint.CheckpointManager`` on ``directory`` (created if absent), keeping ``max_to_keep``;
    temporary directories of an interrupted save are removed."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def array_checksum(x: Any) -> str:
    """sha256 (hex) of an array's dtype, shape and bytes (C order); of a scalar's value (Orbax restores a
    scalar such as the step into the type of its target: a Python int where an int32 array was saved)."""
    a = np.asarray(jax.device_get(x))
    if a.ndim == 0:
        return hashlib.sha256(repr(a.item()).encode()).hexdigest()
    a = np.ascontiguousarray(a)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()


def tree_checksums(tree: Any) -> dict[str, str]:
    """``{path: array_checksum(leaf)}`` for every leaf of ``tree`` (paths as ``jax.tree_util.keystr`` writes them)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): array_checksum(leaf) for path, leaf in leaves}


def save_checkpoint(manager, step: int, state: TrainState, best_params: Any, meta: dict) -> None:
    """Writes ``state`` (one copy), ``best_params`` and the JSON-able ``meta`` (plus ``"checksums"`` of the
    arrays) as checkpoint ``step``."""
    import orbax.checkpoint as ocp

    tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "best_params": best_params}
    meta = {**meta, "checksums": tree_checksums(tree)}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()


def restore_checkpoint(manager, state: TrainState, best_params: Any) -> tuple[TrainState, Any, dict] | None:
    """The latest checkpoint restored into the structure of ``state`` and ``best_params``; None when there is none.

    Returns:
      ``(state, best_params, meta)``, or None for an empty directory.

    Raises:
      ValueError: the checkpoint is corrupt (an array differs from the checksum recorded when it was saved) or
        does not fit the model (the step and Orbax's error quoted).
    """
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return None
    target = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "best_params": best_params}
    where = f"checkpoint {manager.directory}/{step}"
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
    except Exception as e:  # orbax raises many types for corrupt/incompatible trees
        raise ValueError(
            f"{where} cannot be restored into this model (corrupt or incompatible: {type(e).__name__}: {e})"
        ) from e
    tree, meta = restored["state"], restored["meta"]
    recorded = meta.get("checksums")
    if recorded is not None:  # written by every save; verified when present
        for path, digest in tree_checksums(tree).items():
            if recorded.get(path) != digest:
                raise ValueError(
                    f"{where} is corrupt: array {path} does not match the checksum recorded when it was saved"
                )
    state = state.replace(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"])
    return state, tree["best_params"], meta


# ----------------------------------------------------------------------------------------------------------------
# Checkpointing every fit of a block of code
# ----------------------------------------------------------------------------------------------------------------


class CheckpointSession:
    """Where the ``fit`` calls inside :func:`checkpointing` keep their checkpoints, and how far training got.

    Attributes:
      directory: the session's folder; the ``n``-th ``fit`` call (from 0) checkpoints into
        ``directory/fit<n>-<task name>``.
      resume: every ``fit`` continues from its latest checkpoint (one that finished returns at once).
      fits: ``fit`` calls so far.
      epoch: the epoch (from 1) the current ``fit`` is training; None outside a ``fit``.
      name: that ``fit``'s task name.
    """

    def __init__(self, directory: str | pathlib.Path, *, resume: bool):
        self.directory = pathlib.Path(directory)
        self.resume = resume
        self.fits = 0
        self.epoch: int | None = None
        self.name: str | None = None

    def next_directory(self, name: str) -> str:
        """The checkpoint directory of the next ``fit`` call, whose task is called ``name``."""
        slug = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:60]
        path = self.directory / f"fit{self.fits}-{slug}"
        self.fits, self.name, self.epoch = self.fits + 1, name, None
        return str(path)


_SESSION: contextvars.ContextVar[CheckpointSession | None] = contextvars.ContextVar("checkpointing", default=None)


@contextlib.contextmanager
def checkpointing(directory: str | pathlib.Path, *, resume: bool = False) -> Iterator[CheckpointSession]:
    """Checkpoints every :func:`jaxrec.train.fit` called inside the block (whose config has no ``checkpoint_dir``).

    A recipe may call ``fit`` several times (pretraining, then a mapping); each call gets the next directory of
    the session, so code that does not know about checkpoints (``methods.run``) becomes resumable: run the same
    code again under ``checkpointing(directory, resume=True)`` and every ``fit`` continues from where it stopped,
    to parameters bit-identical to an uninterrupted run.

    Example:
      >>> with checkpointing("runs/cmf/train_checkpoints", resume=True):  # doctest: +SKIP
      ...     trained = methods.run("cmf", ds, source="source", target="target")

    Yields:
      The :class:`CheckpointSession` (``session.epoch`` says where an interrupted run stopped).
    """
    session = CheckpointSession(directory, resume=resume)
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


def current_session() -> CheckpointSession | None:
    """The innermost active :func:`checkpointing` session, or None."""
    return _SESSION.get()

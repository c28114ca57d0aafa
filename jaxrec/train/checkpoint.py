"""Checkpoints of a :func:`jaxrec.train.fit` run: an Orbax manager, save and restore.

A checkpoint at global step ``s`` holds the tree ``{"params", "opt_state", "step", "best_params"}`` (one copy of the
state, never a replicated one) and a JSON ``meta`` record (where the run stands in its epoch, its history, its best
evaluation). Saving is synchronous, so a checkpoint on disk is complete.

Orbax is imported on first use: it adds about a second to ``import jaxrec`` and most programs never checkpoint.
"""

from __future__ import annotations

import pathlib
from typing import Any

from flax.training.train_state import TrainState


def checkpoint_manager(directory: str, *, max_to_keep: int):
    """An ``orbax.checkpoint.CheckpointManager`` on ``directory`` (created if absent), keeping ``max_to_keep``."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def save_checkpoint(manager, step: int, state: TrainState, best_params: Any, meta: dict) -> None:
    """Writes ``state`` (one copy), ``best_params`` and the JSON-able ``meta`` as checkpoint ``step``."""
    import orbax.checkpoint as ocp

    tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "best_params": best_params}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()


def restore_checkpoint(manager, state: TrainState, best_params: Any) -> tuple[TrainState, Any, dict] | None:
    """The latest checkpoint restored into the structure of ``state`` and ``best_params``; None when there is none.

    Returns:
      ``(state, best_params, meta)``, or None for an empty directory.

    Raises:
      ValueError: the checkpoint is corrupt or does not fit the model (the step and Orbax's error quoted).
    """
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return None
    target = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "best_params": best_params}
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
    except Exception as e:  # orbax raises many types for corrupt/incompatible trees
        raise ValueError(
            f"checkpoint {manager.directory}/{step} cannot be restored into this model "
            f"(corrupt or incompatible: {type(e).__name__}: {e})"
        ) from e
    tree, meta = restored["state"], restored["meta"]
    state = state.replace(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"])
    return state, tree["best_params"], meta

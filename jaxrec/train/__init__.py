"""Training: optimizers, the objective, one pure train step, data parallelism, checkpoints, ``fit``, model stacks.

The combined objective of every method is written once, in :meth:`Objective.loss`:

    L = Σ_d w_d · L_task(d) + λ(step) · D(h_source, h_target)

A method supplies a Flax module whose ``__call__(batch, *, deterministic, **model_kwargs)`` returns a dict of
outputs (scores, embeddings; never losses) and an :class:`Objective` that turns those outputs into per-domain task
losses and, optionally, the pair to align (``outputs["align"] = (hs, ht, hs_mask, ht_mask)``).

Modules, in import order (each imports only the ones above it):

* ``optim`` — ``OPTIMIZERS``, :class:`OptimizerConfig`, :func:`make_optimizer`
* ``objective`` — :class:`Objective`, :func:`alignment` (the one place the adversarial schedule is written),
  :func:`resolve_discrepancy`, :func:`alternating_weights`
* ``sparse`` — :func:`sparse_train_step`: row-sparse (lazy) updates of large embedding tables
* ``step`` — ``TrainState``, :func:`train_step`, :func:`make_train_step` (the one data-parallel site) and,
  next to it, :func:`placement` (where state and batches live for each ``parallel``)
* ``checkpoint`` — the Orbax manager, save and restore
* ``fitting`` — :class:`TrainConfig`, :class:`Task`, :func:`fit` (the driver), :func:`run_phases`
* ``stack`` — ``S`` models in one program: :func:`create_stacked_state`, :func:`make_stacked_step`, :func:`unstack`
"""

from jaxrec.train.fitting import FitResult, NonFiniteError, Task, TrainConfig, fit, run_phases
from jaxrec.train.objective import Objective, alignment, alternating_weights, resolve_discrepancy
from jaxrec.train.optim import OPTIMIZERS, OptimizerConfig, make_optimizer
from jaxrec.train.sparse import SPARSE_MIN_ROWS, sparse_train_step
from jaxrec.train.stack import (
    create_stacked_state,
    lam_as_reversal,
    lam_as_weight,
    make_stacked_step,
    stack_optimizer,
    unstack,
)
from jaxrec.train.step import (
    AXIS,
    MESH_AXIS,
    Placement,
    TrainState,
    copy_tree,
    create_train_state,
    make_mesh,
    make_train_step,
    placement,
    put_batch,
    put_replicated,
    put_row_sharded,
    replicate,
    row_shardings,
    train_step,
    unreplicate,
)

__all__ = [
    "AXIS",
    "MESH_AXIS",
    "OPTIMIZERS",
    "FitResult",
    "NonFiniteError",
    "Objective",
    "OptimizerConfig",
    "SPARSE_MIN_ROWS",
    "Placement",
    "Task",
    "TrainConfig",
    "TrainState",
    "alignment",
    "alternating_weights",
    "copy_tree",
    "create_stacked_state",
    "create_train_state",
    "fit",
    "lam_as_reversal",
    "lam_as_weight",
    "make_mesh",
    "make_optimizer",
    "make_stacked_step",
    "make_train_step",
    "placement",
    "put_batch",
    "put_replicated",
    "put_row_sharded",
    "replicate",
    "resolve_discrepancy",
    "row_shardings",
    "run_phases",
    "sparse_train_step",
    "stack_optimizer",
    "train_step",
    "unreplicate",
    "unstack",
]

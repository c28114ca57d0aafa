"""Vectorized hyper-parameter sweeps: ``S`` models trained in ONE compiled program by ``jax.vmap``.

* :mod:`jaxrec.train.stack` — the recipe-agnostic machinery, re-exported here under the sweep's names: stacked
  train states (:func:`create_sweep_state`, with the learning rate in the optimizer state,
  :func:`sweep_optimizer`), the vmapped :func:`jaxrec.train.train_step` (:func:`make_sweep_step`, λ a traced
  ``[S]`` argument) and :func:`unstack`.
* :mod:`jaxrec.sweep.driver` — the shared-embedding recipes swept: :func:`sweep` trains ``S`` configurations of
  λ, learning rate and seed of ``cmf`` / ``mmd`` / ``coral`` / ``dann`` on one shared batch stream and evaluates
  them on the target's valid cold users; :func:`sweep_table` prints the result.
* :mod:`jaxrec.sweep.search` — :func:`tune`: a recipe's grid (:data:`TUNE_GRIDS`) searched on the target's valid
  cold users within a time budget (vmapped for the shared-embedding family, sequential for the others), the
  chosen config written as JSON for ``jaxrec train --config FILE``.

Axis conventions: ``S`` = configurations (the leading axis of every stacked value), ``B`` = positives per domain
per step, ``n`` = negatives per positive, ``D`` = embedding width, ``E`` = epochs. A batch has no config axis.

A sweep equals a Python loop over the configurations up to floating-point reassociation (see
``tests/test_sweep.py`` for the measured agreement and its tolerance). Where it pays (``bench/sweep.py``, 8
values of λ, the ``mmd`` recipe): a sweep compiles ONE program where a loop over ``methods.run`` compiles one per
configuration (λ is a Python float in each ``Objective``), and it issues one dispatch per step instead of S. On
an accelerator the S small models also fill a device that one of them leaves idle. On a CPU the step is
memory-bound and there is no idle hardware: with small models the sweep is faster (dispatch-bound), but at the
default sizes (dim 64, 1024 positives per domain) the vmapped step is *slower* per model-step than a loop (S
stacked embedding tables and their batched gathers/scatter-adds overflow the caches), and the sweep wins only
through its single compilation. Numbers in ``bench/RESULTS.md``.

Example:
    >>> from jaxrec import data
    >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(60, 40))[0], "source", "target")
    >>> cfg = sweep_config("mmd", dim=8, user_tower=(8,), batch_size=256, progress=False)
    >>> result = sweep(ds, source="source", target="target", config=cfg, lam=[0.1, 1.0, 3.0], epochs=1)
    >>> result.history["loss"].shape, result.valid["NDCG@10"].shape
    ((1, 3), (3,))
    >>> print(sweep_table(result))  # doctest: +SKIP
"""

from jaxrec.sweep import driver, search
from jaxrec.sweep.driver import SWEEP_METHODS, SweepResult, sweep, sweep_config, sweep_table
from jaxrec.sweep.search import TUNE_GRIDS, TuneResult, default_grid, tune, write_choice
from jaxrec.train.stack import create_stacked_state as create_sweep_state
from jaxrec.train.stack import make_stacked_step as make_sweep_step
from jaxrec.train.stack import stack_optimizer as sweep_optimizer
from jaxrec.train.stack import unstack

__all__ = [
    "SWEEP_METHODS",
    "TUNE_GRIDS",
    "SweepResult",
    "TuneResult",
    "create_sweep_state",
    "default_grid",
    "driver",
    "make_sweep_step",
    "search",
    "sweep",
    "sweep_config",
    "sweep_optimizer",
    "sweep_table",
    "tune",
    "unstack",
    "write_choice",
]

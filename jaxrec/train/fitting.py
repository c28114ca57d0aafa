"""``fit``, the straight-line training driver; its configuration (``TrainConfig``, ``Task``); ``run_phases``.

``fit`` reads as its commented sections — data, model and state, the step and its placement, resume, the loop,
the result. The decisions it makes along the way are small pure helpers: the best evaluation and early stopping
(``_judge``), a logging window's summary (``_mean``), the finiteness check that raises :class:`NonFiniteError`,
the progress-bar summary. The one object with state is the run's journal: the history (mirrored to the ``jsonl``
file), the step metrics still on the device, and the checkpoints; it is a context manager, so its files are
closed on every path out of ``fit``, an exception included. Where state and batches live is decided once, by
:func:`jaxrec.train.placement`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxrec.train.checkpoint import checkpoint_manager, current_session, restore_checkpoint, save_checkpoint
from jaxrec.train.objective import Objective
from jaxrec.train.optim import OptimizerConfig, make_optimizer
from jaxrec.train.sparse import SPARSE_MIN_ROWS
from jaxrec.train.step import Placement, TrainState, copy_tree, create_train_state, make_train_step, placement


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`fit`.

    Attributes:
      epochs: passes over ``task.batches``.
      seed: seeds parameters, dropout and every epoch's data order (``default_rng([seed, epoch])``).
      optimizer: an :class:`OptimizerConfig`.
      parallel: ``"none"``, ``"pmap"`` or ``"mesh"`` (see :func:`make_train_step`).
      shard_rows: with ``parallel="mesh"``, shard the embedding tables of the state on their rows over the mesh
        (:func:`jaxrec.train.row_shardings`; their rows must divide by the device count) instead of replicating
        them.
      sparse_min_rows: embedding tables of at least this many rows are updated row by row, at the rows each batch
        looks up (:func:`jaxrec.train.sparse_train_step`: Adam becomes lazy Adam on them), so a step costs what
        its batch touches rather than the table's size; None: every parameter densely. Not used with ``"pmap"``,
        whose steps are always dense.
      eval_every: evaluate every this many steps (None: at the end of every epoch).
      early_stopping_metric: name of the ``task.evaluate`` metric to maximise; the best params are kept.
      patience: stop after this many evaluations without improvement (None: never stop early).
      checkpoint_dir: Orbax checkpoints here (None: no checkpoints, unless ``fit`` runs inside
        :func:`jaxrec.train.checkpoint.checkpointing`, which then supplies the directory and ``resume``).
      checkpoint_every: save every this many steps (None: at the end of every epoch); the final state is always
        saved.
      max_to_keep: checkpoints kept.
      resume: continue from the latest checkpoint in ``checkpoint_dir`` (a fresh start when there is none; a run
        that stopped early returns its result at once).
      max_steps: stop after this global step (an interruption you can resume from; None: no limit).
      log_every: fetch metrics to the host (and check them) every this many steps.
      nan_policy: ``"raise"`` (a non-finite loss or gradient norm raises, naming the step and the part) or
        ``"skip"`` (``optax.apply_if_finite`` skips such updates; counted in the history).
      jsonl: append every logged record to this JSON-lines file.
      progress: show tqdm progress bars.
    """

    epochs: int = 10
    seed: int = 0
    optimizer: OptimizerConfig = OptimizerConfig()
    parallel: str = "none"
    shard_rows: bool = False
    sparse_min_rows: int | None = SPARSE_MIN_ROWS
    eval_every: int | None = None
    early_stopping_metric: str | None = None
    patience: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    max_to_keep: int = 2
    resume: bool = False
    max_steps: int | None = None
    log_every: int = 20
    nan_policy: str = "raise"
    jsonl: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be >= 1")
        if self.parallel not in ("none", "pmap", "mesh"):
            raise ValueError(f"parallel={self.parallel!r}; expected 'none', 'pmap' or 'mesh'")
        if self.shard_rows and self.parallel != "mesh":
            raise ValueError(f"shard_rows=True needs parallel='mesh', got parallel={self.parallel!r}")
        if self.nan_policy not in ("raise", "skip"):
            raise ValueError(f"nan_policy={self.nan_policy!r}; expected 'raise' or 'skip'")
        for name in ("eval_every", "checkpoint_every", "patience", "max_steps", "sparse_min_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1 or None")
        if self.log_every < 1:
            raise ValueError(f"log_every={self.log_every} must be >= 1")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume=True needs checkpoint_dir")
        if self.patience is not None and self.early_stopping_metric is None:
            raise ValueError("patience needs early_stopping_metric")


@dataclasses.dataclass(frozen=True)
class Task:
    """What :func:`fit` trains.

    Attributes:
      model: Flax module, ``model(batch, *, deterministic, **model_kwargs) -> outputs dict``.
      objective: an :class:`Objective`.
      batches: ``rng -> iterable of batches`` for one epoch (host numpy, fixed shapes, global batch size);
        called with ``np.random.default_rng([seed, epoch])`` so the data order is reproducible.
      evaluate: optional ``params -> {metric: float}`` (e.g. validation NDCG), called every ``eval_every``.
      init_params: start from these parameters (fine-tuning), or a fresh init when None.
      name: shown in progress bars and logs.
    """

    model: nn.Module
    objective: Objective
    batches: Callable[[np.random.Generator], Iterable[Any]]
    evaluate: Callable[[Any], Mapping[str, float]] | None = None
    init_params: Any = None
    name: str = "train"


class FitResult(NamedTuple):
    params: Any  # final parameters (host-side copy, unreplicated)
    best_params: Any  # parameters at the best evaluation (== params without evaluation)
    best: dict  # the best evaluation record ({} without evaluation)
    history: list  # logged records: {"step", "epoch", metrics...} and evaluations {"step", "eval/...": ...}
    state: TrainState  # the final train state (unreplicated)


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient norm; the message names the step and the non-finite parts."""


# ----------------------------------------------------------------------------------------------------------------
# Helpers of fit
# ----------------------------------------------------------------------------------------------------------------


class _Best(NamedTuple):
    record: dict  # the best evaluation record ({} before any evaluation)
    params: Any  # its parameters (before any evaluation: the initial ones, as checkpointed)
    bad_evals: int  # evaluations since the best one


def _judge(best: _Best, record: dict, params: Any, config: TrainConfig) -> tuple[_Best, bool]:
    """The best evaluation once ``record`` is known, and whether early stopping triggers. Pure.

    Without ``early_stopping_metric`` the latest evaluation is the best. Raises KeyError when the metric is not
    among the evaluation's.
    """
    metric = config.early_stopping_metric
    if metric is None:
        return best._replace(record=record, params=params), False
    key = f"eval/{metric}"
    if key not in record:
        names = sorted(k[5:] for k in record if k.startswith("eval/"))
        raise KeyError(f"early_stopping_metric={metric!r} is not among the evaluation metrics {names}")
    if not best.record or record[key] > best.record[key]:
        best = _Best(record, params, 0)
    else:
        best = best._replace(bad_evals=best.bad_evals + 1)
    return best, config.patience is not None and best.bad_evals >= config.patience


def _check_finite(records: list[dict], policy: str) -> None:
    """Marks non-finite records ``skipped`` (policy ``"skip"``) or raises NonFiniteError naming the step."""
    for rec in records:
        if not (math.isfinite(rec["loss"]) and math.isfinite(rec["grad_norm"])):
            if policy == "skip":
                rec["skipped"] = 1
                continue
            bad = sorted(k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v))
            raise NonFiniteError(
                f"non-finite training metrics at step {rec['step']}: {bad} "
                f"(loss={rec['loss']}, grad_norm={rec['grad_norm']}); no checkpoint was written "
                f"after it. Lower the learning rate, clip gradients (OptimizerConfig.clip_norm) or "
                f"use nan_policy='skip'."
            )


def _mean(records: list[dict]) -> dict[str, float]:
    """The mean of each metric over ``records``, and ``skipped``: how many of them were skipped. Pure."""
    names = [k for k in records[-1] if k not in ("step", "epoch", "skipped")]
    mean = {k: float(np.mean([r[k] for r in records])) for k in names}
    mean["skipped"] = sum(r.get("skipped", 0) for r in records)
    return mean


def _mask_count(batch) -> int:
    """Valid examples in a batch: the sum of every ``"mask"`` in its (nested) dicts."""
    if isinstance(batch, Mapping):
        if "mask" in batch:
            return int(np.asarray(batch["mask"]).sum())
        return sum(_mask_count(v) for v in batch.values())
    return 0


def _postfix(mean: dict, rate: float) -> dict[str, str]:
    """The progress bar's summary of a logged mean: loss, each task loss, D, examples per second. Pure."""
    parts = {k.split("/", 1)[-1]: f"{v:.4f}" for k, v in mean.items() if k.startswith("task/")}
    if mean.get("discrepancy"):
        parts["D"] = f"{mean['discrepancy']:.4g}"
    return {"loss": f"{mean['loss']:.4f}", **parts, "ex_s": f"{rate:,.0f}"}


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``config.optimizer``, skipping non-finite updates when it says so or when ``nan_policy="skip"``."""
    skip = config.optimizer.skip_nonfinite or config.nan_policy == "skip"
    return make_optimizer(dataclasses.replace(config.optimizer, skip_nonfinite=skip))


class _Journal:
    """What a run records and reads back: its history, the step metrics still on the device, its checkpoints.

    The history is mirrored to ``config.jsonl``. A context manager: the file and the checkpoint manager are closed
    on every path out of :func:`fit`, an exception included.
    """

    def __init__(self, config: TrainConfig, place: Placement):
        self.config = config
        self.place = place  # takes the placed state back to one copy for checkpoints and evaluation
        self.history: list[dict] = []
        self.pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet fetched
        self.saved_step = -1
        self._files = contextlib.ExitStack()
        self.manager = None
        self.file = None

    def __enter__(self) -> _Journal:
        with self._files as files:
            if self.config.checkpoint_dir:
                manager = checkpoint_manager(self.config.checkpoint_dir, max_to_keep=self.config.max_to_keep)
                self.manager = files.enter_context(contextlib.closing(manager))
            if self.config.jsonl:
                self.file = files.enter_context(open(self.config.jsonl, "a"))
            self._files = files.pop_all()  # opened: closed by __exit__ from now on
        return self

    def __exit__(self, *exc) -> None:
        self._files.close()

    def resume(self, state: TrainState) -> tuple[TrainState, _Best, tuple[int, int], bool]:
        """The starting state, best evaluation, ``(epoch, step in epoch)`` and whether early stopping had ended the
        run: fresh, or the latest checkpoint. On resume the ``jsonl`` file is rewritten to the checkpoint's history
        (empty without a checkpoint)."""
        best = _Best({}, copy_tree(state.params), 0)
        if not self.config.resume:
            return state, best, (0, 0), False
        restored = restore_checkpoint(self.manager, state, best.params)
        position, halted = (0, 0), False
        if restored is not None:
            state, best_params, meta = restored
            self.history, self.saved_step = meta["history"], int(np.asarray(state.step))
            best = _Best(meta["best"], best_params, meta["bad_evals"])
            position, halted = (meta["epoch"], meta["step_in_epoch"]), bool(meta.get("halted", False))
        if self.file:  # the log restarts from the checkpoint's history
            self.file.seek(0)
            self.file.truncate()
            self.file.writelines(json.dumps(record) + "\n" for record in self.history)
            self.file.flush()
        return state, best, position, halted

    def record(self, record: dict) -> None:
        self.history.append(record)
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))

    def flush(self, epoch: int) -> dict | None:
        """Fetches the pending metrics, checks them, logs their mean (labelled ``epoch``) and returns it."""
        if not self.pending:
            return None
        fetched = jax.device_get([m for _, m in self.pending])
        records = []
        for (step, _), m in zip(self.pending, fetched):
            m = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()}
            records.append({"step": step, "epoch": epoch, **m})
        self.pending.clear()
        _check_finite(records, self.config.nan_policy)
        mean = _mean(records)
        self.record({"step": records[-1]["step"], "epoch": epoch, **mean})
        return mean

    def checkpoint(
        self, step: int, epoch: int, position: tuple[int, int], state: TrainState, best: _Best, halted: bool
    ) -> None:
        """Saves checkpoint ``step`` of the placed ``state``, once, and never past an unchecked step.

        ``epoch`` labels the metrics still pending; ``position`` is ``(epoch, step in epoch)``, where a run resumed
        from this checkpoint starts; ``halted``: early stopping ended the run (a resumed run returns at once).
        """
        if self.manager is None or step == self.saved_step:
            return
        self.flush(epoch)
        state = self.place.take_back(state)
        meta = {
            "epoch": position[0],
            "step_in_epoch": position[1],
            "history": self.history,
            "best": best.record,
            "bad_evals": best.bad_evals,
            "halted": halted,
        }
        save_checkpoint(self.manager, step, state, best.params, meta)
        self.saved_step = step

    def evaluate(self, task: Task, best: _Best, params: Any, step: int, epoch: int) -> tuple[_Best, bool]:
        """Evaluates one copy of the placed ``params`` (if the task can) and logs it; the new best, whether to stop."""
        if task.evaluate is None:
            return best, False
        params = copy_tree(self.place.take_back(params))
        record = {"step": step, "epoch": epoch, **{f"eval/{k}": float(v) for k, v in task.evaluate(params).items()}}
        self.record(record)
        return _judge(best, record, params, self.config)


# ----------------------------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------------------------


def fit(config: TrainConfig, task: Task) -> FitResult:
    """Trains ``task`` as configured: progress bars, periodic evaluation, early stopping, checkpoints, resume.

    Deterministic: the same config, task and seed give identical parameters and metrics on the same hardware and
    device count (parameters from ``seed``, data order from ``default_rng([seed, epoch])``, dropout from
    ``fold_in(key(seed), step)``); a run resumed from a checkpoint is bit-identical to an uninterrupted one. A
    checkpoint always follows the evaluation of its step, so it records the best evaluation so far. Inside
    :func:`jaxrec.train.checkpoint.checkpointing`, a config without ``checkpoint_dir`` takes the session's next
    directory and its ``resume``.

    Args:
      config: how to train (epochs, evaluation, early stopping, checkpoints, parallelism).
      task: what to train (model, objective, optimizer, batches, evaluation).

    Returns:
      A :class:`FitResult`: the final and the best parameters, the best evaluation, the logged history and
      the final state.

    Raises:
      NonFiniteError: a non-finite loss or gradient norm under ``nan_policy="raise"`` (no checkpoint is written
        after that step; the log file is closed).
      ValueError: an epoch without batches, or a checkpoint that cannot be restored.
      KeyError: ``early_stopping_metric`` is not among the evaluation metrics.
    """
    session = current_session()
    if session is not None and config.checkpoint_dir is None:
        config = dataclasses.replace(config, checkpoint_dir=session.next_directory(task.name), resume=session.resume)

    # -- data: the first batch fixes the shapes (the step compiles once) --
    first = next(iter(task.batches(np.random.default_rng([config.seed, 0]))))

    # -- model and state --
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(init_key, task.model, first, _optimizer(config), params=task.init_params)

    # -- the step, and where state and batches live --
    place = placement(config.parallel, shard_rows=config.shard_rows)
    sharding = None if place.state_sharding is None else place.state_sharding(state)
    step_fn = make_train_step(
        task.objective,
        parallel=config.parallel,
        mesh=place.mesh,
        state_sharding=sharding,
        sparse_min_rows=None if config.parallel == "pmap" else config.sparse_min_rows,
    )

    with _Journal(config, place) as journal:
        # -- resume, then place the state --
        state, best, (start_epoch, skip), halted = journal.resume(state)
        state = place.put_state(state)
        step = int(np.asarray(place.take_back(state.step)))
        stop = halted or (config.max_steps is not None and step >= config.max_steps)
        position = (start_epoch, skip)

        # -- the loop: epochs of fixed-shape batches; resume skips the batches already trained on. At each step:
        # log, evaluate, then checkpoint (so a checkpoint holds its step's evaluation) --
        for epoch in range(start_epoch, config.epochs):
            if stop:
                break
            if session is not None:
                session.epoch = epoch + 1
            batches = list(task.batches(np.random.default_rng([config.seed, epoch])))
            if not batches:
                raise ValueError(f"task {task.name!r}: batches() yielded no batch for epoch {epoch}")
            start, skip = skip, 0
            examples, t0 = 0, time.perf_counter()
            desc = f"{task.name} epoch {epoch + 1}/{config.epochs}"
            bar = tqdm(
                total=len(batches),
                initial=start,
                desc=desc,
                disable=not config.progress,
                leave=False,
                dynamic_ncols=True,
            )
            with bar:
                for i in range(start, len(batches)):
                    state, metrics = step_fn(state, place.put_batch(batches[i]), step_key)
                    step, examples = step + 1, examples + _mask_count(batches[i])
                    epoch_done = i + 1 == len(batches)
                    position = (epoch + 1, 0) if epoch_done else (epoch, i + 1)
                    journal.add(step, metrics)
                    bar.update(1)
                    if step % config.log_every == 0:
                        rate = examples / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(_postfix(journal.flush(epoch), rate), refresh=False)
                    if (step % config.eval_every == 0) if config.eval_every else epoch_done:
                        journal.flush(epoch)
                        best, halted = journal.evaluate(task, best, state.params, step, epoch)
                    stop = halted or (config.max_steps is not None and step >= config.max_steps)
                    if stop or ((step % config.checkpoint_every == 0) if config.checkpoint_every else epoch_done):
                        journal.checkpoint(step, epoch, position, state, best, halted)
                    if stop:
                        break
            journal.flush(epoch)
        journal.checkpoint(step, position[0], position, state, best, halted)  # the final state, once
    if session is not None:
        session.epoch = None  # between fits

    # -- the result: one host copy of the final parameters --
    final = place.take_back(state)
    params = copy_tree(final.params)
    return FitResult(params, best.params if best.record else params, best.record, journal.history, final)


def run_phases(phases: Iterable[tuple[TrainConfig, Task]], params: Any = None) -> list[FitResult]:
    """Runs training phases in order (e.g. pretrain on the source, then fine-tune on the target).

    Each phase is ``(config, task)`` with its own optimizer and objective. A task whose ``init_params`` is a
    callable receives the previous phase's best parameters and returns its starting parameters (so a phase can
    take a sub-tree, or map it onto a different model); a task with ``init_params=None`` starts from the previous
    phase's best parameters as they are (so its model must have the same parameter structure; use a callable
    otherwise), or from a fresh init in the first phase when ``params`` is None; a task with other
    ``init_params`` starts from those.

    Args:
      phases: ``(config, task)`` pairs, trained in order.
      params: the parameters before the first phase (None: the first phase starts as its task says).

    Returns:
      One :class:`FitResult` per phase.
    """
    results = []
    for config, task in phases:
        init = task.init_params
        if callable(init):
            init = init(params)
        elif init is None and params is not None:
            init = params
        result = fit(config, dataclasses.replace(task, init_params=init))
        results.append(result)
        params = result.best_params
    return results

"""Training: Optax optimizers, Flax TrainState, one pure train step, data parallelism, checkpoints, ``fit``.

The combined objective of every method is written once, in :func:`train_step`'s ``loss_fn``:

    L = Σ_d w_d · L_task(d) + λ(step) · D(h_source, h_target)

A method supplies a Flax module whose ``__call__(batch, *, deterministic, **model_kwargs)`` returns a dict of
outputs (scores, embeddings; never losses) and an :class:`Objective` that turns those outputs into per-domain task
losses and, optionally, the pair of representations to align (``outputs["align"] = (hs, ht, hs_mask, ht_mask)``).

Data parallelism lives in exactly one function, :func:`make_train_step`:

* ``parallel="pmap"``: ``jax.pmap`` over local devices; state replicated, batch ``[devices, B/devices, ...]``,
  gradients and metrics averaged with ``lax.pmean`` over the ``"batch"`` axis. Each device computes its loss on
  its shard, so a discrepancy such as MMD is the mean of per-shard estimators (as batch statistics are per device
  in BatchNorm); task losses averaged per shard equal the global mean when shards are equally filled.
* ``parallel="mesh"``: ``jax.jit`` with ``NamedSharding`` over a 1-D ``Mesh`` named ``"data"``: the batch is
  sharded on its leading axis, the state replicated; XLA inserts the all-reduce and the loss is the *global*
  batch loss (identical to one device). This is the path JAX recommends and the one that scales to several hosts:
  call ``jax.distributed.initialize()`` on every host first; the mesh then spans all hosts' devices and each host
  feeds its own slice of the global batch (see :func:`put_batch`).
* ``parallel="none"``: plain ``jax.jit``.

The state buffers are donated to the step, so hold on to ``state.params`` only through :func:`copy_tree`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrec import losses

AXIS = "batch"  # pmap axis name
MESH_AXIS = "data"  # mesh axis name

# ----------------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------------

OPTIMIZERS: Mapping[str, Callable[..., optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adagrad": optax.adagrad,
    "sgd": optax.sgd,
    "rmsprop": optax.rmsprop,
    "lamb": optax.lamb,
    "lion": optax.lion,
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An Optax optimizer by name, with an optional warm-up + cosine schedule and gradient clipping.

    Attributes:
      name: one of :data:`OPTIMIZERS`.
      learning_rate: peak learning rate.
      weight_decay: decoupled weight decay (``adamw``, ``lamb``, ``lion`` only).
      clip_norm: clip the global gradient norm to this value first (None: no clipping).
      warmup_steps: linear warm-up from 0 (0: none).
      decay_steps: cosine decay to 0 over this many steps after warm-up (None: constant).
      skip_nonfinite: wrap in ``optax.apply_if_finite`` so a step with a non-finite gradient is skipped and
        counted instead of raising (see ``TrainConfig.nan_policy``).
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = None
    warmup_steps: int = 0
    decay_steps: int | None = None
    skip_nonfinite: bool = False

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid names: {sorted(OPTIMIZERS)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")
        if self.weight_decay and self.name not in ("adamw", "lamb", "lion"):
            raise ValueError(
                f"weight_decay={self.weight_decay} needs a decoupled-decay optimizer (adamw, lamb, lion), "
                f"got {self.name!r}"
            )
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm={self.clip_norm} must be > 0 or None")
        if self.warmup_steps < 0 or (self.decay_steps is not None and self.decay_steps < 1):
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0 and decay_steps={self.decay_steps} >= 1")


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The Optax transformation described by ``config``."""
    lr: Any = config.learning_rate
    if config.warmup_steps or config.decay_steps:
        lr = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=config.learning_rate,
            warmup_steps=config.warmup_steps,
            decay_steps=config.warmup_steps + (config.decay_steps or 10**12),
        )
    kwargs = {"weight_decay": config.weight_decay} if config.name in ("adamw", "lamb", "lion") else {}
    tx = OPTIMIZERS[config.name](lr, **kwargs)
    if config.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    if config.skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=10)
    return tx


# ----------------------------------------------------------------------------------------------------------------
# State and objective
# ----------------------------------------------------------------------------------------------------------------

TrainState = train_state.TrainState


def create_train_state(
    rng: jax.Array,
    model: nn.Module,
    sample_batch: Any,
    optimizer: optax.GradientTransformation | OptimizerConfig,
    *,
    params: Any = None,
) -> TrainState:
    """Initializes ``model`` on ``sample_batch`` (or takes ``params``) and pairs it with ``optimizer``.

    Args:
      rng: a PRNG key.
      model: a Flax module called as ``model(batch, deterministic=...)``.
      sample_batch: a batch of the shapes training will use (values do not matter).
      optimizer: an Optax transformation or an :class:`OptimizerConfig`.
      params: start from these parameters instead of a fresh init (transfer / fine-tuning).
    """
    if isinstance(optimizer, OptimizerConfig):
        optimizer = make_optimizer(optimizer)
    if params is None:
        params_rng, dropout_rng = jax.random.split(rng)
        variables = jax.jit(functools.partial(model.init, deterministic=True))(
            {"params": params_rng, "dropout": dropout_rng}, sample_batch
        )
        params = variables["params"]
    else:
        params = copy_tree(params)  # the step donates the state's buffers; never the caller's
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def _adversarial(hs, ht, *, hs_mask=None, ht_mask=None):
    return losses.domain_adversarial_loss(hs, ht, source_mask=hs_mask, target_mask=ht_mask)


def resolve_discrepancy(name: str | Callable | None) -> Callable | None:
    """A discrepancy by name (``losses.DISCREPANCIES`` plus ``"adversarial"``), a callable, or None."""
    if name is None or callable(name):
        return name
    if name == "adversarial":
        return _adversarial
    if name not in losses.DISCREPANCIES:
        raise ValueError(f"unknown discrepancy {name!r}; valid names: {sorted(losses.DISCREPANCIES) + ['adversarial']}")
    return losses.DISCREPANCIES[name]


@dataclasses.dataclass(frozen=True)
class Objective:
    """How the combined loss is computed from a model's outputs. Static: fixed when the step is built.

    Attributes:
      task_loss: ``(outputs, batch) -> {name: scalar}``, the per-domain task losses (already reduced with masks,
        e.g. ``losses.mean_where(losses.bpr(...), where=mask)``); regularizers may be extra entries.
      discrepancy: a name (``"mean_l2"``, ``"linear_mmd"``, ``"mmd"``, ``"coral"``, ``"sliced_wasserstein"``,
        ``"adversarial"``), a callable ``D(hs, ht, *, hs_mask, ht_mask)``, or None. Applied to
        ``outputs["align"] = (hs, ht, hs_mask, ht_mask)``.
      lam: λ, a float or a schedule ``step -> λ`` (e.g. ``losses.dann_lambda_schedule``).
      weights: per-task weights ``{name: w}`` or a schedule ``step -> {name: w}`` (alternating training, see
        :func:`alternating_weights`); None for all 1.
      model_kwargs: optional ``step -> dict`` of extra keyword inputs to the model (e.g. a gradient-reversal
        ``grl_alpha`` that follows a schedule) — explicit inputs, never flags mutated on the model.
    """

    task_loss: Callable[[Mapping[str, Any], Any], Mapping[str, jax.Array]]
    discrepancy: str | Callable | None = None
    lam: float | Callable[[jax.Array], jax.Array] = 0.0
    weights: Mapping[str, float] | Callable[[jax.Array], Mapping[str, jax.Array]] | None = None
    model_kwargs: Callable[[jax.Array], Mapping[str, Any]] | None = None

    def __post_init__(self):
        resolve_discrepancy(self.discrepancy)  # raises on unknown names now, not at trace time
        if not callable(self.lam) and self.lam < 0:
            raise ValueError(f"lam={self.lam} must be >= 0")


def alternating_weights(names: tuple[str, ...]) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """Weights for alternating training: step ``s`` trains only task ``names[s % len(names)]`` (shapes static)."""

    def weights(step):
        turn = step % len(names)
        return {name: (turn == k).astype(jnp.float32) for k, name in enumerate(names)}

    return weights


def _at(value, step):
    return value(step) if callable(value) else value


# ----------------------------------------------------------------------------------------------------------------
# The train step (pure) and the one data-parallel site
# ----------------------------------------------------------------------------------------------------------------


def train_step(
    state: TrainState, batch: Any, rng: jax.Array, *, objective: Objective, axis_name: str | None = None
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on ``batch``; returns the new state and scalar metrics (loss, its parts, grad norm).

    Dropout randomness is ``fold_in(rng, step)`` and, under ``pmap``, also folded with the device index.
    """
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    discrepancy = resolve_discrepancy(objective.discrepancy)
    extra = dict(objective.model_kwargs(state.step)) if objective.model_kwargs is not None else {}

    def loss_fn(params):
        outputs = state.apply_fn({"params": params}, batch, deterministic=False, rngs={"dropout": rng}, **extra)
        tasks = objective.task_loss(outputs, batch)
        disc = None
        if discrepancy is not None:
            hs, ht, hs_mask, ht_mask = outputs["align"]
            disc = discrepancy(hs, ht, hs_mask=hs_mask, ht_mask=ht_mask)
        return losses.combined_loss(
            tasks, disc, lam=_at(objective.lam, state.step), weights=_at(objective.weights, state.step)
        )

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        parts = jax.lax.pmean(parts, axis_name)
        loss = jax.lax.pmean(loss, axis_name)
    metrics = dict(parts, loss=loss, grad_norm=optax.tree.norm(grads))
    return state.apply_gradients(grads=grads), metrics


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over ``devices`` (default: all devices of all hosts)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (MESH_AXIS,))


def make_train_step(
    objective: Objective, *, parallel: str = "none", mesh: Mesh | None = None, donate: bool = True
) -> Callable:
    """The compiled step ``(state, batch, rng) -> (state, metrics)`` for ``parallel`` in {none, pmap, mesh}.

    This is the only place where the data-parallel strategy is chosen (see the module docstring). With
    ``"pmap"`` the state must be :func:`replicate`-d and the batch :func:`jaxrec.shard`-ed; ``rng`` is one key
    shared by all devices. With ``"mesh"`` put state and batch with :func:`put_replicated` / :func:`put_batch`.
    """
    donate_argnums = (0,) if donate else ()
    if parallel == "none":
        return jax.jit(functools.partial(train_step, objective=objective), donate_argnums=donate_argnums)
    if parallel == "pmap":
        return jax.pmap(
            functools.partial(train_step, objective=objective, axis_name=AXIS),
            axis_name=AXIS,
            in_axes=(0, 0, None),
            donate_argnums=donate_argnums,
        )
    if parallel == "mesh":
        mesh = make_mesh() if mesh is None else mesh
        replicated = NamedSharding(mesh, PartitionSpec())
        sharded = NamedSharding(mesh, PartitionSpec(MESH_AXIS))
        return jax.jit(
            functools.partial(train_step, objective=objective),
            in_shardings=(replicated, sharded, replicated),
            out_shardings=(replicated, replicated),
            donate_argnums=donate_argnums,
        )
    raise ValueError(f"parallel={parallel!r}; expected 'none', 'pmap' or 'mesh'")


def replicate(tree: Any, devices=None) -> Any:
    """Copies ``tree`` onto every local device (leading axis = device), for ``pmap``."""
    devices = jax.local_devices() if devices is None else devices
    sharding = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(AXIS))
    return jax.tree.map(lambda x: jax.device_put(jnp.broadcast_to(x, (len(devices),) + jnp.shape(x)), sharding), tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree."""
    return jax.tree.map(lambda x: x[0], tree)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Places ``tree`` replicated over ``mesh`` (for ``parallel="mesh"``)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def put_batch(batch: Any, mesh: Mesh) -> Any:
    """Places this host's batch sharded on its leading axis over ``mesh``.

    Single host: ``batch`` is the global batch. Several hosts (after ``jax.distributed.initialize()``): each host
    passes its own slice and the global batch is their concatenation in process order.
    """
    sharding = NamedSharding(mesh, PartitionSpec(MESH_AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def copy_tree(tree: Any) -> Any:
    """A device copy of ``tree`` that survives the donation of the original buffers to the next step."""
    return jax.tree.map(jnp.copy, tree)


# ----------------------------------------------------------------------------------------------------------------
# fit: the straight-line driver
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`fit`.

    Attributes:
      epochs: passes over ``task.batches``.
      seed: seeds parameters, dropout and every epoch's data order (``default_rng([seed, epoch])``).
      optimizer: an :class:`OptimizerConfig`.
      parallel: ``"none"``, ``"pmap"`` or ``"mesh"`` (see :func:`make_train_step`).
      eval_every: evaluate every this many steps (None: at the end of every epoch).
      early_stopping_metric: name of the ``task.evaluate`` metric to maximise; the best params are kept.
      patience: stop after this many evaluations without improvement (None: never stop early).
      checkpoint_dir: Orbax checkpoints here (None: no checkpoints).
      checkpoint_every: save every this many steps (None: at the end of every epoch).
      max_to_keep: checkpoints kept.
      resume: continue from the latest checkpoint in ``checkpoint_dir``.
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
        if self.nan_policy not in ("raise", "skip"):
            raise ValueError(f"nan_policy={self.nan_policy!r}; expected 'raise' or 'skip'")
        for name in ("eval_every", "checkpoint_every", "patience", "max_steps"):
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


def _mask_count(batch) -> int:
    if isinstance(batch, Mapping):
        if "mask" in batch:
            return int(np.asarray(batch["mask"]).sum())
        return sum(_mask_count(v) for v in batch.values())
    return 0


def _checkpoint_manager(config: TrainConfig):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(pathlib.Path(config.checkpoint_dir).absolute(), options=options)


def _save(manager, step: int, state: TrainState, best_params, meta: dict):
    import orbax.checkpoint as ocp

    tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step, "best_params": best_params}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()


def _restore(manager, state: TrainState, best_params):
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


def _check_finite(records: list[dict], policy: str):
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


def fit(config: TrainConfig, task: Task) -> FitResult:
    """Trains ``task`` as configured: progress bars, periodic evaluation, early stopping, checkpoints, resume.

    Deterministic: the same config, task and seed give identical parameters and metrics on the same hardware and
    device count (parameters from ``seed``, data order from ``default_rng([seed, epoch])``, dropout from
    ``fold_in(key(seed), step)``); a run resumed from a checkpoint is bit-identical to an uninterrupted one.
    """
    from tqdm.auto import tqdm

    # -- data: the first batch fixes the shapes (the step compiles once) --
    first = next(iter(task.batches(np.random.default_rng([config.seed, 0]))))
    n_dev = jax.local_device_count()

    # -- model and state --
    key = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(key)
    state = create_train_state(
        init_key,
        task.model,
        first,
        make_optimizer(
            dataclasses.replace(
                config.optimizer, skip_nonfinite=config.optimizer.skip_nonfinite or config.nan_policy == "skip"
            )
        ),
        params=task.init_params,
    )
    best_params = copy_tree(state.params)
    history: list[dict] = []
    best: dict = {}
    bad_evals, start_epoch, skip_in_epoch = 0, 0, 0

    # -- checkpoint / resume --
    manager = _checkpoint_manager(config) if config.checkpoint_dir else None
    if config.resume:
        restored = _restore(manager, state, best_params)
        if restored is not None:
            state, best_params, meta = restored
            history, best, bad_evals = meta["history"], meta["best"], meta["bad_evals"]
            start_epoch, skip_in_epoch = meta["epoch"], meta["step_in_epoch"]

    # -- the step --
    step_fn = make_train_step(task.objective, parallel=config.parallel)
    mesh = make_mesh() if config.parallel == "mesh" else None
    if config.parallel == "pmap":
        state = replicate(state)
    elif config.parallel == "mesh":
        state = put_replicated(state, mesh)

    def host_params():
        return copy_tree(unreplicate(state.params) if config.parallel == "pmap" else state.params)

    def place(batch):
        if config.parallel == "pmap":
            from jaxrec.batching import shard

            return shard(batch, n_dev)
        if config.parallel == "mesh":
            return put_batch(batch, mesh)
        return batch

    pending: list[tuple[int, dict]] = []  # device metrics not yet fetched
    log_file = open(config.jsonl, "a") if config.jsonl else None

    def log(record):
        history.append(record)
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    def flush(epoch):
        if not pending:
            return None
        fetched = jax.device_get([m for _, m in pending])
        records = []
        for (step, _), m in zip(pending, fetched):
            m = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()}
            records.append({"step": step, "epoch": epoch, **m})
        pending.clear()
        _check_finite(records, config.nan_policy)
        mean = {k: float(np.mean([r[k] for r in records])) for k in records[-1] if k not in ("step", "epoch")}
        mean["skipped"] = sum(r.get("skipped", 0) for r in records)
        log({"step": records[-1]["step"], "epoch": epoch, **mean})
        return mean

    def evaluate(step, epoch):
        nonlocal best, best_params, bad_evals
        if task.evaluate is None:
            return False
        params = host_params()
        result = {f"eval/{k}": float(v) for k, v in task.evaluate(params).items()}
        record = {"step": step, "epoch": epoch, **result}
        log(record)
        metric = config.early_stopping_metric
        if metric is None:
            best, best_params = record, params
            return False
        if f"eval/{metric}" not in result:
            raise KeyError(
                f"early_stopping_metric={metric!r} is not among the evaluation metrics {sorted(k[5:] for k in result)}"
            )
        if not best or result[f"eval/{metric}"] > best[f"eval/{metric}"]:
            best, best_params, bad_evals = record, params, 0
        else:
            bad_evals += 1
        return config.patience is not None and bad_evals >= config.patience

    saved_step = -1

    def checkpoint(step, epoch, step_in_epoch):
        nonlocal saved_step
        if manager is None or step == saved_step:
            return
        flush(epoch)  # never write a checkpoint past an unchecked step
        saved = unreplicate(state) if config.parallel == "pmap" else state
        _save(
            manager,
            step,
            saved,
            best_params,
            {"epoch": epoch, "step_in_epoch": step_in_epoch, "history": history, "best": best, "bad_evals": bad_evals},
        )
        saved_step = step

    # -- the loop: epochs of fixed-shape batches; resume skips the batches already trained on --
    step = int(np.asarray(unreplicate(state.step) if config.parallel == "pmap" else state.step))
    stop = config.max_steps is not None and step >= config.max_steps
    for epoch in range(start_epoch, config.epochs):
        if stop:
            break
        batches = list(task.batches(np.random.default_rng([config.seed, epoch])))
        if not batches:
            raise ValueError(f"task {task.name!r}: batches() yielded no batch for epoch {epoch}")
        first, skip_in_epoch = skip_in_epoch, 0
        bar = tqdm(
            total=len(batches),
            initial=first,
            desc=f"{task.name} epoch {epoch + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
            dynamic_ncols=True,
        )
        examples, t0 = 0, time.perf_counter()
        position = (epoch, first)
        for i in range(first, len(batches)):
            batch = batches[i]
            state, metrics = step_fn(state, place(batch), step_key)
            step += 1
            examples += _mask_count(batch)
            pending.append((step, metrics))
            bar.update(1)
            position = (epoch, i + 1) if i + 1 < len(batches) else (epoch + 1, 0)
            if step % config.log_every == 0:
                mean = flush(epoch)
                rate = examples / max(time.perf_counter() - t0, 1e-9)
                parts = {k.split("/", 1)[-1]: f"{v:.4f}" for k, v in mean.items() if k.startswith("task/")}
                if mean.get("discrepancy"):
                    parts["D"] = f"{mean['discrepancy']:.4g}"
                bar.set_postfix(loss=f"{mean['loss']:.4f}", **parts, ex_s=f"{rate:,.0f}", refresh=False)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint(step, *position)
            if config.eval_every and step % config.eval_every == 0:
                flush(epoch)
                stop = evaluate(step, epoch) or stop
            if config.max_steps is not None and step >= config.max_steps:
                stop = True
            if stop:
                break
        bar.close()
        flush(epoch)
        if position[1] == 0:  # the epoch is complete
            if not config.eval_every:
                stop = evaluate(step, epoch) or stop
            if not config.checkpoint_every:
                checkpoint(step, *position)
        if stop:
            checkpoint(step, *position)  # so that a resumed run continues exactly here
    flush(config.epochs)
    if log_file:
        log_file.close()
    final = unreplicate(state) if config.parallel == "pmap" else state
    params = host_params()
    if not best:
        best_params = params
    return FitResult(params, best_params, best, history, final)


def run_phases(phases: Iterable[tuple[TrainConfig, Task]], params: Any = None) -> list[FitResult]:
    """Runs training phases in order (e.g. pretrain on the source, then fine-tune on the target).

    Each phase is ``(config, task)`` with its own optimizer and objective. A task whose ``init_params`` is a
    callable receives the previous phase's best parameters and returns its starting parameters (so a phase can
    take a sub-tree, or map it onto a different model); a task with ``init_params=None`` starts from the previous
    phase's best parameters when their structure matches, else from a fresh init.
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

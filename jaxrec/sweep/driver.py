"""The shared-embedding recipes (``cmf``, ``mmd``, ``coral``, ``dann``) swept: :func:`sweep` trains ``S``
configurations of λ, learning rate and seed in one vmapped program; :func:`sweep_table` prints them.

Axis conventions: ``S`` configurations, ``E`` epochs. The **batch stream is shared**: data order and negatives
come from ``config.seed`` alone (``np.random.default_rng([config.seed, epoch])``, as ``train.fit`` draws them),
so two configurations that differ only in their seed see the same batches and differ only in their initial
parameters (and dropout). Each model's parameters come from ``split(key(seed))[0]`` and its dropout keys from
``split(key(seed))[1]``, exactly as :func:`jaxrec.train.fit` uses ``TrainConfig.seed``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import evaluate as ev
from jaxrec import methods
from jaxrec.data import CrossDomainDataset
from jaxrec.train import stack

__all__ = ["SWEEP_METHODS", "SweepResult", "sweep", "sweep_config", "sweep_table"]

#: Recipes of :mod:`jaxrec.methods` that :func:`sweep` trains (the shared-embedding family). Any other
#: ``EmbeddingConfig.discrepancy`` (``"mean_l2"``, ``"linear_mmd"``, ``"sliced_wasserstein"``) works too when
#: passed in the config directly.
SWEEP_METHODS = ("cmf", "mmd", "coral", "dann")


class SweepResult(NamedTuple):
    """What :func:`sweep` returns (host numpy except ``params``).

    Attributes:
      lam: ``float64 [S]`` λ of each model.
      learning_rate: ``float64 [S]``.
      seed: ``int64 [S]`` parameter-init seed.
      params: the final parameters, stacked (every leaf ``[S, ...]``); :func:`jaxrec.train.stack.unstack`
        gives one model's.
      history: ``{metric: float64 [E, S]}``, each epoch's mean over its steps of ``train_step``'s metrics
        (``loss``, ``task``, ``task/<domain>``, ``discrepancy``, ``weighted_discrepancy``, ``grad_norm``, ...).
        ``history["lam"]`` is the weight of the alignment term in the loss: the swept λ, except for
        ``"adversarial"``, where the weight is 1 and the swept λ is the maximum of the reversal ramp.
      valid: ``{"NDCG@10", "Recall@10": float64 [S]}`` on the target's valid cold users (full ranking), NaN for a
        model whose training diverged; None when the target has no valid split.
      best: index of the best model by valid NDCG@10 (None without valid or when every model diverged).
      model: the ``SharedEmbeddingModel`` (for ``methods.scorer_for``).
      domains: ``(source, target)``.
      config: the base ``EmbeddingConfig`` (its ``lam``/``learning_rate``/``seed`` are overridden per model).
      best_epoch: ``int64 [S]``, with ``patience``: the epoch (1-based) whose parameters ``params`` holds and
        ``valid`` measures; None otherwise (the last epoch).
      epochs_run: epochs trained (fewer than asked when early stopping or the deadline ended the sweep).
    """

    lam: np.ndarray
    learning_rate: np.ndarray
    seed: np.ndarray
    params: Any
    history: dict
    valid: dict | None
    best: int | None
    model: Any
    domains: tuple
    config: Any
    best_epoch: np.ndarray | None = None
    epochs_run: int = 0

    def scorer(self, ds: CrossDomainDataset, index: int, domain: str) -> ev.Scorer:
        """An ``evaluate.Scorer`` of model ``index`` over ``domain``'s items (``methods.scorer_for``)."""
        return methods.scorer_for(self.model, stack.unstack(self.params, index), ds, self.domains, domain)


def sweep_config(method: str, **overrides) -> methods.EmbeddingConfig:
    """The ``EmbeddingConfig`` that recipe ``method`` trains with, updated by ``overrides``.

    ``cmf`` has no alignment term (``discrepancy=None``: only learning rates and seeds can be swept); ``mmd``,
    ``coral`` and ``dann`` use their recipe defaults (user towers, the alignment term and its λ).

    Args:
      method: one of :data:`SWEEP_METHODS`.
      **overrides: fields of the config to replace.

    Returns:
      The :class:`jaxrec.EmbeddingConfig`.

    Raises:
      ValueError: a method outside :data:`SWEEP_METHODS` or an unknown option (listing the valid ones).
    """
    if method not in SWEEP_METHODS:
        raise ValueError(f"method {method!r} cannot be swept; valid methods: {list(SWEEP_METHODS)}")
    base = methods.get_method(method).default_config
    if method == "cmf":
        base = dataclasses.replace(base, discrepancy=None, lam=0.0)
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"EmbeddingConfig has no option(s) {unknown}; its options are {sorted(fields)}")
    return dataclasses.replace(base, **overrides)


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


def _as_values(name: str, values, default, kind) -> list:
    if values is None:
        return [default]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of values (e.g. [0.1, 1.0]), got {values!r}")
    values = list(np.asarray(values).reshape(-1).tolist())
    if not values:
        raise ValueError(f"{name} must not be empty")
    if kind is int:
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
            raise TypeError(f"{name} must be integers, got {values}")
        return values
    return [float(v) for v in values]


def _broadcast(config: methods.EmbeddingConfig, lam, learning_rate, seed) -> tuple[np.ndarray, ...]:
    """The three per-model value lists broadcast to one length S (each given list has length S or 1)."""
    given = {"lam": lam, "learning_rate": learning_rate, "seed": seed}
    lists = {
        "lam": _as_values("lam", lam, config.lam, float),
        "learning_rate": _as_values("learning_rate", learning_rate, config.learning_rate, float),
        "seed": _as_values("seed", seed, config.seed, int),
    }
    lengths = {k: len(v) for k, v in lists.items() if given[k] is not None}
    sizes = set(lengths.values()) - {1}
    if len(sizes) > 1:
        raise ValueError(
            f"sweep values must all have the same length S (or length 1 to be shared by every model); got lengths "
            f"{lengths}"
        )
    s = sizes.pop() if sizes else 1
    out = {k: np.asarray(v * s if len(v) == 1 else v) for k, v in lists.items()}
    if np.any(~(out["lam"] >= 0)):
        raise ValueError(f"lam values must be >= 0, got {out['lam'].tolist()}")
    if np.any(~(out["learning_rate"] > 0)):
        raise ValueError(f"learning_rate values must be > 0, got {out['learning_rate'].tolist()}")
    if lam is not None and config.discrepancy is None:
        raise ValueError(
            "a lam sweep needs an alignment term: config.discrepancy is None (cmf), so λ would change nothing; "
            "use sweep_config('mmd' | 'coral' | 'dann') or set discrepancy"
        )
    return out["lam"].astype(np.float64), out["learning_rate"].astype(np.float64), out["seed"].astype(np.int64)


def _check_epochs_and_chunk(epochs, chunk) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be an int >= 1")
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk={chunk!r} must be None or an int >= 1")


# ----------------------------------------------------------------------------------------------------------------
# Model, step and loop (cached: a second sweep with the same shapes compiles nothing)
# ----------------------------------------------------------------------------------------------------------------

#: The recipe's optimizer, one object so that the stacked states' static ``tx`` (a jit cache key) never changes.
_ADAM = stack.stack_optimizer("adam")

#: One ``SharedEmbeddingModel`` object per description: its bound ``apply`` (compared by identity) is part of the
#: stacked states' treedef, so a fresh module per call would recompile the step.
_recipe_model = functools.lru_cache(maxsize=32)(methods.SharedEmbeddingModel)


@functools.lru_cache(maxsize=32)
def _recipe_step(
    l2: float, task_loss: str, discrepancy: str | None, options: Any, total_steps: int, chunk: int | None
) -> Callable:
    """The recipe's sweep step, built once per static description so a second :func:`sweep` never recompiles.

    λ is bound per model as the embedding recipes train: the loss weight, or for ``"adversarial"`` the maximum
    of the DANN ramp of the gradient-reversal strength (:func:`jaxrec.train.stack.lam_as_reversal`).
    """
    if discrepancy == "adversarial":
        objective = methods.task_objective(l2, task_loss, "adversarial", 1.0, discrepancy_options=options)
        bind = functools.partial(stack.lam_as_reversal, total_steps=total_steps)
        return stack.make_stacked_step(objective, bind_lam=bind, chunk=chunk)
    objective = methods.task_objective(l2, task_loss, discrepancy, 0.0, discrepancy_options=options)
    return stack.make_stacked_step(objective, chunk=chunk)


def _train_epochs(
    step: Callable, states, batches: Callable, epochs: int, keys, lam, after_epoch: Callable | None = None
) -> tuple[Any, dict]:
    """``epochs`` passes of ``step`` over ``batches(epoch)``; returns the states and ``{metric: float64 [E, S]}``
    (each epoch's mean over its steps). Metrics stay on the device until the end of each epoch.
    ``after_epoch(epoch, states)`` (optional) is called after each epoch; training stops when it returns True."""
    history: dict[str, list] = {}
    for epoch in range(epochs):
        per_step = []
        for batch in batches(epoch):
            states, metrics = step(states, batch, keys, lam)
            per_step.append(metrics)
        fetched = jax.device_get(per_step)
        for name in fetched[0]:
            history.setdefault(name, []).append(np.mean([np.asarray(m[name], np.float64) for m in fetched], axis=0))
        if after_epoch is not None and after_epoch(epoch, states):
            break
    return states, {name: np.stack(rows) for name, rows in history.items()}


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


@jax.jit
def _all_finite(params) -> jax.Array:
    """``bool [S]``: every parameter of model s is finite."""
    leaves = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in jax.tree.leaves(params)]
    return functools.reduce(jnp.logical_and, leaves)


_unstack_jit = jax.jit(stack.unstack)  # the index traced: one compilation for every model


def _valid_metrics(ds, model, params, domains, source, target, finite: np.ndarray) -> dict | None:
    """The recipes' early-stopping measure (``methods.valid_evaluator``) of every finite model; NaN for the
    others. None when ``target`` has no valid interactions."""
    valid = methods.valid_evaluator(ds, source, target)
    if valid is None:
        return None
    out = {"NDCG@10": np.full(finite.shape, np.nan), "Recall@10": np.full(finite.shape, np.nan)}
    for s in np.flatnonzero(finite):
        result = valid(methods.scorer_for(model, _unstack_jit(params, int(s)), ds, domains, target))
        for name in out:
            out[name][s] = result[name]
    return out


def _early_stopping(valid_of: Callable, n_models: int, patience: int | None, deadline: float | None) -> tuple:
    """``(after_epoch, state)``: ``after_epoch(epoch, states)`` measures every model on valid (``valid_of(params,
    finite)``), keeps each model's best parameters in ``state`` and returns True (stop) once every model has gone
    ``patience`` epochs without a better valid NDCG@10, or ``time.monotonic()`` has passed ``deadline``.

    A model that has gone ``patience`` epochs without a better valid score is stopped: it keeps the best epoch it
    had then, whatever it scores in the epochs the other models still train, so each model ends where it would
    have ended trained alone (``methods.run``)."""
    state = {"params": None, "valid": None, "epoch": np.zeros(n_models, np.int64), "stale": np.zeros(n_models)}

    def after_epoch(epoch: int, states) -> bool:
        finite = np.asarray(_all_finite(states.params))
        valid = valid_of(states.params, finite)
        score = np.where(finite, valid["NDCG@10"], -np.inf)
        if state["valid"] is None:
            better = finite.copy()
            state["valid"] = {k: np.full(n_models, np.nan) for k in valid}
        else:
            better = score > np.nan_to_num(state["valid"]["NDCG@10"], nan=-np.inf)
            if patience is not None:
                better &= state["stale"] < patience
        for k in valid:
            state["valid"][k] = np.where(better, valid[k], state["valid"][k])
        state["epoch"] = np.where(better, epoch + 1, state["epoch"])
        state["stale"] = np.where(better, 0, state["stale"] + 1)
        keep = jnp.asarray(better)
        if state["params"] is None:
            state["params"] = jax.tree.map(jnp.copy, states.params)
        else:
            state["params"] = jax.tree.map(
                lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                states.params,
                state["params"],
            )
        out_of_time = deadline is not None and time.monotonic() > deadline
        return out_of_time or (patience is not None and bool(np.all(state["stale"] >= patience)))

    return after_epoch, state


def _best(valid: dict | None, finite: np.ndarray) -> int | None:
    if valid is None or not finite.any():
        return None
    return int(np.nanargmax(np.where(finite, valid["NDCG@10"], -np.inf)))


# ----------------------------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------------------------


def sweep(
    ds: CrossDomainDataset,
    *,
    source: str,
    target: str,
    config: methods.EmbeddingConfig,
    lam: Sequence[float] | None = None,
    learning_rate: Sequence[float] | None = None,
    seed: Sequence[int] | None = None,
    epochs: int | None = None,
    chunk: int | None = None,
    patience: int | None = None,
    deadline: float | None = None,
) -> SweepResult:
    """Trains ``S`` shared-embedding models (the ``cmf``/``mmd``/``coral``/``dann`` recipe) in one program.

    The model is ``methods.SharedEmbeddingModel`` on ``(source, target)``, the objective
    ``Σ_d L_BPR(d) + λ·D(h_source, h_target)`` of ``methods.bpr_objective`` with ``config.discrepancy`` and
    ``config.discrepancy_options``; for ``"adversarial"`` λ is the maximum of the DANN ramp of the reversal strength),
    Adam with a per-model learning rate. Every model trains for exactly ``epochs`` epochs (no early stopping) on
    the same batch stream (order and negatives from ``config.seed``); the final parameters are evaluated on the
    target's valid cold users. A model whose loss or parameters become non-finite (e.g. too large a learning
    rate) does not stop the others: it gets NaN metrics and is never ``best``.

    Args:
      ds: the dataset (apply ``data.cold_start_split`` first to get valid cold users).
      source: the data-rich domain.
      target: the domain whose cold users are evaluated.
      config: the base configuration (``sweep_config(method, ...)`` or an ``EmbeddingConfig``).
      lam: λ values (>= 0); needs ``config.discrepancy``.
      learning_rate: learning rates (> 0).
      seed: parameter-init seeds.
      epochs: epochs per model (default ``config.epochs``).
      chunk: models vmapped together (None: all S); see :func:`jaxrec.train.stack.make_stacked_step`.
      patience: early stopping as the recipes do it: every model is measured on valid after every epoch and its
        best parameters are kept; a model stops improving its kept epoch once it has gone ``patience`` epochs
        without a better valid NDCG@10 (later epochs of the others do not revive it), and the sweep stops when
        every model has (None: exactly ``epochs`` epochs, the last one measured).
      deadline: a ``time.monotonic()`` value; after the epoch that passes it the sweep stops, each model at its
        best epoch so far (implies the per-epoch measure).

    Each of ``lam``/``learning_rate``/``seed`` is None (use the config's value) or a sequence of length S or 1
    (shared by every model); all given sequences of length > 1 must have the same length S. Model ``s`` uses
    ``(lam[s], learning_rate[s], seed[s])`` — values are zipped, not crossed (build a grid with
    ``itertools.product`` first).

    Returns:
      A :class:`SweepResult`.

    Raises:
      ValueError: lengths that do not broadcast (all quoted), empty or out-of-range values, a λ sweep without a
        discrepancy, ``epochs < 1``, ``chunk < 1``, ``patience < 1``, ``patience``/``deadline`` without a valid
        split, or ``source == target``.
    """
    methods.check_pair(ds, source, target)
    lams, rates, seeds = _broadcast(config, lam, learning_rate, seed)
    epochs = config.epochs if epochs is None else epochs
    _check_epochs_and_chunk(epochs, chunk)
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience={patience!r} must be None or an int >= 1")
    tracking = patience is not None or deadline is not None
    if tracking and methods.valid_evaluator(ds, source, target) is None:
        raise ValueError(f"patience and deadline measure valid, and {target!r} has no valid split")
    domains = (source, target)

    # -- data: one batch stream for every model (order and negatives from config.seed) --
    stream, steps_per_epoch = methods.domain_batches(
        ds, domains, batch_size=config.batch_size, n_negatives=config.n_negatives
    )

    def batches(epoch: int) -> Iterable[dict]:
        return stream(np.random.default_rng([config.seed, epoch]))

    # -- model and stacked states: params from split(key(seed))[0], dropout keys from split(key(seed))[1] --
    adversarial = config.discrepancy == "adversarial"
    n_items = tuple(ds.n_items(d) for d in domains)
    model = _recipe_model(
        ds.n_users, n_items, domains, config.dim, tuple(config.user_tower), adversarial, config.align_size
    )
    keys = jnp.stack([jax.random.split(jax.random.key(int(s))) for s in seeds])
    states = stack.create_stacked_state(keys[:, 0], model, next(iter(batches(0))), _ADAM, learning_rate=rates)

    # -- training: the cached step, every model for exactly `epochs` epochs --
    step = _recipe_step(
        config.l2,
        config.task_loss,
        config.discrepancy,
        config.discrepancy_options,
        steps_per_epoch * epochs if adversarial else 0,
        chunk,
    )
    after_epoch = tracked = None
    if tracking:

        def valid_of(params, finite):
            return _valid_metrics(ds, model, params, domains, source, target, finite)

        after_epoch, tracked = _early_stopping(valid_of, len(seeds), patience, deadline)
    lam_values = jnp.asarray(lams, jnp.float32)
    states, history = _train_epochs(step, states, batches, epochs, keys[:, 1], lam_values, after_epoch)
    epochs_run = len(history["loss"])

    # -- evaluation of every finite model on valid (or its best epoch's), and the best one --
    if tracked is not None:
        params, valid, best_epoch = tracked["params"], tracked["valid"], tracked["epoch"]
        finite = best_epoch > 0
    else:
        params, best_epoch = states.params, None
        finite = np.asarray(_all_finite(params)) & np.isfinite(history["loss"][-1])
        valid = _valid_metrics(ds, model, params, domains, source, target, finite)
    best = _best(valid, finite)
    return SweepResult(lams, rates, seeds, params, history, valid, best, model, domains, config, best_epoch, epochs_run)


def sweep_table(result: SweepResult) -> str:
    """A plain-text table, one row per configuration: λ, learning rate, seed, valid NDCG@10 / Recall@10 and the
    last epoch's mean loss and discrepancy; the best row (by valid NDCG@10) is marked ``*``.

    Args:
      result: the result of :func:`jaxrec.sweep.sweep`.

    Returns:
      The table as one string.

    Example:
      >>> print(sweep_table(result))  # doctest: +SKIP
        #         lam        lr  seed   NDCG@10  Recall@10      loss  discrepancy
        0*        0.1  1.00e-02     0    0.3084     0.3148    1.3805      0.04792
        1           1  1.00e-02     0    0.2671     0.2724    1.4265       0.0457
        2           3  1.00e-02     0    0.2564     0.2662    1.5186      0.04577
    """
    header = (
        f"{'#':>3}  {'lam':>10}{'lr':>10}{'seed':>6}{'NDCG@10':>10}{'Recall@10':>11}{'loss':>10}{'discrepancy':>13}"
    )
    lines = [header]
    final = {name: rows[-1] for name, rows in result.history.items()}
    for s in range(len(result.lam)):
        mark = "*" if result.best == s else " "
        ndcg = recall = math.nan
        if result.valid is not None:
            ndcg, recall = result.valid["NDCG@10"][s], result.valid["Recall@10"][s]
        lines.append(
            f"{s:>3}{mark} {result.lam[s]:>10.4g}{result.learning_rate[s]:>10.2e}{int(result.seed[s]):>6}"
            f"{ndcg:>10.4f}{recall:>11.4f}{final['loss'][s]:>10.4f}{final['discrepancy'][s]:>13.4g}"
        )
    return "\n".join(lines)

"""Vectorized hyper-parameter sweeps: ``S`` models trained in ONE compiled program by ``jax.vmap``.

Axis conventions in this file: ``S`` = configurations (the leading axis of every *stacked* value: parameters,
optimizer state, step counter, λ, learning rate, PRNG keys), ``B`` = positives per domain per step, ``n`` =
negatives per positive, ``D`` = embedding width, ``E`` = epochs. A batch is shared by all ``S`` models and has no
config axis.

What varies per configuration, and how it enters the one program:

* **λ** (the discrepancy weight) is a traced ``float32 [S]`` argument of the step, bound into each model's
  :class:`jaxrec.train.Objective` inside the vmapped function (by default as the constant weight of ``λ·D``; for
  adversarial alignment as the maximum of the DANN ramp of the gradient-reversal strength, as the ``dann``
  recipe does).
* **the learning rate** lives in the optimizer state (``optax.inject_hyperparams``), ``float32 [S]`` after
  stacking, so the optimizer's code is shared and only its state differs.
* **the parameter-init seed**: each model's parameters come from ``split(key(seed))[0]`` and its dropout keys
  from ``split(key(seed))[1]`` — exactly as :func:`jaxrec.train.fit` uses ``TrainConfig.seed``.

The **batch stream is shared**: data order and negatives come from ``config.seed`` alone
(``np.random.default_rng([config.seed, epoch])``, as ``fit`` draws them), so two configurations that differ only
in their seed see the same batches and differ only in their initial parameters (and dropout).

The step is :func:`jaxrec.train.train_step` itself under ``vmap`` (the combined loss is still written once, in
its ``loss_fn``), so a sweep equals a Python loop over the configurations up to floating-point reassociation
(see ``tests/test_sweep.py`` for the measured agreement and its tolerance).

Where it pays (``bench/sweep.py``, 8 values of λ, the ``mmd`` recipe): a sweep compiles ONE program where a loop
over ``methods.run`` compiles one per configuration (λ is a Python float in each ``Objective``), and it issues one
dispatch per step instead of S. On an accelerator the S small models also fill a device that one of them leaves
idle. On a CPU the step is memory-bound and there is no idle hardware: with small models the sweep is faster
(dispatch-bound), but at the default sizes (dim 64, 1024 positives per domain) the vmapped step was *slower* per
model-step than a loop (S stacked embedding tables and their batched gathers/scatter-adds overflow the caches),
and the sweep wins only through its single compilation. Numbers in ``bench/RESULTS.md``.

Example:
    >>> from jaxrec import data, methods
    >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(60, 40))[0], "source", "target")
    >>> cfg = sweep_config("mmd", dim=8, user_tower=(8,), batch_size=256, progress=False)
    >>> result = sweep(ds, source="source", target="target", config=cfg, lam=[0.1, 1.0, 3.0], epochs=1)
    >>> result.history["loss"].shape, result.valid["NDCG@10"].shape
    ((1, 3), (3,))
    >>> print(sweep_table(result))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec import batching, losses, methods
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset

__all__ = [
    "SWEEP_METHODS",
    "SweepResult",
    "create_sweep_state",
    "make_sweep_step",
    "sweep",
    "sweep_config",
    "sweep_optimizer",
    "sweep_table",
    "unstack",
]

#: Recipes of :mod:`jaxrec.methods` that :func:`sweep` trains (the shared-embedding family). Any other
#: ``EmbeddingConfig.discrepancy`` (``"mean_l2"``, ``"linear_mmd"``, ``"sliced_wasserstein"``) works too when
#: passed in the config directly.
SWEEP_METHODS = ("cmf", "mmd", "coral", "dann")

# ----------------------------------------------------------------------------------------------------------------
# Stacked states and the vmapped step (the lower-level, recipe-agnostic part)
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def sweep_optimizer(name: str = "adam", **kwargs) -> optax.GradientTransformation:
    """An optimizer of :data:`jaxrec.train.OPTIMIZERS` whose learning rate lives in its state.

    Wrapped in ``optax.inject_hyperparams``, so ``learning_rate`` is an array in the optimizer state
    (``opt_state.hyperparams["learning_rate"]``) rather than a constant compiled into the update; stacking S
    states gives each model its own rate under one program. The rate given here is a placeholder that
    :func:`create_sweep_state` overwrites. Cached: the same arguments return the same object, so stacked states
    built with it share compiled steps (the optimizer is a static part of a ``TrainState``).

    Args:
      name: a key of ``jaxrec.train.OPTIMIZERS`` (``"adam"``, ``"adamw"``, ``"sgd"``, ...).
      **kwargs: other (fixed) hyper-parameters of that optimizer, e.g. ``weight_decay`` for ``"adamw"``.

    Raises:
      ValueError: unknown name (listing the valid ones).
    """
    if name not in tr.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {sorted(tr.OPTIMIZERS)}")
    return optax.inject_hyperparams(tr.OPTIMIZERS[name])(learning_rate=1.0, **kwargs)


def _init_one(key: jax.Array, learning_rate: jax.Array, sample_batch: Any, *, model, optimizer) -> tr.TrainState:
    # The same key split and init call as train.create_train_state, so a sweep and a loop start identically.
    params_rng, dropout_rng = jax.random.split(key)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, sample_batch, deterministic=True)
    state = tr.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optimizer)
    opt_state = optax.tree.set(state.opt_state, learning_rate=learning_rate)
    return state.replace(opt_state=opt_state, step=jnp.zeros((), jnp.int32))


@functools.lru_cache(maxsize=32)
def _init_fn(model, optimizer) -> Callable:
    """The jitted init of S models, built once per (model, optimizer) so repeated sweeps compile it once.

    ``lax.map`` (a loop over the config axis) rather than ``vmap``: the values are the same, and XLA:CPU compiles
    the unbatched PRNG/init code in ~60 % of the time of its batched form (measured); init runs once per sweep.
    """
    init = functools.partial(_init_one, model=model, optimizer=optimizer)
    return jax.jit(lambda keys, rates, batch: jax.lax.map(lambda kr: init(kr[0], kr[1], batch), (keys, rates)))


def create_sweep_state(
    keys: jax.Array, model, sample_batch: Any, optimizer: optax.GradientTransformation, *, learning_rate: Any
) -> tr.TrainState:
    """``S`` train states stacked on a leading config axis, initialised in one compiled program.

    Args:
      keys: ``[S]`` typed PRNG keys (``jax.random.key``); model ``s`` is initialised exactly as
        ``train.create_train_state(keys[s], ...)`` would.
      model: a Flax module called as ``model(batch, deterministic=...)``.
      sample_batch: a batch of the shapes training will use (shared by all models; no config axis).
      optimizer: a transformation with a ``learning_rate`` hyper-parameter in its state, from
        :func:`sweep_optimizer` (or ``optax.inject_hyperparams`` directly).
      learning_rate: ``[S]`` learning rates.

    Returns:
      A ``TrainState`` whose every leaf has a leading ``S`` axis (``step`` is ``int32 [S]``). Its ``apply_fn``
      and ``tx`` are part of the compiled step's cache key: reuse the same ``model`` and ``optimizer`` objects
      across calls (bound methods compare by identity), or the sweep step recompiles.

    Raises:
      TypeError: ``keys`` are not typed PRNG keys.
      ValueError: ``keys`` or ``learning_rate`` not of shape ``[S]`` (both shapes quoted), or an optimizer
        without an injected ``learning_rate``.
    """
    keys = jnp.asarray(keys)
    learning_rate = jnp.asarray(learning_rate, jnp.float32)
    if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise TypeError(f"keys must be typed PRNG keys (jax.random.key), got dtype {keys.dtype}, shape {keys.shape}")
    if keys.ndim != 1 or learning_rate.shape != keys.shape:
        raise ValueError(f"expected keys [S] and learning_rate [S], got shapes {keys.shape} and {learning_rate.shape}")
    probe = jax.eval_shape(optimizer.init, {"w": jax.ShapeDtypeStruct((1,), jnp.float32)})
    if optax.tree.get(probe, "learning_rate") is None:
        raise ValueError(
            "the optimizer has no learning_rate in its state; build it with sweep_optimizer(...) or "
            "optax.inject_hyperparams(...)"
        )
    return _init_fn(model, optimizer)(keys, learning_rate, sample_batch)


def _lam_as_weight(objective: tr.Objective, lam: jax.Array) -> tr.Objective:
    """λ is the weight of ``λ·D`` in the combined loss (replacing ``objective.lam``)."""
    return dataclasses.replace(objective, lam=lambda step: lam)


def _lam_as_reversal(objective: tr.Objective, lam: jax.Array, *, total_steps: int) -> tr.Objective:
    """λ is the maximum of the DANN ramp of the gradient-reversal strength (as in ``methods._fit_embedding``)."""
    ramp = losses.dann_lambda_schedule(total_steps=total_steps, max_value=jnp.maximum(lam, 1e-6))
    return dataclasses.replace(objective, model_kwargs=lambda step: {"grl_alpha": ramp(step)})


def _config_axis(states: tr.TrainState) -> tuple[int, ...]:
    return jnp.shape(states.step)


def _sweep_step(states, batch, keys, lam, *, objective, bind_lam, chunk):
    axis = _config_axis(states)
    if len(axis) != 1 or jnp.shape(keys) != axis or jnp.shape(lam) != axis:
        raise ValueError(
            f"expected stacked states with step [S], keys [S] and lam [S]; got step {axis}, keys "
            f"{jnp.shape(keys)}, lam {jnp.shape(lam)}"
        )

    def one(xs):
        state, key, lam_s = xs
        return tr.train_step(state, batch, key, objective=bind_lam(objective, lam_s))

    xs = (states, keys, jnp.asarray(lam, jnp.float32))
    if chunk is None or chunk >= axis[0]:
        return jax.vmap(one)(xs)
    return jax.lax.map(one, xs, batch_size=chunk)


def make_sweep_step(
    objective: tr.Objective,
    *,
    bind_lam: Callable[[tr.Objective, jax.Array], tr.Objective] | None = None,
    chunk: int | None = None,
    donate: bool = True,
) -> Callable:
    """The compiled sweep step ``(states, batch, keys, lam) -> (states, metrics)``.

    ``jax.vmap`` of :func:`jaxrec.train.train_step` over the leading config axis of ``states``, ``keys`` and
    ``lam``; the batch is shared. Build it once and reuse it: calls with the same shapes never recompile.

    Args:
      objective: the static part of the combined loss (task losses, discrepancy, weights).
      bind_lam: ``(objective, λ) -> objective`` for one model's traced scalar λ. Default: λ replaces
        ``objective.lam`` as the constant weight of ``λ·D``. For a scheduled weight, e.g.
        ``lambda o, lam: dataclasses.replace(o, lam=lambda step: lam * schedule(step))``.
      chunk: None (default) vmaps all S models at once. An int ``c < S`` runs ``ceil(S / c)`` vmapped groups of
        ``c`` one after another inside the same program (``jax.lax.map(..., batch_size=c)``), so only ``c``
        models' activations and gradients are live at once (a memory bound for large S on an accelerator);
        ``chunk=1`` is a sequential loop over the models, compiled once. Same results either way. Measured on a
        2-core CPU (``bench/sweep.py``) neither form beats a Python loop of single-model steps at the default
        sizes; see the module docstring.
      donate: donate the states' buffers to the step (keep copies with ``train.copy_tree``).

    Returns:
      ``step(states, batch, keys, lam)`` with ``states`` from :func:`create_sweep_state` (leading ``[S]``),
      ``batch`` as for ``train_step`` (no config axis), ``keys [S]`` typed PRNG keys (dropout; folded with the
      step as in ``train_step``) and ``lam float32 [S]``; returns the new states and metrics
      ``{name: float32 [S]}`` (``loss``, ``grad_norm``, ``task/<domain>``, ``discrepancy``, ...).

    Raises:
      ValueError: ``chunk < 1``; at trace time, ``keys`` or ``lam`` not ``[S]`` (all shapes quoted).

    Example:
      >>> step = make_sweep_step(methods._bpr_objective(1e-4, "coral", 0.0))
      >>> states, metrics = step(states, batch, keys, jnp.array([0.1, 1.0, 10.0]))  # doctest: +SKIP
      >>> metrics["loss"].shape  # doctest: +SKIP
      (3,)
    """
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk={chunk!r} must be None or an int >= 1")
    bind_lam = _lam_as_weight if bind_lam is None else bind_lam
    fn = functools.partial(_sweep_step, objective=objective, bind_lam=bind_lam, chunk=chunk)
    return jax.jit(fn, donate_argnums=(0,) if donate else ())


def unstack(tree: Any, index: int) -> Any:
    """Model ``index`` of a stacked pytree (every leaf ``[S, ...]`` → ``[...]``)."""
    return jax.tree.map(lambda x: x[index], tree)


# ----------------------------------------------------------------------------------------------------------------
# The shared-embedding recipe, swept
# ----------------------------------------------------------------------------------------------------------------


class SweepResult(NamedTuple):
    """What :func:`sweep` returns (host numpy except ``params``).

    Attributes:
      lam: ``float64 [S]`` λ of each model.
      learning_rate: ``float64 [S]``.
      seed: ``int64 [S]`` parameter-init seed.
      params: the final parameters, stacked (every leaf ``[S, ...]``); :func:`unstack` gives one model's.
      history: ``{metric: float64 [E, S]}``, each epoch's mean over its steps of ``train_step``'s metrics
        (``loss``, ``task``, ``task/<domain>``, ``discrepancy``, ``weighted_discrepancy``, ``grad_norm``, ...).
        ``history["lam"]`` is the weight of the alignment term in the loss: the swept λ, except for
        ``"adversarial"``, where the weight is 1 and the swept λ is the maximum of the reversal ramp.
      valid: ``{"NDCG@10", "Recall@10": float64 [S]}`` on the target's valid cold users (full ranking), NaN for a
        model whose training diverged; None when the target has no valid split.
      best: index of the best model by valid NDCG@10 (None without valid or when every model diverged).
      model: the ``SharedEmbeddingModel`` (for ``methods._scorer_for``).
      domains: ``(source, target)``.
      config: the base ``EmbeddingConfig`` (its ``lam``/``learning_rate``/``seed`` are overridden per model).
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

    def scorer(self, ds: CrossDomainDataset, index: int, domain: str) -> ev.Scorer:
        """An ``evaluate.Scorer`` of model ``index`` over ``domain``'s items (``methods._scorer_for``)."""
        return methods._scorer_for(self.model, unstack(self.params, index), ds, self.domains, domain)


def sweep_config(method: str, **overrides) -> methods.EmbeddingConfig:
    """The ``EmbeddingConfig`` that recipe ``method`` trains with, updated by ``overrides``.

    ``cmf`` has no alignment term (``discrepancy=None``: only learning rates and seeds can be swept); ``mmd``,
    ``coral`` and ``dann`` use their recipe defaults (user towers, the alignment term and its λ).

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
    values = [float(v) for v in values]
    return values


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


#: The recipe's optimizer, one object so that the stacked states' static ``tx`` (a jit cache key) never changes.
_ADAM = sweep_optimizer("adam")


#: One ``SharedEmbeddingModel`` object per description: its bound ``apply`` (compared by identity) is part of the
#: stacked states' treedef, so a fresh module per call would recompile the step.
_recipe_model = functools.lru_cache(maxsize=32)(methods.SharedEmbeddingModel)


@functools.lru_cache(maxsize=32)
def _recipe_step(l2: float, discrepancy: str | None, total_steps: int, chunk: int | None) -> Callable:
    """The recipe's sweep step, built once per static description so a second :func:`sweep` never recompiles."""
    if discrepancy == "adversarial":
        objective = methods._bpr_objective(l2, "adversarial", 1.0)
        bind = functools.partial(_lam_as_reversal, total_steps=total_steps)
        return make_sweep_step(objective, bind_lam=bind, chunk=chunk)
    objective = methods._bpr_objective(l2, methods.RECIPE_MMD if discrepancy == "mmd" else discrepancy, 0.0)
    return make_sweep_step(objective, chunk=chunk)


@jax.jit
def _all_finite(params) -> jax.Array:
    """``bool [S]``: every parameter of model s is finite."""
    leaves = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in jax.tree.leaves(params)]
    return functools.reduce(jnp.logical_and, leaves)


_unstack_jit = jax.jit(unstack)  # the index traced: one compilation for every model


def _evaluate_valid(ds, model, params, domains, source, target, finite) -> dict | None:
    if ds.interactions(target, "valid").size == 0:
        return None
    users = "cold" if ds.cold_users(source, target, "valid").size else "all"
    out = {"NDCG@10": np.full(finite.shape, np.nan), "Recall@10": np.full(finite.shape, np.nan)}
    for s in np.flatnonzero(finite):
        scorer = methods._scorer_for(model, _unstack_jit(params, int(s)), ds, domains, target)
        result = ev.evaluate(
            scorer,
            ds,
            target=target,
            split="valid",
            source=source if users == "cold" else None,
            users=users,
            ks=(10,),
            protocols=("full",),
        )
        for name in out:
            out[name][s] = result["full"][name]
    return out


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
) -> SweepResult:
    """Trains ``S`` shared-embedding models (the ``cmf``/``mmd``/``coral``/``dann`` recipe) in one program.

    The model is ``methods.SharedEmbeddingModel`` on ``(source, target)``, the objective
    ``Σ_d L_BPR(d) + λ·D(h_source, h_target)`` of ``methods._bpr_objective`` with ``config.discrepancy`` (MMD as
    ``methods.RECIPE_MMD``; for ``"adversarial"`` λ is the maximum of the DANN ramp of the reversal strength),
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
      chunk: models vmapped together (None: all S); see :func:`make_sweep_step`.

    Each of ``lam``/``learning_rate``/``seed`` is None (use the config's value) or a sequence of length S or 1
    (shared by every model); all given sequences of length > 1 must have the same length S. Model ``s`` uses
    ``(lam[s], learning_rate[s], seed[s])`` — values are zipped, not crossed (build a grid with
    ``itertools.product`` first).

    Returns:
      A :class:`SweepResult`.

    Raises:
      ValueError: lengths that do not broadcast (all quoted), empty or out-of-range values, a λ sweep without a
        discrepancy, ``epochs < 1``, ``chunk < 1``, or ``source == target``.
    """
    methods._check_pair(ds, source, target)
    lams, rates, seeds = _broadcast(config, lam, learning_rate, seed)
    epochs = config.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be an int >= 1")
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk={chunk!r} must be None or an int >= 1")
    domains = (source, target)

    # -- data: one batch stream for every model (order and negatives from config.seed) --
    inters = {d: ds.interactions(d, "train") for d in domains}
    samplers = {d: batching.NegativeSampler(ds.n_items(d), seen=ds.seen(d, "train")) for d in domains}
    steps_per_epoch = -(-max(inters[d].size for d in domains) // config.batch_size)

    def batches(epoch):
        return batching.multi_domain_batches(
            inters,
            {d: config.batch_size for d in domains},
            rng=np.random.default_rng([config.seed, epoch]),
            n_negatives=config.n_negatives,
            samplers=samplers,
        )

    # -- model and stacked states: params from split(key(seed))[0], dropout keys from split(key(seed))[1] --
    adversarial = config.discrepancy == "adversarial"
    model = _recipe_model(
        ds.n_users,
        tuple(ds.n_items(d) for d in domains),
        domains,
        config.dim,
        tuple(config.user_tower),
        adversarial,
        config.align_size,
    )
    keys = jnp.stack([jax.random.split(jax.random.key(int(s))) for s in seeds])
    init_keys, step_keys = keys[:, 0], keys[:, 1]
    first = next(iter(batches(0)))
    states = create_sweep_state(init_keys, model, first, _ADAM, learning_rate=rates)

    # -- the step (cached: a second sweep with the same shapes compiles nothing) --
    step = _recipe_step(config.l2, config.discrepancy, steps_per_epoch * epochs if adversarial else 0, chunk)
    lam_dev = jnp.asarray(lams, jnp.float32)

    # -- the loop: metrics stay on the device until the end of each epoch --
    history: dict[str, list] = {}
    for epoch in range(epochs):
        per_step = []
        for batch in batches(epoch):
            states, metrics = step(states, batch, step_keys, lam_dev)
            per_step.append(metrics)
        fetched = jax.device_get(per_step)
        for name in fetched[0]:
            history.setdefault(name, []).append(np.mean([np.asarray(m[name], np.float64) for m in fetched], axis=0))
    history_arr = {name: np.stack(rows) for name, rows in history.items()}

    # -- evaluation of every finite model on valid, and the best one --
    finite = np.asarray(_all_finite(states.params)) & np.isfinite(history_arr["loss"][-1])
    params = states.params
    valid = _evaluate_valid(ds, model, params, domains, source, target, finite)
    best = None
    if valid is not None and finite.any():
        best = int(np.nanargmax(np.where(finite, valid["NDCG@10"], -np.inf)))
    return SweepResult(lams, rates, seeds, params, history_arr, valid, best, model, domains, config)


def sweep_table(result: SweepResult) -> str:
    """A plain-text table, one row per configuration: λ, learning rate, seed, valid NDCG@10 / Recall@10 and the
    last epoch's mean loss and discrepancy; the best row (by valid NDCG@10) is marked ``*``.

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

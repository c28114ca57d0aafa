"""Stacked train states and the vmapped train step: ``S`` models trained in one compiled program, recipe-agnostic.

Axis conventions: ``S`` = configurations, the leading axis of every *stacked* value (parameters, optimizer state,
step counter, λ, learning rate, PRNG keys). A batch is shared by all ``S`` models and has no config axis.

* **λ** (the discrepancy weight) is a traced ``float32 [S]`` argument of the step, bound into each model's
  :class:`jaxrec.train.Objective` inside the vmapped function (by default as the constant weight of ``λ·D``).
* **the learning rate** lives in the optimizer state (``optax.inject_hyperparams``), ``float32 [S]`` after
  stacking, so the optimizer's code is shared and only its state differs.
* **the parameter-init key**: model ``s`` is initialised exactly as ``train.create_train_state(keys[s], ...)``.

The step is :func:`jaxrec.train.train_step` itself under ``vmap`` (the combined loss is still written once, in
its ``loss_fn``), so a sweep equals a Python loop over the configurations up to floating-point reassociation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxrec import train as tr

__all__ = ["create_sweep_state", "make_sweep_step", "sweep_optimizer", "unstack"]


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
    the unbatched PRNG/init code in ~60 % of the time of its batched form; init runs once per sweep.
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


def _sweep_step(states, batch, keys, lam, *, objective, bind_lam, chunk):
    axis = jnp.shape(states.step)
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
        ``chunk=1`` is a sequential loop over the models, compiled once. Same results either way. On a CPU neither
        form beats a Python loop of single-model steps at the recipes' default sizes (see :mod:`jaxrec.sweep`).
      donate: donate the states' buffers to the step (keep copies with ``train.copy_tree``).

    Returns:
      ``step(states, batch, keys, lam)`` with ``states`` from :func:`create_sweep_state` (leading ``[S]``),
      ``batch`` as for ``train_step`` (no config axis), ``keys [S]`` typed PRNG keys (dropout; folded with the
      step as in ``train_step``) and ``lam float32 [S]``; returns the new states and metrics
      ``{name: float32 [S]}`` (``loss``, ``grad_norm``, ``task/<domain>``, ``discrepancy``, ...).

    Raises:
      ValueError: ``chunk < 1``; at trace time, ``keys`` or ``lam`` not ``[S]`` (all shapes quoted).

    Example:
      >>> step = make_sweep_step(methods.bpr_objective(1e-4, "coral", 0.0))
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

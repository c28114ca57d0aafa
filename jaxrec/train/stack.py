"""A stack of ``S`` models trained in ONE compiled program: ``jax.vmap`` of :func:`jaxrec.train.train_step`.

Axis conventions: ``S`` = models (configurations), the leading axis of every *stacked* value — parameters,
optimizer state, step counter, λ, learning rate, PRNG keys. A batch is shared by all ``S`` models and has no
model axis.

What varies per model, and how it enters the one program:

* **λ** is a traced ``float32 [S]`` argument of the step, bound into each model's :class:`~jaxrec.train.Objective`
  inside the vmapped function by ``bind_lam``: :func:`lam_as_weight` (the default) makes it the constant weight of
  ``λ·D``; :func:`lam_as_reversal` makes it the maximum of the DANN ramp of the gradient-reversal strength, through
  :func:`jaxrec.train.alignment`, the same helper that builds a single model's adversarial objective.
* **the learning rate** lives in the optimizer state (``optax.inject_hyperparams``, see :func:`stack_optimizer`),
  ``float32 [S]`` after stacking, so the optimizer's code is shared and only its state differs.
* **the initial parameters**: model ``s`` is initialised from ``keys[s]`` exactly as
  ``create_train_state(keys[s], ...)`` would.

The step is ``train_step`` itself under ``vmap`` (the combined loss is still written once, in ``Objective.loss``),
so a stack equals ``S`` separate steps up to floating-point reassociation of the batched kernels.

Example:
    >>> tx = stack_optimizer("adam")
    >>> keys = jax.random.split(jax.random.key(0), 3)
    >>> states = create_stacked_state(keys, model, batch, tx, learning_rate=[1e-3, 1e-2, 1e-1])  # doctest: +SKIP
    >>> step = make_stacked_step(objective)  # doctest: +SKIP
    >>> states, metrics = step(states, batch, keys, jnp.array([0.1, 1.0, 10.0]))  # doctest: +SKIP
    >>> metrics["loss"].shape, unstack(states.params, 0)  # (3,) and model 0's parameters  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxrec.train.objective import Objective, alignment
from jaxrec.train.optim import OPTIMIZERS
from jaxrec.train.step import TrainState, train_step


@functools.lru_cache(maxsize=None)
def stack_optimizer(name: str = "adam", **kwargs) -> optax.GradientTransformation:
    """An optimizer of :data:`jaxrec.train.OPTIMIZERS` whose learning rate lives in its state.

    Wrapped in ``optax.inject_hyperparams``, so ``learning_rate`` is an array in the optimizer state
    (``opt_state.hyperparams["learning_rate"]``) rather than a constant compiled into the update; stacking S
    states gives each model its own rate under one program. The rate given here is a placeholder that
    :func:`create_stacked_state` overwrites. Cached: the same arguments return the same object, so stacked states
    built with it share compiled steps (the optimizer is a static part of a ``TrainState``).

    Args:
      name: a key of ``jaxrec.train.OPTIMIZERS`` (``"adam"``, ``"adamw"``, ``"sgd"``, ...).
      **kwargs: other (fixed) hyper-parameters of that optimizer, e.g. ``weight_decay`` for ``"adamw"``.

    Returns:
      The ``optax.GradientTransformation``, with ``learning_rate`` in its state.

    Raises:
      ValueError: unknown name (listing the valid ones).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {sorted(OPTIMIZERS)}")
    return optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=1.0, **kwargs)


def _init_one(key: jax.Array, learning_rate: jax.Array, sample_batch: Any, *, model, optimizer) -> TrainState:
    # The same key split and init call as train.create_train_state, so a stack and separate states start equal.
    params_rng, dropout_rng = jax.random.split(key)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, sample_batch, deterministic=True)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optimizer)
    opt_state = optax.tree.set(state.opt_state, learning_rate=learning_rate)
    return state.replace(opt_state=opt_state, step=jnp.zeros((), jnp.int32))


@functools.lru_cache(maxsize=32)
def _init_fn(model, optimizer) -> Callable:
    """The jitted init of S models, built once per (model, optimizer) so repeated stacks compile it once.

    ``lax.map`` (a loop over the model axis) rather than ``vmap``: the values are the same, and XLA compiles the
    unbatched PRNG/init code faster than its batched form; init runs once per stack.
    """
    init = functools.partial(_init_one, model=model, optimizer=optimizer)
    return jax.jit(lambda keys, rates, batch: jax.lax.map(lambda kr: init(kr[0], kr[1], batch), (keys, rates)))


def create_stacked_state(
    keys: jax.Array, model, sample_batch: Any, optimizer: optax.GradientTransformation, *, learning_rate: Any
) -> TrainState:
    """``S`` train states stacked on a leading model axis, initialised in one compiled program.

    Args:
      keys: ``[S]`` typed PRNG keys (``jax.random.key``); model ``s`` is initialised exactly as
        ``train.create_train_state(keys[s], ...)`` would.
      model: a Flax module called as ``model(batch, deterministic=...)``.
      sample_batch: a batch of the shapes training will use (shared by all models; no model axis).
      optimizer: a transformation with a ``learning_rate`` hyper-parameter in its state, from
        :func:`stack_optimizer` (or ``optax.inject_hyperparams`` directly).
      learning_rate: ``[S]`` learning rates.

    Returns:
      A ``TrainState`` whose every leaf has a leading ``S`` axis (``step`` is ``int32 [S]``). Its ``apply_fn``
      and ``tx`` are part of the compiled step's cache key: reuse the same ``model`` and ``optimizer`` objects
      across calls (bound methods compare by identity), or the stacked step recompiles.

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
            "the optimizer has no learning_rate in its state; build it with stack_optimizer(...) or "
            "optax.inject_hyperparams(...)"
        )
    return _init_fn(model, optimizer)(keys, learning_rate, sample_batch)


def lam_as_weight(objective: Objective, lam: jax.Array) -> Objective:
    """λ (one model's traced scalar) is the weight of ``λ·D`` in the combined loss, replacing ``objective.lam``."""
    return dataclasses.replace(objective, lam=lambda step: lam)


def lam_as_reversal(objective: Objective, lam: jax.Array, *, total_steps: int) -> Objective:
    """λ (one model's traced scalar) is the maximum of the DANN ramp of the gradient-reversal strength.

    The objective's alignment fields become ``jaxrec.train.alignment("adversarial", λ, total_steps=total_steps)``:
    the adversarial term weighted by 1, ``grl_alpha(step)`` given to the model — as for a single model.
    """
    fields = alignment("adversarial", lam, total_steps=total_steps, options=objective.discrepancy_options)
    return dataclasses.replace(objective, **fields)


def _model_axis(states: TrainState) -> tuple[int, ...]:
    return jnp.shape(states.step)


def _stacked_step(states, batch, keys, lam, *, objective, bind_lam, chunk):
    axis = _model_axis(states)
    if len(axis) != 1 or jnp.shape(keys) != axis or jnp.shape(lam) != axis:
        raise ValueError(
            f"expected stacked states with step [S], keys [S] and lam [S]; got step {axis}, keys "
            f"{jnp.shape(keys)}, lam {jnp.shape(lam)}"
        )

    def one(xs):
        state, key, lam_s = xs
        return train_step(state, batch, key, objective=bind_lam(objective, lam_s))

    xs = (states, keys, jnp.asarray(lam, jnp.float32))
    if chunk is None or chunk >= axis[0]:
        return jax.vmap(one)(xs)
    return jax.lax.map(one, xs, batch_size=chunk)


def make_stacked_step(
    objective: Objective,
    *,
    bind_lam: Callable[[Objective, jax.Array], Objective] | None = None,
    chunk: int | None = None,
    donate: bool = True,
) -> Callable:
    """The compiled stacked step ``(states, batch, keys, lam) -> (states, metrics)``.

    ``jax.vmap`` of :func:`jaxrec.train.train_step` over the leading model axis of ``states``, ``keys`` and
    ``lam``; the batch is shared. Build it once and reuse it: calls with the same shapes never recompile.

    Args:
      objective: the static part of the combined loss (task losses, discrepancy, weights).
      bind_lam: ``(objective, λ) -> objective`` for one model's traced scalar λ. Default :func:`lam_as_weight`
        (λ replaces ``objective.lam`` as the constant weight of ``λ·D``); for adversarial alignment
        ``functools.partial(lam_as_reversal, total_steps=...)``; for a scheduled weight, e.g.
        ``lambda o, lam: dataclasses.replace(o, lam=lambda step: lam * schedule(step))``.
      chunk: None (default) vmaps all S models at once. An int ``c < S`` runs ``ceil(S / c)`` vmapped groups of
        ``c`` one after another inside the same program (``jax.lax.map(..., batch_size=c)``), so only ``c``
        models' activations and gradients are live at once (a memory bound for large S on an accelerator);
        ``chunk=1`` is a sequential loop over the models, compiled once. Same results either way.
      donate: donate the states' buffers to the step (keep copies with ``train.copy_tree``).

    Returns:
      ``step(states, batch, keys, lam)`` with ``states`` from :func:`create_stacked_state` (leading ``[S]``),
      ``batch`` as for ``train_step`` (no model axis), ``keys [S]`` typed PRNG keys (dropout; folded with the
      step as in ``train_step``) and ``lam float32 [S]``; returns the new states and metrics
      ``{name: float32 [S]}`` (``loss``, ``grad_norm``, ``task/<domain>``, ``discrepancy``, ``lam``, ...).

    Raises:
      ValueError: ``chunk < 1``; at trace time, ``keys`` or ``lam`` not ``[S]`` (all shapes quoted).
    """
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk={chunk!r} must be None or an int >= 1")
    bind_lam = lam_as_weight if bind_lam is None else bind_lam
    fn = functools.partial(_stacked_step, objective=objective, bind_lam=bind_lam, chunk=chunk)
    return jax.jit(fn, donate_argnums=(0,) if donate else ())


def unstack(tree: Any, index: int) -> Any:
    """Model ``index`` of a stacked pytree (every leaf ``[S, ...]`` → ``[...]``)."""
    return jax.tree.map(lambda x: x[index], tree)

"""The objective: how a model's outputs become the combined loss, and how alignment enters it.

The combined loss of every method is ``L = Σ_d w_d · L_task(d) + λ(step) · D(h_source, h_target)``; it is computed
once, in :meth:`Objective.loss`, which the train steps (:func:`jaxrec.train.train_step`,
:func:`jaxrec.train.sparse_train_step`) differentiate. An :class:`Objective` describes it statically (it is fixed
when the step is built): the task losses, the discrepancy ``D`` by name (one of ``losses.DISCREPANCIES``) with its
options, λ, per-task weights, and extra model inputs as functions of the step. :func:`alignment` is the one place
that turns "align with ``D`` at strength λ" into those fields — including the adversarial case, where λ is the
maximum of the DANN ramp of the gradient-reversal strength rather than a loss weight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from jaxrec import losses

_ADVERSARIAL_FLOOR = 1e-6  # the DANN ramp's maximum is max(λ, 1e-6)


def resolve_discrepancy(name: str | Callable | None, options: Mapping[str, Any] | None = None) -> Callable | None:
    """The discrepancy function for ``name`` with ``options`` bound (``losses.get_discrepancy``).

    Args:
      name: a key of ``losses.DISCREPANCIES``, a callable ``D(hs, ht, *, hs_mask, ht_mask)`` (returned as is),
        or None (no alignment term; returned as is).
      options: keyword options of the registered function (e.g. ``{"median_rows": 128}`` for ``"mmd"``).

    Raises:
      ValueError: an unknown name or option (listing the valid ones), or options given with a callable or None
        (bind them into the callable, e.g. with ``functools.partial``).
    """
    if name is None or callable(name):
        if options:
            raise ValueError(
                f"discrepancy_options {dict(options)} need a registered discrepancy name, got {name!r}; "
                f"bind options into a callable yourself (functools.partial)"
            )
        return name
    return losses.get_discrepancy(name, **(options or {}))


def _frozen(name: str, value: Any) -> Any:
    """``value`` in a hashable form: sequences and arrays become (nested) tuples; TypeError if still unhashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(name, v) for v in value)
    if isinstance(value, (np.ndarray, jax.Array, np.generic)):
        try:
            return _frozen(name, np.asarray(value).tolist())
        except Exception as e:  # a traced value or typed PRNG keys
            raise TypeError(f"discrepancy_options[{name!r}] must be a concrete value, got {value!r}") from e
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"discrepancy_options[{name!r}] must be hashable (an Objective is static under jit), got {value!r}"
        ) from None
    return value


def _frozen_options(options: Mapping[str, Any] | None) -> FrozenDict | None:
    """``options`` as an immutable, hashable mapping (None when empty)."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"discrepancy_options must be a mapping of option name -> value, got {options!r}")
    if not options:
        return None
    return FrozenDict({str(k): _frozen(k, v) for k, v in options.items()})


@dataclasses.dataclass(frozen=True)
class Objective:
    """How the combined loss is computed from a model's outputs. Static: fixed when the step is built.

    Attributes:
      task_loss: ``(outputs, batch) -> {name: scalar}``, the per-domain task losses (already reduced with masks,
        e.g. ``losses.mean_where(losses.bpr(...), where=mask)``); regularizers may be extra entries.
      discrepancy: a name of ``losses.DISCREPANCIES`` (``"mean_l2"``, ``"linear_mmd"``, ``"mmd"``, ``"coral"``,
        ``"sliced_wasserstein"``, ``"adversarial"``), a callable ``D(hs, ht, *, hs_mask, ht_mask)``, or None.
        Applied to ``outputs["align"] = (hs, ht, hs_mask, ht_mask)`` (for ``"adversarial"``: the domain
        classifier's logits on gradient-reversed representations).
      lam: λ, a float or a schedule ``step -> λ`` (e.g. ``losses.dann_lambda_schedule``).
      weights: per-task weights ``{name: w}`` or a schedule ``step -> {name: w}`` (alternating training, see
        :func:`alternating_weights`); None for all 1.
      model_kwargs: optional ``step -> dict`` of extra keyword inputs to the model (e.g. a gradient-reversal
        ``grl_alpha`` that follows a schedule) — explicit inputs, never flags mutated on the model.
      discrepancy_options: keyword options of the named discrepancy, e.g. ``{"median_scales": (0.5, 1.0, 2.0),
        "median_rows": 128}`` for ``"mmd"``; stored as an immutable ``FrozenDict`` (sequences as tuples), so the
        objective stays hashable. None (or empty) for the function's defaults.

    Raises:
      ValueError: on construction, an unknown discrepancy name or option (listing the valid ones), or ``lam < 0``.

    Example:
      >>> objective = Objective(
      ...     task_loss, discrepancy="mmd", discrepancy_options={"median_scales": (0.5, 1.0, 2.0)}, lam=1.0
      ... )  # doctest: +SKIP
    """

    task_loss: Callable[[Mapping[str, Any], Any], Mapping[str, jax.Array]]
    discrepancy: str | Callable | None = None
    lam: float | Callable[[jax.Array], jax.Array] = 0.0
    weights: Mapping[str, float] | Callable[[jax.Array], Mapping[str, jax.Array]] | None = None
    model_kwargs: Callable[[jax.Array], Mapping[str, Any]] | None = None
    discrepancy_options: Mapping[str, Any] | None = None

    def __post_init__(self):
        object.__setattr__(self, "discrepancy_options", _frozen_options(self.discrepancy_options))
        resolve_discrepancy(self.discrepancy, self.discrepancy_options)  # raises now, not at trace time
        if not callable(self.lam) and self.lam < 0:
            raise ValueError(f"lam={self.lam} must be >= 0")

    def loss(self, outputs: Mapping[str, Any], batch: Any, step: jax.Array) -> tuple[jax.Array, dict]:
        """The combined loss ``Σ_d w_d · L_task(d) + λ(step) · D(outputs["align"])`` at ``step``.

        Returns:
          ``(loss, parts)`` as :func:`jaxrec.losses.combined_loss` returns them.
        """
        tasks = self.task_loss(outputs, batch)
        disc = None
        discrepancy = resolve_discrepancy(self.discrepancy, self.discrepancy_options)
        if discrepancy is not None:
            hs, ht, hs_mask, ht_mask = outputs["align"]
            disc = discrepancy(hs, ht, hs_mask=hs_mask, ht_mask=ht_mask)
        return losses.combined_loss(tasks, disc, lam=_at(self.lam, step), weights=_at(self.weights, step))


def _at(value, step):
    """``value(step)`` for a schedule, else ``value``."""
    return value(step) if callable(value) else value


def alignment(
    discrepancy: str | Callable | None,
    lam: Any,
    *,
    total_steps: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The :class:`Objective` fields that align two domains with ``discrepancy`` at strength ``lam``.

    * Every discrepancy but ``"adversarial"``: λ is the weight of ``λ·D`` in the combined loss
      (``lam=lam``, ``model_kwargs=None``).
    * ``"adversarial"`` (DANN): the domain-classification loss is weighted by 1, and λ is the maximum of the DANN
      ramp of the gradient-reversal strength, ``grl_alpha(step) = losses.dann_lambda_schedule(total_steps=
      total_steps, max_value=max(λ, 1e-6))(step)``, passed to the model through ``model_kwargs`` (so the
      classifier learns at full strength while the encoder's reversed gradient ramps up).

    Args:
      discrepancy: a name of ``losses.DISCREPANCIES``, a callable, or None.
      lam: λ >= 0: a Python float, or a scalar array — also a traced one, e.g. one model's λ in a vmapped stack
        (``jaxrec.train.stack``). For a non-adversarial term a schedule ``step -> λ`` is passed through.
      total_steps: the length of the DANN ramp (steps of the whole run); needed for ``"adversarial"`` only.
      options: keyword options of the discrepancy (``Objective.discrepancy_options``).

    Returns:
      ``{"discrepancy", "discrepancy_options", "lam", "model_kwargs"}``, to pass as ``Objective(task_loss,
      **alignment(...))`` or ``dataclasses.replace(objective, **alignment(...))``.

    Raises:
      ValueError: ``"adversarial"`` without a positive int ``total_steps``.
      TypeError: ``"adversarial"`` with a schedule for ``lam``.

    Example:
      >>> kw = alignment("adversarial", 0.1, total_steps=1000)
      >>> kw["lam"], sorted(kw["model_kwargs"](0))  # grl_alpha(step) = 0.1 · tanh(5 · step / 1000)
      (1.0, ['grl_alpha'])
    """
    if discrepancy != "adversarial":
        return {"discrepancy": discrepancy, "discrepancy_options": options, "lam": lam, "model_kwargs": None}
    if total_steps is None:
        raise ValueError("the adversarial alignment needs total_steps (the length of the DANN ramp)")
    if callable(lam):
        raise TypeError("the adversarial λ is the maximum of the DANN ramp: a number or a scalar array, not a schedule")
    if isinstance(lam, (int, float)):
        peak = max(lam, _ADVERSARIAL_FLOOR)
    else:
        peak = jnp.maximum(lam, _ADVERSARIAL_FLOOR)
    ramp = losses.dann_lambda_schedule(total_steps=total_steps, max_value=peak)
    return {
        "discrepancy": "adversarial",
        "discrepancy_options": options,
        "lam": 1.0,
        "model_kwargs": lambda step: {"grl_alpha": ramp(step)},
    }


def alternating_weights(names: tuple[str, ...]) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """Weights for alternating training: step ``s`` trains only task ``names[s % len(names)]`` (shapes static)."""

    def weights(step):
        turn = step % len(names)
        return {name: (turn == k).astype(jnp.float32) for k, name in enumerate(names)}

    return weights

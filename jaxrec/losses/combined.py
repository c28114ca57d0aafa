"""The combined objective ``L = Σ_d w_d · L_task(d) + λ · D``, returned with its parts for logging.

The task losses come in already reduced to scalars (e.g. with ``mean_where``); ``D`` is a discrepancy term from
:data:`jaxrec.losses.DISCREPANCIES` (or None). ``jaxrec.train`` calls this once, in ``Objective.loss``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxrec.losses.checks import ArrayLike, check_nonneg_static


def _scalar(name: str, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {x.shape}; reduce it first (e.g. mean_where)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def combined_loss(
    task_losses: Mapping[str, ArrayLike],
    discrepancy: ArrayLike | None,
    *,
    lam: ArrayLike,
    weights: Mapping[str, ArrayLike] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L = Σ_d w_d · L_task(d) + λ · D``, returned with all of its parts for logging.

    Args:
      task_losses: ``{domain name: scalar task loss}`` (already reduced, e.g. with ``mean_where``).
      discrepancy: the scalar ``D`` (a discrepancy term or ``domain_adversarial_loss``), or None for no term.
      lam: λ >= 0 (a scalar; checked when concrete, e.g. the value of a schedule outside ``jit``).
      weights: optional ``{domain name: w_d >= 0}`` with exactly the keys of ``task_losses``; default all 1.

    Returns:
      ``(total, parts)`` where ``parts`` holds ``"task/<name>"`` (each unweighted task loss), ``"task"``
      (``Σ_d w_d L_d``), ``"discrepancy"`` (``D``), ``"lam"``, ``"weighted_discrepancy"`` (``λ D``) and
      ``"total"``.

    Example:
      >>> total, parts = combined_loss({"source": 1.0, "target": 2.0}, 0.5, lam=2.0)
      >>> float(total), float(parts["task"])
      (4.0, 3.0)
    """
    if not isinstance(task_losses, Mapping) or not task_losses:
        raise ValueError(f"task_losses must be a non-empty mapping of domain name -> scalar, got {task_losses!r}")
    names = list(task_losses)
    if weights is None:
        weights = {name: 1.0 for name in names}
    if not isinstance(weights, Mapping) or set(weights) != set(names):
        got = sorted(weights) if isinstance(weights, Mapping) else weights
        raise ValueError(f"weights must have exactly the task_losses keys {sorted(names)}, got {got}")
    lam = _scalar("lam", lam)
    check_nonneg_static("lam", lam)
    parts: dict[str, jax.Array] = {}
    task_total = jnp.zeros((), jnp.float32)
    for name in names:
        loss = _scalar(f"task_losses[{name!r}]", task_losses[name])
        weight = _scalar(f"weights[{name!r}]", weights[name])
        check_nonneg_static(f"weights[{name!r}]", weight)
        parts[f"task/{name}"] = loss
        task_total = task_total + weight * loss
    disc = jnp.zeros((), task_total.dtype) if discrepancy is None else _scalar("discrepancy", discrepancy)
    weighted = lam * disc
    total = task_total + weighted
    parts.update(task=task_total, discrepancy=disc, lam=lam, weighted_discrepancy=weighted, total=total)
    return total, parts

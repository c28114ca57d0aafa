"""λ schedules, optax-style: ``schedule(step) -> value``, jittable, float32.

A schedule gives the weight λ of the alignment term (``train.Objective.lam``) or the strength of gradient reversal
(``grl_alpha``, see ``train.alignment``) as a function of the global step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrec import checks
from jaxrec.losses.checks import ArrayLike, check_nonneg_static

Schedule = Callable[[ArrayLike], jax.Array]


def dann_lambda_schedule(*, total_steps: int, gamma: float = 10.0, max_value: float = 1.0) -> Schedule:
    """The DANN ramp ``λ(step) = max_value · (2 / (1 + exp(−γ p)) − 1)``, ``p = clip(step / total_steps, 0, 1)``.

    Starts at 0, rises smoothly and saturates near ``max_value`` (``tanh(γ/2) · max_value`` at ``p = 1``),
    suppressing the noisy adversarial signal early in training.

    Args:
      total_steps: steps of the whole run (> 0); progress is clipped at 1 beyond it.
      gamma: steepness γ (>= 0).
      max_value: the asymptotic value (>= 0).

    Returns:
      A jittable ``schedule(step) -> scalar`` (float32).

    Example:
      >>> float(dann_lambda_schedule(total_steps=100)(0))
      0.0
    """
    total_steps = checks.positive_int("total_steps", total_steps)
    check_nonneg_static("gamma", gamma)
    check_nonneg_static("max_value", max_value)

    def schedule(step: ArrayLike) -> jax.Array:
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
        # 2 / (1 + exp(-x)) - 1 == tanh(x / 2), computed without cancellation near 0.
        return max_value * jnp.tanh(0.5 * gamma * progress)

    return schedule


def constant_schedule(value: float) -> Schedule:
    """``λ(step) = value`` (>= 0).

    Example:
      >>> float(constant_schedule(0.3)(7))
      0.30000001192092896
    """
    check_nonneg_static("value", value)

    def schedule(step: ArrayLike) -> jax.Array:
        return jnp.full(jnp.shape(step), value, jnp.float32)

    return schedule


def linear_warmup_schedule(*, warmup_steps: int, max_value: float = 1.0, init_value: float = 0.0) -> Schedule:
    """Linear ramp from ``init_value`` at step 0 to ``max_value`` at ``warmup_steps``, constant afterwards.

    Args:
      warmup_steps: length of the ramp (>= 0; 0 means constant ``max_value``).
      max_value: final value (>= 0).
      init_value: value at step 0 (>= 0).

    Returns:
      A jittable ``schedule(step) -> scalar`` (float32).

    Example:
      >>> float(linear_warmup_schedule(warmup_steps=10, max_value=2.0)(5))
      1.0
    """
    warmup_steps = checks.non_negative_int("warmup_steps", warmup_steps)
    check_nonneg_static("max_value", max_value)
    check_nonneg_static("init_value", init_value)

    def schedule(step: ArrayLike) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps == 0:
            return jnp.full(step.shape, max_value, jnp.float32)
        frac = jnp.clip(step / warmup_steps, 0.0, 1.0)
        return jnp.asarray(init_value + (max_value - init_value) * frac, jnp.float32)

    return schedule

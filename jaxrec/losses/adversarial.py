"""The adversarial domain loss (DANN) and its form as a registered discrepancy.

Axis conventions: ``n``, ``m`` are the rows of the source / target domain; the inputs here are the domain
classifier's logits, ``[n]`` (or ``[n, 1]``) and ``[m]`` (or ``[m, 1]``), not representations. Gradient reversal
itself is a model component (``jaxrec.models.gradient_reversal``); the DANN ramp of its strength is
``jaxrec.losses.dann_lambda_schedule``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.losses.checks import ArrayLike, float_array
from jaxrec.losses.task import mean_where, sigmoid_bce


def _domain_logits(name: str, x: ArrayLike) -> jax.Array:
    x = float_array(name, x)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name} must be [rows] or [rows, 1] domain-classifier logits, got {x.shape}")
    return x


def domain_adversarial_loss(
    source_logits: ArrayLike,
    target_logits: ArrayLike,
    *,
    source_mask: ArrayLike | None = None,
    target_mask: ArrayLike | None = None,
) -> jax.Array:
    """Domain-classification BCE (source label 1, target label 0), balanced over the two domains.

    ``½ · mean_valid BCE(source_logits, 1) + ½ · mean_valid BCE(target_logits, 0)``; each domain weighs ½
    whatever its row count, so ``n != m`` does not bias the classifier towards the larger domain. A fully
    masked side contributes 0; both sides masked gives 0.

    How it composes with gradient reversal (DANN): the model feeds the representations through
    ``models.gradient_reversal(h, alpha)`` (identity forward, ``−alpha × grad`` backward) before the domain
    classifier, and this loss is simply *added* to the task loss and minimised over all parameters. The
    classifier's parameters then descend this loss (learn to tell the domains apart) while the encoder receives
    ``−alpha`` times its gradient (learns to confuse the classifier). Put the λ ramp
    (``dann_lambda_schedule``) in ``alpha`` and weight this loss by 1 to reproduce DANN; weighting the loss by
    λ instead (e.g. via ``combined_loss(..., lam=λ)``) also scales the classifier's own learning signal.

    Args:
      source_logits: ``[n]`` (or ``[n, 1]``) classifier logits for source rows.
      target_logits: ``[m]`` (or ``[m, 1]``) classifier logits for target rows.
      source_mask: optional ``[n]`` mask of valid source rows.
      target_mask: optional ``[m]`` mask of valid target rows.

    Returns:
      A scalar loss.

    Example:
      >>> domain_adversarial_loss(jnp.zeros(3), jnp.zeros(5))  # chance level: log 2
      Array(0.6931472, dtype=float32)
    """
    s = _domain_logits("source_logits", source_logits)
    t = _domain_logits("target_logits", target_logits)
    source = sigmoid_bce(s, jnp.ones_like(s), where=source_mask)
    target = sigmoid_bce(t, jnp.zeros_like(t), where=target_mask)
    return 0.5 * mean_where(source, where=source_mask) + 0.5 * mean_where(target, where=target_mask)


def adversarial_discrepancy(
    hs: ArrayLike, ht: ArrayLike, *, hs_mask: ArrayLike | None = None, ht_mask: ArrayLike | None = None
) -> jax.Array:
    """:func:`domain_adversarial_loss` under the common discrepancy signature (registered as ``"adversarial"``).

    Unlike the other discrepancies, its inputs are the **domain classifier's logits**, not representations: a
    model aligning adversarially puts ``outputs["align"] = (source_logits, target_logits, source_mask,
    target_mask)``, the logits computed on gradient-reversed representations.

    Args:
      hs: ``[n]`` (or ``[n, 1]``) classifier logits of the source rows.
      ht: ``[m]`` (or ``[m, 1]``) classifier logits of the target rows.
      hs_mask: optional ``[n]`` mask of valid source rows.
      ht_mask: optional ``[m]`` mask of valid target rows.

    Returns:
      A scalar loss, ``domain_adversarial_loss(hs, ht, source_mask=hs_mask, target_mask=ht_mask)``.

    Example:
      >>> adversarial_discrepancy(jnp.zeros(3), jnp.zeros(5))  # chance level: log 2
      Array(0.6931472, dtype=float32)
    """
    return domain_adversarial_loss(hs, ht, source_mask=hs_mask, target_mask=ht_mask)

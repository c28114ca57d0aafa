"""Adversarial domain alignment (DANN): the gradient-reversal layer and the domain classifier built on it.

Axis conventions: ``batch`` (B) rows, ``dim`` (D) width of the representation being aligned; the classifier
returns one logit per row, ``[B]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.models.layers import MLP, Activation, Array, check_float, check_float_rank, check_tower


@jax.custom_vjp
def _reverse(x: Array, alpha: Array) -> Array:
    return x


def _reverse_fwd(x: Array, alpha: Array) -> tuple[Array, Array]:
    return x, alpha


def _reverse_bwd(alpha: Array, g: Array) -> tuple[Array, Array]:
    return (-alpha * g).astype(g.dtype), jnp.zeros_like(alpha)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: Array, alpha: float | Array = 1.0) -> Array:
    """Gradient-reversal layer (Ganin & Lempitsky, 2015): identity forward, ``-alpha * g`` backward.

    ``alpha`` is not differentiated (it receives a zero cotangent), so it may be a traced scalar, e.g. a
    schedule value computed inside ``jit``.

    Args:
      x: any floating array, e.g. ``[batch, dim]``.
      alpha: non-negative scalar scale of the reversed gradient.

    Returns:
      ``x`` unchanged (same shape and dtype).

    Example:
      >>> g = jax.grad(lambda x: gradient_reversal(x, 0.5).sum())(jnp.ones(3))
      >>> g.tolist()
      [-0.5, -0.5, -0.5]
    """
    check_float(x, "x")
    if isinstance(alpha, (int, float, np.number)) and alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    alpha = jnp.asarray(alpha, jnp.asarray(x).dtype)
    if alpha.ndim != 0:
        raise ValueError(f"alpha must be a scalar, got shape {alpha.shape}")
    return _reverse(x, alpha)


class DomainClassifier(nn.Module):
    """Domain classifier for adversarial alignment (DANN): ``MLP(gradient_reversal(h, alpha))`` → one logit per row.

    The logit is for "row comes from domain 1" (e.g. target); train it with a sigmoid BCE from
    `jaxrec.losses`. The gradient reaching ``h`` is reversed and scaled by ``alpha``.

    Attributes:
      hidden: hidden widths (an output layer of width 1 is appended).
      activation, dropout_rate, use_layer_norm: as in `MLP`.

    Example:
      >>> clf = DomainClassifier(hidden=(8,))
      >>> params = clf.init(jax.random.key(0), jnp.ones((3, 4)))
      >>> clf.apply(params, jnp.ones((3, 4)), 0.5).shape
      (3,)
    """

    hidden: Sequence[int] = (64,)
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    use_layer_norm: bool = False

    def __post_init__(self):
        check_tower(self, "hidden", allow_empty=True)
        super().__post_init__()

    @nn.compact
    def __call__(self, h: Array, alpha: float | Array = 1.0, *, deterministic: bool = True) -> Array:
        """``h`` [B, D] → domain logits ``[B]``; ``alpha`` (scalar, may be traced) scales the reversed gradient."""
        check_float_rank(h, 2, "h", "[batch, dim]")
        h = gradient_reversal(h, alpha)
        logits = MLP(
            tuple(self.hidden) + (1,),
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            use_layer_norm=self.use_layer_norm,
            name="mlp",
        )(h, deterministic=deterministic)
        return logits[:, 0]

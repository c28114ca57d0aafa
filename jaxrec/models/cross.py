"""Cross-connection networks: two domain towers, each reading its own input, joined layer by layer.

`CoNet` adds transfer matrices between the towers; `CrossStitch` mixes their hidden layers with learned 2 × 2
weights. Axis conventions: ``batch`` (B) rows; ``d_a``, ``d_b`` the input widths of towers a and b; ``d_out``
their common output width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxrec.models.layers import Activation, Array, check_float, check_rank, check_tower, resolve_activation


def _check_dual(x_a: Array, x_b: Array) -> None:
    check_float(x_a, "x_a")
    check_float(x_b, "x_b")
    check_rank(x_a, 2, "x_a", "[batch, d_a]")
    check_rank(x_b, 2, "x_b", "[batch, d_b]")
    if x_a.shape[0] != x_b.shape[0]:
        raise ValueError(f"x_a and x_b must have the same batch, got {x_a.shape} and {x_b.shape}")


class CoNet(nn.Module):
    """Collaborative cross network (Hu et al., 2018): two domain towers joined by transfer matrices.

    On every hidden layer i, ``a' = σ(a W_i^a + b_i^a + b H_i)`` and ``b' = σ(b W_i^b + b_i^b + a H_i)``, with
    one transfer matrix ``H_i`` shared by both directions (``shared_transfer=True``, as in the paper; needs
    ``d_a == d_b``) or one per direction (``transfer_ab_{i}`` carries b into a, ``transfer_ba_{i}`` a into b).
    The last layer is a plain linear layer per tower. With all ``H = 0`` the towers are two independent
    `MLP` s (parameters ``a_dense_{i}`` / ``b_dense_{i}``).

    Attributes:
      features: layer widths (last = d_out).
      activation, dropout_rate: as in `MLP`.
      shared_transfer: one ``H_i`` for both directions.

    Example:
      >>> import jax
      >>> m = CoNet(features=(8, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 4)), jnp.ones((2, 4)))
      >>> [o.shape for o in m.apply(params, jnp.ones((2, 4)), jnp.ones((2, 4)))]
      [(2, 1), (2, 1)]
    """

    features: Sequence[int] = (64, 32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    shared_transfer: bool = True

    def __post_init__(self):
        check_tower(self, "features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x_a: Array, x_b: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
        """``x_a`` [B, d_a], ``x_b`` [B, d_b] → ``(out_a [B, d_out], out_b [B, d_out])``."""
        _check_dual(x_a, x_b)
        if self.shared_transfer and x_a.shape[-1] != x_b.shape[-1]:
            raise ValueError(
                f"shared_transfer needs equal input widths, got x_a {x_a.shape} and x_b {x_b.shape}; "
                f"use shared_transfer=False"
            )
        act, init = resolve_activation(self.activation), nn.initializers.lecun_normal()
        a, b = x_a, x_b
        for i, width in enumerate(self.features):
            za = nn.Dense(width, name=f"a_dense_{i}")(a)
            zb = nn.Dense(width, name=f"b_dense_{i}")(b)
            if i < len(self.features) - 1:
                if self.shared_transfer:
                    h_ab = h_ba = self.param(f"transfer_{i}", init, (a.shape[-1], width))
                else:
                    h_ab = self.param(f"transfer_ab_{i}", init, (b.shape[-1], width))
                    h_ba = self.param(f"transfer_ba_{i}", init, (a.shape[-1], width))
                za, zb = za + b @ h_ab, zb + a @ h_ba
                za, zb = act(za), act(zb)
                if self.dropout_rate > 0:
                    drop = nn.Dropout(self.dropout_rate)
                    za, zb = drop(za, deterministic=deterministic), drop(zb, deterministic=deterministic)
            a, b = za, zb
        return a, b


def _stitch_init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    del key
    assert shape == (2, 2), shape
    return jnp.array([[0.9, 0.1], [0.1, 0.9]], dtype)


class CrossStitch(nn.Module):
    """Cross-stitch network (Misra et al., 2016): after every hidden layer, ``[a; b] ← S_i [a; b]``.

    ``S_i`` (parameter ``stitch_{i}``, 2 × 2) starts at ``[[0.9, 0.1], [0.1, 0.9]]``; ``S_i = I`` gives two
    independent `MLP` s (parameters ``a_dense_{i}`` / ``b_dense_{i}``). Input widths may differ.

    Attributes:
      features: layer widths (last = d_out, linear, not stitched).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> import jax
      >>> m = CrossStitch(features=(8, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 4)), jnp.ones((2, 3)))
      >>> [o.shape for o in m.apply(params, jnp.ones((2, 4)), jnp.ones((2, 3)))]
      [(2, 1), (2, 1)]
    """

    features: Sequence[int] = (64, 32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        check_tower(self, "features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x_a: Array, x_b: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
        """``x_a`` [B, d_a], ``x_b`` [B, d_b] → ``(out_a [B, d_out], out_b [B, d_out])``."""
        _check_dual(x_a, x_b)
        act = resolve_activation(self.activation)
        a, b = x_a, x_b
        for i, width in enumerate(self.features):
            a = nn.Dense(width, name=f"a_dense_{i}")(a)
            b = nn.Dense(width, name=f"b_dense_{i}")(b)
            if i < len(self.features) - 1:
                a, b = act(a), act(b)
                if self.dropout_rate > 0:
                    drop = nn.Dropout(self.dropout_rate)
                    a, b = drop(a, deterministic=deterministic), drop(b, deterministic=deterministic)
                s = self.param(f"stitch_{i}", _stitch_init, (2, 2))
                a, b = s[0, 0] * a + s[0, 1] * b, s[1, 0] * a + s[1, 1] * b
        return a, b

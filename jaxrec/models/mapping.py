"""Mapping networks of cold-start transfer: a user's source-domain embedding → their target-domain embedding.

`EMCDRMapping` is one mapping for every user; `PTUPCDRMeta` generates a personalized bridge per user from their
source-domain item history. Axis conventions: ``batch`` (B) users; ``dim`` (D) user embedding width (``d_src``
of the source); ``length`` (L) positions of a history; ``d_item`` item embedding width.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec import checks
from jaxrec.models.layers import (
    MLP,
    Activation,
    Array,
    check_features,
    check_float_rank,
    check_tower,
    resolve_activation,
)


def _masked_softmax(logits: Array, mask: Array, axis: int = -1) -> Array:
    """Softmax over the ``mask``-ed entries of ``axis``; masked entries get 0, an all-masked slice is all 0."""
    neg = jnp.finfo(logits.dtype).min
    shifted = logits - jax.lax.stop_gradient(jnp.max(jnp.where(mask, logits, neg), axis=axis, keepdims=True))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, shifted, 0.0)), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


class EMCDRMapping(nn.Module):
    """EMCDR mapping (Man et al., 2017): source-domain user embedding → target-domain user embedding.

    Trained (in `jaxrec.train`) on overlapping users to regress their target embeddings; applied to cold-start
    users' source embeddings. ``linear=True`` is the paper's linear mapping ``u_s M`` (no bias); otherwise an
    MLP ``hidden → out_dim`` with the paper's tanh hidden activation.

    Attributes:
      out_dim: target embedding width (default: the input width).
      hidden: hidden widths of the MLP mapping (ignored when ``linear``).
      activation: hidden activation (default ``"tanh"``).
      linear: use the linear mapping.
      dropout_rate: as in `MLP`.

    Example:
      >>> m = EMCDRMapping(hidden=(16,))
      >>> params = m.init(jax.random.key(0), jnp.ones((3, 8)))
      >>> m.apply(params, jnp.ones((3, 8))).shape
      (3, 8)
    """

    out_dim: int | None = None
    hidden: Sequence[int] = (128,)
    activation: Activation = "tanh"
    linear: bool = False
    dropout_rate: float = 0.0

    def __post_init__(self):
        if self.out_dim is not None:
            checks.positive_int("out_dim", self.out_dim)
        check_tower(self, "hidden", allow_empty=True)
        super().__post_init__()

    @nn.compact
    def __call__(self, user_src: Array, *, deterministic: bool = True) -> Array:
        """``user_src`` [B, d_s] → mapped target embeddings ``[B, out_dim]``."""
        check_float_rank(user_src, 2, "user_src", "[batch, d_src]")
        out_dim = self.out_dim or user_src.shape[-1]
        if self.linear:
            return nn.Dense(out_dim, use_bias=False, name="linear")(user_src)
        return MLP(
            tuple(self.hidden) + (out_dim,), activation=self.activation, dropout_rate=self.dropout_rate, name="mlp"
        )(user_src, deterministic=deterministic)


class PTUPCDRMeta(nn.Module):
    """PTUPCDR (Zhu et al., 2022): a personalized bridge ``[D, D]`` per user, generated from their source history.

    Characteristic encoder: ``a_j = softmax_j(h(e_j))`` over the valid history items with ``h`` a two-layer
    network (``attention_hidden`` → 1), ``p_u = Σ_j a_j e_j``. Meta network: an MLP ``meta_hidden → D·D``,
    reshaped to the bridge ``W_u``. Output: ``u_s W_u``. Masked items get weight exactly 0; a user with no
    valid item has ``p_u = 0``, hence the bridge ``meta(0)`` — finite, the same for all such users.

    Attributes:
      dim: user embedding width D (bridge is ``[D, D]``).
      attention_hidden: hidden width of the attention network ``h``.
      meta_hidden: hidden widths of the meta network.
      activation: of both networks.

    Example:
      >>> m = PTUPCDRMeta(dim=4, attention_hidden=8, meta_hidden=(8,))
      >>> hist, mask = jnp.ones((2, 5, 6)), jnp.array([[1, 1, 0, 0, 0], [0] * 5], bool)
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 4)), hist, mask)
      >>> m.apply(params, jnp.ones((2, 4)), hist, mask).shape
      (2, 4)
    """

    dim: int
    attention_hidden: int = 64
    meta_hidden: Sequence[int] = (64,)
    activation: Activation = "relu"

    def __post_init__(self):
        checks.positive_int("dim", self.dim)
        checks.positive_int("attention_hidden", self.attention_hidden)
        check_features("meta_hidden", self.meta_hidden, allow_empty=True)
        resolve_activation(self.activation)
        super().__post_init__()

    def setup(self):
        self.attention = MLP((self.attention_hidden, 1), activation=self.activation)
        self.meta = MLP(tuple(self.meta_hidden) + (self.dim * self.dim,), activation=self.activation)

    @staticmethod
    def _mask(history: Array, mask: Array | None) -> Array:
        check_float_rank(history, 3, "history", "[batch, length, d_item]")
        if mask is None:
            return jnp.ones(history.shape[:2], bool)
        if jnp.shape(mask) != history.shape[:2]:
            raise ValueError(f"mask must be [batch, length] = {history.shape[:2]}, got shape {jnp.shape(mask)}")
        return jnp.asarray(mask, bool)

    def characteristic(self, history: Array, mask: Array | None = None) -> tuple[Array, Array]:
        """Returns ``(p_u [B, d_item], attention weights [B, L])`` for ``history`` [B, L, d_item]."""
        mask = self._mask(history, mask)
        weights = _masked_softmax(self.attention(history)[..., 0], mask, axis=-1)  # [B, L]
        return jnp.einsum("bl,bld->bd", weights, jnp.where(mask[..., None], history, 0)), weights

    def bridge(self, history: Array, mask: Array | None = None) -> Array:
        """The personalized bridges ``[B, D, D]`` for ``history`` [B, L, d_item] and ``mask`` [B, L]."""
        p_u, _ = self.characteristic(history, mask)
        return self.meta(p_u).reshape(p_u.shape[0], self.dim, self.dim)

    def __call__(self, user_src: Array, history: Array, mask: Array | None = None) -> Array:
        """Maps ``user_src`` [B, D] through each user's bridge → ``[B, D]``."""
        check_float_rank(user_src, 2, "user_src", f"[batch, dim={self.dim}]")
        if user_src.shape[-1] != self.dim or user_src.shape[0] != jnp.shape(history)[0]:
            raise ValueError(
                f"user_src must be [batch, dim={self.dim}] with the batch of history "
                f"{jnp.shape(history)}, got shape {user_src.shape}"
            )
        return jnp.einsum("bi,bij->bj", user_src, self.bridge(history, mask))

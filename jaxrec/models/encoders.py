"""Encoders of a user: a Transformer over their item history, and shared + domain-specific feature encoders.

Axis conventions: ``batch`` (B) rows; ``length`` (L) positions of an item history, padded with id ``-1``;
``dim`` (D) width of a representation, ``d_in`` of an input; ``domains`` (K). `SharedSpecificEncoder` takes a
domain index as described in `jaxrec.models.layers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxrec import checks
from jaxrec.models.layers import (
    DEFAULT_EMBEDDING_INIT,
    MLP,
    Activation,
    Array,
    check_choice,
    check_features,
    check_float_rank,
    check_int,
    check_rank,
    check_rate,
    parse_domain,
    resolve_activation,
    select_domain,
)


class _EncoderBlock(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)), then x + FF(LN(x)); x [B, T, D], mask [B, 1, 1, T]."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float
    activation: Activation
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, deterministic: bool) -> Array:
        drop = nn.Dropout(self.dropout_rate)
        h = nn.LayerNorm(dtype=self.dtype)(x)
        h = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout_rate, dtype=self.dtype)(
            h, mask=mask, deterministic=deterministic
        )
        x = x + drop(h, deterministic=deterministic)
        h = nn.LayerNorm(dtype=self.dtype)(x)
        h = resolve_activation(self.activation)(nn.Dense(self.mlp_dim, dtype=self.dtype)(h))
        h = nn.Dense(x.shape[-1], dtype=self.dtype)(drop(h, deterministic=deterministic))
        return x + drop(h, deterministic=deterministic)


class HistoryEncoder(nn.Module):
    """Transformer encoder over a user's item history in one domain → a user representation ``[B, D]``.

    Item embedding + learned position embedding, ``num_layers`` pre-norm blocks (multi-head self-attention and
    an MLP), a final LayerNorm, then pooling. Padded positions (item id ``< 0``, or ``False`` in an explicit
    ``mask``) are masked out of attention as keys and out of the pooling, so their ids never affect the output.

    A fully padded history gives a finite output: the zero vector for ``pooling="mean"``; for
    ``pooling="cls"`` the learned "empty history" vector (the CLS token attending only to itself), the same
    for every such user.

    Attributes:
      num_items: rows of this domain's item table; ``None`` for no table (then call `encode` with embeddings).
      max_length: the longest history (number of learned positions).
      dim: model width D (item embedding width); must be divisible by ``num_heads``.
      num_heads, num_layers: attention heads per block, number of blocks.
      mlp_ratio: hidden width of each block's MLP is ``mlp_ratio * dim``.
      dropout_rate: dropout on embeddings, attention weights and residual branches.
      pooling: ``"mean"`` (over valid positions) or ``"cls"`` (a learned token prepended to the sequence).
      activation: of the block MLP.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` on TPU); parameters stay float32.

    Example:
      >>> import jax
      >>> enc = HistoryEncoder(num_items=50, max_length=6, dim=8, num_heads=2, num_layers=1)
      >>> ids = jnp.array([[3, 4, 5, -1, -1, -1], [-1] * 6])
      >>> params = enc.init(jax.random.key(0), ids)
      >>> enc.apply(params, ids).shape
      (2, 8)
    """

    num_items: int | None
    max_length: int
    dim: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4
    dropout_rate: float = 0.0
    pooling: str = "mean"
    activation: Activation = "gelu"
    dtype: Any = None

    def __post_init__(self):
        if self.num_items is not None:
            checks.positive_int("num_items", self.num_items)
        for field in ("max_length", "dim", "num_heads", "num_layers", "mlp_ratio"):
            checks.positive_int(field, getattr(self, field))
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        check_rate("dropout_rate", self.dropout_rate)
        check_choice("pooling", self.pooling, ("mean", "cls"))
        resolve_activation(self.activation)
        super().__post_init__()

    def setup(self):
        if self.num_items is not None:
            self.item_embedding = nn.Embed(
                self.num_items, self.dim, embedding_init=DEFAULT_EMBEDDING_INIT, dtype=self.dtype
            )
        extra = 1 if self.pooling == "cls" else 0
        self.positions = self.param("positions", nn.initializers.normal(0.02), (self.max_length + extra, self.dim))
        if extra:
            self.cls_token = self.param("cls_token", nn.initializers.normal(0.02), (self.dim,))
        self.blocks = [
            _EncoderBlock(self.num_heads, self.mlp_ratio * self.dim, self.dropout_rate, self.activation, self.dtype)
            for _ in range(self.num_layers)
        ]
        self.final_norm = nn.LayerNorm(dtype=self.dtype)
        self.embed_dropout = nn.Dropout(self.dropout_rate)

    def __call__(self, item_ids: Array, mask: Array | None = None, *, deterministic: bool = True) -> Array:
        """Encodes ``item_ids`` [B, L] (L <= max_length, ``-1`` = padding) → ``[B, D]``.

        ``mask`` [B, L] bool, if given, is combined (AND) with ``item_ids >= 0``.
        """
        check_int(item_ids, "item_ids")
        check_rank(item_ids, 2, "item_ids", "[batch, length]")
        if self.num_items is None:
            raise ValueError("HistoryEncoder(num_items=None) has no item table; call encode() with embeddings")
        valid = item_ids >= 0
        if mask is not None:
            if jnp.shape(mask) != item_ids.shape:
                raise ValueError(f"mask must match item_ids {item_ids.shape}, got shape {jnp.shape(mask)}")
            valid = valid & jnp.asarray(mask, bool)
        emb = self.item_embedding(jnp.where(valid, item_ids, 0))
        return self.encode(emb, valid, deterministic=deterministic)

    def encode(self, item_emb: Array, valid: Array, *, deterministic: bool = True) -> Array:
        """Encodes precomputed item embeddings ``[B, L, D]`` with validity mask ``valid`` [B, L] → ``[B, D]``."""
        check_float_rank(item_emb, 3, "item_emb", "[batch, length, dim]")
        batch, length, dim = item_emb.shape
        if dim != self.dim:
            raise ValueError(f"item_emb must be [batch, length, dim={self.dim}], got shape {item_emb.shape}")
        if not 1 <= length <= self.max_length:
            raise ValueError(f"history length must be in [1, max_length={self.max_length}], got shape {item_emb.shape}")
        if jnp.shape(valid) != (batch, length):
            raise ValueError(f"valid must be [batch, length] = {(batch, length)}, got shape {jnp.shape(valid)}")
        valid = jnp.asarray(valid, bool)
        x = jnp.where(valid[..., None], item_emb, 0)
        if self.pooling == "cls":
            cls = jnp.broadcast_to(self.cls_token.astype(x.dtype), (batch, 1, dim))
            x = jnp.concatenate([cls, x], axis=1)
            valid = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)
        x = x + self.positions[: x.shape[1]].astype(x.dtype)
        x = self.embed_dropout(x, deterministic=deterministic)
        # Keys: valid positions only; a row with no valid position attends everywhere (its output is then
        # discarded by the mean pooling) so that no softmax runs over an empty set.
        keys = valid | ~jnp.any(valid, axis=1, keepdims=True)
        attn_mask = keys[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask, deterministic=deterministic)
        x = self.final_norm(x)
        if self.pooling == "cls":
            return x[:, 0]
        count = jnp.sum(valid, axis=1, keepdims=True).astype(x.dtype)
        return jnp.sum(jnp.where(valid[..., None], x, 0), axis=1) / jnp.maximum(count, 1)


# ------------------------------------------------------------------------------------ shared + specific parts
class SharedSpecificEncoder(nn.Module):
    """Domain-invariant (shared) + domain-specific encoders, combined per domain.

    Returns ``(combined, shared, specific)`` so a discrepancy loss can align ``shared`` across domains and an
    orthogonality loss can separate ``shared`` from ``specific``.

    Attributes:
      num_domains: K.
      features: widths of the shared MLP and of each domain's specific MLP (last = D).
      combine: ``"concat"`` (combined is ``[.., 2D]``) or ``"sum"`` (``[.., D]``).
      activation, dropout_rate, use_layer_norm: as in `MLP`.

    Example:
      >>> import jax
      >>> enc = SharedSpecificEncoder(num_domains=2, features=(8, 4))
      >>> params = enc.init(jax.random.key(0), jnp.ones((3, 5)), 0)
      >>> [a.shape for a in enc.apply(params, jnp.ones((3, 5)), jnp.array([0, 1, 1]))]
      [(3, 8), (3, 4), (3, 4)]
    """

    num_domains: int
    features: Sequence[int] = (64, 32)
    combine: str = "concat"
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    use_layer_norm: bool = False

    def __post_init__(self):
        checks.positive_int("num_domains", self.num_domains)
        check_features("features", self.features)
        check_choice("combine", self.combine, ("concat", "sum"))
        resolve_activation(self.activation)
        check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, domain: Any, *, deterministic: bool = True) -> tuple[Array, Array, Array]:
        """``x`` [B, d_in] → ``(combined, shared [B, D], specific)``; ``specific`` is [B, D] or [B, K, D].

        With ``domain=None``, ``specific`` is ``[B, K, D]`` and ``combined`` ``[B, K, 2D or D]``.
        """
        check_float_rank(x, 2, "x", "[batch, d_in]")
        dom = parse_domain(domain, self.num_domains, x.shape[0])
        kw = {"activation": self.activation, "dropout_rate": self.dropout_rate, "use_layer_norm": self.use_layer_norm}
        shared = MLP(tuple(self.features), name="shared", **kw)(x, deterministic=deterministic)
        specific = jnp.stack(
            [
                MLP(tuple(self.features), name=f"specific_{k}", **kw)(x, deterministic=deterministic)
                for k in range(self.num_domains)
            ],
            axis=1,
        )  # [B, K, D]
        specific = select_domain(specific, dom)
        shared_b = jnp.broadcast_to(shared[:, None], specific.shape) if specific.ndim == 3 else shared
        if self.combine == "concat":
            combined = jnp.concatenate([shared_b, specific], axis=-1)
        else:
            combined = shared_b + specific
        return combined, shared, specific

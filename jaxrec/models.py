"""Flax linen networks for cross-domain recommendation.

Thin modules that map ids, features or item histories to embeddings and scores; they never compute losses
(those live in `jaxrec.losses`, and their weighted sum in `jaxrec.train`).

Axis conventions used throughout this file:

* ``batch`` (B) — rows of a batch (users, or user–item pairs).
* ``dim`` (D) — width of an embedding / hidden representation; ``d_in`` the width of an input.
* ``length`` (L) — positions of a user's item history, padded on the right or anywhere with id ``-1``.
* ``domains`` (K) — the number of domains; ``experts`` (E) — experts of a mixture.

Domain index (``SharedSpecificEncoder``, ``SharedBottom``, ``MMoE``, ``PLE``, ``STAR``): every such module takes
``domain`` as one of

* a Python ``int`` in ``[0, K)`` — *static*: every row belongs to that domain; the module returns ``[B, ...]``;
* an integer array ``[B]`` (or a 0-d integer array) — *per row*; returns ``[B, ...]``, row ``b`` from domain
  ``domain[b]``. Values are not checked inside ``jit``; a value outside ``[0, K)`` gives an all-zero row;
* ``None`` — every domain's output, stacked on axis 1: ``[B, K, ...]``.

All modules compute every domain's branch (K is small) and select; under ``jit`` branches that a static
``domain`` does not use are removed as dead code.

Configuration is through module attributes (dataclass fields) with defaults, validated when the module is
constructed; unknown activation names raise ``ValueError`` listing the valid ones. Dropout uses the
``"dropout"`` rng stream and is active only when ``deterministic=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_EMBEDDING_INIT",
    "MLP",
    "PLE",
    "STAR",
    "CoNet",
    "CrossDomainEmbedding",
    "CrossStitch",
    "DomainClassifier",
    "EMCDRMapping",
    "HistoryEncoder",
    "MMoE",
    "PTUPCDRMeta",
    "SharedBottom",
    "SharedSpecificEncoder",
    "TwoTower",
    "gradient_reversal",
]

Array = jax.Array
Activation = str | Callable[[Array], Array]

#: Activation functions accepted by name.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "identity": lambda x: x,
}

#: Default initializer of ID embedding tables: N(0, 0.1²), as is usual for collaborative-filtering embeddings
#: (e.g. LightGCN); the expected squared norm of a row is 0.01·dim.
DEFAULT_EMBEDDING_INIT = nn.initializers.normal(stddev=0.1)

# Per-expert LeCun-normal init for stacked kernels [experts, d_in, d_out] (fan-in = d_in, each expert alone).
_STACKED_KERNEL_INIT = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
)


# ----------------------------------------------------------------------------------------------- validation
def _activation(activation: Activation) -> Callable[[Array], Array]:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid names: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


def _check_choice(field: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {field} {value!r}; valid: {sorted(valid)}")


def _check_features(field: str, features: Sequence[int], *, allow_empty: bool = False) -> None:
    widths = tuple(features)
    if (not widths and not allow_empty) or any(
        not isinstance(w, (int, np.integer)) or isinstance(w, bool) or w < 1 for w in widths
    ):
        raise ValueError(
            f"{field} must be a {'' if allow_empty else 'non-empty '}sequence of positive ints, got {features!r}"
        )


def _check_positive(field: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{field} must be a positive int, got {value!r}")


def _check_rate(field: str, rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{field} must be in [0, 1), got {rate!r}")


def _check_float(x: Array, name: str) -> None:
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {jnp.asarray(x).dtype} (shape {jnp.shape(x)})")


def _check_int(x: Array, name: str) -> None:
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {jnp.asarray(x).dtype} (shape {jnp.shape(x)})")


def _check_rank(x: Array, rank: int, name: str, layout: str) -> None:
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name} must be {layout} (rank {rank}), got shape {jnp.shape(x)}")


def _parse_domain(domain: Any, num_domains: int, batch: int) -> None | int | Array:
    """Normalizes a domain index: None, a static int, or an int32 array [batch] (see the module docstring)."""
    if domain is None:
        return None
    if isinstance(domain, (bool, np.bool_)):
        raise TypeError(f"domain must be an int or an integer array, got {domain!r}")
    if isinstance(domain, (int, np.integer)):
        if not 0 <= domain < num_domains:
            raise ValueError(f"domain {domain} out of range [0, {num_domains})")
        return int(domain)
    _check_int(domain, "domain")
    if isinstance(domain, np.ndarray) and domain.size and (domain.min() < 0 or domain.max() >= num_domains):
        raise ValueError(f"domain values must lie in [0, {num_domains}), got min {domain.min()} max {domain.max()}")
    domain = jnp.asarray(domain, jnp.int32)
    if domain.ndim == 0:
        domain = jnp.broadcast_to(domain, (batch,))
    if domain.shape != (batch,):
        raise ValueError(
            f"domain must be an int, a 0-d array or an array [batch] = ({batch},), got shape {domain.shape}"
        )
    return domain


def _select_domain(stacked: Array, domain: None | int | Array) -> Array:
    """Picks each row's domain from ``stacked`` [B, K, ...] (see `_parse_domain`)."""
    if domain is None:
        return stacked
    if isinstance(domain, int):
        return stacked[:, domain]
    hit = domain[:, None] == jnp.arange(stacked.shape[1])  # [B, K]
    hit = hit.reshape(hit.shape + (1,) * (stacked.ndim - 2))
    return jnp.sum(jnp.where(hit, stacked, 0), axis=1)


def _l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """x / max(‖x‖, eps) along the last axis; finite value and gradient at x = 0."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _masked_softmax(logits: Array, mask: Array, axis: int = -1) -> Array:
    """Softmax over the ``mask``-ed entries of ``axis``; masked entries get 0, an all-masked slice is all 0."""
    neg = jnp.finfo(logits.dtype).min
    shifted = logits - jax.lax.stop_gradient(jnp.max(jnp.where(mask, logits, neg), axis=axis, keepdims=True))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, shifted, 0.0)), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


# ------------------------------------------------------------------------------------------ gradient reversal
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
    _check_float(x, "x")
    if isinstance(alpha, (int, float, np.number)) and alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    alpha = jnp.asarray(alpha, jnp.asarray(x).dtype)
    if alpha.ndim != 0:
        raise ValueError(f"alpha must be a scalar, got shape {alpha.shape}")
    return _reverse(x, alpha)


# ------------------------------------------------------------------------------------------------- towers
class MLP(nn.Module):
    """Embedding tower: ``Dense → [LayerNorm] → activation → [Dropout]`` per hidden layer, then a Dense.

    Attributes:
      features: widths of the Dense layers; the last is the output width.
      activation: name in `ACTIVATIONS` or a callable.
      dropout_rate: dropout after each activation (rng stream ``"dropout"``).
      use_layer_norm: LayerNorm before each activation.
      activate_final: also normalize/activate/drop out the last layer's output.

    Parameters are named ``dense_{i}`` (and ``norm_{i}``).

    Example:
      >>> mlp = MLP((16, 8))
      >>> params = mlp.init(jax.random.key(0), jnp.ones((4, 5)))
      >>> mlp.apply(params, jnp.ones((4, 5))).shape
      (4, 8)
    """

    features: Sequence[int] = (64, 64)
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    use_layer_norm: bool = False
    activate_final: bool = False

    def __post_init__(self):
        _check_features("features", self.features)
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
        """Maps ``x`` [..., d_in] to [..., features[-1]]."""
        _check_float(x, "x")
        if jnp.ndim(x) < 1:
            raise ValueError(f"x must be [..., d_in] (rank >= 1), got shape {jnp.shape(x)}")
        act = _activation(self.activation)
        for i, width in enumerate(self.features):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if i < len(self.features) - 1 or self.activate_final:
                if self.use_layer_norm:
                    x = nn.LayerNorm(name=f"norm_{i}")(x)
                x = act(x)
                if self.dropout_rate > 0:
                    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return x


class CrossDomainEmbedding(nn.Module):
    """ID embedding tables: one user table shared by all domains, one item table per domain.

    Ids ``< 0`` (padding, ``-1`` by convention) look up an all-zero vector. Initialize through ``__call__``
    (which creates every domain's table).

    Attributes:
      num_users: rows of the shared user table.
      num_items: rows of each domain's item table, ``[K]``.
      dim: embedding width D.
      embedding_init: initializer of every table (default `DEFAULT_EMBEDDING_INIT`, N(0, 0.1²)).

    Example:
      >>> emb = CrossDomainEmbedding(num_users=10, num_items=(5, 7), dim=4)
      >>> params = emb.init(jax.random.key(0), jnp.arange(3), jnp.arange(3), 1)
      >>> u, i = emb.apply(params, jnp.arange(3), jnp.array([0, 6, -1]), 1)
      >>> u.shape, i.shape
      ((3, 4), (3, 4))
    """

    num_users: int
    num_items: Sequence[int]
    dim: int = 64
    embedding_init: Callable[..., Array] = DEFAULT_EMBEDDING_INIT

    def __post_init__(self):
        _check_positive("num_users", self.num_users)
        _check_features("num_items", self.num_items)
        _check_positive("dim", self.dim)
        super().__post_init__()

    def setup(self):
        self.user_table = nn.Embed(self.num_users, self.dim, embedding_init=self.embedding_init)
        self.item_tables = [
            nn.Embed(n, self.dim, embedding_init=self.embedding_init, name=f"items_{k}")
            for k, n in enumerate(self.num_items)
        ]

    @staticmethod
    def _lookup(table: nn.Embed, ids: Array, name: str) -> Array:
        _check_int(ids, name)
        valid = ids >= 0
        return jnp.where(valid[..., None], table(jnp.where(valid, ids, 0)), 0.0)

    def _check_domain(self, domain: int) -> int:
        if not isinstance(domain, (int, np.integer)) or isinstance(domain, bool):
            raise TypeError(f"item domain must be a static int (tables differ in size), got {domain!r}")
        if not 0 <= domain < len(self.num_items):
            raise ValueError(f"domain {domain} out of range [0, {len(self.num_items)})")
        return int(domain)

    def users(self, user_ids: Array) -> Array:
        """User embeddings ``[..., D]`` for ``user_ids`` [...]."""
        return self._lookup(self.user_table, user_ids, "user_ids")

    def items(self, item_ids: Array, domain: int) -> Array:
        """Item embeddings ``[..., D]`` of domain ``domain`` (static int) for ``item_ids`` [...]."""
        return self._lookup(self.item_tables[self._check_domain(domain)], item_ids, "item_ids")

    def item_table(self, domain: int) -> Array:
        """The whole item table of ``domain``, ``[num_items[domain], D]`` (for retrieval)."""
        return self.item_tables[self._check_domain(domain)].embedding

    def __call__(self, user_ids: Array, item_ids: Array, domain: int) -> tuple[Array, Array]:
        """Returns ``(users(user_ids), items(item_ids, domain))``."""
        if self.is_initializing():
            for table in self.item_tables:
                table(jnp.zeros((), jnp.int32))
        return self.users(user_ids), self.items(item_ids, domain)


class TwoTower(nn.Module):
    """Two-tower scorer: ``score = <user_tower(u), item_tower(i)>``, dot product or cosine.

    With ``similarity="cosine"`` the tower outputs are L2-normalized (``x / max(‖x‖, 1e-12)``), so the
    embeddings from `user_embed` / `item_embed` can go straight to a dot-product top-k. Initialize through
    ``__call__`` (which creates both towers).

    Attributes:
      user_features: widths of the user MLP; the last is the embedding width D.
      item_features: widths of the item MLP (default: ``user_features``); must end in the same D.
      activation, dropout_rate, use_layer_norm: as in `MLP`, for both towers.
      similarity: ``"dot"`` or ``"cosine"``.

    Example:
      >>> tt = TwoTower((8, 4), similarity="cosine")
      >>> params = tt.init(jax.random.key(0), jnp.ones((3, 5)), jnp.ones((3, 6)))
      >>> tt.apply(params, jnp.ones((3, 5)), jnp.ones((7, 6)), method=TwoTower.score_matrix).shape
      (3, 7)
    """

    user_features: Sequence[int] = (64, 32)
    item_features: Sequence[int] | None = None
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    use_layer_norm: bool = False
    similarity: str = "dot"

    def __post_init__(self):
        _check_features("user_features", self.user_features)
        if self.item_features is not None:
            _check_features("item_features", self.item_features)
            if tuple(self.item_features)[-1] != tuple(self.user_features)[-1]:
                raise ValueError(
                    f"user and item towers must end in the same width, got user_features "
                    f"{tuple(self.user_features)} and item_features {tuple(self.item_features)}"
                )
        _check_choice("similarity", self.similarity, ("dot", "cosine"))
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    def setup(self):
        kw = {"activation": self.activation, "dropout_rate": self.dropout_rate, "use_layer_norm": self.use_layer_norm}
        item_features = self.user_features if self.item_features is None else self.item_features
        self.user_tower = MLP(tuple(self.user_features), **kw)
        self.item_tower = MLP(tuple(item_features), **kw)

    def _finish(self, x: Array) -> Array:
        return _l2_normalize(x) if self.similarity == "cosine" else x

    def user_embed(self, user_x: Array, *, deterministic: bool = True) -> Array:
        """User embeddings ``[B, D]`` from user features ``[B, d_user]``."""
        _check_rank(user_x, 2, "user_x", "[batch, d_user]")
        return self._finish(self.user_tower(user_x, deterministic=deterministic))

    def item_embed(self, item_x: Array, *, deterministic: bool = True) -> Array:
        """Item embeddings ``[N, D]`` from item features ``[N, d_item]``."""
        _check_rank(item_x, 2, "item_x", "[num_items, d_item]")
        return self._finish(self.item_tower(item_x, deterministic=deterministic))

    def score_matrix(self, user_x: Array, item_x: Array, *, deterministic: bool = True) -> Array:
        """All-pairs scores ``[B, N]`` for user features ``[B, d_user]`` and item features ``[N, d_item]``."""
        u = self.user_embed(user_x, deterministic=deterministic)
        return u @ self.item_embed(item_x, deterministic=deterministic).T

    def __call__(self, user_x: Array, item_x: Array, *, deterministic: bool = True) -> Array:
        """Row-wise scores ``[B]`` of user ``b`` with item ``b``; ``user_x`` [B, d_user], ``item_x`` [B, d_item]."""
        _check_rank(user_x, 2, "user_x", "[batch, d_user]")
        _check_rank(item_x, 2, "item_x", "[batch, d_item]")
        if user_x.shape[0] != item_x.shape[0]:
            raise ValueError(f"user_x and item_x must have the same batch, got {user_x.shape} and {item_x.shape}")
        u = self.user_embed(user_x, deterministic=deterministic)
        i = self.item_embed(item_x, deterministic=deterministic)
        return jnp.sum(u * i, axis=-1)


# ----------------------------------------------------------------------------------------- history encoder
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
        h = _activation(self.activation)(nn.Dense(self.mlp_dim, dtype=self.dtype)(h))
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
            _check_positive("num_items", self.num_items)
        for field in ("max_length", "dim", "num_heads", "num_layers", "mlp_ratio"):
            _check_positive(field, getattr(self, field))
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        _check_rate("dropout_rate", self.dropout_rate)
        _check_choice("pooling", self.pooling, ("mean", "cls"))
        _activation(self.activation)
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
        _check_int(item_ids, "item_ids")
        _check_rank(item_ids, 2, "item_ids", "[batch, length]")
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
        _check_float(item_emb, "item_emb")
        _check_rank(item_emb, 3, "item_emb", "[batch, length, dim]")
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
        _check_positive("num_domains", self.num_domains)
        _check_features("features", self.features)
        _check_choice("combine", self.combine, ("concat", "sum"))
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, domain: Any, *, deterministic: bool = True) -> tuple[Array, Array, Array]:
        """``x`` [B, d_in] → ``(combined, shared [B, D], specific)``; ``specific`` is [B, D] or [B, K, D].

        With ``domain=None``, ``specific`` is ``[B, K, D]`` and ``combined`` ``[B, K, 2D or D]``.
        """
        _check_float(x, "x")
        _check_rank(x, 2, "x", "[batch, d_in]")
        dom = _parse_domain(domain, self.num_domains, x.shape[0])
        kw = {"activation": self.activation, "dropout_rate": self.dropout_rate, "use_layer_norm": self.use_layer_norm}
        shared = MLP(tuple(self.features), name="shared", **kw)(x, deterministic=deterministic)
        specific = jnp.stack(
            [
                MLP(tuple(self.features), name=f"specific_{k}", **kw)(x, deterministic=deterministic)
                for k in range(self.num_domains)
            ],
            axis=1,
        )  # [B, K, D]
        specific = _select_domain(specific, dom)
        shared_b = jnp.broadcast_to(shared[:, None], specific.shape) if specific.ndim == 3 else shared
        if self.combine == "concat":
            combined = jnp.concatenate([shared_b, specific], axis=-1)
        else:
            combined = shared_b + specific
        return combined, shared, specific


# ------------------------------------------------------------------------------------------- multi-domain
class _ExpertBank(nn.Module):
    """E independent MLP experts (every layer activated) run as stacked einsums: x [B, d_in] → [B, E, D]."""

    num_experts: int
    features: Sequence[int]
    activation: Activation
    dropout_rate: float

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        act = _activation(self.activation)
        h = x
        for i, width in enumerate(self.features):
            kernel = self.param(f"kernel_{i}", _STACKED_KERNEL_INIT, (self.num_experts, h.shape[-1], width))
            bias = self.param(f"bias_{i}", nn.initializers.zeros, (self.num_experts, width))
            h = jnp.einsum("bi,eio->beo" if i == 0 else "bei,eio->beo", h, kernel) + bias
            h = act(h)
            if self.dropout_rate > 0:
                h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return h


def _towers(module: nn.Module, h: Array | Sequence[Array], *, deterministic: bool) -> Array:
    """Per-domain output towers ``tower_{k}`` on h [B, K, D] (or a list of K [B, D]) → [B, K, d_out]."""
    outs = [
        MLP(
            tuple(module.tower_features),
            activation=module.activation,
            dropout_rate=module.dropout_rate,
            name=f"tower_{k}",
        )(h[:, k] if isinstance(h, jax.Array) else h[k], deterministic=deterministic)
        for k in range(module.num_domains)
    ]
    return jnp.stack(outs, axis=1)


def _check_multidomain(module: nn.Module, *fields: str) -> None:
    _check_positive("num_domains", module.num_domains)
    for field in fields:
        _check_features(field, getattr(module, field))
    _activation(module.activation)
    _check_rate("dropout_rate", module.dropout_rate)


def _check_input(x: Array) -> None:
    _check_float(x, "x")
    _check_rank(x, 2, "x", "[batch, d_in]")


class SharedBottom(nn.Module):
    """Shared-Bottom: one shared MLP, then a tower per domain.

    Attributes:
      num_domains: K.
      bottom_features: widths of the shared bottom (all layers activated).
      tower_features: widths of each domain tower (last = d_out, linear).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> m = SharedBottom(num_domains=3, bottom_features=(8,), tower_features=(4, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 5)), None)
      >>> m.apply(params, jnp.ones((2, 5)), jnp.array([0, 2])).shape
      (2, 1)
    """

    num_domains: int
    bottom_features: Sequence[int] = (64,)
    tower_features: Sequence[int] = (32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_multidomain(self, "bottom_features", "tower_features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, domain: Any, *, deterministic: bool = True) -> Array:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``)."""
        _check_input(x)
        dom = _parse_domain(domain, self.num_domains, x.shape[0])
        h = MLP(
            tuple(self.bottom_features),
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            activate_final=True,
            name="bottom",
        )(x, deterministic=deterministic)
        return _select_domain(_towers(self, [h] * self.num_domains, deterministic=deterministic), dom)


class MMoE(nn.Module):
    """Multi-gate Mixture-of-Experts (Ma et al., 2018): shared experts, a softmax gate and a tower per domain.

    Attributes:
      num_domains: K.
      num_experts: E.
      expert_features: widths of each expert MLP (all layers activated; last = expert width).
      tower_features: widths of each domain tower (last = d_out, linear).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> m = MMoE(num_domains=2, num_experts=3, expert_features=(8,), tower_features=(1,))
      >>> params = m.init(jax.random.key(0), jnp.ones((4, 5)), None)
      >>> out, gates = m.apply(params, jnp.ones((4, 5)), 1, return_gates=True)
      >>> out.shape, gates.shape
      ((4, 1), (4, 2, 3))
    """

    num_domains: int
    num_experts: int = 4
    expert_features: Sequence[int] = (64,)
    tower_features: Sequence[int] = (32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_multidomain(self, "expert_features", "tower_features")
        _check_positive("num_experts", self.num_experts)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: Array, domain: Any, *, deterministic: bool = True, return_gates: bool = False
    ) -> Array | tuple[Array, Array]:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``).

        With ``return_gates=True`` also returns every domain's gate weights ``[B, K, E]`` (rows sum to 1).
        """
        _check_input(x)
        dom = _parse_domain(domain, self.num_domains, x.shape[0])
        experts = _ExpertBank(
            self.num_experts, tuple(self.expert_features), self.activation, self.dropout_rate, name="experts"
        )(x, deterministic=deterministic)  # [B, E, De]
        logits = nn.Dense(self.num_domains * self.num_experts, name="gates")(x)
        gates = jax.nn.softmax(logits.reshape(x.shape[0], self.num_domains, self.num_experts), axis=-1)
        mixed = jnp.einsum("bke,bed->bkd", gates, experts)  # [B, K, De]
        out = _select_domain(_towers(self, mixed, deterministic=deterministic), dom)
        return (out, gates) if return_gates else out


class PLE(nn.Module):
    """Progressive Layered Extraction (Tang et al., 2020) with per-domain and shared experts.

    Each extraction layer has ``num_specific_experts`` experts per domain and ``num_shared_experts`` shared
    experts. Domain k's gate mixes its own and the shared experts (input: domain k's representation); the
    shared gate mixes all experts (input: the shared representation) and feeds the next layer. The first layer
    reads ``x`` everywhere; the last layer has no shared gate. A tower per domain reads the domain's output.

    Attributes:
      num_domains: K.
      num_layers: extraction layers (>= 1; 1 is CGC).
      num_specific_experts, num_shared_experts: experts per domain / shared, per layer (each >= 1).
      expert_features: widths of each expert MLP (all layers activated).
      tower_features: widths of each domain tower (last = d_out, linear).
      activation, dropout_rate: as in `MLP`.

    Example:
      >>> m = PLE(num_domains=2, num_layers=2, expert_features=(8,), tower_features=(1,))
      >>> params = m.init(jax.random.key(0), jnp.ones((4, 5)), None)
      >>> out, gates = m.apply(params, jnp.ones((4, 5)), jnp.array([0, 1, 1, 0]), return_gates=True)
      >>> out.shape, gates[0]["domain"].shape, gates[0]["shared"].shape, sorted(gates[1])
      ((4, 1), (4, 2, 4), (4, 6), ['domain'])
    """

    num_domains: int
    num_layers: int = 1
    num_specific_experts: int = 2
    num_shared_experts: int = 2
    expert_features: Sequence[int] = (64,)
    tower_features: Sequence[int] = (32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_multidomain(self, "expert_features", "tower_features")
        for field in ("num_layers", "num_specific_experts", "num_shared_experts"):
            _check_positive(field, getattr(self, field))
        super().__post_init__()

    @nn.compact
    def __call__(
        self, x: Array, domain: Any, *, deterministic: bool = True, return_gates: bool = False
    ) -> Array | tuple[Array, tuple[dict[str, Array], ...]]:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``).

        With ``return_gates=True`` also returns, per layer, ``{"domain": [B, K, Es + Sh], "shared":
        [B, K * Es + Sh]}`` (no ``"shared"`` in the last layer); gate rows sum to 1. Expert order in a domain
        gate: that domain's experts, then the shared ones; in the shared gate: domain 0's, …, domain K-1's,
        then the shared ones.
        """
        _check_input(x)
        dom = _parse_domain(domain, self.num_domains, x.shape[0])
        bank = {
            "features": tuple(self.expert_features),
            "activation": self.activation,
            "dropout_rate": self.dropout_rate,
        }
        h_dom, h_shared, all_gates = [x] * self.num_domains, x, []
        for layer in range(self.num_layers):
            specific = [
                _ExpertBank(self.num_specific_experts, name=f"layer{layer}_domain{k}_experts", **bank)(
                    h_dom[k], deterministic=deterministic
                )
                for k in range(self.num_domains)
            ]  # K × [B, Es, De]
            shared = _ExpertBank(self.num_shared_experts, name=f"layer{layer}_shared_experts", **bank)(
                h_shared, deterministic=deterministic
            )  # [B, Sh, De]
            n_gate = self.num_specific_experts + self.num_shared_experts
            new_dom, dom_gates = [], []
            for k in range(self.num_domains):
                g = jax.nn.softmax(nn.Dense(n_gate, name=f"layer{layer}_domain{k}_gate")(h_dom[k]), axis=-1)
                new_dom.append(jnp.einsum("be,bed->bd", g, jnp.concatenate([specific[k], shared], axis=1)))
                dom_gates.append(g)
            gates = {"domain": jnp.stack(dom_gates, axis=1)}
            if layer < self.num_layers - 1:
                n_all = self.num_domains * self.num_specific_experts + self.num_shared_experts
                g = jax.nn.softmax(nn.Dense(n_all, name=f"layer{layer}_shared_gate")(h_shared), axis=-1)
                h_shared = jnp.einsum("be,bed->bd", g, jnp.concatenate(specific + [shared], axis=1))
                gates["shared"] = g
            h_dom = new_dom
            all_gates.append(gates)
        out = _select_domain(_towers(self, h_dom, deterministic=deterministic), dom)
        return (out, tuple(all_gates)) if return_gates else out


class STAR(nn.Module):
    """STAR topology FCN (Sheng et al., 2021): layer weights ``W_shared ⊙ W_domain``, bias ``b_shared + b_domain``.

    Layer i of domain k computes ``h @ (W_i ⊙ W_i^k) + (b_i + b_i^k)``; hidden layers are activated, the last
    is linear. Domain weights start at ones and domain biases at zeros, so a fresh STAR equals an `MLP` with the
    shared weights in every domain.

    Optional partitioned normalization of the input (``partitioned_norm=True``):
    ``(γ ⊙ γ_k) · (x − μ(x)) / sqrt(σ²(x) + ε) + (β + β_k)`` with **per-example** statistics (like LayerNorm),
    not the paper's per-domain batch statistics — this keeps the module stateless (no ``batch_stats``).

    Parameters: ``shared_kernel_{i}`` [d_i, d_{i+1}], ``shared_bias_{i}`` [d_{i+1}], ``domain_kernel_{i}``
    [K, d_i, d_{i+1}], ``domain_bias_{i}`` [K, d_{i+1}]; with PN ``pn_scale``, ``pn_bias`` [d_in] and
    ``pn_domain_scale``, ``pn_domain_bias`` [K, d_in].

    Cost: with a per-row ``domain`` array (or ``None``) all K domain streams are computed (K × one tower).

    Attributes:
      num_domains: K.
      features: layer widths (last = d_out).
      activation, dropout_rate: as in `MLP`.
      partitioned_norm: normalize the input as above.

    Example:
      >>> m = STAR(num_domains=3, features=(8, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 5)), None)
      >>> m.apply(params, jnp.ones((2, 5)), jnp.array([2, 0])).shape
      (2, 1)
    """

    num_domains: int
    features: Sequence[int] = (64, 32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    partitioned_norm: bool = False

    def __post_init__(self):
        _check_multidomain(self, "features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, domain: Any, *, deterministic: bool = True) -> Array:
        """``x`` [B, d_in] → ``[B, d_out]`` (``[B, K, d_out]`` for ``domain=None``)."""
        _check_input(x)
        dom = _parse_domain(domain, self.num_domains, x.shape[0])
        K, act = self.num_domains, _activation(self.activation)
        # Domains whose streams are computed: only the static one, else all of them.
        idx = slice(dom, dom + 1) if isinstance(dom, int) else slice(None)
        d_in = x.shape[-1]
        h = jnp.broadcast_to(x[:, None], (x.shape[0], 1 if isinstance(dom, int) else K, d_in))  # [B, K', d]
        if self.partitioned_norm:
            scale = self.param("pn_scale", nn.initializers.ones, (d_in,))
            bias = self.param("pn_bias", nn.initializers.zeros, (d_in,))
            d_scale = self.param("pn_domain_scale", nn.initializers.ones, (K, d_in))[idx]
            d_bias = self.param("pn_domain_bias", nn.initializers.zeros, (K, d_in))[idx]
            mean = jnp.mean(h, axis=-1, keepdims=True)
            var = jnp.var(h, axis=-1, keepdims=True)
            h = (h - mean) * jax.lax.rsqrt(var + 1e-6) * (scale * d_scale) + (bias + d_bias)
        lecun = nn.initializers.lecun_normal()
        for i, width in enumerate(self.features):
            w = self.param(f"shared_kernel_{i}", lecun, (h.shape[-1], width))
            b = self.param(f"shared_bias_{i}", nn.initializers.zeros, (width,))
            wd = self.param(f"domain_kernel_{i}", nn.initializers.ones, (K, h.shape[-1], width))[idx]
            bd = self.param(f"domain_bias_{i}", nn.initializers.zeros, (K, width))[idx]
            h = jnp.einsum("bki,kio->bko", h, w * wd) + (b + bd)
            if i < len(self.features) - 1:
                h = act(h)
                if self.dropout_rate > 0:
                    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return h[:, 0] if isinstance(dom, int) else _select_domain(h, dom)


# ---------------------------------------------------------------------------------------- cross connections
def _check_dual(x_a: Array, x_b: Array) -> None:
    _check_float(x_a, "x_a")
    _check_float(x_b, "x_b")
    _check_rank(x_a, 2, "x_a", "[batch, d_a]")
    _check_rank(x_b, 2, "x_b", "[batch, d_b]")
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
        _check_features("features", self.features)
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
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
        act, init = _activation(self.activation), nn.initializers.lecun_normal()
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
      >>> m = CrossStitch(features=(8, 1))
      >>> params = m.init(jax.random.key(0), jnp.ones((2, 4)), jnp.ones((2, 3)))
      >>> [o.shape for o in m.apply(params, jnp.ones((2, 4)), jnp.ones((2, 3)))]
      [(2, 1), (2, 1)]
    """

    features: Sequence[int] = (64, 32, 1)
    activation: Activation = "relu"
    dropout_rate: float = 0.0

    def __post_init__(self):
        _check_features("features", self.features)
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x_a: Array, x_b: Array, *, deterministic: bool = True) -> tuple[Array, Array]:
        """``x_a`` [B, d_a], ``x_b`` [B, d_b] → ``(out_a [B, d_out], out_b [B, d_out])``."""
        _check_dual(x_a, x_b)
        act = _activation(self.activation)
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


# ------------------------------------------------------------------------------------------ mapping networks
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
            _check_positive("out_dim", self.out_dim)
        _check_features("hidden", self.hidden, allow_empty=True)
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, user_src: Array, *, deterministic: bool = True) -> Array:
        """``user_src`` [B, d_s] → mapped target embeddings ``[B, out_dim]``."""
        _check_float(user_src, "user_src")
        _check_rank(user_src, 2, "user_src", "[batch, d_src]")
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
        _check_positive("dim", self.dim)
        _check_positive("attention_hidden", self.attention_hidden)
        _check_features("meta_hidden", self.meta_hidden, allow_empty=True)
        _activation(self.activation)
        super().__post_init__()

    def setup(self):
        self.attention = MLP((self.attention_hidden, 1), activation=self.activation)
        self.meta = MLP(tuple(self.meta_hidden) + (self.dim * self.dim,), activation=self.activation)

    @staticmethod
    def _mask(history: Array, mask: Array | None) -> Array:
        _check_float(history, "history")
        _check_rank(history, 3, "history", "[batch, length, d_item]")
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
        _check_float(user_src, "user_src")
        _check_rank(user_src, 2, "user_src", f"[batch, dim={self.dim}]")
        if user_src.shape[-1] != self.dim or user_src.shape[0] != jnp.shape(history)[0]:
            raise ValueError(
                f"user_src must be [batch, dim={self.dim}] with the batch of history "
                f"{jnp.shape(history)}, got shape {user_src.shape}"
            )
        return jnp.einsum("bi,bij->bj", user_src, self.bridge(history, mask))


# ------------------------------------------------------------------------------------------ domain classifier
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
        _check_features("hidden", self.hidden, allow_empty=True)
        _activation(self.activation)
        _check_rate("dropout_rate", self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, h: Array, alpha: float | Array = 1.0, *, deterministic: bool = True) -> Array:
        """``h`` [B, D] → domain logits ``[B]``; ``alpha`` (scalar, may be traced) scales the reversed gradient."""
        _check_float(h, "h")
        _check_rank(h, 2, "h", "[batch, dim]")
        h = gradient_reversal(h, alpha)
        logits = MLP(
            tuple(self.hidden) + (1,),
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            use_layer_norm=self.use_layer_norm,
            name="mlp",
        )(h, deterministic=deterministic)
        return logits[:, 0]

"""ID embedding tables and the two-tower scorer.

Axis conventions: ``batch`` (B) rows of a batch; ``dim`` (D) embedding width; ``num_items`` (N) rows of an item
table; ``domains`` (K) the number of domains. Ids are integers, ``< 0`` for padding (``-1`` by convention).

Tables can carry padding rows (``row_multiple``), so that their row axis divides over the devices of a mesh
(:func:`jaxrec.train.placement` with ``shard_rows=True``): the padding rows start at zero, no id looks them up
and :meth:`CrossDomainEmbedding.item_table` leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import checks
from jaxrec.models.layers import (
    DEFAULT_EMBEDDING_INIT,
    MLP,
    Activation,
    Array,
    check_choice,
    check_features,
    check_int,
    check_rank,
    check_rate,
    resolve_activation,
)


def padded_rows(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def _padded_init(init: Callable[..., Array], rows: int) -> Callable[..., Array]:
    """``init`` for the first ``rows`` rows (the values an unpadded table of ``rows`` rows gets), zeros below."""

    def padded(key, shape, dtype=jnp.float32):
        return jnp.pad(init(key, (rows,) + tuple(shape[1:]), dtype), ((0, shape[0] - rows), (0, 0)))

    return padded


def _l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """x / max(‖x‖, eps) along the last axis; finite value and gradient at x = 0."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


class CrossDomainEmbedding(nn.Module):
    """ID embedding tables: one user table shared by all domains, one item table per domain.

    Ids ``< 0`` (padding, ``-1`` by convention) look up an all-zero vector. Initialize through ``__call__``
    (which creates every domain's table). A parent module that uses only `users` / `items` creates every table
    with `create_tables` while it initializes.

    Attributes:
      num_users: rows of the shared user table.
      num_items: rows of each domain's item table, ``[K]``.
      dim: embedding width D.
      embedding_init: initializer of every table (default `DEFAULT_EMBEDDING_INIT`, N(0, 0.1²)).
      row_multiple: every table's rows are padded up to a multiple of this (the device count, to shard tables on
        their row axis); the first rows hold what an unpadded table holds, the padding rows are zeros that no id
        reaches. 1: no padding.

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
    row_multiple: int = 1

    def __post_init__(self):
        checks.positive_int("num_users", self.num_users)
        check_features("num_items", self.num_items)
        checks.positive_int("dim", self.dim)
        checks.positive_int("row_multiple", self.row_multiple)
        super().__post_init__()

    def _table(self, rows: int, name: str | None = None) -> nn.Embed:
        padded = padded_rows(rows, self.row_multiple)
        init = self.embedding_init if padded == rows else _padded_init(self.embedding_init, rows)
        return nn.Embed(padded, self.dim, embedding_init=init, name=name)

    def setup(self):
        self.user_table = self._table(self.num_users)
        self.item_tables = [self._table(n, f"items_{k}") for k, n in enumerate(self.num_items)]

    @staticmethod
    def _lookup(table: nn.Embed, ids: Array, name: str) -> Array:
        check_int(ids, name)
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
        """The whole item table of ``domain``, ``[num_items[domain], D]`` (for retrieval; padding rows left out)."""
        domain = self._check_domain(domain)
        return self.item_tables[domain].embedding[: self.num_items[domain]]

    def create_tables(self) -> None:
        """Creates the user table and every domain's item table; returns nothing.

        Flax creates parameters on first use, so ``init`` through a batch that lacks a domain would leave out that
        domain's table. A parent module calls this while it initializes, whatever its batch holds::

            if self.is_initializing():
                self.embed.create_tables()

        Outside ``init`` it only makes lookups whose results are discarded (under ``jit``, dead code).
        """
        self.user_table(jnp.zeros((), jnp.int32))
        for table in self.item_tables:
            table(jnp.zeros((), jnp.int32))

    def __call__(self, user_ids: Array, item_ids: Array, domain: int) -> tuple[Array, Array]:
        """Returns ``(users(user_ids), items(item_ids, domain))``."""
        if self.is_initializing():
            self.create_tables()
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
        check_features("user_features", self.user_features)
        if self.item_features is not None:
            check_features("item_features", self.item_features)
            if tuple(self.item_features)[-1] != tuple(self.user_features)[-1]:
                raise ValueError(
                    f"user and item towers must end in the same width, got user_features "
                    f"{tuple(self.user_features)} and item_features {tuple(self.item_features)}"
                )
        check_choice("similarity", self.similarity, ("dot", "cosine"))
        resolve_activation(self.activation)
        check_rate("dropout_rate", self.dropout_rate)
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
        check_rank(user_x, 2, "user_x", "[batch, d_user]")
        return self._finish(self.user_tower(user_x, deterministic=deterministic))

    def item_embed(self, item_x: Array, *, deterministic: bool = True) -> Array:
        """Item embeddings ``[N, D]`` from item features ``[N, d_item]``."""
        check_rank(item_x, 2, "item_x", "[num_items, d_item]")
        return self._finish(self.item_tower(item_x, deterministic=deterministic))

    def score_matrix(self, user_x: Array, item_x: Array, *, deterministic: bool = True) -> Array:
        """All-pairs scores ``[B, N]`` for user features ``[B, d_user]`` and item features ``[N, d_item]``."""
        u = self.user_embed(user_x, deterministic=deterministic)
        return u @ self.item_embed(item_x, deterministic=deterministic).T

    def __call__(self, user_x: Array, item_x: Array, *, deterministic: bool = True) -> Array:
        """Row-wise scores ``[B]`` of user ``b`` with item ``b``; ``user_x`` [B, d_user], ``item_x`` [B, d_item]."""
        check_rank(user_x, 2, "user_x", "[batch, d_user]")
        check_rank(item_x, 2, "item_x", "[batch, d_item]")
        if user_x.shape[0] != item_x.shape[0]:
            raise ValueError(f"user_x and item_x must have the same batch, got {user_x.shape} and {item_x.shape}")
        u = self.user_embed(user_x, deterministic=deterministic)
        i = self.item_embed(item_x, deterministic=deterministic)
        return jnp.sum(u * i, axis=-1)

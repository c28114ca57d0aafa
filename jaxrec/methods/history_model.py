"""The model of the ``history`` recipe (:mod:`jaxrec.methods.inductive`): item tables → a history encoder (→ a
shared/specific split) → two towers → scores. Thin: codes, vectors and scores, never losses.

Axis conventions: ``N_k`` items of domain ``k`` (0 = source, 1 = target), ``B`` rows of a group, ``L`` history
length (item id ``-1`` = padding), ``P`` positives per row (``-1`` = padding), ``K`` negatives shared by a group,
``D`` width of the codes and of the scoring space.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec import models

__all__ = ["GROUPS", "HistoryModel"]

#: The row groups of a batch: ``name -> (domain index of the encoded history, domain index of the scored items)``.
GROUPS = {"cross": (0, 1), "source": (0, 0), "target": (1, 1)}


class HistoryModel(nn.Module):
    """Item tables → history encoder (→ shared/specific split) → two towers → scores.

    ``code(history, k)`` encodes ``history`` [B, L] of domain ``k``; ``user_vectors(history, k)`` ``[B, D]``,
    ``item_vectors(k)`` ``[N_k, D]`` and ``item_bias(k)`` ``[N_k]`` are the scoring space: the score of user ``u``
    and item ``i`` is ``u · v_i + b_i`` (:meth:`scoring_tables` writes it as one dot product).

    ``__call__(batch)`` takes the groups of ``GROUPS`` present in ``batch``, each ``{"history" [B, L],
    "positives" [B, P], "mask" [B, P], "rows" [B]}`` (plus ``"negatives" [K]`` unless ``full_softmax``), and
    returns per group ``{"pos" [B, P], "mask" [B, P], "user" [B, D]}`` (the scores of the positives, the user
    vectors) and either ``"logits" [B, N_k]`` and ``"items" [N_k, D]`` (``full_softmax``: every item) or
    ``"neg" [B, K]``, ``"pos_items" [B, P, D]`` and ``"neg_items" [K, D]``; with ``align``, also ``"align": (hs,
    ht, hs_mask, ht_mask)``, the shared codes of the first ``align_size`` ``"source"`` and ``"target"`` rows (the
    domain classifier's logits on them when ``adversarial``).

    Attributes:
      n_items: ``(N_0, N_1)``.
      dim, history_length, pooling, num_layers, num_heads, dropout_rate, tower_hidden: as in
        :class:`jaxrec.methods.HistoryConfig`.
      full_softmax: score every item (``"softmax"``) rather than the positives and the shared negatives.
      biased: learned item biases ``b`` (parameters ``item_bias_{k}`` ``[N_k]``, zeros here; see
        :func:`jaxrec.methods.inductive.initial_params`); without them ``b = 0``.
      align: split the codes with a :class:`jaxrec.models.SharedSpecificEncoder` and output ``"align"``.
      adversarial: a :class:`jaxrec.models.DomainClassifier` behind gradient reversal on the shared codes.
      align_size: rows per group in ``"align"``.
    """

    n_items: tuple[int, int]
    dim: int = 64
    history_length: int = 20
    pooling: str = "mean"
    num_layers: int = 1
    num_heads: int = 4
    dropout_rate: float = 0.0
    tower_hidden: tuple[int, ...] = ()
    full_softmax: bool = True
    biased: bool = False
    align: bool = False
    adversarial: bool = False
    align_size: int = 256

    def setup(self):
        self.item_tables = [
            nn.Embed(n, self.dim, embedding_init=models.DEFAULT_EMBEDDING_INIT, name=f"items_{k}")
            for k, n in enumerate(self.n_items)
        ]
        self.encoder = models.HistoryEncoder(
            None,
            self.history_length,
            self.dim,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            dropout_rate=self.dropout_rate,
            pooling=self.pooling,
        )
        self.split = models.SharedSpecificEncoder(2, features=(self.dim, self.dim)) if self.align else None
        self.towers = models.TwoTower(tuple(self.tower_hidden) + (self.dim,))
        if self.biased:
            self.item_biases = [
                self.param(f"item_bias_{k}", nn.initializers.zeros, (n,)) for k, n in enumerate(self.n_items)
            ]
        self.classifier = models.DomainClassifier(hidden=(self.dim,)) if self.adversarial else None

    def _lookup(self, ids: jax.Array, domain: int) -> jax.Array:
        """``[..., D]`` embeddings of ``ids`` in ``domain``, zero where ``ids < 0``."""
        valid = ids >= 0
        return jnp.where(valid[..., None], self.item_tables[domain](jnp.where(valid, ids, 0)), 0.0)

    def code(self, history: jax.Array, domain: int, *, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """``(code, shared)`` of ``history`` [B, L] of ``domain``: the user tower's input (``[B, 2D]`` with
        ``align``, else ``[B, D]``) and the part the alignment term sees ``[B, D]`` (the code itself without
        ``align``)."""
        code = self.encoder.encode(self._lookup(history, domain), history >= 0, deterministic=deterministic)
        if self.split is None:
            return code, code
        combined, shared, _ = self.split(code, domain, deterministic=deterministic)
        return combined, shared

    def user_vectors(self, history: jax.Array, domain: int = 0, *, deterministic: bool = True) -> jax.Array:
        """``[B, D]`` scoring vectors of the users whose ``domain`` history is ``history`` [B, L]."""
        code, _ = self.code(history, domain, deterministic=deterministic)
        return self.towers.user_embed(code, deterministic=deterministic)

    def item_vectors(self, domain: int) -> jax.Array:
        """``[N_domain, D]`` scoring vectors of every item of ``domain``."""
        return self.towers.item_embed(self.item_tables[domain].embedding)

    def item_bias(self, domain: int) -> jax.Array:
        """``[N_domain]`` learned score offsets of the items of ``domain`` (their popularity, mostly); zeros
        without ``biased``."""
        if not self.biased:
            return jnp.zeros((self.n_items[domain],), jnp.float32)
        return self.item_biases[domain]

    def scoring_tables(self, history: jax.Array, domain: int = 1) -> tuple[jax.Array, jax.Array]:
        """``(users [B, D + 1], items [N_domain, D + 1])`` whose dot products are the scores of the users whose
        source history is ``history`` [B, L]: ``u · v_i + b_i``."""
        users = self.user_vectors(history, 0)
        items = jnp.concatenate([self.item_vectors(domain), self.item_bias(domain)[:, None]], axis=1)
        return jnp.concatenate([users, jnp.ones((users.shape[0], 1), users.dtype)], axis=1), items

    def _item_vectors_of(self, ids: jax.Array, domain: int) -> jax.Array:
        """``[..., D]`` scoring vectors of ``ids`` (padding looks up item 0; the loss masks it)."""
        emb = self.item_tables[domain](jnp.maximum(ids, 0))
        return self.towers.item_embed(emb.reshape(-1, self.dim)).reshape(ids.shape + (-1,))

    def __call__(self, batch, *, deterministic: bool = True, grl_alpha=1.0):
        out, shared = {}, {}
        for group, (hk, sk) in GROUPS.items():
            if group not in batch:
                continue
            b = batch[group]
            code, shared[group] = self.code(b["history"], hk, deterministic=deterministic)
            u = self.towers.user_embed(code, deterministic=deterministic)
            if self.full_softmax:
                items = self.item_vectors(sk)
                logits = u @ items.T + self.item_bias(sk)
                pos = jnp.take_along_axis(logits, jnp.maximum(b["positives"], 0), axis=1)
                out[group] = {"pos": pos, "logits": logits, "items": items}
            else:
                pos_items = self._item_vectors_of(b["positives"], sk)
                neg_items = self._item_vectors_of(b["negatives"], sk)
                bias = self.item_bias(sk)
                pos = jnp.einsum("bd,bpd->bp", u, pos_items) + bias[jnp.maximum(b["positives"], 0)]
                neg = u @ neg_items.T + bias[b["negatives"]]
                out[group] = {"pos": pos, "neg": neg, "pos_items": pos_items, "neg_items": neg_items}
            out[group].update(mask=b["mask"], user=u)
        if self.align and "source" in shared and "target" in shared:
            n = self.align_size
            hs, ht = shared["source"][:n], shared["target"][:n]
            if self.classifier is not None:
                hs = self.classifier(hs, grl_alpha, deterministic=deterministic)
                ht = self.classifier(ht, grl_alpha, deterministic=deterministic)
            out["align"] = (hs, ht, batch["source"]["rows"][:n], batch["target"]["rows"][:n])
        return out

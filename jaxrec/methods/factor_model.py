"""The model of the ``factor_map`` recipe (:mod:`jaxrec.methods.factor_map`) and the factorisation it starts from.

A user is the sum of their source items' rows of a table ``A [N_s, r]``; their target scores are the dot products
with a table ``B [N_t, r]``, divided by the largest absolute score of the user (so a long history and a short one
score on one scale), plus a learned bias per target item: ``s_j = (u · B_j) / max_k |u · B_k| + b_j`` with ``u =
Σ_{i ∈ history} A_i``. Initialised from a rank-``r`` factorisation of ``item_map``'s source→target map, it scores
as ``item_map`` truncated to rank ``r`` does (item_map's per-user max scaling and popularity prior included).
Training multiplies the scores by a learned temperature ``exp(t)`` before the task loss.

Axis conventions: ``N_s`` / ``N_t`` source / target items, ``r`` the rank, ``B`` rows of a group, ``L`` history
length (item id ``-1`` = padding), ``P`` positives per row (``-1`` = padding).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["FactorMapModel", "low_rank_factors"]


def low_rank_factors(matrix: jax.Array, rank: int, key: jax.Array, *, power_iterations: int = 4, oversample: int = 32):
    """A rank-``rank`` factorisation ``matrix ≈ left @ right.T`` by randomised SVD (Halko, Martinsson & Tropp 2011).

    Args:
      matrix: ``float32 [M, N]``.
      rank: r, at most ``min(M, N)`` (larger values are clipped to it).
      key: the random test matrix.
      power_iterations: subspace iterations (each two products with ``matrix``); 4 makes the leading singular
        vectors exact to float tolerance on item-map matrices.
      oversample: extra columns of the sketch (dropped at the end).

    Returns:
      ``(left [M, r], right [N, r])``: ``left = U_r S_r`` and ``right = V_r`` (orthonormal columns), so
      ``left @ right.T`` is the best rank-r approximation of ``matrix`` up to the sketch's accuracy.
    """
    m, n = matrix.shape
    rank = min(int(rank), m, n)
    width = min(rank + oversample, m, n)
    q, _ = jnp.linalg.qr(matrix.T @ jax.random.normal(key, (m, width), matrix.dtype))  # [N, width]
    for _ in range(power_iterations):
        p, _ = jnp.linalg.qr(matrix @ q)  # [M, width]
        q, _ = jnp.linalg.qr(matrix.T @ p)  # [N, width]
    small = matrix @ q  # [M, width]; matrix ≈ small @ q.T
    u, s, vt = jnp.linalg.svd(small, full_matrices=False)
    return u[:, :rank] * s[:rank], q @ vt[:rank].T


def _pool(table: jax.Array, ids: jax.Array) -> jax.Array:
    """``[B, r]`` sums of the rows of ``table`` at ``ids`` [B, L] (``-1`` = padding)."""
    rows = table[jnp.maximum(ids, 0)]
    return jnp.sum(jnp.where((ids >= 0)[..., None], rows, 0.0), axis=1)


class FactorMapModel(nn.Module):
    """Source items → a user vector → max-scaled target scores plus item biases (the module docstring's ``s_j``).

    Parameters: ``source [N_s, r]`` (A), ``target [N_t, r]`` (B), ``bias [N_t]``, ``log_temperature []`` and,
    with ``target_encoder``, ``target_history [N_t, r]`` (a user encoded from their *target* items, for the
    within-target objective of the target-only users; it shares ``B`` and ``b`` with the cross-domain scores).
    ``recipe`` initialises them from ``item_map``; ``init`` here gives small random tables.

    ``__call__(batch)`` takes groups ``{"cross" | "target" | "source": {"history" [B, L], "positives" [B, P],
    "mask" [B, P], "rows" [B]}}`` (histories of the source domain for ``"cross"`` and ``"source"``, of the target
    for ``"target"``) and returns per scored group (``"cross"``, ``"target"``) ``{"logits" [B, N_t], "pos" [B, P],
    "mask" [B, P]}`` (temperature applied), plus ``"align": (hs, ht, hs_mask, ht_mask)`` with ``align_size`` rows
    of the ``"source"`` and ``"target"`` groups' user vectors (unit-normalised) when both are present.

    Attributes:
      n_items: ``(N_s, N_t)``.
      rank: r.
      target_encoder: add the ``target_history`` table.
      align_size: rows per group in ``"align"``.
    """

    n_items: tuple[int, int]
    rank: int
    target_encoder: bool = False
    align_size: int = 256

    def setup(self):
        init = nn.initializers.normal(0.1)
        self.source = self.param("source", init, (self.n_items[0], self.rank))
        self.target = self.param("target", init, (self.n_items[1], self.rank))
        self.bias = self.param("bias", nn.initializers.zeros, (self.n_items[1],))
        self.log_temperature = self.param("log_temperature", nn.initializers.zeros, ())
        if self.target_encoder:
            self.target_history = self.param("target_history", init, (self.n_items[1], self.rank))

    def user_vectors(self, history: jax.Array, domain: int = 0) -> jax.Array:
        """``[B, r]`` user vectors of histories ``[B, L]`` of ``domain`` (0: source, 1: target), each divided by
        its largest absolute target score (so ``user_vectors · Bᵀ`` lies in [-1, 1]); zeros for empty rows."""
        return self.normalise(_pool(self.source if domain == 0 else self.target_history, history))

    def normalise(self, u: jax.Array) -> jax.Array:
        """``[B, r]`` sums of item rows ``u`` divided by their largest absolute target score (zeros stay zeros)."""
        top = jnp.max(jnp.abs(u @ self.target.T), axis=1, keepdims=True)
        return u / jnp.maximum(top, 1e-12)

    def scoring_tables(self, history: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(users [B, r + 1], items [N_t, r + 1])`` whose dot products are the target scores ``s`` of the users
        whose source history is ``history`` [B, L]."""
        u = self.user_vectors(history, 0)
        items = jnp.concatenate([self.target, self.bias[:, None]], axis=1)
        return jnp.concatenate([u, jnp.ones((u.shape[0], 1), u.dtype)], axis=1), items

    def __call__(self, batch, *, deterministic: bool = True):
        del deterministic  # no dropout
        out, vectors = {}, {}
        scale = jnp.exp(self.log_temperature)
        for group, domain in (("cross", 0), ("source", 0), ("target", 1)):
            if group not in batch:
                continue
            b = batch[group]
            vectors[group] = u = self.user_vectors(b["history"], domain)
            if group == "source":
                continue
            logits = scale * (u @ self.target.T + self.bias[None, :])
            pos = jnp.take_along_axis(logits, jnp.maximum(b["positives"], 0), axis=1)
            out[group] = {"logits": logits, "pos": pos, "mask": b["mask"]}
        if "source" in vectors and "target" in vectors:
            n = self.align_size
            unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
            hs, ht = unit(vectors["source"][:n]), unit(vectors["target"][:n])
            out["align"] = (hs, ht, batch["source"]["rows"][:n], batch["target"]["rows"][:n])
        return out

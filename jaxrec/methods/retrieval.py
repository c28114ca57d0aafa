"""Retrieval task losses of a user's positives against a catalogue, and the negatives they are sampled from.

A batch row is a user with up to ``P`` positive items (padded, ``mask`` False there). The task losses, chosen by
name (:data:`TASK_LOSSES`):

* ``"softmax"`` — the full softmax over the catalogue: ``logsumexp_j s_bj − s_bp`` per positive
  (:func:`full_softmax_loss`); the logits ``[B, N]`` fit in memory up to ~10^5 items.
* ``"sampled_softmax"`` — the positive against ``K`` negatives shared by the batch, drawn with probabilities
  ``q`` (:data:`SAMPLING`), every logit corrected by ``− log q`` (Yi et al., RecSys 2019) and negatives equal to
  the positive removed (:func:`sampled_softmax_loss`, over :func:`jaxrec.losses.sampled_softmax`).
* ``"bpr"`` — ``softplus(s_neg − s_pos)`` averaged over the same shared negatives (:func:`bpr_loss`).

Each returns the masked mean over the valid positives. Axis conventions: ``B`` user rows, ``P`` positives per
row, ``N`` items of the catalogue, ``K`` sampled negatives shared by the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import losses

__all__ = [
    "SAMPLING",
    "TASK_LOSSES",
    "bpr_loss",
    "full_softmax_loss",
    "negative_log_q",
    "sample_negatives",
    "sampled_softmax_loss",
]

#: The task losses by name.
TASK_LOSSES = ("softmax", "sampled_softmax", "bpr")
#: How shared negatives are drawn: ``"uniform"`` over the catalogue, or ``"popularity"``: ∝ train count + 1.
SAMPLING = ("uniform", "popularity")


def full_softmax_loss(pos: jax.Array, logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Full-softmax cross-entropy of every positive against the whole catalogue.

    Args:
      pos: ``[B, P]`` scores of the positives (``logits`` at their ids).
      logits: ``[B, N]`` scores of every item of the catalogue.
      mask: ``bool [B, P]``, False on padding.

    Returns:
      The scalar ``mean_{(b, p) valid} (logsumexp_j logits[b, j] − pos[b, p])`` (0 when nothing is valid).
    """
    lse = jax.nn.logsumexp(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    return losses.mean_where(lse[:, None] - pos, where=mask)


def _per_positive(neg: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """``[B, K]`` negative scores repeated for each of the P positives of a row: ``[B·P, K]``."""
    batch, positives = shape
    return jnp.broadcast_to(neg[:, None, :], (batch, positives, neg.shape[-1])).reshape(batch * positives, -1)


def sampled_softmax_loss(
    pos: jax.Array,
    neg: jax.Array,
    mask: jax.Array,
    *,
    pos_ids: jax.Array,
    neg_ids: jax.Array,
    pos_log_q: jax.Array | None = None,
    neg_log_q: jax.Array | None = None,
) -> jax.Array:
    """Sampled softmax of every positive against the batch's shared negatives, with the logQ correction.

    Each positive ``(b, p)`` competes with the negatives ``k`` whose id differs from its own; every logit ``s``
    becomes ``s − log q`` (``q`` the probability that the sampler draws the item).

    Args:
      pos: ``[B, P]`` scores of the positives; neg: ``[B, K]`` scores of the shared negatives.
      mask: ``bool [B, P]``, False on padding.
      pos_ids: ``int [B, P]`` positive ids; neg_ids: ``int [K]`` negative ids (accidental hits are removed).
      pos_log_q: ``[B, P]`` log q of the positives; neg_log_q: ``[K]`` log q of the negatives (None: no
        correction on that side).

    Returns:
      The scalar masked mean over the valid positives.
    """
    shape = pos.shape
    per = losses.sampled_softmax(
        pos.reshape(-1),
        _per_positive(neg, shape),
        pos_log_q=None if pos_log_q is None else pos_log_q.reshape(-1),
        neg_log_q=neg_log_q,
        pos_ids=pos_ids.reshape(-1),
        neg_ids=neg_ids,
        where=mask.reshape(-1),
    )
    return losses.mean_where(per, where=mask.reshape(-1))


def bpr_loss(pos: jax.Array, neg: jax.Array, mask: jax.Array, *, pos_ids: jax.Array, neg_ids: jax.Array) -> jax.Array:
    """BPR of every positive against the batch's shared negatives whose id differs from its own.

    Args:
      pos: ``[B, P]``; neg: ``[B, K]``; mask: ``bool [B, P]``; pos_ids: ``int [B, P]``; neg_ids: ``int [K]``.

    Returns:
      The scalar ``mean_{(b, p) valid} mean_{k: id_k ≠ id_bp} softplus(neg[b, k] − pos[b, p])``.
    """
    where = mask[:, :, None] & (neg_ids[None, None, :] != pos_ids[:, :, None])
    per = losses.bpr(pos.reshape(-1), _per_positive(neg, pos.shape), where=where.reshape(-1, neg.shape[-1]))
    return losses.mean_where(per, where=mask.reshape(-1))


def negative_log_q(counts: np.ndarray, sampling: str) -> np.ndarray:
    """``float32 [N]``: the log probability that one draw of :func:`sample_negatives` is item ``j``.

    Args:
      counts: ``[N]`` train interaction counts of the catalogue.
      sampling: ``"uniform"`` (``q = 1/N``) or ``"popularity"`` (``q ∝ count + 1``).
    """
    if sampling not in SAMPLING:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLING)}")
    counts = np.asarray(counts, np.float64)
    weights = np.ones_like(counts) if sampling == "uniform" else counts + 1.0
    return np.log(weights / weights.sum()).astype(np.float32)


def sample_negatives(rng: np.random.Generator, log_q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` items drawn independently with probabilities ``exp(log_q)``: ``(ids int32 [k], log_q float32 [k])``."""
    q = np.exp(log_q.astype(np.float64))
    ids = rng.choice(log_q.shape[0], size=k, p=q / q.sum()).astype(np.int32)
    return ids, log_q[ids]

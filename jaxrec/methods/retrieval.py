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
row, ``N`` items of the catalogue, ``K`` sampled negatives shared by the batch, ``n`` negatives per positive of
a pair batch, ``D`` embedding width.

The pair recipes (every learned recipe whose model returns :func:`jaxrec.methods.common.pair_outputs` records:
the shared-embedding, joint, multi-domain, graph and fine-tuning recipes and the pretraining of the mapping
recipes) choose among the same three losses with their config's ``task_loss``, through
:func:`task_objective`: ``"softmax"`` over the domain's whole catalogue while ``B × N ≤``
:data:`FULL_SOFTMAX_LIMIT`, else sampled softmax; ``"sampled_softmax"`` against the batch's ``K = B·n``
uniform negatives shared by every row, corrected by ``−log(K/N)`` (the expected count of an item among the
draws) so that it estimates the full softmax; ``"bpr"`` against each positive's own ``n`` negatives.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import losses
from jaxrec import train as tr

__all__ = [
    "FULL_SOFTMAX_LIMIT",
    "SAMPLING",
    "TASK_LOSSES",
    "bpr_loss",
    "full_softmax_loss",
    "negative_log_q",
    "pair_task_loss",
    "resolve_task_loss",
    "sample_negatives",
    "sampled_softmax_loss",
    "task_objective",
]

#: The task losses by name.
TASK_LOSSES = ("softmax", "sampled_softmax", "bpr")
#: How shared negatives are drawn: ``"uniform"`` over the catalogue, or ``"popularity"``: ∝ train count + 1.
SAMPLING = ("uniform", "popularity")
#: The most logits ``B × N`` (rows of a batch × items of the catalogue, per domain and step) for which
#: ``task_loss="softmax"`` computes the full softmax: 2**26 float32 logits are 256 MiB, and their gradient as much
#: again. Above it the pair recipes train ``"sampled_softmax"`` (and warn once per compilation).
FULL_SOFTMAX_LIMIT = 2**26


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


# ----------------------------------------------------------------------------------------------------------------
# The pair recipes' task losses (records of jaxrec.methods.common.pair_outputs)
# ----------------------------------------------------------------------------------------------------------------


def resolve_task_loss(task_loss: str, batch: int, n_items: int) -> str:
    """The loss a pair recipe computes for ``task_loss`` on ``batch`` rows against ``n_items`` items.

    ``"softmax"`` becomes ``"sampled_softmax"`` when ``batch × n_items`` exceeds :data:`FULL_SOFTMAX_LIMIT`
    (with a ``UserWarning``); the other names are returned as they are.

    Raises:
      ValueError: a name outside :data:`TASK_LOSSES`.
    """
    if task_loss not in TASK_LOSSES:
        raise ValueError(f"unknown task_loss {task_loss!r}; valid: {list(TASK_LOSSES)}")
    if task_loss == "softmax" and batch * n_items > FULL_SOFTMAX_LIMIT:
        warnings.warn(
            f"task_loss='softmax': {batch} rows × {n_items} items exceed FULL_SOFTMAX_LIMIT={FULL_SOFTMAX_LIMIT} "
            f"logits; training with 'sampled_softmax' instead",
            stacklevel=2,
        )
        return "sampled_softmax"
    return task_loss


def pair_task_loss(task_loss: str, record: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]) -> jax.Array:
    """The task loss of one domain's pair record, masked mean over its valid rows.

    Args:
      task_loss: ``"softmax"``, ``"sampled_softmax"`` or ``"bpr"`` (``resolve_task_loss`` decides between the
        first two from the shapes).
      record: a :func:`jaxrec.methods.common.pair_outputs` record: ``"pos" [B]``, ``"neg" [B, n]``, ``"mask"
        bool [B]``, ``"h" [B, D]`` (user vectors), ``"neg_vectors" [B, n, D]`` and ``"items" [N, D]`` (the
        scored catalogue; needed by the softmax losses).
      batch: the domain's batch: ``"items" int [B]`` (positive ids) and ``"negatives" int [B, n]``.

    Returns:
      The scalar loss. ``"bpr"``: ``mean_b mean_n softplus(neg − pos)``; ``"softmax"``: ``mean_b (logsumexp_j
      h_b·v_j − pos_b)`` over the N items; ``"sampled_softmax"``: each positive against the ``K = B·n`` negatives
      of the whole batch (those of padding rows and those equal to its own id removed), every negative logit
      corrected by ``− log(K/N)``.

    Raises:
      ValueError: a softmax loss on a record without ``"items"``.
    """
    mask = record["mask"]
    if task_loss == "bpr":
        return losses.mean_where(losses.bpr(record["pos"], record["neg"]), where=mask)
    if "items" not in record:
        raise ValueError(f"task_loss={task_loss!r} needs the model's item table in its outputs (pair_outputs items=)")
    h, items = record["h"], record["items"]
    if resolve_task_loss(task_loss, h.shape[0], items.shape[0]) == "softmax":
        return full_softmax_loss(record["pos"][:, None], h @ items.T, mask[:, None])
    neg_vectors = record["neg_vectors"]
    rows, n, dim = neg_vectors.shape
    k = rows * n
    per = losses.sampled_softmax(
        record["pos"],
        h @ neg_vectors.reshape(k, dim).T,
        neg_log_q=jnp.full((k,), math.log(k / items.shape[0]), h.dtype),
        pos_ids=batch["items"],
        neg_ids=batch["negatives"].reshape(k),
        where=mask,
        neg_where=jnp.repeat(mask, n),
    )
    return losses.mean_where(per, where=mask)


def task_objective(
    l2: float,
    task_loss: str = "bpr",
    discrepancy: str | Callable | None = None,
    lam: float | Callable = 0.0,
    *,
    model_kwargs: Callable[[jax.Array], dict] | None = None,
    discrepancy_options: Mapping[str, Any] | None = None,
) -> tr.Objective:
    """The objective of the pair recipes: per domain, :func:`~jaxrec.methods.retrieval.pair_task_loss` plus
    ``l2`` × the mean squared norms of the batch's vectors, and optionally ``λ·D`` on the model's ``"align"``
    output.

    Args:
      l2: weight of ``‖user‖² + ‖pos_item‖² + mean_n ‖neg_item‖²`` (masked mean over the batch; the same for
        every task loss).
      task_loss: one of :data:`TASK_LOSSES`.
      discrepancy: the alignment term, as :class:`jaxrec.train.Objective` takes it (a name, a callable or None).
      lam: λ, a float or a schedule ``step -> λ``.
      model_kwargs: optional ``step -> dict`` of extra model inputs (e.g. the gradient-reversal strength).
      discrepancy_options: keyword options of the named discrepancy (``losses.get_discrepancy``).

    Returns:
      A :class:`jaxrec.train.Objective` whose task losses are ``{domain: scalar}`` for every domain record in the
      model's outputs.

    Raises:
      ValueError: an unknown ``task_loss`` (listing the valid ones).
    """
    if task_loss not in TASK_LOSSES:
        raise ValueError(f"unknown task_loss {task_loss!r}; valid: {list(TASK_LOSSES)}")

    def task(outputs, batch):
        result = {}
        for name, o in outputs.items():
            if name == "align":
                continue
            reg = (
                jnp.sum(o["user"] ** 2, -1)
                + jnp.sum(o["pos_item"] ** 2, -1)
                + jnp.mean(jnp.sum(o["neg_item"] ** 2, -1), -1)
            )
            loss = pair_task_loss(task_loss, o, batch[name])
            result[name] = loss + l2 * losses.mean_where(reg, where=o["mask"])
        return result

    return tr.Objective(
        task, discrepancy=discrepancy, lam=lam, model_kwargs=model_kwargs, discrepancy_options=discrepancy_options
    )

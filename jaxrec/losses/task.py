"""Task losses: per-example ranking and regression losses, and the masked mean that reduces them.

Axis conventions:
  batch     examples of a mini-batch; every task loss returns one value per example, shape ``[batch]``
  num_neg   sampled negative candidates per example

Reduction convention: ``mse``, ``sigmoid_bce``, ``bpr``, ``sampled_softmax`` and ``in_batch_softmax`` return
**per-example** values; entries masked out by ``where=`` are exactly 0 (and their gradient is exactly 0, even when
the padded inputs hold NaN). Reduce with ``mean_where(values, where=mask)``, which divides by the number of valid
entries and returns 0 when there are none. Losses take logits or scores, never probabilities.

Computation happens in at least float32 (bfloat16/float16 inputs are upcast); float64 inputs stay float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.losses.checks import (
    ArrayLike,
    bool_mask,
    check_nonneg_static,
    check_rank,
    float_array,
    zero_where_masked,
)


def _check_temperature(temperature: ArrayLike) -> None:
    check_nonneg_static("temperature", temperature, strict=True)


def mean_where(values: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """Mean of ``values`` over the entries where ``where`` is true; 0 (never NaN) when none is.

    Args:
      values: ``[...]`` per-example values, e.g. the ``[batch]`` output of a task loss.
      where: optional boolean mask broadcastable to ``values.shape``; masked entries are ignored, even when they
        hold NaN or inf.

    Returns:
      The scalar ``sum(values[where]) / max(count(where), 1)``.

    Example:
      >>> mean_where(jnp.array([1.0, 3.0, 100.0]), where=jnp.array([True, True, False]))
      Array(2., dtype=float32)
    """
    values = jnp.asarray(values)
    dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
    values = values.astype(jnp.promote_types(dtype, jnp.float32))
    mask = bool_mask("where", where, values.shape)
    if mask is None:
        if values.size == 0:
            return jnp.zeros((), values.dtype)
        return jnp.mean(values)
    total = jnp.sum(zero_where_masked(values, mask))
    count = jnp.sum(mask).astype(values.dtype)
    return total / jnp.maximum(count, 1)


def mse(predictions: ArrayLike, targets: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """Per-example squared error ``(prediction - target)²``.

    Args:
      predictions: ``[batch]`` (any shape) predicted ratings or scores.
      targets: same shape as ``predictions`` (no silent broadcasting: ``[batch, 1]`` vs ``[batch]`` raises).
      where: optional boolean mask broadcastable to ``[batch]``.

    Returns:
      ``[batch]`` squared errors, 0 where masked. Reduce with ``mean_where``.

    Example:
      >>> mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 2.0]))
      Array([1., 0.], dtype=float32)
    """
    predictions = float_array("predictions", predictions)
    targets = jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must have the same shape")
    mask = bool_mask("where", where, predictions.shape)
    err = zero_where_masked(predictions, mask) - zero_where_masked(targets.astype(predictions.dtype), mask)
    return zero_where_masked(err * err, mask)


def sigmoid_bce(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """Per-example binary cross-entropy on logits, numerically stable for any logit magnitude.

    Computes ``-[z log σ(x) + (1 - z) log(1 - σ(x))] = z·softplus(-x) + (1 - z)·softplus(x)``, which never
    forms ``σ(x)`` and is accurate even for ``|x|`` in the hundreds; its gradient is ``σ(x) - z``.

    Args:
      logits: ``[batch]`` (any shape) raw scores ``x``.
      labels: same shape, targets ``z`` in ``[0, 1]`` (soft labels allowed).
      where: optional boolean mask broadcastable to ``[batch]``.

    Returns:
      ``[batch]`` losses, 0 where masked.

    Example:
      >>> sigmoid_bce(jnp.array([0.0]), jnp.array([1.0]))  # log 2
      Array([0.6931472], dtype=float32)
    """
    logits = float_array("logits", logits)
    labels = jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must have the same shape")
    mask = bool_mask("where", where, logits.shape)
    x = zero_where_masked(logits, mask)
    z = zero_where_masked(labels.astype(logits.dtype), mask)
    loss = z * jax.nn.softplus(-x) + (1.0 - z) * jax.nn.softplus(x)
    return zero_where_masked(loss, mask)


def bpr(pos_scores: ArrayLike, neg_scores: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """Per-example Bayesian personalized ranking loss ``-log σ(pos - neg) = softplus(neg - pos)``.

    Args:
      pos_scores: ``[batch]`` score of each example's positive item.
      neg_scores: ``[batch]`` (one negative each) or ``[batch, num_neg]`` (several; the loss is averaged over
        the valid negatives of each example).
      where: optional boolean mask, ``[batch]`` (masks whole examples) or ``[batch, num_neg]`` (masks single
        negatives, e.g. padding or accidental hits).

    Returns:
      ``[batch]`` losses; 0 for a masked example or one whose negatives are all masked.

    Example:
      >>> bpr(jnp.array([2.0]), jnp.array([2.0]))  # log 2
      Array([0.6931472], dtype=float32)
    """
    pos = float_array("pos_scores", pos_scores)
    neg = float_array("neg_scores", neg_scores)
    check_rank("pos_scores", pos, 1, "[batch]")
    if neg.ndim not in (1, 2) or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"neg_scores must be [batch] or [batch, num_neg] with batch = {pos.shape[0]} "
            f"(pos_scores {pos.shape}), got {neg.shape}"
        )
    dtype = jnp.promote_types(pos.dtype, neg.dtype)
    pos, neg = pos.astype(dtype), neg.astype(dtype)
    if where is not None and neg.ndim == 2 and jnp.ndim(where) == 1:
        where = jnp.asarray(where)[:, None]
    mask = bool_mask("where", where, neg.shape)
    pos_b = pos if neg.ndim == 1 else pos[:, None]
    diff = zero_where_masked(jnp.broadcast_to(pos_b, neg.shape), mask) - zero_where_masked(neg, mask)
    loss = zero_where_masked(jax.nn.softplus(-diff), mask)
    if neg.ndim == 1:
        return loss
    if mask is None:
        return jnp.mean(loss, axis=1) if neg.shape[1] else jnp.zeros(pos.shape, dtype)
    count = jnp.sum(mask, axis=1).astype(dtype)
    return jnp.sum(loss, axis=1) / jnp.maximum(count, 1)


def _rows_of(name: str, x: ArrayLike | None, batch: int, num_neg: int) -> jax.Array | None:
    """Broadcast a ``[num_neg]`` (shared) or ``[batch, num_neg]`` array to ``[batch, num_neg]``."""
    if x is None:
        return None
    x = jnp.asarray(x)
    if x.shape not in ((num_neg,), (batch, num_neg)):
        raise ValueError(
            f"{name} must be [num_neg] = ({num_neg},) or [batch, num_neg] = ({batch}, {num_neg}), got {x.shape}"
        )
    return jnp.broadcast_to(x, (batch, num_neg))


def _vector_of(name: str, x: ArrayLike | None, batch: int) -> jax.Array | None:
    if x is None:
        return None
    x = jnp.asarray(x)
    if x.shape != (batch,):
        raise ValueError(f"{name} must be [batch] = ({batch},), got {x.shape}")
    return x


def _first_column_xent(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """``logsumexp_j(logits[:, j] over valid j) - logits[:, 0]`` for ``logits [batch, 1 + k]``; column 0 valid."""
    masked = jnp.where(valid, logits, -jnp.inf)
    return jax.nn.logsumexp(masked, axis=1) - logits[:, 0]


def sampled_softmax(
    pos_logits: ArrayLike,
    neg_logits: ArrayLike,
    *,
    pos_log_q: ArrayLike | None = None,
    neg_log_q: ArrayLike | None = None,
    pos_ids: ArrayLike | None = None,
    neg_ids: ArrayLike | None = None,
    where: ArrayLike | None = None,
    neg_where: ArrayLike | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Per-example sampled-softmax cross-entropy with logQ correction and accidental-hit masking.

    Each example's positive competes against its sampled negatives. With logQ correction (Yi et al., 2019) the
    logit of every candidate ``j`` (positive included) becomes ``s_j / temperature - log q_j``, where ``q_j`` is
    the probability with which the sampler draws ``j``; this removes the bias of popularity-based sampling.
    A negative whose id equals the example's positive id (an *accidental hit*) is removed from the softmax.

    Args:
      pos_logits: ``[batch]`` scores of the positives.
      neg_logits: ``[batch, num_neg]`` scores of the negatives (shared negatives scored per example are fine).
      pos_log_q: optional ``[batch]`` log sampling probability of each positive.
      neg_log_q: optional ``[num_neg]`` or ``[batch, num_neg]`` log sampling probability of each negative.
      pos_ids: optional ``[batch]`` integer ids of the positives; with ``neg_ids`` enables hit masking.
      neg_ids: optional ``[num_neg]`` or ``[batch, num_neg]`` integer ids of the negatives.
      where: optional ``[batch]`` mask of valid examples.
      neg_where: optional ``[num_neg]`` or ``[batch, num_neg]`` mask of valid negatives (padding).
      temperature: softmax temperature, > 0.

    Returns:
      ``[batch]`` losses ``-log softmax(corrected logits)[positive]``, 0 where masked. An example whose
      negatives are all masked has loss 0 (the positive is alone in its softmax).

    Example:
      >>> sampled_softmax(jnp.array([0.0]), jnp.array([[0.0, 0.0]]))  # log 3
      Array([1.0986123], dtype=float32)
    """
    _check_temperature(temperature)
    pos = float_array("pos_logits", pos_logits)
    neg = float_array("neg_logits", neg_logits)
    check_rank("pos_logits", pos, 1, "[batch]")
    check_rank("neg_logits", neg, 2, "[batch, num_neg]")
    batch, num_neg = neg.shape
    if pos.shape[0] != batch:
        raise ValueError(f"pos_logits {pos.shape} and neg_logits {neg.shape} disagree on batch")
    dtype = jnp.promote_types(pos.dtype, neg.dtype)
    row_mask = bool_mask("where", _vector_of("where", where, batch), (batch,))
    valid_neg = jnp.ones((batch, num_neg), bool)
    nw = _rows_of("neg_where", neg_where, batch, num_neg)
    if nw is not None:
        valid_neg = valid_neg & nw.astype(bool)
    if (pos_ids is None) != (neg_ids is None):
        raise ValueError("accidental-hit masking needs both pos_ids and neg_ids (got only one)")
    if pos_ids is not None:
        pid = _vector_of("pos_ids", pos_ids, batch)
        nid = _rows_of("neg_ids", neg_ids, batch, num_neg)
        valid_neg = valid_neg & (nid != pid[:, None])
    logits = jnp.concatenate([pos[:, None].astype(dtype), neg.astype(dtype)], axis=1) / temperature
    if pos_log_q is not None or neg_log_q is not None:
        plq = _vector_of("pos_log_q", pos_log_q, batch)
        nlq = _rows_of("neg_log_q", neg_log_q, batch, num_neg)
        plq = jnp.zeros((batch,), dtype) if plq is None else plq.astype(dtype)
        nlq = jnp.zeros((batch, num_neg), dtype) if nlq is None else nlq.astype(dtype)
        logits = logits - jnp.concatenate([plq[:, None], nlq], axis=1)
    valid = jnp.concatenate([jnp.ones((batch, 1), bool), valid_neg], axis=1)
    if row_mask is not None:
        logits = zero_where_masked(logits, row_mask[:, None])
    return zero_where_masked(_first_column_xent(logits, valid), row_mask)


def in_batch_softmax(
    logits: ArrayLike,
    *,
    log_q: ArrayLike | None = None,
    ids: ArrayLike | None = None,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Per-example in-batch softmax: row ``i``'s positive is column ``i``; the other columns are its negatives.

    Corrected logits are ``logits[i, j] / temperature - log_q[j]`` (logQ correction for the popularity bias of
    in-batch negatives, Yi et al., 2019). Column ``j != i`` is dropped from row ``i`` when ``ids[j] == ids[i]``
    (the same item appears twice in the batch: an accidental hit) or when example ``j`` is padding.

    Args:
      logits: ``[batch, batch]`` scores, e.g. ``user_emb @ item_emb.T``.
      log_q: optional ``[batch]`` log sampling probability of each in-batch item (e.g. log of its frequency).
      ids: optional ``[batch]`` integer item ids for accidental-hit masking.
      where: optional ``[batch]`` mask of valid examples; a padded example is neither scored nor used as a
        negative.
      temperature: softmax temperature, > 0.

    Returns:
      ``[batch]`` losses, 0 where masked.

    Example:
      >>> in_batch_softmax(jnp.zeros((3, 3)))  # log 3 each
      Array([1.0986123, 1.0986123, 1.0986123], dtype=float32)
    """
    _check_temperature(temperature)
    logits = float_array("logits", logits)
    check_rank("logits", logits, 2, "[batch, batch]")
    batch = logits.shape[0]
    if logits.shape[1] != batch:
        raise ValueError(f"in-batch logits must be square [batch, batch], got {logits.shape}")
    row_mask = bool_mask("where", _vector_of("where", where, batch), (batch,))
    eye = jnp.eye(batch, dtype=bool)
    valid = jnp.ones((batch, batch), bool)
    if row_mask is not None:
        valid = valid & row_mask[None, :]
    if ids is not None:
        item = _vector_of("ids", ids, batch)
        valid = valid & (item[:, None] != item[None, :])
    valid = valid | eye
    z = logits / temperature
    if log_q is not None:
        z = z - _vector_of("log_q", log_q, batch).astype(z.dtype)[None, :]
    if row_mask is not None:
        z = zero_where_masked(z, row_mask[:, None])
    masked = jnp.where(valid, z, -jnp.inf)
    loss = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(z)
    return zero_where_masked(loss, row_mask)

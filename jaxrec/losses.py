"""Losses: task losses, domain-discrepancy terms, the adversarial domain loss, λ schedules, the combined loss.

Axis conventions (used throughout this file):
  batch     examples of a mini-batch; task losses return one value per example, shape ``[batch]``
  num_neg   sampled negative candidates per example
  n, m      rows (users or items) of the source / target domain; ``n != m`` is allowed everywhere
  dim       representation width; must be the same in both domains

Reduction convention: every *task* loss (``mse``, ``sigmoid_bce``, ``bpr``, ``sampled_softmax``,
``in_batch_softmax``) returns **per-example** values; entries masked out by ``where=`` are exactly 0 (and their
gradient is exactly 0, even when the padded inputs hold NaN). Reduce with ``mean_where(values, where=mask)``,
which divides by the number of valid entries and returns 0 when there are none. The discrepancy terms, the
adversarial loss and ``combined_loss`` return **scalars**.

Masks (``where=``, ``hs_mask=``, ``ht_mask=``, ...) are boolean (any nonzero value counts as valid); they mark
padded rows so that shapes stay static under ``jit``.

Empty sides: a discrepancy returns 0 when either side has fewer valid rows than its estimator needs (1 for
``mean_l2`` / ``linear_mmd`` / ``sliced_wasserstein``, 2 for the unbiased ``mmd`` and ``coral``) — there is
nothing to align, so the term contributes neither value nor gradient. This holds for fully masked inputs and for
statically empty arrays alike.

Computation happens in at least float32 (bfloat16/float16 inputs are upcast); float64 inputs stay float64.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any  # jax.Array, np.ndarray or a Python scalar
Schedule = Callable[[ArrayLike], jax.Array]


# --------------------------------------------------------------------------------------------------------------
# private helpers: static checks and masks
# --------------------------------------------------------------------------------------------------------------
def _static_value(x: ArrayLike) -> np.ndarray | None:
    """The concrete value of ``x`` as numpy, or None when it is traced (then nothing can be checked)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic array-likes
        return None


def _float_array(name: str, x: ArrayLike) -> jax.Array:
    """``x`` as a floating jax array computed in at least float32; TypeError for non-floating dtypes."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype} (shape {x.shape})")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {x.shape}")


def _bool_mask(name: str, mask: ArrayLike | None, shape: tuple[int, ...]) -> jax.Array | None:
    """``mask`` as a boolean array of exactly ``shape`` (broadcasting allowed), or None."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    try:
        ok = jnp.broadcast_shapes(mask.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {mask.shape} does not broadcast to the expected shape {tuple(shape)}")
    return jnp.broadcast_to(mask.astype(bool), shape)


def _zero_where_masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Replace masked entries by 0 *before* any computation, so NaN/inf padding cannot leak into gradients."""
    if mask is None:
        return x
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


def _check_nonneg_static(name: str, x: ArrayLike, *, strict: bool = False) -> None:
    """Raise ValueError when ``x`` is concrete and negative (or not positive when ``strict``); NaN also raises."""
    value = _static_value(x)
    if value is None:
        return
    if not np.issubdtype(value.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got {value!r}")
    bad = ~(value > 0) if strict else ~(value >= 0)
    if np.any(bad):
        relation = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be {relation}, got {value.tolist()}")


def _check_temperature(temperature: ArrayLike) -> None:
    _check_nonneg_static("temperature", temperature, strict=True)


# --------------------------------------------------------------------------------------------------------------
# reduction
# --------------------------------------------------------------------------------------------------------------
def mean_where(values: ArrayLike, *, where: ArrayLike | None = None) -> jax.Array:
    """Mean of ``values`` over the entries where ``where`` is true; 0 (never NaN) when none is.

    Args:
      values: ``[...]`` per-example values, e.g. the ``[batch]`` output of a task loss.
      where: optional boolean mask broadcastable to ``values.shape``; masked entries are ignored, even when they
        hold NaN or inf.

    Returns:
      A scalar: ``sum(values[where]) / max(count(where), 1)``.

    Example:
      >>> mean_where(jnp.array([1.0, 3.0, 100.0]), where=jnp.array([True, True, False]))
      Array(2., dtype=float32)
    """
    values = jnp.asarray(values)
    dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
    values = values.astype(jnp.promote_types(dtype, jnp.float32))
    mask = _bool_mask("where", where, values.shape)
    if mask is None:
        if values.size == 0:
            return jnp.zeros((), values.dtype)
        return jnp.mean(values)
    total = jnp.sum(_zero_where_masked(values, mask))
    count = jnp.sum(mask).astype(values.dtype)
    return total / jnp.maximum(count, 1)


# --------------------------------------------------------------------------------------------------------------
# task losses (per-example)
# --------------------------------------------------------------------------------------------------------------
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
    predictions = _float_array("predictions", predictions)
    targets = jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must have the same shape")
    mask = _bool_mask("where", where, predictions.shape)
    err = _zero_where_masked(predictions, mask) - _zero_where_masked(targets.astype(predictions.dtype), mask)
    return _zero_where_masked(err * err, mask)


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
    logits = _float_array("logits", logits)
    labels = jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must have the same shape")
    mask = _bool_mask("where", where, logits.shape)
    x = _zero_where_masked(logits, mask)
    z = _zero_where_masked(labels.astype(logits.dtype), mask)
    loss = z * jax.nn.softplus(-x) + (1.0 - z) * jax.nn.softplus(x)
    return _zero_where_masked(loss, mask)


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
    pos = _float_array("pos_scores", pos_scores)
    neg = _float_array("neg_scores", neg_scores)
    _check_rank("pos_scores", pos, 1, "[batch]")
    if neg.ndim not in (1, 2) or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"neg_scores must be [batch] or [batch, num_neg] with batch = {pos.shape[0]} "
            f"(pos_scores {pos.shape}), got {neg.shape}"
        )
    dtype = jnp.promote_types(pos.dtype, neg.dtype)
    pos, neg = pos.astype(dtype), neg.astype(dtype)
    if where is not None and neg.ndim == 2 and jnp.ndim(where) == 1:
        where = jnp.asarray(where)[:, None]
    mask = _bool_mask("where", where, neg.shape)
    pos_b = pos if neg.ndim == 1 else pos[:, None]
    diff = _zero_where_masked(jnp.broadcast_to(pos_b, neg.shape), mask) - _zero_where_masked(neg, mask)
    loss = _zero_where_masked(jax.nn.softplus(-diff), mask)
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
    pos = _float_array("pos_logits", pos_logits)
    neg = _float_array("neg_logits", neg_logits)
    _check_rank("pos_logits", pos, 1, "[batch]")
    _check_rank("neg_logits", neg, 2, "[batch, num_neg]")
    batch, num_neg = neg.shape
    if pos.shape[0] != batch:
        raise ValueError(f"pos_logits {pos.shape} and neg_logits {neg.shape} disagree on batch")
    dtype = jnp.promote_types(pos.dtype, neg.dtype)
    row_mask = _bool_mask("where", _vector_of("where", where, batch), (batch,))
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
        logits = _zero_where_masked(logits, row_mask[:, None])
    return _zero_where_masked(_first_column_xent(logits, valid), row_mask)


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
    logits = _float_array("logits", logits)
    _check_rank("logits", logits, 2, "[batch, batch]")
    batch = logits.shape[0]
    if logits.shape[1] != batch:
        raise ValueError(f"in-batch logits must be square [batch, batch], got {logits.shape}")
    row_mask = _bool_mask("where", _vector_of("where", where, batch), (batch,))
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
        z = _zero_where_masked(z, row_mask[:, None])
    masked = jnp.where(valid, z, -jnp.inf)
    loss = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(z)
    return _zero_where_masked(loss, row_mask)


# --------------------------------------------------------------------------------------------------------------
# discrepancy terms D(hs [n, dim], ht [m, dim]) -> scalar
# --------------------------------------------------------------------------------------------------------------
def _prepare_pair(hs: ArrayLike, ht: ArrayLike, hs_mask: ArrayLike | None, ht_mask: ArrayLike | None):
    """Static checks; returns (hs, ht, ws, wt) with masked rows zeroed and float 0/1 row weights [n], [m]."""
    hs = _float_array("hs", hs)
    ht = _float_array("ht", ht)
    _check_rank("hs", hs, 2, "[n, dim]")
    _check_rank("ht", ht, 2, "[m, dim]")
    if hs.shape[1] != ht.shape[1]:
        raise ValueError(
            f"hs {hs.shape} and ht {ht.shape} must have the same embedding dim ({hs.shape[1]} != {ht.shape[1]})"
        )
    if hs.shape[1] == 0:
        raise ValueError(f"embedding dim must be >= 1, got hs {hs.shape} and ht {ht.shape}")
    dtype = jnp.promote_types(hs.dtype, ht.dtype)
    hs, ht = hs.astype(dtype), ht.astype(dtype)
    ms = _bool_mask("hs_mask", hs_mask, (hs.shape[0],))
    mt = _bool_mask("ht_mask", ht_mask, (ht.shape[0],))
    ws = jnp.ones((hs.shape[0],), dtype) if ms is None else ms.astype(dtype)
    wt = jnp.ones((ht.shape[0],), dtype) if mt is None else mt.astype(dtype)
    if ms is not None:
        hs = _zero_where_masked(hs, ms[:, None])
    if mt is not None:
        ht = _zero_where_masked(ht, mt[:, None])
    return hs, ht, ws, wt


def _masked_mean_rows(h: jax.Array, w: jax.Array) -> jax.Array:
    """``[dim]`` mean of the valid rows of ``h [rows, dim]``; zeros when none is valid."""
    return jnp.sum(h * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1)


def _enough(ws: jax.Array, wt: jax.Array, minimum: int) -> jax.Array:
    return (jnp.sum(ws) >= minimum) & (jnp.sum(wt) >= minimum)


def mean_l2(
    hs: ArrayLike, ht: ArrayLike, *, hs_mask: ArrayLike | None = None, ht_mask: ArrayLike | None = None
) -> jax.Array:
    """Half squared distance between the domain means: ``½‖mean(hs) − mean(ht)‖²`` (the design's D).

    Args:
      hs: ``[n, dim]`` source-domain representations.
      ht: ``[m, dim]`` target-domain representations (``m != n`` allowed).
      hs_mask: optional ``[n]`` mask of valid source rows.
      ht_mask: optional ``[m]`` mask of valid target rows.

    Returns:
      A scalar; 0 when either side has no valid row.

    Example:
      >>> mean_l2(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0], [0.0, 0.0]]))
      Array(0.5, dtype=float32)
    """
    hs, ht, ws, wt = _prepare_pair(hs, ht, hs_mask, ht_mask)
    diff = _masked_mean_rows(hs, ws) - _masked_mean_rows(ht, wt)
    return jnp.where(_enough(ws, wt, 1), 0.5 * jnp.sum(diff * diff), 0.0)


def linear_mmd(
    hs: ArrayLike, ht: ArrayLike, *, hs_mask: ArrayLike | None = None, ht_mask: ArrayLike | None = None
) -> jax.Array:
    """MMD² with the linear kernel: ``‖mean(hs) − mean(ht)‖²`` (always ≥ 0).

    Args:
      hs: ``[n, dim]`` source-domain representations.
      ht: ``[m, dim]`` target-domain representations.
      hs_mask: optional ``[n]`` mask of valid source rows.
      ht_mask: optional ``[m]`` mask of valid target rows.

    Returns:
      A scalar; 0 when either side has no valid row.

    Example:
      >>> linear_mmd(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0]]))
      Array(1., dtype=float32)
    """
    hs, ht, ws, wt = _prepare_pair(hs, ht, hs_mask, ht_mask)
    diff = _masked_mean_rows(hs, ws) - _masked_mean_rows(ht, wt)
    return jnp.where(_enough(ws, wt, 1), jnp.sum(diff * diff), 0.0)


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[rows_a, rows_b]`` squared Euclidean distances, clamped at 0 (no sqrt, so gradients stay finite)."""
    sa = jnp.sum(a * a, axis=1)
    sb = jnp.sum(b * b, axis=1)
    cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(sa[:, None] + sb[None, :] - 2.0 * cross, 0.0)


def _median_heuristic_sq(z: jax.Array, w: jax.Array) -> jax.Array:
    """Median of ``‖z_i − z_j‖²`` over valid pairs ``i < j`` of the pooled sample (no gradient)."""
    z = jax.lax.stop_gradient(z)
    rows = z.shape[0]
    if rows < 2:
        return jnp.ones((), z.dtype)
    d2 = _sq_dists(z, z)
    pair = (w[:, None] * w[None, :] > 0) & jnp.triu(jnp.ones((rows, rows), bool), k=1)
    med = jnp.nanmedian(jnp.where(pair, d2, jnp.nan))
    med = jnp.where(jnp.isnan(med), 1.0, med)  # fewer than two valid rows: value unused
    return jnp.maximum(med, jnp.finfo(z.dtype).tiny)


def _gaussian(d2: jax.Array, sigma_sq: jax.Array) -> jax.Array:
    return jnp.exp(-d2 / (2.0 * sigma_sq))


def _inverse_multiquadric(d2: jax.Array, sigma_sq: jax.Array) -> jax.Array:
    return jax.lax.rsqrt(1.0 + d2 / (2.0 * sigma_sq))


_KERNELS: Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]] = types.MappingProxyType(
    {
        "gaussian": _gaussian,
        "imq": _inverse_multiquadric,
    }
)


def _kernel_sum(kernel: str, d2: jax.Array, sigma_sq: jax.Array) -> jax.Array:
    """``Σ_σ k_σ(d²)`` for ``d2 [rows_a, rows_b]`` and ``sigma_sq [num_kernels]``."""
    return jnp.sum(_KERNELS[kernel](d2[..., None], sigma_sq), axis=-1)


def _bandwidths_sq(name: str, values: ArrayLike, dtype) -> jax.Array:
    values = jnp.asarray(values, dtype)
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty scalar or 1-D sequence, got shape {values.shape}")
    _check_nonneg_static(name, values, strict=True)
    return jnp.reshape(values, (-1,)) ** 2


def mmd(
    hs: ArrayLike,
    ht: ArrayLike,
    *,
    hs_mask: ArrayLike | None = None,
    ht_mask: ArrayLike | None = None,
    bandwidths: Sequence[float] | ArrayLike | None = None,
    median_scales: Sequence[float] = (1.0,),
    median_rows: int | None = None,
    kernel: str = "gaussian",
) -> jax.Array:
    """Unbiased MMD² estimate with a multi-kernel Gaussian ``k(x, y) = Σ_σ exp(−‖x − y‖² / (2σ²))``.

    ``MMD²_u = 1/(n(n−1)) Σ_{i≠i'} k(s_i, s_i') + 1/(m(m−1)) Σ_{j≠j'} k(t_j, t_j') − 2/(nm) Σ_{i,j} k(s_i, t_j)``
    over the valid rows (diagonal terms excluded). Being unbiased it can be slightly negative (it is not
    clamped, which would kill its gradient); for two samples of one distribution it is ≈ 0 in expectation.

    Bandwidths: ``bandwidths`` gives the σ values directly (each > 0). When it is None, the *median heuristic*
    is used: ``σ₀² = median{‖z_i − z_j‖² : i < j}`` over the valid rows of the pooled sample ``z = [hs; ht]``,
    and the kernels use ``σ = σ₀ · scale`` for each entry of ``median_scales``. The heuristic is computed under
    ``stop_gradient``: gradients treat the bandwidths as constants (otherwise the loss could be lowered by
    moving the bandwidth rather than the distributions). ``σ₀²`` is floored at the dtype's smallest normal
    number so identical points give finite values and gradients.

    ``kernel="imq"`` swaps each Gaussian for the inverse multiquadric ``(1 + ‖x − y‖² / (2σ²))^(−1/2)``, whose
    heavy tails keep a gradient when the domains are far apart (where Gaussian kernels vanish).

    Cost: ``O((n + m)² · dim)`` time and ``O((n + m)² · num_kernels)`` memory per call.

    Args:
      hs: ``[n, dim]`` source-domain representations.
      ht: ``[m, dim]`` target-domain representations (``m != n`` allowed).
      hs_mask: optional ``[n]`` mask of valid source rows.
      ht_mask: optional ``[m]`` mask of valid target rows.
      bandwidths: optional ``[num_kernels]`` σ values (> 0), or None for the median heuristic.
      median_scales: multipliers (> 0) of the median bandwidth, used only when ``bandwidths`` is None.
      median_rows: compute the median heuristic on at most ``median_rows // 2`` leading rows of each side
        (None: all rows). The median sorts O((n + m)²) distances, which dominates the cost on a CPU for a few
        hundred rows; with shuffled batches the leading rows are a random subsample.
      kernel: ``"gaussian"`` (default) or ``"imq"``; other names raise ValueError listing the valid ones.

    Returns:
      A scalar; 0 when either side has fewer than 2 valid rows.

    Example:
      >>> hs = jnp.array([[0.0], [1.0]]); ht = jnp.array([[5.0], [6.0], [7.0]])
      >>> float(mmd(hs, ht, bandwidths=[1.0])) > 0.5
      True
    """
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid names: {sorted(_KERNELS)}")
    hs, ht, ws, wt = _prepare_pair(hs, ht, hs_mask, ht_mask)
    dtype = hs.dtype
    if bandwidths is None:
        scales_sq = _bandwidths_sq("median_scales", median_scales, dtype)
        half = max(hs.shape[0], ht.shape[0]) if median_rows is None else median_rows // 2
        if median_rows is not None and median_rows < 4:
            raise ValueError(f"median_rows={median_rows} must be >= 4 or None")
        pooled = jnp.concatenate([hs[:half], ht[:half]], axis=0)
        sigma_sq = _median_heuristic_sq(pooled, jnp.concatenate([ws[:half], wt[:half]])) * scales_sq
    else:
        sigma_sq = _bandwidths_sq("bandwidths", bandwidths, dtype)
    # Distances are translation invariant: centring on the pooled mean reduces cancellation in ‖a‖²+‖b‖²−2a·b.
    centre = jax.lax.stop_gradient(
        (jnp.sum(hs * ws[:, None], 0) + jnp.sum(ht * wt[:, None], 0)) / jnp.maximum(jnp.sum(ws) + jnp.sum(wt), 1)
    )
    hs_c = _zero_where_masked(hs - centre, ws[:, None] > 0)
    ht_c = _zero_where_masked(ht - centre, wt[:, None] > 0)
    n, m = hs.shape[0], ht.shape[0]
    count_s, count_t = jnp.sum(ws), jnp.sum(wt)
    off_s = ws[:, None] * ws[None, :] * (1.0 - jnp.eye(n, dtype=dtype))
    off_t = wt[:, None] * wt[None, :] * (1.0 - jnp.eye(m, dtype=dtype))
    k_ss = jnp.sum(_kernel_sum(kernel, _sq_dists(hs_c, hs_c), sigma_sq) * off_s)
    k_tt = jnp.sum(_kernel_sum(kernel, _sq_dists(ht_c, ht_c), sigma_sq) * off_t)
    k_st = jnp.sum(_kernel_sum(kernel, _sq_dists(hs_c, ht_c), sigma_sq) * (ws[:, None] * wt[None, :]))
    value = (
        k_ss / jnp.maximum(count_s * (count_s - 1), 1)
        + k_tt / jnp.maximum(count_t * (count_t - 1), 1)
        - 2.0 * k_st / jnp.maximum(count_s * count_t, 1)
    )
    return jnp.where(_enough(ws, wt, 2), value, 0.0)


def _masked_covariance(h: jax.Array, w: jax.Array) -> jax.Array:
    """``[dim, dim]`` unbiased (count − 1) covariance of the valid rows of ``h [rows, dim]``."""
    centred = (h - _masked_mean_rows(h, w)) * w[:, None]
    gram = jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST)
    return gram / jnp.maximum(jnp.sum(w) - 1, 1)


def coral(
    hs: ArrayLike, ht: ArrayLike, *, hs_mask: ArrayLike | None = None, ht_mask: ArrayLike | None = None
) -> jax.Array:
    """Deep CORAL: ``‖C_s − C_t‖²_F / (4 dim²)`` with unbiased ``(count − 1)`` covariances.

    Invariant to shifting either domain by a constant (only second moments are compared).

    Args:
      hs: ``[n, dim]`` source-domain representations.
      ht: ``[m, dim]`` target-domain representations (``m != n`` allowed).
      hs_mask: optional ``[n]`` mask of valid source rows.
      ht_mask: optional ``[m]`` mask of valid target rows.

    Returns:
      A scalar; 0 when either side has fewer than 2 valid rows.

    Example:
      >>> coral(jnp.array([[0.0], [2.0]]), jnp.array([[0.0], [0.0]]))  # C_s = 2, C_t = 0 → 4 / 4
      Array(1., dtype=float32)
    """
    hs, ht, ws, wt = _prepare_pair(hs, ht, hs_mask, ht_mask)
    dim = hs.shape[1]
    diff = _masked_covariance(hs, ws) - _masked_covariance(ht, wt)
    value = jnp.sum(diff * diff) / (4.0 * dim * dim)
    return jnp.where(_enough(ws, wt, 2), value, 0.0)


def _masked_quantiles(x: jax.Array, w: jax.Array, levels: jax.Array) -> jax.Array:
    """Step-function quantiles ``[num_levels, cols]`` of the valid rows of ``x [rows, cols]``.

    The empirical quantile at level ``u`` is the ``floor(u · count)``-th smallest valid value (0-based).
    """
    if x.shape[0] == 0:  # statically empty side: the caller returns 0, the values are unused
        return jnp.zeros((levels.shape[0], x.shape[1]), x.dtype)
    count = jnp.sum(w)
    big = jnp.finfo(x.dtype).max
    ordered = jnp.sort(jnp.where(w[:, None] > 0, x, big), axis=0)
    index = jnp.clip(jnp.floor(levels * count), 0, jnp.maximum(count - 1, 0)).astype(jnp.int32)
    return jnp.take(ordered, index, axis=0)


def sliced_wasserstein(
    hs: ArrayLike,
    ht: ArrayLike,
    *,
    hs_mask: ArrayLike | None = None,
    ht_mask: ArrayLike | None = None,
    num_projections: int = 64,
    num_quantiles: int | None = None,
    projections: ArrayLike | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """Sliced squared 2-Wasserstein distance, averaged over random unit directions.

    ``SW² = mean_θ ∫₀¹ (F⁻¹_{s,θ}(u) − F⁻¹_{t,θ}(u))² du`` where ``F⁻¹_{·,θ}`` is the empirical quantile function
    of the valid rows projected on ``θ``. The integral uses the midpoint rule on ``num_quantiles`` levels
    ``(k + ½)/K``; it is exact when ``K`` is a common multiple of the two valid counts (in particular, for
    ``n = m = K`` without masks it is the classic sorted matching ``mean((sort(a) − sort(b))²)``).

    Args:
      hs: ``[n, dim]`` source-domain representations.
      ht: ``[m, dim]`` target-domain representations (``m != n`` allowed).
      hs_mask: optional ``[n]`` mask of valid source rows.
      ht_mask: optional ``[m]`` mask of valid target rows.
      num_projections: number of random directions when ``projections`` is None.
      num_quantiles: number of quantile levels ``K``; default ``max(n, m)``.
      projections: optional ``[dim, num_projections]`` directions (columns used as given, normally unit norm).
      key: PRNG key for the random directions; default ``jax.random.PRNGKey(0)`` (fixed directions, so the
        function stays deterministic; pass a fresh key per step for an unbiased estimate).

    Returns:
      A scalar; 0 when either side has no valid row.
    """
    hs, ht, ws, wt = _prepare_pair(hs, ht, hs_mask, ht_mask)
    dim = hs.shape[1]
    if projections is None:
        if not isinstance(num_projections, int) or num_projections < 1:
            raise ValueError(f"num_projections must be a positive int, got {num_projections!r}")
        key = jax.random.PRNGKey(0) if key is None else key
        theta = jax.random.normal(key, (dim, num_projections), hs.dtype)
        theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    else:
        theta = _float_array("projections", projections).astype(hs.dtype)
        if theta.ndim != 2 or theta.shape[0] != dim:
            raise ValueError(f"projections must be [dim, num_projections] with dim = {dim}, got {theta.shape}")
    if num_quantiles is None:
        num_quantiles = max(hs.shape[0], ht.shape[0], 1)
    if not isinstance(num_quantiles, int) or num_quantiles < 1:
        raise ValueError(f"num_quantiles must be a positive int, got {num_quantiles!r}")
    levels = (jnp.arange(num_quantiles, dtype=hs.dtype) + 0.5) / num_quantiles
    ok = _enough(ws, wt, 1)
    qs = jnp.where(ok, _masked_quantiles(hs @ theta, ws, levels), 0.0)
    qt = jnp.where(ok, _masked_quantiles(ht @ theta, wt, levels), 0.0)
    return jnp.mean((qs - qt) ** 2)


Discrepancy = Callable[..., jax.Array]

DISCREPANCIES: Mapping[str, Discrepancy] = types.MappingProxyType(
    {
        "mean_l2": mean_l2,
        "linear_mmd": linear_mmd,
        "mmd": mmd,
        "coral": coral,
        "sliced_wasserstein": sliced_wasserstein,
    }
)
"""Read-only registry ``name -> D(hs [n, dim], ht [m, dim], *, hs_mask=None, ht_mask=None, ...) -> scalar``."""


def get_discrepancy(name: str) -> Discrepancy:
    """The discrepancy function registered under ``name``; ValueError listing the valid names otherwise.

    Example:
      >>> get_discrepancy("coral") is coral
      True
    """
    if not isinstance(name, str) or name not in DISCREPANCIES:
        raise ValueError(f"unknown discrepancy {name!r}; valid names: {sorted(DISCREPANCIES)}")
    return DISCREPANCIES[name]


# --------------------------------------------------------------------------------------------------------------
# adversarial alignment
# --------------------------------------------------------------------------------------------------------------
def _domain_logits(name: str, x: ArrayLike) -> jax.Array:
    x = _float_array(name, x)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name} must be [rows] or [rows, 1] domain-classifier logits, got {x.shape}")
    return x


def domain_adversarial_loss(
    source_logits: ArrayLike,
    target_logits: ArrayLike,
    *,
    source_mask: ArrayLike | None = None,
    target_mask: ArrayLike | None = None,
) -> jax.Array:
    """Domain-classification BCE (source label 1, target label 0), balanced over the two domains.

    ``½ · mean_valid BCE(source_logits, 1) + ½ · mean_valid BCE(target_logits, 0)``; each domain weighs ½
    whatever its row count, so ``n != m`` does not bias the classifier towards the larger domain. A fully
    masked side contributes 0; both sides masked gives 0.

    How it composes with gradient reversal (DANN): the model feeds the representations through
    ``models.gradient_reversal(h, alpha)`` (identity forward, ``−alpha × grad`` backward) before the domain
    classifier, and this loss is simply *added* to the task loss and minimised over all parameters. The
    classifier's parameters then descend this loss (learn to tell the domains apart) while the encoder receives
    ``−alpha`` times its gradient (learns to confuse the classifier). Put the λ ramp
    (``dann_lambda_schedule``) in ``alpha`` and weight this loss by 1 to reproduce DANN; weighting the loss by
    λ instead (e.g. via ``combined_loss(..., lam=λ)``) also scales the classifier's own learning signal.

    Args:
      source_logits: ``[n]`` (or ``[n, 1]``) classifier logits for source rows.
      target_logits: ``[m]`` (or ``[m, 1]``) classifier logits for target rows.
      source_mask: optional ``[n]`` mask of valid source rows.
      target_mask: optional ``[m]`` mask of valid target rows.

    Returns:
      A scalar loss.

    Example:
      >>> domain_adversarial_loss(jnp.zeros(3), jnp.zeros(5))  # chance level: log 2
      Array(0.6931472, dtype=float32)
    """
    s = _domain_logits("source_logits", source_logits)
    t = _domain_logits("target_logits", target_logits)
    source = sigmoid_bce(s, jnp.ones_like(s), where=source_mask)
    target = sigmoid_bce(t, jnp.zeros_like(t), where=target_mask)
    return 0.5 * mean_where(source, where=source_mask) + 0.5 * mean_where(target, where=target_mask)


# --------------------------------------------------------------------------------------------------------------
# λ schedules (optax-style: step -> value, jittable)
# --------------------------------------------------------------------------------------------------------------
def dann_lambda_schedule(*, total_steps: int, gamma: float = 10.0, max_value: float = 1.0) -> Schedule:
    """The DANN ramp ``λ(step) = max_value · (2 / (1 + exp(−γ p)) − 1)``, ``p = clip(step / total_steps, 0, 1)``.

    Starts at 0, rises smoothly and saturates near ``max_value`` (``tanh(γ/2) · max_value`` at ``p = 1``),
    suppressing the noisy adversarial signal early in training.

    Args:
      total_steps: steps of the whole run (> 0); progress is clipped at 1 beyond it.
      gamma: steepness γ (>= 0).
      max_value: the asymptotic value (>= 0).

    Returns:
      A jittable ``schedule(step) -> scalar`` (float32).

    Example:
      >>> float(dann_lambda_schedule(total_steps=100)(0))
      0.0
    """
    if not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    _check_nonneg_static("gamma", gamma)
    _check_nonneg_static("max_value", max_value)

    def schedule(step: ArrayLike) -> jax.Array:
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
        # 2 / (1 + exp(-x)) - 1 == tanh(x / 2), computed without cancellation near 0.
        return max_value * jnp.tanh(0.5 * gamma * progress)

    return schedule


def constant_schedule(value: float) -> Schedule:
    """``λ(step) = value`` (>= 0).

    Example:
      >>> float(constant_schedule(0.3)(7))
      0.30000001192092896
    """
    _check_nonneg_static("value", value)

    def schedule(step: ArrayLike) -> jax.Array:
        return jnp.full(jnp.shape(step), value, jnp.float32)

    return schedule


def linear_warmup_schedule(*, warmup_steps: int, max_value: float = 1.0, init_value: float = 0.0) -> Schedule:
    """Linear ramp from ``init_value`` at step 0 to ``max_value`` at ``warmup_steps``, constant afterwards.

    Args:
      warmup_steps: length of the ramp (>= 0; 0 means constant ``max_value``).
      max_value: final value (>= 0).
      init_value: value at step 0 (>= 0).

    Returns:
      A jittable ``schedule(step) -> scalar`` (float32).

    Example:
      >>> float(linear_warmup_schedule(warmup_steps=10, max_value=2.0)(5))
      1.0
    """
    if not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    _check_nonneg_static("max_value", max_value)
    _check_nonneg_static("init_value", init_value)

    def schedule(step: ArrayLike) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps == 0:
            return jnp.full(step.shape, max_value, jnp.float32)
        frac = jnp.clip(step / warmup_steps, 0.0, 1.0)
        return jnp.asarray(init_value + (max_value - init_value) * frac, jnp.float32)

    return schedule


# --------------------------------------------------------------------------------------------------------------
# the combined objective
# --------------------------------------------------------------------------------------------------------------
def _scalar(name: str, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {x.shape}; reduce it first (e.g. mean_where)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def combined_loss(
    task_losses: Mapping[str, ArrayLike],
    discrepancy: ArrayLike | None,
    *,
    lam: ArrayLike,
    weights: Mapping[str, ArrayLike] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L = Σ_d w_d · L_task(d) + λ · D``, returned with all of its parts for logging.

    Args:
      task_losses: ``{domain name: scalar task loss}`` (already reduced, e.g. with ``mean_where``).
      discrepancy: the scalar ``D`` (a discrepancy term or ``domain_adversarial_loss``), or None for no term.
      lam: λ >= 0 (a scalar; checked when concrete, e.g. the value of a schedule outside ``jit``).
      weights: optional ``{domain name: w_d >= 0}`` with exactly the keys of ``task_losses``; default all 1.

    Returns:
      ``(total, parts)`` where ``parts`` holds ``"task/<name>"`` (each unweighted task loss), ``"task"``
      (``Σ_d w_d L_d``), ``"discrepancy"`` (``D``), ``"lam"``, ``"weighted_discrepancy"`` (``λ D``) and
      ``"total"``.

    Example:
      >>> total, parts = combined_loss({"source": 1.0, "target": 2.0}, 0.5, lam=2.0)
      >>> float(total), float(parts["task"])
      (4.0, 3.0)
    """
    if not isinstance(task_losses, Mapping) or not task_losses:
        raise ValueError(f"task_losses must be a non-empty mapping of domain name -> scalar, got {task_losses!r}")
    names = list(task_losses)
    if weights is None:
        weights = {name: 1.0 for name in names}
    if not isinstance(weights, Mapping) or set(weights) != set(names):
        got = sorted(weights) if isinstance(weights, Mapping) else weights
        raise ValueError(f"weights must have exactly the task_losses keys {sorted(names)}, got {got}")
    lam = _scalar("lam", lam)
    _check_nonneg_static("lam", lam)
    parts: dict[str, jax.Array] = {}
    task_total = jnp.zeros((), jnp.float32)
    for name in names:
        loss = _scalar(f"task_losses[{name!r}]", task_losses[name])
        weight = _scalar(f"weights[{name!r}]", weights[name])
        _check_nonneg_static(f"weights[{name!r}]", weight)
        parts[f"task/{name}"] = loss
        task_total = task_total + weight * loss
    disc = jnp.zeros((), task_total.dtype) if discrepancy is None else _scalar("discrepancy", discrepancy)
    weighted = lam * disc
    total = task_total + weighted
    parts.update(task=task_total, discrepancy=disc, lam=lam, weighted_discrepancy=weighted, total=total)
    return total, parts

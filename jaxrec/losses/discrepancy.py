"""Discrepancy terms ``D(hs, ht) -> scalar`` between two domains' representations, and the MMD kernels.

Axis conventions:
  n, m      rows (users or items) of the source / target domain; ``n != m`` is allowed everywhere
  dim       representation width; must be the same in both domains

Every term has the signature ``D(hs [n, dim], ht [m, dim], *, hs_mask=None, ht_mask=None, **options) -> scalar``
(the registry of names is :data:`jaxrec.losses.DISCREPANCIES`). Masks ``hs_mask [n]``, ``ht_mask [m]`` are
boolean and mark padded rows, so that shapes stay static under ``jit``.

Empty sides: a term returns 0 when either side has fewer valid rows than its estimator needs (1 for ``mean_l2`` /
``linear_mmd`` / ``sliced_wasserstein``, 2 for the unbiased ``mmd`` and ``coral``) — there is nothing to align,
so the term contributes neither value nor gradient. This holds for fully masked inputs and for statically empty
arrays alike.

Computation happens in at least float32 (bfloat16/float16 inputs are upcast); float64 inputs stay float64.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxrec import checks
from jaxrec.losses.checks import ArrayLike, bool_mask, check_nonneg_static, check_rank, float_array, zero_where_masked


def _prepare_pair(hs: ArrayLike, ht: ArrayLike, hs_mask: ArrayLike | None, ht_mask: ArrayLike | None):
    """Static checks; returns (hs, ht, ws, wt) with masked rows zeroed and float 0/1 row weights [n], [m]."""
    hs = float_array("hs", hs)
    ht = float_array("ht", ht)
    check_rank("hs", hs, 2, "[n, dim]")
    check_rank("ht", ht, 2, "[m, dim]")
    if hs.shape[1] != ht.shape[1]:
        raise ValueError(
            f"hs {hs.shape} and ht {ht.shape} must have the same embedding dim ({hs.shape[1]} != {ht.shape[1]})"
        )
    if hs.shape[1] == 0:
        raise ValueError(f"embedding dim must be >= 1, got hs {hs.shape} and ht {ht.shape}")
    dtype = jnp.promote_types(hs.dtype, ht.dtype)
    hs, ht = hs.astype(dtype), ht.astype(dtype)
    ms = bool_mask("hs_mask", hs_mask, (hs.shape[0],))
    mt = bool_mask("ht_mask", ht_mask, (ht.shape[0],))
    ws = jnp.ones((hs.shape[0],), dtype) if ms is None else ms.astype(dtype)
    wt = jnp.ones((ht.shape[0],), dtype) if mt is None else mt.astype(dtype)
    if ms is not None:
        hs = zero_where_masked(hs, ms[:, None])
    if mt is not None:
        ht = zero_where_masked(ht, mt[:, None])
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
    return 0.5 * linear_mmd(hs, ht, hs_mask=hs_mask, ht_mask=ht_mask)


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
    check_nonneg_static(name, values, strict=True)
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
    hs_c = zero_where_masked(hs - centre, ws[:, None] > 0)
    ht_c = zero_where_masked(ht - centre, wt[:, None] > 0)
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
        num_projections = checks.positive_int("num_projections", num_projections)
        key = jax.random.PRNGKey(0) if key is None else key
        theta = jax.random.normal(key, (dim, num_projections), hs.dtype)
        theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    else:
        theta = float_array("projections", projections).astype(hs.dtype)
        if theta.ndim != 2 or theta.shape[0] != dim:
            raise ValueError(f"projections must be [dim, num_projections] with dim = {dim}, got {theta.shape}")
    if num_quantiles is None:
        num_quantiles = max(hs.shape[0], ht.shape[0], 1)
    num_quantiles = checks.positive_int("num_quantiles", num_quantiles)
    levels = (jnp.arange(num_quantiles, dtype=hs.dtype) + 0.5) / num_quantiles
    ok = _enough(ws, wt, 1)
    qs = jnp.where(ok, _masked_quantiles(hs @ theta, ws, levels), 0.0)
    qt = jnp.where(ok, _masked_quantiles(ht @ theta, wt, levels), 0.0)
    return jnp.mean((qs - qt) ** 2)

"""How far apart two sets of representations are: kernel discrepancies, the proxy A-distance, mean shifts.

Axis conventions (used throughout this file):
  n, m      rows (users) of the two compared sets ("a" and "b"; e.g. source and target); ``n != m`` is allowed
  dim       representation width; the same on both sides
  rows      ``n + m``: both sides stacked (source rows first)

Everything here runs on the host and returns Python numbers; the heavy parts (the kernel discrepancies, the
domain classifier's training loop) are jitted and compile once per input size bucket (a power of two rows).

The discrepancy terms come from :mod:`jaxrec.losses` (``mmd`` with its median heuristic, ``linear_mmd``,
``coral``); :func:`proxy_a_distance` adds the proxy A-distance of Ben-David et al. (2007, 2010): the held-out
error ``ε`` of a linear domain classifier, turned into ``2 (1 − 2ε)`` — 0 when the classifier cannot tell the
domains apart, 2 when it separates them perfectly.

Example:
  >>> rng = np.random.default_rng(0)
  >>> gap = domain_gap(rng.normal(size=(300, 8)), rng.normal(size=(200, 8)) + 1.0)
  >>> gap["proxy_a_distance"] > 1.5
  True
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec import checks, losses

__all__ = ["GAP_MEASURES", "domain_gap", "proxy_a_distance"]

#: Measures of :func:`domain_gap`, each a distance (larger = further apart) except ``mean_cosine`` (a similarity).
GAP_MEASURES = ("mmd", "linear_mmd", "coral", "proxy_a_distance", "mean_distance", "mean_cosine")

_MEDIAN_ROWS = 1024  # rows on which losses.mmd takes its median bandwidth (it sorts O(rows²) distances)


# --------------------------------------------------------------------------------------------------------------
# checks and padding
# --------------------------------------------------------------------------------------------------------------
def _pair(hs: Any, ht: Any, *, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``hs [n, dim]`` and ``ht [m, dim]`` as float64 numpy arrays; TypeError/ValueError quoting the shapes."""
    hs, ht = np.asarray(hs), np.asarray(ht)
    for name, x in (("hs", hs), ("ht", ht)):
        if not jnp.issubdtype(x.dtype, jnp.floating):  # jnp: also bfloat16
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype} (shape {x.shape})")
        if x.ndim != 2:
            raise ValueError(f"{name} must have rank 2 ([rows, dim]), got shape {x.shape}")
    if hs.shape[1] != ht.shape[1] or hs.shape[1] == 0:
        raise ValueError(f"hs {hs.shape} and ht {ht.shape} must have the same dim >= 1")
    if hs.shape[0] < min_rows or ht.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} rows on each side, got hs {hs.shape} and ht {ht.shape}")
    if not (np.all(np.isfinite(hs)) and np.all(np.isfinite(ht))):
        raise ValueError(f"hs {hs.shape} and ht {ht.shape} must be finite (found NaN or inf)")
    return hs.astype(np.float64), ht.astype(np.float64)


def _bucket(rows: int) -> int:
    """Rows padded up to a power of two, at least 256, so that inputs of similar sizes share one compilation
    (small inputs cost little either way; every small input then shares one program)."""
    return max(256, 1 << (int(rows) - 1).bit_length())


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero (False) rows appended up to ``rows``."""
    return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)], axis=0)


# --------------------------------------------------------------------------------------------------------------
# proxy A-distance
# --------------------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_domain_classifier(
    x: jax.Array, is_source: jax.Array, train: jax.Array, learning_rate: jax.Array, l2: jax.Array, *, steps: int
) -> jax.Array:
    """Logistic domain classifier on the training rows; returns the ``[rows]`` logits of *every* row.

    Args:
      x: ``[rows, dim]`` standardized features.
      is_source: ``[rows]`` bool, the domain label (source = 1).
      train: ``[rows]`` bool, the rows the classifier learns from (the others are only scored).
      learning_rate: scalar Adam step size.
      l2: scalar weight of ``‖w‖²``.
      steps: full-batch Adam steps (static).

    The loss is :func:`losses.domain_adversarial_loss`, the BCE balanced over the two domains, so a larger
    domain does not pull the classifier towards predicting it.
    """
    optimizer = optax.adam(learning_rate)
    params = (jnp.zeros((x.shape[1],), x.dtype), jnp.zeros((), x.dtype))  # convex: zero init is deterministic

    def loss_fn(p):
        w, b = p
        logits = x @ w + b
        bce = losses.domain_adversarial_loss(
            logits, logits, source_mask=train & is_source, target_mask=train & ~is_source
        )
        return bce + l2 * jnp.sum(w * w)

    def step(carry, _):
        p, opt_state = carry
        grads = jax.grad(loss_fn)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    w, b = params
    return x @ w + b


def _split_rows(n: int, train_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` bool: a random ``train_fraction`` of the rows (at least one, and at least one left out)."""
    n_train = int(np.clip(round(train_fraction * n), 1, n - 1))
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[:n_train]] = True
    return mask


def proxy_a_distance(
    hs: Any,
    ht: Any,
    *,
    seed: int = 0,
    train_fraction: float = 0.5,
    steps: int = 300,
    l2: float = 1e-3,
    learning_rate: float = 0.05,
) -> float:
    """Proxy A-distance ``2 (1 − 2ε)`` of a linear domain classifier's held-out error ``ε``, clipped to [0, 2].

    Each domain's rows are split at random (``seed``) into a training part (``train_fraction``) and a held-out
    part. Features are standardized with the mean and standard deviation of the pooled training rows (a constant
    column is left unscaled). A logistic classifier ``σ(x·w + b)`` is trained on the training rows with
    full-batch Adam for ``steps`` steps (one jitted ``lax.scan``) on the domain-balanced BCE plus
    ``l2 · ‖w‖²``. ``ε`` is its *balanced* held-out error, ``½ (error on source rows + error on target rows)``,
    so chance level is ε = ½ (distance 0) whatever ``n / m`` — with plain error, always predicting the larger
    domain would score below ½ on identical distributions.

    Deterministic given ``seed`` (the split; the classifier starts at zero).

    Args:
      hs: ``[n, dim]`` source-domain representations, ``n >= 2``.
      ht: ``[m, dim]`` target-domain representations, ``m >= 2``.
      seed: seed of the train / held-out split.
      train_fraction: share of each domain's rows the classifier trains on, in (0, 1).
      steps: Adam steps.
      l2: L2 penalty on the weights (>= 0).
      learning_rate: Adam step size (> 0).

    Returns:
      A float in ``[0, 2]``.

    Raises:
      TypeError: non-floating inputs.
      ValueError: bad shapes (quoted), fewer than 2 rows on a side, non-finite values, or bad options.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> proxy_a_distance(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 5.0)
      2.0
    """
    hs, ht = _pair(hs, ht, min_rows=2)
    if not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    steps = checks.positive_int("steps", steps)
    if not float(l2) >= 0.0 or not float(learning_rate) > 0.0:
        raise ValueError(f"l2 must be >= 0 and learning_rate > 0, got l2={l2!r}, learning_rate={learning_rate!r}")
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [_split_rows(hs.shape[0], train_fraction, rng), _split_rows(ht.shape[0], train_fraction, rng)]
    )
    is_source = np.arange(hs.shape[0] + ht.shape[0]) < hs.shape[0]
    x = np.concatenate([hs, ht], axis=0)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    x = (x - mean) / np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    rows, padded = x.shape[0], _bucket(x.shape[0])  # padded rows: not trained on, not scored
    logits = _fit_domain_classifier(
        jnp.asarray(_pad_rows(x, padded), jnp.float32),
        jnp.asarray(_pad_rows(is_source, padded)),
        jnp.asarray(_pad_rows(train, padded)),
        jnp.asarray(learning_rate, jnp.float32),
        jnp.asarray(l2, jnp.float32),
        steps=steps,
    )[:rows]
    predicted_source = np.asarray(logits) > 0
    held = ~train
    err_source = np.mean(~predicted_source[held & is_source])
    err_target = np.mean(predicted_source[held & ~is_source])
    eps = 0.5 * (err_source + err_target)
    return float(np.clip(2.0 * (1.0 - 2.0 * eps), 0.0, 2.0))


# --------------------------------------------------------------------------------------------------------------
# all measures at once
# --------------------------------------------------------------------------------------------------------------
@jax.jit
def _kernel_measures(hs: jax.Array, ht: jax.Array, hs_mask: jax.Array, ht_mask: jax.Array) -> dict[str, jax.Array]:
    """The :mod:`losses` discrepancies of the valid rows of ``hs [n, dim]`` and ``ht [m, dim]``."""
    masks = {"hs_mask": hs_mask, "ht_mask": ht_mask}
    return {
        "mmd": losses.mmd(hs, ht, median_rows=_MEDIAN_ROWS, **masks),
        "linear_mmd": losses.linear_mmd(hs, ht, **masks),
        "coral": losses.coral(hs, ht, **masks),
    }


def _subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_rows`` rows of ``x`` (a random subset, kept in their original order)."""
    if x.shape[0] <= max_rows:
        return x
    return x[np.sort(rng.choice(x.shape[0], max_rows, replace=False))]


def domain_gap(hs: Any, ht: Any, *, seed: int = 0, max_rows: int = 2048, **proxy_kwargs: Any) -> dict[str, Any]:
    """Every gap measure between two sets of representations.

    Each side is subsampled to at most ``max_rows`` rows (without replacement, ``seed``; a side that fits is
    used whole), then:

    * ``mmd``: :func:`losses.mmd`, unbiased MMD² with one Gaussian kernel at the median-heuristic bandwidth of
      the pooled rows (scale-free; may be slightly negative for identical distributions);
    * ``linear_mmd``: :func:`losses.linear_mmd`, ``‖mean(hs) − mean(ht)‖²``;
    * ``coral``: :func:`losses.coral`, ``‖C_s − C_t‖²_F / (4 dim²)``;
    * ``proxy_a_distance``: :func:`proxy_a_distance` (``seed`` and ``proxy_kwargs`` passed on);
    * ``mean_distance``: ``‖mean(hs) − mean(ht)‖`` (the square root of ``linear_mmd``, in representation units);
    * ``mean_cosine``: cosine of the two mean vectors (1 = same direction; 0 when a mean is the zero vector);
    * ``n_a``, ``n_b``: the rows used on each side.

    Args:
      hs: ``[n, dim]`` first set ("a", e.g. the source domain), ``n >= 2``.
      ht: ``[m, dim]`` second set ("b", e.g. the target domain), ``m >= 2``.
      seed: subsampling and proxy A-distance split.
      max_rows: rows kept per side (MMD costs O((n + m)²)).
      **proxy_kwargs: options of :func:`proxy_a_distance` (``train_fraction``, ``steps``, ``l2``,
        ``learning_rate``).

    Returns:
      ``{measure: float}`` for :data:`GAP_MEASURES` plus ``{"n_a": int, "n_b": int}``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> gap = domain_gap(rng.normal(size=(300, 8)), rng.normal(size=(200, 8)) + 1.0)
      >>> gap["proxy_a_distance"] > 1.5
      True
    """
    hs, ht = _pair(hs, ht, min_rows=2)
    max_rows = checks.positive_int("max_rows", max_rows)
    if max_rows < 2:
        raise ValueError(f"max_rows must be >= 2, got {max_rows}")
    rng = np.random.default_rng(seed)
    hs, ht = _subsample(hs, max_rows, rng), _subsample(ht, max_rows, rng)
    # losses.mmd takes its median bandwidth on the leading rows: shuffle so that they are a random subset.
    order_s, order_t = rng.permutation(hs.shape[0]), rng.permutation(ht.shape[0])
    n, m = _bucket(hs.shape[0]), _bucket(ht.shape[0])  # padded rows are masked out
    kernel = _kernel_measures(
        jnp.asarray(_pad_rows(hs[order_s], n), jnp.float32),
        jnp.asarray(_pad_rows(ht[order_t], m), jnp.float32),
        jnp.arange(n) < hs.shape[0],
        jnp.arange(m) < ht.shape[0],
    )
    kernel = jax.device_get(kernel)
    mu_s, mu_t = hs.mean(axis=0), ht.mean(axis=0)
    norms = float(np.linalg.norm(mu_s) * np.linalg.norm(mu_t))
    return {
        "mmd": float(kernel["mmd"]),
        "linear_mmd": float(kernel["linear_mmd"]),
        "coral": float(kernel["coral"]),
        "proxy_a_distance": proxy_a_distance(hs, ht, seed=seed, **proxy_kwargs),
        "mean_distance": float(np.linalg.norm(mu_s - mu_t)),
        "mean_cosine": float(mu_s @ mu_t / norms) if norms > 0 else 0.0,
        "n_a": int(hs.shape[0]),
        "n_b": int(ht.shape[0]),
    }

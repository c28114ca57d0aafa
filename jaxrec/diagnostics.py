"""Domain-gap diagnostics: how far apart two sets of representations are, and the overlap of two domains.

Axis conventions (used throughout this file):
  n, m      rows (users) of the two compared sets ("a" and "b"; e.g. source and target); ``n != m`` is allowed
  dim       representation width; the same on both sides
  rows      ``n + m``: both sides stacked (source rows first)

Everything here runs on the host and returns Python numbers (reports are JSON-serialisable); the heavy parts
(the kernel discrepancies, the domain classifier's training loop) are jitted and compile once per input shape.

The discrepancy terms come from :mod:`jaxrec.losses` (``mmd`` with its median heuristic, ``linear_mmd``,
``coral``); :func:`proxy_a_distance` adds the proxy A-distance of Ben-David et al. (2007, 2010): the held-out
error ``ε`` of a linear domain classifier, turned into ``2 (1 − 2ε)`` — 0 when the classifier cannot tell the
domains apart, 2 when it separates them perfectly.

Example:
  >>> ds, _ = jaxrec.data.synthetic(n_users=300, n_items=(80, 60))
  >>> ds = jaxrec.data.cold_start_split(ds, "source", "target")
  >>> trained = jaxrec.methods.run("mmd", ds, source="source", target="target", epochs=2, progress=False)
  >>> tables = scorer_user_tables(trained, n_users=ds.n_users)
  >>> report = diagnose(ds, tables, source="source", target="target")
  >>> print(format_report(report))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec import losses
from jaxrec.data import CrossDomainDataset, DataError

__all__ = [
    "GAP_MEASURES",
    "diagnose",
    "diagnostics_figure",
    "domain_gap",
    "format_link_test",
    "format_report",
    "link_test",
    "overlap_stats",
    "proxy_a_distance",
    "scorer_user_tables",
]

UserVectors = Callable[[np.ndarray, str], Any]  # (users int32 [B], domain name) -> [B, dim]

#: Measures of :func:`domain_gap`, each a distance (larger = further apart) except ``mean_cosine`` (a similarity).
GAP_MEASURES = ("mmd", "linear_mmd", "coral", "proxy_a_distance", "mean_distance", "mean_cosine")

_MEDIAN_ROWS = 1024  # rows on which losses.mmd takes its median bandwidth (it sorts O(rows²) distances)


# --------------------------------------------------------------------------------------------------------------
# private helpers: checks
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


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


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
      TypeError: non-floating inputs. ValueError: bad shapes (quoted), fewer than 2 rows on a side, non-finite
      values, or bad options.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> proxy_a_distance(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 5.0)
      2.0
    """
    hs, ht = _pair(hs, ht, min_rows=2)
    if not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    steps = _positive_int("steps", steps)
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
    max_rows = _positive_int("max_rows", max_rows)
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


# --------------------------------------------------------------------------------------------------------------
# dataset statistics
# --------------------------------------------------------------------------------------------------------------
def _domain_stats(ds: CrossDomainDataset, domain: str) -> dict[str, Any]:
    inter = ds.interactions(domain, "train")
    per_user = np.bincount(inter.users, minlength=ds.n_users)
    per_user = per_user[per_user > 0]
    users, items = int(per_user.size), ds.n_items(domain)
    return {
        "users": users,
        "items": items,
        "interactions": inter.size,
        "interactions_per_user_mean": float(per_user.mean()) if users else 0.0,
        "interactions_per_user_median": float(np.median(per_user)) if users else 0.0,
        "density": inter.size / max(users * items, 1),
    }


def overlap_stats(ds: CrossDomainDataset, source: str, target: str) -> dict[str, Any]:
    """User overlap and sparsity of a source/target pair, counted on the ``train`` split.

    Args:
      ds: the dataset.
      source: the data-rich domain.
      target: the domain whose cold-start users are to be served.

    Returns:
      ``{"source": name, "target": name, "n_users": size of the shared user id space,
      "domains": {name: {"users", "items", "interactions", "interactions_per_user_mean",
      "interactions_per_user_median", "density"}} for source and target — users with ≥ 1 train interaction,
      the item id space, train rows, rows per such user, rows / (users × items),
      "overlap_users": users with train interactions in both, "source_only_users", "target_only_users",
      "cold_users": {"valid": n, "test": n} — held-out target users with source train history and no target
      train history (:meth:`CrossDomainDataset.cold_users`)}``.

    Raises:
      DataError: unknown domain (listing the valid ones) or ``source == target``.

    Example:
      >>> overlap_stats(ds, "source", "target")["overlap_users"]
      103
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"source and target must differ, both are {source!r}")
    src, tgt = ds.users_with(source, "train"), ds.users_with(target, "train")
    both = np.intersect1d(src, tgt).size
    return {
        "source": source,
        "target": target,
        "n_users": int(ds.n_users),
        "domains": {source: _domain_stats(ds, source), target: _domain_stats(ds, target)},
        "overlap_users": int(both),
        "source_only_users": int(src.size - both),
        "target_only_users": int(tgt.size - both),
        "cold_users": {split: int(ds.cold_users(source, target, split).size) for split in ("valid", "test")},
    }


def _inverted(ds: CrossDomainDataset, domain: str, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr [N + 1], positions)``: for each item of ``domain``, the positions in ``users`` of the users who
    have it in train (CSR over items)."""
    seen = ds.seen(domain, "train")
    lengths = seen.lengths[users]
    pos = np.repeat(np.arange(users.size), lengths)
    items = np.concatenate([seen.row(u) for u in users]) if users.size else np.zeros(0, np.int32)
    order = np.argsort(items, kind="stable")
    indptr = np.zeros(ds.n_items(domain) + 1, np.int64)
    np.cumsum(np.bincount(items, minlength=ds.n_items(domain)), out=indptr[1:])
    return indptr, pos[order]


def _gather_sum(matrix: np.ndarray, rows: np.ndarray, items: np.ndarray, inv: tuple) -> np.ndarray:
    """``Σ_{p ∈ inv[item]} matrix[row, p]`` for each ``(row, item)`` pair."""
    indptr, positions = inv
    counts = indptr[items + 1] - indptr[items]
    owner = np.repeat(np.arange(items.size), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    values = matrix[rows[owner], positions[indptr[items][owner] + offsets]]
    return np.bincount(owner, weights=values, minlength=items.size)


def _link_aucs(ds, source, target, overlap, partner, evaluated, n_negatives, rng, batch) -> np.ndarray:
    """Per evaluated position: AUC of its partner's target items under the leave-one-out co-occurrence map."""
    inv_s = _inverted(ds, source, overlap)
    inv_t = _inverted(ds, target, overlap[partner])
    seen_s, seen_t = ds.seen(source, "train"), ds.seen(target, "train")
    items_t = np.unique(ds.interactions(target, "train").items)
    aucs = np.zeros(evaluated.size)
    for lo in range(0, evaluated.size, batch):
        pos_b = evaluated[lo : lo + batch]
        # shared[r, p] = |S(u_r) ∩ S(overlap[p])|, the leave-one-out column of u_r itself zeroed
        shared = np.zeros((pos_b.size, overlap.size), np.float32)
        for r, p in enumerate(pos_b):
            own = seen_s.row(overlap[p])
            cols = np.concatenate([inv_s[1][inv_s[0][i] : inv_s[0][i + 1]] for i in own])
            np.add.at(shared[r], cols, 1.0)
            shared[r, p] = 0.0
        rows, items, label = [], [], []
        for r, p in enumerate(pos_b):
            positives = seen_t.row(overlap[partner[p]])
            negatives = rng.choice(items_t, n_negatives)
            negatives = negatives[~np.isin(negatives, positives)]
            rows += [np.full(positives.size + negatives.size, r)]
            items += [positives, negatives]
            label += [np.ones(positives.size, bool), np.zeros(negatives.size, bool)]
        rows, items, label = np.concatenate(rows), np.concatenate(items).astype(np.int64), np.concatenate(label)
        scores = _gather_sum(shared, rows, items, inv_t)
        for r in range(pos_b.size):
            mine = rows == r
            sp, sn = scores[mine & label], scores[mine & ~label]
            if sp.size and sn.size:
                wins = (sp[:, None] > sn[None, :]).mean() + 0.5 * (sp[:, None] == sn[None, :]).mean()
                aucs[lo + r] = wins
            else:
                aucs[lo + r] = np.nan
    return aucs


def _natural_key(raw_id) -> tuple:
    """Sort key of a raw user id: numbers numerically, ``"<domain>:<number>"`` by domain then number."""
    text = str(raw_id)
    head, _, tail = text.rpartition(":")
    return (head, 0, int(tail), "") if tail.isdigit() else (head, 1, 0, tail)


def link_test(
    ds: CrossDomainDataset,
    source: str,
    target: str,
    *,
    max_users: int = 4000,
    n_negatives: int = 100,
    bands: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Are the overlapping users really one person in both domains? A permutation test of the user links.

    For an evaluated overlapping user ``u``, the items of ``u``'s *target* history are ranked against
    ``n_negatives`` uniformly drawn target train items by the leave-one-out item co-occurrence map of the other
    overlapping users (score of item ``j``: ``Σ_v |S(u) ∩ S(v)| · [j ∈ T(v)]`` over ``v ≠ u``, ``S``/``T`` the
    source/target train histories), and the per-user AUC is recorded. The same is done with the target histories
    randomly permuted among the overlapping users (every link broken). Correct links give a clearly higher AUC
    than the permuted ones; a block of users whose AUC equals the permuted one carries no cross-domain signal,
    which is what users numbered independently in each domain look like (see ``shared_users`` of
    :func:`jaxrec.data.load_dir`). Popularity lifts both AUCs above 0.5, so compare the two, not either with 0.5.

    Args:
      ds: the dataset.
      source, target: the two domains (the map goes from ``source`` histories to ``target`` items).
      max_users: overlapping users evaluated (a uniform sample; the map always uses all of them).
      n_negatives: target items drawn per evaluated user (a user's own target items are removed from them).
      bands: the evaluated users are cut into this many groups of consecutive raw user ids (numbers in numeric
        order; ``"<domain>:<id>"`` ids of :func:`jaxrec.data.load_dir`'s ``shared_users`` after them), each
        reported separately.
      seed: sampling of users, negatives and the permutation.

    Returns:
      ``{"source", "target", "overlap_users", "evaluated", "auc": mean AUC with the links as given,
      "auc_permuted": mean AUC with the links broken, "bands": [{"first_user", "last_user" (raw ids), "users",
      "auc", "auc_permuted"}]}``.

    Raises:
      DataError: unknown domain, ``source == target``, or fewer than 3 overlapping users.

    Example:
      >>> report = link_test(ds, "game", "video")
      >>> print(format_link_test(report))
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"source and target must differ, both are {source!r}")
    max_users = _positive_int("max_users", max_users)
    n_negatives = _positive_int("n_negatives", n_negatives)
    bands = _positive_int("bands", bands)
    overlap = np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train"))
    if overlap.size < 3:
        raise DataError(f"link_test needs at least 3 users with train history in both {source!r} and {target!r}")
    rng = np.random.default_rng(seed)
    evaluated = np.sort(rng.choice(overlap.size, min(max_users, overlap.size), replace=False))
    identity = np.arange(overlap.size)
    permuted = rng.permutation(overlap.size)
    fixed = permuted == identity
    permuted[fixed] = np.roll(permuted[fixed], 1)  # a derangement wherever possible: no link survives
    args = (n_negatives,)
    true = _link_aucs(ds, source, target, overlap, identity, evaluated, *args, np.random.default_rng(seed + 1), 256)
    broken = _link_aucs(ds, source, target, overlap, permuted, evaluated, *args, np.random.default_rng(seed + 1), 256)
    order = sorted(range(evaluated.size), key=lambda r: _natural_key(ds.raw_users(overlap[evaluated[r : r + 1]])[0]))
    order = np.asarray(order)
    out_bands = []
    for chunk in np.array_split(order, min(bands, evaluated.size)):
        users = overlap[evaluated[chunk]]
        out_bands.append(
            {
                "first_user": ds.raw_users(users[:1])[0].item(),
                "last_user": ds.raw_users(users[-1:])[0].item(),
                "users": int(chunk.size),
                "auc": float(np.nanmean(true[chunk])),
                "auc_permuted": float(np.nanmean(broken[chunk])),
            }
        )
    return {
        "source": source,
        "target": target,
        "overlap_users": int(overlap.size),
        "evaluated": int(evaluated.size),
        "auc": float(np.nanmean(true)),
        "auc_permuted": float(np.nanmean(broken)),
        "bands": out_bands,
    }


def format_link_test(report: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`link_test`: AUC with the user links as given and with them broken, per band."""
    lines = [
        f"link test {report['source']} -> {report['target']}: {report['evaluated']} of {report['overlap_users']} "
        f"overlapping users; AUC {report['auc']:.3f} with the links as given, {report['auc_permuted']:.3f} broken",
        f"{'users (raw ids)':<30}{'n':>6}{'AUC':>8}{'broken':>8}{'gain':>8}",
    ]
    for b in report["bands"]:
        span = f"{b['first_user']} .. {b['last_user']}"
        gain = b["auc"] - b["auc_permuted"]
        lines.append(f"{span:<30}{b['users']:>6}{b['auc']:>8.3f}{b['auc_permuted']:>8.3f}{gain:>8.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# representations of a trained model
# --------------------------------------------------------------------------------------------------------------
@jax.jit
def _jitted_call(users_fn: jax.tree_util.Partial, users: jax.Array) -> jax.Array:
    return users_fn(users)


def _users_fn_call(users_fn: Callable, users: jax.Array) -> jax.Array:
    """``users_fn(users)``, jitted when ``users_fn`` is a ``Partial`` (then its parameters are traced arguments)."""
    if isinstance(users_fn, jax.tree_util.Partial):
        return _jitted_call(users_fn, users)
    return users_fn(users)


def scorer_user_tables(scorers: Any, *, n_users: int, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """The user vectors each domain's scorer ranks with, as ``{domain: float32 [n_users, d]}`` tables.

    ``scorers[domain].users_fn(users)`` is evaluated for every user id (in batches). For the recipes of
    :mod:`jaxrec.methods` this is the user's representation in that domain (after the domain's user tower),
    followed by the popularity fallback column, which is 0 for every user with training history (the users
    :func:`diagnose` compares). Scorers that return dense scores (``items is None``) have no user vectors and
    are left out.

    Args:
      scorers: ``{domain: evaluate.Scorer}``, or anything with a ``.scorers`` mapping (a ``methods.Trained``).
      n_users: size of the user id space (``ds.n_users``).
      batch_size: users per call of ``users_fn``.

    Returns:
      ``{domain: np.ndarray [n_users, d]}``.

    Raises:
      ValueError: no scorer with user vectors, or a ``users_fn`` output that is not ``[B, d]``.
    """
    scorers = getattr(scorers, "scorers", scorers)
    if not isinstance(scorers, Mapping):
        raise TypeError(f"scorers must be a mapping domain -> Scorer or a methods.Trained, got {type(scorers)}")
    n_users, batch_size = _positive_int("n_users", n_users), _positive_int("batch_size", batch_size)
    tables = {}
    for domain, scorer in scorers.items():
        if scorer.items is None:
            continue
        parts = []
        size = min(batch_size, n_users)
        for lo in range(0, n_users, size):
            rows = min(size, n_users - lo)
            users = jnp.arange(lo, lo + size, dtype=jnp.int32) % n_users  # the last batch padded: one compilation
            out = np.asarray(_users_fn_call(scorer.users_fn, users))
            if out.ndim != 2 or out.shape[0] != size:
                raise ValueError(f"scorer {domain!r}: users_fn({users.shape}) returned {out.shape}, not [B, d]")
            parts.append(out[:rows])
        tables[domain] = np.concatenate(parts).astype(np.float32)
    if not tables:
        raise ValueError(f"none of the scorers {sorted(scorers)} has user vectors (all return dense scores)")
    return tables


def _representations(user_vectors: Any, users: np.ndarray, domain: str, n_users: int) -> np.ndarray | None:
    """``[len(users), d]`` representations of ``users`` in ``domain``; None when a table for it is missing."""
    if isinstance(user_vectors, Mapping):
        if domain not in user_vectors:
            return None
        table = np.asarray(user_vectors[domain])
        if table.ndim != 2 or table.shape[0] != n_users:
            raise ValueError(f"user_vectors[{domain!r}] must be [n_users, d] = [{n_users}, d], got {table.shape}")
        out = table[users]
    else:
        out = np.asarray(user_vectors(users, domain))
        if out.ndim != 2 or out.shape[0] != users.shape[0]:
            raise ValueError(f"user_vectors(users {users.shape}, {domain!r}) returned {out.shape}, not [B, d]")
    return out


def _comparison(
    index: int,
    name: str,
    user_vectors: Any,
    a: tuple[np.ndarray, str],
    b: tuple[np.ndarray, str],
    n_users: int,
    seed: int,
    max_rows: int,
    notes: list[str],
) -> dict[str, Any] | None:
    rng = np.random.default_rng([seed, index])
    sides = []
    for users, domain in (a, b):
        if users.size < 2:
            notes.append(f"{name}: skipped, only {users.size} user(s) in domain {domain!r} (need 2)")
            return None
        if users.size > max_rows:
            users = np.sort(rng.choice(users, max_rows, replace=False))
        rep = _representations(user_vectors, users.astype(np.int32), domain, n_users)
        if rep is None:
            notes.append(f"{name}: skipped, no representation for domain {domain!r} (given: {sorted(user_vectors)})")
            return None
        sides.append(rep.astype(np.float64))
    return domain_gap(sides[0], sides[1], seed=seed, max_rows=max_rows)


def diagnose(
    ds: CrossDomainDataset,
    user_vectors: UserVectors | Mapping[str, Any],
    *,
    source: str,
    target: str,
    seed: int = 0,
    max_rows: int = 2048,
    cold_splits: Sequence[str] = ("valid", "test"),
) -> dict[str, Any]:
    """Domain-gap report of a model's user representations on a dataset: overlap statistics plus two gaps.

    The two compared pairs of user sets (each side subsampled to ``max_rows`` users with ``seed``):

    * ``"domains"`` — the *source-domain* representation of the users with source train interactions vs the
      *target-domain* representation of the users with target train interactions: the pair the alignment term
      of the ``mmd`` / ``coral`` / ``dann`` recipes is trained to bring together (here each user counts once;
      training batches weight users by their interaction counts).
    * ``"cold_vs_warm"`` — the *target-domain* representation of the cold users (held-out target users of
      ``cold_splits`` who have source train history and no target train history) vs that of the warm target users
      (users with target train interactions). The target item embeddings were fitted on warm users only, so this is
      the gap that matters for cold start: a cold user far outside the warm users' distribution is scored off
      the manifold the item side learned.

    A comparison is ``None`` (with a line in ``notes``) when a side has fewer than 2 users or ``user_vectors``
    is a mapping without that domain (e.g. ``target_only``, which has no source representation).

    Args:
      ds: the dataset the model was trained on.
      user_vectors: ``user_vectors(users int32 [B], domain) -> [B, d]``, or ``{domain: [n_users, d]}`` tables
        (see :func:`scorer_user_tables`).
      source: the data-rich domain.
      target: the cold-start domain.
      seed: subsampling and proxy A-distance split.
      max_rows: users per side.
      cold_splits: held-out target splits whose cold users are compared.

    Returns:
      ``{"source", "target", "seed", "overlap": overlap_stats(...), "gaps": {"domains": domain_gap(...) | None,
      "cold_vs_warm": domain_gap(...) | None}, "compared": {comparison: sentence naming the two user sets and
      their sizes}, "notes": [str]}`` — JSON-serialisable.

    Example:
      >>> report = diagnose(ds, scorer_user_tables(trained, n_users=ds.n_users), source="source", target="target")
      >>> report["gaps"]["domains"]["proxy_a_distance"]  # doctest: +SKIP
      0.31
    """
    overlap = overlap_stats(ds, source, target)
    max_rows = _positive_int("max_rows", max_rows)
    notes: list[str] = []
    source_users, target_users = ds.users_with(source, "train"), ds.users_with(target, "train")
    cold = np.unique(np.concatenate([ds.cold_users(source, target, s) for s in cold_splits] + [np.zeros(0, int)]))
    gaps = {
        "domains": _comparison(
            0,
            "domains",
            user_vectors,
            (source_users, source),
            (target_users, target),
            ds.n_users,
            seed,
            max_rows,
            notes,
        ),
        "cold_vs_warm": _comparison(
            1, "cold_vs_warm", user_vectors, (cold, target), (target_users, target), ds.n_users, seed, max_rows, notes
        ),
    }
    compared = {
        "domains": (
            f"a = {source}-domain representation of the {source_users.size} users with {source} train interactions; "
            f"b = {target}-domain representation of the {target_users.size} users with {target} train interactions"
        ),
        "cold_vs_warm": (
            f"a = {target}-domain representation of the {cold.size} cold {target} users of {list(cold_splits)} "
            f"(with {source} train history, no {target} train history); b = {target}-domain representation of the "
            f"{target_users.size} warm users with {target} train interactions"
        ),
    }
    return {
        "source": source,
        "target": target,
        "seed": int(seed),
        "overlap": overlap,
        "gaps": gaps,
        "compared": compared,
        "notes": notes,
    }


_MEASURE_LABELS = {
    "mmd": "MMD² (Gaussian, median bw)",
    "linear_mmd": "linear MMD ‖Δμ‖²",
    "coral": "CORAL",
    "proxy_a_distance": "proxy A-distance (0..2)",
    "mean_distance": "‖μa − μb‖",
    "mean_cosine": "cos(μa, μb)",
}


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text rendering of a :func:`diagnose` report (overlap table, gap table, compared sets, notes).

    Example:
      >>> print(format_report(diagnose(ds, tables, source="source", target="target")))  # doctest: +SKIP
    """
    for key in ("source", "target", "overlap", "gaps"):
        if key not in report:
            raise ValueError(f"not a diagnose() report: key {key!r} missing (has {sorted(report)})")
    ov = report["overlap"]
    lines = [f"domain-gap diagnostics: {report['source']} -> {report['target']} (seed {report.get('seed', 0)})", ""]
    lines.append("overlap (train split)")
    header = f"  {'domain':<14}{'users':>9}{'items':>9}{'interactions':>14}{'per user mean/median':>23}{'density':>10}"
    lines.append(header)
    for name, d in ov["domains"].items():
        per_user = f"{d['interactions_per_user_mean']:.2f} / {d['interactions_per_user_median']:g}"
        lines.append(
            f"  {name:<14}{d['users']:>9,}{d['items']:>9,}{d['interactions']:>14,}{per_user:>23}{d['density']:>10.5f}"
        )
    n_target = ov["domains"][report["target"]]["users"]
    share = ov["overlap_users"] / max(n_target, 1)
    lines.append(
        f"  users in both: {ov['overlap_users']:,} ({share:.1%} of {report['target']} users); "
        f"{report['source']} only: {ov['source_only_users']:,}; {report['target']} only: {ov['target_only_users']:,}"
    )
    cold = ", ".join(f"{split} {n:,}" for split, n in ov["cold_users"].items())
    lines.append(f"  cold {report['target']} users: {cold}")
    lines += ["", "representation gaps (a vs b)"]
    names = list(report["gaps"])
    lines.append(f"  {'measure':<30}" + "".join(f"{n:>16}" for n in names))
    rows = [("rows a / b", lambda g: f"{g['n_a']} / {g['n_b']}")]
    rows += [(_MEASURE_LABELS[m], functools.partial(lambda m, g: f"{g[m]:.4g}", m)) for m in GAP_MEASURES]
    for label, cell in rows:
        cells = [cell(report["gaps"][n]) if report["gaps"][n] is not None else "n/a" for n in names]
        lines.append(f"  {label:<30}" + "".join(f"{c:>16}" for c in cells))
    for name, sentence in report.get("compared", {}).items():
        lines.append(f"  {name}: {sentence}")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def diagnostics_figure(report: Mapping[str, Any]):
    """A ``matplotlib.figure.Figure`` of a :func:`diagnose` report: one bar panel per gap measure.

    Needs matplotlib (``pip install "jaxrec[notebooks]"``); see :func:`jaxrec.plot.gap_bars`.
    """
    from jaxrec import plot

    if "gaps" not in report:
        raise ValueError(f"not a diagnose() report: key 'gaps' missing (has {sorted(report)})")
    title = f"domain gaps, {report.get('source', '?')} -> {report.get('target', '?')}"
    return plot.gap_bars(report["gaps"], title=title)

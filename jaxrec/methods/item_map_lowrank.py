"""The linear algebra of ``item_map``'s low-rank solver: the ridge map and the target's EASE model from truncated
SVDs, kept factored, in O((U + N)·r + nnz) memory instead of O(N²).

**Ridge map.** With the scaled source rows of the overlapping users ``X_s = U S Vᵀ`` (rank ``r``, randomised SVD),
``W = (X_sᵀX_s + λI)⁻¹ X_sᵀ X_t = V diag(S / (S² + λ)) Uᵀ X_t``: the product ``A B`` of ``A = V diag(S / (S² + λ))
[N_s, r]`` and ``B = Uᵀ X_t [r, N_t]``. Exact when ``r ≥ rank(X_s)`` (at most the number of overlapping users); a
discarded direction of singular value ``σ`` would have contributed with weight ``σ / (σ² + λ) < σ / λ``.

**Target propagation.** EASE is ``B_t = I − P diag(g)``, ``P = (X_tᵀX_t + λ_t I)⁻¹``, ``g = 1 / diag(P)``. With
``X_t ≈ U_t S_t V_tᵀ`` (rank ``r``), ``P = I / λ_t − V_t diag(d) V_tᵀ`` with ``d = S_t² / (λ_t (S_t² + λ_t))``, so
``B_t = diag(1 − g / λ_t) + V_t diag(d) (g ⊙ V_t)ᵀ``: a diagonal plus rank ``r``, exact when ``r ≥ rank(X_t)``.
``W' = A B (I + γ B_t) = A C`` with ``C = B + γ B B_t`` computed in O(r² N_t), never forming ``B_t``.

Sparse rows are ``scipy.sparse`` CSR matrices (float32); factors are numpy float32 (the small SVDs run in float64).

Axis conventions: ``U`` users, ``N_s`` / ``N_t`` source / target items, ``r`` the rank, ``k`` the columns of a
randomised range (``r`` plus oversampling), ``V`` the users of a selection step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse

from jaxrec import checks
from jaxrec.data import CrossDomainDataset, DataError
from jaxrec.methods.common import check_pair

__all__ = [
    "ItemMapFactors",
    "OVERSAMPLE",
    "POWER_ITERATIONS",
    "SourceFactors",
    "TargetFactors",
    "TargetPropagation",
    "item_map_factors",
    "overlap_users",
    "propagate",
    "randomized_svd",
    "ridge_source",
    "source_factors",
    "source_scale",
    "sparse_rows",
    "target_factors",
    "target_propagation",
]

#: Power iterations of the randomised range finder (recommendation data have slowly decaying spectra).
POWER_ITERATIONS = 4
#: Extra columns of the random range beyond the rank (Halko, Martinsson & Tropp, 2011).
OVERSAMPLE = 16


def overlap_users(ds: CrossDomainDataset, source: str, target: str) -> np.ndarray:
    """``int [n]``: the users with train history in both ``source`` and ``target`` (what the map is fitted on).

    Raises:
      DataError: there are none.
    """
    overlap = np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train"))
    if overlap.size == 0:
        raise DataError(f"item_map needs users with train history in both {source!r} and {target!r}; none found")
    return overlap


def source_scale(ds: CrossDomainDataset, source: str, item_norm: float) -> np.ndarray:
    """``float32 [N_s]``: ``count^-item_norm`` of the source items' train counts (0 for items without any)."""
    counts = ds.item_popularity(source).astype(np.float64)
    return np.where(counts > 0, np.maximum(counts, 1.0) ** -item_norm, 0.0).astype(np.float32)


def sparse_rows(
    ds: CrossDomainDataset, domain: str, users: np.ndarray, scale: np.ndarray | None = None
) -> scipy.sparse.csr_matrix:
    """The train rows of ``users`` in ``domain`` as a float32 CSR matrix ``[len(users), N]``.

    Args:
      ds: the dataset.
      domain: the domain.
      users: ``int [n]`` user ids (any order, repeats allowed).
      scale: ``float [N]`` column weights (None: binary rows).
    """
    seen = ds.seen(domain, "train")
    users = np.asarray(users, np.int64)
    starts, lengths = seen.indptr[users], seen.lengths[users]
    indptr = np.zeros(users.size + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    offsets = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1], lengths)
    indices = seen.indices[np.repeat(starts, lengths) + offsets]
    values = np.ones(indices.size, np.float32) if scale is None else np.asarray(scale, np.float32)[indices]
    return scipy.sparse.csr_matrix((values, indices, indptr), shape=(users.size, ds.n_items(domain)))


def _orthonormal(y: np.ndarray) -> np.ndarray:
    return np.linalg.qr(y)[0].astype(np.float32)


def randomized_svd(
    x: scipy.sparse.spmatrix, rank: int, *, seed: int = 0, iterations: int = POWER_ITERATIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leading ``k = min(rank, m, n)`` singular triplets of a sparse ``x [m, n]`` (randomised range finder with
    ``iterations`` power iterations; exact when ``rank + OVERSAMPLE >= min(m, n)``).

    Args:
      x: ``[m, n]`` sparse matrix.
      rank: the number of triplets wanted.
      seed: seeds the Gaussian test matrix.
      iterations: power iterations (each re-orthonormalised).

    Returns:
      ``(u float32 [m, k], s float32 [k] descending, vt float32 [k, n])`` with ``x ≈ u diag(s) vt``.
    """
    m, n = x.shape
    k = min(rank, m, n)
    width = min(k + OVERSAMPLE, m, n)
    x = x.astype(np.float32).tocsr()
    xt = x.T.tocsr()
    omega = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    q = _orthonormal(x @ omega)
    for _ in range(iterations):
        q = _orthonormal(x @ _orthonormal(xt @ q))
    small = np.asarray((xt @ q).T, np.float64)  # [width, n] = qᵀ x
    ub, s, vt = np.linalg.svd(small, full_matrices=False)
    u = q @ ub[:, :k].astype(np.float32)
    return u, s[:k].astype(np.float32), vt[:k].astype(np.float32)


class SourceFactors(NamedTuple):
    """The source side of the low-rank ridge map (see the module docstring).

    Attributes:
      v: ``float32 [N_s, r]`` right singular vectors of the scaled source rows ``X_s`` of the overlapping users.
      s: ``float32 [r]`` their singular values.
      cross: ``float32 [r, N_t]`` ``Uᵀ X_t``, the target rows of the same users seen through the left singular
        vectors.
    """

    v: np.ndarray
    s: np.ndarray
    cross: np.ndarray


def source_factors(
    ds: CrossDomainDataset, source: str, target: str, overlap: np.ndarray, scale: np.ndarray, rank: int, *, seed: int
) -> SourceFactors:
    """The :class:`SourceFactors` of the users ``overlap`` (train history in both domains).

    Args:
      ds: the dataset.
      source: the source domain; target: the target domain.
      overlap: ``int [n]`` the users the map is fitted on.
      scale: ``float32 [N_s]`` the source column scales.
      rank: at most this many singular triplets (fewer when ``n`` or ``N_s`` is smaller).
      seed: seeds the randomised SVD.
    """
    xs = sparse_rows(ds, source, overlap, scale)
    u, s, vt = randomized_svd(xs, rank, seed=seed)
    xt = sparse_rows(ds, target, overlap)
    cross = np.asarray((xt.T @ u).T, np.float32)  # [r, N_t]
    return SourceFactors(np.ascontiguousarray(vt.T), s, cross)


def ridge_source(factors: SourceFactors, lam: float) -> np.ndarray:
    """``A = V diag(S / (S² + λ))``, ``float32 [N_s, r]``: the ridge map is ``A @ factors.cross``."""
    s = factors.s.astype(np.float64)
    return (factors.v * (s / (s * s + lam)).astype(np.float32)[None, :]).astype(np.float32)


class TargetFactors(NamedTuple):
    """The truncated SVD of the binary target rows of every user with target train history.

    Attributes:
      v: ``float32 [N_t, r]`` right singular vectors.
      s: ``float32 [r]`` singular values.
    """

    v: np.ndarray
    s: np.ndarray


def target_factors(ds: CrossDomainDataset, target: str, rank: int, *, seed: int) -> TargetFactors:
    """The :class:`TargetFactors` of ``target`` (rank at most ``rank``; seeded randomised SVD)."""
    xt = sparse_rows(ds, target, ds.users_with(target, "train"))
    _, s, vt = randomized_svd(xt, rank, seed=seed)
    return TargetFactors(np.ascontiguousarray(vt.T), s)


class TargetPropagation(NamedTuple):
    """``B_t = diag(diagonal) + v diag(d) (g ⊙ v)ᵀ``, the EASE model of ridge ``λ_t`` in factored form.

    Attributes:
      diagonal: ``float32 [N_t]`` ``1 − g / λ_t``.
      v: ``float32 [N_t, r]`` the target's right singular vectors.
      d: ``float32 [r]`` ``S_t² / (λ_t (S_t² + λ_t))``.
      gv: ``float32 [N_t, r]`` ``g ⊙ v`` (``g = 1 / diag P``).
    """

    diagonal: np.ndarray
    v: np.ndarray
    d: np.ndarray
    gv: np.ndarray


def target_propagation(factors: TargetFactors, lam_t: float) -> TargetPropagation:
    """The factored EASE model of ridge ``lam_t`` (module docstring): O(N_t·r) memory."""
    s2 = factors.s.astype(np.float64) ** 2
    d = s2 / (lam_t * (s2 + lam_t))
    diag_p = 1.0 / lam_t - (factors.v.astype(np.float64) ** 2) @ d  # > 0: P is positive definite
    g = 1.0 / diag_p
    return TargetPropagation(
        (1.0 - g / lam_t).astype(np.float32),
        factors.v,
        d.astype(np.float32),
        (factors.v * g.astype(np.float32)[:, None]).astype(np.float32),
    )


def propagate(c: np.ndarray, t: TargetPropagation, weight: float) -> np.ndarray:
    """``c (I + weight · B_t)`` for ``c [n, N_t]`` (a right factor ``[r, N_t]``, or scores), without forming ``B_t``.

    Returns:
      ``float32 [n, N_t]``.
    """
    c = np.asarray(c, np.float32)
    low = ((c @ t.v) * t.d[None, :]) @ t.gv.T
    return (c + weight * (c * t.diagonal[None, :] + low)).astype(np.float32)


class ItemMapFactors(NamedTuple):
    """``item_map``'s map ``W' = source @ target.T`` as two factors (:func:`item_map_factors`).

    A user's raw ``item_map`` target scores are ``x_s @ source @ target.T`` with ``x_s [N_s]`` their source train
    row scaled by ``scale`` (``x_s[i] = scale[i]`` for the items they have, else 0); that is ``extras["users"][u]
    @ target.T``.

    Attributes:
      source: ``float32 [N_s, rank]`` source item factors (``A``).
      target: ``float32 [N_t, rank]`` target item factors (``Cᵀ``).
      scale: ``float32 [N_s]`` the source item column scales ``count^-item_norm`` (0 for items without train
        interactions).
      extras: ``"users"`` ``float32 [U, rank]`` (``x_s @ source`` for every user; zero rows for users without
        source train history), ``"has_source"`` ``bool [U]``, ``"log_pop"`` ``float32 [N_t]`` (``log1p`` of the
        target train counts), ``"singular_values"`` ``float32 [rank]`` of the scaled source rows of the overlapping
        users (zero past the effective rank), ``"rank"`` (the effective rank: ``min(rank, overlapping users,
        N_s)``), and ``"lam"``, ``"target_lam"``, ``"target_weight"`` (the configuration used).
    """

    source: np.ndarray
    target: np.ndarray
    scale: np.ndarray
    extras: dict


def item_map_factors(
    ds: CrossDomainDataset,
    *,
    source: str,
    target: str,
    config,
    rank: int | None = None,
) -> ItemMapFactors:
    """``item_map``'s map as factors ``[N_s, rank]`` and ``[N_t, rank]``, e.g. to initialise a learned model's
    item embeddings. Pure: no training, no selection, nothing read from valid or test.

    The map is the low-rank solver's ``W' = A C`` for the *first* value of each grid of ``config`` (pass the
    ``config`` of a trained ``item_map``, ``Trained.config``, to use the values chosen on valid): ``λ =
    config.lams[0]``, ``λ_t = config.target_lams[0]``, ``γ = config.target_weights[0]``. Each column pair is
    balanced (``‖source[:, k]‖ = ‖target[:, k]‖``; any such rescaling leaves ``W'`` unchanged); columns past the
    effective rank are zero, so the shapes are always ``rank`` wide.

    Args:
      ds: the dataset.
      source: the source domain; target: the target domain.
      config: an :class:`jaxrec.methods.ItemMapConfig` (read: ``item_norm``, the grids' first values, ``seed``,
        ``rank``).
      rank: the factors' width (default ``config.rank``).

    Returns:
      :class:`ItemMapFactors` ``(source [N_s, rank], target [N_t, rank], scale [N_s], extras)``.

    Raises:
      DataError: unknown or equal domains, or no user with train history in both.
      ValueError: ``rank`` is not a positive int.

    Example:
      >>> f = item_map_factors(ds, source="game", target="video", config=ItemMapConfig(), rank=64)  # doctest: +SKIP
      >>> scores = f.extras["users"][users] @ f.target.T  # [B, N_t], item_map's raw scores  # doctest: +SKIP
    """
    check_pair(ds, source, target)
    rank = checks.positive_int("rank", config.rank if rank is None else rank)
    overlap = overlap_users(ds, source, target)
    scale = source_scale(ds, source, config.item_norm)
    factors = source_factors(ds, source, target, overlap, scale, rank, seed=config.seed)
    lam, lam_t, weight = config.lams[0], config.target_lams[0], config.target_weights[0]
    a, c = ridge_source(factors, lam), factors.cross
    if weight > 0:
        c = propagate(c, target_propagation(target_factors(ds, target, rank, seed=config.seed), lam_t), weight)
    norm_a, norm_c = np.linalg.norm(a, axis=0), np.linalg.norm(c, axis=1)
    ok = (norm_a > 0) & (norm_c > 0)
    f = np.where(ok, np.sqrt(norm_c / np.where(ok, norm_a, 1.0)), 1.0).astype(np.float32)
    a, c = a * f[None, :], c / f[:, None]
    k = a.shape[1]

    def widen(x):  # [n, k] -> [n, rank], zero columns past the effective rank
        return np.pad(np.asarray(x, np.float32), ((0, 0), (0, rank - k)))

    users = sparse_rows(ds, source, np.arange(ds.n_users), scale) @ a
    extras = {
        "users": widen(users),
        "has_source": ds.seen(source, "train").lengths > 0,
        "log_pop": np.log1p(ds.item_popularity(target)).astype(np.float32),
        "singular_values": np.pad(factors.s, (0, rank - k)),
        "rank": k,
        "lam": lam,
        "target_lam": lam_t,
        "target_weight": weight,
    }
    return ItemMapFactors(widen(a), widen(c.T), scale, extras)

"""The linear algebra of ``item_map``'s low-rank solver: the ridge map and the target's EASE model from truncated
SVDs, kept factored, in O((U + N)·r + nnz) memory instead of O(N²).

**Ridge map.** With the scaled source rows of the overlapping users ``X_s = U S Vᵀ`` (rank ``r``, randomised SVD),
``W = (X_sᵀX_s + λI)⁻¹ X_sᵀ X_t = V diag(S / (S² + λ)) Uᵀ X_t``: the product ``A B`` of ``A = V diag(S / (S² + λ))
[N_s, r]`` and ``B = Uᵀ X_t [r, N_t]``. Exact when ``r ≥ rank(X_s)`` (at most the number of overlapping users); a
discarded direction of singular value ``σ`` would have contributed with weight ``σ / (σ² + λ) < σ / λ``.

**Target propagation.** EASE is ``B_t = I − P diag(g)``, ``P = (X_tᵀX_t + λ_t I)⁻¹``, ``g = 1 / diag(P)``, so
``W' = A B (I + γ B_t) = A C`` with ``C = B + γ (B − (B P) diag(g))``. ``B P`` (``r`` right-hand sides) comes from
conjugate gradients over the sparse rows (O(nnz·r) per iteration, exact to ``CG_TOL``); ``g`` from the Gram
approximated by a diagonal plus rank ``r``, ``X_tᵀX_t ≈ D_0 + V_t S_t² V_tᵀ`` (a truncated SVD of ``X_t``, and
``D_0`` the part of each item's count it misses), whose inverse's diagonal Woodbury gives in O(N_t·r²); exact when
``r ≥ rank(X_t)``. ``B_t`` is never formed.

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
    "CG_MAX_ITERATIONS",
    "CG_TOL",
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
    "solve_gram",
    "sparse_rows",
    "target_factors",
    "target_propagation",
]

#: Power iterations of the randomised range finder (recommendation data have slowly decaying spectra).
POWER_ITERATIONS = 4
#: Extra columns of the random range beyond the rank (Halko, Martinsson & Tropp, 2011).
OVERSAMPLE = 16
#: Conjugate gradients of :func:`solve_gram` stop at this relative residual, or after ``CG_MAX_ITERATIONS``.
CG_TOL = 1e-4
CG_MAX_ITERATIONS = 500


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
    """An orthonormal basis ``[m, k]`` of the columns of ``y [m, k]``, float32.

    CholeskyQR2 in float64 (two passes of ``y L⁻ᵀ`` with ``L Lᵀ = yᵀy``: matrix products, several times faster
    than Householder QR on a CPU); Householder QR when ``y`` is too ill-conditioned for it.
    """
    q = y.astype(np.float64)
    try:
        for _ in range(2):
            chol = np.linalg.cholesky(q.T @ q)
            q = scipy.linalg.solve_triangular(chol, q.T, lower=True, check_finite=False).T
        if not np.all(np.isfinite(q)):
            raise np.linalg.LinAlgError("non-finite basis")
    except np.linalg.LinAlgError:
        q = np.linalg.qr(y.astype(np.float64))[0]
    return q.astype(np.float32)


def _small_svd(b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leading ``k`` singular triplets of a wide ``b [w, n]`` (``w <= n``) from the eigenvectors of ``b bᵀ``."""
    evals, evecs = np.linalg.eigh(b @ b.T)
    order = np.argsort(evals)[::-1][:k]
    s = np.sqrt(np.maximum(evals[order], 0.0))
    ub = evecs[:, order]
    keep = s > s[:1] * 1e-7 if s.size else s > 0
    vt = np.where(keep[:, None], (ub.T @ b) / np.where(keep, s, 1.0)[:, None], 0.0)
    return ub, np.where(keep, s, 0.0), vt


def randomized_svd(
    x: scipy.sparse.spmatrix, rank: int, *, seed: int = 0, iterations: int = POWER_ITERATIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leading ``k = min(rank, m, n)`` singular triplets of a sparse ``x [m, n]`` (randomised range finder with
    ``iterations`` power iterations on the shorter side; exact when ``rank + OVERSAMPLE >= min(m, n)``).

    Args:
      x: ``[m, n]`` sparse matrix.
      rank: the number of triplets wanted.
      seed: seeds the Gaussian test matrix.
      iterations: power iterations (each re-orthonormalised).

    Returns:
      ``(u float32 [m, k], s float32 [k] descending, vt float32 [k, n])`` with ``x ≈ u diag(s) vt``.
    """
    m, n = x.shape
    if m > n:  # the range finder's QRs are [rows, k]: run it on the shorter side
        u, s, vt = randomized_svd(x.T, rank, seed=seed, iterations=iterations)
        return np.ascontiguousarray(vt.T), s, np.ascontiguousarray(u.T)
    k = min(rank, m, n)
    width = min(k + OVERSAMPLE, m, n)
    x = x.astype(np.float32).tocsr()
    xt = x.T.tocsr()
    omega = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    q = _orthonormal(x @ omega)
    for _ in range(iterations):  # only the short side is orthonormalised; the long one is rescaled
        z = xt @ q
        q = _orthonormal(x @ (z / np.maximum(np.linalg.norm(z, axis=0), 1e-30)[None, :]))
    ub, s, vt = _small_svd(np.asarray((xt @ q).T, np.float64), k)  # of qᵀ x [width, n]
    return q @ ub.astype(np.float32), s.astype(np.float32), vt.astype(np.float32)


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
    """The target rows of every user with target train history, and their Gram ``X_tᵀX_t ≈ diag(residual) + V S²
    Vᵀ`` from a truncated SVD plus the diagonal it misses (each item keeps its exact count on the diagonal).

    Attributes:
      rows: ``float32 [U_t, N_t]`` the binary target rows, sparse.
      v: ``float32 [N_t, r]`` right singular vectors.
      s: ``float32 [r]`` singular values.
      residual: ``float32 [N_t]`` ``count_j − Σ_k V_jk² S_k²`` (≥ 0; 0 at full rank).
    """

    rows: scipy.sparse.csr_matrix
    v: np.ndarray
    s: np.ndarray
    residual: np.ndarray


def target_factors(ds: CrossDomainDataset, target: str, rank: int, *, seed: int) -> TargetFactors:
    """The :class:`TargetFactors` of ``target`` (rank at most ``rank``; seeded randomised SVD)."""
    xt = sparse_rows(ds, target, ds.users_with(target, "train"))
    _, s, vt = randomized_svd(xt, rank, seed=seed)
    v = np.ascontiguousarray(vt.T)
    explained = (v.astype(np.float64) ** 2) @ (s.astype(np.float64) ** 2)
    residual = np.maximum(ds.item_popularity(target).astype(np.float64) - explained, 0.0)
    return TargetFactors(xt, v, s, residual.astype(np.float32))


class TargetPropagation(NamedTuple):
    """The EASE model ``B_t = I − P diag(g)`` of ridge ``λ_t`` without forming it (see :func:`propagate`).

    Attributes:
      rows: ``float32 [U_t, N_t]`` the sparse target rows (``P = (rowsᵀ rows + λ_t I)⁻¹`` is applied by CG).
      lam_t: the ridge ``λ_t``.
      g: ``float32 [N_t]`` ``1 / diag P`` of the diagonal-plus-rank-``r`` Gram (exact at full rank).
      cache: the last ``(c, c P)`` pair :func:`propagate` computed (grid values of γ share it).
    """

    rows: scipy.sparse.csr_matrix
    lam_t: float
    g: np.ndarray
    cache: list


def target_propagation(factors: TargetFactors, lam_t: float, *, probes: int = 0, seed: int = 0) -> TargetPropagation:
    """The EASE model of ridge ``lam_t``: ``g = 1 / diag P`` from the diagonal-plus-rank-``r`` Gram, O(N_t·r²).

    By Woodbury, ``(D + V S² Vᵀ)⁻¹ = D⁻¹ − z zᵀ`` with ``D = diag(residual) + λ_t I``, ``y = D⁻¹ V S`` and ``z = y
    L⁻ᵀ`` for the Cholesky factor ``L Lᵀ = I + S Vᵀ D⁻¹ V S``; its diagonal is ``1 / D − Σ_k z_jk²``.
    """
    inv_d = 1.0 / (factors.residual.astype(np.float64) + lam_t)
    vs = factors.v.astype(np.float64) * factors.s.astype(np.float64)[None, :]
    y = vs * inv_d[:, None]
    chol = np.linalg.cholesky(np.eye(vs.shape[1]) + vs.T @ y)
    z = scipy.linalg.solve_triangular(chol, y.T, lower=True, check_finite=False).T  # y L⁻ᵀ
    g = 1.0 / (inv_d - np.sum(z * z, axis=1))  # diag P > 0: P is positive definite
    return TargetPropagation(factors.rows, float(lam_t), g.astype(np.float32), [])


def solve_gram(rows: scipy.sparse.spmatrix, lam: float, rhs: np.ndarray, *, tol: float = CG_TOL) -> np.ndarray:
    """``(rowsᵀ rows + λ I)⁻¹ rhs`` for ``rhs [N, n]`` by conjugate gradients, every column at once, with the
    diagonal (``count + λ``) as preconditioner: O(nnz·n) per iteration, never the ``[N, N]`` Gram.

    Args:
      rows: ``[m, N]`` sparse rows.
      lam: the ridge λ > 0.
      rhs: ``float [N, n]``.
      tol: stop when every column's residual is below ``tol`` × its right-hand side's norm (or after
        ``CG_MAX_ITERATIONS``).

    Returns:
      ``float32 [N, n]``.
    """
    rows = rows.tocsr()
    rows_t = rows.T.tocsr()
    diag = np.asarray(rows.multiply(rows).sum(axis=0), np.float64).ravel() + lam
    inv = (1.0 / diag).astype(np.float32)[:, None]
    b = np.asarray(rhs, np.float32)

    def op(v):
        return rows_t @ (rows @ v) + np.float32(lam) * v

    x = b * inv
    r = b - op(x)
    z = r * inv
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    limit = tol * np.linalg.norm(b, axis=0)
    for _ in range(CG_MAX_ITERATIONS):
        if np.all(np.linalg.norm(r, axis=0) <= limit):
            break
        ap = op(p)
        pap = np.sum(p * ap, axis=0)
        alpha = np.where(pap > 0, rz / np.where(pap > 0, pap, 1.0), 0.0).astype(np.float32)
        x += p * alpha[None, :]
        r -= ap * alpha[None, :]
        z = r * inv
        rz_new = np.sum(r * z, axis=0)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0).astype(np.float32)
        p = z + p * beta[None, :]
        rz = rz_new
    return x


def propagate(c: np.ndarray, t: TargetPropagation, weight: float) -> np.ndarray:
    """``c (I + weight · B_t) = c + weight (c − (c P) diag(g))`` for ``c [n, N_t]`` (a right factor ``[r, N_t]``),
    with ``c P`` by :func:`solve_gram` (``P`` is symmetric) and never ``B_t`` itself.

    Returns:
      ``float32 [n, N_t]``.
    """
    c = np.asarray(c, np.float32)
    if t.cache and t.cache[0][0] is c:
        cp = t.cache[0][1]
    else:
        cp = solve_gram(t.rows, t.lam_t, c.T).T
        t.cache[:] = [(c, cp)]
    return (c + weight * (c - cp * t.g[None, :])).astype(np.float32)


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

"""``item_map``: a closed-form ridge map from source items to target items, then one propagation step.

The map is ``W = (X_sᵀX_s + λI)⁻¹ X_sᵀ X_t`` over the users with train history in both domains (EASE-like across
domains, Steck 2019), followed by ``W' = W (I + γ B_t)`` with ``B_t`` the EASE item model of the target; a
user's target scores are ``x_s @ W'``. λ, then (λ_t, γ), are chosen on the valid cold users of the target. The
strong baseline every learned recipe is compared with.

Two solvers compute the map. ``"dense"`` forms the ``[N_s, N_s]`` Gram and ``[N_t, N_t]`` EASE matrices (Cholesky
in JAX: O(N²) memory, O(N³) time). ``"lowrank"`` (:mod:`jaxrec.methods.item_map_lowrank`) keeps ``W' = A C``
factored through rank-``r`` randomised SVDs of the source rows and the target rows: O((U + N)·r + nnz) memory, the
dense map when ``r`` reaches the ranks of those rows. ``"auto"`` takes the dense solver up to
:data:`DENSE_ITEM_LIMIT` items in the two domains together.

Axis conventions: ``U`` users, ``N_s`` / ``N_t`` source / target items, ``B`` users of a batch, ``L`` padded
history length (item id ``-1`` = padding), ``V`` valid cold users, ``r`` the rank of the low-rank solver.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import checks
from jaxrec import evaluate as ev
from jaxrec.data import CrossDomainDataset
from jaxrec.methods import item_map_lowrank as lr
from jaxrec.methods.common import SELECTION_USERS, Trained, check_pair, check_seed, valid_subset

__all__ = [
    "DENSE_ITEM_LIMIT",
    "ITEM_MAP_SOLVERS",
    "ItemMapConfig",
    "item_map_factored_scores",
    "item_map_scores",
    "item_map_solver",
    "train_item_map",
]

#: ``solver="auto"`` takes the dense solver up to this many items in the source and target together: Game→Video
#: (21,070 items) peaks at 3.5 GB for one dense solve, and the dense memory grows like the square of the catalogue.
DENSE_ITEM_LIMIT = 32_768
#: The solvers of :class:`ItemMapConfig`.
ITEM_MAP_SOLVERS = ("auto", "dense", "lowrank")


@dataclasses.dataclass(frozen=True)
class ItemMapConfig:
    """Hyper-parameters of ``item_map``.

    The map is ``W' = W (I + γ B_t)``: the ridge map ``W`` from source items to target items, followed by ``γ``
    times one step of propagation through ``B_t``, an EASE model of the target domain (item-item weights
    learned on all target users). λ is chosen first (with γ = 0), then (λ_t, γ) given λ, each on the valid
    cold-start users of the target by NDCG@10 averaged over the full-ranking and sampled protocols (one
    sampling seed), never on test. A grid of one value is not searched.

    Attributes:
      lams: candidate ridge strengths λ of ``W``.
      target_lams: candidate ridge strengths λ_t of the target EASE model ``B_t``.
      target_weights: candidate propagation weights γ (0: the plain ridge map). A cold user's short source
        history points at a few target items; the target domain's own co-consumption spreads that evidence to
        their neighbours.
      item_norm: source item columns are scaled by ``count^-item_norm`` before the regression (0: plain binary
        rows; 0.5 damps the pull of very popular source items).
      pop_weight: weight of the target log-popularity prior added to the per-user max-scaled ridge scores: it
        breaks the exact ties among items the source history says nothing about.
      solver: ``"dense"`` (exact Gram and EASE solves: O(N²) memory, O(N³) time), ``"lowrank"`` (the map kept
        factored through rank-``rank`` randomised SVDs: O((U + N)·rank + nnz) memory) or ``"auto"`` (dense up to
        :data:`~jaxrec.methods.item_map.DENSE_ITEM_LIMIT` items in the two domains together, low-rank above).
      rank: the rank of the low-rank solver, for the source rows of the overlapping users and for the target rows
        alike (capped by their sizes; at those caps it equals the dense solver).
      seed: seeds the randomised SVDs of the low-rank solver (the dense solution is deterministic) and the
        subset of valid users.
      valid_users: the grid is scored on at most this many valid cold users (a random subset,
        :func:`~jaxrec.methods.common.valid_subset`), so that selection costs the same on any number of users;
        None: all of them.
    """

    lams: tuple[float, ...] = (300.0, 1000.0, 3000.0, 10000.0)
    target_lams: tuple[float, ...] = (30.0, 100.0, 300.0)
    target_weights: tuple[float, ...] = (0.0, 3.0, 10.0)
    item_norm: float = 0.5
    pop_weight: float = 0.01
    solver: str = "auto"
    rank: int = 1024
    seed: int = 0
    valid_users: int | None = SELECTION_USERS

    def __post_init__(self):
        for name, low in (("lams", 0.0), ("target_lams", 0.0), ("target_weights", None)):
            raw = getattr(self, name)
            values = tuple(float(x) for x in np.atleast_1d(raw))
            bad = not values or not np.all(np.isfinite(values))
            bad = bad or (min(values) <= low if low is not None else min(values) < 0)
            if bad:
                want = "> 0" if low is not None else ">= 0"
                raise ValueError(f"ItemMapConfig.{name}={raw} must be a non-empty sequence of finite values {want}")
            object.__setattr__(self, name, values)
        checks.fraction("ItemMapConfig.pop_weight", self.pop_weight, high=math.inf, closed="left")
        checks.fraction("ItemMapConfig.item_norm", self.item_norm)
        if self.solver not in ITEM_MAP_SOLVERS:
            raise ValueError(f"ItemMapConfig.solver={self.solver!r}; expected one of {', '.join(ITEM_MAP_SOLVERS)}")
        checks.positive_int("ItemMapConfig.rank", self.rank)
        if self.valid_users is not None:
            checks.positive_int("ItemMapConfig.valid_users", self.valid_users)
        check_seed("ItemMapConfig.seed", self.seed)


def item_map_solver(config: ItemMapConfig, n_source: int, n_target: int) -> str:
    """The solver ``config`` runs on catalogues of ``n_source`` and ``n_target`` items: ``"dense"`` or
    ``"lowrank"`` (``"auto"``: dense when ``n_source + n_target <= DENSE_ITEM_LIMIT``)."""
    if config.solver != "auto":
        return config.solver
    return "dense" if n_source + n_target <= DENSE_ITEM_LIMIT else "lowrank"


# ----------------------------------------------------------------------------------------------------------------
# Linear algebra and scores (pure functions over arrays)
# ----------------------------------------------------------------------------------------------------------------


def _pair_products(ds: CrossDomainDataset, users: np.ndarray, a: str, b: str, scale_a: np.ndarray) -> jax.Array:
    """``X_aᵀ X_b`` over ``users`` as a dense ``[N_a, N_b]`` float32 array, from sparse rows (no dense X).

    Every user contributes the outer product of their (scaled) ``a`` row and binary ``b`` row: Σ_u n_a(u)·n_b(u)
    scatter-adds instead of a [users, N_a] × [users, N_b] product.
    """
    rows_a, rows_b = ds.seen(a, "train"), ds.seen(b, "train")
    la, lb = rows_a.lengths[users], rows_b.lengths[users]
    counts = la * lb
    owner = np.repeat(np.arange(users.size), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    ia = rows_a.indices[rows_a.indptr[users][owner] + k // lb[owner]]
    ib = rows_b.indices[rows_b.indptr[users][owner] + k % lb[owner]]
    out = jnp.zeros((ds.n_items(a), ds.n_items(b)), jnp.float32)
    return out.at[ia, ib].add(jnp.asarray(scale_a)[ia])


@jax.jit
def _ease(gram: jax.Array, lam: jax.Array) -> jax.Array:
    """EASE item-item weights ``B [N, N]`` from the Gram matrix ``XᵀX [N, N]`` (Steck 2019): ``P = (XᵀX + λI)⁻¹``,
    ``B_ij = −P_ij / P_jj`` off the diagonal, 0 on it — the ridge regression of each item on all the others."""
    n = gram.shape[0]
    eye = jnp.eye(n, dtype=gram.dtype)
    p = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram + lam * eye), eye)
    return jnp.where(eye > 0, 0.0, -p / jnp.diag(p)[None, :])


def _history_rows(history: jax.Array, scale: jax.Array, users: jax.Array, n_items: int) -> jax.Array:
    """``[B, N]`` scaled binary rows of ``users`` from the padded history ``[U, L]`` (-1 = padding)."""
    h = history[users]
    rows = jnp.broadcast_to(jnp.arange(users.shape[0])[:, None], h.shape)
    weights = jnp.where(h >= 0, scale[jnp.maximum(h, 0)], 0.0)
    return jnp.zeros((users.shape[0], n_items), jnp.float32).at[rows, jnp.maximum(h, 0)].add(weights)


def _finish_scores(scores, has, log_pop, pop_weight):
    """Ridge scores scaled to a maximum of 1 per user, plus ``pop_weight`` × log-popularity (scaled to [0, 1]):
    the prior orders the many items a short source history gives no evidence for (exact ties otherwise). Users
    without source history (``has`` False) get the prior alone."""
    scores = scores / jnp.maximum(jnp.max(jnp.abs(scores), axis=1, keepdims=True), 1e-12)
    prior = log_pop / jnp.maximum(jnp.max(log_pop), 1e-12)
    return jnp.where(has, scores + pop_weight * prior[None, :], prior[None, :])


def item_map_scores(
    weights: jax.Array,
    history: jax.Array,
    scale: jax.Array,
    log_pop: jax.Array,
    pop_weight: jax.Array,
    users: jax.Array,
) -> jax.Array:
    """The dense scores of ``item_map``'s scorer (``evaluate.Scorer(Partial(item_map_scores, ...), None)``).

    Args:
      weights: ``float32 [N_s, N_t]`` the map ``W'``.
      history: ``int32 [U, L]`` every user's source train items, ``-1`` padded.
      scale: ``float32 [N_s]`` the source item column scales.
      log_pop: ``float32 [N_t]`` ``log1p`` of the target items' train counts.
      pop_weight: scalar weight of the popularity prior.
      users: ``int32 [B]`` user ids.

    Returns:
      ``float32 [B, N_t]``: ``x_s @ W'`` scaled to a maximum of 1 per user plus ``pop_weight`` × the prior
      (scaled to [0, 1]); users without source history get the prior alone.
    """
    x = _history_rows(history, scale, users, weights.shape[0])
    has = jnp.any(history[users] >= 0, axis=1, keepdims=True)
    return _finish_scores(x @ weights, has, log_pop, pop_weight)


def item_map_factored_scores(
    user_factors: jax.Array,
    has: jax.Array,
    target_factors: jax.Array,
    log_pop: jax.Array,
    pop_weight: jax.Array,
    users: jax.Array,
) -> jax.Array:
    """The dense scores of the low-rank ``item_map`` scorer (``Partial(item_map_factored_scores, ...)``).

    Args:
      user_factors: ``float32 [U, r]`` every user's scaled source row times ``A`` (``x_s @ A``; zero rows for users
        without source history).
      has: ``float32 [U]``, 1 for users with source history.
      target_factors: ``float32 [r, N_t]`` the right factor ``C`` of ``W' = A C``.
      log_pop: ``float32 [N_t]`` ``log1p`` of the target items' train counts.
      pop_weight: scalar weight of the popularity prior.
      users: ``int32 [B]`` user ids.

    Returns:
      ``float32 [B, N_t]``: ``(x_s @ A) @ C`` finished as :func:`item_map_scores` finishes ``x_s @ W'``.
    """
    scores = user_factors[users] @ target_factors
    return _finish_scores(scores, has[users][:, None] > 0, log_pop, pop_weight)


def _table_scores(table, row_of, has, log_pop, pop_weight, users):
    """Scores of candidate maps during selection: raw scores precomputed for the valid users (``table [V, N]``,
    ``row_of [U]`` maps a user id to its row)."""
    return _finish_scores(table[row_of[users]], has[users][:, None], log_pop, pop_weight)


def _factored_table_scores(z, c, row_of, has, log_pop, pop_weight, users):
    """:func:`_table_scores` of a factored table ``z [V, r] @ c [r, N]``, one batch of users at a time."""
    return _finish_scores(z[row_of[users]] @ c, has[users][:, None], log_pop, pop_weight)


# ----------------------------------------------------------------------------------------------------------------
# The two solvers, behind one interface
# ----------------------------------------------------------------------------------------------------------------


class _Solver(NamedTuple):
    """What selection needs from a solver. A *map* is ``W [N_s, N_t]`` (dense) or ``(A [N_s, r], C [r, N_t])``;
    *valid scores* are ``[V, N_t]`` or ``(Z [V, r], C)``; both are propagated on their right factor."""

    ridge: Callable[[float], Any]  # λ -> map
    valid_scores: Callable[[Any], Any]  # map -> valid scores
    target: Callable[[float], Any]  # λ_t -> the target propagation B_t (dense or factored)
    apply: Callable[[Any, Any, float], Any]  # (map or valid scores, B_t, γ) -> the same (I + γ B_t)
    scorer: Callable[[Any], tuple[ev.Scorer, dict]]  # map -> (scorer, params)


def _dense_solver(ds, source, target, overlap, scale, valid_users, prior) -> _Solver:
    """Gram and cross products as dense matrices, Cholesky solves, the EASE inverse."""
    n_s, n_t = ds.n_items(source), ds.n_items(target)
    gram = _pair_products(ds, overlap, source, source, scale) * jnp.asarray(scale)[None, :]
    cross = _pair_products(ds, overlap, source, target, scale)
    eye = jnp.eye(n_s, dtype=jnp.float32)
    history = jnp.asarray(ds.seen(source, "train").to_padded(pad=-1))
    scale_j = jnp.asarray(scale)
    x_valid = None if valid_users is None else _history_rows(history, scale_j, jnp.asarray(valid_users), n_s)

    def ridge(lam):
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram + lam * eye), cross)

    @functools.cache
    def target_gram():  # X_tᵀX_t over every target user, built once and only when propagation is used
        return _pair_products(ds, ds.users_with(target, "train"), target, target, np.ones(n_t, np.float32))

    def scorer(w):
        return ev.Scorer(jax.tree_util.Partial(item_map_scores, w, history, scale_j, *prior)), {"W": w}

    return _Solver(
        ridge,
        lambda w: x_valid @ w,
        lambda lam_t: _ease(target_gram(), jnp.float32(lam_t)),
        lambda x, b, g: x + g * (x @ b),
        scorer,
    )


def _lowrank_solver(ds, source, target, overlap, scale, valid_users, prior, config) -> _Solver:
    """Rank-``config.rank`` factors (:mod:`jaxrec.methods.item_map_lowrank`); maps are ``(A, C)`` pairs."""
    factors = lr.source_factors(ds, source, target, overlap, scale, config.rank, seed=config.seed)
    x_valid = None if valid_users is None else lr.sparse_rows(ds, source, valid_users, scale)
    target_factors = functools.cache(lambda: lr.target_factors(ds, target, config.rank, seed=config.seed))

    def scorer(m):
        a, c = m
        z = lr.sparse_rows(ds, source, np.arange(ds.n_users), scale) @ a
        has = jnp.asarray(ds.seen(source, "train").lengths > 0, jnp.float32)
        fn = jax.tree_util.Partial(item_map_factored_scores, jnp.asarray(z), has, jnp.asarray(c), *prior)
        return ev.Scorer(fn), {"source_factors": jnp.asarray(a), "target_factors": jnp.asarray(c)}

    return _Solver(
        lambda lam: (lr.ridge_source(factors, lam), factors.cross),
        lambda m: (x_valid @ m[0], m[1]),
        lambda lam_t: lr.target_propagation(target_factors(), lam_t),
        lambda m, t, g: (m[0], lr.propagate(m[1], t, g)),
        scorer,
    )


# ----------------------------------------------------------------------------------------------------------------
# Selection on valid
# ----------------------------------------------------------------------------------------------------------------


def _valid_scoring(ds, source, target, log_pop, pop_weight):
    """``(valid users int32 [V], score)`` with ``score(valid scores) -> {"valid_NDCG@10", "valid_full_NDCG@10",
    "valid_sampled_NDCG@10"}`` on the valid cold users of ``target`` (valid scores: ``[V, N_t]`` or ``(Z [V, r],
    C [r, N_t])``); None when there are none."""
    valid_users = ds.cold_users(source, target, "valid") if "valid" in ds.splits(target) else np.zeros(0, np.int64)
    valid_users = valid_users.astype(np.int32)
    if valid_users.size == 0:
        return None
    row_of = np.zeros(ds.n_users, np.int32)
    row_of[valid_users] = np.arange(valid_users.size, dtype=np.int32)
    has_source = jnp.asarray(ds.seen(source, "train").lengths > 0)

    def score(raw) -> dict:
        table = (
            (_factored_table_scores, jnp.asarray(raw[0]), jnp.asarray(raw[1]))
            if isinstance(raw, tuple)
            else (_table_scores, raw)
        )
        scorer = ev.Scorer(jax.tree_util.Partial(*table, jnp.asarray(row_of), has_source, log_pop, pop_weight))
        r = ev.evaluate(
            scorer,
            ds,
            target=target,
            split="valid",
            source=source,
            users="cold",
            ks=(10,),
            sampled_ks=(10,),
            seeds=(0,),
        )
        full, sampled = r["full"]["NDCG@10"], r["sampled"]["NDCG@10"]
        return {"valid_NDCG@10": (full + sampled) / 2, "valid_full_NDCG@10": full, "valid_sampled_NDCG@10": sampled}

    return valid_users, score


def _select_lam(config: ItemMapConfig, solver: _Solver, valid) -> tuple[Any, dict, list]:
    """λ with no propagation: ``(map, best row, history rows)``; the first λ unless there is a grid and valid cold
    users to choose on."""
    if valid is None or len(config.lams) == 1:
        lam = config.lams[0]
        return solver.ridge(lam), {"lam": lam, "target_lam": config.target_lams[0], "target_weight": 0.0}, []
    _, score = valid
    rows, weights, best = [], None, None
    for lam in config.lams:
        w = solver.ridge(lam)
        rows.append({"lam": lam, "target_lam": config.target_lams[0], "target_weight": 0.0})
        rows[-1] |= score(solver.valid_scores(w))
        if best is None or rows[-1]["valid_NDCG@10"] > best["valid_NDCG@10"]:
            weights, best = w, rows[-1]
    return weights, best, rows


def _select_propagation(config: ItemMapConfig, weights, best: dict, solver: _Solver, valid):
    """(λ_t, γ) given λ: ``(best row, B_t of the best λ_t or None, history rows)``.

    Without a grid or valid cold users to choose on: γ = 0 if it is the first candidate, else the first
    (λ_t, γ > 0)."""
    grid = [(lt, g) for lt in config.target_lams for g in config.target_weights if g > 0]
    if valid is None or len(grid) + (0.0 in config.target_weights) <= 1:
        if grid and 0.0 not in config.target_weights[:1]:
            best = best | {"target_lam": grid[0][0], "target_weight": grid[0][1]}
        return best, None, []
    _, score = valid
    base = solver.valid_scores(weights)
    history = []
    rows = [best] if "valid_NDCG@10" in best and 0.0 in config.target_weights else []
    if not rows and 0.0 in config.target_weights:
        rows = [best | score(base)]
        history.append(rows[0])
    ease = None
    for lam_t in config.target_lams:
        b = solver.target(lam_t)
        for g in config.target_weights:
            if g > 0:
                rows.append({"lam": best["lam"], "target_lam": lam_t, "target_weight": g})
                rows[-1] |= score(solver.apply(base, b, g))
                history.append(rows[-1])
        if max(rows, key=lambda r: r["valid_NDCG@10"])["target_lam"] == lam_t:
            ease = b  # keep only the best so far (N_target² floats each for the dense solver)
    return max(rows, key=lambda r: r["valid_NDCG@10"]), ease, history


# ----------------------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------------------


def train_item_map(
    ds: CrossDomainDataset, *, source: str, target: str, config: ItemMapConfig = ItemMapConfig()
) -> Trained:
    """Ridge regression from a user's source-item row to their target-item row, over the overlapping users, then
    one step of propagation through the target domain's own item-item model.

    ``W = (X_sᵀX_s + λI)⁻¹ X_sᵀ X_t`` (``[N_source, N_target]``; EASE-like, Steck 2019, across domains) and
    ``W' = W (I + γ B_t)`` with ``B_t`` the EASE model of the target (ridge λ_t, zero diagonal, fitted on every
    target user); a user's target scores are ``x_s @ W'``. λ, then (λ_t, γ), are chosen on the valid cold-start
    users of ``target`` (NDCG@10, mean of full ranking and sampled), never on test. Users without source history get
    popularity.

    Cost, by ``config.solver`` (:func:`item_map_solver`): dense — one ``N_source³/3`` Cholesky factorisation per λ
    and one ``N_target³`` inverse per λ_t (≈ 10–30 s each at 12k / 9k items on 2 CPU cores), ``N_source ×
    N_target`` floats for ``W'``; low-rank — two randomised SVDs (O(nnz·r) each), O(N·r²) per grid value, and
    ``(U + N_target) × r`` floats for the scorer (``params`` holds ``source_factors [N_s, r]`` and
    ``target_factors [r, N_t]`` instead of ``W``).
    """
    check_pair(ds, source, target)
    overlap = lr.overlap_users(ds, source, target)
    n_s, n_t = ds.n_items(source), ds.n_items(target)
    solver_name = item_map_solver(config, n_s, n_t)
    scale = lr.source_scale(ds, source, config.item_norm)
    log_pop = jnp.asarray(np.log1p(ds.item_popularity(target)).astype(np.float32))
    prior = (log_pop, jnp.float32(config.pop_weight))
    valid = _valid_scoring(valid_subset(ds, source, target, config.valid_users, config.seed), source, target, *prior)
    valid_users = None if valid is None else valid[0]
    if solver_name == "dense":
        solver = _dense_solver(ds, source, target, overlap, scale, valid_users, prior)
    else:
        solver = _lowrank_solver(ds, source, target, overlap, scale, valid_users, prior, config)

    # -- λ first (no propagation), then (λ_t, γ) given λ --
    weights, best, lam_rows = _select_lam(config, solver, valid)
    best, ease, propagation_rows = _select_propagation(config, weights, best, solver, valid)
    lam, lam_t, weight = best["lam"], best["target_lam"], best["target_weight"]
    if weight > 0:
        weights = solver.apply(weights, ease if ease is not None else solver.target(lam_t), weight)

    scorer, params = solver.scorer(weights)
    params |= {"lam": lam, "target_lam": lam_t, "target_weight": weight, "solver": solver_name}
    chosen = dataclasses.replace(config, lams=(lam,), target_lams=(lam_t,), target_weights=(weight,))
    return Trained({target: scorer}, params, lam_rows + propagation_rows, chosen)

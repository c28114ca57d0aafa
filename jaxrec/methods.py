"""Named cross-domain recipes: a config dataclass + a function that trains and returns scorers.

Every recipe has the same signature, ``train(ds, *, source, target, config) -> Trained``, and is looked up by
name in :data:`METHODS` (:func:`get_method` raises listing the valid names). ``Trained.scorers[domain]`` is an
``evaluate.Scorer`` for every domain the method can rank.

Recipes here (what each transfers, from ``source`` to the cold-start users of ``target``):

* ``popularity`` — nothing: items ranked by training interaction count in the target domain.
* ``target_only`` — nothing: BPR-MF on the target domain alone (Rendle et al., 2009). Cold users have no target
  history, so they **fall back to popularity** (stated, and what a single-domain library gives them).
* ``cmf`` — shared user embeddings trained on all domains jointly with BPR (collective matrix factorisation,
  Singh & Gordon, 2008): a cold user's embedding is learned from the source and scored against target items.
* ``mmd`` / ``coral`` / ``dann`` — ``cmf`` with per-domain residual user towers and a domain-alignment term on the
  user representations of the two domains: the combined loss ``Σ_d L_BPR(d) + λ·D(h_source, h_target)`` with D =
  multi-kernel MMD (Long et al., 2015), CORAL (Sun & Saenko, 2016), or adversarial alignment through gradient
  reversal with the DANN λ ramp (Ganin et al., 2016).
* ``item_map`` — a closed-form ridge regression from source items to target items over the overlapping users
  (EASE-like across domains), followed by one step of propagation through the target domain's own EASE model;
  λ, λ_t and the propagation weight chosen on valid: the strong baseline every learned method is compared with.
* ``emcdr`` / ``ptupcdr`` / ``finetune`` (in :mod:`jaxrec.mapping`) — embedding-and-mapping and fine-tuning.
* ``mmoe`` / ``ple`` / ``star`` / ``conet`` / ``lightgcn`` (in :mod:`jaxrec.multidomain`) — multi-domain user
  networks over shared embeddings, and joint-graph propagation.

Every recipe learns its transfer from the users who have train history in both domains, so what counts as one
user matters: load CDRIB's releases with ``load_dir(..., shared_users="below_heldout")`` and check other data with
:func:`jaxrec.diagnostics.link_test`. The defaults documented in the configs were chosen on Amazon Game→Video
valid before that loading fix; ``bench/leaderboard.py`` measures them on the correct reading (``bench/RESULTS.md``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import batching, losses, models
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset, DataError

# ----------------------------------------------------------------------------------------------------------------
# Configs and results
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """Hyper-parameters of the embedding recipes (``target_only``, ``cmf``, ``mmd``, ``coral``, ``dann``).

    Defaults work on both the embedded synthetic data and Amazon Game/Video without per-dataset tuning.

    Attributes:
      dim: embedding width.
      user_tower: hidden widths of the per-domain residual user towers (``()``: none; the alignment recipes use
        ``(dim,)`` by default via :func:`default_config`).
      epochs: maximum epochs (an epoch = one pass over the largest domain).
      batch_size: positives per domain per step.
      n_negatives: uniformly drawn negatives per positive (never a seen item).
      learning_rate: Adam learning rate.
      l2: L2 penalty on the batch's user and item embeddings. 1e-2 (not the customary 1e-4): with ~6 interactions
        per user, BPR-MF memorises at 1e-4 — cmf cold-user NDCG@10 (full) on the demo data 0.204 at 1e-4,
        0.283 at 3e-3, 0.332 at 1e-2; the same ordering was measured on Amazon Game→Video valid.
      discrepancy: alignment term (``None``, ``"mean_l2"``, ``"linear_mmd"``, ``"mmd"``, ``"coral"``,
        ``"sliced_wasserstein"``, ``"adversarial"``).
      lam: λ of the alignment term (for ``"adversarial"``: the maximum of the DANN ramp of the reversal
        strength).
      align_size: users per domain per step on which the alignment term is computed (MMD is O(n²)).
      patience: early stopping after this many epochs without a better validation NDCG@10 (cold users).
      seed: parameters, data order and negatives.
      progress: tqdm bars.
      parallel: data parallelism of the train step — ``"none"``, ``"mesh"`` (``jit`` over a 1-D mesh of all
        devices: the global batch is split, the loss is the single-device loss, and the model equals
        single-device training up to float rounding) or ``"pmap"`` (every local device; the losses are masked
        means per device averaged over devices, and alignment terms see each device's shard, so a padded last
        batch weighs differently: a close model, not the same). The batch size must divide by the device
        count. See :func:`jaxrec.train.make_train_step`.
      auxiliary: further domains trained jointly with ``source`` and ``target`` (shared users, one item table
        and BPR term each; ``("all",)``: every domain of the dataset) — the multi-domain setting with N > 2
        domains. The alignment term stays between ``source`` and ``target``. Recipes ``cmf``, ``mmd``,
        ``coral``, ``dann``; their ``Trained.scorers`` then rank every trained domain.
    """

    dim: int = 64
    user_tower: tuple[int, ...] = ()
    epochs: int = 30
    batch_size: int = 1024
    n_negatives: int = 4
    learning_rate: float = 1e-2
    l2: float = 1e-2
    discrepancy: str | None = None
    lam: float = 0.0
    align_size: int = 256
    patience: int = 4
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    auxiliary: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(
            self, "auxiliary", (self.auxiliary,) if isinstance(self.auxiliary, str) else tuple(self.auxiliary)
        )
        for name in ("dim", "epochs", "batch_size", "n_negatives", "patience", "align_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EmbeddingConfig.{name}={getattr(self, name)} must be >= 1")
        if self.learning_rate <= 0 or self.l2 < 0 or self.lam < 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0, l2={self.l2} and lam={self.lam} >= 0")
        tr.resolve_discrepancy(self.discrepancy)
        check_parallel(self)


@dataclasses.dataclass(frozen=True)
class PopularityConfig:
    """``popularity`` has no hyper-parameters (the seed is accepted for a uniform interface)."""

    seed: int = 0


class Trained(NamedTuple):
    """What a recipe returns."""

    scorers: dict  # domain -> evaluate.Scorer
    params: Any  # trained parameters (None for popularity)
    history: list  # training log records
    config: Any


# ----------------------------------------------------------------------------------------------------------------
# The shared-embedding model (thin: embeddings and scores, never losses)
# ----------------------------------------------------------------------------------------------------------------


def _pair_outputs(h, pos_item, neg_item, mask, reg):
    """The output record of one domain's batch, the format every recipe's model returns (:class:`SharedEmbeddingModel`).

    Args:
      h: ``[B, D]`` user vectors; pos_item ``[B, D]``, neg_item ``[B, n, D]`` item vectors; mask ``[B]``.
      reg: ``(user [B, D], pos_item [B, D], neg_item [B, n, D])`` — what the objective's L2 term penalizes.
    """
    return {
        "pos": jnp.sum(h * pos_item, -1),
        "neg": jnp.einsum("bd,bnd->bn", h, neg_item),
        "user": reg[0],
        "pos_item": reg[1],
        "neg_item": reg[2],
        "mask": mask,
    }


class SharedEmbeddingModel(nn.Module):
    """Users shared across domains, items per domain, optional per-domain residual user towers and a domain
    classifier behind gradient reversal.

    ``__call__(batch)`` takes ``{domain: {"users" [B], "items" [B], "negatives" [B, n], "mask" [B]}}`` for any
    subset of ``domains`` and returns ``{domain: {"pos" [B], "neg" [B, n], "user" [B, D], "pos_item" [B, D],
    "neg_item" [B, n, D], "mask" [B]}}`` plus ``"align": (hs, ht, hs_mask, ht_mask)`` when the batch holds both
    ``domains[0]`` (source) and ``domains[1]`` (target) — the first ``align_size`` user representations of each
    (a random subsample, as batches are shuffled: MMD costs O(n²)), or the domain classifier's logits on them when
    ``adversarial``.
    """

    n_users: int
    n_items: tuple[int, ...]
    domains: tuple[str, ...]
    dim: int = 64
    user_tower: tuple[int, ...] = ()
    adversarial: bool = False
    align_size: int = 256

    def setup(self):
        self.embed = models.CrossDomainEmbedding(self.n_users, tuple(self.n_items), self.dim)
        self.towers = (
            [models.MLP(tuple(self.user_tower) + (self.dim,), name=f"tower_{k}") for k in range(len(self.n_items))]
            if self.user_tower
            else None
        )
        self.classifier = models.DomainClassifier(hidden=(self.dim,)) if self.adversarial else None

    def user_vectors(self, users: jax.Array, domain: int) -> jax.Array:
        """``[B, D]`` representation of ``users`` in ``domain`` (index)."""
        e = self.embed.users(users)
        return e if self.towers is None else e + self.towers[domain](e)

    def item_vectors(self, domain: int) -> jax.Array:
        """``[N_domain, D]`` item table."""
        return self.embed.item_table(domain)

    def __call__(self, batch, *, deterministic: bool = True, grl_alpha=1.0):
        if self.is_initializing():  # create every table, whatever domains the batch holds
            self.embed(jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32), 0)
            for k in range(len(self.n_items)):
                self.user_vectors(jnp.zeros((1,), jnp.int32), k)
        out = {}
        for k, name in enumerate(self.domains):
            if name not in batch:
                continue
            b = batch[name]
            h = self.user_vectors(b["users"], k)
            pos_item = self.embed.items(b["items"], k)
            neg_item = self.embed.items(b["negatives"], k)
            out[name] = _pair_outputs(h, pos_item, neg_item, b["mask"], (h, pos_item, neg_item))
        if len(self.domains) >= 2 and self.domains[0] in batch and self.domains[1] in batch:
            s, t = out[self.domains[0]], out[self.domains[1]]
            n = self.align_size  # batches are shuffled: the first rows are a random subsample
            hs, ht = s["user"][:n], t["user"][:n]
            if self.classifier is not None:
                hs = self.classifier(hs, grl_alpha, deterministic=deterministic)
                ht = self.classifier(ht, grl_alpha, deterministic=deterministic)
            out["align"] = (hs, ht, s["mask"][:n], t["mask"][:n])
        return out


#: The ``mmd`` recipe's discrepancy: three Gaussian kernels around the median heuristic, the median taken on 128
#: rows (sorting all (n+m)²/2 distances would dominate a CPU step).
RECIPE_MMD = functools.partial(losses.mmd, median_scales=(0.5, 1.0, 2.0), median_rows=128)


def _bpr_objective(l2: float, discrepancy, lam, model_kwargs=None) -> tr.Objective:
    def task_loss(outputs, batch):
        del batch
        result = {}
        for name, o in outputs.items():
            if name == "align":
                continue
            bpr = losses.mean_where(losses.bpr(o["pos"], o["neg"]), where=o["mask"])
            reg = (
                jnp.sum(o["user"] ** 2, -1)
                + jnp.sum(o["pos_item"] ** 2, -1)
                + jnp.mean(jnp.sum(o["neg_item"] ** 2, -1), -1)
            )
            result[name] = bpr + l2 * losses.mean_where(reg, where=o["mask"])
        return result

    return tr.Objective(task_loss, discrepancy=discrepancy, lam=lam, model_kwargs=model_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------


def _check_pair(ds: CrossDomainDataset, source: str, target: str):
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"source and target must differ, both are {source!r}")


def train_popularity(
    ds: CrossDomainDataset, *, source: str, target: str, config: PopularityConfig = PopularityConfig()
) -> Trained:
    """Items by training interaction count, per domain."""
    _check_pair(ds, source, target)
    scorers = {d: ev.popularity_scorer(ds.item_popularity(d)) for d in (source, target)}
    return Trained(scorers, None, [], config)


def _warm_or_popularity(users, warm, u):
    w = warm[u][:, None]
    return jnp.concatenate([users[u] * w, 1.0 - w], axis=1)


def _fallback_scorer(user_table, item_table, has_history, counts) -> ev.Scorer:
    """Embedding scores for users with history, popularity for the others (one dot product: an extra column).

    Built as a ``Partial`` over a module-level function so evaluation compiles once for every parameter value.
    """
    log_pop = np.log1p(np.asarray(counts, np.float32))
    items = jnp.concatenate([jnp.asarray(item_table), jnp.asarray(log_pop)[:, None]], axis=1)
    warm = jnp.asarray(has_history, jnp.float32)
    return ev.Scorer(jax.tree_util.Partial(_warm_or_popularity, jnp.asarray(user_table), warm), items)


def _valid_evaluator(
    ds: CrossDomainDataset, source: str, target: str, *, cold: bool = True
) -> Callable[[ev.Scorer], dict] | None:
    """The early-stopping measure of every recipe: ``scorer -> {"NDCG@10", "Recall@10"}`` (full ranking) on the
    valid users of ``target`` — its cold users when ``cold`` and there are any, else all of them; None when
    ``target`` has no valid interactions."""
    if ds.interactions(target, "valid").size == 0:
        return None
    cold = cold and ds.cold_users(source, target, "valid").size > 0

    def evaluate(scorer: ev.Scorer) -> dict:
        result = ev.evaluate(
            scorer,
            ds,
            target=target,
            split="valid",
            source=source if cold else None,
            users="cold" if cold else "all",
            ks=(10,),
            protocols=("full",),
        )
        return {"NDCG@10": result["full"]["NDCG@10"], "Recall@10": result["full"]["Recall@10"]}

    return evaluate


PARALLEL = ("none", "pmap", "mesh")


def check_parallel(config) -> None:
    """Raises ValueError naming the config class when ``config.parallel`` is not one of :data:`PARALLEL`."""
    if config.parallel not in PARALLEL:
        raise ValueError(f"{type(config).__name__}.parallel={config.parallel!r}; expected one of {', '.join(PARALLEL)}")


def _train_config(
    config, *, steps_per_epoch: int, early_stopping: bool, epochs: int | None = None, learning_rate: float | None = None
) -> tr.TrainConfig:
    """``train.TrainConfig`` of a recipe: Adam, 4 log records per epoch, early stopping on valid NDCG@10, the
    recipe's data parallelism."""
    return tr.TrainConfig(
        parallel=config.parallel,
        epochs=config.epochs if epochs is None else epochs,
        seed=config.seed,
        progress=config.progress,
        log_every=max(1, steps_per_epoch // 4),
        optimizer=tr.OptimizerConfig(learning_rate=config.learning_rate if learning_rate is None else learning_rate),
        early_stopping_metric="NDCG@10" if early_stopping else None,
        patience=config.patience if early_stopping else None,
    )


def _fit_embedding(
    ds: CrossDomainDataset, domains: tuple[str, ...], *, source: str, target: str, config: EmbeddingConfig
) -> tuple[SharedEmbeddingModel, Any, list]:
    """Trains a :class:`SharedEmbeddingModel` on ``domains`` with early stopping on target cold-user valid NDCG."""
    adversarial = config.discrepancy == "adversarial"
    model = SharedEmbeddingModel(
        ds.n_users,
        tuple(ds.n_items(d) for d in domains),
        tuple(domains),
        config.dim,
        tuple(config.user_tower),
        adversarial,
        config.align_size,
    )
    inters = {d: ds.interactions(d, "train") for d in domains}
    samplers = {d: batching.NegativeSampler(ds.n_items(d), seen=ds.seen(d, "train")) for d in domains}
    largest = max(inters[d].size for d in domains)
    steps_per_epoch = -(-largest // config.batch_size)

    def batches(rng):
        return batching.multi_domain_batches(
            inters, {d: config.batch_size for d in domains}, rng=rng, n_negatives=config.n_negatives, samplers=samplers
        )

    total_steps = steps_per_epoch * config.epochs
    if adversarial:
        ramp = losses.dann_lambda_schedule(total_steps=total_steps, max_value=max(config.lam, 1e-6))
        objective = _bpr_objective(config.l2, "adversarial", 1.0, model_kwargs=lambda step: {"grl_alpha": ramp(step)})
    else:
        discrepancy = config.discrepancy if len(domains) > 1 else None
        if discrepancy == "mmd":
            discrepancy = RECIPE_MMD
        objective = _bpr_objective(config.l2, discrepancy, config.lam if len(domains) > 1 else 0.0)

    valid = _valid_evaluator(ds, source, target, cold=source in domains)
    evaluate = None if valid is None else (lambda params: valid(_scorer_for(model, params, ds, domains, target)))
    config_t = _train_config(config, steps_per_epoch=steps_per_epoch, early_stopping=valid is not None)
    result = tr.fit(config_t, tr.Task(model, objective, batches, evaluate=evaluate, name="+".join(domains)))
    return model, result.best_params, result.history


def _scorer_for(model: SharedEmbeddingModel, params, ds: CrossDomainDataset, domains, domain: str) -> ev.Scorer:
    k = list(domains).index(domain)
    users = model.apply({"params": params}, jnp.arange(ds.n_users), k, method=SharedEmbeddingModel.user_vectors)
    items = model.apply({"params": params}, k, method=SharedEmbeddingModel.item_vectors)
    has_history = np.zeros(ds.n_users, bool)
    for d in domains:
        has_history[ds.users_with(d, "train")] = True
    return _fallback_scorer(users, items, has_history, ds.item_popularity(domain))


def train_target_only(
    ds: CrossDomainDataset, *, source: str, target: str, config: EmbeddingConfig = EmbeddingConfig()
) -> Trained:
    """BPR-MF on the target domain alone; users without target history fall back to popularity."""
    _check_pair(ds, source, target)
    config = dataclasses.replace(config, discrepancy=None, lam=0.0, user_tower=())
    model, params, history = _fit_embedding(ds, (target,), source=source, target=target, config=config)
    return Trained({target: _scorer_for(model, params, ds, (target,), target)}, params, history, config)


def _train_joint(ds, source, target, config):
    _check_pair(ds, source, target)
    extra = tuple(ds.domains) if config.auxiliary == ("all",) else tuple(config.auxiliary)
    for d in extra:
        ds.domain(d)  # unknown names raise listing the dataset's domains
    domains = (source, target) + tuple(d for d in dict.fromkeys(extra) if d not in (source, target))
    model, params, history = _fit_embedding(ds, domains, source=source, target=target, config=config)
    scorers = {d: _scorer_for(model, params, ds, domains, d) for d in domains}
    return Trained(scorers, params, history, config)


def train_cmf(
    ds: CrossDomainDataset, *, source: str, target: str, config: EmbeddingConfig = EmbeddingConfig()
) -> Trained:
    """Shared user embeddings trained with BPR on both domains (no alignment term)."""
    return _train_joint(ds, source, target, dataclasses.replace(config, discrepancy=None, lam=0.0))


def train_aligned(ds: CrossDomainDataset, *, source: str, target: str, config: EmbeddingConfig) -> Trained:
    """Shared embeddings + per-domain towers + λ·D(h_source, h_target) (the recipe behind mmd/coral/dann)."""
    if config.discrepancy is None:
        raise ValueError("train_aligned needs config.discrepancy (e.g. 'mmd', 'coral', 'adversarial')")
    return _train_joint(ds, source, target, config)


# ----------------------------------------------------------------------------------------------------------------
# item_map: the closed-form ridge baseline
# ----------------------------------------------------------------------------------------------------------------


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
      target_weights: candidate propagation weights γ (0: the plain ridge map). On Game→Video valid (loaded
        with ``shared_users="below_heldout"``, see :func:`jaxrec.data.load_dir`), γ = 10 with λ_t = 100 lifts
        sampled NDCG@10 from 0.076 to 0.085 (full 0.057 → 0.063): a cold user's short source history points at
        a few target items, and the target domain's own co-consumption spreads that evidence to their
        neighbours. (The numbers below, and the defaults of the other recipes, were measured before that
        loading fix, with every user id read as shared.)
      item_norm: source item columns are scaled by ``count^-item_norm`` before the regression (0: plain binary
        rows; 0.5 damps the pull of very popular source items, +0.006 valid sampled NDCG@10 on Game→Video for
        the co-occurrence limit of the model).
      pop_weight: weight of the target log-popularity prior added to the per-user max-scaled ridge scores: it
        breaks the exact ties among items the source history says nothing about (on Game→Video valid: sampled
        NDCG@10 0.067 → 0.071 with any weight in [1e-4, 0.1]; full ranking unchanged).
      seed: accepted for a uniform interface (the solution is deterministic).
    """

    lams: tuple[float, ...] = (300.0, 1000.0, 3000.0, 10000.0)
    target_lams: tuple[float, ...] = (30.0, 100.0, 300.0)
    target_weights: tuple[float, ...] = (0.0, 3.0, 10.0)
    item_norm: float = 0.5
    pop_weight: float = 0.01
    seed: int = 0

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
        if self.pop_weight < 0:
            raise ValueError(f"ItemMapConfig.pop_weight={self.pop_weight} must be >= 0")
        if not 0.0 <= self.item_norm <= 1.0:
            raise ValueError(f"ItemMapConfig.item_norm={self.item_norm} must be in [0, 1]")


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


def _item_map_scores(weights, history, scale, log_pop, pop_weight, users):
    x = _history_rows(history, scale, users, weights.shape[0])
    has = jnp.any(history[users] >= 0, axis=1, keepdims=True)
    return _finish_scores(x @ weights, has, log_pop, pop_weight)


def _table_scores(table, row_of, has, log_pop, pop_weight, users):
    """Scores of candidate maps during selection: raw scores precomputed for the valid users (``table [V, N]``,
    ``row_of [U]`` maps a user id to its row)."""
    return _finish_scores(table[row_of[users]], has[users][:, None], log_pop, pop_weight)


def train_item_map(
    ds: CrossDomainDataset, *, source: str, target: str, config: ItemMapConfig = ItemMapConfig()
) -> Trained:
    """Ridge regression from a user's source-item row to their target-item row, over the overlapping users, then
    one step of propagation through the target domain's own item-item model.

    ``W = (X_sᵀX_s + λI)⁻¹ X_sᵀ X_t`` (``[N_source, N_target]``; EASE-like, Steck 2019, across domains), solved
    in JAX by Cholesky, and ``W' = W (I + γ B_t)`` with ``B_t`` the EASE model of the target (ridge λ_t, zero
    diagonal, fitted on every target user); a user's target scores are ``x_s @ W'``. λ, then (λ_t, γ), are
    chosen on the valid cold-start users of ``target`` (NDCG@10, mean of full ranking and sampled), never on
    test. Users without source history get popularity. Cost: one ``N_source³/3`` factorisation per λ and one
    ``N_target³`` inverse per λ_t (≈ 10–30 s each at 12k / 9k items on 2 CPU cores), ``N_source × N_target``
    floats for ``W'``.
    """
    _check_pair(ds, source, target)
    overlap = np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train"))
    if overlap.size == 0:
        raise DataError(f"item_map needs users with train history in both {source!r} and {target!r}; none found")
    n_s, n_t = ds.n_items(source), ds.n_items(target)
    counts = ds.item_popularity(source).astype(np.float64)
    scale = np.where(counts > 0, np.maximum(counts, 1.0) ** -config.item_norm, 0.0).astype(np.float32)
    gram = _pair_products(ds, overlap, source, source, scale)
    gram = gram * jnp.asarray(scale)[None, :]
    cross = _pair_products(ds, overlap, source, target, scale)
    history = jnp.asarray(ds.seen(source, "train").to_padded(pad=-1))
    log_pop = jnp.asarray(np.log1p(ds.item_popularity(target)).astype(np.float32))
    scale_j = jnp.asarray(scale)
    pop_weight = jnp.float32(config.pop_weight)
    eye = jnp.eye(n_s, dtype=jnp.float32)

    def solve(lam):
        factor = jax.scipy.linalg.cho_factor(gram + lam * eye)
        return jax.scipy.linalg.cho_solve(factor, cross)

    @functools.cache
    def target_gram():  # X_tᵀX_t over every target user, built once and only when propagation is used
        return _pair_products(ds, ds.users_with(target, "train"), target, target, np.ones(n_t, np.float32))

    def target_ease(lam_t):
        return _ease(target_gram(), jnp.float32(lam_t))

    valid_users = ds.cold_users(source, target, "valid") if "valid" in ds.splits(target) else np.zeros(0, np.int64)
    valid_users = valid_users.astype(np.int32)
    row_of = np.zeros(ds.n_users, np.int32)
    row_of[valid_users] = np.arange(valid_users.size, dtype=np.int32)
    has_source = jnp.asarray(ds.seen(source, "train").lengths > 0)
    x_valid = _history_rows(history, scale_j, jnp.asarray(valid_users), n_s) if valid_users.size else None

    def valid_score(raw) -> dict:
        """NDCG@10 on the valid cold users for raw scores ``[V, N_target]`` of those users."""
        scorer = ev.Scorer(
            jax.tree_util.Partial(_table_scores, raw, jnp.asarray(row_of), has_source, log_pop, pop_weight)
        )
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

    # λ first (no propagation), then (λ_t, γ) given λ. A grid of one value, or no valid cold users: its first value.
    select = valid_users.size > 0
    history_log, weights, best = [], None, None
    for lam in config.lams if select and len(config.lams) > 1 else config.lams[:1]:
        w = solve(lam)
        if not select or len(config.lams) == 1:
            weights, best = w, {"lam": lam, "target_lam": config.target_lams[0], "target_weight": 0.0}
            break
        history_log.append({"lam": lam, "target_lam": config.target_lams[0], "target_weight": 0.0})
        history_log[-1] |= valid_score(x_valid @ w)
        if best is None or history_log[-1]["valid_NDCG@10"] > best["valid_NDCG@10"]:
            weights, best = w, history_log[-1]
    grid = [(lt, g) for lt in config.target_lams for g in config.target_weights if g > 0]
    ease = None
    if select and len(grid) + (0.0 in config.target_weights) > 1:
        base = x_valid @ weights
        rows = [best] if "valid_NDCG@10" in best and 0.0 in config.target_weights else []
        if not rows and 0.0 in config.target_weights:
            rows = [best | valid_score(base)]
            history_log.append(rows[0])
        for lam_t in config.target_lams:
            b = target_ease(lam_t)
            for g in config.target_weights:
                if g > 0:
                    rows.append({"lam": best["lam"], "target_lam": lam_t, "target_weight": g})
                    rows[-1] |= valid_score(base + g * (base @ b))
                    history_log.append(rows[-1])
            if max(rows, key=lambda r: r["valid_NDCG@10"])["target_lam"] == lam_t:
                ease = b  # keep only the best so far (N_target² floats each)
        best = max(rows, key=lambda r: r["valid_NDCG@10"])
    elif grid and 0.0 not in config.target_weights[:1]:
        best = best | {"target_lam": grid[0][0], "target_weight": grid[0][1]}
    lam, lam_t, weight = best["lam"], best["target_lam"], best["target_weight"]
    if weight > 0:
        weights = weights + weight * (weights @ (ease if ease is not None else target_ease(lam_t)))
    scorer = ev.Scorer(jax.tree_util.Partial(_item_map_scores, weights, history, scale_j, log_pop, pop_weight))
    params = {"W": weights, "lam": lam, "target_lam": lam_t, "target_weight": weight}
    chosen = dataclasses.replace(config, lams=(lam,), target_lams=(lam_t,), target_weights=(weight,))
    return Trained({target: scorer}, params, history_log, chosen)


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------


class Method(NamedTuple):
    name: str
    train: Callable[..., Trained]
    default_config: Any
    summary: str


METHODS: dict[str, Method] = {
    "popularity": Method("popularity", train_popularity, PopularityConfig(), "most popular target items"),
    "target_only": Method(
        "target_only", train_target_only, EmbeddingConfig(), "BPR-MF on the target only; cold users get popularity"
    ),
    "cmf": Method("cmf", train_cmf, EmbeddingConfig(), "shared user embeddings over both domains"),
    "mmd": Method(
        "mmd",
        train_aligned,
        EmbeddingConfig(user_tower=(64,), discrepancy="mmd", lam=1.0),
        "cmf + user towers + multi-kernel MMD alignment",
    ),
    "coral": Method(
        "coral",
        train_aligned,
        EmbeddingConfig(user_tower=(64,), discrepancy="coral", lam=1.0),
        "cmf + user towers + CORAL alignment",
    ),
    "dann": Method(
        "dann",
        train_aligned,
        EmbeddingConfig(user_tower=(64,), discrepancy="adversarial", lam=0.1),
        "cmf + user towers + adversarial alignment (gradient reversal, DANN ramp)",
    ),
    "item_map": Method(
        "item_map",
        train_item_map,
        ItemMapConfig(),
        "closed-form ridge from source items to target items over overlapping users (λ on valid)",
    ),
}


def get_method(name: str) -> Method:
    """The recipe called ``name``; raises ValueError listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]


def run(name: str, ds: CrossDomainDataset, *, source: str, target: str, **overrides) -> Trained:
    """Trains method ``name`` with its default config updated by ``overrides`` (e.g. ``epochs=5, seed=1``)."""
    method = get_method(name)
    fields = {f.name for f in dataclasses.fields(method.default_config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"method {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    config = dataclasses.replace(method.default_config, **overrides)
    return method.train(ds, source=source, target=target, config=config)


# Recipes defined in their own modules register themselves here (they import this module, so this comes last).
from jaxrec import mapping, multidomain  # noqa: E402

METHODS.update(mapping.RECIPES)
METHODS.update(multidomain.RECIPES)

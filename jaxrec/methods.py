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
      l2: L2 penalty on the batch's user and item embeddings.
      discrepancy: alignment term (``None``, ``"mean_l2"``, ``"linear_mmd"``, ``"mmd"``, ``"coral"``,
        ``"sliced_wasserstein"``, ``"adversarial"``).
      lam: λ of the alignment term (for ``"adversarial"``: the maximum of the DANN ramp of the reversal
        strength).
      align_size: users per domain per step on which the alignment term is computed (MMD is O(n²)).
      patience: early stopping after this many epochs without a better validation NDCG@10 (cold users).
      seed: parameters, data order and negatives.
      progress: tqdm bars.
    """

    dim: int = 64
    user_tower: tuple[int, ...] = ()
    epochs: int = 30
    batch_size: int = 1024
    n_negatives: int = 4
    learning_rate: float = 1e-2
    l2: float = 1e-4
    discrepancy: str | None = None
    lam: float = 0.0
    align_size: int = 256
    patience: int = 4
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("dim", "epochs", "batch_size", "n_negatives", "patience", "align_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EmbeddingConfig.{name}={getattr(self, name)} must be >= 1")
        if self.learning_rate <= 0 or self.l2 < 0 or self.lam < 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0, l2={self.l2} and lam={self.lam} >= 0")
        tr.resolve_discrepancy(self.discrepancy)


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
            out[name] = {
                "pos": jnp.sum(h * pos_item, -1),
                "neg": jnp.einsum("bd,bnd->bn", h, neg_item),
                "user": h,
                "pos_item": pos_item,
                "neg_item": neg_item,
                "mask": b["mask"],
            }
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

    has_valid = ds.interactions(target, "valid").size > 0
    evaluate = None
    if has_valid:

        def evaluate(params):
            scorer = _scorer_for(model, params, ds, domains, target)
            users = "cold" if source in domains and ds.cold_users(source, target, "valid").size else "all"
            result = ev.evaluate(
                scorer,
                ds,
                target=target,
                split="valid",
                source=source if users == "cold" else None,
                users=users,
                ks=(10,),
                protocols=("full",),
            )
            return {"NDCG@10": result["full"]["NDCG@10"], "Recall@10": result["full"]["Recall@10"]}

    config_t = tr.TrainConfig(
        epochs=config.epochs,
        seed=config.seed,
        progress=config.progress,
        log_every=max(1, steps_per_epoch // 4),
        optimizer=tr.OptimizerConfig(learning_rate=config.learning_rate),
        early_stopping_metric="NDCG@10" if has_valid else None,
        patience=config.patience if has_valid else None,
    )
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
    domains = (source, target)
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

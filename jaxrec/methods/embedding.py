"""The shared-embedding recipes: ``target_only``, ``cmf``, and ``mmd`` / ``coral`` / ``dann`` (aligned).

* ``target_only`` — BPR-MF on the target domain alone (Rendle et al., 2009). Cold users have no target history,
  so they **fall back to popularity** (what a single-domain library gives them).
* ``cmf`` — user embeddings shared by all domains, trained jointly with BPR (collective matrix factorisation,
  Singh & Gordon, 2008): a cold user's embedding is learned from the source and scored against target items.
* ``mmd`` / ``coral`` / ``dann`` — ``cmf`` with per-domain residual user towers and an alignment term on the
  user representations of the two domains: ``Σ_d L_BPR(d) + λ·D(h_source, h_target)`` with D = multi-kernel MMD
  (Long et al., 2015), CORAL (Sun & Saenko, 2016), or adversarial alignment through gradient reversal with the
  DANN λ ramp (Ganin et al., 2016).

Axis conventions: ``U`` users, ``N_k`` items of domain ``k``, ``B`` rows of a batch, ``n`` negatives per
positive, ``D`` embedding width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxrec import checks, models
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset
from jaxrec.methods.common import (
    TASK_LOSSES,
    Trained,
    check_pair,
    check_parallel,
    check_seed,
    create_every_table,
    domain_batches,
    fallback_scorer,
    has_history,
    pair_outputs,
    task_objective,
    train_config,
    valid_evaluator,
)

__all__ = [
    "MMD_OPTIONS",
    "EmbeddingConfig",
    "SharedEmbeddingModel",
    "fit_embedding",
    "recipe_objective",
    "scorer_for",
    "train_aligned",
    "train_cmf",
    "train_target_only",
]


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """Hyper-parameters of the embedding recipes (``target_only``, ``cmf``, ``mmd``, ``coral``, ``dann``).

    Defaults work on both the embedded synthetic data and Amazon Game/Video without per-dataset tuning.

    Attributes:
      dim: embedding width.
      user_tower: hidden widths of the per-domain residual user towers (``()``: none; the registry entries of
        the alignment recipes in ``jaxrec.methods.METHODS`` use ``(64,)``).
      epochs: maximum epochs (an epoch = one pass over the largest domain).
      batch_size: positives per domain per step.
      n_negatives: uniformly drawn negatives per positive (never a seen item).
      task_loss: the within-domain task loss: ``"bpr"`` (each positive against its ``n_negatives``),
        ``"softmax"`` (full softmax over the domain's catalogue; sampled softmax when batch × catalogue exceeds
        :data:`jaxrec.methods.retrieval.FULL_SOFTMAX_LIMIT`) or ``"sampled_softmax"`` (against the batch's
        ``batch_size × n_negatives`` shared negatives, logQ-corrected); see
        :func:`jaxrec.methods.retrieval.task_objective`.
      learning_rate: Adam learning rate.
      l2: L2 penalty on the batch's user and item embeddings (strong: with a few interactions per user, BPR-MF
        memorises at the customary 1e-4).
      discrepancy: alignment term (``None``, ``"mean_l2"``, ``"linear_mmd"``, ``"mmd"``, ``"coral"``,
        ``"sliced_wasserstein"``, ``"adversarial"``), or a callable ``D(hs, ht, *, hs_mask, ht_mask)``.
      discrepancy_options: keyword options of the alignment term, bound by :func:`jaxrec.losses.get_discrepancy`
        (e.g. ``{"median_scales": (0.5, 1.0, 2.0), "median_rows": 128}`` for ``"mmd"``: three Gaussian kernels
        around the median heuristic, the median taken on 128 rows); ``None``: the function's defaults.
      lam: λ of the alignment term (for ``"adversarial"``: the maximum of the DANN ramp of the reversal
        strength).
      align_size: users per domain per step on which the alignment term is computed (MMD is O(n²)).
      patience: early stopping after this many epochs without a better validation NDCG@10 (cold users).
      seed: parameters, data order and negatives.
      progress: tqdm bars.
      sparse_min_rows: embedding tables of at least this many rows are updated at the rows each batch looks up
        (lazy Adam; see :class:`jaxrec.train.TrainConfig`); None: every parameter densely.
      parallel: data parallelism of the train step — ``"none"``, ``"mesh"`` (``jit`` over a 1-D mesh of all
        devices: the global batch is split, the loss is the single-device loss, and the model equals
        single-device training up to float rounding) or ``"pmap"`` (every local device; the losses are masked
        means per device averaged over devices, and alignment terms see each device's shard, so a padded last
        batch weighs differently: a close model, not the same). The batch size must divide by the device
        count. See :func:`jaxrec.train.make_train_step`.
      shard_rows: with ``parallel="mesh"``, the user and item tables are sharded on their rows over the devices
        (each holds ``rows / devices`` of them; rows padded to a multiple of the device count, never scored) instead
        of replicated on each: the same model, for tables larger than one device. See
        :func:`jaxrec.train.row_shardings`.
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
    task_loss: str = "bpr"
    learning_rate: float = 1e-2
    l2: float = 1e-2
    discrepancy: str | Callable | None = None
    discrepancy_options: Mapping[str, Any] | None = None
    lam: float = 0.0
    align_size: int = 256
    patience: int = 4
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS
    shard_rows: bool = False
    auxiliary: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(
            self, "auxiliary", (self.auxiliary,) if isinstance(self.auxiliary, str) else tuple(self.auxiliary)
        )
        for name in ("dim", "epochs", "batch_size", "n_negatives", "patience", "align_size"):
            checks.positive_int(f"EmbeddingConfig.{name}", getattr(self, name))
        checks.fraction("EmbeddingConfig.learning_rate", self.learning_rate, high=math.inf, closed="neither")
        for name in ("l2", "lam"):
            checks.fraction(f"EmbeddingConfig.{name}", getattr(self, name), high=math.inf, closed="left")
        tower = checks.positive_ints("EmbeddingConfig.user_tower", self.user_tower, allow_empty=True)
        object.__setattr__(self, "user_tower", tower)
        check_seed("EmbeddingConfig.seed", self.seed)
        checks.choice("EmbeddingConfig.task_loss", self.task_loss, TASK_LOSSES)
        if self.discrepancy_options is not None:
            object.__setattr__(self, "discrepancy_options", FrozenDict(self.discrepancy_options))
        tr.resolve_discrepancy(self.discrepancy, self.discrepancy_options)
        check_parallel(self)
        if self.shard_rows and self.parallel != "mesh":
            raise ValueError(f"EmbeddingConfig.shard_rows=True needs parallel='mesh', got {self.parallel!r}")


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
    row_multiple: int = 1  # tables padded to a multiple of this many rows (the device count, for shard_rows)

    def setup(self):
        self.embed = models.CrossDomainEmbedding(
            self.n_users, tuple(self.n_items), self.dim, row_multiple=self.row_multiple
        )
        self.towers = (
            [models.MLP(tuple(self.user_tower) + (self.dim,), name=f"tower_{k}") for k in range(len(self.n_items))]
            if self.user_tower
            else None
        )
        self.classifier = models.DomainClassifier(hidden=(self.dim,)) if self.adversarial else None

    def user_vectors(self, users: jax.Array, domain: int) -> jax.Array:
        """``[B, D]`` representation of ``users`` [B] in ``domain`` (index)."""
        e = self.embed.users(users)
        return e if self.towers is None else e + self.towers[domain](e)

    def item_vectors(self, domain: int) -> jax.Array:
        """``[N_domain, D]`` item table."""
        return self.embed.item_table(domain)

    def __call__(self, batch, *, deterministic: bool = True, grl_alpha=1.0):
        create_every_table(self, self.embed, n_domains=len(self.n_items), user_vectors=self.user_vectors)
        out = {}
        for k, name in enumerate(self.domains):
            if name not in batch:
                continue
            b = batch[name]
            h = self.user_vectors(b["users"], k)
            pos_item = self.embed.items(b["items"], k)
            neg_item = self.embed.items(b["negatives"], k)
            items = self.embed.item_table(k)
            out[name] = pair_outputs(h, pos_item, neg_item, b["mask"], (h, pos_item, neg_item), items=items)
        if len(self.domains) >= 2 and self.domains[0] in batch and self.domains[1] in batch:
            s, t = out[self.domains[0]], out[self.domains[1]]
            n = self.align_size  # batches are shuffled: the first rows are a random subsample
            hs, ht = s["user"][:n], t["user"][:n]
            if self.classifier is not None:
                hs = self.classifier(hs, grl_alpha, deterministic=deterministic)
                ht = self.classifier(ht, grl_alpha, deterministic=deterministic)
            out["align"] = (hs, ht, s["mask"][:n], t["mask"][:n])
        return out


#: The ``mmd`` recipe's options of :func:`jaxrec.losses.mmd`: three Gaussian kernels around the median heuristic,
#: the median taken on 128 rows (sorting all (n+m)²/2 distances would dominate a CPU step).
MMD_OPTIONS = FrozenDict({"median_scales": (0.5, 1.0, 2.0), "median_rows": 128})


def recipe_objective(config: EmbeddingConfig, *, joint: bool, total_steps: int) -> tr.Objective:
    """``config.task_loss`` + L2 on every domain, plus ``λ·D`` of ``config.discrepancy`` when ``joint`` (more than
    one domain).

    The alignment fields (including the adversarial schedule) come from :func:`jaxrec.train.alignment`.
    """
    if not joint:
        return task_objective(config.l2, config.task_loss)
    terms = tr.alignment(config.discrepancy, config.lam, total_steps=total_steps, options=config.discrepancy_options)
    return task_objective(config.l2, config.task_loss, **terms)


def fit_embedding(
    ds: CrossDomainDataset, domains: tuple[str, ...], *, source: str, target: str, config: EmbeddingConfig
) -> tuple[SharedEmbeddingModel, Any, list]:
    """Trains a :class:`SharedEmbeddingModel` on ``domains`` jointly with BPR (+ the alignment term of
    ``config.discrepancy`` between ``domains[0]`` and ``domains[1]``), early-stopped on valid NDCG@10 of
    ``target``.

    Args:
      ds: the dataset.
      domains: the trained domains, in model index order (one domain: single-domain BPR-MF).
      source: the source domain; when it is in ``domains``, early stopping watches the cold users of
        ``target``, else all its valid users.
      target: the domain early stopping watches.
      config: the hyper-parameters.

    Returns:
      ``(model, best params, history)``.
    """
    adversarial = config.discrepancy == "adversarial"
    model = SharedEmbeddingModel(
        ds.n_users,
        tuple(ds.n_items(d) for d in domains),
        tuple(domains),
        config.dim,
        tuple(config.user_tower),
        adversarial,
        config.align_size,
        jax.device_count() if config.shard_rows else 1,
    )
    batches, steps_per_epoch = domain_batches(ds, domains, batch_size=config.batch_size, n_negatives=config.n_negatives)
    objective = recipe_objective(config, joint=len(domains) > 1, total_steps=steps_per_epoch * config.epochs)
    valid = valid_evaluator(ds, source, target, cold=source in domains)
    evaluate = None if valid is None else (lambda params: valid(scorer_for(model, params, ds, domains, target)))
    config_t = train_config(config, steps_per_epoch=steps_per_epoch, early_stopping=valid is not None)
    config_t = dataclasses.replace(config_t, shard_rows=config.shard_rows)
    result = tr.fit(config_t, tr.Task(model, objective, batches, evaluate=evaluate, name="+".join(domains)))
    return model, result.best_params, result.history


def scorer_for(model: SharedEmbeddingModel, params, ds: CrossDomainDataset, domains, domain: str) -> ev.Scorer:
    """The scorer of ``domain`` from a trained :class:`SharedEmbeddingModel`.

    Args:
      model: the model; params: its parameters.
      ds: the dataset it was trained on.
      domains: the model's domains, in index order.
      domain: one of ``domains``.

    Returns:
      A :func:`~jaxrec.methods.common.fallback_scorer`: user vectors ``[U, D]`` of ``domain`` (after its tower)
      for users with train history in any of ``domains``, popularity of ``domain`` for the others.
    """
    k = list(domains).index(domain)
    users = model.apply({"params": params}, jnp.arange(ds.n_users), k, method=SharedEmbeddingModel.user_vectors)
    items = model.apply({"params": params}, k, method=SharedEmbeddingModel.item_vectors)
    return fallback_scorer(users, items, has_history(ds, domains), ds.item_popularity(domain))


def train_target_only(
    ds: CrossDomainDataset, *, source: str, target: str, config: EmbeddingConfig = EmbeddingConfig()
) -> Trained:
    """BPR-MF on the target domain alone; users without target history fall back to popularity."""
    check_pair(ds, source, target)
    config = dataclasses.replace(config, discrepancy=None, lam=0.0, user_tower=())
    model, params, history = fit_embedding(ds, (target,), source=source, target=target, config=config)
    return Trained({target: scorer_for(model, params, ds, (target,), target)}, params, history, config)


def _train_joint(ds: CrossDomainDataset, source: str, target: str, config: EmbeddingConfig) -> Trained:
    """``fit_embedding`` on ``(source, target) + config.auxiliary``; a scorer for every trained domain."""
    check_pair(ds, source, target)
    extra = tuple(ds.domains) if config.auxiliary == ("all",) else tuple(config.auxiliary)
    for d in extra:
        ds.domain(d)  # unknown names raise listing the dataset's domains
    domains = (source, target) + tuple(d for d in dict.fromkeys(extra) if d not in (source, target))
    model, params, history = fit_embedding(ds, domains, source=source, target=target, config=config)
    scorers = {d: scorer_for(model, params, ds, domains, d) for d in domains}
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

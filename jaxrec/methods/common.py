"""The recipe toolkit: what every recipe of :mod:`jaxrec.methods` is built from.

A recipe is a config dataclass plus ``train(ds, *, source, target, config) -> Trained``. The pieces here are
what recipes share: the result and registry records (:class:`Trained`, :class:`Method`), argument checks
(:func:`check_pair`, :func:`check_parallel`), the joint training data (:func:`domain_batches`), the BPR
objective and the output record every recipe model returns (:func:`bpr_objective`, :func:`pair_outputs`),
parameter creation at init (:func:`create_every_table`), the train configuration and the early-stopping measure
(:func:`train_config`, :func:`valid_evaluator`), and the scorer that ranks users without history by popularity
(:func:`fallback_scorer` over :func:`warm_or_popularity`).

Axis conventions: ``U`` = users of the shared id space, ``N`` = items of one domain, ``B`` = rows of a batch,
``n`` = negatives per positive, ``D`` = embedding width.

Example (the skeleton of a recipe; see :mod:`jaxrec.methods.embedding` for a complete one):
    >>> def train_mine(ds, *, source, target, config):  # doctest: +SKIP
    ...     check_pair(ds, source, target)
    ...     batches, steps = domain_batches(ds, (source, target), batch_size=1024, n_negatives=4)
    ...     valid = valid_evaluator(ds, source, target)
    ...     task = train.Task(model, bpr_objective(config.l2), batches, evaluate=...)
    ...     result = train.fit(train_config(config, steps_per_epoch=steps, early_stopping=valid is not None), task)
    ...     return Trained({target: fallback_scorer(...)}, result.best_params, result.history, config)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import batching, losses
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset, DataError

__all__ = [
    "PARALLEL",
    "Method",
    "Trained",
    "bpr_objective",
    "check_pair",
    "check_parallel",
    "create_every_table",
    "domain_batches",
    "fallback_scorer",
    "has_history",
    "pair_outputs",
    "tag_phase",
    "train_config",
    "valid_evaluator",
    "warm_or_popularity",
]

#: The data-parallel strategies of a recipe's train step (see :func:`jaxrec.train.make_train_step`).
PARALLEL = ("none", "pmap", "mesh")


class Trained(NamedTuple):
    """What a recipe returns.

    Attributes:
      scorers: ``{domain: evaluate.Scorer}`` for every domain the recipe ranks (at least the target).
      params: the trained parameters (None for ``popularity``).
      history: the training log records (``train.fit``'s, or the recipe's own selection rows).
      config: the config the recipe ran with (for ``item_map``: with the chosen grid values).
    """

    scorers: dict
    params: Any
    history: list
    config: Any


class Method(NamedTuple):
    """A registry entry of :data:`jaxrec.methods.METHODS`.

    Attributes:
      name: the registry key.
      train: ``train(ds, *, source, target, config) -> Trained``.
      default_config: the config dataclass ``methods.run`` starts from.
      summary: one line for ``jaxrec methods``.
    """

    name: str
    train: Callable[..., Trained]
    default_config: Any
    summary: str


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------


def check_pair(ds: CrossDomainDataset, source: str, target: str) -> None:
    """Checks that ``source`` and ``target`` are two different domains of ``ds``.

    Raises:
      DataError: an unknown domain (listing the dataset's domains), or ``source == target``.
    """
    ds.domain(source), ds.domain(target)
    if source == target:
        raise DataError(f"source and target must differ, both are {source!r}")


def check_parallel(config) -> None:
    """Checks ``config.parallel`` against :data:`PARALLEL`.

    Raises:
      ValueError: naming the config class, the value and the valid strategies.
    """
    if config.parallel not in PARALLEL:
        raise ValueError(f"{type(config).__name__}.parallel={config.parallel!r}; expected one of {', '.join(PARALLEL)}")


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def has_history(ds: CrossDomainDataset, domains: Sequence[str]) -> np.ndarray:
    """``bool [U]``: the user has train interactions in at least one of ``domains``."""
    out = np.zeros(ds.n_users, bool)
    for d in domains:
        out[ds.users_with(d, "train")] = True
    return out


def domain_batches(
    ds: CrossDomainDataset, domains: Sequence[str], *, batch_size: int, n_negatives: int
) -> tuple[Callable[[np.random.Generator], Iterator[dict]], int]:
    """Joint training batches of ``domains`` and the number of steps in an epoch.

    Every domain's train interactions, ``batch_size`` positives per domain per step, ``n_negatives`` uniform
    negatives per positive that the user has never seen in train (``batching.NegativeSampler``); an epoch is one
    pass over the largest domain (``batching.multi_domain_batches``).

    Args:
      ds: the dataset.
      domains: the domains trained together (one, for single-domain training).
      batch_size: positives per domain per step (B).
      n_negatives: negatives per positive (n).

    Returns:
      ``(batches, steps_per_epoch)``: ``batches(rng)`` yields ``steps_per_epoch`` batches ``{domain: {"users"
      int32 [B], "items" int32 [B], "negatives" int32 [B, n], "mask" bool [B]}}``, deterministic given the
      ``np.random.Generator`` ``rng`` (order and negatives).
    """
    domains = tuple(domains)
    inters = {d: ds.interactions(d, "train") for d in domains}
    samplers = {d: batching.NegativeSampler(ds.n_items(d), seen=ds.seen(d, "train")) for d in domains}
    steps = max(-(-inters[d].size // batch_size) for d in domains)
    sizes = {d: batch_size for d in domains}

    def batches(rng: np.random.Generator) -> Iterator[dict]:
        return batching.multi_domain_batches(inters, sizes, rng=rng, n_negatives=n_negatives, samplers=samplers)

    return batches, steps


def tag_phase(history: list, phase: str) -> list:
    """The records of ``history`` with ``{"phase": phase}`` first, for recipes that train in several phases."""
    return [{"phase": phase, **record} for record in history]


# ----------------------------------------------------------------------------------------------------------------
# Models and objectives
# ----------------------------------------------------------------------------------------------------------------


def create_every_table(
    module: nn.Module,
    embed: nn.Module,
    *,
    n_domains: int = 0,
    user_vectors: Callable[[jax.Array, int], jax.Array] | None = None,
) -> None:
    """Creates every parameter of a recipe model during ``init``, whatever domains the batch holds.

    ``init`` creates only the parameters its call touches, and a recipe model skips the domains absent from its
    batch; phases that train on one domain then hand on the same parameter tree. Call this first in the model's
    ``__call__``; it does nothing outside ``init``.

    Args:
      module: the recipe model (``module.is_initializing()`` decides).
      embed: its :class:`jaxrec.models.CrossDomainEmbedding` (``create_tables``: the user and every item table).
      n_domains: domains of the model, for ``user_vectors``.
      user_vectors: the model's ``(users int32 [B], domain) -> [B, D]``, called once per domain index in
        ``range(n_domains)`` (per-domain towers or heads); None when users have no per-domain parameters.
    """
    if not module.is_initializing():
        return
    embed.create_tables()
    if user_vectors is not None:
        zeros = jnp.zeros((1,), jnp.int32)
        for k in range(n_domains):
            user_vectors(zeros, k)


def pair_outputs(
    h: jax.Array, pos_item: jax.Array, neg_item: jax.Array, mask: jax.Array, reg: tuple[jax.Array, ...]
) -> dict[str, jax.Array]:
    """The output record of one domain's batch, the format every recipe model returns and :func:`bpr_objective`
    reads.

    Args:
      h: ``[B, D]`` user vectors.
      pos_item: ``[B, D]`` vectors of the positive items.
      neg_item: ``[B, n, D]`` vectors of the negatives.
      mask: ``bool [B]``, False on padding rows.
      reg: ``(user [B, D], pos_item [B, D], neg_item [B, n, D])``, what the objective's L2 term penalizes (the
        vectors above, or the embeddings they are computed from).

    Returns:
      ``{"pos" [B], "neg" [B, n], "user" [B, D], "pos_item" [B, D], "neg_item" [B, n, D], "mask" [B]}`` with
      ``pos``/``neg`` the dot-product scores.
    """
    return {
        "pos": jnp.sum(h * pos_item, -1),
        "neg": jnp.einsum("bd,bnd->bn", h, neg_item),
        "user": reg[0],
        "pos_item": reg[1],
        "neg_item": reg[2],
        "mask": mask,
    }


def bpr_objective(
    l2: float,
    discrepancy: str | Callable | None = None,
    lam: float | Callable = 0.0,
    *,
    model_kwargs: Callable[[jax.Array], dict] | None = None,
    discrepancy_options: Mapping[str, Any] | None = None,
) -> tr.Objective:
    """The objective of the BPR recipes: per domain, masked-mean BPR plus ``l2`` × the mean squared norms of the
    batch's vectors, and optionally ``λ·D`` on the model's ``"align"`` output.

    Args:
      l2: weight of ``‖user‖² + ‖pos_item‖² + mean_n ‖neg_item‖²`` (masked mean over the batch).
      discrepancy: the alignment term, as :class:`jaxrec.train.Objective` takes it (a name, a callable or None).
      lam: λ, a float or a schedule ``step -> λ``.
      model_kwargs: optional ``step -> dict`` of extra model inputs (e.g. the gradient-reversal strength).
      discrepancy_options: keyword options of the named discrepancy (``losses.get_discrepancy``).

    Returns:
      A :class:`jaxrec.train.Objective` whose task losses are ``{domain: scalar}`` for every domain record in the
      model's outputs (:func:`pair_outputs`).
    """

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

    return tr.Objective(
        task_loss,
        discrepancy=discrepancy,
        lam=lam,
        model_kwargs=model_kwargs,
        discrepancy_options=discrepancy_options,
    )


# ----------------------------------------------------------------------------------------------------------------
# Training and early stopping
# ----------------------------------------------------------------------------------------------------------------


def train_config(
    config, *, steps_per_epoch: int, early_stopping: bool, epochs: int | None = None, learning_rate: float | None = None
) -> tr.TrainConfig:
    """The ``train.TrainConfig`` of a recipe: Adam, 4 log records per epoch, the recipe's data parallelism, and
    early stopping on valid NDCG@10 when ``early_stopping``.

    Args:
      config: the recipe config; read: ``parallel``, ``epochs``, ``seed``, ``progress``, ``learning_rate``,
        ``patience`` (the last only with ``early_stopping``).
      steps_per_epoch: steps in an epoch (sets the log interval).
      early_stopping: stop on ``"NDCG@10"`` of the task's ``evaluate`` after ``config.patience`` epochs without
        improvement, keeping the best parameters.
      epochs: overrides ``config.epochs`` (recipes with several phases).
      learning_rate: overrides ``config.learning_rate``.

    Returns:
      The :class:`jaxrec.train.TrainConfig`.
    """
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


def valid_evaluator(
    ds: CrossDomainDataset, source: str, target: str, *, cold: bool = True
) -> Callable[[ev.Scorer], dict] | None:
    """The early-stopping measure of every recipe.

    Args:
      ds: the dataset (with a ``valid`` split of ``target``).
      source: the source domain (defines the cold users).
      target: the ranked domain.
      cold: measure on the cold users of ``target`` (source history, no target train history) when it has any;
        False: on all its valid users.

    Returns:
      ``scorer -> {"NDCG@10": float, "Recall@10": float}``, full ranking (seen items excluded) on the valid
      users of ``target`` — its cold users when ``cold`` and there are any, else all of them; None when
      ``target`` has no valid interactions.
    """
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


# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------


def warm_or_popularity(users: jax.Array, warm: jax.Array, u: jax.Array) -> jax.Array:
    """The user side of :func:`fallback_scorer`: a user's vector and a popularity column, one of them zeroed.

    Args:
      users: ``float [U, D]`` user table.
      warm: ``float32 [U]``, 1 for users scored by their vector, 0 for users scored by popularity.
      u: ``int32 [B]`` user ids.

    Returns:
      ``float [B, D + 1]``: ``[users[u] · warm[u], 1 − warm[u]]``; against items ``[N, D + 1]`` whose last column
      is the log-popularity, a warm user's scores are the dot products and a cold user's the popularity.
    """
    w = warm[u][:, None]
    return jnp.concatenate([users[u] * w, 1.0 - w], axis=1)


def fallback_scorer(user_table, item_table, has_history, counts) -> ev.Scorer:
    """Embedding scores for users with history, popularity for the others, in one dot product.

    Built as a ``jax.tree_util.Partial`` over :func:`warm_or_popularity`, so evaluation compiles once for every
    parameter value, and run directories can save it (:mod:`jaxrec.runs`).

    Args:
      user_table: ``float [U, D]`` user vectors.
      item_table: ``float [N, D]`` item vectors.
      has_history: ``bool [U]``, True for the users scored by their vector.
      counts: ``[N]`` train interaction counts of the items (``log1p`` of them ranks the others).

    Returns:
      An ``evaluate.Scorer`` with ``items`` ``float32 [N, D + 1]`` (the item table and a log-popularity column).
    """
    log_pop = np.log1p(np.asarray(counts, np.float32))
    items = jnp.concatenate([jnp.asarray(item_table), jnp.asarray(log_pop)[:, None]], axis=1)
    warm = jnp.asarray(has_history, jnp.float32)
    return ev.Scorer(jax.tree_util.Partial(warm_or_popularity, jnp.asarray(user_table), warm), items)

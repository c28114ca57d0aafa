"""Joint training of one model on both domains: the config and training loop of the multi-domain recipes
(:mod:`jaxrec.methods.multidomain`, :mod:`jaxrec.methods.lightgcn`).

A joint model is called as ``model(batch, deterministic=...)`` on ``{source: ..., target: ..., **context}``
(the per-domain batches of :func:`~jaxrec.methods.common.domain_batches` plus inputs shared by every step, such
as a graph) and returns the per-domain records of :func:`~jaxrec.methods.common.pair_outputs`; its method
``tables(context, k)`` gives the scoring tables ``(users [U, D], items [N_k, D])`` of domain index ``k``
(0 = source, 1 = target). Training is BPR with uniformly drawn unseen negatives plus L2 on the batch's vectors
(:func:`~jaxrec.methods.common.bpr_objective`), Adam, and early stopping on the target's cold-user valid
NDCG@10 (full ranking) with the best parameters kept. An epoch is one pass over the larger domain.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

from jaxrec import checks
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset
from jaxrec.methods.common import (
    TASK_LOSSES,
    Trained,
    check_parallel,
    check_seed,
    domain_batches,
    fallback_scorer,
    has_history,
    task_objective,
    train_config,
    valid_evaluator,
)

__all__ = ["JointConfig", "fit_joint", "train_joint"]


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """Training hyper-parameters shared by every joint recipe (the defaults work on synthetic and Amazon data).

    Attributes:
      dim: embedding width D (user vectors, item vectors and the networks' output width).
      epochs: maximum epochs (an epoch = one pass over the larger domain).
      batch_size: positives per domain per step.
      n_negatives: uniformly drawn unseen negatives per positive.
      task_loss: the within-domain task loss: ``"bpr"`` (each positive against its ``n_negatives``),
        ``"softmax"`` (full softmax over the domain's catalogue; sampled softmax when batch × catalogue exceeds
        :data:`jaxrec.methods.retrieval.FULL_SOFTMAX_LIMIT`) or ``"sampled_softmax"`` (against the batch's
        ``batch_size × n_negatives`` shared negatives, logQ-corrected); see
        :func:`jaxrec.methods.retrieval.task_objective`.
      learning_rate: Adam learning rate.
      l2: L2 penalty on the batch's user and item vectors.
      patience: early stopping after this many epochs without a better cold-user valid NDCG@10.
      seed: parameters, data order and negatives.
      progress: tqdm bars.
      sparse_min_rows: embedding tables of at least this many rows are updated at the rows each batch looks up
        (lazy Adam; see :class:`jaxrec.train.TrainConfig`); None: every parameter densely.
      parallel: data parallelism of the train step (``"none"``, ``"pmap"``, ``"mesh"``; see
        :class:`jaxrec.methods.EmbeddingConfig`).
    """

    dim: int = 64
    epochs: int = 30
    batch_size: int = 1024
    n_negatives: int = 4
    task_loss: str = "bpr"
    learning_rate: float = 1e-2
    l2: float = 1e-2
    patience: int = 4
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS

    def __post_init__(self):
        check_parallel(self)
        owner = type(self).__name__
        for name in ("dim", "epochs", "batch_size", "n_negatives", "patience"):
            checks.positive_int(f"{owner}.{name}", getattr(self, name))
        checks.fraction(f"{owner}.learning_rate", self.learning_rate, high=math.inf, closed="neither")
        checks.fraction(f"{owner}.l2", self.l2, high=math.inf, closed="left")
        check_seed(f"{owner}.seed", self.seed)
        checks.choice(f"{owner}.task_loss", self.task_loss, TASK_LOSSES)


def _tables_fn(model: nn.Module) -> Callable:
    """Jitted ``(params, context, domain) -> (users [U, D], items [N_domain, D])``; compiles once per domain."""

    @functools.partial(jax.jit, static_argnums=2)
    def tables(params, context, domain):
        return model.apply({"params": params}, context, domain, method=type(model).tables)

    return tables


def _scorer(ds: CrossDomainDataset, domains: tuple[str, ...], domain: str, users, items) -> ev.Scorer:
    """Two-tower scorer of ``domain``; users without training history in any of ``domains`` get popularity."""
    return fallback_scorer(users, items, has_history(ds, domains), ds.item_popularity(domain))


def fit_joint(
    ds: CrossDomainDataset,
    model: nn.Module,
    *,
    source: str,
    target: str,
    config: JointConfig,
    context: Mapping[str, Any] | None = None,
) -> tuple[Any, list, Callable]:
    """Trains a joint ``model`` (see the module docstring) with BPR on ``(source, target)``, early-stopped on
    cold-user valid NDCG@10 of ``target``.

    Args:
      ds: the dataset.
      model: the joint model.
      source, target: the two domains (model indices 0 and 1).
      config: the hyper-parameters.
      context: inputs shared by every step, merged into each batch (e.g. ``{"graph": JointGraph}``); device
        arrays, not copied per step.

    Returns:
      ``(best params, history, tables)`` with ``tables(params, context, k)`` the jitted scoring tables.

    Raises:
      ValueError: a context key equal to a domain name.
    """
    domains = (source, target)
    context = dict(context or {})
    clash = sorted(set(context) & set(domains))
    if clash:
        raise ValueError(f"domain names {clash} clash with the model inputs {sorted(context)}; rename the domains")

    # -- data: joint batches of both domains, plus the shared inputs --
    domain_stream, steps_per_epoch = domain_batches(
        ds, domains, batch_size=config.batch_size, n_negatives=config.n_negatives
    )

    def batches(rng):
        for batch in domain_stream(rng):
            yield {**batch, **context}

    # -- evaluation: cold-user valid NDCG@10 (full ranking) of the target --
    tables = _tables_fn(model)
    valid = valid_evaluator(ds, source, target)
    evaluate = None
    if valid is not None:

        def evaluate(params):
            users, items = tables(params, context, 1)
            return valid(_scorer(ds, domains, target, users, items))

    # -- the loop: train.fit with the task objective --
    config_t = train_config(config, steps_per_epoch=steps_per_epoch, early_stopping=valid is not None)
    objective = task_objective(config.l2, config.task_loss)
    result = tr.fit(config_t, tr.Task(model, objective, batches, evaluate=evaluate, name="+".join(domains)))
    return result.best_params, result.history, tables


def train_joint(
    ds: CrossDomainDataset,
    model: nn.Module,
    *,
    source: str,
    target: str,
    config: JointConfig,
    context: Mapping[str, Any] | None = None,
) -> Trained:
    """:func:`fit_joint`, then a scorer for each of ``(source, target)``.

    Returns:
      ``Trained`` whose ``scorers[domain]`` are two-tower scorers over the model's tables, popularity for users
      without train history in either domain.
    """
    params, history, tables = fit_joint(ds, model, source=source, target=target, config=config, context=context)
    domains = (source, target)
    context = dict(context or {})
    scorers = {d: _scorer(ds, domains, d, *tables(params, context, k)) for k, d in enumerate(domains)}
    return Trained(scorers, params, history, config)

"""``history``: an inductive recipe — a cold user is *encoded* from their source history, not looked up.

The model (:class:`~jaxrec.methods.history_model.HistoryModel`) has one item table per domain, a
:class:`jaxrec.models.HistoryEncoder` (a Transformer over a user's item embeddings, mean or CLS pooling) shared
by both domains, and a :class:`jaxrec.models.TwoTower` whose user tower maps the history code and whose item
tower maps the item embeddings to the scoring space. The item tables are both the histories' inputs and the
scored items (tied).

A batch holds up to three groups of user rows (:data:`~jaxrec.methods.history_model.GROUPS`), each trained with
the same task loss (:mod:`jaxrec.methods.retrieval`: full softmax, sampled softmax with the logQ correction, or
BPR):

* ``"cross"`` — users with train history in both domains: their source history → their target train items.
  An epoch is one pass over these users.
* ``"source"`` — users with source history only (the target's cold users among them): a random half of their
  source items (at most ``positives``) predicted from the rest (weight ``source_weight``).
* ``"target"`` — users with target history only, the same within the target (weight ``target_weight``).

So every user trains the shared encoder, towers and item tables. With ``discrepancy``, a
:class:`jaxrec.models.SharedSpecificEncoder` (two domains) splits each code into a shared and a domain-specific
part (``"source"`` rows are encoded as domain 0, ``"target"`` rows from their target history as domain 1) and
``λ·D`` aligns the shared parts of the two groups: users of different domains, no link needed.

Scoring: a user with source train history is scored by ``u · v_i`` (``+ b_i`` with ``item_bias``), ``u =
user_tower(code(source history))`` (their :func:`~jaxrec.methods.padded_history`) and ``v_i`` the item tower's
output; everyone else by target popularity (:func:`~jaxrec.methods.common.fallback_scorer`). Early stopping on
valid, like every recipe.

Axis conventions: ``U`` users, ``N_k`` items of domain ``k`` (0 = source, 1 = target), ``B`` rows of a group,
``L`` history length (item id ``-1`` = padding), ``P`` positives per row (``-1`` = padding), ``K`` negatives
shared by a group, ``D`` width of the codes and of the scoring space.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from jaxrec import checks, losses, models
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CSR, CrossDomainDataset, DataError
from jaxrec.methods.common import (
    Trained,
    check_pair,
    check_parallel,
    fallback_scorer,
    has_history,
    train_config,
    valid_evaluator,
)
from jaxrec.methods.history_model import GROUPS, HistoryModel
from jaxrec.methods.mapping import padded_history, sample_rows
from jaxrec.methods.retrieval import (
    SAMPLING,
    TASK_LOSSES,
    bpr_loss,
    full_softmax_loss,
    negative_log_q,
    sample_negatives,
    sampled_softmax_loss,
)

__all__ = [
    "HistoryConfig",
    "group_batches",
    "history_batches",
    "history_objective",
    "history_scorer",
    "holdout_rows",
    "initial_params",
    "train_history",
]


@dataclasses.dataclass(frozen=True)
class HistoryConfig:
    """Hyper-parameters of ``history``.

    Attributes:
      dim: D, the width of the item embeddings, of the codes and of the scoring space.
      history_length: L, items of a history fed to the encoder (longer ones: a random subset).
      pooling: the encoder's pooling, ``"mean"`` over the positions or ``"cls"`` (a learned token).
      num_layers, num_heads: the encoder's Transformer blocks and attention heads (``dim % num_heads == 0``).
      dropout_rate: dropout inside the encoder during training.
      tower_hidden: hidden widths of the two towers (their last layer, of width ``dim``, is linear).
      task_loss: ``"softmax"`` (full softmax over the catalogue), ``"sampled_softmax"`` (logQ-corrected) or
        ``"bpr"`` (see :mod:`jaxrec.methods.retrieval`).
      n_negatives: K, negatives shared by a group's rows per step (``sampled_softmax`` and ``bpr``).
      sampling: how negatives are drawn: ``"uniform"`` or ``"popularity"`` (∝ train count + 1).
      positives: P, positive items per row and step (a fresh random subset when a user has more).
      source_weight: weight of the within-source objective of the source-only users (0: not trained).
      target_weight: weight of the within-target objective of the target-only users (0: not trained).
      discrepancy: alignment term on the shared codes of the source-only and target-only rows (a name of
        ``losses.DISCREPANCIES`` or None: no shared/specific split).
      discrepancy_options: keyword options of the alignment term (``losses.get_discrepancy``).
      lam: λ of the alignment term (for ``"adversarial"``: the maximum of the DANN ramp).
      align_size: rows of each group the alignment term sees per step.
      epochs: maximum epochs (an epoch = one pass over the users with history in both domains).
      batch_size: rows of the ``"cross"`` group per step.
      side_batch_size: rows of each of the ``"source"`` and ``"target"`` groups per step (more users than the
        ``"cross"`` group, which would otherwise be learnt by heart long before the single-domain users are seen).
      learning_rate: Adam learning rate.
      item_bias: add a learned bias per item to the scores, initialized at the centred log(1 + train count).
      l2: weight of the mean squared norms of each group's user vectors and of the item vectors it scores (all
        items for ``"softmax"``, the positives and negatives otherwise).
      patience: early stopping after this many epochs without a better valid NDCG@10 (cold users).
      seed: parameters, data order, histories and negatives.
      progress: tqdm bars.
      sparse_min_rows: embedding tables of at least this many rows are updated at the rows each batch looks up
        (lazy Adam; see :class:`jaxrec.train.TrainConfig`); None: every parameter densely.
      parallel: data parallelism of the train step (``"none"``, ``"pmap"``, ``"mesh"``; see
        :class:`jaxrec.methods.EmbeddingConfig`); ``batch_size``, ``side_batch_size`` and ``n_negatives`` must
        divide by the device count.
    """

    dim: int = 64
    history_length: int = 20
    pooling: str = "mean"
    num_layers: int = 1
    num_heads: int = 4
    dropout_rate: float = 0.2
    tower_hidden: tuple[int, ...] = ()
    task_loss: str = "softmax"
    n_negatives: int = 256
    sampling: str = "uniform"
    positives: int = 16
    source_weight: float = 1.0
    target_weight: float = 1.0
    discrepancy: str | None = None
    discrepancy_options: Mapping[str, Any] | None = None
    lam: float = 0.0
    align_size: int = 256
    epochs: int = 40
    batch_size: int = 128
    side_batch_size: int = 1024
    learning_rate: float = 3e-3
    item_bias: bool = False
    l2: float = 0.0
    patience: int = 5
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS

    def __post_init__(self):
        check_parallel(self)
        positive = ("dim", "history_length", "num_layers", "num_heads", "n_negatives", "positives")
        for name in positive + ("align_size", "epochs", "batch_size", "side_batch_size", "patience"):
            checks.positive_int(f"HistoryConfig.{name}", getattr(self, name))
        checks.positive_ints("HistoryConfig.tower_hidden", self.tower_hidden, allow_empty=True)
        checks.choice("HistoryConfig.task_loss", self.task_loss, TASK_LOSSES)
        checks.choice("HistoryConfig.sampling", self.sampling, SAMPLING)
        checks.fraction("HistoryConfig.learning_rate", self.learning_rate, high=math.inf, closed="neither")
        for name in ("source_weight", "target_weight", "lam", "l2"):
            checks.fraction(f"HistoryConfig.{name}", getattr(self, name), high=math.inf, closed="left")
        if self.discrepancy_options is not None:
            object.__setattr__(self, "discrepancy_options", FrozenDict(self.discrepancy_options))
        tr.resolve_discrepancy(self.discrepancy, self.discrepancy_options)
        models.HistoryEncoder(  # validates pooling, dropout_rate and the heads
            None,
            self.history_length,
            self.dim,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            dropout_rate=self.dropout_rate,
            pooling=self.pooling,
        )


# ----------------------------------------------------------------------------------------------------------------
# Data, objective, scorer
# ----------------------------------------------------------------------------------------------------------------


def holdout_rows(
    seen: CSR, users: np.ndarray, *, history_length: int, positives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Splits each user's items at random into positives and a history (the within-domain task).

    Of a user's ``n`` items (at most ``history_length + positives`` of them, a random subset), ``min(positives,
    n // 2)`` are positives and the others the history; a user with one item has no positive.

    Returns:
      ``(history int32 [R, history_length], positives int32 [R, positives])``, ``-1`` where padded.
    """
    width = history_length + positives
    picks = sample_rows(seen, users, width, rng)  # a random order, then -1
    n = np.minimum(seen.lengths[users], width)
    k = np.minimum(positives, n // 2)
    pos = np.where(np.arange(positives)[None, :] < k[:, None], picks[:, :positives], -1)
    col = k[:, None] + np.arange(history_length)[None, :]
    hist = np.where(col < n[:, None], np.take_along_axis(picks, np.minimum(col, width - 1), axis=1), -1)
    return hist.astype(np.int32), pos.astype(np.int32)


def _group_users(ds: CrossDomainDataset, source: str, target: str, config: HistoryConfig) -> dict[str, np.ndarray]:
    """The users of each trained group (see the module docstring)."""
    n_src, n_tgt = ds.seen(source, "train").lengths, ds.seen(target, "train").lengths
    groups = {"cross": np.flatnonzero((n_src > 0) & (n_tgt > 0))}
    if groups["cross"].size == 0:
        raise DataError(f"history needs users with train history in both {source!r} and {target!r}; there are none")
    if config.source_weight > 0 or config.discrepancy is not None:
        groups["source"] = np.flatnonzero((n_src >= 2) & (n_tgt == 0))
    if config.target_weight > 0 or config.discrepancy is not None:
        groups["target"] = np.flatnonzero((n_tgt >= 2) & (n_src == 0))
    empty = sorted(g for g, users in groups.items() if users.size == 0)
    if empty and config.discrepancy is not None:
        raise DataError(f"history's discrepancy needs source-only and target-only users; group(s) {empty} are empty")
    return {g: users for g, users in groups.items() if users.size}


def group_batches(
    groups: Mapping[str, np.ndarray], sizes: Mapping[str, int], steps: int, rows_of: Callable
) -> Callable[[np.random.Generator], Any]:
    """``batches(rng)`` over groups of users: per step, ``{group: rows_of(group, users [sizes[group]], rng)}``.

    The ``"cross"`` group goes once through a permutation of its users per epoch (``steps`` steps, the last one
    short); every other group through as many fresh permutations of its users as the epoch needs.
    """

    def batches(rng: np.random.Generator):
        orders = {"cross": rng.permutation(groups["cross"])}
        for g, users in groups.items():
            if g != "cross":  # enough fresh permutations for every step
                orders[g] = np.concatenate([rng.permutation(users) for _ in range(-(-steps * sizes[g] // users.size))])
        for i in range(steps):
            yield {g: rows_of(g, order[i * sizes[g] : (i + 1) * sizes[g]], rng) for g, order in orders.items()}

    return batches


def history_batches(
    ds: CrossDomainDataset, source: str, target: str, config: HistoryConfig
) -> tuple[Callable[[np.random.Generator], Any], int, tuple[str, ...]]:
    """The training batches of ``history``, the number of steps in an epoch and the groups of a batch.

    Returns:
      ``(batches, steps_per_epoch, groups)``: ``batches(rng)`` yields ``{group: {"history" int32 [B, L], "positives"
      int32 [B, P], "mask" bool [B, P], "rows" bool [B]}}`` (B: ``batch_size`` for ``"cross"``, else
      ``side_batch_size``; plus ``"negatives" int32 [K]``, ``"neg_log_q" float32 [K]`` and ``"pos_log_q" float32
      [B, P]`` for the sampled losses), the same shapes at every step;
      the ``"cross"`` rows go once through their users per epoch, the other groups through a fresh permutation
      of theirs.
    """
    seen = (ds.seen(source, "train"), ds.seen(target, "train"))
    groups = _group_users(ds, source, target, config)
    length, positives = config.history_length, config.positives
    sizes = {g: config.batch_size if g == "cross" else config.side_batch_size for g in groups}
    steps = -(-groups["cross"].size // sizes["cross"])
    sampled = config.task_loss != "softmax"
    log_q = [negative_log_q(ds.item_popularity(d), config.sampling) for d in (source, target)]

    def rows_of(group: str, users: np.ndarray, rng: np.random.Generator) -> dict:
        real, size = users.shape[0], sizes[group]
        users = np.concatenate([users, np.zeros(size - real, users.dtype)])
        hk, sk = GROUPS[group]
        if group == "cross":
            hist, pos = sample_rows(seen[0], users, length, rng), sample_rows(seen[1], users, positives, rng)
        else:
            hist, pos = holdout_rows(seen[hk], users, history_length=length, positives=positives, rng=rng)
        rows = np.arange(size) < real
        out = {"history": np.where(rows[:, None], hist, -1), "positives": pos, "mask": (pos >= 0) & rows[:, None]}
        out["rows"] = rows
        if sampled:
            out["negatives"], out["neg_log_q"] = sample_negatives(rng, log_q[sk], config.n_negatives)
            out["pos_log_q"] = np.where(pos >= 0, log_q[sk][np.maximum(pos, 0)], 0.0).astype(np.float32)
        return out

    return group_batches(groups, sizes, steps, rows_of), steps, tuple(groups)


def _group_loss(task_loss: str, l2: float, out: dict, b: dict) -> jax.Array:
    """One group's task loss plus ``l2`` × the mean squared norms of its user and item vectors."""
    mask, rows = out["mask"], out["mask"].any(-1)
    user_sq = losses.mean_where(jnp.sum(out["user"] ** 2, -1), where=rows)
    if task_loss == "softmax":
        loss = full_softmax_loss(out["pos"], out["logits"], mask)
        return loss + l2 * (user_sq + jnp.mean(jnp.sum(out["items"] ** 2, -1)))
    ids = {"pos_ids": b["positives"], "neg_ids": b["negatives"]}
    if task_loss == "bpr":
        loss = bpr_loss(out["pos"], out["neg"], mask, **ids)
    else:
        q = {"pos_log_q": b["pos_log_q"], "neg_log_q": b["neg_log_q"]}
        loss = sampled_softmax_loss(out["pos"], out["neg"], mask, **q, **ids)
    item_sq = losses.mean_where(jnp.sum(out["pos_items"] ** 2, -1), where=mask)
    return loss + l2 * (user_sq + item_sq + jnp.mean(jnp.sum(out["neg_items"] ** 2, -1)))


def history_objective(config: HistoryConfig, groups, *, total_steps: int) -> tr.Objective:
    """The task loss of ``config.task_loss`` (+ ``config.l2`` × the mean squared norms of the user vectors and of
    the item vectors it scores) on each of ``groups`` (the batch's), weighted 1 (``"cross"``),
    ``source_weight`` and ``target_weight`` (a group of weight 0 is only aligned); plus ``λ·D`` of
    ``config.discrepancy`` (:func:`jaxrec.train.alignment`).
    """
    weights = {"cross": 1.0, "source": config.source_weight, "target": config.target_weight}
    weights = {g: weights[g] for g in GROUPS if g in groups and weights[g] > 0}

    def task_loss(outputs, batch):
        return {g: _group_loss(config.task_loss, config.l2, outputs[g], batch[g]) for g in weights}

    terms = tr.alignment(config.discrepancy, config.lam, total_steps=total_steps, options=config.discrepancy_options)
    return tr.Objective(task_loss, weights=weights, **terms)


def _encode(fn: Callable, params, history: np.ndarray, *, dim: int, chunk: int = 1024) -> np.ndarray:
    """``[R, D]`` vectors ``fn(params, history rows)``, in fixed-size chunks (one compilation)."""
    out = np.zeros((history.shape[0], dim), np.float32)
    for lo in range(0, history.shape[0], chunk):
        rows = history[lo : lo + chunk]
        padded = np.concatenate([rows, np.full((chunk - rows.shape[0], rows.shape[1]), -1, rows.dtype)])
        out[lo : lo + rows.shape[0]] = np.asarray(fn(params, padded))[: rows.shape[0]]
    return out


def history_scorer(model: HistoryModel, ds: CrossDomainDataset, source: str, target: str, history: np.ndarray):
    """``scorer(params, users=None) -> evaluate.Scorer`` of ``target`` for a trained :class:`HistoryModel`.

    Args:
      model: the model; ds: its dataset; source, target: its domains.
      history: ``int32 [U, L]`` every user's source history (:func:`~jaxrec.methods.padded_history`).

    Returns:
      A function of the parameters: users with source train history (only those of ``users`` when given, to
      evaluate a few quickly) get the scores ``u · v_i + b_i`` of their encoded vector
      (:meth:`~jaxrec.methods.history_model.HistoryModel.scoring_tables`), the others target popularity.
    """
    has_src = has_history(ds, (source,))
    tables = jax.jit(lambda p, h: model.apply({"params": p}, h, method=HistoryModel.scoring_tables))
    vectors = lambda p, h: tables(p, h)[0]  # noqa: E731

    def scorer(params, users: np.ndarray | None = None) -> ev.Scorer:
        encoded = np.zeros(ds.n_users, bool)
        encoded[np.flatnonzero(has_src) if users is None else np.asarray(users)[has_src[users]]] = True
        table = np.zeros((ds.n_users, model.dim + 1), np.float32)
        table[encoded] = _encode(vectors, params, history[encoded], dim=model.dim + 1)
        items = tables(params, history[:1])[1]
        return fallback_scorer(table, items, encoded, ds.item_popularity(target))

    return scorer


def initial_params(model: HistoryModel, batch, ds: CrossDomainDataset, domains: tuple[str, str], seed: int):
    """Fresh parameters of ``model`` (initialized on ``batch``); with ``model.biased``, its item biases start at
    the centred ``log(1 + train count)`` of each domain's items: popularity from the first step, where Adam would
    need hundreds of steps to move a bias that far. (Without item biases, ``train.fit`` initializes the model.)"""
    params = dict(jax.jit(model.init)(jax.random.key(seed), batch)["params"])
    if model.biased:
        for k, domain in enumerate(domains):
            log_pop = np.log1p(ds.item_popularity(domain).astype(np.float32))
            params[f"item_bias_{k}"] = jnp.asarray(log_pop - log_pop.mean())
    return params


# ----------------------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------------------


def train_history(
    ds: CrossDomainDataset, *, source: str, target: str, config: HistoryConfig = HistoryConfig()
) -> Trained:
    """Encodes every user from their history (source history for the target's cold users), trained on all users.

    Transfers: the history encoder, the towers and the source item table, trained on the ``"cross"`` users to
    predict their target items from their source history, and on the single-domain users within their domain
    (see the module docstring). Early-stopped on the valid cold users' NDCG@10 (full ranking).
    Defaults: :class:`HistoryConfig`.
    """
    check_pair(ds, source, target)
    batches, steps, groups = history_batches(ds, source, target, config)
    model = HistoryModel(
        (ds.n_items(source), ds.n_items(target)),
        config.dim,
        config.history_length,
        config.pooling,
        config.num_layers,
        config.num_heads,
        config.dropout_rate,
        tuple(config.tower_hidden),
        full_softmax=config.task_loss == "softmax",
        biased=config.item_bias,
        align=config.discrepancy is not None,
        adversarial=config.discrepancy == "adversarial",
        align_size=config.align_size,
    )
    history = padded_history(ds, source, length=config.history_length, seed=config.seed)
    scorer = history_scorer(model, ds, source, target, history)
    valid = valid_evaluator(ds, source, target)
    evaluate = None
    if valid is not None:
        valid_users = ds.users_with(target, "valid")
        evaluate = lambda params: valid(scorer(params, valid_users))  # noqa: E731
    objective = history_objective(config, groups, total_steps=steps * config.epochs)
    config_t = train_config(config, steps_per_epoch=steps, early_stopping=valid is not None)
    init = None  # train.fit initializes the model
    if model.biased:
        init = initial_params(model, next(iter(batches(np.random.default_rng(0)))), ds, (source, target), config.seed)
    task = tr.Task(model, objective, batches, evaluate=evaluate, init_params=init, name="history")
    result = tr.fit(config_t, task)
    return Trained({target: scorer(result.best_params)}, result.best_params, result.history, config)

"""``ptupcdr``: a personalised bridge from the source history, trained on the target task.

PTUPCDR (Zhu et al., "Personalized Transfer of User Preferences for Cross-domain Recommendation", WSDM 2022)
transfers a **personalised bridge**: a meta network reads the user's source item history (pretrained source
item embeddings, attention-pooled) and emits a ``[D, D]`` matrix per user; the mapped vector ``u_s W_u`` is
trained *task-oriented*: it must rank the overlapping users' target train items above sampled negatives (BPR or
sampled softmax), not merely regress an embedding. The pretrained tables are frozen by ``jax.lax.stop_gradient``
inside the model: their gradient is exactly zero, so Adam (with no decoupled weight decay) leaves them
bit-for-bit unchanged.

Axis conventions: ``U`` users, ``N`` items of one domain, ``B`` users of a batch, ``P`` target positives per
user, ``n`` negatives per positive, ``D`` embedding width, ``L`` history length (item id ``-1`` = padding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import batching, checks, losses, models
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset, DataError
from jaxrec.methods.common import (
    TASK_LOSSES,
    Trained,
    check_pair,
    check_parallel,
    check_seed,
    create_every_table,
    fallback_scorer,
    has_history,
    tag_phase,
    train_config,
    valid_evaluator,
)
from jaxrec.methods.mapping import padded_history, pretrain, sample_rows

__all__ = ["PTUPCDRConfig", "train_ptupcdr"]


def _bpr_task(pos, neg, mask):
    return losses.mean_where(losses.bpr(pos, neg, where=mask), where=mask)


def _softmax_task(pos, neg, mask):
    return losses.mean_where(losses.sampled_softmax(pos, neg, where=mask), where=mask)


#: The task losses of the meta network: ``(pos [R], neg [R, n], mask [R]) -> scalar``.
_TASK_LOSSES = {"bpr": _bpr_task, "softmax": _softmax_task}


@dataclasses.dataclass(frozen=True)
class PTUPCDRConfig:
    """Hyper-parameters of ``ptupcdr``.

    Attributes:
      dim, epochs, batch_size, n_negatives, task_loss, learning_rate, l2: pretraining of each domain's MF, as
        in :class:`~jaxrec.methods.EMCDRConfig`.
      history_length: source items per user fed to the meta network (L; longer histories are subsampled once,
        with ``seed``; shorter ones padded).
      attention_hidden: hidden width of the characteristic encoder's attention network.
      meta_hidden: hidden widths of the meta network that emits the ``[D, D]`` bridge.
      loss: task-oriented loss of the mapped vectors on the overlapping users' target items: ``"bpr"`` or
        ``"softmax"`` (sampled softmax over the positive and its negatives).
      meta_epochs: maximum epochs of the meta network (an epoch = one pass over the overlapping users).
      meta_batch_size: overlapping users per meta step.
      meta_positives: target train items per user and epoch (P; a fresh random subset when the user has more).
      meta_negatives: uniform unseen negatives per target positive in meta training.
      meta_learning_rate: Adam learning rate of the meta network.
      patience: meta training stops after this many epochs without a better valid cold-user NDCG@10.
      seed, progress, parallel, sparse_min_rows: as in :class:`~jaxrec.methods.EMCDRConfig`.
    """

    dim: int = 64
    epochs: int = 5
    batch_size: int = 1024
    n_negatives: int = 4
    task_loss: str = "bpr"
    learning_rate: float = 1e-2
    l2: float = 0.03
    history_length: int = 20
    attention_hidden: int = 64
    meta_hidden: tuple[int, ...] = (64,)
    loss: str = "softmax"
    meta_epochs: int = 10
    meta_batch_size: int = 256
    meta_positives: int = 10
    meta_negatives: int = 4
    meta_learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS

    def __post_init__(self):
        check_parallel(self)
        positive = ("dim", "epochs", "batch_size", "n_negatives", "history_length", "attention_hidden")
        positive += ("meta_epochs", "meta_batch_size", "meta_positives", "meta_negatives", "patience")
        for name in positive:
            checks.positive_int(f"PTUPCDRConfig.{name}", getattr(self, name))
        for name in ("learning_rate", "meta_learning_rate"):
            checks.fraction(f"PTUPCDRConfig.{name}", getattr(self, name), high=math.inf, closed="neither")
        checks.fraction("PTUPCDRConfig.l2", self.l2, high=math.inf, closed="left")
        check_seed("PTUPCDRConfig.seed", self.seed)
        checks.choice("PTUPCDRConfig.task_loss", self.task_loss, TASK_LOSSES)
        if self.loss not in _TASK_LOSSES:
            raise ValueError(f"unknown PTUPCDRConfig.loss {self.loss!r}; valid losses: {sorted(_TASK_LOSSES)}")
        models.PTUPCDRMeta(dim=self.dim, attention_hidden=self.attention_hidden, meta_hidden=self.meta_hidden)


class _BridgeModel(nn.Module):
    """Frozen pretrained tables + the trainable PTUPCDR meta network.

    Parameters: ``embed`` (a :class:`models.CrossDomainEmbedding`: ``user_table`` = source user embeddings,
    ``items_0`` = source items, ``items_1`` = target items; all behind ``stop_gradient``) and ``meta``.

    ``__call__(batch)`` takes user rows ``{"users" [B], "history" [B, L], "items" [B, P], "negatives" [B, P, n],
    "mask" [B, P]}`` (P target positives per user, ``-1`` / False where padded) and returns
    ``{"pos" [B·P], "neg" [B·P, n], "mask" [B·P]}``.
    """

    n_users: int
    n_items: tuple[int, int]  # (source, target)
    dim: int
    attention_hidden: int = 64
    meta_hidden: tuple[int, ...] = (64,)

    def setup(self):
        self.embed = models.CrossDomainEmbedding(self.n_users, tuple(self.n_items), self.dim)
        self.meta = models.PTUPCDRMeta(self.dim, self.attention_hidden, tuple(self.meta_hidden))

    def mapped(self, users: jax.Array, history: jax.Array) -> jax.Array:
        """``[B, D]`` target-space vectors of ``users`` [B] from their source ``history`` [B, L] (ids, ``-1`` pad)."""
        if users.ndim != 1 or history.ndim != 2 or history.shape[0] != users.shape[0]:
            raise ValueError(
                f"expected users [batch] and history [batch, length], got {users.shape} and {history.shape}"
            )
        u = jax.lax.stop_gradient(self.embed.users(users))
        h = jax.lax.stop_gradient(self.embed.items(history, 0))
        return self.meta(u, h, history >= 0)

    def __call__(self, batch, *, deterministic: bool = True):
        del deterministic
        create_every_table(self, self.embed)
        items, negatives = batch["items"], batch["negatives"]
        if items.ndim != 2 or negatives.shape[:2] != items.shape or negatives.ndim != 3:
            raise ValueError(f"expected items [B, P] and negatives [B, P, n], got {items.shape} and {negatives.shape}")
        u = self.mapped(batch["users"], batch["history"])
        pos = jax.lax.stop_gradient(self.embed.items(items, 1))
        neg = jax.lax.stop_gradient(self.embed.items(negatives, 1))
        n = negatives.shape[-1]
        return {
            "pos": jnp.einsum("bd,bpd->bp", u, pos).reshape(-1),
            "neg": jnp.einsum("bd,bpnd->bpn", u, neg).reshape(-1, n),
            "mask": batch["mask"].reshape(-1),
        }


def _with_tables(params, users, src_items, tgt_items):
    """``params`` with the pretrained tables in place of the initial ``embed`` tables."""
    embed = dict(params["embed"])
    embed["user_table"] = {"embedding": jnp.asarray(users)}
    embed["items_0"] = {"embedding": jnp.asarray(src_items)}
    embed["items_1"] = {"embedding": jnp.asarray(tgt_items)}
    return {**params, "embed": embed}


def _bridge_vectors(fn, params, users: np.ndarray, history: np.ndarray, *, dim: int, chunk: int = 1024):
    """``[len(users), D]`` mapped vectors ``fn(params, users, history)``, in fixed-size chunks (one compilation)."""
    out = np.zeros((users.shape[0], dim), np.float32)
    for lo in range(0, users.shape[0], chunk):
        u = users[lo : lo + chunk]
        u_pad = np.concatenate([u, np.zeros(chunk - u.shape[0], u.dtype)]).astype(np.int32)
        out[lo : lo + u.shape[0]] = np.asarray(fn(params, u_pad, history[u_pad]))[: u.shape[0]]
    return out


def _user_batches(users, history, seen_target, sampler, *, batch_size, positives, negatives, rng):
    """One epoch over ``users`` (shuffled): each row a user, their source history and up to ``positives`` of their
    target train items (a fresh random subset every epoch) with ``negatives`` uniform unseen negatives each."""
    order = rng.permutation(users)
    for lo in range(0, order.shape[0], batch_size):
        u = order[lo : lo + batch_size]
        real = u.shape[0]
        u = np.concatenate([u, np.zeros(batch_size - real, u.dtype)]).astype(np.int32)
        items = sample_rows(seen_target, u, positives, rng)
        mask = (items >= 0) & (np.arange(batch_size) < real)[:, None]
        neg = sampler(rng, np.repeat(u, positives), negatives).reshape(batch_size, positives, negatives)
        yield {"users": u, "history": history[u], "items": items, "negatives": neg, "mask": mask}


def _meta_batches(ds: CrossDomainDataset, target: str, overlap: np.ndarray, history: np.ndarray, config):
    """``(batches(rng), steps_per_epoch)`` of meta training: one pass over the overlapping users per epoch."""
    seen_target = ds.seen(target, "train")
    sampler = batching.NegativeSampler(ds.n_items(target), seen=seen_target)
    batch_size = min(config.meta_batch_size, overlap.size)

    def batches(rng):
        return _user_batches(
            overlap,
            history,
            seen_target,
            sampler,
            batch_size=batch_size,
            positives=config.meta_positives,
            negatives=config.meta_negatives,
            rng=rng,
        )

    return batches, -(-overlap.size // batch_size)


def _meta_objective(target: str, loss: str) -> tr.Objective:
    task_loss = _TASK_LOSSES[loss]

    def objective(outputs, batch):
        del batch
        return {target: task_loss(outputs["pos"], outputs["neg"], outputs["mask"])}

    return tr.Objective(objective)


def _bridge_scorer(ds, target, model, history, tgt_users, tgt_items, cold, has_any, dim) -> Callable:
    """``params -> Scorer``: cold users by their bridged source vector, the others by their target vector (or
    popularity without any history)."""
    mapped_fn = jax.jit(lambda p, u, h: model.apply({"params": p}, u, h, method=_BridgeModel.mapped))

    def scorer(params) -> ev.Scorer:
        table = tgt_users.copy()
        if cold.size:
            table[cold] = _bridge_vectors(mapped_fn, params, cold, history, dim=dim)
        return fallback_scorer(table, tgt_items, has_any, ds.item_popularity(target))

    return scorer


def train_ptupcdr(
    ds: CrossDomainDataset, *, source: str, target: str, config: PTUPCDRConfig = PTUPCDRConfig()
) -> Trained:
    """PTUPCDR (Zhu et al., WSDM 2022): a meta network maps each user's source history to a personal bridge.

    Transfers: per-user bridges ``W_u = meta(Σ_j a_j e_j)`` (``e_j`` the pretrained source embeddings of the
    user's source items, at most ``history_length`` of them, ``a_j`` attention weights), applied to the
    pretrained source user embedding: ``u_target = u_source W_u``. Trained task-oriented on the overlapping
    users' *target train items*: the mapped vector must rank each positive above ``meta_negatives`` uniform
    unseen negatives against the frozen pretrained target items (BPR or sampled softmax); an epoch visits every
    overlapping user once with up to ``meta_positives`` of their target items (so the bridge is computed once
    per user and step). Early-stopped on the valid cold users' NDCG@10. Frozen: both pretrained BPR-MF models;
    trained: the attention and meta networks.

    Scoring: cold users by ``u_source W_u``, users with target history by their target embedding, others by
    popularity.
    """
    check_pair(ds, source, target)
    has_src, has_tgt = has_history(ds, (source,)), has_history(ds, (target,))
    overlap = np.flatnonzero(has_src & has_tgt)
    if overlap.size == 0:
        raise DataError(f"ptupcdr needs users with train history in both {source!r} and {target!r}; there are none")

    # -- pretraining: BPR-MF on each domain alone --
    src_users, src_items, src_hist = pretrain(ds, source, config)
    tgt_users, tgt_items, tgt_hist = pretrain(ds, target, config)

    # -- data: overlapping users, their padded source history, target positives and negatives --
    history = padded_history(ds, source, length=config.history_length, seed=config.seed)
    batches, steps = _meta_batches(ds, target, overlap, history, config)

    # -- model: pretrained tables (frozen) + a fresh meta network --
    model = _BridgeModel(
        ds.n_users, (ds.n_items(source), ds.n_items(target)), config.dim, config.attention_hidden, config.meta_hidden
    )
    sample = next(iter(batches(np.random.default_rng(0))))
    init = jax.jit(model.init)(jax.random.key(config.seed), sample)["params"]
    init = _with_tables(init, src_users, src_items, tgt_items)

    # -- scorer, validation and training --
    cold = np.flatnonzero(has_src & ~has_tgt)
    scorer = _bridge_scorer(ds, target, model, history, tgt_users, tgt_items, cold, has_src | has_tgt, config.dim)
    valid = valid_evaluator(ds, source, target)
    config_t = train_config(
        config,
        epochs=config.meta_epochs,
        learning_rate=config.meta_learning_rate,
        steps_per_epoch=steps,
        early_stopping=valid is not None,
    )
    task = tr.Task(
        model,
        _meta_objective(target, config.loss),
        batches,
        evaluate=None if valid is None else (lambda p: valid(scorer(p))),
        init_params=init,
        name="ptupcdr meta",
    )
    result = tr.fit(config_t, task)
    history_log = tag_phase(src_hist, f"pretrain {source}") + tag_phase(tgt_hist, f"pretrain {target}")
    history_log += tag_phase(result.history, "meta")
    return Trained({target: scorer(result.best_params)}, result.best_params, history_log, config)

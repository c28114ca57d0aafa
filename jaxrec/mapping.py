"""Transfer by mapping: ``emcdr``, ``ptupcdr`` and ``finetune`` — pretrain, then carry users across domains.

Every recipe has the :mod:`jaxrec.methods` signature ``train(ds, *, source, target, config) -> methods.Trained``
and is listed in :data:`RECIPES` (merged into ``methods.METHODS``). ``Trained.scorers[target]`` ranks the target
items for every user: users with target train history by their target vector, cold users (source history only)
by the transferred vector, users with neither by popularity (``methods._fallback_scorer``).

* ``emcdr`` (Man et al., "Cross-Domain Recommendation: An Embedding and Mapping Approach", IJCAI 2017) —
  transfers a **mapping of user embeddings**: BPR-MF is pretrained on each domain alone, then a linear map
  (default) or an MLP ``f`` is fitted on the overlapping users (train history in both domains) to regress the
  target embedding from the source embedding (MSE, :func:`fit_mapping`). A cold user's target vector is
  ``f(source vector)``, ranked against the pretrained target items.
* ``ptupcdr`` (Zhu et al., "Personalized Transfer of User Preferences for Cross-domain Recommendation",
  WSDM 2022) — transfers a **personalized bridge**: a meta network reads the user's source item history
  (pretrained source item embeddings, attention-pooled) and emits a ``[dim, dim]`` matrix per user; the mapped
  vector ``u_s W_u`` is trained *task-oriented*: it must rank the overlapping users' target train items above
  sampled negatives (BPR or sampled softmax), not merely regress an embedding. The pretrained tables are frozen.
* ``finetune`` — transfers the **user embeddings themselves**: a shared-embedding BPR model is pretrained on the
  source (or on both domains), then fine-tuned on the target with the user table and the source items frozen,
  so only the target item table learns; cold users keep their source-trained embedding, which lives in the
  space the target items were fitted to.

Axis conventions in this file: ``U`` = users of the shared id space, ``N`` = items of one domain, ``B`` = rows of
a batch (users, or user–item pairs), ``D`` = embedding width, ``L`` = history length (padded with item id
``-1``), ``n`` = negatives per positive.

Frozen parameters are frozen by ``jax.lax.stop_gradient`` inside the model: their gradient is exactly zero, so
Adam (with no decoupled weight decay) leaves them bit-for-bit unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import batching, losses, methods, models
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CSR, CrossDomainDataset, DataError

__all__ = [
    "EMCDRConfig",
    "PTUPCDRConfig",
    "FinetuneConfig",
    "fit_mapping",
    "padded_history",
    "train_emcdr",
    "train_ptupcdr",
    "train_finetune",
    "RECIPES",
]

# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------


def _check_positive(config, names: Sequence[str]):
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{type(config).__name__}.{name}={value} must be >= 1")


def _check_rates(config, names: Sequence[str]):
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name}={value} must be > 0")


@dataclasses.dataclass(frozen=True)
class EMCDRConfig:
    """Hyper-parameters of ``emcdr``.

    Defaults chosen on Amazon Game→Video *valid* cold users (sampled NDCG@10, 5 pretraining epochs): strong L2
    in pretraining (MLP mapping: 0.028 at ``l2=1e-4``, where BPR-MF memorizes users with ~6 interactions; 0.035
    at 0.03) and the paper's linear mapping (0.042–0.043 at 0.03 with a mapping learning rate of 1e-2 or 1e-3);
    the tanh MLP stays available with ``linear=False``. On the embedded synthetic data the same defaults reach
    full NDCG@10 0.28 on cold users (popularity 0.14); 1e-2 lets the linear map converge when there are few
    overlapping users (few steps per epoch).

    Attributes:
      dim: embedding width D of both pretrained BPR-MF models.
      epochs: pretraining epochs of each domain's BPR-MF (fixed: cold users have no target history to stop on).
      batch_size: positives per pretraining step.
      n_negatives: uniform negatives per positive in pretraining.
      learning_rate: Adam learning rate of pretraining.
      l2: L2 penalty on the batch's embeddings in pretraining.
      hidden: hidden widths of the MLP mapping (tanh, as in the paper); ignored when ``linear``.
      linear: the paper's linear mapping ``u_s M`` instead of the MLP.
      map_epochs: maximum epochs of the mapping (an epoch = one pass over the overlapping users).
      map_batch_size: overlapping users per mapping step.
      map_learning_rate: Adam learning rate of the mapping.
      patience: the mapping stops after this many epochs without a better valid cold-user NDCG@10.
      seed: parameters, data order and negatives.
      progress: tqdm bars.
      parallel: data parallelism of the embedding training steps (``"none"``, ``"pmap"``, ``"mesh"``; see
        :class:`jaxrec.methods.EmbeddingConfig`). The small mapping network always trains on one device.
    """

    dim: int = 64
    epochs: int = 5
    batch_size: int = 1024
    n_negatives: int = 4
    learning_rate: float = 1e-2
    l2: float = 0.03
    hidden: tuple[int, ...] = (128,)
    linear: bool = True
    map_epochs: int = 100
    map_batch_size: int = 256
    map_learning_rate: float = 1e-2
    patience: int = 5
    seed: int = 0
    progress: bool = True
    parallel: str = "none"

    def __post_init__(self):
        methods.check_parallel(self)
        _check_positive(
            self, ("dim", "epochs", "batch_size", "n_negatives", "map_epochs", "map_batch_size", "patience")
        )
        _check_rates(self, ("learning_rate", "map_learning_rate"))
        if self.l2 < 0:
            raise ValueError(f"EMCDRConfig.l2={self.l2} must be >= 0")
        models.EMCDRMapping(hidden=self.hidden)  # validates the widths


@dataclasses.dataclass(frozen=True)
class PTUPCDRConfig:
    """Hyper-parameters of ``ptupcdr``.

    Defaults chosen on Amazon Game→Video *valid* cold users (sampled NDCG@10): ``l2=0.03`` in pretraining, the
    sampled-softmax task loss (0.060 vs 0.055 with BPR), ``history_length=20`` (covers 95% of Game users whole).

    Attributes:
      dim, epochs, batch_size, n_negatives, learning_rate, l2: pretraining of each domain's BPR-MF, as in
        :class:`EMCDRConfig`.
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
      seed, progress, parallel: as in :class:`EMCDRConfig`.
    """

    dim: int = 64
    epochs: int = 5
    batch_size: int = 1024
    n_negatives: int = 4
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

    def __post_init__(self):
        methods.check_parallel(self)
        _check_positive(
            self,
            (
                "dim",
                "epochs",
                "batch_size",
                "n_negatives",
                "history_length",
                "attention_hidden",
                "meta_epochs",
                "meta_batch_size",
                "meta_positives",
                "meta_negatives",
                "patience",
            ),
        )
        _check_rates(self, ("learning_rate", "meta_learning_rate"))
        if self.l2 < 0:
            raise ValueError(f"PTUPCDRConfig.l2={self.l2} must be >= 0")
        if self.loss not in _TASK_LOSSES:
            raise ValueError(f"unknown PTUPCDRConfig.loss {self.loss!r}; valid losses: {sorted(_TASK_LOSSES)}")
        models.PTUPCDRMeta(dim=self.dim, attention_hidden=self.attention_hidden, meta_hidden=self.meta_hidden)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of ``finetune``.

    Defaults chosen on Amazon Game→Video *valid* cold users (sampled NDCG@10, 5 pretraining epochs): ``l2=0.03``
    (0.051; 0.049 at 0.01, 0.043 at 1e-3, 0.034 at 0.1). At ``l2=1e-3``, ``pretrain="both"`` gave 0.031 and
    ``freeze_users=False`` 0.043, the same as frozen users.

    Attributes:
      dim: width D of the shared user table and both item tables.
      pretrain: ``"source"`` (phase 1 trains users + source items on the source alone) or ``"both"`` (phase 1
        is ``cmf``: users + both item tables on both domains).
      pretrain_epochs: phase-1 epochs (fixed; a source-only model cannot be judged on target cold users).
      epochs: maximum phase-2 (fine-tuning) epochs, early-stopped on valid cold-user NDCG@10.
      freeze_users: freeze the user table in phase 2 (default). When False, the overlapping users' embeddings
        move too; cold users' rows still never change (they have no target interaction).
      batch_size, n_negatives, l2: BPR training of both phases.
      learning_rate: Adam learning rate of phase 1.
      finetune_learning_rate: Adam learning rate of phase 2.
      patience: phase 2 stops after this many epochs without a better valid cold-user NDCG@10.
      seed, progress, parallel: as in :class:`EMCDRConfig`.
    """

    dim: int = 64
    pretrain: str = "source"
    pretrain_epochs: int = 5
    epochs: int = 10
    freeze_users: bool = True
    batch_size: int = 1024
    n_negatives: int = 4
    l2: float = 0.03
    learning_rate: float = 1e-2
    finetune_learning_rate: float = 1e-2
    patience: int = 3
    seed: int = 0
    progress: bool = True
    parallel: str = "none"

    def __post_init__(self):
        methods.check_parallel(self)
        _check_positive(self, ("dim", "pretrain_epochs", "epochs", "batch_size", "n_negatives", "patience"))
        _check_rates(self, ("learning_rate", "finetune_learning_rate"))
        if self.l2 < 0:
            raise ValueError(f"FinetuneConfig.l2={self.l2} must be >= 0")
        if self.pretrain not in ("source", "both"):
            raise ValueError(f"FinetuneConfig.pretrain={self.pretrain!r}; expected 'source' or 'both'")


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces: pretraining, user sets, histories, validation
# ----------------------------------------------------------------------------------------------------------------


def _users_with(ds: CrossDomainDataset, domain: str) -> np.ndarray:
    """``bool[U]``: the user has ``domain`` train history."""
    has = np.zeros(ds.n_users, bool)
    has[ds.users_with(domain, "train")] = True
    return has


def _pretrain(ds: CrossDomainDataset, domain: str, config) -> tuple[np.ndarray, np.ndarray, list]:
    """BPR-MF on ``domain`` alone for exactly ``config.epochs`` epochs (``methods._fit_embedding``).

    Held-out splits are hidden from it: a single-domain model cannot be early-stopped on cold users.

    Returns:
      ``(users [U, D], items [N, D], history)`` as host arrays.
    """
    view = ds.replace_splits({domain: {"train": ds.interactions(domain, "train")}}, f"mapping: pretrain {domain}")
    emb = methods.EmbeddingConfig(
        dim=config.dim,
        epochs=config.epochs,
        batch_size=config.batch_size,
        n_negatives=config.n_negatives,
        learning_rate=config.learning_rate,
        l2=config.l2,
        seed=config.seed,
        progress=config.progress,
        parallel=config.parallel,
    )
    model, params, history = methods._fit_embedding(view, (domain,), source=domain, target=domain, config=emb)
    users = model.apply({"params": params}, jnp.arange(ds.n_users), 0, method=methods.SharedEmbeddingModel.user_vectors)
    items = model.apply({"params": params}, 0, method=methods.SharedEmbeddingModel.item_vectors)
    return np.asarray(users), np.asarray(items), history


def _tagged(history: list, phase: str) -> list:
    return [{"phase": phase, **record} for record in history]


def _target_scorer(ds, target, user_table, target_items, has_history) -> ev.Scorer:
    return methods._fallback_scorer(user_table, target_items, has_history, ds.item_popularity(target))


def _sample_rows(seen: CSR, rows: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """``int32 [len(rows), width]``: up to ``width`` entries of each CSR row, a uniform random subset, ``-1`` pad."""
    lengths = seen.lengths[rows]
    longest = max(int(lengths.max()) if lengths.size else 0, 1)
    col = np.arange(longest)
    keys = rng.random((rows.shape[0], longest))
    keys[col[None, :] >= lengths[:, None]] = 2.0  # never picked before a real entry
    pick = np.argsort(keys, axis=1)[:, :width]
    valid = np.arange(pick.shape[1])[None, :] < np.minimum(lengths, width)[:, None]
    flat = np.where(valid, seen.indptr[rows][:, None] + pick, 0)
    out = np.full((rows.shape[0], width), -1, np.int32)
    out[:, : pick.shape[1]] = np.where(valid, seen.indices[flat] if seen.indices.size else 0, -1)
    return out


def padded_history(ds: CrossDomainDataset, domain: str, *, length: int, seed: int = 0) -> np.ndarray:
    """Every user's ``domain`` train items as a fixed-width ``int32 [U, length]`` matrix, padded with ``-1``.

    A user with more than ``length`` distinct items keeps a uniform random subset of them, drawn once with
    ``seed`` (the data has no reliable order; the attention of PTUPCDR ignores the order anyway).

    Example:
      >>> hist = padded_history(ds, "source", length=20)  # doctest: +SKIP
      >>> hist.shape
      (3000, 20)
    """
    if length < 1:
        raise ValueError(f"length={length} must be >= 1")
    seen = ds.seen(domain, "train")
    rng = np.random.default_rng(seed)
    chunks = [
        _sample_rows(seen, np.arange(lo, min(lo + 4096, seen.n_rows)), length, rng)
        for lo in range(0, seen.n_rows, 4096)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, length), np.int32)


# ----------------------------------------------------------------------------------------------------------------
# EMCDR: an embedding-to-embedding mapping fitted on the overlapping users
# ----------------------------------------------------------------------------------------------------------------


class _Regression(nn.Module):
    """``batch {"source" [B, D_s], "target" [B, D_t], "mask" [B]}`` → ``{"pred" [B, D_t], "target", "mask"}``."""

    mapping: models.EMCDRMapping

    def __call__(self, batch, *, deterministic: bool = True):
        return {
            "pred": self.mapping(batch["source"], deterministic=deterministic),
            "target": batch["target"],
            "mask": batch["mask"],
        }


def _mse_loss(outputs, batch):
    del batch
    err = jnp.sum(losses.mse(outputs["pred"], outputs["target"], where=outputs["mask"][:, None]), axis=-1)
    return {"mse": losses.mean_where(err, where=outputs["mask"])}


def _row_batches(
    n: int, batch_size: int, rng: np.random.Generator, arrays: dict[str, np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """One shuffled epoch over rows ``[0, n)`` of ``arrays``, fixed ``batch_size``, the last batch masked."""
    order = rng.permutation(n)
    out = []
    for lo in range(0, n, batch_size):
        idx = order[lo : lo + batch_size]
        pad = batch_size - idx.shape[0]
        batch = {k: np.concatenate([a[idx], np.zeros((pad,) + a.shape[1:], a.dtype)]) for k, a in arrays.items()}
        batch["mask"] = np.arange(batch_size) < idx.shape[0]
        out.append(batch)
    return out


def fit_mapping(
    source_vectors: np.ndarray,
    target_vectors: np.ndarray,
    *,
    hidden: Sequence[int] = (128,),
    linear: bool = False,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    evaluate: Callable[[Any], dict] | None = None,
    patience: int | None = None,
    progress: bool = False,
) -> tuple[models.EMCDRMapping, Any, list]:
    """Fits an EMCDR mapping ``f`` with ``f(source_vectors[i]) ≈ target_vectors[i]`` (MSE, Adam, ``train.fit``).

    Args:
      source_vectors: ``float[M, D_s]`` source-domain embeddings of the M training (overlapping) users.
      target_vectors: ``float[M, D_t]`` their target-domain embeddings.
      hidden: hidden widths of the MLP mapping (ignored when ``linear``).
      linear: fit the paper's linear map ``x M`` (no bias).
      epochs: maximum passes over the M rows.
      batch_size: rows per step (the last batch of an epoch is padded and masked).
      learning_rate: Adam learning rate.
      seed: initialization and row order.
      evaluate: optional ``mapping params -> {"NDCG@10": ...}`` called after every epoch; the best epoch's
        parameters are returned.
      patience: stop after this many evaluations without improvement (needs ``evaluate``).
      progress: tqdm bars.

    Returns:
      ``(mapping, params, history)``: the :class:`models.EMCDRMapping` module, its parameters (apply with
      ``mapping.apply({"params": params}, x)``) and the training log.

    Raises:
      ValueError: if the arrays are not rank 2 with the same (non-zero) M, or ``patience`` without ``evaluate``.
      TypeError: if either array is not floating point.

    Example:
      >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
      >>> mapping, params, _ = fit_mapping(x, 2 * x, linear=True, epochs=100, batch_size=16, learning_rate=3e-2)
      >>> np.allclose(mapping.apply({"params": params}, x), 2 * x, atol=0.05)
      True
    """
    src = np.asarray(source_vectors)
    tgt = np.asarray(target_vectors)
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[0] != tgt.shape[0]:
        raise ValueError(
            f"source_vectors [M, D_s] and target_vectors [M, D_t] must be rank 2 with the same M, got "
            f"{src.shape} and {tgt.shape}"
        )
    if not (np.issubdtype(src.dtype, np.floating) and np.issubdtype(tgt.dtype, np.floating)):
        raise TypeError(f"source_vectors and target_vectors must be floats, got {src.dtype} and {tgt.dtype}")
    if src.shape[0] == 0:
        raise ValueError("fit_mapping needs at least one row (no overlapping users?)")
    if patience is not None and evaluate is None:
        raise ValueError("patience needs evaluate")
    mapping = models.EMCDRMapping(out_dim=tgt.shape[1], hidden=tuple(hidden), linear=linear)
    arrays = {"source": src.astype(np.float32), "target": tgt.astype(np.float32)}
    batch_size = min(batch_size, src.shape[0])
    steps = -(-src.shape[0] // batch_size)

    def batches(rng):
        return _row_batches(src.shape[0], batch_size, rng, arrays)

    config = tr.TrainConfig(
        epochs=epochs,
        seed=seed,
        progress=progress,
        log_every=max(1, steps // 2),
        optimizer=tr.OptimizerConfig(learning_rate=learning_rate),
        early_stopping_metric="NDCG@10" if evaluate is not None else None,
        patience=patience,
    )
    task_eval = None if evaluate is None else (lambda params: evaluate(params["mapping"]))
    task = tr.Task(_Regression(mapping), tr.Objective(_mse_loss), batches, evaluate=task_eval, name="emcdr mapping")
    result = tr.fit(config, task)
    return mapping, result.best_params["mapping"], result.history


def _mapped_table(apply_fn, params, source_users: np.ndarray, target_users: np.ndarray, cold: np.ndarray):
    """``[U, D]``: the target vector of every user, replaced by the mapped source vector where ``cold``."""
    mapped = np.asarray(apply_fn({"params": params}, jnp.asarray(source_users)))
    return np.where(cold[:, None], mapped, target_users).astype(np.float32)


def train_emcdr(
    ds: CrossDomainDataset, *, source: str, target: str, config: EMCDRConfig = EMCDRConfig()
) -> methods.Trained:
    """EMCDR (Man et al., IJCAI 2017): BPR-MF per domain, then a map from source to target user embeddings.

    Transfers: the mapping ``f`` (linear ``u_s M`` by default, the paper's tanh MLP with ``linear=False``),
    learned on the overlapping users (train history in both domains) by regressing their pretrained target
    embedding on their pretrained source embedding (MSE), early-stopped on the valid cold users' NDCG@10. A cold
    user (source history only) is scored by ``f(u_source) · v_target``; users with target history by their own
    target embedding; users with neither by popularity.

    ``Trained.params`` is ``{"source": (users, items), "target": (users, items), "mapping": params}``.
    """
    methods._check_pair(ds, source, target)
    has_src, has_tgt = _users_with(ds, source), _users_with(ds, target)
    overlap = np.flatnonzero(has_src & has_tgt)
    if overlap.size == 0:
        raise DataError(f"emcdr needs users with train history in both {source!r} and {target!r}; there are none")

    # -- pretraining: BPR-MF on each domain alone --
    src_users, src_items, src_hist = _pretrain(ds, source, config)
    tgt_users, tgt_items, tgt_hist = _pretrain(ds, target, config)

    # -- the mapping, early-stopped on valid cold users --
    cold = has_src & ~has_tgt
    has_any = has_src | has_tgt
    apply_fn = jax.jit(models.EMCDRMapping(out_dim=config.dim, hidden=tuple(config.hidden), linear=config.linear).apply)

    def scorer(params) -> ev.Scorer:
        table = _mapped_table(apply_fn, params, src_users, tgt_users, cold)
        return _target_scorer(ds, target, table, tgt_items, has_any)

    valid = methods._valid_evaluator(ds, source, target)
    mapping, params, map_hist = fit_mapping(
        src_users[overlap],
        tgt_users[overlap],
        hidden=config.hidden,
        linear=config.linear,
        epochs=config.map_epochs,
        batch_size=config.map_batch_size,
        learning_rate=config.map_learning_rate,
        seed=config.seed,
        evaluate=None if valid is None else (lambda p: valid(scorer(p))),
        patience=None if valid is None else config.patience,
        progress=config.progress,
    )
    history = _tagged(src_hist, f"pretrain {source}") + _tagged(tgt_hist, f"pretrain {target}")
    history += _tagged(map_hist, "mapping")
    all_params = {"source": (src_users, src_items), "target": (tgt_users, tgt_items), "mapping": params}
    return methods.Trained({target: scorer(params)}, all_params, history, config)


# ----------------------------------------------------------------------------------------------------------------
# PTUPCDR: a personalized bridge from the source history, trained on the target task
# ----------------------------------------------------------------------------------------------------------------


def _bpr_task(pos, neg, mask):
    return losses.mean_where(losses.bpr(pos, neg, where=mask), where=mask)


def _softmax_task(pos, neg, mask):
    return losses.mean_where(losses.sampled_softmax(pos, neg, where=mask), where=mask)


_TASK_LOSSES = {"bpr": _bpr_task, "softmax": _softmax_task}


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
        if self.is_initializing():
            self.embed(jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32), 0)
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
        items = _sample_rows(seen_target, u, positives, rng)
        mask = (items >= 0) & (np.arange(batch_size) < real)[:, None]
        neg = sampler(rng, np.repeat(u, positives), negatives).reshape(batch_size, positives, negatives)
        yield {"users": u, "history": history[u], "items": items, "negatives": neg, "mask": mask}


def train_ptupcdr(
    ds: CrossDomainDataset, *, source: str, target: str, config: PTUPCDRConfig = PTUPCDRConfig()
) -> methods.Trained:
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
    methods._check_pair(ds, source, target)
    has_src, has_tgt = _users_with(ds, source), _users_with(ds, target)
    overlap = np.flatnonzero(has_src & has_tgt)
    if overlap.size == 0:
        raise DataError(f"ptupcdr needs users with train history in both {source!r} and {target!r}; there are none")

    # -- pretraining: BPR-MF on each domain alone --
    src_users, src_items, src_hist = _pretrain(ds, source, config)
    tgt_users, tgt_items, tgt_hist = _pretrain(ds, target, config)

    # -- data: overlapping users, their padded source history, target positives and negatives --
    history = padded_history(ds, source, length=config.history_length, seed=config.seed)
    seen_target = ds.seen(target, "train")
    sampler = batching.NegativeSampler(ds.n_items(target), seen=seen_target)
    batch_size = min(config.meta_batch_size, overlap.size)
    steps = -(-overlap.size // batch_size)

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

    # -- model: pretrained tables (frozen) + a fresh meta network --
    model = _BridgeModel(
        ds.n_users, (ds.n_items(source), ds.n_items(target)), config.dim, config.attention_hidden, config.meta_hidden
    )
    sample = next(iter(batches(np.random.default_rng(0))))
    init = jax.jit(model.init)(jax.random.key(config.seed), sample)["params"]
    init = _with_tables(init, src_users, src_items, tgt_items)
    task_loss = _TASK_LOSSES[config.loss]

    def objective(outputs, batch):
        del batch
        return {target: task_loss(outputs["pos"], outputs["neg"], outputs["mask"])}

    # -- scorer and validation --
    cold = np.flatnonzero(has_src & ~has_tgt)
    has_any = has_src | has_tgt
    mapped_fn = jax.jit(lambda p, u, h: model.apply({"params": p}, u, h, method=_BridgeModel.mapped))

    def scorer(params) -> ev.Scorer:
        table = tgt_users.copy()
        if cold.size:
            table[cold] = _bridge_vectors(mapped_fn, params, cold, history, dim=config.dim)
        return _target_scorer(ds, target, table, tgt_items, has_any)

    valid = methods._valid_evaluator(ds, source, target)

    # -- training --
    config_t = methods._train_config(
        config,
        epochs=config.meta_epochs,
        learning_rate=config.meta_learning_rate,
        steps_per_epoch=steps,
        early_stopping=valid is not None,
    )
    task = tr.Task(
        model,
        tr.Objective(objective),
        batches,
        evaluate=None if valid is None else (lambda p: valid(scorer(p))),
        init_params=init,
        name="ptupcdr meta",
    )
    result = tr.fit(config_t, task)
    history_log = _tagged(src_hist, f"pretrain {source}") + _tagged(tgt_hist, f"pretrain {target}")
    history_log += _tagged(result.history, "meta")
    return methods.Trained({target: scorer(result.best_params)}, result.best_params, history_log, config)


# ----------------------------------------------------------------------------------------------------------------
# finetune: pretrain a shared-embedding model on the source, fine-tune the target items
# ----------------------------------------------------------------------------------------------------------------


class _FreezableEmbeddingModel(nn.Module):
    """Users shared across domains, items per domain (BPR-MF), with parts frozen by ``stop_gradient``.

    Same batch and outputs as :class:`methods.SharedEmbeddingModel` without towers (so ``methods._bpr_objective``
    applies), and the same parameter tree for every choice of frozen parts (phases hand parameters on).

    Attributes:
      freeze_users: the user table gets no gradient.
      frozen_items: indices (into ``domains``) of item tables that get no gradient.
    """

    n_users: int
    n_items: tuple[int, ...]
    domains: tuple[str, ...]
    dim: int = 64
    freeze_users: bool = False
    frozen_items: tuple[int, ...] = ()

    def setup(self):
        self.embed = models.CrossDomainEmbedding(self.n_users, tuple(self.n_items), self.dim)

    def _users(self, users):
        u = self.embed.users(users)
        return jax.lax.stop_gradient(u) if self.freeze_users else u

    def _items(self, items, k):
        v = self.embed.items(items, k)
        return jax.lax.stop_gradient(v) if k in self.frozen_items else v

    def __call__(self, batch, *, deterministic: bool = True):
        del deterministic
        if self.is_initializing():
            self.embed(jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32), 0)
        out = {}
        for k, name in enumerate(self.domains):
            if name not in batch:
                continue
            b = batch[name]
            h = self._users(b["users"])
            pos_item, neg_item = self._items(b["items"], k), self._items(b["negatives"], k)
            out[name] = methods._pair_outputs(h, pos_item, neg_item, b["mask"], (h, pos_item, neg_item))
        return out


def _domain_batches(ds, domains, config):
    inters = {d: ds.interactions(d, "train") for d in domains}
    samplers = {d: batching.NegativeSampler(ds.n_items(d), seen=ds.seen(d, "train")) for d in domains}
    steps = max(-(-inters[d].size // config.batch_size) for d in domains)

    def batches(rng):
        return batching.multi_domain_batches(
            inters, {d: config.batch_size for d in domains}, rng=rng, n_negatives=config.n_negatives, samplers=samplers
        )

    return batches, steps


def train_finetune(
    ds: CrossDomainDataset, *, source: str, target: str, config: FinetuneConfig = FinetuneConfig()
) -> methods.Trained:
    """Pretrain a shared-embedding BPR model on the source (or both domains), then fine-tune it on the target.

    Phase 1 (``pretrain_epochs``): users + source items with BPR on the source (``pretrain="source"``; the
    target item table receives no gradient), or users + both item tables on both domains (``"both"``, i.e.
    ``cmf``). Phase 2 (up to ``epochs``, early-stopped on valid cold-user NDCG@10): BPR on the target only,
    **frozen**: the source item table and (``freeze_users=True``, default) the user table; **trained**: the target
    item table (and the users when ``freeze_users=False``). Transfers: the source-trained user embeddings — a
    cold user keeps theirs and is scored against the fine-tuned target items; users with no history in either
    domain fall back to popularity.
    """
    methods._check_pair(ds, source, target)
    domains = (source, target)
    n_items = (ds.n_items(source), ds.n_items(target))
    has_any = _users_with(ds, source) | _users_with(ds, target)

    def make_model(**frozen):
        return _FreezableEmbeddingModel(ds.n_users, n_items, domains, config.dim, **frozen)

    def scorer(params) -> ev.Scorer:
        users = params["embed"]["user_table"]["embedding"]
        items = params["embed"]["items_1"]["embedding"]
        return _target_scorer(ds, target, users, items, has_any)

    objective = methods._bpr_objective(config.l2, None, 0.0)
    pre_batches, pre_steps = _domain_batches(ds, (source,) if config.pretrain == "source" else domains, config)
    tgt_batches, tgt_steps = _domain_batches(ds, (target,), config)
    valid = methods._valid_evaluator(ds, source, target)
    phases = [
        (
            methods._train_config(
                config,
                epochs=config.pretrain_epochs,
                learning_rate=config.learning_rate,
                steps_per_epoch=pre_steps,
                early_stopping=False,
            ),
            tr.Task(make_model(), objective, pre_batches, name=f"finetune: pretrain {config.pretrain}"),
        ),
        (
            methods._train_config(
                config,
                epochs=config.epochs,
                learning_rate=config.finetune_learning_rate,
                steps_per_epoch=tgt_steps,
                early_stopping=valid is not None,
            ),
            tr.Task(
                make_model(freeze_users=config.freeze_users, frozen_items=(0,)),
                objective,
                tgt_batches,
                evaluate=None if valid is None else (lambda p: valid(scorer(p))),
                name=f"finetune: {target}",
            ),
        ),
    ]
    pre, fine = tr.run_phases(phases)
    history = _tagged(pre.history, "pretrain") + _tagged(fine.history, "finetune")
    return methods.Trained({target: scorer(fine.best_params)}, fine.best_params, history, config)


# ----------------------------------------------------------------------------------------------------------------
# Registry (merged into methods.METHODS)
# ----------------------------------------------------------------------------------------------------------------

RECIPES: dict[str, methods.Method] = {
    "emcdr": methods.Method(
        "emcdr", train_emcdr, EMCDRConfig(), "BPR-MF per domain + MLP mapping of user embeddings on overlap users"
    ),
    "ptupcdr": methods.Method(
        "ptupcdr",
        train_ptupcdr,
        PTUPCDRConfig(),
        "BPR-MF per domain + meta network emitting a personal bridge, trained on target ranking",
    ),
    "finetune": methods.Method(
        "finetune",
        train_finetune,
        FinetuneConfig(),
        "pretrain users on the source, fine-tune target items (frozen users)",
    ),
}

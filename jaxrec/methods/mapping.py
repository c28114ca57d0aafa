"""``emcdr`` and the pieces the transfer-by-mapping recipes share: per-domain pretraining, padded histories, and
an embedding-to-embedding mapping fitted on the overlapping users.

``emcdr`` (Man et al., "Cross-Domain Recommendation: An Embedding and Mapping Approach", IJCAI 2017) transfers
a **mapping of user embeddings**: BPR-MF is pretrained on each domain alone (:func:`pretrain`), then a linear
map (default) or an MLP ``f`` is fitted on the overlapping users (train history in both domains) to regress the
target embedding from the source embedding (MSE, :func:`fit_mapping`). A cold user's target vector is
``f(source vector)``, ranked against the pretrained target items; users with target train history are ranked by
their target vector, users with neither by popularity (:func:`jaxrec.methods.common.fallback_scorer`).

Axis conventions: ``U`` users of the shared id space, ``N`` items of one domain, ``M`` overlapping users,
``B`` rows of a batch, ``D`` embedding width, ``L`` history length (padded with item id ``-1``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import checks, losses, models
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CSR, CrossDomainDataset, DataError
from jaxrec.methods.common import (
    TASK_LOSSES,
    Trained,
    check_pair,
    check_parallel,
    check_seed,
    fallback_scorer,
    has_history,
    tag_phase,
    valid_evaluator,
)
from jaxrec.methods.embedding import EmbeddingConfig, SharedEmbeddingModel, fit_embedding

__all__ = ["EMCDRConfig", "fit_mapping", "padded_history", "pretrain", "sample_rows", "train_emcdr"]


@dataclasses.dataclass(frozen=True)
class EMCDRConfig:
    """Hyper-parameters of ``emcdr``.

    Strong L2 in pretraining (BPR-MF memorises users with a few interactions at 1e-4) and the paper's linear
    mapping by default; the tanh MLP stays available with ``linear=False``. A mapping learning rate of 1e-2 lets
    the linear map converge when there are few overlapping users (few steps per epoch).

    Attributes:
      dim: embedding width D of both pretrained BPR-MF models.
      epochs: pretraining epochs of each domain's BPR-MF (fixed: cold users have no target history to stop on).
      batch_size: positives per pretraining step.
      n_negatives: uniform negatives per positive in pretraining.
      task_loss: the pretraining's within-domain task loss (``"bpr"``, ``"softmax"``, ``"sampled_softmax"``;
        see :class:`jaxrec.methods.EmbeddingConfig`).
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
      sparse_min_rows: embedding tables of at least this many rows are updated at the rows each batch looks up
        (lazy Adam; see :class:`jaxrec.train.TrainConfig`); None: every parameter densely.
      parallel: data parallelism of the embedding training steps (``"none"``, ``"pmap"``, ``"mesh"``; see
        :class:`jaxrec.methods.EmbeddingConfig`). The small mapping network always trains on one device.
    """

    dim: int = 64
    epochs: int = 5
    batch_size: int = 1024
    n_negatives: int = 4
    task_loss: str = "bpr"
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
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS

    def __post_init__(self):
        check_parallel(self)
        for name in ("dim", "epochs", "batch_size", "n_negatives", "map_epochs", "map_batch_size", "patience"):
            checks.positive_int(f"EMCDRConfig.{name}", getattr(self, name))
        for name in ("learning_rate", "map_learning_rate"):
            checks.fraction(f"EMCDRConfig.{name}", getattr(self, name), high=math.inf, closed="neither")
        checks.fraction("EMCDRConfig.l2", self.l2, high=math.inf, closed="left")
        check_seed("EMCDRConfig.seed", self.seed)
        checks.choice("EMCDRConfig.task_loss", self.task_loss, TASK_LOSSES)
        models.EMCDRMapping(hidden=self.hidden)  # validates the widths


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces: pretraining and histories
# ----------------------------------------------------------------------------------------------------------------


def pretrain(ds: CrossDomainDataset, domain: str, config) -> tuple[np.ndarray, np.ndarray, list]:
    """MF on ``domain`` alone (``config.task_loss``) for exactly ``config.epochs`` epochs
    (:func:`~jaxrec.methods.fit_embedding`).

    Held-out splits are hidden from it: a single-domain model cannot be early-stopped on cold users.

    Args:
      ds: the dataset.
      domain: the domain trained.
      config: a recipe config; read: ``dim``, ``epochs``, ``batch_size``, ``n_negatives``, ``task_loss``,
        ``learning_rate``, ``l2``, ``seed``, ``progress``, ``parallel``, ``sparse_min_rows``.

    Returns:
      ``(users [U, D], items [N, D], history)`` as host arrays.
    """
    view = ds.replace_splits({domain: {"train": ds.interactions(domain, "train")}}, f"mapping: pretrain {domain}")
    emb = EmbeddingConfig(
        dim=config.dim,
        epochs=config.epochs,
        batch_size=config.batch_size,
        n_negatives=config.n_negatives,
        task_loss=config.task_loss,
        learning_rate=config.learning_rate,
        l2=config.l2,
        seed=config.seed,
        progress=config.progress,
        parallel=config.parallel,
        sparse_min_rows=config.sparse_min_rows,
    )
    model, params, history = fit_embedding(view, (domain,), source=domain, target=domain, config=emb)
    users = model.apply({"params": params}, jnp.arange(ds.n_users), 0, method=SharedEmbeddingModel.user_vectors)
    items = model.apply({"params": params}, 0, method=SharedEmbeddingModel.item_vectors)
    return np.asarray(users), np.asarray(items), history


def sample_rows(seen: CSR, rows: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``width`` entries of each of the CSR rows ``rows``, a uniform random subset of each.

    Args:
      seen: a CSR matrix (e.g. ``ds.seen(domain)``, users × items).
      rows: ``int [R]`` row ids.
      width: entries kept per row.
      rng: the random subsets.

    Returns:
      ``int32 [R, width]``, each row's picks first, then ``-1`` padding.
    """
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

    Args:
      ds: the dataset.
      domain: the domain whose train items are read.
      length: the width ``L`` of the matrix.
      seed: the subset kept for users with more than ``length`` items.

    Returns:
      ``int32 [U, length]`` item ids, ``-1`` padded, one row per user of the dataset.

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
        sample_rows(seen, np.arange(lo, min(lo + 4096, seen.n_rows)), length, rng) for lo in range(0, seen.n_rows, 4096)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, length), np.int32)


# ----------------------------------------------------------------------------------------------------------------
# The mapping
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


# ----------------------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------------------


def _mapped_table(apply_fn, params, source_users: np.ndarray, target_users: np.ndarray, cold: np.ndarray):
    """``[U, D]``: the target vector of every user, replaced by the mapped source vector where ``cold``."""
    mapped = np.asarray(apply_fn({"params": params}, jnp.asarray(source_users)))
    return np.where(cold[:, None], mapped, target_users).astype(np.float32)


def train_emcdr(ds: CrossDomainDataset, *, source: str, target: str, config: EMCDRConfig = EMCDRConfig()) -> Trained:
    """EMCDR (Man et al., IJCAI 2017): BPR-MF per domain, then a map from source to target user embeddings.

    Transfers: the mapping ``f`` (linear ``u_s M`` by default, the paper's tanh MLP with ``linear=False``),
    learned on the overlapping users (train history in both domains) by regressing their pretrained target
    embedding on their pretrained source embedding (MSE), early-stopped on the valid cold users' NDCG@10. A cold
    user (source history only) is scored by ``f(u_source) · v_target``; users with target history by their own
    target embedding; users with neither by popularity.

    ``Trained.params`` is ``{"source": (users, items), "target": (users, items), "mapping": params}``.
    """
    check_pair(ds, source, target)
    has_src, has_tgt = has_history(ds, (source,)), has_history(ds, (target,))
    overlap = np.flatnonzero(has_src & has_tgt)
    if overlap.size == 0:
        raise DataError(f"emcdr needs users with train history in both {source!r} and {target!r}; there are none")

    # -- pretraining: BPR-MF on each domain alone --
    src_users, src_items, src_hist = pretrain(ds, source, config)
    tgt_users, tgt_items, tgt_hist = pretrain(ds, target, config)

    # -- the mapping, early-stopped on valid cold users --
    cold = has_src & ~has_tgt
    has_any = has_src | has_tgt
    apply_fn = jax.jit(models.EMCDRMapping(out_dim=config.dim, hidden=tuple(config.hidden), linear=config.linear).apply)

    def scorer(params) -> ev.Scorer:
        table = _mapped_table(apply_fn, params, src_users, tgt_users, cold)
        return fallback_scorer(table, tgt_items, has_any, ds.item_popularity(target))

    valid = valid_evaluator(ds, source, target)
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
    history = tag_phase(src_hist, f"pretrain {source}") + tag_phase(tgt_hist, f"pretrain {target}")
    history += tag_phase(map_hist, "mapping")
    all_params = {"source": (src_users, src_items), "target": (tgt_users, tgt_items), "mapping": params}
    return Trained({target: scorer(params)}, all_params, history, config)

"""``finetune``: pretrain a shared-embedding model on the source, then fine-tune the target items.

Transfers the **user embeddings themselves**: a shared-embedding BPR model is pretrained on the source (or on
both domains), then fine-tuned on the target with the user table and the source items frozen, so only the
target item table learns; cold users keep their source-trained embedding, which lives in the space the target
items were fitted to. Frozen parameters are frozen by ``jax.lax.stop_gradient`` inside the model: their
gradient is exactly zero, so Adam (with no decoupled weight decay) leaves them bit-for-bit unchanged.

Axis conventions: ``U`` users, ``N`` items of one domain, ``B`` rows of a batch, ``n`` negatives per positive,
``D`` embedding width.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax

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
    tag_phase,
    task_objective,
    train_config,
    valid_evaluator,
)

__all__ = ["FinetuneConfig", "train_finetune"]


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of ``finetune``.

    Attributes:
      dim: width D of the shared user table and both item tables.
      pretrain: ``"source"`` (phase 1 trains users + source items on the source alone) or ``"both"`` (phase 1
        is ``cmf``: users + both item tables on both domains).
      pretrain_epochs: phase-1 epochs (fixed; a source-only model cannot be judged on target cold users).
      epochs: maximum phase-2 (fine-tuning) epochs, early-stopped on valid cold-user NDCG@10.
      freeze_users: freeze the user table in phase 2 (default). When False, the overlapping users' embeddings
        move too; cold users' rows still never change (they have no target interaction).
      batch_size, n_negatives, l2: training of both phases.
      task_loss: both phases' within-domain task loss: ``"bpr"`` (each positive against its ``n_negatives``),
        ``"softmax"`` (full softmax over the domain's catalogue; sampled softmax when batch × catalogue exceeds
        :data:`jaxrec.methods.retrieval.FULL_SOFTMAX_LIMIT`) or ``"sampled_softmax"`` (against the batch's
        ``batch_size × n_negatives`` shared negatives, logQ-corrected); see
        :func:`jaxrec.methods.retrieval.task_objective`.
      learning_rate: Adam learning rate of phase 1.
      finetune_learning_rate: Adam learning rate of phase 2.
      patience: phase 2 stops after this many epochs without a better valid cold-user NDCG@10.
      seed, progress, parallel, sparse_min_rows: as in :class:`~jaxrec.methods.EMCDRConfig`.
    """

    dim: int = 64
    pretrain: str = "source"
    pretrain_epochs: int = 5
    epochs: int = 10
    freeze_users: bool = True
    batch_size: int = 1024
    n_negatives: int = 4
    task_loss: str = "bpr"
    l2: float = 0.03
    learning_rate: float = 1e-2
    finetune_learning_rate: float = 1e-2
    patience: int = 3
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS

    def __post_init__(self):
        check_parallel(self)
        for name in ("dim", "pretrain_epochs", "epochs", "batch_size", "n_negatives", "patience"):
            checks.positive_int(f"FinetuneConfig.{name}", getattr(self, name))
        for name in ("learning_rate", "finetune_learning_rate"):
            checks.fraction(f"FinetuneConfig.{name}", getattr(self, name), high=math.inf, closed="neither")
        checks.fraction("FinetuneConfig.l2", self.l2, high=math.inf, closed="left")
        check_seed("FinetuneConfig.seed", self.seed)
        checks.choice("FinetuneConfig.task_loss", self.task_loss, TASK_LOSSES)
        if self.pretrain not in ("source", "both"):
            raise ValueError(f"FinetuneConfig.pretrain={self.pretrain!r}; expected 'source' or 'both'")


class _FreezableEmbeddingModel(nn.Module):
    """Users shared across domains, items per domain (BPR-MF), with parts frozen by ``stop_gradient``.

    Same batch and outputs as :class:`~jaxrec.methods.SharedEmbeddingModel` without towers (so
    :func:`~jaxrec.methods.common.bpr_objective` applies), and the same parameter tree for every choice of frozen
    parts (phases hand parameters on).

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
        create_every_table(self, self.embed)
        out = {}
        for k, name in enumerate(self.domains):
            if name not in batch:
                continue
            b = batch[name]
            h = self._users(b["users"])
            pos_item, neg_item = self._items(b["items"], k), self._items(b["negatives"], k)
            table = self.embed.item_table(k)
            items = jax.lax.stop_gradient(table) if k in self.frozen_items else table
            out[name] = pair_outputs(h, pos_item, neg_item, b["mask"], (h, pos_item, neg_item), items=items)
        return out


def train_finetune(
    ds: CrossDomainDataset, *, source: str, target: str, config: FinetuneConfig = FinetuneConfig()
) -> Trained:
    """Pretrain a shared-embedding BPR model on the source (or both domains), then fine-tune it on the target.

    Phase 1 (``pretrain_epochs``): users + source items with BPR on the source (``pretrain="source"``; the
    target item table receives no gradient), or users + both item tables on both domains (``"both"``, i.e.
    ``cmf``). Phase 2 (up to ``epochs``, early-stopped on valid cold-user NDCG@10): BPR on the target only,
    **frozen**: the source item table and (``freeze_users=True``, default) the user table; **trained**: the target
    item table (and the users when ``freeze_users=False``). Transfers: the source-trained user embeddings — a
    cold user keeps theirs and is scored against the fine-tuned target items; users with no history in either
    domain fall back to popularity.
    """
    check_pair(ds, source, target)
    domains = (source, target)
    n_items = (ds.n_items(source), ds.n_items(target))
    has_any = has_history(ds, domains)

    def make_model(**frozen):
        return _FreezableEmbeddingModel(ds.n_users, n_items, domains, config.dim, **frozen)

    def scorer(params) -> ev.Scorer:
        users = params["embed"]["user_table"]["embedding"]
        items = params["embed"]["items_1"]["embedding"]
        return fallback_scorer(users, items, has_any, ds.item_popularity(target))

    objective = task_objective(config.l2, config.task_loss)
    sizes = dict(batch_size=config.batch_size, n_negatives=config.n_negatives)
    pre_batches, pre_steps = domain_batches(ds, (source,) if config.pretrain == "source" else domains, **sizes)
    tgt_batches, tgt_steps = domain_batches(ds, (target,), **sizes)
    valid = valid_evaluator(ds, source, target)
    pretrain_phase = (
        train_config(
            config,
            epochs=config.pretrain_epochs,
            learning_rate=config.learning_rate,
            steps_per_epoch=pre_steps,
            early_stopping=False,
        ),
        tr.Task(make_model(), objective, pre_batches, name=f"finetune: pretrain {config.pretrain}"),
    )
    finetune_phase = (
        train_config(
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
    )
    pre, fine = tr.run_phases([pretrain_phase, finetune_phase])
    history = tag_phase(pre.history, "pretrain") + tag_phase(fine.history, "finetune")
    return Trained({target: scorer(fine.best_params)}, fine.best_params, history, config)

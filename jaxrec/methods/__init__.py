"""Named cross-domain recipes: a config dataclass + a function that trains and returns scorers.

Every recipe has the same signature, ``train(ds, *, source, target, config) -> Trained``, and is looked up by
name in :data:`METHODS` (:func:`get_method` raises listing the valid names; :func:`run` trains one with its
default config updated by keyword overrides). ``Trained.scorers[domain]`` is an ``evaluate.Scorer`` for every
domain the method can rank.

Recipes (what each transfers, from ``source`` to the cold-start users of ``target``), one module per family:

* :mod:`~jaxrec.methods.baselines` — ``popularity``: nothing; items ranked by train interaction count.
* :mod:`~jaxrec.methods.embedding` — ``target_only`` (BPR-MF on the target alone: cold users get popularity),
  ``cmf`` (user embeddings shared by both domains), ``mmd`` / ``coral`` / ``dann`` (``cmf`` + per-domain user
  towers + an alignment term on the user representations).
* :mod:`~jaxrec.methods.item_map` — ``item_map``: a closed-form ridge map from source items to target items, then
  one propagation step through the target's EASE model; the strong baseline. Above a catalogue size it runs
  low-rank (:mod:`~jaxrec.methods.item_map_lowrank`, which also gives the map as factors: ``item_map_factors``).
* :mod:`~jaxrec.methods.mapping` — ``emcdr``: a map from source to target user embeddings (and the pieces the
  mapping recipes share); :mod:`~jaxrec.methods.ptupcdr` — ``ptupcdr``: a personal bridge from the source
  history; :mod:`~jaxrec.methods.finetune` — ``finetune``: source-trained users, fine-tuned target items.
* :mod:`~jaxrec.methods.multidomain` — ``shared_bottom`` / ``mmoe`` / ``ple`` / ``star`` / ``conet`` /
  ``cross_stitch``: multi-domain user networks over shared embeddings; :mod:`~jaxrec.methods.lightgcn` —
  ``lightgcn``: propagation over the joint graph (both trained by :mod:`~jaxrec.methods.joint`).
* :mod:`~jaxrec.methods.inductive` — ``history``: cold users encoded from their source history by a network
  trained on every user (its retrieval task losses: :mod:`~jaxrec.methods.retrieval`).

:mod:`~jaxrec.methods.memory` estimates each recipe's peak memory from the dataset's counts (:func:`estimate_memory`)
and refuses, before any allocation, a recipe that would not fit (:class:`MemoryLimitError`, raised by :func:`run`).

:mod:`~jaxrec.methods.common` is the toolkit every recipe is written with. To add a recipe: write its config
and ``train`` function in a module of this package, and add its :class:`Method` to :data:`METHODS` below.

Every recipe learns its transfer from the users who have train history in both domains, so what counts as one
user matters: load CDRIB's releases with ``load_dir(..., shared_users="below_heldout")`` and check other data with
:func:`jaxrec.diagnostics.link_test`. ``bench/leaderboard.py`` measures every recipe's defaults on Amazon
Game→Video (``bench/RESULTS.md``).
"""

from __future__ import annotations

from jaxrec.data import CrossDomainDataset
from jaxrec.methods import (
    baselines,
    common,
    embedding,
    factor_map,
    factor_model,
    finetune,
    history_model,
    inductive,
    item_map,
    item_map_lowrank,
    joint,
    lightgcn,
    mapping,
    memory,
    multidomain,
    ptupcdr,
    retrieval,
)
from jaxrec.methods.baselines import PopularityConfig, train_popularity
from jaxrec.methods.common import (
    KINDS,
    PARALLEL,
    TASK_LOSSES,
    Method,
    Trained,
    bpr_objective,
    check_pair,
    check_parallel,
    create_every_table,
    domain_batches,
    fallback_scorer,
    has_history,
    make_config,
    pair_outputs,
    tag_phase,
    task_objective,
    train_config,
    valid_evaluator,
    warm_or_popularity,
)
from jaxrec.methods.embedding import (
    MMD_OPTIONS,
    EmbeddingConfig,
    SharedEmbeddingModel,
    fit_embedding,
    recipe_objective,
    scorer_for,
    train_aligned,
    train_cmf,
    train_target_only,
)
from jaxrec.methods.factor_map import FactorMapConfig, train_factor_map
from jaxrec.methods.finetune import FinetuneConfig, train_finetune
from jaxrec.methods.history_model import HistoryModel
from jaxrec.methods.inductive import HistoryConfig, train_history
from jaxrec.methods.item_map import ItemMapConfig, item_map_factored_scores, item_map_scores, train_item_map
from jaxrec.methods.item_map_lowrank import ItemMapFactors, item_map_factors
from jaxrec.methods.joint import JointConfig, fit_joint, train_joint
from jaxrec.methods.lightgcn import GRAPH_KEY, LightGCNConfig, LightGCNModel, joint_graph, train_lightgcn
from jaxrec.methods.mapping import EMCDRConfig, fit_mapping, padded_history, pretrain, sample_rows, train_emcdr
from jaxrec.methods.memory import MemoryEstimate, MemoryLimitError, check_memory, estimate_memory, memory_limit
from jaxrec.methods.multidomain import (
    CoNetConfig,
    CoNetUserTowers,
    CrossStitchConfig,
    CrossStitchUserTowers,
    MMoEConfig,
    PLEConfig,
    SharedBottomConfig,
    STARConfig,
    UserNetworkModel,
    train_conet,
    train_cross_stitch,
    train_mmoe,
    train_ple,
    train_shared_bottom,
    train_star,
)
from jaxrec.methods.ptupcdr import PTUPCDRConfig, train_ptupcdr

#: Every recipe by name.
METHODS: dict[str, Method] = {
    "popularity": Method(
        "popularity", train_popularity, PopularityConfig(), "most popular target items", kind="baseline"
    ),
    "target_only": Method(
        "target_only", train_target_only, EmbeddingConfig(), "BPR-MF on the target only; cold users get popularity"
    ),
    "cmf": Method("cmf", train_cmf, EmbeddingConfig(), "shared user embeddings over both domains"),
    "mmd": Method(
        "mmd",
        train_aligned,
        EmbeddingConfig(user_tower=(64,), discrepancy="mmd", discrepancy_options=MMD_OPTIONS, lam=1.0),
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
        kind="closed_form",
    ),
    "factor_map": Method(
        "factor_map",
        train_factor_map,
        FactorMapConfig(),
        "item_map factorised to rank r, then trained with the full softmax on every user (learned scorer)",
    ),
    "emcdr": Method(
        "emcdr", train_emcdr, EMCDRConfig(), "BPR-MF per domain + MLP mapping of user embeddings on overlap users"
    ),
    "ptupcdr": Method(
        "ptupcdr",
        train_ptupcdr,
        PTUPCDRConfig(),
        "BPR-MF per domain + meta network emitting a personal bridge, trained on target ranking",
    ),
    "finetune": Method(
        "finetune",
        train_finetune,
        FinetuneConfig(),
        "pretrain users on the source, fine-tune target items (frozen users)",
    ),
    "shared_bottom": Method(
        "shared_bottom", train_shared_bottom, SharedBottomConfig(), "Shared-Bottom user network over shared embeddings"
    ),
    "mmoe": Method("mmoe", train_mmoe, MMoEConfig(), "MMoE user network over shared user embeddings"),
    "ple": Method("ple", train_ple, PLEConfig(), "PLE (shared + per-domain experts) user network"),
    "star": Method("star", train_star, STARConfig(), "STAR (shared ⊙ domain weights) user network"),
    "conet": Method("conet", train_conet, CoNetConfig(), "CoNet cross-connected per-domain user towers"),
    "cross_stitch": Method(
        "cross_stitch", train_cross_stitch, CrossStitchConfig(), "cross-stitched per-domain user towers"
    ),
    "lightgcn": Method(
        "lightgcn", train_lightgcn, LightGCNConfig(), "LightGCN on the joint user–item graph of both domains"
    ),
    "history": Method(
        "history",
        train_history,
        HistoryConfig(),
        "cold users encoded from their source history (Transformer + two towers), trained on every user",
    ),
}


def get_method(name: str) -> Method:
    """The recipe called ``name``.

    Args:
      name: a key of :data:`METHODS`.

    Returns:
      Its :class:`Method` (name, ``train`` function, default config, summary).

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]


def run(
    name: str, ds: CrossDomainDataset, *, source: str, target: str, check_memory: bool = True, **overrides
) -> Trained:
    """Trains method ``name`` with its default config updated by ``overrides``.

    Values are checked by the fields' declared types (:func:`~jaxrec.methods.common.make_config`); overriding
    ``discrepancy`` alone resets ``discrepancy_options`` to the new term's defaults, e.g. ``run("mmd", ...,
    discrepancy="coral")``. Before anything is allocated, the recipe's estimated peak memory
    (:func:`~jaxrec.methods.memory.estimate_memory`) is compared with :func:`~jaxrec.methods.memory.memory_limit`
    (``JAXREC_MEMORY_GB``, else the physical memory); ``check_memory=False`` skips that check.

    Example:
      >>> trained = run("cmf", ds, source="source", target="target", epochs=5, seed=1)  # doctest: +SKIP

    Raises:
      ValueError: an unknown method, or an option its config does not have (listing its options).
      MemoryLimitError: the recipe is estimated not to fit in memory; the message names the estimate, the limit
        and what to use instead (:class:`~jaxrec.methods.memory.MemoryLimitError`).
    """
    method = get_method(name)
    config = make_config(method.default_config, overrides, owner=f"method {name!r}")
    if check_memory:
        memory.check_memory(name, ds, source=source, target=target, config=config)
    return method.train(ds, source=source, target=target, config=config)


__all__ = [
    # registry
    "KINDS",
    "METHODS",
    "Method",
    "Trained",
    "get_method",
    "run",
    # memory estimates and the up-front check
    "MemoryEstimate",
    "MemoryLimitError",
    "check_memory",
    "estimate_memory",
    "memory_limit",
    # the recipe toolkit (common)
    "PARALLEL",
    "TASK_LOSSES",
    "bpr_objective",
    "check_pair",
    "check_parallel",
    "create_every_table",
    "domain_batches",
    "fallback_scorer",
    "has_history",
    "pair_outputs",
    "tag_phase",
    "task_objective",
    "train_config",
    "valid_evaluator",
    "warm_or_popularity",
    # baselines
    "PopularityConfig",
    "train_popularity",
    # shared embeddings
    "MMD_OPTIONS",
    "EmbeddingConfig",
    "SharedEmbeddingModel",
    "fit_embedding",
    "recipe_objective",
    "scorer_for",
    "train_aligned",
    "train_cmf",
    "train_target_only",
    # item_map
    "ItemMapConfig",
    "ItemMapFactors",
    "item_map_factored_scores",
    "item_map_factors",
    "item_map_scores",
    "train_item_map",
    # mapping, ptupcdr, finetune
    "EMCDRConfig",
    "FactorMapConfig",
    "FinetuneConfig",
    "PTUPCDRConfig",
    "fit_mapping",
    "padded_history",
    "pretrain",
    "sample_rows",
    "train_emcdr",
    "train_factor_map",
    "train_finetune",
    "train_ptupcdr",
    # joint training, user networks, lightgcn
    "GRAPH_KEY",
    "CoNetConfig",
    "CoNetUserTowers",
    "CrossStitchConfig",
    "CrossStitchUserTowers",
    "JointConfig",
    "LightGCNConfig",
    "LightGCNModel",
    "MMoEConfig",
    "PLEConfig",
    "STARConfig",
    "SharedBottomConfig",
    "UserNetworkModel",
    "fit_joint",
    "joint_graph",
    "train_conet",
    "train_cross_stitch",
    "train_joint",
    "train_lightgcn",
    "train_mmoe",
    "train_ple",
    "train_shared_bottom",
    "train_star",
    # inductive
    "HistoryConfig",
    "HistoryModel",
    "train_history",
    # modules
    "baselines",
    "common",
    "embedding",
    "factor_map",
    "factor_model",
    "finetune",
    "history_model",
    "inductive",
    "item_map",
    "item_map_lowrank",
    "joint",
    "lightgcn",
    "mapping",
    "memory",
    "multidomain",
    "ptupcdr",
    "retrieval",
]

"""``factor_map``: a learned factor model that starts from ``item_map``'s solution and is trained on every user.

1. ``item_map`` (:mod:`jaxrec.methods.item_map`) is solved with its own grid, chosen on valid: the map ``W'
   [N_s, N_t]`` and the source item scales ``c [N_s]``.
2. ``diag(c) W'`` is factorised to rank ``r`` by randomised SVD (:func:`~jaxrec.methods.factor_model.
   low_rank_factors`): the source table ``A = U_r S_r`` and the target table ``B = V_r`` of a
   :class:`~jaxrec.methods.factor_model.FactorMapModel` (the item biases start at item_map's popularity prior),
   which then scores exactly as ``item_map`` truncated to rank ``r``.
3. The model is trained through :func:`jaxrec.train.fit` (Adam, the combined loss, early stopping on the valid
   cold users) with a retrieval task loss (:mod:`jaxrec.methods.retrieval`, full softmax over the target items)
   on up to three groups of users:

   * ``"cross"`` — users with train history in both domains: their source items → their target train items.
   * ``"target"`` (``target_weight > 0``) — users with target history only: a random half of their target items
     predicted from the rest, encoded by a third table (``target_history``, initialised at ``B``) and scored
     with the same ``B`` and biases, so the target's own users shape the target item table.
   * ``"source"`` (only with ``discrepancy``) — users with source history only, encoded by ``A``; ``λ·D``
     aligns their unit-normalised vectors with the ``"target"`` group's (users of different domains, no link).

Scores come from the trained tables alone (``u · B_j + b_j``, ``u`` the max-scaled sum of the user's source
rows of ``A``); users without source history get target popularity. The initial model is evaluated on valid
too, and kept when no epoch beats it (the history then says so).

Axis conventions: ``U`` users, ``N_s`` / ``N_t`` source / target items, ``r`` the rank, ``B`` rows of a group,
``L`` history length (``-1`` = padding), ``P`` positives per row (``-1`` = padding).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import checks
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset, DataError
from jaxrec.methods.common import (
    Trained,
    check_pair,
    check_parallel,
    fallback_scorer,
    has_history,
    train_config,
    valid_evaluator,
)
from jaxrec.methods.factor_model import FactorMapModel, low_rank_factors
from jaxrec.methods.inductive import group_batches, holdout_rows
from jaxrec.methods.item_map import ItemMapConfig, train_item_map
from jaxrec.methods.mapping import sample_rows
from jaxrec.methods.retrieval import full_softmax_loss

__all__ = ["FactorMapConfig", "factor_map_init", "factor_map_scorer", "train_factor_map"]

_ITEM_MAP = ItemMapConfig()


@dataclasses.dataclass(frozen=True)
class FactorMapConfig:
    """Hyper-parameters of ``factor_map``.

    Attributes:
      rank: r, the width of the factor tables (clipped to the smaller catalogue).
      lams, target_lams, target_weights, item_norm, pop_weight: ``item_map``'s grids and constants
        (:class:`jaxrec.methods.ItemMapConfig`), chosen on valid as ``item_map`` chooses them.
      temperature: initial multiplier ``exp(t)`` of the scores in the task loss (learned from there).
      history_length: L, source items of a ``"cross"`` / ``"source"`` row and target items of a ``"target"``
        row's history (a random subset of longer ones, fresh each epoch); scoring uses every item.
      positives: P, positives per row (a fresh random subset when a user has more).
      target_weight: weight of the within-target objective of the target-only users (0: not trained).
      discrepancy: alignment term between the source-only and the target-only users' vectors (a name of
        ``losses.DISCREPANCIES`` or None).
      lam: λ of the alignment term (for ``"adversarial"``: the maximum of the DANN ramp).
      align_size: rows of each group the alignment term sees per step.
      epochs: maximum epochs (an epoch = one pass over the users with history in both domains).
      batch_size: rows of the ``"cross"`` group per step.
      side_batch_size: rows of each of the ``"source"`` and ``"target"`` groups per step.
      learning_rate: Adam learning rate (the tables start at unit RMS).
      patience: early stopping after this many epochs without a better valid NDCG@10 (cold users, full ranking).
      seed: the sketch of the factorisation, data order, subsets.
      progress: tqdm bars.
      sparse_min_rows: embedding tables of at least this many rows are updated at the rows each batch looks up
        (lazy Adam; see :class:`jaxrec.train.TrainConfig`); None: every parameter densely.
      parallel: data parallelism of the train step (``"none"``, ``"pmap"``, ``"mesh"``); ``batch_size`` and
        ``side_batch_size`` must divide by the device count.
    """

    rank: int = 256
    lams: tuple[float, ...] = _ITEM_MAP.lams
    target_lams: tuple[float, ...] = _ITEM_MAP.target_lams
    target_weights: tuple[float, ...] = _ITEM_MAP.target_weights
    item_norm: float = _ITEM_MAP.item_norm
    pop_weight: float = _ITEM_MAP.pop_weight
    temperature: float = 10.0
    history_length: int = 128
    positives: int = 64
    target_weight: float = 0.0
    discrepancy: str | None = None
    lam: float = 0.0
    align_size: int = 256
    epochs: int = 10
    batch_size: int = 128
    side_batch_size: int = 512
    learning_rate: float = 3e-4
    patience: int = 3
    seed: int = 0
    progress: bool = True
    parallel: str = "none"
    sparse_min_rows: int | None = tr.SPARSE_MIN_ROWS

    def __post_init__(self):
        check_parallel(self)
        names = ("rank", "history_length", "positives", "align_size", "epochs", "batch_size", "side_batch_size")
        for name in names + ("patience",):
            checks.positive_int(f"FactorMapConfig.{name}", getattr(self, name))
        for name in ("temperature", "learning_rate"):
            checks.fraction(f"FactorMapConfig.{name}", getattr(self, name), high=math.inf, closed="neither")
        for name in ("target_weight", "lam"):
            checks.fraction(f"FactorMapConfig.{name}", getattr(self, name), high=math.inf, closed="left")
        tr.resolve_discrepancy(self.discrepancy, None)
        self.item_map_config()

    def item_map_config(self) -> ItemMapConfig:
        """The :class:`ItemMapConfig` the model starts from."""
        return ItemMapConfig(
            lams=self.lams,
            target_lams=self.target_lams,
            target_weights=self.target_weights,
            item_norm=self.item_norm,
            pop_weight=self.pop_weight,
            seed=self.seed,
        )


# ----------------------------------------------------------------------------------------------------------------
# Initialisation, data, objective, scorer
# ----------------------------------------------------------------------------------------------------------------


def factor_map_init(
    ds: CrossDomainDataset, source: str, target: str, config: FactorMapConfig
) -> tuple[dict, ItemMapConfig]:
    """The initial parameters of :class:`FactorMapModel`: ``item_map`` (chosen on valid) factorised to rank r.

    Returns:
      ``(params, chosen)``: ``{"source" [N_s, r], "target" [N_t, r], "bias" [N_t], "log_temperature" [],
      ("target_history" [N_t, r])}`` (both tables scaled to unit RMS, which leaves every user's ranking as it
      is), and the ``item_map`` config that was chosen.
    """
    solved = train_item_map(ds, source=source, target=target, config=config.item_map_config())
    counts = ds.item_popularity(source).astype(np.float64)
    scale = np.where(counts > 0, np.maximum(counts, 1.0) ** -config.item_norm, 0.0).astype(np.float32)
    if "W" in solved.params:  # the dense solver: W' [N_s, N_t]
        matrix = jnp.asarray(scale)[:, None] * solved.params["W"]
        left, right = low_rank_factors(matrix, config.rank, jax.random.key(config.seed))
    else:  # the low-rank solver: W' = A C, A [N_s, k], C [k, N_t]
        left, right = _truncate(
            jnp.asarray(scale)[:, None] * solved.params["source_factors"], solved.params["target_factors"], config.rank
        )
    rms = lambda x: x / jnp.maximum(jnp.sqrt(jnp.mean(x**2)), 1e-12)  # noqa: E731
    log_pop = np.log1p(ds.item_popularity(target).astype(np.float32))
    params = {
        "source": rms(left),
        "target": rms(right),
        "bias": jnp.asarray(config.pop_weight * log_pop / max(float(log_pop.max()), 1e-12)),
        "log_temperature": jnp.float32(math.log(config.temperature)),
    }
    if config.target_weight > 0 or config.discrepancy is not None:
        params["target_history"] = params["target"]
    return params, solved.config


def _truncate(a: jax.Array, c: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """The best rank-``rank`` factors ``(left [N_s, r], right [N_t, r])`` of ``a @ c`` (``a [N_s, k]``, ``c [k,
    N_t]``), without forming the product: a QR of ``a``, then the SVD of the small ``[k, N_t]`` matrix."""
    q, r = jnp.linalg.qr(a)
    u, s, vt = jnp.linalg.svd(r @ c, full_matrices=False)
    rank = min(rank, s.shape[0])
    return q @ (u[:, :rank] * s[:rank]), vt[:rank].T


def _groups(ds: CrossDomainDataset, source: str, target: str, config: FactorMapConfig) -> dict[str, np.ndarray]:
    """The users of each trained group (see the module docstring)."""
    n_src, n_tgt = ds.seen(source, "train").lengths, ds.seen(target, "train").lengths
    groups = {"cross": np.flatnonzero((n_src > 0) & (n_tgt > 0))}
    if groups["cross"].size == 0:
        raise DataError(f"factor_map needs users with train history in both {source!r} and {target!r}; none found")
    if config.target_weight > 0 or config.discrepancy is not None:
        groups["target"] = np.flatnonzero((n_tgt >= 2) & (n_src == 0))
    if config.discrepancy is not None:
        groups["source"] = np.flatnonzero((n_src > 0) & (n_tgt == 0))
        if groups["target"].size == 0 or groups["source"].size == 0:
            raise DataError("factor_map's discrepancy needs users with source history only and target history only")
    return {g: users for g, users in groups.items() if users.size}


def factor_map_batches(ds: CrossDomainDataset, source: str, target: str, config: FactorMapConfig):
    """``(batches, steps_per_epoch, groups)``: ``batches(rng)`` yields ``{group: {"history" int32 [B, L],
    "positives" int32 [B, P], "mask" bool [B, P], "rows" bool [B]}}`` with fixed shapes; the ``"cross"`` rows go
    once through their users per epoch, the other groups through fresh permutations of theirs."""
    seen = {"source": ds.seen(source, "train"), "target": ds.seen(target, "train")}
    groups = _groups(ds, source, target, config)
    sizes = {g: config.batch_size if g == "cross" else config.side_batch_size for g in groups}
    steps = -(-groups["cross"].size // sizes["cross"])
    length, positives = config.history_length, config.positives

    def rows_of(group: str, users: np.ndarray, rng: np.random.Generator) -> dict:
        real, size = users.shape[0], sizes[group]
        users = np.concatenate([users, np.zeros(size - real, users.dtype)])
        if group == "cross":
            hist, pos = (
                sample_rows(seen["source"], users, length, rng),
                sample_rows(seen["target"], users, positives, rng),
            )
        elif group == "target":
            hist, pos = holdout_rows(seen["target"], users, history_length=length, positives=positives, rng=rng)
        else:
            hist, pos = sample_rows(seen["source"], users, length, rng), np.full((size, 1), -1, np.int32)
        rows = np.arange(size) < real
        return {
            "history": np.where(rows[:, None], hist, -1),
            "positives": pos,
            "mask": (pos >= 0) & rows[:, None],
            "rows": rows,
        }

    return group_batches(groups, sizes, steps, rows_of), steps, tuple(groups)


def factor_map_objective(config: FactorMapConfig, groups, *, total_steps: int) -> tr.Objective:
    """Full softmax over the target items on ``"cross"`` (weight 1) and ``"target"`` (``target_weight``), plus
    ``λ·D`` of ``config.discrepancy`` on the ``"source"`` / ``"target"`` vectors (:func:`jaxrec.train.alignment`)."""
    weights = {g: w for g, w in (("cross", 1.0), ("target", config.target_weight)) if g in groups and w > 0}

    def task_loss(outputs, batch):
        del batch
        return {g: full_softmax_loss(outputs[g]["pos"], outputs[g]["logits"], outputs[g]["mask"]) for g in weights}

    terms = tr.alignment(config.discrepancy, config.lam, total_steps=total_steps)
    return tr.Objective(task_loss, weights=weights, **terms)


def _user_sums(table: jax.Array, seen, users: np.ndarray) -> jax.Array:
    """``[len(users), r]`` sums of ``table``'s rows over each user's items in the CSR ``seen``."""
    lengths = seen.lengths[users]
    owner = np.repeat(np.arange(users.size), lengths)
    offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = seen.indices[np.repeat(seen.indptr[users], lengths) + offset]
    return jax.ops.segment_sum(table[jnp.asarray(items, jnp.int32)], jnp.asarray(owner, jnp.int32), users.size)


def factor_map_scorer(model: FactorMapModel, ds: CrossDomainDataset, source: str, target: str):
    """``scorer(params, users=None) -> evaluate.Scorer`` of ``target``: users with source train history (only
    those of ``users`` when given) scored by ``u · B_j + b_j`` over *all* their source train items, the others by
    target popularity."""
    seen, has_src = ds.seen(source, "train"), has_history(ds, (source,))
    normalise = jax.jit(lambda p, u: model.apply({"params": p}, u, method=FactorMapModel.normalise))

    def scorer(params, users: np.ndarray | None = None):
        chosen = np.flatnonzero(has_src) if users is None else np.asarray(users)[has_src[np.asarray(users)]]
        table = np.zeros((ds.n_users, model.rank + 1), np.float32)
        for lo in range(0, chosen.size, 4096):
            part = chosen[lo : lo + 4096]
            table[part, :-1] = np.asarray(normalise(params, _user_sums(params["source"], seen, part)))
        table[chosen, -1] = 1.0
        items = jnp.concatenate([params["target"], params["bias"][:, None]], axis=1)
        encoded = np.zeros(ds.n_users, bool)
        encoded[chosen] = True
        return fallback_scorer(table, items, encoded, ds.item_popularity(target))

    return scorer


# ----------------------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------------------


def train_factor_map(
    ds: CrossDomainDataset, *, source: str, target: str, config: FactorMapConfig = FactorMapConfig()
) -> Trained:
    """``item_map`` factorised to rank r, then trained on every user with the combined loss (module docstring).

    Returns:
      :class:`Trained` with the target's scorer from the best parameters on valid (the initial ones when no epoch
      beats them), the training history (its first record, ``"epoch": 0``, is the initial model's valid score),
      and the config with ``item_map``'s chosen grid values.
    """
    check_pair(ds, source, target)
    batches, steps, groups = factor_map_batches(ds, source, target, config)
    init, chosen = factor_map_init(ds, source, target, config)
    model = FactorMapModel(
        (ds.n_items(source), ds.n_items(target)),
        int(init["source"].shape[1]),
        target_encoder="target_history" in init,
        align_size=config.align_size,
    )
    scorer = factor_map_scorer(model, ds, source, target)
    valid = valid_evaluator(ds, source, target)
    evaluate = None
    if valid is not None:
        valid_users = ds.users_with(target, "valid")
        evaluate = lambda params: valid(scorer(params, valid_users))  # noqa: E731
    objective = factor_map_objective(config, groups, total_steps=steps * config.epochs)
    config_t = train_config(config, steps_per_epoch=steps, early_stopping=valid is not None)
    task = tr.Task(model, objective, batches, evaluate=evaluate, init_params=init, name="factor_map")
    result = tr.fit(config_t, task)
    params, history = result.best_params, list(result.history)
    if evaluate is not None:
        start = {"step": 0, "epoch": 0} | {f"eval/{k}": v for k, v in evaluate(init).items()}
        history.insert(0, start)
        if start["eval/NDCG@10"] >= result.best.get("eval/NDCG@10", -math.inf):
            params = init
    chosen_config = dataclasses.replace(
        config, lams=chosen.lams, target_lams=chosen.target_lams, target_weights=chosen.target_weights
    )
    return Trained({target: scorer(params)}, params, history, chosen_config)

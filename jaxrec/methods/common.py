"""The recipe toolkit: what every recipe of :mod:`jaxrec.methods` is built from.

A recipe is a config dataclass plus ``train(ds, *, source, target, config) -> Trained``. The pieces here are
what recipes share: the result and registry records (:class:`Trained`, :class:`Method`), argument checks
(:func:`check_pair`, :func:`check_parallel`, :func:`check_seed`), config overrides checked against each field's
declared type (:func:`make_config`, what ``methods.run`` and ``jaxrec train --set`` go through), the joint
training data (:func:`domain_batches`), the task objective (``task_loss``: softmax, sampled softmax or BPR, from
:mod:`jaxrec.methods.retrieval`) and the output record every pair recipe model returns (:func:`task_objective`,
:func:`bpr_objective`, :func:`pair_outputs`), parameter creation at init (:func:`create_every_table`), the train
configuration and the early-stopping measure (:func:`train_config`, :func:`valid_evaluator`), and the scorer
that ranks users without history by popularity (:func:`fallback_scorer` over :func:`warm_or_popularity`).

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

import ast
import collections.abc
import contextlib
import dataclasses
import math
import re
import types
import typing
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import batching, checks
from jaxrec import evaluate as ev
from jaxrec import train as tr
from jaxrec.data import CrossDomainDataset, DataError
from jaxrec.methods.retrieval import TASK_LOSSES, task_objective

__all__ = [
    "KINDS",
    "PARALLEL",
    "TASK_LOSSES",
    "Method",
    "Trained",
    "bpr_objective",
    "check_pair",
    "check_parallel",
    "check_seed",
    "create_every_table",
    "domain_batches",
    "fallback_scorer",
    "has_history",
    "make_config",
    "pair_outputs",
    "tag_phase",
    "task_objective",
    "train_config",
    "valid_evaluator",
    "valid_subset",
    "warm_or_popularity",
]

#: The data-parallel strategies of a recipe's train step (see :func:`jaxrec.train.make_train_step`).
PARALLEL = ("none", "pmap", "mesh")
#: The kinds of recipe (:attr:`Method.kind`).
KINDS = ("learned", "closed_form", "combination", "baseline")
#: Seeds are integers in ``[0, SEED_LIMIT)``: what both ``jax.random.key`` and ``numpy.random.default_rng`` take.
SEED_LIMIT = 2**63


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
      kind: one of :data:`KINDS`: ``"learned"`` (scores with embeddings and networks trained through
        :func:`jaxrec.train.fit`; it may start from closed-form factors), ``"closed_form"`` (solved, not
        trained), ``"combination"`` (adds a closed form's scores to a learned model's) or ``"baseline"``.
    """

    name: str
    train: Callable[..., Trained]
    default_config: Any
    summary: str
    kind: str = "learned"


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
    """Checks ``config.parallel`` against :data:`PARALLEL` (and ``config.sparse_min_rows``, where it has one).

    Raises:
      ValueError: naming the config class, the value and the valid strategies (or a ``sparse_min_rows`` that is
        not a positive int or None).
    """
    if config.parallel not in PARALLEL:
        raise ValueError(f"{type(config).__name__}.parallel={config.parallel!r}; expected one of {', '.join(PARALLEL)}")
    rows = getattr(config, "sparse_min_rows", None)
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 1):
        raise ValueError(f"{type(config).__name__}.sparse_min_rows={rows!r}; expected a positive int or None")


def check_seed(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer in ``[0, 2**63)``; else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{name} must be an int in [0, 2**63), got {_shown(value)}")
    return int(value)


def _shown(value: Any, limit: int = 100) -> str:
    """``repr(value)``, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _expected(tp: Any) -> str:
    """What a value of annotation ``tp`` looks like, for messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _expected(a) for a in args)
    if origin is tuple:
        return f"a tuple of {re.sub(r'^an? ', '', _expected(args[0]))}s (e.g. 64,128 or ())"
    if origin in (collections.abc.Mapping, dict):
        return "a mapping (e.g. {'key': 1.0})"
    if origin is collections.abc.Callable or tp is collections.abc.Callable:
        return "a function (from Python only)"
    names = {int: "an int", float: "a finite number", bool: "true or false", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


_INT = re.compile(r"[+-]?[0-9]+")


def _literal(text: str, fail: ValueError) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise fail from None


def _coerce(name: str, tp: Any, value: Any, from_strings: bool) -> Any:
    """``value`` checked against (``from_strings``: parsed as) the annotation ``tp``; ValueError otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    text = value.strip() if from_strings and isinstance(value, str) else None
    fail = ValueError(f"{name} must be {_expected(tp)}, got {_shown(value)}")
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (text or "").lower() in ("none", "null")):
            return None
        for member in (a for a in args if a is not type(None)):
            with contextlib.suppress(ValueError):
                return _coerce(name, member, value, from_strings)
        raise fail
    if origin is tuple and args[-1] is Ellipsis:
        if text is not None:
            value = _literal(text, fail) if text[:1] in "([" else [p.strip() for p in text.split(",") if p.strip()]
        elif isinstance(value, str) and args[0] is str:
            return value  # one name, as the config takes it
        if isinstance(value, (str, bytes)) or not isinstance(value, (collections.abc.Sequence, np.ndarray)):
            raise fail
        try:
            return tuple(_coerce(name, args[0], v, from_strings and isinstance(v, str)) for v in value)
        except ValueError:
            raise fail from None
    if origin is collections.abc.Callable or tp is collections.abc.Callable:
        if text is not None or not callable(value):
            raise fail
        return value
    if origin in (collections.abc.Mapping, dict):
        value = _literal(text, fail) if text is not None else value
        if not isinstance(value, collections.abc.Mapping):
            raise fail
        return value
    if tp is bool and text is not None and text.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        return text.lower() in ("true", "yes", "1", "on")
    if tp is int and text is not None and _INT.fullmatch(text) and len(text) < 30:
        value = int(text)
    if tp is float and text is not None:
        with contextlib.suppress(ValueError):
            value = float(text)
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    ok = {
        bool: isinstance(value, (bool, np.bool_)),
        int: number and isinstance(value, (int, np.integer)),
        float: number and math.isfinite(value),
        str: isinstance(value, str),
    }
    if tp in ok:
        if not ok[tp]:
            raise fail
        if tp is int and not -(2**63) <= value < 2**63:  # what a config may pass on to numpy and JAX
            raise ValueError(f"{name} must be an int in [-2**63, 2**63), got {_shown(value)}")
        return tp(value)
    if text is not None:
        raise ValueError(f"{name} cannot be set from text (its type is {_expected(tp)})")
    return value  # another type (a nested config, Any): the config's own checks judge it


def make_config(default_config: Any, overrides: Mapping[str, Any], *, from_strings: bool = False, owner: str = ""):
    """``default_config`` (a dataclass) with ``overrides`` applied, each value checked against its field's type.

    Every value is checked against the field's declared annotation (read with ``typing.get_type_hints``: ``int``,
    ``float``, ``bool``, ``str``, ``X | None``, ``tuple[X, ...]``, ``Mapping``) before the config is built, so a
    wrong type is a message naming the field, the value and the expected type rather than a ``TypeError`` inside
    the config; then the config's own checks (ranges, choices) run. An int is accepted for a float field; a float
    must be finite.

    Args:
      default_config: the config to start from (e.g. ``methods.get_method("cmf").default_config``).
      overrides: ``{field: value}``.
      from_strings: the values are command-line text (``jaxrec train --set key=value``), parsed by the field's
        type: ``64``, ``1e-3``, ``true``/``false``, ``none``, ``64,128`` or ``(64, 128)`` or ``()`` for a tuple,
        ``{'k': 1}`` for a mapping.
      owner: how messages about unknown fields name the config (default: its class name).

    A config's ``discrepancy_options`` belong to its ``discrepancy``: overriding ``discrepancy`` alone resets them
    to ``None`` (the new term's defaults).

    Returns:
      The new config.

    Raises:
      ValueError: an unknown field (listing the valid ones), a value of the wrong type, or the config's own checks.

    Example:
      >>> from jaxrec.methods import EmbeddingConfig
      >>> make_config(EmbeddingConfig(), {"dim": "32", "user_tower": "64,64"}, from_strings=True).user_tower
      (64, 64)
    """
    cls = type(default_config)
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(overrides) - set(fields), key=str)
    if unknown:
        shown = _shown(unknown) if len(repr(unknown)) > 100 else unknown
        raise ValueError(f"{owner or cls.__name__} has no option(s) {shown}; its options are {fields}")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(f"{cls.__name__}.{k}", hints.get(k, Any), v, from_strings) for k, v in overrides.items()}
    if "discrepancy" in values and "discrepancy_options" in fields and "discrepancy_options" not in values:
        values["discrepancy_options"] = None  # the default options belong to the default discrepancy
    return dataclasses.replace(default_config, **values)


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
    h: jax.Array,
    pos_item: jax.Array,
    neg_item: jax.Array,
    mask: jax.Array,
    reg: tuple[jax.Array, ...],
    *,
    items: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """The output record of one domain's batch, the format every pair recipe model returns and
    :func:`task_objective` reads.

    Args:
      h: ``[B, D]`` user vectors.
      pos_item: ``[B, D]`` vectors of the positive items.
      neg_item: ``[B, n, D]`` vectors of the negatives.
      mask: ``bool [B]``, False on padding rows.
      reg: ``(user [B, D], pos_item [B, D], neg_item [B, n, D])``, what the objective's L2 term penalizes (the
        vectors above, or the embeddings they are computed from).
      items: ``[N, D]`` vectors of the domain's whole catalogue, as scored (needed by the softmax task losses).

    Returns:
      ``{"pos" [B], "neg" [B, n], "user" [B, D], "pos_item" [B, D], "neg_item" [B, n, D], "mask" [B], "h" [B, D],
      "neg_vectors" [B, n, D]}`` (+ ``"items" [N, D]``) with ``pos``/``neg`` the dot-product scores.
    """
    out = {
        "pos": jnp.sum(h * pos_item, -1),
        "neg": jnp.einsum("bd,bnd->bn", h, neg_item),
        "user": reg[0],
        "pos_item": reg[1],
        "neg_item": reg[2],
        "mask": mask,
        "h": h,
        "neg_vectors": neg_item,
    }
    if items is not None:
        out["items"] = items
    return out


def bpr_objective(
    l2: float,
    discrepancy: str | Callable | None = None,
    lam: float | Callable = 0.0,
    *,
    model_kwargs: Callable[[jax.Array], dict] | None = None,
    discrepancy_options: Mapping[str, Any] | None = None,
) -> tr.Objective:
    """:func:`task_objective` with ``task_loss="bpr"``: per domain, masked-mean BPR plus ``l2`` × the mean
    squared norms of the batch's vectors, and optionally ``λ·D`` on the model's ``"align"`` output."""
    return task_objective(
        l2, "bpr", discrepancy, lam, model_kwargs=model_kwargs, discrepancy_options=discrepancy_options
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
        ``patience`` (the last only with ``early_stopping``) and ``sparse_min_rows`` (default
        :data:`jaxrec.train.SPARSE_MIN_ROWS` when the config has no such field).
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
        sparse_min_rows=getattr(config, "sparse_min_rows", tr.SPARSE_MIN_ROWS),
        epochs=config.epochs if epochs is None else epochs,
        seed=config.seed,
        progress=config.progress,
        log_every=max(1, steps_per_epoch // 4),
        optimizer=tr.OptimizerConfig(learning_rate=config.learning_rate if learning_rate is None else learning_rate),
        early_stopping_metric="NDCG@10" if early_stopping else None,
        patience=config.patience if early_stopping else None,
    )


#: Hyper-parameters chosen by scoring every grid value (``item_map``) use at most this many valid cold users.
SELECTION_USERS = 4096


def valid_subset(
    ds: CrossDomainDataset, source: str, target: str, max_users: int | None, seed: int
) -> CrossDomainDataset:
    """``ds`` with the ``valid`` split of ``target`` kept for at most ``max_users`` of its cold users.

    When ``target``/``valid`` has more cold users (``source`` history, no ``target`` train history) than
    ``max_users``, a uniform random subset of them (``numpy.random.default_rng(seed)``, without replacement) keeps
    its valid interactions and every other valid user is dropped from that split; the other splits and domains are
    unchanged. So a grid search scored on valid costs the same whatever the number of users. ``None`` or a
    dataset within the limit: ``ds`` itself.

    Raises:
      ValueError: ``max_users`` is not a positive int or None.
    """
    if max_users is None:
        return ds
    checks.positive_int("max_users", max_users)
    users = ds.cold_users(source, target, "valid") if "valid" in ds.splits(target) else np.zeros(0, np.int64)
    if users.size <= max_users:
        return ds
    keep_users = np.random.default_rng(seed).choice(users, max_users, replace=False)
    valid = ds.interactions(target, "valid")
    keep = np.isin(valid.users, keep_users)
    splits = dict(ds.domain(target).splits)
    splits["valid"] = valid.take(np.flatnonzero(keep))
    note = f"valid of {target}: {max_users:,} of its {users.size:,} cold users kept for selection (seed {seed})"
    return ds.replace_splits({target: splits}, note)


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

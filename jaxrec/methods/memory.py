"""Peak-memory estimates of the recipes, and the up-front check that refuses a recipe that would not fit.

:func:`estimate_memory` adds up, from the dataset's counts and the recipe's config only (no data copied, nothing
allocated on a device), what a recipe holds at its peak: the dataset's arrays, the host-side training data
(seen-item CSR, negative sampler keys, shuffled pairs), the parameters with their Adam moments, the best and
evaluated copies and, for tables that are not updated row-sparse, a dense gradient and update; a step's
activations (gathered vectors, ``[B, N]`` logits of a full softmax); the recipe's own structures (LightGCN's
per-layer edge messages, ``item_map``'s dense Grams and Cholesky solves or its low-rank factors); and the
valid-set full ranking during training. :func:`check_memory` compares it with :func:`memory_limit` and raises
:class:`MemoryLimitError` naming the limit and what to use instead; ``jaxrec.methods.run`` and ``jaxrec train``
call it before any allocation.

The estimates are float32, one device, per recipe family, written from the shapes the code allocates and aimed
at an upper bound within ~2× of the measured peak RSS (``bench/scale.py`` records both: ``est_mb`` and
``peak_mb``).

Axis conventions: ``U`` users, ``N_s`` / ``N_t`` source / target items, ``D`` embedding width, ``B`` rows of a
batch, ``n`` negatives per positive, ``nnz`` train interactions, ``E`` directed graph edges, ``r`` a rank.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numpy as np

from jaxrec.data import CrossDomainDataset
from jaxrec.evaluate.scorers import TILE_FLOATS
from jaxrec.methods.item_map import item_map_solver
from jaxrec.methods.item_map_lowrank import OVERSAMPLE
from jaxrec.methods.lightgcn import epoch_batch_size
from jaxrec.methods.retrieval import FULL_SOFTMAX_LIMIT

__all__ = ["ENV_VAR", "SAFETY", "MemoryEstimate", "MemoryLimitError", "check_memory", "estimate_memory", "memory_limit"]

#: The environment variable that sets the memory limit, in GB (10⁹ bytes).
ENV_VAR = "JAXREC_MEMORY_GB"
#: The fraction of the limit (the variable's value or the physical memory) that a recipe may use.
SAFETY = 0.9
GB = 1e9
F32 = 4
RUNTIME = 640 * 2**20  # Python, JAX, XLA and compiled programs: a small recipe peaks at ~650 MB (bench/scale.py)
TABLE_STATE = 5 * F32  # per table float: the parameter, two Adam moments, the best and the evaluated copies
DENSE_UPDATE = 2 * F32  # per table float updated densely: the gradient and the update
HOST_PAIR = 36  # bytes per train pair: seen CSR (4), sampler keys and their rows (16), shuffled epoch (16)
TOPK = 64 * 2**20  # the streamed top-k of a full ranking (score chunks and running lists)


class MemoryEstimate(NamedTuple):
    """A recipe's estimated peak memory.

    Attributes:
      bytes: the estimated peak of its training and of its evaluation during training, in bytes.
      parts: ``{what: bytes}`` of which ``bytes`` is the sum, largest first.
      alternative: what to use instead when it does not fit (one sentence).
    """

    bytes: int
    parts: dict[str, int]
    alternative: str

    def dominant(self) -> tuple[str, int]:
        """The largest part ``(what, bytes)``."""
        return next(iter(self.parts.items()))


class MemoryLimitError(ValueError):
    """A recipe's estimated memory exceeds the limit (:func:`~jaxrec.methods.memory.memory_limit`); raised before
    anything is allocated."""


def _limit(memory_gb: float | None = None) -> tuple[int, str]:
    """``(bytes, where the limit comes from)``."""
    if memory_gb is None and os.environ.get(ENV_VAR) is not None:
        text = os.environ[ENV_VAR]
        try:
            memory_gb = float(text)
        except ValueError:
            memory_gb = math.nan
        if not (math.isfinite(memory_gb) and memory_gb > 0):
            raise ValueError(f"{ENV_VAR}={text!r}: expected a positive number of GB (e.g. {ENV_VAR}=16)")
        where = f"{SAFETY:g} x {ENV_VAR}={text}"
    elif memory_gb is not None:
        if not (math.isfinite(memory_gb) and memory_gb > 0):
            raise ValueError(f"memory_gb={memory_gb!r}: expected a positive number of GB")
        where = f"{SAFETY:g} x the given {memory_gb:g} GB"
    else:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        where = f"{SAFETY:g} x the machine's {memory_gb:.1f} GB of physical memory; set {ENV_VAR} to change it"
    return int(SAFETY * memory_gb * GB), where


def memory_limit(memory_gb: float | None = None) -> int:
    """The memory a recipe may use, in bytes: :data:`~jaxrec.methods.memory.SAFETY` × ``memory_gb`` when given,
    else × the environment variable ``JAXREC_MEMORY_GB`` (GB) when set, else × the machine's physical memory.

    Args:
      memory_gb: an explicit limit in GB (None: ``JAXREC_MEMORY_GB``, else the physical memory).

    Returns:
      The limit in bytes.

    Raises:
      ValueError: ``JAXREC_MEMORY_GB`` (or ``memory_gb``) is not a positive number, naming the value.
    """
    return _limit(memory_gb)[0]


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (bytes)
# ----------------------------------------------------------------------------------------------------------------


def _dataset(ds: CrossDomainDataset) -> int:
    """The loaded dataset's own arrays."""
    total = ds.user_ids.nbytes + sum(d.item_ids.nbytes for d in ds.domains.values())
    return total + sum(a.nbytes for d in ds.domains.values() for s in d.splits.values() for a in s if a is not None)


def _nnz(ds: CrossDomainDataset, domain: str) -> int:
    return ds.interactions(domain, "train").size


def _host_pairs(ds: CrossDomainDataset, domains) -> int:
    """Seen CSRs, negative samplers and shuffled epochs of the trained domains."""
    return sum(HOST_PAIR * _nnz(ds, d) + 8 * ds.n_users for d in domains)


def _tables(rows, dim: int, config, *, lookups_only: bool = True) -> int:
    """Parameters + Adam state of tables of ``rows`` × ``dim``; dense gradient and update below ``sparse_min_rows``
    (or for tables read whole)."""
    limit = None if getattr(config, "parallel", "none") == "pmap" else getattr(config, "sparse_min_rows", None)
    sparse = lambda r: lookups_only and limit is not None and r >= limit  # noqa: E731
    return sum(r * dim * (TABLE_STATE + (0 if sparse(r) else DENSE_UPDATE)) for r in rows)


def _pair_step(batch: int, n_neg: int, dim: int, task_loss: str, catalogues, factor: int = 1) -> int:
    """One step's activations per domain: the gathered user/positive/negative vectors (scores and L2, forward and
    backward; ``factor`` more for user networks), plus the logits of a (sampled) softmax."""
    total = 0
    for n_items in catalogues:
        total += factor * 4 * F32 * batch * (2 + n_neg) * dim
        if task_loss == "softmax" and batch * n_items <= FULL_SOFTMAX_LIMIT:
            total += 3 * F32 * batch * n_items
        elif task_loss != "bpr":
            total += 3 * F32 * batch * batch * n_neg
    return total


def _ranking(ds: CrossDomainDataset, target: str, width: int) -> int:
    """The valid full ranking of an embedding scorer: user and item tables (and their scorer copies), streamed top-k."""
    return 2 * F32 * (ds.n_users + ds.n_items(target)) * (width + 1) + TOPK


def _dense_ranking(ds: CrossDomainDataset, target: str) -> int:
    """The valid full ranking of a dense scorer: ``[b, N_t]`` score tiles (at most ``TILE_FLOATS``), streamed top-k."""
    return 3 * F32 * min(TILE_FLOATS, 1024 * ds.n_items(target)) + TOPK


def _lengths(ds: CrossDomainDataset, domain: str) -> np.ndarray:
    """``int [U]`` train items per user (a count over the user ids only)."""
    return np.bincount(ds.interactions(domain, "train").users, minlength=ds.n_users)


def _rsvd(short: int, long: int, k: int) -> int:
    """``randomized_svd`` of a sparse ``[short, long]``: float64 bases on the short side, ranges on the long one."""
    return 24 * k * (short + long)


# ----------------------------------------------------------------------------------------------------------------
# Families: {part: bytes} and the alternative
# ----------------------------------------------------------------------------------------------------------------

_SMALLER = "a smaller dim (tables are rows x dim: users + items of every trained domain)"


def _embedding(ds, source, target, config, name):
    extra = tuple(ds.domains) if tuple(config.auxiliary) == ("all",) else tuple(config.auxiliary)
    domains = (target,) if name == "target_only" else tuple(dict.fromkeys((source, target) + extra))
    items = [ds.n_items(d) for d in domains]
    parts = {
        "tables + Adam moments": _tables([ds.n_users] + items, config.dim, config),
        "training pairs (host)": _host_pairs(ds, domains),
        "step activations": _pair_step(
            config.batch_size, config.n_negatives, config.dim, config.task_loss, items, 2 if config.user_tower else 1
        ),
        "valid ranking": _ranking(ds, target, config.dim),
    }
    return parts, f"{_SMALLER}, or shard_rows=True with parallel='mesh' over several devices"


def _joint(ds, source, target, config, name):
    items = [ds.n_items(source), ds.n_items(target)]
    parts = {
        "tables + Adam moments": _tables([ds.n_users] + items, config.dim, config),
        "training pairs (host)": _host_pairs(ds, (source, target)),
        "step activations": _pair_step(config.batch_size, config.n_negatives, config.dim, config.task_loss, items, 2),
        "valid ranking": _ranking(ds, target, config.dim),
    }
    return parts, f"{_SMALLER}, or cmf"


def _lightgcn(ds, source, target, config, name):
    domains = (source, target)
    nodes = ds.n_users + ds.n_items(source) + ds.n_items(target)
    edges = 2 * sum(_nnz(ds, d) for d in domains)
    batch = epoch_batch_size(ds, domains, config)
    dim, layers = config.dim, config.num_layers
    items = [ds.n_items(source), ds.n_items(target)]
    parts = {
        "tables + Adam moments": _tables([nodes], dim, config, lookups_only=False),
        # XLA fuses each layer's gather-scale-scatter: one [E, D] message array forward, one backward (measured:
        # 1.0 GB for E = 3.0M, D = 64, 3 layers), and the node layers of both passes
        "propagation (edge messages, node layers)": F32 * dim * (2 * edges + 2 * (layers + 1) * nodes),
        "graph edges (host + device)": 2 * 17 * edges,
        "training pairs (host)": _host_pairs(ds, domains),
        "step activations": _pair_step(batch, config.n_negatives, dim, config.task_loss, items, 2),
        "valid ranking": _ranking(ds, target, dim),
    }
    return parts, "a smaller dim or num_layers (propagation keeps edges x dim floats per layer), or cmf"


def _pretrained(ds, source, target, config, name):
    """emcdr / ptupcdr: MF pretrained on each domain alone (host copies kept), then a mapping on the overlap."""
    dim = config.dim
    phase = max(
        _tables([ds.n_users, ds.n_items(d)], dim, config)
        + _pair_step(config.batch_size, config.n_negatives, dim, config.task_loss, [ds.n_items(d)])
        for d in (source, target)
    )
    parts = {
        "pretraining tables + Adam moments": phase,
        "pretrained tables (host)": F32 * dim * (2 * ds.n_users + ds.n_items(source) + ds.n_items(target)),
        "training pairs (host)": _host_pairs(ds, (source, target)),
        "valid ranking": _ranking(ds, target, dim) + 2 * F32 * ds.n_users * dim,
    }
    if name == "ptupcdr":
        rows = [ds.n_users, ds.n_items(source), ds.n_items(target)]
        parts["meta model tables + Adam moments"] = _tables(rows, dim, config, lookups_only=False)
        parts["source histories"] = F32 * ds.n_users * config.history_length
    return parts, _SMALLER


def _finetune(ds, source, target, config, name):
    rows = [ds.n_users, ds.n_items(source), ds.n_items(target)]
    items = [ds.n_items(source), ds.n_items(target)]
    parts = {
        "tables + Adam moments": _tables(rows, config.dim, config) + F32 * config.dim * sum(rows),
        "training pairs (host)": _host_pairs(ds, (source, target)),
        "step activations": _pair_step(config.batch_size, config.n_negatives, config.dim, config.task_loss, items),
        "valid ranking": _ranking(ds, target, config.dim),
    }
    return parts, _SMALLER


def _history(ds, source, target, config, name):
    dim, length = config.dim, config.history_length
    groups = [(config.batch_size, ds.n_items(target)), (config.side_batch_size, ds.n_items(source))]
    groups.append((config.side_batch_size, ds.n_items(target)))
    softmax = config.task_loss == "softmax"
    items = [ds.n_items(source), ds.n_items(target)]
    if softmax:
        scores = sum(F32 * b * (3 * n + 3 * dim) + 3 * F32 * n * dim for b, n in groups)
    else:
        k = config.n_negatives  # shared by a group's rows: [K, D] vectors, [B, K] scores
        scores = sum(3 * F32 * (b * config.positives * dim + k * dim + b * k) for b, _ in groups)
    rows = sum(b for b, _ in groups)
    encoder = config.num_layers * F32 * rows * length * (12 * dim + 3 * config.num_heads * length)
    parts = {
        "item tables + Adam moments": _tables(items, dim, config, lookups_only=not softmax),
        "step logits and item vectors" if softmax else "step scores": scores,
        "encoder activations": encoder,
        "source histories + encoded users (host)": F32 * ds.n_users * (length + 2 * (dim + 1)),
        "training pairs (host)": _host_pairs(ds, (source, target)),
        "valid ranking": _ranking(ds, target, dim),
    }
    return parts, 'task_loss="sampled_softmax" (no [batch, items] logits), or a smaller dim / history_length'


def _item_map(ds, source, target, config, name):
    n_s, n_t, users = ds.n_items(source), ds.n_items(target), ds.n_users
    ls, lt = _lengths(ds, source), _lengths(ds, target)
    both = (ls > 0) & (lt > 0)
    valid = min(users, ds.interactions(target, "valid").size)
    parts = {"training data (host)": _host_pairs(ds, (source, target))}
    if item_map_solver(config, n_s, n_t) == "dense":
        source_phase = 4 * n_s * n_s + 3 * n_s * n_t  # Gram, identity, shifted Gram, Cholesky; X_t cross, 2 maps
        target_phase = 2 * n_s * n_s + 2 * n_s * n_t + 6 * n_t * n_t  # + target Gram, EASE solve, the best EASE
        parts["item x item Gram and solves"] = F32 * max(source_phase, target_phase)
        pairs = int(np.sum(ls[both] * lt[both])) + int(np.sum(lt * lt))
        parts["Gram scatter indices"] = 32 * pairs
        parts["valid scores"] = F32 * valid * (n_s + 3 * n_t) + F32 * users * int(ls.max(initial=1))
        parts["valid ranking"] = _dense_ranking(ds, target)
        return parts, 'solver="lowrank" (or "auto"): O((users + items) x rank) memory instead of O(items^2)'
    k = min(config.rank, n_s, n_t) + OVERSAMPLE
    r = min(config.rank, n_s, n_t)
    overlap, target_users = int(both.sum()), int((lt > 0).sum())
    svd_s = _rsvd(min(overlap, n_s), max(overlap, n_s), k)
    svd_t = _rsvd(min(target_users, n_t), max(target_users, n_t), k)
    cg = max(F32 * r * (10 * n_t + 2 * target_users), 24 * n_t * r)  # CG on r right-hand sides; Woodbury in float64
    parts["randomised SVDs and CG solves"] = max(svd_s, svd_t, cg)
    parts["low-rank factors"] = F32 * r * (2 * n_s + 4 * n_t + users + valid)
    parts["sparse rows"] = 4 * 12 * (_nnz(ds, source) + _nnz(ds, target))
    parts["valid ranking"] = _dense_ranking(ds, target)
    return parts, "a smaller rank (ItemMapConfig.rank; factors and SVD ranges are (users + items) x rank floats)"


def _factor_map(ds, source, target, config, name):
    solve, _ = _item_map(ds, source, target, config.item_map_config(), "item_map")
    n_s, n_t, dim = ds.n_items(source), ds.n_items(target), min(config.rank, ds.n_items(source), ds.n_items(target))
    extra = config.target_weight > 0 or config.discrepancy is not None
    groups = [config.batch_size] + [config.side_batch_size] * (2 if config.discrepancy else int(extra))
    train = {
        "factor tables + Adam moments": _tables([n_s, n_t] + [n_t] * extra, dim, config, lookups_only=False),
        "step logits [B, N_t]": sum(4 * F32 * b * n_t + 3 * F32 * b * config.history_length * dim for b in groups),
        "valid ranking": _ranking(ds, target, dim),
    }
    parts = {"training data (host)": solve.pop("training data (host)")}
    if sum(solve.values()) >= sum(train.values()):
        parts |= {f"item_map init: {k}": v for k, v in solve.items()}
        return parts, "a smaller catalogue for the init (item_map's dense solver runs up to 32,768 items), or cmf"
    return parts | train, "a smaller rank, or cmf"


def _popularity(ds, source, target, config, name):
    return {"item counts and ranking": 16 * ds.n_items(target) + TOPK}, "nothing smaller exists"


_FAMILIES = {"popularity": _popularity, "item_map": _item_map, "factor_map": _factor_map, "emcdr": _pretrained}
_FAMILIES |= {"ptupcdr": _pretrained, "finetune": _finetune, "lightgcn": _lightgcn, "history": _history}
_FAMILIES |= dict.fromkeys(("target_only", "cmf", "mmd", "coral", "dann"), _embedding)
_FAMILIES |= dict.fromkeys(("shared_bottom", "mmoe", "ple", "star", "conet", "cross_stitch"), _joint)


def estimate_memory(name: str, ds: CrossDomainDataset, *, source: str, target: str, config: Any) -> MemoryEstimate:
    """The estimated peak memory of recipe ``name`` with ``config`` on ``ds`` (``source`` → ``target``).

    Reads counts and shapes only: the dataset's sizes, its arrays' ``nbytes`` and (for ``item_map`` and
    ``factor_map``) per-user train counts.

    Args:
      name: a key of :data:`jaxrec.methods.METHODS`.
      ds: the dataset; source, target: its two domains.
      config: the recipe's config (e.g. ``METHODS[name].default_config``).

    Returns:
      A :class:`~jaxrec.methods.memory.MemoryEstimate` whose parts include the dataset's arrays and the runtime.

    Raises:
      ValueError: an unknown recipe name, listing the known ones.

    Example:
      >>> est = estimate_memory("cmf", ds, source="source", target="target", config=EmbeddingConfig())  # doctest: +SKIP
      >>> est.bytes / 1e9, est.dominant()[0]  # doctest: +SKIP
      (0.52, 'runtime (Python, JAX, XLA)')
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(_FAMILIES)}")
    parts, alternative = _FAMILIES[name](ds, source, target, config, name)
    parts = {"dataset arrays": _dataset(ds), "runtime (Python, JAX, XLA)": RUNTIME, **parts}
    parts = dict(sorted(((k, int(v)) for k, v in parts.items()), key=lambda kv: -kv[1]))
    return MemoryEstimate(sum(parts.values()), parts, alternative)


def check_memory(
    name: str, ds: CrossDomainDataset, *, source: str, target: str, config: Any, memory_gb: float | None = None
) -> MemoryEstimate:
    """Refuses recipe ``name`` up front when its :func:`~jaxrec.methods.memory.estimate_memory` exceeds
    :func:`~jaxrec.methods.memory.memory_limit`.

    Args:
      name, ds, source, target, config: as :func:`~jaxrec.methods.memory.estimate_memory`.
      memory_gb: the limit in GB before :data:`~jaxrec.methods.memory.SAFETY` (None: ``JAXREC_MEMORY_GB``, else
        the physical memory).

    Returns:
      The estimate, when it fits.

    Raises:
      MemoryLimitError: it does not fit; the message names the recipe, the estimate and its largest part, the
        limit and where it comes from, and the alternative.
      ValueError: a bad ``JAXREC_MEMORY_GB``.
    """
    limit, where = _limit(memory_gb)
    estimate = estimate_memory(name, ds, source=source, target=target, config=config)
    if estimate.bytes > limit:
        part, size = estimate.dominant()
        raise MemoryLimitError(
            f"{name} would need about {estimate.bytes / GB:,.1f} GB (mostly {part}: {size / GB:,.1f} GB) on "
            f"{ds.n_users:,} users and {ds.n_items(source):,} + {ds.n_items(target):,} items, over the limit of "
            f"{limit / GB:,.1f} GB ({where}). Use {estimate.alternative}. To run it anyway: raise {ENV_VAR}, or "
            f"pass check_memory=False to jaxrec.methods.run."
        )
    return estimate

"""The evaluation protocols: full ranking and sampled metrics of a scorer on held-out users.

Axis conventions in this file: ``B`` = users (or held-out pairs) in one batch, ``N`` = items of the target
domain, ``d`` = embedding width, ``K = max(ks)``, ``m`` = padded number of excluded (seen train) items per
user, ``P`` = padded number of held-out items per user, ``n`` = negatives per pair. Item ids are the
domain's contiguous ids; ``-1`` is padding everywhere.

Two protocols:

* **full** — each held-out user's items are ranked among *all* ``N`` items of the target domain, minus the
  user's seen *train* items of that domain; the top-``K`` list comes from :mod:`jaxrec.topk` and the metrics
  (:func:`jaxrec.metrics.ranking_metrics_per_user`) are averaged over users.
* **sampled** (the shared dataset's published protocol, CDRIB's) — each held-out ``(user, item)`` pair is
  ranked among ``n`` negatives drawn uniformly from the *distinct* items of the domain's train split, never
  the positive itself (:func:`jaxrec.metrics.sample_negatives`, deterministic per seed); ties count against
  the positive; metrics are averaged over pairs, then the mean and std over seeds are reported.

Held-out pairs are the distinct ``(user, item)`` pairs of ``target``/``split`` for the selected users
(:mod:`jaxrec.evaluate.users`), ordered by user id, then item id. Users are processed in fixed-size batches
(the last one padded and masked), so each jitted batch function compiles once per call of :func:`evaluate` —
and once for all calls when ``users_fn`` is a :class:`jax.tree_util.Partial` over module-level code, as the
scorers of :mod:`jaxrec.evaluate.scorers` are. Options are checked first (:mod:`jaxrec.evaluate.options`),
then the batch functions are traced on the first batch's shapes, then the protocols run; with
``check_finite`` the per-user finite flags of every batch are read with its results.

Full ranking never holds a users × items matrix: users go through the top-``K`` kernel in batches, and an
embedding scorer's items stream through it in chunks (``[B, C]`` score tiles, :func:`jaxrec.topk.similarity_topk`);
a dense scorer's batches are cut so that its ``[B, N]`` tile stays within ``scorers.TILE_FLOATS`` floats
(:func:`~jaxrec.evaluate.scorers.batch_rows`). Memory is then ``O(B·(C + K) + N·d)`` on the device, and the
host holds ``[U, m]`` exclusions and ``[U, P]`` held-out items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxrec import metrics
from jaxrec.data import CrossDomainDataset
from jaxrec.evaluate.options import PROTOCOLS, Plan, check_options, round_width
from jaxrec.evaluate.scorers import (
    Scorer,
    batch_rows,
    batches,
    check_flags,
    check_scorer,
    grouped_pairs,
    jit_for,
    pad_rows,
    pair_batch,
    topk_batch,
    user_batches,
    user_pair_batch,
)
from jaxrec.evaluate.users import user_selection

__all__ = ["PROTOCOLS", "evaluate", "evaluate_cold_warm", "evaluate_domains"]

# Most float32 values gathered at once when scoring sampled candidates: a pair batch holds at most
# _GATHER_BUDGET // ((1 + n) * width) pairs, width = d (embeddings) or N (dense scores). 2**24 = 64 MiB.
_GATHER_BUDGET = 1 << 24
# A dense scorer's pair batches hold at most this many pairs per user of the batch (held-out items per user are
# few; a user with more spans several batches).
_DENSE_PAIRS_PER_USER = 8

_ranking_batch = jax.jit(metrics.ranking_metrics_per_user, static_argnames=("ks",))


# --------------------------------------------------------------------------------------------------
# The two protocols.


def _full_ranking(scorer, top, ds, target, split, plan: Plan, where: str) -> dict[str, float]:
    n_items = ds.n_items(target)
    selected, ks = plan.selected, plan.ks
    heldout = ds.seen(target, split)
    positives = heldout.to_padded(selected, width=round_width(int(heldout.lengths[selected].max())))
    parts, flags = [], []
    for lo, hi, u, ex in user_batches(selected, plan.exclude, batch_rows(scorer, plan.batch_size, n_items)):
        _, indices, finite = top(scorer.users_fn, scorer.items, u, ex, k=max(ks), n_items=n_items)
        where_real = pad_rows(np.ones(hi - lo, bool), u.shape[0], False)
        pos = pad_rows(positives[lo:hi], u.shape[0], -1)
        parts.append(_ranking_batch(indices, pos, where=where_real, ks=ks))  # stays on device until the end
        flags.append((hi - lo, finite))
    if plan.check_finite:
        check_flags(selected, flags, scorer, where)
    valid = np.concatenate([np.asarray(v) for _, v in parts])
    count = max(int(valid.sum()), 1)
    names = parts[0][0].keys()
    return {
        name: float(np.concatenate([np.asarray(m[name], np.float64) for m, _ in parts])[valid].sum() / count)
        for name in names
    }


def _pair_batch_size(batch_size: int, n_candidates: int, width: int) -> int:
    return max(1, min(batch_size, _GATHER_BUDGET // max(1, n_candidates * width)))


def _pairs(ds, target, split, selected) -> tuple[np.ndarray, np.ndarray]:
    """Held-out pairs of the selected users, by user then item: ``(users int32[P], items int64[P])``."""
    heldout = ds.seen(target, split)
    pair_users = np.repeat(selected, heldout.lengths[selected]).astype(np.int32)
    pair_items = heldout.to_padded(selected)
    return pair_users, pair_items[pair_items >= 0].astype(np.int64)  # row-major: by user, then item


def _pair_rows(scorer, n_negatives: int, batch_size: int, n_pairs: int) -> int:
    """Pairs per batch of the sampled protocol for an embedding scorer (``[B, 1 + n, d]`` candidate vectors)."""
    return min(_pair_batch_size(batch_size, 1 + n_negatives, scorer.items.shape[1]), n_pairs)


def _candidates(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """``int32[P, 1 + n]``: each pair's positive item, then its negatives (built one batch at a time)."""
    out = np.empty((positives.shape[0], 1 + negatives.shape[1]), np.int32)
    out[:, 0] = positives
    out[:, 1:] = negatives
    return out


def _dense_sizes(scorer, n_items: int, batch_size: int, n_users: int, n_pairs: int) -> tuple[int, int]:
    """A dense scorer's ``(users per batch, pairs per batch)`` in the sampled protocol, for ``n_users`` users with
    ``n_pairs`` pairs; each user's ``[N]`` score row is computed once per batch for all of their pairs."""
    u = min(batch_rows(scorer, batch_size, n_items), max(1, n_users))
    return u, min(_DENSE_PAIRS_PER_USER * u, max(1, n_pairs))


def _sampled(scorer, fn, ds, target, split, plan: Plan, where: str):
    pair_users, pair_items = _pairs(ds, target, split, plan.selected)
    n_pairs = pair_users.shape[0]
    n_items = ds.n_items(target)
    dense = scorer.items is None
    if dense:
        n_users = int(np.count_nonzero(np.diff(pair_users))) + 1 if n_pairs else 0  # pairs are ordered by user
        bu, b = _dense_sizes(scorer, n_items, plan.batch_size, n_users, n_pairs)
        groups = list(grouped_pairs(pair_users, bu, b))
    else:
        b = _pair_rows(scorer, plan.n_negatives, plan.batch_size, n_pairs)
        groups = [(lo, hi, pad_rows(pair_users[lo:hi], b, 0), None) for lo, hi in batches(n_pairs, b)]
    runs = []
    for seed in plan.seeds:
        negatives = metrics.sample_negatives(seed, n_pairs, plan.pool, plan.n_negatives, exclude=pair_items)
        parts = []
        for lo, hi, users, rows in groups:
            candidates = pad_rows(_candidates(pair_items[lo:hi], negatives[lo:hi]), b, 0)
            if dense:
                args = (pad_rows(users, bu, 0), pad_rows(rows, b, 0), candidates)
            else:
                args = (users, candidates)
            parts.append((hi - lo, fn(scorer.users_fn, scorer.items, *args, n_items=n_items, ks=plan.sampled_ks)))
        del negatives
        if plan.check_finite:
            check_flags(pair_users, [(n, f) for n, (_, f) in parts], scorer, where)
        names = parts[0][1][0].keys()
        runs.append(
            {
                name: float(sum(np.asarray(m[name], np.float64)[:n].sum() for n, (m, _) in parts) / n_pairs)
                for name in names
            }
        )
    agg = metrics.aggregate_seeds(runs)
    return {n: a["mean"] for n, a in agg.items()}, {n: a["std"] for n, a in agg.items()}, n_pairs


def _trace_first_batches(scorer, top, pairs, ds, target, split, plan: Plan) -> None:
    """Traces the batch functions on the shapes of the first batches (no computation; the real calls reuse the
    traces): a ``users_fn`` with the wrong output shape or dtype fails here, before any work.

    ``users_fn`` is closed over rather than passed, so that no cache of ``eval_shape`` keys on its code (a
    closure there would stay alive with everything it holds).
    """
    n_items = ds.n_items(target)
    fn = scorer.users_fn
    if "full" in plan.protocols:
        b = min(batch_rows(scorer, plan.batch_size, n_items), plan.selected.shape[0])
        u = np.zeros((b,), np.int32)
        ex = np.zeros((b, plan.exclude.shape[1]), np.int32)
        jax.eval_shape(lambda items, u, ex: top(fn, items, u, ex, k=max(plan.ks), n_items=n_items), scorer.items, u, ex)
    if "sampled" in plan.protocols:
        lengths = ds.seen(target, split).lengths[plan.selected]
        n_pairs = int(lengths.sum())
        if scorer.items is None:
            bu, b = _dense_sizes(scorer, n_items, plan.batch_size, int(np.count_nonzero(lengths)), n_pairs)
            args = (np.zeros((bu,), np.int32), np.zeros((b,), np.int32))
        else:
            b = _pair_rows(scorer, plan.n_negatives, plan.batch_size, n_pairs)
            args = (np.zeros((b,), np.int32),)
        c = np.zeros((b, 1 + plan.n_negatives), np.int32)
        jax.eval_shape(
            lambda items, args, c: pairs(fn, items, *args, c, n_items=n_items, ks=plan.sampled_ks),
            scorer.items,
            args,
            c,
        )


def evaluate(
    scorer: Scorer,
    ds: CrossDomainDataset,
    *,
    target: str,
    split: str = "test",
    source: str | None = None,
    users: str = "cold",
    ks: Sequence[int] = (10, 20, 50),
    sampled_ks: Sequence[int] = (1, 5, 10),
    n_negatives: int = 999,
    seeds: Sequence[int] = (0, 1, 2),
    protocols: Sequence[str] = PROTOCOLS,
    batch_size: int = 1024,
    check_finite: bool = True,
) -> dict[str, Any]:
    """Evaluates ``scorer`` on the held-out users of ``target``/``split`` under both protocols.

    Full ranking leaves out each user's seen ``target`` *train* items only (a held-out item that is also a
    train item of the same user is therefore never ranked, and counts as a miss); the sampled protocol draws
    its negatives from the distinct ``target`` train items, excluding only the pair's own positive.

    Every option is checked before any scoring (:func:`check_options`, which a caller may also run before
    training), and the batch functions are traced on the first batch's shapes, so a ``users_fn`` with the
    wrong output shape or dtype fails before any work too.

    Args:
        scorer: a :class:`Scorer` over the items of ``target``.
        ds: the dataset.
        target: domain whose held-out items are ranked.
        split: held-out split, ``"test"`` or ``"valid"``.
        source: for ``users="cold"``, also require ``source`` train history.
        users: ``"cold"``, ``"warm"`` or ``"all"`` (see :func:`select_users`).
        ks: full-ranking cutoffs; ``max(ks)`` must not exceed the catalogue minus any user's exclusions.
        sampled_ks: sampled-protocol cutoffs.
        n_negatives: negatives per held-out pair (999 in the published protocol).
        seeds: one sampled run per seed (the negatives are a function of the seed).
        protocols: any of ``"full"``, ``"sampled"``.
        batch_size: users per jitted batch (a dense scorer's are capped so that one ``[B, N]`` score tile holds
            at most ``scorers.TILE_FLOATS`` floats); pairs per batch are capped so one gather holds at most 2**24
            floats.
        check_finite: refuse a scorer whose item table holds ``NaN`` / ``±inf`` (checked once, up front) or
            whose ``users_fn`` returns such values (dense scores: ``NaN``) for an evaluated user: each batch
            program also returns one flag per user, read with the results (no extra synchronisation; measured
            overhead within noise). The error names the first users. ``False`` skips both checks.

    Returns:
        The metrics,
        ``{"full": {"Recall@k", "Precision@k", "NDCG@k", "HR@k", "MRR@k" for k in ks, "MRR"},
        "sampled": {"MRR", "NDCG@k", "HR@k" for k in sampled_ks, "AUC"} (means over seeds),
        "sampled_std": {same names: sample std over seeds, 0 for one seed},
        "counts": {"users": U, "pairs": held-out pairs, "seeds": len(seeds)}}`` of Python floats/ints;
        the protocol keys are present only for the protocols asked for.

    Raises:
        ValueError: unknown protocol, split, domain or user selection (listing the valid ones), empty
            selection, ``K`` larger than the catalogue minus exclusions, empty or non-positive ks, empty or
            negative seeds, a bad batch size, wrong scorer shapes, non-finite scorer outputs; each message names
            the option and its value (see :func:`check_options`).
        TypeError: a scorer that is not a :class:`Scorer`, non-floating outputs, a non-bool ``check_finite``.

    Example:
        >>> from jaxrec import data
        >>> from jaxrec.evaluate import popularity_scorer
        >>> ds = data.cold_start_split(data.synthetic(n_users=300, n_items=(80, 60))[0], "source", "target")
        >>> res = evaluate(popularity_scorer(ds.item_popularity("target")), ds, target="target",
        ...                source="source", ks=(10, 20), seeds=(0, 1))
        >>> res["counts"]
        {'users': 18, 'pairs': 136, 'seeds': 2}
        >>> round(res["full"]["Recall@10"], 3), round(res["sampled"]["HR@10"], 3)  # doctest: +SKIP
        (0.334, 0.059)
    """
    plan = check_options(
        ds,
        target=target,
        split=split,
        source=source,
        users=users,
        ks=ks,
        sampled_ks=sampled_ks,
        n_negatives=n_negatives,
        seeds=seeds,
        protocols=protocols,
        batch_size=batch_size,
        check_finite=check_finite,
    )
    scorer = check_scorer(scorer, ds.n_items(target), target, check_finite=plan.check_finite)
    top = jit_for(scorer.users_fn, topk_batch)
    pairs = jit_for(scorer.users_fn, user_pair_batch if scorer.items is None else pair_batch)
    _trace_first_batches(scorer, top, pairs, ds, target, split, plan)
    where = f"target={target!r}, split={split!r}"

    out: dict[str, Any] = {}
    if "full" in plan.protocols:
        out["full"] = _full_ranking(scorer, top, ds, target, split, plan, where)
    n_pairs = int(ds.seen(target, split).lengths[plan.selected].sum())
    if "sampled" in plan.protocols:
        out["sampled"], out["sampled_std"], n_pairs = _sampled(scorer, pairs, ds, target, split, plan, where)
    out["counts"] = {"users": int(plan.selected.size), "pairs": int(n_pairs), "seeds": len(plan.seeds)}
    return out


def evaluate_cold_warm(
    scorer: Scorer,
    ds: CrossDomainDataset,
    *,
    target: str,
    split: str = "test",
    source: str | None = None,
    **kwargs,
) -> dict[str, dict[str, Any]]:
    """Cold and warm users of ``target``/``split`` evaluated separately.

    Args:
        scorer, ds, target, split, source: as for :func:`evaluate` (``source`` narrows the cold users only).
        **kwargs: any other keyword of :func:`evaluate` except ``users``.

    Returns:
        ``{"cold": evaluate(...), "warm": evaluate(...)}``, each only when that selection is non-empty.

    Raises:
        ValueError: when neither selection has users, or ``users`` is passed.
    """
    if "users" in kwargs:
        raise ValueError("evaluate_cold_warm chooses users itself; do not pass users=")
    out = {}
    for kind in ("cold", "warm"):
        src = source if kind == "cold" else None
        if user_selection(ds, target, split, src, kind).size == 0:
            continue
        out[kind] = evaluate(scorer, ds, target=target, split=split, source=src, users=kind, **kwargs)
    if not out:
        raise ValueError(f"no cold or warm users to evaluate in target={target!r}, split={split!r}")
    return out


def evaluate_domains(
    scorers: Mapping[str, Scorer],
    ds: CrossDomainDataset,
    *,
    split: str = "test",
    pairs: Mapping[str, str],
    users: str = "cold",
    **kwargs,
) -> dict[str, dict[str, Any]]:
    """Evaluates several directions (e.g. Game→Video and Video→Game) in one call.

    Args:
        scorers: domain → :class:`Scorer` over that domain's items.
        ds: the dataset.
        split: held-out split.
        pairs: target → source; each target with held-out users of the selection is evaluated.
        users: user selection for every direction (see :func:`select_users`).
        **kwargs: other keywords of :func:`evaluate`.

    Returns:
        ``{target: evaluate(scorers[target], ds, target=target, source=pairs[target], ...)}`` for every
        target that has selected users; targets without any are left out.

    Raises:
        ValueError: a target without a scorer (listing the available ones), or no direction with users.
    """
    out = {}
    for target, source in pairs.items():
        if target not in scorers:
            raise ValueError(f"no scorer for target domain {target!r}; scorers given for {sorted(scorers)}")
        if user_selection(ds, target, split, source, users).size == 0:
            continue
        out[target] = evaluate(scorers[target], ds, target=target, split=split, source=source, users=users, **kwargs)
    if not out:
        raise ValueError(f"no {users!r} users in split {split!r} for any of the directions {dict(pairs)}")
    return out

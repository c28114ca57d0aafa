"""The domain-gap report of a trained model: its user representations, the two compared user sets, the
overlap of the domains, and the report as text or as a figure.

Axis conventions: ``B`` = users in one call, ``d`` = representation width, ``n_users`` = the dataset's user id
space. A report is JSON-serialisable (Python numbers, strings, lists and dicts). The package docstring
(:mod:`jaxrec.diagnostics`) has an example from training to the printed report.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import checks, plot
from jaxrec.data import CrossDomainDataset
from jaxrec.diagnostics.gap import GAP_MEASURES, domain_gap
from jaxrec.diagnostics.overlap import overlap_stats

__all__ = ["UserVectors", "diagnose", "diagnostics_figure", "format_report", "scorer_user_tables"]

UserVectors = Callable[[np.ndarray, str], Any]  # (users int32 [B], domain name) -> [B, dim]


# --------------------------------------------------------------------------------------------------------------
# representations of a trained model
# --------------------------------------------------------------------------------------------------------------
@jax.jit
def _jitted_call(users_fn: jax.tree_util.Partial, users: jax.Array) -> jax.Array:
    return users_fn(users)


def _users_fn_call(users_fn: Callable, users: jax.Array) -> jax.Array:
    """``users_fn(users)``, jitted when ``users_fn`` is a ``Partial`` (then its parameters are traced arguments)."""
    if isinstance(users_fn, jax.tree_util.Partial):
        return _jitted_call(users_fn, users)
    return users_fn(users)


def scorer_user_tables(scorers: Any, *, n_users: int, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """The user vectors each domain's scorer ranks with, as ``{domain: float32 [n_users, d]}`` tables.

    ``scorers[domain].users_fn(users)`` is evaluated for every user id (in batches). For the recipes of
    :mod:`jaxrec.methods` this is the user's representation in that domain (after the domain's user tower),
    followed by the popularity fallback column, which is 0 for every user with training history (the users
    :func:`diagnose` compares). Scorers that return dense scores (``items is None``) have no user vectors and
    are left out.

    Args:
      scorers: ``{domain: evaluate.Scorer}``, or anything with a ``.scorers`` mapping (a ``methods.Trained``).
      n_users: size of the user id space (``ds.n_users``).
      batch_size: users per call of ``users_fn``.

    Returns:
      ``{domain: np.ndarray [n_users, d]}``.

    Raises:
      ValueError: no scorer with user vectors, or a ``users_fn`` output that is not ``[B, d]``.
    """
    scorers = getattr(scorers, "scorers", scorers)
    if not isinstance(scorers, Mapping):
        raise TypeError(f"scorers must be a mapping domain -> Scorer or a methods.Trained, got {type(scorers)}")
    n_users, batch_size = checks.positive_int("n_users", n_users), checks.positive_int("batch_size", batch_size)
    tables = {}
    for domain, scorer in scorers.items():
        if scorer.items is None:
            continue
        parts = []
        size = min(batch_size, n_users)
        for lo in range(0, n_users, size):
            rows = min(size, n_users - lo)
            users = jnp.arange(lo, lo + size, dtype=jnp.int32) % n_users  # the last batch padded: one compilation
            out = np.asarray(_users_fn_call(scorer.users_fn, users))
            if out.ndim != 2 or out.shape[0] != size:
                raise ValueError(f"scorer {domain!r}: users_fn({users.shape}) returned {out.shape}, not [B, d]")
            parts.append(out[:rows])
        tables[domain] = np.concatenate(parts).astype(np.float32)
    if not tables:
        raise ValueError(f"none of the scorers {sorted(scorers)} has user vectors (all return dense scores)")
    return tables


# --------------------------------------------------------------------------------------------------------------
# the report: two comparisons of user representations, as a dict, as text, as a figure
# --------------------------------------------------------------------------------------------------------------
def _representations(user_vectors: Any, users: np.ndarray, domain: str, n_users: int) -> np.ndarray | None:
    """``[len(users), d]`` representations of ``users`` in ``domain``; None when a table for it is missing."""
    if isinstance(user_vectors, Mapping):
        if domain not in user_vectors:
            return None
        table = np.asarray(user_vectors[domain])
        if table.ndim != 2 or table.shape[0] != n_users:
            raise ValueError(f"user_vectors[{domain!r}] must be [n_users, d] = [{n_users}, d], got {table.shape}")
        out = table[users]
    else:
        out = np.asarray(user_vectors(users, domain))
        if out.ndim != 2 or out.shape[0] != users.shape[0]:
            raise ValueError(f"user_vectors(users {users.shape}, {domain!r}) returned {out.shape}, not [B, d]")
    return out


def _comparison(
    index: int,
    name: str,
    user_vectors: Any,
    a: tuple[np.ndarray, str],
    b: tuple[np.ndarray, str],
    n_users: int,
    seed: int,
    max_rows: int,
    notes: list[str],
) -> dict[str, Any] | None:
    rng = np.random.default_rng([seed, index])
    sides = []
    for users, domain in (a, b):
        if users.size < 2:
            notes.append(f"{name}: skipped, only {users.size} user(s) in domain {domain!r} (need 2)")
            return None
        if users.size > max_rows:
            users = np.sort(rng.choice(users, max_rows, replace=False))
        rep = _representations(user_vectors, users.astype(np.int32), domain, n_users)
        if rep is None:
            notes.append(f"{name}: skipped, no representation for domain {domain!r} (given: {sorted(user_vectors)})")
            return None
        sides.append(rep.astype(np.float64))
    return domain_gap(sides[0], sides[1], seed=seed, max_rows=max_rows)


def diagnose(
    ds: CrossDomainDataset,
    user_vectors: UserVectors | Mapping[str, Any],
    *,
    source: str,
    target: str,
    seed: int = 0,
    max_rows: int = 2048,
    cold_splits: Sequence[str] = ("valid", "test"),
) -> dict[str, Any]:
    """Domain-gap report of a model's user representations on a dataset: overlap statistics plus two gaps.

    The two compared pairs of user sets (each side subsampled to ``max_rows`` users with ``seed``):

    * ``"domains"`` — the *source-domain* representation of the users with source train interactions vs the
      *target-domain* representation of the users with target train interactions: the pair the alignment term
      of the ``mmd`` / ``coral`` / ``dann`` recipes is trained to bring together (here each user counts once;
      training batches weight users by their interaction counts).
    * ``"cold_vs_warm"`` — the *target-domain* representation of the cold users (held-out target users of
      ``cold_splits`` who have source train history and no target train history) vs that of the warm target users
      (users with target train interactions). The target item embeddings were fitted on warm users only, so this is
      the gap that matters for cold start: a cold user far outside the warm users' distribution is scored off
      the manifold the item side learned.

    A comparison is ``None`` (with a line in ``notes``) when a side has fewer than 2 users or ``user_vectors``
    is a mapping without that domain (e.g. ``target_only``, which has no source representation).

    Args:
      ds: the dataset the model was trained on.
      user_vectors: ``user_vectors(users int32 [B], domain) -> [B, d]``, or ``{domain: [n_users, d]}`` tables
        (see :func:`scorer_user_tables`).
      source: the data-rich domain.
      target: the cold-start domain.
      seed: subsampling and proxy A-distance split.
      max_rows: users per side.
      cold_splits: held-out target splits whose cold users are compared.

    Returns:
      The report, JSON-serialisable,
      ``{"source", "target", "seed", "overlap": overlap_stats(...), "gaps": {"domains": domain_gap(...) | None,
      "cold_vs_warm": domain_gap(...) | None}, "compared": {comparison: sentence naming the two user sets and
      their sizes}, "notes": [str]}``.

    Example:
      >>> report = diagnose(ds, scorer_user_tables(trained, n_users=ds.n_users), source="source", target="target")
      >>> report["gaps"]["domains"]["proxy_a_distance"]  # doctest: +SKIP
      0.31
    """
    overlap = overlap_stats(ds, source, target)
    max_rows = checks.positive_int("max_rows", max_rows)
    notes: list[str] = []
    source_users, target_users = ds.users_with(source, "train"), ds.users_with(target, "train")
    cold = np.unique(np.concatenate([ds.cold_users(source, target, s) for s in cold_splits] + [np.zeros(0, int)]))
    gaps = {
        "domains": _comparison(
            0,
            "domains",
            user_vectors,
            (source_users, source),
            (target_users, target),
            ds.n_users,
            seed,
            max_rows,
            notes,
        ),
        "cold_vs_warm": _comparison(
            1, "cold_vs_warm", user_vectors, (cold, target), (target_users, target), ds.n_users, seed, max_rows, notes
        ),
    }
    compared = {
        "domains": (
            f"a = {source}-domain representation of the {source_users.size} users with {source} train interactions; "
            f"b = {target}-domain representation of the {target_users.size} users with {target} train interactions"
        ),
        "cold_vs_warm": (
            f"a = {target}-domain representation of the {cold.size} cold {target} users of {list(cold_splits)} "
            f"(with {source} train history, no {target} train history); b = {target}-domain representation of the "
            f"{target_users.size} warm users with {target} train interactions"
        ),
    }
    return {
        "source": source,
        "target": target,
        "seed": int(seed),
        "overlap": overlap,
        "gaps": gaps,
        "compared": compared,
        "notes": notes,
    }


_MEASURE_LABELS = {
    "mmd": "MMD² (Gaussian, median bw)",
    "linear_mmd": "linear MMD ‖Δμ‖²",
    "coral": "CORAL",
    "proxy_a_distance": "proxy A-distance (0..2)",
    "mean_distance": "‖μa − μb‖",
    "mean_cosine": "cos(μa, μb)",
}


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text rendering of a :func:`diagnose` report (overlap table, gap table, compared sets, notes).

    Args:
      report: the result of :func:`diagnose`.

    Returns:
      The report as one string.

    Example:
      >>> print(format_report(diagnose(ds, tables, source="source", target="target")))  # doctest: +SKIP
    """
    for key in ("source", "target", "overlap", "gaps"):
        if key not in report:
            raise ValueError(f"not a diagnose() report: key {key!r} missing (has {sorted(report)})")
    ov = report["overlap"]
    lines = [f"domain-gap diagnostics: {report['source']} -> {report['target']} (seed {report.get('seed', 0)})", ""]
    lines.append("overlap (train split)")
    header = f"  {'domain':<14}{'users':>9}{'items':>9}{'interactions':>14}{'per user mean/median':>23}{'density':>10}"
    lines.append(header)
    for name, d in ov["domains"].items():
        per_user = f"{d['interactions_per_user_mean']:.2f} / {d['interactions_per_user_median']:g}"
        lines.append(
            f"  {name:<14}{d['users']:>9,}{d['items']:>9,}{d['interactions']:>14,}{per_user:>23}{d['density']:>10.5f}"
        )
    n_target = ov["domains"][report["target"]]["users"]
    share = ov["overlap_users"] / max(n_target, 1)
    lines.append(
        f"  users in both: {ov['overlap_users']:,} ({share:.1%} of {report['target']} users); "
        f"{report['source']} only: {ov['source_only_users']:,}; {report['target']} only: {ov['target_only_users']:,}"
    )
    cold = ", ".join(f"{split} {n:,}" for split, n in ov["cold_users"].items())
    lines.append(f"  cold {report['target']} users: {cold}")
    lines += ["", "representation gaps (a vs b)"]
    names = list(report["gaps"])
    lines.append(f"  {'measure':<30}" + "".join(f"{n:>16}" for n in names))
    rows = [("rows a / b", lambda g: f"{g['n_a']} / {g['n_b']}")]
    rows += [(_MEASURE_LABELS[m], functools.partial(lambda m, g: f"{g[m]:.4g}", m)) for m in GAP_MEASURES]
    for label, cell in rows:
        cells = [cell(report["gaps"][n]) if report["gaps"][n] is not None else "n/a" for n in names]
        lines.append(f"  {label:<30}" + "".join(f"{c:>16}" for c in cells))
    for name, sentence in report.get("compared", {}).items():
        lines.append(f"  {name}: {sentence}")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def diagnostics_figure(report: Mapping[str, Any]):
    """A ``matplotlib.figure.Figure`` of a :func:`diagnose` report: one bar panel per gap measure.

    Needs matplotlib (``pip install "jaxrec[notebooks]"``); see :func:`jaxrec.plot.gap_bars`.
    """
    if "gaps" not in report:
        raise ValueError(f"not a diagnose() report: key 'gaps' missing (has {sorted(report)})")
    title = f"domain gaps, {report.get('source', '?')} -> {report.get('target', '?')}"
    return plot.gap_bars(report["gaps"], title=title)

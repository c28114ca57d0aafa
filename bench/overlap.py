"""Overlap-ratio study: does the discrepancy term ``λ·D`` help when fewer users link the two domains?

    python bench/overlap.py                                   # Game → Video, 100 / 30 / 10 / 3 / 0 % linked
    python bench/overlap.py --pairs video:game --ratios 1 0.1 --families adaptation
    python bench/overlap.py --table-only --plot bench/overlap.png

**Regimes.** ``jaxrec.limit_overlap(ds, source, target, ratio=r, mode="split", seed=s)`` keeps a share ``r`` of
the users with train history in both domains linked. ``mode="split"`` moves the unlinked users' source history to
new user ids, so each domain keeps every interaction it had and only the links vary (``mode="drop"`` would also
shrink the source domain, mixing less overlap with less source data). The cold users of the target (valid and
test) are never touched. Regime seed ``s`` = the training seed: the ± over seeds covers which users stay linked.

**Families and arms.** Each family that has a discrepancy term trains a *twin* pair that differs only in λ
(the same model, data, batches and initial parameters for a seed; early stopping on valid as in every recipe):

* ``adaptation`` (domain adaptation): the ``SharedEmbeddingModel`` of ``mmd`` / ``coral`` / ``dann`` (shared user
  embeddings + per-domain user towers ``(64,)``). *without*: ``mmd`` at λ = 0 (at λ = 0 the three recipes train
  the same user and item parameters; ``dann``'s classifier then sends no gradient back); *with*: the
  (discrepancy, λ) of :data:`FAMILIES` best on valid.
* ``embedding`` (cross-domain embedding): the inductive ``history`` recipe with ``discrepancy="mmd"`` (its
  shared/specific split of the codes, aligned across the source-only and target-only users). *without*: λ = 0;
  *with*: the λ best on valid. The recipe needs linked users (an epoch is one pass over them), so at 0 % it is
  not defined and its rows are recorded as skipped.
* multi-domain: no recipe of ``jaxrec.METHODS`` has a λ·D term (``shared_bottom`` ... ``lightgcn`` have none).

**Choice of λ (valid only).** Once per family, at 100 % overlap with seed 0: every candidate of :data:`FAMILIES`
is trained and the one with the best valid NDCG@10 (mean of the sampled and full-ranking protocols, as
``bench/leaderboard.py`` chooses) becomes the *with* arm of every regime. Test is never looked at.

**Measure.** Cold users of the target, NDCG@10 on valid and test, both protocols (full ranking over all target
items minus seen; sampled: the held-out item among 999 uniform train items, mean of sampling seeds 0, 1, 2).
The table reports mean ± std over the training seeds and the ratio with / without; "helps" means the ratio is
≥ 1.05 and the two mean ± std intervals do not overlap. One JSON line per trained model goes to ``--out``
(default ``bench/overlap.jsonl``); models already there are not trained again, so the study can be resumed.

Reads ``../shared/data/amazon-game-video`` unless ``--data`` is given, with ``shared_users="below_heldout"``
(CDRIB's layout); exits with a message when the folder is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon-game-video"
RATIOS = (1.0, 0.3, 0.1, 0.03, 0.0)
PROTOCOLS = ("sampled", "full")
HELPS = 1.05  # the ratio with / without above which (with non-overlapping intervals) λ·D "helps"


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of cross-domain learning with a discrepancy term.

    Attributes:
      name: the family's name in the table.
      without: ``(method, overrides)`` of the λ = 0 twin.
      candidates: ``(method, overrides)`` of the *with* arm's candidates (λ > 0), one chosen on valid.
      needs_links: the recipe raises without linked users (its rows at 0 % are skipped).
    """

    name: str
    without: tuple[str, dict]
    candidates: tuple[tuple[str, dict], ...]
    needs_links: bool = False


#: The families of the study and their candidates for the *with* arm.
FAMILIES = {
    "adaptation": Family(
        "adaptation",
        ("mmd", {"lam": 0.0}),
        (
            ("mmd", {"lam": 0.1}),
            ("mmd", {"lam": 1.0}),
            ("coral", {"lam": 0.1}),
            ("dann", {"lam": 0.1}),
        ),
    ),
    "embedding": Family(
        "embedding",
        ("history", {"discrepancy": "mmd", "lam": 0.0}),
        (("history", {"discrepancy": "mmd", "lam": 0.3}), ("history", {"discrepancy": "mmd", "lam": 3.0})),
        needs_links=True,
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# One model
# ----------------------------------------------------------------------------------------------------------------


def config_key(source: str, target: str, ratio: float, method: str, overrides: dict, seed: int) -> str:
    """The identity of one trained model in ``--out`` (what a resumed study skips)."""
    return json.dumps([source, target, float(ratio), method, overrides, int(seed)], sort_keys=True)


def regime(ds, source: str, target: str, ratio: float, seed: int):
    """``ds`` with a share ``ratio`` of the users linked across ``source`` and ``target`` (mode ``"split"``)."""
    import jaxrec

    if ratio >= 1.0:
        return ds
    return jaxrec.limit_overlap(ds, source, target, ratio=ratio, mode="split", seed=seed)


def linked_users(ds, source: str, target: str) -> int:
    """Users with train history in both domains."""
    return int(np.intersect1d(ds.users_with(source, "train"), ds.users_with(target, "train")).size)


def evaluate_cold(scorer, ds, source: str, target: str) -> dict:
    """``{split: {protocol: NDCG@10}}`` on the cold users of ``target``, valid and test, both protocols (sampled:
    mean of sampling seeds 0, 1, 2)."""
    from jaxrec import evaluate

    out = {}
    for split in ("valid", "test"):
        r = evaluate.evaluate(
            scorer, ds, target=target, split=split, source=source, users="cold", ks=(10,), seeds=(0, 1, 2)
        )
        out[split] = {p: float(r[p]["NDCG@10"]) for p in PROTOCOLS}
    return out


def train_one(ds, source: str, target: str, method: str, overrides: dict, seed: int) -> dict:
    """Trains ``method`` with ``overrides`` and ``seed`` (``methods.run``) and evaluates it (:func:`evaluate_cold`).

    Returns:
      ``{"valid": ..., "test": ..., "epochs": evaluations run, "train_s", "eval_s"}``.
    """
    from jaxrec import methods

    t0 = time.perf_counter()
    trained = methods.run(method, ds, source=source, target=target, seed=seed, progress=False, **overrides)
    t1 = time.perf_counter()
    scores = evaluate_cold(trained.scorers[target], ds, source, target)
    t2 = time.perf_counter()
    epochs = sum(1 for r in trained.history if any(k.startswith("eval/") for k in r))
    return {**scores, "epochs": epochs, "train_s": round(t1 - t0, 2), "eval_s": round(t2 - t1, 2)}


def reference_popularity(ds, source: str, target: str) -> dict:
    """The ``popularity`` recipe's record for the direction (target popularity: the same in every regime)."""
    from jaxrec import methods

    trained = methods.run("popularity", ds, source=source, target=target)
    scores = evaluate_cold(trained.scorers[target], ds, source, target)
    return {"source": source, "target": target, "phase": "reference", "method": "popularity", **scores}


def selection_score(record: dict) -> float:
    """What the *with* arm is chosen by: valid NDCG@10, mean of the sampled and full-ranking protocols."""
    return 0.5 * (record["valid"]["sampled"] + record["valid"]["full"])


# ----------------------------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------------------------


def run_study(
    ds,
    *,
    source: str,
    target: str,
    families: dict[str, Family],
    ratios=RATIOS,
    seeds=(0, 1, 2),
    done: list[dict] | None = None,
    emit: Callable[[dict], None] = lambda r: None,
    train: Callable[..., dict] = train_one,
) -> list[dict]:
    """Chooses each family's *with* arm on valid (100 % overlap, seed ``seeds[0]``), then trains both arms of every
    family in every regime with every seed.

    Args:
      ds: the dataset (with the target's cold users in valid and test).
      source, target: the transfer direction.
      families: the families to study (:data:`FAMILIES` or smaller ones).
      ratios: shares of the linked users kept.
      seeds: training seeds (also the seeds of the regimes' unlinking).
      done: records already measured (``--out``'s lines): a model in them is not trained again, and a record is
        emitted again only under a role (family, phase, arm) it does not have there yet.
      emit: called with each new record (to write it at once).
      train: ``train(ds, source, target, method, overrides, seed) -> dict`` (:func:`train_one`).

    Returns:
      Every record of the study: ``phase`` ``"select"`` (the candidates at 100 %) or ``"study"`` (the two arms),
      with ``family``, ``arm`` (``"without"`` / ``"with"`` / ``"candidate"``), ``method``, ``overrides``, ``ratio``,
      ``seed``, ``linked`` (users linked in the regime), and the scores of ``train`` (or ``"skipped"``: why).
    """
    done = [r for r in done or () if r["phase"] in ("select", "study")]  # not the reference lines
    keys = [
        config_key(r["source"], r["target"], r["ratio"], r["method"], r["overrides"], r["seed"]) for r in done or ()
    ]
    measured = {(k, r["family"], r["phase"], r["arm"]) for k, r in zip(keys, done)}
    done = dict(zip(keys, done))
    records: list[dict] = []
    cache: dict[tuple, Any] = {}

    def get(ratio, seed):
        key = (ratio, seed) if ratio < 1.0 else (1.0, 0)
        if key not in cache:
            cache[key] = regime(ds, source, target, ratio, seed)
        return cache[key]

    def measure(family: Family, arm: str, phase: str, method: str, overrides: dict, ratio: float, seed: int) -> dict:
        key = config_key(source, target, ratio, method, overrides, seed)
        base = {"source": source, "target": target, "ratio": float(ratio), "family": family.name, "arm": arm}
        base |= {"phase": phase, "method": method, "overrides": overrides, "seed": int(seed)}
        if key in done:  # measured already; written again under this role unless it was written so
            record = {**done[key], **base}
            if (key, family.name, phase, arm) not in measured:
                measured.add((key, family.name, phase, arm))
                emit({**record, "reused": True})
        else:
            data = get(ratio, seed)
            record = {**base, "mode": "split", "linked": linked_users(data, source, target)}
            if record["linked"] == 0 and family.needs_links:
                record["skipped"] = f"{method} needs users linked across {source} and {target}"
            else:
                record |= train(data, source, target, method, overrides, seed)
            done[key] = record
            measured.add((key, family.name, phase, arm))
            emit(record)
        records.append(record)
        return record

    chosen = {}
    for family in families.values():  # -- the with arm, chosen on valid at 100 % --
        scored = [
            (selection_score(measure(family, "candidate", "select", m, o, 1.0, seeds[0])), m, o)
            for m, o in family.candidates
        ]
        chosen[family.name] = max(scored, key=lambda t: t[0])[1:]
    for ratio in ratios:  # -- the two arms in every regime --
        for family in families.values():
            for seed in seeds:
                measure(family, "without", "study", *family.without, ratio, seed)
                measure(family, "with", "study", *chosen[family.name], ratio, seed)
    return records


# ----------------------------------------------------------------------------------------------------------------
# Table and figure
# ----------------------------------------------------------------------------------------------------------------


def summarize(records: list[dict]) -> list[dict]:
    """One row per (direction, ratio, family): each arm's test NDCG@10 mean ± std over seeds (both protocols), the
    ratio with / without and whether λ·D helps (ratio ≥ 1.05 and disjoint mean ± std intervals)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in records:
        if r["phase"] == "study" and "skipped" not in r:
            key = (r["source"], r["target"], r["ratio"], r["family"])
            groups.setdefault(key, {"with": [], "without": []})[r["arm"]].append(r)
    rows = []
    for (source, target, ratio, family), arms in sorted(
        groups.items(), key=lambda kv: (kv[0][:2], -kv[0][2], kv[0][3])
    ):
        if not arms["with"] or not arms["without"]:
            continue
        row = {
            "source": source,
            "target": target,
            "ratio": ratio,
            "family": family,
            "linked": arms["with"][0]["linked"],
        }
        row["with_arm"] = {"method": arms["with"][0]["method"], **arms["with"][0]["overrides"]}
        row["seeds"] = min(len(arms["with"]), len(arms["without"]))
        for protocol in PROTOCOLS:
            stats = {}
            for arm, rs in arms.items():
                values = np.array([r["test"][protocol] for r in rs])
                stats[arm] = (float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0)
            (mw, sw), (m0, s0) = stats["with"], stats["without"]
            ratio_wo = mw / m0 if m0 > 0 else float("nan")
            disjoint = mw - sw > m0 + s0 or mw + sw < m0 - s0
            row[protocol] = {
                "with": stats["with"],
                "without": stats["without"],
                "ratio": ratio_wo,
                "helps": bool(ratio_wo >= HELPS and disjoint),
                "hurts": bool(ratio_wo <= 1 / HELPS and disjoint),
            }
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`summarize`'s rows."""
    head = "| direction | linked % (users) | family | with arm | seeds |"
    for p in PROTOCOLS:
        head += f" test {p} NDCG@10 without | with | × |"
    lines = [head, "|" + "---|" * (5 + 3 * len(PROTOCOLS))]
    for row in rows:
        arm = row["with_arm"]
        name = arm["method"] + " " + ", ".join(f"{k}={v}" for k, v in arm.items() if k != "method")
        cells = [f"{row['source']}→{row['target']}", f"{100 * row['ratio']:g} ({row['linked']})", row["family"]]
        cells += [f"`{name.strip()}`", str(row["seeds"])]
        for p in PROTOCOLS:
            c = row[p]
            mark = " helps" if c["helps"] else (" hurts" if c["hurts"] else "")
            cells += [f"{c['without'][0]:.4f} ± {c['without'][1]:.4f}", f"{c['with'][0]:.4f} ± {c['with'][1]:.4f}"]
            cells += [f"{c['ratio']:.2f}{mark}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(records: list[dict]) -> str:
    """The candidates of the *with* arm and the twin at 100 % (seed 0): valid NDCG@10, the chosen one marked."""
    lines = ["| direction | family | method | options | valid sampled | valid full | selection |", "|" + "---|" * 7]
    best: dict[tuple, float] = {}
    for r in records:
        if r["phase"] == "select":
            k = (r["source"], r["target"], r["family"])
            best[k] = max(best.get(k, -1.0), selection_score(r))
    for r in records:
        if r["phase"] == "select":
            k = (r["source"], r["target"], r["family"])
            mark = " (chosen)" if selection_score(r) == best[k] else ""
            options = ", ".join(f"{a}={b}" for a, b in r["overrides"].items())
            lines.append(
                f"| {r['source']}→{r['target']} | {r['family']} | `{r['method']}` | {options} | "
                f"{r['valid']['sampled']:.4f} | {r['valid']['full']:.4f} | {selection_score(r):.4f}{mark} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: pathlib.Path, references: dict | None = None) -> None:
    """Test NDCG@10 against the linked share (symlog axis), one line per (family, arm), mean ± std error bars (the
    two arms drawn a little apart); one panel per protocol and direction; ``references`` (``{(source, target):
    {protocol: NDCG@10}}``, popularity) as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted({(r["source"], r["target"]) for r in rows})
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 4.2 * len(pairs)), squeeze=False)
    colours = dict(zip(sorted({r["family"] for r in rows}), ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for i, pair in enumerate(pairs):
        for j, protocol in enumerate(PROTOCOLS):
            ax = axes[i, j]
            for family, colour in colours.items():
                rs = sorted(
                    (r for r in rows if (r["source"], r["target"]) == pair and r["family"] == family),
                    key=lambda r: r["ratio"],
                )
                if not rs:
                    continue
                x = np.array([100 * r["ratio"] for r in rs])
                for arm, style, shift in (("without", "--", -0.05), ("with", "-", 0.05)):
                    mean = np.array([r[protocol][arm][0] for r in rs])
                    std = np.array([r[protocol][arm][1] for r in rs])
                    label = f"{family}, {'λ = 0' if arm == 'without' else 'with λ·D'}"
                    ax.errorbar(
                        np.where(x > 0, x * (1 + shift), shift),
                        mean,
                        yerr=std,
                        fmt="o" + style,
                        color=colour,
                        capsize=3,
                        label=label,
                        alpha=1.0 if arm == "with" else 0.7,
                    )
            if references and pair in references:
                ax.axhline(references[pair][protocol], color="grey", ls=":", label="popularity")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xticks([0, 3, 10, 30, 100], ["0", "3", "10", "30", "100"])
            ax.set_xlabel("linked users kept (%)")
            ax.set_ylabel(f"test NDCG@10 ({protocol})")
            ax.set_title(f"{pair[0]} → {pair[1]}, cold users, {protocol} protocol")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


def read_records(path: pathlib.Path) -> list[dict]:
    """The JSON lines of ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def versions() -> dict:
    """jaxrec, jax, numpy and Python versions, and the machine."""
    import jax

    import jaxrec

    return {
        "jaxrec": jaxrec.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"dataset folder (default {DEFAULT_DATA})")
    parser.add_argument("--pairs", nargs="+", default=["game:video"], help="source:target pairs (default game:video)")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="shares of linked users kept")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--out", default=str(REPO / "bench" / "overlap.jsonl"), help="JSON lines file")
    parser.add_argument("--plot", default=str(REPO / "bench" / "overlap.png"), help="figure (empty: none)")
    parser.add_argument("--table-only", action="store_true", help="print the tables from --out and exit")
    args = parser.parse_args(argv)
    for r in args.ratios:
        if not 0.0 <= r <= 1.0:
            parser.error(f"argument --ratios: {r} is not a share in [0, 1]")
    try:
        pairs = [tuple(p.split(":")) for p in args.pairs]
        assert all(len(p) == 2 and p[0] != p[1] for p in pairs)
    except AssertionError:
        parser.error(f"argument --pairs: expected source:target with two different domains, got {args.pairs}")

    out = pathlib.Path(args.out)
    records = read_records(out)
    if not args.table_only:
        data_dir = pathlib.Path(args.data)
        if not data_dir.is_dir():
            print(f"dataset not found at {data_dir}: pass --data DIR (see the dataset README)", file=sys.stderr)
            return 1
        import jaxrec

        ds = jaxrec.load_dir(data_dir, shared_users="below_heldout")
        env = versions()
        print(json.dumps({"versions": env}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)

        def emit(record: dict) -> None:
            record["versions"] = env
            print(json.dumps(record), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")

        families = {name: FAMILIES[name] for name in args.families}
        for source, target in pairs:
            if not any(r["phase"] == "reference" and (r["source"], r["target"]) == (source, target) for r in records):
                emit(reference_popularity(ds, source, target))
            run_study(
                ds,
                source=source,
                target=target,
                families=families,
                ratios=args.ratios,
                seeds=args.seeds,
                done=records,
                emit=emit,
            )
        records = read_records(out)
    rows = summarize(records)
    references = {(r["source"], r["target"]): r["test"] for r in records if r["phase"] == "reference"}
    print(selection_table(records))
    print()
    print(table(rows))
    for (source, target), test in references.items():
        print(f"popularity {source}→{target}: test NDCG@10 sampled {test['sampled']:.4f}, full {test['full']:.4f}")
    for row in rows:
        print(json.dumps(row))
    if args.plot and rows:
        plot(rows, pathlib.Path(args.plot), references)
        print(f"figure: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

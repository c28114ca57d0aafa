"""Leaderboard: every named method on a real two-domain dataset, cold-start users, both protocols, several seeds.

    python bench/leaderboard.py                                  # all methods, game->video and video->game
    python bench/leaderboard.py --pairs game:video --methods popularity item_map cmf --seeds 0 1 2

For each (source → target) pair, method and training seed: train with the method's defaults (``methods.run``),
then evaluate the target's cold-start users on **valid** and **test** with both protocols (full ranking over all
target items minus seen; sampled: 1 held-out item among 999 uniform training items, sampling seeds 0, 1, 2).
One JSON line per run goes to ``--out`` (default ``bench/leaderboard.jsonl``, kept in git); runs already in
that file are skipped, so the board can be filled over several runs. Deterministic methods
(``popularity``, ``item_map``) are trained once and their line repeated for every seed (their spread then
comes from sampling only).

The table is sorted by valid NDCG@10 averaged over the two protocols (what the recommended method is chosen by)
and reports mean ± std over training seeds (for the deterministic methods: the std over the sampling
seeds of the sampled protocol, and 0 for full ranking); the recommended method is chosen on **valid** only,
never on test, and printed as ``best method: `name` `` per pair.

Reads ``../shared/data/amazon-game-video`` (beside the repository) unless ``--data`` is given; exits with a
message when the data is absent. That folder is CDRIB's release, whose user ids above the common users are
numbered per domain, so it is loaded with ``shared_users="below_heldout"`` (see ``jaxrec.load_dir``);
``--shared-users all`` reads every id as shared (the dataset README's reading, which pairs unrelated people above
the common users). Each line records the setting, and the table shows the lines of the setting asked for.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon-game-video"
DETERMINISTIC = {"popularity", "item_map"}
COLUMNS = [
    ("valid smp NDCG@10", "valid", "sampled", "NDCG@10"),
    ("valid full NDCG@10", "valid", "full", "NDCG@10"),
    ("test smp NDCG@10", "test", "sampled", "NDCG@10"),
    ("test smp HR@10", "test", "sampled", "HR@10"),
    ("test smp MRR", "test", "sampled", "MRR"),
    ("test full NDCG@10", "test", "full", "NDCG@10"),
    ("test full Recall@10", "test", "full", "Recall@10"),
]


def _evaluate(scorer, ds, source, target):
    from jaxrec import evaluate

    out = {}
    for split in ("valid", "test"):
        r = evaluate.evaluate(
            scorer, ds, target=target, split=split, source=source, users="cold", ks=(10, 20, 50), seeds=(0, 1, 2)
        )
        out[split] = {
            "sampled": r["sampled"],
            "sampled_std": r["sampled_std"],
            "full": r["full"],
            "counts": r["counts"],
        }
    return out


def _done(path: pathlib.Path, shared_users: str) -> dict[tuple, dict]:
    """The runs in ``path`` made with ``shared_users`` (a line without the field counts as ``"all"``)."""
    runs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("shared_users", "all") == shared_users:
                    runs[(r["source"], r["target"], r["method"], r["seed"])] = r
    return runs


def selection_score(record: dict) -> float:
    """What the recommended method is chosen by: valid NDCG@10, mean of the sampled and full-ranking protocols."""
    return 0.5 * (record["valid"]["sampled"]["NDCG@10"] + record["valid"]["full"]["NDCG@10"])


def table(records: list[dict], source: str, target: str) -> tuple[str, str | None, str | None]:
    """Markdown table of mean ± std over seeds for one pair, the method best on valid (:func:`selection_score`)
    and the best of the learned ones (``Method.kind == "learned"``; None when none was run)."""
    by_method: dict[str, list[dict]] = {}
    for r in records:
        if r["source"] == source and r["target"] == target:
            by_method.setdefault(r["method"], []).append(r)
    if not by_method:
        return "", None, None
    head = "| method | seeds | " + " | ".join(c[0] for c in COLUMNS) + " | train s | eval s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    means = {}
    for method, rs in sorted(
        by_method.items(), key=lambda kv: -np.mean([r["valid"]["sampled"]["NDCG@10"] for r in kv[1]])
    ):
        cells = []
        for _, split, protocol, metric in COLUMNS:
            values = np.array([r[split][protocol][metric] for r in rs])
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            if method in DETERMINISTIC and protocol == "sampled":  # one model: the spread of the sampling seeds
                std = rs[0][split]["sampled_std"][metric]
            cells.append(f"{values.mean():.4f} ± {std:.4f}")
        means[method] = np.mean([selection_score(r) for r in rs])
        train_s = np.mean([r["train_s"] for r in rs])
        eval_s = np.mean([r["eval_s"] for r in rs])
        lines.append(f"| `{method}` | {len(rs)} | " + " | ".join(cells) + f" | {train_s:.0f} | {eval_s:.0f} |")
    best = max(means, key=means.get)
    from jaxrec import methods

    learned = [m for m in means if m in methods.METHODS and methods.METHODS[m].kind == "learned"]
    best_learned = max(learned, key=means.get) if learned else None
    return "\n".join(lines), best, best_learned


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"dataset folder (default {DEFAULT_DATA})")
    parser.add_argument("--pairs", nargs="+", default=["game:video", "video:game"], help="source:target pairs")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: all registered)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--out", default=str(REPO / "bench" / "leaderboard.jsonl"), help="JSON lines file")
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD.KEY=VALUE", help="per-method overrides")
    parser.add_argument(
        "--shared-users",
        default="below_heldout",
        help="which user ids are one person in both domains: below_heldout (default; CDRIB's layout), all, or N",
    )
    parser.add_argument("--table-only", action="store_true", help="print the table from --out and exit")
    parser.add_argument("--plot", default=None, help="write a bar chart of test NDCG@10 per method (both protocols)")
    args = parser.parse_args(argv)
    from jaxrec.cli import shared_users_arg  # the same parser as `jaxrec train --shared-users`

    try:
        shared = shared_users_arg(args.shared_users)
    except argparse.ArgumentTypeError as e:
        parser.error(f"argument --shared-users: {e}")

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(p.split(":")) for p in args.pairs]
    if not args.table_only:
        data_dir = pathlib.Path(args.data)
        if not data_dir.is_dir():
            print(f"dataset not found at {data_dir}: pass --data DIR (see the dataset README)", file=sys.stderr)
            return 1
        from jaxrec import data, methods

        overrides: dict[str, dict] = {}
        for item in args.set:
            key, _, value = item.partition("=")
            method, _, field = key.partition(".")
            overrides.setdefault(method, {})[field] = ast.literal_eval(value)
        names = args.methods or sorted(methods.METHODS)
        for name in names:
            methods.get_method(name)  # unknown names fail before any training
        ds = data.load_dir(data_dir, shared_users=shared)
        done = _done(out, args.shared_users)
        for source, target in pairs:
            for name in names:
                fields = {f.name for f in dataclasses.fields(methods.get_method(name).default_config)}
                for seed in args.seeds:
                    if (source, target, name, seed) in done:
                        continue
                    if name in DETERMINISTIC and any((source, target, name, s) in done for s in args.seeds):
                        first = next(
                            done[(source, target, name, s)] for s in args.seeds if (source, target, name, s) in done
                        )
                        record = {**first, "seed": seed}
                    else:
                        kw = {"progress": False} if "progress" in fields else {}
                        kw.update(overrides.get(name, {}))
                        t0 = time.perf_counter()
                        trained = methods.run(name, ds, source=source, target=target, seed=seed, **kw)
                        train_s = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        metrics = _evaluate(trained.scorers[target], ds, source, target)
                        record = {
                            "source": source,
                            "target": target,
                            "method": name,
                            "seed": seed,
                            "shared_users": args.shared_users,
                            "overrides": kw,
                            **metrics,
                            "train_s": train_s,
                            "eval_s": time.perf_counter() - t0,
                        }
                    with open(out, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    done[(source, target, name, seed)] = record
                    v, t = record["valid"]["sampled"]["NDCG@10"], record["test"]["sampled"]["NDCG@10"]
                    print(
                        f"{source}->{target} {name} seed {seed}: valid smp NDCG@10 {v:.4f}, test {t:.4f}, "
                        f"full {record['test']['full']['NDCG@10']:.4f} ({record['train_s']:.0f}s train)",
                        flush=True,
                    )
    records = list(_done(out, args.shared_users).values())
    for source, target in pairs:
        text, best, best_learned = table(records, source, target)
        if best is None:
            continue
        print(f"\n### {source} → {target} (cold-start users of {target}; mean ± std over training seeds)\n")
        print(text)
        print(f"\nbest method: `{best}` (chosen on valid NDCG@10, mean of the sampled and full protocols)")
        if best_learned is not None:
            print(f"best learned method: `{best_learned}` (the same choice among the learned recipes)")
    if args.plot:
        _plot(records, pairs, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _plot(records: list[dict], pairs, path: str):
    """Test NDCG@10 per method and pair, sampled and full protocols, error bars over training seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6 * len(pairs)), layout="constrained")
    axes = fig.subplots(len(pairs), 1, squeeze=False)[:, 0]
    for ax, (source, target) in zip(axes, pairs):
        by_method: dict[str, list[dict]] = {}
        for r in records:
            if (r["source"], r["target"]) == (source, target):
                by_method.setdefault(r["method"], []).append(r)
        names = sorted(by_method, key=lambda m: -np.mean([r["test"]["sampled"]["NDCG@10"] for r in by_method[m]]))
        x = np.arange(len(names))
        for offset, protocol in ((-0.2, "sampled"), (0.2, "full")):
            values = [np.array([r["test"][protocol]["NDCG@10"] for r in by_method[m]]) for m in names]
            means = [v.mean() for v in values]
            stds = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
            ax.bar(x + offset, means, 0.4, yerr=stds, capsize=2, label=f"{protocol} NDCG@10")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(f"{source} → {target}: cold-start users, test")
        ax.legend()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())

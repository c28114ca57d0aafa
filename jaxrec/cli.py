"""The ``jaxrec`` command.

* ``jaxrec demo`` — the README's main job: embedded synthetic two-domain data, a cold-start split, popularity vs
  target-only vs a cross-domain transfer method, evaluated on the cold-start users, as a table.
* ``jaxrec train --data DIR --source S --target T --method M [--epochs N --seed N --set key=value ... --out RUN]``
  — train a named recipe, save the run directory (``run.json``, Orbax ``checkpoint/``, ``history.jsonl``) and
  evaluate it (``metrics.json``; ``--no-eval`` to skip; ``--plots`` writes figures to ``RUN/plots/``).
  ``--shared-users below_heldout`` is needed for CDRIB's releases (``jaxrec.load_dir`` explains why); the run
  records it, and ``evaluate``/``diagnose`` load the data the same way.
* ``jaxrec evaluate --run RUN [--data DIR]`` — (re)evaluate a run on its target's cold-start users, valid and
  test, both protocols; writes ``RUN/metrics.json``.
* ``jaxrec diagnose RUN`` — domain-gap report of a run's user representations (MMD, CORAL, proxy A-distance,
  overlap statistics); ``--plots`` adds ``RUN/plots/domain_gaps.png``.
* ``jaxrec sweep --method mmd --lam 0.1 0.3 1 3 [--data DIR --source S --target T]`` — train several
  configurations in one vmapped program (default data: the embedded synthetic set) and print a table.
* ``jaxrec methods`` — list the recipes and their default configs.
* ``jaxrec data --data DIR [--link-test S T]`` — load a directory-format dataset and print its summary (and a
  permutation test of whether its overlapping users are really the same people in both domains).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import pathlib
import sys
import time

from jaxrec import data as _data

DEMO_METHODS = ("popularity", "target_only", "cmf")


def shared_users_arg(value: str) -> int | str | None:
    """``--shared-users``: ``all`` (None: every user id is one person in all domains), ``below_heldout`` or N."""
    if value == "all":
        return None
    if value == "below_heldout":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 'all', 'below_heldout' or an integer") from None


SHARED_USERS_HELP = (
    "which user ids name one person in every domain: all (default), below_heldout (CDRIB's releases such as "
    "amazon-game-video: ids above the cold-start users are numbered per domain) or an integer N (ids < N)"
)


def _load(args) -> _data.CrossDomainDataset:
    return _data.load_dir(args.data, shared_users=args.shared_users)


def _cmd_data(args) -> int:
    ds = _load(args)
    print(ds.summary())
    if args.link_test:
        from jaxrec import diagnostics

        source, target = args.link_test
        print()
        print(diagnostics.format_link_test(diagnostics.link_test(ds, source, target)))
    return 0


def _format_table(rows: list[tuple[str, dict, float]], columns: list[tuple[str, str]]) -> str:
    header = f"{'method':<14}" + "".join(f"{title:>14}" for title, _ in columns) + f"{'time s':>9}"
    lines = [header, "-" * len(header)]
    for name, result, seconds in rows:
        cells = []
        for _, path in columns:
            protocol, metric = path.split("/")
            value = result[protocol][metric]
            std = result.get(f"{protocol}_std", {}).get(metric)
            cells.append(f"{value:.4f}" + (f"±{std:.3f}" if std else "").ljust(0))
        lines.append(f"{name:<14}" + "".join(f"{c:>14}" for c in cells) + f"{seconds:>9.1f}")
    return "\n".join(lines)


def _cmd_demo(args) -> int:
    from jaxrec import evaluate, methods

    t_start = time.perf_counter()
    ds, _ = _data.synthetic(seed=args.seed)
    ds = _data.cold_start_split(ds, "source", "target", fraction=0.2, seed=args.seed)
    print("jaxrec demo: embedded synthetic two-domain data, source -> target cold start\n")
    print(ds.summary().split("\nnote:")[0] + "\n")
    rows = []
    for name in args.methods:
        t0 = time.perf_counter()
        overrides = {"seed": args.seed}
        if name != "popularity":
            overrides.update(epochs=args.epochs, progress=not args.no_progress)
        trained = methods.run(name, ds, source="source", target="target", **overrides)
        result = evaluate.evaluate(
            trained.scorers["target"],
            ds,
            target="target",
            split="test",
            source="source",
            users="cold",
            ks=(10, 20),
            seeds=(args.seed,),
        )
        rows.append((name, result, time.perf_counter() - t0))
        print(f"  {name}: done in {rows[-1][2]:.1f}s", flush=True)
    n_users = rows[0][1]["counts"]["users"]
    print(
        f"\ncold-start users of the target domain (test split, {n_users} users); full ranking over all target "
        f"items minus seen, sampled = 1 positive among 999 random items:\n"
    )
    print(
        _format_table(
            rows,
            [
                ("Recall@10", "full/Recall@10"),
                ("NDCG@10", "full/NDCG@10"),
                ("NDCG@10 smp", "sampled/NDCG@10"),
                ("HR@10 smp", "sampled/HR@10"),
            ],
        )
    )
    best = max(rows[1:] or rows, key=lambda r: r[1]["full"]["NDCG@10"])
    base = {name: r for name, r, _ in rows}
    if "popularity" in base and "target_only" in base and best[0] not in ("popularity", "target_only"):
        gain = best[1]["full"]["NDCG@10"] / max(base["target_only"]["full"]["NDCG@10"], 1e-12)
        print(f"\nbest transfer method: {best[0]} — NDCG@10 {gain:.1f}x target-only on cold-start users")
    print(f"total time {time.perf_counter() - t_start:.1f}s")
    return 0


def _parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare string, e.g. --set discrepancy=coral
    return out


def _overrides(args) -> dict:
    from jaxrec import methods

    overrides = _parse_sets(args.set or [])
    fields = {f.name for f in dataclasses.fields(methods.get_method(args.method).default_config)}
    if args.epochs is not None:
        if "epochs" not in fields:
            raise ValueError(f"method {args.method!r} has no epochs (its options are {sorted(fields)})")
        overrides["epochs"] = args.epochs
    if "progress" in fields and args.no_progress:
        overrides["progress"] = False
    return overrides


def _print_metrics(metrics: dict):
    for split in ("valid", "test"):
        if split in metrics:
            m = metrics[split]
            sampled = "  ".join(f"{k} {v:.4f}" for k, v in m["sampled"].items())
            full = "  ".join(f"{k} {v:.4f}" for k, v in m["full"].items())
            print(f"{split} ({m['counts']['users']} cold users, {m['counts']['pairs']} pairs)")
            print(f"  sampled: {sampled}\n  full:    {full}")


def _write_plots(run_dir: pathlib.Path, trained, ds, source: str, target: str):
    from jaxrec import plot

    written = []
    if trained.history and any("loss" in r for r in trained.history):
        written.append(plot.save(plot.training_curves(trained.history), run_dir / "plots" / "training_curves.png"))
        if any("discrepancy" in r for r in trained.history):
            written.append(plot.save(plot.discrepancy_curve(trained.history), run_dir / "plots" / "discrepancy.png"))
    tables = _user_tables(trained.scorers, ds)
    domains = [d for d in (source, target) if d in tables]
    if domains:
        emb = {d: tables[d][ds.users_with(d, "train")] for d in domains}
        written.append(plot.save(plot.embedding_scatter(emb), run_dir / "plots" / "user_embeddings.png"))
    return written


def _user_tables(scorers: dict, ds) -> dict:
    from jaxrec import diagnostics

    embedding = {d: s for d, s in scorers.items() if s.items is not None}  # dense scorers have no user vectors
    return diagnostics.scorer_user_tables(embedding, n_users=ds.n_users) if embedding else {}


def _cmd_train(args) -> int:
    from jaxrec import runs

    ds = _load(args)
    out = pathlib.Path(args.out or f"runs/{args.method}-{args.source}-{args.target}-seed{args.seed}")
    trained, run_dir = runs.train_run(
        ds,
        method=args.method,
        source=args.source,
        target=args.target,
        out=out,
        data_path=args.data,
        seed=args.seed,
        shared_users=args.shared_users,
        **_overrides(args),
    )
    print(f"saved run to {run_dir}")
    if args.plots:
        for path in _write_plots(run_dir, trained, ds, args.source, args.target):
            print(f"wrote {path}")
    if not args.no_eval:
        metrics = runs.evaluate_run(run_dir, ds=ds, seeds=tuple(args.seeds), ks=tuple(args.ks))
        _print_metrics(metrics)
        print(f"wrote {run_dir / runs.METRICS_FILE}")
    return 0


def _cmd_evaluate(args) -> int:
    from jaxrec import runs

    metrics = runs.evaluate_run(args.run, data_path=args.data, seeds=tuple(args.seeds), ks=tuple(args.ks))
    _print_metrics(metrics)
    print(f"wrote {pathlib.Path(args.run) / runs.METRICS_FILE}")
    return 0


def _cmd_diagnose(args) -> int:
    from jaxrec import diagnostics, plot, runs

    meta = runs.read_run(args.run)
    ds = runs.load_dataset(meta, args.data)
    tables = _user_tables(runs.load_scorers(args.run, meta), ds)
    if not tables:
        raise ValueError(f"run {args.run} ({meta['method']}) has no user representations to diagnose")
    report = diagnostics.diagnose(ds, tables, source=meta["source"], target=meta["target"], seed=args.seed)
    print(diagnostics.format_report(report))
    path = pathlib.Path(args.run) / "diagnostics.json"
    path.write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {path}")
    if args.plots:
        figure = diagnostics.diagnostics_figure(report)
        print(f"wrote {plot.save(figure, pathlib.Path(args.run) / 'plots' / 'domain_gaps.png')}")
    return 0


def _cmd_sweep(args) -> int:
    from jaxrec import sweep

    if args.data:
        ds, source, target = _load(args), args.source, args.target
    else:
        ds, _ = _data.synthetic(seed=0)
        ds = _data.cold_start_split(ds, "source", "target", fraction=0.2, seed=0)
        source, target = "source", "target"
    overrides = _parse_sets(args.set or [])
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = sweep.sweep_config(args.method, progress=not args.no_progress, **overrides)
    result = sweep.sweep(
        ds, source=source, target=target, config=config, lam=args.lam, learning_rate=args.lr, seed=args.seeds
    )
    print(sweep.sweep_table(result))
    return 0


def _cmd_methods(args) -> int:
    from jaxrec import methods

    for name, m in sorted(methods.METHODS.items()):
        print(f"{name:<12} {m.summary}")
        if args.verbose:
            print(f"{'':<12} {m.default_config}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxrec", description="Cross-domain recommendation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="train and evaluate on the embedded synthetic cross-domain data")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=int, default=15, help="maximum epochs per learned method (default 15)")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), help=f"methods (default {DEMO_METHODS})")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("train", help="train a method on a directory-format dataset, save and evaluate the run")
    p.add_argument("--data", required=True, help="folder with <domain>/{train,valid,test}.txt")
    p.add_argument("--source", required=True, help="source domain (the cold users' history)")
    p.add_argument("--target", required=True, help="target domain (where cold users are ranked)")
    p.add_argument("--method", required=True, help="recipe name (see `jaxrec methods`)")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the method's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config fields, e.g. --set dim=128 lam=0.5")
    p.add_argument("--out", default=None, help="run directory (default runs/<method>-<source>-<target>-seed<seed>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampled-protocol seeds (default 0 1 2)")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50], help="full-ranking cutoffs (default 10 20 50)")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate after training")
    p.add_argument("--plots", action="store_true", help="write figures to RUN/plots/")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("evaluate", help="evaluate a run directory; writes RUN/metrics.json")
    p.add_argument("--run", required=True, help="run directory written by `jaxrec train`")
    p.add_argument("--data", default=None, help="dataset folder (default: the one recorded in the run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampled-protocol seeds (default 0 1 2)")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50], help="full-ranking cutoffs (default 10 20 50)")
    p.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("diagnose", help="domain-gap diagnostics of a run's user representations")
    p.add_argument("run", help="run directory written by `jaxrec train`")
    p.add_argument("--data", default=None, help="dataset folder (default: the one recorded in the run)")
    p.add_argument("--seed", type=int, default=0, help="subsampling / classifier seed (default 0)")
    p.add_argument("--plots", action="store_true", help="write RUN/plots/domain_gaps.png")
    p.set_defaults(func=_cmd_diagnose)
    p = sub.add_parser("sweep", help="train several configs in one vmapped program and print a table")
    p.add_argument("--method", default="mmd", help="cmf, mmd, coral or dann (default mmd)")
    p.add_argument("--data", default=None, help="dataset folder (default: embedded synthetic data)")
    p.add_argument("--source", default=None, help="source domain (with --data)")
    p.add_argument("--target", default=None, help="target domain (with --data)")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument("--lam", type=float, nargs="+", default=None, help="λ values")
    p.add_argument("--lr", type=float, nargs="+", default=None, help="learning rates")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="parameter-init seeds")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser("methods", help="list the recipes")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each default config")
    p.set_defaults(func=_cmd_methods)
    p = sub.add_parser("data", help="load a directory-format dataset and print its summary")
    p.add_argument("--data", required=True, help="folder with <domain>/{train,valid,test}.txt")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument(
        "--link-test",
        nargs=2,
        metavar=("SOURCE", "TARGET"),
        default=None,
        help="also test whether the overlapping users are one person in both domains (diagnostics.link_test)",
    )
    p.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (_data.DataError, ValueError, FileNotFoundError) as e:
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

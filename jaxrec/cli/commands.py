"""The ``jaxrec`` subcommands, one function each: ``args -> exit code``. Each checks what it can before it loads
data, and what needs the data before it trains."""

from __future__ import annotations

import json
import pathlib
import time

from jaxrec import data as _data
from jaxrec.cli.options import check_data_dir, command_config, load_data, parse_sets, resume_command, shown
from jaxrec.methods import common
from jaxrec.runs import layout

__all__ = [
    "DEMO_METHODS",
    "cmd_data",
    "cmd_demo",
    "cmd_diagnose",
    "cmd_evaluate",
    "cmd_methods",
    "cmd_sweep",
    "cmd_train",
    "cmd_tune",
    "format_table",
    "print_metrics",
]

DEMO_METHODS = ("popularity", "target_only", "cmf")


def cmd_data(args) -> int:
    ds = load_data(args)
    print(ds.summary())
    if args.link_test:
        from jaxrec import diagnostics

        source, target = args.link_test
        common.check_pair(ds, source, target)
        print()
        print(diagnostics.format_link_test(diagnostics.link_test(ds, source, target)))
    return 0


def format_table(rows: list[tuple[str, dict, float]], columns: list[tuple[str, str]]) -> str:
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


def cmd_demo(args) -> int:
    from jaxrec import evaluate, methods

    for name in args.methods:
        methods.get_method(name)  # unknown names fail before any work
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
        format_table(
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


def print_metrics(metrics: dict):
    for split in ("valid", "test"):
        if split in metrics:
            m = metrics[split]
            sampled = "  ".join(f"{k} {v:.4f}" for k, v in m["sampled"].items())
            full = "  ".join(f"{k} {v:.4f}" for k, v in m["full"].items())
            print(f"{split} ({m['counts']['users']} cold users, {m['counts']['pairs']} pairs)")
            print(f"  sampled: {sampled}\n  full:    {full}")


def write_plots(run_dir: pathlib.Path, trained, ds, source: str, target: str) -> list[pathlib.Path]:
    """The training curves and user-embedding figure, each written under a temporary name and renamed."""
    from jaxrec import plot

    figures = {}
    if trained.history and any("loss" in r for r in trained.history):
        figures["training_curves.png"] = plot.training_curves(trained.history)
        if any("discrepancy" in r for r in trained.history):
            figures["discrepancy.png"] = plot.discrepancy_curve(trained.history)
    tables = user_tables(trained.scorers, ds)
    domains = [d for d in (source, target) if d in tables]
    if domains:
        figures["user_embeddings.png"] = plot.embedding_scatter({d: tables[d][ds.users_with(d)] for d in domains})
    return [save_figure(figure, run_dir / layout.PLOTS_DIR / name) for name, figure in figures.items()]


def save_figure(figure, path: pathlib.Path) -> pathlib.Path:
    from jaxrec import plot

    with layout.replacing(path) as tmp:
        plot.save(figure, tmp)
    return path


def user_tables(scorers: dict, ds) -> dict:
    from jaxrec import diagnostics

    embedding = {d: s for d, s in scorers.items() if s.items is not None}  # dense scorers have no user vectors
    return diagnostics.scorer_user_tables(embedding, n_users=ds.n_users) if embedding else {}


def cmd_train(args) -> int:
    from jaxrec import methods, runs

    # -- every option, then --out, then the data: all before any training --
    recipe = methods.get_method(args.method)
    config, overrides = command_config(args, recipe.default_config, owner=f"method {args.method!r}")
    if args.source == args.target:
        raise ValueError(f"--source and --target must differ, both are {shown(args.source)}")
    check_data_dir(args.data)
    args.out_path = args.out or f"runs/{args.method}-{args.source}-{args.target}-seed{args.seed}"
    out = pathlib.Path(args.out_path)
    runs.check_out(out, resume=args.resume, overwrite=args.overwrite)
    ds = load_data(args)
    runs.check_trainable(ds, method=args.method, source=args.source, target=args.target, config=config)
    if not args.no_eval:
        runs.check_evaluable(ds, source=args.source, target=args.target, ks=tuple(args.ks))
    if args.dry_run:
        print(f"checked: {args.method} on {args.source} -> {args.target} into {out}; nothing was written")
        return 0
    # -- train and save (Ctrl-C: runs.TrainingInterrupted, handled by main) --
    overrides.pop("seed", None)
    trained, run_dir = runs.train_run(
        ds,
        method=args.method,
        source=args.source,
        target=args.target,
        out=out,
        data_path=args.data,
        seed=args.seed,
        shared_users=args.shared_users,
        resume=args.resume,
        overwrite=args.overwrite,
        command=resume_command(args),
        **overrides,
    )
    print(f"saved run to {run_dir}")
    if args.plots:
        for path in write_plots(run_dir, trained, ds, args.source, args.target):
            print(f"wrote {path}")
    if not args.no_eval:
        metrics = runs.evaluate_run(run_dir, ds=ds, seeds=tuple(args.seeds), ks=tuple(args.ks))
        print_metrics(metrics)
        print(f"wrote {run_dir / layout.METRICS_FILE}")
    return 0


def cmd_evaluate(args) -> int:
    from jaxrec import runs

    meta = runs.read_run(args.run)
    n_items = meta["dataset"]["domains"][meta["target"]]["n_items"]
    if max(args.ks) > n_items:
        raise ValueError(f"--ks {max(args.ks)} exceeds the catalogue of domain {meta['target']!r} ({n_items} items)")
    if args.data is not None:
        check_data_dir(args.data)
    ds = runs.load_dataset(meta, args.data)
    runs.check_evaluable(ds, source=meta["source"], target=meta["target"], ks=tuple(args.ks))
    metrics = runs.evaluate_run(args.run, ds=ds, seeds=tuple(args.seeds), ks=tuple(args.ks))
    print_metrics(metrics)
    print(f"wrote {pathlib.Path(args.run) / layout.METRICS_FILE}")
    return 0


def cmd_diagnose(args) -> int:
    from jaxrec import diagnostics, runs

    meta = runs.read_run(args.run)
    if args.data is not None:
        check_data_dir(args.data)
    ds = runs.load_dataset(meta, args.data)
    tables = user_tables(runs.load_scorers(args.run, meta), ds)
    if not tables:
        raise ValueError(f"run {args.run} ({meta['method']}) has no user representations to diagnose")
    report = diagnostics.diagnose(ds, tables, source=meta["source"], target=meta["target"], seed=args.seed)
    print(diagnostics.format_report(report))
    path = layout.write_text(
        pathlib.Path(args.run) / layout.DIAGNOSTICS_FILE, json.dumps(report, indent=1, default=float)
    )
    print(f"wrote {path}")
    if args.plots:
        figure = diagnostics.diagnostics_figure(report)
        print(f"wrote {save_figure(figure, pathlib.Path(args.run) / layout.PLOTS_DIR / 'domain_gaps.png')}")
    return 0


def cmd_sweep(args) -> int:
    from jaxrec import runs, sweep

    config, _ = command_config(args, sweep.sweep_config(args.method), owner="EmbeddingConfig")
    if args.data:
        if args.source is None or args.target is None:
            raise ValueError("sweep --data needs --source and --target (the domains of the dataset)")
        if args.source == args.target:
            raise ValueError(f"--source and --target must differ, both are {shown(args.source)}")
        ds, source, target = load_data(args), args.source, args.target
        runs.check_trainable(ds, method=args.method, source=source, target=target)
    else:
        for option, given, name in (("--source", args.source, "source"), ("--target", args.target, "target")):
            if given not in (None, name):
                raise ValueError(
                    f"{option} {shown(given)}: without --data, sweep trains on the embedded synthetic data, whose "
                    f"domains are 'source' and 'target'"
                )
        ds, _ = _data.synthetic(seed=0)
        ds = _data.cold_start_split(ds, "source", "target", fraction=0.2, seed=0)
        source, target = "source", "target"
    result = sweep.sweep(
        ds, source=source, target=target, config=config, lam=args.lam, learning_rate=args.lr, seed=args.seeds
    )
    print(sweep.sweep_table(result))
    return 0


def cmd_tune(args) -> int:
    from jaxrec import methods, runs, sweep

    # -- every option, then --out, then the data: all before any training --
    recipe = methods.get_method(args.method)
    _, base = command_config(args, recipe.default_config, owner=f"method {args.method!r}")
    base.pop("progress", None)
    grid = None
    if args.grid:
        grid = {}
        for key, text in parse_sets(args.grid).items():
            values = [v.strip() for v in text.split(",") if v.strip()]
            grid[key] = [methods.make_config(recipe.default_config, {key: v}, from_strings=True) for v in values]
            grid[key] = [getattr(c, key) for c in grid[key]]
    if args.source == args.target:
        raise ValueError(f"--source and --target must differ, both are {shown(args.source)}")
    sweep.search.check_out(args.out, args.overwrite)
    ds = load_data(args)
    runs.check_trainable(ds, method=args.method, source=args.source, target=args.target)
    result = sweep.tune(
        args.method,
        ds,
        source=args.source,
        target=args.target,
        grid=grid,
        budget_s=args.budget,
        seeds=args.seeds,
        base=base,
        out=args.out,
        overwrite=args.overwrite,
        log=lambda line: print(line, flush=True),
    )
    print(
        f"chosen: {result.chosen or '(the defaults)'}; valid score {result.valid['score']:.4f} (start "
        f"{result.start['score']:.4f}) in {result.seconds:.0f} s"
    )
    if result.skipped:
        print(f"skipped (budget): {result.skipped}")
    print(f"wrote {args.out} (use: jaxrec train ... --method {args.method} --config {args.out})")
    return 0


def cmd_methods(args) -> int:
    from jaxrec import methods

    for name, m in sorted(methods.METHODS.items()):
        print(f"{name:<12} {m.summary}")
        if args.verbose:
            print(f"{'':<12} {m.default_config}")
    return 0

"""How every recipe's cost grows with the interactions and the catalogue: load, one epoch of training,
evaluation and peak memory, from 10⁵ to 10⁷ interactions and 10⁴ to 10⁶ items per domain.

Run:
  python bench/scale.py --quick [--methods cmf,lightgcn]   # 10⁵ and 10⁶ interactions, 10⁴ items (the default)
  python bench/scale.py --sizes 1e5:1e4,1e6:1e4,1e7:1e4,1e6:1e5,1e7:1e6 [--methods cmf,lightgcn]
  python bench/scale.py --eval-users 100000 --eval-items 1000000     # streamed full ranking alone
  python bench/scale.py --load-lines 10000000                         # the loader alone
  python bench/scale.py --from records.jsonl     # exponents and figure of the records saved with --out
  python bench/scale.py --estimates --sizes 1e7:1e6 --memory-gb 24   # memory estimates and refusals, no training

Data: ``jaxrec.data.synthetic_large`` (two domains, 10 + 5 draws per active user, 60 % of users in both), a
``cold_start_split`` (20 % of the overlapping users), written with ``jaxrec.data.write_dir`` and read back with
``jaxrec.load_dir``, as a user would. ``SIZE`` ``X:I`` means about ``X`` interactions in all and ``I`` items per
domain (users = X / 12).

On the shared 2-core machine the 10⁵ size takes about 25 min for all 18 recipes (8 of them ``item_map``'s grid)
and the 10⁶ size 2–6 min per recipe: pass ``--methods`` to keep a run within half an hour.

Each (size, recipe) runs in a child process of its own, so that its peak memory is its own: ``load`` (s, and the
peak memory it adds over the imports, MB), ``train`` (``methods.run`` with one epoch of every training phase,
progress bars off; the per-epoch validation included), ``compile`` (JAX's trace, lowering and compile time
during training, from ``jax.monitoring``), ``epoch`` = train − compile, ``eval`` (``evaluate.evaluate`` on the
cold test users, full ranking and the sampled protocol with one seed) and ``peak`` (the process's peak RSS, MB).
``est`` is the recipe's estimated peak (``jaxrec.methods.estimate_memory``, MB) beside the measured ``peak``; a
recipe whose estimate exceeds 0.9 × ``--memory-gb`` is refused up front with the reason
(``jaxrec.methods.check_memory``); a child that fails
or runs past ``--timeout`` is reported as such. Prints a table, one JSON line per configuration, the fitted
growth exponent of each recipe's epoch time against the interactions (at the smallest catalogue with two or more
sizes), and writes a log-log figure (``--figure``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
QUICK = "1e5:1e4,1e6:1e4"
FULL = "1e5:1e4,1e6:1e4,1e7:1e4,1e6:1e5,1e7:1e5,1e7:1e6"
PER_USER = (10.0, 5.0)  # mean draws per active user, source and target

ONE_EPOCH = {  # the overrides that make one pass of every training phase
    "popularity": {},
    "item_map": {},
    "emcdr": {"epochs": 1, "map_epochs": 1},
    "finetune": {"pretrain_epochs": 1, "epochs": 1},
}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------------------------------- data


def _size(text: str) -> tuple[int, int]:
    x, i = text.split(":")
    return int(float(x)), int(float(i))


def write_synthetic(folder: pathlib.Path, users: int, items: int, per_user: tuple[float, float]) -> int:
    """Writes ``synthetic_large`` (``users`` users, ``items`` items per domain, ``per_user`` draws per active user)
    with a 20 % cold-start split to ``folder`` (through a temporary folder, renamed when complete); returns the
    number of interactions."""
    import shutil

    import jaxrec

    ds = jaxrec.data.synthetic_large(
        n_users=users, n_items=(items, items), interactions_per_user=per_user, block_users=1 << 15
    )
    ds = jaxrec.cold_start_split(ds, "source", "target", fraction=0.2, seed=0)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    jaxrec.data.write_dir(ds, tmp)
    tmp.rename(folder)
    return sum(ds.interactions(d, s).size for d in ds.domain_names for s in ds.splits(d))


def make_data(work: pathlib.Path, interactions: int, items: int) -> pathlib.Path:
    """The dataset folder of one size (generated once, then reused)."""
    folder = work / f"x{interactions:.0e}-i{items:.0e}".replace("+", "")
    if (folder / "target" / "train.txt").exists():
        return folder
    users = max(1000, int(interactions / (0.8 * sum(PER_USER))))
    t0 = time.perf_counter()
    n = write_synthetic(folder, users, items, PER_USER)
    print(f"data {folder.name}: {n:,} interactions, {users:,} users, written in {time.perf_counter() - t0:.0f} s")
    return folder


# --------------------------------------------------------------------------------------------------- a child


def _refusal(method: str, ds, config, memory_gb: float) -> tuple[float, str | None]:
    """``(estimated MB, reason)``: ``jaxrec.methods.check_memory`` against ``--memory-gb`` (× its safety fraction);
    the reason is None when the recipe fits."""
    from jaxrec import methods

    estimate = methods.estimate_memory(method, ds, source="source", target="target", config=config)
    try:
        methods.check_memory(method, ds, source="source", target="target", config=config, memory_gb=memory_gb)
    except methods.MemoryLimitError as e:
        return estimate.bytes / 2**20, str(e)
    return estimate.bytes / 2**20, None


def child(folder: str, method: str, memory_gb: float) -> dict:
    """Load, train one epoch and evaluate one recipe; returns the record (printed as the last line)."""
    import jax

    import jaxrec
    from jaxrec import evaluate, methods

    compile_s = [0.0]
    events = (
        "/jax/core/compile/backend_compile_duration",
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
    )

    def listen(event, duration, **_):
        if event in events:
            compile_s[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    base = _rss_mb()
    t0 = time.perf_counter()
    ds = jaxrec.load_dir(folder)
    rec = {"load_s": time.perf_counter() - t0, "load_peak_mb": _peak_mb() - base}
    arrays = [a for d in ds.domains.values() for s in d.splits.values() for a in s if a is not None]
    rec["arrays_mb"] = sum(a.nbytes for a in arrays) / 2**20
    rec["interactions"] = sum(int(a.size) for d in ds.domains.values() for a in (s.users for s in d.splits.values()))
    rec["items"] = [ds.n_items("source"), ds.n_items("target")]
    rec["users"] = ds.n_users
    overrides = dict(ONE_EPOCH.get(method, {"epochs": 1}))
    defaults = methods.get_method(method).default_config
    if hasattr(defaults, "progress"):
        overrides["progress"] = False
    config = methods.make_config(defaults, overrides)
    rec["est_mb"], reason = _refusal(method, ds, config, memory_gb)
    if reason:
        return rec | {"status": "refused", "reason": reason, "peak_mb": _peak_mb()}
    t0, compile_s[0] = time.perf_counter(), 0.0
    trained = methods.run(method, ds, source="source", target="target", check_memory=False, **overrides)
    jax.block_until_ready(trained.params)
    rec["train_s"] = time.perf_counter() - t0
    rec["compile_s"] = compile_s[0]
    rec["epoch_s"] = max(rec["train_s"] - rec["compile_s"], 0.0)
    t0 = time.perf_counter()
    result = evaluate.evaluate(
        trained.scorers["target"], ds, target="target", source="source", users="cold", seeds=(0,)
    )
    rec["eval_s"] = time.perf_counter() - t0
    rec["eval_users"] = result["counts"]["users"]
    rec["ndcg10_full"] = result["full"]["NDCG@10"]
    rec["peak_mb"] = _peak_mb()
    return rec | {"status": "ok"}


# --------------------------------------------------------------------------------------------------- the parts


def run_sizes(args) -> list[dict]:
    import jaxrec

    names = args.methods.split(",") if args.methods else list(jaxrec.METHODS)
    for name in names:
        jaxrec.methods.get_method(name)  # unknown names fail before any work
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    header = (
        f"{'interactions':>12} {'items':>9} {'method':<14}{'load s':>8}{'load MB':>9}{'train s':>9}{'compile':>9}"
        f"{'epoch s':>9}{'eval s':>8}{'est MB':>9}{'peak MB':>9}  status"
    )
    for size in args.sizes.split(","):
        x, i = _size(size)
        folder = make_data(work, x, i)
        print(header)
        for name in names:
            cmd = [sys.executable, __file__, "--child", str(folder), name, "--memory-gb", str(args.memory_gb)]
            t0 = time.perf_counter()
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=os.environ)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                rec = json.loads(lines[-1]) if lines else {"status": "failed", "reason": out.stderr[-400:].strip()}
            except subprocess.TimeoutExpired:
                rec = {"status": "timeout", "reason": f"ran past --timeout {args.timeout} s"}
            rec = {"bench": "scale", "size": size, "method": name, "wall_s": time.perf_counter() - t0} | rec
            rows.append(rec)

            def cell(key, fmt):
                return format(rec[key], fmt) if key in rec else "-"

            print(
                f"{rec.get('interactions', x):>12,} {i:>9,} {name:<14}{cell('load_s', '8.2f')}"
                f"{cell('load_peak_mb', '9.0f')}{cell('train_s', '9.1f')}{cell('compile_s', '9.1f')}"
                f"{cell('epoch_s', '9.1f')}{cell('eval_s', '8.1f')}{cell('est_mb', '9.0f')}{cell('peak_mb', '9.0f')}"
                f"  {rec['status']}" + (f": {rec['reason']}" if rec["status"] != "ok" else "")
            )
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}))
            sys.stdout.flush()
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    return rows


def exponents(rows: list[dict]) -> dict[str, dict]:
    """Per recipe: the slope of log(epoch s) against log(interactions) at the smallest catalogue measured at two
    or more sizes (least squares), and the same for peak memory."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r.get("status") == "ok"]
        catalogues = sorted({_size(r["size"])[1] for r in ok})
        for items in catalogues:
            pts = [r for r in ok if _size(r["size"])[1] == items]
            if len({r["interactions"] for r in pts}) < 2:
                continue
            x = np.log([r["interactions"] for r in pts])
            fit = {"items": items, "points": len(pts)}
            for key in ("epoch_s", "train_s", "peak_mb"):
                y = np.log([max(r[key], 1e-3) for r in pts])
                fit[key] = float(np.polyfit(x, y, 1)[0])
            out[method] = fit
            break
    return out


def figure(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ok = [r for r in rows if r.get("status") == "ok"]
    for method in dict.fromkeys(r["method"] for r in ok):
        for items, style in zip(sorted({_size(r["size"])[1] for r in ok}), ("-o", "--s", ":^")):
            pts = sorted((r for r in ok if r["method"] == method and _size(r["size"])[1] == items),
                         key=lambda r: r["interactions"])  # fmt: skip
            if not pts:
                continue
            x = [r["interactions"] for r in pts]
            label = f"{method} ({items:.0e} items)"
            axes[0].plot(x, [max(r["epoch_s"], 1e-2) for r in pts], style, label=label, ms=3)
            axes[1].plot(x, [r["peak_mb"] for r in pts], style, label=label, ms=3)
    for ax, title in zip(axes, ("one epoch, s (train − compile)", "peak memory, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def eval_only(users: int, items: int, dim: int, batch_size: int) -> dict:
    """Streamed full ranking of ``users`` cold users over ``items`` items with an embedding (dot product) scorer."""
    import jax

    import jaxrec
    from jaxrec import evaluate

    rng = np.random.default_rng(0)
    n_users = 2 * users  # users [0, users) are cold test users; the rest give the target its train items
    src_users = np.repeat(np.arange(n_users), 2).astype(np.int32)
    tgt_users = np.repeat(np.arange(users, n_users), 5).astype(np.int32)
    test_users = np.arange(users, dtype=np.int32)

    def inter(u, n):
        return jaxrec.Interactions(u, rng.integers(0, n, u.size).astype(np.int32))

    domains = {
        "source": jaxrec.Domain("source", 1000, {"train": inter(src_users, 1000)}, np.arange(1000)),
        "target": jaxrec.Domain(
            "target", items, {"train": inter(tgt_users, items), "test": inter(test_users, items)}, np.arange(items)
        ),
    }
    ds = jaxrec.CrossDomainDataset(domains, n_users, np.arange(n_users))
    table_u = jax.random.normal(jax.random.key(0), (n_users, dim), np.float32)
    table_i = jax.random.normal(jax.random.key(1), (items, dim), np.float32)
    scorer = evaluate.embedding_scorer(table_u, table_i)
    base = _rss_mb()
    t0 = time.perf_counter()
    res = evaluate.evaluate(
        scorer, ds, target="target", source="source", users="cold", protocols="full", batch_size=batch_size
    )
    seconds = time.perf_counter() - t0
    rec = {
        "bench": "scale-eval",
        "users": res["counts"]["users"],
        "items": items,
        "dim": dim,
        "batch_size": batch_size,
        "eval_s": seconds,
        "users_per_s": res["counts"]["users"] / seconds,
        "peak_over_start_mb": _peak_mb() - base,
        "dense_matrix_mb": res["counts"]["users"] * items * 4 / 2**20,
        "tables_mb": (n_users + items) * dim * 4 / 2**20,
    }
    print(
        f"full ranking: {rec['users']:,} users x {items:,} items, d={dim}: {seconds:.1f} s "
        f"({rec['users_per_s']:.0f} users/s), peak +{rec['peak_over_start_mb']:.0f} MB over the start "
        f"(tables {rec['tables_mb']:.0f} MB; a dense users x items matrix would be {rec['dense_matrix_mb']:,.0f} MB)"
    )
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()}))
    return rec


def load_only(work: pathlib.Path, lines: int) -> dict:
    """``load_dir`` of about ``lines`` lines (two domains, 10⁶ items each): time and peak over the arrays."""
    import tracemalloc

    import jaxrec

    folder = make_data(work, lines, 1_000_000)
    base = _rss_mb()
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the peak of the arrays the load holds
    t0 = time.perf_counter()
    ds = jaxrec.load_dir(folder)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    arrays = [a for d in ds.domains.values() for s in d.splits.values() for a in s if a is not None]
    arrays_mb = (
        sum(a.nbytes for a in arrays) + ds.user_ids.nbytes + sum(d.item_ids.nbytes for d in ds.domains.values())
    ) / 2**20
    n = sum(int(a.size) for d in ds.domains.values() for a in (s.users for s in d.splits.values()))
    rec = {
        "bench": "scale-load",
        "lines": n,
        "load_s": seconds,
        "traced_peak_mb": traced,
        "rss_peak_over_start_mb": _peak_mb() - base,
        "arrays_mb": arrays_mb,
        "peak_over_arrays": traced / arrays_mb,
    }
    print(
        f"load_dir: {n:,} lines in {seconds:.1f} s; peak {traced:.0f} MB of numpy buffers (RSS "
        f"+{rec['rss_peak_over_start_mb']:.0f} MB) for {arrays_mb:.0f} MB of final arrays "
        f"({rec['peak_over_arrays']:.2f}x)"
    )
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()}))
    return rec


def estimates_only(args) -> list[dict]:
    """Every recipe's memory estimate and the up-front check (``methods.check_memory`` at ``--memory-gb``) on each
    size, without training: which recipes run within the limit and which are refused, with the message."""
    import jaxrec
    from jaxrec import methods

    names = args.methods.split(",") if args.methods else list(jaxrec.METHODS)
    rows = []
    for size in args.sizes.split(","):
        x, i = _size(size)
        ds = jaxrec.load_dir(make_data(pathlib.Path(args.work), x, i))
        print(f"{'interactions':>12} {'items':>9} {'method':<14}{'est GB':>8}  largest part / status")
        for name in names:
            config = methods.get_method(name).default_config
            est = methods.estimate_memory(name, ds, source="source", target="target", config=config)
            try:
                methods.check_memory(
                    name, ds, source="source", target="target", config=config, memory_gb=args.memory_gb
                )
                status, reason = "fits", ""
            except methods.MemoryLimitError as err:
                status, reason = "refused", str(err)
            part, part_bytes = est.dominant()
            n = sum(int(a.size) for d in ds.domains.values() for a in (s.users for s in d.splits.values()))
            print(f"{n:>12,} {i:>9,} {name:<14}{est.bytes / 1e9:>8.1f}  {part} ({part_bytes / 1e9:.1f} GB); {status}")
            rec = {"bench": "scale-estimate", "size": size, "method": name, "interactions": n, "users": ds.n_users}
            rec |= {"est_gb": round(est.bytes / 1e9, 2), "largest": part, "memory_gb": args.memory_gb}
            rec |= {"status": status, "reason": reason}
            print(json.dumps(rec))
            rows.append(rec)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK}")
    parser.add_argument("--sizes", default=None, help=f"interactions:items,... (default {QUICK}; all: {FULL})")
    parser.add_argument("--methods", default=None, help="comma-separated recipes (default: every one)")
    parser.add_argument("--work", default="/tmp/jaxrec-scale", help="where the generated datasets are kept")
    parser.add_argument("--memory-gb", type=float, default=16.0, help="refuse a recipe estimated above 0.9 x this")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per (size, recipe) child")
    parser.add_argument("--out", default=None, help="append every record to this JSON-lines file")
    parser.add_argument("--figure", default=str(HERE / "scale.png"))
    parser.add_argument("--eval-users", type=int, default=None)
    parser.add_argument("--eval-items", type=int, default=1_000_000)
    parser.add_argument("--eval-dim", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=1024)
    parser.add_argument("--load-lines", type=float, default=None)
    parser.add_argument("--estimates", action="store_true", help="memory estimates and the check only, no training")
    parser.add_argument("--from", dest="records", default=None, help="fit and plot saved records (JSON lines)")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.memory_gb)))
        return
    if args.eval_users:
        eval_only(args.eval_users, args.eval_items, args.eval_dim, args.eval_batch)
        return
    if args.load_lines:
        load_only(pathlib.Path(args.work), int(args.load_lines))
        return
    if args.estimates:
        args.sizes = args.sizes or QUICK
        estimates_only(args)
        return
    if args.records:
        rows = [json.loads(line) for line in open(args.records) if line.strip()]
        rows = [r for r in rows if r.get("bench") == "scale"]  # the recipe records (not load / eval / estimates)
    else:
        args.sizes = args.sizes or QUICK
        rows = run_sizes(args)
    fits = exponents(rows)
    if fits:
        print(f"\n{'method':<14}{'items':>9}{'points':>7}{'epoch exp':>10}{'train exp':>10}{'peak exp':>9}")
        for method, fit in fits.items():
            print(
                f"{method:<14}{fit['items']:>9,}{fit['points']:>7}{fit['epoch_s']:>10.2f}{fit['train_s']:>10.2f}"
                f"{fit['peak_mb']:>9.2f}"
            )
            print(json.dumps({"bench": "scale-exponent", "method": method} | fit))
    if args.figure and any(r.get("status") == "ok" for r in rows):
        figure(rows, args.figure)


if __name__ == "__main__":
    main()

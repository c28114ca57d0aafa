"""Dense against row-sparse (lazy) table updates: train steps per second as the embedding tables grow.

Run:
  python bench/sparse_rows.py [--rows 10000,100000,1000000] [--batch-size 1024] [--dim 64] [--steps 30]

Model: ``methods.SharedEmbeddingModel`` as ``cmf`` trains it (a shared user table of ``rows`` rows, two item tables
of ``rows / 4`` rows each, BPR with 4 negatives on both domains, Adam). For each size the same state and batches go
through ``make_train_step(objective)`` (every parameter dense) and ``make_train_step(objective,
sparse_min_rows=1)`` (every table updated at the rows each batch looks up), one after the other in one process;
the median of 3 timed runs of ``--steps`` steps after a compile step. Prints a table and one JSON line per size;
the ratio is what to read on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _time(step, state, batches, rng, repeats: int = 3) -> tuple[float, float]:
    """``(compile + first step seconds, median steps/s)``; ``state`` is not donated."""
    import jax

    t0 = time.perf_counter()
    out, _ = step(state, batches[0], rng)
    jax.block_until_ready(out)
    first = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        s = state
        t0 = time.perf_counter()
        for b in batches:
            s, m = step(s, b, rng)
        jax.block_until_ready(s)
        rates.append(len(batches) / (time.perf_counter() - t0))
    return first, float(np.median(rates))


def run(rows: int, batch_size: int, dim: int, steps: int) -> dict:
    import jax

    from jaxrec import data, methods, train

    n_items = max(rows // 4, 1000)
    ds, _ = data.synthetic(
        n_users=rows, n_items=(n_items, n_items), interactions_per_user=(3.0, 2.0), min_interactions=1, seed=0
    )
    config = methods.EmbeddingConfig(dim=dim, batch_size=batch_size, progress=False)  # cmf's defaults otherwise
    domains = ("source", "target")
    model = methods.SharedEmbeddingModel(
        ds.n_users, tuple(ds.n_items(d) for d in domains), domains, config.dim, tuple(config.user_tower)
    )
    objective = methods.recipe_objective(config, joint=True, total_steps=steps)
    stream, _ = methods.domain_batches(ds, domains, batch_size=batch_size, n_negatives=config.n_negatives)
    batches = [b for _, b in zip(range(steps), stream(np.random.default_rng(0)))]
    state = train.create_train_state(jax.random.key(0), model, batches[0], train.OptimizerConfig())
    rng = jax.random.key(1)
    dense = train.make_train_step(objective, donate=False)
    lazy = train.make_train_step(objective, donate=False, sparse_min_rows=1)
    dense_first, dense_rate = _time(dense, state, batches, rng)
    lazy_first, lazy_rate = _time(lazy, state, batches, rng)
    return {
        "bench": "sparse-rows",
        "user_rows": ds.n_users,
        "item_rows": [ds.n_items("source"), ds.n_items("target")],
        "batch_size": batch_size,
        "dim": dim,
        "dense_steps_per_s": round(dense_rate, 2),
        "sparse_steps_per_s": round(lazy_rate, 2),
        "speedup": round(lazy_rate / dense_rate, 2),
        "dense_compile_s": round(dense_first, 2),
        "sparse_compile_s": round(lazy_first, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,100000,1000000", help="user-table rows, comma-separated")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"{'user rows':>10} {'item rows':>16} {'dense steps/s':>14} {'sparse steps/s':>15} {'ratio':>6}")
    for rows in (int(float(r)) for r in args.rows.split(",")):
        rec = run(rows, args.batch_size, args.dim, args.steps)
        items = "+".join(f"{n:,}" for n in rec["item_rows"])
        print(
            f"{rec['user_rows']:>10,} {items:>16} {rec['dense_steps_per_s']:>14.1f} {rec['sparse_steps_per_s']:>15.1f}"
            f" {rec['speedup']:>6.2f}"
        )
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()

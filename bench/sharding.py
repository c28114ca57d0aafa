"""Row-sharded vs replicated embedding tables on the mesh path: time per train step and table bytes per device.

Run: ``python bench/sharding.py [--devices 8] [--users 200000] [--items 50000] [--dim 32] [--batch-size 4096]``.
``--devices N`` fakes N CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set before jax is
imported); on a CPU they share the same cores, so the times measure the partitioned program's overhead, not a
speed-up, while the bytes per device are what a real mesh would hold. On a GPU/TPU host the script uses the real
devices (``--devices 0``).

The model is the embedding recipes' :class:`jaxrec.methods.SharedEmbeddingModel` (one user table, one item table
per domain, tables padded to a multiple of the device count) trained with BPR on random batches of
``--batch-size`` positives per domain and 4 negatives each. Reports compile time separately, then the median of
``--repeats`` timed runs of ``--steps`` steps (``jax.block_until_ready`` on the state), the bytes of every table
(parameters and Adam's two moments) held by one device, and the largest difference between the two runs'
parameters. Prints a table and one JSON line per configuration.
"""

import argparse
import os

_args = argparse.ArgumentParser(description=__doc__)
_args.add_argument("--devices", type=int, default=8, help="fake CPU devices (0: use the real ones)")
_args.add_argument("--users", type=int, default=200_000)
_args.add_argument("--items", type=int, default=50_000, help="items per domain (two domains)")
_args.add_argument("--dim", type=int, default=32)
_args.add_argument("--batch-size", type=int, default=4096)
_args.add_argument("--steps", type=int, default=10)
_args.add_argument("--repeats", type=int, default=3)
ARGS = _args.parse_args()
if ARGS.devices:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    )

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxrec  # noqa: E402
from jaxrec import methods  # noqa: E402
from jaxrec import train as tr  # noqa: E402


def _batches(n, rng):
    out = []
    for _ in range(n):
        b = {}
        for d in ("source", "target"):
            b[d] = {
                "users": rng.integers(0, ARGS.users, ARGS.batch_size).astype(np.int32),
                "items": rng.integers(0, ARGS.items, ARGS.batch_size).astype(np.int32),
                "negatives": rng.integers(0, ARGS.items, (ARGS.batch_size, 4)).astype(np.int32),
                "mask": np.ones(ARGS.batch_size, bool),
            }
        out.append(b)
    return out


def _table_bytes(state) -> int:
    """Bytes of every table leaf (parameters and optimizer moments) held by the first device."""
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if jax.tree_util.keystr(path).endswith("['embedding']"):
            total += leaf.addressable_shards[0].data.nbytes
    return total


def bench(shard_rows: bool, batches):
    n = jax.device_count()
    model = methods.SharedEmbeddingModel(
        ARGS.users, (ARGS.items, ARGS.items), ("source", "target"), ARGS.dim, row_multiple=n
    )
    state = tr.create_train_state(jax.random.key(0), model, batches[0], tr.OptimizerConfig(learning_rate=1e-2))
    place = tr.placement("mesh", shard_rows=shard_rows)
    step = tr.make_train_step(
        methods.bpr_objective(1e-2), parallel="mesh", mesh=place.mesh, state_sharding=place.state_sharding(state)
    )
    state = place.put_state(state)
    placed = [place.put_batch(b) for b in batches]
    rng = jax.random.key(1)
    t0 = time.perf_counter()
    state, _ = step(state, placed[0], rng)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(ARGS.repeats):
        t0 = time.perf_counter()
        for b in placed[: ARGS.steps]:
            state, _ = step(state, b, rng)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / ARGS.steps)
    return state, compile_s, float(np.median(times)), _table_bytes(state)


def main():
    batches = _batches(ARGS.steps, np.random.default_rng(0))
    n = jax.device_count()
    print(
        f"jax {jax.__version__}, jaxrec {jaxrec.__version__}, {n} x {jax.devices()[0].platform}; users {ARGS.users:,}, "
        f"items {ARGS.items:,} x 2, dim {ARGS.dim}, batch {ARGS.batch_size} x 2 domains x (1 + 4 negatives)"
    )
    print(f"{'tables':<14}{'compile s':>11}{'ms/step':>10}{'table MB/device':>17}{'ratio':>8}")
    results = {}
    for shard_rows in (False, True):
        label = "row-sharded" if shard_rows else "replicated"
        state, compile_s, step_s, nbytes = bench(shard_rows, batches)
        results[label] = (state, step_s, nbytes)
        ratio = step_s / results["replicated"][1]
        print(f"{label:<14}{compile_s:>11.1f}{step_s * 1e3:>10.1f}{nbytes / 2**20:>17.1f}{ratio:>8.2f}")
        row = {
            "bench": "sharding",
            "tables": label,
            "devices": n,
            "platform": jax.devices()[0].platform,
            "users": ARGS.users,
            "items": ARGS.items,
            "dim": ARGS.dim,
            "batch_size": ARGS.batch_size,
            "compile_s": round(compile_s, 2),
            "ms_per_step": round(step_s * 1e3, 2),
            "table_bytes_per_device": nbytes,
            "step_time_vs_replicated": round(ratio, 3),
        }
        print(json.dumps(row))
    a = jax.tree.leaves(results["replicated"][0].params)
    b = jax.tree.leaves(results["row-sharded"][0].params)
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    steps = 1 + ARGS.repeats * ARGS.steps
    print(f"largest parameter difference, row-sharded vs replicated, after {steps} steps: {diff:.2e}")


if __name__ == "__main__":
    main()

"""Train-step throughput: shared two-tower (user towers) + MMD alignment, single device vs pmap vs mesh.

Run: ``python bench/train_step.py [--devices 8] [--quick]``. ``--devices N`` fakes N CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before jax is imported). On a CPU, fake devices share
the same cores: they add no compute, so pmap/mesh numbers measure the overhead of the data-parallel machinery,
not a speed-up. On a GPU/TPU host the same script uses the real devices.

Reports compile time separately, then the median of several timed runs of ``--steps`` steps
(``jax.block_until_ready`` on the state), as steps/s and examples/s (positives per second, both domains).
"""

import argparse
import os
import sys

_args = argparse.ArgumentParser(description=__doc__)
_args.add_argument("--devices", type=int, default=0, help="fake CPU devices (0: use the real ones)")
_args.add_argument("--quick", action="store_true", help="small configurations only")
_args.add_argument("--steps", type=int, default=20)
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
from jaxrec import batching, methods  # noqa: E402
from jaxrec import train as tr  # noqa: E402


def _batches(ds, batch_size, n, rng):
    inters = {d: ds.interactions(d) for d in ds.domain_names}
    out = []
    for step in batching.multi_domain_batches(
        inters, {d: batch_size for d in inters}, rng=rng, n_items={d: ds.n_items(d) for d in inters}, n_negatives=4
    ):
        out.append(step)
        if len(out) == n:
            return out
    return out


def bench(ds, batch_size, dim, parallel):
    model = methods.SharedEmbeddingModel(
        ds.n_users, tuple(ds.n_items(d) for d in ds.domain_names), ds.domain_names, dim, (dim,)
    )
    objective = methods.bpr_objective(1e-4, "mmd", 1.0, discrepancy_options=methods.MMD_OPTIONS)
    batches = _batches(ds, batch_size, ARGS.steps, np.random.default_rng(0))
    state = tr.create_train_state(jax.random.key(0), model, batches[0], tr.OptimizerConfig())
    n_dev = jax.local_device_count()
    mesh = tr.make_mesh() if parallel == "mesh" else None
    if parallel == "pmap":
        state = tr.replicate(state)
        placed = [batching.shard(b, n_dev) for b in batches]
    elif parallel == "mesh":
        state = tr.put_replicated(state, mesh)
        placed = [tr.put_batch(b, mesh) for b in batches]
    else:
        placed = [jax.device_put(b) for b in batches]
    step = tr.make_train_step(objective, parallel=parallel, mesh=mesh)
    key = jax.random.key(1)
    t0 = time.perf_counter()
    state, m = step(state, placed[0], key)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(ARGS.repeats):
        t0 = time.perf_counter()
        for b in placed:
            state, m = step(state, b, key)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    steps_s = len(placed) / t
    return {
        "bench": "train_step",
        "parallel": parallel,
        "devices": n_dev if parallel != "none" else 1,
        "batch_per_domain": batch_size,
        "dim": dim,
        "compile_s": round(compile_s, 3),
        "steps_per_s": round(steps_s, 2),
        "examples_per_s": round(steps_s * batch_size * 2),
        "backend": jax.default_backend(),
    }


def main():
    ds, _ = jaxrec.synthetic(n_users=20_000, n_items=(5_000, 3_000), interactions_per_user=(20.0, 10.0), seed=0)
    sizes = [(256, 32), (1024, 64)] if ARGS.quick else [(256, 32), (1024, 64), (4096, 64), (4096, 128)]
    modes = ["none"] + (["pmap", "mesh"] if jax.local_device_count() > 1 else [])
    print(f"backend={jax.default_backend()} devices={jax.local_device_count()} jax={jax.__version__}")
    print(f"{'parallel':<8}{'dev':>4}{'batch/dom':>10}{'dim':>5}{'compile s':>11}{'steps/s':>10}{'examples/s':>13}")
    rows = []
    for batch_size, dim in sizes:
        for mode in modes:
            if batch_size % jax.local_device_count() and mode != "none":
                continue
            r = bench(ds, batch_size, dim, mode)
            rows.append(r)
            print(
                f"{r['parallel']:<8}{r['devices']:>4}{r['batch_per_domain']:>10}{r['dim']:>5}{r['compile_s']:>11.2f}"
                f"{r['steps_per_s']:>10.1f}{r['examples_per_s']:>13,}"
            )
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())

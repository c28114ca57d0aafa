"""Where the time of one exact top-k call goes: a ``jax.profiler`` trace summed per operation.

Run by hand from the repository root (never from the test suite):

    python3 bench/topk_profile.py                          # Q=1024, N=196608, d=64, k=10, default backend
    python3 bench/topk_profile.py --shape 4096:200000:128:100 --method scan --json out.json

The kernel (``similarity_topk`` with the given options) is compiled and called twice untraced, then traced for
``--calls`` calls. The Perfetto trace's complete events (``ph == "X"``) are summed by name: on the CPU these are
XLA's thunks and fusions; on a GPU the device kernels too (CUPTI), under their kernel names. The table lists the
``--top`` most expensive names with their total milliseconds per call and counts, then the same summed by the
name's first dotted component (``fusion.12`` → ``fusion``). Wall time per call (median of the traced calls,
which carry the profiler's overhead) is printed for scale. ``--json`` writes the whole aggregation.

The events of nested scopes overlap (a while loop's event contains its body's), so the rows do not add up to the
wall time: read them as "how much time was spent inside this", and compare rows of the same kind.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrec import topk  # noqa: E402


def aggregate(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
    """(total µs, count) per event name over every Perfetto trace file under ``trace_dir``."""
    paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
        raise SystemExit(f"no *.trace.json.gz under {trace_dir}: did the profiler run?")
    total, count = collections.Counter(), collections.Counter()
    for path in paths:
        with gzip.open(path) as f:
            events = json.load(f).get("traceEvents", [])
        for e in events:
            if e.get("ph") == "X" and "dur" in e:
                name = str(e.get("name", "?"))[:80]
                total[name] += float(e["dur"])
                count[name] += 1
    return total, count


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1024:196608:64:10", help="Q:N:d:k")
    ap.add_argument("--method", default="auto", choices=topk.METHODS)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--query-block", type=int, default=None)
    ap.add_argument("--precision", default="highest", help="matmul precision ('default' = JAX's own)")
    ap.add_argument("--calls", type=int, default=3, help="traced calls")
    ap.add_argument("--top", type=int, default=30, help="rows of the per-name table")
    ap.add_argument("--json", default=None, help="write the aggregation to this file")
    args = ap.parse_args(argv)
    nq, n, d, k = (int(v) for v in args.shape.split(":"))
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((nq, d), dtype=np.float32))
    x = jnp.asarray(rng.standard_normal((n, d), dtype=np.float32))
    kw = {"method": args.method, "precision": None if args.precision == "default" else args.precision}
    if args.chunk_size:
        kw["chunk_size"] = args.chunk_size
    if args.query_block:
        kw["query_block"] = args.query_block

    def call():
        return jax.block_until_ready(topk.similarity_topk(q, x, k, **kw))

    call()
    call()
    times = []
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(args.calls):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        jax.profiler.stop_trace()
        total, count = aggregate(trace_dir)
    per_call = 1e-3 / args.calls  # µs summed over the calls → ms per call
    wall = float(np.median(times)) * 1e3
    print(f"backend {jax.default_backend()} | Q={nq} N={n} d={d} k={k} | {kw} | traced wall {wall:.1f} ms per call")
    print("\n| name | ms per call | events per call |\n|---|---:|---:|")
    for name, us in total.most_common(args.top):
        print(f"| `{name}` | {us * per_call:.2f} | {count[name] / args.calls:.0f} |")
    by_kind = collections.Counter()
    for name, us in total.items():
        by_kind[name.split(".")[0]] += us
    print("\n| kind | ms per call |\n|---|---:|")
    for name, us in by_kind.most_common(args.top):
        print(f"| `{name}` | {us * per_call:.2f} |")
    if args.json:
        out = {
            "backend": jax.default_backend(),
            "shape": {"Q": nq, "N": n, "d": d, "k": k},
            "options": kw,
            "wall_ms_per_call": wall,
            "ms_per_call": {name: us * per_call for name, us in total.items()},
            "events_per_call": {name: c / args.calls for name, c in count.items()},
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

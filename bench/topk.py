"""Microbenchmark: exact similarity top-k, jaxrec kernels against numpy, sklearn, faiss and naive JAX.

Run by hand from the repository root (never from the test suite):

    python3 bench/topk.py --quick              # small configurations, about a minute
    python3 bench/topk.py                      # the 12 configurations d × k × (Q, N), ~25 minutes
    python3 bench/topk.py --skip-slow          # ... without sklearn where Q·N >= 2^28: ~18 minutes

Protocol: one process; inputs are unit vectors (so dot = cosine and every method ranks the same way). Each
configuration first calls every method once (JAX compiles here; compile time = first call minus the median),
then ``--reps`` interleaved rounds call every method once each. Every timed call is preceded by a 256 MiB cache
flush (the numpy floor writes the Q×N matrix, which would otherwise evict the items for whichever method runs
next) and measures its peak extra resident memory (``VmHWM`` after resetting it through
``/proc/self/clear_refs``, minus the resident size before the call; the largest over the rounds). A method
whose first timed call (after compilation) took more than ``--slow-s`` seconds is timed in one round only (the
table's ``runs`` column).
Times are medians. Recall is ``|returned ∩ exact| / k`` against float32 ``argpartition`` of the floor's matrix.
One JSON line per configuration goes to stdout (prefix ``JSON``), and a table at the end. Both faiss settings
are timed side by side: ``× faiss`` (``ratio_faiss``) is relative to the faster of the two in that
configuration, ``× faiss default`` and ``× faiss BLAS`` (``ratio_faiss_default``, ``ratio_faiss_blas``) to each.

Methods: ``floor`` (``np.matmul`` into a preallocated Q×N float32 array: the bare matrix product),
``numpy_argpartition`` (matmul + ``argpartition`` + sort of the k; query blocks of 256 when Q×N is large so the
int64 index matrix fits), ``sklearn`` (``cosine_similarity`` + full ``argsort``: the original design; same
blocking), ``faiss`` (``IndexFlatIP.search`` at faiss's defaults), ``faiss_blas`` (the same search with
``faiss.cvar.distance_compute_blas_threshold = 0``, restored after each call: faiss takes its BLAS path, a GEMM
per block followed by heap selection, only when Q·d reaches that threshold, 128,000 by default; below it, it
scans with its own SIMD loops), ``jax_naive`` (``jit(lax.top_k(q @ x.T, k))``), ``jaxrec``
(``similarity_topk``, method ``auto``), ``jaxrec_scan`` (``method="scan"``), ``jaxrec_approx``
(the ``approx_max_k`` path of ``approx_similarity_topk``, recall_target 0.95, ``exact_off_tpu=False``: exact
on CPU and GPU, where ``approx_similarity_topk`` by default runs the ``jaxrec`` kernel instead).

On an accelerator (JAX's default backend is not the CPU; or ``--device-report`` on CPU) two more things are
measured: ``device_floor`` (``jit(q @ x.T)`` on the device, the whole Q×N matrix: the device's own floor) and,
once per run, the device's matrix-unit rate (a jitted 8192³ product of random matrices in float32 at JAX's default
precision and at ``HIGHEST``, and in bfloat16, median of 5). Every JAX method then gets ``tflops`` (2·Q·N·d /
median time, the scoring work only) and ``pct_matrix_rate`` (that over the float32 rate at the run's precision).
numpy, sklearn and faiss stay on the host CPU. ``--precision`` (default ``highest``: full float32 products, as
``similarity_topk`` does by default) applies to every JAX method; ``--precision default`` leaves JAX's own
(TF32 for float32 on GPU).

Device runs (``bench/device_check.sh``): ``--host floor`` keeps only the numpy floor among the host methods,
``--variants METHOD:CHUNK:QBLOCK,...`` adds jaxrec settings side by side (e.g. larger chunks on a GPU),
``--time-budget`` stops starting configurations after that many seconds and ``--jsonl`` appends every JSON line
to a file. sklearn and faiss are optional: when one is not installed its rows say ``skipped`` and the
``× faiss`` columns are empty.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from jaxrec import topk  # noqa: E402
from jaxrec.topk import exact  # noqa: E402

FULL = [
    (d, k, q, n)
    for (q, n) in ((256, 100_000), (1024, 1_000_000), (4096, 200_000))
    for d in (64, 128)
    for k in (10, 100)
]
QUICK = [(64, 10, 256, 20_000), (64, 100, 256, 20_000), (128, 10, 512, 40_000)]
BLOCK_ELEMS = 1 << 28  # dense references work in query blocks beyond 2^28 scores (1 GiB float32)
_FLUSH = None
PRECISION: str | None = "highest"  # matmul precision of every JAX method (--precision)


def _flush_cache() -> None:
    """Touches 256 MiB so that no method starts with another method's data in cache."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = np.ones(1 << 26, np.float32)
    _FLUSH += 1.0


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, v, _ = line.split()
                vals[key[:-1]] = int(v) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def _peak_extra(fn: Callable[[], object]) -> tuple[float, int | None]:
    """(seconds, peak extra resident bytes or None) of one call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base, _ = _rss()
    except OSError:
        base = None
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    del out
    if base is None:
        return dt, None
    return dt, max(0, _rss()[1] - base)


def _blocks(q: int, n: int) -> int:
    return max(1, min(q, BLOCK_ELEMS // n))


def _numpy_argpartition(q, x, k):
    out_i = np.empty((q.shape[0], k), np.int64)
    b = _blocks(q.shape[0], x.shape[0])
    for lo in range(0, q.shape[0], b):
        s = q[lo : lo + b] @ x.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        out_i[lo : lo + b] = np.take_along_axis(part, order, axis=1)
    return out_i


def _sklearn(q, x, k):
    from sklearn.metrics.pairwise import cosine_similarity

    out_i = np.empty((q.shape[0], k), np.int64)
    b = _blocks(q.shape[0], x.shape[0])
    for lo in range(0, q.shape[0], b):
        s = cosine_similarity(q[lo : lo + b], x)
        out_i[lo : lo + b] = np.argsort(-s, axis=1)[:, :k]
    return out_i


def _exact_reference(q, x, k, floor_out):
    """Exact float32 top-k sets from the floor's matrix (computed once per configuration, untimed)."""
    np.matmul(q, x.T, out=floor_out)
    b = _blocks(q.shape[0], x.shape[0])
    ref = np.empty((q.shape[0], k), np.int64)
    for lo in range(0, q.shape[0], b):
        ref[lo : lo + b] = np.argpartition(-floor_out[lo : lo + b], k - 1, axis=1)[:, :k]
    return ref


def _recall(ids, ref) -> float:
    ids = np.asarray(ids)
    hits = [len(np.intersect1d(a, r, assume_unique=False)) for a, r in zip(ids, ref)]
    return float(np.sum(hits)) / ref.size


def _matmul_rate(dtype, size: int = 8192, reps: int = 5, precision=None) -> float:
    """Measured matrix-unit rate of the default JAX device: FLOP/s of a jitted ``size³`` product of random
    (never constant: constant data can run faster) matrices, median of ``reps``."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    f = jax.jit(lambda u, v: jnp.matmul(u, v, precision=precision))
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t)
    return 2 * size**3 / float(np.median(times))


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def parse_variants(spec: str | None) -> list[tuple[str, dict]]:
    """``"bucket:16384:1024,scan::512"`` → ``[(name, similarity_topk kwargs)]`` (``method:chunk_size:query_block``,
    an empty field keeps the default)."""
    out = []
    for item in filter(None, (spec or "").split(",")):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in topk.METHODS:
            raise SystemExit(f"--variants: {item!r} is not METHOD:CHUNK:QBLOCK with METHOD in {topk.METHODS}")
        kw = {"method": parts[0]}
        if parts[1]:
            kw["chunk_size"] = int(parts[1])
        if parts[2]:
            kw["query_block"] = int(parts[2])
        out.append((f"jaxrec[{parts[0]},c{parts[1] or '-'},qb{parts[2] or '-'}]", kw))
    return out


def _faiss_blas_search(faiss, index, q, k):
    """``index.search`` with faiss's BLAS path forced (``distance_compute_blas_threshold = 0``); the threshold is
    restored afterwards, so the ``faiss`` row keeps faiss's default."""
    default = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 0
    try:
        return index.search(q, k)[1]
    finally:
        faiss.cvar.distance_compute_blas_threshold = default


def _methods(q, x, k, *, skip_slow: bool, floor_out, device_report: bool = False, host="all", variants=()):
    n, d = x.shape
    qj, xj = jnp.asarray(q), jnp.asarray(x)
    naive = jax.jit(lambda a, b: lax.top_k(jnp.matmul(a, b.T, precision=PRECISION), k))
    m = {"floor": lambda: np.matmul(q, x.T, out=floor_out)[:0]}
    skipped = []
    if host == "all":
        m["numpy_argpartition"] = lambda: _numpy_argpartition(q, x, k)
        if not _have("sklearn"):
            skipped.append("sklearn")
        elif skip_slow and q.shape[0] * n >= BLOCK_ELEMS:
            skipped.append("sklearn")
        else:
            m["sklearn"] = lambda: _sklearn(q, x, k)
        if _have("faiss"):
            import faiss

            index = faiss.IndexFlatIP(d)
            index.add(x)
            m["faiss"] = lambda: index.search(q, k)[1]
            m["faiss_blas"] = lambda: _faiss_blas_search(faiss, index, q, k)
        else:
            skipped += ["faiss", "faiss_blas"]
    if device_report:
        product = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=PRECISION))
        m["device_floor"] = lambda: jax.block_until_ready(product(qj, xj))[:0]
    m["jax_naive"] = lambda: jax.block_until_ready(naive(qj, xj))[1]
    p = {"precision": PRECISION}
    m["jaxrec"] = lambda: jax.block_until_ready(topk.similarity_topk(qj, xj, k, **p))[1]
    m["jaxrec_scan"] = lambda: jax.block_until_ready(topk.similarity_topk(qj, xj, k, method="scan", **p))[1]
    m["jaxrec_approx"] = lambda: jax.block_until_ready(
        topk.approx_similarity_topk(qj, xj, k, recall_target=0.95, exact_off_tpu=False, **p)
    )[1]
    for name, kw in variants:
        m[name] = functools.partial(lambda kw: jax.block_until_ready(topk.similarity_topk(qj, xj, k, **kw, **p))[1], kw)
    return m, skipped


def _xla_temp_bytes(q, x, k, variants=()) -> dict:
    """XLA's own temp-buffer size of the compiled jaxrec kernels (no RSS noise)."""
    import inspect

    from jaxrec.topk.exact import _similarity_topk

    out = {}
    qj, xj = jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype)
    defaults = {
        name: p.default
        for name, p in inspect.signature(topk.similarity_topk).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in ("metric", "exclude", "method")
    }
    defaults["precision"] = PRECISION
    accelerator = exact._on_accelerator()
    settings = [("jaxrec", {"method": "auto"}), ("jaxrec_scan", {"method": "scan"}), *variants]
    for name, kw in settings:
        opts = {**defaults, **kw}
        opts["chunk_size"], opts["query_block"] = exact._default_blocks(
            q.shape[0], x.shape[0], opts["chunk_size"], opts["query_block"], accelerator
        )
        c = _similarity_topk.lower(qj, xj, None, k=k, metric="dot", accelerator=accelerator, **opts).compile()
        ma = c.memory_analysis()
        out[name] = None if ma is None else int(ma.temp_size_in_bytes)
    naive = jax.jit(lambda a, b: lax.top_k(a @ b.T, k)).lower(qj, xj).compile().memory_analysis()
    out["jax_naive"] = None if naive is None else int(naive.temp_size_in_bytes)
    return out


def run_config(
    d: int,
    k: int,
    nq: int,
    n: int,
    *,
    reps: int,
    skip_slow: bool,
    slow_s: float,
    seed: int = 0,
    matrix_rate: float | None = None,
    host: str = "all",
    variants: list[tuple[str, dict]] = (),
) -> dict:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, d), dtype=np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    floor_out = np.empty((nq, n), np.float32)
    ref = _exact_reference(q, x, k, floor_out)
    methods, skipped = _methods(
        q, x, k, skip_slow=skip_slow, floor_out=floor_out, device_report=bool(matrix_rate), host=host, variants=variants
    )
    res: dict[str, dict] = {}
    for name, fn in methods.items():  # first call: compile (JAX), recall
        _flush_cache()
        t = time.perf_counter()
        ids = fn()
        res[name] = {
            "first_s": time.perf_counter() - t,
            "peak_extra_bytes": None,
            "runs": [],
            "recall": None if name in ("floor", "device_floor") else _recall(ids, ref),
        }
        del ids
    for rnd in range(reps):  # interleaved timed rounds; peak memory is the largest over the rounds
        for name, fn in methods.items():
            if rnd and res[name]["runs"][0] > slow_s:
                continue  # slow method (its first timed call, without compilation): one timed round
            _flush_cache()
            dt, peak = _peak_extra(fn)
            r = res[name]
            r["runs"].append(dt)
            if peak is not None:
                r["peak_extra_bytes"] = max(peak, r["peak_extra_bytes"] or 0)
    temp = _xla_temp_bytes(q, x, k, variants)
    floor_t = float(np.median(res["floor"]["runs"]))
    faiss_ts = {name: float(np.median(res[name]["runs"])) for name in ("faiss", "faiss_blas") if name in res}
    faiss_t = min(faiss_ts.values(), default=None)  # faiss at the faster of its two settings
    qn_bytes = nq * n * 4
    res["floor"]["peak_extra_bytes"] = qn_bytes  # its output, preallocated outside the timing
    for name, r in res.items():
        r["median_s"] = float(np.median(r["runs"]))
        r["ratio_floor"] = r["median_s"] / floor_t
        r["ratio_faiss"] = None if faiss_t is None else r["median_s"] / faiss_t
        r["ratio_faiss_default"] = r["median_s"] / faiss_ts["faiss"] if "faiss" in faiss_ts else None
        r["ratio_faiss_blas"] = r["median_s"] / faiss_ts["faiss_blas"] if "faiss_blas" in faiss_ts else None
        r["compile_s"] = max(0.0, r["first_s"] - r["median_s"]) if name.startswith("jax") else None
        if r["peak_extra_bytes"] is not None:
            r["peak_extra_frac_qn"] = r["peak_extra_bytes"] / qn_bytes
        if matrix_rate and name.startswith(("jax", "device")):
            r["tflops"] = 2 * nq * n * d / r["median_s"] / 1e12
            r["pct_matrix_rate"] = 100 * 2 * nq * n * d / r["median_s"] / matrix_rate
        if name in temp:
            r["xla_temp_bytes"] = temp[name]
            r["xla_temp_frac_qn"] = None if temp[name] is None else temp[name] / qn_bytes
    return {"d": d, "k": k, "Q": nq, "N": n, "reps": reps, "slow_s": slow_s, "skipped": skipped, "methods": res}


def _version(module: str) -> str | None:
    if not _have(module):
        return None
    return getattr(__import__(module), "__version__", "?")


def environment() -> dict:
    blas = []
    if _have("threadpoolctl"):
        from threadpoolctl import threadpool_info

        blas = [
            {key: i.get(key) for key in ("internal_api", "prefix", "version", "architecture", "num_threads")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
    return {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "faiss": _version("faiss"),
        "sklearn": _version("sklearn"),
        "devices": [str(d) for d in jax.devices()],
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "blas": blas,
        "loadavg_start": os.getloadavg(),
    }


def _f2(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def table(results: list[dict]) -> str:
    names = ["floor", "numpy_argpartition", "sklearn", "faiss", "faiss_blas", "device_floor", "jax_naive", "jaxrec"]
    names.append("jaxrec_scan")
    names.append("jaxrec_approx")
    for r in results:
        names += [name for name in r["methods"] if name not in names]
    head = (
        "| d | k | Q | N | method | median s | runs | × floor | × faiss | × faiss default | × faiss BLAS | recall "
        "| compile s | peak extra MiB | peak / QN | XLA temp / QN | TFLOP/s | % matrix rate |"
    )
    lines = [head, "|" + "---|" * 18]
    for r in results:
        for name in names:
            m = r["methods"].get(name)
            if m is None:
                if name in r["skipped"]:
                    lines.append(f"| {r['d']} | {r['k']} | {r['Q']} | {r['N']} | {name} | skipped |" + " |" * 12)
                continue
            peak = m.get("peak_extra_bytes")
            frac = m.get("peak_extra_frac_qn")
            rec = "" if m["recall"] is None else f"{m['recall']:.4f}"
            comp = "" if m["compile_s"] is None else f"{m['compile_s']:.1f}"
            temp = m.get("xla_temp_frac_qn")
            rate = "" if "tflops" not in m else f"{m['tflops']:.2f} | {m['pct_matrix_rate']:.1f}"
            lines.append(
                f"| {r['d']} | {r['k']} | {r['Q']} | {r['N']} | {name} | {m['median_s']:.3f} | "
                f"{len(m['runs'])} | {m['ratio_floor']:.2f} | {_f2(m['ratio_faiss'])} | "
                f"{_f2(m['ratio_faiss_default'])} | {_f2(m['ratio_faiss_blas'])} | {rec} | {comp} | "
                f"{'' if peak is None else f'{peak / 2**20:.0f}'} | "
                f"{'' if frac is None else f'{frac:.3f}'} | {'' if temp is None else f'{temp:.3f}'} | "
                f"{rate if rate else ' | '} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small configurations (about a minute)")
    ap.add_argument(
        "--skip-slow",
        action="store_true",
        help="skip sklearn (full argsort) where Q*N >= 2^28, i.e. all but the (256, 100k) configurations",
    )
    ap.add_argument(
        "--slow-s",
        type=float,
        default=5.0,
        help="methods whose first timed call (after compilation) takes longer are timed in one round, not --reps",
    )
    ap.add_argument("--reps", type=int, default=None, help="timed rounds (default 3)")
    ap.add_argument(
        "--device-report",
        action="store_true",
        help="also the device's own floor and %% of its measured matrix rate (on by default off the CPU)",
    )
    ap.add_argument(
        "--only", type=str, default=None, help="comma-separated d:k:Q:N configurations to run instead of the preset"
    )
    ap.add_argument(
        "--host",
        choices=("all", "floor"),
        default="all",
        help="host-CPU methods: all (numpy, sklearn, faiss when installed) or only the numpy floor (device runs)",
    )
    ap.add_argument(
        "--variants",
        type=str,
        default=None,
        help="extra jaxrec settings, comma-separated METHOD:CHUNK:QBLOCK (empty field = default), "
        "e.g. 'bucket:16384:1024,scan:65536:'",
    )
    ap.add_argument(
        "--time-budget", type=float, default=None, help="start no new configuration after this many seconds"
    )
    ap.add_argument("--jsonl", type=str, default=None, help="also append the JSON lines to this file")
    ap.add_argument(
        "--precision",
        default="highest",
        help="matmul precision of every JAX method: highest (full float32, the default; exact) or default (JAX's "
        "own: TF32 for float32 on GPU, bfloat16 passes on TPU)",
    )
    args = ap.parse_args(argv)
    global PRECISION
    PRECISION = None if args.precision == "default" else args.precision
    variants = parse_variants(args.variants)
    configs = QUICK if args.quick else FULL
    if args.only:
        configs = [tuple(int(v) for v in c.split(":")) for c in args.only.split(",")]
    reps = args.reps or 3
    env = environment()
    matrix_rate = None
    if args.device_report or jax.default_backend() != "cpu":
        rates = {
            "float32": _matmul_rate(jnp.float32),
            "float32_highest": _matmul_rate(jnp.float32, precision=lax.Precision.HIGHEST),
            "bfloat16": _matmul_rate(jnp.bfloat16),
        }
        env["matrix_rate_tflops"] = {key: v / 1e12 for key, v in rates.items()}
        matrix_rate = rates["float32" if PRECISION is None else "float32_highest"]
        env["pct_matrix_rate_of"] = "float32" if PRECISION is None else "float32_highest"
        env["default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    env["precision"] = args.precision

    def emit(obj: dict) -> None:
        line = json.dumps(obj)
        print("JSON " + line, flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(line + "\n")

    emit({"environment": env})
    results = []
    t0 = time.time()
    for d, k, nq, n in configs:
        if args.time_budget is not None and time.time() - t0 > args.time_budget:
            print(f"time budget of {args.time_budget:.0f} s spent: skipping d={d} k={k} Q={nq} N={n}", flush=True)
            continue
        r = run_config(
            d,
            k,
            nq,
            n,
            reps=reps,
            skip_slow=args.skip_slow,
            slow_s=args.slow_s,
            matrix_rate=matrix_rate,
            host=args.host,
            variants=variants,
        )
        results.append(r)
        emit(r)
    print(f"\ntotal {time.time() - t0:.0f} s, load average at end {os.getloadavg()}\n")
    print(table(results))


if __name__ == "__main__":
    main()

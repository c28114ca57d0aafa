"""Sweep speed-up: S models of the ``mmd`` recipe trained in one vmapped program vs a Python loop over the configs.

Run: ``python bench/sweep.py [--S 8] [--steps 20] [--repeats 3] [--chunks all,1] [--quick]``.

Data: ``jaxrec.synthetic()`` at its default size (3000 users, 800 + 600 items) with ``cold_start_split``; the
recipe: ``sweep.sweep_config("mmd")`` (dim 64, user towers (64,), 1024 positives per domain per step, 4 negatives,
MMD on 256 users per domain), S values of λ, all from seed 0. The same ``--steps`` batches (the first steps of
epoch 0 of the stream that ``sweep`` uses) are put on the device once and fed to every mode:

* ``sweep (vmap)`` — :func:`jaxrec.sweep.make_sweep_step`: one program, ``vmap`` over the S stacked states, λ
  traced. ``sweep (chunk=c)`` — the same step with ``chunk=c``: groups of c models vmapped, the groups run one
  after another inside the program (``chunk=1``: a sequential loop over the S models, compiled once).
* ``loop (λ traced)`` — the strongest loop: ONE jitted non-vmapped ``train_step`` with λ as an argument, called
  for each configuration in turn (compiles once; S× the calls).
* ``loop (recompile)`` — what a loop over ``methods.run``/``fit`` does: an ``Objective`` with λ as a Python float
  per configuration, so one compilation per configuration (compile time summed over the S).

Compile time = the first call (one step, blocked), reported separately. Timed runs: each mode runs all its
configurations over the ``--steps`` batches (``jax.block_until_ready`` at the end), modes interleaved in a
rotating order, ``--repeats`` rounds; the median is reported. ``model-steps/s`` = S × steps / median. Before
timing, the first step of each mode is checked to agree (all three compute the same S updates).
"""

import argparse
import dataclasses
import functools
import sys

_args = argparse.ArgumentParser(description=__doc__)
_args.add_argument("--S", type=int, default=8, help="configurations (values of λ)")
_args.add_argument("--steps", type=int, default=20, help="steps per timed run")
_args.add_argument("--repeats", type=int, default=3)
_args.add_argument("--quick", action="store_true", help="small data and model (a smoke run)")
_args.add_argument(
    "--chunks", default="all,1", help="sweep modes: comma-separated chunk sizes ('all' = vmap over all S at once)"
)
_args.add_argument("--out", default="bench/out/sweep.jsonl", help="JSON lines written here")
ARGS = _args.parse_args()

import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxrec  # noqa: E402
from jaxrec import batching, data, methods  # noqa: E402
from jaxrec import sweep as sw  # noqa: E402
from jaxrec import train as tr  # noqa: E402

LAMS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def main():
    # -- data and recipe --
    if ARGS.quick:
        ds, _ = jaxrec.synthetic(n_users=600, n_items=(120, 90))
        config = sw.sweep_config("mmd", dim=16, user_tower=(16,), batch_size=256, align_size=64)
    else:
        ds, _ = jaxrec.synthetic()
        config = sw.sweep_config("mmd")
    ds = data.cold_start_split(ds, "source", "target")
    lams = np.resize(np.asarray(LAMS), ARGS.S).astype(np.float32)
    domains = ("source", "target")
    stream = batching.multi_domain_batches(
        {d: ds.interactions(d, "train") for d in domains},
        {d: config.batch_size for d in domains},
        rng=np.random.default_rng([config.seed, 0]),
        n_negatives=config.n_negatives,
        samplers={d: batching.NegativeSampler(ds.n_items(d), seen=ds.seen(d, "train")) for d in domains},
    )
    batches = [jax.device_put(b) for b, _ in zip(stream, range(ARGS.steps))]
    model = methods.SharedEmbeddingModel(
        ds.n_users,
        tuple(ds.n_items(d) for d in domains),
        domains,
        config.dim,
        config.user_tower,
        False,
        config.align_size,
    )
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    S = ARGS.S

    # -- states: one stacked master copy; every run starts from a fresh device copy (the steps donate) --
    master = sw.create_sweep_state(
        jnp.stack([init_key] * S), model, batches[0], sw.sweep_optimizer(), learning_rate=[config.learning_rate] * S
    )
    single = [sw.unstack(master, s) for s in range(S)]  # the same injected Adam: the loops differ only in vmap
    keys = jnp.stack([step_key] * S)
    lam_dev = jnp.asarray(lams)
    base = methods.bpr_objective(config.l2, "mmd", 0.0, discrepancy_options=methods.MMD_OPTIONS)

    # -- the steps --
    chunks = [None if c == "all" else int(c) for c in ARGS.chunks.split(",")]
    sweep_steps = {c: sw.make_sweep_step(base, chunk=c) for c in chunks}
    traced_step = jax.jit(
        lambda st, b, k, lam: tr.train_step(st, b, k, objective=dataclasses.replace(base, lam=lambda step: lam)),
        donate_argnums=(0,),
    )
    recompile_steps = [
        tr.make_train_step(methods.bpr_objective(config.l2, "mmd", float(lam), discrepancy_options=methods.MMD_OPTIONS))
        for lam in lams
    ]

    def run_sweep(steps, chunk):
        states = tr.copy_tree(master)
        for b in batches[:steps]:
            states, m = sweep_steps[chunk](states, b, keys, lam_dev)
        return states.params, m["loss"]

    def run_traced(steps):
        out, losses = [], []
        for s in range(S):
            st = tr.copy_tree(single[s])
            for b in batches[:steps]:
                st, m = traced_step(st, b, step_key, lam_dev[s])
            out.append(st.params)
            losses.append(m["loss"])
        return out, jnp.stack(losses)

    def run_recompile(steps):
        out, losses = [], []
        for s in range(S):
            st = tr.copy_tree(single[s])
            for b in batches[:steps]:
                st, m = recompile_steps[s](st, b, step_key)
            out.append(st.params)
            losses.append(m["loss"])
        return out, jnp.stack(losses)

    modes = {
        **{
            ("sweep (vmap)" if c is None else f"sweep (chunk={c})"): functools.partial(run_sweep, chunk=c)
            for c in chunks
        },
        "loop (λ traced)": run_traced,
        "loop (recompile)": run_recompile,
    }

    # -- compile (first call: one step of every configuration) and an agreement check --
    compile_s, first_loss = {}, {}
    for name, fn in modes.items():
        compile_s[name], (_, first_loss[name]) = _timed(lambda fn=fn: fn(1))
    for name in modes:
        np.testing.assert_allclose(np.asarray(first_loss[name]), np.asarray(first_loss["loop (λ traced)"]), rtol=1e-5)

    # -- timed runs, interleaved in a rotating order --
    names = list(modes)
    times = {name: [] for name in names}
    for r in range(ARGS.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t, _ = _timed(lambda name=name: modes[name](ARGS.steps))
            times[name].append(t)

    # -- report --
    steps_per_epoch = -(-max(ds.interactions(d).size for d in domains) // config.batch_size)
    median = {n: float(np.median(times[n])) for n in names}
    env = {
        "backend": jax.default_backend(),
        "devices": jax.local_device_count(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "machine": platform.machine(),
    }
    print(
        f"S={S} λ={[round(float(x), 4) for x in lams]} steps={ARGS.steps} repeats={ARGS.repeats} users={ds.n_users} "
        f"dim={config.dim} batch/domain={config.batch_size} steps/epoch={steps_per_epoch} {env}"
    )
    header = (
        f"{'mode':<20}{'compile s':>11}{'median s':>10}{'model-steps/s':>15}{'× loop(traced)':>16}"
        f"{'× loop(recompile)':>19}{'1 epoch incl. compile s':>25}"
    )
    print(header)
    rows = []
    for name in names:
        epoch_s = compile_s[name] + median[name] * steps_per_epoch / ARGS.steps
        row = {
            "bench": "sweep",
            "mode": name,
            "S": S,
            "steps": ARGS.steps,
            "repeats": ARGS.repeats,
            "compile_s": round(compile_s[name], 3),
            "median_s": round(median[name], 4),
            "runs_s": [round(t, 4) for t in times[name]],
            "model_steps_per_s": round(S * ARGS.steps / median[name], 2),
            "speedup_vs_loop_traced": round(median["loop (λ traced)"] / median[name], 3),
            "speedup_vs_loop_recompile": round(median["loop (recompile)"] / median[name], 3),
            "epoch_incl_compile_s": round(epoch_s, 2),
            "dim": config.dim,
            "batch_per_domain": config.batch_size,
            "n_users": ds.n_users,
            **env,
        }
        rows.append(row)
        print(
            f"{name:<20}{row['compile_s']:>11.2f}{row['median_s']:>10.3f}{row['model_steps_per_s']:>15.1f}"
            f"{row['speedup_vs_loop_traced']:>16.2f}{row['speedup_vs_loop_recompile']:>19.2f}{epoch_s:>25.1f}"
        )
    out = pathlib.Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for row in rows:
            line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **row}, ensure_ascii=False)
            print(line)
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

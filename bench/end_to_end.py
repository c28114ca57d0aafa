"""A recipe end to end on a large synthetic dataset, run as a user runs it: ``jaxrec data``, then ``jaxrec train``.

Run:
  python bench/end_to_end.py                                   # 200k users, 100k items per domain, item_map
  python bench/end_to_end.py --users 200000 --items 100000 --method factor_map --set epochs=3

Data: ``jaxrec.data.synthetic_large`` (``--per-user`` draws per active user: 12.5 + 6.25 give about 3M interactions
for 200k users) with a ``cold_start_split`` (20 % of the overlapping users), written once with
``jaxrec.data.write_dir`` under ``--work``.
Each command runs in a child process; its wall time and peak memory (the resident set of the child and its
children, sampled every 0.2 s) are recorded. ``jaxrec train`` trains, then evaluates the cold test users (full
ranking and the sampled protocol with three seeds), as its defaults do. Prints a table and one JSON line per
command.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time


def make_data(work: pathlib.Path, users: int, items: int, per_user: tuple[float, float]) -> pathlib.Path:
    """The dataset folder (generated once by ``bench/scale.py``'s writer, then reused)."""
    from scale import write_synthetic  # bench/ is on the path when this runs as a script

    folder = work / f"u{users}-i{items}-p{per_user[0]:g}-{per_user[1]:g}"
    if not (folder / "target" / "train.txt").exists():
        write_synthetic(folder, users, items, per_user)
    return folder


def measured(cmd: list[str]) -> dict:
    """Runs ``cmd``; its wall time, peak resident memory (process tree, MB), exit status and last output."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    out: list[str] = []
    handle = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [handle, *handle.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out = proc.stdout.read().splitlines()
    return {"seconds": time.perf_counter() - t0, "peak_mb": peak / 2**20, "rc": proc.returncode, "tail": out[-25:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000, help="items per domain")
    parser.add_argument(
        "--per-user",
        type=float,
        nargs=2,
        default=(12.5, 6.25),
        metavar=("SOURCE", "TARGET"),
        help="mean draws per active user in each domain (default: about 3M interactions for 200k users)",
    )
    parser.add_argument("--method", default="item_map")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides passed to jaxrec train --set")
    parser.add_argument("--work", default="/tmp/jaxrec-end-to-end", help="where the dataset and the run are kept")
    args = parser.parse_args()

    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = make_data(work, args.users, args.items, tuple(args.per_user))
    lines = sum(sum(1 for _ in open(f)) for f in folder.glob("*/*.txt"))
    print(f"data {folder}: {lines:,} interactions, ready in {time.perf_counter() - t0:.0f} s")
    out = work / f"run-{args.method}"
    jaxrec = [sys.executable, "-m", "jaxrec"]
    commands = {
        "jaxrec data": jaxrec + ["data", "--data", str(folder)],
        "jaxrec train": jaxrec
        + ["train", "--data", str(folder), "--source", "source", "--target", "target", "--method", args.method]
        + ["--out", str(out), "--overwrite", "--no-progress"]
        + (["--set", *args.set] if args.set else []),
    }
    print(f"{'command':<14}{'seconds':>9}{'peak MB':>9}  status")
    for name, cmd in commands.items():
        rec = measured(cmd)
        status = "ok" if rec["rc"] == 0 else f"failed ({rec['rc']})"
        print(f"{name:<14}{rec['seconds']:>9.1f}{rec['peak_mb']:>9.0f}  {status}")
        if rec["rc"] != 0:
            print("\n".join(rec["tail"]))
        record = {"bench": "end-to-end", "command": name, "method": args.method, "users": args.users, "lines": lines}
        record |= {"items": args.items, "seconds": round(rec["seconds"], 1), "peak_mb": round(rec["peak_mb"])}
        print(json.dumps(record | {"status": status}))
        sys.stdout.flush()
    metrics = out / "metrics.json"
    if metrics.exists():
        result = json.loads(metrics.read_text())
        print(json.dumps({"bench": "end-to-end", "method": args.method, "metrics": result.get("full", result)}))


if __name__ == "__main__":
    main()

"""Input-pipeline throughput: fixed-shape batches of 4096 with 1 positive + 1 negative.

Run: ``python bench/batching.py [--data ../shared/data/amazon-game-video]``. Prints a table and one JSON line
per configuration; the target is >= 1M samples/s so the host pipeline never bounds training on CPU.
"""

import argparse
import json
import pathlib
import time

import numpy as np

import jaxrec


def _throughput(inter, n_items, seen, alpha, batch_size, repeats):
    counts = np.bincount(inter.items, minlength=n_items)
    sampler = jaxrec.NegativeSampler(n_items, seen=seen, alpha=alpha, item_counts=counts if alpha else None)
    rates = []
    for r in range(repeats):
        rng = np.random.default_rng(r)
        start = time.perf_counter()
        n = 0
        for batch in jaxrec.iterate_batches(inter, batch_size, rng=rng, n_negatives=1, sampler=sampler):
            n += int(batch["mask"].sum())
        rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-game-video")
    )
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if pathlib.Path(args.data, "video", "train.txt").exists():
        ds, domain, source = jaxrec.load_dir(args.data), "video", args.data
    else:
        ds, _ = jaxrec.synthetic(n_users=20_000, n_items=(10_000, 8_000))
        domain, source = "target", "synthetic"
    inter = ds.interactions(domain, "train")
    print(f"data: {source} ({domain}: {inter.size:,} interactions, {ds.n_items(domain):,} items)")
    print(f"{'negatives':<28}{'samples/s':>14}")
    for label, seen, alpha in (
        ("uniform", None, 0.0),
        ("uniform, exclude seen", ds.seen(domain), 0.0),
        ("popularity^0.75, exclude seen", ds.seen(domain), 0.75),
    ):
        rate = _throughput(inter, ds.n_items(domain), seen, alpha, args.batch_size, args.repeats)
        print(f"{label:<28}{rate:>14,.0f}")
        print(
            json.dumps(
                {"bench": "batching", "negatives": label, "batch_size": args.batch_size, "samples_per_s": round(rate)}
            )
        )


if __name__ == "__main__":
    main()

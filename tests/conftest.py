"""Test configuration: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import math  # noqa: E402
import pathlib  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxrec import batching, data, losses  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMAZON = SHARED_DATA / "amazon-game-video"


def write_dataset_dir(ds, root: pathlib.Path) -> pathlib.Path:
    """Writes ``ds`` as ``root/<domain>/<split>.txt`` (``user<TAB>item`` ids), the layout ``load_dir`` reads."""
    for d in ds.domains:
        (root / d).mkdir(parents=True)
        for split in ds.splits(d):
            it = ds.interactions(d, split)
            np.savetxt(root / d / f"{split}.txt", np.stack([it.users, it.items], 1), fmt="%d", delimiter="\t")
    return root


@pytest.fixture(scope="module")
def persistent_compilation_cache(tmp_path_factory):
    """A per-module persistent compilation cache: tests that build fresh train states load their steps instead of
    compiling them again. Use with ``pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")``."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    names += ("jax_persistent_cache_min_entry_size_bytes",)
    before = {name: getattr(jax.config, name) for name in names}
    for name, value in zip(names, (str(tmp_path_factory.mktemp("jax_cache")), 0, 0)):
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


LEGACY_RUNS = pathlib.Path(__file__).resolve().parent / "fixtures" / "legacy_runs"


@pytest.fixture(scope="session")
def legacy_data_dir(tmp_path_factory):
    """The dataset of tests/fixtures/legacy_runs as a ``DIR/<domain>/<split>.txt`` folder (the fixture stores it as
    one ``domain<TAB>split<TAB>user<TAB>item`` file)."""
    out = tmp_path_factory.mktemp("legacy_data")
    files: dict = {}
    for line in (LEGACY_RUNS / "interactions.tsv").read_text().splitlines():
        domain, split, rest = line.split("\t", 2)
        files.setdefault((domain, split), []).append(rest + "\n")
    for (domain, split), lines in files.items():
        (out / domain).mkdir(exist_ok=True)
        (out / domain / f"{split}.txt").write_text("".join(lines))
    return out


@pytest.fixture(scope="session")
def amazon_dir():
    """Path to ../shared/data/amazon-game-video, or skip when it is absent."""
    if not (AMAZON / "game" / "train.txt").exists():
        pytest.skip(f"shared benchmark data not found at {AMAZON}")
    return AMAZON


# ----------------------------------------------------------------------------------------------------------------
# Independent references for ranking metrics and the sampled protocol (plain Python/numpy, no jaxrec code)
# ----------------------------------------------------------------------------------------------------------------


def ref_user_metrics(ranked, positives, ks):
    """Float64 full-ranking metrics of one user, by hand (shared with tests/test_evaluate.py).

    Args:
        ranked: item ids, best first; -1 is padding (never a hit); an id listed twice counts at its first rank.
        positives: held-out item ids, at least one that is not -1 (-1 and repeats are ignored).
        ks: cutoffs, each <= len(ranked).

    Returns:
        ``{"Recall@k", "Precision@k", "NDCG@k", "HR@k", "MRR@k" for k in ks, "MRR" over the whole list}``.
    """
    pos = {int(p) for p in positives if p >= 0}
    seen, hits = set(), []
    for item in ranked:
        item = int(item)
        hits.append(item >= 0 and item in pos and item not in seen)
        seen.add(item)
    first = next((r for r, h in enumerate(hits) if h), None)  # 0-based rank of first hit
    vals = {}
    for k in ks:
        h = sum(hits[:k])
        dcg = sum(1.0 / math.log2(r + 2) for r in range(k) if hits[r])
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(pos), k)))
        vals[f"Recall@{k}"] = h / len(pos)
        vals[f"Precision@{k}"] = h / k
        vals[f"NDCG@{k}"] = dcg / idcg
        vals[f"HR@{k}"] = float(h > 0)
        vals[f"MRR@{k}"] = 1.0 / (first + 1) if first is not None and first < k else 0.0
    vals["MRR"] = 1.0 / (first + 1) if first is not None else 0.0
    return vals


def ref_negatives(seed, positives, pool, n_neg):
    """The draw ``metrics.sample_negatives`` documents (``replace=True``, the positives excluded), in plain numpy.

    ``n_neg`` i.i.d. uniform draws per pair over the distinct ids of ``pool``; then, while any draw equals its
    pair's positive, all such draws are redrawn at once in row-major order. Shared with tests/test_evaluate.py.
    """
    pool = np.unique(pool)
    rng = np.random.default_rng(seed)
    neg = pool[rng.integers(0, pool.size, size=(positives.size, n_neg))]
    while True:
        rows, cols = np.nonzero(neg == positives[:, None])
        if rows.size == 0:
            return neg
        neg[rows, cols] = pool[rng.integers(0, pool.size, size=rows.size)]


# ----------------------------------------------------------------------------------------------------------------
# A tiny two-domain model, its task losses and batches: the training-engine tests share them
# ----------------------------------------------------------------------------------------------------------------

N_USERS, N_ITEMS = 60, (30, 20)
#: The ONE tolerance of every data-parallel (pmap, mesh) vs one-device comparison, parameters and losses alike.
PARALLEL_TOL = dict(rtol=1e-5, atol=1e-6)


class TinyCDR(nn.Module):
    """Shared user embeddings, per-domain items, BPR scores; aligns user representations of the two domains."""

    dim: int = 8
    dropout: float = 0.0

    @nn.compact
    def __call__(self, batch, *, deterministic=True, poison=False):
        users = nn.Embed(N_USERS, self.dim, name="users")
        tower = nn.Dense(self.dim, name="tower")
        out, reps = {}, []
        for k, name in enumerate(("source", "target")):
            b = batch[name]
            items = nn.Embed(N_ITEMS[k], self.dim, name=f"items_{name}")
            u = tower(users(b["users"]))
            u = nn.Dropout(self.dropout)(u, deterministic=deterministic)
            pos = jnp.sum(u * items(b["items"]), -1)
            neg = jnp.sum(u * items(b["negatives"][:, 0]), -1)
            out[name] = (pos, neg)
            reps.append(u)
        out["align"] = (reps[0], reps[1], batch["source"]["mask"], batch["target"]["mask"])
        if poison is not False:
            out["source"] = (out["source"][0] * jnp.where(poison, jnp.nan, 1.0), out["source"][1])
        return out


TRACES = {"n": 0}


def bpr_tasks(outputs, batch):
    TRACES["n"] += 1  # Python side effect: runs once per trace
    return {
        name: losses.mean_where(losses.bpr(*outputs[name]), where=batch[name]["mask"]) for name in ("source", "target")
    }


@pytest.fixture(scope="module")
def ds():
    dataset, _ = data.synthetic(
        n_users=N_USERS, n_items=N_ITEMS, interactions_per_user=(8.0, 5.0), min_interactions=2, seed=0
    )
    return dataset


def make_batches(ds, sizes=(64, 32)):
    inters = {n: ds.interactions(n) for n in ("source", "target")}
    n_items = {n: ds.n_items(n) for n in ("source", "target")}

    def make(rng):
        return batching.multi_domain_batches(
            inters, dict(zip(("source", "target"), sizes)), rng=rng, n_items=n_items, n_negatives=1
        )

    return make


def fixed_batches(ds, n=6, sizes=(64, 32)):
    return list(make_batches(ds, sizes)(np.random.default_rng(0)))[:n]


def assert_trees_close(a, b, *, rtol, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)

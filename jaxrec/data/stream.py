"""Synthetic cross-domain data at scale, generated in blocks of users in time and memory linear in the
interactions (:func:`~jaxrec.data.stream.synthetic_blocks`, :func:`synthetic_large`), and a folder writer for the format
:func:`jaxrec.data.load_dir` reads (:func:`write_dir`), so that 10⁷ interactions are written without holding
them as text.

Where :func:`jaxrec.data.synthetic` scores every item for every user (``O(users × items)``), this generator
draws through topics: each domain's items are split at random into ``n_topics`` topics, with a power-law
popularity inside each; a user's preference over topics in a domain is ``softmax(([√s·shared, √(1-s)·private_d]
@ topic_vectors_d) / temperature)``, the shared part the same in every domain (so the source history predicts the
target). Each interaction draws a topic from the user's preference, then an item of the topic by popularity;
repeated ``(user, item)`` draws of a user are merged. Blocks are independent (one random stream per domain and
block, from ``seed``), so the data do not depend on how they are consumed.

Shapes: a block holds ``users int32 [b]`` and ``items int32 [b]``, sorted by user then item.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator

import numpy as np

from jaxrec.data.dataset import CrossDomainDataset, DataError, Domain, Interactions


@dataclasses.dataclass(frozen=True)
class LargeSyntheticConfig:
    """Knobs of :func:`synthetic_large` (see the module docstring).

    Attributes:
      n_users: users of the shared id space.
      domains: domain names (at least two).
      n_items: items per domain.
      interactions_per_user: mean draws per active user per domain (Poisson, at least ``min_interactions``).
      overlap: share of users active in every domain; the rest are active in one (chosen at random).
      shared_fraction: share ``s`` of a user's topic taste that is shared across domains.
      n_topics: topics per domain.
      dim: width of the taste and topic vectors.
      temperature: softmax temperature of the topic preference (lower: more concentrated).
      popularity_exponent: an item's weight in its topic is ``rank ** -popularity_exponent``.
      min_interactions: fewest draws of an active user.
      block_users: users per generated block.
      seed: the random seed.
    """

    n_users: int = 200_000
    domains: tuple[str, ...] = ("source", "target")
    n_items: tuple[int, ...] = (100_000, 100_000)
    interactions_per_user: tuple[float, ...] = (10.0, 5.0)
    overlap: float = 0.6
    shared_fraction: float = 0.8
    n_topics: int = 64
    dim: int = 16
    temperature: float = 0.1
    popularity_exponent: float = 0.8
    min_interactions: int = 2
    block_users: int = 65536
    seed: int = 0

    def __post_init__(self):
        k = len(self.domains)
        if k < 2 or len(set(self.domains)) != k:
            raise DataError(f"LargeSyntheticConfig.domains={self.domains}: need at least two distinct domains")
        for name in ("n_items", "interactions_per_user"):
            if len(getattr(self, name)) != k:
                raise DataError(f"LargeSyntheticConfig.{name}={getattr(self, name)} needs one value per domain ({k})")
        if not 0.0 <= self.overlap <= 1.0 or not 0.0 <= self.shared_fraction <= 1.0:
            raise DataError(f"overlap={self.overlap} and shared_fraction={self.shared_fraction} must be in [0, 1]")
        if self.n_users < 10 or min(self.n_items) < self.n_topics or self.n_topics < 1:
            raise DataError(
                f"n_users={self.n_users} must be at least 10 and n_items={self.n_items} at least n_topics="
                f"{self.n_topics} (>= 1)"
            )
        if self.temperature <= 0 or self.block_users < 1 or self.dim < 1:
            raise DataError(
                f"temperature={self.temperature}, block_users={self.block_users} and dim={self.dim} must be > 0"
            )
        if any(m <= 0 or m >= n / 2 for m, n in zip(self.interactions_per_user, self.n_items)):
            raise DataError(
                f"interactions_per_user={self.interactions_per_user} must be in (0, n_items / 2) for n_items="
                f"{self.n_items}"
            )


def _catalogue(cfg: LargeSyntheticConfig, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Domain ``d``'s ``(topic_vectors float32 [T, dim], items_by_topic int32 [N], cdf float64 [N])``:
    ``items_by_topic`` lists the items topic by topic, most popular first, and ``cdf`` is ``t + F_t(rank)``
    (topic ``t`` plus the within-topic cumulative popularity), increasing, so one search draws an item."""
    rng = np.random.default_rng([cfg.seed, 1, d])
    n, t = cfg.n_items[d], cfg.n_topics
    vectors = (rng.normal(size=(t, cfg.dim)) / np.sqrt(cfg.dim)).astype(np.float32)
    topic = rng.integers(0, t, n)
    topic[rng.permutation(n)[:t]] = np.arange(t)  # no empty topic
    items = np.argsort(topic, kind="stable").astype(np.int32)
    counts = np.bincount(topic, minlength=t)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(n) - start
    weight = (rank + 1.0) ** -cfg.popularity_exponent
    cum = np.cumsum(weight)
    before = np.repeat(np.concatenate(([0.0], cum[np.cumsum(counts)[:-1] - 1])), counts)
    total = np.repeat(cum[np.cumsum(counts) - 1], counts) - before
    cdf = np.repeat(np.arange(t, dtype=np.float64), counts) + (cum - before) / total
    return vectors, items, cdf


def _users(cfg: LargeSyntheticConfig, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Users ``lo:hi``: shared taste ``float32 [b, dim]`` and the domain each is active in (``-1``: every one)."""
    rng = np.random.default_rng([cfg.seed, 2, lo])
    shared = rng.normal(size=(hi - lo, cfg.dim)).astype(np.float32) / np.sqrt(cfg.dim)
    active = np.where(rng.random(hi - lo) < cfg.overlap, -1, rng.integers(0, len(cfg.domains), hi - lo))
    return shared, active


def synthetic_blocks(
    config: LargeSyntheticConfig = LargeSyntheticConfig(),
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yields ``(domain, users int32 [b], items int32 [b])`` blocks of train interactions, block by block of
    ``config.block_users`` users, each domain in turn; memory is one block's interactions and one catalogue.

    Every user of a block appears in that block only (per domain), its items distinct and sorted.
    """
    cfg = config
    catalogues = [_catalogue(cfg, d) for d in range(len(cfg.domains))]
    s, p = np.sqrt(cfg.shared_fraction), np.sqrt(1.0 - cfg.shared_fraction)
    for lo in range(0, cfg.n_users, cfg.block_users):
        hi = min(cfg.n_users, lo + cfg.block_users)
        shared, active = _users(cfg, lo, hi)
        for d, name in enumerate(cfg.domains):
            vectors, items_by_topic, cdf = catalogues[d]
            rng = np.random.default_rng([cfg.seed, 3, d, lo])
            private = rng.normal(size=shared.shape).astype(np.float32) / np.sqrt(cfg.dim)
            logits = ((s * shared + p * private) @ vectors.T) / cfg.temperature
            prefs = np.exp(logits - logits.max(axis=1, keepdims=True))
            prefs /= prefs.sum(axis=1, keepdims=True)
            users = np.flatnonzero((active == -1) | (active == d))
            counts = np.maximum(cfg.min_interactions, rng.poisson(cfg.interactions_per_user[d], users.size))
            row = np.repeat(np.arange(users.size), counts)
            # Topic of each draw: one search in the users' cumulative preferences laid end to end.
            ends = np.cumsum(prefs[users], axis=1)
            ends /= ends[:, -1:]
            flat = (ends + np.arange(users.size)[:, None]).ravel()
            topic = np.searchsorted(flat, row + rng.random(row.size), side="right") - row * cfg.n_topics
            topic = np.minimum(topic, cfg.n_topics - 1)
            pick = np.minimum(np.searchsorted(cdf, topic + rng.random(row.size), side="right"), cdf.size - 1)
            key = np.unique((users[row] + lo).astype(np.int64) * cfg.n_items[d] + items_by_topic[pick])
            yield name, (key // cfg.n_items[d]).astype(np.int32), (key % cfg.n_items[d]).astype(np.int32)


def synthetic_large(config: LargeSyntheticConfig = LargeSyntheticConfig(), **overrides) -> CrossDomainDataset:
    """A dataset from :func:`~jaxrec.data.stream.synthetic_blocks` (every interaction in ``train``; raw ids =
    contiguous ids).

    Apply :func:`jaxrec.data.cold_start_split` for the cold-start protocol. Deterministic given ``config.seed``.

    Example:
      >>> ds = synthetic_large(n_users=1000, n_items=(500, 400), interactions_per_user=(8.0, 4.0))
      >>> ds.domain_names, ds.n_items("target")
      (('source', 'target'), 400)
    """
    cfg = dataclasses.replace(config, **overrides) if overrides else config
    parts: dict[str, list] = {name: [] for name in cfg.domains}
    for name, users, items in synthetic_blocks(cfg):
        parts[name].append((users, items))
    domains = {}
    for d, name in enumerate(cfg.domains):
        users = np.concatenate([u for u, _ in parts[name]])
        items = np.concatenate([i for _, i in parts[name]])
        parts[name].clear()
        domains[name] = Domain(name, cfg.n_items[d], {"train": Interactions(users, items)}, np.arange(cfg.n_items[d]))
    return CrossDomainDataset(domains, cfg.n_users, np.arange(cfg.n_users), (f"synthetic_large({cfg})",))


def format_pairs(users: np.ndarray, items: np.ndarray) -> bytes:
    """``"user<TAB>item\\n"`` lines of non-negative integer ids, formatted by numpy (no Python object per line).

    Args:
      users, items: ``int [n]`` ids ``>= 0``.
    """
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise DataError(f"format_pairs: users {users.shape} and items {items.shape} must be 1-D of equal length")
    if users.size == 0:
        return b""
    if min(int(users.min()), int(items.min())) < 0:
        raise DataError("format_pairs: ids must be non-negative")
    cols, keep = [], []
    for ids, end in ((users, 9), (items, 10)):  # a tab after the user, a newline after the item
        width = len(str(int(ids.max())))
        digits = (ids[:, None] // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)) % 10
        length = np.ones(ids.size, np.int64)
        for k in range(1, width):
            length += ids >= 10**k
        cols += [(digits + 48).astype(np.uint8), np.full((ids.size, 1), end, np.uint8)]
        keep += [np.arange(width)[None, :] >= (width - length)[:, None], np.ones((ids.size, 1), bool)]
    return np.concatenate(cols, axis=1)[np.concatenate(keep, axis=1)].tobytes()


def write_dir(ds: CrossDomainDataset, path: str | os.PathLike, *, block_rows: int = 1 << 20) -> pathlib.Path:
    """Writes ``ds`` as ``path/<domain>/<split>.txt`` of ``raw user<TAB>raw item`` lines (integer raw ids).

    Args:
      ds: a dataset whose raw user and item ids are non-negative integers.
      path: a folder that does not exist yet (a user's files are never overwritten).
      block_rows: lines formatted at a time.

    Returns:
      The folder.

    Raises:
      DataError: ``path`` exists, or a raw id is not a non-negative integer.
    """
    root = pathlib.Path(path)
    if os.path.lexists(root):
        raise DataError(f"{root}: exists; write_dir writes a new folder only")
    if ds.user_ids.dtype.kind not in "iu" or any(ds.domain(d).item_ids.dtype.kind not in "iu" for d in ds.domains):
        raise DataError("write_dir needs integer raw user and item ids")
    for name in ds.domain_names:
        (root / name).mkdir(parents=True)
        for split in ds.splits(name):
            inter = ds.interactions(name, split)
            with open(root / name / f"{split}.txt", "wb") as f:
                for lo in range(0, inter.size, block_rows):
                    users = ds.user_ids[inter.users[lo : lo + block_rows]]
                    items = ds.domain(name).item_ids[inter.items[lo : lo + block_rows]]
                    f.write(format_pairs(users, items))
    return root

"""Synthetic cross-domain data with a planted structure: :class:`SyntheticConfig`, the generator
:func:`synthetic` and its ground truth :class:`Planted` (an oracle scorer for tests).

Array conventions: planted user vectors ``float32 [n_users, shared_dim + private_dim]`` per domain, item vectors
``float32 [n_items_d, shared_dim + private_dim]`` and log-popularities ``float32 [n_items_d]``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxrec.data.dataset import CrossDomainDataset, DataError, Domain, Interactions


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of :func:`synthetic`.

    Each user has a shared taste vector (``shared_dim``) and one private vector per domain (``private_dim``);
    in domain ``d`` the user's vector is ``[sqrt(s)·shared, sqrt(1-s)·private_d]`` with ``s = shared_fraction``.
    Items are random vectors; an item's log-popularity is ``-popularity_exponent·log(rank)`` (power law). A user
    draws ``~interactions_per_user[d]`` distinct items without replacement with probability ∝
    ``exp(score/temperature + log-popularity)``.
    """

    n_users: int = 3000
    domains: tuple[str, ...] = ("source", "target")
    n_items: tuple[int, ...] = (800, 600)
    interactions_per_user: tuple[float, ...] = (20.0, 8.0)
    overlap: float = 0.6  # share of users active in every domain; the rest are in exactly one
    shared_fraction: float = 0.8
    shared_dim: int = 8
    private_dim: int = 4
    temperature: float = 0.35
    popularity_exponent: float = 0.6
    min_interactions: int = 3
    seed: int = 0

    def __post_init__(self):
        k = len(self.domains)
        if k < 2:
            raise DataError(f"SyntheticConfig.domains={self.domains}: need at least two domains")
        for name in ("n_items", "interactions_per_user"):
            if len(getattr(self, name)) != k:
                raise DataError(f"SyntheticConfig.{name}={getattr(self, name)} needs one value per domain ({k})")
        if not 0.0 <= self.overlap <= 1.0 or not 0.0 <= self.shared_fraction <= 1.0:
            raise DataError(f"overlap={self.overlap} and shared_fraction={self.shared_fraction} must be in [0, 1]")
        if self.n_users < 10 or min(self.n_items) < 10:
            raise DataError(f"n_users={self.n_users} and n_items={self.n_items} must be at least 10")
        if self.temperature <= 0:
            raise DataError(f"temperature={self.temperature} must be > 0")
        if any(m >= n for m, n in zip(self.interactions_per_user, self.n_items)):
            raise DataError(f"interactions_per_user={self.interactions_per_user} must be below n_items={self.n_items}")


class Planted(NamedTuple):
    """The generator's ground truth: the oracle scores of user ``u`` on item ``i`` of domain ``d`` are
    ``users[d][u] @ items[d][i] / temperature + log_popularity[d][i]``."""

    users: dict  # domain -> float32 [n_users, shared_dim + private_dim]
    items: dict  # domain -> float32 [n_items_d, shared_dim + private_dim]
    log_popularity: dict  # domain -> float32 [n_items_d]
    temperature: float

    def scores(self, domain: str, users: np.ndarray) -> np.ndarray:
        """Oracle logits ``float32 [len(users), n_items]`` of ``domain``."""
        return (
            self.users[domain][users] @ self.items[domain].T / self.temperature + self.log_popularity[domain][None, :]
        )


def synthetic(config: SyntheticConfig = SyntheticConfig(), **overrides) -> tuple[CrossDomainDataset, Planted]:
    """Generates a cross-domain dataset where transfer provably helps (see :class:`SyntheticConfig`).

    All interactions are in ``train``; apply :func:`jaxrec.data.cold_start_split` for the cold-start protocol.
    Raw ids are the contiguous ids themselves. Deterministic given ``config.seed``.

    Returns:
      ``(dataset, planted)`` — the planted vectors give an oracle scorer for tests.

    Args:
      config: the generator's settings.
      **overrides: fields of ``config`` to replace, e.g. ``n_users=500`` or ``seed=1``.
    """
    cfg = dataclasses.replace(config, **overrides) if overrides else config
    rng = np.random.default_rng(cfg.seed)
    k = len(cfg.domains)
    shared = rng.normal(size=(cfg.n_users, cfg.shared_dim)) / np.sqrt(cfg.shared_dim)
    # Which domains each user is active in: a share ``overlap`` in all, the rest in one (round-robin by domain).
    in_all = rng.random(cfg.n_users) < cfg.overlap
    only = rng.integers(0, k, cfg.n_users)
    planted_users, planted_items, planted_pop, splits = {}, {}, {}, {}
    s = np.sqrt(cfg.shared_fraction)
    p = np.sqrt(1.0 - cfg.shared_fraction)
    for d, name in enumerate(cfg.domains):
        private = rng.normal(size=(cfg.n_users, cfg.private_dim)) / np.sqrt(cfg.private_dim)
        u = np.concatenate([s * shared, p * private], axis=1).astype(np.float32)
        n_items = cfg.n_items[d]
        v = rng.normal(size=(n_items, cfg.shared_dim + cfg.private_dim)).astype(np.float32)
        log_pop = (-cfg.popularity_exponent * np.log1p(rng.permutation(n_items))).astype(np.float32)
        active = np.flatnonzero(in_all | (only == d))
        counts = np.maximum(cfg.min_interactions, rng.poisson(cfg.interactions_per_user[d], active.size))
        counts = np.minimum(counts, n_items - 1)
        users, items = [], []
        for lo in range(0, active.size, 1024):  # chunked Gumbel-top-k sampling without replacement
            idx = active[lo : lo + 1024]
            logits = u[idx] @ v.T / cfg.temperature + log_pop[None, :]
            perturbed = logits + rng.gumbel(size=logits.shape)
            order = np.argsort(-perturbed, axis=1)
            take = np.arange(n_items)[None, :] < counts[lo : lo + 1024, None]
            users.append(np.broadcast_to(idx[:, None], order.shape)[take])
            items.append(order[take])
        splits[name] = {"train": (np.concatenate(users), np.concatenate(items))}
        planted_users[name], planted_items[name], planted_pop[name] = u, v, log_pop
    domains = {}
    for d, name in enumerate(cfg.domains):
        users, items = splits[name]["train"]
        inter = Interactions(users.astype(np.int32), items.astype(np.int32))
        domains[name] = Domain(name, cfg.n_items[d], {"train": inter}, np.arange(cfg.n_items[d]))
    note = f"synthetic({cfg})"
    ds = CrossDomainDataset(domains, cfg.n_users, np.arange(cfg.n_users), (note,))
    return ds, Planted(planted_users, planted_items, planted_pop, cfg.temperature)

"""The ``popularity`` baseline: items ranked by train interaction count, the same list for every user."""

from __future__ import annotations

import dataclasses

from jaxrec import evaluate as ev
from jaxrec.data import CrossDomainDataset
from jaxrec.methods.common import Trained, check_pair, check_seed

__all__ = ["PopularityConfig", "train_popularity"]


@dataclasses.dataclass(frozen=True)
class PopularityConfig:
    """``popularity`` has no hyper-parameters (the seed is accepted for a uniform interface)."""

    seed: int = 0

    def __post_init__(self):
        check_seed("PopularityConfig.seed", self.seed)


def train_popularity(
    ds: CrossDomainDataset, *, source: str, target: str, config: PopularityConfig = PopularityConfig()
) -> Trained:
    """Items by training interaction count, per domain (``evaluate.popularity_scorer``); scorers for both
    domains."""
    check_pair(ds, source, target)
    scorers = {d: ev.popularity_scorer(ds.item_popularity(d)) for d in (source, target)}
    return Trained(scorers, None, [], config)

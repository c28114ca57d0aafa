"""Ranking metrics for the two evaluation protocols: full ranking and sampled (999 negatives).

* :mod:`jaxrec.metrics.ranking` — full ranking: Recall@k, Precision@k, NDCG@k, HR@k, MRR@k of a top-K list
  against each user's held-out items, per user and averaged over users.
* :mod:`jaxrec.metrics.sampled` — the sampled protocol: negatives drawn from the training items, the rank of
  each held-out item among them (ties against it), MRR / NDCG@k / HR@k / AUC per pair and averaged, and the
  mean and std over seeds.

Item ids are non-negative; ``-1`` is padding everywhere and never counts as a hit. Ranks are 1-based. Every
average is over the valid users or pairs and is 0, never NaN, when none is valid.

Example:
    >>> import jax.numpy as jnp
    >>> m = ranking_metrics(jnp.array([[3, 7, 1]]), jnp.array([[7, 1, 9, -1]]), ks=(1, 3))
    >>> [round(float(m[k]), 4) for k in ("Recall@3", "HR@1", "MRR")]  # hits at ranks 2, 3; |pos| = 3
    [0.6667, 0.0, 0.5]
"""

from jaxrec.metrics.ranking import average_metrics, ranking_metrics, ranking_metrics_per_user
from jaxrec.metrics.sampled import (
    aggregate_seeds,
    auc_from_ranks,
    sample_negatives,
    sampled_metrics,
    sampled_metrics_per_pair,
    sampled_rank,
)

__all__ = [
    "aggregate_seeds",
    "auc_from_ranks",
    "average_metrics",
    "ranking_metrics",
    "ranking_metrics_per_user",
    "sample_negatives",
    "sampled_metrics",
    "sampled_metrics_per_pair",
    "sampled_rank",
]

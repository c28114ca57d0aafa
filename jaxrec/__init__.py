"""jaxrec: cross-domain recommendation in JAX.

Read the package along the data path: ``data`` (host-side datasets, loaders, splits, synthetic data) →
``batching`` (negatives, fixed-shape batches, sharding) → ``models`` → ``graph`` → ``losses`` → ``train`` →
``topk`` → ``metrics`` → ``methods`` → ``cli``.
"""

from jaxrec import batching, data, graph, metrics
from jaxrec.batching import NegativeSampler, iterate_batches, multi_domain_batches, shard
from jaxrec.data import (
    CSR,
    CrossDomainDataset,
    DataError,
    Domain,
    Interactions,
    Planted,
    SyntheticConfig,
    cold_start_split,
    from_arrays,
    from_table,
    leave_one_out,
    limit_overlap,
    load_dir,
    load_recbole,
    ratio_split,
    synthetic,
)
from jaxrec.graph import JointGraph, build_joint_graph, propagate, split_nodes
from jaxrec.metrics import (
    aggregate_seeds,
    auc_from_ranks,
    ranking_metrics,
    sample_negatives,
    sampled_metrics,
    sampled_rank,
)

__version__ = "0.1.0"

__all__ = [
    "aggregate_seeds",
    "auc_from_ranks",
    "batching",
    "build_joint_graph",
    "cold_start_split",
    "CrossDomainDataset",
    "CSR",
    "data",
    "DataError",
    "Domain",
    "from_arrays",
    "from_table",
    "graph",
    "Interactions",
    "iterate_batches",
    "JointGraph",
    "leave_one_out",
    "limit_overlap",
    "load_dir",
    "load_recbole",
    "metrics",
    "multi_domain_batches",
    "NegativeSampler",
    "Planted",
    "propagate",
    "ranking_metrics",
    "ratio_split",
    "sample_negatives",
    "sampled_metrics",
    "sampled_rank",
    "shard",
    "split_nodes",
    "synthetic",
    "SyntheticConfig",
]

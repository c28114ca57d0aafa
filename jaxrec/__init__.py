"""jaxrec: cross-domain recommendation in JAX.

Read the package along the data path: ``data`` (host-side datasets, loaders, splits, synthetic data) →
``batching`` (negatives, fixed-shape batches, sharding) → ``models`` → ``graph`` → ``losses`` → ``train`` →
``topk`` → ``metrics`` → ``methods`` → ``cli``.
"""

from jaxrec import batching, data
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

__version__ = "0.1.0"

__all__ = [
    "CSR",
    "CrossDomainDataset",
    "DataError",
    "Domain",
    "Interactions",
    "NegativeSampler",
    "Planted",
    "SyntheticConfig",
    "batching",
    "cold_start_split",
    "data",
    "from_arrays",
    "from_table",
    "iterate_batches",
    "leave_one_out",
    "limit_overlap",
    "load_dir",
    "load_recbole",
    "multi_domain_batches",
    "ratio_split",
    "shard",
    "synthetic",
]

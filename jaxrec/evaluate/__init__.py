"""Evaluation driver: full-ranking and sampled-protocol metrics of a scorer on held-out users.

* :mod:`jaxrec.evaluate.scorers` — :class:`Scorer` (a user function and the item vectors of one domain), the
  embedding and popularity scorers, and the jitted batch functions that score them;
* :mod:`jaxrec.evaluate.users` — which held-out users are evaluated (cold, warm, all);
* :mod:`jaxrec.evaluate.protocols` — :func:`evaluate` under the full-ranking and sampled protocols, per
  selection (:func:`evaluate_cold_warm`) and per direction (:func:`evaluate_domains`), and :func:`recommend`.

Example:
    >>> from jaxrec import data
    >>> ds, _ = data.synthetic(n_users=300, n_items=(80, 60))
    >>> ds = data.cold_start_split(ds, "source", "target")
    >>> scorer = popularity_scorer(ds.item_popularity("target"))
    >>> res = evaluate(scorer, ds, target="target", source="source", ks=(10,), seeds=(0, 1))
    >>> sorted(res)
    ['counts', 'full', 'sampled', 'sampled_std']
"""

from jaxrec.evaluate.protocols import PROTOCOLS, evaluate, evaluate_cold_warm, evaluate_domains, recommend
from jaxrec.evaluate.scorers import Scorer, embedding_scorer, ones_column, popularity_scorer, take_rows
from jaxrec.evaluate.users import USER_SELECTIONS, select_users

__all__ = [
    "PROTOCOLS",
    "Scorer",
    "USER_SELECTIONS",
    "embedding_scorer",
    "evaluate",
    "evaluate_cold_warm",
    "evaluate_domains",
    "ones_column",
    "popularity_scorer",
    "recommend",
    "select_users",
    "take_rows",
]

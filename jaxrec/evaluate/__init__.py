"""Evaluation driver: full-ranking and sampled-protocol metrics of a scorer on held-out users.

* :mod:`jaxrec.evaluate.scorers` — :class:`Scorer` (a user function and the item vectors of one domain), the
  embedding and popularity scorers, and the jitted batch functions that score them;
* :mod:`jaxrec.evaluate.users` — which held-out users are evaluated (cold, warm, all);
* :mod:`jaxrec.evaluate.options` — :func:`check_options`: an evaluation's options checked against the dataset
  before any work (callable before training);
* :mod:`jaxrec.evaluate.lists` — :func:`recommend`: top-k lists for given users;
* :mod:`jaxrec.evaluate.protocols` — :func:`evaluate` under the full-ranking and sampled protocols, per
  selection (:func:`evaluate_cold_warm`) and per direction (:func:`evaluate_domains`).

Non-finite values: by default (``check_finite=True``) a scorer whose item table or outputs hold ``NaN`` / ``±inf``
(dense scores: ``NaN``) is refused with a ``ValueError`` naming the first offending rows or users.

Example:
    >>> from jaxrec import data
    >>> ds, _ = data.synthetic(n_users=300, n_items=(80, 60))
    >>> ds = data.cold_start_split(ds, "source", "target")
    >>> scorer = popularity_scorer(ds.item_popularity("target"))
    >>> res = evaluate(scorer, ds, target="target", source="source", ks=(10,), seeds=(0, 1))
    >>> sorted(res)
    ['counts', 'full', 'sampled', 'sampled_std']
"""

from jaxrec.evaluate.lists import recommend
from jaxrec.evaluate.options import EVAL_SPLITS, check_options
from jaxrec.evaluate.protocols import PROTOCOLS, evaluate, evaluate_cold_warm, evaluate_domains
from jaxrec.evaluate.scorers import Scorer, embedding_scorer, ones_column, popularity_scorer, take_rows
from jaxrec.evaluate.users import USER_SELECTIONS, select_users

__all__ = [
    "EVAL_SPLITS",
    "PROTOCOLS",
    "Scorer",
    "USER_SELECTIONS",
    "check_options",
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

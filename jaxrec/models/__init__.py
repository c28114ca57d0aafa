"""Flax linen networks for cross-domain recommendation.

Thin modules that map ids, features or item histories to embeddings and scores; they never compute losses
(those live in `jaxrec.losses`, and their weighted sum in `jaxrec.train`).

Modules, in import order (each imports only `layers` and `jaxrec.checks`):

* `layers` — activations (`ACTIVATIONS`), initializers, argument and input checks, the domain index, `MLP`;
* `embeddings` — `CrossDomainEmbedding` (ID tables), `TwoTower`;
* `encoders` — `HistoryEncoder` (Transformer over an item history), `SharedSpecificEncoder`;
* `multidomain` — `SharedBottom`, `MMoE`, `PLE`, `STAR`;
* `cross` — `CoNet`, `CrossStitch`;
* `mapping` — `EMCDRMapping`, `PTUPCDRMeta`;
* `adversarial` — `gradient_reversal`, `DomainClassifier`.

Axis conventions used throughout the package:

* ``batch`` (B) — rows of a batch (users, or user–item pairs).
* ``dim`` (D) — width of an embedding / hidden representation; ``d_in`` the width of an input.
* ``length`` (L) — positions of a user's item history, padded on the right or anywhere with id ``-1``.
* ``domains`` (K) — the number of domains; ``experts`` (E) — experts of a mixture.

Domain index (``SharedSpecificEncoder``, ``SharedBottom``, ``MMoE``, ``PLE``, ``STAR``): every such module takes
``domain`` as one of

* a Python ``int`` in ``[0, K)`` — *static*: every row belongs to that domain; the module returns ``[B, ...]``;
* an integer array ``[B]`` (or a 0-d integer array) — *per row*; returns ``[B, ...]``, row ``b`` from domain
  ``domain[b]``. Values are not checked inside ``jit``; a value outside ``[0, K)`` gives an all-zero row;
* ``None`` — every domain's output, stacked on axis 1: ``[B, K, ...]``.

All modules compute every domain's branch (K is small) and select; under ``jit`` branches that a static
``domain`` does not use are removed as dead code.

Configuration is through module attributes (dataclass fields) with defaults, validated when the module is
constructed; unknown activation names raise ``ValueError`` listing the valid ones. Dropout uses the
``"dropout"`` rng stream and is active only when ``deterministic=False``.
"""

from jaxrec.models.adversarial import DomainClassifier, gradient_reversal
from jaxrec.models.cross import CoNet, CrossStitch
from jaxrec.models.embeddings import CrossDomainEmbedding, TwoTower
from jaxrec.models.encoders import HistoryEncoder, SharedSpecificEncoder
from jaxrec.models.layers import ACTIVATIONS, DEFAULT_EMBEDDING_INIT, MLP, Activation
from jaxrec.models.mapping import EMCDRMapping, PTUPCDRMeta
from jaxrec.models.multidomain import PLE, STAR, MMoE, SharedBottom

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_EMBEDDING_INIT",
    "MLP",
    "PLE",
    "STAR",
    "Activation",
    "CoNet",
    "CrossDomainEmbedding",
    "CrossStitch",
    "DomainClassifier",
    "EMCDRMapping",
    "HistoryEncoder",
    "MMoE",
    "PTUPCDRMeta",
    "SharedBottom",
    "SharedSpecificEncoder",
    "TwoTower",
    "gradient_reversal",
]

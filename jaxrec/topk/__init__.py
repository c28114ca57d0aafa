"""Similarity scores and exact / approximate / masked / sharded top-k.

Axis conventions (the whole package): queries ``[Q, d]``, items ``[N, d]``, a score matrix ``[Q, N]`` (built
only by :func:`similarity_scores` and the ``"dense"`` method; the streaming kernels never hold more than a chunk
of it), results ``[Q, k]``. Item ids are ``int32`` in ``[0, N)``. In inputs (``exclude``, ``candidates``) ``-1``
is padding; in outputs an id of ``-1`` with score ``-inf`` means "no item left" (a row whose exclusions leave
fewer than ``k`` items). Every result row is sorted by score, descending, and
equal scores are ordered by lower item id. Scores are float32 whatever the input dtype (float32, bfloat16,
float16; accumulation in float32). "Exact" means exact for the float32 scores computed here; kernels sum the
``d`` products in different orders (and the bucket kernel rescores a few items separately), so scores can differ
in the last bit between methods and two items within float32 rounding of each other may swap places against a
float64 reference. Products run at ``precision="highest"`` by default: full
float32 on GPU and TPU too, whose own default for float32 is TF32 / bfloat16 passes (``precision=None`` keeps
JAX's setting: faster, not exact).

Metrics: ``"dot"`` = ``q·x``; ``"cosine"`` = ``q·x / (|q||x|)``; ``"l2"`` = ``-|q - x|²``.

Inputs: arrays or array-likes (numpy arrays, Python lists and tuples; float64 becomes float32, a list of numbers
float32; id lists must be rectangular, see :mod:`jaxrec.topk.inputs`). ``Q = 0`` queries give empty results
``[0, k]``; ``N = 0`` items is a ``ValueError``. Non-finite values are refused: every function checks its
concrete inputs (queries and items: no ``NaN`` / ``±inf``; a score matrix: no ``NaN``) before the compiled kernel
runs and raises a ``ValueError`` naming the argument and the first offending rows; ``check_finite=False`` skips
that pass. Under ``jit`` / ``vmap`` / ``shard_map`` the inputs are tracers and the check is skipped.

Modules, each importing only those above it:

* ``validate`` — argument checks (trace time, shapes in the messages) and the matmul precision.
* ``inputs`` — array-like conversion and the finite-value check on concrete inputs (outside the kernels).
* ``scores`` — metric preparation, the products, :func:`similarity_scores`.
* ``blocks`` — the ``"dense"`` and ``"scan"`` kernels on one query block, shared pieces, the query blocking.
* ``bucket`` — the ``"bucket"`` kernel (the CPU-fast exact kernel) and its size planning.
* ``exact`` — :func:`similarity_topk`: the choice of kernel and block sizes, the jitted core.
* ``approx`` — :func:`approx_similarity_topk` (``lax.approx_max_k`` on TPU, the exact kernel elsewhere).
* ``sharded`` — :func:`sharded_similarity_topk`: items split over a mesh axis (``jax.shard_map``).
* ``candidates`` — :func:`scores_topk`, :func:`candidate_scores`, :func:`candidate_topk`, :func:`csr_to_padded`.

Example:
    >>> import jax.numpy as jnp
    >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> x = jnp.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    >>> scores, ids = similarity_topk(q, x, 2)
    >>> ids.tolist()
    [[3, 0], [1, 2]]
    >>> similarity_topk(q, x, 2, exclude=jnp.array([[3, -1], [-1, -1]]))[1].tolist()
    [[0, 2], [1, 2]]
"""

from jaxrec.topk.approx import approx_similarity_topk
from jaxrec.topk.candidates import candidate_scores, candidate_topk, csr_to_padded, scores_topk
from jaxrec.topk.exact import METHODS, similarity_topk
from jaxrec.topk.scores import similarity_scores
from jaxrec.topk.sharded import sharded_similarity_topk
from jaxrec.topk.validate import METRICS

__all__ = [
    "METRICS",
    "METHODS",
    "similarity_scores",
    "similarity_topk",
    "approx_similarity_topk",
    "sharded_similarity_topk",
    "scores_topk",
    "candidate_scores",
    "candidate_topk",
    "csr_to_padded",
]

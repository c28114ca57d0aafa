"""Top-``k`` with the items split over a mesh axis: :func:`sharded_similarity_topk` (``jax.shard_map``).

Each of the ``D`` devices holds ``N / D`` item rows ``[N / D, d]`` and runs :func:`similarity_topk` on them; the
local lists ``[Q, k]`` are gathered into ``[Q, D·k]`` (device order = id order) and merged by one ``lax.top_k``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.topk import validate
from jaxrec.topk.blocks import run_topk
from jaxrec.topk.exact import similarity_topk
from jaxrec.topk.inputs import pair_inputs, require_finite_pair
from jaxrec.topk.scores import NEG_INF


def sharded_similarity_topk(
    queries: jax.Array,
    items: jax.Array,
    k: int,
    *,
    mesh: jax.sharding.Mesh,
    axis_name: str,
    metric: str = "dot",
    exclude: jax.Array | None = None,
    check_finite: bool = True,
    **kernel_options: Any,
) -> tuple[jax.Array, jax.Array]:
    """Exact top-``k`` with the items split over mesh axis ``axis_name`` (each device holds ``N / D`` rows).

    Each device runs :func:`similarity_topk` on its rows (ids shifted to global ids, exclusions translated to
    local ids), the ``D`` lists are gathered with ``lax.all_gather`` and merged with one ``lax.top_k``; the
    device order equals the id order, so ties still go to the lower id and the result equals the single-device
    kernel. Implemented with ``jax.shard_map``; queries and ``exclude`` are replicated.

    Args:
        queries: ``[Q, d]`` floating, or an array-like (as for :func:`similarity_topk`); ``Q = 0`` gives ``[0, k]``.
        items: ``[N, d]`` floating or an array-like, ``N`` divisible by the size ``D`` of ``axis_name``.
        k: static, ``1 <= k <= N``.
        mesh: a ``jax.sharding.Mesh`` containing ``axis_name``.
        axis_name: the mesh axis the items are split over.
        metric: one of :data:`~jaxrec.topk.METRICS`.
        exclude: optional int ``[Q, m]`` global item ids, ``-1`` padded (an array or a rectangular list).
        check_finite: refuse concrete ``queries`` / ``items`` holding ``NaN`` or ``±inf`` (as in
            :func:`similarity_topk`: before the sharded call, skipped under ``jit``); ``False`` skips it.
        **kernel_options: keyword options of :func:`similarity_topk` (``method``, ``chunk_size``, ...).

    Returns:
        ``(scores float32[Q, k], indices int32[Q, k])``, replicated.

    Example:
        >>> mesh = jax.make_mesh((jax.device_count(),), ("items",))
        >>> x = jnp.arange(8.0 * jax.device_count()).reshape(-1, 1)
        >>> sharded_similarity_topk(jnp.ones((1, 1)), x, 2, mesh=mesh, axis_name="items")[1].shape
        (1, 2)
    """
    queries, items, exclude = pair_inputs(queries, items, exclude)
    validate.check_metric(metric)
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {dict(mesh.shape)}")
    shapes = validate.describe_shapes(queries, items, exclude)
    validate.check_k(k, items.shape[0], "items N", shapes)
    n_dev = mesh.shape[axis_name]
    n = items.shape[0]
    if n % n_dev:
        raise ValueError(
            f"items [N, d] = {items.shape} must split evenly over the {n_dev} devices of mesh axis "
            f"{axis_name!r}; pad N to a multiple of {n_dev}"
        )
    if exclude is not None:
        validate.check_ids("exclude", exclude, queries.shape[0], "[Q, m]", f"[Q, d] = {tuple(queries.shape)}")
        exclude = jnp.asarray(exclude, jnp.int32)
    require_finite_pair(check_finite, queries, items)
    return run_topk(
        _sharded_topk,
        queries,
        items,
        exclude,
        k=int(k),
        mesh=mesh,
        axis_name=axis_name,
        metric=metric,
        options=tuple(sorted(kernel_options.items())),
    )


@functools.partial(jax.jit, static_argnames=("k", "mesh", "axis_name", "metric", "options"))
def _sharded_topk(queries, items, exclude, *, k, mesh, axis_name, metric, options):
    n_local = items.shape[0] // mesh.shape[axis_name]
    k_local = min(k, n_local)

    def local(q, x, ex):
        first = lax.axis_index(axis_name) * n_local
        if ex is not None:
            ex = jnp.where((ex >= first) & (ex < first + n_local), ex - first, -1)
        v, i = similarity_topk(q, x, k_local, metric=metric, exclude=ex, **dict(options))
        i = jnp.where(i >= 0, i + first, -1)
        v = lax.all_gather(v, axis_name, axis=1, tiled=True)  # [Q, D * k_local], device (= id) order
        i = lax.all_gather(i, axis_name, axis=1, tiled=True)
        v, pos = lax.top_k(v, k)
        i = jnp.take_along_axis(i, pos, axis=1)
        return v, jnp.where(v > NEG_INF, i, -1)

    # Lay the operands out as shard_map expects: reshard on Explicit mesh axes, a constraint on Auto ones.
    explicit = mesh.axis_types[mesh.axis_names.index(axis_name)] == jax.sharding.AxisType.Explicit
    place = jax.reshard if explicit else lax.with_sharding_constraint
    queries = place(queries, NamedSharding(mesh, P()))
    items = place(items, NamedSharding(mesh, P(axis_name)))
    if exclude is None:
        fn = jax.shard_map(
            lambda q, x: local(q, x, None),
            mesh=mesh,
            in_specs=(P(), P(axis_name)),
            out_specs=(P(), P()),
            check_vma=False,
        )
        return fn(queries, items)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis_name), P()), out_specs=(P(), P()), check_vma=False)
    return fn(queries, items, place(exclude, NamedSharding(mesh, P())))

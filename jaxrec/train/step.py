"""The train step (pure), the one data-parallel site, and where state and batches are placed.

:func:`train_step` is ``(state, batch, rng) -> (state, metrics)``: one optimizer step on the combined loss
``Σ_d w_d · L_task(d) + λ(step) · D(h_source, h_target)`` of an :class:`~jaxrec.train.Objective`, computed once,
in :meth:`~jaxrec.train.Objective.loss`. A model is a Flax module whose ``__call__(batch, *, deterministic,
**model_kwargs)`` returns a dict of outputs (scores, embeddings; never losses), with ``outputs["align"] = (hs, ht,
hs_mask, ht_mask)`` when the objective has a discrepancy.

Data parallelism is chosen in exactly one function, :func:`make_train_step`; :func:`placement`, next to it, says
where the state and the batches live for the same choice and how to take them back:

* ``parallel="pmap"``: ``jax.pmap`` over local devices; state replicated (leading axis = device), batch
  ``[devices, B/devices, ...]``, gradients and metrics averaged with ``lax.pmean`` over the ``"batch"`` axis. Each
  device computes its loss on its shard, so a discrepancy such as MMD is the mean of per-shard estimators (as
  batch statistics are per device in BatchNorm); task losses averaged per shard equal the global mean when shards
  are equally filled.
* ``parallel="mesh"``: ``jax.jit`` with ``NamedSharding`` over a 1-D ``Mesh`` named ``"data"``: the batch is
  sharded on its leading axis, the state replicated; XLA inserts the all-reduce and the loss is the *global*
  batch loss (identical to one device). This is the path JAX recommends and the one that scales to several hosts:
  call ``jax.distributed.initialize()`` on every host first; the mesh then spans all hosts' devices and each host
  feeds its own slice of the global batch (see :func:`put_batch`).
* ``parallel="none"``: plain ``jax.jit``.

Row-sharded tables (``placement("mesh", shard_rows=True)``): on the mesh path, every embedding table of the state
(a 2-D leaf named ``embedding``, as ``flax.linen.Embed`` names it, in the parameters and in the optimizer's moments
alike) is placed with ``NamedSharding(mesh, P("data", None))``: each device holds ``rows / devices`` of its rows,
and XLA's SPMD partitioner runs the gathers, the gradient scatter and the optimizer update on those shards. The
rows must divide by the device count (pad them: ``CrossDomainEmbedding(row_multiple=...)``); everything else stays
replicated. The step computes what the replicated step computes (the same global batch loss).

The state buffers are donated to the step, so hold on to ``state.params`` only through :func:`copy_tree`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrec import batching, checks
from jaxrec.train.objective import Objective
from jaxrec.train.optim import OptimizerConfig, make_optimizer
from jaxrec.train.sparse import sparse_train_step

AXIS = "batch"  # pmap axis name
MESH_AXIS = "data"  # mesh axis name

TrainState = train_state.TrainState


def create_train_state(
    rng: jax.Array,
    model: nn.Module,
    sample_batch: Any,
    optimizer: optax.GradientTransformation | OptimizerConfig,
    *,
    params: Any = None,
) -> TrainState:
    """Initializes ``model`` on ``sample_batch`` (or takes ``params``) and pairs it with ``optimizer``.

    Args:
      rng: a PRNG key.
      model: a Flax module called as ``model(batch, deterministic=...)``.
      sample_batch: a batch of the shapes training will use (values do not matter).
      optimizer: an Optax transformation or an :class:`OptimizerConfig`.
      params: start from these parameters instead of a fresh init (transfer / fine-tuning).

    Returns:
      A :class:`TrainState` at step 0 holding the parameters, ``model.apply`` and the optimizer state.
    """
    if isinstance(optimizer, OptimizerConfig):
        optimizer = make_optimizer(optimizer)
    if params is None:
        params_rng, dropout_rng = jax.random.split(rng)
        variables = jax.jit(functools.partial(model.init, deterministic=True))(
            {"params": params_rng, "dropout": dropout_rng}, sample_batch
        )
        params = variables["params"]
    else:
        params = copy_tree(params)  # the step donates the state's buffers; never the caller's
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def train_step(
    state: TrainState, batch: Any, rng: jax.Array, *, objective: Objective, axis_name: str | None = None
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on ``batch``; returns the new state and scalar metrics (loss, its parts, grad norm).

    Dropout randomness is ``fold_in(rng, step)`` and, under ``pmap``, also folded with the device index.

    Args:
      state: the current state.
      batch: the model's input, as the objective expects it.
      rng: a PRNG key for dropout.
      objective: the task losses and the discrepancy term.
      axis_name: the ``pmap`` axis to average gradients and metrics over (``None`` on one device or a mesh).

    Returns:
      ``(state, metrics)``: the state after one optimizer step and a dict of scalars (loss, its parts, grad norm).
    """
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    extra = dict(objective.model_kwargs(state.step)) if objective.model_kwargs is not None else {}

    def loss_fn(params):
        outputs = state.apply_fn({"params": params}, batch, deterministic=False, rngs={"dropout": rng}, **extra)
        return objective.loss(outputs, batch, state.step)

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        parts = jax.lax.pmean(parts, axis_name)
        loss = jax.lax.pmean(loss, axis_name)
    metrics = dict(parts, loss=loss, grad_norm=optax.tree.norm(grads))
    return state.apply_gradients(grads=grads), metrics


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over ``devices`` (default: all devices of all hosts)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (MESH_AXIS,))


def _is_table(path, leaf) -> bool:
    """A 2-D leaf whose last path key is ``embedding`` (``flax.linen.Embed``'s parameter, or its optimizer moments)."""
    last = path[-1] if path else None
    return getattr(last, "key", getattr(last, "name", None)) == "embedding" and jnp.ndim(leaf) == 2


def row_shardings(tree: Any, mesh: Mesh) -> Any:
    """The shardings of ``tree`` with its embedding tables row-sharded over ``mesh`` (see the module docstring):
    ``NamedSharding(mesh, P("data", None))`` for every 2-D leaf named ``embedding``, replicated for the others.

    Raises:
      ValueError: a table whose rows do not divide by the mesh's device count (naming it and its shape).
    """
    n = mesh.size
    replicated = NamedSharding(mesh, PartitionSpec())
    rows = NamedSharding(mesh, PartitionSpec(MESH_AXIS, None))

    def pick(path, leaf):
        if not _is_table(path, leaf):
            return replicated
        if jnp.shape(leaf)[0] % n:
            raise ValueError(
                f"cannot shard the rows of {jax.tree_util.keystr(path)} (shape {tuple(jnp.shape(leaf))}) over {n} "
                f"devices: its rows must be a multiple of {n} (pad them, e.g. CrossDomainEmbedding(row_multiple={n}))"
            )
        return rows

    return jax.tree_util.tree_map_with_path(pick, tree)


def put_row_sharded(tree: Any, mesh: Mesh) -> Any:
    """Places ``tree`` over ``mesh`` by :func:`row_shardings`: tables sharded on their rows, the rest replicated."""
    return jax.device_put(tree, row_shardings(tree, mesh))


def make_train_step(
    objective: Objective,
    *,
    parallel: str = "none",
    mesh: Mesh | None = None,
    donate: bool = True,
    state_sharding: Any = None,
    sparse_min_rows: int | None = None,
) -> Callable:
    """The compiled step ``(state, batch, rng) -> (state, metrics)`` for ``parallel`` in {none, pmap, mesh}.

    This is the only place where the data-parallel strategy is chosen (see the module docstring). With
    ``"pmap"`` the state must be :func:`replicate`-d and the batch :func:`jaxrec.shard`-ed; ``rng`` is one key
    shared by all devices. With ``"mesh"`` put state and batch with :func:`put_replicated` (or
    :func:`put_row_sharded`) / :func:`put_batch`. :func:`placement` does either for you.

    Args:
      objective: the task losses and the discrepancy term.
      parallel: ``"none"``, ``"pmap"`` or ``"mesh"``.
      mesh: the device mesh for ``"mesh"`` (default: all devices, see :func:`make_mesh`).
      donate: donate the input state's buffers to the output (the old state cannot be used afterwards).
      state_sharding: for ``"mesh"``, the shardings of the state, a tree like it (e.g.
        ``row_shardings(state, mesh)``); None: replicated. The new state keeps them.
      sparse_min_rows: update the embedding tables of at least this many rows row by row
        (:func:`jaxrec.train.sparse_train_step`, lazy for optimizers with moments); None: every parameter densely.
        Not with ``"pmap"``.

    Returns:
      The compiled step, ``(state, batch, rng) -> (state, metrics)``.
    """
    donate_argnums = (0,) if donate else ()
    if sparse_min_rows is not None:
        checks.positive_int("sparse_min_rows", sparse_min_rows)
        if parallel == "pmap":
            raise ValueError(
                "sparse_min_rows needs parallel='none' or 'mesh' (pmap devices would gather different rows)"
            )
        step = functools.partial(sparse_train_step, objective=objective, min_rows=sparse_min_rows)
    else:
        step = functools.partial(train_step, objective=objective)
    if parallel == "none":
        return jax.jit(step, donate_argnums=donate_argnums)
    if parallel == "pmap":
        return jax.pmap(
            functools.partial(train_step, objective=objective, axis_name=AXIS),
            axis_name=AXIS,
            in_axes=(0, 0, None),
            donate_argnums=donate_argnums,
        )
    if parallel == "mesh":
        mesh = make_mesh() if mesh is None else mesh
        replicated = NamedSharding(mesh, PartitionSpec())
        sharded = NamedSharding(mesh, PartitionSpec(MESH_AXIS))
        state = replicated if state_sharding is None else state_sharding
        return jax.jit(
            step,
            in_shardings=(state, sharded, replicated),
            out_shardings=(state, replicated),
            donate_argnums=donate_argnums,
        )
    raise ValueError(f"parallel={parallel!r}; expected 'none', 'pmap' or 'mesh'")


class Placement(NamedTuple):
    """Where the state and the batches of one data-parallel strategy live, and how to take them back.

    Attributes:
      parallel: ``"none"``, ``"pmap"`` or ``"mesh"``.
      mesh: the 1-D data mesh for ``"mesh"`` (give the same one to :func:`make_train_step`); None otherwise.
      put_state: a host or one-device tree (the state) → its placement: replicated over the local devices with a
        leading device axis (``pmap``), replicated over the mesh (``mesh``), unchanged (``none``).
      put_batch: a host batch of the global batch size → ``[devices, B/devices, ...]`` (``pmap``), sharded on its
        leading axis over the mesh (``mesh``), unchanged (``none``).
      take_back: a placed tree → one copy of it: the first device's (``pmap``), unchanged otherwise.
      state_sharding: for ``"mesh"``, a host state → the shardings ``put_state`` gives it (pass them to
        :func:`make_train_step` as ``state_sharding``); None otherwise.
    """

    parallel: str
    mesh: Mesh | None
    put_state: Callable[[Any], Any]
    put_batch: Callable[[Any], Any]
    take_back: Callable[[Any], Any]
    state_sharding: Callable[[Any], Any] | None = None


def _same(tree: Any) -> Any:
    return tree


def placement(parallel: str, *, mesh: Mesh | None = None, shard_rows: bool = False) -> Placement:
    """The :class:`Placement` that goes with ``make_train_step(objective, parallel=parallel, mesh=...,
    state_sharding=...)``.

    Args:
      parallel: ``"none"``, ``"pmap"`` or ``"mesh"``.
      mesh: for ``"mesh"``, the mesh to use (default :func:`make_mesh`: every device of every host).
      shard_rows: for ``"mesh"``, shard the state's embedding tables on their rows (:func:`row_shardings`)
        instead of replicating them.

    Raises:
      ValueError: an unknown ``parallel``, or ``shard_rows`` without ``"mesh"``.

    Example:
      >>> place = placement("pmap")
      >>> step = make_train_step(objective, parallel=place.parallel, mesh=place.mesh)  # doctest: +SKIP
      >>> state, metrics = step(place.put_state(state), place.put_batch(batch), rng)  # doctest: +SKIP
      >>> params = place.take_back(state.params)  # doctest: +SKIP
    """
    if shard_rows and parallel != "mesh":
        raise ValueError(f"shard_rows=True needs parallel='mesh', got parallel={parallel!r}")
    if parallel == "none":
        return Placement(parallel, None, _same, _same, _same)
    if parallel == "pmap":
        n_devices = jax.local_device_count()
        return Placement(parallel, None, replicate, lambda batch: batching.shard(batch, n_devices), unreplicate)
    if parallel == "mesh":
        mesh = make_mesh() if mesh is None else mesh
        if shard_rows:
            put, shardings = put_row_sharded, row_shardings
        else:
            put, shardings = put_replicated, _replicated_shardings
        return Placement(
            parallel,
            mesh,
            functools.partial(put, mesh=mesh),
            functools.partial(put_batch, mesh=mesh),
            _same,
            functools.partial(shardings, mesh=mesh),
        )
    raise ValueError(f"parallel={parallel!r}; expected 'none', 'pmap' or 'mesh'")


def replicate(tree: Any, devices=None) -> Any:
    """Copies ``tree`` onto every local device (leading axis = device), for ``pmap``.

    Args:
      tree: a pytree of arrays.
      devices: the devices (default: ``jax.local_devices()``).

    Returns:
      The tree with each leaf ``[n_devices, ...]``, one copy per device.
    """
    devices = jax.local_devices() if devices is None else devices
    sharding = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(AXIS))
    return jax.tree.map(lambda x: jax.device_put(jnp.broadcast_to(x, (len(devices),) + jnp.shape(x)), sharding), tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree.

    Args:
      tree: a pytree whose leaves are ``[n_devices, ...]``.

    Returns:
      The tree with each leaf ``[...]`` of device 0.
    """
    return jax.tree.map(lambda x: x[0], tree)


def _replicated_shardings(tree: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Places ``tree`` replicated over ``mesh`` (for ``parallel="mesh"``)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def put_batch(batch: Any, mesh: Mesh) -> Any:
    """Places this host's batch sharded on its leading axis over ``mesh``.

    Single host: ``batch`` is the global batch. Several hosts (after ``jax.distributed.initialize()``): each host
    passes its own slice and the global batch is their concatenation in process order.
    """
    sharding = NamedSharding(mesh, PartitionSpec(MESH_AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def copy_tree(tree: Any) -> Any:
    """A device copy of ``tree`` that survives the donation of the original buffers to the next step."""
    return jax.tree.map(jnp.copy, tree)

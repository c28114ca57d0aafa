"""LightGCN-style propagation over the joint user–item graph of all domains.

The joint graph is bipartite: users are shared across domains, items are per domain. Nodes are numbered

    users                 [0, n_users)
    items of domain 0     [n_users, n_users + n_items[0])
    items of domain 1     [n_users + n_items[0], n_users + n_items[0] + n_items[1])
    ...

so one embedding table ``[n_nodes, dim]`` holds every node, and ``graph.item_offsets[d]`` is the node id of
item 0 of domain ``d``. Every interaction (u, i) of domain d becomes two directed edges, u → i and i → u;
a message travels from ``senders[e]`` to ``receivers[e]``. Edges are kept as flat arrays (no dense adjacency)
and aggregated with ``jax.ops.segment_sum``.

Axis conventions in this file: ``n_nodes`` = n_users + Σ_d n_items[d]; ``n_edges`` = number of *directed*
edges (twice the number of distinct interactions); ``dim`` = embedding width.

Propagation is LightGCN's (He et al., SIGIR 2020): no weights, no non-linearity,

    e_{k+1} = Â e_k,   Â = D^{-1/2} A D^{-1/2},   readout = mean(e_0, e_1, ..., e_K),

where A is the symmetric 0/1 adjacency of the joint graph and D its degree matrix (degrees counted over
*all* domains). An optional per-domain weighting in the spirit of BiTGCF (Liu et al., CIKM 2020) scales the
item → user messages of domain d by ``w_d`` (see :func:`propagate`).

Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> g = build_joint_graph(3, [(np.array([0, 1]), np.array([0, 0]), 2),
    ...                          (np.array([1, 2]), np.array([1, 0]), 2)])
    >>> g.n_nodes
    7
    >>> out = propagate(g, jnp.ones((7, 4)), num_layers=2)
    >>> users, (items_a, items_b) = split_nodes(g, out)
    >>> users.shape, items_a.shape, items_b.shape
    ((3, 4), (2, 4), (2, 4))
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "JointGraph",
    "build_joint_graph",
    "propagate",
    "split_nodes",
    "join_nodes",
    "item_node_ids",
]


@struct.dataclass
class JointGraph:
    """The joint user–item graph of all domains as flat edge lists (an explicit pytree).

    Array fields are pytree leaves (they move to the device and may be passed through ``jit``); sizes are
    static metadata, so shapes derived from them stay static under ``jit``.

    Attributes:
        senders: ``int32[n_edges]`` node id each message comes from.
        receivers: ``int32[n_edges]`` node id each message goes to; sorted ascending.
        weights: ``float32[n_edges]`` symmetric normalization ``1 / sqrt(deg[sender] * deg[receiver])``.
        edge_domain: ``int32[n_edges]`` domain index of the interaction the edge comes from.
        user_to_item: ``bool[n_edges]`` True for user → item edges, False for item → user edges.
        degrees: ``int32[n_nodes]`` number of distinct neighbours of each node (0 for isolated nodes).
        n_users: number of (shared) users.
        n_items: number of items of each domain.
        item_offsets: node id of item 0 of each domain.
    """

    senders: jax.Array
    receivers: jax.Array
    weights: jax.Array
    edge_domain: jax.Array
    user_to_item: jax.Array
    degrees: jax.Array
    n_users: int = struct.field(pytree_node=False)
    n_items: tuple[int, ...] = struct.field(pytree_node=False)
    item_offsets: tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def n_domains(self) -> int:
        """Number of domains."""
        return len(self.n_items)

    @property
    def n_nodes(self) -> int:
        """Total number of nodes, users plus the items of every domain."""
        return self.n_users + sum(self.n_items)

    @property
    def n_edges(self) -> int:
        """Number of directed edges (twice the number of distinct interactions)."""
        return int(self.senders.shape[0])


def _as_int_array(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def build_joint_graph(n_users: int, domains: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> JointGraph:
    """Builds the joint user–item graph of all domains (host side, numpy).

    Duplicate interactions — the same (user, item) pair listed several times within a domain — are
    deduplicated: A is a 0/1 matrix, each distinct pair gives exactly one edge in each direction and counts
    once in the degrees. Nodes without interactions (cold users, unseen items) get degree 0 and no edges;
    their normalization is never formed, so nothing is divided by zero.

    Args:
        n_users: number of users; user ids are shared across domains and lie in ``[0, n_users)``.
        domains: one ``(users int[nnz_d], items int[nnz_d], n_items_d)`` per domain: the interactions of
            that domain as parallel id arrays, item ids in ``[0, n_items_d)``.

    Returns:
        A :class:`JointGraph` with ``2 * Σ_d (distinct pairs of domain d)`` directed edges, sorted by
        receiver.

    Raises:
        ValueError: on a negative size, no domains, mismatched array lengths or out-of-range ids.
        TypeError: on non-integer ids.

    Example:
        >>> g = build_joint_graph(2, [(np.array([0, 0, 1]), np.array([1, 1, 0]), 3)])
        >>> g.n_edges  # (0, 1) is listed twice but counted once
        4
    """
    n_users = int(n_users)
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0, got {n_users}")
    if len(domains) == 0:
        raise ValueError("domains must hold at least one (users, items, n_items) triple, got none")

    n_items: list[int] = []
    offsets: list[int] = []
    src_u, dst_i, dom = [], [], []
    offset = n_users
    for d, triple in enumerate(domains):
        if len(triple) != 3:
            raise ValueError(f"domain {d}: expected (users, items, n_items), got {len(triple)} fields")
        users, items, n_items_d = triple
        users = _as_int_array(users, f"domain {d} users")
        items = _as_int_array(items, f"domain {d} items")
        n_items_d = int(n_items_d)
        if users.shape != items.shape:
            raise ValueError(
                f"domain {d}: users and items must have the same shape, got {users.shape} and {items.shape}"
            )
        if n_items_d < 0:
            raise ValueError(f"domain {d}: n_items must be >= 0, got {n_items_d}")
        if users.size:
            if users.min() < 0 or users.max() >= n_users:
                raise ValueError(
                    f"domain {d}: user ids must lie in [0, {n_users}), got range [{users.min()}, {users.max()}]"
                )
            if items.min() < 0 or items.max() >= n_items_d:
                raise ValueError(
                    f"domain {d}: item ids must lie in [0, {n_items_d}), got range [{items.min()}, {items.max()}]"
                )
        # Deduplicate pairs within the domain (0/1 adjacency).
        pairs = np.unique(users * max(n_items_d, 1) + items)
        users, items = pairs // max(n_items_d, 1), pairs % max(n_items_d, 1)
        src_u.append(users)
        dst_i.append(items + offset)
        dom.append(np.full(users.shape, d, dtype=np.int64))
        n_items.append(n_items_d)
        offsets.append(offset)
        offset += n_items_d

    n_nodes = offset
    u = np.concatenate(src_u)
    i = np.concatenate(dst_i)
    d = np.concatenate(dom)
    # Both directions: first user -> item, then item -> user.
    senders = np.concatenate([u, i])
    receivers = np.concatenate([i, u])
    edge_domain = np.concatenate([d, d])
    user_to_item = np.concatenate([np.ones(u.shape, bool), np.zeros(u.shape, bool)])

    degrees = np.bincount(receivers, minlength=n_nodes)
    # Every node touched by an edge has degree >= 1, so this never divides by zero.
    weights = 1.0 / np.sqrt(degrees[senders].astype(np.float64) * degrees[receivers].astype(np.float64))

    order = np.argsort(receivers, kind="stable")
    return JointGraph(
        senders=jnp.asarray(senders[order], dtype=jnp.int32),
        receivers=jnp.asarray(receivers[order], dtype=jnp.int32),
        weights=jnp.asarray(weights[order], dtype=jnp.float32),
        edge_domain=jnp.asarray(edge_domain[order], dtype=jnp.int32),
        user_to_item=jnp.asarray(user_to_item[order]),
        degrees=jnp.asarray(degrees, dtype=jnp.int32),
        n_users=n_users,
        n_items=tuple(n_items),
        item_offsets=tuple(offsets),
    )


def _edge_scale(graph: JointGraph, domain_weights: jax.Array | None) -> jax.Array:
    """Per-edge message weight ``[n_edges]``: normalization times the optional domain weight."""
    if domain_weights is None:
        return graph.weights
    domain_weights = jnp.asarray(domain_weights)
    if domain_weights.shape != (graph.n_domains,):
        raise ValueError(
            f"domain_weights must have shape ({graph.n_domains},) (one per domain), got {domain_weights.shape}"
        )
    if not jnp.issubdtype(domain_weights.dtype, jnp.floating):
        domain_weights = domain_weights.astype(graph.weights.dtype)
    # Only item -> user messages are scaled; user -> item messages keep weight 1.
    w = jnp.where(graph.user_to_item, jnp.ones((), domain_weights.dtype), domain_weights[graph.edge_domain])
    return graph.weights * w


def propagate(
    graph: JointGraph,
    embeddings: jax.Array,
    *,
    num_layers: int,
    domain_weights: jax.Array | None = None,
) -> jax.Array:
    """LightGCN propagation with layer-mean readout over the joint graph.

    Computes ``e_0 = embeddings``, ``e_{k+1}[r] = Σ_{edges s→r} c_e · e_k[s]`` and returns
    ``(e_0 + e_1 + ... + e_K) / (K + 1)`` with ``K = num_layers``. Without ``domain_weights``,
    ``c_e = 1/sqrt(deg[s]·deg[r])`` (i.e. ``e_{k+1} = Â e_k``).

    With ``domain_weights = w`` (shape ``[n_domains]``), BiTGCF-like weighting: a message from an item of
    domain d to a user is multiplied by ``w_d`` (``c_e = w_d / sqrt(deg[s]·deg[r])``); messages from users to
    items are not scaled, and the normalization is always the one of the unweighted joint graph (degrees over
    all domains). Hence ``w = 1`` is exactly the unweighted propagation, and ``w_d = 0`` cuts every path from
    domain d's items into user nodes, so user outputs no longer depend on domain d's item embeddings. ``w``
    may be a traced (learnable) array.

    Isolated nodes (degree 0) receive no messages: their layers ``e_k, k >= 1`` are 0 and their readout is
    ``e_0 / (K + 1)`` — finite, as in LightGCN.

    Args:
        graph: the joint graph from :func:`build_joint_graph`.
        embeddings: ``[n_nodes, dim]`` layer-0 embeddings, users first then each domain's items (see
            :func:`join_nodes`).
        num_layers: K >= 0, static under ``jit``.
        domain_weights: optional ``[n_domains]`` per-domain scale of item → user messages.

    Returns:
        ``[n_nodes, dim]`` layer-mean readout, same dtype as ``embeddings``.

    Raises:
        ValueError: on a shape mismatch or a negative ``num_layers``.
        TypeError: on non-floating embeddings or a non-integer ``num_layers``.

    Example:
        >>> g = build_joint_graph(2, [(np.array([0, 1]), np.array([0, 0]), 1)])
        >>> f = jax.jit(propagate, static_argnames="num_layers")
        >>> f(g, jnp.eye(3), num_layers=1).shape
        (3, 3)
    """
    if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool):
        raise TypeError(f"num_layers must be a static int, got {type(num_layers).__name__}")
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {num_layers}")
    embeddings = jnp.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != graph.n_nodes:
        raise ValueError(f"embeddings must have shape [n_nodes={graph.n_nodes}, dim], got {embeddings.shape}")
    if not jnp.issubdtype(embeddings.dtype, jnp.floating):
        raise TypeError(f"embeddings must be floating point, got dtype {embeddings.dtype}")

    scale = _edge_scale(graph, domain_weights).astype(embeddings.dtype)[:, None]  # [n_edges, 1]
    layer = embeddings
    total = embeddings
    for _ in range(num_layers):
        messages = layer[graph.senders] * scale  # [n_edges, dim]
        layer = jax.ops.segment_sum(messages, graph.receivers, num_segments=graph.n_nodes, indices_are_sorted=True)
        total = total + layer
    return total / (num_layers + 1)


def split_nodes(graph: JointGraph, table: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Splits a node table into the user table and one item table per domain.

    Args:
        graph: the joint graph.
        table: ``[n_nodes, dim]`` node table (e.g. the output of :func:`propagate`).

    Returns:
        ``(users [n_users, dim], (items_0 [n_items[0], dim], items_1 [n_items[1], dim], ...))``.

    Example:
        >>> g = build_joint_graph(2, [(np.array([0]), np.array([1]), 3)])
        >>> u, (i0,) = split_nodes(g, jnp.zeros((5, 8)))
        >>> u.shape, i0.shape
        ((2, 8), (3, 8))
    """
    if table.ndim < 1 or table.shape[0] != graph.n_nodes:
        raise ValueError(f"table must have leading axis n_nodes={graph.n_nodes}, got shape {table.shape}")
    users = table[: graph.n_users]
    items = tuple(table[off : off + n] for off, n in zip(graph.item_offsets, graph.n_items, strict=True))
    return users, items


def join_nodes(graph: JointGraph, users: jax.Array, items: Sequence[jax.Array]) -> jax.Array:
    """Concatenates a user table and per-domain item tables into one node table (inverse of split_nodes).

    Args:
        graph: the joint graph.
        users: ``[n_users, dim]``.
        items: one ``[n_items[d], dim]`` table per domain.

    Returns:
        ``[n_nodes, dim]`` in the graph's node layout.

    Example:
        >>> g = build_joint_graph(2, [(np.array([0]), np.array([1]), 3)])
        >>> join_nodes(g, jnp.zeros((2, 4)), [jnp.ones((3, 4))]).shape
        (5, 4)
    """
    if len(items) != graph.n_domains:
        raise ValueError(f"expected {graph.n_domains} item tables (one per domain), got {len(items)}")
    if users.ndim != 2 or users.shape[0] != graph.n_users:
        raise ValueError(f"users must have shape [n_users={graph.n_users}, dim], got {users.shape}")
    for d, (t, n) in enumerate(zip(items, graph.n_items, strict=True)):
        if t.ndim != 2 or t.shape[0] != n or t.shape[1] != users.shape[1]:
            raise ValueError(f"items[{d}] must have shape [n_items={n}, dim={users.shape[1]}], got {t.shape}")
    return jnp.concatenate([users, *items], axis=0)


def item_node_ids(graph: JointGraph, domain: int, items: jax.Array) -> jax.Array:
    """Maps per-domain item ids to node ids of the joint graph.

    Args:
        graph: the joint graph.
        domain: static domain index.
        items: ``int[...]`` item ids of that domain.

    Returns:
        ``int[...]`` node ids ``items + graph.item_offsets[domain]``.
    """
    if not 0 <= domain < graph.n_domains:
        raise ValueError(f"domain must lie in [0, {graph.n_domains}), got {domain}")
    return jnp.asarray(items) + graph.item_offsets[domain]

"""Host-side batching: negative sampling, fixed-shape padded batches, multi-domain batches, device sharding.

Every batch is a dict of numpy arrays with one leading batch axis of a *fixed* size (the last batch of an epoch
is padded and carries ``mask = False`` on padded rows), so a jitted train step compiles once.

Shapes: ``users int32 [B]``, ``items int32 [B]`` (the positive), ``negatives int32 [B, n_neg]``,
``mask bool [B]``. After :func:`shard`: ``[n_devices, B // n_devices, ...]``.

Example:
  >>> rng = np.random.default_rng(0)
  >>> for batch in iterate_batches(ds.interactions("video", "train"), 4096, rng=rng,
  ...                              n_items=ds.n_items("video"), n_negatives=1, seen=ds.seen("video")):
  ...   state, metrics = step(state, shard(batch, jax.local_device_count()))
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from jaxrec.data import CSR, DataError, Interactions

Batch = dict  # str -> np.ndarray with a leading batch axis


class NegativeSampler:
    """Draws negative items uniformly or ∝ popularity^alpha, optionally never a user's seen item.

    Vectorized: draws all candidates at once, rejects collisions with the seen set (a sorted key lookup, no dense
    mask) and redraws only those, up to ``max_rounds`` times.

    Args:
      n_items: item id space ``[0, n_items)``.
      alpha: 0 for uniform; > 0 samples ∝ ``(count + 1) ** alpha`` (needs ``item_counts``).
      item_counts: ``[n_items]`` interaction counts (e.g. ``dataset.item_popularity(domain)``).
      seen: per-user seen items (CSR over users) to exclude; None to allow any item.
      max_rounds: redraw rounds before giving up with an error (a user who has seen nearly every item).
    """

    def __init__(
        self,
        n_items: int,
        *,
        alpha: float = 0.0,
        item_counts: np.ndarray | None = None,
        seen: CSR | None = None,
        max_rounds: int = 50,
    ):
        if n_items < 1:
            raise DataError(f"NegativeSampler: n_items={n_items} must be >= 1")
        if alpha < 0:
            raise DataError(f"NegativeSampler: alpha={alpha} must be >= 0")
        self.n_items = int(n_items)
        self.max_rounds = max_rounds
        self._cdf = None
        if alpha > 0:
            if item_counts is None or np.shape(item_counts) != (n_items,):
                raise DataError(
                    f"NegativeSampler: alpha={alpha} needs item_counts of shape ({n_items},), got "
                    f"{None if item_counts is None else np.shape(item_counts)}"
                )
            w = (np.asarray(item_counts, np.float64) + 1.0) ** alpha
            self._cdf = np.cumsum(w / w.sum())
            self._cdf[-1] = 1.0
        self._keys = None
        if seen is not None:
            rows = np.repeat(np.arange(seen.n_rows, dtype=np.int64), seen.lengths)
            self._keys = rows * self.n_items + seen.indices  # sorted: rows ascending, items sorted per row
            full = seen.lengths >= self.n_items
            if full.any():
                raise DataError(
                    f"NegativeSampler: user {int(np.flatnonzero(full)[0])} has seen all {n_items} items; "
                    f"no negative can be drawn"
                )

    def _draw(self, rng: np.random.Generator, shape) -> np.ndarray:
        if self._cdf is None:
            return rng.integers(0, self.n_items, size=shape, dtype=np.int64)
        return np.minimum(np.searchsorted(self._cdf, rng.random(shape), side="right"), self.n_items - 1)

    def _is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self._keys is None or self._keys.size == 0:
            return np.zeros(items.shape, bool)
        q = users.astype(np.int64) * self.n_items + items
        pos = np.minimum(np.searchsorted(self._keys, q), self._keys.size - 1)
        return self._keys[pos] == q

    def __call__(self, rng: np.random.Generator, users: np.ndarray, n: int = 1) -> np.ndarray:
        """``int32 [len(users), n]`` negatives for ``users``."""
        users = np.asarray(users)
        neg = self._draw(rng, (users.shape[0], n))
        if self._keys is not None:
            u = np.broadcast_to(users[:, None], neg.shape)
            bad = self._is_seen(u, neg)
            for _ in range(self.max_rounds):
                if not bad.any():
                    break
                neg[bad] = self._draw(rng, int(bad.sum()))
                bad[bad] = self._is_seen(u[bad], neg[bad])
            else:
                if bad.any():
                    raise DataError(
                        f"NegativeSampler: could not draw unseen negatives for {int(bad.sum())} slots in "
                        f"{self.max_rounds} rounds (users who have seen almost every item?)"
                    )
        return neg.astype(np.int32)


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[0] == size:
        return a
    pad = np.zeros((size - a.shape[0],) + a.shape[1:], a.dtype)
    return np.concatenate([a, pad])


def iterate_batches(
    inter: Interactions,
    batch_size: int,
    *,
    rng: np.random.Generator,
    shuffle: bool = True,
    drop_remainder: bool = False,
    n_items: int | None = None,
    n_negatives: int = 0,
    sampler: NegativeSampler | None = None,
    seen: CSR | None = None,
    alpha: float = 0.0,
) -> Iterator[Batch]:
    """One epoch of fixed-size batches over ``inter`` (shuffled with ``rng`` unless ``shuffle=False``).

    The last batch is padded to ``batch_size`` with ``mask=False`` rows (ids 0) unless ``drop_remainder``.
    With ``n_negatives > 0`` each batch carries ``negatives [B, n_negatives]`` from ``sampler`` (or a
    :class:`NegativeSampler` built from ``n_items``, ``seen`` and ``alpha``). Ratings, when present, come as
    ``ratings [B]``.

    Args:
      inter: the interactions to batch.
      batch_size: rows per batch ``B``.
      rng: the shuffle and the negatives.
      shuffle: shuffle the rows (else their stored order).
      drop_remainder: drop the last, incomplete batch instead of padding it.
      n_items: size of the item catalogue, for the default sampler.
      n_negatives: negatives per row (0: none).
      sampler: the negative sampler (default: one built from ``n_items``, ``seen`` and ``alpha``).
      seen: items never drawn as a user's negatives (``CSR`` over users).
      alpha: popularity exponent of the default sampler (0: uniform).

    Returns:
      An iterator of batches ``{"users" [B], "items" [B], "mask" [B]}`` (plus ``"negatives" [B, n_negatives]`` and
      ``"ratings" [B]`` when present) of numpy arrays.
    """
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be >= 1")
    if n_negatives and sampler is None:
        if n_items is None:
            raise DataError("iterate_batches: n_negatives > 0 needs n_items (or a sampler)")
        sampler = NegativeSampler(
            n_items, alpha=alpha, seen=seen, item_counts=np.bincount(inter.items, minlength=n_items) if alpha else None
        )
    n = inter.size
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for lo in range(0, stop, batch_size):
        idx = order[lo : lo + batch_size]
        batch = {
            "users": _pad_to(inter.users[idx], batch_size),
            "items": _pad_to(inter.items[idx], batch_size),
            "mask": _pad_to(np.ones(idx.shape[0], bool), batch_size),
        }
        if inter.ratings is not None:
            batch["ratings"] = _pad_to(inter.ratings[idx], batch_size)
        if n_negatives:
            batch["negatives"] = _pad_to(sampler(rng, inter.users[idx], n_negatives), batch_size)
        yield batch


def multi_domain_batches(
    inters: Mapping[str, Interactions],
    batch_sizes: Mapping[str, int],
    *,
    rng: np.random.Generator,
    n_items: Mapping[str, int] | None = None,
    n_negatives: int = 0,
    samplers: Mapping[str, NegativeSampler] | None = None,
    steps: int | None = None,
) -> Iterator[dict[str, Batch]]:
    """Joint batches holding every domain at once: ``{domain: batch}`` with per-domain batch sizes.

    An epoch is ``steps`` batches (default: enough for the largest domain, ``ceil(n_d / B_d)`` maximised over
    domains); a domain restarts a fresh shuffle when exhausted, so every step sees every domain. The last batch
    of each pass over a domain is padded (``mask=False`` rows). Deterministic given ``rng``.

    Args:
      inters: ``{domain: interactions}``.
      batch_sizes: ``{domain: B_d}``.
      rng: the shuffles and the negatives.
      n_items: ``{domain: catalogue size}``, for the default samplers.
      n_negatives: negatives per row (0: none).
      samplers: ``{domain: sampler}`` (default: uniform samplers over ``n_items``).
      steps: batches per epoch (default: enough for the largest domain).

    Returns:
      An iterator of ``{domain: batch}``, each batch as from :func:`iterate_batches`.
    """
    names = list(inters)
    if set(batch_sizes) != set(names):
        raise DataError(f"batch_sizes has domains {sorted(batch_sizes)}, interactions have {sorted(names)}")
    for name in names:
        if inters[name].size == 0:
            raise DataError(f"multi_domain_batches: domain {name!r} has no interactions")
    samplers = dict(samplers or {})
    if n_negatives:
        for name in names:
            if name not in samplers:
                if n_items is None or name not in n_items:
                    raise DataError(f"multi_domain_batches: n_negatives > 0 needs n_items[{name!r}] or a sampler")
                samplers[name] = NegativeSampler(n_items[name])
    if steps is None:
        steps = max(-(-inters[n].size // batch_sizes[n]) for n in names)

    def _endless(name):
        while True:
            yield from iterate_batches(
                inters[name], batch_sizes[name], rng=rng, n_negatives=n_negatives, sampler=samplers.get(name)
            )

    streams = {name: _endless(name) for name in names}
    for _ in range(steps):
        yield {name: next(streams[name]) for name in names}


def shard(batch, n_devices: int):
    """Reshapes every array's leading axis ``[B, ...]`` to ``[n_devices, B // n_devices, ...]`` (for pmap).

    Works on nested dicts. Raises DataError naming the array and sizes when ``B`` does not divide.

    Args:
      batch: an array or a nested dict of arrays, each ``[B, ...]``.
      n_devices: the number of devices; must divide ``B``.

    Returns:
      The same structure with every array ``[n_devices, B // n_devices, ...]``.
    """

    def _one(path, a):
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] % n_devices:
            raise DataError(
                f"shard: array {path!r} with shape {a.shape} has a leading axis that does not divide into "
                f"{n_devices} devices; choose a batch size that is a multiple of {n_devices}"
            )
        return a.reshape((n_devices, a.shape[0] // n_devices) + a.shape[1:])

    def _walk(prefix, tree):
        if isinstance(tree, Mapping):
            return {k: _walk(f"{prefix}/{k}" if prefix else k, v) for k, v in tree.items()}
        return _one(prefix, tree)

    if n_devices < 1:
        raise DataError(f"shard: n_devices={n_devices} must be >= 1")
    return _walk("", batch)

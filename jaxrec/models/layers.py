"""Building blocks shared by the modules of `jaxrec.models`: activations, initializers, argument and input
checks, the domain index, and `MLP`.

Everything here is public within the package (the sibling modules import it); `jaxrec.models` re-exports
`ACTIVATIONS`, `DEFAULT_EMBEDDING_INIT` and `MLP`.

Axis conventions: ``batch`` (B) rows of a batch; ``dim`` (D) width of a representation, ``d_in`` of an input;
``domains`` (K) the number of domains.

Domain index: a module that takes ``domain`` accepts one of

* a Python ``int`` in ``[0, K)`` — *static*: every row belongs to that domain; the module returns ``[B, ...]``;
* an integer array ``[B]`` (or a 0-d integer array) — *per row*; returns ``[B, ...]``, row ``b`` from domain
  ``domain[b]``. Values are not checked inside ``jit``; a value outside ``[0, K)`` gives an all-zero row;
* ``None`` — every domain's output, stacked on axis 1: ``[B, K, ...]``.

`parse_domain` normalizes such an index and `select_domain` applies it to every domain's output ``[B, K, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
#: An activation: a name in `ACTIVATIONS` or a callable ``Array -> Array``.
Activation = str | Callable[[Array], Array]

#: Activation functions accepted by name.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "identity": lambda x: x,
}

#: Default initializer of ID embedding tables: N(0, 0.1²), as is usual for collaborative-filtering embeddings
#: (e.g. LightGCN); the expected squared norm of a row is 0.01·dim.
DEFAULT_EMBEDDING_INIT = nn.initializers.normal(stddev=0.1)


def resolve_activation(activation: Activation) -> Callable[[Array], Array]:
    """The function for ``activation`` (a callable is returned as is).

    Raises:
      ValueError: for a name not in `ACTIVATIONS`, listing the valid names.
    """
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid names: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


def check_choice(field: str, value: Any, valid: Sequence[str]) -> None:
    """Raises ``ValueError`` (listing ``valid``, sorted) unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ValueError(f"unknown {field} {value!r}; valid: {sorted(valid)}")


def check_features(field: str, features: Sequence[int], *, allow_empty: bool = False) -> None:
    """Raises ``ValueError`` unless ``features`` is a sequence of positive ints (non-empty unless ``allow_empty``)."""
    widths = tuple(features)
    if (not widths and not allow_empty) or any(
        not isinstance(w, (int, np.integer)) or isinstance(w, bool) or w < 1 for w in widths
    ):
        raise ValueError(
            f"{field} must be a {'' if allow_empty else 'non-empty '}sequence of positive ints, got {features!r}"
        )


def check_rate(field: str, rate: float) -> None:
    """Raises ``ValueError`` unless ``0 <= rate < 1`` (a dropout rate)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{field} must be in [0, 1), got {rate!r}")


def check_float(x: Array, name: str) -> None:
    """Raises ``TypeError`` (quoting dtype and shape) unless ``x`` is a floating array."""
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {jnp.asarray(x).dtype} (shape {jnp.shape(x)})")


def check_int(x: Array, name: str) -> None:
    """Raises ``TypeError`` (quoting dtype and shape) unless ``x`` is an integer array."""
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {jnp.asarray(x).dtype} (shape {jnp.shape(x)})")


def check_rank(x: Array, rank: int, name: str, layout: str) -> None:
    """Raises ``ValueError`` quoting ``layout`` (e.g. ``"[batch, d_in]"``) and the shape unless ``x`` has ``rank``."""
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name} must be {layout} (rank {rank}), got shape {jnp.shape(x)}")


def check_float_rank(x: Array, rank: int, name: str, layout: str) -> None:
    """`check_float`, then `check_rank`: ``x`` must be a floating array of ``rank`` (laid out as ``layout``)."""
    check_float(x, name)
    check_rank(x, rank, name, layout)


def check_tower(module: nn.Module, *fields: str, allow_empty: bool = False) -> None:
    """Checks the `MLP` options of ``module``: the widths in each of ``fields``, ``activation``, ``dropout_rate``.

    Args:
      module: a module with ``activation`` and ``dropout_rate`` attributes.
      *fields: names of its attributes holding layer widths, checked in order by `check_features`.
      allow_empty: whether those widths may be empty.

    Raises:
      ValueError: for widths that are not positive ints, an unknown activation, or a rate outside ``[0, 1)``.
    """
    for field in fields:
        check_features(field, getattr(module, field), allow_empty=allow_empty)
    resolve_activation(module.activation)
    check_rate("dropout_rate", module.dropout_rate)


def parse_domain(domain: Any, num_domains: int, batch: int) -> None | int | Array:
    """Normalizes a domain index (see the module docstring) for ``num_domains`` K and ``batch`` rows.

    Returns:
      ``None``, a static ``int`` in ``[0, K)``, or an int32 array ``[batch]``.

    Raises:
      TypeError: for a bool or a non-integer array.
      ValueError: for an int, or a concrete numpy array, outside ``[0, K)``, or an array of another shape.
    """
    if domain is None:
        return None
    if isinstance(domain, (bool, np.bool_)):
        raise TypeError(f"domain must be an int or an integer array, got {domain!r}")
    if isinstance(domain, (int, np.integer)):
        if not 0 <= domain < num_domains:
            raise ValueError(f"domain {domain} out of range [0, {num_domains})")
        return int(domain)
    check_int(domain, "domain")
    if isinstance(domain, np.ndarray) and domain.size and (domain.min() < 0 or domain.max() >= num_domains):
        raise ValueError(f"domain values must lie in [0, {num_domains}), got min {domain.min()} max {domain.max()}")
    domain = jnp.asarray(domain, jnp.int32)
    if domain.ndim == 0:
        domain = jnp.broadcast_to(domain, (batch,))
    if domain.shape != (batch,):
        raise ValueError(
            f"domain must be an int, a 0-d array or an array [batch] = ({batch},), got shape {domain.shape}"
        )
    return domain


def select_domain(stacked: Array, domain: None | int | Array) -> Array:
    """Picks each row's domain from ``stacked`` [B, K, ...] (see `parse_domain`)."""
    if domain is None:
        return stacked
    if isinstance(domain, int):
        return stacked[:, domain]
    hit = domain[:, None] == jnp.arange(stacked.shape[1])  # [B, K]
    hit = hit.reshape(hit.shape + (1,) * (stacked.ndim - 2))
    return jnp.sum(jnp.where(hit, stacked, 0), axis=1)


class MLP(nn.Module):
    """Embedding tower: ``Dense → [LayerNorm] → activation → [Dropout]`` per hidden layer, then a Dense.

    Attributes:
      features: widths of the Dense layers; the last is the output width.
      activation: name in `ACTIVATIONS` or a callable.
      dropout_rate: dropout after each activation (rng stream ``"dropout"``).
      use_layer_norm: LayerNorm before each activation.
      activate_final: also normalize/activate/drop out the last layer's output.

    Parameters are named ``dense_{i}`` (and ``norm_{i}``).

    Example:
      >>> mlp = MLP((16, 8))
      >>> params = mlp.init(jax.random.key(0), jnp.ones((4, 5)))
      >>> mlp.apply(params, jnp.ones((4, 5))).shape
      (4, 8)
    """

    features: Sequence[int] = (64, 64)
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    use_layer_norm: bool = False
    activate_final: bool = False

    def __post_init__(self):
        check_tower(self, "features")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
        """Maps ``x`` [..., d_in] to [..., features[-1]]."""
        check_float(x, "x")
        if jnp.ndim(x) < 1:
            raise ValueError(f"x must be [..., d_in] (rank >= 1), got shape {jnp.shape(x)}")
        act = resolve_activation(self.activation)
        for i, width in enumerate(self.features):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if i < len(self.features) - 1 or self.activate_final:
                if self.use_layer_norm:
                    x = nn.LayerNorm(name=f"norm_{i}")(x)
                x = act(x)
                if self.dropout_rate > 0:
                    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return x

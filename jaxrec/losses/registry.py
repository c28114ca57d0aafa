"""The one registry of discrepancy terms: name → function, and :func:`get_discrepancy` to bind options.

Every registered function has the common signature

    D(hs, ht, *, hs_mask=None, ht_mask=None, **options) -> scalar

with ``hs [n, ...]`` / ``ht [m, ...]`` the two domains' inputs and ``hs_mask [n]`` / ``ht_mask [m]`` their valid
rows. A variant of a term is the same name with other options (e.g. ``get_discrepancy("mmd", median_scales=(0.5,
1.0, 2.0))``), never a new name.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxrec.losses.adversarial import adversarial_discrepancy
from jaxrec.losses.discrepancy import coral, linear_mmd, mean_l2, mmd, sliced_wasserstein

Discrepancy = Callable[..., jax.Array]

DISCREPANCIES: Mapping[str, Discrepancy] = types.MappingProxyType(
    {
        "mean_l2": mean_l2,
        "linear_mmd": linear_mmd,
        "mmd": mmd,
        "coral": coral,
        "sliced_wasserstein": sliced_wasserstein,
        "adversarial": adversarial_discrepancy,
    }
)
"""Read-only registry ``name -> D(hs, ht, *, hs_mask=None, ht_mask=None, **options) -> scalar``.

``hs [n, dim]`` and ``ht [m, dim]`` are representations for every name except ``"adversarial"``, whose inputs are
the domain classifier's logits ``[n]`` and ``[m]`` (see :func:`adversarial_discrepancy`).
"""

_MASKS = ("hs_mask", "ht_mask")


def _options(fn: Callable) -> tuple[str, ...]:
    """The keyword-only options of a registered function (its masks excluded), in signature order."""
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _MASKS)


def get_discrepancy(name: str, **options: Any) -> Discrepancy:
    """The discrepancy registered under ``name``, with ``options`` bound.

    Args:
      name: a key of :data:`DISCREPANCIES`.
      **options: keyword options of that function (e.g. ``bandwidths``, ``median_scales``, ``median_rows``,
        ``kernel`` for ``"mmd"``; ``num_projections``, ``num_quantiles`` for ``"sliced_wasserstein"``). Their
        values are checked when the function is called.

    Returns:
      The registered function itself when no option is given, else ``functools.partial(fn, **options)``; either
      way called as ``D(hs, ht, hs_mask=..., ht_mask=...)``.

    Raises:
      ValueError: an unknown name (listing the valid names) or an option the function does not take (listing
        its options).

    Example:
      >>> get_discrepancy("coral") is coral
      True
      >>> get_discrepancy("mmd", median_scales=(0.5, 1.0, 2.0), median_rows=128).keywords
      {'median_scales': (0.5, 1.0, 2.0), 'median_rows': 128}
    """
    if not isinstance(name, str) or name not in DISCREPANCIES:
        raise ValueError(f"unknown discrepancy {name!r}; valid names: {sorted(DISCREPANCIES)}")
    fn = DISCREPANCIES[name]
    if not options:
        return fn
    valid = _options(fn)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"discrepancy {name!r} has no option(s) {unknown}; its options are {list(valid)}")
    return functools.partial(fn, **options)

"""Saved scorers: a scorer's structure as JSON (functions by a stable name), its arrays through Orbax, and a
sha256 checksum of every array, checked when it is loaded.

A scorer is ``evaluate.Scorer(users_fn, items)`` where ``users_fn`` is a ``jax.tree_util.Partial`` over one of the
functions of :func:`scorer_functions`, written into ``run.json`` by its stable name there (every recipe builds its
scorers that way):

* ``"warm_or_popularity"`` — :func:`jaxrec.methods.warm_or_popularity` (``methods.fallback_scorer``),
* ``"item_map_scores"`` — :func:`jaxrec.methods.item_map_scores` (the ``item_map`` recipe, dense solver),
* ``"item_map_factored_scores"`` — :func:`jaxrec.methods.item_map_factored_scores` (``item_map``, low-rank solver),
* ``"popularity"`` — the user side of :func:`jaxrec.evaluate.popularity_scorer`,
* ``"embedding"`` — the user side of :func:`jaxrec.evaluate.embedding_scorer`.

Encoding a scorer over any other function raises :class:`RunError`. Run directories written by jaxrec 0.1.0
(format ``jaxrec-run/1``) named the functions by their qualified names; :data:`LEGACY_NAMES` maps those to the
stable names on load. Only the functions of that table are ever loaded back, so loading a run directory cannot
run arbitrary code (no pickle, no imports by name). Array ``i`` is stored as ``a{i:05d}``.
"""

from __future__ import annotations

import pathlib
import types
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxrec import evaluate as ev
from jaxrec import methods
from jaxrec.runs.layout import RunError
from jaxrec.train.checkpoint import array_checksum

__all__ = [
    "LEGACY_NAMES",
    "SCORER_FUNCTIONS",
    "array_names",
    "decode_scorers",
    "encode_scorers",
    "load_arrays",
    "save_arrays",
    "scorer_functions",
]

#: Qualified names that format ``jaxrec-run/1`` wrote, and the stable name of the same function.
LEGACY_NAMES = {
    "jaxrec.methods:_warm_or_popularity": "warm_or_popularity",
    "jaxrec.methods:_item_map_scores": "item_map_scores",
    "jaxrec.evaluate:_ones_column": "popularity",
    "jaxrec.evaluate:_take_rows": "embedding",
}


#: The functions a saved scorer may be built on, by the stable name ``run.json`` stores.
SCORER_FUNCTIONS: Mapping[str, Callable] = types.MappingProxyType(
    {
        "warm_or_popularity": methods.warm_or_popularity,
        "item_map_scores": methods.item_map_scores,
        "item_map_factored_scores": methods.item_map_factored_scores,
        "popularity": ev.ones_column,
        "embedding": ev.take_rows,
    }
)


def scorer_functions() -> Mapping[str, Callable]:
    """The functions a saved scorer may be built on (:data:`SCORER_FUNCTIONS`), by the stable name ``run.json``
    stores: ``warm_or_popularity``, ``item_map_scores`` and ``item_map_factored_scores`` of :mod:`jaxrec.methods`,
    and ``evaluate.ones_column`` (``popularity``) and ``evaluate.take_rows`` (``embedding``)."""
    return SCORER_FUNCTIONS


def _function_name(fn) -> str:
    for name, known in scorer_functions().items():
        if fn is known:
            return name
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    raise RunError(
        f"cannot save a scorer over {where}: a saved scorer must be a jax.tree_util.Partial over one of "
        f"{sorted(scorer_functions())} (runs.scorer_functions)"
    )


def _encode(x, leaves: list) -> dict:
    if isinstance(x, jax.tree_util.Partial):
        return {
            "partial": _function_name(x.func),
            "args": [_encode(a, leaves) for a in x.args],
            "kwargs": {k: _encode(v, leaves) for k, v in x.keywords.items()},
        }
    if isinstance(x, dict):
        return {"dict": {str(k): _encode(v, leaves) for k, v in x.items()}}
    if isinstance(x, (tuple, list)):
        return {type(x).__name__: [_encode(v, leaves) for v in x]}
    if x is None:
        return {"none": None}
    if callable(x):
        raise RunError(f"cannot save a scorer holding the callable {x!r}: wrap it in jax.tree_util.Partial")
    leaves.append(np.asarray(x))
    return {"leaf": len(leaves) - 1}


def encode_scorers(scorers: Mapping[str, ev.Scorer]) -> tuple[dict, list[np.ndarray]]:
    """``({domain: {"users_fn": ..., "items": ...}}, arrays)``: the JSON structure and the arrays it points at.

    Raises:
      RunError: a scorer is not a ``Partial`` over a function of :func:`scorer_functions`.
    """
    leaves: list[np.ndarray] = []
    structure = {
        d: {"users_fn": _encode(s.users_fn, leaves), "items": _encode(s.items, leaves)} for d, s in scorers.items()
    }
    return structure, leaves


def _resolve(name: str) -> Callable:
    """The function saved under ``name`` (a stable name, or a legacy qualified name)."""
    functions = scorer_functions()
    stable = LEGACY_NAMES.get(name, name)
    if stable not in functions:
        raise RunError(
            f"unknown scorer function {name!r} in the run file; known: {sorted(functions)} (and the jaxrec-run/1 "
            f"names {sorted(LEGACY_NAMES)})"
        )
    return functions[stable]


def _decode(node: dict, leaves: list):
    kind, value = next(iter(node.items()))
    if kind == "partial":
        args = [_decode(a, leaves) for a in node["args"]]
        kwargs = {k: _decode(v, leaves) for k, v in node["kwargs"].items()}
        return jax.tree_util.Partial(_resolve(value), *args, **kwargs)
    if kind == "dict":
        return {k: _decode(v, leaves) for k, v in value.items()}
    if kind in ("tuple", "list"):
        items = [_decode(v, leaves) for v in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "none":
        return None
    if kind == "leaf":
        return leaves[value]
    raise RunError(f"unknown scorer node {kind!r}")


def decode_scorers(structure: Mapping[str, Any], leaves: list) -> dict[str, ev.Scorer]:
    """The scorers that :func:`encode_scorers` described, over the loaded ``leaves``.

    Raises:
      RunError: a function outside :func:`scorer_functions` or a malformed description.
    """
    try:
        return {d: ev.Scorer(_decode(s["users_fn"], leaves), _decode(s["items"], leaves)) for d, s in structure.items()}
    except (KeyError, IndexError, TypeError, AttributeError, StopIteration) as e:
        raise RunError(f"malformed scorer description in the run file ({type(e).__name__}: {e})") from e


def array_names(structure: Mapping[str, Any]) -> dict[int, str]:
    """``{array index: "the items of scorer 'target'"}``: what each array of a description is, for messages."""
    names: dict[int, str] = {}

    def visit(node, what):
        if isinstance(node, dict):
            if "leaf" in node and isinstance(node["leaf"], int):
                names[node["leaf"]] = what
            for v in node.values():
                visit(v, what)
        elif isinstance(node, list):
            for v in node:
                visit(v, what)

    for domain, s in structure.items():
        for part in ("users_fn", "items"):
            visit(s.get(part) if isinstance(s, dict) else None, f"the {part} of scorer {domain!r}")
    return names


def save_arrays(path: pathlib.Path, leaves: list[np.ndarray]) -> dict[str, str]:
    """Writes ``leaves`` as an Orbax checkpoint at ``path``; returns ``{"a00000": sha256, ...}``."""
    import orbax.checkpoint as ocp

    tree = {f"a{i:05d}": leaf for i, leaf in enumerate(leaves)}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(pathlib.Path(path).absolute(), tree)
    return {name: array_checksum(leaf) for name, leaf in tree.items()}


def load_arrays(path: pathlib.Path, n: int, checksums: Mapping[str, str] | None, structure: Mapping) -> list:
    """The ``n`` arrays of the Orbax checkpoint at ``path``, in order, each checked against ``checksums`` (the
    sha256 recorded when it was saved; None for runs written before checksums were recorded).

    Raises:
      RunError: an array does not match its checksum (naming the checkpoint, the array and what it is).
    """
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(pathlib.Path(path).absolute())
    names = array_names(structure)
    leaves = [tree[f"a{i:05d}"] for i in range(n)]
    for i, leaf in enumerate(leaves if checksums is not None else []):
        key = f"a{i:05d}"
        if checksums.get(key) != array_checksum(leaf):
            raise RunError(
                f"{path} is corrupt: array {key} ({names.get(i, 'unused')}) does not match the checksum recorded in "
                f"run.json when it was saved; train the run again (jaxrec train ... --overwrite)"
            )
    return [jax.numpy.asarray(leaf) for leaf in leaves]

"""Sphinx extension of the jaxrec docs: public names for re-exported objects, and the recipe defaults table.

* **Re-exported objects.** A function defined in ``jaxrec.data.loaders`` is documented once, as ``jaxrec.load_dir``;
  type hints and docstrings refer to it by the path where it is defined (or by another public path). A reference
  that Sphinx cannot resolve is imported, and if the object it names is documented under another name, it links
  there; a module that has no entry of its own links to its nearest documented parent package. Anything else
  stays unresolved, so nitpicky mode still reports it.
* **Source links** (``sphinx.ext.linkcode``): each entry links to the lines that define it in the repository.
* **``jaxrec-recipes``**: a table of every recipe in :data:`jaxrec.METHODS` with its config class and defaults,
  generated at build time so that the page always shows the registry as it is.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pathlib
import posixpath
import re
import types

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective

_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def _import(path: str):
    """The object named by a dotted path (``pkg.module.Class.attr``), or ``None``."""
    parts = path.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:  # not a module: try the shorter prefix
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def _documented(env) -> dict[int, tuple[str, str]]:
    """``{id(object): (name, objtype)}`` for every documented Python object that is not a plain scalar."""
    objects = env.get_domain("py").objects
    key = len(objects)
    cache = getattr(env, "_jaxrec_documented", None)
    if cache is None or cache[0] != key:
        table = {}
        for name, entry in objects.items():
            obj = _import(name)
            if obj is not None and not isinstance(obj, _SCALARS) and not getattr(entry, "aliased", False):
                table.setdefault(id(obj), (name, entry.objtype))
        cache = env._jaxrec_documented = (key, table)
    return cache[1]


def _defining_module(node) -> str | None:
    """The module that defines the documented object whose description holds ``node``, if any."""
    while node is not None and not isinstance(node, addnodes.desc):
        node = node.parent
    if node is None:
        return None
    signature = next(iter(node.findall(addnodes.desc_signature)), None)
    if signature is None or not signature.get("module"):
        return None
    obj = _import(f"{signature['module']}.{signature['fullname']}")
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


def drop_type_docstring(app, what, name, obj, options, lines):
    """``autodoc-process-docstring`` handler: a constant without a ``#:`` comment shows no docstring of its type."""
    doc = type(obj).__doc__
    if what in ("data", "attribute") and lines and isinstance(doc, str):
        if "\n".join(lines).strip() == inspect.cleandoc(doc).strip():
            lines.clear()


_SHARED_ENTRY = re.compile(r"^(\s+)(\w+(?:, \w+)+): (.*)$")


def split_shared_attributes(app, what, name, obj, options, lines):
    """``autodoc-process-docstring`` handler run before napoleon's: in an ``Attributes:`` section, the Google-style
    line ``a, b: text`` becomes one entry per name (napoleon would read ``a`` as the type of ``b``)."""
    section = None
    out = []
    for line in lines:
        if re.match(r"^\w[\w ]*:$", line.strip()) and not line.startswith(" " * 8):
            section = line.strip()
        match = _SHARED_ENTRY.match(line) if section == "Attributes:" else None
        if match:
            indent, names, text = match.groups()
            out += [f"{indent}{field}: {text}" for field in names.split(", ")]
        else:
            out.append(line)
    lines[:] = out


def resolve_public_name(app, env, node, contnode):
    """``missing-reference`` handler: link a reference to the object's documented public name."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    candidates = [target]
    for module in (node.get("py:module"), _defining_module(node)):
        if module:
            candidates.append(f"{module}.{target}")
    domain = env.get_domain("py")
    documented = _documented(env)
    for candidate in candidates:
        obj = _import(candidate)
        if obj is None or isinstance(obj, _SCALARS):
            continue
        if id(obj) in documented:
            name, objtype = documented[id(obj)]
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, "mod" if objtype == "module" else "obj", name, node, contnode
            )
        if isinstance(obj, types.ModuleType):
            parts = obj.__name__.split(".")
            while len(parts) > 1:
                parts.pop()
                if ".".join(parts) in domain.modules:
                    return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", ".".join(parts), node, contnode)
    return None


# Repository files that are pages of the site: links to them in included files (README, RESULTS, CONTRIBUTING,
# CHANGELOG) point to the page.
PAGES = {
    "CHANGELOG.md": "changelog",
    "CONTRIBUTING.md": "guides/contributing",
    "bench/RESULTS.md": "guides/benchmarks",
    "notebooks/README.md": "notebooks/README",
}
_LINK = re.compile(r"(\]\()([^)#\s]+)(#[^)\s]*)?(\))")


def link_pages(app, relative_path, parent_docname, content):
    """``include-read`` handler: a link to a repository file that is a page becomes a link to that page."""
    base = posixpath.join("docs", posixpath.dirname(pathlib.Path(relative_path).as_posix()))  # relative_path: to docs/

    def replace(match):
        target = match.group(2)
        if "://" in target:
            return match.group(0)
        path = posixpath.normpath(posixpath.join(base, target))
        page = PAGES.get(path)
        if page is None and path.startswith("notebooks/") and path.endswith(".ipynb"):
            page = path[: -len(".ipynb")]
        if page is None:
            return match.group(0)
        return f"{match.group(1)}/{page}{match.group(3) or ''}{match.group(4)}"

    content[0] = _LINK.sub(replace, content[0])


REPOSITORY = "https://github.com/jaxrec/jaxrec"


def source_url(domain: str, info: dict) -> str | None:
    """``linkcode_resolve``: the lines of the repository file that define a documented object, or ``None``."""
    if domain != "py" or not info.get("module"):
        return None
    obj = _import(f"{info['module']}.{info['fullname']}")
    try:
        obj = inspect.unwrap(obj)
        path = pathlib.Path(inspect.getsourcefile(obj)).resolve()
        lines, first = inspect.getsourcelines(obj)
        relative = path.relative_to(pathlib.Path(__file__).resolve().parents[2])
    except (TypeError, OSError, ValueError):  # a constant, a builtin, or a file outside the repository
        return None
    return f"{REPOSITORY}/blob/main/{relative.as_posix()}#L{first}-L{first + len(lines) - 1}"


def _default(value) -> str:
    if hasattr(value, "items"):  # FrozenDict, dict
        value = dict(value)
    return repr(value)


class RecipesDirective(SphinxDirective):
    """``jaxrec-recipes``: one row per entry of :data:`jaxrec.METHODS` (name, summary, config class, defaults)."""

    def run(self) -> list[nodes.Node]:
        from jaxrec import METHODS

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 12 30 58",
            "",
            "   * - recipe",
            "     - what it does",
            "     - config and defaults",
        ]
        for name, method in METHODS.items():
            config = method.default_config
            cls = type(config)
            fields = ", ".join(f"``{f.name}={_default(getattr(config, f.name))}``" for f in dataclasses.fields(cls))
            lines += [
                f"   * - ``{name}``",
                f"     - {method.summary}",
                f"     - :class:`~{cls.__module__}.{cls.__qualname__}`: {fields}",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="jaxrec.METHODS"), self.content_offset, container)
        return container.children


def setup(app):
    app.connect("missing-reference", resolve_public_name)
    app.connect("autodoc-process-docstring", drop_type_docstring)
    app.connect("autodoc-process-docstring", split_shared_attributes, priority=400)  # napoleon's runs at 500
    app.connect("include-read", link_pages)
    app.add_directive("jaxrec-recipes", RecipesDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

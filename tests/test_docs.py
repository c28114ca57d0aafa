"""The documentation site's sources, checked without building it (the build itself runs in ``.ci/run``).

* every name of ``jaxrec.__all__`` has an entry in the API pages (``docs/api/*.rst``), and every entry there
  names an object that exists, so a new public name without an entry, or a renamed one, fails here;
* every public function documents its arguments and return value (``Args:``/``Returns:``);
* the README sections, ``bench/RESULTS.md``, ``CONTRIBUTING.md`` and the notebooks that the guides include are
  found where the pages look for them;
* the README's "Documentation" command is the one ``.ci/run`` runs;
* ``docs/check_links.py`` (the internal link check of the built site) finds broken files and anchors.
"""

import importlib
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import jaxrec

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
API = DOCS / "api"
DEPRECATED = ("mapping", "multidomain")  # aliases that warn on import; described on the API index page
_DIRECTIVE = re.compile(
    r"^\.\. (automodule|autoclass|autoexception|autofunction|autodata|py:class|currentmodule)::"
    r"\s+(\S+)",
    re.M,
)


def _entries() -> dict[str, str]:
    """``{full dotted name: page}`` of every entry of the API pages, with ``currentmodule`` applied."""
    entries = {}
    for page in sorted(API.glob("*.rst")):
        module = None
        for directive, name in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if directive == "currentmodule":
                module = name
                continue
            if directive == "automodule":
                module = name
            full = name if directive == "automodule" or name.startswith("jaxrec.") or not module else f"{module}.{name}"
            entries[full] = page.name
    return entries


def _resolve(path: str):
    """The object a dotted path names (imports the longest module prefix, then reads attributes)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_every_public_name_has_an_api_entry():
    entries = _entries()
    documented = {id(_resolve(path)) for path in entries}
    index = (API / "index.rst").read_text(encoding="utf-8")
    missing = []
    for name in jaxrec.__all__:
        if name in DEPRECATED:
            if f"jaxrec.{name}" not in index:
                missing.append(name)
            continue
        if id(getattr(jaxrec, name)) not in documented:
            missing.append(name)
    assert not missing, (
        f"public names without an entry in docs/api/*.rst: {missing}; add an autofunction/autoclass/autodata entry "
        "(and the autosummary line) to the page of the package that defines it"
    )
    # the names jaxrec re-exports are documented under jaxrec.<name>, where users find them
    for name in jaxrec.__all__:
        if name not in DEPRECATED and not isinstance(getattr(jaxrec, name), type(jaxrec)):
            assert f"jaxrec.{name}" in entries, f"jaxrec.{name} is documented under another path"


def test_public_functions_document_arguments_and_return_value():
    """Google style, which napoleon renders in the reference: ``Args:`` (when there are any) and ``Returns:``."""
    undocumented = []
    for name in jaxrec.__all__:
        if name in DEPRECATED:
            continue
        obj = getattr(jaxrec, name)
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            if not doc:
                undocumented.append(f"{name}: no docstring")
        elif callable(obj) and not inspect.ismodule(obj):
            if inspect.signature(obj).parameters and "Args:" not in doc:
                undocumented.append(f"{name}: no Args section")
            if "Returns:" not in doc:
                undocumented.append(f"{name}: no Returns section")
    assert not undocumented, undocumented


def test_every_api_entry_names_an_existing_object():
    stale = []
    for path, page in _entries().items():
        try:
            _resolve(path)
        except (ImportError, AttributeError):
            stale.append(f"{page}: {path}")
    assert not stale, f"API entries naming nothing: {stale}"


def test_every_api_page_is_in_the_api_toctree():
    index = (API / "index.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (\w+)$", index, re.M))
    assert listed == {p.stem for p in API.glob("*.rst")} - {"index"}


def test_included_files_and_sections_exist():
    """Every ``{include}`` of the guides names an existing file, and its start/end markers are in that file."""
    includes = 0
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts or page.parent.name == "notebooks":
            continue
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```\{include\} (\S+)\n(.*?)```", text, re.S):
            includes += 1
            target = (page.parent / block[0]).resolve()
            assert target.is_file(), f"{page.relative_to(REPO)} includes {block[0]}, which does not exist"
            content = target.read_text(encoding="utf-8")
            for option, marker in re.findall(r'^:(start-after|end-before): "(.*)"$', block[1], re.M):
                assert marker in content, f"{page.relative_to(REPO)}: {option} {marker!r} not in {block[0]}"
    assert includes >= 8


def test_every_notebook_is_a_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.stem}\n" in index, f"{notebook.name} is not in the toctree of docs/index.md"


def test_readme_documentation_command_is_the_one_ci_runs():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Documentation\s+```sh\n(.*?)```", text, re.S)
    assert block, "README.md needs a 'Documentation' section whose first block is the build command"
    command = block.group(1).splitlines()[0]
    assert '".[docs]"' in command and "sphinx-build -W --keep-going -n -b html docs docs/_build/html" in command
    assert "python3 docs/check_links.py docs/_build/html" in command
    assert command in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "docs/_build/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


def _write(path: pathlib.Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")


def _check_links(root: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOCS / "check_links.py"), str(root)], capture_output=True, text=True, check=False
    )


def test_check_links_passes_a_site_whose_links_resolve(tmp_path):
    _write(
        tmp_path / "index.html",
        '<a href="api/data.html#jaxrec.load_dir">x</a><a href="#top">t</a>'
        '<p id="top"></p><a href="https://example.org/missing">e</a>'
        '<img src="_static/logo.png">',
    )
    _write(tmp_path / "api" / "data.html", '<dt id="jaxrec.load_dir"></dt><a href="../index.html">up</a>')
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "logo.png").write_bytes(b"png")
    result = _check_links(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "4 internal links checked, 0 broken" in result.stdout  # the external link is not counted


@pytest.mark.parametrize(
    ("link", "why"),
    [("api/gone.html", "missing file"), ("api/data.html#jaxrec.gone", "missing anchor"), ("#nowhere", "same page")],
)
def test_check_links_reports_a_broken_link(tmp_path, link, why):
    _write(tmp_path / "index.html", f'<a href="{link}">{why}</a>')
    _write(tmp_path / "api" / "data.html", '<dt id="jaxrec.load_dir"></dt>')
    result = _check_links(tmp_path)
    assert result.returncode == 1
    assert f"index.html: broken link {link}" in result.stdout

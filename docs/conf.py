"""Sphinx configuration of the jaxrec documentation site (built by the command in README.md, "Documentation")."""

import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "docs" / "_ext")]
# The notebook kernels import this checkout too, run at the notebooks' small size, and run with this interpreter.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ["JAXREC_NOTEBOOK_SMALL"] = "1"
# tqdm's notice that Jupyter widgets are missing (the bars print as text) would open every rendered notebook.
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"]))
os.environ["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])

# The notebooks are rendered from a fresh copy of notebooks/ (docs/notebooks/, not tracked); their stored files
# stay without outputs. Notebook 04 reads the shared Amazon data when it is beside the repository.
shutil.rmtree(ROOT / "docs" / "notebooks", ignore_errors=True)
shutil.copytree(ROOT / "notebooks", ROOT / "docs" / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
os.environ.setdefault("JAXREC_DATA", str(ROOT.parent / "shared" / "data" / "amazon-game-video"))

from jaxrec_docs import source_url as linkcode_resolve  # noqa: E402, F401  ([source] links to the repository)

import jaxrec  # noqa: E402

project = "jaxrec"
author = "jaxrec developers"
copyright = "the jaxrec developers"
release = version = jaxrec.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.linkcode",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "jaxrec_docs",  # docs/_ext: public names for re-exported objects, the recipe defaults table
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# API reference: Google-style docstrings, type hints in the argument descriptions, every reference resolved.
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
autodoc_inherit_docstrings = False  # a Flax module's setup() does not repeat nn.Module's docstring
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" are fields of the class entry, not second entries beside :members:
always_document_param_types = False
typehints_use_signature = False
typehints_document_rtype = True
nitpicky = True
# No intersphinx (the build runs offline): types of other libraries are shown as text, not linked.
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|numpy|np|jnp|flax|nn|optax|orbax|chex|pandas|pd|matplotlib|argparse)(\..*)?"),
    (r"py:.*", r"typing\.\w+|Ellipsis|Mesh"),
    (r"py:.*", r"(pathlib|collections|os|concurrent|contextlib|dataclasses|enum|types)\..*"),
]

# Notebooks: executed at build time at their small size on the CPU, outputs kept only in the built site.
nb_execution_mode = "cache"  # executed on a fresh build; reused from docs/_build/.jupyter_cache after
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "jaxrec"
html_theme_options = {
    "repository_url": "https://github.com/jaxrec/jaxrec",
    "use_repository_button": True,
    "path_to_docs": "docs",
    "show_toc_level": 2,
}

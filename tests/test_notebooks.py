"""The Colab notebooks of ``notebooks/``: each runs top to bottom at the small size, and is stored without outputs.

Execution: every notebook runs in a fresh ``python3`` kernel (nbclient) from a temporary copy of ``notebooks/``
(the kernel's working directory), with ``JAXREC_NOTEBOOK_SMALL=1`` and ``MPLBACKEND=Agg``; outputs stay in
memory, nothing is written back into the repository. A cell that raises fails the test with the cell and its
traceback. The kernel does not inherit the 8 fake CPU devices that ``conftest.py`` gives this process: each
notebook sees what a fresh Python would (``05_multi_device`` asks for its own 8 devices in its first cell).

``04_real_data_cold_start`` runs twice: on ``../shared/data/amazon-game-video`` (skipped when absent), and with
no dataset reachable, where it must fall back to synthetic data written in the same directory format.

Executing needs the ``notebooks`` extra (nbclient, nbformat, ipykernel, matplotlib); without it those tests skip.
"""

import json
import os
import pathlib
import re
import shutil
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
AMAZON = REPO.parent / "shared" / "data" / "amazon-game-video"
EXPECTED = (
    "01_quickstart.ipynb",
    "02_domain_adaptation.ipynb",
    "03_topk_kernels.ipynb",
    "04_real_data_cold_start.ipynb",
    "05_multi_device.ipynb",
)
REAL_DATA_NOTEBOOK = "04_real_data_cold_start.ipynb"
MAX_BYTES = 100_000
CELL_TIMEOUT_S = 300
_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def _committed() -> list[pathlib.Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _cases():
    cases = []
    for path in _committed():
        if path.name == REAL_DATA_NOTEBOOK:
            cases.append(
                pytest.param(path.name, "shared", id=f"{path.stem}-shared-data", marks=pytest.mark.shared_data)
            )
            cases.append(pytest.param(path.name, "missing", id=f"{path.stem}-synthetic-fallback"))
        else:
            cases.append(pytest.param(path.name, None, id=path.stem))
    return cases


def _require_execution_tools():
    """Skips (with the reason) when something needed to execute a notebook is missing."""
    hint = 'executing the notebooks needs the notebooks extra: pip install -e ".[notebooks]"'
    for module in ("nbformat", "nbclient", "ipykernel", "matplotlib"):
        pytest.importorskip(module, reason=f"{module} is not installed; {hint}")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip(f"no 'python3' Jupyter kernel is installed; {hint}")


def _kernel_env(data: str | None, workdir: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    # files a notebook writes to its temporary directory (04's synthetic fallback data) land in pytest's tmp_path
    scratch = workdir.parent / "tmp"
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    flags = _DEVICE_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env["JAXREC_NOTEBOOK_SMALL"] = "1"
    env["MPLBACKEND"] = "Agg"
    # the kernelspec runs "python": make that this interpreter, the one with jaxrec installed
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("JAXREC_DATA", None)
    if data == "shared":
        env["JAXREC_DATA"] = str(AMAZON)
    elif data == "missing":
        env["JAXREC_DATA"] = str(workdir.parent / "no-such-dataset")
    return env


def test_the_five_notebooks_are_there():
    assert sorted(p.name for p in _committed()) == sorted(EXPECTED)


@pytest.mark.parametrize("path", _committed(), ids=lambda p: p.stem)
def test_committed_notebook_is_small_and_has_no_outputs(path):
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size:,} bytes (limit {MAX_BYTES:,}); strip its outputs"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    for number, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell["outputs"] == [], f"{path.name}, cell {number}: outputs are stored; strip them"
        assert cell["execution_count"] is None, f"{path.name}, cell {number}: execution_count is set"
    source = "\n".join("".join(c["source"]) for c in code)
    # Colab-ready: a guarded install cell; CI-ready: the small-size switch
    assert 'if "google.colab" in sys.modules:' in source and "%pip install" in source
    assert 'os.environ.get("JAXREC_NOTEBOOK_SMALL", "0") == "1"' in source


@pytest.mark.slow
@pytest.mark.parametrize(("name", "data"), _cases())
def test_notebook_runs_top_to_bottom(name, data, tmp_path):
    _require_execution_tools()
    if data == "shared" and not (AMAZON / "game" / "train.txt").exists():
        pytest.skip(f"shared benchmark data not found at {AMAZON}")
    import nbclient
    import nbformat

    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = nbformat.read(workdir / name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=_kernel_env(data, workdir))

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: {[(e.ename, e.evalue) for e in errors]}"
    executed = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert all(isinstance(n, int) for n in executed), f"{name}: some code cells did not run ({executed})"
    if name == REAL_DATA_NOTEBOOK:
        printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        expected = "real data from" if data == "shared" else "synthetic data from"
        assert expected in printed, f"{name} with data={data!r} did not report {expected!r}"
    committed = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    assert all(c.get("outputs", []) == [] for c in committed["cells"]), "the repository copy was modified"

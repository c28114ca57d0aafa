"""The public surface: every name in ``jaxrec.__all__`` imports, and the command line answers."""

import subprocess
import sys

import jaxrec


def test_every_public_name_imports():
    assert len(set(jaxrec.__all__)) == len(jaxrec.__all__), "duplicate names in __all__"
    for name in jaxrec.__all__:
        assert getattr(jaxrec, name) is not None, name
    namespace = {}
    exec("from jaxrec import *", namespace)
    assert set(jaxrec.__all__) <= set(namespace)


def test_entry_points_help():
    for args in (["--help"], ["demo", "--help"], ["data", "--help"]):
        out = subprocess.run([sys.executable, "-m", "jaxrec", *args], capture_output=True, text=True, check=True)
        assert "usage: jaxrec" in out.stdout


def test_cli_data_error_is_clear(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxrec", "data", "--data", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "dataset directory not found" in out.stderr

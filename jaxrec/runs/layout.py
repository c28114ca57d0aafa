"""What a run directory holds, the states it can be in, and how jaxrec writes into it without losing anything.

A run directory is one of:

* **finished** — it holds ``run.json`` (written last, when the trained scorers are saved);
* **unfinished** — it holds ``training.json`` and no ``run.json``: training started (and may have been
  interrupted); ``train_checkpoints/`` holds the training checkpoints that ``jaxrec train --resume`` continues
  from;
* **empty** or **absent** — jaxrec may create a run there;
* **foreign** — anything else (a file, a folder of the user's own files): jaxrec never writes there.

Every file is written to a temporary name in the same folder (``.jaxrec-tmp-...``) and renamed into place
(``os.replace``), so an interrupt leaves either the old file or the new one, never half of one. Replacing a run
(``--overwrite``) deletes only the entries jaxrec writes (:data:`RUN_ENTRIES`); other files stay.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
from collections.abc import Iterator

__all__ = [
    "CHECKPOINT_DIR",
    "DIAGNOSTICS_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "PLOTS_DIR",
    "PLOT_FILES",
    "RUN_ENTRIES",
    "RUN_FILE",
    "RunError",
    "TRAINING_FILE",
    "TRAIN_CHECKPOINTS",
    "check_out",
    "clear_run",
    "remove",
    "remove_leftovers",
    "remove_training",
    "replacing",
    "run_state",
    "write_text",
]

RUN_FILE = "run.json"
TRAINING_FILE = "training.json"
CHECKPOINT_DIR = "checkpoint"
TRAIN_CHECKPOINTS = "train_checkpoints"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
DIAGNOSTICS_FILE = "diagnostics.json"
PLOTS_DIR = "plots"
#: The figures ``jaxrec train --plots`` and ``jaxrec diagnose --plots`` write into ``plots/``.
PLOT_FILES = ("training_curves.png", "discrepancy.png", "user_embeddings.png", "domain_gaps.png")
#: Every entry jaxrec writes into a run directory (``--overwrite`` deletes these, and only these).
RUN_ENTRIES = (
    RUN_FILE,
    TRAINING_FILE,
    CHECKPOINT_DIR,
    TRAIN_CHECKPOINTS,
    HISTORY_FILE,
    METRICS_FILE,
    DIAGNOSTICS_FILE,
    PLOTS_DIR,
)
_TMP = ".jaxrec-tmp-"
_ORBAX_TMP = ".orbax-checkpoint-tmp"


class RunError(ValueError):
    """A run directory that is missing, not a jaxrec run, unfinished, corrupt, or does not match the dataset it is
    evaluated on; or a run directory that would overwrite something."""


# ----------------------------------------------------------------------------------------------------------------
# Writing: a temporary name, then a rename
# ----------------------------------------------------------------------------------------------------------------


def remove(path: str | pathlib.Path) -> None:
    """Deletes ``path`` (a file, or a folder with everything in it) if it exists."""
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def replacing(path: str | pathlib.Path) -> Iterator[pathlib.Path]:
    """A temporary path next to ``path`` (same suffix) to write; renamed onto ``path`` when the block succeeds.

    On an exception (an interrupt included) the temporary file is removed and ``path`` is untouched. A directory
    written at the temporary path replaces ``path`` only if ``path`` does not exist.

    Example:
      >>> with replacing(run_dir / "plots" / "curves.png") as tmp:  # doctest: +SKIP
      ...     figure.savefig(tmp)
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP}{os.getpid()}-{path.name}")
    remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_text(path: str | pathlib.Path, text: str) -> pathlib.Path:
    """Writes ``text`` to ``path`` through :func:`replacing` (flushed to disk before the rename)."""
    with replacing(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return pathlib.Path(path)


def remove_leftovers(run_dir: str | pathlib.Path) -> None:
    """Removes the temporary entries an interrupted write left in ``run_dir`` (and in its ``plots/``)."""
    run_dir = pathlib.Path(run_dir)
    for folder in (run_dir, run_dir / PLOTS_DIR):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.startswith(_TMP) or _ORBAX_TMP in entry.name:
                    remove(entry)


# ----------------------------------------------------------------------------------------------------------------
# States
# ----------------------------------------------------------------------------------------------------------------


def _is_marker(path: pathlib.Path) -> bool:
    """``path`` is a JSON object with a ``"format"`` jaxrec writes."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith("jaxrec-run/")


def run_state(path: str | pathlib.Path) -> str:
    """``"absent"``, ``"empty"``, ``"finished"``, ``"unfinished"``, ``"file"`` (not a folder) or ``"foreign"``.

    ``run.json`` makes a run finished even when ``training.json`` is still there (an interrupt between writing
    the one and removing the other).
    """
    path = pathlib.Path(path)
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "file"
    if (path / RUN_FILE).is_file() and _is_marker(path / RUN_FILE):
        return "finished"
    if (path / TRAINING_FILE).is_file() and _is_marker(path / TRAINING_FILE):
        return "unfinished"
    entries = [e for e in path.iterdir() if not e.name.startswith(_TMP)]
    return "empty" if not entries else "foreign"


def check_out(out: str | pathlib.Path, *, resume: bool = False, overwrite: bool = False) -> str:
    """Checks that a run may be written to ``out``, before any work; returns :func:`run_state`.

    Allowed: a new or empty folder; with ``overwrite``, a jaxrec run (finished or not); with ``resume``, an
    unfinished run. Never a file, nor a folder holding anything but a jaxrec run.

    Raises:
      RunError: naming ``out``, what it holds and what to do instead.
    """
    out = pathlib.Path(out)
    state = run_state(out)
    if state == "file":
        raise RunError(f"--out {out} is a file; a run directory must be a new or empty folder")
    if state == "foreign":
        names = sorted(e.name for e in out.iterdir())
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")
        raise RunError(
            f"--out {out} exists and is not a jaxrec run (it holds {shown}); jaxrec never writes into a folder it "
            f"did not create: choose a new or empty folder"
        )
    if state == "finished" and not overwrite:
        if resume:
            raise RunError(
                f"{out} holds a finished run: nothing to resume (`jaxrec evaluate --run {out}` evaluates it again; "
                f"--overwrite trains it again)"
            )
        raise RunError(f"{out} already holds a run; choose another --out, or pass --overwrite to replace it")
    if state == "unfinished" and not (resume or overwrite):
        raise RunError(
            f"{out} holds a run that did not finish; continue it with --resume, or pass --overwrite to start it again"
        )
    if state in ("absent", "empty") and resume:
        raise RunError(f"--resume: {out} holds no run to resume")
    if state == "absent":
        parent = out.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise RunError(f"cannot create --out {out}: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunError(f"cannot create --out {out}: {parent} is not writable")
    elif not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"cannot write into --out {out}: it is not writable")
    return state


def clear_run(run_dir: str | pathlib.Path) -> None:
    """Deletes what jaxrec wrote in ``run_dir`` (:data:`RUN_ENTRIES`; in ``plots/`` only :data:`PLOT_FILES`),
    keeping ``training.json`` (the marker of the run that replaces it) and any other file.

    ``run.json`` goes first: an interrupt leaves an unfinished run (when ``training.json`` was written) that
    ``--overwrite`` or ``--resume`` handle.
    """
    run_dir = pathlib.Path(run_dir)
    remove(run_dir / RUN_FILE)
    for name in RUN_ENTRIES:
        if name not in (RUN_FILE, TRAINING_FILE, PLOTS_DIR):
            remove(run_dir / name)
    plots = run_dir / PLOTS_DIR
    if plots.is_dir():
        for name in PLOT_FILES:
            remove(plots / name)
        with contextlib.suppress(OSError):
            plots.rmdir()  # only when empty
    remove_leftovers(run_dir)


def remove_training(run_dir: str | pathlib.Path) -> None:
    """Deletes what only an unfinished run needs (``training.json``, ``train_checkpoints/``), once ``run.json`` is
    written."""
    run_dir = pathlib.Path(run_dir)
    remove(run_dir / TRAINING_FILE)
    remove(run_dir / TRAIN_CHECKPOINTS)

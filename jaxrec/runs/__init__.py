"""Run directories: what ``jaxrec train`` writes and ``jaxrec evaluate`` / ``jaxrec diagnose`` read back.

Modules, in import order (each imports only the ones above it):

* ``layout`` — what a run directory holds (:data:`RUN_ENTRIES`), its states (finished, unfinished, empty, foreign),
  the ``--out`` checks and the write-then-rename of every file (:func:`write_text`, :func:`replacing`)
* ``scorers`` — saved scorers: structure as JSON (functions by stable names), arrays through Orbax, sha256 checksums
* ``reading`` — :func:`read_run`, :func:`load_dataset`, :func:`load_scorers`, :func:`evaluate_run` (``metrics.json``),
  and :func:`check_evaluable` (K against the catalogue, cold users present)
* ``training`` — :func:`train_run` (with resume), :func:`save_run`, and :func:`check_trainable` (the data, before any
  training)

Guarantees: nothing is written into a folder that is not a jaxrec run (or empty); every file is written under a
temporary name and renamed into place; ``run.json`` is written last, so a run without it is unfinished, and
``train_run(..., resume=True)`` continues it to the parameters an uninterrupted run reaches; every saved array's
checksum is verified when it is loaded.
"""

from jaxrec.runs.layout import (
    CHECKPOINT_DIR,
    DIAGNOSTICS_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PLOT_FILES,
    PLOTS_DIR,
    RUN_ENTRIES,
    RUN_FILE,
    TRAIN_CHECKPOINTS,
    TRAINING_FILE,
    RunError,
    check_out,
    clear_run,
    replacing,
    run_state,
    write_text,
)
from jaxrec.runs.reading import (
    FORMAT,
    FULL_KS,
    READABLE_FORMATS,
    SAMPLED_KS,
    check_dataset,
    check_evaluable,
    evaluate_run,
    fingerprint,
    load_dataset,
    load_scorers,
    read_run,
    versions,
)
from jaxrec.runs.scorers import LEGACY_NAMES, SCORER_FUNCTIONS, scorer_functions
from jaxrec.runs.training import TRANSFER_FREE, TrainingInterrupted, check_trainable, save_run, train_run

__all__ = [
    "CHECKPOINT_DIR",
    "DIAGNOSTICS_FILE",
    "FORMAT",
    "FULL_KS",
    "HISTORY_FILE",
    "LEGACY_NAMES",
    "METRICS_FILE",
    "PLOTS_DIR",
    "PLOT_FILES",
    "READABLE_FORMATS",
    "RUN_ENTRIES",
    "RUN_FILE",
    "RunError",
    "SAMPLED_KS",
    "SCORER_FUNCTIONS",
    "TRAINING_FILE",
    "TRAIN_CHECKPOINTS",
    "TRANSFER_FREE",
    "TrainingInterrupted",
    "check_dataset",
    "check_evaluable",
    "check_out",
    "check_trainable",
    "clear_run",
    "evaluate_run",
    "fingerprint",
    "load_dataset",
    "load_scorers",
    "read_run",
    "replacing",
    "run_state",
    "save_run",
    "scorer_functions",
    "train_run",
    "versions",
    "write_text",
]

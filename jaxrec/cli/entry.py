"""The ``jaxrec`` entry point: the argument parser and :func:`main`, which turns a user's mistake into one line and
exit code 2, and Ctrl-C into one line and exit code 130."""

from __future__ import annotations

import _thread
import argparse
import os
import sys

from jaxrec import data as _data
from jaxrec.cli.commands import (
    DEMO_METHODS,
    cmd_data,
    cmd_demo,
    cmd_diagnose,
    cmd_evaluate,
    cmd_methods,
    cmd_sweep,
    cmd_train,
    cmd_tune,
)
from jaxrec.cli.options import (
    SHARED_USERS_HELP,
    non_negative_float_arg,
    positive_float_arg,
    positive_int_arg,
    resume_command,
    seed_arg,
    shared_users_arg,
)
from jaxrec.runs import TrainingInterrupted

__all__ = ["USER_ERRORS", "build_parser", "main"]


OVERWRITE_HELP = (
    "replace the jaxrec run already in --out (finished or not): deletes only what jaxrec wrote there (run.json, "
    "training.json, checkpoint/, train_checkpoints/, history.jsonl, metrics.json, diagnostics.json, its plots), "
    "never other files; a folder that is not a jaxrec run is always refused"
)
RESUME_HELP = (
    "continue the unfinished run in --out from its last training checkpoints (give the options that started it); "
    "the result is bit-identical to an uninterrupted run"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrec",
        description="Cross-domain recommendation in JAX.",
        epilog="exit codes: 0 done, 2 usage error or user mistake, 130 interrupted (Ctrl-C)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="train and evaluate on the embedded synthetic cross-domain data")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=positive_int_arg, default=15, help="maximum epochs per learned method (default 15)")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), help=f"methods (default {DEMO_METHODS})")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("train", help="train a method on a directory-format dataset, save and evaluate the run")
    p.add_argument("--data", required=True, help="folder with <domain>/{train,valid,test}.txt")
    p.add_argument("--source", required=True, help="source domain (the cold users' history)")
    p.add_argument("--target", required=True, help="target domain (where cold users are ranked)")
    p.add_argument("--method", required=True, help="recipe name (see `jaxrec methods`)")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument("--epochs", type=positive_int_arg, default=None, help="maximum epochs (default: the method's)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config fields, e.g. --set dim=128 lam=0.5")
    p.add_argument("--config", default=None, metavar="FILE", help="config fields from a JSON file (jaxrec tune --out)")
    p.add_argument(
        "--out", default=None, help="run directory, new or empty (default runs/<method>-<source>-<target>-seed<seed>)"
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help=RESUME_HELP)
    again.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument(
        "--dry-run", action="store_true", help="check the options, --out and the data, then stop (nothing is written)"
    )
    p.add_argument(
        "--seeds", type=seed_arg, nargs="+", default=[0, 1, 2], help="sampled-protocol seeds (default 0 1 2)"
    )
    p.add_argument(
        "--ks", type=positive_int_arg, nargs="+", default=[10, 20, 50], help="full-ranking cutoffs (default 10 20 50)"
    )
    p.add_argument("--no-eval", action="store_true", help="do not evaluate after training")
    p.add_argument("--plots", action="store_true", help="write figures to RUN/plots/")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="evaluate a run directory; writes RUN/metrics.json")
    p.add_argument("--run", required=True, help="run directory written by `jaxrec train`")
    p.add_argument("--data", default=None, help="dataset folder (default: the one recorded in the run)")
    p.add_argument(
        "--seeds", type=seed_arg, nargs="+", default=[0, 1, 2], help="sampled-protocol seeds (default 0 1 2)"
    )
    p.add_argument(
        "--ks", type=positive_int_arg, nargs="+", default=[10, 20, 50], help="full-ranking cutoffs (default 10 20 50)"
    )
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("diagnose", help="domain-gap diagnostics of a run's user representations")
    p.add_argument("run", help="run directory written by `jaxrec train`")
    p.add_argument("--data", default=None, help="dataset folder (default: the one recorded in the run)")
    p.add_argument("--seed", type=seed_arg, default=0, help="subsampling / classifier seed (default 0)")
    p.add_argument("--plots", action="store_true", help="write RUN/plots/domain_gaps.png")
    p.set_defaults(func=cmd_diagnose)
    p = sub.add_parser("sweep", help="train several configs in one vmapped program and print a table")
    p.add_argument("--method", default="mmd", help="cmf, mmd, coral or dann (default mmd)")
    p.add_argument("--data", default=None, help="dataset folder (default: embedded synthetic data)")
    p.add_argument("--source", default=None, help="source domain (needed with --data)")
    p.add_argument("--target", default=None, help="target domain (needed with --data)")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument("--lam", type=non_negative_float_arg, nargs="+", default=None, help="λ values")
    p.add_argument("--lr", type=positive_float_arg, nargs="+", default=None, help="learning rates")
    p.add_argument("--seeds", type=seed_arg, nargs="+", default=None, help="parameter-init seeds")
    p.add_argument("--epochs", type=positive_int_arg, default=None, help="epochs per model")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("tune", help="search a recipe's grid on the target's valid cold users within a time budget")
    p.add_argument("--data", required=True, help="folder with <domain>/{train,valid,test}.txt")
    p.add_argument("--source", required=True, help="source domain (the cold users' history)")
    p.add_argument("--target", required=True, help="target domain (its valid cold users are measured)")
    p.add_argument("--method", required=True, help="recipe name (see `jaxrec methods`)")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument("--budget", type=positive_float_arg, default=600.0, help="seconds for the search (default 600)")
    p.add_argument("--seeds", type=seed_arg, nargs="+", default=[0], help="training seeds per trial (default 0)")
    p.add_argument(
        "--grid",
        nargs="*",
        metavar="KEY=V1,V2",
        help="searched values per field, in order (default: the recipe's grid, jaxrec.sweep.TUNE_GRIDS)",
    )
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="fields every trial starts from")
    p.add_argument("--out", required=True, help="JSON file for the chosen config (jaxrec train --config FILE)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.set_defaults(func=cmd_tune, epochs=None, no_progress=True)
    p = sub.add_parser("methods", help="list the recipes")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each default config")
    p.set_defaults(func=cmd_methods)
    p = sub.add_parser("data", help="load a directory-format dataset and print its summary")
    p.add_argument("--data", required=True, help="folder with <domain>/{train,valid,test}.txt")
    p.add_argument("--shared-users", type=shared_users_arg, default=None, help=SHARED_USERS_HELP)
    p.add_argument(
        "--link-test",
        nargs=2,
        metavar=("SOURCE", "TARGET"),
        default=None,
        help="also test whether the overlapping users are one person in both domains (diagnostics.link_test)",
    )
    p.set_defaults(func=cmd_data)
    return parser


#: What a user's mistake raises: printed as one line, exit code 2. Anything else is a bug and shows its traceback.
USER_ERRORS = (
    _data.DataError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _install_unraisable_hook() -> None:
    """Installs an ``sys.unraisablehook`` for two reports Python can only print, and passes every other report to
    the previous hook:

    * a ``KeyboardInterrupt`` (Ctrl-C) that landed in a callback, such as XLA's garbage-collection callback,
      where Python cannot raise it: it is raised again in the main thread (``_thread.interrupt_main``), so the
      command stops instead of going on;
    * Orbax's ``RuntimeError('Event loop is closed')``: after a failed restore (a corrupt checkpoint, already
      reported as an error) its I/O threads may call into the event loop it closed; the report is dropped.
    """
    previous = sys.unraisablehook
    if getattr(previous, "jaxrec_cli", False):
        return

    def hook(report):
        if isinstance(report.exc_value, KeyboardInterrupt):
            _thread.interrupt_main()
        elif not (isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed"):
            previous(report)

    hook.jaxrec_cli = True
    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    """Runs the ``jaxrec`` command; returns its exit code (argparse's usage errors exit with 2 themselves).

    0: done. 2: a usage error or a user mistake (``jaxrec: error: ...``, no traceback). 130: interrupted (Ctrl-C),
    with one line that says, for ``jaxrec train``, how to resume. Run as the program (``argv`` None), an interrupt
    ends the process at once after that line (``os._exit``): the interpreter's teardown while XLA compiles can
    crash.
    """
    program = argv is None  # the process is the command: `jaxrec ...` or `python -m jaxrec ...`
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _install_unraisable_hook()
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        epoch = e.epoch if isinstance(e, TrainingInterrupted) else None
        where = f"interrupted at epoch {epoch}" if epoch else "interrupted"
        if isinstance(e, TrainingInterrupted):
            where += f"; resume with: {resume_command(args)} --resume"
        print(f"jaxrec: {where}", file=sys.stderr)
        if program:  # every file is closed and renamed by now; XLA's threads may be compiling: skip the teardown
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(130)
        return 130
    except USER_ERRORS as e:
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2

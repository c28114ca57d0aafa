"""The ``jaxrec`` command.

* ``jaxrec demo`` — the README's main job: embedded synthetic two-domain data, a cold-start split, popularity vs
  target-only vs a cross-domain transfer method, evaluated on the cold-start users, as a table.
* ``jaxrec train --data DIR --source S --target T --method M [--epochs N --seed N --set key=value ... --out RUN]``
  — train a named recipe, save the run directory (``run.json``, Orbax ``checkpoint/``, ``history.jsonl``) and
  evaluate it (``metrics.json``; ``--no-eval`` to skip; ``--plots`` writes figures to ``RUN/plots/``). Every
  option, ``--out`` and the data are checked before training (``--dry-run`` stops there); ``--resume`` continues
  an interrupted run, ``--overwrite`` replaces a previous run (never a folder that is not a jaxrec run).
  ``--shared-users below_heldout`` is needed for CDRIB's releases (``jaxrec.load_dir`` explains why); the run
  records it, and ``evaluate``/``diagnose`` load the data the same way.
* ``jaxrec evaluate --run RUN [--data DIR]`` — (re)evaluate a run on its target's cold-start users, valid and
  test, both protocols; writes ``RUN/metrics.json``.
* ``jaxrec diagnose RUN`` — domain-gap report of a run's user representations (MMD, CORAL, proxy A-distance,
  overlap statistics); ``--plots`` adds ``RUN/plots/domain_gaps.png``.
* ``jaxrec sweep --method mmd --lam 0.1 0.3 1 3 [--data DIR --source S --target T]`` — train several
  configurations in one vmapped program (default data: the embedded synthetic set) and print a table.
* ``jaxrec tune --data DIR --source S --target T --method M --budget 600 --out chosen.json`` — search the recipe's
  grid (``jaxrec.sweep.TUNE_GRIDS``) on the target's valid cold users within the budget and write the chosen
  config, which ``jaxrec train ... --config chosen.json`` applies (an existing file needs ``--overwrite``).
* ``jaxrec methods`` — list the recipes and their default configs.
* ``jaxrec data --data DIR [--link-test S T]`` — load a directory-format dataset and print its summary (and a
  permutation test of whether its overlapping users are really the same people in both domains).

Modules, in import order: ``options`` (argument types, ``--set`` parsing, ``--data``, the resume command),
``commands`` (one function per subcommand), ``entry`` (the parser and :func:`main`).

Exit codes: 0 done; 2 a usage error or a user mistake (``jaxrec: error: ...`` naming the option, field or file;
no traceback); 130 interrupted (Ctrl-C; ``jaxrec train`` says how to resume). Anything else is a bug.
"""

from jaxrec.cli.entry import USER_ERRORS, build_parser, main
from jaxrec.cli.options import (
    non_negative_float_arg,
    positive_float_arg,
    positive_int_arg,
    seed_arg,
    shared_users_arg,
)

__all__ = [
    "USER_ERRORS",
    "build_parser",
    "main",
    "non_negative_float_arg",
    "positive_float_arg",
    "positive_int_arg",
    "seed_arg",
    "shared_users_arg",
]

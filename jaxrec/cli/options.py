"""What the ``jaxrec`` command's options accept, checked as they are parsed: argument types that name the option
and the value (argparse prints ``argument --seeds: expected ...`` and exits with 2), ``--set key=value`` turned
into a checked config (:func:`jaxrec.methods.common.make_config`), ``--data``, and the command that resumes an
interrupted ``jaxrec train``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re
import shlex

from jaxrec import data as _data
from jaxrec.methods import common

__all__ = [
    "SHARED_USERS_HELP",
    "check_data_dir",
    "command_config",
    "read_config_file",
    "load_data",
    "non_negative_float_arg",
    "parse_sets",
    "positive_float_arg",
    "positive_int_arg",
    "resume_command",
    "seed_arg",
    "shared_users_arg",
    "shown",
]


def shown(value: str) -> str:
    """``repr(value)``, cut to about 100 characters (a message never echoes a huge value whole)."""
    return repr(value) if len(value) <= 100 else f"{value[:100]!r}... ({len(value):,} characters)"


def _integer(value: str, low: int, what: str) -> int:
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,19}", text) or not low <= int(text) < common.SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected {what}, got {shown(value)}")
    return int(text)


def positive_int_arg(value: str) -> int:
    """An option that takes a positive integer (``--epochs``, ``--ks``)."""
    return _integer(value, 1, "a positive integer")


def seed_arg(value: str) -> int:
    """A seed option (``--seed``, ``--seeds``): an integer in ``[0, 2**63)``."""
    return _integer(value, 0, "a non-negative integer below 2**63")


def _number(value: str, *, positive: bool) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise argparse.ArgumentTypeError(
            f"expected a finite number {'> 0' if positive else '>= 0'}, got {shown(value)}"
        )
    return number


def non_negative_float_arg(value: str) -> float:
    """An option that takes a finite number >= 0 (``--lam``)."""
    return _number(value, positive=False)


def positive_float_arg(value: str) -> float:
    """An option that takes a finite number > 0 (``--lr``)."""
    return _number(value, positive=True)


def shared_users_arg(value: str) -> int | str | None:
    """``--shared-users``: ``all`` (None: every user id is one person in all domains), ``below_heldout`` or N."""
    if value == "all":
        return None
    if value == "below_heldout":
        return value
    try:
        return _integer(value, 0, "N")
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{shown(value)}: expected 'all', 'below_heldout' or an integer >= 0"
        ) from None


SHARED_USERS_HELP = (
    "which user ids name one person in every domain: all (default), below_heldout (CDRIB's releases such as "
    "amazon-game-video: ids above the cold-start users are numbered per domain) or an integer N (ids < N)"
)


def check_data_dir(path: str) -> None:
    """``--data`` must name an existing folder (checked before anything is loaded)."""
    if not pathlib.Path(path).exists():
        raise _data.DataError(f"--data {path}: dataset directory not found")
    if not pathlib.Path(path).is_dir():
        raise _data.DataError(f"--data {path}: not a folder (a dataset is a folder of <domain>/train.txt ...)")


def load_data(args) -> _data.CrossDomainDataset:
    check_data_dir(args.data)
    return _data.load_dir(args.data, shared_users=args.shared_users)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``--set key=value ...`` as ``{key: text}`` (the config's field types parse the text: common.make_config)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {shown(pair)}")
        out[key.strip()] = value
    return out


def read_config_file(path: str, method: str) -> dict:
    """``--config FILE``: the ``{field: value}`` of a JSON file written by ``jaxrec tune`` (its ``"set"`` entry;
    a file holding only a ``{field: value}`` object is read as that). A file naming another method is refused.

    Raises:
      FileNotFoundError, ValueError: a missing file, not JSON, not an object, or another method.
    """
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: file not found")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path}: not a JSON file ({e})") from None
    if not isinstance(record, dict):
        raise ValueError(f"--config {path}: expected a JSON object, got {type(record).__name__}")
    if "set" in record:
        if record.get("method", method) != method:
            raise ValueError(f"--config {path} was chosen for method {record['method']!r}, not {method!r}")
        record = record["set"]
        if not isinstance(record, dict):
            raise ValueError(f'--config {path}: its "set" entry must be an object of field -> value')
    return record


def command_config(args, default_config, *, owner: str):
    """``(config, overrides)``: ``--config FILE``, then ``--set``, ``--epochs``, ``--seed`` and ``--no-progress``
    over ``default_config``, every value checked against its field's type before any data is loaded."""
    fields = {f.name for f in dataclasses.fields(default_config)}
    from_file: dict = {}
    if getattr(args, "config", None):
        from_file = read_config_file(args.config, args.method)
        default_config = common.make_config(default_config, from_file, owner=f"{owner} (--config {args.config})")
        from_file = {k: getattr(default_config, k) for k in from_file}
    overrides: dict = parse_sets(args.set or [])
    if "seed" in overrides and getattr(args, "seed", None) is not None:
        raise ValueError(f"--set seed={shown(overrides['seed'])[1:-1]}: give the seed with --seed")
    if args.epochs is not None:
        if "epochs" not in fields:
            raise ValueError(f"{owner} has no epochs (its options are {sorted(fields)})")
        overrides["epochs"] = args.epochs
    if getattr(args, "seed", None) is not None and "seed" in fields:
        overrides["seed"] = args.seed
    if "progress" in fields and args.no_progress:
        overrides.setdefault("progress", False)
    config = common.make_config(default_config, overrides, from_strings=True, owner=owner)
    return config, {k: getattr(config, k) for k in {**from_file, **overrides}}


def resume_command(args) -> str:
    """The command line that resumes this ``jaxrec train`` (its own options, ``--out`` spelled out)."""
    argv = [a for a in args.argv if a not in ("--resume", "--overwrite", "--dry-run")]
    if args.out is None:
        argv += ["--out", args.out_path]
    return shlex.join(["jaxrec", *argv])

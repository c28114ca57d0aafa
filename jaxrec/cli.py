"""The ``jaxrec`` command: ``jaxrec demo`` (the README's main job) and ``jaxrec data`` (inspect a dataset)."""

from __future__ import annotations

import argparse
import sys

from jaxrec import data as _data


def _cmd_data(args) -> int:
  ds = _data.load_dir(args.data)
  print(ds.summary())
  return 0


def _cmd_demo(args) -> int:
  ds, _ = _data.synthetic(seed=args.seed)
  ds = _data.cold_start_split(ds, "source", "target", fraction=0.2, seed=args.seed)
  print("jaxrec demo: embedded synthetic two-domain data (source -> target cold start)")
  print(ds.summary())
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxrec", description="Cross-domain recommendation in JAX.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  p = sub.add_parser("demo", help="train and evaluate on the embedded synthetic cross-domain data")
  p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  p.set_defaults(func=_cmd_demo)
  p = sub.add_parser("data", help="load a directory-format dataset and print its summary")
  p.add_argument("--data", required=True, help="folder with <domain>/{train,valid,test}.txt")
  p.set_defaults(func=_cmd_data)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except _data.DataError as e:
    print(f"jaxrec: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())

"""Subcommands whose implementation has not landed yet: they say so and exit 2."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    print(f"gen: error: `gen {args.command}` is not built yet in gen 0.1.0", file=sys.stderr)
    return 2

"""``lvd``: one subcommand per job, each a thin wrapper over a plain function in the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from curation.commands import COMMANDS
from curation.config import ConfigError
from curation.engines import EngineUnavailable
from schemas import SchemaError

# Errors a user can act on: printed as one line, exit code 2, no traceback.
USER_ERRORS = (ConfigError, SchemaError, FileNotFoundError, EngineUnavailable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvd", description="Curate LVD-style pretraining data and pretrain DINOv2 on it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"curation.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return ns.func(ns)
    except USER_ERRORS as exc:
        print(f"lvd {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

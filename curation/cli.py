"""``lvd``: one subcommand per job, each a thin wrapper over a plain function in the library.

The error contract: a problem the user can fix (a typo in a key, a missing or corrupt input file,
a folder that cannot be written: the types in :data:`~curation.jobs.errors.USER_ERRORS`, and every
command-line syntax error) ends the command with exit code 2 and one line on stderr,
``lvd <command>: error: <what is wrong>``, and no traceback. Commands check their inputs before any
work starts, so for those failures that line is all stderr holds; a failure found later (a corrupt
checkpoint met when the model loads) follows the log lines of the work done so far. Anything else
is a bug and keeps its traceback. ``lvd --debug <command> ...`` shows the traceback of user errors
too.

What the terminal shows while a command runs (:mod:`curation.run_log`): lvd's own messages and every
warning and error on stderr, a progress bar per stage; third-party chatter goes to the run's log
file, ``<run>/_logs/lvd.log``. ``lvd -v <command> ...`` shows everything, DEBUG included.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys

from curation.commands import COMMANDS
from curation.jobs.errors import USER_ERRORS
from curation.run_log import cli_logging, to_file_only


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose syntax errors are one line (the usage is left to ``--help``),
    like every other error of ``lvd``. Subparsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def group_parser_class(command: str) -> type[OneLineErrorParser]:
    """The parser class of ``lvd <command> <name>`` (``lvd bench copydetect``, ``lvd eval knn``):
    its errors read ``lvd <command>: error: ...``, like every command's."""

    class GroupParser(OneLineErrorParser):
        def error(self, message: str):
            self.exit(2, f"lvd {command}: error: {message} (see `{self.prog} --help`)\n")

    return GroupParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="lvd", description="Curate LVD-style pretraining data and pretrain DINOv2 on it."
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show every log message, DEBUG and third-party ones included, on the terminal "
        "(by default those go to the run's log file, <run>/_logs/lvd.log)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback instead of a one-line message",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"curation.commands.{name}").register(sub)
    return parser


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (a message that spans lines would break the contract)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    with cli_logging(ns.verbose, shlex.join(["lvd", *map(str, words)])):
        try:
            return ns.func(ns)
        except USER_ERRORS as exc:
            if ns.debug:
                raise
            message = f"lvd {ns.command}: error: {one_line(exc)}"
            to_file_only(logging.ERROR, "%s", message)
            print(message, file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())

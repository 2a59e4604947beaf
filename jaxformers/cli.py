"""The ``jaxformers`` command: a registry of sub-commands, argument parsing and error reporting.

Each sub-command lives in its own module and is registered in ``_register_builtin_commands`` with
``register_command(name, help, configure, run)``: ``configure(parser)`` adds its arguments and ``run(args)``
returns the exit status. Errors print one line, ``jaxformers: error: ...``, and exit 2 for bad arguments or
inputs (``UsageError``, argparse's errors, missing files) and 1 for a failure; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

PROG = "jaxformers"


class UsageError(Exception):
    """Bad arguments or inputs (a missing file, an unknown class name): exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is raised (one line, exit 2) instead of printing the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int | None], description: str | None = None) -> None:
    """Add ``jaxformers NAME``; ``help`` is its line in ``jaxformers --help``, ``description`` heads its own help."""
    COMMANDS[name] = Command(name, help, configure, run, description)


def _register_builtin_commands() -> None:
    from . import parity
    from .conversion import configure_convert, run_convert

    register_command("parity", "compare jaxformers with a PyTorch reference library on a checkpoint",
                     parity.add_arguments, parity.run, parity.DESCRIPTION)
    register_command("convert", "convert a TensorFlow or OpenAI checkpoint to jaxformers/PyTorch files",
                     configure_convert, run_convert,
                     "Convert an original checkpoint release into a directory that from_pretrained loads.")
    from . import plan

    register_command("plan", "compile a model's train/infer step for a TPU topology on this machine: memory, "
                     "FLOPs, estimated step time", plan.add_arguments, plan.run, plan.__doc__)


def build_parser() -> Parser:
    if not COMMANDS:
        _register_builtin_commands()
    parser = Parser(prog=PROG, description="jaxformers: BERT, OpenAI GPT, GPT-2 and Transformer-XL in JAX/Flax. "
                    "Run 'jaxformers COMMAND --help' for a command's arguments.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"jaxformers {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help,
                                  description=plain_text(command.description or command.help),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure(sub)
        # SUPPRESS: `jaxformers --debug parity` and `jaxformers parity --debug` both work.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback of an error")
        sub.set_defaults(run=command.run)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def plain_text(text: str) -> str:
    """A docstring as a terminal shows it: ``name`` and :role:`name` (reStructuredText) become plain name."""
    return re.sub(r"``([^`]+)``", r"\1", re.sub(r":[\w:]+:`~?([^`]+)`", r"\1", text))


def _error_line(error: BaseException) -> str:
    if isinstance(error, (UsageError, OSError, ValueError, KeyError, ImportError)):
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join((text or type(error).__name__).split())  # one line, whatever the message holds


def _exit_status(error: BaseException) -> int:
    """2: the user's arguments or inputs are wrong (nothing was loaded or written); 1: anything else failed."""
    return 2 if isinstance(error, (UsageError, FileNotFoundError, NotADirectoryError, FileExistsError)) else 1


def run_parsed(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
               argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run; every error becomes one line on stderr and an exit status (see the module doc)."""
    args = None
    try:
        args = parser.parse_args(argv)
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the command line's last line of defence
        if getattr(args, "debug", False):
            raise
        print(f"{PROG}: error: {_error_line(error)}", file=sys.stderr)
        return _exit_status(error)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up logging, when a converter uses it
    return run_parsed(build_parser(), lambda args: args.run(args), argv)


if __name__ == "__main__":
    sys.exit(main())

"""Shared command-line plumbing: one-line errors with exit status 2, never a bare traceback."""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from typing import Callable, NoReturn, Sequence

from microplastics.core.errors import InputError

# The command-line layer's name for the one error of bad input. A stage's own checks (its flags,
# its folders) raise UserError; library modules raise InputError or a typed subclass of it
# (core.layout.ModelFolderError, data.archive.UnsafeArchiveError...), so that they need nothing
# from this module; ``run`` shows either as one line.
UserError = InputError


def one_line(err: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed), or its type when it has none."""
    return " ".join(str(err).split()) or type(err).__name__


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default shown once: appended as ``(default: X)`` unless the help text already
    says what the default is, and never for a required option, a flag or an option without one."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and shows_default(action):  # argparse skips the help of an option without one
            action = copy.copy(action)
            action.help = "default: " + default_text(action.default)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not shows_default(action) or "default" in text.lower():
            return text
        return f"{text} (default: {default_text(action.default)})"


def shows_default(action: argparse.Action) -> bool:
    """Whether an option has a default worth printing: not required, not a flag, not None."""
    return (bool(action.option_strings) and not action.required and action.nargs != 0
            and action.default not in (None, argparse.SUPPRESS) and action.default != [])


def default_text(default: object) -> str:
    """A default as one would type it (``a b`` for a list), with the % that argparse expands doubled."""
    text = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
    return text.replace("%", "%%")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad command line ends like every other bad input: one line
    ``error: ...`` (with a pointer to --help instead of the usage block) and exit status 2.

    ``examples``, command lines a person can copy, close the help text as they are written."""

    def __init__(self, *args, examples: Sequence[str] = (), **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.examples = list(examples)

    def format_help(self) -> str:
        text = super().format_help()
        if not self.examples:
            return text
        return text.rstrip("\n") + "\n\nexamples:\n" + "".join(f"  {e}\n" for e in self.examples)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())}; see {self.prog} --help\n")


def finite_float(text: str) -> float:
    """An argparse type: a float that is a real number (``nan`` and ``inf`` slip past ``x <= 0`` checks)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def default_workers() -> int:
    """CPUs this process may use (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


DEVICES = ("auto", "cpu", "cuda", "mps")


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device``, declared alike by every stage that may run a deep model (deep.engine.resolve_device)."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where deep models run. auto: cuda, then mps, then cpu")


def add_workers_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--workers``, declared alike by every stage that runs work in parallel; ``what`` says what runs."""
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"{what}; by default one per CPU this process may use")


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a stage's ``main`` and turn an InputError (UserError) into one line on stderr and exit status 2."""
    try:
        code = main(argv)
    except InputError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)  # one line, whatever the message holds
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)

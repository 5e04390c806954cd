"""The typed error of bad input, shared by the library and the command-line layer."""
from __future__ import annotations


class InputError(Exception):
    """A problem with a person's input or environment (a file, a folder, a value) that they can fix.

    The message says what is wrong and how to fix it. Library modules raise it or a subclass;
    the command-line layer (``core.cli.run``) shows it as one line ``error: ...``, exit status 2.

    ``core.cli.UserError`` is the same class under the command line's name. Typed subclasses say
    what failed (``core.layout.ModelFolderError``, ``data.archive.UnsafeArchiveError``,
    ``data.download.NetworkError``); modules that still spell it UserError raise this very class,
    so a caller may catch either name.
    """

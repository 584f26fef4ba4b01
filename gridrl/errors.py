"""The one exception hierarchy of gridrl.

Every error gridrl raises on purpose derives from :class:`GridrlError`, so a caller (the
CLI, a scheduler adapter, a notebook) can catch gridrl's own errors in one clause and
let programming errors through. Subclasses keep a builtin mixin (``ValueError`` for bad
input, ``RuntimeError`` for a failed operation) where callers already rely on it.
"""

from __future__ import annotations


class GridrlError(Exception):
    """Base of every gridrl error; the message names the file, key, column or row at fault.

    ``exit_code`` is what the command line exits with when this error ends a command:
    2 for bad input or a refused operation, 1 where part of the work was done and saved.
    """

    exit_code: int = 2

"""The one exception hierarchy of gridrl.

Every error gridrl raises on purpose derives from :class:`GridrlError`, so a caller (the
CLI, a scheduler adapter, a notebook) can catch gridrl's own errors in one clause and
let programming errors through. Subclasses keep a builtin mixin (``ValueError`` for bad
input, ``RuntimeError`` for a failed operation) where callers already rely on it.
"""

from __future__ import annotations


class GridrlError(Exception):
    """Base of every gridrl error; the message names the file, key, column or row at fault."""

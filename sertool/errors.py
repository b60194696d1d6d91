"""The one base class of every error sertool reports to its user.

The CLI catches :class:`SertoolError` in one place (``sertool.cli.main``) and prints
``sertool: error: <message>``; anything else is a bug and keeps its traceback. Messages name
the file (and line) that is wrong, so the user can fix it without reading code. Each subclass
keeps its older built-in base too (``class DataDirError(SertoolError, ValueError)``), so
callers that catch ``ValueError`` or ``RuntimeError`` still work.
"""

from __future__ import annotations


class SertoolError(Exception):
    """A problem the user can fix (bad input, missing file, refused configuration)."""

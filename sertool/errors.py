"""The one base of every error sertool reports to a user.

The CLI catches :class:`SertoolError` once and prints ``sertool: error: <message>``; each message
names the file (and line) or the option at fault. Subclasses keep a second, standard base
(ValueError, RuntimeError) where callers and tests already catch that.
"""

from __future__ import annotations


class SertoolError(Exception):
    """A problem with the user's input, files or configuration (never a bug in sertool)."""

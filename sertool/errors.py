"""The one base class of every error sertool reports to its user.

The CLI catches :class:`SertoolError` in one place (``sertool.cli.main``) and prints
``sertool: error: <message>``; anything else is a bug and keeps its traceback. Messages name
the file (and line) that is wrong, so the user can fix it without reading code. Each subclass
keeps its older built-in base too (``class DataDirError(SertoolError, ValueError)``), so
callers that catch ``ValueError`` or ``RuntimeError`` still work.
"""

from __future__ import annotations

import errno


class SertoolError(Exception):
    """A problem the user can fix (bad input, missing file, refused configuration)."""


class OutputError(SertoolError, OSError):
    """An output could not be written (read-only file system, disk full, no permission).

    The message names the output the user asked for, never a temporary file beside it, and
    ``errno`` is kept, so callers that catch ``OSError`` still work.
    """

    def __init__(self, path: object, err: OSError | None = None, reason: str | None = None):
        self.path = str(path)
        self.message = f"{path}: {reason or os_error_reason(err)}"
        super().__init__(err.errno if err is not None else None, self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # it crosses process boundaries (job pools)
        return _restore_output_error, (self.path, self.message, self.errno)


def _restore_output_error(path: str, message: str, code: int | None) -> OutputError:
    err = OutputError(path, reason="")
    err.message, err.errno = message, code
    return err


# errors about the place a file goes, not about one file: meaningful without a file name
PLACE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def os_error_reason(err: OSError | None) -> str:
    """What went wrong, without the file name: 'No space left on device' rather than
    '[Errno 28] No space left on device: ...'."""
    if err is None:
        return "could not be written"
    return err.strerror or str(err) or type(err).__name__


def os_error_message(err: OSError) -> str | None:
    """One line for an OS error the user can act on (it names a file, or the cause is a
    full/read-only file system); None for the rest, which stay tracebacks (bugs)."""
    if err.filename is not None:
        names = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
        return f"{names}: {os_error_reason(err)}"
    if err.errno in PLACE_ERRNOS:
        return os_error_reason(err)
    return None

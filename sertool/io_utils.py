"""Small I/O helpers shared by every stage: atomic writes of files and directories, created with
the user's umask (tempfile makes 0600 files and 0700 folders, which a colleague cannot read)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sertool.faults import kill_point


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    A killed process leaves at most a ``.tmp`` file that no later stage reads, never a
    half-written output under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        kill_point("atomic:before-rename")  # complete under its temporary name only
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside ``path`` to fill; on success it replaces ``path`` in one
    rename (an old ``path`` is removed only after that), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            kill_point("atomic-dir:between-renames")  # neither old nor new under ``path``
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_replace_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync ``tmp`` and rename it onto ``path`` (for files written by other libraries)."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json_object(path: Path, error: type[Exception], missing: str) -> dict:
    """The JSON object in ``path``; a missing file raises ``error`` with the ``missing`` hint,
    an unreadable or non-object one ``error`` naming the file."""
    if not path.is_file():
        raise error(f"{path}: not found ({missing})")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not valid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object")
    return obj


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (model bundles, embedding directories), read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Small I/O helpers shared by every stage: atomic writes of files and directories, created with
the user's umask (tempfile makes 0600 files and 0700 folders, which a colleague cannot read)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from sertool.errors import OutputError, SertoolError
from sertool.faults import kill_point


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    A killed process leaves at most a ``.tmp`` file that no later stage reads, never a
    half-written output under the real name. Any other failure removes the temporary file; a
    failed write (read-only, disk full) is raised as OutputError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:  # it names the folder or the temporary name: name ``path``
        raise OutputError(path, err) from err
    os.close(fd)
    with output_errors(path, tmp):
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        kill_point("atomic:before-rename")  # complete under its temporary name only
        os.replace(tmp, path)


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, *temporaries: str | os.PathLike) -> Iterator[None]:
    """Around the writing of ``path`` (through ``temporaries``, e.g. by kaldiio or torch): on any
    failure the temporaries are removed; an OSError about them or about no file in particular
    (ENOSPC is raised without a name) becomes OutputError naming ``path``. Other errors,
    OSErrors about other files included, pass unchanged."""
    try:
        yield
    except BaseException as err:
        for tmp in temporaries:
            with contextlib.suppress(OSError):
                if os.path.isdir(tmp) and not os.path.islink(tmp):
                    shutil.rmtree(tmp)
                else:
                    os.unlink(tmp)
        if isinstance(err, SertoolError) or not isinstance(err, OSError):
            raise
        ours = {os.fspath(t) for t in (path, *temporaries)}
        if err.filename is None or os.fspath(err.filename) in ours or any(
                os.fspath(err.filename).startswith(os.fspath(t) + os.sep) for t in temporaries):
            raise OutputError(path, err) from err
        raise


def ensure_writable(directory: str | os.PathLike) -> Path:
    """Fail early, before hours of work: a file can be created in ``directory`` (or, if it does
    not exist yet, in its nearest existing parent, which is left unchanged). Returns it resolved.
    Raises OutputError naming ``directory`` (read-only file system, no permission)."""
    directory = Path(directory).resolve()
    probe_dir = directory
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(directory, reason="not a directory" if probe_dir == directory
                          else f"{probe_dir} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sertool-write-test.", dir=probe_dir)
    except OSError as err:
        raise OutputError(directory, err) from err
    os.close(fd)
    os.unlink(probe)
    return directory


def not_a_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it is not a regular file ("not found", "a directory", "a FIFO",
    "a character device", ..., or "cannot read (reason)"), or None for a regular file. Only
    stat is called: a FIFO is never opened, so it cannot block the caller."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as err:
        return f"cannot read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a file")


def refuse_output_over_inputs(output: str | os.PathLike,
                              inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse to write the directory ``output`` where it would destroy or change an input: the
    same directory, one inside an input, or one containing an input (a directory written as a
    whole replaces what it contains). Compared resolved, symlinks followed, before anything is
    written; raises OutputError naming both."""
    out = Path(output).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if out == source:
            how = "is the input"
        elif source in out.parents:
            how = "is inside the input"
        elif out in source.parents:
            how = "contains the input"
        else:
            continue
        linked = Path(output).absolute() != out or Path(given).absolute() != source
        resolved = f" (resolved: {out} and {source})" if linked else ""
        raise OutputError(output, reason=f"the output directory {how} {given}{resolved}: "
                          "writing it would change or destroy that input; give an output "
                          "directory outside the inputs")


def temp_prefix(path: Path) -> str:
    """Temporary names beside ``path`` start with this: hidden, and naming the writing process
    so that a later run can tell (and remove) what a killed one left."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files and folders beside ``path`` (``temp_prefix`` ... ``.tmp``)
    left by processes that are no longer running on this machine (killed mid-write)."""
    head = f".{path.name}."
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(head) and n.endswith(".tmp")]
    except FileNotFoundError:
        return
    for name in names:
        pid = name[len(head):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        stale = path.parent / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside ``path`` to fill; on success it replaces ``path`` in one
    rename (an old ``path`` is removed only after that), on failure it is removed. A failed
    write is raised as OutputError naming ``path``, not the temporary directory."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise OutputError(path, err) from err
    try:
        with output_errors(path, tmp):
            os.chmod(tmp, 0o777 & ~umask())
            yield tmp
            old = None
            if path.exists():
                old = path.with_name(f"{temp_prefix(path)}old.tmp")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                kill_point("atomic-dir:between-renames")  # neither old nor new under ``path``
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except OutputError as err:  # a file inside the temporary directory: name it in ``path``
        err.message = err.message.replace(os.fspath(tmp), os.fspath(path))
        raise
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


class OpenedDir:
    """A stage's output directory opened for reading (sertool.frontend.featdir, the embedding
    directory): a subclass reads each file once, when first asked for (``cached_property``),
    and checks it there. Pickled (into a cluster task) it is its path alone: the task reads
    the files itself, so only paths travel."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

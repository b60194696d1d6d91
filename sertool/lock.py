"""One lock per output directory: two sertool runs never write into one directory at once.

A stage that writes a directory holds ``DIR/.sertool.lock`` while it runs (``DIR.lock`` beside
it, hidden, for a directory that the stage replaces as a whole, like prepare's DATA_DIR). The
lock is an OS lock (``flock``) on the open file, so the kernel releases it when the process
ends in any way, SIGKILL included: a lock left by a dead run is simply taken over, with no
guessing from pids. (On NFS, Linux maps ``flock`` to the server's byte-range locks, so it
holds across machines too.) The file's content, pid + host + start time + command, only
serves the refusal message of a second run.

Only the process that the user started takes the lock; its own workers (pool processes,
Slurm array tasks via ``python -m sertool.jobs``, DDP ranks other than rank 0) write under it
without taking it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sertool.errors import OutputError, SertoolError

LOCK_NAME = ".sertool.lock"
_HELD: set[Path] = set()  # locks this process holds: taking one again is a no-op


class DirInUseError(SertoolError, OSError):
    """Another live sertool run holds the directory's lock."""


def lock_path(directory: str | os.PathLike, *, replaced: bool = False) -> Path:
    directory = Path(directory).absolute()
    if replaced and directory.name:  # a lock inside would be swapped out with the directory
        return directory.with_name(f".{directory.name}.lock")
    return directory / LOCK_NAME


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, *, replaced: bool = False,
             command: str | None = None) -> Iterator[Path]:
    """Hold ``directory``'s lock for the ``with`` block (creating the directory, or its parent
    when ``replaced``); raise :class:`DirInUseError` naming the holder if another process has
    it. Under torchrun only rank 0 locks (the other ranks are part of the same run)."""
    path = lock_path(directory, replaced=replaced)
    if path in _HELD or int(os.environ.get("RANK", "0")) != 0:
        yield path
        return
    made = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, Path(directory))
    except DirInUseError:
        raise
    except (FileExistsError, NotADirectoryError) as err:  # a file where the directory goes
        raise OutputError(directory, err, reason="not a directory") from err
    except OSError as err:  # read-only, no permission: one error line naming the directory
        raise OutputError(directory, err) from err
    _HELD.add(path)
    try:
        os.write(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": command or shlex.join(["sertool", *sys.argv[1:]])}).encode())
        yield path
    finally:
        _HELD.discard(path)
        # unlink before close: a run waiting on this inode sees it gone and retries (_acquire)
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        if made:  # a run refused before writing anything leaves no empty directory behind
            with contextlib.suppress(OSError):
                path.parent.rmdir()


def _acquire(path: Path, directory: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            raise DirInUseError(f"{directory} is in use by sertool ({_describe(holder)}); wait "
                                f"for that run to end or stop it, then rerun (the lock is "
                                f"{path})") from None
        try:  # the file we locked is still the lock file (not unlinked by its last holder)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)  # a dead run's record
            return fd
        os.close(fd)


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "a run that is just starting"

"""A read-only or full disk under each stage (issue 14): on a small tmpfs mounted by the test, the
real `sertool` process says `sertool: error: PATH: <reason>` with exit status 1, no traceback,
leaves no temporary file, and keeps every file that was there (inputs and earlier outputs).

Mounting needs root; elsewhere these tests skip and say so.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from battery import Shared, shared_inputs  # noqa: F401 - the module's inputs, made once
from corpora import _emodb

REPO = Path(__file__).resolve().parents[2]
TINY = ("--model-conf", "model_resnet_tiny.toml", "--set", "epochs=1", "--set", "batch_size=4",
        "--set", "chunk_frames=[20]", "--no-progress")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size)`` mounts a fresh tmpfs at tmp_path/name; all are unmounted at the end.
    ``read_only(path)`` remounts one read-only (after the test has put its earlier outputs
    there)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the read-only and disk-full tests run as "
                    "root, e.g. in the project's CI container)")
    mounts: list[Path] = []

    def mount(name: str, size: str = "2m") -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def _read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)


def _fill(point: Path, leave: int) -> None:
    """A ballast file that leaves about ``leave`` bytes free on the tmpfs at ``point``."""
    stat = os.statvfs(point)
    free = stat.f_bavail * stat.f_frsize
    (point / "ballast").write_bytes(b"\0" * max(0, free - leave))


def _sertool(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "sertool", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _snapshot(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for root in roots for p in sorted(root.rglob("*"))}


def _assert_contained(done: subprocess.CompletedProcess, message: str, before: dict[str, str],
                      *roots: Path) -> None:
    """Exit 1, one error line matching ``message``, no traceback, no temporary file, and every
    file of ``before`` still there, byte-identical."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    assert re.search(r"^sertool: error: " + message + "$", done.stderr, re.M), done.stderr
    after = _snapshot(*roots)
    assert {p: after.get(p) for p in before} == before, "a file was changed or lost"
    assert not [p for p in after if p.endswith(".tmp") or ".tmp." in Path(p).name]


def _data_dir(root: Path, shared: Shared) -> Path:
    data = root / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"spk1-u1 {shared.audio / 'a.wav'}\n"
                                  f"spk1-u2 {shared.audio / 'b.wav'}\n")
    (data / "utt2spk").write_text("spk1-u1 spk1\nspk1-u2 spk1\n")
    (data / "spk2utt").write_text("spk1 spk1-u1 spk1-u2\n")
    return data


def _e(path: Path) -> str:
    return re.escape(str(path))


# ----------------------------------------------------------------- the writers themselves


def test_a_failed_atomic_write_names_the_output_and_leaves_no_temporary(tmp_path):
    import pickle

    from sertool.errors import OutputError
    from sertool.io_utils import atomic_open

    target = tmp_path / "out.txt"
    target.write_text("before\n")
    with pytest.raises(OutputError) as err, atomic_open(target) as handle:
        handle.write("half")
        raise OSError(28, "No space left on device")  # as a full disk raises it: no name
    assert str(err.value) == f"{target}: No space left on device" and err.value.errno == 28
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert target.read_text() == "before\n"
    # it crosses process boundaries intact (a job in a pool worker raises it)
    back = pickle.loads(pickle.dumps(err.value))
    assert (type(back), str(back), back.errno) == (OutputError, str(err.value), 28)
    with pytest.raises(KeyError), atomic_open(target) as handle:  # not an OS error: unchanged
        raise KeyError("bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_the_cli_prints_os_errors_about_files_and_keeps_tracebacks_for_bugs(monkeypatch):
    import click
    from click.testing import CliRunner

    from sertool import cli

    def command(error: BaseException) -> click.Command:
        def run() -> None:
            raise error
        return cli.SertoolGroup(commands={"x": click.Command("x", callback=run)})

    denied = OSError(13, "Permission denied", "/data/wav.scp")
    result = CliRunner().invoke(command(denied), ["x"])
    assert (result.exit_code, result.stderr) == (1, "sertool: error: /data/wav.scp: Permission "
                                                    "denied\n")
    result = CliRunner().invoke(command(OSError(28, "No space left on device")), ["x"])
    assert (result.exit_code, result.stderr) == (1, "sertool: error: No space left on device\n")
    for bug in (KeyError("folds"), OSError(9, "Bad file descriptor")):  # no file, no known cause
        result = CliRunner().invoke(command(bug), ["x"])
        assert result.exception is bug and "sertool: error" not in result.stderr


# ----------------------------------------------------------------- read-only output


def test_prepare_into_a_read_only_folder_keeps_the_old_data(tmpfs, tmp_path):
    src = _emodb(tmp_path / "emodb")
    disk = tmpfs("disk")
    assert _sertool("prepare", "emodb", src, disk / "data").returncode == 0
    _read_only(disk)
    before = _snapshot(disk, src)
    done = _sertool("prepare", "emodb", src, disk / "data")
    _assert_contained(done, f"{_e(disk / 'data')}: Read-only file system", before, disk, src)


@pytest.mark.slow  # ~6 s: two extract-feats processes
def test_extract_feats_rerun_on_a_read_only_folder_fails_before_any_work(tmpfs, tmp_path,
                                                                          shared):
    data = _data_dir(tmp_path, shared)
    disk = tmpfs("disk")
    (disk / "feats").mkdir()
    (disk / "feats" / "notes.txt").write_text("mine\n")
    _read_only(disk)
    before = _snapshot(disk, data, shared.audio)
    done = _sertool("extract-feats", data, disk / "feats", "--no-progress")
    _assert_contained(done, f"{_e(disk / 'feats')}: Read-only file system", before, disk, data,
                      shared.audio)
    # a new folder on the read-only disk: named too
    done = _sertool("extract-feats", data, disk / "new", "--no-progress")
    _assert_contained(done, f"{_e(disk / 'new')}: Read-only file system", before, disk, data,
                      shared.audio)


def test_train_into_a_read_only_folder(tmpfs, shared):
    disk = tmpfs("disk")
    _read_only(disk)
    before = _snapshot(shared.feats, shared.feats_data)
    done = _sertool("train", shared.feats, shared.feats_data, disk / "exp", *TINY)
    _assert_contained(done, f"{_e(disk / 'exp')}: Read-only file system", before,
                      shared.feats, shared.feats_data)


def test_score_to_a_read_only_folder(tmpfs, shared):
    disk = tmpfs("disk")
    (disk / "report").mkdir()
    (disk / "report" / "report.md").write_text("the last report\n")
    _read_only(disk)
    before = _snapshot(disk, shared.exp)
    done = _sertool("score", shared.exp, "-o", disk / "report", "--no-audio")
    _assert_contained(done, f"{_e(disk / 'report')}: Read-only file system", before,
                      disk, shared.exp)


def test_predict_to_a_read_only_folder_says_so_before_predicting(tmpfs, shared):
    disk = tmpfs("disk")
    (disk / "out.csv").write_text("file,ang,neu\nearlier.wav,0.5,0.5\n")
    _read_only(disk)
    before = _snapshot(disk)
    done = _sertool("predict", shared.bundle, shared.audio / "a.wav", "-o", disk / "out.csv")
    _assert_contained(done, rf"{_e(disk / 'out.csv')}: cannot write the predictions there "
                      r"\(Read-only file system\)", before, disk)
    assert "files predicted" not in done.stderr  # refused before the work, not after it


# ----------------------------------------------------------------- full disk


@pytest.mark.slow  # ~5 s: loads torch and the bundle in a process
def test_predict_on_a_full_disk_says_so_before_predicting(tmpfs, shared):
    disk = tmpfs("disk")
    _fill(disk, leave=0)  # not even the header of OUT.partial fits
    before = _snapshot(disk)
    done = _sertool("predict", shared.bundle, shared.audio / "a.wav", "-o", disk / "out.csv")
    _assert_contained(done, rf"{_e(disk / 'out.csv')}\.partial: cannot write \(No space left "
                      r"on device\).*", before, disk)
    assert "files predicted" not in done.stderr and not done.stdout
    # (a disk that fills up part-way: tests/stages/test_predict_long.py, the rows go to stdout)


def test_extract_feats_on_a_full_disk_names_the_archive_and_frees_it(tmpfs, tmp_path,
                                                                      shared):
    data = _data_dir(tmp_path, shared)
    disk = tmpfs("disk")
    (disk / "notes.txt").write_text("mine\n")
    _fill(disk, leave=48 * 1024)  # frontend.json and the log fit, two utterances do not
    before = _snapshot(disk, data)
    done = _sertool("extract-feats", data, disk / "feats", "--no-progress")
    _assert_contained(done, rf"extract: job 1 failed: {_e(disk / 'feats')}/feats\.1\.ark: No "
                      rf"space left on device; see {_e(disk / 'feats')}/log/extract\.1\.log",
                      before, disk, data)
    assert not (disk / "feats" / "feats.scp").exists()


@pytest.mark.slow  # ~9 s: a one-epoch training up to its first checkpoint
def test_train_on_a_full_disk_names_the_checkpoint(tmpfs, shared):
    disk = tmpfs("disk", size="4m")
    (disk / "exp").mkdir()
    _fill(disk, leave=160 * 1024)  # config.json fits, a 380 kB checkpoint does not
    before = _snapshot(disk)
    done = _sertool("train", shared.feats, shared.feats_data, disk / "exp", *TINY)
    _assert_contained(done, rf"{_e(disk / 'exp')}/model_1\.pt: No space left on device.*",
                      before, disk)
    assert not list((disk / "exp").glob("*.pt"))


def test_prepare_on_a_full_disk_keeps_the_old_data(tmpfs, tmp_path):
    src = _emodb(tmp_path / "emodb")
    disk = tmpfs("disk")
    assert _sertool("prepare", "emodb", src, disk / "data").returncode == 0
    _fill(disk, leave=12 * 1024)  # a few of the new data directory's files fit
    before = _snapshot(disk)
    done = _sertool("prepare", "emodb", src, disk / "data")
    _assert_contained(done, rf"{_e(disk / 'data')}/\S+: No space left on device", before, disk)

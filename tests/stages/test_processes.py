"""Processes of a run (issue 14): one lock per output directory, workers that end with their
parent, a dead worker named without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from corpora import make_corpus, read_all

from sertool.cli import main
from sertool.faults import KILL_ENV
from sertool.frontend.extract import SLOW_ENV, extract_feats
from sertool.lock import LOCK_NAME

SERTOOL = [sys.executable, "-m", "sertool"]
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def _cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _hold_lock(directory: Path, **kwargs: object) -> subprocess.Popen:
    """Another process that holds ``directory``'s lock until it is killed."""
    code = ("import sys, time\nfrom sertool.lock import dir_lock\n"
            f"with dir_lock({str(directory)!r}, command='sertool holder', **{kwargs!r}):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    data = make_corpus(tmp_path, n=2)
    feats = tmp_path / "feats"
    holder = _hold_lock(feats)
    try:
        refused = _cli("extract-feats", data, feats, "--no-progress")
        assert refused.exit_code == 1
        assert refused.output.startswith(
            f"sertool: error: {feats} is in use by sertool (pid {holder.pid} on "
            f"{os.uname().nodename} since ")
        assert ": sertool holder); wait for that run to end or stop it" in refused.output
        assert sorted(p.name for p in feats.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert (feats / LOCK_NAME).exists()  # a SIGKILLed run's lock file stays behind ...
    done = _cli("extract-feats", data, feats, "--no-progress")
    assert done.exit_code == 0, done.output  # ... and is taken over without a word
    assert "2 of 2 utterances extracted" in done.output
    assert not (feats / LOCK_NAME).exists()  # released at the end


def test_an_output_directory_that_is_a_file_is_one_error_line(tmp_path):
    data = make_corpus(tmp_path, n=2)
    (tmp_path / "feats").write_text("mine\n")
    result = _cli("extract-feats", data, tmp_path / "feats", "--no-progress")
    assert result.exit_code == 1
    assert result.output == f"sertool: error: {tmp_path / 'feats'}: not a directory\n"
    assert (tmp_path / "feats").read_text() == "mine\n"


def test_prepare_locks_beside_the_directory_it_replaces(tmp_path):
    src = tmp_path / "emodb" / "wav"
    src.mkdir(parents=True)
    for name in ("03a01Wa", "03a02Na", "08a01Wa", "08a02Na"):
        sf.write(src / f"{name}.wav", 0.1 * np.ones(800), 16000)
    data = tmp_path / "data"
    holder = _hold_lock(data, replaced=True)
    try:
        refused = _cli("prepare", "emodb", src.parent, data)
        assert refused.exit_code == 1
        assert f"sertool: error: {data} is in use by sertool (pid {holder.pid}" in (
            refused.output)
        assert not data.exists()
    finally:
        holder.kill()
        holder.wait()
    assert _cli("prepare", "emodb", src.parent, data).exit_code == 0
    assert (data / "wav.scp").is_file() and not (data / LOCK_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "emodb"]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """12 utterances and their features from an uninterrupted run."""
    root = tmp_path_factory.mktemp("corpus")
    data = make_corpus(root, n=12)
    return data, read_all(extract_feats(data, root / "reference", progress=False).feat_dir)


@pytest.mark.slow  # ~15 s: an interrupted and a resumed extraction with two workers each
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT],
                         ids=["SIGTERM", "SIGKILL", "SIGINT"])
def test_workers_end_with_their_parent_and_the_rerun_matches(tmp_path, corpus, sig):
    data, reference = corpus
    feats = tmp_path / "feats"
    slow = {**ENV, SLOW_ENV: "0.5"}  # each job would write for another ~2.5 s
    run = subprocess.Popen([*SERTOOL, "extract-feats", str(data), str(feats), "--nj", "2",
                            "--no-progress"], env=slow, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    arks = [feats / f"feats.{i}.ark.tmp" for i in (1, 2)]
    while not all(a.exists() and a.stat().st_size > 0 for a in arks):  # both jobs writing
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
        time.sleep(0.05)
    workers = [pid for pid in _children(run.pid) if _alive(pid)]
    assert len(workers) >= 2  # two jobs and the progress queue's process
    run.send_signal(sig)
    run.wait(timeout=30)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.05)
    before = _snapshot(feats)
    time.sleep(1.5)
    assert _snapshot(feats) == before  # nobody writes any more
    assert not (feats / "feats.scp").exists()
    assert not list(feats.glob(".done.*"))  # stopped, not waited for (Ctrl-C used to wait)

    again = subprocess.run([*SERTOOL, "extract-feats", str(data), str(feats), "--nj", "2",
                            "--no-progress"], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "12 of 12 utterances extracted" in again.stdout
    resumed = read_all(feats)
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key])


@pytest.mark.slow  # ~10 s: two spawned workers, then a rerun
def test_a_killed_worker_is_one_error_line_that_says_the_rerun_resumes(tmp_path):
    data = make_corpus(tmp_path, n=4)
    feats = tmp_path / "feats"
    # each job SIGKILLs itself after its first utterance (as the OOM killer would)
    env = {**ENV, KILL_ENV: "extract-feats:after-utt"}
    killed = subprocess.run([*SERTOOL, "extract-feats", str(data), str(feats), "--nj", "2",
                             "--no-progress"], env=env, capture_output=True, text=True)
    assert killed.returncode == 1
    assert "Traceback" not in killed.stderr
    said = "".join(line for line in killed.stderr.splitlines(keepends=True)
                   if not line.startswith("sertool: kill point "))  # the workers' last words
    assert said == (
        "sertool: error: extract: a job process was killed (by a signal, e.g. the "
        f"out-of-memory killer); job(s) 1, 2 did not finish, see {feats}/log/extract.1.log, "
        f"{feats}/log/extract.2.log; the finished jobs are kept: rerun the same command to "
        "resume\n")
    again = subprocess.run([*SERTOOL, "extract-feats", str(data), str(feats), "--nj", "2",
                            "--no-progress"], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "4 of 4 utterances extracted" in again.stdout

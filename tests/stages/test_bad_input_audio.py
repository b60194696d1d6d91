"""Audio that lies about itself or is no audio file at all (issue 23, defects 4, 7 and the paths
of 10), through the real CLI in a real process: a sample rate out of range in a WAV header, audio
longer than the limit, a wav.scp pipe with unbounded output, a directory, a device or a FIFO
given as audio, and a predict output that is a directory.

Each run is a subprocess with a wall-clock timeout and a cap on its address space, so that code
without these checks (which took 300 s and 10 GB on a 1 Hz header, or read a pipe until
MemoryError) fails the test instead of taking the machine. Every test asserts the exit status,
the whole message (file, and utterance for wav.scp entries), no traceback, inputs byte-identical
and no process left running.
"""

from __future__ import annotations

import json
import os
import re
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from battery import _snapshot
from train_helpers import tiny_bundle

SR = 16000
ROOT = Path(__file__).resolve().parents[2]
MEMORY_CAP = 4 << 30  # bytes of address space: torch needs about 3 GiB of it to import
LIMIT_ENV = "SERTOOL_MAX_AUDIO_SECONDS"
RATE_PROBLEM = ("sample rate {rate} Hz in its header is outside 8000-384000 Hz, the rates of "
                "speech recordings (a damaged header?)")


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _sertool(*args: object, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != LIMIT_ENV}  # the default limit
    environ.update(PYTHONPATH=str(ROOT), **(env or {}))
    done = subprocess.run([sys.executable, "-m", "sertool", *map(str, args)], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_cap_memory)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _tone(path: Path, seconds: float = 0.5, rate: int = SR) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), rate,
             subtype="PCM_16")
    return path


def _with_rate(path: Path, rate: int) -> Path:
    """A 0.1 s soundfile-written WAV whose ``fmt `` chunk then says ``rate`` Hz."""
    header = bytearray(_tone(path, 0.1).read_bytes())
    fmt = header.index(b"fmt ")
    struct.pack_into("<I", header, fmt + 12, rate)  # the chunk's id, size, format, channels
    struct.pack_into("<I", header, fmt + 16, rate * 2 % (1 << 32))  # bytes a second
    path.write_bytes(header)
    return path


def _data(root: Path, wav_scp: dict[str, str], segments: str | None = None) -> Path:
    """A data directory of one speaker; ``wav_scp``: recording -> wav.scp value."""
    data = root / "data"
    data.mkdir(parents=True)
    utts = sorted(wav_scp) if segments is None else [s.split()[0] for s in segments.splitlines()]
    (data / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in sorted(wav_scp.items())))
    (data / "utt2spk").write_text("".join(f"{u} spk1\n" for u in utts))
    (data / "spk2utt").write_text(f"spk1 {' '.join(utts)}\n")
    if segments is not None:
        (data / "segments").write_text(segments)
    return data


def _running_with(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (started by a test, through a pipe)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return Path(tiny_bundle(tmp_path_factory.mktemp("bundle")))


# ----------------------------------------------------------------- sample rates in the header


def test_predict_refuses_a_header_rate_out_of_range_at_once(bundle, tmp_path):
    """1 Hz and 4 Hz took 304 s and 9.9 GB (hours of audio from 3 kB); a rate near 1e9 needs a
    149 GiB resampling filter; 0 Hz and 4e9 Hz get the same message (libsndfile refuses them
    without saying why)."""
    rates = (1, 4, 0, 999_999_937, 4_000_000_000)
    files = [_with_rate(tmp_path / f"rate{r}.wav", r) for r in rates]
    before = _snapshot(tmp_path, bundle)
    done = _sertool("predict", bundle, *files, cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("predict: ")]
    assert lines == [f"sertool: {f}: {RATE_PROBLEM.format(rate=r)}"
                     for f, r in zip(files, rates, strict=True)] + [
        "0 of 5 files predicted", "sertool: error: no file could be predicted"]
    assert _snapshot(tmp_path, bundle) == before


def test_extract_feats_names_the_utterance_of_a_1_hz_header(tmp_path):
    bad = _with_rate(tmp_path / "audio" / "rate1.wav", 1)
    data = _data(tmp_path, {"spk1-u1": str(bad)})
    before = _snapshot(tmp_path)
    done = _sertool("extract-feats", data, tmp_path / "feats", "--strict", "--no-progress",
                    cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"sertool: error: extract: job 1 failed: {data}/wav.scp:1: utterance spk1-u1 ({bad}): "
        f"{RATE_PROBLEM.format(rate=1)}; see {tmp_path}/feats/log/extract.1.log")
    assert {p: d for p, d in _snapshot(tmp_path).items() if p in before} == before
    assert not list((tmp_path / "feats").glob("feats.*"))


# ----------------------------------------------------------------- the duration limit


def test_the_duration_limit_is_checked_on_the_span_read_before_decoding(tmp_path):
    """A segment under the limit of a longer recording is read; one over it fails that
    utterance only, with the limit in FEAT/failed."""
    rec = _tone(tmp_path / "audio" / "rec.wav", 2.0)
    data = _data(tmp_path, {"rec1": str(rec)},
                 segments="spk1-u1 rec1 0.0 0.6\nspk1-u2 rec1 0.0 1.8\n")
    before = _snapshot(tmp_path)
    done = _sertool("extract-feats", data, tmp_path / "feats", "--no-progress", cwd=tmp_path,
                    env={LIMIT_ENV: "1"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "feats" / "failed").read_text() == (
        f"spk1-u2\t{rec}\t1.800s of audio is longer than the limit of 1s ({LIMIT_ENV}; cut it "
        f"with a segments file, or raise the limit)\t{data}/wav.scp:1\n")
    assert [line.split()[0] for line in (tmp_path / "feats" / "feats.scp").open()] == ["spk1-u1"]
    assert {p: d for p, d in _snapshot(tmp_path).items() if p in before} == before


def test_predict_names_the_limit_and_a_limit_that_is_no_number(bundle, tmp_path):
    wav = _tone(tmp_path / "one.wav", 1.0)
    before = _snapshot(tmp_path, bundle)
    for limit, problem in (
            ("0.5", f"1.000s of audio is longer than the limit of 0.5s ({LIMIT_ENV}; cut it "
                    "with a segments file, or raise the limit)"),
            ("abc", f"{LIMIT_ENV}='abc': not a positive number of seconds")):
        done = _sertool("predict", bundle, wav, cwd=tmp_path, env={LIMIT_ENV: limit}, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            f"sertool: {wav}: {problem}", "0 of 1 files predicted",
            "sertool: error: no file could be predicted"]
    assert _snapshot(tmp_path, bundle) == before


# ----------------------------------------------------------------- a pipe that never ends


def test_a_pipe_with_unbounded_output_fails_its_utterance_and_is_stopped_whole(tmp_path):
    """``cat /dev/zero |`` grew until MemoryError (an empty reason); now it is cut at the limit's
    bytes, the utterance is in FEAT/failed with the limit, and nothing it started runs on (a
    background process in its pipeline included)."""
    good = _tone(tmp_path / "audio" / "good.wav")
    marker = tmp_path / "still-running"
    marker.write_text("")
    command = f"tail -f {marker} > /dev/null & cat /dev/zero |"
    data = _data(tmp_path, {"spk1-u1": str(good), "spk1-u2": command})
    before = _snapshot(tmp_path)
    try:
        done = _sertool("extract-feats", data, tmp_path / "feats", "--no-progress",
                        cwd=tmp_path, env={LIMIT_ENV: "1"}, timeout=60)
        left = _running_with(str(marker))
    finally:
        for pid in _running_with(str(marker)):  # what the old code left behind
            os.kill(pid, 9)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "feats" / "failed").read_text() == (
        f"spk1-u2\t{command}\tpipe output is more than 192000 bytes, the most 1s of audio may "
        f"take (48 kHz 16-bit stereo; {LIMIT_ENV} sets the seconds); the command was stopped"
        f"\t{data}/wav.scp:2\n")
    assert not left, f"left running: {left}"
    assert {p: d for p, d in _snapshot(tmp_path).items() if p in before} == before


# ----------------------------------------------------------------- paths that are no audio file


def test_predict_says_what_a_directory_device_or_fifo_is_and_never_blocks(bundle, tmp_path):
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)  # opened for reading, it would wait for a writer forever
    before = _snapshot(tmp_path, bundle)
    done = _sertool("predict", bundle, folder, "/dev/zero", fifo, cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("predict: ")]
    assert lines == [
        f"sertool: {folder}: is a directory, not an audio file",
        "sertool: /dev/zero: not a regular file (a character device); give an audio file",
        f"sertool: {fifo}: not a regular file (a FIFO); give an audio file",
        "0 of 3 files predicted", "sertool: error: no file could be predicted"]
    assert _snapshot(tmp_path, bundle) == before


def test_extract_feats_lists_what_each_wav_scp_entry_is(tmp_path):
    good = _tone(tmp_path / "audio" / "good.wav")
    folder = tmp_path / "audio" / "folder.wav"
    folder.mkdir()
    fifo = tmp_path / "audio" / "fifo.wav"
    os.mkfifo(fifo)
    data = _data(tmp_path, {"spk1-u1": str(good), "spk1-u2": str(folder), "spk1-u3": str(fifo),
                            "spk1-u4": "/dev/zero"})
    before = _snapshot(tmp_path)
    done = _sertool("extract-feats", data, tmp_path / "feats", "--no-progress", cwd=tmp_path,
                    timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "feats" / "failed").read_text() == (
        f"spk1-u2\t{folder}\tis a directory, not an audio file\t{data}/wav.scp:2\n"
        f"spk1-u3\t{fifo}\tnot a regular file (a FIFO); give an audio file\t{data}/wav.scp:3\n"
        "spk1-u4\t/dev/zero\tnot a regular file (a character device); give an audio file"
        f"\t{data}/wav.scp:4\n")
    assert {p: d for p, d in _snapshot(tmp_path).items() if p in before} == before


def test_extract_feats_names_the_wav_scp_line_of_each_audio_failure(tmp_path):
    """An unreadable recording is named by its wav.scp line (through segments), besides the
    utterance and the path, on stderr, in FEAT/failed, in the job's log and in --strict's error;
    the other utterances are still extracted (before, the line was nowhere)."""
    good = _tone(tmp_path / "audio" / "good.wav", 2.0)
    corrupt = tmp_path / "audio" / "corrupt.wav"
    corrupt.write_text("not audio at all\n" * 50)
    gone = tmp_path / "audio" / "gone.wav"
    data = _data(tmp_path, {"rec1": str(good), "rec2": str(corrupt), "rec3": str(gone)},
                 segments="spk1-u1 rec1 0.0 0.9\nspk1-u2 rec2 0.0 1.0\nspk1-u3 rec1 1.0 1.9\n"
                          "spk1-u4 rec3 0.0 1.0\n")
    before = _snapshot(tmp_path)
    done = _sertool("extract-feats", data, tmp_path / "feats", "--nj", "2", "--no-progress",
                    cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    decode = r"cannot decode audio \(Error opening '[^']+': [^\t\n]+\)"
    assert re.fullmatch(
        re.escape(f"{data}/wav.scp:2: utterance spk1-u2 ({corrupt}): ") + decode
        + re.escape(" (skipped)\n" f"{data}/wav.scp:3: utterance spk1-u4 ({gone}): audio file "
                    "not found (skipped)\n"), done.stderr), done.stderr
    assert done.stdout.startswith(f"{tmp_path}/feats: 2 of 4 utterances extracted"), done.stdout
    assert re.fullmatch(
        re.escape(f"spk1-u2\t{corrupt}\t") + decode + re.escape(f"\t{data}/wav.scp:2\n"
                                                              f"spk1-u4\t{gone}\taudio file not "
                                                              f"found\t{data}/wav.scp:3\n"),
        (tmp_path / "feats" / "failed").read_text()), (tmp_path / "feats" / "failed").read_text()
    logs = "".join(p.read_text() for p in sorted((tmp_path / "feats" / "log").glob("*.log")))
    assert f"FAILED {data}/wav.scp:2: utterance spk1-u2 ({corrupt}): cannot decode" in logs
    assert f"FAILED {data}/wav.scp:3: utterance spk1-u4 ({gone}): audio file not found" in logs
    assert [line.split()[0] for line in (tmp_path / "feats" / "feats.scp").open()] == [
        "spk1-u1", "spk1-u3"]  # nothing else lost
    assert {p: d for p, d in _snapshot(tmp_path).items() if p in before} == before

    strict = _sertool("extract-feats", data, tmp_path / "strict", "--strict", "--no-progress",
                      cwd=tmp_path, timeout=120)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr, strict.stderr
    assert re.fullmatch(
        re.escape(f"sertool: error: extract: job 1 failed: {data}/wav.scp:2: utterance spk1-u2 "
                  f"({corrupt}): ") + decode
        + re.escape(f"; see {tmp_path}/strict/log/extract.1.log"),
        strict.stderr.strip().splitlines()[-1]), strict.stderr


def _one_fold(data: Path, train: list[str], test: list[str]) -> None:
    """Speakers spk1 (``train``) and spk2 (``test``) and fold 1 of them in ``data``."""
    utts = {"spk1": train, "spk2": test}
    (data / "utt2spk").write_text("".join(f"{u} {s}\n" for s, us in utts.items() for u in us))
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in utts.items()))
    (data / "folds" / "1").mkdir(parents=True)
    (data / "folds" / "1" / "train").write_text("".join(f"{u}\n" for u in train))
    (data / "folds" / "1" / "test").write_text("".join(f"{u}\n" for u in test))
    (data / "folds" / "protocol.json").write_text('{"name": "by hand", "folds": ["1"]}')


def test_check_folds_does_not_block_on_a_fifo_or_hash_a_damaged_header(tmp_path):
    good = _tone(tmp_path / "audio" / "good.wav")
    fifo = tmp_path / "audio" / "fifo.wav"
    os.mkfifo(fifo)
    bad = _with_rate(tmp_path / "audio" / "rate1.wav", 1)
    data = _data(tmp_path, {"spk1-u1": str(fifo), "spk1-u2": str(bad), "spk2-u3": str(good)})
    _one_fold(data, ["spk1-u1", "spk1-u2"], ["spk2-u3"])
    before = _snapshot(tmp_path)
    done = _sertool("check-folds", data, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == [
        "2 utterances could not be read for the audio comparison (not compared):",
        f"  {data}/wav.scp:1: utterance spk1-u1 ({fifo}): not a regular file (a FIFO); give an "
        "audio file",
        f"  {data}/wav.scp:2: utterance spk1-u2 ({bad}): {RATE_PROBLEM.format(rate=1)}"]
    assert {p: d for p, d in _snapshot(tmp_path).items() if p in before} == before


def test_check_folds_says_why_each_utterance_could_not_be_hashed(tmp_path):
    """Each utterance left out of the audio comparison is named with its wav.scp line (through
    segments) and why: missing, a directory, not audio, a pipe (never run by a check), a
    segment past the end. Before, only the count and the first utterance's name were given."""
    good = _tone(tmp_path / "audio" / "good.wav")
    folder = tmp_path / "audio" / "folder.wav"
    folder.mkdir()
    notes = tmp_path / "audio" / "notes.wav"
    notes.write_text("these are my notes\n")
    gone = tmp_path / "audio" / "gone.wav"
    pipe = f"cat {good} |"
    data = _data(tmp_path, {"r1": str(good), "r2": str(folder), "r3": str(notes),
                            "r4": str(gone), "r5": pipe},
                 segments="spk1-u1 r1 0.0 0.5\nspk1-u2 r2 0.0 1.0\nspk1-u3 r3 0.0 1.0\n"
                          "spk2-u4 r4 0.0 1.0\nspk2-u5 r5 0.0 1.0\nspk2-u6 r1 0.2 3.0\n"
                          "spk2-u7 r1 0.0 0.5\n")
    _one_fold(data, ["spk1-u1", "spk1-u2", "spk1-u3"], ["spk2-u4", "spk2-u5", "spk2-u6", "spk2-u7"])
    before = _snapshot(tmp_path)
    done = _sertool("check-folds", data, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    # spk2-u7 is spk1-u1's audio: still found, the unreadable ones aside
    assert lines[0] == ("LEAKING (identical audio): 1 identical recordings on both sides in 1 "
                        "of 1 folds (e.g. fold 1: spk1-u1 = spk2-u7) [protocol by hand]")
    where = f"{data}/wav.scp"
    assert lines[-6:] == [
        "5 utterances could not be read for the audio comparison (not compared):",
        f"  {where}:2: utterance spk1-u2 ({folder}): is a directory, not an audio file",
        f"  {where}:3: utterance spk1-u3 ({notes}): cannot decode audio (Error opening "
        f"'{notes}': Format not recognised.)",
        f"  {where}:4: utterance spk2-u4 ({gone}): audio file not found",
        f"  {where}:5: utterance spk2-u5 ({pipe}): a pipe command: not run for the audio "
        "comparison",
        f"  {where}:1: utterance spk2-u6 ({good}): segment end 3.0s is past the end of the audio "
        "(0.500s)"]
    as_json = json.loads(_sertool("check-folds", data, "--json", cwd=tmp_path, timeout=60).stdout)
    assert as_json["unhashed"] == ["spk1-u2", "spk1-u3", "spk2-u4", "spk2-u5", "spk2-u6"]
    assert as_json["unhashed_reasons"]["spk2-u4"] == (
        f"{where}:4: utterance spk2-u4 ({gone}): audio file not found")
    after = _snapshot(tmp_path)
    assert {p: d for p, d in after.items() if p in before} == before
    assert [os.path.relpath(p, tmp_path) for p in after if p not in before] == [
        "data/.audio_hashes.json"]  # the cache of the hashes made


def test_predict_refuses_an_output_that_is_a_directory_before_any_work(bundle, tmp_path):
    wav = _tone(tmp_path / "one.wav")
    out = tmp_path / "out.csv"
    out.mkdir()
    (out / "mine.txt").write_text("kept\n")
    before = _snapshot(tmp_path, bundle)
    done = _sertool("predict", bundle, wav, "-o", out, cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (f"sertool: error: {out}: is a directory; give the file to write the "
                           "predictions to\n")
    assert done.stdout == ""  # nothing predicted
    assert _snapshot(tmp_path, bundle) == before  # no out.csv.partial either

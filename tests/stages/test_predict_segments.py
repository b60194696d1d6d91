"""`sertool predict --segments` (issue 22): emotion over time in a long recording. A recording
made of RAVDESS utterances joined with 2 s silences is cut by the bundle's VAD where the
utterances are, each segment is classified as its audio alone, fixed windows cover the file,
and the outputs (CSV, JSON with a summary per file, a data dir, a timeline PNG) are usable."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from signals import SR, voiced, with_noise
from train_helpers import tiny_bundle

from sertool.cli import main
from sertool.segments import fixed_windows, split_long, time_per_class

# One actor (one recording chain, as in a call), four emotions: neutral, happy, sad, angry.
UTTERANCES = ["03-01-01-01-01-01-01", "03-01-03-02-01-01-01", "03-01-04-02-01-01-01",
              "03-01-05-02-01-01-01"]
GAP = 2 * SR


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("segments"))


@pytest.fixture(scope="module")
def joined(tmp_path_factory, ravdess_dir):
    """The utterances (16 kHz FLAC, 16-bit: written back bit-exactly) and the recording made
    of them with 2 s of digital silence between; the sample span of each inside it."""
    root = tmp_path_factory.mktemp("joined")
    actor = ravdess_dir / "Audio_Speech_Actors_01-24" / "Actor_01"
    parts, spans, n = [], [], 0
    for i, name in enumerate(UTTERANCES):
        wave, rate = sf.read(actor / f"{name}.flac", dtype="float32")
        assert rate == SR
        if i:
            parts.append(np.zeros(GAP, np.float32))
            n += GAP
        spans.append((n, n + len(wave)))
        parts.append(wave)
        n += len(wave)
        sf.write(root / f"{name}.flac", wave, SR, subtype="PCM_16")
    sf.write(root / "call.flac", np.concatenate(parts), SR, subtype="PCM_16")
    return root, spans


def _run(*args: str):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.shared_data
def test_vad_segments_are_the_utterances(bundle, joined, tmp_path):
    root, spans = joined
    result = _run(bundle, root / "call.flac", "--segments", "vad", "-o", tmp_path / "call.json")
    assert result.exit_code == 0, result.output
    [entry] = _json(tmp_path / "call.json")["files"]
    got = [(s["start"], s["end"]) for s in entry["segments"]]
    # the speech inside each utterance as the same VAD finds it in the utterance alone
    expected = []
    for name, (first, _) in zip(UTTERANCES, spans, strict=True):
        alone = _run(bundle, root / f"{name}.flac", "--segments", "vad", "-o",
                     tmp_path / f"{name}.json")
        assert alone.exit_code == 0, alone.output
        segs = _json(tmp_path / f"{name}.json")["files"][0]["segments"]
        assert segs, name
        expected.append((first / SR + segs[0]["start"], first / SR + segs[-1]["end"]))
    assert len(got) == len(expected), (got, expected)
    for (start, end), (want_start, want_end) in zip(got, expected, strict=True):
        assert start == pytest.approx(want_start, abs=0.2)
        assert end == pytest.approx(want_end, abs=0.2)
    # the summary: every segment's time once, shares summing to 1
    summary = entry["summary"]
    assert summary["speech_s"] == pytest.approx(sum(e - s for s, e in got), abs=1e-4)
    assert sum(summary["share"].values()) == pytest.approx(1.0, abs=1e-5)
    assert summary["dominant"] == max(summary["share"], key=summary["share"].get)


@pytest.mark.shared_data
def test_segments_file_gives_each_utterance_its_own_prediction(bundle, joined, tmp_path):
    root, spans = joined
    segments = tmp_path / "segments"
    # exact sample boundaries: n / 16000 in full, which round(t * 16000) gives back
    segments.write_text("".join(f"utt{i} call {a / SR!r} {b / SR!r}\n"
                                for i, (a, b) in enumerate(spans)))
    out, data, png = tmp_path / "call.json", tmp_path / "data", tmp_path / "call.png"
    result = _run(bundle, root / "call.flac", "--segments", segments, "-o", out,
                  "--data-out", data, "--plot", png, "--summary-out", tmp_path / "sum.csv")
    assert result.exit_code == 0, result.output
    [entry] = _json(out)["files"]
    assert [s["segment"] for s in entry["segments"]] == [f"utt{i}" for i in range(4)]
    for seg, name in zip(entry["segments"], UTTERANCES, strict=True):
        alone = _run(bundle, root / f"{name}.flac", "-o", tmp_path / f"{name}.json")
        assert alone.exit_code == 0, alone.output
        probs = _json(tmp_path / f"{name}.json")["results"][0]["probs"]
        for c in probs:
            assert seg["probs"][c] == pytest.approx(probs[c], abs=1e-5), (name, c)
    # the data dir validates and says what was predicted
    check = CliRunner().invoke(main, ["validate-data-dir", str(data)])
    assert check.exit_code == 0, check.output
    utt2emo = dict(line.split() for line in (data / "utt2emo").read_text().splitlines())
    assert utt2emo == {s["segment"]: s["pred"] for s in entry["segments"]}
    assert (data / "wav.scp").read_text() == f"call {(root / 'call.flac').resolve()}\n"
    seg_lines = [line.split() for line in (data / "segments").read_text().splitlines()]
    assert [(round(float(a) * SR), round(float(b) * SR)) for _, _, a, b in seg_lines] == spans
    # the summary CSV: one row, the shares of the speech time
    [row] = list(csv.DictReader(io.StringIO((tmp_path / "sum.csv").read_text())))
    assert float(row["speech_s"]) == pytest.approx(sum(b - a for a, b in spans) / SR, abs=1e-3)
    assert row["dominant"] == entry["summary"]["dominant"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory):
    """7.3 s of voiced bursts with pauses (synthetic: no shared data needed)."""
    rng = np.random.default_rng(3)
    parts = []
    while sum(map(len, parts)) < 7.3 * SR:
        parts += [voiced(0.8, rng), np.zeros(int(0.9 * SR), np.float32)]
    path = tmp_path_factory.mktemp("fixed") / "talk.wav"
    sf.write(path, with_noise(parts, rng)[: int(7.3 * SR)], SR)
    return path


@pytest.mark.parametrize(("spec", "starts"), [
    ("fixed:2", [0, 2, 4, 5.3]), ("fixed:2:1.5", [0, 1.5, 3, 4.5, 5.3])])
def test_fixed_windows_cover_the_file(bundle, speech_file, tmp_path, spec, starts):
    out = tmp_path / "talk.csv"
    result = _run(bundle, speech_file, "--segments", spec, "-o", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    spans = [(float(r["start"]), float(r["end"])) for r in rows]
    assert [s for s, _ in spans] == pytest.approx(starts)
    assert all(e - s == pytest.approx(2.0) for s, e in spans)
    assert spans[-1][1] == 7.3  # the last window ends at the end of the file
    covered = np.zeros(730, bool)  # 10 ms cells
    for s, e in spans:
        covered[round(s * 100):round(e * 100)] = True
    assert covered.all()
    assert all(r["pred"] in ("ang", "hap", "neu", "sad") and r["error"] == "" for r in rows)
    # the summary counts each instant once although the windows overlap
    assert "talk.wav: 7.3s in" in result.stderr


def test_time_is_counted_once_and_long_runs_are_cut():
    # overlapping windows: each instant to the nearest window centre (the middle of a window)
    shares = time_per_class([(0, 2, "a"), (1.5, 3.5, "b"), (3, 5, "a")])
    assert shares == pytest.approx({"a": 1.75 + 1.75, "b": 1.5})
    assert sum(shares.values()) == pytest.approx(5.0)
    # a 25 s run: the fewest equal pieces of at most 10 s that overlap by 1 s
    assert split_long([(1.0, 26.0)], 10.0, 1.0) == [(1.0, 10.0), (9.0, 18.0), (17.0, 26.0)]
    assert split_long([(0.0, 4.0)], 10.0, 1.0) == [(0.0, 4.0)]
    assert fixed_windows(1.5, 2.0, 2.0) == [(0.0, 1.5)]


def test_bad_segmentations_are_named(bundle, speech_file, tmp_path):
    def error(*args: str) -> str:
        result = _run(bundle, speech_file, *args)
        assert result.exit_code == 1, result.output
        return result.stderr

    segments = tmp_path / "segments"
    segments.write_text("a talk 0.0 1.0\nb talk 2.0 2.0\n")
    assert f"{segments}:2: segment b: need 0 <= start < end, got 2.0 2.0" in error(
        "--segments", str(segments))
    segments.write_text("a talk 0.0 1.0\nb other 2.0 3.0\n")
    assert f"{segments}:2: recording 'other' is none of the audio files given" in error(
        "--segments", str(segments))
    segments.write_text("a talk.wav 0.0 1.0\nb talk 2.0 x\n")
    assert f"{segments}:2: start and end must be seconds" in error("--segments", str(segments))
    assert "--segments fixed:0: window length and hop must be > 0 seconds, got W=0" in error(
        "--segments", "fixed:0")
    assert "got H=-1" in error("--segments", "fixed:2:-1")
    assert "not vad, fixed:W[:H] or a segments file" in error("--segments", "vda")
    assert "--plot needs --segments" in error("--plot", str(tmp_path / "x.png"))
    assert "--max-segment: options of --segments vad" in error(
        "--segments", "fixed:2", "--max-segment", "5")
    assert "must be shorter than --max-segment" in error(
        "--segments", "vad", "--segment-overlap", "3", "--max-segment", "2")
    # a segment past the end of the audio: that segment's error, the others are predicted
    segments.write_text("a talk 0.0 1.0\nb talk 7.0 9.5\n")
    result = _run(bundle, speech_file, "--segments", str(segments))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["pred"] and not rows[0]["error"]
    assert rows[1]["pred"] == "" and f"{segments}:2: segment b ends at 9.5s" in rows[1]["error"]


def test_stdin_gives_the_rows_of_the_file(bundle, speech_file):
    by_file = _run(bundle, speech_file, "--segments", "vad")
    assert by_file.exit_code == 0, by_file.output
    piped = CliRunner().invoke(main, ["predict", str(bundle), "-", "--segments", "vad"],
                               input=speech_file.read_bytes())
    assert piped.exit_code == 0, piped.output
    rows = [r.split(",", 1) for r in by_file.stdout.splitlines()[1:]]
    piped_rows = [r.split(",", 1) for r in piped.stdout.splitlines()[1:]]
    assert len(rows) > 1 and {f for f, _ in piped_rows} == {"-"}
    # the same segments (ids named by the recording: stdin) and probabilities
    assert [r.replace("talk-", "stdin-", 1) for _, r in rows] == [r for _, r in piped_rows]
    whole = CliRunner().invoke(main, ["predict", str(bundle), "-"],
                               input=speech_file.read_bytes())
    assert whole.exit_code == 0, whole.output
    file_row = _run(bundle, speech_file).stdout.splitlines()[1].split(",", 1)[1]
    assert whole.stdout.splitlines()[1].split(",", 1)[1] == file_row
    twice = _run(bundle, "-", "-")
    assert twice.exit_code == 1 and "- (standard input) can be given once" in twice.stderr
    empty = CliRunner().invoke(main, ["predict", str(bundle), "-"], input=b"")
    assert empty.exit_code == 1 and "- (standard input): no data" in empty.stderr

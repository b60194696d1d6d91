"""Too-short, silent and clipped audio (issue 14): extract-feats flags or fails them, never stores
all-zero features; predict still answers but says why the answer is doubtful."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from signals import SR, voiced, with_noise
from train_helpers import tiny_bundle

from sertool.cli import main
from sertool.datadir import DataDir


def _write_cases(root: Path) -> dict[str, Path]:
    """One file per case; ``speech`` is a normal utterance (0.3 s silence, 1 s voice, 0.3 s)."""
    rng = np.random.default_rng(0)
    pad = np.zeros(int(0.3 * SR), np.float32)
    speech = with_noise([pad, voiced(1.0, rng), pad], rng)
    waves = {
        "speech": speech,
        "short005": speech[int(0.4 * SR):int(0.45 * SR)],  # 0.05 s: 3 frames
        "oneframe": speech[int(0.4 * SR):int(0.4 * SR) + 400],  # 25 ms: exactly 1 frame
        "zeros": np.zeros(SR, np.float32),
        "dc": np.full(SR, 0.3, np.float32),
        "clipped": np.clip(30 * speech, -1, 1),
    }
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, wave in waves.items():
        paths[name] = root / f"{name}.wav"
        sf.write(paths[name], wave, SR, subtype="FLOAT")
    return paths


def test_extract_feats_flags_short_and_fails_silent_audio(tmp_path):
    paths = _write_cases(tmp_path / "wav")
    wav_scp = {f"s-{name}": str(path) for name, path in paths.items()}
    data = tmp_path / "data"
    DataDir(wav_scp=wav_scp, utt2spk={u: "s" for u in wav_scp}).save(data)
    feat_dir = tmp_path / "feats"
    result = CliRunner().invoke(main, ["extract-feats", str(data), str(feat_dir),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    # silent audio and a single frame (all zero after segment CMVN) are failures, named
    failed = {line.split("\t")[0]: line.split("\t")[2]
              for line in (feat_dir / "failed").read_text().splitlines()}
    assert sorted(failed) == ["s-dc", "s-oneframe", "s-zeros"]
    assert failed["s-zeros"].startswith("silent: no signal: every sample is 0 ")
    assert failed["s-dc"].startswith("silent: no signal: every sample is 0.3")
    assert "features are all zero (1 frame(s) after VAD" in failed["s-oneframe"]
    # the 0.05 s utterance is kept whole and flagged, as the README says
    stats = {line.split()[0]: line.split()[1:]
             for line in (feat_dir / "vad_stats").read_text().splitlines()}
    assert stats["s-short005"] == ["3", "3", "too_short", "vad_fallback"]
    assert stats["s-clipped"][2:] == ["clipped"]
    assert len(stats["s-speech"]) == 2  # no flag: 1.6 s of audio, VAD keeps the voice
    log = (feat_dir / "log" / "extract.1.log").read_text()
    assert "WARNING utterance s-short005" in log and "too_short: 0.050 s: 3 frame(s)" in log
    assert ("3 of 6 utterances extracted (0 job(s) already done); VAD kept too little in 1 "
            "utterance(s), kept whole") in result.output
    assert "flagged in vad_stats: 1 clipped, 1 too_short; 3 FAILED" in result.output
    feats = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(feat_dir / "feats.scp")).items()}
    assert sorted(feats) == ["s-clipped", "s-short005", "s-speech"]
    assert all(np.abs(mat).max() > 0.1 for mat in feats.values())  # nothing all zero stored


def test_too_little_speech_can_fail_instead(tmp_path):
    paths = _write_cases(tmp_path / "wav")
    data = tmp_path / "data"
    DataDir(wav_scp={"s-short005": str(paths["short005"]), "s-speech": str(paths["speech"])},
            utt2spk={"s-short005": "s", "s-speech": "s"}).save(data)
    result = CliRunner().invoke(main, ["extract-feats", str(data), str(tmp_path / "feats"),
                                       "--no-progress", "--set", 'vad.on_too_little="fail"'])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "feats" / "failed").read_text() == (
        f"s-short005\t{paths['short005']}\tVAD kept 1 of 3 frames (fewer than "
        f"vad.min_kept_frames=20)\t{data}/wav.scp:1\n")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("signal")
    return tiny_bundle(root), _write_cases(root / "wav")


def test_predict_warns_about_silent_short_and_clipped_audio(cases):
    bundle, paths = cases
    names = ["speech", "zeros", "dc", "short005", "oneframe", "clipped"]
    result = CliRunner().invoke(main, ["predict", str(bundle),
                                       *(str(paths[n]) for n in names)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    header = result.stdout.splitlines()[0].split(",")
    assert header == ["file", "pred", "ang", "hap", "neu", "sad", "entropy", "max_prob",
                      "duration_s", "error", "warning"]
    warnings = {Path(r["file"]).stem: r["warning"] for r in rows}
    assert warnings == {"speech": "", "zeros": "silent;vad_fallback", "dc": "silent;vad_fallback",
                        "short005": "too_short;vad_fallback",
                        "oneframe": "too_short;vad_fallback", "clipped": "clipped"}
    assert all(r["pred"] in ("ang", "hap", "neu", "sad") and r["error"] == "" for r in rows)
    stderr = result.stderr
    assert f"sertool: warning: {paths['zeros']}: silent (no signal: every sample is 0 " in stderr
    assert (f"sertool: warning: {paths['short005']}: too_short (0.050 s: 3 frame(s), fewer "
            "than 20)") in stderr
    assert f"sertool: warning: {paths['clipped']}: clipped (" in stderr
    assert str(paths["speech"]) not in stderr
    assert "6 of 6 files predicted, 5 with a warning" in stderr
    for r in rows:  # entropy over log 4 and the max probability, from the row's probabilities
        probs = np.array([float(r[c]) for c in ("ang", "hap", "neu", "sad")])
        assert float(r["max_prob"]) == pytest.approx(probs.max(), abs=1e-6)
        h = -(probs[probs > 0] * np.log(probs[probs > 0])).sum() / np.log(4)
        assert float(r["entropy"]) == pytest.approx(h, abs=1e-5)


def test_predict_min_confidence_flags_and_keeps_the_row(cases):
    bundle, paths = cases
    speech = str(paths["speech"])
    plain = list(csv.DictReader(io.StringIO(CliRunner().invoke(
        main, ["predict", str(bundle), speech]).stdout)))[0]
    top = float(plain["max_prob"])
    above = CliRunner().invoke(main, ["predict", str(bundle), speech, "--min-confidence",
                                      f"{top + 0.01:.3f}"])
    row = list(csv.DictReader(io.StringIO(above.stdout)))[0]
    assert row["warning"] == "low_confidence" and row["pred"] == plain["pred"]
    assert f"low_confidence (max probability {top:.3f} below {top + 0.01:.3f})" in above.stderr
    below = CliRunner().invoke(main, ["predict", str(bundle), speech, "--min-confidence",
                                      f"{top - 0.01:.3f}"])
    assert list(csv.DictReader(io.StringIO(below.stdout)))[0]["warning"] == ""


def test_predict_json_carries_the_warnings(cases, tmp_path):
    import json

    bundle, paths = cases
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["predict", str(bundle), str(paths["short005"]),
                                       str(paths["speech"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())["results"]
    assert sorted(results[0]["warnings"]) == ["too_short", "vad_fallback"]
    assert results[1]["warnings"] == {}

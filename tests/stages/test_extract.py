"""extract-feats: archives, resumability after a kill, bad input, the real RAVDESS corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from corpora import make_corpus, read_all
from signals import voiced, with_noise

from sertool.datadir import DataDir
from sertool.faults import KILL_ENV
from sertool.frontend.extract import ExtractError, extract_feats, extract_wavs
from sertool.frontend.pipeline import Frontend

SR = 16000
SERTOOL = [sys.executable, "-m", "sertool"]


def test_extract_writes_consistent_archives(tmp_path):
    data = make_corpus(tmp_path)
    result = extract_feats(data, tmp_path / "feats", nj=2, progress=False)
    assert result.n_extracted == 12 and not result.failed
    feats = read_all(tmp_path / "feats")
    assert sorted(feats) == DataDir.load(data).utts
    for mat in feats.values():
        assert mat.shape[1] == 128 and mat.dtype == np.float32
        np.testing.assert_allclose(mat.mean(axis=0), 0, atol=1e-3)
        np.testing.assert_allclose(mat.std(axis=0), 1, atol=1e-2)
    frames = dict(line.split() for line in open(tmp_path / "feats" / "utt2num_frames"))
    assert {u: int(n) for u, n in frames.items()} == {u: m.shape[0] for u, m in feats.items()}
    # VAD dropped the padding: fewer frames kept than read.
    stats = [line.split() for line in open(tmp_path / "feats" / "vad_stats")]
    assert all(int(kept) < int(n_in) for _, n_in, kept, *_ in stats)
    assert (tmp_path / "feats" / "log" / "extract.1.log").is_file()
    # An independent Kaldi reader sees exactly the same matrices.
    import kaldi_io

    for ark in sorted((tmp_path / "feats").glob("feats.*.ark")):
        for key, mat in kaldi_io.read_mat_ark(str(ark)):
            np.testing.assert_array_equal(mat, feats[key])


@pytest.mark.slow  # ~20 s: two full extractions and a killed one
def test_killed_run_resumes_to_identical_output(tmp_path):
    data = make_corpus(tmp_path, n=16)
    reference = tmp_path / "reference"
    extract_feats(data, reference, nj=4, progress=False)

    resumed = tmp_path / "resumed"
    # each job (its own process) SIGKILLs itself after its second utterance
    env = {**os.environ, KILL_ENV: "extract-feats:after-utt:2"}
    killed = subprocess.run([*SERTOOL, "extract-feats", str(data), str(resumed), "--nj", "4",
                             "--no-progress"], env=env, capture_output=True, text=True)
    assert killed.returncode != 0
    assert not (resumed / "feats.scp").exists()
    assert list(resumed.glob("feats.*.ark.tmp")), "the kill should leave half-written archives"
    again = subprocess.run([*SERTOOL, "extract-feats", str(data), str(resumed), "--nj", "4",
                            "--no-progress"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "16 of 16" in again.stdout
    ref, out = read_all(reference), read_all(resumed)
    assert ref.keys() == out.keys()
    for key in ref:
        np.testing.assert_array_equal(ref[key], out[key])
    # A third run finds every job done and redoes nothing.
    third = extract_feats(data, resumed, nj=4, progress=False)
    assert third.jobs_skipped == 4


def test_extraction_without_wave_augment_does_not_load_torch(tmp_path):
    # Every job is a fresh process (and with --nj 1 the job runs in the command's own):
    # torch would add ~600 MB and ~1 s to each of them. Checked through the CLI, as users run it.
    data = make_corpus(tmp_path, n=2)
    code = ("import sys\n"
            "from sertool.cli import main\n"
            f"main(['extract-feats', {str(data)!r}, {str(tmp_path / 'feats')!r}, "
            "'--no-progress'], standalone_mode=False)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "feats" / "feats.scp").is_file()
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_other_frontend_config_is_refused(tmp_path):
    data = make_corpus(tmp_path, n=4)
    extract_feats(data, tmp_path / "feats", progress=False)
    with pytest.raises(ExtractError, match="another front-end configuration"):
        extract_feats(data, tmp_path / "feats", progress=False,
                      overrides=["vad.hangover_ms=300"])


def test_conversation_cmvn_normalises_per_conversation(tmp_path):
    data = make_corpus(tmp_path, n=6)
    d = DataDir.load(data)
    d.utt2conv = {u: f"conv{i % 2}" for i, u in enumerate(d.utts)}
    d.save(data)
    extract_feats(data, tmp_path / "feats", nj=2, progress=False,
                  overrides=["cmvn.mode=conversation"])
    feats = read_all(tmp_path / "feats")
    for conv in ("conv0", "conv1"):
        stacked = np.concatenate([feats[u] for u, c in d.utt2conv.items() if c == conv])
        np.testing.assert_allclose(stacked.mean(axis=0), 0, atol=1e-3)
    # Single utterances are no longer normalised on their own.
    assert max(abs(m.mean(axis=0)).max() for m in feats.values()) > 0.05


def write_bad_inputs(root: Path) -> dict[str, str]:
    """One file per kind of bad input; returns utt -> path."""
    bad = {}
    root.mkdir(parents=True, exist_ok=True)
    bad["bad-missing"] = str(root / "does_not_exist.wav")
    (root / "empty.wav").write_bytes(b"")
    bad["bad-empty"] = str(root / "empty.wav")
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage garbage")
    bad["bad-corrupt"] = str(root / "corrupt.wav")
    (root / "notes.flac").write_text("not audio at all\n" * 50)
    bad["bad-text"] = str(root / "notes.flac")
    sf.write(root / "nan.wav", np.array([0.1, np.inf] * 4000, np.float32), SR, subtype="FLOAT")
    bad["bad-nan"] = str(root / "nan.wav")
    sf.write(root / "short.wav", np.zeros(200, np.float32), SR)
    bad["bad-short"] = str(root / "short.wav")
    return bad


def test_bad_inputs_are_listed_and_the_rest_survive(tmp_path):
    data = make_corpus(tmp_path, n=4)
    d = DataDir.load(data)
    bad = write_bad_inputs(tmp_path / "bad")
    d.wav_scp.update(bad)
    d.utt2spk.update({u: "bad" for u in bad})
    d.save(data)
    result = extract_feats(data, tmp_path / "feats", nj=2, progress=False)
    assert result.n_extracted == 4
    failed = {f.utt: (f.source, f.reason) for f in result.failed}
    assert set(failed) == set(bad)
    for utt, (src, reason) in failed.items():
        assert src == bad[utt] and reason
    assert "not found" in failed["bad-missing"][1]
    assert "NaN or infinite" in failed["bad-nan"][1]
    assert "shorter than one frame" in failed["bad-short"][1]
    listed = (tmp_path / "feats" / "failed").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(bad)
    assert set(read_all(tmp_path / "feats")) == set(DataDir.load(data).utts) - set(bad)

    cli = subprocess.run([*SERTOOL, "extract-feats", str(data), str(tmp_path / "strict"),
                          "--strict", "--no-progress"], capture_output=True, text=True)
    assert cli.returncode != 0
    assert "bad-corrupt" in cli.stderr and bad["bad-corrupt"] in cli.stderr


def test_vad_that_keeps_nothing(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "noise.wav"
    sf.write(path, rng.normal(0, 0.01, SR).astype(np.float32), SR)
    data = tmp_path / "data"
    DataDir(wav_scp={"n-1": str(path)}, utt2spk={"n-1": "n"}).save(data)
    kept = extract_feats(data, tmp_path / "keep", progress=False)
    assert kept.vad_fallback == ["n-1"] and kept.n_extracted == 1
    assert "vad_fallback" in (tmp_path / "keep" / "vad_stats").read_text()
    assert "VAD kept only" in (tmp_path / "keep" / "log" / "extract.1.log").read_text()
    with pytest.raises(ExtractError, match="every utterance failed.*VAD kept"):
        extract_feats(data, tmp_path / "fail", progress=False,
                      overrides=['vad.on_too_little="fail"'])


def test_all_failed_exits_non_zero(tmp_path):
    bad = write_bad_inputs(tmp_path / "bad")
    data = tmp_path / "data"
    DataDir(wav_scp=bad, utt2spk={u: "bad" for u in bad}).save(data)
    cli = subprocess.run([*SERTOOL, "extract-feats", str(data), str(tmp_path / "feats"),
                          "--no-progress"], capture_output=True, text=True)
    assert cli.returncode == 1
    assert "every utterance failed" in cli.stderr


def test_extract_loose_wav_files(tmp_path):
    rng = np.random.default_rng(6)
    wave = with_noise([np.zeros(4000, np.float32), voiced(0.6, rng)], rng)
    sf.write(tmp_path / "x.wav", wave, SR, subtype="FLOAT")  # exact samples
    sf.write(tmp_path / "y.flac", wave, SR)  # 16-bit
    result = extract_wavs([tmp_path / "x.wav", tmp_path / "y.flac"], tmp_path / "out",
                          progress=False)
    assert result.n_extracted == 2
    feats = read_all(tmp_path / "out")
    expected, _ = Frontend().process(wave)
    np.testing.assert_allclose(feats["x"], expected, atol=1e-5)
    assert feats["y"].shape == expected.shape
    assert np.corrcoef(feats["y"].ravel(), expected.ravel())[0, 1] > 0.99


@pytest.mark.shared_data
@pytest.mark.slow
def test_whole_ravdess_corpus(tmp_path, ravdess_dir):
    from sertool.corpora import prepare

    prepare("ravdess", ravdess_dir, tmp_path / "data", progress=False)
    result = extract_feats(tmp_path / "data", tmp_path / "feats", nj=2, progress=False)
    assert result.n_extracted == 1440 and not result.failed
    feats = read_all(tmp_path / "feats")
    assert len(feats) == 1440
    raw_sum = np.zeros(128)
    raw_sq = np.zeros(128)
    n = 0
    for mat in feats.values():
        assert mat.shape[1] == 128 and mat.shape[0] >= 20
        np.testing.assert_allclose(mat.mean(axis=0), 0, atol=1e-3)
        np.testing.assert_allclose(mat.std(axis=0), 1, atol=1e-2)
        raw_sum += mat.sum(axis=0)
        raw_sq += (mat ** 2).sum(axis=0)
        n += mat.shape[0]
    # No mel channel is constant over the corpus (after CMVN a constant channel would be 0).
    assert ((raw_sq / n - (raw_sum / n) ** 2) > 0.5).all()
    kept = [line.split() for line in open(tmp_path / "feats" / "vad_stats")]
    ratio = sum(int(k[2]) for k in kept) / sum(int(k[1]) for k in kept)
    assert 0.3 < ratio < 0.9  # RAVDESS: ~1 s of silence around ~2 s sentences


@pytest.mark.slow  # ~13 s: three waveform copies of every utterance
def test_wave_augment_writes_copies_beside_unchanged_originals(tmp_path):
    from click.testing import CliRunner

    from sertool.cli import main
    from sertool.config import CONF_DIR
    from sertool.frontend.wave_augment import WaveAugment
    from sertool.nnet.trainer import _items

    data = make_corpus(tmp_path, n=6)
    extract_feats(data, tmp_path / "plain", nj=1, progress=False)
    aug = WaveAugment(copies=("noise", "pitch"))
    one = extract_feats(data, tmp_path / "aug1", nj=1, progress=False, wave_augment=aug)
    extract_feats(data, tmp_path / "aug2", nj=2, progress=False, wave_augment=aug)
    assert one.n_extracted == 6 and one.n_copies == 12
    # feats.scp holds the originals, identical to a run without augmentation
    plain, originals = read_all(tmp_path / "plain"), read_all(tmp_path / "aug1")
    assert sorted(plain) == sorted(originals)
    assert all(np.array_equal(plain[k], originals[k]) for k in plain)

    def copies_of(feat_dir):
        return {k: np.array(v) for k, v in kaldiio.load_scp(str(feat_dir / "wave_aug.scp")).items()}

    copies = copies_of(tmp_path / "aug1")
    assert sorted(copies) == sorted(f"{u}#{c}" for u in plain for c in ("noise", "pitch"))
    split_jobs = copies_of(tmp_path / "aug2")  # each copy depends on its utterance alone
    assert all(np.array_equal(copies[k], split_jobs[k]) for k in copies)
    for key, mat in copies.items():
        source = plain[key.split("#")[0]]
        assert mat.shape[1] == 128
        assert mat.shape != source.shape or not np.array_equal(mat, source)
    rows = [line.split() for line in open(tmp_path / "aug1" / "wave_aug")]
    assert {r[0]: (r[1], r[2], int(r[3])) for r in rows} == {
        k: (k.split("#")[0], k.split("#")[1], m.shape[0]) for k, m in copies.items()}

    # a FEAT_DIR is never mixed: with and without copies, or other copies
    with pytest.raises(ExtractError, match="made with waveform augmentation"):
        extract_feats(data, tmp_path / "aug1", nj=1, progress=False)
    with pytest.raises(ExtractError, match="made with no waveform augmentation"):
        extract_feats(data, tmp_path / "plain", nj=1, progress=False, wave_augment=aug)
    again = extract_feats(data, tmp_path / "aug1", nj=1, progress=False, wave_augment=aug)
    assert again.jobs_skipped == 1 and again.n_copies == 12

    # training adds the copies of its training utterances, never of held-out ones
    utts = sorted(plain)
    feats, _, train, held = _items(tmp_path / "aug1", data, {}, "speaker", utts[:4], utts[4:])
    assert sorted(i.utt for i in train) == sorted(
        utts[:4] + [f"{u}#{c}" for u in utts[:4] for c in ("noise", "pitch")])
    assert sorted(i.utt for i in held) == utts[4:]
    by_utt = {i.utt: i for i in train}
    assert all(by_utt[f"{u}#pitch"].label == by_utt[u].label for u in utts[:4])
    assert all(by_utt[k].end == copies[k].shape[0] for k in by_utt if "#" in k)
    assert all(k in feats for k in by_utt)

    result = CliRunner().invoke(main, [
        "extract-feats", str(data), str(tmp_path / "cli"), "--no-progress", "--set",
        "mel.num_bins=40", "--wave-augment", str(CONF_DIR / "wave_augment.toml")])
    assert result.exit_code == 0, result.output
    assert "6 of 6 utterances extracted" in result.output
    assert "plus 18 waveform-augmented copies" in result.output

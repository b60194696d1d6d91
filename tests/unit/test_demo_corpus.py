"""The synthetic demo corpus: layout, real EmoEvaluation format, determinism, VAD work, and an
emotion cue that survives per-utterance CMVN (learnable well above chance, speaker-independent)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sertool.corpora import prepare
from sertool.corpora.base import Scan
from sertool.corpora.iemocap import read_emo_evaluation
from sertool.datadir import DataDir, read_folds, validate_data_dir
from sertool.demo_corpus import make_demo_corpus
from sertool.folds import check_folds


@pytest.fixture(scope="module")
def demo(demo_corpus) -> Path:
    return demo_corpus  # made once per session (conftest.py), with the counts asserted there


def _digest(root: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_layout_and_emo_evaluation_format(demo):
    root = demo / "IEMOCAP_full_release"
    wavs = sorted(root.glob("Session*/sentences/wav/*/*.wav"))
    assert len(wavs) == 360
    assert wavs[0].relative_to(root).as_posix() == (
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    ev = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = ev.read_text().splitlines()
    assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
    assert lines[2].split("\t")[1] == "Ses01F_impro01_F000"
    assert lines[3].startswith("C-E1:\t") and lines[6].startswith("A-E1:\tval ")
    scan = Scan()
    labels = Counter()
    for path in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        labels.update(label for label, _ in read_emo_evaluation(path, scan).values())
    assert scan.skipped == []
    assert sum(labels.values()) == 360
    assert set(labels) == {"ang", "hap", "exc", "neu", "sad", "fru", "xxx"}
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    vox = sorted((demo / "voxceleb" / "wav").glob("id*/*/*.wav"))
    assert len(vox) == 192 and len({p.parts[-3] for p in vox}) == 24


def test_prepares_to_valid_directories_with_clean_folds(demo, tmp_path):
    result = prepare("iemocap", demo, tmp_path / "iemocap", exp=1, progress=False)
    assert result.skipped == [] and result.n_speakers == 10
    assert set(result.labels) == {"ang", "hap", "neu", "sad"}
    assert min(result.labels.values()) >= 40
    assert set(result.excluded) == {"exc", "fru", "xxx"}
    assert validate_data_dir(tmp_path / "iemocap", require_emotion=True) == []
    assert len(read_folds(tmp_path / "iemocap")[0]) == 5
    assert check_folds(tmp_path / "iemocap", progress=False).clean
    exp3 = prepare("iemocap", demo, tmp_path / "exp3", exp=3, progress=False)
    assert exp3.n_utts == result.n_utts + result.excluded["exc"]
    vox = prepare("voxceleb", demo / "voxceleb", tmp_path / "vox", progress=False)
    assert (vox.n_utts, vox.n_speakers) == (192, 24)


def test_durations_and_silence_for_vad(demo):
    wavs = sorted((demo / "IEMOCAP_full_release").glob("Session1/sentences/wav/*/*.wav"))
    for path in wavs[:20]:
        x, rate = sf.read(path)
        assert 1.5 <= len(x) / rate <= 3.1
        frames = x[: len(x) // 800 * 800].reshape(-1, 800)  # 50 ms
        rms = np.sqrt(np.mean(frames ** 2, axis=1))
        # leading and trailing 100 ms are noise floor, > 20 dB below the loudest speech
        assert max(rms[:2].max(), rms[-2:].max()) < 0.1 * rms.max()
        assert rms[:2].min() > 0  # a noise floor, not digital zero


@pytest.mark.slow
def test_deterministic_from_the_seed(demo, tmp_path):
    make_demo_corpus(tmp_path / "again", seed=0)
    assert _digest(tmp_path / "again") == _digest(demo)
    one = tmp_path / "s1" / "IEMOCAP_full_release" / "Session1" / "sentences" / "wav"
    make_demo_corpus(tmp_path / "s1", seed=1)
    assert (one / "Ses01F_impro01" / "Ses01F_impro01_F000.wav").read_bytes() != (
        demo / "IEMOCAP_full_release" / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
        / "Ses01F_impro01_F000.wav").read_bytes()


def _features(path: str) -> np.ndarray:
    """Log-mel statistics after per-utterance mean and variance normalisation."""
    import torch
    import torchaudio

    x, _ = sf.read(path, dtype="float32")
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=40)
    m = torch.log(mel(torch.from_numpy(x)) + 1e-6).numpy()
    m = (m - m.mean(1, keepdims=True)) / (m.std(1, keepdims=True) + 1e-5)
    energy = m.mean(0)
    modulation = np.abs(np.fft.rfft(energy - energy.mean(), n=512))[:40]
    return np.concatenate([np.abs(np.diff(m, axis=1)).mean(1), np.percentile(m, 90, axis=1),
                           modulation / (modulation.sum() + 1e-9)])


def test_emotion_is_learnable_across_sessions_after_cmvn(demo, tmp_path):
    import torch

    torch.set_num_threads(1)
    prepare("iemocap", demo, tmp_path / "d", exp=1, progress=False)
    data = DataDir.load(tmp_path / "d")
    feats = {u: _features(data.wav_scp[u]) for u in data.utts}
    labels = sorted(set(data.utt2emo.values()))
    uas = []
    for fold in read_folds(tmp_path / "d")[0]:  # leave-one-session-out: unseen speakers
        xtr = np.array([feats[u] for u in fold.train])
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr = (xtr - mu) / sd
        y = np.array([[data.utt2emo[u] == lab for lab in labels] for u in fold.train]) * 2 - 1.0
        w = np.linalg.solve(xtr.T @ xtr + 10 * np.eye(xtr.shape[1]), xtr.T @ y)
        pred = ((np.array([feats[u] for u in fold.test]) - mu) / sd @ w).argmax(1)
        truth = np.array([labels.index(data.utt2emo[u]) for u in fold.test])
        uas.append(np.mean([np.mean(pred[truth == c] == c) for c in set(truth)]))
    # chance is 0.25; a linear model on CMVN'd log-mel statistics gets about 0.84
    assert np.mean(uas) > 0.7, uas

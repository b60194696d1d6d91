"""Small synthetic corpora the stage tests share: voiced bursts in noise (signals.py) as a data dir
or a manifest, a tiny EMO-DB tree, and the training configuration of the kill-point pipeline."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import soundfile as sf
from signals import SR, voiced, with_noise

from sertool.datadir import DataDir


def make_corpus(root: Path, n: int = 12, seed: int = 0) -> Path:
    """n utterances of 2 speakers: silence, a voiced burst, silence, in light noise."""
    rng = np.random.default_rng(seed)
    wav_scp, utt2spk = {}, {}
    for i in range(n):
        spk = f"spk{i % 2}"
        utt = f"{spk}-utt{i:03d}"
        pad = np.zeros(int(0.3 * SR), np.float32)
        wave = with_noise([pad, voiced(0.5 + 0.05 * i, rng, f0=110 + 10 * i), pad], rng)
        path = root / "wav" / f"{utt}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, SR)
        wav_scp[utt], utt2spk[utt] = str(path), spk
    DataDir(wav_scp=wav_scp, utt2spk=utt2spk).save(root / "data")
    return root / "data"


def read_all(feat_dir: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in kaldiio.load_scp(str(feat_dir / "feats.scp")).items()}


TRAIN_TOML = """\
seed = 3
epochs = 2
batch_size = 4
lr = 0.05
chunk_frames = [20, 30]
lr_constant_epochs = 1
lr_halve_every = 1
heldout_fraction = 0.34
heldout_min_frames = 20
num_workers = 0
checkpoint_every_steps = 2
"""


def _make_corpus(work: Path) -> None:
    """6 speakers x 3 utterances of 1 s (each speaker its own pitch), 3 classes, a manifest."""
    corpus = work / "corpus"
    corpus.mkdir()
    rows = ["path,label,speaker"]
    for s in range(1, 7):
        for u in range(3):
            rng = np.random.default_rng(10 * s + u)
            wave = with_noise([voiced(1.0, rng, f0=90.0 + 25 * s)], rng)
            sf.write(corpus / f"s{s}_{u}.wav", wave, SR)
            rows.append(f"s{s}_{u}.wav,{('ang', 'hap', 'neu')[(s + u) % 3]},s{s}")
    (corpus / "manifest.csv").write_text("\n".join(rows) + "\n")


def _emodb(src: Path) -> Path:
    for spk in ("03", "08"):
        for name in (f"{spk}a01Wa", f"{spk}a02Na"):
            path = src / "wav" / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * np.random.default_rng(int(spk)).standard_normal(800), 16000)
    return src

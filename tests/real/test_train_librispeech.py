"""A small speaker model trained on real LibriSpeech features recognises held-out utterances.

The 10 test-other speakers (10 utterances each) are used: the held-out set is 2 whole
*other* utterances per speaker (20 segments), a cross-utterance check. (The 251
train-clean-100 speakers have a single ~12.5 s utterance each, so held-out data there could
only be other stretches of the same recordings.)
"""

from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_conf

from sertool.frontend.extract import extract_feats
from sertool.nnet.trainer import train


@pytest.mark.slow
@pytest.mark.shared_data
def test_small_speaker_model_identifies_heldout_utterances(librispeech_dir, tmp_path):
    torch.set_num_threads(2)
    files = sorted((librispeech_dir / "LibriSpeech" / "test-other").glob("*/*/*.flac"))
    assert len(files) == 100
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{f.stem} {f}\n" for f in files))
    (data / "utt2spk").write_text("".join(f"{f.stem} {f.stem.split('-')[0]}\n" for f in files))
    extract_feats(data, tmp_path / "feats", nj=2, progress=False)  # 128 log-mels (default)
    conf = tiny_conf(epochs=6, batch_size=8, chunk_frames=[150, 200, 250, 300],
                     lr_constant_epochs=4, lr_halve_every=2, heldout_fraction=0.2,
                     num_workers=1, checkpoint_every_steps=0)
    result = train(tmp_path / "feats", data, tmp_path / "exp", conf, progress=False)
    assert len(result.labels) == 10
    final = result.history[-1]
    # chance is 0.10; measured 0.95 (19 of 20) with this seed
    assert final["valid_acc"] >= 0.6, result.history
    assert final["train_acc"] >= 0.7

"""The install itself: torch and torchaudio load together, the shipped configurations are package
data with one copy, and bare configuration names find them from any folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

import sertool
from sertool.config import CONF_DIR, ConfigError, find_conf, load_toml, shipped_conf

REPO = Path(__file__).resolve().parents[2]


def test_torchaudio_compiled_part_loads_with_this_torch():
    """A torchaudio built for another torch fails here (undefined symbol in libtorchaudio.so),
    not deep inside augmentation."""
    import torchaudio
    from torchaudio.compliance import kaldi

    assert torchaudio.__version__.split("+")[0] == torch.__version__.split("+")[0]
    t = torch.arange(16000) / 16000
    tone = (0.5 * torch.sin(2 * math.pi * 440 * t)).unsqueeze(0)
    fbank = kaldi.fbank(tone * 32768, num_mel_bins=40, dither=0.0)
    assert fbank.shape == (98, 40)
    assert int(fbank.mean(0).argmax()) == int(fbank[50].argmax())  # the tone's band
    shifted = torchaudio.functional.pitch_shift(tone, 16000, n_steps=12)  # one octave up
    spectrum = np.abs(np.fft.rfft(shifted[0, 2000:14000].numpy()))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 880) < 10


def test_shipped_configurations_are_package_data_with_one_copy():
    assert CONF_DIR == Path(sertool.__file__).parent / "conf"
    names = sorted(p.name for p in CONF_DIR.glob("*.toml"))
    assert {"frontend.toml", "mfcc.toml", "finetune.toml", "train_speaker.toml",
            "model_resnet34.toml", "model_resnet_tiny.toml"} <= set(names)
    top = REPO / "conf"
    if top.exists():  # in a checkout: conf/ is the link users copy from, not a second copy
        assert top.is_symlink() and top.resolve() == CONF_DIR.resolve()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'sertool = ["conf/*.toml"]' in pyproject


def test_bare_configuration_names_find_the_shipped_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_conf("mfcc.toml") == CONF_DIR / "mfcc.toml"
    assert find_conf("model_resnet_tiny") == CONF_DIR / "model_resnet_tiny.toml"
    assert load_toml("mfcc.toml")["kind"] == "mfcc"
    (tmp_path / "mfcc.toml").write_text('kind = "mine"\n')  # a file in the folder wins
    assert load_toml("mfcc.toml") == {"kind": "mine"}
    assert find_conf("sub/mfcc.toml") == Path("sub/mfcc.toml")  # paths are never redirected
    try:
        load_toml("nothing.toml")
    except ConfigError as err:
        assert "nothing.toml: configuration file not found (shipped ones: " in str(err)
    else:
        raise AssertionError("a missing configuration must be an error")
    assert shipped_conf("frontend.toml").is_file()

"""VoxCeleb1/2 and LibriSpeech (speaker-labelled sets) from tiny trees in their layouts."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sertool.corpora import PrepareError, prepare
from sertool.datadir import read_table, validate_data_dir


def _noise(key: str, n: int = 1600) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return (0.1 * rng.standard_normal(n)).astype("float32")


def _audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _noise(str(path)), 16000)


def _m4a(path: Path) -> None:
    """A real AAC-in-MP4 file, as VoxCeleb2 ships them."""
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(_noise(str(path), 8000)[None, :], format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def test_voxceleb1_layout(tmp_path):
    src = tmp_path / "vox1"
    for spk in ("id10001", "id10002"):
        for video in ("1zcIwhmdeo4", "7w0IBEWc9Qw"):
            for n in (1, 2):
                _audio(src / "wav" / spk / video / f"{n:05d}.wav")
    _audio(src / "wav" / "id10002" / "7w0IBEWc9Qw" / "take.wav")
    _audio(src / "wav" / "speaker3" / "abc" / "00001.wav")
    result = prepare("voxceleb1", src, tmp_path / "data", progress=False)
    data = tmp_path / "data"
    assert validate_data_dir(data) == []
    utt2spk = read_table(data / "utt2spk")
    assert len(utt2spk) == 8 and set(utt2spk.values()) == {"id10001", "id10002"}
    assert utt2spk["id10002-7w0IBEWc9Qw-00002"] == "id10002"
    assert not (data / "utt2emo").exists() and not (data / "folds").exists()
    assert sorted(Path(s.path).name for s in result.skipped) == ["00001.wav", "take.wav"]
    assert all("<idNNNNN>/<video>/<nnnnn>" in s.reason for s in result.skipped)


def test_voxceleb2_m4a_is_decoded_to_wav(tmp_path):
    src = tmp_path / "vox2" / "dev"
    for spk in ("id00012", "id00015"):
        _m4a(src / "aac" / spk / "21Uxsk56VDQ" / "00001.m4a")
    _audio(src / "aac" / "id00012" / "21Uxsk56VDQ" / "00002.wav")
    result = prepare("voxceleb2", tmp_path / "vox2", tmp_path / "data", progress=False)
    assert result.n_utts == 3 and result.skipped == []
    wav = read_table(tmp_path / "data" / "wav.scp")
    decoded = Path(wav["id00015-21Uxsk56VDQ-00001"])
    assert decoded == (tmp_path / "data_wav" / "id00015" / "21Uxsk56VDQ" / "00001.wav").resolve()
    samples, rate = sf.read(decoded)
    assert rate == 16000 and samples.ndim == 1 and len(samples) >= 8000
    assert validate_data_dir(tmp_path / "data") == []


def test_voxceleb2_without_pyav_is_an_error_not_a_silent_drop(tmp_path, monkeypatch):
    src = tmp_path / "vox2"
    (src / "aac" / "id00012" / "v").mkdir(parents=True)
    (src / "aac" / "id00012" / "v" / "00001.m4a").write_bytes(b"not decoded in this test")
    _audio(src / "aac" / "id00012" / "v" / "00002.wav")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(PrepareError, match=r"00001.m4a: 1 VoxCeleb2 .m4a files need PyAV"):
        prepare("voxceleb", src, tmp_path / "data", progress=False)


def test_undecodable_m4a_is_a_listed_skip(tmp_path):
    pytest.importorskip("av")
    src = tmp_path / "vox2"
    (src / "aac" / "id00012" / "v").mkdir(parents=True)
    (src / "aac" / "id00012" / "v" / "00001.m4a").write_bytes(b"garbage")
    _audio(src / "aac" / "id00012" / "v" / "00002.wav")
    result = prepare("voxceleb", src, tmp_path / "data", progress=False)
    assert result.n_utts == 1
    assert result.skipped[0].path.endswith("00001.m4a")
    assert result.skipped[0].reason.startswith("cannot decode with PyAV")


def test_librispeech_layout(tmp_path):
    root = tmp_path / "src" / "LibriSpeech"
    for split, spk, chapter in (("train-clean-100", "19", "198"), ("train-clean-100", "103",
                                                                   "1240"),
                                ("test-other", "1688", "142285")):
        for n in range(2):
            _audio(root / split / spk / chapter / f"{spk}-{chapter}-{n:04d}.flac")
    (root / "train-clean-100" / "19" / "198" / "19-198.trans.txt").write_text("0000 TEXT\n")
    _audio(root / "train-clean-100" / "19" / "227" / "19-198-0009.flac")  # wrong chapter dir
    result = prepare("librispeech", tmp_path / "src", tmp_path / "data", progress=False)
    utt2spk = read_table(tmp_path / "data" / "utt2spk")
    assert list(utt2spk) == ["103-1240-0000", "103-1240-0001", "1688-142285-0000",
                             "1688-142285-0001", "19-198-0000", "19-198-0001"]
    assert set(utt2spk.values()) == {"19", "103", "1688"}
    assert validate_data_dir(tmp_path / "data") == []
    assert [Path(s.path).name for s in result.skipped] == ["19-198-0009.flac"]
    assert result.skipped[0].reason.startswith("speaker/chapter 19/198 in the name but")

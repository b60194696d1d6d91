"""predict streams long audio (issue 22, item 2): audio read and resampled in spans equals the
whole file resampled; the VAD's decisions, the features and the predictions made in blocks
(several blocks and network chunks at these sizes) equal the in-memory ones."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from signals import SR
from train_helpers import tiny_bundle

from sertool.frontend import stream
from sertool.frontend.audio import load_audio
from sertool.frontend.pipeline import Frontend
from sertool.frontend.stream import ArraySource, AudioSource, stream_features, vad_decisions
from sertool.frontend.vad import detect_speech
from sertool.models.resnet import ResNetTrunk
from sertool.predict import load_bundle, predict_files
from sertool.segments import parse_segmentation, predict_segments

UTTERANCES = ["03-01-01-01-01-01-01", "03-01-03-02-01-01-01", "03-01-04-02-01-01-01",
              "03-01-05-02-01-01-01", "03-01-02-01-01-02-01", "03-01-06-02-02-01-01"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(tiny_bundle(tmp_path_factory.mktemp("stream")))


@pytest.fixture(scope="module")
def call(tmp_path_factory, ravdess_dir):
    """Six RAVDESS utterances of one actor joined with 1.5 s of low noise between (~30 s)."""
    rng = np.random.default_rng(0)
    actor = ravdess_dir / "Audio_Speech_Actors_01-24" / "Actor_01"
    parts = []
    for name in UTTERANCES:
        wave, rate = sf.read(actor / f"{name}.flac", dtype="float32")
        assert rate == SR
        parts += [wave, rng.normal(0, 1e-3, int(1.5 * SR)).astype(np.float32)]
    path = tmp_path_factory.mktemp("call") / "call.wav"
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return path


@pytest.mark.parametrize("rate, channels", [(48000, 1), (44100, 2), (22050, 1), (16000, 2)])
def test_spans_equal_the_whole_file_resampled(tmp_path, rate, channels):
    rng = np.random.default_rng(rate)
    n = int(2.3 * rate) + 7
    data = (0.3 * rng.standard_normal((n, channels))).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    whole = load_audio(path, SR)
    with AudioSource(str(path), SR) as src:
        assert src.n == len(whole)
        cuts = [0, 1, 2, 160, 4001, 16000, 16001, len(whole) - 3, len(whole)]
        got = np.concatenate([src.read(a, b) for a, b in zip(cuts, cuts[1:], strict=False)])
        np.testing.assert_array_equal(got, whole)  # bit for bit
        for a, b in rng.integers(0, len(whole), (20, 2)):
            a, b = sorted((int(a), int(b)))
            np.testing.assert_array_equal(src.read(a, b), whole[a:b])


def test_a_nan_sample_is_refused_like_load_audio(tmp_path):
    data = np.zeros(8000, np.float32)
    data[5000] = np.nan
    sf.write(tmp_path / "nan.wav", data, SR, subtype="FLOAT")
    with pytest.raises(Exception, match="NaN or infinite"):
        AudioSource(str(tmp_path / "nan.wav"), SR)


def test_pooled_stream_of_uneven_blocks_equals_one_pass():
    torch.manual_seed(0)
    trunk = ResNetTrunk(40, [2, 2, 2], channels=4).eval()
    x = torch.randn(1, 777, 40)
    with torch.inference_mode():
        whole = trunk(x)
        blocks = [x[:, a:b] for a, b in ((0, 5), (5, 300), (300, 301), (301, 777))]
        got = trunk.pooled_stream(iter(blocks), 777, 100)
        torch.testing.assert_close(got, whole, rtol=0, atol=1e-5)
        torch.testing.assert_close(got, trunk.pooled_chunked(x, 100), rtol=0, atol=0)
        with pytest.raises(ValueError, match="ended at frame 301"):
            trunk.pooled_stream(iter(blocks[:3]), 777, 100)


@pytest.mark.shared_data
def test_streamed_vad_and_features_equal_in_memory(bundle, call, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_FRAMES", 700)  # ~5 blocks for 30 s
    frontend = Frontend(bundle.frontend_conf)
    wave = load_audio(call, SR)
    with AudioSource(str(call), SR) as src:
        for lo, hi in ((0, len(wave)), (12345, 300001)):
            want = detect_speech(frontend.vad_bins(wave[lo:hi]), frontend.vad, subsampled=True)
            np.testing.assert_array_equal(vad_decisions(src, lo, hi, frontend, frontend.vad),
                                          want)
        feats, stats = frontend.process(wave, SR)
        got = stream_features(src, 0, len(wave), frontend, normalise=True)
        assert got.frames == len(feats) == stats.frames_kept < stats.frames_in
        np.testing.assert_allclose(np.concatenate(list(got.blocks())), feats, rtol=0,
                                   atol=2e-4)


@pytest.mark.shared_data
def test_streamed_whole_file_prediction_equals_in_memory(bundle, call, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_FRAMES", 700)
    [memory] = predict_files(bundle, [call], chunk_frames=500)
    [streamed] = predict_files(bundle, [call], chunk_frames=500, stream_above_s=0)
    assert memory.error is None and streamed.error is None
    assert streamed.warnings == memory.warnings
    assert streamed.duration_s == memory.duration_s
    for c in bundle.classes:
        assert streamed.probs[c] == pytest.approx(memory.probs[c], abs=1e-5)


@pytest.mark.shared_data
def test_streamed_vad_segments_equal_in_memory(bundle, call, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_FRAMES", 700)
    segmentation = parse_segmentation("vad", [str(call)])
    [memory] = predict_segments(bundle, [str(call)], segmentation)
    [streamed] = predict_segments(bundle, [str(call)], segmentation, stream_above_s=0)
    assert len(memory.segments) >= 4  # several segments, some longer than the blocks
    assert streamed.speech == memory.speech
    assert [s.segment for s in streamed.segments] == [s.segment for s in memory.segments]
    for a, b in zip(streamed.segments, memory.segments, strict=True):
        for c in bundle.classes:
            assert a.prediction.probs[c] == pytest.approx(b.prediction.probs[c], abs=1e-5)


def test_array_source_is_the_waveform():
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(ArraySource(wave).read(3, 7), wave[3:7])

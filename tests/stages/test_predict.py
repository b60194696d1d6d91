"""`sertool predict` with a bundle: any rate and channel count, named errors, moved bundles."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from scipy.signal import resample_poly

from sertool.cli import main
from sertool.config import CONF_DIR
from sertool.frontend.audio import load_audio
from sertool.frontend.pipeline import Frontend, resolve_conf
from sertool.io_utils import atomic_write_json
from sertool.predict import export_bundle, load_bundle

CLASSES = ["ang", "hap", "neu", "sad"]


def _voice(sr: int, seconds: float, f0: float, seed: int) -> np.ndarray:
    """A harmonic vowel-like tone in noise with silence around it (the VAD has work to do)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    env = ((t > 0.3) & (t < seconds - 0.3)).astype(np.float64)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.3 * env * tone / 2 + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def bundle_and_audio(tmp_path_factory):
    from sertool.models import build_model, load_model_conf

    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model_conf = load_model_conf(CONF_DIR / "model_resnet_tiny.toml")
    model = build_model(model_conf, len(CLASSES), 128).eval()
    frontend_json = root / "frontend.json"
    atomic_write_json(frontend_json, resolve_conf())
    bundle = export_bundle(root / "bundle", model, classes=CLASSES, model_conf=model_conf,
                           feat_dim=128, frontend_json=frontend_json,
                           provenance={"corpus": "test", "fold": "none", "command": "test"})
    audio = root / "audio"
    audio.mkdir()
    # 48 kHz stereo wav: two slightly different channels
    mono48 = resample_poly(_voice(16000, 2.0, 140.0, 1), 3, 1).astype(np.float32)
    stereo = np.stack([mono48, 0.8 * mono48], axis=1)
    sf.write(audio / "stereo48k.wav", stereo, 48000)
    sf.write(audio / "mono16k.flac", _voice(16000, 1.5, 220.0, 2), 16000)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    return bundle, audio, model


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_two_predictions_and_one_named_error(bundle_and_audio):
    bundle, audio, model = bundle_and_audio
    files = [str(audio / n) for n in ("stereo48k.wav", "mono16k.flac", "corrupt.wav")]
    result = CliRunner().invoke(main, ["predict", str(bundle), *files])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert [r["file"] for r in rows] == files
    for row in rows[:2]:
        probs = [float(row[c]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row["pred"] == CLASSES[int(np.argmax(probs))]
        assert row["error"] == ""
    assert float(rows[0]["duration_s"]) == pytest.approx(2.0, abs=1e-3)
    assert float(rows[1]["duration_s"]) == pytest.approx(1.5, abs=1e-3)
    assert rows[2]["pred"] == "" and rows[2][CLASSES[0]] == ""
    assert "corrupt.wav" in rows[2]["error"]
    assert f"{files[2]}:" in result.stderr  # named on stderr too
    assert "2 of 3 files predicted" in result.stderr

    # the probabilities are the model's on the bundle's front-end, whatever the input format
    frontend = Frontend(json.loads((bundle / "frontend.json").read_text()))
    feats, _ = frontend.process(load_audio(files[0], 16000), 16000)
    with torch.no_grad():
        expected = torch.softmax(model(torch.as_tensor(feats)[None]), -1)[0].numpy()
    assert [float(rows[0][c]) for c in CLASSES] == pytest.approx(expected.tolist(), abs=2e-6)


def test_bundle_works_after_mv_and_writes_json(bundle_and_audio, tmp_path):
    bundle, audio, _ = bundle_and_audio
    moved = tmp_path / "elsewhere" / "my_model"
    moved.parent.mkdir()
    shutil.copytree(bundle, tmp_path / "copy")
    shutil.move(tmp_path / "copy", moved)
    for file in moved.iterdir():  # no path of the place it was made in
        assert str(bundle.parent).encode() not in file.read_bytes(), file
    out = tmp_path / "out.json"
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(moved), str(audio / "mono16k.flac"),
                                  "-o", str(out)])
    assert result.exit_code == 0, result.output
    moved_result = json.loads(out.read_text())
    assert moved_result["classes"] == CLASSES
    [entry] = moved_result["results"]
    assert entry["error"] is None and entry["pred"] in CLASSES
    original = _rows(runner.invoke(main, ["predict", str(bundle),
                                          str(audio / "mono16k.flac")]).stdout)[0]
    assert [entry["probs"][c] for c in CLASSES] == pytest.approx(
        [float(original[c]) for c in CLASSES], abs=1e-6)


def test_all_failed_is_an_error_and_damage_is_detected(bundle_and_audio, tmp_path):
    bundle, audio, _ = bundle_and_audio
    result = CliRunner().invoke(main, ["predict", str(bundle), str(audio / "corrupt.wav"),
                                       str(tmp_path / "missing.wav")])
    assert result.exit_code == 1
    assert "missing.wav: audio file not found" in result.stderr
    assert "no file could be predicted" in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    with open(broken / "model.pt", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xff")
    result = CliRunner().invoke(main, ["predict", str(broken), str(audio / "mono16k.flac")])
    assert result.exit_code == 1 and "model.pt: damaged" in result.stderr


def test_bundle_weights_load_with_weights_only(bundle_and_audio):
    bundle, _, _ = bundle_and_audio
    torch.load(Path(bundle) / "model.pt", weights_only=True)  # raises on arbitrary pickles
    loaded = load_bundle(bundle)
    assert loaded.classes == CLASSES
    assert loaded.provenance["sertool_version"]
    assert loaded.meta["files"].keys() == {"model.pt", "frontend.json"}

"""sertool import-speaker-model: WeSpeaker and Resemblyzer models reproduce their own embeddings.

Parity references: ../shared/data/wespeaker-resnet34-ref (features and embeddings computed by
WeSpeaker's code) and, when installed, resemblyzer itself run on the same waveform.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import tomllib
import torch
from click.testing import CliRunner
from speaker_transfer import RAVDESS_FILES, _transfers_like_a_speaker_model

from sertool.cli import main
from sertool.config import dump_toml
from sertool.frontend.audio import load_audio
from sertool.frontend.extract import extract_wavs
from sertool.frontend.pipeline import (
    Frontend,
    FrontendError,
    check_model_frontend,
    resolve_conf,
)
from sertool.models import build_model, load_model_conf, resolve_model_conf
from sertool.models.ge2e import partial_starts
from sertool.nnet.checkpoint import load_model
from sertool.transfer.import_model import (
    WESPEAKER_PREFIXES,
    SpeakerImportError,
    import_wespeaker,
)

REQUIRE_RESEMBLYZER = os.environ.get("SERTOOL_REQUIRE_RESEMBLYZER", "") not in ("", "0")


# ----------------------------------------------------------------------------- WeSpeaker


@pytest.mark.shared_data
def test_wespeaker_resnet34_reproduces_wespeakers_features_and_embeddings(
        wespeaker_ref_dir, ravdess_dir, tmp_path):
    out = tmp_path / "ws"
    run = CliRunner().invoke(main, ["import-speaker-model", "wespeaker", str(wespeaker_ref_dir),
                                    str(out)])
    assert run.exit_code == 0, run.output
    assert "projection.weight" in run.output  # the dropped margin head is reported
    record = json.loads((out / "import.json").read_text())
    assert record["dropped"] == ["projection.weight (margin classifier of the training speakers)"]
    reference = json.loads((wespeaker_ref_dir / "reference.json").read_text())
    assert record["weights_sha256"] == reference["avg_model_sha256"]
    expected = np.load(wespeaker_ref_dir / "expected.npz")

    # the features through extract-feats with the front-end the import wrote
    wavs = [ravdess_dir / "Audio_Speech_Actors_01-24" / f for f in reference["files"]]
    extract_wavs(wavs, tmp_path / "feats", conf_path=out / "frontend.toml", progress=False)
    feats = dict(kaldiio.load_scp_sequential(str(tmp_path / "feats" / "feats.scp")))
    model, meta = load_model(out / "model.pt")
    check_model_frontend(meta, tmp_path / "feats" / "frontend.json", out / "model.pt")
    for i, wav in enumerate(wavs):
        mat = feats[wav.stem]
        assert mat.shape == expected[f"fbank_{i}"].shape
        assert np.abs(mat - expected[f"fbank_{i}"]).max() <= 1e-3
        with torch.no_grad():
            emb = model.embedding(torch.tensor(mat)[None])[0].numpy()
        want = expected[f"embedding_{i}"]
        assert np.abs(emb - want).max() <= 1e-4 * np.linalg.norm(want)
    assert model.pooled_dim == 2 * 256 * 10  # TSTP of 256 channels x 10 frequency rows
    _transfers_like_a_speaker_model(out / "model.pt", feats[wavs[0].stem], tmp_path)


def _wespeaker_dir(path: Path, two_emb_layer: bool = False, model: str = "ResNet18") -> dict:
    """A small WeSpeaker-format model dir (config.yaml + avg_model.pt, WeSpeaker's key names)."""
    conf = resolve_model_conf({"type": "resnet", "layers": [2, 2, 2, 2], "pooling": "tstp",
                               "activation": "relu", "embed_dim": 8,
                               "embedding_head": "linear2" if two_emb_layer else "linear"})
    torch.manual_seed(0)
    net = build_model(conf, 0, 16)
    inverse = [(mine, theirs) for theirs, mine in WESPEAKER_PREFIXES]
    state = {}
    for key, value in net.state_dict().items():
        prefix = max((p for p in inverse if key.startswith(p[0])), key=lambda p: len(p[0]))
        state[prefix[1] + key[len(prefix[0]):]] = value.clone()
    state["projection.weight"] = torch.randn(5, 8)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(
        f"model: {model}\nmodel_args:\n  feat_dim: 16\n  embed_dim: 8\n  pooling_func: TSTP\n"
        f"  two_emb_layer: {str(two_emb_layer).lower()}\n"
        "dataset_args:\n  fbank_args:\n    num_mel_bins: 16\n    frame_length: 25\n"
        "    frame_shift: 10\n    dither: 1.0\n")
    torch.save(state, path / "avg_model.pt")
    return state


def test_wespeaker_two_embedding_layers_keys_and_embedding(tmp_path):
    state = _wespeaker_dir(tmp_path / "src", two_emb_layer=True)
    import_wespeaker(tmp_path / "src", tmp_path / "out")
    model, meta = load_model(tmp_path / "out" / "model.pt")
    assert meta["num_classes"] == 0 and meta["extra"]["frontend"]["mel"]["num_bins"] == 16
    assert meta["extra"]["frontend"]["fbank"]["dither"] == 0.0  # training dither not kept
    x = torch.randn(2, 50, 16)
    with torch.no_grad():
        stats = model.pooled(x)
        # WeSpeaker's two_emb_layer: seg_2(BN_no_affine(relu(seg_1(stats)))), eval mode
        a = stats @ state["seg_1.weight"].T + state["seg_1.bias"]
        b = (torch.relu(a) - state["seg_bn_1.running_mean"]) / torch.sqrt(
            state["seg_bn_1.running_var"] + 1e-5)
        want = b @ state["seg_2.weight"].T + state["seg_2.bias"]
        torch.testing.assert_close(model.embedding(x), want)
        torch.testing.assert_close(model(x), want)  # no classifier: forward = embedding


@pytest.mark.parametrize("damage, message", [
    ("missing", r"missing key\(s\) \['layer2.0.bn1.running_var'\]"),
    ("shape", r"seg_1.weight has shape \(8, 1000\), .* needs \(8, 1024\)"),
    ("unexpected", r"unexpected key\(s\) \['layer5.0.conv1.weight'\]"),
    ("pickled", r"pickled Python object .*never runs code"),
    ("model", r"config.yaml: model 'ResNet50' is not supported"),
])
def test_damaged_wespeaker_checkpoints_are_clear_errors(tmp_path, damage, message):
    src = tmp_path / "src"
    state = _wespeaker_dir(src, model="ResNet50" if damage == "model" else "ResNet18")
    if damage == "missing":
        del state["layer2.0.bn1.running_var"]
    elif damage == "shape":
        state["seg_1.weight"] = torch.zeros(8, 1000)
    elif damage == "unexpected":
        state["layer5.0.conv1.weight"] = torch.zeros(1)
    if damage == "pickled":  # a whole pickled module, as torch.save(model) writes
        torch.save(torch.nn.Linear(2, 2), src / "avg_model.pt")
    else:
        torch.save(state, src / "avg_model.pt")
    with pytest.raises(SpeakerImportError, match=message) as caught:
        import_wespeaker(src, tmp_path / "out")
    assert str(src) in str(caught.value)
    assert "weights_only=False" not in str(caught.value)
    assert not (tmp_path / "out" / "model.pt").exists()
    run = CliRunner().invoke(main, ["import-speaker-model", "wespeaker", str(src),
                                    str(tmp_path / "out")])
    assert run.exit_code == 1 and run.output.startswith("sertool: error: ")


# ----------------------------------------------------------------------------- front-end check


def test_features_of_another_frontend_are_refused(tmp_path):
    _wespeaker_dir(tmp_path / "src")
    import_wespeaker(tmp_path / "src", tmp_path / "out")
    _, meta = load_model(tmp_path / "out" / "model.pt")
    written = tomllib.loads((tmp_path / "out" / "frontend.toml").read_text())
    assert resolve_conf(path=tmp_path / "out" / "frontend.toml") == meta["extra"]["frontend"]
    assert written["kind"] == "kaldi_fbank"
    logmel = tmp_path / "frontend.json"
    logmel.write_text(json.dumps(resolve_conf()))
    with pytest.raises(FrontendError, match=r"kind 'logmel' \(model: 'kaldi_fbank'\).*"
                       r"sertool extract-feats DATA FEAT_DIR --conf .*out/frontend.toml"):
        check_model_frontend(meta, logmel, tmp_path / "out" / "model.pt")
    same = tmp_path / "same.json"
    same.write_text(json.dumps(meta["extra"]["frontend"]))
    check_model_frontend(meta, same)
    check_model_frontend({"extra": {}}, logmel)  # a sertool-trained model records none


def test_paper_configurations_unchanged_and_toml_round_trip():
    # resolved configurations (fingerprinted by extract-feats, train, finetune) gain no keys
    assert "activation" not in load_model_conf() and "fbank" not in resolve_conf()
    for conf in (resolve_conf(), resolve_conf({"kind": "ge2e_mel"}), load_model_conf()):
        assert tomllib.loads(dump_toml(conf, "a\ncomment")) == conf
    with pytest.raises(FrontendError, match="no VAD"):
        resolve_conf({"kind": "kaldi_fbank", "vad": {"enabled": True}})


# ----------------------------------------------------------------------------- Resemblyzer


def test_ge2e_windows_as_embed_utterance():
    # 160-frame windows every 77 frames (1.3 per second); the last one is kept when at least
    # 120 of its frames (0.75) hold audio
    assert partial_starts(351, 160, 77, 0.75) == [0, 77, 154]
    assert partial_starts(352, 160, 77, 0.75) == [0, 77, 154, 231]
    assert partial_starts(20, 160, 77, 0.75) == [0]
    feats = Frontend({"kind": "ge2e_mel"}).process(np.ones(16_157, np.float32))[0]
    assert feats.shape == (1 + 16_157 // 160 + 2, 40)


def _resemblyzer():
    try:
        import resemblyzer
    except ImportError:
        message = ("resemblyzer is not installed (pip install 'sertool[resemblyzer]'): the GE2E "
                   "parity test needs it")
        if REQUIRE_RESEMBLYZER:
            pytest.fail(message + " (SERTOOL_REQUIRE_RESEMBLYZER is set)")
        pytest.skip(message)
    return resemblyzer


@pytest.mark.shared_data
def test_resemblyzer_ge2e_reproduces_embed_utterance(ravdess_dir, tmp_path):
    resemblyzer = _resemblyzer()
    out = tmp_path / "ge2e"
    # the import reads the weights without importing resemblyzer's modules
    code = ("import sys; from sertool.transfer.import_model import import_resemblyzer; "
            f"print(import_resemblyzer({str(out)!r}).summary()); "
            "print([m for m in sys.modules if m.startswith('resemblyzer')])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("[]") and "similarity_weight" in run.stdout

    model, meta = load_model(out / "model.pt")
    frontend = Frontend(resolve_conf(path=out / "frontend.toml"))
    assert frontend.conf == meta["extra"]["frontend"]
    encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
    for name in RAVDESS_FILES:
        wav = resemblyzer.preprocess_wav(ravdess_dir / "Audio_Speech_Actors_01-24" / name)
        feats, _ = frontend.process(wav)
        with torch.no_grad():
            emb = model.embedding(torch.from_numpy(feats)[None])[0].numpy()
        assert np.abs(emb - encoder.embed_utterance(wav)).max() <= 1e-4
        # audio as sertool reads it: the front-end raises it to -30 dBFS as preprocess_wav does
        # (without its pause trimming)
        raw = load_audio(ravdess_dir / "Audio_Speech_Actors_01-24" / name)
        with torch.no_grad():
            emb = model.embedding(torch.from_numpy(frontend.process(raw)[0])[None])[0].numpy()
        want = encoder.embed_utterance(resemblyzer.audio.normalize_volume(raw, -30, True))
        assert np.abs(emb - want).max() <= 1e-4
    # several windows, the last one zero-padded: a longer signal
    long = np.concatenate([wav] * 4)
    with torch.no_grad():
        emb = model.embedding(torch.from_numpy(frontend.process(long)[0])[None])[0].numpy()
    assert np.abs(emb - encoder.embed_utterance(long)).max() <= 1e-4
    _transfers_like_a_speaker_model(out / "model.pt", feats, tmp_path)

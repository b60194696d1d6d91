"""`sertool export-onnx` and `sertool predict` through onnxruntime (issue 22: one-file latency):
the ONNX graph gives the torch model's probabilities on real RAVDESS files of different lengths
(the graph's time axis is dynamic), whole-file and per segment, and predict then never imports
torch."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sertool.cli import main

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["ang", "hap", "neu", "sad"]
# Actor 01 (and 02), four emotions: RAVDESS codes 05 angry, 03 happy, 01 neutral, 04 sad.
TRAIN = {"03-01-05-02-01-01-01": 0, "03-01-03-02-01-01-01": 1, "03-01-01-01-01-01-01": 2,
         "03-01-04-02-01-01-01": 3}
TEST = ["03-01-05-01-02-01-02", "03-01-03-01-02-02-02", "03-01-01-01-02-02-02",
        "03-01-04-02-02-01-02"]


def _file(ravdess_dir: Path, name: str) -> Path:
    actor = int(name.split("-")[-1])
    return ravdess_dir / "Audio_Speech_Actors_01-24" / f"Actor_{actor:02d}" / f"{name}.flac"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, ravdess_dir):
    """A tiny ResNet trained a few steps on real features (so its batch-norm statistics and
    weights are not the initial ones), exported as a bundle, and that bundle with model.onnx."""
    import torch

    from sertool.config import CONF_DIR
    from sertool.frontend.audio import load_audio
    from sertool.frontend.pipeline import Frontend, resolve_conf
    from sertool.io_utils import atomic_write_json
    from sertool.models import build_model, load_model_conf
    from sertool.predict import export_bundle

    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model_conf = load_model_conf(CONF_DIR / "model_resnet_tiny.toml")
    model = build_model(model_conf, len(CLASSES), 128)
    frontend = Frontend(resolve_conf())
    feats = [frontend.process(load_audio(_file(ravdess_dir, n), 16000), 16000)[0]
             for n in TRAIN]
    frames = min(len(f) for f in feats)  # one batch of equal lengths (the head's batch norm)
    x = torch.from_numpy(np.stack([f[:frames] for f in feats]))
    y = torch.tensor(list(TRAIN.values()))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(8):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()
    atomic_write_json(root / "frontend.json", resolve_conf())
    plain = export_bundle(root / "plain", model, classes=CLASSES, model_conf=model_conf,
                          feat_dim=128, frontend_json=root / "frontend.json",
                          provenance={"corpus": "test", "fold": "none", "command": "test"})
    result = CliRunner().invoke(main, ["export-onnx", str(plain), "-o", str(root / "onnx")])
    assert result.exit_code == 0, result.output
    return plain, root / "onnx"


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.onnx
@pytest.mark.shared_data
@pytest.mark.slow  # the module's bundle: a few training steps and the export, ~10 s
def test_export_writes_a_checked_graph_into_the_bundle(bundles):
    plain, onnx = bundles
    meta = json.loads((onnx / "bundle.json").read_text())
    assert set(meta["files"]) == {"model.pt", "frontend.json", "model.onnx"}
    assert meta["onnx"]["max_abs_diff"] <= 1e-5
    assert meta["onnx"]["chunked_pooling"] is True
    assert "model.onnx" not in json.loads((plain / "bundle.json").read_text())["files"]
    # a damaged graph is refused naming it, as a damaged model.pt is
    damaged = onnx.parent / "damaged"
    CliRunner().invoke(main, ["export-onnx", str(plain), "-o", str(damaged)])
    (damaged / "model.onnx").write_bytes(b"\0" * 64)
    result = CliRunner().invoke(main, ["predict", str(damaged), "x.wav"])
    assert result.exit_code == 1
    assert f"{damaged / 'model.onnx'}: damaged" in result.output


@pytest.mark.onnx
@pytest.mark.shared_data
@pytest.mark.slow  # the module's bundle: a few training steps and the export, ~10 s
def test_onnx_predictions_equal_torch_on_real_files(bundles, ravdess_dir):
    plain, onnx = bundles
    files = [str(_file(ravdess_dir, n)) for n in TEST]
    lengths = {sf.info(f).frames for f in files}
    assert len(lengths) == len(files)  # different lengths: the time axis is dynamic
    rows = {}
    for backend, bundle in (("torch", plain), ("onnx", onnx)):
        result = CliRunner().invoke(main, ["predict", str(bundle), *files, "--backend",
                                           backend, "--threads", "1", "--no-progress"])
        assert result.exit_code == 0, result.output
        rows[backend] = _csv(result.stdout)
    torch_rows, onnx_rows = rows["torch"], rows["onnx"]
    assert list(torch_rows[0]) == list(onnx_rows[0]) == ["file", "pred", *CLASSES, "entropy",
                                                         "max_prob", "duration_s", "error",
                                                         "warning"]
    assert len(onnx_rows) == len(files)
    spread = []
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        assert (a["file"], a["pred"], a["duration_s"], a["error"], a["warning"]) == \
            (b["file"], b["pred"], b["duration_s"], b["error"], b["warning"])
        for c in (*CLASSES, "entropy", "max_prob"):
            assert float(b[c]) == pytest.approx(float(a[c]), abs=1e-5), (a["file"], c)
        spread.append(max(float(a[c]) for c in CLASSES) - min(float(a[c]) for c in CLASSES))
    assert max(spread) > 0.05  # a model that says something, not a uniform answer
    # auto picks the graph when the bundle has one: the same rows
    auto = CliRunner().invoke(main, ["predict", str(onnx), *files, "--threads", "1"])
    assert _csv(auto.stdout) == onnx_rows


@pytest.mark.onnx
@pytest.mark.shared_data
@pytest.mark.slow  # the module's bundle: a few training steps and the export, ~10 s
def test_onnx_segments_equal_torch(bundles, ravdess_dir, tmp_path):
    plain, onnx = bundles
    parts = []
    for name in TEST:
        wave, rate = sf.read(_file(ravdess_dir, name), dtype="float32")
        parts += [wave, np.zeros(2 * rate, np.float32)]
    sf.write(tmp_path / "call.wav", np.concatenate(parts), 16000)
    out = {}
    for backend, bundle in (("torch", plain), ("onnx", onnx)):
        result = CliRunner().invoke(main, ["predict", str(bundle), str(tmp_path / "call.wav"),
                                           "--segments", "vad", "--backend", backend,
                                           "-o", str(tmp_path / f"{backend}.json")])
        assert result.exit_code == 0, result.output
        out[backend] = json.loads((tmp_path / f"{backend}.json").read_text())["files"][0]
    segs_t, segs_o = out["torch"]["segments"], out["onnx"]["segments"]
    assert len(segs_o) == len(TEST)
    for a, b in zip(segs_t, segs_o, strict=True):
        assert (a["segment"], a["start"], a["end"], a["pred"]) == \
            (b["segment"], b["start"], b["end"], b["pred"])
        for c in CLASSES:
            assert b["probs"][c] == pytest.approx(a["probs"][c], abs=1e-5)


@pytest.mark.onnx
@pytest.mark.shared_data
@pytest.mark.slow  # the module's bundle: a few training steps and the export, ~10 s
def test_predict_with_onnx_never_imports_torch(bundles, ravdess_dir):
    _, onnx = bundles
    code = ("import sys; from sertool.cli import main\n"
            "try:\n    main([" + ", ".join(repr(a) for a in [
                "predict", str(onnx), str(_file(ravdess_dir, TEST[0])), "--threads", "1"])
            + "])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "TORCH False"
    assert _csv("\n".join(done.stdout.splitlines()[:-1]))[0]["pred"] in CLASSES


def test_the_cli_module_imports_no_torch():
    code = "import sys, sertool.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.onnx
@pytest.mark.shared_data
@pytest.mark.slow  # the module's bundle: a few training steps and the export, ~10 s
def test_backend_onnx_without_a_graph_is_one_named_error(bundles):
    plain, _ = bundles
    result = CliRunner().invoke(main, ["predict", str(plain), "x.wav", "--backend", "onnx"])
    assert result.exit_code == 1
    assert f"{plain}: --backend onnx, but the bundle has no model.onnx" in result.output

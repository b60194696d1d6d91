"""Bad input and recovery (issue 14): each case through the real CLI where a user meets it, with
the message, the exit status, and that nothing else was lost."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from train_helpers import make_feats, tiny_conf

from sertool.cli import main
from sertool.nnet.trainer import TrainError, train


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _emodb(src: Path) -> Path:
    for spk in ("03", "08"):
        for name in (f"{spk}a01Wa", f"{spk}a02Na"):
            path = src / "wav" / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * np.random.default_rng(int(spk)).standard_normal(800), 16000)
    return src


# ----------------------------------------------------------------- prepare never loses files


def test_prepare_refuses_a_folder_it_did_not_make_and_keeps_everything(tmp_path):
    src = _emodb(tmp_path / "emodb")
    project = tmp_path / "project"
    (project / "exp").mkdir(parents=True)
    (project / "notes.txt").write_text("my notes\n")
    result = _cli("prepare", "emodb", src, project)
    assert result.exit_code == 1
    assert (f"sertool: error: {project}: not empty and not made by sertool prepare (it holds "
            "exp/, notes.txt)") in result.output
    assert (project / "notes.txt").read_text() == "my notes\n" and (project / "exp").is_dir()
    assert sorted(p.name for p in project.iterdir()) == ["exp", "notes.txt"]


def test_prepare_reruns_into_its_own_folder_but_never_deletes_foreign_files(tmp_path):
    src = _emodb(tmp_path / "emodb")
    data = tmp_path / "data"
    assert _cli("prepare", "emodb", src, data).exit_code == 0
    assert _cli("prepare", "emodb", src, data).exit_code == 0  # a rerun replaces its own output
    (data / "feats").mkdir()
    result = _cli("prepare", "emodb", src, data)
    assert result.exit_code == 1 and "also holds feats/, which a rerun would delete" in (
        result.output)
    assert (data / "feats").is_dir() and (data / "wav.scp").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("prepare", "emodb", src, empty).exit_code == 0  # an empty folder is fine


# ----------------------------------------------------------------- shared results are readable


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        data = tmp_path / "data"
        assert _cli("prepare", "emodb", _emodb(tmp_path / "emodb"), data).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(data.stat().st_mode) == 0o755
    for name in ("wav.scp", "utt2spk", "prepare.json", "folds/protocol.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o644, name


# ----------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("setting,message", [
    ("epochs=abc", "--set epochs=abc: epochs must be an integer, got 'abc'"),
    ("epochs=-1", "--set epochs=-1: epochs = -1 is out of range (must be >= 1)"),
    ("lr=fast", "--set lr=fast: lr must be a number, got 'fast'"),
    ("augment=3", "--set augment=3: augment is a table of options, got 3"),
])
def test_bad_trainer_values_are_refused_before_anything_is_written(tmp_path, setting, message):
    feat_dir, data_dir = make_feats(tmp_path)
    exp = tmp_path / "exp"
    result = _cli("train", feat_dir, data_dir, exp, "--set", setting, "--no-progress")
    assert result.exit_code == 1 and f"sertool: error: {message}" in result.output
    assert not exp.exists()  # so the corrected rerun is not "another configuration"


@pytest.mark.parametrize("setting,message", [
    ("mel.num_bins=0", "mel.num_bins = 0 is out of range (must be >= 1)"),
    ("vad.hangover_ms=-5", "vad.hangover_ms = -5 is out of range (must be >= 0.0)"),
])
def test_bad_frontend_values_are_refused(tmp_path, setting, message):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600), 16000)
    result = _cli("extract-feats", "-o", tmp_path / "out", wav, "--set", setting)
    assert result.exit_code == 1 and f"--set {setting}: {message}" in result.output
    assert not (tmp_path / "out").exists()


def test_a_latin1_config_file_names_the_file(tmp_path):
    conf = tmp_path / "train.toml"
    conf.write_bytes("# r\xe9glages\nepochs = 2\n".encode("latin-1"))
    feat_dir, data_dir = make_feats(tmp_path)
    result = _cli("train", feat_dir, data_dir, tmp_path / "exp", "--conf", conf)
    assert result.exit_code == 1 and f"sertool: error: {conf}: " in result.output


def test_a_missing_gpu_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    feat_dir, data_dir = make_feats(tmp_path)
    result = _cli("train", feat_dir, data_dir, tmp_path / "exp", "--device", "cuda")
    assert result.exit_code == 1
    assert "sertool: error: --device cuda: no CUDA GPU is available" in result.output


# ----------------------------------------------------------------- recovery of a training run


def test_more_epochs_extend_a_finished_run_and_a_refusal_names_the_key(tmp_path):
    torch.set_num_threads(1)
    feat_dir, data_dir = make_feats(tmp_path)
    exp = tmp_path / "exp"
    first = train(feat_dir, data_dir, exp, tiny_conf(epochs=2), progress=False)
    assert [h["epoch"] for h in first.history] == [1, 2]
    more = train(feat_dir, data_dir, exp, tiny_conf(epochs=3, num_workers=0), progress=False)
    assert more.resumed_from == str(exp / "model_2.pt")
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    assert more.history[:2] == first.history  # the first two epochs were not redone
    assert json.loads((exp / "config.json").read_text())["conf"]["epochs"] == 3
    with pytest.raises(TrainError, match=r"made with another configuration \(conf.lr differs; "
                       r"see .*config.json\); a rerun may change only epochs, num_workers"):
        train(feat_dir, data_dir, exp, tiny_conf(epochs=3, lr=0.5), progress=False)


# ----------------------------------------------------------------- damaged model files


def test_pickled_code_is_refused_without_suggesting_the_unsafe_fix(tmp_path):
    import argparse

    bad = tmp_path / "model.pt"  # any object beyond tensors and plain containers
    torch.save({"format": "x", "obj": argparse.Namespace(run="code")}, bad)
    feat_dir, data_dir = make_feats(tmp_path)
    result = _cli("train", feat_dir, data_dir, tmp_path / "exp", "--init", bad,
                  "--model-conf", "model_resnet_tiny.toml", "--set", "epochs=1")
    assert result.exit_code == 1
    assert "holds pickled Python objects, not only tensors" in result.output
    assert "weights_only=False" not in result.output


def test_a_garbage_frontend_json_in_a_bundle_is_named(tmp_path):
    from sertool.predict import BundleError, load_bundle

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "frontend.json").write_text("{not json")
    (bundle / "model.pt").write_bytes(b"")
    (bundle / "bundle.json").write_text(json.dumps({
        "format": 1, "classes": ["a", "b"], "model_conf": {}, "feat_dim": 2, "files": {}}))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    assert "frontend.json" in str(err.value) or "bundle.json" in str(err.value)


# ----------------------------------------------------------------- audio that lies about itself


def _data_dir(root: Path, wav: Path, segment: str | None = None) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    utt = "spk1-u1"
    if segment:
        (data / "wav.scp").write_text(f"rec1 {wav}\n")
        (data / "segments").write_text(f"{utt} rec1 {segment}\n")
    else:
        (data / "wav.scp").write_text(f"{utt} {wav}\n")
    (data / "utt2spk").write_text(f"{utt} spk1\n")
    (data / "spk2utt").write_text(f"spk1 {utt}\n")
    return data


def _tone(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000,
             subtype="PCM_16")
    return path


def test_a_truncated_wav_is_named_not_used(tmp_path):
    wav = _tone(tmp_path / "a.wav")
    data = wav.read_bytes()
    wav.write_bytes(data[: 44 + (len(data) - 44) // 3])  # header still promises 2 s
    result = _cli("extract-feats", _data_dir(tmp_path, wav), tmp_path / "feats", "--strict")
    assert result.exit_code == 1
    assert f"({wav}): truncated audio: the header says 2.000s, the file holds 0.667s" in (
        result.output)


def test_a_segment_ending_past_its_file_is_named(tmp_path):
    wav = _tone(tmp_path / "a.wav", seconds=1.0)
    data = _data_dir(tmp_path, wav, segment="0.2 3.5")
    result = _cli("extract-feats", data, tmp_path / "feats", "--strict")
    assert result.exit_code == 1
    assert "segment end 3.5s is past the end of the audio (1.000s)" in result.output


def test_a_latin1_data_file_names_file_and_line(tmp_path):
    wav = _tone(tmp_path / "a.wav")
    data = _data_dir(tmp_path, wav)
    (data / "utt2spk").write_bytes("spk1-u1 spk1\nspk1-u2 sp\xe9ker\n".encode("latin-1"))
    result = _cli("validate-data-dir", data)
    assert result.exit_code == 1
    assert f"{data / 'utt2spk'}:2: not UTF-8 text" in result.output


def test_a_bundle_whose_files_list_is_empty_is_refused(tmp_path):
    from sertool.predict import BundleError, read_bundle_meta

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.pt").write_bytes(b"zeroed weights")
    (bundle / "frontend.json").write_text("{}")
    (bundle / "bundle.json").write_text(json.dumps({
        "format": 1, "classes": ["a", "b"], "model_conf": {}, "feat_dim": 2, "files": {}}))
    with pytest.raises(BundleError, match="'files' lists no SHA-256 of model.pt, frontend.json"):
        read_bundle_meta(bundle)

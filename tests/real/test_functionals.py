"""The classical baseline: front-end kind ``opensmile`` (openSMILE functionals) and the
parameter-free ``functionals`` trunk, through import-speaker-model, extract-feats, finetune,
score and predict. Tests marked ``opensmile`` skip without the opensmile package
(tests/conftest.py; SERTOOL_REQUIRE_OPENSMILE=1 in CI)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from speaker_transfer import RAVDESS_FILES, _ravdess_subset

from sertool.cli import main
from sertool.config import CONF_DIR
from sertool.frontend.audio import load_audio
from sertool.frontend.pipeline import Frontend, FrontendError, resolve_conf
from sertool.nnet.checkpoint import load_model


def _invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _smile(feature_set: str):
    import opensmile

    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=opensmile.FeatureLevel.Functionals)


# ----------------------------------------------------------------------------- front-end


@pytest.mark.opensmile
@pytest.mark.shared_data
def test_frontend_equals_opensmiles_process_signal_on_ravdess(ravdess_dir):
    audio = ravdess_dir / "Audio_Speech_Actors_01-24"
    for conf, feature_set, dim, files in (
            ("opensmile_egemaps.toml", "eGeMAPSv02", 88, RAVDESS_FILES),
            ("opensmile_compare.toml", "ComParE_2016", 6373, RAVDESS_FILES[:1])):
        frontend = Frontend(resolve_conf(path=CONF_DIR / conf))
        assert (frontend.kind, frontend.dim) == ("opensmile", dim)
        smile = _smile(feature_set)
        for name in files:
            wave = load_audio(audio / name)  # 16 kHz mono float, as extract-feats reads it
            feats, stats = frontend.process(wave)
            theirs = smile.process_signal(wave, 16000).to_numpy()
            assert feats.shape == theirs.shape == (1, dim) and feats.dtype == np.float32
            np.testing.assert_array_equal(feats, theirs.astype(np.float32))
            assert "too_short" not in stats.flags


@pytest.mark.opensmile
def test_opensmile_options_and_short_signals():
    conf = resolve_conf({"kind": "opensmile"})
    assert (conf["feature_set"], conf["vad"]["enabled"], conf["cmvn"]["mode"]) == (
        "eGeMAPSv02", False, "none")
    with pytest.raises(FrontendError, match="feature_set must be one of eGeMAPSv02, "
                                            "ComParE_2016, got 'GeMAPS'"):
        resolve_conf({"kind": "opensmile", "feature_set": "GeMAPS"})
    with pytest.raises(FrontendError, match="vad.enabled must be false"):
        resolve_conf({"kind": "opensmile", "vad": {"enabled": True}})
    with pytest.raises(FrontendError, match="CMVN would make all zero"):
        resolve_conf({"kind": "opensmile", "cmvn": {"mode": "segment"}})
    frontend = Frontend({"kind": "opensmile"})
    # 100 samples: openSMILE fills its vector with NaN, which must never reach an archive
    with pytest.raises(FrontendError, match=r"100 samples \(0.006 s\) is too short for "
                                            r"openSMILE's eGeMAPSv02: \d+ of 88 functionals"):
        frontend.process(np.full(100, 0.01, np.float32))
    with pytest.raises(FrontendError, match="empty signal"):
        frontend.process(np.zeros(0, np.float32))
    # 0.075 s: finite functionals, flagged too_short by its 10 ms frames, not its one row
    wave = (0.1 * np.random.default_rng(0).standard_normal(1200)).astype(np.float32)
    feats, stats = frontend.process(wave)
    assert feats.shape == (1, 88) and np.isfinite(feats).all()
    assert stats.flags["too_short"] == "0.075 s: 7 frame(s), fewer than 20"


def test_missing_package_is_said_with_the_install_command(monkeypatch, tmp_path):
    from sertool.frontend.functionals import FunctionalsError, import_opensmile

    monkeypatch.setitem(sys.modules, "opensmile", None)  # as if not installed
    message = "front-end kind opensmile needs the opensmile package, which is not installed: "
    with pytest.raises(FunctionalsError, match=message + r"pip install 'sertool\[opensmile\]'"):
        import_opensmile()
    with pytest.raises(FrontendError, match=message):
        Frontend({"kind": "opensmile"})
    result = _invoke("import-speaker-model", "functionals", tmp_path / "out")
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "out" / "model.pt").exists()


# ----------------------------------------------------------------------------- the system


@pytest.mark.opensmile
def test_import_writes_a_parameter_free_model_and_its_frontend(tmp_path):
    out = tmp_path / "compare"
    result = _invoke("import-speaker-model", "functionals", out, "--feature-set", "ComParE_2016")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"{out}: made openSMILE ComParE_2016 functionals (6373 values, no parameters) -> "
        f"{out}/model.pt; extract its features with `sertool extract-feats DATA FEAT --conf "
        f"{out}/frontend.toml`")
    model, meta = load_model(out / "model.pt")
    assert meta["model_conf"] == {"type": "functionals", "embed_dim": 256, "fc_layers": 2}
    assert (meta["num_classes"], meta["feat_dim"], model.pooled_dim) == (0, 6373, 6373)
    assert sum(p.numel() for p in model.parameters()) == 0
    assert resolve_conf(path=out / "frontend.toml") == meta["extra"]["frontend"] == resolve_conf(
        path=CONF_DIR / "opensmile_compare.toml")
    x = torch.randn(3, 1, 6373)
    torch.testing.assert_close(model.pooled(x), x[:, 0])  # the vector itself
    assert json.loads((out / "import.json").read_text())["source"] == "functionals"
    result = _invoke("import-speaker-model", "functionals", out, "--feature-set", "GeMAPS")
    assert result.exit_code != 0 and "'GeMAPS' is not one of" in result.output


@pytest.mark.opensmile
@pytest.mark.shared_data
@pytest.mark.slow
def test_finetune_score_predict_on_real_ravdess(ravdess_dir, tmp_path):
    """4 actors x 6 files, two speaker-independent folds: the linear head (and the paper's FC
    head) on eGeMAPS functionals, scored, and the bundle's predict equal to posteriors.tsv."""
    torch.set_num_threads(1)
    data = _ravdess_subset(ravdess_dir, tmp_path)
    model, feats, exp = tmp_path / "egemaps", tmp_path / "feats", tmp_path / "exp"
    steps = [["import-speaker-model", "functionals", model],
             ["extract-feats", data, feats, "--conf", model / "frontend.toml", "--no-progress"],
             ["finetune", feats, data, exp, "--init", model / "model.pt", "--set",
              "head.kind=linear", "--set", "augment.policy=none", "--no-progress"],
             ["score", exp, "--no-audio", "--no-progress", "--bootstrap", "50"]]
    for args in steps:
        result = _invoke(*args)
        assert result.exit_code == 0, (args[0], result.output)
    assert "functionals (openSMILE, parameter-free trunk, nothing transferred), 2 fold(s)" in (
        _invoke(*steps[2]).output)  # the rerun skips both folds and says what the run is
    stored = dict(kaldiio.load_scp(str(feats / "feats.scp")))
    assert len(stored) == 24 and all(m.shape == (1, 88) for m in stored.values())
    report = json.loads((exp / "report.json").read_text())
    assert [f["n"] for f in report["folds"]] == [12, 12]
    assert "| initialisation | functionals: openSMILE eGeMAPSv02, a parameter-free trunk" in (
        exp / "report.md").read_text()

    test = (data / "folds" / "1" / "test").read_text().split()
    wav = dict(line.split() for line in (data / "wav.scp").read_text().splitlines())
    with open(exp / "fold_1" / "posteriors.tsv", newline="") as f:
        posteriors = {row["utt"]: row for row in csv.DictReader(f, delimiter="\t")}
    result = _invoke("predict", exp / "fold_1" / "bundle", *[wav[u] for u in test],
                     "-o", tmp_path / "pred.json", "--no-progress")
    assert result.exit_code == 0, result.output
    predicted = {Path(r["file"]).name: r for r in json.loads(
        (tmp_path / "pred.json").read_text())["results"]}
    classes = ["ang", "hap", "neu", "sad"]
    for utt in test:
        mine, theirs = predicted[Path(wav[utt]).name], posteriors[utt]
        assert mine["pred"] == theirs["pred"]
        np.testing.assert_allclose([mine["probs"][c] for c in classes],
                                   [float(theirs[c]) for c in classes], atol=2e-6)

    # the paper's FC head on the same functionals (2 epochs: the point is that it runs)
    fc = tmp_path / "exp_fc"
    result = _invoke("finetune", feats, data, fc, "--init", model / "model.pt", "--set",
                     "head.epochs=2", "--set", "augment.policy=none", "--no-progress")
    assert result.exit_code == 0, result.output
    assert all((fc / f"fold_{k}" / "posteriors.tsv").is_file() for k in "12")
    result = _invoke("score", exp, fc, "--no-audio", "--no-progress", "--bootstrap", "0",
                     "--compare-out", tmp_path / "compare.md")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "compare.md").read_text().splitlines()[2:4]
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["functionals (no parameters)", "none (+0 copies)"]] * 2, rows

    # refused, before anything is written: SpecAugment copies (the default policy), a random,
    # scratch or unfrozen "training" of a trunk without parameters, another feature set
    (tmp_path / "functionals.toml").write_text('type = "functionals"\n')
    compare = tmp_path / "compare"
    assert _invoke("import-speaker-model", "functionals", compare, "--feature-set",
                   "ComParE_2016").exit_code == 0
    base = ["finetune", feats, data]
    for extra, message in (
            (["--init", model / "model.pt"],
             "augment.policy = 'conservative': SpecAugment masks 10 ms frames and mel bands of "
             "a spectrogram; the functionals trunk reads one vector of openSMILE functionals "
             "per utterance, which has neither: set --set augment.policy=none"),
            (["--init", "random", "--model-conf", tmp_path / "functionals.toml", "--set",
              "augment.policy=none"], "--init random: the functionals trunk has no parameters"),
            (["--init", "none", "--model-conf", tmp_path / "functionals.toml", "--set",
              "augment.policy=none"], "--init none: the functionals trunk has no parameters"),
            (["--init", model / "model.pt", "--unfreeze", "--set", "augment.policy=none"],
             "--unfreeze: the functionals trunk has no parameters"),
            (["--init", compare / "model.pt", "--set", "augment.policy=none"],
             "ComParE_2016")):
        result = _invoke(*base, tmp_path / "refused", *extra, "--no-progress")
        assert result.exit_code != 0 and message in " ".join(result.output.split()), (
            extra, result.output)
        assert not (tmp_path / "refused").exists()


@pytest.mark.opensmile
def test_extract_embeddings_refuses_specaugment_copies_of_functionals(tmp_path):
    import soundfile

    out = tmp_path / "m"
    assert _invoke("import-speaker-model", "functionals", out).exit_code == 0
    feats = tmp_path / "feats"
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    audio = tmp_path / "a.wav"
    soundfile.write(audio, wave, 16000)
    assert _invoke("extract-feats", "-o", feats, audio, "--conf", out / "frontend.toml",
                   "--no-progress").exit_code == 0
    result = _invoke("extract-embeddings", feats, out / "model.pt", tmp_path / "emb",
                     "--no-progress")
    assert result.exit_code != 0
    assert ("its functionals trunk reads one vector of openSMILE functionals per utterance "
            "(no frames or mel bands), which SpecAugment (conservative) does not apply to"
            in " ".join(result.output.split())), result.output

"""recipes/seed-corpora/run.sh end to end on tiny EMO-DB and TESS trees in their distributed
layouts, with a tiny 1D-CNN config: speaker-independent folds by default, the paper's random
80/20 utterance split with --split random (its reports must say NOT speaker-independent first)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from recipe_run import REPO, copy_recipe, run_recipe

from sertool.config import dump_toml, load_toml

SR = 16000
EMOTIONS = {"emodb": {"W": 220.0, "N": 140.0, "T": 100.0},  # anger, neutral, sadness
            "tess": {"angry": 220.0, "neutral": 140.0, "sad": 100.0}}


def _voice(path: Path, f0: float) -> None:
    """0.6 s of a harmonic tone at f0 (emotion-dependent) with a little noise, 16 kHz."""
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    t = np.arange(int(0.6 * SR)) / SR
    f0 = f0 * (1 + 0.05 * rng.standard_normal())
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    x = 0.2 * x / np.abs(x).max() + 0.005 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype("float32"), SR)


def _trees(root: Path) -> dict[str, Path]:
    emodb, tess = root / "emodb", root / "TESS"
    for spk in ("03", "08", "16"):
        for text in ("a01", "a02", "b01"):
            for code, f0 in EMOTIONS["emodb"].items():
                _voice(emodb / "wav" / f"{spk}{text}{code}a.wav", f0)
    for spk in ("OAF", "YAF"):
        for word in ("back", "bar", "bite", "book"):
            for emo, f0 in EMOTIONS["tess"].items():
                _voice(tess / f"{spk}_{emo}" / f"{spk}_{word}_{emo}.wav", f0)
    return {"emodb": emodb, "tess": tess}


def _tiny_confs(conf: Path) -> list[str]:
    """A 1D-CNN small enough for a test, trained for one epoch in batches of 4."""
    conf.mkdir()
    model = (REPO / "conf" / "model_cnn1d.toml").read_text()
    (conf / "model.toml").write_text(model.replace("channels = 256", "channels = 16"))
    train = {**load_toml(REPO / "conf" / "train_cnn1d.toml"), "epochs": 1, "batch_size": 4,
             "num_workers": 0}
    (conf / "train.toml").write_text(dump_toml(train))
    return ["--model-conf", str(conf / "model.toml"), "--train-conf", str(conf / "train.toml")]


def _ok(recipe: Path, *args: str) -> str:
    proc = run_recipe(recipe, *args, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_seed_corpora_recipe_both_splits(tmp_path):
    recipe = copy_recipe("seed-corpora", tmp_path)
    trees = _trees(tmp_path / "corpora")
    common = ["--corpora", "emodb tess savee", "--emodb", str(trees["emodb"]),
              "--tess", str(trees["tess"]), "--savee", str(tmp_path / "no-such-dir"),
              "--nj", "2", *_tiny_confs(tmp_path / "tiny")]

    out = _ok(recipe, *common)
    assert "skipping savee: not found" in out
    for corpus, n_folds in (("emodb", 3), ("tess", 2)):  # leave-one-speaker-out
        report = json.loads((recipe / f"exp/cnn1d_speaker/{corpus}/report.json").read_text())
        assert report["speaker_independent"] is True and report["complete"]
        assert len(report["folds"]) == n_folds
        assert report["classes"] == ["ang", "neu", "sad"]
        assert sum(f["n"] for f in report["folds"]) == (27 if corpus == "emodb" else 24)
        assert 0.0 <= report["mean"]["ua"] <= 1.0
        first = (recipe / f"exp/cnn1d_speaker/{corpus}/report.md").read_text().splitlines()[0]
        assert first.startswith("SPEAKER-INDEPENDENT")
        # the system's waveform augmentation: 3 copies per recording, trained on
        copies = (recipe / f"feats/{corpus}_speaker_mfcc/wave_aug").read_text().splitlines()
        assert len(copies) == 3 * (27 if corpus == "emodb" else 24)
        config = json.loads((recipe / f"exp/cnn1d_speaker/{corpus}/fold_1/train/config.json")
                            .read_text())
        assert config["conf"]["augment"]["policy"] == "none"  # no SpecAugment on top
    summary = (recipe / "exp/cnn1d_speaker/summary.md").read_text()
    assert "| emodb |" in summary and "| tess |" in summary and "savee" not in summary
    times = (recipe / "exp/stage_times").read_text().split()
    assert [times[i + 1] for i in range(0, len(times), 4)] == ["0", "1", "2", "3", "4"]
    # stage 4: the cross-corpus matrix, its diagonal the fold runs of stage 2
    matrix = json.loads((recipe / "exp/cross_speaker/matrix/report.json").read_text())
    assert matrix["corpora"] == ["emodb", "tess"]
    ua = {}
    for name in ("emodb_to_tess", "tess_to_emodb"):
        report = json.loads((recipe / f"exp/cross_speaker/matrix/{name}/report.json")
                            .read_text())
        assert report["experiment_json"]["cross_corpus"]["only_in_train"] == {}
        assert report["folds"][0]["n"] == (24 if name == "emodb_to_tess" else 27)
        ua[name] = report["mean"]["ua"]
    diag = [json.loads((recipe / f"exp/cnn1d_speaker/{c}/report.json").read_text())["mean"]["ua"]
            for c in ("emodb", "tess")]
    assert matrix["ua"] == [[diag[0], ua["emodb_to_tess"]], [ua["tess_to_emodb"], diag[1]]]
    assert (recipe / "exp/cross_speaker/matrix/matrix.png").is_file()

    # The paper's own split: one random 80/20 utterance split, speakers on both sides.
    out = _ok(recipe, *common, "--split", "random", "--stop-stage", "3")
    for corpus in ("emodb", "tess"):
        report = json.loads((recipe / f"exp/cnn1d_random/{corpus}/report.json").read_text())
        assert report["speaker_independent"] is False and len(report["folds"]) == 1
        first = (recipe / f"exp/cnn1d_random/{corpus}/report.md").read_text().splitlines()[0]
        assert first.startswith("NOT SPEAKER-INDEPENDENT")
        assert f"{corpus}: NOT SPEAKER-INDEPENDENT" in out
    # the speaker-independent run is still there, untouched
    assert (recipe / "exp/cnn1d_speaker/emodb/report.json").is_file()

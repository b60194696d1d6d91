"""recipes/ravdess/run.sh: its options, the missing-speaker-corpus message, and its data stage on
tiny RAVDESS and LibriSpeech trees (the whole recipe is run on real data by hand, see
docs/RESULTS.md; it is too slow for the test suite)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from recipe_run import copy_recipe, run_recipe


def _audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    sf.write(path, (0.1 * rng.standard_normal(1600)).astype("float32"), 16000)


def test_help_lists_the_options_with_their_defaults(tmp_path):
    proc = run_recipe(copy_recipe("ravdess", tmp_path), "--help")
    assert proc.returncode == 0
    options = dict(line.split(None, 1) for line in proc.stderr.splitlines()[2:])
    assert options["--speaker-corpus"] == "../../../shared/data/librispeech-subset"
    assert options["--ravdess"] == "../../../shared/data/ravdess"
    assert options["--model-conf"] == "conf/model_resnet_cpu.toml"
    assert options["--device"] == "cpu" and options["--stop-stage"] == "6"
    assert "--config" not in options  # a TOML path named config would be sourced by Kaldi tools


def test_unknown_option_and_missing_speaker_corpus_fail_clearly(tmp_path):
    recipe = copy_recipe("ravdess", tmp_path)
    proc = run_recipe(recipe, "--no-such-option", "1")
    assert proc.returncode == 1 and "unknown option --no-such-option" in proc.stderr
    proc = run_recipe(recipe, "--speaker-corpus", str(tmp_path / "absent"), "--stop-stage", "0")
    assert proc.returncode == 1
    assert f"no speaker corpus at {tmp_path / 'absent'}: give one with --speaker-corpus" \
        in proc.stdout
    assert not (recipe / "data").exists()


def test_data_stage_on_tiny_trees(tmp_path):
    ravdess, libri = tmp_path / "ravdess", tmp_path / "libri"
    actors = ("01", "02", "04", "11")
    for a in actors:
        for e in ("01", "05"):
            _audio(ravdess / f"Audio_Speech_Actors_01-24/Actor_{a}/03-01-{e}-01-01-01-{a}.wav")
    for spk in ("19", "26", "32"):
        for utt in range(3):
            _audio(libri / f"LibriSpeech/train-clean-100/{spk}/198/{spk}-198-{utt:04d}.flac")
    recipe = copy_recipe("ravdess", tmp_path)
    args = ["--ravdess", str(ravdess), "--speaker-corpus", str(libri), "--stop-stage", "0"]
    proc = run_recipe(recipe, *args)
    assert proc.returncode == 0, proc.stdout
    assert "SPEAKER-INDEPENDENT" in proc.stdout
    assert len((recipe / "data/speaker/utt2spk").read_text().splitlines()) == 9
    protocol = json.loads((recipe / "data/ravdess/folds/protocol.json").read_text())
    assert protocol["name"] == "speaker-groups"  # EmoBox groups 1, 2 and 5, minus absent actors
    assert protocol["test_groups"] == {"1": ["ravdess01", "ravdess11"], "2": ["ravdess04"],
                                       "3": ["ravdess02"]}
    # rerun: nothing prepared again
    proc = run_recipe(recipe, *args)
    assert proc.returncode == 0 and proc.stdout.count("already prepared") == 2


def _ravdess_subset(src: Path, dst: Path) -> Path:
    """4 real actors, one per EmoBox group, 2 files per emotion each (links to the real files)."""
    root = src / "Audio_Speech_Actors_01-24"
    for actor in ("01", "04", "08", "03"):
        for emotion in ("01", "02", "03", "04", "05", "06", "07", "08"):
            for path in sorted((root / f"Actor_{actor}").glob(f"03-01-{emotion}-*"))[:2]:
                link = dst / "Audio_Speech_Actors_01-24" / f"Actor_{actor}" / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
    return dst


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("speaker_model", ["wespeaker", "resemblyzer"])
def test_transfer_from_a_published_speaker_model(tmp_path, ravdess_dir, wespeaker_ref_dir,
                                                  speaker_model):
    if speaker_model == "resemblyzer":
        pytest.importorskip("resemblyzer", reason="the resemblyzer extra is not installed")
        option = "resemblyzer"
    else:
        option = f"wespeaker:{wespeaker_ref_dir}"
    subset = _ravdess_subset(ravdess_dir, tmp_path / "ravdess")
    recipe = copy_recipe("ravdess", tmp_path)
    quick = recipe / "conf" / "finetune_quick.toml"
    quick.write_text("[augment]\ncopies = 1\n\n[head]\nepochs = 4\n")
    common = ["--ravdess", str(subset), "--speaker-model", option, "--ablations", "",
              "--finetune-conf", str(quick)]
    proc = run_recipe(recipe, *common, "--stop-stage", "3", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "nothing to train" in proc.stdout  # stage 2: the model was imported, not trained
    model = recipe / "exp" / "speaker" / speaker_model
    assert (model / "model.pt").is_file() and (model / "frontend.toml").is_file()
    frontend = json.loads((recipe / f"feats/ravdess_{speaker_model}/frontend.json").read_text())
    assert frontend["kind"] == {"wespeaker": "kaldi_fbank", "resemblyzer": "ge2e_mel"}[
        speaker_model]
    proc = run_recipe(recipe, *common, "--stage", "6", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (recipe / "exp/emotion/transfer/report.md").read_text()
    assert report.splitlines()[0].startswith("SPEAKER-INDEPENDENT")
    assert "4 of 4 folds" in report or "(4 of 4 folds)" in report
    experiment = json.loads((recipe / "exp/emotion/transfer/experiment.json").read_text())
    assert experiment["init"].endswith(f"exp/speaker/{speaker_model}/model.pt")
    assert "transfer" in (recipe / "exp/emotion/results.md").read_text()

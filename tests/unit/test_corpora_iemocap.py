"""IEMOCAP preparation from a tiny tree in the full-release layout and EmoEvaluation format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sertool.cli import main
from sertool.corpora import PrepareError, prepare
from sertool.corpora.iemocap import speaker_of
from sertool.datadir import read_folds, read_table, validate_data_dir
from sertool.folds import check_folds

# session -> dialog -> [(utt, consensus label)]
TURNS = {
    1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "ang"),
                           ("Ses01F_impro01_F001", "xxx"), ("Ses01F_impro01_M001", "exc")],
        "Ses01M_script01_1": [("Ses01M_script01_1_M000", "hap"),
                              ("Ses01M_script01_1_F000", "sad"),
                              ("Ses01M_script01_1_F001", "fru")]},
    2: {"Ses02F_impro02": [("Ses02F_impro02_F000", "sad"), ("Ses02F_impro02_M000", "exc"),
                           ("Ses02F_impro02_F001", "hap"), ("Ses02F_impro02_M001", "neu")]},
    3: {"Ses03M_impro03": [("Ses03M_impro03_M000", "ang"), ("Ses03M_impro03_F000", "neu"),
                           ("Ses03M_impro03_M001", "sad"), ("Ses03M_impro03_F001", "exc")]},
}
WORD = {"neu": "Neutral", "ang": "Anger", "sad": "Sadness", "hap": "Happiness",
        "exc": "Excited", "fru": "Frustration"}


def _eval_text(turns) -> str:
    """An EmoEvaluation file exactly as distributed (header, summary + annotator lines)."""
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for i, (utt, label) in enumerate(turns):
        lines.append(f"[{6.2901 + 3 * i:.4f} - {8.2357 + 3 * i:.4f}]\t{utt}\t{label}\t"
                     "[2.5000, 2.5000, 2.5000]")
        words = ["Neutral", "Anger", "Sadness"] if label == "xxx" else [WORD[label]] * 2 + [
            "Neutral"]
        lines += [f"C-E{k + 2}:\t{w};\t()" for k, w in enumerate(words)]
        lines += ["A-E3:\tval 3; act 2; dom  2;\t()", ""]
    return "\n".join(lines) + "\n"


def build_tree(root: Path, turns=TURNS, ext: str = ".wav") -> Path:
    rng = np.random.default_rng(0)
    for session, dialogs in turns.items():
        ses = root / "IEMOCAP_full_release" / f"Session{session}"
        for dialog, items in dialogs.items():
            for utt, _ in items:
                path = ses / "sentences" / "wav" / dialog / f"{utt}{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, (0.1 * rng.standard_normal(1600)).astype("float32"), 16000,
                         subtype="PCM_16")
            ev = ses / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
            ev.parent.mkdir(parents=True, exist_ok=True)
            ev.write_text(_eval_text(items))
            (ev.parent / "Categorical").mkdir(exist_ok=True)  # subfolders of the release
    return root


def test_speaker_is_session_plus_gender_of_the_utterance():
    assert speaker_of("Ses01F_impro01_M003") == "Ses01M"
    assert speaker_of("Ses05M_script02_2_F014") == "Ses05F"
    assert speaker_of("Ses01F_impro01") is None


@pytest.mark.parametrize(("exp", "labels"), [
    (1, {"ang": 2, "hap": 2, "neu": 3, "sad": 3}),
    (2, {"ang": 2, "exc": 3, "neu": 3, "sad": 3}),
    (3, {"ang": 2, "hap": 5, "neu": 3, "sad": 3}),
])
def test_class_maps(tmp_path, exp, labels):
    build_tree(tmp_path / "src")
    result = prepare("iemocap", tmp_path / "src", tmp_path / "data", exp=exp, progress=False)
    emo = read_table(tmp_path / "data" / "utt2emo")
    assert dict(sorted((lab, list(emo.values()).count(lab)) for lab in set(emo.values()))) \
        == labels
    assert result.labels == labels
    assert result.skipped == []
    assert result.excluded["xxx"] == 1 and result.excluded["fru"] == 1
    assert validate_data_dir(tmp_path / "data", require_emotion=True) == []


def test_data_directory_speakers_ids_dialogs_and_folds(tmp_path):
    build_tree(tmp_path / "src", ext=".flac")
    prepare("iemocap", tmp_path / "src", tmp_path / "data", exp=3, progress=False)
    data = tmp_path / "data"
    utt2spk = read_table(data / "utt2spk")
    # native ids that start with their speaker are kept; the others are re-keyed spk-native
    assert utt2spk["Ses01F_impro01_F000"] == "Ses01F"
    assert utt2spk["Ses01M-Ses01F_impro01_M000"] == "Ses01M"
    assert utt2spk["Ses01F-Ses01M_script01_1_F000"] == "Ses01F"
    assert sorted(set(utt2spk.values())) == ["Ses01F", "Ses01M", "Ses02F", "Ses02M",
                                             "Ses03F", "Ses03M"]
    wav = read_table(data / "wav.scp")
    assert wav["Ses01M-Ses01F_impro01_M000"] == str(
        (tmp_path / "src" / "IEMOCAP_full_release" / "Session1" / "sentences" / "wav"
         / "Ses01F_impro01" / "Ses01F_impro01_M000.flac").resolve())
    assert read_table(data / "utt2conv")["Ses01M-Ses01F_impro01_M000"] == "Ses01F_impro01"
    folds, protocol = read_folds(data)
    assert protocol["name"] == "leave-one-session-out"
    assert protocol["test_groups"] == {"1": ["Session1"], "2": ["Session2"], "3": ["Session3"]}
    assert [len(f.test) for f in folds] == [5, 4, 4]
    assert check_folds(data, progress=False).clean
    stats = json.loads((data / "prepare.json").read_text())
    assert stats["n_utts"] == 13 and stats["exp"] == 3


def test_bad_inputs_are_listed_skips_naming_the_file(tmp_path):
    src = build_tree(tmp_path / "src")
    ses1 = src / "IEMOCAP_full_release" / "Session1"
    ses2 = src / "IEMOCAP_full_release" / "Session2"
    ses3 = src / "IEMOCAP_full_release" / "Session3"
    # missing EmoEvaluation file
    (ses1 / "dialog" / "EmoEvaluation" / "Ses01M_script01_1.txt").unlink()
    # truncated: the file stops inside the summary line of the third turn
    ev2 = ses2 / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt"
    text = ev2.read_text()
    cut = text.index("Ses02F_impro02_F001")
    ev2.write_text(text[:cut + 5])
    # unknown label
    ev3 = ses3 / "dialog" / "EmoEvaluation" / "Ses03M_impro03.txt"
    ev3.write_text(ev3.read_text().replace("Ses03M_impro03_M000\tang", "Ses03M_impro03_M000\tmad"))
    # labels of a dialog whose audio directory is missing
    orphan = ses3 / "dialog" / "EmoEvaluation" / "Ses03F_impro09.txt"
    orphan.write_text(_eval_text([("Ses03F_impro09_F000", "ang")]))
    # a file name breaking the convention
    sf.write(ses3 / "sentences" / "wav" / "Ses03M_impro03" / "take2.wav",
             np.zeros(800, dtype="float32"), 16000)

    result = prepare("iemocap", src, tmp_path / "data", exp=3, progress=False)
    skipped = (tmp_path / "data" / "skipped").read_text().splitlines()
    reasons = dict(line.split("\t") for line in skipped)
    wav1 = ses1 / "sentences" / "wav" / "Ses01M_script01_1"
    for utt in ("Ses01M_script01_1_M000", "Ses01M_script01_1_F000", "Ses01M_script01_1_F001"):
        assert reasons[str(wav1 / f"{utt}.wav")].startswith("no labels: EmoEvaluation file")
    assert reasons[f"{ev2}:15"].startswith("malformed summary line (truncated file?)")
    for utt in ("Ses02F_impro02_F001", "Ses02F_impro02_M001"):
        assert reasons[str(ses2 / "sentences" / "wav" / "Ses02F_impro02" / f"{utt}.wav")] == (
            f"no summary line for {utt} in {ev2} (truncated file?)")
    assert reasons[f"{ev3}:3"].startswith("unknown label 'mad' for Ses03M_impro03_M000")
    take2 = ses3 / "sentences" / "wav" / "Ses03M_impro03" / "take2.wav"
    assert "does not follow" in reasons[str(take2)]
    assert reasons[str(orphan)].startswith("labels without audio: no directory")
    assert len(skipped) == 9 and len(result.skipped) == 9
    assert "SKIPPED 9 files" in result.summary()
    assert result.n_utts == 13 - 2 - 2 - 1  # hap+sad of the dialog, hap+neu cut off, ang
    with pytest.raises(PrepareError, match="9 files skipped \\(--strict\\)"):
        prepare("iemocap", src, tmp_path / "strict", exp=3, strict=True, progress=False)
    assert not (tmp_path / "strict").exists()


def test_errors_for_empty_or_wrong_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="empty directory"):
        prepare("iemocap", tmp_path / "empty", tmp_path / "data")
    (tmp_path / "other" / "x").mkdir(parents=True)
    with pytest.raises(PrepareError, match="no Session1..Session5 directories"):
        prepare("iemocap", tmp_path / "other", tmp_path / "data")
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", "iemocapp", str(tmp_path), str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "unknown corpus 'iemocapp'; supported: cremad, emodb, emovo, iemocap" in result.output


def test_cli_prepare_and_rerun_replaces_directory(tmp_path):
    build_tree(tmp_path / "src")
    data = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", "iemocap", str(tmp_path / "src"), str(data),
                                  "--exp", "2", "--protocol", "kfold-random", "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert "11 utterances, 6 speakers" in result.output
    assert "kfold-random (speaker-independent: False)" in result.output
    (data / "feats.scp").write_text("stale 1\n")  # not prepare's: a rerun must not delete it
    result = runner.invoke(main, ["prepare", "iemocap", str(tmp_path / "src"), str(data),
                                  "--exp", "1"])
    assert result.exit_code == 1 and "also holds feats.scp" in result.output
    assert (data / "feats.scp").read_text() == "stale 1\n"
    (data / "feats.scp").unlink()
    result = runner.invoke(main, ["prepare", "iemocap", str(tmp_path / "src"), str(data),
                                  "--exp", "1"])
    assert result.exit_code == 0, result.output
    assert read_folds(data)[1]["name"] == "leave-one-session-out"
    assert "labels: ang 2, hap 2, neu 3, sad 3" in result.output

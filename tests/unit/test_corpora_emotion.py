"""RAVDESS, EMO-DB, CREMA-D, TESS, SAVEE, EMOVO and the CSV manifest, each from a tiny tree in
the corpus's distributed layout and file-name convention (with one file that breaks it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_trees import CASES, _audio

from sertool.corpora import PrepareError, prepare
from sertool.datadir import read_folds, read_table, validate_data_dir
from sertool.folds import check_folds


@pytest.mark.parametrize("corpus", sorted(CASES))
def test_corpus_from_its_distributed_layout(tmp_path, corpus):
    files, bad, expected, protocol_name, n_folds = CASES[corpus]
    src = tmp_path / "src"
    for rel in [*files, bad]:
        _audio(src / rel)
    (src / "README.txt").parent.mkdir(parents=True, exist_ok=True)
    (src / "README.txt").write_text("not audio; ignored\n")
    data = tmp_path / "data"
    result = prepare(corpus, src, data, progress=False)

    assert validate_data_dir(data, require_emotion=True) == []
    utt2spk, utt2emo = read_table(data / "utt2spk"), read_table(data / "utt2emo")
    wav = read_table(data / "wav.scp")
    assert len(utt2spk) == len(files) == result.n_utts
    for utt, (spk, label) in expected.items():
        assert (utt2spk[utt], utt2emo[utt]) == (spk, label)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in wav.values())
    assert sorted(Path(p).relative_to(src.resolve()).as_posix() for p in wav.values()) \
        == sorted(files)
    # the file breaking the convention is a listed skip naming it
    assert [s.path for s in result.skipped] == [str((src / bad).resolve())]
    assert "does not follow" in result.skipped[0].reason or "unknown" in result.skipped[0].reason
    assert (data / "skipped").read_text().startswith(str((src / bad).resolve()) + "\t")

    folds, protocol = read_folds(data)
    assert protocol["name"] == protocol_name and protocol["speaker_independent"] is True
    assert len(folds) == n_folds
    assert sorted(u for f in folds for u in f.test) == sorted(utt2spk)
    assert check_folds(data, progress=False).clean


def test_ravdess_partial_copy_keeps_published_groups(tmp_path):
    files = CASES["ravdess"][0]
    for rel in files:
        _audio(tmp_path / "src" / rel)
    prepare("ravdess", tmp_path / "src", tmp_path / "data", progress=False)
    folds, protocol = read_folds(tmp_path / "data")
    assert protocol["test_groups"] == {"1": ["ravdess01", "ravdess11"], "2": ["ravdess04"],
                                       "3": ["ravdess02"]}
    assert protocol["note"].startswith("20 speakers of the published groups are absent")


def test_ravdess_song_and_wrong_actor_folder_are_listed(tmp_path):
    src = tmp_path / "src"
    _audio(src / "Actor_01" / "03-01-05-01-01-01-01.wav")
    _audio(src / "Actor_02" / "03-01-05-01-01-01-02.wav")
    _audio(src / "Actor_01" / "03-02-05-01-01-01-01.wav")  # song
    _audio(src / "Actor_01" / "03-01-04-01-01-01-03.wav")  # actor 03 in Actor_01/
    _audio(src / "Actor_01" / "03-01-09-01-01-01-01.wav")  # no emotion 09
    result = prepare("ravdess", src, tmp_path / "data", progress=False)
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert reasons["03-02-05-01-01-01-01.wav"].startswith("channel 02 is song")
    assert reasons["03-01-04-01-01-01-03.wav"].startswith("actor 03 in the name but")
    assert reasons["03-01-09-01-01-01-01.wav"].startswith("unknown emotion code 09")
    assert result.n_utts == 2


def test_other_protocols_on_an_emotion_corpus(tmp_path):
    files = CASES["emodb"][0]
    for rel in files:
        _audio(tmp_path / "src" / rel)
    prepare("emodb", tmp_path / "src", tmp_path / "kf", protocol="kfold-random", k=3, seed=1,
            progress=False)
    folds, protocol = read_folds(tmp_path / "kf")
    assert protocol["speaker_independent"] is False and len(folds) == 3
    check = check_folds(tmp_path / "kf", progress=False)
    assert check.verdict.startswith("NOT SPEAKER-INDEPENDENT")
    prepare("emodb", tmp_path / "src", tmp_path / "rs", protocol="random-split", progress=False)
    (fold,) = read_folds(tmp_path / "rs")[0]
    assert (len(fold.train), len(fold.test)) == (15, 4)
    with pytest.raises(PrepareError, match="emodb has no sessions"):
        prepare("emodb", tmp_path / "src", tmp_path / "x", protocol="leave-one-session-out")
    with pytest.raises(PrepareError, match="unknown protocol 'loso'"):
        prepare("emodb", tmp_path / "src", tmp_path / "x", protocol="loso")


def test_manifest_csv(tmp_path):
    for name in ("a1.wav", "a2.flac", "b1.wav", "b2.wav", "c 1.wav"):
        _audio(tmp_path / "audio" / name)
    csv = tmp_path / "list.csv"
    csv.write_text("speaker,path,label\n"
                   "alice,audio/a1.wav,happy\n"
                   f"alice,{tmp_path / 'audio' / 'a2.flac'},sad\n"
                   "bob,audio/b1.wav,happy\n"
                   "bob,audio/b2.wav,sad\n"
                   "carol,audio/c 1.wav,sad\n"
                   "bob,audio/missing.wav,sad\n"
                   "bob,audio/b1.wav,very sad\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("happy hap\n")  # names that are no class code are mapped to one
    result = prepare("manifest", csv, tmp_path / "data", progress=False, labels=labels)
    data = tmp_path / "data"
    assert validate_data_dir(data, require_emotion=True) == []
    assert read_table(data / "utt2spk") == {"alice-a1": "alice", "alice-a2": "alice",
                                            "bob-b1": "bob", "bob-b2": "bob",
                                            "carol-c_1": "carol"}
    assert Counter(read_table(data / "utt2emo").values()) == {"hap": 2, "sad": 3}
    assert [(s.path, s.reason.split(":")[-1].strip()) for s in result.skipped] == [
        (f"{csv.resolve()}:7", "audio file not found"),
        (f"{csv.resolve()}:8", "speaker 'bob' / label 'very sad' must be one token of letters, "
         "digits, _ . + -"),
    ]
    assert read_folds(data)[1]["name"] == "leave-one-speaker-out"
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\nx.wav,sad\n")
    with pytest.raises(PrepareError, match=r"bad.csv:1: header must name the columns path"):
        prepare("manifest", bad, tmp_path / "d2")


def test_empty_and_unreadable_audio_are_listed(tmp_path):
    src = tmp_path / "cremad" / "AudioWAV"
    for name in ("1001_DFA_ANG_XX", "1002_DFA_ANG_XX"):
        _audio(src / f"{name}.wav")
    sf.write(src / "1001_DFA_NEU_XX.wav", np.zeros(0, dtype="float32"), 16000)
    (src / "1002_DFA_NEU_XX.wav").write_bytes(b"RIFF....not a wav")
    result = prepare("cremad", tmp_path / "cremad", tmp_path / "data", progress=False)
    assert result.n_utts == 2
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert reasons["1001_DFA_NEU_XX.wav"] == "empty audio (0 samples)"
    assert reasons["1002_DFA_NEU_XX.wav"].startswith("unreadable audio: ")

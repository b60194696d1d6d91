"""Protocols (fold makers) and the leakage check behind `sertool check-folds`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sertool.cli import main
from sertool.datadir import DataDir, read_folds, write_folds
from sertool.folds import (
    audio_hash,
    check_folds,
    kfold_random,
    leave_one_session_out,
    leave_one_speaker_out,
    random_split,
    speaker_groups,
    speaker_kfold,
)

# 4 speakers x 6 utterances, labels a/b/c cycling; speakers s1,s2 in session X, s3,s4 in Y
UTT2SPK = {f"s{s}-{i}": f"s{s}" for s in range(1, 5) for i in range(6)}
UTT2LABEL = {u: "abc"[int(u[-1]) % 3] for u in UTT2SPK}


def _speakers(utts):
    return {UTT2SPK[u] for u in utts}


def test_leave_one_speaker_out():
    folds, protocol = leave_one_speaker_out(UTT2SPK)
    assert [f.name for f in folds] == ["1", "2", "3", "4"]
    assert protocol["test_groups"] == {"1": ["s1"], "2": ["s2"], "3": ["s3"], "4": ["s4"]}
    assert protocol["speaker_independent"] is True
    for fold in folds:
        assert len(fold.test) == 6 and len(fold.train) == 18
        assert not _speakers(fold.train) & _speakers(fold.test)


def test_leave_one_session_out_keeps_given_order():
    utt2ses = {u: "X" if UTT2SPK[u] in ("s1", "s2") else "Y" for u in UTT2SPK}
    folds, protocol = leave_one_session_out(utt2ses, order=["Y", "X"])
    assert protocol["test_groups"] == {"1": ["Y"], "2": ["X"]}
    assert _speakers(folds[0].test) == {"s3", "s4"}
    with pytest.raises(ValueError, match="need at least 2 groups"):
        leave_one_session_out({u: "X" for u in UTT2SPK})


def test_speaker_groups_checks_the_lists():
    folds, protocol = speaker_groups(UTT2SPK, [["s1", "s3"], ["s2", "s4"]])
    assert _speakers(folds[0].test) == {"s1", "s3"} and _speakers(folds[0].train) == {"s2", "s4"}
    assert protocol["test_groups"] == {"1": ["s1", "s3"], "2": ["s2", "s4"]}
    with pytest.raises(ValueError, match="speaker 's1' is in groups 1 and 2"):
        speaker_groups(UTT2SPK, [["s1", "s3"], ["s1", "s2", "s4"]])
    with pytest.raises(ValueError, match=r"in the groups but not in the data: \['s9'\]"):
        speaker_groups(UTT2SPK, [["s1", "s3", "s9"], ["s2", "s4"]])
    with pytest.raises(ValueError, match=r"speakers of the data in no group: \['s4'\]"):
        speaker_groups(UTT2SPK, [["s1", "s3"], ["s2"]])


def test_speaker_kfold_is_seeded_and_speaker_independent():
    folds, protocol = speaker_kfold(UTT2SPK, k=2, seed=3)
    assert speaker_kfold(UTT2SPK, k=2, seed=3)[0] == folds
    assert protocol["name"] == "speaker-kfold" and protocol["speaker_independent"] is True
    assert sorted(len(_speakers(f.test)) for f in folds) == [2, 2]
    assert all(not _speakers(f.train) & _speakers(f.test) for f in folds)


def test_speaker_kfold_balances_test_folds_by_utterance_count():
    """29 speakers of 2..80 utterances (a new user's corpus): a random deal of speakers gave a
    test fold 12 of 400 utterances; the balanced deal keeps every fold near 1/k of the data."""
    import random as _random

    rng = _random.Random(5)
    counts = [rng.randint(2, 80) for _ in range(29)]
    utt2spk = {f"spk{s:02d}-{i:03d}": f"spk{s:02d}" for s, n in enumerate(counts)
               for i in range(n)}
    for seed in range(5):
        folds, _ = speaker_kfold(utt2spk, k=5, seed=seed)
        sizes = sorted(len(f.test) for f in folds)
        assert sum(sizes) == len(utt2spk)
        assert sizes[-1] - sizes[0] <= max(counts)  # greedy bound: within one speaker
        assert sizes[0] >= 0.8 * len(utt2spk) / 5, sizes
        assert all(not {utt2spk[u] for u in f.train} & {utt2spk[u] for u in f.test}
                   for f in folds)
    assert speaker_kfold(utt2spk, k=5, seed=1)[0] != speaker_kfold(utt2spk, k=5, seed=2)[0]


def test_kfold_random_is_stratified_seeded_and_not_speaker_independent():
    folds, protocol = kfold_random(UTT2LABEL, k=4, seed=7)
    assert protocol["speaker_independent"] is False and "NOT speaker-independent" in (
        protocol["description"])
    tests = [u for f in folds for u in f.test]
    assert sorted(tests) == sorted(UTT2LABEL)  # each utterance tested exactly once
    for fold in folds:
        assert len(fold.test) == 6
        assert Counter(UTT2LABEL[u] for u in fold.test) == {"a": 2, "b": 2, "c": 2}
    assert kfold_random(UTT2LABEL, k=4, seed=7)[0] == folds
    assert kfold_random(UTT2LABEL, k=4, seed=8)[0] != folds


def test_random_split_80_20():
    folds, protocol = random_split(UTT2LABEL, 0.25, seed=0)
    (fold,) = folds
    assert len(fold.test) == 6 and len(fold.train) == 18
    assert Counter(UTT2LABEL[u] for u in fold.test) == {"a": 2, "b": 2, "c": 2}
    assert protocol["speaker_independent"] is False and protocol["name"] == "random-split"


# ------------------------------------------------------------------ check_folds


def _noise(seed: int, n: int = 1600) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype("float32")


def _data_dir(tmp_path: Path, protocol=leave_one_speaker_out) -> Path:
    wav = {}
    for i, utt in enumerate(sorted(UTT2SPK)):
        path = tmp_path / "audio" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _noise(i), 16000, subtype="PCM_16")
        wav[utt] = str(path)
    data = tmp_path / "data"
    DataDir(wav, dict(UTT2SPK), dict(UTT2LABEL)).save(data)
    write_folds(data, *protocol(UTT2SPK))
    return data


def test_speaker_independent_protocol_is_clean(tmp_path):
    data = _data_dir(tmp_path)
    check = check_folds(data)
    assert check.clean
    assert check.verdict == ("SPEAKER-INDEPENDENT: no speaker and no identical recording on "
                             "both sides of any of 4 folds")
    assert [f.shared_speakers for f in check.folds] == [[], [], [], []]
    assert (data / ".audio_hashes.json").is_file()  # the cache
    as_dict = check.to_dict()
    assert as_dict["clean"] is True and len(as_dict["folds"]) == 4
    json.dumps(as_dict)


def test_planted_speaker_overlap_is_found(tmp_path):
    data = _data_dir(tmp_path)
    folds, protocol = read_folds(data)
    folds[1].train.remove("s1-0")  # move one of s1's utterances into fold 2's test set
    folds[1].test.append("s1-0")
    folds[0].test.remove("s1-0")  # tested once: overlapping test lists are refused
    write_folds(data, folds, protocol)
    check = check_folds(data)
    assert not check.clean
    assert [f.shared_speakers for f in check.folds] == [[], ["s1"], [], []]
    assert check.verdict.startswith("NOT SPEAKER-INDEPENDENT: 1 speakers on both sides of "
                                    "fold 2 (s1)")


def test_planted_duplicate_recording_in_another_format(tmp_path):
    data = _data_dir(tmp_path)
    # the same samples as s1-0, saved as FLAC under s3's name: different bytes, same audio
    samples, rate = sf.read(tmp_path / "audio" / "s1-0.wav", dtype="int16")
    flac = tmp_path / "audio" / "copy.flac"
    sf.write(flac, samples, rate)
    assert flac.read_bytes() != (tmp_path / "audio" / "s1-0.wav").read_bytes()
    assert audio_hash(flac) == audio_hash(tmp_path / "audio" / "s1-0.wav")
    table = (data / "wav.scp").read_text().replace(str(tmp_path / "audio" / "s3-5.wav"),
                                                    str(flac))
    (data / "wav.scp").write_text(table)
    check = check_folds(data)
    assert not check.clean
    dups = {f.name: f.duplicate_audio for f in check.folds}
    # fold 1 tests s1 (s3-5 in train), fold 3 tests s3 (s1-0 in train)
    assert dups == {"1": [("s3-5", "s1-0")], "2": [], "3": [("s1-0", "s3-5")], "4": []}
    assert all(f.shared_speakers == [] for f in check.folds)
    assert check.verdict.startswith("LEAKING (identical audio): 2 identical recordings on both "
                                    "sides in 2 of 4 folds (e.g. fold 1: s3-5 = s1-0)")
    assert check.verdict.endswith("[protocol leave-one-speaker-out claims speaker-independent!]")


def test_random_protocol_is_reported_not_speaker_independent(tmp_path):
    data = _data_dir(tmp_path, protocol=lambda _: kfold_random(UTT2LABEL, k=3, seed=0))
    check = check_folds(data, audio=False)
    assert not check.clean and not check.audio_checked
    assert all(len(f.shared_speakers) >= 3 for f in check.folds)
    assert check.verdict.startswith("NOT SPEAKER-INDEPENDENT")
    assert check.verdict.endswith("[protocol kfold-random]")


def test_segment_hash_differs_from_whole_file(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, _noise(1), 16000, subtype="PCM_16")
    assert audio_hash(path, 0.0, 0.05) != audio_hash(path)
    assert audio_hash(path, 0.0, 0.1) == audio_hash(path)  # 1600 samples = 0.1 s


def test_cli_check_folds_prints_verdict_first(tmp_path):
    data = _data_dir(tmp_path)
    result = CliRunner().invoke(main, ["check-folds", str(data)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("SPEAKER-INDEPENDENT: no speaker and no identical recording")
    assert "fold 4: train 18, test 6: clean" in lines
    result = CliRunner().invoke(main, ["check-folds", str(data), "--json"])
    assert json.loads(result.output)["verdict"] == lines[0]
    result = CliRunner().invoke(main, ["check-folds", str(tmp_path / "audio")])
    assert result.exit_code == 1 and "wav.scp: file not found" in result.output


def test_inner_speaker_folds_use_training_speakers_only_each_once():
    from sertool.folds import SplitError, inner_speaker_folds

    train = [u for u in UTT2SPK if UTT2SPK[u] != "s4"]  # s4 is the outer test side
    inner = inner_speaker_folds(train, UTT2SPK, k=5, seed=1)
    assert len(inner) == 3  # capped at the 3 training speakers
    validated = [UTT2SPK[u] for _, valid in inner for u in valid]
    assert sorted(set(validated)) == ["s1", "s2", "s3"]
    for tr, valid in inner:
        assert sorted(tr + valid) == sorted(train)
        assert not {UTT2SPK[u] for u in tr} & {UTT2SPK[u] for u in valid}
    assert inner_speaker_folds(train, UTT2SPK, k=5, seed=1) == inner
    with pytest.raises(SplitError, match="needs at least 2 training speakers"):
        inner_speaker_folds([u for u in UTT2SPK if UTT2SPK[u] == "s1"], UTT2SPK, k=3, seed=0)

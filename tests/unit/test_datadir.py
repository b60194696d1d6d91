"""Kaldi data directories: tables, C sort order, the prefix rule, segments, folds, validation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sertool.datadir import (
    DataDir,
    DataDirError,
    Fold,
    Segment,
    read_folds,
    read_list,
    read_table,
    require_valid,
    validate_data_dir,
    write_folds,
    write_table,
)


def _wav(path: Path, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(800)).astype("float32"), 16000, subtype="PCM_16")
    return str(path)


def _good_dir(tmp_path: Path) -> Path:
    """Two speakers, two utterances each, with labels and dialogs."""
    utts = {"spkA-u1": "spkA", "spkA-u2": "spkA", "spkB-u1": "spkB", "spkB-u2": "spkB"}
    data = DataDir(
        wav_scp={u: _wav(tmp_path / "audio" / f"{u}.wav", i) for i, u in enumerate(utts)},
        utt2spk=utts,
        utt2emo={"spkA-u1": "ang", "spkA-u2": "neu", "spkB-u1": "ang", "spkB-u2": "sad"},
        utt2conv={u: "dialog1" for u in utts},
    )
    data.save(tmp_path / "data")
    return tmp_path / "data"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ reading tables


def test_read_table_reports_file_and_line(tmp_path):
    bad = _write(tmp_path / "utt2spk", "a-1 a\n\nb-1 b\n")
    with pytest.raises(DataDirError) as err:
        read_table(bad)
    assert str(err.value) == f"{bad}:2: empty line"
    assert (err.value.path, err.value.line) == (str(bad), 2)

    dup = _write(tmp_path / "dup", "a-1 a\nb-1 b\na-1 c\n")
    with pytest.raises(DataDirError, match=r"dup:3: duplicate key 'a-1' \(first on line 1\)"):
        read_table(dup)

    novalue = _write(tmp_path / "novalue", "a-1 a\nb-1\n")
    with pytest.raises(DataDirError, match=r"novalue:2: key 'b-1' has no value"):
        read_table(novalue)

    segs = _write(tmp_path / "segments", "u1 rec 0.0 1.0\nu2 rec 0.5\n")
    with pytest.raises(DataDirError, match=r"segments:2: expected 4 fields, found 3"):
        read_table(segs, fields=3)

    with pytest.raises(DataDirError, match="file not found"):
        read_table(tmp_path / "missing")


def test_read_table_keeps_rest_of_line_as_value(tmp_path):
    table = read_table(_write(tmp_path / "wav.scp", "r1 sox a.wav -t wav - |\nr2 /x/b.flac\n"))
    assert table == {"r1": "sox a.wav -t wav - |", "r2": "/x/b.flac"}


def test_read_list_names_bad_line(tmp_path):
    bad = _write(tmp_path / "test", "u1\nu2 u3\n")
    with pytest.raises(DataDirError, match=r"test:2: expected one utterance id"):
        read_list(bad)


# ------------------------------------------------------------------ C sort order


def test_write_table_uses_c_byte_order(tmp_path):
    keys = ["b", "a_b", "a-b", "aB", "A", "a10", "a9", "Z", "é"]
    write_table(tmp_path / "t", {k: "x" for k in keys})
    written = [line.split()[0] for line in (tmp_path / "t").read_text().splitlines()]
    # '-' (0x2d) < '1' < '9' < 'A' < 'B' < 'Z' < '_' (0x5f) < 'a' < 'b' < 'é' (multi-byte)
    assert written == ["A", "Z", "a-b", "a10", "a9", "aB", "a_b", "b", "é"]


def test_write_table_matches_sort_command(tmp_path):
    keys = ["spk1-x", "spk10-a", "spk1_y", "Spk2-b", "spk1-X", "s-pk"]
    write_table(tmp_path / "t", {k: "v" for k in keys})
    text = (tmp_path / "t").read_bytes()
    expected = subprocess.run(["sort"], input=text, capture_output=True,
                              env={"LC_ALL": "C"}, check=True).stdout
    assert text == expected


def test_write_table_rejects_bad_keys_and_values(tmp_path):
    with pytest.raises(ValueError, match="invalid key 'a b'"):
        write_table(tmp_path / "t", {"a b": "x"})
    with pytest.raises(ValueError, match="key 'a' has an empty value"):
        write_table(tmp_path / "t", {"a": " "})


def test_unsorted_file_is_reported_with_line(tmp_path):
    data = _good_dir(tmp_path)
    _write(data / "utt2emo", "spkA-u1 ang\nspkB-u1 ang\nspkA-u2 neu\nspkB-u2 sad\n")
    problems = validate_data_dir(data)
    assert problems == [f"{data / 'utt2emo'}:3: not sorted (LC_ALL=C): 'spkA-u2' after 'spkB-u1'"]


# ------------------------------------------------------------------ the prefix rule


def test_good_directory_is_valid_and_round_trips(tmp_path):
    data = _good_dir(tmp_path)
    assert validate_data_dir(data, require_emotion=True) == []
    assert (data / "spk2utt").read_text() == "spkA spkA-u1 spkA-u2\nspkB spkB-u1 spkB-u2\n"
    loaded = DataDir.load(data)
    assert loaded.utt2conv == {u: "dialog1" for u in loaded.utts}
    assert loaded.spk2utt == {"spkA": ["spkA-u1", "spkA-u2"], "spkB": ["spkB-u1", "spkB-u2"]}
    assert loaded.audio_of("spkB-u2") == (str(tmp_path / "audio" / "spkB-u2.wav"), None, None)


def test_speaker_not_prefix_of_utterance(tmp_path):
    data = _good_dir(tmp_path)
    _write(data / "utt2spk", "spkA-u1 spkA\nspkA-u2 spkB\nspkB-u1 spkB\nspkB-u2 spkB\n")
    _write(data / "spk2utt", "spkA spkA-u1\nspkB spkA-u2 spkB-u1 spkB-u2\n")
    problems = validate_data_dir(data)
    assert problems[0] == (f"{data / 'utt2spk'}:2: speaker id 'spkB' is not a prefix of "
                           "utterance id 'spkA-u2'")


def test_speakers_out_of_order_when_sorted_by_utterance(tmp_path):
    # every speaker is a prefix of its utterances, but "s1" + "s10..." interleave s10 into s1
    data = tmp_path / "d"
    DataDir(wav_scp={u: _wav(tmp_path / f"{u}.wav") for u in ("s1-a", "s10-a", "s1_b")},
            utt2spk={"s1-a": "s1", "s10-a": "s10", "s1_b": "s1"}).save(data)
    problems = validate_data_dir(data)
    assert len(problems) == 1
    assert problems[0].startswith(f"{data / 'utt2spk'}:3: speakers out of order: 's1_b' of "
                                  "speaker 's1' sorts after 's10-a' of speaker 's10'")


def test_spk2utt_disagreeing_with_utt2spk(tmp_path):
    data = _good_dir(tmp_path)
    _write(data / "spk2utt", "spkA spkA-u1\nspkB spkB-u1 spkB-u2\n")
    assert validate_data_dir(data) == [
        f"{data / 'spk2utt'}:1: speaker 'spkA' disagrees with utt2spk"]


def test_label_missing_and_table_mismatch(tmp_path):
    data = _good_dir(tmp_path)
    _write(data / "utt2emo", "spkA-u1 ang\nspkA-u2 neu\nspkB-u1 ang\n")
    assert validate_data_dir(data) == [
        f"{data / 'utt2emo'}: utterance 'spkB-u2' of utt2spk has no entry"]
    _good_dir(tmp_path)
    lines = (data / "wav.scp").read_text().splitlines()
    _write(data / "wav.scp", "\n".join(lines[:3]) + "\n")
    assert validate_data_dir(data) == [
        f"{data / 'utt2spk'}:4: 'spkB-u2' has no entry in wav.scp"]


def test_missing_audio_and_required_files(tmp_path):
    data = _good_dir(tmp_path)
    (tmp_path / "audio" / "spkA-u2.wav").unlink()
    assert validate_data_dir(data) == [
        f"{data / 'wav.scp'}:2: audio file of 'spkA-u2' not found: "
        f"{tmp_path / 'audio' / 'spkA-u2.wav'}"]
    assert validate_data_dir(data, check_files=False) == []
    (data / "utt2emo").unlink()
    assert validate_data_dir(data, check_files=False, require_emotion=True) == [
        f"{data / 'utt2emo'}: required file missing"]
    missing = tmp_path / "nope"
    assert validate_data_dir(missing) == [f"{missing}: data directory not found"]


def test_require_valid_lists_every_problem(tmp_path):
    data = _good_dir(tmp_path)
    for name in ("spkA-u1", "spkB-u1"):
        (tmp_path / "audio" / f"{name}.wav").unlink()
    with pytest.raises(DataDirError) as err:
        require_valid(data)
    assert "wav.scp:1: audio file of 'spkA-u1'" in str(err.value)
    assert "wav.scp:3: audio file of 'spkB-u1'" in str(err.value)


# ------------------------------------------------------------------ segments


def _segmented(tmp_path: Path) -> Path:
    rec = _wav(tmp_path / "rec.wav")
    data = DataDir(
        wav_scp={"spkA-rec": rec},
        utt2spk={"spkA-rec-0000": "spkA", "spkA-rec-0001": "spkA"},
        segments={"spkA-rec-0000": Segment("spkA-rec", 0.0, 0.02),
                  "spkA-rec-0001": Segment("spkA-rec", 0.02, 0.05)},
    )
    data.save(tmp_path / "data")
    return tmp_path / "data"


def test_segments_round_trip_and_subset(tmp_path):
    data = _segmented(tmp_path)
    assert validate_data_dir(data) == []
    assert (data / "segments").read_text() == ("spkA-rec-0000 spkA-rec 0.000 0.020\n"
                                               "spkA-rec-0001 spkA-rec 0.020 0.050\n")
    loaded = DataDir.load(data)
    assert loaded.audio_of("spkA-rec-0001") == (str(tmp_path / "rec.wav"), 0.02, 0.05)
    sub = loaded.subset(["spkA-rec-0001"])
    assert list(sub.segments) == ["spkA-rec-0001"] and list(sub.wav_scp) == ["spkA-rec"]
    with pytest.raises(KeyError, match="not in the data directory"):
        loaded.subset(["spkA-rec-0009"])


def test_bad_segments_are_reported(tmp_path):
    data = _segmented(tmp_path)
    _write(data / "segments", "spkA-rec-0000 spkA-rec 0.5 0.2\nspkA-rec-0001 other 0.0 1.0\n")
    assert validate_data_dir(data) == [
        f"{data / 'segments'}:1: need 0 <= start < end, got 0.5 0.2",
        f"{data / 'segments'}:2: recording 'other' not in wav.scp",
    ]
    _write(data / "segments", "spkA-rec-0000 spkA-rec 0.0 x\nspkA-rec-0001 spkA-rec 0.0 1.0\n")
    assert validate_data_dir(data) == [
        f"{data / 'segments'}:1: start/end are not numbers: 0.0 x"]


# ------------------------------------------------------------------ folds


def test_folds_round_trip_and_validation(tmp_path):
    data = _good_dir(tmp_path)
    folds = [Fold("1", ["spkB-u1", "spkB-u2"], ["spkA-u2", "spkA-u1"]),
             Fold("2", ["spkA-u1", "spkA-u2"], ["spkB-u1", "spkB-u2"])]
    write_folds(data, folds, {"name": "leave-one-speaker-out", "speaker_independent": True})
    read, protocol = read_folds(data)
    assert protocol["folds"] == ["1", "2"] and protocol["speaker_independent"] is True
    assert read[0].test == ["spkA-u1", "spkA-u2"]  # written sorted
    assert validate_data_dir(data) == []

    _write(data / "folds" / "2" / "test", "spkB-u1\nspkB-u9\n")
    _write(data / "folds" / "1" / "train", "spkB-u1\nspkA-u1\n")
    assert validate_data_dir(data) == [
        f"{data / 'folds' / '1'}: 1 utterances in both train and test, e.g. 'spkA-u1'",
        f"{data / 'folds' / '2' / 'test'}:2: utterance 'spkB-u9' is not in utt2spk",
    ]


def test_read_folds_without_protocol(tmp_path):
    with pytest.raises(DataDirError, match="no folds in this data directory"):
        read_folds(tmp_path)


def test_protocol_without_its_fields(tmp_path):
    data = _good_dir(tmp_path)
    write_folds(data, [Fold("1", ["spkA-u1"], ["spkB-u1"])], {"description": "hand-made"})
    assert validate_data_dir(data) == [
        f"{data / 'folds' / 'protocol.json'}: no 'name' field (write folds with "
        "datadir.write_folds)",
        f"{data / 'folds' / 'protocol.json'}: no 'speaker_independent' field (write folds with "
        "datadir.write_folds)",
    ]


def test_rewriting_folds_removes_stale_ones_and_checks_names(tmp_path):
    data = _good_dir(tmp_path)
    proto = {"name": "x", "speaker_independent": True}
    write_folds(data, [Fold(str(k), ["spkA-u1"], ["spkB-u1"]) for k in (1, 2, 3)], proto)
    write_folds(data, [Fold("1", ["spkA-u1"], ["spkB-u1"])], proto)
    assert sorted(p.name for p in (data / "folds").iterdir()) == ["1", "protocol.json"]
    with pytest.raises(ValueError, match="fold name '../x' must be one path component"):
        write_folds(data, [Fold("../x", ["spkA-u1"], ["spkB-u1"])], proto)
    with pytest.raises(ValueError, match="fold names repeat"):
        write_folds(data, [Fold("1", ["spkA-u1"], ["spkB-u1"])] * 2, proto)

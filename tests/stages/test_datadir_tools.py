"""combine-data-dirs, subset-data-dir and fix-data-dir, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sertool.cli import main
from sertool.datadir import DataDir, Fold, read_folds, validate_data_dir, write_folds


def _make(path: Path, speakers: dict[str, list[str]], *, emotion: bool = True,
          folds: bool = True) -> Path:
    """A data directory: utterance ids SPK-N, labels alternating ang/neu, and one
    leave-one-speaker-out fold per speaker (named after it) when there are two or more."""
    utt2spk = {f"{spk}-{n}": spk for spk, ns in speakers.items() for n in ns}
    DataDir(wav_scp={u: f"/audio/{u}.wav" for u in utt2spk}, utt2spk=utt2spk,
            utt2emo={u: ("ang" if u[-1] in "13579" else "neu") for u in utt2spk}
            if emotion else None).save(path)
    if folds and len(speakers) > 1:
        write_folds(path, [Fold(spk, [u for u, s in utt2spk.items() if s != spk],
                                [u for u, s in utt2spk.items() if s == spk])
                           for spk in speakers],
                    {"name": "leave-one-speaker-out", "speaker_independent": True})
    return path


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_combine_keeps_tables_all_inputs_have_and_no_folds(tmp_path):
    a = _make(tmp_path / "a", {"s1": ["1", "2"], "s2": ["1"]})
    b = _make(tmp_path / "b", {"s3": ["1", "2"]})
    result = _run("combine-data-dirs", tmp_path / "out", a, b)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert result.stdout == f"{out}: 5 utterances, 3 speakers\n"
    assert _lines(out / "utt2spk") == ["s1-1 s1", "s1-2 s1", "s2-1 s2", "s3-1 s3", "s3-2 s3"]
    assert _lines(out / "spk2utt") == ["s1 s1-1 s1-2", "s2 s2-1", "s3 s3-1 s3-2"]
    assert _lines(out / "utt2emo") == ["s1-1 ang", "s1-2 neu", "s2-1 ang", "s3-1 ang",
                                       "s3-2 neu"]
    assert _lines(out / "wav.scp")[3] == "s3-1 /audio/s3-1.wav"
    assert not (out / "folds").exists()
    assert validate_data_dir(out, check_files=False) == []


def test_combine_leaves_out_a_table_one_input_lacks_and_says_so(tmp_path):
    a = _make(tmp_path / "a", {"s1": ["1"]})
    b = _make(tmp_path / "b", {"s2": ["1"]}, emotion=False)
    result = _run("combine-data-dirs", tmp_path / "out", a, b)
    assert result.exit_code == 0, result.output
    assert f"utt2emo: left out (not in {b})" in result.stderr
    assert not (tmp_path / "out" / "utt2emo").exists()


def test_combine_refuses_a_duplicate_utterance_naming_both_sources(tmp_path):
    a = _make(tmp_path / "a", {"s1": ["1", "2"]})
    b = _make(tmp_path / "b", {"s1": ["2", "3"]})
    result = _run("combine-data-dirs", tmp_path / "out", a, b)
    assert result.exit_code == 1
    assert result.stderr == (f"sertool: error: {b}/utt2spk:1: utterance 's1-2' is also in "
                             f"{a}/utt2spk:2 (ids must be unique across the combined "
                             "directories)\n")
    assert not (tmp_path / "out").exists()


def test_combine_keep_folds_unions_folds_of_the_same_name(tmp_path):
    a = _make(tmp_path / "a", {"s1": ["1"], "s2": ["1"]})
    b = _make(tmp_path / "b", {"t1": ["1"], "t2": ["1"]})
    for d in (a, b):  # folds named after speakers -> 1, 2 in both inputs
        folds, proto = read_folds(d)
        write_folds(d, [Fold(str(i + 1), f.train, f.test) for i, f in enumerate(folds)],
                    {k: v for k, v in proto.items() if k != "folds"})
    result = _run("combine-data-dirs", tmp_path / "out", a, b, "--keep-folds")
    assert result.exit_code == 0, result.output
    folds, proto = read_folds(tmp_path / "out")
    assert [(f.name, f.train, f.test) for f in folds] == [
        ("1", ["s2-1", "t2-1"], ["s1-1", "t1-1"]), ("2", ["s1-1", "t1-1"], ["s2-1", "t2-1"])]
    assert proto["speaker_independent"] is True
    assert proto["name"] == "leave-one-speaker-out"


def test_subset_by_speakers_restricts_folds_and_drops_emptied_ones(tmp_path):
    src = _make(tmp_path / "src", {"s1": ["1", "2"], "s2": ["1"], "s3": ["1"]})
    (tmp_path / "spk").write_text("s1\ns3\n")
    result = _run("subset-data-dir", src, tmp_path / "out", "--speakers", tmp_path / "spk")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert result.stdout == f"{out}: 3 utterances, 2 speakers\n"
    assert "fold s2: dropped (no test utterance left)" in result.stderr
    assert _lines(out / "utt2spk") == ["s1-1 s1", "s1-2 s1", "s3-1 s3"]
    folds, proto = read_folds(out)
    assert [(f.name, f.train, f.test) for f in folds] == [
        ("s1", ["s3-1"], ["s1-1", "s1-2"]), ("s3", ["s1-1", "s1-2"], ["s3-1"])]
    assert proto == {"name": "leave-one-speaker-out", "speaker_independent": True,
                     "folds": ["s1", "s3"]}
    assert validate_data_dir(out, check_files=False) == []


def test_subset_by_utterance_list_names_an_unknown_id_with_its_line(tmp_path):
    src = _make(tmp_path / "src", {"s1": ["1", "2"], "s2": ["1"]})
    (tmp_path / "utts").write_text("s1-1\ns9-9 extra\n")
    result = _run("subset-data-dir", src, tmp_path / "out", "--utt-list", tmp_path / "utts")
    assert result.exit_code == 1
    assert (f"sertool: error: {tmp_path / 'utts'}:2: utterance 's9-9' is not in the data "
            "directory") in result.stderr
    (tmp_path / "utts").write_text("s1-1 first field only\ns2-1\n")
    result = _run("subset-data-dir", src, tmp_path / "out", "--utt-list", tmp_path / "utts")
    assert result.exit_code == 0, result.output
    assert _lines(tmp_path / "out" / "utt2spk") == ["s1-1 s1", "s2-1 s2"]
    both = _run("subset-data-dir", src, tmp_path / "o2")
    assert both.exit_code == 1 and "exactly one of --speakers FILE and --utt-list" in both.stderr


def test_fix_drops_failed_and_missing_features_and_backs_up(tmp_path):
    data = _make(tmp_path / "data", {"s1": ["1", "2"], "s2": ["1", "2"], "s3": ["1"]})
    feats = tmp_path / "feats"
    feats.mkdir()
    # s3-1 failed extraction; s2-2 is simply absent from feats.scp (e.g. a killed job)
    (feats / "failed").write_text("s3-1\t/audio/s3-1.wav\taudio too short: 0.1 s\n")
    (feats / "feats.scp").write_text("s1-1 feats.1.ark:10\ns1-2 feats.1.ark:99\n"
                                     "s2-1 feats.1.ark:200\n")
    before = (data / "utt2spk").read_text()
    result = _run("fix-data-dir", data, "--feat-dir", feats)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{data}: 3 utterances, 2 speakers\n"
    assert (f"removed s2-2: not in {feats / 'feats.scp'}\n"
            f"removed s3-1: listed in {feats / 'failed'}: /audio/s3-1.wav: audio too short: "
            "0.1 s\n"
            "fold s3: dropped (no test utterance left)\n") in result.stderr
    assert _lines(data / "utt2spk") == ["s1-1 s1", "s1-2 s1", "s2-1 s2"]
    assert _lines(data / "spk2utt") == ["s1 s1-1 s1-2", "s2 s2-1"]
    assert _lines(data / "wav.scp") == ["s1-1 /audio/s1-1.wav", "s1-2 /audio/s1-2.wav",
                                        "s2-1 /audio/s2-1.wav"]
    folds, _ = read_folds(data)
    assert [(f.name, f.train, f.test) for f in folds] == [
        ("s1", ["s2-1"], ["s1-1", "s1-2"]), ("s2", ["s1-1", "s1-2"], ["s2-1"])]
    assert not (data / "folds" / "s3").exists()
    # Kaldi-style backup of every changed file, and the list of what went
    backup = data / ".backup"
    assert (backup / "utt2spk").read_text() == before
    assert (backup / "folds" / "s3" / "test").read_text() == "s3-1\n"
    assert _lines(backup / "removed") == [
        f"s2-2\tnot in {feats / 'feats.scp'}",
        f"s3-1\tlisted in {feats / 'failed'}: /audio/s3-1.wav: audio too short: 0.1 s"]
    assert json.loads((data / "folds" / "protocol.json").read_text())["folds"] == ["s1", "s2"]
    # a second run has nothing to do
    again = _run("fix-data-dir", data, "--feat-dir", feats)
    assert again.exit_code == 0 and again.stderr == ""
    assert _run("validate-data-dir", data, "--no-check-files").exit_code == 0


def test_fix_without_features_keeps_what_every_table_agrees_on(tmp_path):
    data = _make(tmp_path / "data", {"s1": ["1", "2"], "s2": ["1"]}, folds=False)
    (data / "utt2emo").write_text("s1-1 ang\ns2-1 neu\n")  # s1-2 lost its label
    result = _run("fix-data-dir", data)
    assert result.exit_code == 0, result.output
    assert "removed s1-2: not in utt2emo" in result.stderr
    assert _lines(data / "utt2spk") == ["s1-1 s1", "s2-1 s2"]
    assert not (data / ".backup" / "utt2emo").exists()  # unchanged: not backed up
    assert _lines(data / ".backup" / "wav.scp")[1] == "s1-2 /audio/s1-2.wav"
    empty = _run("fix-data-dir", tmp_path / "nowhere")
    assert empty.exit_code == 1
    assert f"sertool: error: {tmp_path / 'nowhere'}: data directory not found" in empty.stderr

"""Data directory and fold contracts (issue 23, defects 2, 5, 6 and the folds part of 9), through
the real CLI: relative wav.scp paths are read from the data directory by every reader; an output
directory that is, contains or lies inside an input is refused before anything is written; fold
lists must not repeat an utterance, the folds' test lists must not overlap, and a protocol must
list at least one fold. Every refusal is one line naming the file (and line), exit status 1, no
traceback, and the inputs are hashed before and after."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from battery import _tone
from click.testing import CliRunner
from train_helpers import make_feats

from sertool.cli import main
from sertool.datadir import DataDir, Fold, write_folds
from sertool.folds import PROTOCOLS, make_folds
from sertool.frontend.pipeline import resolve_conf


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (names and bytes), to compare before and after."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(result, message: str) -> None:
    """Exit status 1, the one-line error, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"sertool: error: {message}"
    assert isinstance(result.exception, SystemExit)  # handled: no traceback
    assert "Traceback" not in result.output


# ----------------------------------------------------------------- defect 2: relative paths


def _relative_data(root: Path) -> Path:
    """A data dir whose wav.scp names its audio relative to itself: audio/a.wav (220 Hz)."""
    data = root / "data"
    _tone(data / "audio" / "a.wav", f0=220.0)
    (data / "wav.scp").write_text("spk1-u1 audio/a.wav\n")
    (data / "utt2spk").write_text("spk1-u1 spk1\n")
    (data / "spk2utt").write_text("spk1 spk1-u1\n")
    return data


def _features(feat_dir: Path) -> np.ndarray:
    scp = dict(line.split(" ", 1) for line in (feat_dir / "feats.scp").read_text().splitlines())
    return np.asarray(kaldiio.load_mat(scp["spk1-u1"]))


def test_relative_wav_paths_are_read_from_the_data_directory_by_every_reader(
        tmp_path, monkeypatch):
    data = _relative_data(tmp_path)
    # the reference: the same audio named by its absolute path
    absolute = tmp_path / "absolute"
    absolute.mkdir()
    for name in ("utt2spk", "spk2utt"):
        (absolute / name).write_text((data / name).read_text())
    (absolute / "wav.scp").write_text(f"spk1-u1 {data / 'audio' / 'a.wav'}\n")
    # run from a folder holding another file of the same relative name (330 Hz)
    elsewhere = tmp_path / "elsewhere"
    _tone(elsewhere / "audio" / "a.wav", f0=330.0)
    monkeypatch.chdir(elsewhere)
    before = _tree_digest(data)

    validate = _run("validate-data-dir", data)
    assert validate.exit_code == 0, validate.output
    assert validate.output.strip() == f"{data}: valid"
    for source, feats in ((data, tmp_path / "feats_rel"), (absolute, tmp_path / "feats_abs")):
        result = _run("extract-feats", source, feats, "--no-progress")
        assert result.exit_code == 0, result.output
        assert "skipped" not in result.output
    np.testing.assert_array_equal(_features(tmp_path / "feats_rel"),
                                  _features(tmp_path / "feats_abs"))
    assert _tree_digest(data) == before


def test_a_relative_wav_path_survives_combine_into_another_folder(tmp_path, monkeypatch):
    data = _relative_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = _run("combine-data-dirs", tmp_path / "out" / "combined", data)
    assert result.exit_code == 0, result.output
    # still the data dir's audio file, wherever the combination is
    assert DataDir.load(tmp_path / "out" / "combined").audio_of("spk1-u1")[0] == str(
        data / "audio" / "a.wav")
    validate = _run("validate-data-dir", tmp_path / "out" / "combined")
    assert validate.exit_code == 0, validate.output


# ----------------------------------------------------------------- defect 5: output over input


def _small(path: Path, speaker: str) -> Path:
    """A data directory of two utterances of ``speaker`` (no audio needed), with a prepare.json
    and a utt2conv beside its tables, as prepare leaves them."""
    utts = {f"{speaker}-1": speaker, f"{speaker}-2": speaker}
    DataDir(wav_scp={u: f"/audio/{u}.wav" for u in utts}, utt2spk=utts,
            utt2emo={u: "ang" for u in utts}, utt2conv={u: "c1" for u in utts}).save(path)
    (path / "prepare.json").write_text('{"corpus": "test"}\n')
    return path


def _refusal(output: Path, how: str, given: Path, resolved: str = "") -> str:
    return (f"{output}: the output directory {how} {given}{resolved}: writing it would change "
            "or destroy that input; give an output directory outside the inputs")


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    work = tmp_path / "work"
    a, b = _small(work / "a", "s1"), _small(work / "b", "s2")
    (work / "speakers").write_text("s1\n")
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    return {"work": work, "a": a, "b": b, "link": tmp_path / "link"}


def test_combine_refuses_an_output_that_is_contains_or_is_inside_an_input(inputs):
    work, a, b, link = inputs["work"], inputs["a"], inputs["b"], inputs["link"]
    before = _tree_digest(work)
    cases = [
        ((a, a, b), _refusal(a, "is the input", a)),
        ((work, a, b), _refusal(work, "contains the input", a)),
        ((a / "sub", a, b), _refusal(a / "sub", "is inside the input", a)),
        ((link, a, b), _refusal(link, "is the input", a, f" (resolved: {a} and {a})")),
    ]
    for args, message in cases:
        _refused(_run("combine-data-dirs", *args), message)
        assert _tree_digest(work) == before, args  # prepare.json, utt2conv, all kept
    assert not (a / "sub").exists()


def test_subset_refuses_an_output_that_is_contains_or_is_inside_its_inputs(inputs):
    work, a = inputs["work"], inputs["a"]
    speakers = work / "speakers"
    before = _tree_digest(work)
    cases = [
        ((a, a), _refusal(a, "is the input", a)),
        ((a, a / "sub"), _refusal(a / "sub", "is inside the input", a)),
        ((a, work), _refusal(work, "contains the input", a)),
        ((a, a.parent / "out"), None),  # the list file is an input too
    ]
    for (src, out), message in cases:
        if message is None:
            speakers_in_out = out / "speakers"
            out.mkdir()
            speakers_in_out.write_text("s1\n")
            before = _tree_digest(work)
            result = _run("subset-data-dir", src, out, "--speakers", speakers_in_out)
            _refused(result, _refusal(out, "contains the input", speakers_in_out))
        else:
            _refused(_run("subset-data-dir", src, out, "--speakers", speakers), message)
        assert _tree_digest(work) == before, (src, out)


def test_prepare_refuses_a_data_directory_that_contains_the_corpus(tmp_path):
    corpus = tmp_path / "corpora" / "RAVDESS"
    _tone(corpus / "Actor_01" / "03-01-01-01-01-01-01.wav")
    before = _tree_digest(tmp_path / "corpora")
    result = _run("prepare", "ravdess", corpus, tmp_path / "corpora")
    _refused(result, _refusal(tmp_path / "corpora", "contains the input", corpus))
    assert _tree_digest(tmp_path / "corpora") == before


# ----------------------------------------------------------------- defects 6 and 9: folds


@pytest.fixture()
def fold_setup(tmp_path: Path) -> dict[str, Path]:
    """Four speakers of three utterances (synthetic features); folds/1 tests spk0, folds/2
    tests spk1, each trained on the other speakers."""
    feats, data = make_feats(tmp_path / "work", emotion=True)
    (feats / "frontend.json").write_text(json.dumps(resolve_conf()))
    utt2spk = dict(line.split() for line in (data / "utt2spk").read_text().splitlines())
    DataDir(wav_scp={u: "/dev/null" for u in utt2spk}, utt2spk=utt2spk).save(data)
    write_folds(data, [Fold(name, [u for u, s in utt2spk.items() if s != spk],
                            [u for u, s in utt2spk.items() if s == spk])
                       for name, spk in (("1", "spk0"), ("2", "spk1"))],
                {"name": "by hand", "speaker_independent": True})
    return {"feats": feats, "data": data, "exp": tmp_path / "exp"}


def _every_reader_refuses(setup: dict[str, Path], message: str) -> None:
    """validate-data-dir, check-folds and finetune (before any training) give ``message``."""
    data = setup["data"]
    before = _tree_digest(data)
    validate = _run("validate-data-dir", data, "--no-check-files")
    assert validate.exit_code == 1, validate.output
    assert f"{data / 'folds'}: {message}" in validate.output.splitlines()
    assert "Traceback" not in validate.output
    _refused(_run("check-folds", data, "--no-audio"), message)
    finetune = _run("finetune", setup["feats"], data, setup["exp"], "--init", "none",
                    "--model-conf", "model_resnet_tiny.toml")
    _refused(finetune, message)
    assert not setup["exp"].exists() or not any(
        p.name != ".sertool.lock" for p in setup["exp"].rglob("*"))
    assert _tree_digest(data) == before


def test_a_test_list_repeating_an_utterance_is_refused_with_both_lines(fold_setup):
    test = fold_setup["data"] / "folds" / "2" / "test"
    test.write_text(test.read_text() + "spk1-u0\n")  # spk1-u0 is on line 1 already
    _every_reader_refuses(fold_setup, f"{test}:4: utterance 'spk1-u0' repeats line 1 (a fold "
                                      "lists each utterance once)")


def test_test_lists_overlapping_across_folds_are_refused_naming_both_folds(fold_setup):
    folds = fold_setup["data"] / "folds"
    test = folds / "2" / "test"
    # fold 1 tests spk0-u2 on its line 3; fold 2 tests it too and trains without spk0, so each
    # fold alone is speaker-independent: only the pair is wrong (pooled scores count it twice)
    test.write_text("spk0-u2\n" + test.read_text())
    train = folds / "2" / "train"
    train.write_text("".join(f"{u}\n" for u in train.read_text().split() if
                             not u.startswith("spk0")))
    _every_reader_refuses(fold_setup, f"{test}:1: utterance 'spk0-u2' is also tested by fold 1 "
                                      f"({folds / '1' / 'test'}:3); the test lists of the folds "
                                      "must not overlap")


def test_a_protocol_with_no_folds_is_refused(fold_setup):
    proto = fold_setup["data"] / "folds" / "protocol.json"
    proto.write_text('{\n  "name": "by hand",\n  "speaker_independent": true,\n'
                     '  "folds": []\n}\n')
    _every_reader_refuses(fold_setup, f"{proto}:4: 'folds' is empty: list the fold names (the "
                                      "folders beside it), or prepare the data directory again")


def test_every_shipped_protocol_makes_folds_the_readers_accept(tmp_path):
    utt2spk = {f"s{s}-{n}": f"s{s}" for s in range(4) for n in range(5)}
    utt2label = {u: ("ang", "neu", "sad")[i % 3] for i, u in enumerate(sorted(utt2spk))}
    utt2session = {u: f"ses{int(u[1]) // 2}" for u in utt2spk}
    made = [p for p in PROTOCOLS if p not in ("auto", "none")]
    for protocol in made:
        data = tmp_path / protocol
        DataDir(wav_scp={u: "/dev/null" for u in utt2spk}, utt2spk=utt2spk,
                utt2emo=utt2label).save(data)
        write_folds(data, *make_folds(protocol, utt2spk, utt2label=utt2label,
                                      utt2session=utt2session,
                                      speaker_groups_=[["s0", "s1"], ["s2"], ["s3"]], k=3))
        check = _run("check-folds", data, "--no-audio")
        assert check.exit_code == 0, (protocol, check.output)
        validate = _run("validate-data-dir", data, "--no-check-files")
        assert validate.exit_code == 0, (protocol, validate.output)


# ----------------------------------------------------------------- wav.scp entries, no files


def test_validate_says_what_a_wav_scp_entry_is_when_it_is_no_file(tmp_path):
    """A directory, a FIFO (never opened: validate must not block on it) and a missing file,
    each named with its wav.scp line, as extract-feats and predict name them."""
    import os

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (data / "wav.scp").write_text(f"spk1-u1 {tmp_path / 'adir'}\nspk1-u2 {tmp_path / 'fifo'}\n"
                                  f"spk1-u3 {tmp_path / 'none.wav'}\n")
    (data / "utt2spk").write_text("spk1-u1 spk1\nspk1-u2 spk1\nspk1-u3 spk1\n")
    (data / "spk2utt").write_text("spk1 spk1-u1 spk1-u2 spk1-u3\n")
    before = _tree_digest(data)
    result = _run("validate-data-dir", data)
    assert result.exit_code == 1, result.output
    wav = data / "wav.scp"
    assert result.output.splitlines() == [
        f"{wav}:1: audio file of 'spk1-u1' is a directory, not an audio file: {tmp_path}/adir",
        f"{wav}:2: audio file of 'spk1-u2' is a FIFO, not an audio file: {tmp_path}/fifo",
        f"{wav}:3: audio file of 'spk1-u3' not found: {tmp_path}/none.wav",
        f"sertool: error: {data}: 3 problem(s)"]
    assert "Traceback" not in result.output
    assert _tree_digest(data) == before

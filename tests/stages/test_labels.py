"""Emotion labels checked against the class codes, ``--labels`` maps, and the manifest's encodings
and non-ASCII file names (issue 14), each through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sertool.cli import main
from sertool.corpora import CORPORA, iemocap
from sertool.datadir import Fold, read_table, write_folds
from sertool.labels import CODES


def _cli(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def _wavs(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        sf.write(folder / f"{name}.wav",
                 0.1 * np.random.default_rng(i).standard_normal(800), 16000)


def _manifest(tmp_path: Path, rows: str, name: str = "list.csv") -> Path:
    _wavs(tmp_path / "audio", "a1", "a2", "b1", "b2")
    csv = tmp_path / name
    csv.write_text("path,label,speaker\n" + rows, encoding="utf-8")
    return csv


ROWS = ("audio/a1.wav,happy,alice\naudio/a2.wav,sad,alice\n"
        "audio/b1.wav,happy,bob\naudio/b2.wav,angry,bob\n")


def test_shipped_corpora_map_to_the_class_codes():
    """Data directories that prepare makes for the shipped corpora stay valid: every code a
    corpus module writes is one of the class codes, and so is each of IEMOCAP's own
    annotation labels (fru among them) but its 'other' and 'no consensus'."""
    written = {code for m in CORPORA.values() for code in getattr(m, "LABELS", {}).values()}
    written |= {code for cmap in iemocap.CLASS_MAPS.values() for code in cmap.values()}
    assert written <= set(CODES)
    assert written | (set(iemocap.KNOWN_LABELS) - {"oth", "xxx"}) == set(CODES)


# ----------------------------------------------------------------- prepare (manifest)


def test_prepare_refuses_a_label_that_is_no_class_code(tmp_path):
    csv = _manifest(tmp_path, ROWS)
    result = _cli("prepare", "manifest", csv, tmp_path / "data")
    assert result.exit_code == 1
    codes = " ".join(sorted(CODES))
    assert (f"sertool: error: {csv}:2: unknown emotion label 'happy' (2 rows, first here): not "
            f"a class code ({codes}); if it means hap, map it with --labels FILE holding the "
            "line 'happy hap'") in result.stderr
    assert f"{csv}:5: unknown emotion label 'angry': not a class code" in result.stderr
    assert not (tmp_path / "data").exists()


def test_prepare_maps_names_with_labels_and_declares_new_codes(tmp_path):
    csv = _manifest(tmp_path, ROWS.replace("b2.wav,angry", "b2.wav,contempt"))
    labels = tmp_path / "labels.txt"
    labels.write_text("# our names\nhappy hap\ncontempt con  # not a class code yet\n")
    result = _cli("prepare", "manifest", csv, tmp_path / "data", "--labels", labels)
    assert result.exit_code == 1
    assert (f"{labels}:3: 'con' (for 'contempt') is not a class code ({' '.join(sorted(CODES))});"
            " if it is a new class, declare it with the line 'con con'") in result.stderr
    labels.write_text("# our names\nhappy hap\ncontempt con\ncon con\n")
    data = tmp_path / "data"
    result = _cli("prepare", "manifest", csv, data, "--labels", labels)
    assert result.exit_code == 0, result.output
    assert read_table(data / "utt2emo") == {"alice-a1": "hap", "alice-a2": "sad",
                                            "bob-b1": "hap", "bob-b2": "con"}
    prep = json.loads((data / "prepare.json").read_text())
    assert prep["labels"] == {"con": 1, "hap": 2, "sad": 1}
    assert prep["label_map"] == {"file": str(labels), "new_codes": ["con"],
                                 "names": {"con": "con", "contempt": "con", "happy": "hap"}}
    # the declared code travels with the data directory: no --labels needed to validate it
    result = _cli("validate-data-dir", data, "--emotion")
    assert result.exit_code == 0 and f"{data}: valid" in result.stdout


def test_labels_file_errors_name_the_line(tmp_path):
    csv = _manifest(tmp_path, ROWS)
    labels = tmp_path / "labels.txt"
    for text, message in (("happy hap\nangry\n", ":2: expected 'name code'"),
                          ("happy hap\nhappy ang\n", ":2: 'happy' is already mapped on line 1"),
                          ("happy hpa\n", ":1: 'hpa' (for 'happy') is not a class code")):
        labels.write_text(text)
        result = _cli("prepare", "manifest", csv, tmp_path / "data", "--labels", labels)
        assert result.exit_code == 1 and f"sertool: error: {labels}{message}" in result.stderr
    result = _cli("prepare", "manifest", csv, tmp_path / "data", "--labels", tmp_path / "no")
    assert result.exit_code == 1 and f"{tmp_path / 'no'}: --labels file not found" in (
        result.stderr)


def test_prepare_labels_merges_codes_of_a_shipped_corpus(tmp_path):
    src = tmp_path / "emodb" / "wav"
    _wavs(src, "03a01Wa", "03a02Na", "08a01Wa", "08a02La")  # L = boredom
    labels = tmp_path / "labels.txt"
    labels.write_text("bor neu\n")
    result = _cli("prepare", "emodb", tmp_path / "emodb", tmp_path / "data", "--labels", labels)
    assert result.exit_code == 0, result.output
    assert sorted(read_table(tmp_path / "data" / "utt2emo").values()) == [
        "ang", "ang", "neu", "neu"]


# ----------------------------------------------------------------- validate-data-dir


def test_validate_data_dir_refuses_a_label_typo_and_accepts_it_mapped(tmp_path):
    csv = _manifest(tmp_path, ROWS.replace("happy", "hap").replace("angry", "ang"))
    data = tmp_path / "data"
    assert _cli("prepare", "manifest", csv, data).exit_code == 0
    assert _cli("validate-data-dir", data, "--emotion").exit_code == 0
    emo = data / "utt2emo"
    emo.write_text(emo.read_text().replace("bob-b1 hap", "bob-b1 happy"))
    result = _cli("validate-data-dir", data, "--emotion")
    assert result.exit_code == 1
    assert (f"{emo}:3: unknown emotion label 'happy': not a class code "
            f"({' '.join(sorted(CODES))}); if it means hap") in result.stderr
    assert f"sertool: error: {data}: 1 problem(s)" in result.stderr
    labels = tmp_path / "labels.txt"
    labels.write_text("angry ang\n")
    result = _cli("validate-data-dir", data, "--emotion", "--labels", labels)
    assert result.exit_code == 1 and (f"{emo}:3: unknown emotion label 'happy': not a class code "
                                      f"({' '.join(sorted(CODES))}) nor a name in {labels}; if "
                                      f"it means hap, add the line 'happy hap' to {labels}"
                                      ) in result.stderr
    labels.write_text("happy hap\n")
    result = _cli("validate-data-dir", data, "--emotion", "--labels", labels)
    assert result.exit_code == 0 and f"{data}: valid" in result.stdout


# ----------------------------------------------------------------- manifest encodings and ids


def test_manifest_with_a_utf8_byte_order_mark_is_read(tmp_path):
    """Excel's default 'CSV UTF-8' starts with a BOM: the first column is still 'path'."""
    _wavs(tmp_path / "audio", "a1", "b1")
    csv = tmp_path / "list.csv"
    csv.write_bytes(b"\xef\xbb\xbfpath,label,speaker\r\naudio/a1.wav,hap,alice\r\n"
                    b"audio/b1.wav,sad,bob\r\n")
    result = _cli("prepare", "manifest", csv, tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert read_table(tmp_path / "data" / "utt2emo") == {"alice-a1": "hap", "bob-b1": "sad"}


def test_latin1_manifest_is_an_error_naming_the_line(tmp_path):
    _wavs(tmp_path / "audio", "a1", "b1")
    csv = tmp_path / "list.csv"
    csv.write_bytes("path,label,speaker\naudio/a1.wav,hap,alice\naudio/b1.wav,sad,José\n"
                    .encode("latin-1"))
    result = _cli("prepare", "manifest", csv, tmp_path / "data")
    assert result.exit_code == 1 and not isinstance(result.exception, UnicodeError)
    assert result.stderr == (f"sertool: error: {csv}:3: not UTF-8 text (save the file as "
                             "UTF-8)\n")
    assert not (tmp_path / "data").exists()


def test_non_ascii_names_keep_their_letters_and_a_collision_points_at_the_utt_column(tmp_path):
    _wavs(tmp_path / "audio", "é", "è", "chanté", "b1")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,speaker\naudio/chanté.wav,hap,alice\naudio/é.wav,sad,alice\n"
                   "audio/è.wav,sad,alice\naudio/b1.wav,ang,bob\n", encoding="utf-8")
    result = _cli("prepare", "manifest", csv, tmp_path / "data")
    assert result.exit_code == 1
    audio = (tmp_path / "audio").resolve()
    assert result.stderr == (
        f"sertool: error: {csv}:4 ({audio / 'è.wav'}): utterance id 'alice-e' also made from "
        f"{csv}:3 ({audio / 'é.wav'}); give each row its own id in the manifest's utt column "
        "(a header path,label,speaker,utt; the id becomes <speaker>-<utt>)\n")
    csv.write_text("path,label,speaker,utt\naudio/chanté.wav,hap,alice,\n"
                   "audio/é.wav,sad,alice,e_acute\naudio/è.wav,sad,alice,e_grave\n"
                   "audio/b1.wav,ang,bob,\n", encoding="utf-8")
    result = _cli("prepare", "manifest", csv, tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert sorted(read_table(tmp_path / "data" / "utt2spk")) == [
        "alice-chante", "alice-e_acute", "alice-e_grave", "bob-b1"]


# ----------------------------------------------------------------- finetune


def _finetune_data(tmp_path: Path, labels: dict[str, str]) -> Path:
    """utt2spk, utt2emo and leave-one-speaker-out folds: finetune checks them before it reads
    features or models."""
    data = tmp_path / "data"
    data.mkdir()
    utts = sorted(labels)
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    (data / "utt2emo").write_text("".join(f"{u} {labels[u]}\n" for u in utts))
    speakers = sorted({u.split("-")[0] for u in utts})
    write_folds(data, [Fold(str(i + 1), [u for u in utts if not u.startswith(s)],
                            [u for u in utts if u.startswith(s)])
                       for i, s in enumerate(speakers)],
                {"name": "leave-one-speaker-out", "speaker_independent": True})
    return data


def _finetune(tmp_path: Path, data: Path, *extra: str | Path):
    return _cli("finetune", tmp_path / "feats", data, tmp_path / "exp", "--init", "none",
                *extra)


LABELS = {f"s{s}-{u}": ("ang", "neu", "sad")[u % 3] for s in range(3) for u in range(6)}


def test_finetune_refuses_a_label_that_is_no_class_code(tmp_path):
    data = _finetune_data(tmp_path, {**LABELS, "s1-4": "happy"})
    result = _finetune(tmp_path, data)
    assert result.exit_code == 1
    assert (f"sertool: error: {data / 'utt2emo'}:11: unknown emotion label 'happy': not a class "
            "code") in result.stderr
    assert not (tmp_path / "exp").exists()


def test_finetune_refuses_a_class_that_a_fold_cannot_train(tmp_path):
    """A typo that is a class code of its own, e.g. 'hap' on one utterance: in the fold that
    tests it, no training utterance has it, yet it would count in UA."""
    data = _finetune_data(tmp_path, {**LABELS, "s1-4": "hap"})
    result = _finetune(tmp_path, data)
    assert result.exit_code == 1
    assert (f"sertool: error: {data / 'folds' / '2' / 'train'}: no training utterance of class "
            f"'hap', which has 1 utterance(s) in the folds (first at {data / 'utt2emo'}:11, "
            "s1-4); a class must be trained in every fold") in result.stderr
    labels = tmp_path / "labels.txt"
    labels.write_text("hap ang\n")  # the way forward the message names: map it to a class
    result = _finetune(tmp_path, data, "--labels", labels)
    assert result.exit_code == 1  # now it goes on to the features, which this test has none of
    assert f"{tmp_path / 'feats' / 'feats.scp'}: file not found" in result.stderr


@pytest.mark.parametrize("init", ["random", "none"])
def test_finetune_labels_map_names_to_the_experiments_classes(tmp_path, init):
    """utt2emo in the data's own names, mapped with --labels: the frozen-trunk head and the
    trainer (--init none) both train the mapped classes, and the posteriors are in codes."""
    from train_helpers import make_feats

    from sertool.config import CONF_DIR
    from sertool.expdir import read_posteriors

    feat_dir, data = make_feats(tmp_path, n_spk=4, n_utt=3, frames=40, dim=20, emotion=True)
    (feat_dir / "frontend.json").write_text('{"kind": "logmel"}')
    emo = data / "utt2emo"
    emo.write_text(emo.read_text().replace(" ang", " angry").replace(" neu", " neutral"))
    utts = sorted(read_table(data / "utt2spk"))
    write_folds(data, [Fold(s, [u for u in utts if not u.startswith(f"spk{s}-")],
                            [u for u in utts if u.startswith(f"spk{s}-")]) for s in "01"],
                {"name": "leave-one-speaker-out", "speaker_independent": True})
    labels = tmp_path / "labels.txt"
    labels.write_text("angry ang\nneutral neu\n")
    args = ["finetune", feat_dir, data, tmp_path / "exp", "--init", init, "--model-conf",
            CONF_DIR / "model_resnet_tiny.toml", "--set", "heldout_speakers=1",
            *[arg for kv in ("head.epochs=1", "head.batch_size=4", "augment.copies=1",
                             "train.epochs=1", "train.batch_size=4", "train.num_workers=0",
                             "train.chunk_frames=[20]") for arg in ("--set", kv)]]
    result = _cli(*args)
    assert result.exit_code == 1 and "unknown emotion label 'angry'" in result.stderr
    result = _cli(*args, "--labels", labels)
    assert result.exit_code == 0, result.output
    for fold in "01":
        posteriors = read_posteriors(tmp_path / "exp" / f"fold_{fold}" / "posteriors.tsv")
        assert posteriors.classes == ["ang", "neu"]
        assert len(posteriors.utts) == 3


def test_train_emotion_refuses_a_label_that_is_no_class_code(tmp_path):
    from train_helpers import make_feats

    feat_dir, data = make_feats(tmp_path, n_spk=2, n_utt=2, frames=30, dim=8, emotion=True)
    emo = data / "utt2emo"
    emo.write_text(emo.read_text().replace("spk1-u1 ang", "spk1-u1 anger"))
    result = _cli("train", feat_dir, data, tmp_path / "exp", "--task", "emotion")
    assert result.exit_code == 1
    assert (f"sertool: error: {emo}:4: unknown emotion label 'anger': not a class code "
            f"({' '.join(sorted(CODES))}); if it means ang") in result.stderr
    assert not (tmp_path / "exp").exists()
    result = _cli("train", feat_dir, data, tmp_path / "exp", "--labels", emo)
    assert result.exit_code == 1 and "--labels maps emotion labels: it needs --task emotion" in (
        result.stderr)

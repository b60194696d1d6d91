"""The real RAVDESS and LibriSpeech subsets in ../shared/data prepare to their known counts."""

from __future__ import annotations

from collections import Counter

import pytest

from sertool.corpora import prepare
from sertool.datadir import read_folds, read_table, validate_data_dir
from sertool.folds import check_folds


@pytest.mark.shared_data
def test_real_ravdess(ravdess_dir, tmp_path):
    result = prepare("ravdess", ravdess_dir, tmp_path / "ravdess", progress=False)
    data = tmp_path / "ravdess"
    assert validate_data_dir(data, require_emotion=True) == []
    assert (result.n_utts, result.n_speakers, result.skipped) == (1440, 24, [])
    assert Counter(read_table(data / "utt2emo").values()) == {
        "neu": 96, "cal": 192, "hap": 192, "sad": 192, "ang": 192, "fea": 192, "dis": 192,
        "sur": 192}
    folds, protocol = read_folds(data)
    assert protocol["test_groups"]["1"] == ["ravdess01", "ravdess11", "ravdess20", "ravdess21"]
    assert protocol["test_groups"]["6"] == ["ravdess06", "ravdess13", "ravdess17", "ravdess22"]
    assert "note" not in protocol
    assert [len(f.test) for f in folds] == [240] * 6
    check = check_folds(data, progress=False)
    assert check.clean, check.verdict
    assert check.verdict.startswith("SPEAKER-INDEPENDENT: no speaker and no identical "
                                    "recording on both sides of any of 6 folds")


@pytest.mark.shared_data
def test_real_librispeech(librispeech_dir, tmp_path):
    result = prepare("librispeech", librispeech_dir, tmp_path / "libri", progress=False)
    assert (result.n_utts, result.n_speakers, result.skipped) == (351, 261, [])
    assert validate_data_dir(tmp_path / "libri") == []
    spk2utt = read_table(tmp_path / "libri" / "spk2utt")
    assert sorted(Counter(len(v.split()) for v in spk2utt.values()).items()) == [(1, 251),
                                                                                (10, 10)]

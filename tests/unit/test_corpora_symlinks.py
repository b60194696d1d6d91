"""Corpora reached through symlinks (the Kaldi habit ``ln -s /export/corpora/X``): a symlinked
corpus root, a symlinked sub-folder and symlinked files are followed; a symlink loop is a clear
error, not a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corpus_trees import CASES, _audio

from sertool.corpora import PrepareError, prepare
from sertool.datadir import read_table


def _real_tree(root: Path, corpus: str) -> list[str]:
    files = CASES[corpus][0]
    for rel in files:
        _audio(root / rel)
    return files


def _expected(real: Path, corpus: str) -> dict[str, str]:
    """utt -> resolved audio path, from preparing the real (unlinked) tree."""
    prepare(corpus, real, real.parent / f"{corpus}-reference", progress=False)
    wav = read_table(real.parent / f"{corpus}-reference" / "wav.scp")
    return {utt: str(Path(p).resolve()) for utt, p in wav.items()}


def _prepared(src: Path, data: Path, corpus: str) -> dict[str, str]:
    result = prepare(corpus, src, data, progress=False)
    assert result.skipped == []
    return {utt: str(Path(p).resolve()) for utt, p in read_table(data / "wav.scp").items()}


@pytest.mark.parametrize("corpus", ["emodb", "ravdess"])
def test_symlinked_corpus_root(tmp_path, corpus):
    real = tmp_path / "export" / "corpora" / corpus
    files = _real_tree(real, corpus)
    link = tmp_path / "project" / "corpus"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    utts = _prepared(link, tmp_path / "data", corpus)
    assert len(utts) == len(files)
    assert utts == _expected(real, corpus)


@pytest.mark.parametrize("corpus,sub", [("emodb", "wav"),
                                        ("ravdess", "Audio_Speech_Actors_01-24/Actor_04")])
def test_symlinked_sub_folder(tmp_path, corpus, sub):
    """SRC is a real folder whose sub-folder (emodb's wav/, one RAVDESS actor) is a link."""
    real = tmp_path / "export" / corpus
    files = _real_tree(real, corpus)
    src = tmp_path / "src"
    for rel in files:  # the same tree, with `sub` linked instead of copied
        if not rel.startswith(sub + "/"):
            target = src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(real / rel)  # symlinked files as well
    (src / sub).parent.mkdir(parents=True, exist_ok=True)
    (src / sub).symlink_to(real / sub, target_is_directory=True)
    assert (src / sub).is_symlink()
    utts = _prepared(src, tmp_path / "data", corpus)
    assert len(utts) == len(files)
    assert utts == _expected(real, corpus)


def test_symlink_loop_is_a_clear_error(tmp_path):
    src = tmp_path / "src"
    _real_tree(src, "emodb")
    (src / "wav" / "again").symlink_to(src, target_is_directory=True)  # src/wav/again -> src
    with pytest.raises(PrepareError, match=r"src/wav/again: symlink loop"):
        prepare("emodb", src, tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_self_referencing_file_link_and_dangling_link(tmp_path):
    src = tmp_path / "src"
    files = _real_tree(src, "emodb")
    (src / "wav" / "16a01Wb.wav").symlink_to("16a01Wb.wav")  # a link to itself
    with pytest.raises(PrepareError, match=r"16a01Wb.wav: symlink loop"):
        prepare("emodb", src, tmp_path / "data", progress=False)
    os.unlink(src / "wav" / "16a01Wb.wav")
    (src / "wav" / "16a01Wb.wav").symlink_to(tmp_path / "gone.wav")  # dangling
    result = prepare("emodb", src, tmp_path / "data", progress=False)
    assert result.n_utts == len(files)
    assert [(Path(s.path).name, s.reason) for s in result.skipped] == [
        ("16a01Wb.wav", "broken symlink (its target does not exist)")]

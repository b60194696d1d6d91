"""Recovery and nothing lost (issue 14): prepare never deletes what it did not write, outputs
follow the umask, a training run can be extended. The bad-input kinds are rows of the battery in
test_bad_input.py."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from click.testing import CliRunner
from corpora import _emodb
from train_helpers import make_feats, tiny_conf

from sertool.cli import main
from sertool.nnet.trainer import TrainError, train


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


# ----------------------------------------------------------------- prepare never loses files


def test_prepare_refuses_a_folder_it_did_not_make_and_keeps_everything(tmp_path):
    src = _emodb(tmp_path / "emodb")
    project = tmp_path / "project"
    (project / "exp").mkdir(parents=True)
    (project / "notes.txt").write_text("my notes\n")
    result = _cli("prepare", "emodb", src, project)
    assert result.exit_code == 1
    assert (f"sertool: error: {project}: not empty and not made by sertool prepare (it holds "
            "exp/, notes.txt)") in result.output
    assert (project / "notes.txt").read_text() == "my notes\n" and (project / "exp").is_dir()
    assert sorted(p.name for p in project.iterdir()) == ["exp", "notes.txt"]


def test_prepare_reruns_into_its_own_folder_but_never_deletes_foreign_files(tmp_path):
    src = _emodb(tmp_path / "emodb")
    data = tmp_path / "data"
    assert _cli("prepare", "emodb", src, data).exit_code == 0
    assert _cli("prepare", "emodb", src, data).exit_code == 0  # a rerun replaces its own output
    (data / "feats").mkdir()
    result = _cli("prepare", "emodb", src, data)
    assert result.exit_code == 1 and "also holds feats/, which a rerun would delete" in (
        result.output)
    assert (data / "feats").is_dir() and (data / "wav.scp").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("prepare", "emodb", src, empty).exit_code == 0  # an empty folder is fine


# ----------------------------------------------------------------- shared results are readable


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        data = tmp_path / "data"
        assert _cli("prepare", "emodb", _emodb(tmp_path / "emodb"), data).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(data.stat().st_mode) == 0o755
    for name in ("wav.scp", "utt2spk", "prepare.json", "folds/protocol.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o644, name


# ----------------------------------------------------------------- recovery of a training run


def test_more_epochs_extend_a_finished_run_and_a_refusal_names_the_key(tmp_path):
    torch.set_num_threads(1)
    feat_dir, data_dir = make_feats(tmp_path)
    exp = tmp_path / "exp"
    first = train(feat_dir, data_dir, exp, tiny_conf(epochs=2), progress=False)
    assert [h["epoch"] for h in first.history] == [1, 2]
    more = train(feat_dir, data_dir, exp, tiny_conf(epochs=3, num_workers=0), progress=False)
    assert more.resumed_from == str(exp / "model_2.pt")
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    assert more.history[:2] == first.history  # the first two epochs were not redone
    assert json.loads((exp / "config.json").read_text())["conf"]["epochs"] == 3
    with pytest.raises(TrainError, match=r"made with another configuration \(conf.lr differs; "
                       r"see .*config.json\); a rerun may change only epochs, num_workers"):
        train(feat_dir, data_dir, exp, tiny_conf(epochs=3, lr=0.5), progress=False)

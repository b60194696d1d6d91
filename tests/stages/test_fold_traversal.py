"""A fold name is a folder name: one from a downloaded data dir must never steer a write outside
EXP_DIR (issue 23, defect 1). Every reader of folds refuses such a name with the protocol.json line
that holds it, and finetune refuses a fold folder that a symlink leads out of EXP_DIR; the victim
folder beside the experiment is hashed before and after."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import make_feats

from sertool.cli import main
from sertool.frontend.pipeline import resolve_conf

CRAFTED = "1/../../../victim"


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (names and bytes), to compare before and after."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    feats, data = make_feats(tmp_path / "work", emotion=True)
    (feats / "frontend.json").write_text(json.dumps(resolve_conf()))
    utts = sorted(line.split()[0] for line in (data / "utt2spk").read_text().splitlines())
    spk2utt: dict[str, list[str]] = {}
    for utt in utts:
        spk2utt.setdefault(utt.split("-")[0], []).append(utt)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in spk2utt.items()))
    (data / "wav.scp").write_text("".join(f"{u} /dev/null\n" for u in utts))
    test, train = [u for u in utts if u.startswith(("spk0", "spk1"))], [
        u for u in utts if u.startswith(("spk2", "spk3"))]
    # the crafted fold's lists exist where its name leads, so reading it would succeed
    lists = data / "folds" / CRAFTED
    lists.mkdir(parents=True)
    (lists / "train").write_text("".join(f"{u}\n" for u in train))
    (lists / "test").write_text("".join(f"{u}\n" for u in test))
    (data / "folds" / "protocol.json").write_text(json.dumps(
        {"name": "downloaded", "speaker_independent": True, "folds": [CRAFTED]}, indent=1))
    exp = tmp_path / "a" / "b" / "exp"
    exp.parent.mkdir(parents=True)
    victim = exp / "fold_1" / ".." / ".." / ".." / "victim"  # where the crafted name leads
    victim = Path(os.path.normpath(victim))
    (victim / "bundle").mkdir(parents=True)
    (victim / "model.pt").write_bytes(b"the user's own model")
    (victim / "bundle" / "foreign.txt").write_text("keep me")
    return {"feats": feats, "data": data, "exp": exp, "victim": victim}


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_crafted_fold_name_is_refused_by_every_reader_and_nothing_outside_changes(setup):
    data, victim = setup["data"], setup["victim"]
    before, data_before = _tree_digest(victim), _tree_digest(data)
    proto = data / "folds" / "protocol.json"
    line = next(n for n, text in enumerate(proto.read_text().splitlines(), 1) if CRAFTED in text)
    message = (f"{proto}:{line}: fold name '{CRAFTED}' must be one path component "
               r"(no '/', '\', '.' or '..')")

    finetune = _run("finetune", setup["feats"], data, setup["exp"], "--init", "none",
                    "--model-conf", "model_resnet_tiny.toml")
    assert finetune.exit_code == 1, finetune.output
    assert finetune.output.strip() == f"sertool: error: {message}"
    assert "Traceback" not in finetune.output

    check = _run("check-folds", data, "--no-audio")
    assert check.exit_code == 1, check.output
    assert message in check.output and "Traceback" not in check.output

    validate = _run("validate-data-dir", data, "--no-check-files")
    assert validate.exit_code == 1, validate.output
    assert message in validate.output and "Traceback" not in validate.output

    assert _tree_digest(victim) == before  # model.pt, bundle/foreign.txt untouched
    assert not (victim / "posteriors.tsv").exists()
    assert _tree_digest(data) == data_before
    assert not setup["exp"].exists() or not any(setup["exp"].rglob("*.pt"))


def test_a_fold_folder_symlinked_out_of_exp_dir_is_refused_before_anything_is_written(setup):
    data, exp, victim = setup["data"], setup["exp"], setup["victim"]
    lists = data / "folds" / CRAFTED
    os.rename(lists, data / "folds" / "1")
    (data / "folds" / "protocol.json").write_text(json.dumps(
        {"name": "by hand", "speaker_independent": True, "folds": ["1"]}))
    exp.mkdir()
    (exp / "fold_1").symlink_to(victim, target_is_directory=True)
    before = _tree_digest(victim)

    result = _run("finetune", setup["feats"], data, exp, "--init", "none",
                  "--model-conf", "model_resnet_tiny.toml")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"sertool: error: {exp}/fold_1: leads outside the experiment directory {exp} "
        f"(to {victim}); remove it or choose another EXP_DIR")
    assert _tree_digest(victim) == before
    assert sorted(p.name for p in exp.iterdir()) == ["fold_1"]  # no experiment.json either

"""The feature directory has one owner (sertool.frontend.featdir): every stage reads it through
``FeatDir.open``, once, and a missing or broken file is the same message everywhere."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner
from finetune_inputs import FAST, TINY, _inputs

from sertool.cli import main


def _cli(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("init", ["random", "none"])
def test_finetune_reads_the_feature_index_once(tmp_path, monkeypatch, init):
    """feats.scp used to be read by the driver, its fold set-up, the embedding extraction
    and the trainer of every fold; now by the plan's FeatDir, which the rest is handed."""
    import sertool.datadir

    _inputs(tmp_path)
    reads = []
    read_text = sertool.datadir.read_text
    monkeypatch.setattr(sertool.datadir, "read_text",
                        lambda path, **kw: reads.append(Path(path).name) or read_text(path, **kw))
    result = _cli("finetune", tmp_path / "feats", tmp_path / "data", tmp_path / "exp",
                  "--init", init, "--model-conf", TINY, *[a for kv in FAST for a in ("--set", kv)])
    assert result.exit_code == 0, result.output
    assert reads.count("feats.scp") == 1, reads
    assert reads.count("utt2num_frames") == (2 if init == "none" else 0)  # one per fold


def test_a_feature_directory_without_its_index_is_one_message_in_every_stage(tmp_path):
    _inputs(tmp_path)
    feats, data = tmp_path / "feats", tmp_path / "data"
    (feats / "feats.scp").unlink()
    before = _hashes(tmp_path)
    message = (f"sertool: error: {feats / 'feats.scp'}: file not found (make the feature "
               "directory with sertool extract-feats)\n")
    for args in (["train", feats, data, tmp_path / "exp", "--task", "emotion",
                  "--model-conf", TINY],
                 ["extract-embeddings", feats, tmp_path / "model.pt", tmp_path / "emb"],
                 ["finetune", feats, data, tmp_path / "exp", "--init", "random",
                  "--model-conf", TINY]):
        result = _cli(*args)
        assert result.exit_code == 1, (args[0], result.output)
        assert result.stderr == message, (args[0], result.stderr)
        assert "Traceback" not in result.output
        # a refused command leaves no output folder behind (train's lock is its own stage)
        assert _hashes(tmp_path) == before, args[0]


def test_feat_dir_reads_each_file_once_and_pickles_as_its_path(tmp_path):
    from sertool.frontend.featdir import FeatDir

    feats, _ = _inputs(tmp_path)
    opened = FeatDir.open(feats)
    assert FeatDir.open(opened) is opened  # what a stage is handed is not read again
    assert opened.dim == 20 and len(opened.feats) == 12
    assert opened.frontend == {"kind": "logmel"}
    assert opened.num_frames(["spk0-u0"]) == {"spk0-u0": int(
        (feats / "utt2num_frames").read_text().split()[1])}
    assert opened.wave_copies() == {}
    blob = pickle.dumps(opened)
    assert b"spk0-u0" not in blob
    assert pickle.loads(blob).feats == opened.feats

"""recipes/iemocap/run.sh through its last stage on small trees in the real IEMOCAP and VoxCeleb
layouts (`sertool make-demo-corpus`; VoxCeleb split over two roots, as VoxCeleb1 and VoxCeleb2 are),
with a tiny model trained for an epoch: every stage runs, the reports make sense, the paper's
Table 3 stands next to ours, the ablation says it is not speaker-independent, and a rerun of a
finished stage redoes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_run import REPO, copy_recipe, run_recipe

from sertool.config import dump_toml, load_toml

CLASSES = {1: ["ang", "hap", "neu", "sad"], 2: ["ang", "exc", "neu", "sad"],
           3: ["ang", "hap", "neu", "sad"]}




def _tiny_options(tmp: Path) -> list[str]:
    """Tiny ResNet, one epoch of speaker and of from-scratch training, a few of head training."""
    conf = tmp / "tiny"
    conf.mkdir()
    for name, source in (("speaker", REPO / "conf/train_speaker.toml"),
                         ("emotion", REPO / "recipes/iemocap/conf/train_emotion.toml")):
        # the recipe's own settings, with one epoch of small batches on top
        settings = {**load_toml(source), "epochs": 1, "num_workers": 0, "batch_size": 8}
        (conf / f"{name}.toml").write_text(dump_toml(settings))
    (conf / "finetune.toml").write_text("[head]\nepochs = 3\n[augment]\ncopies = 1\n")
    return ["--model-conf", str(REPO / "conf" / "model_resnet_tiny.toml"),
            "--speaker-conf", str(conf / "speaker.toml"),
            "--train-conf", str(conf / "emotion.toml"),
            "--finetune-conf", str(conf / "finetune.toml")]


def _ok(recipe: Path, *args: str) -> str:
    proc = run_recipe(recipe, *args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_iemocap_recipe_every_stage_on_layout_trees(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([str(Path(sys.executable).parent / "sertool"), "make-demo-corpus",
                    str(corpus)], check=True, capture_output=True)
    # VoxCeleb1 and VoxCeleb2 are two trees: move some speakers into a second one.
    vox2 = corpus / "voxceleb2" / "wav"
    vox2.mkdir(parents=True)
    moved = sorted((corpus / "voxceleb" / "wav").iterdir())[:10]
    for spk in moved:
        spk.rename(vox2 / spk.name)
    recipe = copy_recipe("iemocap", tmp_path)
    options = ["--iemocap", str(corpus / "IEMOCAP_full_release"),
               "--voxceleb1", str(corpus / "voxceleb"), "--voxceleb2", str(corpus / "voxceleb2"),
               "--device", "cpu", "--nj", "2", *_tiny_options(tmp_path)]

    out = _ok(recipe, *options)

    # stage 0: the two VoxCeleb trees combined into one speaker set, all 24 x 8 utterances
    utt2spk = (recipe / "data/voxceleb/utt2spk").read_text().split("\n")[:-1]
    assert len(utt2spk) == 192 and len({line.split()[1] for line in utt2spk}) == 24
    assert [line.split()[0] for line in utt2spk] == sorted(line.split()[0] for line in utt2spk)
    assert (recipe / "exp/speaker/resnet34/final.pt").is_file()

    # stages 3-4: LOSO reports per Exp and policy, speaker-independent, the right classes
    for e in (1, 2, 3):
        for policy in ("conservative", "aggressive"):
            report = json.loads((recipe / f"exp/emotion/exp{e}_{policy}/report.json").read_text())
            assert report["speaker_independent"] is True and report["complete"]
            assert report["classes"] == CLASSES[e]
            assert [f["fold"] for f in report["folds"]] == ["1", "2", "3", "4", "5"]
            assert 0.0 <= report["mean"]["ua"] <= 1.0
            assert report["experiment_json"]["augmentation"]["policy"] == policy
    table = (recipe / "exp/emotion/table3.md").read_text()
    assert table in out
    paper = {1: ("60.63", "64.11"), 2: ("64.65", "64.67"), 3: ("62.82", "62.44")}
    for e, (ua, wa) in paper.items():
        assert f"| {e} | " in table and f"| paper (Table 3) | yes | 5 | {ua} | {wa} |" in table
        ours = [line for line in table.splitlines() if f"| exp{e}_" in line]
        assert len(ours) == 2
        for line in ours:
            ua_ours = float(re.search(r"\| 5/5 \| ([0-9.]+) ± ", line).group(1))
            assert 0.0 <= ua_ours <= 100.0

    # stage 5: the ablation on 5-fold random CV, flagged as not speaker-independent
    compare = json.loads((recipe / "exp/ablation/compare.json").read_text())
    assert [r["experiment"] for r in compare["experiments"]] == [
        "full", "no_transfer", "no_augmentation", "no_pooling"]
    assert all(r["speaker_independent"] == "NO" and r["folds"] == 5
               for r in compare["experiments"])
    assert (recipe / "exp/ablation/ablation.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("full", "no_pooling"):
        first = (recipe / f"exp/ablation/{name}/report.md").read_text().splitlines()[0]
        assert first.startswith("NOT SPEAKER-INDEPENDENT")
    assert "NOT speaker-independent" in out

    stages = [line.split()[1] for line in (recipe / "exp/stage_times").read_text().splitlines()]
    assert stages == ["0", "1", "2", "3", "4", "5"]
    assert list((recipe / "exp/log").glob("run.*.log"))

    # A rerun of finished stages is a no-op: no fold is trained again.
    posteriors = recipe / "exp/emotion/exp1_conservative/fold_1/posteriors.tsv"
    before = posteriors.stat().st_mtime_ns
    _ok(recipe, *options, "--stage", "0", "--stop-stage", "3")
    assert posteriors.stat().st_mtime_ns == before

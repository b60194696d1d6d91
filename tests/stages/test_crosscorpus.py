"""Cross-corpus finetune and the train x test matrix (issue 20 item 6): the synthetic demo corpus
(IEMOCAP layout, Exp 2: ang exc neu sad) and a small subset of real RAVDESS (neu cal hap sad ang),
trained on one and tested on the other through the label maps; the linear head on a frozen random
tiny trunk keeps a run to a second or two."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sertool.cli import main
from sertool.config import CONF_DIR
from sertool.corpora import prepare
from sertool.datadir import read_table, subset_data_dir
from sertool.expdir import read_posteriors
from sertool.frontend.extract import extract_feats

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
TINY = str(CONF_DIR / "model_resnet_tiny.toml")
FAST = ["--init", "random", "--model-conf", TINY, "--set", "head.kind=linear",
        "--set", "augment.policy=none", "--set", "heldout_speakers=1", "--no-progress"]
RAVDESS_KEEP = {"01": "neu", "02": "cal", "03": "hap", "04": "sad", "05": "ang"}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, demo_corpus, ravdess_dir):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cross")
    prepare("iemocap", demo_corpus / "IEMOCAP_full_release", root / "demo_all", exp=2,
            progress=False)
    demo_utts = sorted(read_table(root / "demo_all" / "utt2emo"))[::4]
    (root / "demo.list").write_text("".join(u + "\n" for u in demo_utts))
    subset_data_dir(root / "demo_all", root / "demo", utt_list=root / "demo.list")
    prepare("ravdess", ravdess_dir, root / "rav_all", progress=False)
    emo = read_table(root / "rav_all" / "utt2emo")
    spk = read_table(root / "rav_all" / "utt2spk")
    speakers = sorted(set(spk.values()))[:4]
    keep = []
    for s in speakers:  # 2 utterances of each of the five classes per actor
        for code in RAVDESS_KEEP.values():
            keep += sorted(u for u in emo if spk[u] == s and emo[u] == code)[:2]
    (root / "rav.list").write_text("".join(u + "\n" for u in sorted(keep)))
    subset_data_dir(root / "rav_all", root / "rav", utt_list=root / "rav.list")
    # a subset has no prepare.json: its corpus is named by its folder (rav, demo)
    conf = {"mel": {"num_bins": 40}}
    for name in ("demo", "rav"):
        extract_feats(root / name, root / f"feats_{name}", conf, nj=1, progress=False)
    return root


def _finetune(root, train, test, exp, *more):
    args = ["finetune", str(root / f"feats_{train}"), str(root / train), str(root / exp),
            *FAST, *more]
    if test:
        args += ["--test-data", str(root / test), "--test-feats", str(root / f"feats_{test}")]
    return CliRunner().invoke(main, args)


def _ua(posteriors) -> float:
    """UA from the posteriors, computed here: the mean recall over the reference classes."""
    recalls = [np.mean(posteriors.preds[posteriors.labels == c] == c)
               for c in np.unique(posteriors.labels)]
    return float(np.mean(recalls))


def test_cross_corpus_runs_classes_refusals_and_matrix(corpora):
    root = corpora
    demo_emo = read_table(root / "demo" / "utt2emo")
    n_exc = sum(1 for c in demo_emo.values() if c == "exc")
    assert n_exc > 0 and sorted(set(demo_emo.values())) == ["ang", "exc", "neu", "sad"]

    result = _finetune(root, "rav", "demo", "rav_to_demo")
    assert result.exit_code == 0, result.output
    # the classes of one corpus only: listed on the command's output, exactly
    assert "classes only in rav, left out (utterances): cal (8), hap (8)" in result.output
    assert f"classes only in demo, left out (utterances): exc ({n_exc})" in result.output
    meta = json.loads((root / "rav_to_demo" / "experiment.json").read_text())
    cross = meta["cross_corpus"]
    assert (cross["train_corpus"], cross["test_corpus"]) == ("rav", "demo")
    assert meta["classes"] == cross["classes"] == ["ang", "neu", "sad"]
    assert cross["only_in_train"] == {"cal": 8, "hap": 8}
    assert cross["only_in_test"] == {"exc": n_exc}
    assert cross["n_train"] == 24  # 4 actors x 2 x (ang neu sad)
    shared_test = sorted(u for u, c in demo_emo.items() if c != "exc")
    post = read_posteriors(root / "rav_to_demo" / "fold_cross" / "posteriors.tsv",
                           meta["classes"])
    assert sorted(post.utts) == shared_test  # every test utterance of a shared class
    split = json.loads((root / "rav_to_demo" / "fold_cross" / "split.json").read_text())
    rav_spk = read_table(root / "rav" / "utt2spk")
    # model selection on held-out TRAINING speakers of the training corpus only
    assert split["heldout"] and all(u in rav_spk for u in split["heldout"])

    result = _finetune(root, "demo", "rav", "demo_to_rav")
    assert result.exit_code == 0, result.output
    assert "classes only in demo, left out (utterances): exc" in result.output

    # --strict-classes refuses corpora whose classes differ, naming both utt2emo files
    result = _finetune(root, "rav", "demo", "strict", "--strict-classes")
    assert result.exit_code != 0
    assert "--strict-classes" in result.output and "cal (8), hap (8)" in result.output
    assert str(root / "demo" / "utt2emo") in result.output
    assert not (root / "strict").exists()

    # features of another front-end are refused, naming both frontend.json files
    shutil.copytree(root / "feats_demo", root / "feats_other")
    front = json.loads((root / "feats_other" / "frontend.json").read_text())
    front["mel"]["num_bins"] = 64
    (root / "feats_other" / "frontend.json").write_text(json.dumps(front))
    result = CliRunner().invoke(main, [
        "finetune", str(root / "feats_rav"), str(root / "rav"), str(root / "mismatch"), *FAST,
        "--test-data", str(root / "demo"), "--test-feats", str(root / "feats_other")])
    assert result.exit_code != 0
    assert "different front-ends" in result.output and "mel.num_bins: 40 against 64" in (
        result.output)
    assert str(root / "feats_rav" / "frontend.json") in result.output
    assert str(root / "feats_other" / "frontend.json") in result.output
    assert not (root / "mismatch").exists()

    # the diagonal: an ordinary fold run on the RAVDESS subset (its actor-group folds)
    result = _finetune(root, "rav", None, "rav_folds")
    assert result.exit_code == 0, result.output

    result = CliRunner().invoke(main, ["score", str(root / "rav_to_demo"),
                                       str(root / "demo_to_rav"), str(root / "rav_folds"),
                                       "--matrix", "--out-dir", str(root / "matrix"),
                                       "--bootstrap", "50", "--no-progress"])
    assert result.exit_code == 0, result.output
    first = (root / "matrix" / "rav_to_demo" / "report.md").read_text().splitlines()[0]
    assert first.startswith("CROSS-CORPUS: trained on rav, tested on demo")
    assert "cal (8), hap (8)" in first and f"exc ({n_exc})" in first
    matrix = json.loads((root / "matrix" / "report.json").read_text())
    assert matrix["corpora"] == ["demo", "rav"]
    runs = {name: json.loads((root / "matrix" / name / "report.json").read_text())["mean"]["ua"]
            for name in ("rav_to_demo", "demo_to_rav", "rav_folds")}
    # rows: trained on; columns: tested on; the diagonal is the fold run's mean UA
    assert matrix["ua"] == [[None, runs["demo_to_rav"]], [runs["rav_to_demo"],
                                                          runs["rav_folds"]]]
    for name, exp in (("rav_to_demo", "rav_to_demo"), ("demo_to_rav", "demo_to_rav")):
        meta = json.loads((root / exp / "experiment.json").read_text())
        post = read_posteriors(root / exp / "fold_cross" / "posteriors.tsv", meta["classes"])
        assert runs[name] == pytest.approx(_ua(post))
    table = (root / "matrix" / "report.md").read_text()
    assert f"| **rav** | {100 * runs['rav_to_demo']:.2f} | {100 * runs['rav_folds']:.2f} |" \
        in table
    assert (root / "matrix" / "matrix.png").stat().st_size > 1000

    # two runs for one cell are refused, naming both
    shutil.copytree(root / "rav_to_demo", root / "again")
    meta = json.loads((root / "again" / "experiment.json").read_text())
    (root / "again" / "experiment.json").write_text(json.dumps({**meta, "name": "again"}))
    result = CliRunner().invoke(main, ["score", str(root / "rav_to_demo"), str(root / "again"),
                                       "--matrix", "--out-dir", str(root / "m2"),
                                       "--bootstrap", "0", "--no-progress"])
    assert result.exit_code != 0 and "both the cell train rav x test demo" in (
        result.output)

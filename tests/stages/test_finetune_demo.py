"""`sertool extract-embeddings`, `finetune` and `score` on the built-in demo corpus (tiny ResNet).

One demo speaker model is trained once (sertool.nnet.trainer, task speaker, on the demo VoxCeleb
layout); the emotion side is the demo IEMOCAP layout, Exp 1, leave-one-session-out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sertool.cli import main
from sertool.config import CONF_DIR
from sertool.corpora import prepare
from sertool.datadir import read_folds, read_table
from sertool.expdir import read_posteriors
from sertool.frontend.extract import extract_feats
from sertool.transfer.driver import FinetuneError, finetune, resolve_configs
from sertool.transfer.embdir import EmbeddingDir, EmbeddingError
from sertool.transfer.embeddings import extract_embeddings

pytestmark = pytest.mark.slow
TINY = str(CONF_DIR / "model_resnet_tiny.toml")
FAST = ["head.epochs=8"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_corpus):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("demo")
    prepare("iemocap", demo_corpus / "IEMOCAP_full_release", root / "data_emo", exp=1)
    prepare("voxceleb", demo_corpus / "voxceleb", root / "data_spk")
    conf = {"mel": {"num_bins": 40}}  # smaller features keep the tests fast
    extract_feats(root / "data_emo", root / "feats_emo", conf, nj=1)
    extract_feats(root / "data_spk", root / "feats_spk", conf, nj=1)
    speaker = _train_speaker_model(root)
    return root, speaker


def _train_speaker_model(root):
    from sertool.models import load_model_conf
    from sertool.nnet.trainer import load_train_conf, train

    utts = sorted(read_table(root / "data_spk" / "utt2spk"))
    valid = utts[::8]
    conf = load_train_conf(None, ["epochs=4", "num_workers=0"])
    result = train(root / "feats_spk", root / "data_spk", root / "exp_spk",
                   {**conf, "model": load_model_conf(TINY)}, task="speaker", progress=False,
                   train_utts=[u for u in utts if u not in valid], valid_utts=valid,
                   init_model=None, device="cpu")
    return result.best_model


def _run(root, exp, init, *extra_sets, **kwargs):
    conf, model_conf, train_conf = resolve_configs(None, kwargs.pop("model_conf", None),
                                                   None, [*FAST, *extra_sets])
    return finetune(root / "feats_emo", root / "data_emo", root / exp, init=init, conf=conf,
                    model_conf=model_conf, train_conf=train_conf,
                    progress=kwargs.pop("progress", False), command=f"test {exp}", **kwargs)


def test_embeddings_are_deterministic_across_jobs_and_resumable(demo, tmp_path):
    root, speaker = demo
    one = extract_embeddings(root / "feats_emo", speaker, tmp_path / "e1", copies=2, nj=1,
                             progress=False)
    two = extract_embeddings(root / "feats_emo", speaker, tmp_path / "e2", copies=2, nj=2,
                             progress=False)
    a, meta = EmbeddingDir.open(one.emb_dir).vectors, EmbeddingDir.open(one.emb_dir).meta
    b = EmbeddingDir.open(two.emb_dir).vectors
    utts = sorted(read_table(root / "feats_emo" / "feats.scp"))
    assert sorted(a) == sorted([u for x in utts for u in (x, f"{x}#aug1", f"{x}#aug2")])
    assert sorted(a) == sorted(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert meta["pooled_dim"] == a[utts[0]].shape[0]
    assert not np.array_equal(a[utts[0]], a[f"{utts[0]}#aug1"])  # the copies are masked
    # the original is the trunk's pooled output on the whole segment
    import kaldiio

    from sertool.nnet.checkpoint import load_model

    model, _ = load_model(speaker)
    feats = torch.tensor(kaldiio.load_mat(read_table(root / "feats_emo" / "feats.scp")[utts[5]]))
    with torch.no_grad():
        expected = model.pooled(feats[None])[0].numpy()
    np.testing.assert_allclose(a[utts[5]], expected, rtol=1e-4, atol=1e-5)
    # a killed run (job 2 unfinished) is completed on rerun with the same vectors
    (two.emb_dir / "emb.scp").unlink()
    (two.emb_dir / "emb.2.scp").unlink()
    again = extract_embeddings(root / "feats_emo", speaker, two.emb_dir, copies=2, nj=2,
                               progress=False)
    assert 0 < again.n_written < len(a)
    c = EmbeddingDir.open(two.emb_dir).vectors
    assert all(np.array_equal(a[k], c[k]) for k in a)
    with pytest.raises(EmbeddingError, match="made differently"):
        extract_embeddings(root / "feats_emo", speaker, two.emb_dir, copies=1, nj=2,
                           progress=False)


def test_frozen_transfer_all_folds_scored_and_bundles_agree(demo):
    root, speaker = demo
    summary = _run(root, "transfer", speaker)
    assert summary.mode == "frozen"
    assert [f.status for f in summary.folds] == ["trained"] * 5
    folds, _ = read_folds(root / "data_emo")
    utt2spk = read_table(root / "data_emo" / "utt2spk")
    meta = json.loads((root / "transfer" / "experiment.json").read_text())
    assert meta["classes"] == ["ang", "hap", "neu", "sad"]
    assert meta["augmentation"] == {"policy": "conservative", "copies": 2}
    assert meta["unfreeze"] is False and meta["init"].endswith(speaker.name)
    for fold in folds:
        fold_dir = root / "transfer" / f"fold_{fold.name}"
        post = read_posteriors(fold_dir / "posteriors.tsv", meta["classes"])
        assert sorted(post.utts) == sorted(fold.test)
        split = json.loads((fold_dir / "split.json").read_text())
        held = set(split["heldout"])
        assert held and held <= set(fold.train)  # model selection never sees the test fold
        assert not {utt2spk[u] for u in held} & {utt2spk[u] for u in fold.test}
        assert not {utt2spk[u] for u in held} & {utt2spk[u] for u in fold.train
                                                 if u not in held}
    result = CliRunner().invoke(main, ["score", str(root / "transfer"), "--no-audio"])
    assert result.exit_code == 0, result.output
    report = (root / "transfer" / "report.md").read_text()
    assert report.startswith("SPEAKER-INDEPENDENT")
    assert (root / "transfer" / "report.json").is_file()
    ua = json.loads((root / "transfer" / "report.json").read_text())["mean"]["ua"]
    assert ua > 0.5  # chance is 0.25; the demo's emotion cues are learnable across speakers

    # the fold bundle, fed the test utterance's audio, gives the posteriors' probabilities:
    # stored-embedding training == the whole network on the whole segment
    fold = folds[0]
    post = read_posteriors(root / "transfer" / "fold_1" / "posteriors.tsv", meta["classes"])
    wav = read_table(root / "data_emo" / "wav.scp")[post.utts[0]]
    out = CliRunner().invoke(main, ["predict", str(root / "transfer" / "fold_1" / "bundle"), wav])
    assert out.exit_code == 0, out.output
    row = out.stdout.splitlines()[1].split(",")
    assert [float(x) for x in row[2:6]] == pytest.approx(post.probs[0].tolist(), abs=2e-5)
    assert fold.name == "1"


def test_rerun_skips_finished_folds_and_refuses_another_conf(demo):
    root, speaker = demo
    exp = root / "transfer"
    if not (exp / "fold_5" / "posteriors.tsv").is_file():
        _run(root, "transfer", speaker)
    before = (exp / "fold_3" / "posteriors.tsv").read_text()
    (exp / "fold_3" / "posteriors.tsv").unlink()  # as if killed during fold 3
    summary = _run(root, "transfer", speaker)
    assert [f.status for f in summary.folds] == ["skipped", "skipped", "trained", "skipped",
                                                 "skipped"]
    assert (exp / "fold_3" / "posteriors.tsv").read_text() == before  # deterministic
    # an EXP_DIR from before folds were jobs has posteriors but no done markers: its finished
    # folds are adopted, not trained again
    for marker in exp.glob(".done.*"):
        marker.unlink()
    (exp / "fold_2" / "posteriors.tsv").unlink()
    mtime = (exp / "fold_4" / "model.pt").stat().st_mtime_ns
    summary = _run(root, "transfer", speaker)
    assert [f.status for f in summary.folds] == ["skipped", "trained", "skipped", "skipped",
                                                 "skipped"]
    assert (exp / "fold_4" / "model.pt").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in exp.glob(".done.*")) == [f".done.{k}" for k in range(1, 6)]
    with pytest.raises(FinetuneError, match="another configuration"):
        _run(root, "transfer", speaker, "head.lr=0.1")
    with pytest.raises(FinetuneError, match="no fold '9'"):
        _run(root, "other", speaker, fold="9")


def test_transfer_and_no_transfer_side_by_side(demo, capfd):
    root, speaker = demo
    if not (root / "transfer" / "fold_5" / "posteriors.tsv").is_file():
        _run(root, "transfer", speaker)
    capfd.readouterr()
    summary = _run(root, "no_transfer", None, "train.epochs=2", "train.num_workers=0",
                   model_conf=TINY, progress=True)
    assert summary.mode == "scratch"
    # each epoch line names its fold (they were five runs of "epoch 1..2" alike); stderr is
    # not a terminal here: plain lines, no carriage-return bar updates
    err = capfd.readouterr().err
    lines = [line.split(": lr")[0] for line in err.splitlines() if ": lr " in line]
    assert lines == [f"fold {k} epoch {e}/2" for k in "12345" for e in (1, 2)]
    assert "\r" not in err
    assert all((root / "no_transfer" / f"fold_{k}" / "posteriors.tsv").is_file()
               for k in "12345")
    meta = json.loads((root / "no_transfer" / "experiment.json").read_text())
    assert meta["init"] == "none"
    out = root / "compare.md"
    result = CliRunner().invoke(main, ["score", str(root / "transfer"), str(root / "no_transfer"),
                                       "--no-audio", "--compare-out", str(out)])
    assert result.exit_code == 0, result.output
    table = out.read_text()
    assert "transfer" in table and "no_transfer" in table


def test_random_trunk_is_the_frozen_system_on_an_untrained_network(demo):
    from sertool.models import build_model, load_model_conf
    from sertool.nnet.checkpoint import load_model

    root, _ = demo
    summary = _run(root, "random_trunk", "random", fold="2", model_conf=TINY)
    assert summary.mode == "frozen" and [f.fold for f in summary.folds] == ["2"]
    exp = root / "random_trunk"
    meta = json.loads((exp / "experiment.json").read_text())
    assert meta["init"] == "random (untrained trunk, seed 0)" and meta["unfreeze"] is False
    # the fold model's trunk is exactly the seeded untrained network, the head was trained
    model, _ = load_model(exp / "fold_2" / "model.pt")
    torch.manual_seed(0)
    fresh = build_model(load_model_conf(TINY), 1, 40)
    fresh_trunk = dict(fresh.trunk.state_dict())
    assert all(torch.equal(v, fresh_trunk[k]) for k, v in model.trunk.state_dict().items())
    assert (exp / "fold_2" / "posteriors.tsv").is_file()
    report = CliRunner().invoke(main, ["score", str(exp), "--no-audio"])
    assert "random (untrained trunk, seed 0): no transfer; trunk frozen" in (
        exp / "report.md").read_text(), report.output


def test_export_all_writes_a_final_bundle(demo):
    root, speaker = demo
    summary = _run(root, "final_only", speaker, "augment.policy=none", fold="1",
                   export_all=True)
    assert summary.bundle is not None and (summary.bundle / "bundle.json").is_file()
    prov = json.loads((summary.bundle / "bundle.json").read_text())["provenance"]
    assert prov["fold"].startswith("all data")
    assert [f.fold for f in summary.folds] == ["1"]
    assert not (root / "final_only" / "fold_2").exists()


def test_unfreeze_fine_tunes_the_trunk_at_a_lower_lr(demo):
    from sertool.nnet.checkpoint import load_model

    root, speaker = demo
    summary = _run(root, "unfrozen", speaker, "train.epochs=1", "train.num_workers=0",
                   fold="1", unfreeze=True)
    assert summary.mode == "unfreeze"
    assert json.loads((root / "unfrozen" / "experiment.json").read_text())["unfreeze"] is True
    config = json.loads((root / "unfrozen" / "fold_1" / "train" / "config.json").read_text())
    assert config["conf"]["trunk_lr_factor"] == 0.1 and config["conf"]["train_trunk"] is True
    tuned, meta = load_model(root / "unfrozen" / "fold_1" / "model.pt")
    original, _ = load_model(speaker)
    assert meta["labels"] == ["ang", "hap", "neu", "sad"]
    before = dict(original.trunk.named_parameters())
    moved = [n for n, p in tuned.trunk.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # every trunk weight learned (frozen: none would)
    assert (root / "unfrozen" / "fold_1" / "posteriors.tsv").is_file()


def test_cli_extract_embeddings_and_finetune_errors(demo, tmp_path):
    root, speaker = demo
    runner = CliRunner()
    emb = tmp_path / "emb"
    result = runner.invoke(main, ["extract-embeddings", str(root / "feats_emo"), str(speaker),
                                  str(emb), "--policy", "none"])
    assert result.exit_code == 0, result.output
    n = len(read_table(root / "feats_emo" / "feats.scp"))
    assert f"{n} utterances x 1 (none) = {n} vectors" in result.stdout
    assert len((emb / "emb.scp").read_text().splitlines()) == n
    args = ["finetune", str(root / "feats_emo"), str(root / "data_emo"), str(tmp_path / "x")]
    for extra, message in (
            (["--init", "none"], "--init none needs --model-conf"),
            (["--init", "random"], "--init random needs --model-conf"),
            (["--init", "random", "--model-conf", TINY, "--unfreeze"], "a network trained"),
            (["--init", str(speaker), "--model-conf", TINY], "--model-conf is for --init none"),
            (["--init", "none", "--model-conf", TINY, "--unfreeze"], "--unfreeze needs --init"),
            (["--init", str(tmp_path / "nope.pt")], "nope.pt: speaker model not found"),
            (["--init", str(speaker), "--set", "head.nope=1"], "unknown option")):
        result = runner.invoke(main, args + extra)
        assert result.exit_code == 1 and message in result.stderr, (extra, result.output)


def test_inner_cv_selection_picks_an_epoch_count_then_trains_on_all_training_speakers(demo):
    root, speaker = demo
    summary = _run(root, "inner_cv", speaker, "selection=inner_cv", "inner_folds=3", fold="1")
    (outcome,) = summary.folds
    fold_dir = root / "inner_cv" / "fold_1"
    split = json.loads((fold_dir / "split.json").read_text())
    folds, _ = read_folds(root / "data_emo")
    train = sorted(next(f for f in folds if f.name == "1").train)
    assert split["method"] == "inner_cv" and split["n_heldout"] == 0
    assert split["n_train"] == len(train)  # every training speaker trains the final head
    log = json.loads((fold_dir / "train_log.json").read_text())
    groups = log["inner_groups"]
    assert len(groups) == 3 and sorted(s for g in groups for s in g) == sorted(
        {read_table(root / "data_emo" / "utt2spk")[u] for u in train})  # each validates once
    mean_ua = log["inner_mean_ua"]
    chosen = log["chosen_epochs"]
    assert len(mean_ua) == 8 and mean_ua[chosen - 1] == max(mean_ua)
    assert len(log["history"]) == chosen  # the final head ran exactly that many epochs
    assert outcome.heldout["epoch"] == chosen
    assert outcome.heldout["selection"] == "inner_cv"
    with pytest.raises(FinetuneError, match="inner_cv trains inner_folds"):
        _run(root, "inner_cv_unfreeze", speaker, "selection=inner_cv", unfreeze=True, fold="1")

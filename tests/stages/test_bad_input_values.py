"""NaN, Inf and stored configurations (issue 23, defects 3 and 9), in the battery's form
(tests/stages/test_bad_input.py): each row is run through the real CLI and must exit with its status
and its whole message, print no traceback, leave every file that was there byte-identical and
write nothing beyond what the row allows (no model, bundle or posteriors of a refused run).

Non-finite values are refused where they enter: stored features as they are read (training,
embeddings), the training loss and weights (the one training loop, for ``train`` and the
frozen-trunk head), checkpoints and bundles as they are loaded, embeddings and posteriors as
they are made. Stored configurations (a checkpoint's ``model_conf``, a bundle's
``frontend.json``) go through the schema that ``--set`` and TOML files go through.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from battery import (  # noqa: F401 - shared_inputs: the module's inputs, made once
    Row,
    Shared,
    _run,
    _snapshot,
    _train,
    check_row,
    shared_inputs,
)

from sertool.config import CONF_DIR
from sertool.frontend.pipeline import resolve_conf
from sertool.models import build_model, load_model_conf
from sertool.nnet.checkpoint import load_checkpoint, save_checkpoint

INF_UTT, INF_AT = "spk2-u1", (5, 3)  # a training utterance of fold 1 (speakers 2 and 3)
TEST_UTT = "spk0-u1"  # a test utterance of fold 1
SMALL = ("batch_size=2", "chunk_frames=[20]", "num_workers=0")  # seconds-long trainer runs


def _sets(*sets: str, table: str = "") -> list[str]:
    """``--set`` options for ``sets`` (in ``table``: finetune's ``train.`` ones)."""
    return [arg for text in sets for arg in ("--set", table + text)]


TINY = _sets(*SMALL)
HEAD = ("--set", "head.epochs=2", "--set", "head.batch_size=2")


# ----------------------------------------------------------------- the bad inputs


def _feats_with(tmp: Path, base: Shared, utt: str = INF_UTT,
                value: float | None = np.inf) -> Path:
    """A copy of the shared features with ``value`` at one frame and dimension of ``utt``
    (None: unchanged), and the frontend.json that finetune reads."""
    mats = {k: np.array(m) for k, m in kaldiio.load_scp(str(base.feats / "feats.scp")).items()}
    if value is not None:
        mats[utt][INF_AT] = value
    return _write_feats(tmp, base, mats)


def _held_out_overflowing(tmp: Path, base: Shared) -> Path:
    """The shared features with train's held-out utterances (its default speaker split) made
    finite but huge: the network in eval mode overflows on them, its training batches do not."""
    from sertool.folds import speaker_heldout
    from sertool.nnet.trainer import DEFAULTS

    mats = {k: np.array(m) for k, m in kaldiio.load_scp(str(base.feats / "feats.scp")).items()}
    utt2spk = dict(line.split() for line in (base.feats_data / "utt2spk").read_text().splitlines())
    _, held = speaker_heldout(sorted(mats), utt2spk, {u: len(m) for u, m in mats.items()},
                              DEFAULTS["heldout_fraction"], DEFAULTS["seed"],
                              DEFAULTS["heldout_min_frames"])
    assert held  # each of the 4 speakers gives one utterance
    for utt, _, _ in held:
        mats[utt] = np.full_like(mats[utt], 1e30)
    return _write_feats(tmp, base, mats)


def _write_feats(tmp: Path, base: Shared, mats: dict[str, np.ndarray]) -> Path:
    feats = tmp / "feats"
    feats.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{feats}/feats.1.ark,{feats}/feats.scp") as writer:
        for key, mat in mats.items():
            writer(key, mat)
    shutil.copyfile(base.feats / "utt2num_frames", feats / "utt2num_frames")
    (feats / "frontend.json").write_text(json.dumps(resolve_conf()))
    return feats


def _emotion_data(tmp: Path, base: Shared) -> Path:
    """The shared features' data dir with one fold: speakers 0 and 1 tested, 2 and 3 trained."""
    data = tmp / "data"
    data.mkdir()
    for name in ("utt2spk", "utt2emo"):
        shutil.copyfile(base.feats_data / name, data / name)
    utts = sorted(line.split()[0] for line in (data / "utt2spk").read_text().splitlines())
    speakers = sorted({u.split("-")[0] for u in utts})
    (data / "spk2utt").write_text("".join(
        f"{s} {' '.join(u for u in utts if u.startswith(s + '-'))}\n" for s in speakers))
    (data / "wav.scp").write_text("".join(f"{u} /dev/null\n" for u in utts))
    fold = data / "folds" / "1"
    fold.mkdir(parents=True)
    (fold / "test").write_text("".join(f"{u}\n" for u in utts if u < "spk2"))
    (fold / "train").write_text("".join(f"{u}\n" for u in utts if u >= "spk2"))
    (data / "folds" / "protocol.json").write_text(json.dumps(
        {"name": "by hand", "speaker_independent": True, "folds": ["1"]}))
    return data


def _speaker_model(tmp: Path, change: Callable[[dict], None] | None = None) -> Path:
    """A tiny ResNet speaker model (4 speakers, 20-dim features) at ``tmp/spk.pt``; ``change``
    edits the checkpoint's dictionary as a damaged or hand-edited file would hold it."""
    torch.manual_seed(0)
    path = tmp / "spk.pt"
    save_checkpoint(path, build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 4,
                                      20), with_rng=False)
    if change is not None:
        _edit_checkpoint(path, change)
    return path


def _edit_checkpoint(path: Path, change: Callable[[dict], None]) -> None:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)  # not save_checkpoint: it refuses what these rows are about


def _bundle(tmp: Path, base: Shared, model: Callable[[dict], None] | None = None,
            frontend: Callable[[dict], None] | None = None) -> Path:
    """A copy of the shared bundle with its model.pt or frontend.json edited and bundle.json's
    SHA-256 of them updated: a bundle made (or edited) so, not a damaged copy."""
    bundle = tmp / "bundle"
    shutil.copytree(base.bundle, bundle)
    if model is not None:
        _edit_checkpoint(bundle / "model.pt", model)
    if frontend is not None:
        conf = json.loads((bundle / "frontend.json").read_text())
        frontend(conf)
        (bundle / "frontend.json").write_text(json.dumps(conf))
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"] = {name: hashlib.sha256((bundle / name).read_bytes()).hexdigest()
                     for name in meta["files"]}
    (bundle / "bundle.json").write_text(json.dumps(meta))
    return bundle


def _weights(change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda ckpt: change(ckpt["model"])


def _as_int32(state: dict) -> None:
    for key, tensor in state.items():
        if tensor.is_floating_point():
            state[key] = tensor.to(torch.int32)


def _one_nan(state: dict) -> None:
    state["trunk.stem.0.weight"][0, 0, 1, 1] = float("nan")


def _scaled(key: str, factor: float) -> Callable[[dict], None]:
    """Finite weights that overflow float32 on the way through the network."""
    return lambda state: state[key].mul_(factor)


def _set(dotted: str, value: object) -> Callable[[dict], None]:
    def change(conf: dict) -> None:
        *tables, key = dotted.split(".")
        for table in tables:
            conf = conf[table]
        conf[key] = value
    return change


def _model_conf(key: str, value: object) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["model_conf"].__setitem__(key, value)


def _finetune(tmp: Path, base: Shared, *more: object, feats: Path | None = None,
              init: Path | None = None) -> list:
    return ["finetune", feats or _feats_with(tmp, base, value=None), _emotion_data(tmp, base),
            tmp / "exp",
            "--init", init or _speaker_model(tmp), *HEAD, *more]


def _predict(bundle: Path, base: Shared) -> list:
    return ["predict", bundle, base.audio / "a.wav"]


# what a refused finetune leaves: its identity and description, the embeddings' job files and
# logs, the fold's log and split; never a model, a bundle or posteriors
FINETUNE_START = ("exp/finetune.json", "exp/experiment.json", "exp/embeddings/*", "exp/log/*",
                  "exp/fold_1/split.json")
STOPPED = "stopped before saving any of it: lower the learning rate"
FEATURE = (r"utterance {utt}: features {{tmp}}/feats/feats.1.ark:\d+ hold 1 NaN or infinite "
           r"value\(s\) \(first at frame 5, dimension 3: inf\); extract them again \(sertool "
           r"extract-feats\) or drop the utterance")
UNUSABLE = (r"holds 1 NaN or infinite value\(s\) \(of 72\): the model is unusable \(did its "
            r"training diverge\?\); use an earlier checkpoint or train it again")


def _line(pattern: str) -> str:
    """The whole last line of stderr: ``sertool: error: <pattern>``."""
    return rf"(^|\n)sertool: error: {pattern}\n$"


ROWS = [
    # ------------------------------------------------------------- the training loss
    Row("train-lr-diverges", lambda t, s: _train(
        t, s, *TINY, "--set", "lr=10000", "--set", "epochs=1", "--set",
        "checkpoint_every_steps=0"),
        _line(r"training diverged at epoch 1, step \d+: (the loss is nan|(parameter|buffer) "
              rf"\S+ is no longer finite); {STOPPED} \(it is 1e\+04\)"),
        may_create=("exp/config.json", "exp/train.log")),  # no model_1.pt, no final.pt
    Row("finetune-head-lr-diverges", lambda t, s: _finetune(
        t, s, "--set", "head.lr=1e30"),
        _line(r"finetune: job 1 failed: fold 1: training diverged at epoch 1, step \d+: the loss "
              rf"is nan; {STOPPED} \(it is 1e\+30\); see {{tmp}}/exp/log/finetune.1.log"),
        may_create=FINETUNE_START),
    # a held-out loss that is NaN while the weights are finite: exited 0 before, choosing an
    # epoch on it (best held-out accuracy 0.250, valid_loss nan in train_log.csv)
    Row("train-held-out-overflows", lambda t, s: [
        "train", _held_out_overflowing(t, s), s.feats_data, t / "exp", "--model-conf",
        "model_resnet_tiny.toml", "--no-progress", *TINY, "--set", "epochs=2"],
        _line(r"the held-out evaluation of epoch 1 is not finite: valid_loss is nan, with finite "
              r"weights \(held-out inputs too large for the model\?\); stopped before saving "
              r"epoch 1: check the held-out features"),
        may_create=("exp/config.json", "exp/train.log")),  # no model_1.pt, train_log.csv
    # ------------------------------------------------------------- features as they are read
    Row("train-inf-in-features", lambda t, s: [
        "train", _feats_with(t, s), s.feats_data, t / "exp", "--model-conf",
        "model_resnet_tiny.toml", "--no-progress", *TINY, "--set", "epochs=1"],
        _line(FEATURE.format(utt=INF_UTT)),
        may_create=("exp/config.json", "exp/train.log", "exp/partial.pt")),
    Row("finetune-inf-in-features", lambda t, s: _finetune(t, s, feats=_feats_with(t, s)),
        _line(r"extract-embeddings: job 1 failed: " + FEATURE.format(utt=INF_UTT)
              + r"; see {tmp}/exp/embeddings/log/extract-embeddings.1.log"),
        may_create=FINETUNE_START),
    # a test utterance through the trainer's path: refused where its features are read, or
    # (the driver reading them itself) where its posteriors would be written
    Row("finetune-inf-in-test-features", lambda t, s: [
        "finetune", _feats_with(t, s, TEST_UTT), _emotion_data(t, s), t / "exp", "--init",
        "none", "--model-conf", "model_resnet_tiny.toml",
        *_sets(*SMALL, "epochs=1", table="train.")],
        _line(r"finetune: job 1 failed: (" + FEATURE.format(utt=TEST_UTT)
              + r"|{tmp}/exp/fold_1/posteriors.tsv: not written: the posteriors of utterance "
              + TEST_UTT + r" are not finite \(nan, nan\); 1 of 6 utterances have NaN or "
              r"infinite posteriors); see {tmp}/exp/log/finetune.1.log"),
        may_create=("exp/finetune.json", "exp/experiment.json", "exp/log/*",
                    "exp/fold_1/split.json", "exp/fold_1/model.pt", "exp/fold_1/bundle*",
                    "exp/fold_1/train*")),
    # ------------------------------------------------------------- checkpoints and bundles
    Row("checkpoint-nan-weight", lambda t, s: [
        "extract-embeddings", s.feats, _speaker_model(t, _weights(_one_nan)), t / "emb"],
        _line(r"{tmp}/spk.pt: tensor 'trunk.stem.0.weight' " + UNUSABLE)),
    Row("bundle-nan-weight", lambda t, s: _predict(_bundle(t, s, _weights(_one_nan)), s),
        _line(r"{tmp}/bundle/model.pt: tensor 'trunk.stem.0.weight' " + UNUSABLE)),
    Row("bundle-int32-weights", lambda t, s: _predict(_bundle(t, s, _weights(_as_int32)), s),
        _line(r"{tmp}/bundle/model.pt: tensor 'trunk.stem.0.weight' holds int32 values where "
              r"the model's weights are float32 \(a converted or damaged file: its weights "
              r"would be truncated\); use the checkpoint as sertool wrote it")),
    # ------------------------------------------------------------- outputs
    Row("embeddings-overflow", lambda t, s: [
        "extract-embeddings", s.feats, _speaker_model(
            t, _weights(_scaled("trunk.stem.0.weight", 1e38))), t / "emb"],
        _line(r"extract-embeddings: job 1 failed: utterance spk0-u0 \({shared}/train/feats/"
              r"feats.1.ark:\d+\): the model {tmp}/spk.pt gives NaN or infinite embeddings for "
              r"it; see {tmp}/emb/log/extract-embeddings.1.log"),
        may_create=("emb/emb.json", "emb/log/*")),
    Row("predict-overflow", lambda t, s: _predict(_bundle(
        t, s, _weights(_scaled("trunk.stem.0.weight", 1e38))), s),
        r"^sertool: {shared}/audio/a.wav: the model {tmp}/bundle/model.pt gives NaN or "
        r"infinite probabilities for it \(nan, nan\)\n0 of 1 files predicted\n"
        r"sertool: error: no file could be predicted\n$"),
    # ------------------------------------------------------------- stored configurations
    Row("checkpoint-layers-abc", lambda t, s: [
        "extract-embeddings", s.feats, _speaker_model(t, _model_conf("layers", "abc")),
        t / "emb"], _line(r"{tmp}/spk.pt: model_conf.layers must be a list, got 'abc'")),
    Row("finetune-init-layers-abc", lambda t, s: _finetune(
        t, s, init=_speaker_model(t, _model_conf("layers", "abc"))),
        _line(r"{tmp}/spk.pt: model_conf.layers must be a list, got 'abc'"),
        may_create=("exp",)),
    Row("bundle-sample-rate-string", lambda t, s: _predict(_bundle(
        t, s, frontend=_set("sample_rate", "16000")), s),
        _line(r"{tmp}/bundle/frontend.json: sample_rate must be an integer, got '16000'")),
    Row("bundle-n-fft-1e9", lambda t, s: _predict(_bundle(
        t, s, frontend=_set("mel.n_fft", 1e9)), s),
        _line(r"{tmp}/bundle/frontend.json: mel.n_fft must be an integer, got 1000000000.0")),
    Row("bundle-n-fft-huge", lambda t, s: _predict(_bundle(
        t, s, frontend=_set("mel.n_fft", 1 << 30)), s),
        _line(r"{tmp}/bundle/frontend.json: mel.n_fft = 1073741824 is out of range \(must be "
              r"between 0 and 65536\)")),
    Row("bundle-vad-enabled-no", lambda t, s: _predict(_bundle(
        t, s, frontend=_set("vad.enabled", "no")), s),
        _line(r"{tmp}/bundle/frontend.json: vad.enabled must be true or false, got 'no'")),
    Row("train-seed-negative", lambda t, s: _train(t, s, "--set", "seed=-1"),
        _line(r"--set seed=-1: seed = -1 is out of range \(must be between 0 and 4294967295\)")),
    Row("finetune-seed-negative", lambda t, s: _finetune(t, s, "--set", "seed=-1"),
        _line(r"--set seed=-1: seed = -1 is out of range \(must be between 0 and 4294967295\)")),
    Row("set-list-item-type", lambda t, s: _train(t, s, "--set", 'chunk_frames=["a"]'),
        _line(r"--set chunk_frames=\[\"a\"\]: chunk_frames must be a list of integers, got "
              r"\['a'\]")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_non_finite_values_and_stored_configurations_are_refused(
        row: Row, shared: Shared, tmp_path: Path):
    check_row(row, shared, tmp_path)


def test_a_diverged_run_keeps_its_last_good_checkpoint_and_a_rerun_stops_again(
        shared: Shared, tmp_path: Path):
    """partial.pt is written every step until the weights go non-finite; that step is never
    saved, so the checkpoint left is finite, and a rerun resumes from it, diverges at the same
    step and leaves it byte-identical."""

    args = [str(a) for a in _train(tmp_path, shared, *TINY, "--set", "lr=10000", "--set",
                                   "epochs=2", "--set", "checkpoint_every_steps=1")]
    code, first = _run(args, False, tmp_path)
    assert code == 1 and "Traceback" not in first, first
    assert first.startswith("sertool: error: training diverged at epoch 1, step "), first
    partial = tmp_path / "exp" / "partial.pt"
    kept = load_checkpoint(partial)  # finite, or loading would refuse it
    assert f"step {kept['step'] + 1}:" in first  # the last step before the diverged one
    assert not list((tmp_path / "exp").glob("model_*.pt"))
    assert not (tmp_path / "exp" / "final.pt").exists()
    before = _snapshot(tmp_path / "exp")
    code, again = _run(args, False, tmp_path)
    assert code == 1 and again == first
    after = _snapshot(tmp_path / "exp")
    assert {p: d for p, d in after.items() if not p.endswith("train.log")} == {
        p: d for p, d in before.items() if not p.endswith("train.log")}

"""Transfer to emotion, fold by fold: ``sertool finetune``.

For every fold of ``DATA_DIR/folds`` (or one, ``--fold``):

1. A held-out set for model selection is taken from the fold's TRAINING speakers only
   (:func:`sertool.folds.split_heldout`): ``heldout_speakers`` whole speakers, drawn with a
   seed that depends on the fold name, are moved from training to held-out. The test list is
   never looked at until the chosen model scores it. A fold whose training data has too few
   speakers falls back to a label-stratified utterance split of the training list and says so in
   ``fold_<k>/split.json`` (the held-out set then shares speakers with training, not with test).
2. A model is trained and its best epoch on the held-out set kept (frozen trunk: best UA, ties
   broken by lower loss; through the trainer: its best held-out accuracy on whole segments):

   * default (paper): the speaker model's trunk is frozen; its FC layers are replaced by new,
     randomly initialised ones (``SERModel.replace_head``) which are trained with SGD on the
     trunk's pooled statistics of the original segments plus their SpecAugment-ed copies
     (``sertool extract-embeddings``; the trunk runs once per utterance and copy, not once per
     epoch and fold). The trunk is in eval mode, as it is when it scores whole segments, so
     training the head on stored embeddings is exactly training the whole frozen-trunk network;
   * ``unfreeze``: everything fine-tuned through :func:`sertool.nnet.trainer.train` with the
     trunk's LR scaled by ``trunk_lr_factor``;
   * ``init = none`` (no-transfer baseline) and the 1D-CNN attention model: trained from scratch
     through :func:`sertool.nnet.trainer.train`;
   * ``init = random``: the frozen-trunk system on an untrained trunk (the network of
     ``model_conf``, seeded), i.e. the no-transfer row at the cost of the transfer row.
3. The fold's test list is scored with whole segments (variable length, eval mode) and written
   to ``fold_<k>/posteriors.tsv`` (the :mod:`sertool.expdir` contract), after the fold model
   (``fold_<k>/model.pt``) and its model bundle (``fold_<k>/bundle``, see
   :mod:`sertool.predict`). Posteriors are written last.

Each fold is one job of :mod:`sertool.jobs` (stage ``finetune``; job N is the N-th fold of
``DATA_DIR/folds``, its log ``EXP_DIR/log/finetune.N.log``, its done marker ``EXP_DIR/.done.N``):
with ``--cmd local`` the folds run one after another in this process, with ``--cmd slurm`` as
one array task each. A fold with its marker and posteriors is finished and a rerun skips it; a
killed fold is redone (the trainer resumes from its own checkpoints). The frozen trunk's
embeddings are extracted first (jobs too, with the same ``--cmd``); a fold job reads them, and
the data tables, from disk itself, so only paths and configurations travel to a cluster task.

``EXP_DIR/experiment.json`` describes the experiment for ``sertool score``; a rerun with another
configuration is refused instead of mixing two experiments in one directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TextIO

import kaldiio
import numpy as np
import torch

from sertool.config import load_config, shipped_conf
from sertool.datadir import DataDirError, read_folds, read_table
from sertool.errors import SertoolError
from sertool.expdir import fold_dir, write_experiment, write_posteriors
from sertool.faults import kill_point
from sertool.folds import HeldoutSplit, fold_seed, inner_speaker_folds, split_heldout
from sertool.frontend.featdir import FeatDir
from sertool.io_utils import atomic_write_json, atomic_write_text, ensure_writable
from sertool.jobs import Cluster, Job, check_identity, digest, marker_path, run_jobs
from sertool.labels import read_label_map, read_utt2emo
from sertool.models import build_model, load_model_conf
from sertool.nnet.checkpoint import load_model, save_checkpoint
from sertool.nnet.device import resolve_device
from sertool.nnet.trainer import load_train_conf, train
from sertool.predict import class_probabilities, export_bundle
from sertool.transfer.embdir import EmbeddingDir, keys_of, utt_of
from sertool.transfer.embeddings import extract_embeddings
from sertool.transfer.head import train_head

STAGE = "finetune"  # log/finetune.N.log, N = the fold's position in DATA_DIR/folds

# The finetune schema with its defaults, the one source (the shipped conf/finetune.toml
# changes nothing; recipe files hold only what they change).
DEFAULTS: dict = {
    "seed": 0,
    # whole training speakers held out per fold for model selection (never test speakers)
    "heldout_speakers": 2,
    # fallback when the fold's training list has fewer than heldout_speakers + 1 speakers:
    # this fraction of the training utterances, stratified by label
    "heldout_fraction": 0.15,
    # How each fold picks its number of head epochs (frozen trunk): "heldout_speakers" (the
    # held-out training speakers above; the model of the best epoch is kept) or "inner_cv"
    # (inner_folds speaker groups of the training speakers: the epoch count with the best mean
    # UA over the groups, then one head trained on all training speakers for that many epochs;
    # steadier on corpora whose speakers hold few utterances).
    "selection": "heldout_speakers",
    "inner_folds": 4,
    "augment": {"policy": "conservative", "copies": 2},
    # frozen trunk: the new FC layers trained on pooled embeddings (paper section 4.2)
    "head": {
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "lr_constant_epochs": 8,
        "lr_halve_every": 2,
    },
    # --unfreeze: the trunk's learning rate is the trainer's LR times this factor
    "unfreeze": {"trunk_lr_factor": 0.1},
}


SELECTIONS = ("heldout_speakers", "inner_cv")
LIMITS = {"heldout_speakers": (0, None), "heldout_fraction": (0.0, 0.9), "inner_folds": (2, None),
          "augment.copies": (0, None), "head.epochs": (1, None), "head.batch_size": (2, None),
          "head.lr": (1e-12, None), "head.momentum": (0.0, 1.0), "head.weight_decay": (0.0, None),
          "head.lr_constant_epochs": (0, None), "head.lr_halve_every": (1, None),
          "unfreeze.trunk_lr_factor": (0.0, None)}


class FinetuneError(SertoolError, ValueError):
    """A problem with the inputs of ``finetune`` (the message names the file or fold)."""


# ----------------------------------------------------------------------------- the driver


@dataclass
class FoldOutcome:
    fold: str
    status: str  # "trained" or "skipped" (its posteriors were already there)
    heldout: dict | None = None  # held-out metrics of the kept epoch


@dataclass
class FinetuneSummary:
    exp_dir: Path
    mode: str  # "frozen", "unfreeze" or "scratch"
    folds: list[FoldOutcome]
    bundle: Path | None = None  # the all-data bundle, with export_all


@dataclass
class _Setup:
    """What every fold shares: paths and configurations only (it is pickled into the Slurm
    task spec); the tables and embeddings are read from disk where the fold runs."""
    features: FeatDir  # pickled as its path
    data_dir: Path
    exp_dir: Path
    embeddings: EmbeddingDir | None  # the frozen trunk's (pickled as its path)
    mode: str
    init: Path | None
    conf: dict
    model_conf: dict
    train_conf: dict | None
    classes: list[str]
    feat_dim: int
    device: str
    provenance: dict
    progress: bool
    labels: Path | None  # the --labels map, if given (utt2emo names read as codes)

    @cached_property
    def utt2spk(self) -> dict[str, str]:
        return read_table(self.data_dir / "utt2spk")

    @cached_property
    def utt2label(self) -> dict[str, str]:
        return read_utt2emo(self.data_dir, read_label_map(self.labels, self.data_dir))

    def __getstate__(self) -> dict:
        # what was read from disk stays here (folds run one after another in this process
        # share it); a Slurm task reads it again
        return {k: v for k, v in self.__dict__.items() if k not in _LOADED}


_LOADED = ("utt2spk", "utt2label")


def _frontend_summary(frontend: Mapping) -> dict:
    """The experiment.json ``frontend`` entry from the feature dir's frontend.json."""
    cmvn = frontend.get("cmvn", {})
    return {"kind": frontend.get("kind", "?"),
            "normalisation": cmvn.get("mode", "segment") if isinstance(cmvn, Mapping) else cmvn,
            "vad": bool(frontend.get("vad", {}).get("enabled", True))}


def _check_identity(exp_dir: Path, identity: dict) -> None:
    """Refuse an EXP_DIR made with another configuration (a rerun with the same one resumes)."""
    path = exp_dir / "finetune.json"
    identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
    ensure_writable(exp_dir)  # a rerun writes nothing until its first fold is trained
    if check_identity(exp_dir, path, identity, hint="use another EXP_DIR or remove it",
                      error=FinetuneError) is not None:
        return
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, identity)


def finetune(feat_dir: str | os.PathLike, data_dir: str | os.PathLike,
             exp_dir: str | os.PathLike, *, init: str | os.PathLike | None,
             conf: Mapping, model_conf: Mapping | None = None,
             train_conf: Mapping | None = None, fold: str = "all", unfreeze: bool = False,
             export_all: bool = False, emb_dir: str | os.PathLike | None = None, nj: int = 1,
             device: str = "cpu", command: str = "", progress: bool = True,
             labels: str | os.PathLike | None = None,
             cluster: Cluster | None = None) -> FinetuneSummary:
    """Train and score every fold (or ``fold``) of ``data_dir/folds``; see the module docstring.

    ``utt2emo`` labels must be class codes (sertool.labels) or names that the ``labels`` file
    maps to codes; every class must occur in the training list of every fold run.

    ``init`` is the speaker model (a checkpoint of sertool.nnet.checkpoint) or None for the
    no-transfer baseline; ``conf`` is the resolved :data:`DEFAULTS`; ``model_conf`` the network
    for ``init=None``; ``train_conf`` the sertool.nnet.trainer configuration for the modes that go
    through the trainer (``unfreeze``, ``init=None``). ``nj`` is the embedding extraction's
    jobs; ``cluster`` says where those and the folds run (default: here, folds in this process).
    """
    feat_dir, data_dir, exp_dir = Path(feat_dir), Path(data_dir), Path(exp_dir)
    cluster = cluster or Cluster()
    if cluster.cmd == "local":  # a cluster's nodes check their own devices (_fold_job)
        device = resolve_device(device)
    conf = dict(conf)
    folds, protocol = read_folds(data_dir)
    if fold != "all" and fold not in [f.name for f in folds]:
        raise FinetuneError(f"{data_dir}/folds: no fold {fold!r} (folds: "
                            f"{', '.join(f.name for f in folds)})")
    read_table(data_dir / "utt2spk")  # checked before any fold starts (a fold reads it again)
    if not (data_dir / "utt2emo").is_file():
        raise DataDirError(data_dir / "utt2emo", None, "not found (an emotion data directory "
                           "has one)")
    label_map = read_label_map(labels, data_dir)
    utt2label = read_utt2emo(data_dir, label_map)
    used = sorted({u for f in folds for u in f.train + f.test})
    absent = [u for u in used if u not in utt2label]
    if absent:
        raise FinetuneError(f"{data_dir / 'utt2emo'}: {len(absent)} utterance(s) of the folds "
                            f"are missing, e.g. {absent[0]!r}")
    classes = sorted({utt2label[u] for u in used})
    _require_every_class(data_dir, [f for f in folds if fold in ("all", f.name)], used,
                         utt2label)
    features = FeatDir.open(feat_dir)
    frontend = features.frontend
    absent = features.missing(used)
    if absent:  # extract-feats lists the utterances it could not use in FEAT_DIR/failed
        raise FinetuneError(
            f"{feat_dir / 'feats.scp'}: {len(absent)} utterance(s) of the folds are missing, "
            f"e.g. {absent[0]!r} (extract-feats lists the utterances it could not use in "
            f"{feat_dir / 'failed'}; drop them from the data directory and its folds with "
            f"`sertool fix-data-dir {data_dir} --feat-dir {feat_dir}`)")

    feat_dim = features.dim
    random_trunk = str(init) == "random"
    init_path = None if init is None or str(init) in ("none", "random") else Path(init)
    if random_trunk:
        if not model_conf:
            raise FinetuneError("--init random needs --model-conf (the network whose untrained "
                                "trunk is frozen)")
        if unfreeze:
            raise FinetuneError("--init random is the frozen random-trunk baseline; a network "
                                "trained from scratch is --init none")
        # The no-transfer row of the frozen-trunk system: the same network and FC training on
        # the pooled statistics of an untrained (seeded random) trunk.
        init_path = _random_trunk(exp_dir / "random_trunk.pt", model_conf, feat_dim,
                                  int(conf["seed"]))
        mode = "frozen"
    elif init_path is not None:
        if not init_path.is_file():
            raise FinetuneError(f"{init_path}: speaker model not found")
        if model_conf:
            raise FinetuneError("--model-conf is for --init none: with --init the network is "
                                f"the speaker model's ({init_path})")
        _, init_meta = load_model(init_path, "cpu")
        features.check_model(init_meta, init_path)
        model_conf = dict(init_meta["model_conf"])
        mode = "unfreeze" if unfreeze else "frozen"
    else:
        if not model_conf:
            raise FinetuneError("--init none needs --model-conf (the network to train)")
        if unfreeze:
            raise FinetuneError("--unfreeze needs --init SPEAKER_MODEL (nothing is frozen "
                                "without a pretrained trunk)")
        mode = "scratch"
    if mode != "frozen" and conf["selection"] == "inner_cv":
        raise FinetuneError("selection inner_cv trains inner_folds + 1 heads per fold on the "
                            "frozen trunk's stored embeddings; with --unfreeze or --init none "
                            "use selection heldout_speakers")
    if mode != "frozen" and train_conf is None:
        train_conf = load_train_conf()
    if mode == "frozen":
        train_conf = None  # not used: kept out of the configuration identity

    prepare = data_dir / "prepare.json"
    prep = json.loads(prepare.read_text(encoding="utf-8")) if prepare.is_file() else {}
    corpus = str(prep.get("corpus") or data_dir.name)
    class_map = prep.get("class_map") or {
        "labels": "as in utt2emo" + (f", mapped by {label_map.source}" if labels else ""),
        **({"iemocap_exp": prep["exp"]} if "exp" in prep else {}),
        **({"left_out": prep["excluded"]} if prep.get("excluded") else {})}
    policy = conf["augment"]["policy"]
    copies = 0 if policy == "none" else int(conf["augment"]["copies"])
    init_text = ("none" if init_path is None else
                 f"random (untrained trunk, seed {int(conf['seed'])})" if random_trunk
                 else str(init_path.resolve()))
    identity = {"feat_dir": str(feat_dir.resolve()), "data_dir": str(data_dir.resolve()),
                "init": init_text, "mode": mode, "conf": conf, "model_conf": dict(model_conf),
                "train_conf": dict(train_conf) if train_conf is not None else None,
                "classes": classes,
                # only with --labels, so experiments made before it keep their identity
                **({"label_map": {"names": dict(label_map.names),
                                  "new_codes": list(label_map.new_codes)}}
                   if labels is not None else {})}
    for f in folds:  # before anything is written: no fold folder may lead out of EXP_DIR
        fold_dir(exp_dir, f.name)
    _check_identity(exp_dir, identity)
    experiment = {
        "name": exp_dir.resolve().name, "corpus": corpus,
        "data_dir": str(data_dir.resolve()), "feat_dir": str(feat_dir.resolve()),
        "classes": classes, "class_map": class_map, "protocol": protocol,
        "frontend": {**_frontend_summary(frontend), "dims": feat_dim},
        "model": {"pooling": model_conf.get("pooling", "not applicable"), **dict(model_conf)},
        "init": init_text, "augmentation": {"policy": policy, "copies": copies},
        "unfreeze": mode == "unfreeze", "mode": mode, "command": command,
        "seed": int(conf["seed"]), "heldout": {"speakers": conf["heldout_speakers"],
                                               "fallback_fraction": conf["heldout_fraction"]},
    }
    write_experiment(exp_dir, experiment, command)
    target = None
    if mode == "frozen":
        target = Path(emb_dir) if emb_dir is not None else exp_dir / "embeddings"
        extract_embeddings(features, init_path, target, copies=copies, policy=policy,
                           seed=int(conf["seed"]), nj=nj, device=device, utts=used,
                           progress=progress, cluster=cluster)
    local = cluster.cmd == "local"
    # relative paths stay relative: a Slurm task starts in this working directory
    setup = _Setup(features, data_dir, exp_dir,
                   EmbeddingDir(target) if target is not None else None, mode, init_path, conf,
                   dict(model_conf),
                   dict(train_conf) if train_conf is not None else None, classes, feat_dim, device,
                   {"corpus": corpus, "data_dir": data_dir.name, "protocol": protocol.get("name"),
                    "init": ("none" if init_path is None else "random" if random_trunk
                             else init_path.name), "mode": mode,
                    "augmentation": {"policy": policy, "copies": copies}, "command": command},
                   progress and local,  # a task's bars would only fill its log
                   Path(labels) if labels is not None else None)

    # one job per fold, numbered by its place in DATA_DIR/folds (the same job and log
    # whether one fold or all run); its digest covers the fold's lists and the configuration
    identity = json.loads(json.dumps(identity))
    jobs = [Job(index, [f.name], digest(f.name, sorted(f.train), sorted(f.test), identity),
                (f"fold_{f.name}/posteriors.tsv",))
            for index, f in enumerate(folds, start=1) if fold in ("all", f.name)]
    _adopt_unmarked_folds(exp_dir, jobs)
    run = run_jobs(STAGE, exp_dir, _fold_job, jobs, (setup,), cluster=cluster,
                   progress=progress and not local, desc=f"finetune {exp_dir.name}",
                   unit="fold", pool=False)
    outcomes = [run.results.get(job.index) or FoldOutcome(
        job.items[0], "skipped" if job.index in run.skipped else "trained") for job in jobs]
    bundle = None
    if export_all:
        bundle = exp_dir / "final" / "bundle"
        if not (bundle / "bundle.json").is_file():
            setup.device = resolve_device(setup.device)
            _run_fold(setup, "all", used, [], exp_dir / "final")
    return FinetuneSummary(exp_dir, mode, outcomes, bundle)


def _adopt_unmarked_folds(exp_dir: Path, jobs: Sequence[Job]) -> None:
    """An EXP_DIR without any done marker was made before folds were jobs (or its first fold
    was killed between its posteriors and its marker): a fold with its posteriors is finished,
    since they are written last and the configuration was checked (finetune.json), so it is
    marked done instead of being trained again."""
    if any(exp_dir.glob(".done.*")):
        return
    for job in jobs:
        if all((exp_dir / name).is_file() for name in job.outputs):
            atomic_write_text(marker_path(exp_dir, job.index), job.digest + "\n")


def _require_every_class(data_dir: Path, folds: Sequence, used: Sequence[str],
                         utt2label: Mapping[str, str]) -> None:
    """Refuse a fold whose training list lacks a class of the experiment (e.g. a label typo
    or a class of one utterance): the model could never predict it, yet its test utterances
    count in UA as errors; a class must be learnable in every fold it is scored in."""
    emo = data_dir / "utt2emo"
    lines = {u: n for n, u in enumerate(read_table(emo), start=1)}
    for f in folds:
        trained = {utt2label[u] for u in f.train}
        for label in sorted({utt2label[u] for u in used} - trained):
            of = [u for u in used if utt2label[u] == label]
            first = min(of, key=lines.__getitem__)
            raise FinetuneError(
                f"{data_dir / 'folds' / f.name / 'train'}: no training utterance of class "
                f"{label!r}, which has {len(of)} utterance(s) in the folds (first at "
                f"{emo}:{lines[first]}, {first}); a class must be trained in every fold, else "
                "its test utterances count against UA: fix its label, or map it to another "
                f"class with --labels FILE (a line '{label} CODE'), or drop its utterances "
                "(sertool subset-data-dir --utt-list)")


def _fold_job(index: int, names: list[str], setup: _Setup, *, log: TextIO,
              progress: Callable[[int], None]) -> FoldOutcome:
    """Job ``index`` of the finetune stage: the one fold ``names[0]``. Run by sertool.jobs, in
    this process or as a Slurm array task; reads its fold lists from DATA_DIR/folds."""
    (name,) = names
    kill_point("finetune:before-fold")  # at its 2nd hit: one fold done, the others not started
    fold = next(f for f in read_folds(setup.data_dir)[0] if f.name == name)
    setup.device = resolve_device(setup.device)
    log.write(f"# fold {name}: {len(fold.train)} training and {len(fold.test)} test "
              f"utterances, mode {setup.mode}, device {setup.device}\n")
    outcome = _run_fold(setup, name, fold.train, fold.test, fold_dir(setup.exp_dir, name))
    log.write(f"# done: held-out {json.dumps(outcome.heldout, default=str)}\n")
    progress(1)
    return outcome


def _random_trunk(path: Path, model_conf: Mapping, feat_dim: int, seed: int) -> Path:
    """A checkpoint of the untrained network ``model_conf`` (seeded), made once per EXP_DIR."""
    if not path.is_file():
        torch.manual_seed(seed)
        model = build_model(model_conf, 1, feat_dim)
        save_checkpoint(path, model, feat_dim=feat_dim, with_rng=False)
    return path


def _run_fold(setup: _Setup, name: str, train_utts: list[str], test_utts: list[str],
              fold_dir: Path) -> FoldOutcome:
    """Train one fold, save its model and bundle, then (last) its test posteriors."""
    conf = setup.conf
    if conf["selection"] == "inner_cv":
        split = HeldoutSplit(sorted(train_utts), [], "inner_cv", note=(
            f"epoch count chosen by {conf['inner_folds']}-fold speaker-group cross-validation "
            "on the training speakers; the model is then trained on all of them"))
    else:
        split = split_heldout(train_utts, setup.utt2spk, setup.utt2label,
                              n_speakers=int(conf["heldout_speakers"]),
                              fraction=float(conf["heldout_fraction"]),
                              seed=int(conf["seed"]), fold=name)
    fold_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(fold_dir / "split.json", split.to_dict())
    if setup.mode == "frozen":
        model, heldout, probs = _frozen_fold(setup, name, split, test_utts, fold_dir)
    else:
        model, heldout, probs = _trainer_fold(setup, name, split, test_utts, fold_dir)
    meta = dict(model_conf=setup.model_conf, num_classes=len(setup.classes),
                feat_dim=setup.feat_dim, labels=setup.classes)
    save_checkpoint(fold_dir / "model.pt", model, **meta, with_rng=False)  # not resumed from
    kill_point("finetune:after-model")  # model.pt without its bundle
    export_bundle(fold_dir / "bundle", model, classes=setup.classes,
                  model_conf=setup.model_conf, feat_dim=setup.feat_dim,
                  frontend_json=setup.features.frontend_json,
                  provenance={**setup.provenance,
                              "fold": name if name != "all" else "all data (no test fold)",
                              "heldout": {k: heldout[k] for k in heldout if k != "epoch"},
                              "heldout_speakers": split.heldout_speakers})
    if test_utts:
        labels = [setup.utt2label[u] for u in test_utts]
        kill_point("finetune:before-posteriors")  # posteriors.tsv marks the fold done
        write_posteriors(fold_dir / "posteriors.tsv", test_utts, labels, setup.classes, probs)
    return FoldOutcome(name, "trained", heldout)


def _seed_for(setup: _Setup, name: str) -> int:
    return fold_seed(int(setup.conf["seed"]), name) >> 1


def _frozen_fold(setup: _Setup, name: str, split: HeldoutSplit, test_utts: list[str],
                 fold_dir: Path):
    """Paper default: new FC layers on the frozen trunk's stored pooled statistics."""
    embeddings = setup.embeddings.vectors  # read once per process, for all its folds
    index = {c: i for i, c in enumerate(setup.classes)}
    copies = 0 if setup.conf["augment"]["policy"] == "none" else int(
        setup.conf["augment"]["copies"])

    def vectors(utts: list[str], with_copies: bool) -> tuple[torch.Tensor, torch.Tensor]:
        keys = keys_of(utts, copies if with_copies else 0)
        return (torch.as_tensor(np.stack([embeddings[k] for k in keys])),
                torch.as_tensor([index[setup.utt2label[utt_of(k)]] for k in keys]))

    model, _ = load_model(setup.init, "cpu")
    seed = _seed_for(setup, name)

    def fit_head(train: list[str], valid: list[str], conf: Mapping, desc: str,
                 keep: str = "best"):
        torch.manual_seed(seed)  # the same fresh head for every inner fold and the final one
        model.replace_head(len(setup.classes))
        model.eval()
        x_train, y_train = vectors(train, True)
        x_valid, y_valid = vectors(valid, False) if valid else (None, None)
        return train_head(model.head, x_train, y_train, x_valid, y_valid, conf,
                          n_classes=len(setup.classes), seed=seed, progress=setup.progress,
                          desc=desc, keep=keep)

    log: dict = {"n_train_vectors": len(split.train) * (1 + copies),
                 "n_heldout": len(split.heldout)}
    if split.method == "inner_cv":
        inner = inner_speaker_folds(split.train, setup.utt2spk,
                                    k=int(setup.conf["inner_folds"]), seed=seed)
        runs = [fit_head(tr, va, setup.conf["head"], f"fold {name} inner {i + 1}/{len(inner)}")
                for i, (tr, va) in enumerate(inner)]
        mean_ua = np.mean([[h["valid_ua"] for h in r.history] for r in runs], axis=0)
        mean_loss = np.mean([[h["valid_loss"] for h in r.history] for r in runs], axis=0)
        epochs = max(range(len(mean_ua)), key=lambda e: (mean_ua[e], -mean_loss[e])) + 1
        result = fit_head(split.train, [], {**setup.conf["head"], "epochs": epochs},
                          f"fold {name}", keep="last")
        best = {"epoch": epochs, "valid_ua": float(mean_ua[epochs - 1]),
                "valid_loss": float(mean_loss[epochs - 1]), "selection": "inner_cv"}
        log.update(inner_groups=[sorted({setup.utt2spk[u] for u in va}) for _, va in inner],
                   inner_mean_ua=mean_ua.tolist(), chosen_epochs=epochs)
    else:
        result = fit_head(split.train, split.heldout, setup.conf["head"], f"fold {name}")
        best = result.best
    log.update(best_epoch=result.best_epoch, best=best, history=result.history)
    atomic_write_json(fold_dir / "train_log.json", log)
    model.eval()
    probs = np.zeros((0, len(setup.classes)))
    if test_utts:
        x_test = torch.as_tensor(np.stack([embeddings[u] for u in test_utts]))
        with torch.no_grad():
            probs = torch.softmax(model.head_forward(x_test), dim=-1).numpy()
    return model, best, probs


def _trainer_fold(setup: _Setup, name: str, split: HeldoutSplit, test_utts: list[str],
                  fold_dir: Path):
    """``--unfreeze``, ``--init none`` and the 1D-CNN: the whole network through
    sertool.nnet.trainer (chunked training, SpecAugment on the fly; the trainer keeps the epoch
    with the best held-out accuracy on whole segments)."""
    conf = dict(setup.train_conf)
    conf["seed"] = int(setup.conf["seed"])
    conf["augment"] = dict(setup.conf["augment"])
    conf["train_trunk"] = True
    if setup.mode == "unfreeze":
        conf["model"] = {}  # the speaker model's architecture
        conf["trunk_lr_factor"] = float(setup.conf["unfreeze"]["trunk_lr_factor"])
    else:
        conf["model"] = dict(setup.model_conf)
        conf["trunk_lr_factor"] = 1.0
    result = train(setup.features, setup.data_dir, fold_dir / "train", conf, task="emotion",
                   train_utts=split.train, valid_utts=split.heldout, init_model=setup.init,
                   device=setup.device, progress=setup.progress, utt2label=setup.utt2label,
                   desc=f"fold {name}")
    model, meta = load_model(result.best_model, setup.device)
    # the trainer orders its outputs by the (sorted) labels of the fold's training list
    if list(meta["labels"]) != setup.classes:
        raise FinetuneError(f"fold {name}: the training list has labels {meta['labels']}, "
                            f"the experiment {setup.classes}: every class must be trained")
    probs = np.zeros((len(test_utts), len(setup.classes)))
    for row, utt in enumerate(test_utts):
        feats = np.asarray(kaldiio.load_mat(setup.features.feats[utt]))
        probs[row] = class_probabilities(model, feats, setup.device)
    return model, dict(result.best), probs


# ----------------------------------------------------------------------------- configuration


def resolve_configs(conf_path: str | None, model_conf_path: str | None,
                    train_conf_path: str | None, overrides: Sequence[str] = ()
                    ) -> tuple[dict, dict | None, dict | None]:
    """(finetune conf, model conf, trainer conf) from their files and ``--set`` overrides.

    ``--set model.KEY=V`` goes to the model configuration, ``--set train.KEY=V`` to the
    trainer's, anything else to the finetune configuration (:data:`DEFAULTS`).
    """
    mine = [o for o in overrides if not o.startswith(("model.", "train."))]
    model_sets = [o[len("model."):] for o in overrides if o.startswith("model.")]
    train_sets = [o[len("train."):] for o in overrides if o.startswith("train.")]
    conf = load_config(DEFAULTS, conf_path or shipped_conf("finetune.toml"), mine, LIMITS)
    if conf["selection"] not in SELECTIONS:
        raise FinetuneError(f"selection must be one of {', '.join(SELECTIONS)}, got "
                            f"{conf['selection']!r}")
    model_conf = None
    if model_conf_path is not None or model_sets:
        model_conf = load_model_conf(model_conf_path, model_sets)
    return conf, model_conf, load_train_conf(train_conf_path, train_sets)

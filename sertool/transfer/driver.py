"""Transfer to emotion, fold by fold: ``sertool finetune``.

For every fold of ``DATA_DIR/folds`` (or one, ``--fold``):

1. A held-out set for model selection is taken from the fold's TRAINING speakers only
   (:func:`sertool.folds.split_heldout`): ``heldout_speakers`` whole speakers, drawn with a
   seed that depends on the fold name, are moved from training to held-out. The test list is
   never looked at until the chosen model scores it. A fold whose training data has too few
   speakers falls back to a label-stratified utterance split of the training list and says so in
   ``fold_<k>/split.json`` (the held-out set then shares speakers with training, not with test).
2. A model is trained and its best epoch on the held-out set kept: the best UA, ties broken by
   lower loss (sertool.metrics.best_epoch; the frozen head and the trainer alike):

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

:func:`finetune` is :func:`sertool.transfer.plan.resolve` (what to do, settled and checked
before anything is written) followed by :func:`run` (doing it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from sertool.config import load_config, shipped_conf
from sertool.expdir import fold_dir, write_experiment, write_posteriors
from sertool.faults import kill_point
from sertool.folds import HeldoutSplit, fold_seed, inner_speaker_folds, split_heldout
from sertool.io_utils import atomic_write_json, atomic_write_text
from sertool.jobs import Cluster, Job, digest, marker_path, run_jobs
from sertool.metrics import best_epoch
from sertool.models import build_model, load_model_conf
from sertool.models.heads import LayerMix
from sertool.nnet.checkpoint import load_model, save_checkpoint
from sertool.nnet.data import load_feats
from sertool.nnet.device import resolve_device
from sertool.nnet.trainer import load_train_conf, train
from sertool.predict import class_probabilities, export_bundle
from sertool.transfer.embdir import keys_of, utt_of
from sertool.transfer.embeddings import extract_embeddings
from sertool.transfer.head import train_head
from sertool.transfer.linear import fit_linear, heldout_scores
from sertool.transfer.plan import (
    DEFAULTS,
    IDENTITY_JSON,
    LIMITS,
    SELECTIONS,
    FinetuneError,
    FinetunePlan,
    Mode,
    resolve,
)

STAGE = "finetune"  # log/finetune.N.log, N = the fold's position in DATA_DIR/folds


@dataclass
class FoldOutcome:
    fold: str
    status: str  # "trained" or "skipped" (its posteriors were already there)
    heldout: dict | None = None  # held-out metrics of the kept epoch


@dataclass
class FinetuneResult:
    exp_dir: Path
    mode: Mode
    folds: list[FoldOutcome]
    bundle: Path | None = None  # the all-data bundle, with export_all
    description: str = ""  # what the run is (FinetunePlan.description); "" : the mode's
    notes: list[str] = field(default_factory=list)  # e.g. the classes a cross-corpus run left out

    def fold_lines(self) -> list[str]:
        """One line per fold (and the all-data bundle): what the run did."""
        lines = list(self.notes)
        for f in self.folds:
            metric = next((m for m in ("valid_ua", "valid_acc") if m in (f.heldout or {})),
                          None)
            chosen = ", ".join(f"{key} {f.heldout[key]:g}" for key in ("layer", "epoch", "c")
                               if key in (f.heldout or {}))  # what the selection chose
            detail = (f"held-out {metric[6:].upper()} {f.heldout[metric]:.3f} ({chosen})"
                      if metric else "")
            lines.append(f"fold {f.fold}: {f.status} {detail}".rstrip())
        if self.bundle is not None:
            lines.append(f"all-data bundle: {self.bundle}")
        return lines

    def summary(self) -> str:
        return (f"{self.exp_dir}: {self.description or self.mode.description}, "
                f"{len(self.folds)} fold(s); "
                f"next: sertool score {self.exp_dir}")


def finetune(feat_dir: str | os.PathLike, data_dir: str | os.PathLike,
             exp_dir: str | os.PathLike, *, init: str | os.PathLike | None,
             conf: Mapping, model_conf: Mapping | None = None,
             train_conf: Mapping | None = None, fold: str = "all", unfreeze: bool = False,
             export_all: bool = False, emb_dir: str | os.PathLike | None = None, nj: int = 1,
             device: str = "cpu", command: str = "", progress: bool = True,
             labels: str | os.PathLike | None = None,
             cluster: Cluster | None = None, test_data: str | os.PathLike | None = None,
             test_feats: str | os.PathLike | None = None, strict_classes: bool = False,
             test_emb_dir: str | os.PathLike | None = None) -> FinetuneResult:
    """Train and score every fold (or ``fold``) of ``data_dir/folds``; see the module docstring.

    ``utt2emo`` labels must be class codes (sertool.labels) or names that the ``labels`` file
    maps to codes; every class must occur in the training list of every fold run.

    ``init`` is the speaker model (a checkpoint of sertool.nnet.checkpoint), "random" or None
    (or "none") for the no-transfer baseline; ``conf`` is the resolved
    :data:`sertool.transfer.plan.DEFAULTS`; ``model_conf`` the network for ``init`` none or
    random; ``train_conf`` the sertool.nnet.trainer configuration for the modes that go through
    the trainer (``unfreeze``, ``init=None``). ``nj`` is the embedding extraction's jobs;
    ``cluster`` says where those and the folds run (default: here, folds in this process).

    ``test_data`` and ``test_feats`` (another corpus's data dir and features, made with the same
    front-end): a cross-corpus run, one fold ``cross`` that trains on every utterance of
    ``data_dir`` and tests on every utterance of ``test_data``, on the classes both share
    (sertool.transfer.crosscorpus; ``strict_classes`` refuses corpora whose classes differ).
    ``test_emb_dir``: where the frozen trunk's embeddings of the test corpus go (default
    EXP_DIR/embeddings_test).
    """
    return run(resolve(feat_dir, data_dir, exp_dir, init=init, conf=conf,
                       model_conf=model_conf, train_conf=train_conf, fold=fold,
                       unfreeze=unfreeze, export_all=export_all, emb_dir=emb_dir, nj=nj,
                       device=device, command=command, progress=progress, labels=labels,
                       test_data=test_data, test_feats=test_feats,
                       strict_classes=strict_classes, test_emb_dir=test_emb_dir),
               cluster=cluster)


def run(plan: FinetunePlan, cluster: Cluster | None = None) -> FinetuneResult:
    """Do what ``plan`` says: record the experiment, extract the frozen trunk's embeddings,
    run the folds' jobs (and the all-data model with ``export_all``). ``cluster`` says where;
    it settles the plan's device (checked here when local) and its bars (none in a task)."""
    cluster = cluster or Cluster()
    local = cluster.cmd == "local"
    if local:  # a cluster's nodes check their own devices (_fold_job)
        plan.device = resolve_device(plan.device)
    exp_dir = plan.exp_dir
    exp_dir.mkdir(parents=True, exist_ok=True)
    if not (exp_dir / IDENTITY_JSON).is_file():  # resolve refused another one
        atomic_write_json(exp_dir / IDENTITY_JSON, plan.identity)
    write_experiment(exp_dir, plan.experiment, plan.experiment["command"])
    if plan.random_trunk:
        _random_trunk(plan)
    if plan.mode is Mode.FROZEN:
        extract_embeddings(plan.features, plan.init, plan.embeddings.path, copies=plan.copies,
                           policy=plan.conf["augment"]["policy"], seed=int(plan.conf["seed"]),
                           nj=plan.nj, device=plan.device, utts=plan.train_used,
                           progress=plan.progress, cluster=cluster,
                           all_layers=plan.all_layers)
        if plan.cross is not None:  # the test corpus: originals only (it is only scored)
            extract_embeddings(plan.cross.test_features, plan.init, plan.test_embeddings.path,
                               copies=0, policy="none", seed=int(plan.conf["seed"]),
                               nj=plan.nj, device=plan.device, utts=plan.cross.test,
                               progress=plan.progress, cluster=cluster,
                               all_layers=plan.all_layers)
    bars = plan.progress
    plan.progress = bars and local  # the folds' own bars (a task's would only fill its log)

    # one job per fold, numbered by its place in DATA_DIR/folds (the same job and log
    # whether one fold or all run); its digest covers the fold's lists and the configuration
    jobs = [Job(index, [f.name], digest(f.name, sorted(f.train), sorted(f.test), plan.identity),
                (f"fold_{f.name}/posteriors.tsv",))
            for index, f in enumerate(plan.folds, start=1) if plan.fold in ("all", f.name)]
    _adopt_unmarked_folds(exp_dir, jobs)
    done = run_jobs(STAGE, exp_dir, _fold_job, jobs, (plan,), cluster=cluster,
                    progress=bars and not local, desc=f"finetune {exp_dir.name}",
                    unit="fold", pool=False)
    outcomes = [done.results.get(job.index) or FoldOutcome(
        job.items[0], "skipped" if job.index in done.skipped else "trained") for job in jobs]
    bundle = None
    if plan.export_all:
        bundle = exp_dir / "final" / "bundle"
        if not (bundle / "bundle.json").is_file():
            plan.device = resolve_device(plan.device)
            _run_fold(plan, "all", plan.used, [], exp_dir / "final")
    notes = [] if plan.cross is None else [
        f"cross-corpus: trained on {plan.cross.train_corpus} ({len(plan.cross.train)} "
        f"utterances), tested on {plan.cross.test_corpus} ({len(plan.cross.test)}), classes "
        f"{' '.join(plan.classes)}", *plan.cross.left_out_lines()]
    return FinetuneResult(exp_dir, plan.mode, outcomes, bundle, plan.description, notes)


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


def _fold_job(index: int, names: list[str], plan: FinetunePlan, *, log: TextIO,
              progress: Callable[[int], None]) -> FoldOutcome:
    """Job ``index`` of the finetune stage: the one fold ``names[0]``. Run by sertool.jobs, in
    this process or as a Slurm array task (whose plan reads DATA_DIR/folds and the tables
    again, once)."""
    (name,) = names
    kill_point("finetune:before-fold")  # at its 2nd hit: one fold done, the others not started
    fold = next(f for f in plan.folds if f.name == name)
    plan.device = resolve_device(plan.device)
    log.write(f"# fold {name}: {len(fold.train)} training and {len(fold.test)} test "
              f"utterances, mode {plan.mode.value}, device {plan.device}\n")
    if plan.cross is not None:
        log.write(f"# cross-corpus: train {plan.cross.train_corpus}, test "
                  f"{plan.cross.test_corpus}, classes {' '.join(plan.classes)}\n")
        log.writelines(f"# {line}\n" for line in plan.cross.left_out_lines())
    outcome = _run_fold(plan, name, fold.train, fold.test, fold_dir(plan.exp_dir, name))
    log.write(f"# done: held-out {json.dumps(outcome.heldout, default=str)}\n")
    progress(1)
    return outcome


def _random_trunk(plan: FinetunePlan) -> None:
    """The plan's trunk checkpoint for ``--init random``: the untrained network of its
    ``model_conf`` (seeded), made once per EXP_DIR."""
    if not plan.init.is_file():
        torch.manual_seed(int(plan.conf["seed"]))
        model = build_model(plan.model_conf, 1, plan.feat_dim)
        save_checkpoint(plan.init, model, feat_dim=plan.feat_dim, with_rng=False)


def _run_fold(plan: FinetunePlan, name: str, train_utts: list[str], test_utts: list[str],
              fold_dir: Path) -> FoldOutcome:
    """Train one fold, save its model and bundle, then (last) its test posteriors."""
    conf = plan.conf
    if conf["selection"] == "inner_cv":
        split = HeldoutSplit(sorted(train_utts), [], "inner_cv", note=(
            f"epoch count chosen by {conf['inner_folds']}-fold speaker-group cross-validation "
            "on the training speakers; the model is then trained on all of them"))
    else:
        split = split_heldout(train_utts, plan.utt2spk, plan.utt2label,
                              n_speakers=int(conf["heldout_speakers"]),
                              fraction=float(conf["heldout_fraction"]),
                              seed=int(conf["seed"]), fold=name)
    fold_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(fold_dir / "split.json", split.to_dict())
    if plan.mode is Mode.FROZEN:
        model, heldout, probs = _frozen_fold(plan, name, split, test_utts, fold_dir)
    else:
        model, heldout, probs = _trainer_fold(plan, name, split, test_utts, fold_dir)
    # the frozen trunk's fold model may read other layers, or have the linear head
    model_conf = model.model_conf if plan.mode is Mode.FROZEN else plan.model_conf
    meta = dict(model_conf=model_conf, num_classes=len(plan.classes),
                feat_dim=plan.feat_dim, labels=plan.classes)
    save_checkpoint(fold_dir / "model.pt", model, **meta, with_rng=False)  # not resumed from
    kill_point("finetune:after-model")  # model.pt without its bundle
    export_bundle(fold_dir / "bundle", model, classes=plan.classes,
                  model_conf=model_conf, feat_dim=plan.feat_dim,
                  frontend_json=plan.features.frontend_json,
                  provenance={**plan.provenance,
                              "fold": name if name != "all" else "all data (no test fold)",
                              "heldout": {k: heldout[k] for k in heldout if k != "epoch"},
                              "heldout_speakers": split.heldout_speakers})
    if test_utts:
        labels = [plan.utt2label[u] for u in test_utts]
        kill_point("finetune:before-posteriors")  # posteriors.tsv marks the fold done
        write_posteriors(fold_dir / "posteriors.tsv", test_utts, labels, plan.classes, probs)
    return FoldOutcome(name, "trained", heldout)


def _seed_for(plan: FinetunePlan, name: str) -> int:
    return fold_seed(int(plan.conf["seed"]), name) >> 1


@dataclass
class LayerChoice:
    """One way for the head to read the stored vectors: the fold model's configuration and
    the columns of each stored vector that are its pooled input."""

    label: str  # "model", "layer 3", "weighted", "concat"
    model_conf: dict
    columns: slice
    layer: int | None = None  # the hidden state, for a single layer of a layered trunk


def layer_choices(plan: FinetunePlan, trunk: torch.nn.Module) -> list[LayerChoice]:
    """The candidates of ``layers.use`` for the trunk of the plan's model (see
    :data:`sertool.transfer.plan.DEFAULTS`); one, except for ``best`` (every hidden state)."""
    conf = dict(plan.model_conf)
    if plan.conf["head"]["kind"] != "fc":
        conf["head"] = plan.conf["head"]["kind"]
    use, everything = plan.layer_use, slice(None)
    if use == "model":
        return [LayerChoice("model", conf, everything)]
    n_states, width = int(trunk.n_hidden_states), 2 * int(trunk.encoder.d_model)
    if use in ("weighted", "concat"):
        return [LayerChoice(use, {**conf, "pool_layers": "all", "layer_mix": use}, everything)]
    wanted = range(n_states) if use == "best" else [int(plan.conf["layers"]["index"])]
    choices = []
    for index in wanted:  # in range: the plan checked it
        layer = index % n_states
        choices.append(LayerChoice(f"layer {layer}", {**conf, "layer": layer},
                                   slice(layer * width, (layer + 1) * width), layer))
    return choices


def _frozen_fold(plan: FinetunePlan, name: str, split: HeldoutSplit, test_utts: list[str],
                 fold_dir: Path):
    """Paper default: new FC layers (or the linear head) on the frozen trunk's stored pooled
    statistics; the layer(s), the epoch (or count) or the regularisation chosen on the
    training speakers, by the one selection rule (sertool.metrics.best_epoch)."""
    embeddings = plan.embeddings.vectors  # read once per process, for all its folds
    index = {c: i for i, c in enumerate(plan.classes)}
    copies, conf = plan.copies, plan.conf
    linear = conf["head"]["kind"] == "linear"
    init, _ = load_model(plan.init, "cpu")
    seed = _seed_for(plan, name)

    def vectors(utts: list[str], with_copies: bool, columns: slice
                ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = keys_of(utts, copies if with_copies else 0)
        return (torch.as_tensor(np.stack([embeddings[k][columns] for k in keys])),
                torch.as_tensor([index[plan.utt2label[utt_of(k)]] for k in keys]))

    def fit(choice: LayerChoice, train: list[str], valid: list[str], desc: str, *,
            epochs: int | None = None, c: float | None = None):
        """(fold model of ``choice`` with a head fitted on ``train``, held-out rows: one per
        epoch of the FC head (its best epoch's weights kept), or one per C of the linear
        head (the last C's weights kept))."""
        model = init
        if choice.model_conf != init.model_conf:  # the same trunk, reading other layers
            model = build_model(choice.model_conf, 0, plan.feat_dim)
            model.trunk.load_state_dict(init.trunk.state_dict())
        torch.manual_seed(seed)  # the same fresh head for every inner fold and the final one
        model.replace_head(len(plan.classes))
        model.eval()
        x_train, y_train = vectors(train, True, choice.columns)
        x_valid, y_valid = vectors(valid, False, choice.columns) if valid else (None, None)
        if not linear:
            head_conf = conf["head"] if epochs is None else {**conf["head"], "epochs": epochs}
            result = train_head(model.head, x_train, y_train, x_valid, y_valid, head_conf,
                                n_classes=len(plan.classes), seed=seed,
                                progress=plan.progress, desc=desc,
                                keep="best" if valid else "last")
            return model, result.history
        rows = []
        for i, strength in enumerate(conf["head"]["linear_c"] if c is None else [c]):
            fit_linear(model.head, x_train, y_train, float(strength),
                       class_weights=str(conf["head"]["class_weights"]))
            if valid:
                rows.append({"epoch": i + 1, "c": float(strength),
                             **heldout_scores(model.head, x_valid, y_valid,
                                              len(plan.classes))})
        return model, rows

    log: dict = {"n_train_vectors": len(split.train) * (1 + copies),
                 "n_heldout": len(split.heldout)}
    inner = (inner_speaker_folds(split.train, plan.utt2spk, k=int(conf["inner_folds"]),
                                 seed=seed) if split.method == "inner_cv" else [])
    tried = []  # per layer choice: (its best row, the choice, its rows, its model or None)
    for choice in layer_choices(plan, init.trunk):
        desc = f"fold {name}" + ("" if choice.label == "model" else f" {choice.label}")
        if inner:
            runs = [fit(choice, tr, va, f"{desc} inner {i + 1}/{len(inner)}")[1]
                    for i, (tr, va) in enumerate(inner)]
            rows = [{"epoch": e + 1, **({"c": runs[0][e]["c"]} if linear else {}),
                     **{key: float(np.mean([r[e][key] for r in runs]))
                        for key in ("valid_ua", "valid_loss")}}
                    for e in range(len(runs[0]))]
            model = None  # trained again on every training speaker once chosen
        else:
            model, rows = fit(choice, split.train, split.heldout, desc)
        tried.append((best_epoch(rows), choice, rows, model))
    # the one selection rule again, across the layer choices' best rows
    pick = best_epoch([{**row, "epoch": i + 1} for i, (row, *_) in enumerate(tried)])
    row, choice, rows, model = tried[int(pick["epoch"]) - 1]
    best = dict(row)
    if linear:  # refitted with the chosen C on every training utterance of the fold
        model, _ = fit(choice, split.train + split.heldout, [], f"fold {name}", c=row["c"])
        del best["epoch"]
    history = rows
    if not linear and model is None:  # inner_cv: the chosen epoch count, every training speaker
        model, history = fit(choice, split.train, [], f"fold {name}", epochs=int(row["epoch"]))
    if inner:
        best["selection"] = "inner_cv"
        log.update(inner_groups=[sorted({plan.utt2spk[u] for u in va}) for _, va in inner],
                   inner_mean_ua=[r["valid_ua"] for r in rows])
        if not linear:
            log["chosen_epochs"] = int(row["epoch"])
    if choice.layer is not None:
        best["layer"] = choice.layer
    if len(tried) > 1:
        log["layers_tried"] = {ch.label: r for r, ch, *_ in tried}
    if not linear:
        log["best_epoch"] = int(row["epoch"])
    log.update(best=best, history=history, head=conf["head"]["kind"], layers=choice.label)
    mix = next((m for m in model.head if isinstance(m, LayerMix)), None)
    if mix is not None:
        log["layer_weights"] = mix.layer_weights()
    atomic_write_json(fold_dir / "train_log.json", log)
    model.eval()
    probs = np.zeros((0, len(plan.classes)))
    if test_utts:  # a cross-corpus run's test corpus has embeddings of its own
        stored = embeddings if plan.test_embeddings is None else plan.test_embeddings.vectors
        x_test = torch.as_tensor(np.stack([stored[u][choice.columns] for u in test_utts]))
        with torch.no_grad():
            probs = torch.softmax(model.head_forward(x_test), dim=-1).numpy()
    return model, best, probs


def _trainer_fold(plan: FinetunePlan, name: str, split: HeldoutSplit, test_utts: list[str],
                  fold_dir: Path):
    """``--unfreeze``, ``--init none`` and the 1D-CNN: the whole network through
    sertool.nnet.trainer (chunked training, SpecAugment on the fly; the trainer keeps the epoch
    with the best held-out UA on whole segments)."""
    conf = dict(plan.train_conf)
    conf["seed"] = int(plan.conf["seed"])
    conf["augment"] = dict(plan.conf["augment"])
    conf["train_trunk"] = True
    if plan.mode is Mode.UNFREEZE:
        conf["model"] = {}  # the speaker model's architecture
        conf["trunk_lr_factor"] = float(plan.conf["unfreeze"]["trunk_lr_factor"])
    else:
        conf["model"] = dict(plan.model_conf)
        conf["trunk_lr_factor"] = 1.0
    result = train(plan.features, plan.data_dir, fold_dir / "train", conf, task="emotion",
                   train_utts=split.train, valid_utts=split.heldout, init_model=plan.init,
                   device=plan.device, progress=plan.progress, utt2label=plan.utt2label,
                   desc=f"fold {name}")
    model, meta = load_model(result.best_model, plan.device)
    # the trainer orders its outputs by the (sorted) labels of the fold's training list
    if list(meta["labels"]) != plan.classes:
        raise FinetuneError(f"fold {name}: the training list has labels {meta['labels']}, "
                            f"the experiment {plan.classes}: every class must be trained")
    probs = np.zeros((len(test_utts), len(plan.classes)))
    features = plan.features if plan.cross is None else plan.cross.test_features
    for row, utt in enumerate(test_utts):
        feats = load_feats(features.feats[utt], utt)  # finite, or the utterance named
        probs[row] = class_probabilities(model, feats, plan.device)
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

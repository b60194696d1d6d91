"""One trainer for the speaker and the emotion task: ``sertool train``.

Paper section 4.2: random T-frame chunks (T per batch from {150, 200, 250, 300}), SGD with
momentum 0.9, LR 1e-2, batch 32, cross-entropy, LR constant for 8 epochs then halved every
other epoch; optional SpecAugment (policy, original + ``copies`` augmented versions).

Outputs in EXP_DIR: config.json (the resolved configuration; a directory made with another
one is refused), model_<E>.pt after every epoch, final.pt (copy of the last), train_log.csv,
curves.png. A held-out set is evaluated on whole segments after every epoch; the best model
is the epoch with the best held-out UA for emotion (sertool.metrics.best_epoch, as for the
frozen-trunk head) and with the best accuracy for speakers (as before: a speaker model is used
for its trunk, and UA over thousands of speakers with a few held-out segments each is noise).

Resume: a rerun continues from the newest checkpoint. Besides the per-epoch checkpoints,
``partial.pt`` is written every ``checkpoint_every_steps`` optimizer steps with the position in
the epoch (batches done) and all RNG states. Batches are a pure function of (seed, epoch,
batch index) (sertool.nnet.data), so a run killed mid-epoch resumes at the next batch and gives
exactly the result of an uninterrupted run on CPU (tested).

The epochs themselves run in the one training loop (sertool.nnet.loop.fit); this module sets
up the chunked data, the model, DDP, checkpoints and resume around it.

One process needs no distributed set-up. Under ``torchrun`` (any number of processes, one
included, so ``--nproc_per_node=1`` checks the nccl set-up on a single GPU) or whenever
WORLD_SIZE > 1 the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA),
every rank reads its own share of each epoch's permutation, and only rank 0 writes files.

``amp = "bf16"`` runs the training steps' forward pass and loss under ``torch.autocast`` with
bfloat16 (no gradient scaler needed); held-out evaluation stays in float32. It is refused
off CUDA: CPU autocast would change the numbers (and on most CPUs the speed for the worse),
and a silent no-op would record a bf16 run in config.json that was trained in float32. The
default is "none" until bf16 is shown to give the same accuracy on the demo.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from sertool.config import SEED_RANGE, ConfigError, load_config, shipped_conf
from sertool.datadir import read_table
from sertool.errors import SertoolError
from sertool.faults import kill_point
from sertool.folds import speaker_heldout
from sertool.frontend.featdir import FeatDir
from sertool.io_utils import atomic_replace_file, atomic_write_json, output_errors
from sertool.jobs import check_identity
from sertool.metrics import (
    SELECTION_METRIC,
    best_epoch,
    confusion_matrix,
    unweighted_accuracy,
    weighted_accuracy,
)
from sertool.models import (
    ModelConfigError,
    build_model,
    every_model_key,
    load_model_conf,
    resolve_model_conf,
)
from sertool.nnet.balance import (
    CLASS_WEIGHTS,
    SAMPLERS,
    balanced_probabilities,
    check_sampler,
    loss_weights,
)
from sertool.nnet.balance import DEFAULTS as BALANCE_DEFAULTS
from sertool.nnet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_into,
    save_checkpoint,
    set_rng_state,
)
from sertool.nnet.data import (
    ChunkBatchSampler,
    ChunkDataset,
    Item,
    SegmentDataset,
    chunk_loader,
    expand_copies,
)
from sertool.nnet.device import resolve_device
from sertool.nnet.log import log_to_file, write_history
from sertool.nnet.loop import EpochBatches, check_finite_weights, fit, row_text
from sertool.nnet.schedule import paper_scheduler
from sertool.nnet.specaugment import SpecAugment
from sertool.progress import write_line
from sertool.threads import capped

DEFAULTS: dict = {
    "seed": 0,
    "epochs": 12,
    "batch_size": 32,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "lr_constant_epochs": 8,     # LR constant for the first 8 epochs ...
    "lr_halve_every": 2,         # ... then halved every other epoch
    "chunk_frames": [150, 200, 250, 300],
    "heldout_fraction": 0.1,     # speaker task: per-speaker held-out share
    "heldout_min_frames": 100,   # speaker with one utterance: at least this many held-out frames
    "train_trunk": True,         # false: trunk frozen (eval mode), FC layers only
    "trunk_lr_factor": 1.0,      # trunk LR = lr * factor (fine-tuning a pretrained trunk)
    "num_workers": 2,
    "checkpoint_every_steps": 200,
    "keep_checkpoints": 0,       # 0: keep every model_<E>.pt; N: the newest N
    "model": {},                 # model configuration (sertool.models); {}: the init model's
    "augment": {"policy": "none", "copies": 2},
    "amp": "none",               # "bf16": autocast the training steps (CUDA only)
    # unbalanced classes (sertool.nnet.balance, from the training items only): "balanced"
    # weights the cross-entropy by n / (n_classes * n_c); sampler "balanced" draws each
    # epoch's items with class-equal probability instead of a permutation
    "class_weights": "none",
    "sampler": "shuffle",
}
# added after runs were made: left out of the identity at these values, so those runs resume
LATER_DEFAULTS = {"amp": "none", **BALANCE_DEFAULTS}
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16}
LIMITS = {"seed": SEED_RANGE,
          "epochs": (1, None), "batch_size": (1, None), "lr": (1e-12, None),
          "momentum": (0.0, 1.0), "weight_decay": (0.0, None), "lr_constant_epochs": (0, None),
          "lr_halve_every": (1, None), "chunk_frames": (1, None), "heldout_fraction": (0.0, 0.9),
          "heldout_min_frames": (1, None), "trunk_lr_factor": (0.0, None),
          "num_workers": (0, None), "checkpoint_every_steps": (0, None),
          "keep_checkpoints": (0, None), "augment.copies": (0, None)}
log = logging.getLogger("sertool.train")


class TrainError(SertoolError, RuntimeError):
    pass


@dataclass
class TrainResult:
    exp_dir: Path
    final_model: Path
    best_model: Path
    best: dict
    history: list[dict] = field(default_factory=list)
    resumed_from: str | None = None
    labels: list[str] = field(default_factory=list)
    selected_on: str = "valid_acc"  # the held-out metric of the best epoch (selection_metric)

    def summary(self) -> str:
        value = self.best.get(self.selected_on, float("nan"))
        name = {"valid_ua": "UA", "valid_acc": "accuracy"}[self.selected_on]
        return (f"{self.exp_dir}: {len(self.history)} epochs, {len(self.labels)} classes; "
                f"best held-out {name} {value:.3f} at epoch {self.best['epoch']}; "
                f"final model {self.final_model}")


def load_train_conf(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
                    ) -> dict:
    """Trainer configuration: DEFAULTS, then the file (default conf/train_speaker.toml), then
    ``k=v`` overrides. The ``model`` table is checked by sertool.models."""
    defaults = copy.deepcopy(DEFAULTS)
    # any trunk type's options (sertool.models.TRUNKS); unset ones are dropped below
    defaults["model"] = {k: None for k in every_model_key()}
    path = path if path is not None else shipped_conf("train_speaker.toml")
    conf = load_config(defaults, path, overrides, LIMITS)
    if conf["amp"] not in AMP_DTYPES:
        raise ConfigError(f"amp = {conf['amp']!r} (from {path} or --set) is not one of "
                          f"{', '.join(AMP_DTYPES)}")
    for key, known in (("class_weights", CLASS_WEIGHTS), ("sampler", SAMPLERS)):
        if conf[key] not in known:
            raise ConfigError(f"{key} = {conf[key]!r} (from {path} or --set) is not one of "
                              f"{', '.join(known)}")
    conf["model"] = {k: v for k, v in conf["model"].items() if v is not None}
    if conf["model"]:
        try:
            conf["model"] = resolve_model_conf(conf["model"])
        except ModelConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
    return conf


def resolve_train_configs(conf_path: str | os.PathLike | None,
                          model_conf_path: str | os.PathLike | None,
                          overrides: Sequence[str] = (),
                          init_model: str | os.PathLike | None = None) -> dict:
    """The trainer configuration of ``sertool train``: ``--set model.KEY=V`` goes to the model
    configuration, anything else to the trainer's. Without ``--model-conf`` the network is the
    trainer file's ``model`` table, else the init model's, else conf/model_resnet34.toml."""
    model_sets = [o[len("model."):] for o in overrides if o.startswith("model.")]
    conf = load_train_conf(conf_path, [o for o in overrides if not o.startswith("model.")])
    if model_conf_path is not None or model_sets or (not conf["model"] and init_model is None):
        conf["model"] = load_model_conf(model_conf_path, model_sets)
    return conf


# ----------------------------------------------------------------------------- set-up


def amp_dtype(amp: str, device: str) -> torch.dtype | None:
    """The autocast dtype of the ``amp`` option on ``device``; bf16 off CUDA is refused."""
    if amp not in AMP_DTYPES:
        raise TrainError(f"amp = {amp!r} is not one of {', '.join(AMP_DTYPES)}")
    if AMP_DTYPES[amp] is not None and not device.startswith("cuda"):
        raise TrainError(f"amp = {amp!r} needs a CUDA device (training on {device}); use "
                         "amp = \"none\" on a CPU")
    return AMP_DTYPES[amp]


def _labels_of(data_dir: Path, task: str) -> dict[str, str]:
    name = {"speaker": "utt2spk", "emotion": "utt2emo"}.get(task)
    if name is None:
        raise TrainError(f"unknown task {task!r} (speaker or emotion)")
    path = data_dir / name
    if not path.is_file():
        raise TrainError(f"{path}: not found (task {task} needs {name})")
    return read_table(path)


def _items(feat_dir: str | os.PathLike | FeatDir, data_dir: Path, conf: Mapping, task: str,
           train_utts: Sequence[str] | None, valid_utts: Sequence[str] | None,
           utt2label: Mapping[str, str] | None = None):
    features = FeatDir.open(feat_dir)
    feats = dict(features.feats)  # the training copies are added below
    utt2label = dict(utt2label) if utt2label is not None else _labels_of(data_dir, task)
    pool = list(train_utts) if train_utts is not None else sorted(utt2label)
    missing = features.missing(pool + list(valid_utts or []))
    if missing:
        raise TrainError(f"{features.path / 'feats.scp'}: no features for {len(missing)} "
                         f"utterance(s), e.g. {missing[0]}")
    unlabelled = [u for u in pool + list(valid_utts or []) if u not in utt2label]
    if unlabelled:
        raise TrainError(f"{data_dir}: utterance {unlabelled[0]} has no {task} label")
    nframes = features.num_frames(pool + list(valid_utts or []))
    if valid_utts is not None:
        train = [(u, 0, nframes[u]) for u in pool]
        held = [(u, 0, nframes[u]) for u in valid_utts]
    elif task == "speaker":
        utt2spk = read_table(data_dir / "utt2spk")
        train, held = speaker_heldout(pool, utt2spk, nframes, float(conf["heldout_fraction"]),
                                      int(conf["seed"]), int(conf["heldout_min_frames"]))
    else:
        train, held = [(u, 0, nframes[u]) for u in pool], []
    labels = sorted({utt2label[u] for u, _, _ in train})
    index = {lab: i for i, lab in enumerate(labels)}
    unseen = sorted({utt2label[u] for u, _, _ in held} - set(labels))
    if unseen:
        raise TrainError(f"held-out labels {unseen} do not occur in the training set")
    # Waveform-augmented copies (extract-feats --wave-augment) of the training utterances
    # only. A region cut out of an utterance (single-utterance speakers' held-out split) gets
    # none: its copies would hold the held-out stretch too.
    source = {u: u for u, _, _ in train + held}
    copies = []
    wave_copies = features.wave_copies()
    for u, start, end in train:
        if start == 0 and end == nframes[u]:
            for key, rx, frames in wave_copies.get(u, []):
                feats[key], source[key] = rx, u
                copies.append((key, 0, frames))
    mk = lambda rs: [Item(u, index[utt2label[source[u]]], s, e) for u, s, e in rs]  # noqa: E731
    return feats, labels, mk(train) + mk(copies), mk(held)


def _fingerprint(conf: Mapping, task: str, feat_dir: Path, train_items, valid_items,
                 init_model) -> dict:
    digest = hashlib.sha256(json.dumps(
        [[i.utt, i.label, i.start, i.end] for i in train_items]
        + [["valid"]] + [[i.utt, i.label, i.start, i.end] for i in valid_items]).encode())
    return {"task": task, "conf": dict(conf), "feat_dir": str(feat_dir.resolve()),
            "init_model": str(init_model) if init_model else None,
            "data_sha256": digest.hexdigest()}


# What a rerun may change and still resume the same run: more (or fewer) epochs, and how the
# work is done (loader processes, checkpoint cadence and retention) - not what is learned.
MAY_CHANGE = ("epochs", "num_workers", "checkpoint_every_steps", "keep_checkpoints")


def _identity(config: Mapping) -> dict:
    """The part of config.json that makes the run what it is (without :data:`MAY_CHANGE`)."""
    ident = json.loads(json.dumps(config))
    for key in MAY_CHANGE:
        ident["conf"].pop(key, None)
    for key, default in LATER_DEFAULTS.items():
        if ident["conf"].get(key) == default:
            del ident["conf"][key]  # added later: runs made before it resume as they were
    return ident


def _check_exp_dir(exp_dir: Path, config: dict) -> None:
    path = exp_dir / "config.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        check_identity(exp_dir, path, _identity(config), previous=_identity(old),
                       hint="a rerun may change only " + ", ".join(MAY_CHANGE) + "; use a new "
                       "directory or remove this one", error=TrainError)


def _newest_checkpoint(exp_dir: Path) -> Path | None:
    """model_<E>.pt with the highest E, or partial.pt when it is further on."""
    epochs = sorted((int(p.stem.split("_")[1]), p) for p in exp_dir.glob("model_*.pt")
                    if p.stem.split("_")[1].isdigit())
    best = epochs[-1][1] if epochs else None
    partial = exp_dir / "partial.pt"
    if partial.is_file():
        try:
            ckpt = load_checkpoint(partial)
        except CheckpointError:
            return best
        if not epochs or ckpt["epoch"] > epochs[-1][0]:
            return partial
    return best


# ----------------------------------------------------------------------------- training


def train(feat_dir: str | os.PathLike | FeatDir, data_dir: str | os.PathLike,
          exp_dir: str | os.PathLike, conf: Mapping, task: str = "speaker",
          train_utts: Sequence[str] | None = None, valid_utts: Sequence[str] | None = None,
          init_model: str | os.PathLike | None = None, device: str | None = None,
          progress: bool = True, utt2label: Mapping[str, str] | None = None,
          desc: str = "") -> TrainResult:
    """Train (or resume training) a model; see the module docstring.

    ``utt2label``: the labels already read and mapped to class codes (``finetune --labels``),
    instead of DATA_DIR's utt2spk / utt2emo. ``desc`` names the run in its progress and epoch
    lines (finetune: the fold).
    """
    data_dir, exp_dir = Path(data_dir), Path(exp_dir)
    full = copy.deepcopy(DEFAULTS)
    full.update(copy.deepcopy(dict(conf)))
    conf = full

    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # set by torchrun
    device = resolve_device(device)
    autocast = amp_dtype(conf["amp"], device)
    rank = 0
    if distributed:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        rank = dist.get_rank()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    is_main = rank == 0

    features = FeatDir.open(feat_dir)
    feat_dir = features.path
    feats, labels, train_items, valid_items = _items(features, data_dir, conf, task,
                                                     train_utts, valid_utts, utt2label)
    if not train_items:
        raise TrainError(f"{data_dir}: no training utterances")
    feat_dim = features.dim

    init_meta = load_checkpoint(init_model) if init_model is not None else None
    model_conf = conf["model"] or (init_meta["model_conf"] if init_meta else None)
    conf["model"] = resolve_model_conf(model_conf or load_model_conf())
    if init_meta is not None and int(init_meta["feat_dim"]) != feat_dim:
        raise TrainError(f"{init_model}: model made for {init_meta['feat_dim']}-dim features, "
                         f"{feat_dir} has {feat_dim}")
    augment = SpecAugment.from_policy(conf["augment"]["policy"])
    copies = 0 if augment.is_identity else int(conf["augment"]["copies"])
    train_items = expand_copies(train_items, copies)

    config = _fingerprint(conf, task, feat_dir, train_items, valid_items, init_model)
    config["labels"] = labels
    if is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        _check_exp_dir(exp_dir, config)
        atomic_write_json(exp_dir / "config.json", config)
    fingerprint = hashlib.sha256(json.dumps(_identity(config), sort_keys=True).encode()
                                 ).hexdigest()

    seed = int(conf["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)  # its state is stored in every checkpoint: the same run, the same bytes
    model = build_model(conf["model"], len(labels), feat_dim)
    if init_model is not None:
        load_state_into(init_model, model, trunk_only=True)  # new FC layers (transfer)
    model.to(device)

    train_trunk = bool(conf["train_trunk"])
    for p in model.trunk.parameters():
        p.requires_grad_(train_trunk)
    groups = [{"params": list(model.head.parameters()), "lr": float(conf["lr"])}]
    if train_trunk:
        groups.insert(0, {"params": list(model.trunk.parameters()),
                          "lr": float(conf["lr"]) * float(conf["trunk_lr_factor"])})
    optimizer = torch.optim.SGD(groups, lr=float(conf["lr"]), momentum=float(conf["momentum"]),
                                weight_decay=float(conf["weight_decay"]))
    scheduler = paper_scheduler(optimizer, int(conf["lr_constant_epochs"]),
                                int(conf["lr_halve_every"]))

    start_epoch, skip, skip_sums, history, resumed_from = 1, 0, None, [], None
    newest = _newest_checkpoint(exp_dir)
    if newest is not None:
        ckpt = load_checkpoint(newest, device)
        if ckpt.get("fingerprint") != fingerprint:
            raise TrainError(f"{newest}: checkpoint of another configuration")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history = [dict(h) for h in ckpt["extra"].get("history", [])]
        if newest.name == "partial.pt":
            start_epoch, skip = int(ckpt["epoch"]), int(ckpt["step"])
            skip_sums = ckpt["extra"].get("epoch_sums", [0.0, 0.0, 0.0])
        else:
            start_epoch = int(ckpt["epoch"]) + 1
            if is_main:  # killed right after saving model_N.pt: finish what followed it
                _after_epoch_checkpoint(exp_dir, int(conf["keep_checkpoints"]), history,
                                        selection_metric(task, history))
        set_rng_state(ckpt["rng"])
        resumed_from = str(newest)

    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)

    dataset = ChunkDataset(train_items, feats, augment if copies else None)
    meta = dict(labels=labels, fingerprint=fingerprint)
    epochs = int(conf["epochs"])
    every = int(conf["checkpoint_every_steps"])
    n_batches = 0
    item_labels = np.array([it.label for it in train_items], dtype=np.int64)
    weights = loss_weights(str(conf["class_weights"]), item_labels, len(labels))
    class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    check_sampler(str(conf["sampler"]))
    draw = balanced_probabilities(item_labels) if conf["sampler"] == "balanced" else None

    def batches(epoch: int) -> EpochBatches:
        nonlocal skip, skip_sums, n_batches
        sampler = ChunkBatchSampler(len(dataset), int(conf["batch_size"]),
                                    conf["chunk_frames"], seed, epoch, rank, world, skip,
                                    draw=draw)
        n_batches = sampler.batches_per_epoch()
        if n_batches == 0:
            raise TrainError(f"{len(dataset)} training items give no full batch of "
                             f"{conf['batch_size']} per process")
        workers = int(conf["num_workers"])
        loader = chunk_loader(dataset, sampler, capped(workers, f"num_workers {workers}"),
                              device, seed)
        out = EpochBatches(loader, n_batches, skip, skip_sums)
        skip, skip_sums = 0, None  # only the first epoch of a resumed run starts mid-way
        return out

    def train_mode() -> None:
        model.train()
        if not train_trunk:
            model.trunk.eval()  # frozen: batch-norm statistics kept

    def on_step(epoch: int, step: int, sums: torch.Tensor) -> None:
        if every and step % every == 0 and step < n_batches and is_main:
            check_finite_weights(model, optimizer, desc=desc, epoch=epoch, step=step)
            save_checkpoint(exp_dir / "partial.pt", model, optimizer, scheduler, epoch,
                            {"history": history, "epoch_sums": sums.tolist()},
                            step=step, **meta)
        kill_point("train:after-step")  # mid-epoch: resumes from partial.pt

    def reduce(sums: torch.Tensor) -> None:
        """Sum the epoch statistics over processes, in place; nccl reduces GPU tensors only."""
        total = sums.to(device)
        dist.all_reduce(total)
        sums.copy_(total.cpu())

    def evaluate_held_out() -> dict:
        return evaluate(model, valid_items, feats, device, len(labels)) if is_main else {}

    def on_epoch(row: dict, rows: list[dict]) -> None:
        if is_main:
            save_checkpoint(exp_dir / f"model_{row['epoch']}.pt", model, optimizer, scheduler,
                            row["epoch"], {"history": rows}, **meta)
            kill_point("train:after-epoch-checkpoint")  # model_N.pt newer than train_log.csv
            _after_epoch_checkpoint(exp_dir, int(conf["keep_checkpoints"]), rows,
                                    selection_metric(task, rows))
            if progress:
                write_line(row_text(row, epochs, desc))
        if distributed:
            dist.barrier()

    with log_to_file(exp_dir / "train.log", enabled=is_main):
        if distributed:
            log.info("DDP: %d process(es), backend %s, device %s", world, dist.get_backend(),
                     device)
        if autocast is not None:
            log.info("amp: training steps under torch.autocast(%s)", autocast)
        fit(net, optimizer, scheduler, epochs=epochs, batches=batches,
            evaluate=evaluate_held_out, device=device, start_epoch=start_epoch,
            history=history, train_mode=train_mode,
            reduce=reduce if distributed else None, on_step=on_step,
            on_epoch=on_epoch, progress=progress and is_main, desc=desc,
            autocast=autocast, class_weight=class_weight)
    return _finish(exp_dir, history, labels, resumed_from, is_main,
                   selection_metric(task, history))


def evaluate(model, items, feats, device, n_classes: int) -> dict:
    """Held-out loss, accuracy (WA) and UA (sertool.metrics) on whole segments (batch 1, eval
    mode); NaN without items."""
    if not items:
        return {"valid_loss": float("nan"), "valid_acc": float("nan"),
                "valid_ua": float("nan")}
    was = model.training
    model.eval()
    loss, labels, decisions = 0.0, [], []
    with torch.inference_mode():
        for x, y in SegmentDataset(items, feats):
            logits = model(x.unsqueeze(0).to(device))
            target = torch.tensor([y], device=device)
            loss += float(torch.nn.functional.cross_entropy(logits, target))
            labels.append(y)
            decisions.append(int(logits.argmax(1).item()))
    model.train(was)
    cm = confusion_matrix(labels, decisions, n_classes)
    return {"valid_loss": loss / len(items), "valid_acc": weighted_accuracy(cm),
            "valid_ua": unweighted_accuracy(cm)}


def selection_metric(task: str, history: Sequence[Mapping]) -> str:
    """The held-out metric the best epoch is chosen on: UA for emotion (as every emotion model
    of sertool), accuracy for speakers. A run resumed from epochs logged before UA was
    (rows without valid_ua) keeps choosing on accuracy, so that all its epochs compare."""
    if task == "emotion" and all("valid_ua" in row for row in history):
        return SELECTION_METRIC
    return "valid_acc"


def _after_epoch_checkpoint(exp_dir: Path, keep: int, history: list[dict], metric: str) -> None:
    """What follows an epoch's model_N.pt: the older partial.pt goes, old checkpoints but the
    best (on ``metric``) are pruned, train_log.csv and curves.png catch up."""
    (exp_dir / "partial.pt").unlink(missing_ok=True)
    _prune(exp_dir, keep, history, metric)
    write_history(exp_dir, history)


def _prune(exp_dir: Path, keep: int, history: list[dict], metric: str) -> None:
    if keep <= 0:
        return
    best = _best_row(history, metric)["epoch"]
    epochs = sorted(int(p.stem.split("_")[1]) for p in exp_dir.glob("model_*.pt")
                    if p.stem.split("_")[1].isdigit())
    for e in epochs[:-keep]:
        if e != best:
            (exp_dir / f"model_{e}.pt").unlink(missing_ok=True)


def _best_row(history: list[dict], metric: str) -> dict:
    """The selected epoch's row; the last epoch's without a held-out set."""
    return dict(best_epoch(history, metric) or history[-1])


def _finish(exp_dir: Path, history: list[dict], labels: list[str], resumed_from: str | None,
            is_main: bool, metric: str) -> TrainResult:
    last = history[-1]["epoch"]
    final = exp_dir / "final.pt"
    if is_main:
        kill_point("train:before-final")  # every epoch done, no final.pt
        tmp = exp_dir / ".final.pt.tmp"
        with output_errors(final, tmp):
            shutil.copyfile(exp_dir / f"model_{last}.pt", tmp)
            atomic_replace_file(tmp, final)
    best = _best_row(history, metric)
    return TrainResult(exp_dir, final, exp_dir / f"model_{best['epoch']}.pt", best,
                       history, resumed_from, labels, metric)

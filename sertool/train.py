"""One trainer for the speaker and the emotion task: ``sertool train``.

Paper section 4.2: random T-frame chunks (T per batch from {150, 200, 250, 300}), SGD with
momentum 0.9, LR 1e-2, batch 32, cross-entropy, LR constant for 8 epochs then halved every
other epoch; optional SpecAugment (policy, original + ``copies`` augmented versions).

Outputs in EXP_DIR: config.json (the resolved configuration; a directory made with another
one is refused), model_<E>.pt after every epoch, final.pt (copy of the last), train_log.csv,
curves.png. A held-out set is evaluated on whole segments after every epoch.

Resume: a rerun continues from the newest checkpoint. Besides the per-epoch checkpoints,
``partial.pt`` is written every ``checkpoint_every_steps`` optimizer steps with the position in
the epoch (batches done) and all RNG states. Batches are a pure function of (seed, epoch,
batch index) (sertool.data), so a run killed mid-epoch resumes at the next batch and gives
exactly the result of an uninterrupted run on CPU (tested).

One process needs no distributed set-up. Under ``torchrun`` (WORLD_SIZE > 1) the model is
wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA), every rank reads its own share
of each epoch's permutation, and only rank 0 writes files.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sertool.errors import SertoolError

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
}
TEST_KILL_ENV = "SERTOOL_TEST_KILL_AT_STEP"  # tests: SIGKILL self after this global step


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


def load_train_conf(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
                    ) -> dict:
    """Trainer configuration: DEFAULTS, then the file (default conf/train_speaker.toml), then
    ``k=v`` overrides. The ``model`` table is checked by sertool.models."""
    from sertool.config import ConfigError, load_config, shipped_conf
    from sertool.models import ModelConfigError, resolve_model_conf

    defaults = copy.deepcopy(DEFAULTS)
    defaults["model"] = {k: None for k in ("type", "layers", "channels", "pooling",
                                           "fixed_frames", "embed_dim", "fc_layers",
                                           "kernel", "dropout", "reduction",
                                           "spatial_kernel", "dense")}
    path = path if path is not None else shipped_conf("train_speaker.toml")
    conf = load_config(defaults, path, overrides)
    conf["model"] = {k: v for k, v in conf["model"].items() if v is not None}
    if conf["model"]:
        try:
            conf["model"] = resolve_model_conf(conf["model"])
        except ModelConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
    return conf


def lr_factor(epoch: int, constant: int, halve_every: int) -> float:
    """LR multiplier of (1-based) ``epoch``: 1 for the first ``constant`` epochs, then halved
    every ``halve_every`` epochs."""
    extra = max(0, epoch - constant)
    return 0.5 ** math.ceil(extra / halve_every)


# ----------------------------------------------------------------------------- set-up


def _labels_of(data_dir: Path, task: str) -> dict[str, str]:
    from sertool.datadir import read_table

    name = {"speaker": "utt2spk", "emotion": "utt2emo"}.get(task)
    if name is None:
        raise TrainError(f"unknown task {task!r} (speaker or emotion)")
    path = data_dir / name
    if not path.is_file():
        raise TrainError(f"{path}: not found (task {task} needs {name})")
    return read_table(path)


def _items(feat_dir: Path, data_dir: Path, conf: Mapping, task: str,
           train_utts: Sequence[str] | None, valid_utts: Sequence[str] | None):
    from sertool.data import (
        Item,
        read_feats_scp,
        read_num_frames,
        read_wave_copies,
        speaker_heldout,
    )
    from sertool.datadir import read_table

    feats = read_feats_scp(feat_dir)
    utt2label = _labels_of(data_dir, task)
    pool = list(train_utts) if train_utts is not None else sorted(utt2label)
    missing = [u for u in pool + list(valid_utts or []) if u not in feats]
    if missing:
        raise TrainError(f"{feat_dir / 'feats.scp'}: no features for {len(missing)} "
                         f"utterance(s), e.g. {missing[0]}")
    unlabelled = [u for u in pool + list(valid_utts or []) if u not in utt2label]
    if unlabelled:
        raise TrainError(f"{data_dir}: utterance {unlabelled[0]} has no {task} label")
    nframes = read_num_frames(feat_dir, {u: feats[u] for u in pool + list(valid_utts or [])})
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
    wave_copies = read_wave_copies(feat_dir)
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


def _check_exp_dir(exp_dir: Path, config: dict) -> None:
    path = exp_dir / "config.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(config)):
            diff = sorted(k for k in set(old) | set(config)
                          if json.dumps(old.get(k), sort_keys=True)
                          != json.dumps(config.get(k), sort_keys=True))
            raise TrainError(f"{exp_dir}: made with another configuration (differs in "
                             f"{', '.join(diff)}); use a new directory or remove this one")


def _newest_checkpoint(exp_dir: Path) -> Path | None:
    """model_<E>.pt with the highest E, or partial.pt when it is further on."""
    from sertool.checkpoint import CheckpointError, load_checkpoint

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


def train(feat_dir: str | os.PathLike, data_dir: str | os.PathLike,
          exp_dir: str | os.PathLike, conf: Mapping, task: str = "speaker",
          train_utts: Sequence[str] | None = None, valid_utts: Sequence[str] | None = None,
          init_model: str | os.PathLike | None = None, device: str | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or resume training) a model; see the module docstring."""
    import torch
    import torch.distributed as dist

    from sertool.augment import SpecAugment
    from sertool.checkpoint import (
        load_checkpoint,
        load_state_into,
        save_checkpoint,
        set_rng_state,
    )
    from sertool.data import ChunkBatchSampler, ChunkDataset, collate, expand_copies
    from sertool.io_utils import atomic_write_json
    from sertool.models import build_model, resolve_model_conf

    feat_dir, data_dir, exp_dir = Path(feat_dir), Path(data_dir), Path(exp_dir)
    conf = copy.deepcopy(dict(conf))
    full = copy.deepcopy(DEFAULTS)
    full.update(conf)
    conf = full

    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rank = 0
    if distributed:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        rank = dist.get_rank()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    is_main = rank == 0

    feats, labels, train_items, valid_items = _items(feat_dir, data_dir, conf, task,
                                                     train_utts, valid_utts)
    if not train_items:
        raise TrainError(f"{data_dir}: no training utterances")
    feat_dim = int(np.asarray(__import__("kaldiio").load_mat(feats[train_items[0].utt])).shape[1])

    init_meta = None
    if init_model is not None:
        init_meta = load_checkpoint(init_model)
    model_conf = conf["model"] or (init_meta["model_conf"] if init_meta else None)
    if not model_conf:
        from sertool.models import load_model_conf

        model_conf = load_model_conf()
    conf["model"] = resolve_model_conf(model_conf)
    if init_meta is not None and int(init_meta["feat_dim"]) != feat_dim:
        raise TrainError(f"{init_model}: model made for {init_meta['feat_dim']}-dim features, "
                         f"{feat_dir} has {feat_dim}")
    policy = conf["augment"]["policy"]
    augment = SpecAugment.from_policy(policy)
    copies = 0 if augment.is_identity else int(conf["augment"]["copies"])
    train_items = expand_copies(train_items, copies)

    config = _fingerprint(conf, task, feat_dir, train_items, valid_items, init_model)
    config["labels"] = labels
    if is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        _check_exp_dir(exp_dir, config)
        atomic_write_json(exp_dir / "config.json", config)
    fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()

    seed = int(conf["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
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
    const, halve = int(conf["lr_constant_epochs"]), int(conf["lr_halve_every"])
    # scheduler step k (0-based) sets the LR of epoch k + 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(k + 1, const, halve))

    start_epoch, skip, history, resumed_from = 1, 0, [], None
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
        else:
            start_epoch = int(ckpt["epoch"]) + 1
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
    kill_at = int(os.environ.get(TEST_KILL_ENV, "0"))
    from tqdm import tqdm

    for epoch in range(start_epoch, epochs + 1):
        t0 = time.time()
        sampler = ChunkBatchSampler(len(dataset), int(conf["batch_size"]),
                                    conf["chunk_frames"], seed, epoch, rank, world, skip)
        n_batches = sampler.batches_per_epoch()
        if n_batches == 0:
            raise TrainError(f"{len(dataset)} training items give no full batch of "
                             f"{conf['batch_size']} per process")
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate,
            num_workers=int(conf["num_workers"]), pin_memory=device.startswith("cuda"),
            generator=torch.Generator().manual_seed(seed))
        model.train()
        if not train_trunk:
            model.trunk.eval()  # frozen: batch-norm statistics kept
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        if skip:
            sums += torch.tensor(ckpt["extra"].get("epoch_sums", [0.0, 0.0, 0.0]),
                                 dtype=torch.float64)
        bar = tqdm(loader, total=n_batches, initial=skip, desc=f"epoch {epoch}/{epochs}",
                   disable=not (progress and is_main), leave=False)
        for step, (x, y) in enumerate(bar, start=skip + 1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(),
                                  len(y)], dtype=torch.float64)
            if every and step % every == 0 and step < n_batches and is_main:
                save_checkpoint(exp_dir / "partial.pt", model, optimizer, scheduler, epoch,
                                {"history": history, "epoch_sums": sums.tolist()},
                                step=step, **meta)
            if kill_at and (epoch - 1) * n_batches + step == kill_at:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
        skip = 0
        if distributed:
            dist.all_reduce(sums)
        row = {"epoch": epoch, "lr": optimizer.param_groups[-1]["lr"],
               "train_loss": float(sums[0] / sums[2]), "train_acc": float(sums[1] / sums[2])}
        if is_main:
            row.update(evaluate(model, valid_items, feats, device))
        row["time_s"] = round(time.time() - t0, 3)
        history.append(row)
        scheduler.step()
        if is_main:
            save_checkpoint(exp_dir / f"model_{epoch}.pt", model, optimizer, scheduler, epoch,
                            {"history": history}, **meta)
            (exp_dir / "partial.pt").unlink(missing_ok=True)
            _prune(exp_dir, int(conf["keep_checkpoints"]), history)
            _write_log(exp_dir, history)
            if progress:
                tqdm.write(_row_text(row))
        if distributed:
            dist.barrier()

    result = _finish(exp_dir, history, labels, resumed_from, is_main)
    return result


def evaluate(model, items, feats, device) -> dict:
    """Held-out loss and accuracy on whole segments (batch 1, eval mode); {} without items."""
    import torch

    from sertool.data import SegmentDataset

    if not items:
        return {"valid_loss": float("nan"), "valid_acc": float("nan")}
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    with torch.inference_mode():
        for x, y in SegmentDataset(items, feats):
            logits = model(x.unsqueeze(0).to(device))
            target = torch.tensor([y], device=device)
            loss += float(torch.nn.functional.cross_entropy(logits, target))
            correct += int(logits.argmax(1).item() == y)
    model.train(was)
    return {"valid_loss": loss / len(items), "valid_acc": correct / len(items)}


def _row_text(row: Mapping) -> str:
    return (f"epoch {row['epoch']}: lr {row['lr']:.3g} train loss {row['train_loss']:.3f} "
            f"acc {row['train_acc']:.3f} | held-out loss {row['valid_loss']:.3f} "
            f"acc {row['valid_acc']:.3f} | {row['time_s']:.1f} s")


def _prune(exp_dir: Path, keep: int, history: list[dict]) -> None:
    if keep <= 0:
        return
    best = _best_row(history)["epoch"]
    epochs = sorted(int(p.stem.split("_")[1]) for p in exp_dir.glob("model_*.pt")
                    if p.stem.split("_")[1].isdigit())
    for e in epochs[:-keep]:
        if e != best:
            (exp_dir / f"model_{e}.pt").unlink(missing_ok=True)


def _best_row(history: list[dict]) -> dict:
    scored = [h for h in history if not math.isnan(h.get("valid_acc", float("nan")))]
    if not scored:
        return history[-1]
    return max(scored, key=lambda h: (h["valid_acc"], -h["valid_loss"], h["epoch"]))


def _write_log(exp_dir: Path, history: list[dict]) -> None:
    from sertool.io_utils import atomic_open

    cols = ["epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "time_s"]
    with atomic_open(exp_dir / "train_log.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=cols)
        writer.writeheader()
        for row in history:
            writer.writerow({c: row.get(c) for c in cols})
    plot_curves(history, exp_dir / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, training chunks and held-out segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, name in ((axes[0], "loss", "cross-entropy"), (axes[1], "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train (chunks)")
        ax.plot(epochs, [h[f"valid_{key}"] for h in history], "s-",
                label="held-out (whole segments)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _finish(exp_dir: Path, history: list[dict], labels: list[str], resumed_from: str | None,
            is_main: bool) -> TrainResult:
    from sertool.io_utils import atomic_replace_file

    last = history[-1]["epoch"]
    final = exp_dir / "final.pt"
    if is_main:
        tmp = exp_dir / ".final.pt.tmp"
        shutil.copyfile(exp_dir / f"model_{last}.pt", tmp)
        atomic_replace_file(tmp, final)
    best = _best_row(history)
    return TrainResult(exp_dir, final, exp_dir / f"model_{best['epoch']}.pt", dict(best),
                       history, resumed_from, labels)

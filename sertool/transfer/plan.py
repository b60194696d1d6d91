"""What ``sertool finetune`` settles before it trains: :func:`resolve` -> :class:`FinetunePlan`.

The plan reads the inputs once and refuses what cannot work before anything is written: the
folds, the labels (through the ``--labels`` map, read here once), that every class is trained
in every fold, the feature directory (through its owner, :mod:`sertool.frontend.featdir`),
the mode (:class:`Mode`, from ``--init`` and ``--unfreeze``) and its network, the
configuration identity of an existing EXP_DIR. It carries paths and configurations only (it
is pickled into every Slurm fold task); the tables it read stay in this process and a task
reads them again.
:func:`sertool.transfer.driver.run` then makes what the plan says.

This module does not import torch (a test checks): settling a finetune is fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path

from sertool.config import SEED_RANGE
from sertool.datadir import DataDirError, Fold, read_folds, read_table
from sertool.errors import SertoolError
from sertool.expdir import fold_dir
from sertool.frontend.featdir import FAILED, FEATS_SCP, FeatDir
from sertool.io_utils import ensure_writable
from sertool.jobs import check_identity
from sertool.labels import LabelMap, read_label_map, read_utt2emo
from sertool.nnet.balance import CLASS_WEIGHTS, SAMPLERS, without_defaults
from sertool.transfer.crosscorpus import FOLD as CROSS_FOLD
from sertool.transfer.crosscorpus import CrossCorpus
from sertool.transfer.crosscorpus import read_tables as read_cross_tables
from sertool.transfer.crosscorpus import settle as settle_cross
from sertool.transfer.embdir import EmbeddingDir

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
    # A trunk with several hidden layers (Whisper): which of them the head reads. "model": the
    # one the trunk's configuration pools (Whisper: the last); "one": hidden state `index`
    # (0 = the first block's input, -1 = the last); "best": each layer tried on the held-out
    # training speakers, the best kept per fold; "weighted": a learned softmax-weighted sum of
    # all of them; "concat": all of them side by side. Other trunks: "model" only.
    "layers": {"use": "model", "index": -1},
    # frozen trunk: the new FC layers trained on pooled embeddings (paper section 4.2)
    "head": {
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "lr_constant_epochs": 8,
        "lr_halve_every": 2,
        # "fc": the paper's new FC layers (trained with the settings above); "linear": one
        # linear layer on the standardised vector (multinomial logistic regression, L2
        # penalty as scikit-learn's C, chosen among linear_c on the training speakers only)
        "kind": "fc",
        "linear_c": [0.001, 0.01, 0.1, 1.0],
        # Unbalanced corpora (sertool.nnet.balance, from each fold's TRAINING part only):
        # "balanced" weights the cross-entropy of class c by n / (n_classes * n_c) (the FC
        # head and the linear head); sampler "balanced" draws each FC-head batch with
        # class-equal probability instead of a shuffle (the linear head is full-batch: none)
        "class_weights": "none",
        "sampler": "shuffle",
    },
    # --unfreeze: the trunk's learning rate is the trainer's LR times this factor
    "unfreeze": {"trunk_lr_factor": 0.1},
}


SELECTIONS = ("heldout_speakers", "inner_cv")
LAYER_USES = ("model", "one", "best", "weighted", "concat")
HEAD_KINDS = ("fc", "linear")
# options added after experiments were made with the defaults: left out of finetune.json while
# they hold their defaults, so those experiments keep their identity and resume
LATER_OPTIONS = {("layers",): DEFAULTS["layers"], ("head", "kind"): "fc",
                 ("head", "linear_c"): DEFAULTS["head"]["linear_c"],
                 ("head", "class_weights"): "none", ("head", "sampler"): "shuffle"}
LIMITS = {"seed": SEED_RANGE,
          "heldout_speakers": (0, None), "heldout_fraction": (0.0, 0.9), "inner_folds": (2, None),
          "augment.copies": (0, None), "head.epochs": (1, None), "head.batch_size": (2, None),
          "head.lr": (1e-12, None), "head.momentum": (0.0, 1.0), "head.weight_decay": (0.0, None),
          "head.lr_constant_epochs": (0, None), "head.lr_halve_every": (1, None),
          "unfreeze.trunk_lr_factor": (0.0, None), "head.linear_c": (1e-12, None),
          "layers.index": (-1001, 1000)}


IDENTITY_JSON = "finetune.json"  # EXP_DIR/finetune.json: FinetunePlan.identity


class FinetuneError(SertoolError, ValueError):
    """A problem with the inputs of ``finetune`` (the message names the file or fold)."""


class Mode(str, Enum):
    """How a fold's model is trained (equal to its value: ``Mode.FROZEN == "frozen"``)."""

    FROZEN = "frozen"  # new FC layers on the frozen trunk's stored embeddings (paper default)
    UNFREEZE = "unfreeze"  # everything fine-tuned through the trainer (trunk LR scaled)
    SCRATCH = "scratch"  # no transfer: the network trained from scratch through the trainer

    @property
    def description(self) -> str:
        return {"frozen": "transfer, trunk frozen",
                "unfreeze": "transfer, all layers fine-tuned",
                "scratch": "no transfer (trained from scratch)"}[self.value]


# ----------------------------------------------------------------------------- the plan


# what a plan read from disk: kept in this process, read again where a pickled plan lands
_READ = ("folds", "utt2label", "utt2spk")


@dataclass
class FinetunePlan:
    """Everything a finetune run needs, settled: paths and configurations, no tables."""

    features: FeatDir  # pickled as its path
    data_dir: Path
    exp_dir: Path
    mode: Mode
    init: Path | None  # the trunk's checkpoint (the random trunk's, made by run); None: scratch
    random_trunk: bool  # --init random: the frozen-trunk system on an untrained trunk
    conf: dict  # the resolved DEFAULTS
    model_conf: dict
    train_conf: dict | None  # the trainer's, for the modes that train through it
    classes: list[str]
    label_map: LabelMap
    labels_given: bool  # --labels was given (its map is part of the identity)
    feat_dim: int
    fold: str  # one fold name, or "all"
    embeddings: EmbeddingDir | None  # the frozen trunk's (made by run; pickled as its path)
    experiment: dict  # EXP_DIR/experiment.json (sertool.expdir)
    device: str = "cpu"
    nj: int = 1  # the embedding extraction's jobs
    progress: bool = True
    export_all: bool = False
    cross: CrossCorpus | None = None  # --test-data: a cross-corpus run (one fold, "cross")
    test_embeddings: EmbeddingDir | None = None  # the test corpus's (frozen trunk, cross)

    # ---- read from disk (kept in this process; a Slurm task reads them itself)

    @cached_property
    def folds(self) -> list[Fold]:
        """DATA_DIR/folds, every fold (the job of a fold is its position here); a
        cross-corpus run's one fold."""
        if self.cross is not None:
            return [self.cross.fold]
        return read_folds(self.data_dir)[0]

    @cached_property
    def utt2label(self) -> dict[str, str]:
        if self.cross is not None:
            return read_cross_tables(self.cross, self.label_map)[0]
        return read_utt2emo(self.data_dir, self.label_map)

    @cached_property
    def utt2spk(self) -> dict[str, str]:
        if self.cross is not None:
            return read_cross_tables(self.cross, self.label_map)[1]
        return read_table(self.data_dir / "utt2spk")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in _READ}

    # ---- settled from the fields

    @property
    def used(self) -> list[str]:
        """Every utterance of the folds (training and test), sorted."""
        return sorted({u for f in self.folds for u in f.train + f.test})

    @property
    def train_used(self) -> list[str]:
        """The utterances whose features are in FEAT_DIR: all of them, but a cross-corpus
        run's test corpus (its features are the test feature dir's)."""
        return list(self.cross.train) if self.cross is not None else self.used

    @property
    def copies(self) -> int:
        """Augmented copies per training utterance (0 with policy none)."""
        return 0 if self.conf["augment"]["policy"] == "none" else int(
            self.conf["augment"]["copies"])

    @property
    def layer_use(self) -> str:
        """``layers.use``: which hidden layers of the trunk the head reads."""
        return str(self.conf["layers"]["use"])

    @property
    def all_layers(self) -> bool:
        """Whether the embeddings hold every hidden layer (any use but the trunk's own)."""
        return self.layer_use != "model"

    @property
    def description(self) -> str:
        """What the run is, as finetune's summary says it (the mode's, or the baseline's)."""
        if self.model_conf.get("type") == "functionals":
            return "functionals (openSMILE, parameter-free trunk, nothing transferred)"
        return self.mode.description

    @property
    def init_text(self) -> str:
        """``init`` as experiment.json and finetune.json record it."""
        if self.init is None:
            return "none"
        if self.random_trunk:
            return f"random (untrained trunk, seed {int(self.conf['seed'])})"
        return str(self.init.resolve())

    @property
    def identity(self) -> dict:
        """EXP_DIR/finetune.json: what makes the experiment what it is (a rerun with another
        one is refused). Its keys and values stay as they were, so existing runs resume."""
        identity = {"feat_dir": str(self.features.path.resolve()),
                    "data_dir": str(self.data_dir.resolve()), "init": self.init_text,
                    "mode": self.mode.value, "conf": _identity_conf(self.conf),
                    "model_conf": self.model_conf,
                    # the trainer's later options at their defaults left out (as in its own
                    # config.json identity), so existing --unfreeze experiments resume
                    "train_conf": (None if self.train_conf is None
                                   else without_defaults(self.train_conf)),
                    "classes": self.classes,
                    # only with --labels, so experiments made before it keep their identity
                    **({"label_map": {"names": dict(self.label_map.names),
                                      "new_codes": list(self.label_map.new_codes)}}
                       if self.labels_given else {}),
                    # only cross-corpus runs have it (the others keep their identity)
                    **({"cross_corpus": self.cross.identity()} if self.cross else {})}
        return json.loads(json.dumps(identity))  # as it reads back (tuples become lists)

    @property
    def provenance(self) -> dict:
        """What every fold's model bundle says about where it came from."""
        exp = self.experiment
        return {"corpus": exp["corpus"], "data_dir": self.data_dir.name,
                "protocol": exp["protocol"].get("name"),
                "init": ("none" if self.init is None else "random" if self.random_trunk
                         else self.init.name), "mode": self.mode.value,
                "augmentation": exp["augmentation"], "command": exp["command"]}


def resolve(feat_dir: str | os.PathLike, data_dir: str | os.PathLike,
            exp_dir: str | os.PathLike, *, init: str | os.PathLike | None, conf: Mapping,
            model_conf: Mapping | None = None, train_conf: Mapping | None = None,
            fold: str = "all", unfreeze: bool = False, export_all: bool = False,
            emb_dir: str | os.PathLike | None = None, nj: int = 1, device: str = "cpu",
            command: str = "", progress: bool = True,
            labels: str | os.PathLike | None = None,
            test_data: str | os.PathLike | None = None,
            test_feats: str | os.PathLike | None = None, strict_classes: bool = False,
            test_emb_dir: str | os.PathLike | None = None) -> FinetunePlan:
    """The plan of a finetune (see :func:`sertool.transfer.driver.finetune` for the
    arguments); every refusal is raised here, before anything is written. ``test_data`` and
    ``test_feats``: a cross-corpus run (sertool.transfer.crosscorpus)."""
    feat_dir, data_dir, exp_dir = Path(feat_dir), Path(data_dir), Path(exp_dir)
    conf = dict(conf)
    cross = None
    if (test_data is None) != (test_feats is None):
        raise FinetuneError("--test-data and --test-feats go together (the other corpus's data "
                            "directory and its features)")
    if test_data is None and (strict_classes or test_emb_dir is not None):
        raise FinetuneError("--strict-classes and --test-emb-dir are for a cross-corpus run "
                            "(--test-data, --test-feats)")
    label_map = read_label_map(labels, data_dir)
    features = None
    if test_data is not None:
        if fold not in ("all", CROSS_FOLD):
            raise FinetuneError(f"--fold {fold}: a cross-corpus run has one fold, "
                                f"{CROSS_FOLD!r} (every utterance of {data_dir})")
        if export_all:
            raise FinetuneError("--export-all: a cross-corpus run's model is trained on every "
                                f"utterance of {data_dir} already; its bundle is "
                                f"{exp_dir}/fold_{CROSS_FOLD}/bundle")
        features = FeatDir.open(feat_dir)
        cross, utt2label, utt2spk = settle_cross(data_dir, features, label_map, test_data,
                                                 test_feats, labels=labels,
                                                 strict_classes=strict_classes)
        folds, protocol = [cross.fold], cross.protocol
    else:
        folds, protocol = read_folds(data_dir)
        if fold != "all" and fold not in [f.name for f in folds]:
            raise FinetuneError(f"{data_dir}/folds: no fold {fold!r} (folds: "
                                f"{', '.join(f.name for f in folds)})")
        utt2spk = read_table(data_dir / "utt2spk")  # checked before any fold starts
        if not (data_dir / "utt2emo").is_file():
            raise DataDirError(data_dir / "utt2emo", None, "not found (an emotion data "
                               "directory has one)")
        utt2label = read_utt2emo(data_dir, label_map)
    used = sorted({u for f in folds for u in f.train + f.test})
    absent = [u for u in used if u not in utt2label]
    if absent:
        raise FinetuneError(f"{data_dir / 'utt2emo'}: {len(absent)} utterance(s) of the folds "
                            f"are missing, e.g. {absent[0]!r}")
    classes = sorted({utt2label[u] for u in used})
    _require_every_class(data_dir, [f for f in folds if fold in ("all", f.name)], used,
                         utt2label)
    features = features or FeatDir.open(feat_dir)
    frontend = features.frontend
    absent = features.missing(used if cross is None else cross.train)
    if absent:  # extract-feats lists the utterances it could not use in FEAT_DIR/failed
        raise FinetuneError(
            f"{feat_dir / FEATS_SCP}: {len(absent)} utterance(s) of the folds are missing, "
            f"e.g. {absent[0]!r} (extract-feats lists the utterances it could not use in "
            f"{feat_dir / FAILED}; drop them from the data directory and its folds with "
            f"`sertool fix-data-dir {data_dir} --feat-dir {feat_dir}`)")

    mode, init_path, model_conf = _settle_mode(init, unfreeze, model_conf, features, exp_dir)
    if cross is not None and init_path is not None and not str(init) == "random":
        from sertool.nnet.checkpoint import load_model  # lazy: torch (loaded already)

        cross.test_features.check_model(load_model(init_path, "cpu")[1], init_path)
    if mode is not Mode.FROZEN and conf["selection"] == "inner_cv":
        raise FinetuneError("selection inner_cv trains inner_folds + 1 heads per fold on the "
                            "frozen trunk's stored embeddings; with --unfreeze or --init none "
                            "use selection heldout_speakers")
    _check_head_and_layers(conf, mode, model_conf)
    _check_functionals(conf, mode, model_conf, str(init) == "random")
    if mode is Mode.FROZEN:
        train_conf = None  # not used: kept out of the configuration identity
    elif train_conf is None:
        from sertool.nnet.trainer import load_train_conf  # lazy: torch

        train_conf = load_train_conf()

    prepare = data_dir / "prepare.json"
    prep = json.loads(prepare.read_text(encoding="utf-8")) if prepare.is_file() else {}
    class_map = prep.get("class_map") or {
        "labels": "as in utt2emo" + (f", mapped by {label_map.source}" if labels else ""),
        **({"iemocap_exp": prep["exp"]} if "exp" in prep else {}),
        **({"left_out": prep["excluded"]} if prep.get("excluded") else {})}
    plan = FinetunePlan(
        features=features, data_dir=data_dir, exp_dir=exp_dir, mode=mode, init=init_path,
        random_trunk=str(init) == "random", conf=conf, model_conf=dict(model_conf),
        train_conf=dict(train_conf) if train_conf is not None else None, classes=classes,
        label_map=label_map, labels_given=labels is not None, feat_dim=features.dim,
        fold=fold, embeddings=None if mode is not Mode.FROZEN else EmbeddingDir(
            emb_dir if emb_dir is not None else exp_dir / "embeddings"),
        experiment={}, device=device, nj=nj, progress=progress, export_all=export_all,
        cross=cross, test_embeddings=None if mode is not Mode.FROZEN or cross is None else
        EmbeddingDir(test_emb_dir if test_emb_dir is not None else exp_dir / "embeddings_test"))
    plan.folds, plan.utt2label, plan.utt2spk = folds, utt2label, utt2spk  # read once
    plan.experiment = {
        "name": exp_dir.resolve().name, "corpus": str(prep.get("corpus") or data_dir.name),
        "data_dir": str(data_dir.resolve()), "feat_dir": str(feat_dir.resolve()),
        "classes": classes, "class_map": class_map, "protocol": protocol,
        "frontend": {**_frontend_summary(frontend), "dims": plan.feat_dim},
        "model": {"pooling": model_conf.get("pooling", "not applicable"), **dict(model_conf)},
        "init": plan.init_text,
        "augmentation": {"policy": conf["augment"]["policy"], "copies": plan.copies},
        "unfreeze": mode is Mode.UNFREEZE, "mode": mode.value, "command": command,
        "seed": int(conf["seed"]), "heldout": {"speakers": conf["heldout_speakers"],
                                               "fallback_fraction": conf["heldout_fraction"]},
        **({"cross_corpus": cross.to_json()} if cross is not None else {}),
    }
    if cross is not None:
        plan.experiment["class_map"] = {**class_map, "cross_corpus": (
            f"classes shared by {cross.train_corpus} and {cross.test_corpus}; "
            + ("; ".join(cross.left_out_lines()) or "no class left out"))}
    for f in folds:  # before anything is written: no fold folder may lead out of EXP_DIR
        fold_dir(exp_dir, f.name)
    ensure_writable(exp_dir)  # a rerun writes nothing until its first fold is trained
    check_identity(exp_dir, exp_dir / IDENTITY_JSON, plan.identity,
                   hint="use another EXP_DIR or remove it", error=FinetuneError)
    return plan


def _settle_mode(init: str | os.PathLike | None, unfreeze: bool, model_conf: Mapping | None,
                 features: FeatDir, exp_dir: Path) -> tuple[Mode, Path | None, Mapping]:
    """(mode, the trunk's checkpoint, the network) from ``--init``, ``--unfreeze`` and
    ``--model-conf``; a speaker model is checked against the features' front-end."""
    if str(init) == "random":
        if not model_conf:
            raise FinetuneError("--init random needs --model-conf (the network whose untrained "
                                "trunk is frozen)")
        if unfreeze:
            raise FinetuneError("--init random is the frozen random-trunk baseline; a network "
                                "trained from scratch is --init none")
        # The no-transfer row of the frozen-trunk system: the same network and FC training on
        # the pooled statistics of an untrained (seeded random) trunk, made by the run.
        return Mode.FROZEN, exp_dir / "random_trunk.pt", model_conf
    if init is not None and str(init) != "none":
        init_path = Path(init)
        if not init_path.is_file():
            raise FinetuneError(f"{init_path}: speaker model not found")
        if model_conf:
            raise FinetuneError("--model-conf is for --init none: with --init the network is "
                                f"the speaker model's ({init_path})")
        from sertool.nnet.checkpoint import load_model  # lazy: torch

        _, init_meta = load_model(init_path, "cpu")  # refused now if it does not load
        features.check_model(init_meta, init_path)
        return (Mode.UNFREEZE if unfreeze else Mode.FROZEN), init_path, init_meta["model_conf"]
    if not model_conf:
        raise FinetuneError("--init none needs --model-conf (the network to train)")
    if unfreeze:
        raise FinetuneError("--unfreeze needs --init SPEAKER_MODEL (nothing is frozen "
                            "without a pretrained trunk)")
    return Mode.SCRATCH, None, model_conf


def _identity_conf(conf: Mapping) -> dict:
    """The configuration as finetune.json records it: options added later are left out while
    they hold their defaults (:data:`LATER_OPTIONS`)."""
    conf = json.loads(json.dumps(conf))
    for path, default in LATER_OPTIONS.items():
        *tables, key = path
        table = conf
        for name in tables:
            table = table.get(name, {})
        if key in table and table[key] == default:
            del table[key]
    return conf


def _check_head_and_layers(conf: Mapping, mode: Mode, model_conf: Mapping) -> None:
    """``head.kind`` and ``layers`` are known, and possible with the mode and the trunk."""
    kind, use = conf["head"]["kind"], conf["layers"]["use"]
    if kind not in HEAD_KINDS:
        raise FinetuneError(f"head.kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
    if use not in LAYER_USES:
        raise FinetuneError(f"layers.use must be one of {', '.join(LAYER_USES)}, got {use!r}")
    if mode is not Mode.FROZEN and (kind != "fc" or use != "model"):
        raise FinetuneError(f"head.kind = {kind!r} and layers.use = {use!r} are for the frozen "
                            "trunk's stored embeddings; with --unfreeze or --init none the "
                            "network is the model's own (head.kind fc, layers.use model)")
    weights, sampler = conf["head"]["class_weights"], conf["head"]["sampler"]
    if weights not in CLASS_WEIGHTS:
        raise FinetuneError(f"head.class_weights must be one of {', '.join(CLASS_WEIGHTS)}, "
                            f"got {weights!r}")
    if sampler not in SAMPLERS:
        raise FinetuneError(f"head.sampler must be one of {', '.join(SAMPLERS)}, got "
                            f"{sampler!r}")
    if mode is not Mode.FROZEN and (weights, sampler) != ("none", "shuffle"):
        raise FinetuneError("head.class_weights and head.sampler are the frozen trunk's head; "
                            "with --unfreeze or --init none the trainer's options do it: "
                            "--set train.class_weights=balanced, --set train.sampler=balanced")
    if kind == "linear" and sampler != "shuffle":
        raise FinetuneError("head.sampler = \"balanced\" draws the FC head's batches; the "
                            "linear head is fitted on every training vector at once: use "
                            "head.class_weights = \"balanced\" with it")
    if not conf["head"]["linear_c"]:
        raise FinetuneError("head.linear_c must list at least one regularisation strength")
    if use != "model":
        from sertool.models import TRUNKS  # lazy: torch (the speaker model was loaded)

        trunk = str(model_conf.get("type", "resnet"))
        if trunk not in TRUNKS or not TRUNKS[trunk].layered:
            layered = [name for name, t in TRUNKS.items() if t.layered]
            raise FinetuneError(f"layers.use = {use!r} needs a trunk with several hidden "
                                f"layers ({', '.join(layered)}); the {trunk} trunk pools one "
                                "output: use layers.use = \"model\"")
        n_states, index = TRUNKS[trunk].hidden_states(model_conf), conf["layers"]["index"]
        if use == "one" and not -n_states <= index < n_states:
            raise FinetuneError(f"layers.index = {index}: the trunk has {n_states} hidden "
                                f"states (0..{n_states - 1}, or -1 for the last)")


def _check_functionals(conf: Mapping, mode: Mode, model_conf: Mapping, random: bool) -> None:
    """The parameter-free ``functionals`` trunk (openSMILE functionals) is the frozen system
    only, without SpecAugment copies: refused here, before anything is written."""
    if model_conf.get("type") != "functionals":
        return
    how = ("make its model with `sertool import-speaker-model functionals OUT` and run "
           "finetune --init OUT/model.pt --set head.kind=linear --set augment.policy=none")
    if random or mode is not Mode.FROZEN:
        what = "--init random" if random else ("--unfreeze" if mode is Mode.UNFREEZE
                                               else "--init none")
        raise FinetuneError(f"{what}: the functionals trunk has no parameters (its output is "
                            "the openSMILE functionals vector), so there is nothing random, "
                            f"trained or unfrozen in it; {how}")
    if conf["augment"]["policy"] != "none":
        # refused, not silently switched off: finetune's default policy is conservative, and
        # finetune.json must say what the run did
        raise FinetuneError(f"augment.policy = {conf['augment']['policy']!r}: SpecAugment masks "
                            "10 ms frames and mel bands of a spectrogram; the functionals trunk "
                            "reads one vector of openSMILE functionals per utterance, which has "
                            "neither: set --set augment.policy=none")


def _frontend_summary(frontend: Mapping) -> dict:
    """The experiment.json ``frontend`` entry from the feature dir's frontend.json."""
    cmvn = frontend.get("cmvn", {})
    # the feature set of kind opensmile (only there: other experiments keep their record)
    extra = {"feature_set": frontend["feature_set"]} if "feature_set" in frontend else {}
    return {"kind": frontend.get("kind", "?"), **extra,
            "normalisation": cmvn.get("mode", "segment") if isinstance(cmvn, Mapping) else cmvn,
            "vad": bool(frontend.get("vad", {}).get("enabled", True))}


def _require_every_class(data_dir: Path, folds: Sequence[Fold], used: Sequence[str],
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

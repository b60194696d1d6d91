"""``sertool import-speaker-model``: published speaker models as sertool speaker models.

``wespeaker MODEL_DIR OUT``: a WeSpeaker ResNet18/34 (``config.yaml`` + ``avg_model.pt``, as
the WeSpeaker project publishes its VoxCeleb models) becomes sertool's ResNet with WeSpeaker's
options (ReLU, TSTP pooling, its ``seg_1``/``seg_2`` embedding layers), weights mapped key by
key. ``resemblyzer OUT``: the GE2E encoder whose weights ship in the ``resemblyzer`` wheel
becomes a ``ge2e_lstm`` model. Nothing is downloaded, and checkpoints are read with
``torch.load(weights_only=True)`` only: a file that needs pickled code is refused.

OUT is a folder:

``model.pt``        a sertool checkpoint (``sertool.nnet.checkpoint.load_model`` reads it):
                    ``num_classes`` 0 (no classifier), ``extra["frontend"]`` = its front-end,
                    ``extra["source"]`` = where it came from
``frontend.toml``   that front-end, for ``sertool extract-feats DATA FEAT --conf OUT/frontend.toml``
``import.json``     the source files (SHA-256), the keys left out, the model and front-end
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sertool.config import dump_toml
from sertool.errors import SertoolError
from sertool.frontend.pipeline import GE2E_MEL_DEFAULTS, resolve_conf
from sertool.io_utils import atomic_write_json, atomic_write_text, sha256_of
from sertool.models import GE2E_DEFAULTS, build_model, resolve_model_conf
from sertool.nnet.checkpoint import save_checkpoint

MODEL_FILE = "model.pt"
FRONTEND_FILE = "frontend.toml"
IMPORT_FILE = "import.json"

# WeSpeaker's BasicBlock ResNets (wespeaker/models/resnet.py): blocks per stage
WESPEAKER_RESNETS = {"ResNet18": [2, 2, 2, 2], "ResNet34": [3, 4, 6, 3]}
WESPEAKER_CHANNELS = 32  # m_channels of those factories


class SpeakerImportError(SertoolError, ValueError):
    """A published model sertool cannot import; the message names the file."""


@dataclass
class ImportResult:
    out_dir: Path
    source: str
    dropped: list[str] = field(default_factory=list)  # source keys left out, with the reason
    verb: str = "imported"  # "made": a model with nothing imported (the functionals system)

    def summary(self) -> str:
        text = (f"{self.out_dir}: {self.verb} {self.source} -> {self.out_dir / MODEL_FILE}; "
                f"extract its features with `sertool extract-feats DATA FEAT --conf "
                f"{self.out_dir / FRONTEND_FILE}`")
        if self.dropped:
            text += f"; left out: {', '.join(self.dropped)}"
        return text


def load_tensors(path: Path) -> object:
    """``torch.load(weights_only=True)``; anything that needs code to unpickle is refused."""
    if not path.is_file():
        raise SpeakerImportError(f"{path}: not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors alike
        # torch's own message advises loading with weights_only=False, which would run code
        # from the file: report only what was found.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = (f"it holds a pickled Python object ({found.group(1)}), not only tensors"
                if found else f"not a PyTorch tensor file ({type(err).__name__})")
        raise SpeakerImportError(
            f"{path}: cannot be read as weights: {what}. sertool reads state dicts of plain "
            "tensors only and never runs code stored in a checkpoint; save the model's "
            "state_dict() with torch.save and import that file") from err


def _rename(key: str, pairs: list[tuple[str, str]]) -> str | None:
    """``key`` with its longest matching prefix replaced, or None."""
    best = max((p for p in pairs if key.startswith(p[0])), key=lambda p: len(p[0]), default=None)
    return None if best is None else best[1] + key[len(best[0]):]


def map_state(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
              prefixes: list[tuple[str, str]], path: Path, drop: Mapping[str, str]
              ) -> tuple[dict, list[str]]:
    """Source state dict -> ``target``'s keys by (source prefix, sertool prefix) pairs.

    Keys under a ``drop`` prefix are left out (returned as "key (reason)"); any other key
    without a place, a network key left empty, or a wrong shape is an error naming the key as
    the source file spells it.
    """
    mapped: dict[str, torch.Tensor] = {}
    dropped, unexpected = [], []
    for key, value in source.items():
        reason = next((why for prefix, why in drop.items() if key.startswith(prefix)), None)
        if reason is not None:
            dropped.append(f"{key} ({reason})")
            continue
        new = _rename(key, prefixes)
        if new is None or new not in target:
            unexpected.append(key)
            continue
        if not isinstance(value, torch.Tensor) or value.shape != target[new].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise SpeakerImportError(f"{path}: {key} has shape {shape}, the network its "
                                     f"configuration describes needs {tuple(target[new].shape)}")
        mapped[new] = value
    if unexpected:
        raise SpeakerImportError(f"{path}: unexpected key(s) {unexpected[:5]} (not in the "
                                 "network its configuration describes)")
    inverse = [(mine, theirs) for theirs, mine in prefixes]
    missing = [_rename(k, inverse) or k for k in target if k not in mapped]
    if missing:
        raise SpeakerImportError(f"{path}: missing key(s) {missing[:5]} ({len(missing)} in all) "
                                 "of the network its configuration describes")
    return mapped, dropped


def write_import(out_dir: Path, model: torch.nn.Module, model_conf: dict, feat_dim: int,
                 frontend: dict, source: dict, dropped: list[str], header: str) -> None:
    """OUT's model.pt, frontend.toml (``header`` its comment) and import.json (the module
    docstring); every importer writes through this one function."""
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"frontend": frontend, "source": source}
    save_checkpoint(out_dir / MODEL_FILE, model, model_conf=model_conf, num_classes=0,
                    feat_dim=feat_dim, labels=[], extra=extra, with_rng=False)
    atomic_write_text(out_dir / FRONTEND_FILE, dump_toml(frontend, header))
    atomic_write_json(out_dir / IMPORT_FILE, {**source, "dropped": dropped,
                                              "model_conf": model_conf, "frontend": frontend})


# ----------------------------------------------------------------------------- WeSpeaker


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SpeakerImportError(f"{path}: not found (a WeSpeaker model directory holds "
                                 "config.yaml and avg_model.pt)")
    try:
        import yaml
    except ImportError as err:  # a declared dependency: only a broken install lacks it
        raise SpeakerImportError(f"{path}: reading it needs PyYAML, a sertool dependency "
                                 "missing here: pip install pyyaml") from err
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SpeakerImportError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(conf, dict):
        raise SpeakerImportError(f"{path}: not a WeSpeaker configuration (no mapping)")
    return conf


def wespeaker_confs(config: Mapping, path: Path) -> tuple[dict, dict, int]:
    """(sertool model conf, front-end conf, feature dim) of a WeSpeaker ``config.yaml``."""
    name = config.get("model")
    if name not in WESPEAKER_RESNETS:
        raise SpeakerImportError(f"{path}: model {name!r} is not supported (supported: "
                                 f"{', '.join(WESPEAKER_RESNETS)})")
    args = dict(config.get("model_args") or {})
    unknown = sorted(set(args) - {"feat_dim", "embed_dim", "pooling_func", "two_emb_layer"})
    if unknown:
        raise SpeakerImportError(f"{path}: model_args {unknown} are not supported")
    if args.get("pooling_func", "TSTP") != "TSTP":
        raise SpeakerImportError(f"{path}: pooling_func {args['pooling_func']!r} is not "
                                 "supported (TSTP is)")
    feat_dim, embed_dim = int(args.get("feat_dim", 40)), int(args.get("embed_dim", 128))
    model_conf = resolve_model_conf({
        "type": "resnet", "layers": WESPEAKER_RESNETS[name], "channels": WESPEAKER_CHANNELS,
        "pooling": "tstp", "activation": "relu", "embed_dim": embed_dim,
        "embedding_head": "linear2" if args.get("two_emb_layer") else "linear"})
    dataset = config.get("dataset_args") or {}
    fbank = dict(dataset.get("fbank_args") or {})
    bins = int(fbank.get("num_mel_bins", feat_dim))
    if bins != feat_dim:
        raise SpeakerImportError(f"{path}: fbank_args.num_mel_bins {bins} != model_args."
                                 f"feat_dim {feat_dim}")
    # dither is a training-time augmentation in WeSpeaker; inference uses none
    frontend = resolve_conf({
        "kind": "kaldi_fbank", "sample_rate": int(dataset.get("resample_rate", 16000)),
        "frame": {"frame_length_ms": float(fbank.get("frame_length", 25)),
                  "frame_shift_ms": float(fbank.get("frame_shift", 10))},
        "mel": {"num_bins": bins}})
    return model_conf, frontend, feat_dim


# WeSpeaker's parameter names -> sertool's (every other key is an error)
WESPEAKER_PREFIXES = [("conv1.", "trunk.stem.0."), ("bn1.", "trunk.stem.1."),
                      *[(f"layer{i}.", f"trunk.stages.{i - 1}.") for i in range(1, 5)],
                      ("seg_1.", "head.0."), ("seg_bn_1.", "head.2."), ("seg_2.", "head.3.")]


def import_wespeaker(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     checkpoint: str = "avg_model.pt") -> ImportResult:
    """MODEL_DIR/config.yaml + MODEL_DIR/avg_model.pt -> OUT (see the module docstring)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config_path, weights_path = model_dir / "config.yaml", model_dir / checkpoint
    model_conf, frontend, feat_dim = wespeaker_confs(read_yaml(config_path), config_path)
    state = load_tensors(weights_path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint rather than a bare state dict
    if not isinstance(state, dict):
        raise SpeakerImportError(f"{weights_path}: not a state dict ({type(state).__name__})")
    model = build_model(model_conf, 0, feat_dim)
    mapped, dropped = map_state(state, model.state_dict(), WESPEAKER_PREFIXES, weights_path,
                                {"projection.": "margin classifier of the training speakers"})
    model.load_state_dict(mapped)
    source = {"source": "wespeaker", "model": str(model_dir.resolve()),
              "config_sha256": sha256_of(config_path), "weights": checkpoint,
              "weights_sha256": sha256_of(weights_path)}
    write_import(out_dir, model, model_conf, feat_dim, frontend, source, dropped,
           f"Front-end of the WeSpeaker model imported from {model_dir.resolve()}:\n"
           "Kaldi fbank of int16-range samples, Hamming window, no dither, minus the utterance\n"
           f"mean, no VAD. Use: sertool extract-feats DATA FEAT --conf {out_dir / FRONTEND_FILE}")
    return ImportResult(out_dir, f"WeSpeaker {config_path.parent.name}", dropped)


# ----------------------------------------------------------------------------- Resemblyzer

# hparams.py values that sertool's ge2e_mel front-end and ge2e_lstm model reproduce
RESEMBLYZER_HPARAMS = {
    "sampling_rate": GE2E_MEL_DEFAULTS["sample_rate"],
    "mel_window_length": GE2E_MEL_DEFAULTS["frame"]["frame_length_ms"],
    "mel_window_step": GE2E_MEL_DEFAULTS["frame"]["frame_shift_ms"],
    "mel_n_channels": GE2E_MEL_DEFAULTS["mel"]["num_bins"],
    "audio_norm_target_dBFS": GE2E_MEL_DEFAULTS["volume"]["target_dbfs"],
    "partials_n_frames": GE2E_DEFAULTS["partial_frames"],
    "model_hidden_size": GE2E_DEFAULTS["hidden_size"],
    "model_embedding_size": GE2E_DEFAULTS["embedding_size"],
    "model_num_layers": GE2E_DEFAULTS["num_layers"],
}


def resemblyzer_package() -> Path:
    """The installed ``resemblyzer`` package folder, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerImportError("resemblyzer is not installed: pip install 'sertool[resemblyzer]' "
                                 "(its wheel holds the encoder's weights)")
    return Path(list(spec.submodule_search_locations)[0])


def _check_hparams(path: Path) -> None:
    """Read hparams.py as data (never executed) and refuse values sertool does not reproduce."""
    if not path.is_file():
        raise SpeakerImportError(f"{path}: not found (unexpected resemblyzer layout)")
    values = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    differ = [f"{k} = {values.get(k)!r} (sertool: {v!r})"
              for k, v in RESEMBLYZER_HPARAMS.items() if values.get(k) != v]
    if differ:
        raise SpeakerImportError(f"{path}: this resemblyzer differs from the one sertool "
                                 f"reproduces: {'; '.join(differ)}")


def import_resemblyzer(out_dir: str | os.PathLike, package: str | os.PathLike | None = None
                       ) -> ImportResult:
    """The GE2E encoder of the installed resemblyzer (or of the package folder ``package``)
    -> OUT (see the module docstring)."""
    out_dir = Path(out_dir)
    root = Path(package) if package is not None else resemblyzer_package()
    _check_hparams(root / "hparams.py")
    weights_path = root / "pretrained.pt"
    ckpt = load_tensors(weights_path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state"), dict):
        raise SpeakerImportError(f"{weights_path}: no 'model_state' state dict (not "
                                 "Resemblyzer's encoder checkpoint)")
    model_conf = resolve_model_conf({"type": "ge2e_lstm"})
    frontend = resolve_conf({"kind": "ge2e_mel"})
    feat_dim = frontend["mel"]["num_bins"]
    model = build_model(model_conf, 0, feat_dim)
    mapped, dropped = map_state(
        ckpt["model_state"], model.state_dict(),
        [("lstm.", "trunk.lstm."), ("linear.", "trunk.linear.")], weights_path,
        {"similarity_": "scale and bias of the GE2E training loss"})
    model.load_state_dict(mapped)
    version = _installed_version()
    source = {"source": "resemblyzer", "version": version, "weights": str(weights_path),
              "weights_sha256": sha256_of(weights_path), "training_step": ckpt.get("step")}
    write_import(out_dir, model, model_conf, feat_dim, frontend, source, dropped,
           f"Front-end of Resemblyzer's GE2E encoder ({version}): waveform raised to\n"
           "-30 dBFS, 40 power mels (no log), 25 ms / 10 ms, no VAD (preprocess_wav's pause\n"
           f"trimming is not applied). Use: sertool extract-feats DATA FEAT --conf "
           f"{out_dir / FRONTEND_FILE}")
    return ImportResult(out_dir, f"Resemblyzer {version} GE2E encoder", dropped)


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"resemblyzer {version('resemblyzer')}"
    except PackageNotFoundError:
        return "resemblyzer (version unknown)"

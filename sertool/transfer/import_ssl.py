"""``sertool import-speaker-model hf DIR OUT``: a self-supervised speech encoder as a sertool trunk.

DIR is a Hugging Face folder of a wav2vec2, HuBERT, WavLM or data2vec-audio model (the bare
model or one with a task head: ``Wav2Vec2ForCTC``, ``HubertForSequenceClassification``, ...):
``config.json`` (its ``model_type`` says which), ``model.safetensors`` or ``pytorch_model.bin``
(read with ``torch.load(weights_only=True)``: nothing stored in a file is ever run), and, if it
is there, ``preprocessor_config.json`` (``do_normalize`` and ``sampling_rate`` of the
feature extractor; without it, the extractor's defaults: normalised, 16 kHz).

Only the encoder is kept: the task head, the quantizer and the pre-training mask embedding are
left out and counted in import.json. A variable the encoder needs that is missing, one of the
wrong shape, or an encoder variable sertool would not use is refused, naming the variable and
the file. OUT is what :mod:`sertool.transfer.import_model` writes: ``model.pt`` (an ``ssl``
trunk, :mod:`sertool.models.ssl`, num_classes 0), ``frontend.toml`` (kind ``waveform``) and
``import.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from sertool.frontend.pipeline import resolve_conf
from sertool.io_utils import sha256_of
from sertool.models import build_model, resolve_model_conf
from sertool.transfer.import_model import (
    ImportResult,
    SpeakerImportError,
    write_import,
)
from sertool.transfer.import_whisper import SourceTable, assemble, read_hf_weights

# config.json's model_type -> sertool's arch
MODEL_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm",
               "data2vec-audio": "data2vec_audio"}
NAMES = {"wav2vec2": "wav2vec2", "hubert": "HuBERT", "wavlm": "WavLM",
         "data2vec_audio": "data2vec-audio"}
# sertool option -> config.json key; None: the value of transformers' configuration class
# when the key is absent (the sizes have none: a configuration without them is refused)
CONFIG_KEYS: dict[str, tuple[str, object]] = {
    "conv_dim": ("conv_dim", None), "conv_kernel": ("conv_kernel", None),
    "conv_stride": ("conv_stride", None), "conv_bias": ("conv_bias", False),
    "feat_extract_norm": ("feat_extract_norm", "group"), "hidden_size": ("hidden_size", None),
    "num_layers": ("num_hidden_layers", None), "num_heads": ("num_attention_heads", None),
    "intermediate_size": ("intermediate_size", None),
    "pos_conv_kernel": ("num_conv_pos_embeddings", 128),
    "pos_conv_groups": ("num_conv_pos_embedding_groups", 16),
    "stable_layer_norm": ("do_stable_layer_norm", False),
    "feat_proj_layer_norm": ("feat_proj_layer_norm", True),
    "layer_norm_eps": ("layer_norm_eps", 1e-5),
    "num_buckets": ("num_buckets", 320), "max_distance": ("max_bucket_distance", 800)}
# data2vec-audio: num_conv_pos_embeddings is the depth of its position convolutions
DATA2VEC_KEYS = {"pos_conv_kernel": ("conv_pos_kernel_size", 19),
                 "pos_conv_depth": ("num_conv_pos_embeddings", 5)}
# what sertool's network computes; another value is refused
FIXED = {"hidden_act": "gelu", "feat_extract_activation": "gelu", "add_adapter": False,
         "adapter_attn_dim": None, "conv_pos_batch_norm": False}
ENCODER_PARTS = ("feature_extractor.", "feature_projection.", "encoder.")
# the pre-training mask embedding (SpecAugment during pre-training and fine-tuning only)
MASK_EMBED = "masked_spec_embed"


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpeakerImportError(f"{path}: not a JSON configuration ({err})") from err
    if not isinstance(value, dict):
        raise SpeakerImportError(f"{path}: not a JSON configuration (no object)")
    return value


def model_conf_of(config: Mapping, path: Path) -> dict:
    """sertool's ``ssl`` model configuration of a transformers config.json."""
    kind = config.get("model_type")
    if kind not in MODEL_TYPES:
        raise SpeakerImportError(f"{path}: model_type {kind!r} is not one of "
                                 f"{', '.join(MODEL_TYPES)}")
    arch = MODEL_TYPES[kind]
    keys = dict(CONFIG_KEYS)
    if arch == "data2vec_audio":
        keys.update(DATA2VEC_KEYS)
        keys["feat_extract_norm"] = ("feat_extract_norm", "layer")  # its only kind
    missing = [theirs for theirs, default in keys.values()
               if default is None and theirs not in config]
    if missing:
        raise SpeakerImportError(f"{path}: lacks {missing}")
    for key, value in FIXED.items():
        given = config.get(key)
        if given is not None and given != value:
            raise SpeakerImportError(f"{path}: {key} {given!r} is not what sertool's {NAMES[arch]} "
                                     f"encoder computes ({value!r})")
    conf = {"type": "ssl", "arch": arch}
    for mine, (theirs, default) in keys.items():
        value = config.get(theirs, default)
        conf[mine] = default if value is None else value
    if arch != "wavlm":  # their defaults, so the configuration says only what the model has
        del conf["num_buckets"], conf["max_distance"]
    if isinstance(conf["layer_norm_eps"], int):
        conf["layer_norm_eps"] = float(conf["layer_norm_eps"])
    try:
        return resolve_model_conf(conf, prefix=f"{path}: ")
    except ValueError as err:
        raise SpeakerImportError(str(err)) from err


def _table(conf: Mapping, prefix: str) -> SourceTable:
    """sertool encoder key -> the source names (q/k/v concatenated)."""
    table: SourceTable = {}

    def pair(mine: str, theirs: str) -> None:
        for kind in ("weight", "bias"):
            table[f"{mine}.{kind}"] = [f"{prefix}{theirs}.{kind}"]

    fe = "feature_extractor.conv_layers."
    for i in range(len(conf["conv_dim"])):
        table[f"features.convs.{i}.weight"] = [f"{prefix}{fe}{i}.conv.weight"]
        if conf["conv_bias"]:
            table[f"features.convs.{i}.bias"] = [f"{prefix}{fe}{i}.conv.bias"]
        if conf["feat_extract_norm"] == "layer" or i == 0:
            pair(f"features.norms.{i}", f"{fe}{i}.layer_norm")
    if conf["feat_proj_layer_norm"]:
        pair("proj_ln", "feature_projection.layer_norm")
    pair("proj", "feature_projection.projection")
    if conf["arch"] == "data2vec_audio":
        for j in range(conf["pos_conv_depth"]):
            pair(f"pos_conv.convs.{j}", f"encoder.pos_conv_embed.layers.{j}.conv")
    else:
        pair("pos_conv.conv", "encoder.pos_conv_embed.conv")
    pair("ln", "encoder.layer_norm")
    for i in range(conf["num_layers"]):
        mine, theirs = f"layers.{i}.", f"{prefix}encoder.layers.{i}."
        for kind in ("weight", "bias"):
            table[f"{mine}attn.qkv.{kind}"] = [f"{theirs}attention.{p}_proj.{kind}"
                                               for p in "qkv"]
        for part, name in (("attn.out", "attention.out_proj"), ("attn_ln", "layer_norm"),
                           ("ffn.0", "feed_forward.intermediate_dense"),
                           ("ffn.2", "feed_forward.output_dense"),
                           ("ffn_ln", "final_layer_norm")):
            pair(f"{mine}{part}", f"encoder.layers.{i}.{name}")
        if conf["arch"] == "wavlm":
            pair(f"{mine}attn.gate_linear", f"encoder.layers.{i}.attention.gru_rel_pos_linear")
            table[f"{mine}attn.gate_const"] = [f"{theirs}attention.gru_rel_pos_const"]
    if conf["arch"] == "wavlm":
        table["rel_bias.weight"] = [f"{prefix}encoder.layers.0.attention.rel_attn_embed.weight"]
    return table


# the two ways a weight-normed convolution is stored: torch's parametrizations (transformers
# 4.3x and later) and the older weight_g / weight_v
WEIGHT_NORM = (("parametrizations.weight.original0", "parametrizations.weight.original1"),
               ("weight_g", "weight_v"))


def fold_weight_norm(state: dict[str, torch.Tensor], conv: str, path: Path) -> None:
    """``conv.weight`` = g * v / ||v|| (the norm over every dim but the kernel's, dim 2, as
    wav2vec2's ``weight_norm(dim=2)``), in place of g and v; nothing when it is stored plain."""
    if f"{conv}.weight" in state:
        return
    for g_name, v_name in WEIGHT_NORM:
        g_key, v_key = f"{conv}.{g_name}", f"{conv}.{v_name}"
        if g_key not in state and v_key not in state:
            continue
        for key in (g_key, v_key):
            if key not in state:
                raise SpeakerImportError(f"{path}: variable {key} is missing (the encoder its "
                                         "configuration describes needs it)")
        g, v = state.pop(g_key), state.pop(v_key)
        if v.dim() != 3 or tuple(g.shape) != (1, 1, v.shape[2]):
            raise SpeakerImportError(f"{path}: variable {g_key} has shape {tuple(g.shape)}, the "
                                     f"weight norm of {v_key} {tuple(v.shape)} needs "
                                     f"(1, 1, {v.shape[2] if v.dim() == 3 else '?'})")
        v = v.float()
        state[f"{conv}.weight"] = v * (g.float() / v.norm(dim=(0, 1), keepdim=True))
        return


def _prefix_of(state: Mapping[str, object], path: Path) -> str:
    """What a task model puts before the encoder's names (``wav2vec2.``, ``hubert.``, ...)."""
    ends = "feature_projection.projection.weight"
    found = sorted({k[:-len(ends)] for k in state if k.endswith(ends)})
    if len(found) != 1:
        raise SpeakerImportError(f"{path}: variable {ends} is missing (not a wav2vec2-style "
                                 "encoder)" if not found else
                                 f"{path}: holds {len(found)} encoders ({found})")
    return found[0]


def _preprocessor(folder: Path) -> tuple[bool, int, dict]:
    """(do_normalize, sampling_rate, what import.json records) of preprocessor_config.json."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return True, 16000, {"preprocessor": "absent: Wav2Vec2FeatureExtractor's defaults "
                                             "(do_normalize true, 16000 Hz)"}
    config = read_json(path)
    normalize, rate = config.get("do_normalize", True), config.get("sampling_rate", 16000)
    if not isinstance(normalize, bool) or not isinstance(rate, int) or isinstance(rate, bool):
        raise SpeakerImportError(f"{path}: do_normalize {normalize!r} and sampling_rate "
                                 f"{rate!r} must be a boolean and an integer")
    return normalize, rate, {"preprocessor_sha256": sha256_of(path)}


def import_ssl(source: str | os.PathLike, out_dir: str | os.PathLike) -> ImportResult:
    """DIR (a Hugging Face folder, see the module docstring) -> OUT."""
    folder, out_dir = Path(source), Path(out_dir)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SpeakerImportError(f"{folder}: not a Hugging Face folder (no config.json)")
    model_conf = model_conf_of(read_json(config_path), config_path)
    normalize, rate, preprocessor = _preprocessor(folder)
    model_conf["do_normalize"] = normalize
    path, state = read_hf_weights(folder)
    prefix = _prefix_of(state, path)
    encoder_state = {k: v for k, v in state.items()
                     if k.startswith(tuple(prefix + part for part in ENCODER_PARTS))}
    skipped = [k for k in state if k not in encoder_state]
    if model_conf["arch"] != "data2vec_audio":
        fold_weight_norm(encoder_state, f"{prefix}encoder.pos_conv_embed.conv", path)
    try:
        model = build_model(model_conf, 0, 1)
    except ValueError as err:  # sizes no such model has (hidden_size not a multiple of heads)
        raise SpeakerImportError(f"{path}: {err}") from err
    encoder = model.trunk.encoder
    name = NAMES[model_conf["arch"]]
    encoder.load_state_dict(assemble(encoder.state_dict(), _table(model_conf, prefix),
                                     encoder_state, path, prefix, f"{name}'s encoder"))
    frontend = resolve_conf({"kind": "waveform", "sample_rate": rate})
    mask = [k for k in skipped if k.endswith(MASK_EMBED)]
    dropped = ([f"{len(skipped) - len(mask)} variable(s) outside the encoder (task head, "
                "quantizer)"] if len(skipped) > len(mask) else [])
    dropped += [f"{k} (the pre-training mask embedding)" for k in mask]
    record = {"source": "huggingface", "format": name, "config_sha256": sha256_of(config_path),
              "weights": str(path.resolve()), "weights_sha256": sha256_of(path), **preprocessor}
    size = (f"{model_conf['num_layers']} layers of {model_conf['hidden_size']}, "
            f"{'pre' if model_conf['stable_layer_norm'] else 'post'}-LN")
    write_import(out_dir, model, model_conf, 1, frontend, record, dropped,
                 f"Front-end of the {name} encoder imported from {folder.resolve()}:\n"
                 f"the {rate} Hz waveform itself, one sample a row (the encoder normalises "
                 f"it{'' if normalize else ' not'}). Use: sertool extract-feats DATA FEAT "
                 f"--conf {out_dir / 'frontend.toml'}")
    return ImportResult(out_dir, f"{name} encoder ({size}, huggingface)", dropped)

"""Networks of sertool: the paper's ResNet (with/without statistics pooling) and the 1D-CNN,
and the trunks of imported models (Resemblyzer's GE2E LSTM, Whisper's encoder, the self-supervised
wav2vec2 / HuBERT / WavLM / data2vec-audio encoders on the waveform) and the parameterless
``functionals`` trunk (openSMILE functionals, the classical baseline).

Every model is a :class:`SERModel` taking features ``(B, T, F)`` (batch, frames, feature dim)
and made of ``trunk`` (frame-level network + pooling -> ``(B, pooled_dim)``) and ``head``
(segment-level FC layers -> logits). ``pooled`` runs the trunk only (embedding extraction
with a frozen trunk), ``head_forward`` the head only, ``replace_head`` puts new randomly
initialised FC layers of the same architecture for another label set (transfer learning).

``num_classes = 0`` is a speaker encoder imported without its classifier (``sertool
import-speaker-model``): its head holds only the published embedding layers (WeSpeaker's
``seg_1``/``seg_2``, nothing for the GE2E encoder), ``embedding`` and ``forward`` give the
speaker embedding, and ``replace_head`` builds the paper's FC layers (``embed_dim``,
``fc_layers``) on the trunk's pooled output, as for any speaker model.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sertool.errors import SertoolError

RESNET_DEFAULTS: dict = {
    "type": "resnet",
    "layers": [3, 4, 6, 3],   # BasicBlocks per stage (ResNet34)
    "channels": 32,           # first-stage width; stage i has channels * 2**i
    "pooling": "stats",       # "stats" (mean || std over time) or "none" (paper's ablation)
    "fixed_frames": 200,      # pooling "none": input truncated / zero-padded to this length
    "embed_dim": 256,         # segment-level FC size (the speaker embedding)
    "fc_layers": 2,           # segment-level FC layers (Linear + BN + PReLU) before the output
}
CNN1D_DEFAULTS: dict = {
    "type": "cnn1d_attention",
    "channels": 256,
    "kernel": 7,
    "dropout": 0.2,
    "reduction": 16,
    "spatial_kernel": 7,
    "dense": 64,
}
# Options that only imported models set; absent from resolved configurations otherwise, so
# existing configurations (and the runs fingerprinted with them) stay byte-identical.
RESNET_OPTIONAL: dict = {
    "activation": "prelu",    # "relu": WeSpeaker's ResNets
    "embedding_head": "fc",   # with num_classes 0: "linear" = WeSpeaker's seg_1, "linear2" = seg_1
                              # + ReLU + BN + seg_2 (two_emb_layer); "fc" = the FC layers
}
GE2E_DEFAULTS: dict = {
    "type": "ge2e_lstm",
    "hidden_size": 256,       # LSTM units per layer
    "num_layers": 3,
    "embedding_size": 256,    # linear + ReLU after the last hidden state: the pooled output
    "partial_frames": 160,    # window length (1.6 s)
    "partial_rate": 1.3,      # windows per second
    "min_coverage": 0.75,     # keep the last window if audio fills this fraction of it
    "tail_frames": 2,         # frames the ge2e_mel front-end appends past the signal
    "frame_shift_ms": 10.0,   # of the features, to turn the rate into a step in frames
    "embed_dim": 256,         # the new FC layers of the transfer (as for the ResNet)
    "fc_layers": 2,
}
# Whisper's encoder (sertool.models.whisper); the sizes are tiny's, an import sets its own
WHISPER_DEFAULTS: dict = {
    "type": "whisper",
    "n_mels": 80,             # 128 for large-v3
    "n_ctx": 1500,            # positions after the stride-2 convolution (30 s)
    "d_model": 384,
    "n_heads": 6,
    "n_layers": 4,
    "layer": -1,              # hidden state pooled into the trunk's output (-1: after ln_post)
    "embed_dim": 256,         # the new FC layers of the transfer (as for the ResNet)
    "fc_layers": 2,
}
SSL_ARCHS = ("wav2vec2", "hubert", "wavlm", "data2vec_audio")
# A self-supervised speech encoder on the waveform (sertool.models.ssl: wav2vec2, HuBERT, WavLM,
# data2vec-audio); the sizes are wav2vec2-base's, an import sets its own
SSL_DEFAULTS: dict = {
    "type": "ssl",
    "arch": "wav2vec2",       # wav2vec2, hubert, wavlm (gated relative position bias),
                              # data2vec_audio (stacked position convolutions)
    "conv_dim": [512] * 7,    # the convolutional feature encoder on the samples
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",  # "layer" for the large models and data2vec-audio
    "hidden_size": 768,
    "num_layers": 12,
    "num_heads": 12,
    "intermediate_size": 3072,
    "pos_conv_kernel": 128,   # the convolutional position embedding
    "pos_conv_groups": 16,
    "pos_conv_depth": 1,      # data2vec_audio: its stack of position convolutions
    "stable_layer_norm": False,  # pre-LN layers (the large "stable" models)
    "feat_proj_layer_norm": True,
    "layer_norm_eps": 1e-5,
    "num_buckets": 320,       # WavLM's relative position buckets
    "max_distance": 800,
    "do_normalize": True,     # each utterance to zero mean, unit variance (preprocessor_config)
    "max_samples": 480000,    # longer inputs are encoded in windows of this many samples (30 s)
    "layer": -1,              # hidden state pooled into the trunk's output (-1: the last)
    "embed_dim": 256,         # the new FC layers of the transfer (as for the ResNet)
    "fc_layers": 2,
}
# Fixed features (sertool.models.functionals): no parameters, the pooled output is the
# utterance's openSMILE functionals; embed_dim / fc_layers only for finetune's head.kind "fc"
# (the baseline is head.kind "linear": standardised functionals, logistic regression)
FUNCTIONALS_DEFAULTS: dict = {
    "type": "functionals",
    "embed_dim": 256,
    "fc_layers": 2,
}
# Options every trunk type takes, absent from resolved configurations unless set (so the
# configurations of existing runs stay byte-identical): the head (sertool.models.heads).
HEAD_OPTIONAL: dict = {"head": "fc"}  # "fc": the type's own FC head; "linear": logistic regression
# A trunk with several hidden layers (Whisper): "all" pools every layer (mean || std of each,
# layer after layer) and the head mixes them ("concat" or a learned "weighted" sum).
LAYERED_OPTIONAL: dict = {"pool_layers": "one", "layer_mix": "concat"}
# Whisper: true fills each input to the 30 s window it was trained on (with silence) and pools
# the input's own frames; false (default) cuts the position table to the input's length
WHISPER_OPTIONAL: dict = {**LAYERED_OPTIONAL, "pad_to_window": False}
EMBEDDING_HEADS = ("fc", "linear", "linear2")


@dataclass(frozen=True)
class TrunkType:
    """One entry of the registry: what a trunk type is made of. A new trunk is its module
    (with a ``trunk_from_conf(feat_dim, conf)`` function) plus one entry in :data:`TRUNKS`."""

    defaults: dict  # its options and their defaults (the resolved configuration's keys)
    limits: dict  # the ranges of its numeric options (WIDTH, DEPTH below)
    module: str  # the module holding ``trunk_from_conf``, imported when one is built
    own_head: str = "fc"  # its FC head for classes: "fc" (embed_dim, fc_layers) or "dense"
    optional: dict = field(default_factory=dict)  # options only some configurations set
    frontend: str | None = None  # the front-end kind its features must come from (None: any)
    embedding_head: bool = False  # with num_classes 0 its head holds published layers (ResNet)
    # its hidden states' count for a configuration, for a trunk with several to pool (Whisper:
    # the first block's input and every block's output); None: one pooled output
    hidden_states: Callable[[Mapping], int] | None = None

    @property
    def schema(self) -> dict:
        return {**self.defaults, **HEAD_OPTIONAL, **self.optional}

    @property
    def layered(self) -> bool:
        """It has several hidden layers to pool (``pool_layers``, ``layer``)."""
        return self.hidden_states is not None


class ModelConfigError(SertoolError, ValueError):
    pass


class SERModel(nn.Module):
    """trunk (features -> pooled vector) + head (pooled vector -> logits)."""

    def __init__(self, trunk: nn.Module, head: nn.Module, model_conf: Mapping,
                 num_classes: int, feat_dim: int):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.model_conf = dict(model_conf)
        self.num_classes = int(num_classes)
        self.feat_dim = int(feat_dim)
        self.pooled_dim = int(trunk.pooled_dim)
        self.min_frames = int(getattr(trunk, "min_frames", 1))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, pooled_dim): trunk and pooling only."""
        return self.trunk(x)

    def head_forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.feat_dim:
            raise ValueError(f"expected features (batch, frames, {self.feat_dim}), "
                             f"got {tuple(x.shape)}")
        return self.head(self.trunk(x))

    def forward_long(self, x: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """``forward`` of one long input with the trunk run in chunks where it can pool
        them exactly (the ResNet with statistics pooling); other trunks take it whole."""
        chunked = getattr(self.trunk, "pooled_chunked", None)
        if chunked is None or x.shape[1] <= chunk_frames:
            return self(x)
        return self.head(chunked(x, chunk_frames))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden FC layer (the speaker embedding), before the output layer."""
        return self.head[:-1](self.trunk(x))

    def replace_head(self, num_classes: int) -> None:
        """New randomly initialised FC layers (same architecture) for ``num_classes`` classes."""
        # a trunk without parameters (functionals) is on the device of the head it replaces
        tensors = [*self.trunk.parameters(), *self.trunk.buffers(), *self.head.parameters()]
        device = tensors[0].device if tensors else torch.device("cpu")
        self.head = _make_head(self.model_conf, self.pooled_dim, num_classes,
                               int(getattr(self.trunk, "n_pooled_layers", 1))).to(device)
        self.num_classes = int(num_classes)


def _encoder_head(conf: Mapping, pooled_dim: int) -> nn.Module:
    """The embedding layers of an encoder without classifier (num_classes 0); the last module
    (Identity) stands for the output layer, so ``SERModel.embedding`` gives their output."""
    if not TRUNKS[conf["type"]].embedding_head:  # the trunk's output is the embedding
        return nn.Sequential(nn.Identity())
    from sertool.models.resnet import fc_head, linear_embedding_head

    style = conf.get("embedding_head", "fc")
    if style == "fc":
        head = fc_head(pooled_dim, int(conf["embed_dim"]), int(conf["fc_layers"]), 1)
        head[-1] = nn.Identity()
        return head
    return linear_embedding_head(pooled_dim, int(conf["embed_dim"]), style == "linear2")


def _make_head(conf: Mapping, pooled_dim: int, num_classes: int, n_layers: int = 1
               ) -> nn.Module:
    if num_classes == 0:
        return _encoder_head(conf, pooled_dim)
    from sertool.models.heads import make_head

    return make_head(conf, pooled_dim, num_classes, own_head=TRUNKS[conf["type"]].own_head,
                     n_layers=n_layers)


# The ranges of the options (a list: each of its items). The upper bounds keep a stored
# configuration (a checkpoint's model_conf) from building a network that fills the memory
# before its weights are even compared with it.
WIDTH = (1, 1 << 16)
DEPTH = (0, 1000)
FC_LIMITS = {"embed_dim": WIDTH, "fc_layers": DEPTH}

# The trunk registry: type -> what it is made of (one entry per trunk, see TrunkType).
TRUNKS: dict[str, TrunkType] = {
    "resnet": TrunkType(
        RESNET_DEFAULTS, {"layers": (1, 1000), "channels": WIDTH, "fixed_frames": (1, 1 << 20),
                          **FC_LIMITS},
        "sertool.models.resnet", optional=RESNET_OPTIONAL, embedding_head=True),
    "cnn1d_attention": TrunkType(
        CNN1D_DEFAULTS, {"channels": WIDTH, "kernel": (1, 1001), "dropout": (0.0, 1.0),
                         "reduction": WIDTH, "spatial_kernel": (1, 1001), "dense": WIDTH},
        "sertool.models.cnn1d_attention", own_head="dense"),
    "ge2e_lstm": TrunkType(
        GE2E_DEFAULTS, {"hidden_size": WIDTH, "num_layers": (1, 1000), "embedding_size": WIDTH,
                        "partial_frames": (1, 1 << 20), "partial_rate": (1e-3, None),
                        "min_coverage": (1e-6, 1.0), "tail_frames": (0, 1 << 20),
                        "frame_shift_ms": (1e-3, None), **FC_LIMITS},
        "sertool.models.ge2e", frontend="ge2e_mel"),
    "whisper": TrunkType(
        WHISPER_DEFAULTS, {"n_mels": (1, 1024), "n_ctx": (1, 1 << 16), "d_model": WIDTH,
                           "n_heads": (1, 1024), "n_layers": (1, 1000), "layer": (-1001, 1000),
                           **FC_LIMITS},
        "sertool.models.whisper", optional=WHISPER_OPTIONAL, frontend="whisper_mel",
        hidden_states=lambda conf: int(conf["n_layers"]) + 1),
    "ssl": TrunkType(
        SSL_DEFAULTS, {"conv_dim": WIDTH, "conv_kernel": (1, 1 << 12), "conv_stride": (1, 1 << 12),
                       "hidden_size": WIDTH, "num_layers": (1, 1000), "num_heads": (1, 1024),
                       "intermediate_size": (1, 1 << 18), "pos_conv_kernel": (1, 1 << 12),
                       "pos_conv_groups": (1, 1 << 16), "pos_conv_depth": (1, 100),
                       "layer_norm_eps": (0.0, 1.0), "num_buckets": (2, 1 << 16),
                       "max_distance": (2, 1 << 24), "max_samples": (1, 1 << 30),
                       "layer": (-1001, 1000), **FC_LIMITS},
        "sertool.models.ssl", optional=LAYERED_OPTIONAL, frontend="waveform",
        hidden_states=lambda conf: int(conf["num_layers"]) + 1),
    "functionals": TrunkType(FUNCTIONALS_DEFAULTS, dict(FC_LIMITS), "sertool.models.functionals",
                             frontend="opensmile"),
}
CHOICES: dict[str, tuple[str, ...]] = {"pooling": ("stats", "tstp", "none"),
                                       "activation": ("prelu", "relu"),
                                       "embedding_head": EMBEDDING_HEADS,
                                       "head": ("fc", "linear"),
                                       "pool_layers": ("one", "all"),
                                       "layer_mix": ("concat", "weighted"),
                                       "arch": SSL_ARCHS,
                                       "feat_extract_norm": ("group", "layer")}


def every_model_key() -> list[str]:
    """Every option of every trunk type (the trainer's ``model`` table accepts them)."""
    return sorted({key for t in TRUNKS.values() for key in t.schema})


def resolve_model_conf(model_conf: Mapping, prefix: str = "") -> dict:
    """Fill defaults of the model type; unknown types and keys, values of another type than
    the default's, out of range or not among the choices are refused (``prefix`` names the
    table in the message, e.g. ``model_conf.`` of a checkpoint)."""
    from sertool.config import limit_problem, type_problem

    table = f"{prefix.rstrip('.')}: " if prefix else ""  # where table-level errors are
    if not isinstance(model_conf, Mapping):
        raise ModelConfigError(f"{table}a model configuration must be a table of options, got "
                               f"{model_conf!r}")
    kind = model_conf.get("type", "resnet")
    if not isinstance(kind, str) or kind not in TRUNKS:
        raise ModelConfigError(f"{table}unknown model type {kind!r} (known: "
                               f"{', '.join(TRUNKS)})")
    defaults = TRUNKS[kind].defaults
    schema = TRUNKS[kind].schema
    unknown = sorted(set(model_conf) - set(schema))
    if unknown:
        raise ModelConfigError(f"{table}model type {kind!r}: unknown option(s) {unknown} "
                               f"(known: {sorted(schema)})")
    problem = type_problem(schema, model_conf, prefix)
    if problem:
        raise ModelConfigError(problem)
    conf = copy.deepcopy(defaults)
    conf.update(copy.deepcopy(dict(model_conf)))
    if kind == "resnet" and not conf["layers"]:
        raise ModelConfigError(f"{prefix}layers must list at least one stage, got []")
    found = limit_problem(conf, TRUNKS[kind].limits, prefix)
    if found:
        raise ModelConfigError(found[1])
    for key, choices in CHOICES.items():
        if key in conf and conf[key] not in choices:
            raise ModelConfigError(f"{prefix}{key} must be one of {', '.join(choices)}, "
                                   f"not {conf[key]!r}")
    return conf


def build_model(model_conf: Mapping, num_classes: int, feat_dim: int) -> SERModel:
    """The network described by ``model_conf`` (see conf/model_*.toml)."""
    conf = resolve_model_conf(model_conf)
    module = importlib.import_module(TRUNKS[conf["type"]].module)
    trunk = module.trunk_from_conf(feat_dim, conf)
    head = _make_head(conf, int(trunk.pooled_dim), num_classes,
                      int(getattr(trunk, "n_pooled_layers", 1)))
    return SERModel(trunk, head, conf, num_classes, feat_dim)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def load_model_conf(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """Model configuration from a TOML file (default conf/model_resnet34.toml) + ``k=v`` sets."""
    from sertool.config import ConfigError, apply_overrides, load_toml, shipped_conf

    path = Path(path) if path is not None else shipped_conf("model_resnet34.toml")
    raw = apply_overrides(load_toml(path), overrides)
    raw = raw.get("model", raw)  # a [model] table or top-level keys
    try:
        return resolve_model_conf(raw)
    except ModelConfigError as err:
        raise ConfigError(f"{path}: {err}") from err

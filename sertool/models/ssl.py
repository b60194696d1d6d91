"""Self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM, data2vec-audio) in plain PyTorch.

The four share one network (Baevski et al. 2020; Hsu et al. 2021; Chen et al. 2022; Baevski et
al. 2022), and this module builds all of them from one configuration (``arch`` and a few
switches):

- a convolutional feature encoder on the waveform: 1-D convolutions (wav2vec2-base: 7 layers of
  512 channels, kernels 10, 3, 3, 3, 3, 2, 2, strides 5, 2, 2, 2, 2, 2, 2: one frame per 20 ms,
  a 400-sample receptive field), each followed by GELU, with ``feat_extract_norm = "group"`` a
  per-channel GroupNorm after the first convolution only (the base models), with ``"layer"`` a
  LayerNorm over the channels after every one (the large models, data2vec-audio);
- a feature projection: LayerNorm (HuBERT may leave it out) and a Linear to the model width;
- a convolutional position embedding added to the frames: one grouped convolution (kernel 128,
  16 groups, the stored weight-norm folded into a plain weight) + GELU; data2vec-audio has a
  stack of ``pos_conv_depth`` small convolutions, each + LayerNorm without affine + GELU;
- transformer layers: post-LN (``stable_layer_norm = false``: the base models) ``x = LN(x +
  attn(x)); x = LN(x + ffn(x))`` after a LayerNorm of the input, or pre-LN (``true``, the
  "stable" large models) ``x = x + attn(LN(x)); x = x + ffn(LN(x))`` with a final LayerNorm;
- WavLM's attention adds a gated relative position bias: bucketed relative distances (log-spaced
  past ``num_buckets / 4``, up to ``max_distance``) looked up in the first layer's table, and in
  every layer scaled per head and frame by a gate computed from that layer's attention input.

Why own code rather than ``transformers`` as the trunk: sertool's trunks are its own modules
(Whisper's too), so a model file holds a plain state dict that loads without transformers (the
bundles predict runs carry nothing else), the encoder exposes every hidden state to the layer
choice in the one place sertool pools them, and the import refuses what it does not build
instead of running unknown code paths. The network was written from the papers and checked
against transformers' Wav2Vec2Model, HubertModel, WavLMModel and Data2VecAudioModel: every
hidden state equal within 1e-4 on the same waveform (tests/real/test_ssl.py), which makes
``transformers`` a test dependency only.

Input: the waveform itself, stored by the ``waveform`` front-end kind as a (samples, 1) matrix
in the feature archive, so extract-feats, extract-embeddings, finetune and predict run
unchanged. The model's own input normalisation (Wav2Vec2FeatureExtractor's ``do_normalize``:
zero mean, unit variance per utterance, variance + 1e-7) is done here, in the trunk, because it
belongs to the weights (preprocessor_config.json ships with them, and wav2vec2 and HuBERT
checkpoints differ in it): one feature directory of raw samples then serves every encoder.

Hidden states are transformers' ``output_hidden_states`` (5.x): the input of the first layer
(after the projection and the position embedding, for post-LN models after their LayerNorm),
then every layer's output; for the pre-LN models the last one is before the final LayerNorm,
which ``forward`` without ``hidden_states`` (``last_hidden_state``) applies. Inputs longer than
``max_samples`` are encoded in consecutive windows of that length (attention cost grows with
the square of the length; the models were pre-trained on crops of 15-20 s) and the frames of
all windows pooled together. Not built: padded batches with attention masks (each batch row is
one utterance, as extract-embeddings runs them), wav2vec2's adapter layers, HuBERT's
``conv_pos_batch_norm``; the import refuses configurations that need them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sertool.models import SSL_ARCHS as ARCHS
from sertool.models.pooling import StatsPool

NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero_mean_unit_var_norm


def normalise_wave(wave: torch.Tensor) -> torch.Tensor:
    """(B, T) -> each row minus its mean, over sqrt(its variance + 1e-7)."""
    mean = wave.mean(dim=1, keepdim=True)
    var = wave.var(dim=1, keepdim=True, correction=0)
    return (wave - mean) / torch.sqrt(var + NORMALIZE_EPS)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class FeatureEncoder(nn.Module):
    """Waveform (B, T) -> frames (B, C, T') through the strided convolutions."""

    def __init__(self, conv_dim: Sequence[int], conv_kernel: Sequence[int],
                 conv_stride: Sequence[int], conv_bias: bool, norm: str):
        super().__init__()
        if not len(conv_dim) == len(conv_kernel) == len(conv_stride) or not conv_dim:
            raise ValueError(f"conv_dim, conv_kernel and conv_stride must have the same, nonzero "
                             f"length, got {len(conv_dim)}, {len(conv_kernel)}, "
                             f"{len(conv_stride)}")
        if norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be group or layer, not {norm!r}")
        self.kernels, self.strides = list(conv_kernel), list(conv_stride)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (width, kernel, stride) in enumerate(zip(conv_dim, conv_kernel, conv_stride,
                                                        strict=True)):
            self.convs.append(nn.Conv1d(conv_dim[i - 1] if i else 1, width, kernel, stride,
                                        bias=conv_bias))
            if norm == "layer":
                self.norms.append(ChannelLayerNorm(width))
            elif i == 0:  # one norm per channel over time, after the first convolution only
                self.norms.append(nn.GroupNorm(width, width))
            else:
                self.norms.append(nn.Identity())

    @property
    def receptive_field(self) -> int:
        """Samples that make the first frame (the shortest input)."""
        field = 1
        for kernel, stride in zip(reversed(self.kernels), reversed(self.strides), strict=True):
            field = (field - 1) * stride + kernel
        return field

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave[:, None]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.gelu(norm(conv(x)))
        return x


class PositionalConv(nn.Module):
    """wav2vec2's convolutional position embedding: (B, T, D) -> (B, T, D)."""

    def __init__(self, width: int, kernel: int, groups: int):
        super().__init__()
        if width % groups:
            raise ValueError(f"hidden_size {width} is not a multiple of pos_conv_groups {groups}")
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=groups)
        self.trim = 1 if kernel % 2 == 0 else 0  # an even kernel makes one frame too many

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, :-self.trim]
        return F.gelu(y).transpose(1, 2)


class StackedPositionalConv(nn.Module):
    """data2vec-audio's position embedding: ``depth`` x (conv, LayerNorm without affine, GELU)."""

    def __init__(self, width: int, kernel: int, groups: int, depth: int):
        super().__init__()
        if width % groups:
            raise ValueError(f"hidden_size {width} is not a multiple of pos_conv_groups {groups}")
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel, padding=kernel // 2,
                                             groups=groups) for _ in range(depth))
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        for conv in self.convs:
            y = conv(y)
            if self.trim:
                y = y[:, :, :-self.trim]
            y = F.gelu(F.layer_norm(y.transpose(1, 2), y.shape[1:2]).transpose(1, 2))
        return y.transpose(1, 2)


def relative_buckets(length: int, num_buckets: int, max_distance: int,
                     device: torch.device | None = None) -> torch.Tensor:
    """WavLM's (T, T) bucket of each key position relative to each query: half the buckets
    for keys after the query; within a half, exact distances below a quarter of the buckets,
    then log-spaced up to ``max_distance`` (the last bucket holds everything farther)."""
    positions = torch.arange(length, dtype=torch.long, device=device)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    far = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    far = torch.clamp(far, max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused q/k/v); with ``gated`` WavLM's gate on an additive
    per-head position bias."""

    def __init__(self, width: int, heads: int, gated: bool = False):
        super().__init__()
        if width % heads:
            raise ValueError(f"hidden_size {width} is not a multiple of num_heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.gated = gated
        if gated:
            self.gate_linear = nn.Linear(width // heads, 8)
            self.gate_const = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: (H, T, T) added to the attention scores (WavLM)."""
        batch, frames, width = x.shape
        q, k, v = (self.qkv(x).view(batch, frames, 3, self.heads, width // self.heads)
                   .permute(2, 0, 3, 1, 4))
        mask = None
        if bias is not None:
            # the gate reads the attention's input, split per head: two sigmoids of 4-sums
            per_head = x.view(batch, frames, self.heads, -1).transpose(1, 2)
            gates = torch.sigmoid(self.gate_linear(per_head).view(batch, self.heads, frames, 2,
                                                                  4).sum(-1))
            gate_a, gate_b = gates[..., :1], gates[..., 1:]
            mask = (gate_a * (gate_b * self.gate_const - 1.0) + 2.0) * bias[None]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(attended.transpose(1, 2).reshape(batch, frames, width))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, eps: float, pre_ln: bool,
                 gated: bool):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn = SelfAttention(width, heads, gated)
        self.attn_ln = nn.LayerNorm(width, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Linear(ffn, width))
        self.ffn_ln = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.attn(self.attn_ln(x), bias)
            return x + self.ffn(self.ffn_ln(x))
        x = self.attn_ln(x + self.attn(x, bias))
        return self.ffn_ln(x + self.ffn(x))


class SSLEncoder(nn.Module):
    """Waveform (B, T) -> frames (B, T', hidden_size), one per 20 ms for the published models."""

    def __init__(self, arch: str = "wav2vec2", conv_dim: Sequence[int] = (512,) * 7,
                 conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                 conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2), conv_bias: bool = False,
                 feat_extract_norm: str = "group", hidden_size: int = 768, num_layers: int = 12,
                 num_heads: int = 12, intermediate_size: int = 3072, pos_conv_kernel: int = 128,
                 pos_conv_groups: int = 16, pos_conv_depth: int = 1,
                 stable_layer_norm: bool = False, feat_proj_layer_norm: bool = True,
                 layer_norm_eps: float = 1e-5, num_buckets: int = 320, max_distance: int = 800):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")
        if arch == "data2vec_audio" and stable_layer_norm:
            raise ValueError("data2vec_audio has post-LN layers only (stable_layer_norm false)")
        self.arch, self.d_model, self.pre_ln = arch, hidden_size, stable_layer_norm
        self.features = FeatureEncoder(conv_dim, conv_kernel, conv_stride, conv_bias,
                                       feat_extract_norm)
        self.proj_ln = (nn.LayerNorm(conv_dim[-1], eps=layer_norm_eps) if feat_proj_layer_norm
                        else nn.Identity())
        self.proj = nn.Linear(conv_dim[-1], hidden_size)
        self.pos_conv = (StackedPositionalConv(hidden_size, pos_conv_kernel, pos_conv_groups,
                                               pos_conv_depth) if arch == "data2vec_audio"
                         else PositionalConv(hidden_size, pos_conv_kernel, pos_conv_groups))
        # post-LN: the norm of the layers' input; pre-LN: the norm of the last layer's output
        self.ln = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        gated = arch == "wavlm"
        self.layers = nn.ModuleList(
            EncoderLayer(hidden_size, num_heads, intermediate_size, layer_norm_eps,
                         stable_layer_norm, gated) for _ in range(num_layers))
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if gated:  # the table of the first layer, shared by all (as WavLM's layer 0 passes it on)
            self.rel_bias = nn.Embedding(num_buckets, num_heads)

    @property
    def min_samples(self) -> int:
        return self.features.receptive_field

    def position_bias(self, frames: int, device: torch.device) -> torch.Tensor | None:
        if self.arch != "wavlm":
            return None
        buckets = relative_buckets(frames, self.num_buckets, self.max_distance, device)
        return self.rel_bias(buckets).permute(2, 0, 1)  # (H, T, T)

    def forward(self, wave: torch.Tensor, hidden_states: bool = False
                ) -> torch.Tensor | list[torch.Tensor]:
        """The last hidden state (after the final LayerNorm of the pre-LN models), or with
        ``hidden_states`` transformers' ``output_hidden_states`` (num_layers + 1 tensors, see
        the module docstring), each (B, T', hidden_size)."""
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms (batch, samples), got {tuple(wave.shape)}")
        if wave.shape[1] < self.min_samples:
            raise ValueError(f"{wave.shape[1]} samples is shorter than the encoder's receptive "
                             f"field ({self.min_samples} samples)")
        x = self.proj(self.proj_ln(self.features(wave).transpose(1, 2)))
        x = x + self.pos_conv(x)
        if not self.pre_ln:
            x = self.ln(x)
        bias = self.position_bias(x.shape[1], x.device)
        states = [x]
        for layer in self.layers:
            x = layer(x, bias)
            states.append(x)
        if hidden_states:
            return states
        return self.ln(x) if self.pre_ln else x


class SSLTrunk(nn.Module):
    """sertool trunk: waveform features (B, T, 1) -> mean || std of hidden-state frames.

    ``layer`` indexes :meth:`SSLEncoder.forward`'s hidden states (-1, the default: the last
    layer's output); with ``pool_layers = "all"`` every hidden state is pooled and the vectors
    concatenated, layer 0 first (``n_pooled_layers`` of them; the head mixes them,
    sertool.models.heads), as :class:`sertool.models.whisper.WhisperTrunk` does.
    ``do_normalize``: each utterance (each window) normalised to zero mean and unit variance
    first. An input longer than ``max_samples`` is encoded in windows of that length, the last
    one shorter (at least the receptive field: a shorter tail joins the window before it).
    """

    def __init__(self, feat_dim: int, encoder: SSLEncoder, layer: int = -1,
                 pool_layers: str = "one", do_normalize: bool = True,
                 max_samples: int = 480_000):
        super().__init__()
        if feat_dim != 1:
            raise ValueError(f"the {encoder.arch} encoder reads the waveform (features of the "
                             f"waveform front-end kind, dimension 1), the features have {feat_dim}")
        n_states = len(encoder.layers) + 1
        if not -n_states <= layer < n_states:
            raise ValueError(f"layer {layer} is not one of the encoder's {n_states} hidden "
                             "states")
        if pool_layers not in ("one", "all"):
            raise ValueError(f"pool_layers must be one or all, not {pool_layers!r}")
        if max_samples < encoder.min_samples:
            raise ValueError(f"max_samples {max_samples} is shorter than the encoder's "
                             f"receptive field ({encoder.min_samples} samples)")
        self.encoder = encoder
        self.layer = layer
        self.all_layers = pool_layers == "all"
        self.do_normalize = do_normalize
        self.max_samples = max_samples
        self.pool = StatsPool()
        self.n_hidden_states = n_states
        self.n_pooled_layers = n_states if self.all_layers else 1
        self.pooled_dim = 2 * encoder.d_model * self.n_pooled_layers
        self.min_frames = encoder.min_samples
        # extract-embeddings makes no SpecAugment copies of a waveform (no mel bins to mask)
        self.spec_augment = False

    def windows(self, wave: torch.Tensor) -> list[torch.Tensor]:
        pieces = list(wave.split(self.max_samples, dim=1))
        if len(pieces) > 1 and pieces[-1].shape[1] < self.encoder.min_samples:
            pieces[-2:] = [torch.cat(pieces[-2:], dim=1)]
        return pieces

    def hidden_frames(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, 1) -> every hidden state of every window, each (B, ~T / 320, d_model)."""
        if x.dim() != 3 or x.shape[-1] != 1:
            raise ValueError(f"expected waveform features (batch, samples, 1), got "
                             f"{tuple(x.shape)}")
        per_window = []
        for wave in self.windows(x[..., 0]):
            if self.do_normalize:
                wave = normalise_wave(wave)
            per_window.append(self.encoder(wave, hidden_states=True))
        return [torch.cat([states[i] for states in per_window], dim=1)
                for i in range(self.n_hidden_states)]

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden_frames(x)[self.layer]

    def pooled_layers(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 1) -> (B, n_hidden_states * 2 d_model): every hidden state's mean || std,
        layer 0 first (what ``pool_layers = "all"`` gives; extract-embeddings stores it)."""
        return torch.cat([self.pool(h.transpose(1, 2)) for h in self.hidden_frames(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_layers:
            return self.pooled_layers(x)
        return self.pool(self.frames(x).transpose(1, 2))


ENCODER_KEYS = ("arch", "conv_dim", "conv_kernel", "conv_stride", "conv_bias",
                "feat_extract_norm", "hidden_size", "num_layers", "num_heads",
                "intermediate_size", "pos_conv_kernel", "pos_conv_groups", "pos_conv_depth",
                "stable_layer_norm", "feat_proj_layer_norm", "layer_norm_eps", "num_buckets",
                "max_distance")


def trunk_from_conf(feat_dim: int, conf: Mapping) -> SSLTrunk:
    """The trunk of a resolved ``ssl`` model configuration (sertool.models.TRUNKS)."""
    encoder = SSLEncoder(**{k: conf[k] for k in ENCODER_KEYS})
    return SSLTrunk(feat_dim, encoder, int(conf["layer"]), conf.get("pool_layers", "one"),
                    bool(conf["do_normalize"]), int(conf["max_samples"]))

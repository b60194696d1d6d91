"""The encoder of OpenAI's Whisper, in plain PyTorch, as a sertool trunk.

Whisper's encoder (Radford et al. 2022): two 1-D convolutions over the log-mel frames (kernel 3,
the second with stride 2, each followed by GELU), plus a stored sinusoidal position table, then
pre-LayerNorm transformer blocks (self-attention and a 4x GELU MLP, each with a residual) and a
final LayerNorm. Written from the published description and checked against transformers'
``WhisperModel`` and CTranslate2's encoder (tests/real/test_whisper.py); the weights come from
``sertool import-speaker-model whisper`` (:mod:`sertool.transfer.import_whisper`).

Two departures from OpenAI's code, neither changing a value:

- the input may be shorter than the 3000-frame (30 s) window Whisper was trained on: the
  position table is cut to the input's length (tiny.en's frames of a 4 s utterance cost under
  a seventh of a padded window's);
- a batch of inputs of different lengths carries ``lengths``: frames past an input's end are
  zeroed before each convolution and masked out of the attention, so each input gets what it
  would get alone.

The query, key and value projections are one fused Linear layer. Whisper's key projection has no
bias; the key third of the fused bias is zero after import and has no effect even when trained
(it adds the same number to every score of a query, which the softmax cancels).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sertool.models.pooling import StatsPool


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's position table: sin of ``channels / 2`` geometric timescales, then cos."""
    if channels % 2:
        raise ValueError(f"d_model must be even for the position table, got {channels}")
    step = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inverse = torch.exp(-step * torch.arange(channels // 2, dtype=torch.float32))
    angle = torch.arange(length, dtype=torch.float32)[:, None] * inverse[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def conv_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the stride-2 convolution (kernel 3, padding 1) of inputs of ``lengths``."""
    return (lengths - 1) // 2 + 1


def _zero_past(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(B, C, T) with frames at and past each input's length set to 0 (the convolutions'
    padding value), so a shorter input in a batch sees what it would see alone."""
    if lengths is None:
        return x
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
    return x * keep[:, None, :].to(x.dtype)


class WhisperBlock(nn.Module):
    """Pre-LN residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.attn_ln = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, frames, width = x.shape
        q, k, v = (self.qkv(self.attn_ln(x))
                   .view(batch, frames, 3, self.n_heads, width // self.n_heads)
                   .permute(2, 0, 3, 1, 4))
        # (B, 1, 1, T) boolean mask of the keys to attend to; Whisper scales by head_dim^-0.5
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, frames, width))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Log-mel (B, n_mels, T) -> frames (B, ceil(T / 2), d_model), T <= 2 * n_ctx."""

    def __init__(self, n_mels: int = 80, n_ctx: int = 1500, d_model: int = 384,
                 n_heads: int = 6, n_layers: int = 4):
        super().__init__()
        self.n_mels, self.n_ctx, self.d_model = n_mels, n_ctx, d_model
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        # stored (the checkpoints hold it), never trained
        self.register_buffer("positions", sinusoids(n_ctx, d_model))
        self.blocks = nn.ModuleList(WhisperBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(d_model)

    @property
    def max_frames(self) -> int:
        """Longest input (log-mel frames): Whisper's 30 s window."""
        return 2 * self.n_ctx

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None,
                hidden_states: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """The encoder's output, or with ``hidden_states`` the list transformers'
        ``output_hidden_states`` gives: the input of the first block, the outputs of the
        blocks before the last, and the last block's output after ``ln_post`` (n_layers + 1
        tensors, each (B, T', d_model)). ``lengths``: each input's frames in a padded batch
        (its outputs past ``conv_lengths(lengths)`` are not defined)."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"expected log-mels (batch, {self.n_mels}, frames), "
                             f"got {tuple(mel.shape)}")
        frames = mel.shape[-1]
        if frames > self.max_frames:
            raise ValueError(f"{frames} frames is longer than the encoder's window "
                             f"({self.max_frames} frames): cut the input into windows")
        x = F.gelu(self.conv1(_zero_past(mel, lengths)))
        x = F.gelu(self.conv2(_zero_past(x, lengths))).transpose(1, 2)
        x = x + self.positions[:x.shape[1]].to(x.dtype)
        key_mask = None
        if lengths is not None:
            valid = conv_lengths(lengths)
            key_mask = (torch.arange(x.shape[1], device=x.device)[None, :]
                        < valid[:, None])[:, None, None, :]
        states = [x]
        for block in self.blocks:
            x = block(x, key_mask)
            states.append(x)
        states[-1] = self.ln_post(x)
        return states if hidden_states else states[-1]


class WhisperTrunk(nn.Module):
    """sertool trunk: features (B, T, n_mels) -> mean || std of hidden-state frames.

    ``layer`` indexes :meth:`WhisperEncoder.forward`'s hidden states (-1, the default: the
    output after ``ln_post``); with ``pool_layers = "all"`` every hidden state is pooled and
    the vectors are concatenated, layer 0 first (``n_pooled_layers`` of them; the head mixes
    them, sertool.models.heads). An input longer than the encoder's 30 s window is encoded in
    consecutive windows of that length (the last one shorter), and the frames of all of them
    are pooled together. Statistics pooling is the same as the ResNet's.
    """

    def __init__(self, feat_dim: int, n_mels: int, n_ctx: int, d_model: int, n_heads: int,
                 n_layers: int, layer: int = -1, pool_layers: str = "one",
                 pad_to_window: bool = False):
        super().__init__()
        if feat_dim != n_mels:
            raise ValueError(f"the Whisper encoder reads {n_mels} mel bins, "
                             f"the features have {feat_dim}")
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"layer {layer} is not one of the encoder's {n_layers + 1} "
                             "hidden states")
        if pool_layers not in ("one", "all"):
            raise ValueError(f"pool_layers must be one or all, not {pool_layers!r}")
        self.encoder = WhisperEncoder(n_mels, n_ctx, d_model, n_heads, n_layers)
        self.layer = layer
        self.all_layers = pool_layers == "all"
        self.pad_to_window = bool(pad_to_window)
        self.pool = StatsPool()
        self.n_hidden_states = n_layers + 1
        self.n_pooled_layers = self.n_hidden_states if self.all_layers else 1
        self.pooled_dim = 2 * d_model * self.n_pooled_layers
        self.min_frames = 1

    def hidden_frames(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, n_mels) -> every hidden state of every window, each (B, ~T / 2, d_model)."""
        windows = x.transpose(1, 2).split(self.encoder.max_frames, dim=2)
        per_window = [self._encode(w) for w in windows]
        return [torch.cat([states[i] for states in per_window], dim=1)
                for i in range(self.n_hidden_states)]

    def _encode(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state of one window (B, n_mels, t). With ``pad_to_window`` the window
        is first filled to the encoder's 30 s with the log-mel of silence, as Whisper was
        trained (zero audio gives log10 1e-10, clamped at the maximum - 8: the normalised
        maximum - 2), and only the outputs of the input's own frames are kept."""
        frames = mel.shape[-1]
        if not self.pad_to_window or frames == self.encoder.max_frames:
            return self.encoder(mel, hidden_states=True)
        silence = mel.amax(dim=(1, 2), keepdim=True) - 2.0
        filled = torch.cat([mel, silence.expand(-1, mel.shape[1],
                                                self.encoder.max_frames - frames)], dim=2)
        keep = int(conv_lengths(torch.tensor(frames)))
        return [h[:, :keep] for h in self.encoder(filled, hidden_states=True)]

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) -> hidden state ``layer`` of every window, (B, ~T / 2, d_model)."""
        return self.hidden_frames(x)[self.layer]

    def pooled_layers(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) -> (B, n_hidden_states * 2 d_model): every hidden state's mean ||
        std, layer 0 first (what ``pool_layers = "all"`` gives; extract-embeddings stores it)."""
        return torch.cat([self.pool(h.transpose(1, 2)) for h in self.hidden_frames(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_layers:
            return self.pooled_layers(x)
        return self.pool(self.frames(x).transpose(1, 2))


def trunk_from_conf(feat_dim: int, conf: Mapping) -> WhisperTrunk:
    """The trunk of a resolved ``whisper`` model configuration (sertool.models.TRUNKS)."""
    sizes = {k: int(conf[k]) for k in ("n_mels", "n_ctx", "d_model", "n_heads", "n_layers",
                                       "layer")}
    return WhisperTrunk(feat_dim, **sizes, pool_layers=conf.get("pool_layers", "one"),
                        pad_to_window=bool(conf.get("pad_to_window", False)))

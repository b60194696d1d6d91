"""The GE2E speaker encoder (Wan et al. 2018) as Resemblyzer ships it, as a sertool trunk.

A 3-layer LSTM reads windows of ``partial_frames`` power-mel frames (front-end kind
``ge2e_mel``); its last hidden state goes through a linear layer and a ReLU and is
L2-normalised. An utterance's embedding is the L2-normalised mean of the embeddings of
overlapping windows placed as Resemblyzer's ``VoiceEncoder.embed_utterance`` places them
(``partial_rate`` windows per second; the last window is kept when it covers at least
``min_coverage`` of its frames with audio, the signal zero-padded under it). That embedding
is the trunk's pooled output, so the frozen-trunk transfer trains its new FC layers on it.

The ``ge2e_mel`` front-end appends ``tail_frames`` frames past the end of the signal (the
zero padding under the last window still overlaps the signal there); the trunk drops them to
count the utterance's frames, then uses them, and zeros beyond, as that padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn


def partial_starts(n_frames: int, partial_frames: int, frame_step: int,
                   min_coverage: float) -> list[int]:
    """First frame of every window over an utterance of ``n_frames`` frames.

    Exactly Resemblyzer's choice when ``min_coverage * partial_frames`` is a whole number of
    frames (0.75 x 160 = 120): it decides on samples, and a frame count fixes the decision then.
    """
    steps = max(1, n_frames - partial_frames + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    # frames of audio under the last window, counted as Resemblyzer's sample-based coverage
    covered = n_frames - 1 - starts[-1]
    if len(starts) > 1 and covered < min_coverage * partial_frames:
        starts.pop()
    return starts


class GE2ETrunk(nn.Module):
    """(B, T, n_mels) power mels -> (B, embedding_size) L2-normalised utterance embeddings."""

    def __init__(self, feat_dim: int, hidden_size: int = 256, num_layers: int = 3,
                 embedding_size: int = 256, partial_frames: int = 160, partial_rate: float = 1.3,
                 min_coverage: float = 0.75, tail_frames: int = 2, frame_shift_ms: float = 10.0):
        super().__init__()
        if not 0 < min_coverage <= 1:
            raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
        self.lstm = nn.LSTM(feat_dim, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, embedding_size)
        self.partial_frames = int(partial_frames)
        self.frame_step = int(round(1000.0 / frame_shift_ms / partial_rate))
        if not 0 < self.frame_step <= self.partial_frames:
            raise ValueError(f"partial_rate {partial_rate} gives a window step of "
                             f"{self.frame_step} frames; it must be 1..{self.partial_frames}")
        self.min_coverage = float(min_coverage)
        self.tail_frames = int(tail_frames)
        self.pooled_dim = int(embedding_size)

    def partials(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, windows, embedding_size): each window's normalised embedding."""
        n_frames = max(1, x.shape[1] - self.tail_frames)
        starts = partial_starts(n_frames, self.partial_frames, self.frame_step,
                                self.min_coverage)
        need = starts[-1] + self.partial_frames
        if x.shape[1] < need:  # the power mel of zero padding is exactly zero
            x = nn.functional.pad(x, (0, 0, 0, need - x.shape[1]))
        windows = torch.stack([x[:, s:s + self.partial_frames] for s in starts], dim=1)
        _, (hidden, _) = self.lstm(windows.flatten(0, 1))
        embeds = torch.relu(self.linear(hidden[-1]))
        embeds = embeds / torch.linalg.vector_norm(embeds, dim=-1, keepdim=True)
        return embeds.view(x.shape[0], len(starts), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.partials(x).mean(dim=1)
        return mean / torch.linalg.vector_norm(mean, dim=-1, keepdim=True)


def trunk_from_conf(feat_dim: int, conf: Mapping) -> GE2ETrunk:
    """The trunk of a resolved ``ge2e_lstm`` model configuration (sertool.models.TRUNKS)."""
    keys = inspect.signature(GE2ETrunk).parameters.keys() - {"feat_dim"}
    return GE2ETrunk(feat_dim, **{k: conf[k] for k in keys})

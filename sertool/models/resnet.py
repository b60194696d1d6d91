"""ResNet with statistics pooling: the speaker network of the paper (ResNet34, BasicBlock).

Written after WeSpeaker's ``wespeaker/models/resnet.py`` in spirit (BasicBlock, a 3x3 stem,
stages with strides 1/2/2/2 on the (frequency, time) plane, statistics pooling over time of
the flattened channel x frequency map) with the paper's choices: PReLU instead of ReLU in every
layer, batch norm in every layer, 32 first-stage channels (32/64/128/256) and segment-level
FC layers (PReLU + BN) before the output layer.

Options for importing WeSpeaker's ResNets (``sertool import-speaker-model wespeaker``): ReLU
activations (``activation = "relu"``), WeSpeaker's TSTP pooling (``pooling = "tstp"``) and its
segment layers (:func:`linear_embedding_head`). The convolutional layers are the same.

Input convention (all sertool models): features ``(B, T, F)`` - batch, frames, feature dim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from sertool.models.pooling import FlattenPool, StatsPool, fix_length

ACTIVATIONS = ("prelu", "relu")


def activation(kind: str, channels: int) -> nn.Module:
    """The paper's PReLU (one slope per channel) or WeSpeaker's parameter-free ReLU."""
    if kind not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, not {kind!r}")
    return nn.PReLU(channels) if kind == "prelu" else nn.ReLU()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, act: str = "prelu"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = activation(act, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation(act, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """Frame-level ResNet + pooling: (B, T, F) -> (B, pooled_dim)."""

    def __init__(self, feat_dim: int, layers: list[int], channels: int = 32,
                 pooling: str = "stats", fixed_frames: int = 200, act: str = "prelu"):
        super().__init__()
        if pooling not in ("stats", "tstp", "none"):
            raise ValueError(f"resnet pooling must be 'stats', 'tstp' or 'none', not {pooling!r}")
        self.pooling_type = pooling
        self.fixed_frames = int(fixed_frames)
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), activation(act, channels))
        stages, in_planes = [], channels
        for i, n in enumerate(layers):
            planes, stride = channels * 2 ** i, (1 if i == 0 else 2)
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if j == 0 else 1, act))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        n_down = max(0, len(layers) - 1)
        self.min_frames = 2 ** n_down  # one output frame; shorter input still runs (padding)
        freq_out = feat_dim
        for _ in range(n_down):
            freq_out = math.floor((freq_out - 1) / 2) + 1
        self.frame_dim = in_planes * freq_out
        if pooling in ("stats", "tstp"):
            self.pool: nn.Module = StatsPool(
                variance="population" if pooling == "stats" else "tstp")
            self.pooled_dim = 2 * self.frame_dim
        else:
            t_out = self.fixed_frames
            for _ in range(n_down):
                t_out = math.floor((t_out - 1) / 2) + 1
            self.pool = FlattenPool()
            self.pooled_dim = self.frame_dim * t_out

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> frame-level map (B, C*F', T')."""
        if self.pooling_type == "none":
            x = fix_length(x, self.fixed_frames)
        out = self.stages(self.stem(x.transpose(1, 2).unsqueeze(1)))  # (B, C, F', T')
        return out.flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.frames(x))

    def time_context(self) -> tuple[int, int]:
        """(stride, receptive field) of the frame-level map along time, in input frames, from
        the 3x3 convolutions of the main path in order (1x1 shortcuts widen nothing)."""
        field, stride = 1, 1
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size[1] > 1:
                field += (module.kernel_size[1] - 1) * stride
                stride *= module.stride[1]
        return stride, field

    def pooled_chunked(self, x: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """``forward(x)`` of a long input in chunks of about ``chunk_frames`` input frames, so
        that memory does not grow with its length (statistics pooling only).

        Each chunk is run with half a receptive field of real input on both sides and only
        its own output frames are pooled, through running sums: every pooled frame sees
        exactly the input it sees in one pass (chunk starts are multiples of the stride, so the
        output grid is the same), and the result equals ``forward(x)`` up to float rounding.
        """
        return self.pooled_stream(iter([x]), x.shape[1], chunk_frames)

    def pooled_stream(self, blocks: Iterable[torch.Tensor], total_frames: int,
                      chunk_frames: int) -> torch.Tensor:
        """:meth:`pooled_chunked` of an input given as consecutive blocks ``(B, n, F)`` of
        ``total_frames`` frames in all (features made a block at a time): only the frames of
        the chunk being run, its context and the block being read are held."""
        blocks = iter(blocks)
        if self.pooling_type == "none" or total_frames <= chunk_frames:
            return self(torch.cat(list(blocks), dim=1))
        stride, field = self.time_context()
        context = math.ceil((field // 2) / stride) * stride
        step = max(stride, chunk_frames // stride * stride)
        held, held_from = None, 0  # input frames [held_from, held_from + held.shape[1])
        count, total, total_sq = 0, None, None
        for start in range(0, total_frames, step):
            end = min(total_frames, start + step)
            first, last = max(0, start - context), min(total_frames, end + context)
            while held is None or held_from + held.shape[1] < last:
                block = next(blocks, None)
                if block is None:
                    got = held_from + (0 if held is None else held.shape[1])
                    raise ValueError(f"the input ended at frame {got}, before the "
                                     f"{total_frames} frames it was said to have")
                held = block if held is None else torch.cat([held, block], dim=1)
            out = self.frames(held[:, first - held_from:last - held_from])
            skip = (start - first) // stride
            core = out[:, :, skip:skip + math.ceil(end / stride) - start // stride].double()
            part, part_sq = core.sum(dim=-1), (core * core).sum(dim=-1)
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
            count += core.shape[-1]
            keep_from = max(0, end - context)  # the next chunk's first frame
            held, held_from = held[:, keep_from - held_from:], keep_from
        return self.pool.from_sums(count, total, total_sq)


def fc_head(in_dim: int, embed_dim: int, n_hidden: int, num_classes: int) -> nn.Sequential:
    """Segment-level FC layers (Linear + BN + PReLU) then the linear output layer."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, embed_dim), nn.BatchNorm1d(embed_dim), nn.PReLU(embed_dim)]
        dim = embed_dim
    layers.append(nn.Linear(dim, num_classes))
    return nn.Sequential(*layers)


def linear_embedding_head(in_dim: int, embed_dim: int, two_layers: bool) -> nn.Sequential:
    """WeSpeaker's segment layers: ``seg_1`` (Linear) and, with ``two_emb_layer``, ReLU,
    batch norm without affine parameters and ``seg_2``; the embedding is the last one's output.
    The final Identity stands for the output layer that an imported encoder does not have."""
    layers: list[nn.Module] = [nn.Linear(in_dim, embed_dim)]
    if two_layers:
        layers += [nn.ReLU(), nn.BatchNorm1d(embed_dim, affine=False),
                   nn.Linear(embed_dim, embed_dim)]
    layers.append(nn.Identity())
    return nn.Sequential(*layers)


def trunk_from_conf(feat_dim: int, conf: Mapping) -> ResNetTrunk:
    """The trunk of a resolved ``resnet`` model configuration (sertool.models.TRUNKS)."""
    return ResNetTrunk(feat_dim, list(conf["layers"]), int(conf["channels"]), conf["pooling"],
                       int(conf["fixed_frames"]), conf.get("activation", "prelu"))

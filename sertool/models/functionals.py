"""The ``functionals`` trunk: fixed features, no parameters (a classical baseline).

Its pooled output is the utterance's feature vector itself: the mean over the frames of the
features, which for the ``opensmile`` front-end (one 1-frame matrix of functionals per
utterance, :mod:`sertool.frontend.functionals`) is exactly the functionals vector; several
frames (a matrix made otherwise) are averaged. Made by ``sertool import-speaker-model
functionals OUT`` (:mod:`sertool.transfer.import_functionals`) and used with ``finetune --init
OUT/model.pt --set head.kind=linear``, the frozen-trunk system on it is "standardised functionals
+ multinomial logistic regression", the first baseline of SER papers, through the same folds,
selection, scoring, bundles and predict as every other system.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class FunctionalsTrunk(nn.Module):
    """(B, T, F) -> (B, F): the mean over frames (T = 1: the vector as it is)."""

    min_frames = 1
    # No SpecAugment copies (extract-embeddings and finetune refuse a policy): its masks blank
    # 10 ms frames and mel bands of a spectrogram; a functionals vector has neither (a "time"
    # mask over its one frame would blank the utterance, a "band" mask arbitrary statistics).
    spec_augment = False
    reads = "one vector of openSMILE functionals per utterance (no frames or mel bands)"

    def __init__(self, feat_dim: int):
        super().__init__()
        self.pooled_dim = int(feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def trunk_from_conf(feat_dim: int, conf: Mapping) -> FunctionalsTrunk:
    """The trunk of a resolved ``functionals`` model configuration (sertool.models.TRUNKS)."""
    return FunctionalsTrunk(feat_dim)

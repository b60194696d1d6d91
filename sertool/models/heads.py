"""The heads on a trunk's pooled vector: the one home of what ``model_conf`` says about them.

Every head is an ``nn.Sequential`` whose last module is the output layer, so
``SERModel.embedding`` (``head[:-1]``) is the input of that layer.

- ``fc``: the paper's segment-level FC layers (Linear + BN + PReLU, ``embed_dim`` wide,
  ``fc_layers`` of them) and the output layer; the 1D-CNN's own head (``dense``) for it;
- ``linear``: the input standardised (mean and std of the training vectors, stored in the
  weights) and one Linear layer: multinomial logistic regression, trained with an L2 penalty by
  :mod:`sertool.transfer.linear`. A transfer system should never lose to the logistic
  regression a user could run on its own embeddings; this head is that model, in the bundle.

A trunk that pools several hidden layers (``pool_layers = "all"``: every layer's mean ‖ std,
layer after layer) may mix them first (``layer_mix = "weighted"``): each layer's vector is
standardised, then a learned softmax-weighted sum of the layers feeds the head (the SUPERB /
EmoBox way); ``"concat"`` (the default) gives the head the concatenation itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

HEAD_KINDS = ("fc", "linear")
LAYER_MIXES = ("concat", "weighted")


class Standardise(nn.Module):
    """(B, D) -> (x - mean) / std with the training vectors' statistics (buffers: they travel
    in the weights; set by :func:`fit_standardisers` before training, never trained)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(dim=0))
        # a constant dimension (a dead channel) is left unscaled instead of divided by 0
        self.std.copy_(x.std(dim=0, unbiased=False).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LayerMix(nn.Module):
    """(B, L * D) -> (B, D): softmax(w) weighted sum of L layer vectors (w starts equal)."""

    def __init__(self, n_layers: int, dim: int):
        super().__init__()
        self.n_layers, self.dim = int(n_layers), int(dim)
        self.weights = nn.Parameter(torch.zeros(self.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = x.view(x.shape[0], self.n_layers, self.dim)
        return (torch.softmax(self.weights, dim=0)[None, :, None] * layers).sum(dim=1)

    def layer_weights(self) -> list[float]:
        return torch.softmax(self.weights.detach(), dim=0).tolist()


def fit_standardisers(head: nn.Module, x_train: torch.Tensor) -> None:
    """Set the head's input standardisation from the training vectors (a no-op for a head
    without one: the paper's FC head on a single layer)."""
    first = head[0] if isinstance(head, nn.Sequential) and len(head) else None
    if isinstance(first, Standardise):
        with torch.no_grad():
            first.fit(x_train)


def make_head(conf: Mapping, pooled_dim: int, num_classes: int, *, own_head: str,
              n_layers: int = 1) -> nn.Sequential:
    """The head of ``conf`` (a resolved model configuration) on ``pooled_dim`` inputs for
    ``num_classes`` classes. ``own_head`` is the trunk type's FC head (``fc`` or ``dense``,
    sertool.models' registry); ``n_layers`` the layers the pooled vector holds."""
    kind, mix = conf.get("head", "fc"), conf.get("layer_mix", "concat")
    modules: list[nn.Module] = []
    dim = pooled_dim
    if kind == "linear" or mix == "weighted":
        modules.append(Standardise(pooled_dim))
    if mix == "weighted" and n_layers > 1:
        dim = pooled_dim // n_layers
        modules.append(LayerMix(n_layers, dim))
    if kind == "linear":
        return nn.Sequential(*modules, nn.Linear(dim, num_classes))
    if own_head == "dense":
        from sertool.models.cnn1d_attention import dense_head

        body = dense_head(dim, int(conf["dense"]), num_classes)
    else:
        from sertool.models.resnet import fc_head

        body = fc_head(dim, int(conf["embed_dim"]), int(conf["fc_layers"]), num_classes)
    return nn.Sequential(*modules, *body) if modules else body

"""The linear head (``head.kind = "linear"``): multinomial logistic regression on the frozen
trunk's standardised pooled vector, trained full-batch with L-BFGS.

The objective is scikit-learn's ``LogisticRegression(C=c)`` divided by ``c * N``: the mean
cross-entropy plus ``||W||^2 / (2 c N)`` (the bias and a layer mix's weights are not
penalised), so ``linear_c`` reads as scikit-learn's C. Standardisation is part of the head (a
:class:`sertool.models.heads.Standardise` with the training vectors' statistics), so a bundle
scores raw pooled vectors exactly as the fit saw them. The weights start at zero: the fit is
deterministic, and for a plain linear head (convex) it does not depend on a seed at all.
"""

from __future__ import annotations

import torch
from torch import nn

from sertool.models.heads import LayerMix, fit_standardisers
from sertool.nnet.balance import loss_weights

# L-BFGS iterations. Measured on RAVDESS (Whisper tiny.en, every layer: 3840 dims, 3600
# vectors, 8 classes): after 100 the objective is within 1e-4 of its value after 300 and the
# test decisions are the same, at a third of the time (~15 s a fit on one loaded core).
MAX_ITER = 100


def fit_linear(head: nn.Sequential, x: torch.Tensor, y: torch.Tensor, c: float, *,
               max_iter: int = MAX_ITER, class_weights: str = "none") -> float:
    """Fit ``head`` (Standardise, optionally LayerMix, Linear) to ``(x, y)`` with strength
    ``c``; returns the final objective. ``x`` (N, D) float, ``y`` (N,) long.

    ``class_weights = "balanced"``: the cross-entropy of each vector weighted by
    ``N / (K * n_c)`` of its class (sertool.nnet.balance, from ``y``: the training part), as
    scikit-learn's ``class_weight="balanced"``; the objective is then their weighted sum over
    N (not the weighted mean), so the penalty keeps its meaning as C."""
    output = head[-1]
    if not isinstance(output, nn.Linear):
        raise TypeError(f"a linear head ends with nn.Linear, not {type(output).__name__}")
    # float64 while fitting: a float32 objective stops L-BFGS ~1e-3 short of the optimum at
    # weak regularisation (scikit-learn's is float64); the head is float32 again afterwards
    dtype = next(head.parameters()).dtype
    head.to(torch.float64)
    x = x.to(torch.float64)
    fit_standardisers(head, x)
    with torch.no_grad():
        output.weight.zero_()
        output.bias.zero_()
        for module in head:
            if isinstance(module, LayerMix):
                module.weights.zero_()
    penalty = 1.0 / (2.0 * float(c) * len(x))
    weights = loss_weights(class_weights, y.numpy(), output.out_features)
    # per-vector weights over N: sum_i w_i CE_i / N, scikit-learn's objective divided by C N
    sample_w = (None if weights is None
                else torch.as_tensor(weights, dtype=torch.float64)[y])

    def data_loss() -> torch.Tensor:
        if sample_w is None:  # the unweighted fit exactly as before
            return nn.functional.cross_entropy(head(x), y)
        return (nn.functional.cross_entropy(head(x), y, reduction="none") * sample_w).mean()

    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")
    head.train()

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = data_loss() + penalty * output.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():  # step() returns the objective where it started
        final = float(data_loss() + penalty * output.weight.pow(2).sum())
    head.to(dtype).eval()
    return final


def heldout_scores(head: nn.Sequential, x: torch.Tensor, y: torch.Tensor,
                   n_classes: int) -> dict:
    """Held-out UA, WA and loss of a fitted head (the rows sertool.metrics.best_epoch picks
    among)."""
    from sertool.metrics import confusion_matrix, unweighted_accuracy, weighted_accuracy

    head.eval()
    with torch.no_grad():
        logits = head(x)
        loss = float(nn.functional.cross_entropy(logits, y))
    cm = confusion_matrix(y.numpy(), logits.argmax(dim=1).numpy(), n_classes)
    return {"valid_loss": loss, "valid_ua": unweighted_accuracy(cm),
            "valid_wa": weighted_accuracy(cm)}

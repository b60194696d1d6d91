"""The trunk registry, the heads (linear, layer mix) and a trunk that pools every layer."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch

import sertool.models as models
from sertool.config import CONF_DIR
from sertool.models import TRUNKS, TrunkType, build_model, load_model_conf, resolve_model_conf
from sertool.models.heads import LayerMix, Standardise, make_head
from sertool.nnet.checkpoint import load_model, save_checkpoint
from sertool.transfer.linear import fit_linear, heldout_scores

SMALL_WHISPER = {"type": "whisper", "n_mels": 16, "n_ctx": 20, "d_model": 32, "n_heads": 4,
                 "n_layers": 3}

# what the code before the registry resolved (443b684): existing runs must resume
BEFORE_THE_REGISTRY = {
    "model_cnn1d.toml": {"type": "cnn1d_attention", "channels": 256, "kernel": 7,
                         "dropout": 0.2, "reduction": 16, "spatial_kernel": 7, "dense": 64},
    "model_resnet34.toml": {"type": "resnet", "layers": [3, 4, 6, 3], "channels": 32,
                            "pooling": "stats", "fixed_frames": 200, "embed_dim": 256,
                            "fc_layers": 2},
    "model_resnet_tiny.toml": {"type": "resnet", "layers": [1, 1, 1], "channels": 8,
                               "pooling": "stats", "fixed_frames": 200, "embed_dim": 64,
                               "fc_layers": 1},
}


def test_resolved_configurations_are_byte_identical_to_before_the_registry():
    for name, expected in BEFORE_THE_REGISTRY.items():
        assert json.dumps(load_model_conf(CONF_DIR / name)) == json.dumps(expected)
    assert json.dumps(resolve_model_conf({"type": "whisper"})) == json.dumps(
        {"type": "whisper", "n_mels": 80, "n_ctx": 1500, "d_model": 384, "n_heads": 6,
         "n_layers": 4, "layer": -1, "embed_dim": 256, "fc_layers": 2})
    assert list(resolve_model_conf({"type": "ge2e_lstm"})) == [
        "type", "hidden_size", "num_layers", "embedding_size", "partial_frames",
        "partial_rate", "min_coverage", "tail_frames", "frame_shift_ms", "embed_dim",
        "fc_layers"]


def test_a_new_trunk_is_one_module_and_one_registry_entry(tmp_path, monkeypatch):
    (tmp_path / "toy_trunk.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class Toy(nn.Module):
            def __init__(self, feat_dim, width):
                super().__init__()
                self.proj = nn.Linear(feat_dim, width)
                self.pooled_dim = width

            def forward(self, x):
                return self.proj(x).mean(dim=1)

        def trunk_from_conf(feat_dim, conf):
            return Toy(feat_dim, int(conf["width"]))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(TRUNKS, "toy", TrunkType(
        {"type": "toy", "width": 6, "embed_dim": 5, "fc_layers": 1},
        {"width": (1, 64), "embed_dim": (1, 64), "fc_layers": (0, 4)}, "toy_trunk"))
    model = build_model({"type": "toy"}, 3, feat_dim=4)
    assert model(torch.randn(2, 7, 4)).shape == (2, 3)
    save_checkpoint(tmp_path / "m.pt", model, feat_dim=4, with_rng=False)
    again, meta = load_model(tmp_path / "m.pt")
    assert meta["model_conf"] == {"type": "toy", "width": 6, "embed_dim": 5, "fc_layers": 1}
    x = torch.randn(1, 9, 4)
    assert torch.equal(model.eval()(x), again.eval()(x))
    with pytest.raises(models.ModelConfigError,
                       match=r"width = 65 is out of range \(must be between 1 and 64\)"):
        resolve_model_conf({"type": "toy", "width": 65})
    # the linear head and the trainer's model table know it without another edit
    assert isinstance(build_model({"type": "toy", "head": "linear"}, 3, 4).head[0], Standardise)
    assert "width" in models.every_model_key()
    sys.modules.pop("toy_trunk", None)


def test_options_only_layered_trunks_have_are_refused_elsewhere():
    with pytest.raises(models.ModelConfigError, match="unknown option.*pool_layers"):
        resolve_model_conf({"type": "resnet", "pool_layers": "all"})
    with pytest.raises(models.ModelConfigError, match="head must be one of fc, linear"):
        resolve_model_conf({"type": "resnet", "head": "svm"})
    assert TRUNKS["whisper"].layered and not TRUNKS["resnet"].layered


def test_a_trunk_pooling_every_layer_concatenates_each_layers_statistics():
    torch.manual_seed(0)
    every = build_model({**SMALL_WHISPER, "pool_layers": "all"}, 0, 16).eval()
    x = torch.randn(2, 30, 16)
    with torch.no_grad():
        pooled = every.pooled(x)
        assert pooled.shape == (2, 4 * 64) and every.pooled_dim == 256
        for layer in range(4):
            one = build_model({**SMALL_WHISPER, "layer": layer}, 0, 16).eval()
            one.trunk.load_state_dict(every.trunk.state_dict())
            assert torch.allclose(pooled[:, layer * 64:(layer + 1) * 64], one.pooled(x),
                                  atol=1e-6)
        assert torch.equal(every.trunk.pooled_layers(x), pooled)
    # the last hidden state is the default trunk's output (after ln_post)
    last = build_model(SMALL_WHISPER, 0, 16).eval()
    last.trunk.load_state_dict(every.trunk.state_dict())
    with torch.no_grad():
        assert torch.allclose(pooled[:, 192:], last.pooled(x), atol=1e-6)


def test_layer_mix_starts_as_the_mean_of_the_layers_and_learns_weights():
    mix = LayerMix(3, 2)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    assert torch.allclose(mix(x), torch.tensor([[3.0, 4.0]]))
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 100.0]))
    assert torch.allclose(mix(x), torch.tensor([[5.0, 6.0]]))
    assert mix.layer_weights()[2] == pytest.approx(1.0)


def _three_classes(n: int = 300, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, dim)) * 1.5
    x = centres[y] + rng.normal(size=(n, dim)) * np.linspace(0.5, 20, dim)  # unequal scales
    x[:, 0] += 1000.0  # a large offset: the standardisation must absorb it
    return x.astype(np.float32), y


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_the_linear_head_is_scikit_learns_logistic_regression(c):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _three_classes()
    scaler = StandardScaler().fit(x)
    # newton-cg: scikit-learn's lbfgs stops ~1e-4 short of the optimum at C = 1
    reference = LogisticRegression(C=c, solver="newton-cg", max_iter=5000, tol=1e-10).fit(
        scaler.transform(x), y)
    x_test, _ = _three_classes(50, seed=1)
    expected = reference.predict_proba(scaler.transform(x_test))

    head = make_head({"head": "linear"}, 6, 3, own_head="fc")
    objective = fit_linear(head, torch.as_tensor(x), torch.as_tensor(y), c)
    assert objective < np.log(3) - 0.1  # it moved from the zero weights' log(3)
    with torch.no_grad():
        got = torch.softmax(head(torch.as_tensor(x_test)), dim=1).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    scores = heldout_scores(head, torch.as_tensor(x), torch.as_tensor(y), 3)
    assert scores["valid_ua"] > 0.5  # separable enough; and the keys best_epoch reads
    assert set(scores) == {"valid_loss", "valid_ua", "valid_wa"}


def test_standardise_leaves_a_constant_dimension_finite():
    layer = Standardise(2)
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    layer.fit(x)
    out = layer(x)
    assert torch.isfinite(out).all() and torch.equal(out[:, 1], torch.zeros(2))


def test_whisper_pad_to_window_pools_the_inputs_frames_of_a_silence_filled_window():
    torch.manual_seed(0)
    cut = build_model({**SMALL_WHISPER, "pool_layers": "all"}, 0, 16).eval()
    padded = build_model({**SMALL_WHISPER, "pool_layers": "all", "pad_to_window": True}, 0,
                         16).eval()
    padded.trunk.load_state_dict(cut.trunk.state_dict())
    x = torch.randn(1, 11, 16)
    silence = x.max() - 2.0  # the normalised log-mel of zero audio after the clamp
    window = torch.cat([x, silence.expand(1, 40 - 11, 16)], dim=1)
    with torch.no_grad():
        states = cut.trunk.encoder(window.transpose(1, 2), hidden_states=True)
        by_hand = torch.cat([cut.trunk.pool(h[:, :6].transpose(1, 2)) for h in states], dim=1)
        got = padded.pooled(x)
        assert torch.allclose(got, by_hand, atol=1e-6)  # 11 frames -> 6 after the stride
        assert not torch.allclose(got, cut.pooled(x), atol=1e-3)  # the context changed
        full = torch.randn(1, 40, 16)  # a whole window is not filled
        assert torch.allclose(padded.pooled(full), cut.pooled(full), atol=1e-6)

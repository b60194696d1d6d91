"""Shapes, parameter counts and head replacement of the sertool networks."""

from __future__ import annotations

import pytest
import torch

from sertool.config import CONF_DIR, ConfigError
from sertool.models import (
    ModelConfigError,
    build_model,
    count_parameters,
    load_model_conf,
)


@pytest.fixture(scope="module")
def resnet34():
    torch.manual_seed(0)
    return build_model(load_model_conf(CONF_DIR / "model_resnet34.toml"), 7, 128).eval()


def test_resnet34_any_length_one_vector_per_segment(resnet34):
    assert resnet34.min_frames == 8
    with torch.inference_mode():
        for frames in (resnet34.min_frames, 37, 300):
            x = torch.randn(2, frames, 128)
            assert resnet34(x).shape == (2, 7)
            assert resnet34.pooled(x).shape == (2, resnet34.pooled_dim)
    # 256 channels x 16 frequency bins (128 / 8), mean || std
    assert resnet34.pooled_dim == 2 * 256 * 16


def test_resnet34_parameter_counts(resnet34):
    # numbers quoted in docs/RESULTS.md
    assert count_parameters(resnet34.trunk) == 5_327_168
    head_without_output = count_parameters(resnet34.head[:-1])
    assert head_without_output == 8192 * 256 + 256 + 2 * 256 + 256 + 256 * 256 + 256 + 2 * 256 + 256
    at80 = build_model(load_model_conf(CONF_DIR / "model_resnet34.toml"), 7, 80)
    assert at80.pooled_dim == 2 * 256 * 10


def test_pooled_is_independent_of_the_other_batch_members(resnet34):
    x = torch.randn(3, 50, 128)
    with torch.inference_mode():
        full = resnet34.pooled(x)
        one = resnet34.pooled(x[1:2])
    torch.testing.assert_close(full[1:2], one, atol=1e-4, rtol=1e-4)


def test_head_forward_and_embedding():
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 5, 40).eval()
    x = torch.randn(4, 60, 40)
    with torch.inference_mode():
        torch.testing.assert_close(model.head_forward(model.pooled(x)), model(x))
        assert model.embedding(x).shape == (4, 64)


def test_replace_head_keeps_trunk_new_random_fc():
    torch.manual_seed(1)
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 5, 40)
    trunk_before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    w_before = model.head[0].weight.clone()
    model.replace_head(3)
    assert model.num_classes == 3 and model.head[-1].out_features == 3
    assert not torch.equal(model.head[0].weight, w_before)
    for k, v in model.trunk.state_dict().items():
        assert torch.equal(v, trunk_before[k])
    assert model(torch.randn(2, 30, 40)).shape == (2, 3)


def test_no_pooling_variant_fixed_length():
    conf = load_model_conf(CONF_DIR / "model_resnet_tiny.toml", ["pooling='none'",
                                                                  "fixed_frames=64"])
    model = build_model(conf, 4, 40).eval()
    assert model.pooled_dim == 32 * 10 * 16  # C x F/4 x T/4, flattened
    with torch.inference_mode():
        for frames in (10, 64, 200):  # padded / exact / truncated
            assert model(torch.randn(2, frames, 40)).shape == (2, 4)
        long = torch.randn(1, 100, 40)
        torch.testing.assert_close(model(long), model(long[:, :64]))


def test_cnn1d_attention_shapes_and_size():
    model = build_model(load_model_conf(CONF_DIR / "model_cnn1d.toml"), 8, 40).eval()
    assert model.pooled_dim == 256
    with torch.inference_mode():
        assert model(torch.randn(3, 1, 40)).shape == (3, 8)
        assert model(torch.randn(3, 250, 40)).shape == (3, 8)
    # two Conv1D(256, k=7): 40*256*7+256 and 256*256*7+256, plus BN, attention, dense 64
    assert count_parameters(model) == 557_415


def test_bad_configs_and_inputs():
    with pytest.raises(ModelConfigError, match="unknown model type"):
        build_model({"type": "transformer"}, 2, 40)
    with pytest.raises(ModelConfigError, match="unknown option"):
        build_model({"type": "resnet", "widht": 3}, 2, 40)
    with pytest.raises(ConfigError, match="model_cnn1d.toml"):
        load_model_conf(CONF_DIR / "model_cnn1d.toml", ["layers=[1]"])
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 2, 40)
    with pytest.raises(ValueError, match="expected features"):
        model(torch.randn(2, 40, 30))

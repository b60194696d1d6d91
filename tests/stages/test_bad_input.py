"""The bad-input battery (issue 14): one row per kind of bad input a user can hand sertool, run
through the real CLI. Each row says how to make the bad input, the command, the exit status and a
regex the error must match (naming the file, and the line where there is one); every row also
checks that nothing else was lost: the files there before are byte-identical afterwards, no
output appeared beyond what the row allows, and no temporary file was left.

Labels, manifest encodings, non-ASCII ids and predict's warnings are tested in their own files;
read-only and full disks are in test_output_errors.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from battery import (  # noqa: F401 - shared_inputs: the module's inputs, made once
    SR,
    Row,
    Shared,
    _tone,
    _train,
    check_row,
    shared_inputs,
)

# ----------------------------------------------------------------- what a row is


def _data(tmp: Path, shared: Shared, *, wav_scp: str | None = None, utt2spk: str | None = None,
          spk2utt: str | None = None, extra: dict[str, str] | None = None,
          name: str = "data", without: str | None = None) -> Path:
    """A data directory of the two shared tones; any file can be replaced (None: default) or
    left out (``without``)."""
    data = tmp / name
    data.mkdir(parents=True)
    a, b = shared.audio / "a.wav", shared.audio / "b.wav"
    files = {
        "wav.scp": f"spk1-u1 {a}\nspk1-u2 {b}\n" if wav_scp is None else wav_scp,
        "utt2spk": "spk1-u1 spk1\nspk1-u2 spk1\n" if utt2spk is None else utt2spk,
        "spk2utt": "spk1 spk1-u1 spk1-u2\n" if spk2utt is None else spk2utt,
        **(extra or {}),
    }
    for name_, text in files.items():
        if name_ != without:
            (data / name_).write_text(text, encoding="utf-8")
    return data


def _put(path: Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to ``path``; returns ``path`` (for the rows' lambdas)."""
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _one_utt(tmp: Path, shared: Shared, wav: Path, segment: str | None = None) -> Path:
    """A data dir of one utterance ``spk1-u1`` reading ``wav`` (through a segment if given)."""
    if segment:
        return _data(tmp, shared, wav_scp=f"rec1 {wav}\n", utt2spk="spk1-u1 spk1\n",
                     spk2utt="spk1 spk1-u1\n", extra={"segments": f"spk1-u1 rec1 {segment}\n"})
    return _data(tmp, shared, wav_scp=f"spk1-u1 {wav}\n", utt2spk="spk1-u1 spk1\n",
                 spk2utt="spk1 spk1-u1\n")


def _extract_strict(tmp: Path, shared: Shared, wav: Path, segment: str | None = None) -> list:
    return ["extract-feats", _one_utt(tmp, shared, wav, segment), tmp / "feats", "--strict",
            "--no-progress"]


def _truncate(tmp: Path) -> Path:
    wav = _tone(tmp / "cut.wav", seconds=2.0)
    raw = wav.read_bytes()
    wav.write_bytes(raw[: 44 + (len(raw) - 44) // 3])  # the header still promises 2 s
    return wav


def _pickled(tmp: Path) -> Path:
    bad = tmp / "model.pt"  # any object beyond tensors and plain containers
    torch.save({"format": "x", "obj": argparse.Namespace(run="code")}, bad)
    return bad


def _bundle_with(tmp: Path, shared: Shared, **files: str | bytes) -> Path:
    """A copy of the shared bundle with some files replaced."""
    bundle = tmp / "bundle"
    bundle.mkdir()
    for src in shared.bundle.iterdir():
        (bundle / src.name).write_bytes(src.read_bytes())
    for name, content in files.items():
        name = name.replace("_", ".")
        data = content.encode() if isinstance(content, str) else content
        (bundle / name).write_bytes(data)
    return bundle


def _empty_files_list(tmp: Path, shared: Shared) -> Path:
    meta = json.loads((shared.bundle / "bundle.json").read_text())
    meta["files"] = {}
    return _bundle_with(tmp, shared, bundle_json=json.dumps(meta))


def _no_gpu() -> str | None:
    return "this machine has a GPU" if torch.cuda.is_available() else None


def _wav(tmp: Path, name: str, samples: np.ndarray, sr: int = SR) -> Path:
    path = tmp / name
    sf.write(path, samples, sr, subtype="FLOAT")
    return path


def _folds(tmp: Path, shared: Shared, test: str, protocol: dict | None = None) -> Path:
    data = _data(tmp, shared, extra={"utt2emo": "spk1-u1 ang\nspk1-u2 neu\n"})
    (data / "folds").mkdir()
    (data / "folds" / "1").mkdir()
    (data / "folds" / "1" / "test").write_text(test)
    (data / "folds" / "1" / "train").write_text("spk1-u2\n")
    (data / "folds" / "protocol.json").write_text(json.dumps(protocol or {
        "name": "by hand", "folds": ["1"]}))
    return data


ROWS = [
    # ------------------------------------------------------------- data directories
    Row("missing-data-dir", lambda t, s: ["validate-data-dir", t / "nope"],
        r"sertool: error: {tmp}/nope: "),
    Row("empty-wav-scp", lambda t, s: ["validate-data-dir", _data(t, s, wav_scp="")],
        r"{tmp}/data/utt2spk:1: 'spk1-u1' has no entry in wav.scp"),
    Row("duplicate-utt-id", lambda t, s: ["validate-data-dir", _data(
        t, s, wav_scp=f"spk1-u1 {s.audio / 'a.wav'}\nspk1-u1 {s.audio / 'b.wav'}\n")],
        r"{tmp}/data/wav.scp:2: .*spk1-u1"),
    Row("unsorted-wav-scp", lambda t, s: ["validate-data-dir", _data(
        t, s, wav_scp=f"spk1-u2 {s.audio / 'b.wav'}\nspk1-u1 {s.audio / 'a.wav'}\n")],
        r"{tmp}/data/wav.scp:2: .*sort"),
    Row("missing-utt2spk", lambda t, s: ["validate-data-dir", _data(t, s, without="utt2spk")],
        r"{tmp}/data/utt2spk: .*(missing|not found|no such)"),
    Row("directory-for-a-file", lambda t, s: ["validate-data-dir", _data(
        t, s, without="utt2spk").joinpath("utt2spk").mkdir() or t / "data"],
        r"{tmp}/data/utt2spk: a directory, where a file is expected"),
    Row("missing-audio-file", lambda t, s: ["validate-data-dir", _data(
        t, s, wav_scp=f"spk1-u1 {t / 'gone.wav'}\nspk1-u2 {s.audio / 'b.wav'}\n")],
        r"{tmp}/data/wav.scp:1: .*{tmp}/gone.wav"),
    Row("latin1-utt2spk", lambda t, s: ["validate-data-dir", _put(_data(t, s) / "utt2spk", (
        "spk1-u1 spk1\nspk1-u2 sp\xe9ker\n".encode("latin-1"))).parent],
        r"{tmp}/data/utt2spk:2: not UTF-8 text"),
    Row("latin1-wav-scp", lambda t, s: ["validate-data-dir", _put(_data(t, s) / "wav.scp", (
        f"spk1-u1 {s.audio / 'a.wav'}\nspk1-u2 /tmp/d\xe9j\xe0.wav\n".encode("latin-1"))).parent],
        r"{tmp}/data/wav.scp:2: not UTF-8 text"),
    Row("fold-names-unknown-utterance", lambda t, s: ["check-folds", _folds(
        t, s, "spk1-u1\nspk9-u7\n")],
        r"sertool: error: {tmp}/data/folds/1/test:2: 'spk9-u7' is not in utt2spk"),
    Row("fold-protocol-without-folds", lambda t, s: ["check-folds", _folds(
        t, s, "spk1-u1\n", {"name": "by hand"})],
        r"sertool: error: {tmp}/data/folds/protocol.json: 'folds' must list the fold names"),
    # ------------------------------------------------------------- audio that lies about itself
    Row("truncated-wav", lambda t, s: _extract_strict(t, s, _truncate(t)),
        r"\({tmp}/cut.wav\): truncated audio: the header says 2.000s, the file holds 0.667s",
        may_create=("feats/frontend.json", "feats/log/*")),
    Row("segment-past-end", lambda t, s: _extract_strict(t, s, s.audio / "a.wav", "0.2 3.5"),
        r"\({shared}/audio/a.wav\): segment end 3.5s is past the end of the audio \(1.000s\)",
        may_create=("feats/frontend.json", "feats/log/*")),
    Row("not-audio", lambda t, s: _extract_strict(t, s, _put(
        t / "notes.wav", "these are my notes\n")),
        r"{tmp}/data/wav.scp:1: utterance spk1-u1 \({tmp}/notes.wav\): ",
        may_create=("feats/frontend.json", "feats/log/*")),
    Row("zero-length-file", lambda t, s: _extract_strict(t, s, _put(t / "empty.wav", b"")),
        r"{tmp}/data/wav.scp:1: utterance spk1-u1 \({tmp}/empty.wav\): ",
        may_create=("feats/frontend.json", "feats/log/*")),
    Row("nan-audio", lambda t, s: _extract_strict(t, s, _wav(t, "nan.wav", np.full(SR, np.nan,
                                                                         "float32"))),
        r"{tmp}/data/wav.scp:1: utterance spk1-u1 \({tmp}/nan.wav\): .*(NaN|finite)",
        may_create=("feats/frontend.json", "feats/log/*")),
    Row("audio-file-missing", lambda t, s: _extract_strict(t, s, t / "gone.wav"),
        r"{tmp}/data/wav.scp:1: utterance spk1-u1 \({tmp}/gone.wav\): ",
        may_create=("feats/frontend.json", "feats/log/*")),
    Row("every-utterance-failed", lambda t, s: [
        "extract-feats", _one_utt(t, s, t / "gone.wav"), t / "feats", "--no-progress"],
        r"every utterance failed; see {tmp}/feats/failed: {tmp}/data/wav.scp:1: utterance "
        r"spk1-u1 \({tmp}/gone.wav\): audio file not found\n$",
        may_create=("feats/*", "feats/log/*"), process=True),
    Row("combine-duplicate-ids", lambda t, s: [
        "combine-data-dirs", t / "all", _data(t, s, name="a"), _data(t, s, name="b")],
        r"sertool: error: {tmp}/b/utt2spk:1: utterance 'spk1-u1' is also in {tmp}/a/utt2spk:1"),
    Row("subset-unknown-speaker", lambda t, s: [
        "subset-data-dir", _data(t, s), t / "sub", "--speakers",
        _put(t / "spk.txt", "spk1\nspk7\n")],
        r"sertool: error: {tmp}/spk.txt:2: speaker 'spk7' is not in the data directory"),
    Row("output-is-a-file", lambda t, s: [
        "extract-feats", _data(t, s), _put(t / "feats", "mine\n"),
        "--no-progress"], r"sertool: error: {tmp}/feats: not a directory"),
    Row("predict-every-file-unreadable", lambda t, s: [
        "predict", s.bundle, _put(t / "a.wav", "text\n"), t / "gone.wav"],
        r"sertool: {tmp}/a.wav: cannot decode audio.*\nsertool: {tmp}/gone.wav: audio file "
        r"not found\n(predict: 2/2 file .*\n)?"  # the progress line that ends a run off a tty
        r"0 of 2 files predicted\nsertool: error: no file could be predicted"),
    # ------------------------------------------------------------- configuration
    Row("set-epochs-abc", lambda t, s: _train(t, s, "--set", "epochs=abc"),
        r"sertool: error: --set epochs=abc: epochs must be an integer, got 'abc'", process=True),
    Row("set-epochs-negative", lambda t, s: _train(t, s, "--set", "epochs=-1"),
        r"--set epochs=-1: epochs = -1 is out of range \(must be >= 1\)"),
    Row("set-lr-word", lambda t, s: _train(t, s, "--set", "lr=fast"),
        r"--set lr=fast: lr must be a number, got 'fast'"),
    Row("set-table-to-number", lambda t, s: _train(t, s, "--set", "augment=3"),
        r"--set augment=3: augment is a table of options, got 3"),
    Row("set-unknown-key", lambda t, s: _train(t, s, "--set", "epoch=3"),
        r"sertool: error: --set epoch=3: unknown option 'epoch' \(known: amp, augment, "),
    Row("set-without-equals", lambda t, s: _train(t, s, "--set", "epochs"),
        r"sertool: error: --set epochs: not of the form key=value"),
    Row("mel-bins-zero", lambda t, s: ["extract-feats", "-o", t / "out", s.audio / "a.wav",
                                       "--set", "mel.num_bins=0"],
        r"--set mel.num_bins=0: mel.num_bins = 0 is out of range \(must be between 1 and 2048\)"),
    Row("hangover-negative", lambda t, s: ["extract-feats", "-o", t / "out", s.audio / "a.wav",
                                           "--set", "vad.hangover_ms=-5"],
        r"--set vad.hangover_ms=-5: vad.hangover_ms = -5 is out of range \(must be >= 0.0\)"),
    Row("toml-syntax", lambda t, s: _train(t, s, "--conf", _put(
        t / "train.toml", "epochs = = 2\n")),
        r"sertool: error: {tmp}/train.toml: Invalid value \(at line 1, column 10\)"),
    Row("toml-unknown-key", lambda t, s: _train(t, s, "--conf", _put(
        t / "train.toml", "epochs = 2\nlearning_rate = 0.1\n")),
        r"sertool: error: {tmp}/train.toml: unknown option 'learning_rate' \(known: amp, "),
    Row("toml-latin1", lambda t, s: _train(t, s, "--conf", _put(
        t / "train.toml", "# r\xe9glages\nepochs = 2\n".encode("latin-1"))),
        r"sertool: error: {tmp}/train.toml:1: not UTF-8 text \(byte 0xe9; save the file as "
        r"UTF-8\)"),
    Row("conf-missing", lambda t, s: _train(t, s, "--conf", t / "nope.toml"),
        r"sertool: error: {tmp}/nope.toml: configuration file not found \(shipped ones: "),
    Row("cuda-without-gpu", lambda t, s: _train(t, s, "--device", "cuda"),
        r"sertool: error: --device cuda: no CUDA GPU is available", needs=_no_gpu),
    Row("nj-zero", lambda t, s: ["extract-feats", _data(t, s), t / "feats", "--nj", "0"],
        r"Invalid value for '--nj'", code=2),
    Row("unknown-protocol", lambda t, s: ["prepare", "emodb", s.audio, t / "data",
                                          "--protocol", "by-moon"],
        r"Invalid value for '--protocol'.*by-moon", code=2),
    Row("unknown-corpus", lambda t, s: ["prepare", "timit", s.audio, t / "data"],
        r"sertool: error: unknown corpus 'timit'; supported: cremad, emodb"),
    Row("prepare-missing-source", lambda t, s: ["prepare", "emodb", t / "nope", t / "data"],
        r"sertool: error: {tmp}/nope: not found"),
    # ------------------------------------------------------------- models and bundles
    Row("pickled-checkpoint", lambda t, s: _train(t, s, "--init", _pickled(t)),
        r"{tmp}/model.pt: holds pickled Python objects, not only tensors", process=True,
        never="weights_only=False"),  # sertool never suggests the unsafe fix
    Row("truncated-checkpoint", lambda t, s: _train(t, s, "--init", _put(
        t / "model.pt", (s.bundle / "model.pt").read_bytes()[:5000])),
        r"{tmp}/model.pt: not a readable sertool checkpoint"),
    Row("garbage-checkpoint", lambda t, s: [
        "extract-embeddings", s.feats, _put(t / "model.pt", "x\n"),
        t / "emb"], r"sertool: error: {tmp}/model.pt: not a readable sertool checkpoint \(not a "
        r"PyTorch file\)", never="pickled"),
    Row("missing-checkpoint", lambda t, s: _train(t, s, "--init", t / "nope.pt"),
        r"{tmp}/nope.pt: checkpoint not found"),
    Row("bundle-garbage-frontend-json", lambda t, s: [
        "predict", _bundle_with(t, s, frontend_json="{not json"), s.audio / "a.wav"],
        r"sertool: error: {tmp}/bundle/frontend.json: "),
    Row("bundle-files-list-empty", lambda t, s: [
        "predict", _empty_files_list(t, s), s.audio / "a.wav"],
        r"{tmp}/bundle/bundle.json: .*'files' lists no SHA-256 of model.pt, frontend.json"),
    Row("bundle-zeroed-weights", lambda t, s: [
        "predict", _bundle_with(t, s, model_pt=bytes(len((s.bundle / "model.pt").read_bytes()))),
        s.audio / "a.wav"], r"{tmp}/bundle/model.pt: .*(SHA-256|damaged|changed)"),
    Row("bundle-missing", lambda t, s: ["predict", t / "nope", s.audio / "a.wav"],
        r"sertool: error: {tmp}/nope"),
    Row("predict-output-suffix", lambda t, s: [
        "predict", s.bundle, s.audio / "a.wav", "-o", t / "out.txt"],
        r"{tmp}/out.txt: output must end in .csv or .json"),
    # ------------------------------------------------------------- experiments
    Row("score-not-an-experiment", lambda t, s: ["score", s.audio],
        r"sertool: error: {shared}/audio.*experiment.json"),
    Row("score-bad-posteriors-row", lambda t, s: ["score", _damaged_experiment(t, s),
                                                  "--no-audio"],
        r"{tmp}/exp/fold_1/posteriors.tsv:2: "),
    Row("finetune-unknown-fold", lambda t, s: [
        "finetune", s.feats, _folds(t, s, "spk1-u1\n"), t / "exp", "--init", "none",
        "--fold", "7"], r"sertool: error: {tmp}/data/folds: no fold '7' \(folds: 1\)"),
]


def _damaged_experiment(tmp: Path, shared: Shared) -> Path:
    exp = tmp / "exp"
    for src in shared.exp.rglob("*"):
        if src.is_file():
            dest = exp / src.relative_to(shared.exp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read_bytes())
    posteriors = exp / "fold_1" / "posteriors.tsv"
    lines = posteriors.read_text().splitlines(keepends=True)
    lines[1] = lines[1].split("\t")[0] + "\tnot\ta\trow\n"
    posteriors.write_text("".join(lines))
    return exp


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_named_and_nothing_is_lost(row: Row, shared: Shared, tmp_path: Path):
    check_row(row, shared, tmp_path)


def test_the_battery_has_thirty_kinds():
    assert len({r.id for r in ROWS}) == len(ROWS) >= 30

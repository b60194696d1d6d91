"""Options and errors that mean the same on every command (issue 21, items 5 and 6; issue 23,
defect 10): ``--device`` and ``--no-progress`` on every command that does long work, one
check of the device naming the option, and user errors of folds.py as SplitError while a bug
keeps its traceback.

One tiny pipeline (6 speakers x 3 one-second utterances, 24 mels, the tiny ResNet for 2 epochs,
a frozen-trunk finetune on 3 speaker folds) runs once through the real CLI with both options on
every long command; the refusals then run against its outputs.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from corpora import TRAIN_TOML, _make_corpus

import sertool.cli
import sertool.folds
from sertool.cli import main
from sertool.config import CONF_DIR
from sertool.folds import (
    SplitError,
    kfold_random,
    leave_one_speaker_out,
    random_split,
    speaker_groups,
    speaker_kfold,
)

UNIFORM = ["--no-progress", "--device", "cpu"]

# command -> its arguments ({W}: the workspace), in pipeline order; each gets UNIFORM
LONG_COMMANDS: dict[str, list[str]] = {
    "extract-feats": ["extract-feats", "{W}/data", "{W}/feats", "--set", "mel.num_bins=24"],
    "train": ["train", "--task", "speaker", "{W}/feats", "{W}/data", "{W}/spk", "--conf",
              "{W}/train.toml", "--model-conf", str(CONF_DIR / "model_resnet_tiny.toml")],
    "extract-embeddings": ["extract-embeddings", "{W}/feats", "{W}/spk/final.pt", "{W}/emb",
                           "--copies", "1"],
    "finetune": ["finetune", "{W}/feats", "{W}/data", "{W}/ft", "--init", "{W}/spk/final.pt",
                 "--set", "head.epochs=2", "--set", "augment.copies=1", "--set",
                 "heldout_speakers=1"],
    "predict": ["predict", "{W}/ft/fold_1/bundle", "{W}/corpus/s1_0.wav", "{W}/corpus/s2_1.wav",
                "-o", "{W}/pred.csv"],
    "score": ["score", "{W}/ft", "-o", "{W}/score"],
}
# what a progress display prints: "predict: 2/2 file (100%), 1s", "epoch 1/2: lr ..."
PROGRESS = re.compile(r"\d+/\d+ \S+ \(\d+%\)|epoch \d+/\d+:")


def _args(args: list[str], work: Path) -> list[str]:
    return [a.replace("{W}", str(work)) for a in args]


def _invoke(args: list[str], work: Path):
    return CliRunner().invoke(main, _args(args, work))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, dict]:
    """The workspace after every long command ran with UNIFORM, and each command's result."""
    work = tmp_path_factory.mktemp("uniform")
    _make_corpus(work)
    (work / "train.toml").write_text(TRAIN_TOML)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on shared cores: one thread is the fastest
    try:
        prepared = _invoke(["prepare", "manifest", "{W}/corpus/manifest.csv", "{W}/data",
                            "--protocol", "speaker-kfold", "--folds", "3"], work)
        assert prepared.exit_code == 0, prepared.output
        results = {name: _invoke(args + UNIFORM, work) for name, args in LONG_COMMANDS.items()}
    finally:
        torch.set_num_threads(before)
    return work, results


@pytest.mark.parametrize("command", list(LONG_COMMANDS))
def test_every_long_command_takes_no_progress_and_device_cpu(pipeline, command):
    _, results = pipeline
    result = results[command]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.stderr
    assert not PROGRESS.search(result.stderr), result.stderr


def test_without_no_progress_a_progress_line_is_shown(pipeline, tmp_path):
    """The check above can see a progress display: predict of two files shows one."""
    work, _ = pipeline
    args = [*LONG_COMMANDS["predict"][:-1], str(tmp_path / "pred.csv")]
    result = _invoke(args, work)
    assert result.exit_code == 0, result.stderr
    assert PROGRESS.search(result.stderr), result.stderr


def test_every_long_command_has_the_same_device_and_progress_options():
    """Defined once: the same default and help everywhere (extract-feats and score, which run
    no network, check the name and compute on the CPU)."""
    options = {}
    for name in LONG_COMMANDS:
        params = {p.name: p for p in main.commands[name].params}
        options[name] = [(p.default, p.help, p.metavar) for p in
                         (params["device"], params["no_progress"])]
    assert len({str(v) for v in options.values()}) == 1, options
    assert options["train"][0][0] == "auto"


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


NO_GPU = "no CUDA GPU is available on this machine (torch.cuda.is_available() is False); " \
         "use --device cpu"
# (--device value, the error after "sertool: error: --device VALUE: ", commands, needs a GPU)
BAD_DEVICES = [
    ("cpu:1", "only a GPU has an index (cuda:N); use cpu", list(LONG_COMMANDS), None),
    ("tpu", "not a device name (auto, cpu, cuda or cuda:N)", list(LONG_COMMANDS), None),
    ("cuda:", "not a device name (auto, cpu, cuda or cuda:N)", ["predict"], None),
    ("cuda", NO_GPU, ["train", "extract-embeddings", "finetune", "predict"], False),
    ("cuda:99", "this machine has {n} GPU(s), numbered from 0",
     ["train", "extract-embeddings", "finetune", "predict"], True),
]
CASES = [(device, message, command, gpu) for device, message, commands, gpu in BAD_DEVICES
         for command in commands]


@pytest.mark.parametrize(("device", "message", "command", "gpu"), CASES,
                         ids=[f"{c}-{d}" for d, _, c, _ in CASES])
def test_a_bad_device_is_refused_naming_the_option(pipeline, tmp_path, device, message,
                                                   command, gpu):
    if gpu is not None and gpu != torch.cuda.is_available():
        pytest.skip("needs a GPU" if gpu else "this machine has a GPU")
    work, _ = pipeline
    # the command's inputs are the pipeline's outputs; its own output goes to a new place
    args = _args(LONG_COMMANDS[command], work)
    args[{"extract-feats": 2, "train": 5, "extract-embeddings": 3, "finetune": 3,
          "predict": -1, "score": -1}[command]] = str(tmp_path / "out.csv")
    before = _snapshot(work)
    result = CliRunner().invoke(main, [*args, "--no-progress", "--device", device])
    expected = f"sertool: error: --device {device}: " + message.format(
        n=torch.cuda.device_count())
    assert isinstance(result.exception, SystemExit), result.exception
    assert (result.exit_code, result.stderr) == (1, expected + "\n")
    assert _snapshot(work) == before  # inputs byte-identical
    assert list(tmp_path.iterdir()) == []  # nothing written


# ----------------------------------------------------------------- errors (issue 21, item 5)


def test_a_bug_in_folds_keeps_its_traceback(pipeline, tmp_path, monkeypatch):
    """A plain ValueError from folds.py is a bug: it is not turned into a user's error line."""
    work, _ = pipeline

    def broken(*args, **kwargs):
        raise ValueError("a bug in folds.py")

    monkeypatch.setattr(sertool.folds, "read_folds", broken)
    checked = CliRunner().invoke(main, ["check-folds", str(work / "data"), "--no-audio"])
    monkeypatch.setattr(sertool.folds, "speaker_kfold", broken)
    prepared = CliRunner().invoke(main, ["prepare", "manifest",
                                         str(work / "corpus" / "manifest.csv"),
                                         str(tmp_path / "data"), "--protocol", "speaker-kfold"])
    for result in (checked, prepared):
        assert isinstance(result.exception, ValueError), result.output  # the traceback's
        assert str(result.exception) == "a bug in folds.py"
        assert "sertool: error" not in result.stderr


def test_a_split_the_user_asked_for_is_one_error_line(pipeline, tmp_path):
    work, _ = pipeline
    manifest = work / "corpus" / "manifest.csv"
    before = manifest.read_bytes()
    result = CliRunner().invoke(main, ["prepare", "manifest", str(manifest),
                                       str(tmp_path / "data"), "--protocol", "kfold-random",
                                       "--folds", "1"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert (result.exit_code, result.stderr) == (1, "sertool: error: k-fold needs k >= 2, got "
                                                    "1\n")
    assert manifest.read_bytes() == before and list(tmp_path.iterdir()) == []


UTT2SPK = {"a1": "a", "a2": "a", "b1": "b", "c1": "c"}


@pytest.mark.parametrize(("make", "message"), [
    (lambda: kfold_random(dict.fromkeys(UTT2SPK, "ang"), k=1), "k-fold needs k >= 2"),
    (lambda: kfold_random({"a1": "ang"}, k=2), "needs at least 2 utterances"),
    (lambda: speaker_kfold(UTT2SPK, k=4), "needs 2 <= k <= 3 speakers"),
    (lambda: random_split(dict.fromkeys(UTT2SPK, "ang"), test_fraction=1.5), "test fraction"),
    (lambda: random_split({"a1": "ang"}), "leaves a side empty"),
    (lambda: leave_one_speaker_out({"a1": "a"}), "need at least 2 groups"),
    (lambda: speaker_groups(UTT2SPK, [["a"], ["a", "b", "c"]]), "is in groups 1 and 2"),
    (lambda: speaker_groups(UTT2SPK, [["a", "x"], ["b", "c"]]), "not in the data"),
    (lambda: speaker_groups(UTT2SPK, [["a"], ["b"]]), "in no group"),
])
def test_the_splits_a_user_cannot_have_are_split_errors(make, message):
    with pytest.raises(SplitError, match=message):
        make()


def test_the_cli_catches_user_errors_in_one_place():
    """No command turns a ValueError into an error line, none re-catches what the group does."""
    source = inspect.getsource(sertool.cli)
    assert "except ValueError" not in source
    group = inspect.getsource(sertool.cli.SertoolGroup)
    assert source.count("except SertoolError") == group.count("except SertoolError") == 1

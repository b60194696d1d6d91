"""predict on long files and its output (issue 14): the network runs in chunks with the same
result, memory does not grow with the file's length, results are written safely."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from signals import SR, voiced, with_noise
from train_helpers import tiny_bundle

from sertool.cli import main
from sertool.models.resnet import ResNetTrunk

SERTOOL = [sys.executable, "-m", "sertool"]


def _speech(seconds: float, seed: int) -> np.ndarray:
    """Voiced bursts with pauses, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    parts, n = [], 0
    while n < seconds * SR:
        parts += [voiced(0.7, rng, f0=100 + 20 * (len(parts) % 7)), np.zeros(4800, np.float32)]
        n += int(0.7 * SR) + 4800
    return with_noise(parts, rng)[: int(seconds * SR)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("long"))


def test_resnet_pooled_in_chunks_equals_one_pass():
    torch.manual_seed(0)
    trunk = ResNetTrunk(40, [3, 4, 6, 3], channels=4).eval()  # the paper's depth: 225 frames seen
    for module in trunk.modules():  # BN statistics that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    assert trunk.time_context() == (8, 225)
    x = torch.randn(1, 1003, 40)
    with torch.inference_mode():
        whole = trunk(x)
        for chunk in (64, 333, 1000):
            torch.testing.assert_close(trunk.pooled_chunked(x, chunk), whole, rtol=0, atol=1e-5)
        # without the context on both sides the chunk edges change the result: the test above
        # is sensitive to it
        naive = torch.cat([trunk.frames(x[:, s:s + 64]) for s in range(0, 1003, 64)], dim=-1)
        assert (trunk.pool(naive) - whole).abs().max() > 1e-2


def test_predict_in_chunks_equals_one_pass(bundle, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, _speech(5.0, 1), SR)  # ~480 frames: 8 chunks of 64
    probs = []
    for chunk in ("64", "100000"):
        out = tmp_path / f"p{chunk}.json"
        result = CliRunner().invoke(main, ["predict", str(bundle), str(path), "-o", str(out),
                                           "--chunk-frames", chunk])
        assert result.exit_code == 0, result.output
        probs.append(json.loads(out.read_text())["results"][0]["probs"])
    assert probs[0].keys() == probs[1].keys()
    for c in probs[0]:
        assert probs[0][c] == pytest.approx(probs[1][c], abs=1e-6)


def _peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory of ``sertool ARGS`` in a fresh process (its own child)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *SERTOOL, *args], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


@pytest.mark.slow  # ~30 s: two predict processes, one over 4 minutes of audio
def test_predict_memory_does_not_grow_with_the_file(bundle, tmp_path):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, _speech(5.0, 2), SR)
    sf.write(long, _speech(240.0, 2), SR)
    base = _peak_rss_mb(["predict", str(bundle), str(short), "--threads", "1"])
    grown = _peak_rss_mb(["predict", str(bundle), str(long), "--threads", "1"]) - base
    # one pass over the whole file needs ~1.7 MB more a second of audio (the network's
    # activations: ~400 MB for these 4 minutes); in chunks ~0.4 MB (waveform and features)
    # plus ~75 MB of allocator slack that does not grow (measured 123 MB over 2 minutes on a
    # loaded machine): 4 minutes keep the two far apart
    assert grown < 250, f"4 minutes of audio took {grown:.0f} MB more than 5 s"


@pytest.mark.slow  # ~15 s: a predict process over 30 files, and the same in-process
def test_interrupted_predict_keeps_what_it_did(bundle, tmp_path):
    files = []
    for i in range(30):
        files.append(tmp_path / f"f{i:02d}.wav")
        sf.write(files[-1], _speech(4.0, 10 + i), SR)
    out = tmp_path / "out" / "pred.csv"
    partial = Path(str(out) + ".partial")
    proc = subprocess.Popen([*SERTOOL, "predict", str(bundle), *map(str, files), "-o", str(out),
                             "--threads", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file() and partial.read_text().count("\n") >= 3:  # header + 2 rows
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.005)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    rows = partial.read_text().splitlines()
    done = len(rows) - 1
    assert 2 <= done < 30
    assert (f"sertool: error: interrupted after {done} of 30 files; the predictions made are "
            f"in {partial}") in stderr
    assert not out.exists()  # never a partial result under the final name
    # what was kept is exactly what an uninterrupted run gives for those files
    whole = CliRunner().invoke(main, ["predict", str(bundle), *map(str, files[:done])])
    assert whole.exit_code == 0, whole.output
    assert rows == whole.stdout.splitlines()
    # a complete run writes the final file and removes the .partial
    assert CliRunner().invoke(main, ["predict", str(bundle), str(files[0]), "-o",
                                     str(out)]).exit_code == 0
    assert out.read_text().splitlines() == rows[:2] and not partial.exists()


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` for the block (the test is skipped where mount is refused)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        for target in (ro / "pred.csv", ro / "sub" / "pred.json"):
            # the bundle does not exist either: the output is checked first
            result = CliRunner().invoke(main, ["predict", str(tmp_path / "no-bundle"),
                                               str(tmp_path / "a.wav"), "-o", str(target)])
            assert result.exit_code == 1
            assert result.output == (f"sertool: error: {target}: cannot write the predictions "
                                     "there (Read-only file system)\n")
        assert os.listdir(ro) == []


@pytest.mark.slow  # ~8 s on a busy machine: two predict runs over a dozen files
def test_a_full_disk_keeps_the_predictions_made(bundle, tmp_path):
    with _tmpfs(tmp_path / "full", "size=4k") as full:
        files = []  # long names: each CSV row ~480 bytes, so 4 KB hold 8 of them
        folder = tmp_path / ("d" * 200)
        folder.mkdir()
        for i in range(12):
            files.append(folder / f"{i:02d}{'x' * 200}.wav")
            sf.write(files[-1], _speech(0.3, i), SR)
        out = full / "pred.csv"
        partial = Path(str(out) + ".partial")
        result = CliRunner().invoke(main, ["predict", str(bundle), *map(str, files), "-o",
                                           str(out)])
        assert result.exit_code == 1
        rows = partial.read_text().splitlines()
        done = len(rows) - 1
        assert 3 < done < 12
        assert (f"sertool: error: {partial}: cannot write (No space left on device); the "
                f"{done} predictions before it are kept there") in result.output
        assert partial.read_text().endswith("\n")  # no half row after them
        # and none is lost: the ones made, including the one that did not fit, on stdout
        assert len(result.stdout.splitlines()) == 1 + done + 1
        assert result.stdout.splitlines()[:done + 1] == rows
        whole = CliRunner().invoke(main, ["predict", str(bundle), *map(str, files[:done])])
        assert rows == whole.stdout.splitlines()
        assert sorted(os.listdir(full)) == ["pred.csv.partial"]

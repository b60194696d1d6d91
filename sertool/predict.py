"""Model bundles and emotion prediction on new audio: ``sertool predict``.

A model bundle is one self-contained directory; ``predict`` needs nothing else::

    bundle.json    format version, classes (output index order), model config and input
                   dimension, the files below with their SHA-256, and provenance: corpus,
                   fold (or "all"), protocol, initialisation, augmentation, held-out
                   metrics, command, date, sertool version
    model.pt       the weights, a checkpoint of sertool.nnet.checkpoint (loads with
                   ``torch.load(weights_only=True)``: tensors and plain containers only)
    frontend.json  the resolved front-end configuration, copied from the feature directory
                   the model was trained on, so new audio gets the identical front-end
    README.md      what the bundle is and how to run it
    model.onnx     optional (``sertool export-onnx``, sertool.onnx_bundle): the same network
                   as ONNX; ``predict`` runs it through onnxruntime without importing torch

A model trained with conversation-level CMVN is given per-file CMVN at prediction time (each
file is its own conversation: there is no other context to pool statistics over).

Only these fixed file names inside the directory are used, never a path recorded in it, so
a bundle still works after it is moved or copied elsewhere. It is written to a temporary
directory beside its destination and renamed into place: a killed export leaves no
half-written bundle.

``predict`` answers for every readable file and names what makes an answer doubtful (the
front-end's flags: silent, clipped, too_short, vad_fallback) in a ``warning`` column; a long
file goes through the network in chunks (:data:`CHUNK_FRAMES`) so memory does not grow with
it; results go to ``OUT.partial`` one by one and ``OUT`` is written whole at the end
(:class:`PredictionWriter`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sertool import __version__
from sertool.errors import SertoolError
from sertool.faults import kill_point
from sertool.io_utils import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
    sha256_of,
)

BUNDLE_FORMAT = 1
# Frames (30 s) per pass of the network over a long file: its activations, the largest memory
# use of predict, then stay bounded (ResNet with statistics pooling: pooled_chunked, exact up to
# float rounding). Emotion corpora's utterances are shorter and go through in one pass.
CHUNK_FRAMES = 3000
BUNDLE_JSON = "bundle.json"
MODEL_FILE = "model.pt"
FRONTEND_FILE = "frontend.json"
README_FILE = "README.md"


class BundleError(SertoolError, ValueError):
    """A missing, damaged or incompatible model bundle (the message names the file)."""


# ----------------------------------------------------------------------------- export


def _readme(meta: Mapping) -> str:
    prov = meta.get("provenance", {})
    classes = ", ".join(meta["classes"])
    lines = [
        "# sertool model bundle",
        "",
        f"Speech emotion recognition model; classes (output order): {classes}.",
        "",
        "```sh",
        "sertool predict THIS_DIR audio1.wav audio2.flac -o predictions.csv",
        "```",
        "",
        "Any sample rate and channel count is accepted: audio is resampled and downmixed, then",
        f"the front-end in `{FRONTEND_FILE}` (the one the model was trained with) is applied.",
        "",
        "| provenance | |",
        "| --- | --- |",
    ]
    for key in sorted(prov):
        value = prov[key]
        text = json.dumps(value) if not isinstance(value, str) else value
        text = text.replace("|", "\\|")
        lines.append(f"| {key} | {text} |")
    return "\n".join(lines) + "\n"


def export_bundle(out_dir: str | os.PathLike, model: Any, *, classes: Sequence[str],
                  model_conf: Mapping, feat_dim: int, frontend_json: str | os.PathLike,
                  provenance: Mapping) -> Path:
    """Write a model bundle for ``model`` (an ``SERModel``) to ``out_dir``, atomically.

    ``frontend_json`` is the feature directory's ``frontend.json``; ``provenance`` is free-form
    JSON (corpus, fold, command, ...); date and sertool version are added here. An existing
    bundle at ``out_dir`` is replaced.
    """
    from sertool.nnet.checkpoint import save_checkpoint

    out_dir = Path(out_dir)
    frontend_json = Path(frontend_json)
    if not frontend_json.is_file():
        raise BundleError(f"{frontend_json}: front-end configuration not found (a feature "
                          "directory made by extract-feats has one)")
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp / MODEL_FILE, model, model_conf=dict(model_conf),
                        num_classes=len(classes), feat_dim=int(feat_dim), labels=list(classes),
                        with_rng=False)
        shutil.copyfile(frontend_json, tmp / FRONTEND_FILE)
        meta = {
            "format": BUNDLE_FORMAT,
            "classes": list(classes),
            "model_conf": dict(model_conf),
            "feat_dim": int(feat_dim),
            "files": {name: sha256_of(tmp / name) for name in (MODEL_FILE, FRONTEND_FILE)},
            "provenance": {
                **dict(provenance),
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "sertool_version": __version__,
            },
        }
        atomic_write_json(tmp / BUNDLE_JSON, meta)
        atomic_write_text(tmp / README_FILE, _readme(meta))
    return out_dir


# ----------------------------------------------------------------------------- loading


BACKENDS = ("auto", "torch", "onnx")


@dataclass
class Bundle:
    path: Path
    meta: dict
    classes: list[str]
    frontend_conf: dict
    device: str
    onnx: Any = None  # sertool.onnx_bundle.OnnxModel, when predict runs the ONNX graph
    threads: int | None = None  # an ONNX bundle's --threads, for a torch model loaded later
    _model: Any = None  # SERModel in eval mode, loaded when first needed
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def backend(self) -> str:
        return "onnx" if self.onnx is not None else "torch"

    @property
    def model(self) -> Any:
        """The torch model (imports torch on first use: an ONNX bundle needs it only for
        inputs its graph cannot take, sertool.onnx_bundle)."""
        if self._model is None:
            self._model = _load_torch_model(self.path, self.meta, self.device)
            if self.onnx is not None:  # torch imported only now: its threads capped too
                from sertool.threads import torch_threads

                self._stack.enter_context(torch_threads(self.threads))
        return self._model

    def close(self) -> None:
        """Give back torch's thread setting if this bundle changed it."""
        self._stack.close()

    @property
    def provenance(self) -> dict:
        return dict(self.meta.get("provenance", {}))


def read_bundle_meta(path: str | os.PathLike) -> dict:
    """Read and check ``bundle.json`` and the files it lists (existence and SHA-256)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a model bundle directory")
    meta_path = path / BUNDLE_JSON
    meta = read_json_object(meta_path, BundleError, "a model bundle is the directory that "
                            "`sertool finetune` exports, e.g. EXP_DIR/fold_1/bundle")
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: bundle format {meta.get('format')!r} is not "
                          f"{BUNDLE_FORMAT} (made by another sertool version?)")
    for key in ("classes", "model_conf", "feat_dim", "files"):
        if key not in meta:
            raise BundleError(f"{meta_path}: missing key {key!r}")
    files = meta["files"] if isinstance(meta["files"], dict) else {}
    for name, digest in files.items():
        file = path / name
        if Path(name).name != name:
            raise BundleError(f"{meta_path}: file entry {name!r} is not a plain file name")
        if not file.is_file():
            raise BundleError(f"{file}: missing from the bundle")
        if sha256_of(file) != digest:
            raise BundleError(f"{file}: damaged (SHA-256 differs from {meta_path})")
    unchecked = [n for n in (MODEL_FILE, FRONTEND_FILE) if n not in files]
    if unchecked:  # every file that is read must be covered by the damage check
        raise BundleError(f"{meta_path}: 'files' lists no SHA-256 of {', '.join(unchecked)}")
    return meta


def load_bundle(path: str | os.PathLike, device: str = "cpu", *, backend: str = "auto",
                threads: int | None = None) -> Bundle:
    """Load a bundle: its checked metadata, front-end configuration and model (eval mode).

    ``backend``: ``onnx`` runs the bundle's model.onnx through onnxruntime (an error if the
    bundle has none or onnxruntime is missing), ``torch`` the model.pt, ``auto`` ONNX where
    it can (the bundle has model.onnx, onnxruntime is installed, the device is the CPU or
    ``auto``) without importing torch, else torch. ``threads``: the model's CPU threads."""
    from sertool.frontend.pipeline import resolve_conf

    path = Path(path)
    if backend not in BACKENDS:
        raise BundleError(f"--backend {backend}: not one of {', '.join(BACKENDS)}")
    meta = read_bundle_meta(path)
    frontend_json = path / FRONTEND_FILE
    # through the front-end's schema, as extract-feats checks it: the error names the key
    frontend_conf = resolve_conf(read_json_object(
        frontend_json, BundleError, "a model bundle holds its front-end configuration"),
        source=str(frontend_json))
    onnx = _onnx_model(path, meta, device, backend, threads)
    if onnx is not None:
        return Bundle(path, meta, list(meta["classes"]), frontend_conf, "cpu", onnx, threads)
    from sertool.nnet.device import resolve_device

    device = resolve_device(device)
    bundle = Bundle(path, meta, list(meta["classes"]), frontend_conf, device, None, None)
    bundle.model  # noqa: B018 - loaded now: a damaged model.pt is refused before any work
    return bundle


def runs_onnx(path: str | os.PathLike, device: str, backend: str) -> bool:
    """Whether :func:`load_bundle` will run this bundle's ONNX graph (a quick look at its
    bundle.json, before anything is loaded: the CLI sets torch's threads only otherwise)."""
    from sertool.onnx_bundle import ONNX_FILE, onnxruntime_available

    if backend != "auto":
        return backend == "onnx"
    try:
        files = json.loads((Path(path) / BUNDLE_JSON).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # load_bundle then names what is wrong
    return ONNX_FILE in files and device in ("cpu", "auto") and onnxruntime_available()


def _onnx_model(path: Path, meta: Mapping, device: str, backend: str,
                threads: int | None) -> Any:
    """The ONNX session predict uses, or None for the torch model."""
    from sertool.onnx_bundle import ONNX_FILE, OnnxModel, onnxruntime_available

    if backend == "torch":
        return None
    has_graph = ONNX_FILE in meta["files"]
    if backend == "onnx":
        if not has_graph:
            raise BundleError(f"{path}: --backend onnx, but the bundle has no {ONNX_FILE} "
                              f"(make it with `sertool export-onnx {path}`)")
        if not onnxruntime_available():
            raise BundleError(f"{path}: --backend onnx needs onnxruntime (pip install "
                              "'sertool[onnx]')")
        if device not in ("cpu", "auto"):
            raise BundleError(f"--backend onnx runs on the CPU, not --device {device}")
    elif not (has_graph and device in ("cpu", "auto") and onnxruntime_available()):
        return None
    from sertool.threads import available_cpus, capped

    number = (capped(threads, f"--threads {threads}") if threads is not None
              else available_cpus().cpus)
    try:
        model = OnnxModel(path / ONNX_FILE, number)
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors have no common base
        raise BundleError(f"{path / ONNX_FILE}: onnxruntime cannot load it: "
                          f"{str(err).splitlines()[0][:300]}") from err
    outputs = model.session.get_outputs()[0].shape[-1]
    if outputs != len(meta["classes"]):  # the check model.pt's labels get on the torch path
        raise BundleError(f"{path / ONNX_FILE}: gives {outputs} probabilities, but "
                          f"{BUNDLE_JSON} has {len(meta['classes'])} classes")
    return model


def _load_torch_model(path: Path, meta: Mapping, device: str) -> Any:
    from sertool.nnet.checkpoint import load_model

    try:
        model, ckpt_meta = load_model(path / MODEL_FILE, device)
    except Exception as err:  # noqa: BLE001 - any failure here means an unusable bundle
        named = str(err).startswith(str(path / MODEL_FILE))  # a CheckpointError names it
        raise BundleError(str(err) if named else f"{path / MODEL_FILE}: cannot load the "
                          f"model: {err}") from err
    labels = list(ckpt_meta.get("labels") or meta["classes"])
    if labels != list(meta["classes"]):
        raise BundleError(f"{path}: {MODEL_FILE} labels {labels} differ from {BUNDLE_JSON} "
                          f"classes {meta['classes']}")
    model.eval()
    return model


def bundle_probabilities(bundle: Bundle, feats: Any, chunk_frames: int = CHUNK_FRAMES) -> Any:
    """Class probabilities (C,) of one segment's features by the bundle's backend: the ONNX
    graph, unless the input is longer than ``chunk_frames`` and the trunk pools in chunks
    (then the torch model, whose chunked pooling holds one chunk's activations)."""
    onnx_meta = bundle.meta.get("onnx") or {}
    if bundle.onnx is not None and (len(feats) <= chunk_frames
                                    or not onnx_meta.get("chunked_pooling", True)):
        return bundle.onnx.probabilities(feats)
    return class_probabilities(bundle.model, feats, bundle.device, chunk_frames)


# ----------------------------------------------------------------------------- prediction

PARTIAL_SUFFIX = ".partial"


class PredictError(SertoolError, RuntimeError):
    """predict cannot write its output or was stopped (the message names the file)."""


@dataclass
class Prediction:
    """One input file: class probabilities, or the error that stopped it; ``warnings`` name
    what makes the probabilities doubtful (silent, clipped, too_short, vad_fallback)."""

    file: str
    probs: dict[str, float] | None = None
    duration_s: float | None = None
    error: str | None = None
    warnings: dict[str, str] = field(default_factory=dict)

    @property
    def pred(self) -> str | None:
        return max(self.probs, key=self.probs.get) if self.probs else None

    @property
    def entropy(self) -> float | None:
        """The posterior's entropy over log K: 0 (certain) .. 1 (uniform); None on error."""
        from sertool.uncertainty import normalised_entropy

        return (float(normalised_entropy(np.array([list(self.probs.values())]))[0])
                if self.probs else None)

    @property
    def max_prob(self) -> float | None:
        return max(self.probs.values()) if self.probs else None

    def to_dict(self) -> dict:
        return {"file": self.file, "pred": self.pred, "probs": self.probs,
                "entropy": self.entropy, "max_prob": self.max_prob,
                "duration_s": self.duration_s, "error": self.error,
                "warnings": dict(self.warnings)}


LOW_CONFIDENCE = "low_confidence"  # the warning flag of --min-confidence


def flag_low_confidence(p: Prediction, min_confidence: float | None) -> Prediction:
    """Add the ``low_confidence`` warning to ``p`` when its max probability is below
    ``min_confidence`` (None: no check); the prediction is kept, never dropped."""
    top = p.max_prob
    if min_confidence is not None and top is not None and top < min_confidence:
        p.warnings = dict(sorted({**p.warnings, LOW_CONFIDENCE: (
            f"max probability {top:.3f} below {min_confidence:g}")}.items()))
    return p


def class_probabilities(model: Any, feats: Any, device: str = "cpu",
                        chunk_frames: int = CHUNK_FRAMES) -> Any:
    """Softmax output of ``model`` for one whole segment's features (T, D) -> numpy (C,);
    a segment longer than ``chunk_frames`` goes through the trunk in chunks where the model
    allows it (``SERModel.forward_long``)."""
    import torch

    # np.require: a writable copy only when needed (kaldiio hands out read-only arrays)
    x = torch.from_numpy(np.require(feats, np.float32, ["C", "W"])).to(device).unsqueeze(0)
    with torch.inference_mode():
        forward_long = getattr(model, "forward_long", None)
        logits = forward_long(x, chunk_frames) if forward_long else model(x)
        return torch.softmax(logits, dim=-1)[0].cpu().numpy()


def predict_files(bundle: Bundle, files: Sequence[str | os.PathLike], *,
                  progress: bool = False, chunk_frames: int = CHUNK_FRAMES,
                  on_result: Callable[[Prediction], None] | None = None,
                  stream_above_s: float | None = None,
                  min_confidence: float | None = None) -> list[Prediction]:
    """Predict every file; a file that cannot be read or processed gets ``error`` set and the
    others are still predicted. ``on_result`` is called with each prediction as it is made
    (the CLI writes it out at once, so an interrupted run keeps what was done). A file longer
    than ``stream_above_s`` (None: sertool.frontend.stream.STREAM_ABOVE_S) is read in blocks.
    ``min_confidence``: see :func:`flag_low_confidence`."""
    from sertool.frontend.pipeline import Frontend
    from sertool.progress import progress_bar

    frontend = Frontend(bundle.frontend_conf)
    # A model trained with conversation-level CMVN sees each file as its own conversation.
    per_file_cmvn = frontend.conf["cmvn"]["mode"] == "conversation"  # "none": none at all
    sample_rate = int(frontend.sample_rate)
    out: list[Prediction] = []
    for file in progress_bar(files, desc="predict", unit="file", disable=not progress):
        kill_point("predict:before-file")  # some files predicted, nothing written yet
        out.append(flag_low_confidence(_predict_one(
            bundle, frontend, str(file), sample_rate, per_file_cmvn, chunk_frames,
            stream_above_s), min_confidence))
        if on_result is not None:
            on_result(out[-1])
    return out


def _predict_one(bundle: Bundle, frontend: Any, name: str, sample_rate: int,
                 per_file_cmvn: bool, chunk_frames: int,
                 stream_above_s: float | None = None) -> Prediction:
    from sertool.frontend.stream import AudioSource  # scipy: only where audio is read

    try:
        src = AudioSource(name, sample_rate)
    except Exception as err:  # noqa: BLE001 - reported per file, the rest go on
        return Prediction(name, error=str(err))
    with src:
        return classify_span(bundle, frontend, src, 0, src.n, name,
                             per_file_cmvn=per_file_cmvn, chunk_frames=chunk_frames,
                             stream_above_s=stream_above_s)


def classify_span(bundle: Bundle, frontend: Any, src: Any, first: int, last: int, name: str,
                  *, per_file_cmvn: bool, chunk_frames: int = CHUNK_FRAMES,
                  stream_above_s: float | None = None) -> Prediction:
    """The prediction for samples [first, last) of a source (sertool.frontend.stream): read
    whole when short (:func:`classify_wave`), else streamed in blocks (the same answer up to
    float rounding, in memory that does not grow with the span)."""
    from sertool.frontend.audio import AudioError
    from sertool.frontend.stream import (
        STREAM_ABOVE_S,
        stream_features,
        streamable,
        streamed_probabilities,
    )

    limit = STREAM_ABOVE_S if stream_above_s is None else stream_above_s
    rate = frontend.sample_rate
    duration = (last - first) / rate
    try:
        if (last - first) <= limit * rate or not streamable(frontend):
            wave = src.read(first, last)
            return classify_wave(bundle, frontend, wave, name, per_file_cmvn=per_file_cmvn,
                                 chunk_frames=chunk_frames)
        normalise = per_file_cmvn or frontend.conf["cmvn"]["mode"] == "segment"
        feats = stream_features(src, first, last, frontend, normalise)
    except AudioError as err:  # it names the file
        return Prediction(name, duration_s=duration, error=str(err))
    except Exception as err:  # noqa: BLE001
        return Prediction(name, duration_s=duration, error=f"cannot process: {err}")
    return _checked(bundle, lambda: streamed_probabilities(
        bundle.model, feats, bundle.device, chunk_frames).tolist(), feats.flags, name, duration)


def wave_features(frontend: Any, wave: np.ndarray, per_file_cmvn: bool) -> tuple[Any, Any]:
    """The bundle's front-end on one waveform at its rate: features and the VAD statistics
    (``per_file_cmvn``: the model was trained with conversation-level CMVN)."""
    from sertool.frontend.cmvn import segment_cmvn

    feats, stats = frontend.process(wave, frontend.sample_rate)
    if per_file_cmvn:
        feats = segment_cmvn(feats, frontend.conf["cmvn"]["norm_vars"])
    return feats, stats


def classify_features(bundle: Bundle, feats: Any, flags: Mapping[str, str], name: str,
                      duration: float, chunk_frames: int = CHUNK_FRAMES) -> Prediction:
    """The prediction for one waveform's features; a failure is the returned ``error``."""
    return _checked(bundle, lambda: bundle_probabilities(bundle, feats, chunk_frames).tolist(),
                    flags, name, duration)


def _checked(bundle: Bundle, probabilities: Callable[[], list[float]],
             flags: Mapping[str, str], name: str, duration: float) -> Prediction:
    try:
        probs = probabilities()
    except Exception as err:  # noqa: BLE001
        return Prediction(name, duration_s=duration, error=f"cannot process: {err}")
    if not all(math.isfinite(p) for p in probs):  # overflowing logits: no answer, not NaN
        return Prediction(name, duration_s=duration, error=(
            f"the model {bundle.path / MODEL_FILE} gives NaN or infinite probabilities for it "
            f"({', '.join(f'{p:g}' for p in probs)})"))
    return Prediction(name, dict(zip(bundle.classes, probs, strict=True)), duration,
                      warnings=dict(sorted(flags.items())))


def classify_wave(bundle: Bundle, frontend: Any, wave: np.ndarray, name: str, *,
                  per_file_cmvn: bool, chunk_frames: int = CHUNK_FRAMES) -> Prediction:
    """The prediction for one waveform at the front-end's rate, the steps of a whole file's
    (``predict --segments`` classifies each cut-out segment with it, so a segment gets the
    answer its audio alone would get)."""
    duration = len(wave) / frontend.sample_rate
    try:
        feats, stats = wave_features(frontend, wave, per_file_cmvn)
    except Exception as err:  # noqa: BLE001
        return Prediction(name, duration_s=duration, error=f"cannot process: {err}")
    return classify_features(bundle, feats, stats.flags, name, duration, chunk_frames)


CSV_TAIL = ("duration_s", "error", "warning")


UNCERTAINTY = ("entropy", "max_prob")  # after the class columns (sertool.uncertainty)


def probability_cells(p: Prediction, classes: Sequence[str]) -> list[str]:
    """The class probabilities, then entropy and max_prob (empty cells on error)."""
    if not p.probs:
        return [""] * (len(classes) + len(UNCERTAINTY))
    return [*(f"{p.probs[c]:.6f}" for c in classes), f"{p.entropy:.6f}", f"{p.max_prob:.6f}"]


def _csv_row(p: Prediction, classes: Sequence[str]) -> list[str]:
    duration = "" if p.duration_s is None or math.isnan(p.duration_s) else f"{p.duration_s:.3f}"
    return [p.file, p.pred or "", *probability_cells(p, classes), duration, p.error or "",
            ";".join(p.warnings)]


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def csv_header(classes: Sequence[str]) -> str:
    return _csv_text([["file", "pred", *classes, *UNCERTAINTY, *CSV_TAIL]])


def prediction_csv_row(p: Prediction, classes: Sequence[str]) -> str:
    """One CSV line of :func:`predictions_csv` (for writing predictions as they come)."""
    return _csv_text([_csv_row(p, classes)])


def predictions_csv(preds: Sequence[Prediction], classes: Sequence[str]) -> str:
    """CSV text: ``file,pred,<class>...,entropy,max_prob,duration_s,error,warning`` (empty
    cells for a failed file; ``entropy``: the posterior's over log K, 0..1; ``warning``: the
    flags joined by ``;``, empty when nothing looks doubtful)."""
    return csv_header(classes) + "".join(prediction_csv_row(p, classes) for p in preds)


def warning_line(p: Prediction) -> str:
    """What is doubtful about a prediction, for stderr (empty when nothing is)."""
    if not p.warnings:
        return ""
    return f"{p.file}: " + "; ".join(f"{flag} ({what})" for flag, what in p.warnings.items())


def predictions_json(preds: Sequence[Prediction], bundle: Bundle) -> dict:
    return {"bundle": bundle.path.name, "classes": bundle.classes,
            "provenance": bundle.provenance, "results": [p.to_dict() for p in preds]}


def check_output(path: str | os.PathLike) -> Path:
    """Refuse an output that cannot be written before any work is done: its suffix must be
    .csv or .json, it must not be a directory, and its folder must be writable (made if
    missing)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".json"):
        raise PredictError(f"{path}: output must end in .csv or .json")
    if path.is_dir():  # it would be found only when the finished output is renamed onto it
        raise PredictError(f"{path}: is a directory; give the file to write the predictions to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise PredictError(f"{path}: cannot write the predictions there "
                           f"({err.strerror or err})") from err
    return path


def partial_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + PARTIAL_SUFFIX)


class PredictionWriter:
    """Writes predictions to ``OUT`` safely.

    Each prediction is appended to ``OUT.partial`` as it is made (a CSV row, or one JSON
    object a line for ``.json``), flushed and fsynced; when every file is done the complete
    ``OUT`` is written atomically and the ``.partial`` removed. An interrupted or failed run
    (SIGINT, SIGTERM, SIGKILL, a full disk) never leaves a half-written ``OUT``, and keeps the
    predictions it made in ``OUT.partial``.
    """

    def __init__(self, path: str | os.PathLike, bundle: Bundle):
        self.path = check_output(path)
        self.partial = partial_path(self.path)
        self.bundle = bundle
        self.json = self.path.suffix.lower() == ".json"
        self.count = 0
        self.failed = False  # a write failed: the caller keeps the predictions elsewhere
        self.size = 0  # bytes of complete lines in the .partial
        self.fd: int | None = None
        try:
            self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                              0o666)  # the umask applies
        except OSError as err:
            raise PredictError(f"{self.partial}: cannot write ({err.strerror or err})") from err
        if header := self._header():
            self._append(header)

    # What is written; ``predict --segments`` (sertool.segments) writes its rows and files
    # through the same safe steps by overriding these three.
    def _header(self) -> str:
        return "" if self.json else csv_header(self.bundle.classes)

    def _line(self, p: Any) -> str:
        return (json.dumps(p.to_dict()) + "\n" if self.json
                else prediction_csv_row(p, self.bundle.classes))

    def _write_final(self, preds: Sequence[Any]) -> None:
        write_predictions(self.path, preds, self.bundle)

    def _append(self, text: str) -> None:
        data = text.encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
        except OSError as err:
            self.failed = True
            with contextlib.suppress(OSError):  # no half line after the ones kept
                os.ftruncate(self.fd, self.size)
            raise PredictError(f"{self.partial}: cannot write ({err.strerror or err}); the "
                               f"{self.count} predictions before it are kept there") from err
        self.size += len(data)

    def add(self, p: Prediction) -> None:
        self._append(self._line(p))
        self.count += 1

    def kept(self) -> int:
        """The predictions in the ``.partial`` (read back from it: an interrupt can land
        between a row's write and ``count``)."""
        with open(self.partial, "rb") as handle:
            return handle.read().count(b"\n") - (0 if self.json else 1)

    def finish(self, preds: Sequence[Prediction]) -> None:
        """Write the complete output atomically, then drop the ``.partial``."""
        self.close()
        try:
            self._write_final(preds)
        except OSError as err:
            self.failed = True
            raise PredictError(f"{self.path}: cannot write ({err.strerror or err}); the "
                               f"predictions are kept in {self.partial}") from err
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def write_predictions(path: str | os.PathLike, preds: Sequence[Prediction],
                      bundle: Bundle) -> None:
    """Write ``.csv`` or ``.json`` (by extension), atomically."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        atomic_write_json(path, predictions_json(preds, bundle))
    elif suffix == ".csv":
        atomic_write_text(path, predictions_csv(preds, bundle.classes))
    else:
        raise BundleError(f"{path}: output must end in .csv or .json")

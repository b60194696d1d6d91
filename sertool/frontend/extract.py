"""``extract-feats``: a data directory -> Kaldi feature archives, in ``nj`` resumable jobs.

Layout of FEAT_DIR (Kaldi's steps/make_fbank.sh is the model):

``frontend.json``       the resolved front-end configuration (a FEAT_DIR made with another
                        configuration is refused, never mixed)
``feats.N.ark``         job N's matrices; ``feats.N.scp`` its index (internal)
``.done.N``             written last, after the ark and index are fsynced and renamed; holds a
                        hash of the job's inputs. A rerun skips jobs whose marker matches and
                        redoes the others from scratch, so a half-written archive is never used.
``feats.scp``           utt -> ark:offset for every utterance, sorted (C order)
``utt2num_frames``      frames kept per utterance
``vad_stats``           utt frames_in frames_kept [vad_fallback]
``failed``              utt <TAB> file <TAB> reason, one line per skipped utterance
``wave_aug.json``       with ``--wave-augment`` only: the waveform augmentation
``wave_aug.scp``        its copies, ``<utt>#<copy>`` -> ark:offset (not in feats.scp, so every
                        other stage sees the original utterances alone)
``wave_aug``            copy_key utt copy frames, one line per copy
``log/extract.N.log``   one log per job
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import kaldiio
import numpy as np
from tqdm import tqdm

from sertool.augment import WaveAugment
from sertool.config import config_fingerprint
from sertool.datadir import DataDir, require_valid, write_table
from sertool.errors import SertoolError
from sertool.frontend.audio import AudioError, load_audio
from sertool.frontend.cmvn import conversation_cmvn
from sertool.frontend.pipeline import Frontend, FrontendError, resolve_conf
from sertool.io_utils import atomic_open, atomic_write_json, atomic_write_text

# Test hook: a job process kills itself (SIGKILL) after writing this many utterances,
# leaving a half-written archive behind, exactly as a killed run would.
FAULT_ENV = "SERTOOL_FAULT_AFTER_UTTS"


class ExtractError(SertoolError, RuntimeError):
    pass


@dataclass
class JobSpec:
    index: int  # 1-based, as in Kaldi's JOB
    utts: list[str]
    sources: list[tuple[str, float | None, float | None]]
    conversations: list[str]

    def digest(self, conf_text: str) -> str:
        payload = json.dumps([self.utts, self.sources, self.conversations, conf_text])
        return hashlib.sha1(payload.encode()).hexdigest()


@dataclass
class ExtractResult:
    feat_dir: Path
    n_utts: int
    n_extracted: int
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    vad_fallback: list[str] = field(default_factory=list)
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
        if self.failed:
            text += f"; {len(self.failed)} FAILED, listed in {self.feat_dir / 'failed'}"
        return text


def _conversation_of(data: DataDir, utt: str) -> str:
    if data.utt2conv and utt in data.utt2conv:
        return data.utt2conv[utt]
    if data.segments is not None:
        return data.segments[utt].recording
    return utt


def split_jobs(data: DataDir, nj: int, keep_conversations: bool) -> list[JobSpec]:
    """Split the sorted utterances into ``nj`` contiguous parts of about equal size.

    With conversation-level CMVN a conversation is never split across jobs.
    """
    utts = data.utts
    convs = [_conversation_of(data, u) for u in utts]
    if keep_conversations:
        order = sorted(range(len(utts)), key=lambda i: (convs[i], utts[i]))
        utts, convs = [utts[i] for i in order], [convs[i] for i in order]
    nj = max(1, min(nj, len(utts)))
    bounds = [round(k * len(utts) / nj) for k in range(nj + 1)]
    if keep_conversations:  # move each boundary to the start of a conversation
        for k in range(1, nj):
            while 0 < bounds[k] < len(utts) and convs[bounds[k]] == convs[bounds[k] - 1]:
                bounds[k] += 1
    jobs = []
    for k in range(nj):
        part = range(bounds[k], max(bounds[k], bounds[k + 1]))
        jobs.append(JobSpec(k + 1, [utts[i] for i in part],
                            [data.audio_of(utts[i]) for i in part], [convs[i] for i in part]))
    return jobs


def _job_paths(feat_dir: Path, index: int) -> dict[str, Path]:
    return {
        "ark": feat_dir / f"feats.{index}.ark",
        "scp": feat_dir / f"feats.{index}.scp",
        "vad": feat_dir / f"vad_stats.{index}",
        "failed": feat_dir / f"failed.{index}",
        "aug": feat_dir / f"wave_aug.{index}",
        "done": feat_dir / f".done.{index}",
        "log": feat_dir / "log" / f"extract.{index}.log",
    }


def run_job(job: JobSpec, conf: dict, feat_dir: str, digest: str, strict: bool,
            progress_queue=None, wave_augment: dict | None = None) -> int:
    """Extract one job's utterances (and their waveform-augmented copies) into feats.N.ark;
    returns the number of utterances written."""
    feat_dir_path = Path(feat_dir)
    paths = _job_paths(feat_dir_path, job.index)
    paths["done"].unlink(missing_ok=True)
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    frontend = Frontend(conf)
    conversation_mode = frontend.conf["cmvn"]["mode"] == "conversation"
    fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
    tmp_ark = paths["ark"].with_name(paths["ark"].name + ".tmp")
    tmp_scp = paths["scp"].with_name(paths["scp"].name + ".tmp")
    vad_lines, failed_lines, aug_lines = [], [], []
    augment = WaveAugment.from_conf(wave_augment) if wave_augment else None
    written = 0
    with open(paths["log"], "w", encoding="utf-8") as log, \
            kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        log.write(f"# job {job.index}: {len(job.utts)} utterances, started {time.ctime()}\n")
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

        for i, (utt, (source, start, end)) in enumerate(
                zip(job.utts, job.sources, strict=True)):
            if conversation_mode and i and job.conversations[i] != job.conversations[i - 1]:
                flush_conversation()
            try:
                wave = load_audio(source, frontend.sample_rate, start, end)
                feats, stats = frontend.process(wave, normalise=not conversation_mode)
            except (AudioError, FrontendError) as err:
                reason = str(err).replace(source + ": ", "")
                message = f"utterance {utt} ({source}): {reason}"
                if strict:
                    raise ExtractError(message) from err
                failed_lines.append(f"{utt}\t{source}\t{reason}\n")
                log.write(f"FAILED {message}\n")
            else:
                flag = " vad_fallback" if stats.fallback else ""
                vad_lines.append(f"{utt} {stats.frames_in} {stats.frames_kept}{flag}\n")
                if stats.fallback:
                    log.write(f"WARNING utterance {utt} ({source}): {stats.note}\n")
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
            if progress_queue is not None:
                progress_queue.put(1)
            if fault_after and written >= fault_after:
                writer.fark.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        flush_conversation()
        log.write(f"# done: {written} written, {len(failed_lines)} failed, {time.ctime()}\n")

    # The index names the temporary archive; point it at the final name (same offsets).
    with open(tmp_scp, encoding="utf-8") as handle:
        scp_text = handle.read().replace(f"{tmp_ark}:", f"{paths['ark']}:")
    with open(tmp_ark, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp_ark, paths["ark"])
    atomic_write_text(paths["scp"], scp_text)
    tmp_scp.unlink(missing_ok=True)
    atomic_write_text(paths["vad"], "".join(vad_lines))
    atomic_write_text(paths["failed"], "".join(failed_lines))
    atomic_write_text(paths["aug"], "".join(aug_lines))
    atomic_write_text(paths["done"], digest + "\n")
    return written


def _prepare_feat_dir(feat_dir: Path, conf: dict, wave_augment: dict | None = None) -> str:
    """Write frontend.json (and wave_aug.json), or check that existing ones match. Returns the
    fingerprint of both."""
    feat_dir.mkdir(parents=True, exist_ok=True)
    aug_path = feat_dir / "wave_aug.json"
    previous_aug = (json.loads(aug_path.read_text(encoding="utf-8"))
                    if aug_path.exists() else None)
    if (feat_dir / "frontend.json").exists() and previous_aug != wave_augment:
        had = (f"waveform augmentation {previous_aug}" if previous_aug
               else "no waveform augmentation")
        raise ExtractError(f"{feat_dir} was made with {had} (see {aug_path}); give the same "
                           "--wave-augment, remove the directory or choose another FEAT_DIR")
    conf_path = feat_dir / "frontend.json"
    fingerprint = config_fingerprint(conf)
    if conf_path.exists():
        with open(conf_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if config_fingerprint(previous) != fingerprint:
            raise ExtractError(
                f"{feat_dir} was made with another front-end configuration "
                f"(see {conf_path}); remove the directory or choose another FEAT_DIR")
    else:
        if wave_augment:
            atomic_write_json(aug_path, wave_augment)
        atomic_write_json(conf_path, conf)  # last: it marks the directory as made
    if wave_augment:
        fingerprint = config_fingerprint({"frontend": conf, "wave_augment": wave_augment})
    return fingerprint


def _remove_stale_jobs(feat_dir: Path, nj: int) -> None:
    for path in feat_dir.iterdir():
        match = re.fullmatch(r"(?:feats\.(\d+)\.(?:ark|scp)|vad_stats\.(\d+)|failed\.(\d+)|"
                             r"wave_aug\.(\d+)|\.done\.(\d+))(?:\.tmp)?", path.name)
        if match and int(next(g for g in match.groups() if g)) > nj:
            path.unlink()


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
) -> ExtractResult:
    """Extract features for every utterance of ``data_dir`` into ``feat_dir``.

    With ``wave_augment`` each utterance also gets its waveform-augmented copies, written to
    FEAT_DIR/wave_aug.scp (feats.scp keeps the originals only).

    Bad utterances (unreadable, empty, non-finite, shorter than a frame, ...) are listed in
    FEAT_DIR/failed and skipped; ``strict`` makes the first one fatal. Raises ExtractError
    when every utterance failed.
    """
    data = require_valid(data_dir, check_files=False)  # a missing file fails one utterance
    feat_dir = Path(feat_dir).resolve()
    resolved = resolve_conf(conf, conf_path, list(overrides))
    aug_conf = wave_augment.to_dict() if wave_augment is not None else None
    if aug_conf and resolved["cmvn"]["mode"] == "conversation":
        raise ExtractError("--wave-augment needs segment-level (or no) CMVN, not conversation")
    fingerprint = _prepare_feat_dir(feat_dir, resolved, aug_conf)
    jobs = split_jobs(data, nj, resolved["cmvn"]["mode"] == "conversation")
    _remove_stale_jobs(feat_dir, len(jobs))

    todo, skipped = [], 0
    for job in jobs:
        digest = job.digest(fingerprint)
        done = _job_paths(feat_dir, job.index)["done"]
        if done.exists() and done.read_text().strip() == digest:
            skipped += 1
        else:
            todo.append((job, digest))

    total = sum(len(job.utts) for job, _ in todo)
    bar = tqdm(total=total, desc=f"extract-feats {feat_dir.name}", unit="utt",
               disable=not progress or total == 0, dynamic_ncols=True)
    try:
        if len(todo) <= 1:
            for job, digest in todo:
                run_job(job, resolved, str(feat_dir), digest, strict, None, aug_conf)
                bar.update(len(job.utts))
        else:
            _run_parallel(todo, resolved, feat_dir, strict, bar, aug_conf)
    finally:
        bar.close()
    return _merge(feat_dir, jobs, skipped)


def _run_parallel(todo, conf: dict, feat_dir: Path, strict: bool, bar: tqdm,
                  wave_augment: dict | None = None) -> None:
    # spawn, not fork: a forked child of a process that has used torch (pitch shift, OpenMP)
    # can deadlock in its thread pool
    context = get_context("spawn")
    manager = context.Manager()
    queue = manager.Queue()
    try:
        with ProcessPoolExecutor(max_workers=len(todo), mp_context=context) as pool:
            futures = [pool.submit(run_job, job, conf, str(feat_dir), digest, strict, queue,
                                   wave_augment) for job, digest in todo]
            while not all(f.done() for f in futures):
                _drain(queue, bar)
                time.sleep(0.05)
            _drain(queue, bar)
            for future in futures:
                future.result()  # re-raises a job's error (strict mode, killed job)
    finally:
        manager.shutdown()


def _drain(queue, bar: tqdm) -> None:
    n = 0
    while not queue.empty():
        n += queue.get_nowait()
    if n:
        bar.update(n)


def _merge(feat_dir: Path, jobs: list[JobSpec], skipped: int) -> ExtractResult:
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
    if (feat_dir / "wave_aug.json").exists():
        write_table(feat_dir / "wave_aug.scp", {k: table[k] for k in aug_rows})
        write_table(feat_dir / "wave_aug", aug_rows)
    table = {k: v for k, v in table.items() if k not in aug_rows}
    n_utts = sum(len(job.utts) for job in jobs)
    if len(table) + len(failed) != n_utts:
        raise ExtractError(f"{feat_dir}: {len(table)} extracted + {len(failed)} failed "
                           f"!= {n_utts} utterances; rerun to redo the jobs")
    write_table(feat_dir / "feats.scp", table)
    vad_rows = [line.split() for line in vad]
    write_table(feat_dir / "utt2num_frames", {r[0]: r[2] for r in vad_rows})
    write_table(feat_dir / "vad_stats", {r[0]: " ".join(r[1:]) for r in vad_rows})
    with atomic_open(feat_dir / "failed", "w", encoding="utf-8") as handle:
        handle.writelines(sorted(failed))
    result = ExtractResult(
        feat_dir, n_utts, len(table),
        failed=[tuple(line.rstrip("\n").split("\t", 2)) for line in sorted(failed)],
        vad_fallback=sorted(r[0] for r in vad_rows if "vad_fallback" in r[3:]),
        jobs_skipped=skipped,
        n_copies=len(aug_rows),
    )
    if n_utts and not table:
        raise ExtractError(f"every utterance failed; see {feat_dir / 'failed'}: "
                           + failed[0].strip().replace("\t", " "))
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
    return extract_feats(out_dir / "data", out_dir, conf, nj=1, progress=progress,
                         conf_path=conf_path, overrides=overrides)

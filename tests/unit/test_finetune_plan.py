"""finetune = plan + run: ``sertool.transfer.plan.resolve`` settles the mode, the classes, the
label map, the configurations and the identity, and refuses what cannot work before anything
is written; the plan is small when pickled (it travels to every Slurm fold task)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from finetune_inputs import FAST, TINY, _inputs

from sertool.cli import main
from sertool.errors import SertoolError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _resolve(tmp_path: Path, *, init="random", model_conf=TINY, sets=(), **kwargs):
    from sertool.transfer.driver import resolve_configs
    from sertool.transfer.plan import resolve

    conf, mconf, tconf = resolve_configs(None, str(model_conf) if model_conf else None, None,
                                         [*FAST, *sets])
    return resolve(tmp_path / "feats", tmp_path / "data", tmp_path / "exp", init=init,
                   conf=conf, model_conf=mconf, train_conf=kwargs.pop("train_conf", tconf),
                   command="test", **kwargs)


def _speaker_model(path: Path, frontend: dict | None = None) -> Path:
    import torch

    from sertool.models import build_model, load_model_conf
    from sertool.nnet.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(path, build_model(load_model_conf(TINY), 3, 20), labels=["a", "b", "c"],
                    extra={"frontend": frontend} if frontend else None, with_rng=False)
    return path


def test_importing_the_plan_does_not_import_torch():
    code = ("import sys, sertool.transfer.plan; "
            "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_resolve_settles_mode_classes_and_identity_and_writes_nothing(tmp_path):
    from sertool.transfer.plan import Mode

    _inputs(tmp_path)
    before = _tree(tmp_path)
    plan = _resolve(tmp_path)  # --init random
    assert plan.mode is Mode.FROZEN and plan.random_trunk
    assert plan.init == tmp_path / "exp" / "random_trunk.pt"  # made by the run, not here
    assert plan.classes == ["ang", "neu"] and plan.feat_dim == 20
    assert plan.embeddings.path == tmp_path / "exp" / "embeddings"
    assert plan.train_conf is None  # the frozen head does not use the trainer
    # the identity, key for key as finetune.json has always held it (existing runs resume)
    assert list(plan.identity) == ["feat_dir", "data_dir", "init", "mode", "conf",
                                   "model_conf", "train_conf", "classes"]
    assert plan.identity["init"] == "random (untrained trunk, seed 0)"
    assert plan.identity["mode"] == "frozen"
    assert plan.identity["feat_dir"] == str((tmp_path / "feats").resolve())
    assert plan.experiment["frontend"] == {"kind": "logmel", "normalisation": "segment",
                                           "vad": True, "dims": 20}
    assert plan.experiment["augmentation"] == {"policy": "conservative", "copies": 1}

    scratch = _resolve(tmp_path, init="none")
    assert scratch.mode is Mode.SCRATCH and scratch.init is None and scratch.embeddings is None
    assert scratch.train_conf is not None and scratch.identity["mode"] == "scratch"

    model = _speaker_model(tmp_path / "speaker.pt")
    before[str(model.relative_to(tmp_path))] = model.read_bytes()
    unfreeze = _resolve(tmp_path, init=model, model_conf=None, unfreeze=True)
    assert unfreeze.mode is Mode.UNFREEZE and unfreeze.init == model
    assert unfreeze.model_conf["type"] == "resnet"  # the speaker model's network
    assert unfreeze.experiment["unfreeze"] is True
    assert _tree(tmp_path) == before and not (tmp_path / "exp").exists()


def test_the_plan_pickles_as_paths_and_configurations(tmp_path):
    """It is the Slurm task spec's argument: the tables it read stay here, a task reads them
    again (the spec of the Slurm test must stay under 10 kB)."""
    _inputs(tmp_path)
    plan = _resolve(tmp_path)
    assert plan.utt2label and plan.folds  # read by resolve, kept in this process
    blob = pickle.dumps(plan)
    assert len(blob) < 6_000, len(blob)
    assert b"spk0-u0" not in blob  # no utterance list, label table or feature index
    again = pickle.loads(blob)
    assert again.utt2label == plan.utt2label and again.folds == plan.folds
    assert again.features.feats == plan.features.feats
    assert again.identity == plan.identity


def _made_with_seed(tmp_path: Path, seed: int) -> None:
    """EXP_DIR/finetune.json of the same finetune with another seed."""
    identity = _resolve(tmp_path).identity
    identity["conf"]["seed"] = seed
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "finetune.json").write_text(json.dumps(identity))


def _drop_line(path: Path, key: str) -> None:
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if not line.startswith(key + " ")))


REFUSALS = [  # (name, change the inputs, resolve's arguments, the message)
    ("unknown fold", None, {"fold": "9"}, "{data}/folds: no fold '9' (folds: 0, 1)"),
    ("no utt2emo", lambda t: (t / "data" / "utt2emo").unlink(), {},
     "{data}/utt2emo: not found (an emotion data directory has one)"),
    ("utterance without a label", lambda t: _drop_line(t / "data" / "utt2emo", "spk0-u0"), {},
     "{data}/utt2emo: 1 utterance(s) of the folds are missing, e.g. 'spk0-u0'"),
    ("class not trained in a fold",
     lambda t: (t / "data" / "utt2emo").write_text(
         (t / "data" / "utt2emo").read_text().replace("spk0-u0 neu", "spk0-u0 sad")), {},
     "{data}/folds/0/train: no training utterance of class 'sad', which has 1 utterance(s) in "
     "the folds (first at {data}/utt2emo:1, spk0-u0); a class must be trained in every fold, "
     "else its test utterances count against UA: fix its label, or map it to another class "
     "with --labels FILE (a line 'sad CODE'), or drop its utterances (sertool subset-data-dir "
     "--utt-list)"),
    ("no feats.scp", lambda t: (t / "feats" / "feats.scp").unlink(), {},
     "{feats}/feats.scp: file not found (make the feature directory with sertool "
     "extract-feats)"),
    ("no frontend.json", lambda t: (t / "feats" / "frontend.json").unlink(), {},
     "{feats}/frontend.json: not found (make FEAT_DIR with extract-feats)"),
    ("utterance without features", lambda t: _drop_line(t / "feats" / "feats.scp", "spk1-u2"),
     {}, "{feats}/feats.scp: 1 utterance(s) of the folds are missing, e.g. 'spk1-u2' "
     "(extract-feats lists the utterances it could not use in {feats}/failed; drop them from "
     "the data directory and its folds with `sertool fix-data-dir {data} --feat-dir {feats}`)"),
    ("random without a network", None, {"model_conf": None},
     "--init random needs --model-conf (the network whose untrained trunk is frozen)"),
    ("random unfrozen", None, {"unfreeze": True},
     "--init random is the frozen random-trunk baseline; a network trained from scratch is "
     "--init none"),
    ("speaker model not found", None, {"init": "{tmp}/nope.pt", "model_conf": None},
     "{tmp}/nope.pt: speaker model not found"),
    ("speaker model and a network", lambda t: (t / "m.pt").write_bytes(b"x"),
     {"init": "{tmp}/m.pt"},
     "--model-conf is for --init none: with --init the network is the speaker model's "
     "({tmp}/m.pt)"),
    ("none without a network", None, {"init": "none", "model_conf": None},
     "--init none needs --model-conf (the network to train)"),
    ("none unfrozen", None, {"init": "none", "unfreeze": True},
     "--unfreeze needs --init SPEAKER_MODEL (nothing is frozen without a pretrained trunk)"),
    ("inner_cv through the trainer", None, {"init": "none", "sets": ["selection=inner_cv"]},
     "selection inner_cv trains inner_folds + 1 heads per fold on the frozen trunk's stored "
     "embeddings; with --unfreeze or --init none use selection heldout_speakers"),
    ("another configuration in EXP_DIR", lambda t: _made_with_seed(t, 5), {},
     "{tmp}/exp was made with another configuration (conf.seed differs; see "
     "{tmp}/exp/finetune.json); use another EXP_DIR or remove it"),
]


@pytest.mark.parametrize(("change", "args", "message"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_every_refusal_happens_at_plan_time_and_writes_nothing(tmp_path, change, args,
                                                               message):
    _inputs(tmp_path)
    if change is not None:
        change(tmp_path)
    before = _tree(tmp_path)
    names = {"tmp": tmp_path, "data": tmp_path / "data", "feats": tmp_path / "feats"}
    args = {k: v.format(**names) if isinstance(v, str) else v for k, v in args.items()}
    with pytest.raises(SertoolError) as err:
        _resolve(tmp_path, **args)
    assert str(err.value) == message.format(**names)
    assert _tree(tmp_path) == before


def test_a_speaker_model_of_another_front_end_is_refused_at_plan_time(tmp_path):
    from sertool.frontend.pipeline import FrontendError, resolve_conf

    _inputs(tmp_path)
    model = _speaker_model(tmp_path / "speaker.pt", resolve_conf({"kind": "mfcc"}))
    before = _tree(tmp_path)
    with pytest.raises(FrontendError, match=f"^{tmp_path / 'feats'} was made with another "
                       r"front-end than the model .*speaker.pt expects \(kind 'logmel' "
                       r"\(model: 'mfcc'\)"):
        _resolve(tmp_path, init=model, model_conf=None)
    assert _tree(tmp_path) == before


def _cli(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def _finetune_args(tmp_path: Path, *extra: str | Path) -> list:
    return ["finetune", tmp_path / "feats", tmp_path / "data", tmp_path / "exp", "--init",
            "random", "--model-conf", TINY, *[a for kv in FAST for a in ("--set", kv)], *extra]


def test_finetune_refused_for_another_configuration_leaves_exp_dir_as_it_was(tmp_path):
    """The random trunk is made by the run, after the plan: a refused rerun writes nothing
    (it used to leave EXP_DIR/random_trunk.pt behind)."""
    _inputs(tmp_path)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "finetune.json").write_text(json.dumps({"mode": "scratch"}))
    before = _tree(tmp_path)
    result = _cli(*_finetune_args(tmp_path))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"sertool: error: {tmp_path / 'exp'} was made with another "
                                    "configuration (")
    assert result.stderr.rstrip().endswith("use another EXP_DIR or remove it")
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before


def test_finetune_reads_the_label_map_once_and_prints_its_summary(tmp_path, monkeypatch):
    """--labels is read by the plan; the fold jobs take the map from it. The summary lines are
    the result's (fold lines on stderr, the last line on stdout)."""
    import sertool.labels

    _inputs(tmp_path)
    emo = tmp_path / "data" / "utt2emo"
    emo.write_text(emo.read_text().replace(" ang", " angry"))
    labels = tmp_path / "labels.txt"
    labels.write_text("angry ang\n")
    reads = []
    read_text = sertool.labels.read_text
    monkeypatch.setattr(sertool.labels, "read_text",
                        lambda path, **kw: reads.append(Path(path)) or read_text(path, **kw))
    before = {p: b for p, b in _tree(tmp_path).items() if not p.startswith("exp")}
    result = _cli(*_finetune_args(tmp_path, "--labels", labels))
    assert result.exit_code == 0, result.output
    assert reads == [labels]
    assert [line.split(" held-out")[0] for line in result.stderr.splitlines()
            if line.startswith("fold ")] == ["fold 0: trained", "fold 1: trained"]
    assert result.stdout == (f"{tmp_path / 'exp'}: transfer, trunk frozen, 2 fold(s); "
                             f"next: sertool score {tmp_path / 'exp'}\n")
    assert {p: b for p, b in _tree(tmp_path).items() if not p.startswith("exp")} == before


def test_balance_options_are_checked_and_change_the_identity_only_when_set(tmp_path):
    _inputs(tmp_path)
    plan = _resolve(tmp_path)
    assert "class_weights" not in plan.identity["conf"]["head"]
    weighted = _resolve(tmp_path, sets=["head.class_weights=balanced"])
    assert weighted.identity["conf"]["head"]["class_weights"] == "balanced"
    scratch = _resolve(tmp_path, init="none")
    assert not {"class_weights", "sampler"} & set(scratch.identity["train_conf"])
    with pytest.raises(SertoolError, match="head.sampler = \"balanced\" draws the FC head's"):
        _resolve(tmp_path, sets=["head.kind=linear", "head.sampler=balanced"])
    with pytest.raises(SertoolError, match="head.class_weights must be one of none, balanced"):
        _resolve(tmp_path, sets=["head.class_weights=inverse"])
    with pytest.raises(SertoolError, match="--set train.class_weights=balanced"):
        _resolve(tmp_path, init="none", sets=["head.class_weights=balanced"])


def _renamed_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A second tiny corpus at tmp_path/b: the first's tables with every id prefixed 'b'."""
    import shutil

    _inputs(tmp_path / "b")
    for name in ("feats/feats.scp", "data/utt2spk", "data/utt2emo", "data/spk2utt"):
        path = tmp_path / "b" / name
        if path.is_file():
            path.write_text(path.read_text().replace("spk", "bspk"))
    shutil.rmtree(tmp_path / "b" / "data" / "folds")  # a test corpus needs no folds
    return tmp_path / "b" / "feats", tmp_path / "b" / "data"


def test_cross_corpus_plan_refusals_and_pickled_tables(tmp_path):
    from sertool.transfer.crosscorpus import CrossCorpusError

    _inputs(tmp_path)
    feats_b, data_b = _renamed_corpus(tmp_path)
    with pytest.raises(SertoolError, match="--test-data and --test-feats go together"):
        _resolve(tmp_path, test_data=data_b)
    with pytest.raises(SertoolError, match="--strict-classes and --test-emb-dir are for a"):
        _resolve(tmp_path, strict_classes=True)
    with pytest.raises(SertoolError, match="--export-all: a cross-corpus run's model"):
        _resolve(tmp_path, test_data=data_b, test_feats=feats_b, export_all=True)
    with pytest.raises(SertoolError, match="--fold 0: a cross-corpus run has one fold"):
        _resolve(tmp_path, test_data=data_b, test_feats=feats_b, fold="0")
    with pytest.raises(CrossCorpusError, match="is the training data directory"):
        _resolve(tmp_path, test_data=tmp_path / "data", test_feats=tmp_path / "feats")
    _inputs(tmp_path / "same_ids")  # another corpus with the first one's utterance ids
    with pytest.raises(CrossCorpusError, match=r"12 utterance id\(s\) are also in .*spk0-"):
        _resolve(tmp_path, test_data=tmp_path / "same_ids" / "data",
                 test_feats=tmp_path / "same_ids" / "feats")
    plan = _resolve(tmp_path, test_data=data_b, test_feats=feats_b)
    assert [f.name for f in plan.folds] == ["cross"]
    assert plan.folds[0].train == sorted(plan.utt2spk)[12:]  # 'spk..' sorts after 'bspk..'
    assert plan.folds[0].test == [u for u in sorted(plan.utt2spk) if u.startswith("bspk")]
    assert plan.identity["cross_corpus"]["test_data_dir"] == str(data_b.resolve())
    assert not (tmp_path / "exp").exists()
    again = pickle.loads(pickle.dumps(plan))
    assert again.utt2label == plan.utt2label and again.utt2spk == plan.utt2spk
    assert again.folds[0] == plan.folds[0] and len(again.utt2label) == 24

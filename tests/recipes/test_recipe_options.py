"""local/parse_options.sh, the option parser of every recipe (and of local/prepare_data.sh): its
--help is made from the variables a script declares above the parser, with their defaults and
comments; an undeclared option or a non-integer for an integer option is refused with one line on
stderr; option names and values are never run as shell code. Fast: nothing runs past the parser
except one demo run with an empty stage range."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from recipe_run import REPO, copy_recipe, run_recipe

RECIPES = ("demo", "iemocap", "ravdess", "seed-corpora")
SCRIPTS = (*(f"recipes/{name}/run.sh" for name in RECIPES), "local/prepare_data.sh")
HEADER = ["options (defaults, or as set by the options before --help):"]
DECLARATION = re.compile(r"([A-Za-z_]\w*)=(.*)")


def _declared(script: Path) -> list[tuple[str, str, str]]:
    """(name, default, comment on its line) of each variable assigned at the start of a line
    above the line that sources the parser, read independently of the parser."""
    options = []
    for line in script.read_text().splitlines():
        if "parse_options.sh" in line and not line.startswith("#"):
            return options
        if match := DECLARATION.fullmatch(line):
            value, _, comment = match[2].partition("#")
            options.append((match[1], "".join(shlex.split(value)), comment.strip()))
    raise AssertionError(f"{script} does not source parse_options.sh")


def _tree(tmp_path: Path, script: str) -> Path:
    """The script's copy in a scratch repository tree (recipes/NAME, local, conf)."""
    if script.startswith("recipes/"):
        return copy_recipe(script.split("/")[1], tmp_path) / "run.sh"
    copy_recipe("demo", tmp_path)  # links tmp_path/local to the repository's
    return tmp_path / script


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    if script.name == "run.sh":
        return run_recipe(script.parent, *args, timeout=60)
    # local/prepare_data.sh runs where it is started: in the scratch tree, not the repository
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60,
                          cwd=script.parent.parent)


def _help_options(proc: subprocess.CompletedProcess) -> list[tuple[str, str, str]]:
    """(--name, value, comment) of each line of --help; each line is `--name VALUE [# comment]`
    with VALUE one shell word, so that it can be pasted back onto a command line."""
    assert proc.returncode == 0 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[1:2] == HEADER
    options = []
    for line in lines[2:]:
        words, _, comment = line.partition(" # ")
        name, value = shlex.split(words)
        options.append((name, value, comment))
    return options


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_exactly_the_declared_options_with_defaults_and_comments(tmp_path, script):
    declared = _declared(REPO / script)
    assert len(declared) >= 6
    path = _tree(tmp_path, script)
    proc = _run(path, "--help")
    assert proc.stderr.splitlines()[0] == f"usage: {path} [--option value ...]"
    listed = _help_options(proc)
    assert [(n, v) for n, v, _ in listed] == [(f"--{n.replace('_', '-')}", v)
                                             for n, v, _ in declared]
    for (_, _, comment), (name, _, on_its_line) in zip(listed, declared, strict=True):
        # an indented comment line below a declaration continues its comment
        assert comment.startswith(on_its_line) and bool(comment) == bool(on_its_line), name
    assert not any(n == "config" for n, _, _ in declared)  # Kaldi sources --config as shell code


def test_help_joins_a_comment_continued_on_the_next_lines(tmp_path):
    listed = {n: c for n, _, c in _help_options(_run(_tree(tmp_path, SCRIPTS[0]), "--help"))}
    assert listed["--cmd"] == ("where the jobs of extract-feats and finetune (its embeddings, one "
                               "job per fold) run: local, or slurm (one sbatch job array a stage; "
                               'README "Running on a cluster")')
    assert listed["--corpus"] == "where the synthetic corpus is written"
    assert listed["--stage"] == ""


def _refused(tmp_path: Path, path: Path, args: list[str], message: str) -> None:
    """ARGS refused by the parser of PATH (in the scratch tree TMP_PATH): exit status 1, MESSAGE
    the one line on stderr, nothing written, no file `pwned` made by a command hidden in an
    option."""
    before = _files(tmp_path)
    proc = _run(path, *args)
    assert _files(tmp_path) == before and not (Path.cwd() / "pwned").exists()
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", f"{path}: {message}\n")


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("option", ["--PATH", "--x[$(touch pwned)]", "--no-such-option"])
def test_an_undeclared_option_is_refused_naming_it_and_the_known_ones(tmp_path, script, option):
    known = ", ".join(f"--{n.replace('_', '-')}" for n, _, _ in _declared(REPO / script))
    _refused(tmp_path, _tree(tmp_path, script), [option, "x", "DATA"],
             f"unknown option {option} (known: {known})")


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("value", ["abc", "2.5", "", "1 2", "$(touch pwned)", "x[$(touch pwned)]"])
def test_an_integer_option_refuses_a_non_integer_naming_the_option_and_the_value(
        tmp_path, script, value):
    option = "--stop-stage" if script.startswith("recipes/") else "--folds"
    path = _tree(tmp_path, script)
    message = f"option {option} needs an integer, not '{value}'"
    _refused(tmp_path, path, [option, value], message)
    _refused(tmp_path, path, [f"{option}={value}"], message)


def test_an_option_at_the_end_without_its_value_is_refused(tmp_path):
    _refused(tmp_path, _tree(tmp_path, SCRIPTS[0]), ["--nj"], "option --nj needs a value")


def test_both_spellings_and_both_forms_set_an_option_and_values_stay_text(tmp_path):
    payload = "$(touch pwned); `touch pwned` it's \"a b\" ${PATH} *"
    proc = _run(_tree(tmp_path, SCRIPTS[0]), "--nj=3", "--stop_stage", "2", "--seed", "-1",
                "--speaker-conf", payload, "--model_conf=", "--stop-stage", "4", "--help")
    listed = {n: v for n, v, _ in _help_options(proc)}
    assert (listed["--nj"], listed["--stop-stage"], listed["--seed"]) == ("3", "4", "-1")
    assert listed["--speaker-conf"] == payload and listed["--model-conf"] == ""
    assert listed["--stage"] == "0"  # untouched: the default
    assert not list(tmp_path.rglob("pwned")) and not (Path.cwd() / "pwned").exists()


def test_a_run_with_an_empty_stage_range_gets_the_options_literally(tmp_path):
    """Past the parser: the demo with options in every form and nothing to run succeeds, and a
    value holding a command is only text."""
    recipe = copy_recipe("demo", tmp_path)
    proc = run_recipe(recipe, "--nj=3", "--stop_stage", "2", "--stage", "3",
                      "--corpus", "$(touch pwned)", timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not list(tmp_path.rglob("pwned")) and not (Path.cwd() / "pwned").exists()


def test_prepare_data_keeps_its_positional_arguments(tmp_path):
    """Arguments that are not options stay in "$@", wherever they are (here: too few)."""
    proc = _run(_tree(tmp_path, "local/prepare_data.sh"), "ravdess", "--exp=2", "SRC")
    assert proc.returncode == 1 and proc.stderr.startswith("usage: ")
    assert "CORPUS SRC_DIR DATA_DIR" in proc.stderr

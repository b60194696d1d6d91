"""Helpers for the recipe tests: a recipe copied into a scratch tree shaped like the repository
(its ``local -> ../../local`` and its ``../../conf`` paths resolve there), and running it with this
environment's ``sertool`` and ``python3`` first on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def copy_recipe(name: str, tmp: Path) -> Path:
    """``tmp/recipes/<name>`` with ``tmp/local`` and ``tmp/conf`` linked to the repository's."""
    recipe = tmp / "recipes" / name
    # Outputs of a run in the working tree (ignored by git) are not part of the recipe.
    shutil.copytree(REPO / "recipes" / name, recipe, symlinks=True,
                    ignore=shutil.ignore_patterns("corpus", "data", "feats", "exp", "*.live.sh"))
    for shared in ("local", "conf"):
        if not (tmp / shared).exists():
            (tmp / shared).symlink_to(REPO / shared)
    return recipe


def run_recipe(recipe: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``recipe/run.sh ARGS``; stdout and stderr captured as text."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    return subprocess.run([str(recipe / "run.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)

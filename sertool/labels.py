"""Emotion class codes: the one list of them, and ``--labels`` maps from other names.

Every corpus module maps its own emotion names to these three-letter codes (RAVDESS ``03`` ->
``hap``, TESS ``happy`` -> ``hap``, ...), so ``utt2emo`` holds codes only and a typo cannot
become a class of its own. A corpus that uses other names (a CSV manifest, a hand-made data
directory) gives a map with ``--labels FILE`` to ``prepare``, ``validate-data-dir``,
``finetune`` and ``train --task emotion``:

    # name code (one pair per line; # starts a comment)
    happy hap
    angry ang
    excited hap    # merge: several names may map to one code
    con con        # a line 'code code' declares a new class code (here contempt)

A name is mapped once (no chains); a code that is neither in :data:`CODES` nor declared by its
own ``code code`` line is refused, so a typo in the map cannot create a class either. ``prepare``
records the map and the declared codes in ``prepare.json``; later stages read the declared codes
from there, so the map is needed again only where ``utt2emo`` still holds the other names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sertool.datadir import read_table, read_text
from sertool.errors import SertoolError

# The class codes the corpus modules map to (their LABELS, IEMOCAP's class maps).
CODES: dict[str, str] = {
    "ang": "anger", "bor": "boredom", "cal": "calm", "dis": "disgust", "exc": "excitement",
    "fea": "fear", "fru": "frustration", "hap": "happiness", "neu": "neutral",
    "sad": "sadness", "sur": "surprise",
}
TOKEN = re.compile(r"^[A-Za-z0-9_.+-]+$")  # a Kaldi-safe label or id token
FORMAT = ("one 'name code' pair per line, e.g. 'happy hap'; a line 'code code' declares a new "
          "class code; # starts a comment")


class LabelError(SertoolError, ValueError):
    """An emotion label that is not a class code (nor mapped to one), or a bad --labels file."""


@dataclass(frozen=True)
class LabelMap:
    """The accepted labels: the class codes, the codes declared new, and names mapped to codes."""

    names: Mapping[str, str] = field(default_factory=dict)  # name -> code
    new_codes: tuple[str, ...] = ()
    source: str | None = None  # the --labels file (for messages)

    @property
    def codes(self) -> list[str]:
        return sorted(set(CODES) | set(self.new_codes))

    def code_of(self, label: str) -> str | None:
        """The class code of ``label`` (a mapped name or a code), None when unknown."""
        if label in self.names:
            return self.names[label]
        return label if label in CODES or label in self.new_codes else None

    def unknown(self, label: str, where: str, count: int = 1, unit: str = "lines") -> str:
        """The message for an unknown ``label`` first found at ``where`` (``file:line``)."""
        times = f" ({count} {unit}, first here)" if count > 1 else ""
        guess = label.lower()[:3] if label.lower()[:3] in self.codes else None
        mapped = f" nor a name in {self.source}" if self.source else ""
        example = f"{label} {guess or 'CODE'}"
        return (f"{where}: unknown emotion label {label!r}{times}: not a class code "
                f"({' '.join(self.codes)}){mapped}; "
                + (f"if it means {guess}, " if guess else "")
                + (f"add the line '{example}' to {self.source}" if self.source else
                   f"map it with --labels FILE holding the line '{example}' (one 'name code' "
                   "pair per line)"))

    def apply(self, table: Mapping[str, str], path: str | os.PathLike
              ) -> tuple[dict[str, str], list[str]]:
        """``utt -> label`` read from ``path`` (a utt2emo table, one line per entry in order)
        mapped to codes, and one problem per unknown label (its count, its first line)."""
        mapped: dict[str, str] = {}
        first: dict[str, int] = {}
        counts: dict[str, int] = {}
        for lineno, (utt, label) in enumerate(table.items(), start=1):
            code = self.code_of(label)
            if code is None:
                first.setdefault(label, lineno)
                counts[label] = counts.get(label, 0) + 1
            else:
                mapped[utt] = code
        problems = [self.unknown(label, f"{path}:{first[label]}", counts[label])
                    for label in sorted(first, key=first.get)]
        return mapped, problems

    def to_json(self) -> dict:
        return {"file": self.source, "names": dict(self.names), "new_codes": list(self.new_codes)}


def read_label_map(path: str | os.PathLike | None = None,
                   data_dir: str | os.PathLike | None = None) -> LabelMap:
    """The label map of ``--labels path`` (None: codes only), plus the codes a data directory's
    ``prepare.json`` declared (made by ``prepare --labels``)."""
    declared: list[str] = []
    if data_dir is not None and (Path(data_dir) / "prepare.json").is_file():
        try:
            prep = json.loads((Path(data_dir) / "prepare.json").read_text(encoding="utf-8"))
            declared = [str(c) for c in (prep.get("label_map") or {}).get("new_codes", [])]
        except (ValueError, AttributeError):
            declared = []  # a broken prepare.json: no declared codes (validate reports files)
    if path is None:
        return LabelMap(new_codes=tuple(declared))
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: --labels file not found")
    names: dict[str, str] = {}
    lines: dict[str, int] = {}
    pairs: list[tuple[int, str, str]] = []
    for lineno, raw in enumerate(read_text(path, bom=True).splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or not all(TOKEN.match(f) for f in fields):
            raise LabelError(f"{path}:{lineno}: expected 'name code' (two tokens of letters, "
                             f"digits, _ . + -), got {raw.strip()!r} ({FORMAT})")
        name, code = fields
        if name in names:
            raise LabelError(f"{path}:{lineno}: {name!r} is already mapped on line "
                             f"{lines[name]}")
        names[name], lines[name] = code, lineno
        pairs.append((lineno, name, code))
    new = sorted({code for _, name, code in pairs if name == code and code not in CODES}
                 | set(declared))
    for lineno, name, code in pairs:
        if code not in CODES and code not in new:
            raise LabelError(f"{path}:{lineno}: {code!r} (for {name!r}) is not a class code "
                             f"({' '.join(sorted(CODES))}); if it is a new class, declare it "
                             f"with the line '{code} {code}'")
    return LabelMap(names, tuple(new), str(path.resolve()))


def read_utt2emo(data_dir: str | os.PathLike, label_map: LabelMap) -> dict[str, str]:
    """``DATA_DIR/utt2emo`` with every label as its class code; unknown labels raise
    :class:`LabelError`, each named with its first line."""
    path = Path(data_dir) / "utt2emo"
    mapped, problems = label_map.apply(read_table(path), path)
    if problems:
        raise LabelError("\n  ".join(problems))
    return mapped

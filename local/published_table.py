#!/usr/bin/env python3
"""Published results next to this run's, as one markdown table (recipes' scoring stages).

    local/published_table.py PUBLISHED.tsv [--title TEXT] [--note TEXT] [KEY=COMPARE.json ...]

PUBLISHED.tsv: a header row naming the table's columns, then one row per published result,
tab-separated, printed as written (lines starting with '#' are comments). The columns this
script fills for a run are ``system``, ``speaker-indep.``, ``folds``, ``UA %`` and ``WA %``;
any other column (e.g. ``Exp``, ``classes``) groups the rows: each KEY=COMPARE.json (the
.json that ``sertool score --compare-out`` writes) adds its experiments after the published
rows whose first column is KEY, copying that row's grouping columns; published rows of other
keys are left out. Without KEY=..., all published rows are printed.
Standard library only: runs with any python3.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

NUMERIC = {"folds", "UA %", "WA %"}


def pct(mean: float, std: float | None) -> str:
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def run_row(result: dict, column: str, group_row: dict[str, str]) -> str:
    """One cell of a run's row: from ``sertool score``'s comparison JSON, else the group's."""
    filled = {
        "system": result["experiment"],
        "speaker-indep.": str(result["speaker_independent"]),
        "folds": f"{result['folds']}/{result['folds_expected']}",
        "UA %": pct(result["ua_mean"], result["ua_std"]),
        "WA %": pct(result["wa_mean"], result["wa_std"]),
    }
    return filled.get(column, group_row[column])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("published", type=Path)
    parser.add_argument("runs", nargs="*", metavar="KEY=COMPARE.json")
    parser.add_argument("--title", help="printed first, then a blank line")
    parser.add_argument("--note", help="printed after the table, after a blank line")
    args = parser.parse_args()
    with open(args.published, newline="", encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    columns = list(rows[0])
    runs: dict[str, list[dict]] = {}
    for item in args.runs:
        key, _, path = item.partition("=")
        runs[key] = json.loads(Path(path).read_text(encoding="utf-8"))["experiments"]

    if args.title:
        print(args.title + "\n")
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---:" if c in NUMERIC else "---" for c in columns) + " |")
    done = set()
    for row in rows:
        if runs and row[columns[0]] not in runs:
            continue  # a group this run did not make (e.g. ./run.sh --exps 1)
        print("| " + " | ".join(row[c] for c in columns) + " |")
        key = row[columns[0]]
        if key in runs and key not in done:
            done.add(key)
            for result in runs[key]:
                print("| " + " | ".join(run_row(result, c, row) for c in columns) + " |")
    missing = set(runs) - done
    if missing:
        raise SystemExit(f"{args.published}: no published row for {sorted(missing)}")
    if args.note:
        print("\n" + args.note)


if __name__ == "__main__":
    main()

"""Run every bench/bench_*.py module's ``main()``: ``python -m bench.run_all [NAME ...]``.

``NAME`` selects modules by name (``frontend`` runs bench_frontend). Results are printed and
written under bench/out/ as JSON; docs/RESULTS.md quotes them with the command.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)])
                   if m.name.startswith("bench_"))
    failures = 0
    for name in names:
        if wanted and name.removeprefix("bench_") not in wanted and name not in wanted:
            continue
        print(f"==== {name} ====", flush=True)
        start = time.time()
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception as err:  # one failing benchmark must not hide the others
            failures += 1
            print(f"{name} FAILED: {err!r}", flush=True)
        print(f"==== {name} done in {time.time() - start:.0f}s ====", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

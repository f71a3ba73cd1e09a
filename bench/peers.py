"""Run ``../shared/peers/compare.py`` against this repository's current layout.

compare.py (shared, read-only here) imports the project's infrastructure by the
module names it had before ``infra/`` existed (``app.broker``, ``app.settings``,
``app.topics``, ``app.producer``). This runner maps those names to their new
home and then runs compare.py unchanged, so the peers' figures and the
project's come from the very same instrument:

    .venv/bin/python -m bench.peers --system project
    .venv/bin/python -m bench.peers --system quix --quix-python quixvenv/bin/python

(arguments as compare.py's; `make bench` calls it for both systems).
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

__all__ = ["COMPARE", "alias_legacy_modules", "main"]

#: compare.py beside the project (MASTERY_SHARED_DIR's default).
COMPARE = Path("../shared/peers/compare.py")

_MOVED = {
    "app.broker": "infra.broker",
    "app.settings": "infra.settings",
    "app.topics": "infra.topics",
    "app.producer": "infra.producer",
    "app.topic_reader": "infra.topic_reader",
}


def alias_legacy_modules() -> None:
    """Make the pre-``infra`` module names import their new modules."""
    for old, new in _MOVED.items():
        sys.modules[old] = importlib.import_module(new)


def main(argv: list[str] | None = None) -> None:
    alias_legacy_modules()
    sys.argv = [str(COMPARE), *(sys.argv[1:] if argv is None else argv)]
    runpy.run_path(str(COMPARE), run_name="__main__")


if __name__ == "__main__":
    main()

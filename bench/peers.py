"""Run ``../shared/peers/compare.py`` against this repository's current layout.

compare.py (shared, read-only here) imports the project's infrastructure by the
module names it had before ``infra/`` existed (``app.broker``, ``app.settings``,
``app.topics``, ``app.producer``). This runner maps those names to their new
home, and it reads the project's rows by the key spelling compare.py knows
(``ms:row:<registration>:<goal>``, from before the read model's keys carried
their learning instance's hash tag, docs/read-model.md): the runner's Redis
client translates those keys (:func:`translate_row_keys`). compare.py itself
runs unchanged, so the peers' figures and the project's come from the very
same instrument:

    .venv/bin/python -m bench.peers --system project
    .venv/bin/python -m bench.peers --system quix --quix-python quixvenv/bin/python

(arguments as compare.py's; `make bench` calls it for both systems).
"""

from __future__ import annotations

import importlib
import re
import runpy
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMPARE", "alias_legacy_modules", "main", "translate_row_keys"]

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


_LEGACY_ROW = re.compile(r"^ms:row:([^:]+):(.+)$")


def translate_row_keys(client_class: Any = None) -> None:
    """Make the blocking Redis client read ``ms:row:<reg>:<goal>`` (compare.py's
    spelling) as the row's key today, in its learning instance's slot; the
    learning instance comes from the registration's lookup key, once per
    registration. Other keys (the peers' ``peer:row:…``) pass unchanged.
    ``client_class``: the class patched (``redis.Redis`` by default)."""
    import orjson
    import redis

    from infra.read_model import ReadModelKeys

    keys = ReadModelKeys()
    li_of: dict[str, str] = {}

    def translate(client: Any, key: Any) -> Any:
        name = key.decode() if isinstance(key, bytes) else str(key)
        found = _LEGACY_ROW.match(name)
        if found is None:
            return key
        reg, goal = found.groups()
        li = li_of.get(reg)
        if li is None:
            raw = original_get(client, keys.registration(reg))
            if raw is None:
                return key  # not registered yet: the old key is absent too
            li = li_of[reg] = orjson.loads(raw)["learning_instance_id"]
        return keys.row(li, reg, goal)

    cls = redis.Redis if client_class is None else client_class
    original_get = cls.get
    original_mget = cls.mget
    original_exists = cls.exists

    def mget(self: Any, names: Any, *args: Any) -> Any:
        names = [translate(self, n) for n in names]
        return original_mget(self, names, *(translate(self, a) for a in args))

    def exists(self: Any, *names: Any) -> Any:
        return original_exists(self, *(translate(self, n) for n in names))

    cls.mget = mget
    cls.exists = exists


def main(argv: list[str] | None = None) -> None:
    alias_legacy_modules()
    translate_row_keys()
    sys.argv = [str(COMPARE), *(sys.argv[1:] if argv is None else argv)]
    runpy.run_path(str(COMPARE), run_name="__main__")


if __name__ == "__main__":
    main()

"""Run ``../shared/peers/compare.py`` against this repository's current layout.

compare.py (shared, read-only here) imports the project's modules by the names
they had in earlier layouts: ``app.broker``, ``app.settings``, ``app.topics``,
``app.producer`` (before ``infra/``), ``app.devstack.DevStack``,
``app.workload``, and in the worker process it starts ``app.worker.Worker``
and ``app.cli.main`` (before app/ held packages). This runner maps those names
to their new home, and it reads the project's rows by the key spelling compare.py knows
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

__all__ = [
    "COMPARE",
    "alias_legacy_modules",
    "current_wrapper",
    "main",
    "translate_row_keys",
]

#: compare.py beside the project (MASTERY_SHARED_DIR's default).
COMPARE = Path("../shared/peers/compare.py")

#: compare.py's names for modules that moved -> where each is now
_MOVED = {
    "app.broker": "infra.broker",
    "app.settings": "infra.settings",
    "app.topics": "infra.topic_names",
    "app.producer": "infra.producer",
    "app.topic_reader": "infra.topic_reader",
    "app.workload": "app.devstack.workload",
}
#: names compare.py imports from what are packages now -> (name, its module)
_LIFTED = {"app.devstack": ("DevStack", "app.devstack.stack")}
#: the worker process compare.py starts (its PROJECT_WRAPPER), in today's names
_WRAPPER = {
    "import app.worker as w": "import app.worker.wiring as w",
    "from app.cli import main": "from app.cli.main import main",
}


def alias_legacy_modules() -> None:
    """Make compare.py's module names import their modules of today."""
    for old, new in _MOVED.items():
        sys.modules[old] = importlib.import_module(new)
    for package, (name, module) in _LIFTED.items():
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)


def current_wrapper(wrapper: str) -> str:
    """compare.py's script for the worker process, in today's module names."""
    for old, new in _WRAPPER.items():
        wrapper = wrapper.replace(old, new)
    return wrapper


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
    # compare.py's definitions, then its main(), with the script it runs as the
    # project's worker process in today's module names (nothing else changed)
    compare = runpy.run_path(str(COMPARE), run_name="compare")
    namespace = compare["main"].__globals__
    namespace["PROJECT_WRAPPER"] = current_wrapper(namespace["PROJECT_WRAPPER"])
    raise SystemExit(namespace["main"]())


if __name__ == "__main__":
    main()

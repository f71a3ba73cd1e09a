"""Which private names of faust, mode, aiokafka and asyncio the project uses.

Every use is a correction of app/worker/faust_corrections (docs/upstream/README.md
names the upstream behaviour each corrects and its test); a new one fails here
until it is added to :data:`ALLOWED` with its reason, so the count can only
grow on purpose.
A use is ``obj._name`` on anything but ``self``/``cls``, a ``self._name``
inherited by a subclass of one of those packages' classes, a method of such
a subclass overriding a private one, or ``getattr(obj, "_name")``.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("faust", "mode", "aiokafka", "asyncio")
SOURCES = ("app", "api", "infra", "processors", "schemas")

#: (file, name) -> why it is used (the correction it belongs to).
ALLOWED = {
    (
        "app/worker/faust_corrections/offsets.py",
        "_do_fetch_commit_offsets",
    ): "offset-fetch",
    ("app/worker/faust_corrections/store.py", "_db_for_partition"): "PartitionStore",
    ("app/worker/faust_corrections/transport.py", "_subscription"): "stale-fetch",
    ("app/worker/faust_corrections/transport.py", "_position"): "stale-fetch",
    ("app/worker/faust_corrections/transport.py", "_fetch_records"): "stale-fetch",
    ("app/worker/faust_corrections/transport.py", "_read_offset"): "stale-fetch",
    ("app/worker/faust_corrections/transport.py", "_add_gap"): "stale-fetch",
    (
        "app/worker/faust_corrections/transport.py",
        "_new_consumer_thread",
    ): "stale-fetch",
    (
        "app/worker/faust_corrections/transport.py",
        "_create_worker_consumer",
    ): "fetch-wait",
    ("app/worker/faust_corrections/transport.py", "_fetch_max_wait_ms"): "fetch-wait",
    ("app/worker/faust_corrections/transport.py", "_stopped"): "inline",
    ("app/worker/faust_corrections/transport.py", "_crashed"): "inline",
    ("app/worker/faust_corrections/transport.py", "_getmany"): "buffered-wait",
    (
        "app/worker/faust_corrections/transport.py",
        "_buffered_partitions",
    ): "buffered-wait",
    ("app/worker/faust_corrections/transport.py", "_new_transport"): "MasteryApp",
}


def _private_names_of_packages() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        module = importlib.import_module(package)
        assert module.__file__ is not None
        for path in Path(module.__file__).parent.rglob("*.py"):
            text = path.read_text(errors="replace")
            names.update(re.findall(r"\b(_[a-z][A-Za-z0-9_]*)\b", text))
    return names


def _external(cls: ast.ClassDef) -> bool:
    bases = [ast.unparse(base) for base in cls.bases]
    return any(
        re.match(r"(faust|mode|aiokafka|asyncio)\b", b) or "faust_aiokafka." in b
        for b in bases
    ) or any(b in ("Monitor",) for b in bases)


def uses(path: Path, theirs: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each use of one of ``theirs`` in ``path``."""
    tree = ast.parse(path.read_text())
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_external: bool) -> None:
        if isinstance(node, ast.ClassDef):
            in_external = _external(node)
            if in_external:
                for item in node.body:
                    name = getattr(item, "name", "")
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                        name.startswith("_")
                        and not name.startswith("__")
                        and name in theirs
                    ):
                        found.append((item.lineno, name))
        if isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and name in theirs:
                value = node.value
                is_self = isinstance(value, ast.Name) and value.id in ("self", "cls")
                is_os = isinstance(value, ast.Name) and value.id == "os"
                if not is_os and (not is_self or (in_external and name not in own)):
                    found.append((node.lineno, name))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value in theirs
        ):
            found.append((node.lineno, node.args[1].value))
        for child in ast.iter_child_nodes(node):
            visit(child, in_external)

    visit(tree, False)
    return sorted(set(found))


def test_private_names_used_are_exactly_the_corrections_own() -> None:
    theirs = _private_names_of_packages()
    found: dict[tuple[str, str], list[int]] = {}
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            for line, name in uses(path, theirs):
                key = (str(path.relative_to(ROOT)), name)
                found.setdefault(key, []).append(line)
    lines = {(file, line) for (file, _), at in found.items() for line in at}
    print(
        f"{len({name for _, name in found})} private names of {PACKAGES} on "
        f"{len(lines)} lines in {len({file for file, _ in found})} files"
    )
    assert sorted(set(found) - set(ALLOWED)) == [], "new private uses"
    assert sorted(set(ALLOWED) - set(found)) == [], "ALLOWED lists uses now gone"


def test_the_counter_finds_a_private_use(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import os\n"
        "from faust.transport.drivers import aiokafka as faust_aiokafka\n"
        "class C(faust_aiokafka.Consumer):\n"
        "    def _commit_tps(self):\n"
        "        return self._filter_committable_offsets(), self.mine\n"
        "def f(stream, consumer):\n"
        "    stream._enable_passive(None)\n"
        "    os._exit(1)\n"
        "    return getattr(consumer, '_read_offset', {})\n"
    )
    theirs = {"_commit_tps", "_filter_committable_offsets", "_enable_passive"}
    theirs |= {"_read_offset", "_exit"}
    assert uses(source, theirs) == [
        (4, "_commit_tps"),
        (5, "_filter_committable_offsets"),
        (7, "_enable_passive"),
        (9, "_read_offset"),
    ]

"""The package layering of docs/architecture.md: api and the worker never
import each other.

Only the CLI (``app/cli.py``) composes the two; shared infrastructure lives in
``infra`` (the Redis read model too, ``infra/read_model/``: the worker writes
it, the API reads it); ``processors`` and ``schemas`` import nothing with I/O
of ours. The map below is checked against the table in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> top-level packages of ours it may import
ALLOWED = {
    "schemas": {"schemas"},
    "processors": {"processors", "schemas"},
    "infra": {"infra", "schemas"},
    "api": {"api", "infra", "processors", "schemas"},
    "app": {"app", "infra", "processors", "schemas"},
}
OURS = set(ALLOWED)
#: the composition root may import the API (lazily, per command)
COMPOSERS = {"app/cli.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        extra = _imports(path) - ALLOWED[package]
        if rel in COMPOSERS:
            extra -= {"api"}
        if extra:
            bad[rel] = sorted(extra)
    assert not bad, f"layering broken: {bad}"


def test_the_map_is_the_one_docs_architecture_states() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    documented: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in OURS:
            documented[cells[0]] = {c.strip() for c in cells[1].split(",")}
    assert documented == ALLOWED


def test_the_check_sees_imports() -> None:
    # The checker itself must find imports, or the test above proves nothing.
    assert "api" in _imports(ROOT / "app" / "cli.py")
    assert "infra" in _imports(ROOT / "api" / "app.py")

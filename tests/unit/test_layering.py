"""The package layering of docs/architecture.md: api and the worker never
import each other.

Only the CLI composes the two; shared infrastructure lives in ``infra`` (the
Redis read model too, ``infra/read_model/``: the worker writes it, the API
reads it); ``processors`` and ``schemas`` import nothing with I/O of ours. A
layer is a package or a part of one (``app.cli``); a module, and each name it
imports, belongs to the longest layer its dotted name starts with. The map
below is checked against the table in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: layer -> layers of ours it may import
ALLOWED = {
    "schemas": {"schemas"},
    "processors": {"processors", "schemas"},
    "infra": {"infra", "schemas"},
    "api": {"api", "infra", "processors", "schemas"},
    "app": {"app", "infra", "processors", "schemas"},
    "app.worker": {"app", "app.worker", "infra", "processors", "schemas"},
    "app.notifier": {"app", "app.notifier", "infra", "processors", "schemas"},
    "app.devstack": {
        "app",
        "app.devstack",
        "app.worker",
        "infra",
        "processors",
        "schemas",
    },
    "app.cli": {
        "api",
        "app",
        "app.cli",
        "app.devstack",
        "app.notifier",
        "app.worker",
        "infra",
        "processors",
        "schemas",
    },
}
LAYERS = set(ALLOWED)
PACKAGES = {layer.split(".")[0] for layer in LAYERS}


def _layer(name: str) -> str | None:
    """The layer of a dotted name: the longest layer it starts with."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in LAYERS:
            return prefix
    return None


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The layers of ours that ``path`` imports from."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from app import metrics`` imports app.metrics
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return {layer for name in names if (layer := _layer(name)) is not None}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    bad = {}
    for package in sorted(PACKAGES):
        for path in sorted((ROOT / package).rglob("*.py")):
            if _layer(_module(path)) != layer:
                continue
            extra = _imports(path) - ALLOWED[layer]
            if extra:
                bad[path.relative_to(ROOT).as_posix()] = sorted(extra)
    assert not bad, f"layering broken: {bad}"


def test_the_map_is_the_one_docs_architecture_states() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    documented: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in LAYERS:
            documented[cells[0]] = {c.strip() for c in cells[1].split(",")}
    assert documented == ALLOWED


def test_the_check_sees_imports(tmp_path: Path) -> None:
    # The checker itself must find imports, or the test above proves nothing.
    assert "api" in _imports(ROOT / "app/cli/main.py")
    assert "infra" in _imports(ROOT / "api" / "app.py")
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import api.app\nfrom app import metrics\nfrom schemas import events\n"
    )
    assert _imports(sample) - ALLOWED["processors"] == {"api", "app"}

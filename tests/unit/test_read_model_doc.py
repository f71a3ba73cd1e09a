"""docs/read-model.md's key table is the key layout the code builds: every row
names its ``ReadModelKeys`` method, and the key it spells is what the method
returns; every method that builds a key has a row, and every deployment key
is named."""

from __future__ import annotations

import re
from pathlib import Path

from infra.read_model import ReadModelKeys

DOC = Path(__file__).resolve().parents[2] / "docs" / "read-model.md"
KEYS = ReadModelKeys()
_ROW = re.compile(r"^\| `([^`]+)` \(`([a-z_]+)`\) \|", re.MULTILINE)
_IDS = {"<li>": "LI-1", "<reg>": "REG-1", "<goal>": "GOAL-1"}
#: builders that are not keys of their own, or spelled in the prose
_NOT_IN_TABLE = {
    "namespace",
    "in_generation",
    "deployment_keys",
    "owns",
    "pattern",
    "is_sentinel",
    "parse_learning_instance",
    "parse_registration",
    "current_generation",
    "generation_counter",
    "rebuilds",
    "broker_offsets",
    "broker_loss",
    "worker_heartbeat",
}


def test_the_key_table_is_what_the_code_builds() -> None:
    text = DOC.read_text()
    rows = _ROW.findall(text)
    assert len(rows) >= 15, rows
    for spelled, method in rows:
        args = [_IDS[p] for p in re.findall(r"<li>|<reg>|<goal>", spelled)]
        expected = spelled.replace("<ns>", KEYS.namespace)
        for placeholder, ident in _IDS.items():
            expected = expected.replace(placeholder, ident)
        assert getattr(KEYS, method)(*args) == expected, (spelled, method)
    builders = {
        name
        for name in dir(ReadModelKeys)
        if not name.startswith("_") and name not in {"prefix", "generation"}
    }
    assert builders - _NOT_IN_TABLE == {method for _, method in rows}
    for key in KEYS.deployment_keys():
        assert f"`{key}`" in text, key

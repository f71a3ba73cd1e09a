"""Every past schema version of every event, as stored on the topics, still
decodes: as itself, upcast to the current version, or refused with a reason
that names the version and what it lacks (docs/events.md, "Versions").

The samples in event_samples/ are records as producers wrote them, one file
per event and version (``<Event>.v<N>[-<variant>].json``); a new version adds
a file and a line to CURRENT and to the changelog, and never edits a sample.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.batch import rejection_reason
from schemas.events import OldVersionRefused, decode_event, encode_event

SAMPLES = Path(__file__).resolve().parent / "event_samples"

#: event -> its current schema_version (the last line of its changelog)
CURRENT = {
    "LearningInstanceCreated": 1,
    "RegistrationCreated": 1,
    "GoalDefined": 1,
    "ModuleTagged": 2,
    "AttemptGraded": 1,
}
#: samples that cannot be upcast, and what their refusal must name
REFUSED = {"ModuleTagged.v1.json": ("schema_version 1", "partner_id")}


def _samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.json"))


def test_there_is_a_sample_of_every_version_up_to_the_current_one() -> None:
    names = {p.name.split(".")[0] + "." + p.name.split(".")[1] for p in _samples()}
    for event, current in CURRENT.items():
        for version in range(1, current + 1):
            assert f"{event}.v{version}" in {n.split("-")[0] for n in names}, (
                event,
                version,
            )


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_every_stored_version_decodes_to_the_current_one_or_is_refused_by_name(
    sample: Path,
) -> None:
    raw = sample.read_bytes().strip()
    if sample.name in REFUSED:
        with pytest.raises(OldVersionRefused) as refused:
            decode_event(raw)
        reason = rejection_reason(refused.value)  # the dead letter's reason
        for word in (sample.name.split(".")[0], *REFUSED[sample.name]):
            assert word in reason, reason
        return
    event = decode_event(raw)
    assert event.type == sample.name.split(".")[0]
    assert event.schema_version == CURRENT[event.type]
    # Written again, it is the current version and decodes to itself.
    assert decode_event(encode_event(event)) == event


def test_an_upcast_module_tag_keeps_its_meaning() -> None:
    old = decode_event((SAMPLES / "ModuleTagged.v1-with-partner.json").read_bytes())
    new = decode_event((SAMPLES / "ModuleTagged.v2.json").read_bytes())
    assert old.model_dump(exclude={"event_id", "occurred_at"}) == new.model_dump(
        exclude={"event_id", "occurred_at"}
    )


def test_a_version_from_the_future_is_refused_naming_the_field() -> None:
    raw = (SAMPLES / "AttemptGraded.v1.json").read_bytes()
    with pytest.raises(ValueError) as refused:
        decode_event(raw.replace(b'"schema_version":1', b'"schema_version":7'))
    assert "schema_version" in rejection_reason(refused.value)

"""The accepted ranges of BKT parameters (schemas/bkt_params.py) at schema level."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from processors.mastery import DEFAULT_PARAMS, Params
from schemas.bkt_params import BOUNDS, GUESS, MARGIN, SLIP
from schemas.events import (
    BKTParameters,
    ModelSelection,
    ModuleTagged,
    decode_event,
    encode_event,
)

SHARED = Path(
    os.environ.get("MASTERY_SHARED_DIR", Path(__file__).parents[3] / "shared")
)
GOOD = {"prior": 0.3, "learn": 0.1, "guess": 0.2, "slip": 0.1}


def test_bounds_keep_their_margin_from_degenerate_values() -> None:
    for name, bound in BOUNDS.items():
        assert bound.low == MARGIN, name
        assert bound.high == (0.5 if name in ("guess", "slip") else 1.0) - MARGIN
    assert GUESS.high + SLIP.high < 1.0  # the old guess + slip < 1 rule holds


def test_default_params_are_accepted() -> None:
    values = {n: getattr(DEFAULT_PARAMS, n) for n in BOUNDS}
    assert all(BOUNDS[n].contains(v) for n, v in values.items())
    BKTParameters(**values)


def test_reference_pybkt_skills_except_skill_44_are_inside() -> None:
    # pyBKT fits skill-44 with guess 0.539: an unmastered learner right more
    # often than not, which guess < 0.5 (issue 13) refuses on purpose.
    raw = json.loads((SHARED / "reference" / "bkt" / "params.json").read_text())
    outside = {
        skill: [n for n in BOUNDS if not BOUNDS[n].contains(values[n])]
        for skill, values in raw.items()
    }
    assert {s: f for s, f in outside.items() if f} == {"skill-44": ["guess"]}
    assert len(raw) == 8


@pytest.mark.parametrize("name", list(BOUNDS))
def test_each_parameter_is_refused_outside_its_range_naming_it(name: str) -> None:
    bound = BOUNDS[name]
    for value in (bound.low, bound.high):
        assert getattr(BKTParameters(**{**GOOD, name: value}), name) == value
    below = bound.low / 2
    above = bound.high + MARGIN / 2
    for bad, words in (
        (below, "greater than or equal to"),
        (above, "less than or equal to"),
        (math.nan, "or equal to"),  # NaN fails both comparisons
        (0.0, "greater than or equal to"),
        (1.0, "less than or equal to"),
    ):
        with pytest.raises(ValidationError) as info:
            BKTParameters(**{**GOOD, name: bad})
        (error,) = info.value.errors()
        assert error["loc"] == (name,)
        assert words in error["msg"]


def test_guess_1e_40_is_refused_in_a_module_tagged_event() -> None:
    body = {
        "event_id": "e-1",
        "occurred_at": "2026-01-01T00:00:00Z",
        "partner_id": "p",
        "module_id": "m",
        "learning_objective_ids": ["lo-1"],
        "parameters": {"lo-1": {**GOOD, "guess": 1e-40}},
    }
    with pytest.raises(ValidationError) as info:
        ModuleTagged.model_validate(body)
    assert [e["loc"] for e in info.value.errors()] == [("parameters", "lo-1", "guess")]


def test_clip_projects_onto_the_interval() -> None:
    assert GUESS.clip(0.7) == GUESS.high
    assert GUESS.clip(0.0) == GUESS.low
    assert GUESS.clip(0.25) == 0.25


def test_the_worker_dead_letters_out_of_range_parameters_naming_the_field() -> None:
    # The worker decodes every record with decode_event and dead-letters a
    # ValidationError with this reason (processors/batch.py).
    from processors.batch import rejection_reason as _reason

    record = json.dumps(
        {
            "type": "ModuleTagged",
            "event_id": "e-1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "partner_id": "p",
            "module_id": "m",
            "learning_objective_ids": ["lo-1"],
            "parameters": {"lo-1": {**GOOD, "guess": 1e-40}},
        }
    )
    with pytest.raises(ValidationError) as info:
        decode_event(record)
    assert _reason(info.value) == (
        "invalid event: ModuleTagged.parameters.lo-1.guess: "
        "Input should be greater than or equal to 0.0001"
    )


# ------------------------------------------------ forgetting (issue 22)


def test_forget_is_an_optional_field_old_events_keep_decoding() -> None:
    old = (
        '{"type":"ModuleTagged","schema_version":1,"event_id":"e1",'
        '"occurred_at":"2026-09-01T08:00:00Z","partner_id":"p","module_id":"m",'
        '"learning_objective_ids":["lo"],"parameters":{"lo":{"prior":0.3,'
        '"learn":0.1,"guess":0.2,"slip":0.1}}}'
    )
    event = decode_event(old.encode())
    assert isinstance(event, ModuleTagged) and event.parameters is not None
    given = event.parameters["lo"]
    assert given.forget is None and Params.from_schema(given).forget == 0.0
    # Parameters without forgetting encode exactly as before the field existed.
    assert b"forget" not in encode_event(event)
    chosen = ModelSelection(
        chosen="forgets", standard=-0.61, forgets=-0.58, held_out_attempts=900
    )
    with_forget = BKTParameters(
        prior=0.3, learn=0.1, guess=0.2, slip=0.1, forget=0.02, selection=chosen
    )
    again = event.model_copy(update={"parameters": {"lo": with_forget}})
    decoded = decode_event(encode_event(again))
    assert isinstance(decoded, ModuleTagged) and decoded.parameters is not None
    assert decoded.parameters["lo"] == with_forget
    assert Params.from_schema(with_forget).forget == 0.02


@pytest.mark.parametrize(
    ("forget", "learn"), [(0.5, 0.1), (5e-5, 0.1), (-0.01, 0.1), (0.3, 0.75)]
)
def test_forget_outside_its_range_is_refused(forget: float, learn: float) -> None:
    with pytest.raises(ValidationError, match="forget"):
        BKTParameters(prior=0.3, learn=learn, guess=0.2, slip=0.1, forget=forget)

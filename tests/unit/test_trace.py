"""Offline trace against pyBKT's reference predictions."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from processors.mastery import DEFAULT_PARAMS, Params
from processors.trace import TraceError, load_params, trace_rows


def shared_dir() -> Path:
    env = os.environ.get("MASTERY_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


def test_trace_rows_match_pybkt_on_unsaturated_rows() -> None:
    bkt = shared_dir() / "reference" / "bkt"
    params = load_params((bkt / "params.json").read_text())
    with (bkt / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = list(trace_rows(params, rows))
    assert [o[0] for o in out] == [r["order_id"] for r in rows]
    checked = 0
    for row, (_, pc, pm) in zip(rows, out, strict=True):
        if row["saturated"] == "0":
            assert abs(pc - float(row["p_correct"])) <= 1e-9
            assert abs(pm - float(row["p_mastered"])) <= 1e-9
            checked += 1
    assert checked > 20_000


def test_sequences_are_per_user_and_skill_in_input_order() -> None:
    p = Params(prior=0.4, learn=0.1, guess=0.2, slip=0.1)
    rows = [
        {"order_id": "3", "user_id": "a", "skill_name": "s", "correct": "1"},
        {"order_id": "1", "user_id": "b", "skill_name": "s", "correct": "0"},
        {"order_id": "2", "user_id": "a", "skill_name": "s", "correct": "0"},
    ]
    out = list(trace_rows({"s": p}, rows))
    assert [o[0] for o in out] == ["3", "1", "2"]
    assert out[0][2] == out[1][2] == 0.4  # both first attempts: the prior
    assert out[2][2] > 0.4  # after a's correct answer


def test_unknown_skill_is_an_error_unless_a_default_is_given() -> None:
    rows = [{"order_id": "1", "user_id": "a", "skill_name": "x", "correct": "1"}]
    with pytest.raises(TraceError, match="no parameters for skill 'x'"):
        list(trace_rows({}, rows))
    out = list(trace_rows({}, rows, default=DEFAULT_PARAMS))
    assert out[0][2] == DEFAULT_PARAMS.prior


def test_bad_correct_flag_is_reported_with_its_row() -> None:
    rows = [{"order_id": "1", "user_id": "a", "skill_name": "s", "correct": "yes"}]
    with pytest.raises(TraceError, match="row 1"):
        list(trace_rows({"s": DEFAULT_PARAMS}, rows))


def test_load_params_validates() -> None:
    good = {"s": {"prior": 0.3, "learn": 0.1, "guess": 0.2, "slip": 0.1}}
    assert load_params(json.dumps(good)) == {"s": Params(0.3, 0.1, 0.2, 0.1)}
    with pytest.raises(TraceError, match="missing"):
        load_params(json.dumps({"s": {"prior": 0.3}}))
    # Forgetting is modelled now: pyBKT's "forgets" and our "forget" both read.
    forgets = Params(0.3, 0.1, 0.2, 0.1, forget=0.2)
    assert load_params(json.dumps({"s": {**good["s"], "forgets": 0.2}})) == {
        "s": forgets
    }
    assert load_params(json.dumps({"s": {**good["s"], "forget": 0.2}})) == {
        "s": forgets
    }
    with pytest.raises(TraceError, match="not both"):
        load_params(json.dumps({"s": {**good["s"], "forget": 0.2, "forgets": 0.2}}))
    with pytest.raises(TraceError, match="learn \\+ forget"):
        load_params(json.dumps({"s": {**good["s"], "learn": 0.9, "forget": 0.2}}))
    with pytest.raises(TraceError, match="skill 's'"):
        load_params(json.dumps({"s": {**good["s"], "guess": 0.6, "slip": 0.5}}))

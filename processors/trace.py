"""Offline BKT traces: the maths behind ``mastery model trace``.

Input rows have the columns ``order_id,user_id,skill_name,correct`` (pyBKT's
names). Each (user_id, skill_name) pair is one BKT sequence, in input order;
the output gives, for every row in input order, P(correct) and P(mastered)
*before* that attempt. A skill without parameters is an error unless the
caller passes ``default`` (the CLI may pass :data:`~processors.mastery.
DEFAULT_PARAMS`): silently assuming parameters would make a comparison with
fitted models meaningless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping

from processors.mastery import (
    ObjectiveState,
    Params,
    apply,
    initial,
    p_correct,
    p_mastered,
)

__all__ = ["TraceError", "answer_sequences", "load_params", "trace_rows"]

_FIELDS = ("prior", "learn", "guess", "slip")
_TRUE = frozenset({"1", "1.0", "true", "True"})
_FALSE = frozenset({"0", "0.0", "false", "False"})


class TraceError(ValueError):
    """Bad trace input; ``where`` names the skill or row at fault."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def load_params(json_text: str) -> dict[str, Params]:
    """Parse ``{skill: {prior, learn, guess, slip[, forget]}}`` (pyBKT's
    params.json and params-forgets.json; ``forgets`` is read as ``forget``).

    A ``selection`` object (what ``mastery model fit --select`` records) is
    allowed and not needed here.
    """
    raw = json.loads(json_text)
    if not isinstance(raw, dict):
        raise TraceError("expected an object of skills", "params")
    out: dict[str, Params] = {}
    for skill, values in raw.items():
        if not isinstance(values, dict):
            raise TraceError("expected an object of parameters", f"skill {skill!r}")
        extra = set(values) - set(_FIELDS) - {"forget", "forgets", "selection"}
        missing = set(_FIELDS) - set(values)
        if extra or missing or {"forget", "forgets"} <= set(values):
            raise TraceError(
                f"unknown {sorted(extra)} / missing {sorted(missing)} fields"
                " (give forget or forgets, not both)",
                f"skill {skill!r}",
            )
        forget = values.get("forget", values.get("forgets", 0.0))
        try:
            prior, learn, guess, slip = (float(values[name]) for name in _FIELDS)
            out[skill] = Params(prior, learn, guess, slip, float(forget or 0.0))
        except (TypeError, ValueError) as exc:
            raise TraceError(str(exc), f"skill {skill!r}") from exc
    return out


def trace_rows(
    params: Mapping[str, Params],
    rows: Iterable[Mapping[str, str]],
    *,
    default: Params | None = None,
) -> Iterator[tuple[str, float, float]]:
    """Yield ``(order_id, p_correct, p_mastered)`` before each attempt."""
    states: dict[tuple[str, str], ObjectiveState] = {}
    for number, row in enumerate(rows, start=1):
        skill = row["skill_name"]
        chosen = params.get(skill, default)
        if chosen is None:
            raise TraceError(f"no parameters for skill {skill!r}", f"row {number}")
        correct = _correct(row, number)
        key = (row["user_id"], skill)
        state = states.get(key)
        if state is None:
            state = initial(chosen)
        yield row["order_id"], p_correct(state, chosen), p_mastered(state)
        states[key] = apply(state, chosen, correct)


def _correct(row: Mapping[str, str], number: int) -> bool:
    flag = row["correct"].strip()
    if flag not in _TRUE and flag not in _FALSE:
        raise TraceError(f"correct must be 0 or 1, got {flag!r}", f"row {number}")
    return flag in _TRUE


def answer_sequences(rows: Iterable[Mapping[str, str]]) -> dict[str, list[list[bool]]]:
    """Skill -> the answer sequences of its learners, as :func:`trace_rows` reads
    them (one per (user_id, skill_name), in input order)."""
    by_learner: dict[str, dict[str, list[bool]]] = {}
    for number, row in enumerate(rows, start=1):
        learners = by_learner.setdefault(row["skill_name"], {})
        learners.setdefault(row["user_id"], []).append(_correct(row, number))
    return {skill: list(seqs.values()) for skill, seqs in by_learner.items()}

"""``mastery model fit`` and ``mastery model evaluate`` (registered in app/cli/main.py).

- ``fit``: BKT parameters by EM (processors/fit.py) from a CSV export
  (``--attempts``), a DKT text file (``--dkt``) or the event log
  (``--from-log``, one partner's registrations); the parameters go to stdout
  in the JSON form ``--params`` reads, the per-skill report and a progress bar
  to stderr. ``--forgets`` fits BKT with a forget rate; ``--select`` fits both
  and keeps, per skill, the one with the higher held-out likelihood
  (processors/selection.py), recording why in the parameters. With
  ``--from-log --publish`` the fitted parameters become ``ModuleTagged``
  events; a dry run unless ``--send``.
- ``evaluate``: next-attempt AUC, RMSE and log-loss per skill and overall.

docs/analytics.md ("Fitting the parameters") documents both.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from infra.settings import Settings
from processors.trace import TraceError, answer_sequences, load_params

if TYPE_CHECKING:
    # numpy and the fitter load only when a model command runs: app/cli/main.py
    # registers these commands for every `mastery` invocation.
    from processors.catalog import Catalog
    from processors.evaluation import Metrics
    from processors.refit import AnswerLog, Publication
    from processors.selection import Selection
    from schemas.events import ModelSelection, ModuleTagged

__all__ = ["add_commands", "cmd_model_evaluate", "cmd_model_fit"]

_COLUMNS = {"order_id", "user_id", "skill_name", "correct"}
Data = dict[str, list[list[bool]]]


class _InputError(Exception):
    """Bad command-line input; the message is shown as ``error: ...``."""


# ------------------------------------------------------------------ reading


def _read_csv(path: Path) -> Data:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = _COLUMNS - set(reader.fieldnames or [])
        if missing:
            raise _InputError(f"{path} lacks columns {sorted(missing)}")
        return answer_sequences(reader)


def _read_dkt(path: Path) -> Data:
    from app.devstack.workload import dkt_by_skill

    data: Data = dkt_by_skill(path)
    if not data:
        raise _InputError(f"{path} holds no DKT sequences")
    return data


def _read_file(args: argparse.Namespace, csv_path: str | None) -> Data:
    if csv_path is not None:
        return _read_csv(Path(csv_path))
    return _read_dkt(Path(args.dkt))


def _select(data: Data, skills: str | None) -> Data:
    if skills is None:
        return dict(sorted(data.items()))
    wanted = [s.strip() for s in skills.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in data]
    if unknown:
        raise _InputError(f"no attempts for skills {unknown}")
    return {s: data[s] for s in wanted}


async def _read_log(
    settings: Settings,
    bootstrap: str,
    since: datetime | None,
    until: datetime | None,
) -> tuple[Catalog, AnswerLog]:
    from pydantic import ValidationError

    from app.cli.rebuild import progress_bar
    from infra.broker import profile_for
    from infra.topic_names import TopicNames
    from infra.topic_reader import read_topic
    from processors.catalog import Catalog
    from processors.refit import AnswerLog
    from schemas.events import (
        AttemptGraded,
        GoalDefined,
        LearningInstanceCreated,
        ModuleTagged,
        RegistrationCreated,
        decode_event,
    )

    topics = TopicNames(settings.topic_prefix)
    profile = profile_for(settings)
    catalog = Catalog()
    async for record in read_topic(
        bootstrap, topics.catalog, profile, on_progress=progress_bar("catalog")
    ):
        try:
            event = decode_event(record.value or b"")
        except (ValidationError, ValueError):
            continue  # refused by the worker as well (dead-lettered)
        if isinstance(event, LearningInstanceCreated | GoalDefined | ModuleTagged):
            catalog.apply(event)
    answers = AnswerLog(catalog, since=since, until=until)
    async for record in read_topic(
        bootstrap,
        topics.registration_events,
        profile,
        on_progress=progress_bar("attempts"),
    ):
        try:
            event = decode_event(record.value or b"")
        except (ValidationError, ValueError):
            answers.skipped["undecodable record"] += 1
            continue
        if isinstance(event, RegistrationCreated | AttemptGraded):
            answers.apply(event)
    return catalog, answers


# ------------------------------------------------------------------ fitting


def _fit_all(data: Data, args: argparse.Namespace) -> dict[str, Selection]:
    from app.cli.rebuild import progress_bar
    from processors.fit import fit_skills
    from processors.selection import Selection, select_skills

    small = {
        skill: n
        for skill, seqs in data.items()
        if (n := sum(len(s) for s in seqs)) < args.min_attempts
    }
    for skill, n in small.items():
        print(
            f"{skill}: left out, {n:,} attempts < --min-attempts {args.min_attempts}",
            file=sys.stderr,
        )
    data = {skill: seqs for skill, seqs in data.items() if skill not in small}
    if not data:
        raise _InputError("no skill has enough attempts to fit")
    started = time.perf_counter()
    options = dict(
        restarts=args.restarts,
        seed=args.seed,
        tol=args.tol,
        max_iter=args.max_iter,
        on_progress=progress_bar("skills"),
    )
    nan = float("nan")
    if args.select:
        chosen = select_skills(data, **options)
    else:
        model = "forgets" if args.forgets else "standard"
        chosen = {
            skill: Selection(r, model, nan, nan, 0)
            for skill, r in fit_skills(data, forgets=args.forgets, **options).items()
        }
    width = max(len(s) for s in chosen)
    for skill, c in chosen.items():
        r = c.result
        flag = "" if r.converged else "  (not converged)"
        why = (
            f"  held-out LL/attempt standard {c.standard:.5f} forgets {c.forgets:.5f}"
            if c.held_out_attempts
            else ""
        )
        print(
            f"{skill:<{width}}  attempts {r.attempts:>8,}  learners {r.learners:>6,}"
            f"  log-likelihood {r.log_likelihood:>14.4f}"
            f"  iterations {r.iterations:>5}  forget {r.params.forget:.4f}"
            f"  {c.chosen}{why}{flag}",
            file=sys.stderr,
        )
    with_forget = sum(c.chosen == "forgets" for c in chosen.values())
    print(
        f"fitted {len(chosen)} skills, "
        f"{sum(c.result.attempts for c in chosen.values()):,} attempts, "
        f"{args.restarts} restarts, in {time.perf_counter() - started:.1f} s; "
        f"{with_forget} with forgetting",
        file=sys.stderr,
    )
    return chosen


def _params_json(results: Mapping[str, Selection]) -> str:
    out: dict[str, dict[str, object]] = {}
    for skill, c in results.items():
        p = c.result.params
        values: dict[str, object] = {
            "prior": p.prior,
            "learn": p.learn,
            "guess": p.guess,
            "slip": p.slip,
        }
        if p.forget > 0.0:
            values["forget"] = p.forget
        selection = _selection(c)
        if selection is not None:
            values["selection"] = selection.model_dump()
        out[skill] = values
    return json.dumps(out, indent=2)


def _selection(c: Selection) -> ModelSelection | None:
    from schemas.events import ModelSelection

    if not c.held_out_attempts:
        return None
    return ModelSelection(
        chosen="forgets" if c.chosen == "forgets" else "standard",
        standard=c.standard,
        forgets=c.forgets,
        held_out_attempts=c.held_out_attempts,
    )


def _timestamp(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _InputError(f"{flag}: not an ISO 8601 date-time: {text!r}") from exc
    if value.tzinfo is None:
        raise _InputError(f"{flag}: give a timezone offset, e.g. {text}+00:00")
    return value


def _show_publication(publication: Publication, sent: bool) -> None:
    from schemas.events import encode_event

    for event in publication.events:
        print(encode_event(event).decode(), file=sys.stderr)
    for objective, why in publication.refused.items():
        print(f"not published: {objective}: {why}", file=sys.stderr)
    verb = "published" if sent else "dry run: would publish"
    print(
        f"{verb} {len(publication.events)} ModuleTagged events for "
        f"{len(publication.published)} objectives"
        + ("" if sent else " (add --send to publish)"),
        file=sys.stderr,
    )


async def _send(
    settings: Settings, bootstrap: str, events: Sequence[ModuleTagged]
) -> None:
    from infra.broker import profile_for
    from infra.producer import EventProducer
    from infra.topic_names import TopicNames

    async with EventProducer(
        bootstrap, profile_for(settings), TopicNames(settings.topic_prefix)
    ) as producer:
        await producer.send_all(events)


def _fit_from_log(settings: Settings, args: argparse.Namespace) -> int:
    if not args.partner:
        raise _InputError(
            "--from-log needs --partner (a partner's data fits only "
            "that partner's objectives)"
        )
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise _InputError("KAFKA_BOOTSTRAP_SERVERS is not set")
    since = _timestamp(args.since, "--since")
    until = _timestamp(args.until, "--until")
    from processors.refit import parameter_events

    catalog, answers = asyncio.run(_read_log(settings, bootstrap, since, until))
    for reason, count in sorted(answers.skipped.items()):
        print(f"left out: {count:,} attempts, all partners ({reason})", file=sys.stderr)
    data = answers.sequences(args.partner)
    if not data:
        raise _InputError(
            f"no attempts of partner {args.partner!r} in the log "
            f"(partners with attempts: {answers.partners()})"
        )
    results = _fit_all(_select(data, args.skills), args)
    print(_params_json(results))
    if args.publish:
        publication = parameter_events(
            catalog.for_partner(args.partner),
            {skill: c.result.params for skill, c in results.items()},
            now=datetime.now(UTC),
            selections={
                skill: chosen
                for skill, c in results.items()
                if (chosen := _selection(c)) is not None
            },
        )
        if args.send and publication.events:
            asyncio.run(_send(settings, bootstrap, publication.events))
        _show_publication(publication, sent=args.send)
    return 0


def cmd_model_fit(settings: Settings, args: argparse.Namespace) -> int:
    """``mastery model fit``."""
    try:
        if args.restarts < 1:
            raise _InputError("--restarts must be at least 1")
        if args.forgets and args.select:
            raise _InputError("--select fits both models; leave out --forgets")
        if args.from_log:
            return _fit_from_log(settings, args)
        if args.publish or args.partner or args.since or args.until:
            raise _InputError(
                "--publish, --partner, --since and --until need --from-log"
            )
        data = _select(_read_file(args, args.attempts), args.skills)
        print(_params_json(_fit_all(data, args)))
    except (OSError, TraceError, _InputError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    return 0


# --------------------------------------------------------------- evaluating


def _metrics_table(per_skill: Mapping[str, Metrics], overall: Metrics) -> str:
    rows = [*per_skill.items(), ("overall", overall)]
    width = max(len("skill"), *(len(name) for name, _ in rows))
    lines = [
        f"{'skill':<{width}}  {'attempts':>9}  {'AUC':>7}  {'RMSE':>7}  {'log-loss':>8}"
    ]
    for name, m in rows:
        lines.append(
            f"{name:<{width}}  {m.attempts:>9,}  {m.auc:>7.4f}  {m.rmse:>7.4f}  "
            f"{m.log_loss:>8.4f}"
        )
    return "\n".join(lines)


def cmd_model_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    """``mastery model evaluate``."""
    from processors.evaluation import evaluate
    from processors.mastery import DEFAULT_PARAMS, Params

    try:
        params: dict[str, Params] = load_params(Path(args.params).read_text())
        data = _read_file(args, args.attempts)
        if args.only_fitted and args.skills is None:
            data = {s: seqs for s, seqs in data.items() if s in params}
        data = _select(data, args.skills)
        if not data:
            raise _InputError("no attempts of the skills PARAMS has")
        default = DEFAULT_PARAMS if args.default_params else None
        per_skill, overall = evaluate(params, data, default=default)
    except (OSError, TraceError, _InputError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.json:
        print(
            json.dumps(
                {
                    "skills": {s: m.to_json() for s, m in per_skill.items()},
                    "overall": overall.to_json(),
                },
                indent=2,
            )
        )
    else:
        print(_metrics_table(per_skill, overall))
    return 0


# ----------------------------------------------------------------- parsers


def _source_args(p: argparse.ArgumentParser, *, log: bool) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--attempts",
        metavar="FILE",
        help="CSV: order_id,user_id,skill_name,correct (in order per learner)",
    )
    source.add_argument(
        "--dkt", metavar="FILE", help="DKT text file; skill N is named skill-N"
    )
    if log:
        source.add_argument(
            "--from-log",
            action="store_true",
            help="graded attempts of the registration-events topic "
            "(KAFKA_BOOTSTRAP_SERVERS, MASTERY_TOPIC_PREFIX)",
        )
    p.add_argument("--skills", metavar="A,B", help="only these skills (objectives)")


class Subcommands(Protocol):
    """What ``add_subparsers()`` returns (or app.cli.help's wrapper of it)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_commands(model_sub: Subcommands) -> None:
    """Register ``fit`` and ``evaluate`` under ``mastery model``."""
    p_fit = model_sub.add_parser(
        "fit", help="fit BKT parameters by EM; JSON for --params on stdout"
    )
    _source_args(p_fit, log=True)
    p_fit.add_argument("--restarts", type=int, default=5, help="EM starts per skill")
    p_fit.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    p_fit.add_argument(
        "--tol",
        type=float,
        default=1e-9,
        help="stop when the log-likelihood changes by less than this, relatively",
    )
    p_fit.add_argument("--max-iter", type=int, default=2000, help="per restart")
    p_fit.add_argument(
        "--forgets",
        action="store_true",
        help="BKT with a forget rate (P(mastered -> not) per attempt)",
    )
    p_fit.add_argument(
        "--select",
        action="store_true",
        help="per skill, BKT with or without forgetting by held-out likelihood "
        "(5-fold cross-validation by learner); the choice is recorded in the "
        "parameters",
    )
    p_fit.add_argument(
        "--min-attempts",
        type=int,
        default=1,
        metavar="N",
        help="leave out skills with fewer attempts (docs/analytics.md suggests "
        "~5,000 before publishing)",
    )
    p_fit.add_argument(
        "--partner", help="with --from-log: fit this partner's registrations only"
    )
    p_fit.add_argument(
        "--since",
        metavar="TIME",
        help="with --from-log: registrations created at or after TIME (ISO 8601)",
    )
    p_fit.add_argument(
        "--until",
        metavar="TIME",
        help="with --from-log: attempts that ended at or before TIME (ISO 8601)",
    )
    p_fit.add_argument(
        "--publish",
        action="store_true",
        help="with --from-log: show the ModuleTagged events that set the fitted "
        "parameters (a dry run unless --send)",
    )
    p_fit.add_argument(
        "--send", action="store_true", help="with --publish: produce the events"
    )
    p_fit.set_defaults(func=cmd_model_fit)

    p_eval = model_sub.add_parser(
        "evaluate", help="next-attempt AUC, RMSE and log-loss per skill and overall"
    )
    p_eval.add_argument(
        "--params",
        required=True,
        help="JSON: skill -> {prior, learn, guess, slip[, forget]}",
    )
    _source_args(p_eval, log=False)
    p_eval.add_argument(
        "--only-fitted",
        action="store_true",
        help="evaluate only the skills PARAMS has (else: every skill of the file)",
    )
    p_eval.add_argument(
        "--default-params",
        action="store_true",
        help="use the default parameters for skills missing from PARAMS (else: error)",
    )
    p_eval.add_argument("--json", action="store_true", help="JSON instead of a table")
    p_eval.set_defaults(func=cmd_model_evaluate)

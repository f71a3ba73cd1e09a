"""`mastery model fit` and `mastery model evaluate` on files (app/cli/model.py)."""

from __future__ import annotations

import csv
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from app.cli.main import main
from processors.fit import Sequences, fit
from processors.mastery import Params
from processors.trace import load_params
from tests.unit.test_fit import simulate

SHARED = Path(
    os.environ.get("MASTERY_SHARED_DIR", Path(__file__).parents[3] / "shared")
)
TRAIN = SHARED / "data" / "assistments2009" / "builder_train.csv"
TEST = SHARED / "data" / "assistments2009" / "builder_test.csv"


def write_csv(path: Path, skills: dict[str, list[list[bool]]]) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "user_id", "skill_name", "correct"])
        n = 0
        for skill, sequences in skills.items():
            for learner, seq in enumerate(sequences):
                for correct in seq:
                    n += 1
                    out.writerow([n, f"u{learner}", skill, int(correct)])


def test_fit_then_trace_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    truth = Params(prior=0.3, learn=0.12, guess=0.2, slip=0.1)
    skills = {"s-a": simulate(truth, 120, rng), "s-b": simulate(truth, 60, rng)}
    attempts = tmp_path / "attempts.csv"
    write_csv(attempts, skills)
    assert main(["model", "fit", "--attempts", str(attempts), "--seed", "3"]) == 0
    captured = capsys.readouterr()
    params = load_params(captured.out)
    assert sorted(params) == ["s-a", "s-b"]
    # The same fit as the library's, seeded per skill.
    direct = fit(Sequences.of(skills["s-a"]), seed=[3, zlib.crc32(b"s-a")])
    assert params["s-a"] == direct.params
    report = captured.err
    total = sum(len(s) for v in skills.values() for s in v)
    assert f"fitted 2 skills, {total:,} attempts, 5 restarts" in report
    assert "learners    120" in report
    assert f"log-likelihood {direct.log_likelihood:>14.4f}" in report
    assert "skills     [" in report  # the progress bar
    out = tmp_path / "params.json"
    out.write_text(captured.out)
    assert (
        main(["model", "trace", "--params", str(out), "--attempts", str(attempts)]) == 0
    )
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == sum(len(s) for v in skills.values() for s in v)
    assert float(rows[0]["p_mastered"]) == params["s-a"].prior


def test_fit_dkt_skills_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["model", "fit", "--dkt", str(TRAIN), "--skills", "skill-7,skill-93"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert list(json.loads(text)) == ["skill-7", "skill-93"]
    params = tmp_path / "p.json"
    params.write_text(text)
    assert (
        main(
            [
                "model",
                "evaluate",
                "--params",
                str(params),
                "--dkt",
                str(TEST),
                "--only-fitted",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["skills"]) == ["skill-7", "skill-93"]
    assert report["overall"]["attempts"] == sum(
        m["attempts"] for m in report["skills"].values()
    )
    assert 0.5 < report["overall"]["auc"] <= 1.0
    assert (
        main(
            [
                "model",
                "evaluate",
                "--params",
                str(params),
                "--dkt",
                str(TEST),
                "--skills",
                "skill-7",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["skill", "attempts", "AUC", "RMSE", "log-loss"]
    assert [line.split()[0] for line in lines[1:]] == ["skill-7", "overall"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--dkt", str(TRAIN), "--skills", "skill-nope"], "no attempts for"),
        (["fit", "--dkt", str(TRAIN), "--publish"], "need --from-log"),
        (["fit", "--dkt", str(TRAIN), "--restarts", "0"], "at least 1"),
        (["fit", "--from-log"], "needs --partner"),
        (["fit", "--attempts", "/nonexistent.csv"], "No such file"),
        (["evaluate", "--params", "/nonexistent.json", "--dkt", str(TEST)], "No such"),
    ],
)
def test_bad_input_is_a_clean_error(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["model", *args])
    assert message in str(info.value.code)


def test_min_attempts_leaves_small_skills_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["model", "fit", "--dkt", str(TRAIN), "--skills", "skill-7,skill-93"]
    assert main([*args, "--min-attempts", "12000"]) == 0
    captured = capsys.readouterr()
    assert list(json.loads(captured.out)) == ["skill-7"]  # 15,506 attempts
    assert "skill-93: left out, 11,150 attempts < --min-attempts 12000" in (
        captured.err
    )
    with pytest.raises(SystemExit, match="no skill has enough attempts"):
        main([*args, "--min-attempts", "10000000"])


def test_missing_columns_and_missing_parameters(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,skill_name,correct\nu,s,1\n")
    with pytest.raises(SystemExit, match="lacks columns \\['order_id'\\]"):
        main(["model", "fit", "--attempts", str(bad)])
    params = tmp_path / "p.json"
    params.write_text(
        '{"skill-7": {"prior": 0.3, "learn": 0.1, "guess": 0.2, "slip": 0.1}}'
    )
    with pytest.raises(SystemExit, match="no parameters for this skill"):
        main(["model", "evaluate", "--params", str(params), "--dkt", str(TEST)])


def test_fit_forgets_and_select(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from processors.selection import select
    from tests.unit.test_fit_forgets import simulate as simulate_forgetting

    rng = np.random.default_rng(22)
    forgetful = Params(prior=0.3, learn=0.15, guess=0.2, slip=0.1, forget=0.08)
    steady = Params(prior=0.3, learn=0.12, guess=0.2, slip=0.1)
    skills = {
        "s-f": simulate_forgetting(forgetful, 300, rng, longest=40),
        "s-s": simulate(steady, 300, rng),
    }
    attempts = tmp_path / "attempts.csv"
    write_csv(attempts, skills)
    args = ["model", "fit", "--attempts", str(attempts), "--seed", "3"]
    assert main([*args, "--forgets"]) == 0
    captured = capsys.readouterr()
    params = load_params(captured.out)
    direct = fit(
        Sequences.of(skills["s-f"]), seed=[3, zlib.crc32(b"s-f")], forgets=True
    )
    assert params["s-f"] == direct.params
    assert abs(params["s-f"].forget - 0.08) < 0.03
    assert "2 with forgetting" in captured.err
    assert main([*args, "--select"]) == 0
    captured = capsys.readouterr()
    raw = json.loads(captured.out)
    chosen = select(skills["s-f"], seed=[3, zlib.crc32(b"s-f")])
    assert raw["s-f"]["selection"] == {
        "criterion": "held_out_log_likelihood",
        "chosen": "forgets",
        "standard": chosen.standard,
        "forgets": chosen.forgets,
        "held_out_attempts": chosen.held_out_attempts,
    }
    assert chosen.forgets > chosen.standard
    assert load_params(captured.out)["s-f"] == chosen.result.params
    # Without forgetting in the data the extra parameter does not pay on
    # held-out learners here: standard BKT is published, with no forget field.
    assert raw["s-s"]["selection"]["chosen"] == "standard"
    assert "forget" not in raw["s-s"]
    with pytest.raises(SystemExit, match="leave out --forgets"):
        main([*args, "--select", "--forgets"])

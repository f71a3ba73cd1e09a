"""`mastery model trace` against pyBKT's own predictions (../shared/reference/bkt)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from app.cli.main import main

SHARED = Path(
    os.environ.get("MASTERY_SHARED_DIR", Path(__file__).parents[3] / "shared")
)
REFERENCE = SHARED / "reference" / "bkt"


def test_trace_command_matches_pybkt(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "model",
                "trace",
                "--params",
                str(REFERENCE / "params.json"),
                "--attempts",
                str(REFERENCE / "predictions.csv"),
            ]
        )
        == 0
    )
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    with (REFERENCE / "predictions.csv").open() as fh:
        reference = list(csv.DictReader(fh))
    assert [r["order_id"] for r in out] == [r["order_id"] for r in reference]
    compared = 0
    for got, ref in zip(out, reference, strict=True):
        if ref["saturated"] == "0":
            assert abs(float(got["p_correct"]) - float(ref["p_correct"])) < 1e-9
            assert abs(float(got["p_mastered"]) - float(ref["p_mastered"])) < 1e-9
            compared += 1
    assert compared > 20_000  # 21,635 unsaturated rows in the reference


def test_trace_command_errors_are_clean(tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(
        '{"skill-1": {"prior": 0.3, "learn": 0.1, "guess": 0.2, "slip": 0.1}}'
    )
    attempts = tmp_path / "a.csv"
    attempts.write_text("order_id,user_id,skill_name,correct\n1,u,skill-2,1\n")
    with pytest.raises(SystemExit, match="skill-2"):
        main(["model", "trace", "--params", str(params), "--attempts", str(attempts)])
    attempts.write_text("order_id,user,skill_name,correct\n1,u,skill-1,1\n")
    with pytest.raises(SystemExit, match="lacks columns"):
        main(["model", "trace", "--params", str(params), "--attempts", str(attempts)])

"""Make predictions-forgets.csv: pyBKT's forgets model on the reference attempts.

Run with pyBKT's own interpreter, never the project's (pyBKT is no dependency):

    python3.11 -m venv /tmp/pybkt
    /tmp/pybkt/bin/pip install pyBKT "scikit-learn<1.4" "numpy<2" "pandas<2.3"
    /tmp/pybkt/bin/python tests/data/pybkt_forgets/make_reference.py \
        ../shared/reference/bkt > tests/data/pybkt_forgets/predictions-forgets.csv

Input: ``params-forgets.json`` (pyBKT 1.4.3's forgets fit of 8 skills) and the
attempts of ``predictions.csv`` (builder_test rows of those skills), both in the
given directory. pyBKT is given the parameters (``coef_``, ``preload=True``: no
EM) and predicts P(correct) and P(mastered) before each attempt. ``saturated=1``
marks rows from the point where pyBKT's P(mastered) passed 0.99999 in a
learner-skill sequence (as in the standard reference); with forgetting
P(mastered) stays below 1 - forget, so it should mark none.
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pyBKT.models import Model

SATURATION = 0.99999


def main() -> None:
    ref = Path(sys.argv[1])
    params = json.loads((ref / "params-forgets.json").read_text())
    with (ref / "predictions.csv").open(newline="") as f:
        rows = [
            {k: r[k] for k in ("order_id", "user_id", "skill_name", "correct")}
            for r in csv.DictReader(f)
        ]
    df = pd.DataFrame(rows)
    df["order_id"] = df["order_id"].astype(int)
    df["correct"] = df["correct"].astype(int)
    df = df.sort_values("order_id", kind="stable").reset_index(drop=True)
    model = Model(seed=42, num_fits=1)
    model.coef_ = {
        skill: {
            "prior": p["prior"],
            "learns": np.array([p["learn"]]),
            "guesses": np.array([p["guess"]]),
            "slips": np.array([p["slip"]]),
            "forgets": np.array([p["forget"]]),
        }
        for skill, p in params.items()
    }
    # preload=True sets the model up without EM; its matrices (which the
    # E-step reads) are then replaced by the given parameters'.
    model.fit(data=df, forgets=True, preload=True)
    for skill, p in params.items():
        fitted = model.fit_model[skill]
        learn, forget = p["learn"], p["forget"]
        guess, slip, prior = p["guess"], p["slip"], p["prior"]
        fitted["As"] = np.array([[[1 - learn, forget], [learn, 1 - forget]]])
        fitted["emissions"] = np.array([[[1 - guess, guess], [slip, 1 - slip]]])
        fitted["pi_0"] = np.array([[1 - prior], [prior]])
        fitted["learns"] = np.array([learn])
        fitted["forgets"] = np.array([forget])
        fitted["guesses"] = np.array([guess])
        fitted["slips"] = np.array([slip])
        fitted["prior"] = prior
    out = model.predict(data=df)
    out = out.sort_values("order_id", kind="stable")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        [
            "order_id",
            "user_id",
            "skill_name",
            "correct",
            "p_correct",
            "p_mastered",
            "saturated",
        ]
    )
    saturated: set[tuple[str, str]] = set()
    for r in out.itertuples(index=False):
        key = (r.user_id, r.skill_name)
        if r.state_predictions > SATURATION:
            saturated.add(key)
        writer.writerow(
            [
                r.order_id,
                r.user_id,
                r.skill_name,
                r.correct,
                repr(float(r.correct_predictions)),
                repr(float(r.state_predictions)),
                1 if key in saturated else 0,
            ]
        )


if __name__ == "__main__":
    main()

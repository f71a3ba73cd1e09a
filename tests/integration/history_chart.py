"""The learner panel's history chart as Chromium drew it, and how it must
follow the timeline the API served (docs/dashboard.md, "A learner's history")."""

from __future__ import annotations

import re
from datetime import datetime
from itertools import pairwise
from typing import Any

from selenium import webdriver

__all__ = ["COLOURS", "chart_of", "mismatch"]

#: The status colours of api/static/dashboard.css, as computed by the browser.
COLOURS = {
    "complete": "rgb(27, 127, 59)",
    "complete_max_work": "rgb(27, 127, 59)",
    "in_progress": "rgb(31, 95, 191)",
    "struggling": "rgb(179, 38, 30)",
    "no_work": "rgb(91, 100, 117)",
}
LABELS = {
    "complete": "Complete",
    "complete_max_work": "Complete (max work)",
    "in_progress": "In progress",
    "struggling": "Struggling",
    "no_work": "Not started",
}

_READ = """
const box = [...document.querySelectorAll('#detail .history')]
  .find(b => b.dataset.goal === arguments[0]);
if (!box) return null;
const svg = box.querySelector('svg');
const note = box.querySelector('p.hint:not(.legend)');
return {
  note: note ? note.textContent : null,
  size: svg ? [svg.viewBox.baseVal.width, svg.viewBox.baseVal.height] : null,
  bands: svg ? [...svg.querySelectorAll('rect.band')].map(r => ({
    status: r.dataset.status, fill: getComputedStyle(r).fill,
    x: Number(r.getAttribute('x')), width: Number(r.getAttribute('width')),
    title: r.querySelector('title').textContent})) : [],
  dots: svg ? [...svg.querySelectorAll('circle.dot')].map(
    c => [Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))]) : [],
  path: svg ? svg.querySelector('path.line').getAttribute('d') : null,
  legend: [...box.querySelectorAll('.legend .status')].map(s => s.textContent),
};
"""


def chart_of(driver: webdriver.Chrome, goal: str) -> dict[str, Any] | None:
    """The goal's chart in the open learner panel (None without one)."""
    shown: dict[str, Any] | None = driver.execute_script(_READ, goal)
    return shown


def _vertices(path: str) -> list[tuple[float, float]]:
    """The step line's corners where each point starts: ``M x y (H x V y)*``."""
    tokens = re.findall(r"[MHV]|-?[\d.]+", path)
    out: list[tuple[float, float]] = []
    x = 0.0
    i = 0
    while i < len(tokens):
        op = tokens[i]
        if op == "M":
            x = float(tokens[i + 1])
            out.append((x, float(tokens[i + 2])))
            i += 3
        elif op == "H":
            x = float(tokens[i + 1])
            i += 2
        else:  # V: the next point's progress at its time
            out.append((x, float(tokens[i + 1])))
            i += 2
    return out


def mismatch(shown: dict[str, Any] | None, points: list[dict[str, Any]]) -> str | None:
    """How the drawn chart differs from the served points (None: it follows
    them): one band and one dot per point, in order, coloured by status, at
    x proportional to time and y falling with progress; the step line
    through the dots; a title per band with the status and work remaining."""
    if shown is None:
        return "no chart box"
    if not points:
        return None if shown["note"] == "No history yet." else f"note {shown['note']}"
    bands, dots = shown["bands"], shown["dots"]
    if not (len(bands) == len(dots) == len(points)):
        return f"{len(bands)} bands, {len(dots)} dots for {len(points)} points"
    statuses = [p["status"] for p in points]
    if [b["status"] for b in bands] != statuses:
        return f"bands {[b['status'] for b in bands]} != {statuses}"
    if [b["fill"] for b in bands] != [COLOURS[s] for s in statuses]:
        return f"fills {[b['fill'] for b in bands]} for {statuses}"
    if shown["legend"] != [LABELS[s] for s in dict.fromkeys(statuses)]:
        return f"legend {shown['legend']}"
    for band, p in zip(bands, points, strict=True):
        work = (
            "work remaining unknown"
            if p["work_remaining"] < 0
            else f"{p['work_remaining']} items left"
        )
        want = f"{LABELS[p['status']]}, {round(p['progress'] * 100)} %, {work}"
        if not band["title"].endswith(want):
            return f"title {band['title']!r}, want …{want!r}"
    width, height = shown["size"]
    xs = [b["x"] for b in bands]
    if [d[0] for d in dots] != xs:
        return f"dots at x {[d[0] for d in dots]}, bands at {xs}"
    if abs(bands[-1]["x"] + bands[-1]["width"] - width) > 0.2 or any(
        abs(a["x"] + a["width"] - b["x"]) > 0.2 for a, b in pairwise(bands)
    ):
        return "bands are not contiguous up to the right edge"
    times = [datetime.fromisoformat(p["at"]).timestamp() for p in points]
    span = times[-1] - times[0]
    if xs[0] != 0 or (span > 0) != (xs[-1] > 0):
        return f"x {xs}"
    for x, t in zip(xs, times, strict=True):
        if span > 0 and abs(x / xs[-1] - (t - times[0]) / span) > 0.2 / xs[-1]:
            return f"x {xs} not proportional to the times {times}"
    progress = [p["progress"] for p in points]
    ys = [d[1] for d in dots]
    if not all(0 <= y <= height for y in ys):
        return f"y {ys} outside the chart"
    for i, (pi, yi) in enumerate(zip(progress, ys, strict=True)):
        for pj, yj in zip(progress[i + 1 :], ys[i + 1 :], strict=True):
            # rounded to 0.1: close progress may share a y
            if (
                (pi < pj and yi < yj)
                or (pi > pj and yi > yj)
                or (pi == pj) > (yi == yj)
            ):
                return f"y {ys} does not fall with progress {progress}"
    lo, hi = min(progress), max(progress)
    if hi - lo >= 0.1:  # affine: y = a - b * progress
        b = (ys[progress.index(lo)] - ys[progress.index(hi)]) / (hi - lo)
        a = ys[progress.index(lo)] + b * lo
        if any(abs(a - b * p - y) > 0.25 for p, y in zip(progress, ys, strict=True)):
            return f"y {ys} not proportional to progress {progress}"
    if _vertices(shown["path"] or "") != [tuple(d) for d in dots]:
        return f"step line {shown['path']} misses the dots {dots}"
    return None

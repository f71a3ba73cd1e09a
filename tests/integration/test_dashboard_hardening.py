"""The dashboard's defences in a real Chromium against the API process over a
real Redis (rows written by the worker's projector): CSV export cells that a
spreadsheet would run as formulas (ids and display names), names shown as
text, who sees which names, and the page's security headers."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from app.devstack.embedded import EmbeddedRedis
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from processors.history import points_json
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    RegistrationCreated,
    Target,
)
from schemas.transitions import GOAL_STATUSES
from tests.integration.auth_world import SETTINGS, bearer
from tests.integration.browser import chromium
from tests.integration.history_chart import chart_of, mismatch
from tests.integration.live_api import ApiProcess, api_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PARTNER = "p-dash"
LI = "li-dash"
#: ids may start with "-" (schemas.events.EntityId): a spreadsheet reads
#: "-2-3" as the formula =-2-3.
GOALS = ["-goal-1", "goal-2"]
#: "constructor" is an own property of no names map (the page looks names up
#: as own properties only).
REGS = ["-2-3", "reg-plain", "-cmd", "constructor"]
#: Display names chosen to attack: markup for the page, a formula for the
#: CSV; the first learner has none.
NAMES = {
    "reg-plain": "<img src=x onerror=window.__pwned=1>",
    "-cmd": "=cmd|'/C calc'!A0",
}
GOAL_TITLES = {"-goal-1": "@Fractions", "goal-2": "Decimals"}
LI_TITLE = "Algebra <b>I</b>"
#: reg-plain's timelines (the others have none): several points with
#: unknown work remaining and uneven gaps on the first goal, one on the second.
_T0_US = int(T0.timestamp() * 1_000_000)
HISTORY = {
    "-goal-1": [
        (0, "no_work", 0.0, -1),
        (40, "in_progress", 0.2, -1),
        (50, "in_progress", 0.35, 9),
        (200, "struggling", 0.3, 12),
        (230, "in_progress", 0.6, 4),
        (300, "complete", 1.0, 0),
    ],
    "goal-2": [(10, "in_progress", 0.25, 4)],
}


def _row(goal: str, progress: float) -> bytes:
    return orjson.dumps(
        {
            "goal_id": goal,
            "status": "in_progress",
            "progress": progress,
            "work_remaining": 4,
            "targets": [],
        }
    )


async def _seed(url: str) -> None:
    redis = Redis.from_url(url)
    keys = ReadModelKeys()
    await redis.set(keys.materialized(), b"{}")
    p = Projection(keys)
    p.learning_instance(
        LearningInstanceCreated(
            event_id="e-li-dash",
            occurred_at=T0,
            learning_instance_id=LI,
            partner_id=PARTNER,
            title=LI_TITLE,
        )
    )
    for g in GOALS:
        goal = GoalDefined(
            event_id=f"e-{g}",
            occurred_at=T0,
            goal_id=g,
            learning_instance_id=LI,
            targets=[Target(learning_objective_id="lo-1")],
            title=GOAL_TITLES[g],
        )
        p.goal(
            goal,
            _row(g, 0.0).replace(b"in_progress", b"no_work"),
            orjson.dumps({"title": GOAL_TITLES[g], "targets": {"lo-1": "Ratios"}}),
        )
    for n, reg in enumerate(REGS):
        p.registration(
            RegistrationCreated(
                event_id=f"e-{reg}",
                occurred_at=T0 + timedelta(seconds=n),
                registration_id=reg,
                learning_instance_id=LI,
                user_id=f"u{reg}",
                role="learner",
                display_name=NAMES.get(reg),
            )
        )
        for g in GOALS:
            p.row(LI, reg, g, _row(g, 0.25 * (n + 1)))
    for g, points in HISTORY.items():
        p.history(
            LI,
            "reg-plain",
            g,
            points_json(
                [
                    (_T0_US + s * 1_000_000, GOAL_STATUSES.index(st), pr, w)
                    for s, st, pr, w in points
                ]
            ),
        )
    await RedisProjector(redis).write(p)
    await redis.aclose()


@pytest.fixture(scope="module")
def api(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    asyncio.run(_seed(redis_server.url))
    assert SETTINGS.jwt_hs256_secret is not None
    with api_process(
        redis_server.url,
        SETTINGS.jwt_hs256_secret.get_secret_value(),
        Path(tmp_path_factory.mktemp("dash-api")),
        # Tokens are refused at exp (test_the_page_asks_for_a_fresh_token...).
        MASTERY_JWT_LEEWAY_S="0",
    ) as proc:
        yield proc


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path) as driver:
        yield driver


def _wait(driver: webdriver.Chrome, what: Any, timeout: float = 15.0) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(what)


def _open_board(driver: webdriver.Chrome, api: ApiProcess, ttl_s: int = 3600) -> None:
    token = bearer("admin-dash", PARTNER, ("partner_admin",), ttl_s=ttl_s)[
        "authorization"
    ]
    driver.get(f"{api.url}/dashboard#li={LI}&goals={','.join(GOALS)}")
    driver.find_element(By.ID, "token").send_keys(token.removeprefix("Bearer "))
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    _wait(
        driver,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == len(REGS)
            and d.find_element(By.ID, "live").text == "live"
        ),
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def test_the_csv_export_neutralises_formula_cells(
    api: ApiProcess, browser: webdriver.Chrome
) -> None:
    _open_board(browser, api)
    text: str = browser.execute_script("return window.masteryDashboard.toCsv()")
    exported = list(csv.reader(io.StringIO(text, newline="")))
    cells = [c for row in exported for c in row]
    text_cells = [c for c in cells if not _is_number(c)]
    assert not [c for c in text_cells if c.startswith(_FORMULA_START)], exported
    # The ids are still there, behind the quote a spreadsheet shows as text,
    # and so are the names.
    assert [row[0] for row in exported[1:]] == [
        f"'{r}" if r.startswith("-") else r for r in REGS
    ]
    assert [row[1] for row in exported[1:]] == [
        f"'{NAMES[r]}" if NAMES.get(r, "").startswith("=") else NAMES.get(r, "")
        for r in REGS
    ]
    assert exported[0][:3] == [
        "registration_id",
        "learner_name",
        "'@Fractions [-goal-1] status",
    ]
    # Every character that starts a formula, as any cell the page exports.
    for value in ["=1+1", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"]:
        field: str = browser.execute_script(
            "return window.masteryDashboard.csvField(arguments[0])", value
        )
        (parsed,) = list(csv.reader(io.StringIO(field, newline="")))
        assert parsed == [f"'{value}"], (value, field)
    # Numbers stay numbers: a negative number is not a formula.
    assert browser.execute_script("return window.masteryDashboard.csvField(-1)") == (
        "-1"
    )


def test_names_are_shown_as_text_with_their_ids_at_hand(
    api: ApiProcess, browser: webdriver.Chrome
) -> None:
    _open_board(browser, api)
    learners = {
        b.get_attribute("data-id"): (b.text, b.get_attribute("title"))
        for b in browser.find_elements(By.CSS_SELECTOR, "#rows td.learner button")
    }
    # Names as text (no markup runs); without a name, a short id; the id on hover.
    assert learners == {
        "-2-3": ("-2-3", "-2-3"),
        "reg-plain": (NAMES["reg-plain"], "reg-plain"),
        "-cmd": (NAMES["-cmd"], "-cmd"),
        "constructor": ("constructor", "constructor"),
    }
    assert browser.find_elements(By.CSS_SELECTOR, "#rows img") == []
    assert browser.execute_script("return window.__pwned") is None
    heads = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#head th button")]
    assert heads == ["Learner", "@Fractions", "Decimals"]
    title = browser.find_element(By.ID, "board-title")
    assert title.text == f"Learning instance {LI_TITLE}"
    assert title.get_attribute("title") == LI
    # Sorting by learner: named learners by name, then the others by id.
    browser.find_element(By.CSS_SELECTOR, "th[data-key='learner'] button").click()
    order = [
        tr.get_attribute("data-reg")
        for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tr")
    ]
    assert order == ["reg-plain", "-cmd", "-2-3", "constructor"]
    # The learner's details name the goal and its targets.
    browser.find_element(By.CSS_SELECTOR, "tr[data-reg='-cmd'] button").click()
    detail = browser.find_element(By.ID, "detail")
    _wait(browser, lambda d: detail.is_displayed())
    assert detail.find_element(By.TAG_NAME, "h2").text == NAMES["-cmd"]
    assert [h.text for h in detail.find_elements(By.TAG_NAME, "h3")] == [
        "@Fractions",
        "Decimals",
    ]


def _served(api: ApiProcess, reg: str, goal: str) -> list[Any]:
    response = httpx.get(
        f"{api.url}/registrations/{reg}/metrics/status-and-progress/history",
        params={"goal_id": goal},
        headers=bearer("admin-dash", PARTNER, ("partner_admin",)),
    )
    assert response.status_code == 200, response.text
    points: list[Any] = response.json()["points"]
    return points


def _panel(
    driver: webdriver.Chrome, api: ApiProcess, reg: str
) -> dict[str, str | None]:
    """Open the learner's panel; how each goal's chart differs from the
    served timeline once drawn."""
    driver.find_element(By.CSS_SELECTOR, f"tr[data-reg='{reg}'] button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "detail").is_displayed())
    expected = {g: _served(api, reg, g) for g in GOALS}

    def settled(d: webdriver.Chrome) -> dict[str, str | None] | None:
        shown = {g: chart_of(d, g) for g in GOALS}
        if any(c is None or c["note"] == "Loading history…" for c in shown.values()):
            return None
        return {g: mismatch(shown[g], expected[g]) for g in GOALS}

    result: dict[str, str | None] = _wait(driver, settled)
    return result


def test_the_learner_panel_draws_the_history_and_survives_its_absence(
    api: ApiProcess, browser: webdriver.Chrome
) -> None:
    _open_board(browser, api)
    # Several points, unknown work remaining, uneven gaps; a single point.
    assert _panel(browser, api, "reg-plain") == {g: None for g in GOALS}
    assert [len(_served(api, "reg-plain", g)) for g in GOALS] == [6, 1]
    single = chart_of(browser, "goal-2")
    assert single is not None
    assert [(b["x"], b["width"]) for b in single["bands"]] == [(0, single["size"][0])]
    first = chart_of(browser, "-goal-1")
    assert first is not None
    assert "work remaining unknown" in first["bands"][0]["title"]
    # No timeline yet (rows written before the history existed).
    assert _panel(browser, api, "-2-3") == {g: None for g in GOALS}
    # The history cannot be fetched: a short message, the rest of the panel
    # as before.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/history?*"]})
    browser.find_element(By.CSS_SELECTOR, "tr[data-reg='-cmd'] button").click()
    notes = [
        "History unavailable: the server is unreachable",
        "History unavailable: the server is unreachable",
    ]
    _wait(
        browser, lambda d: [(chart_of(d, g) or {}).get("note") for g in GOALS] == notes
    )
    detail = browser.find_element(By.ID, "detail")
    assert [h.text for h in detail.find_elements(By.TAG_NAME, "h3")] == [
        "@Fractions",
        "Decimals",
    ]
    assert len(detail.find_elements(By.CSS_SELECTOR, "table.targets")) == 2
    assert browser.find_element(By.ID, "live").text == "live"


def test_a_learner_gets_only_their_own_name(api: ApiProcess) -> None:
    url = f"{api.url}/learning-instances/{LI}/goals"
    admin = httpx.get(url, headers=bearer("admin-dash", PARTNER, ("partner_admin",)))
    assert admin.status_code == 200
    names = admin.json()["names"]
    assert names == {
        "learning_instance": LI_TITLE,
        "goals": {
            g: {"title": GOAL_TITLES[g], "targets": {"lo-1": "Ratios"}} for g in GOALS
        },
        "registrations": NAMES,
    }
    learner = httpx.get(url, headers=bearer("u-cmd", PARTNER, ()))
    assert learner.status_code == 200
    body = learner.json()
    assert body["view"] == "learner" and body["registration_id"] == "-cmd"
    assert body["names"]["registrations"] == {"-cmd": NAMES["-cmd"]}
    unnamed = httpx.get(url, headers=bearer("u-2-3", PARTNER, ()))
    assert unnamed.json()["names"]["registrations"] == {}
    other = httpx.get(
        url, headers=bearer("admin-x", "another-partner", ("partner_admin",))
    )
    assert other.status_code == 404 and "Ratios" not in other.text


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def test_the_dashboard_sends_security_headers_and_works_under_them(
    api: ApiProcess, browser: webdriver.Chrome
) -> None:
    for path in [
        "/dashboard/index.html",
        "/dashboard/dashboard.js",
        "/dashboard/dashboard.css",
        "/dashboard",
        "/dashboard/missing.txt",
    ]:
        response = httpx.get(f"{api.url}{path}")
        csp = response.headers.get("content-security-policy", "")
        directives = {
            d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()
        }
        assert directives.get("default-src") == "default-src 'self'", (path, csp)
        assert directives.get("script-src") == "script-src 'self'", (path, csp)
        assert directives.get("style-src") == "style-src 'self'", (path, csp)
        assert directives.get("frame-ancestors") == "frame-ancestors 'none'", path
        assert response.headers.get("x-content-type-options") == "nosniff", path
        assert response.headers.get("referrer-policy") == "no-referrer", path
    # The page keeps working under them: sign in, rows, live, details, no
    # violation reported by the browser.
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": _VIOLATIONS}
    )
    _open_board(browser, api)
    browser.find_element(By.CSS_SELECTOR, f"tr[data-reg='{REGS[1]}'] button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed())
    # reg-plain's history charts: SVG built by the script, coloured by the
    # style sheet (no style attribute).
    assert REGS[1] == "reg-plain"
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2)
    bar = browser.find_element(By.CSS_SELECTOR, f"tr[data-reg='{REGS[1]}'] .bar-inner")
    assert bar.value_of_css_property("width") not in ("0px", "auto")
    assert browser.execute_script("return window.__cspViolations") == []


def test_the_page_asks_for_a_fresh_token_when_the_stream_ends_at_expiry(
    api: ApiProcess, browser: webdriver.Chrome
) -> None:
    _open_board(browser, api, ttl_s=4)
    _wait(browser, lambda d: d.find_element(By.ID, "sign-in").is_displayed(), 20)
    assert "token expired" in browser.find_element(By.ID, "message").text
    assert browser.execute_script("return sessionStorage.length") == 0

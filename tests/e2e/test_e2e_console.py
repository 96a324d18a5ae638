"""The web console in headless Chromium against a real ``insightgw serve --demo``.

Debian's chromium (installed by ``make browser``, which ``make test`` runs first) is driven by
Playwright. Every page watches for JavaScript errors, console errors, dialogs and request URLs:
a console that works raises none of the first three, and no URL ever holds an API key. The
gateway's own output after start-up (uvicorn's access log) must never hold a key either.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, sync_playwright

pytestmark = pytest.mark.e2e

COLLAB = "acme-bigmart-cx"
CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 15_000
XSS_COLUMN = '<img src=x onerror="window.__xss=1;alert(1)">'
XSS_COMMENT = "# <script>window.__xss=2;alert(2)</script> budget trimmed for Q4"
XSS_INVALID = "<script>window.__xss=3;alert(3)</script>"
QUERY_SQL = (
    "SELECT region, COUNT(*) AS customers, AVG(spend_90d) AS avg_spend\n"
    "FROM bigmart.loyalty GROUP BY region"
)


def _chromium() -> str:
    found = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Debian's chromium is not installed (no /usr/bin/chromium): the console tests need "
            "it. `make browser` installs it (apt-get install --no-install-recommends chromium); "
            "`make test` runs that first."
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """One browser context (one tab's sessionStorage) and what its pages reported."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def assert_clean(self, *secrets: str) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs
        assert self.urls, "no request was seen"
        for secret in secrets:
            assert not [u for u in self.urls if secret in u]
        assert self.context.cookies() == []


def _watch(browser: Browser) -> Watched:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Watched(context, page)

    def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: watched.errors.append(f"pageerror: {exc}"))
    page.on("dialog", on_dialog)
    page.on("request", lambda request: watched.urls.append(request.url))
    page.on("framenavigated", lambda frame: watched.urls.append(frame.url))
    return watched


@pytest.fixture
def tab(browser: Browser) -> Iterator[Any]:
    """Open fresh, watched browser contexts; all closed at the end of the test."""
    opened: list[Watched] = []

    def open_tab() -> Watched:
        opened.append(_watch(browser))
        return opened[-1]

    yield open_tab
    for watched in opened:
        watched.context.close()


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/console/")
    page.fill("#collaboration", COLLAB)
    page.fill("#api-key", key)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#tabs button")


def open_section(page: Page, name: str, ready: str) -> None:
    page.click(f"#tab-{name}")
    page.wait_for_selector(f"#view[data-section={name}] #view-body {ready}")


def wait_done(page: Page, done: str, status: str) -> None:
    """Wait for ``done`` to appear; a refusal shown in ``status`` fails at once, with its text."""
    page.wait_for_selector(f"{done}, {status}.error")
    if page.locator(f"{status}.error").count():
        pytest.fail(f"the console showed an error: {page.text_content(status)}")


def no_markup_ran(page: Page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("#view-body img").count() == 0
    assert page.locator("#view-body script").count() == 0


@pytest.fixture(scope="module", autouse=True)
def log_offsets(gateway: Any) -> tuple[int, int]:
    """Where the server's output stood before these tests: later output must hold no key.

    The demo prints its keys once at start-up, before uvicorn logs anything to the same stream;
    once the access-log line of a health check is in the file, that banner is behind the offset.
    """
    httpx.get(f"{gateway.url}/v1/health")
    deadline = time.monotonic() + 10
    while '"GET /v1/health' not in gateway.stdout() and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(gateway.stdout()), len(gateway.stderr())


def all_keys(keys: dict[str, Any]) -> list[str]:
    found = [keys["admin"]]
    for org in ("acme", "bigmart"):
        found += list(keys[org].values())
    return found


def versions(base: str, key: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/v1/collaborations/{COLLAB}/policy/versions",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()["versions"]
    return found


def budget_of(base: str, key: str, org: str) -> float:
    response = httpx.get(
        f"{base}/v1/collaborations/{COLLAB}/budget", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    spent: float = next(b for b in response.json()["budgets"] if b["org"] == org)["epsilon_spent"]
    return spent


def test_console_pages_carry_security_headers(gateway: Any) -> None:
    page = httpx.get(f"{gateway.url}/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts == [(' type="module" src="app.js"', "")]  # no inline script anywhere
    script = httpx.get(f"{gateway.url}/console/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["content-security-policy"] == csp
    assert httpx.get(f"{gateway.url}/console").headers["location"] == "/console/"
    for missing in ("nope.js", "..%2Fconsole.py", "%2E%2E%2Fpolicy_check.py", "console.py"):
        refused = httpx.get(f"{gateway.url}/console/{missing}")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        assert refused.headers["x-content-type-options"] == "nosniff"


def test_cross_site_requests_without_the_key_are_refused(
    gateway: Any, keys: dict[str, Any]
) -> None:
    """The key is never ambient (no cookie), so a forged cross-site request has no authority."""
    base, compliance = gateway.url, keys["acme"]["compliance"]
    before_versions = versions(base, compliance)
    before_spent = budget_of(base, compliance, "acme")
    foreign = {"Origin": "https://evil.example", "Referer": "https://evil.example/x"}
    forged = [
        ("PUT", f"/v1/collaborations/{COLLAB}/policy", "text/plain", "collaboration: x"),
        ("POST", f"/v1/collaborations/{COLLAB}/policy/versions/1/approve", None, ""),
        (
            "POST",
            f"/v1/collaborations/{COLLAB}/queries",
            "application/x-www-form-urlencoded",
            "sql=x",
        ),
        ("POST", f"/console/api/collaborations/{COLLAB}/policy/check", "text/plain", "x: 1"),
    ]
    for method, path, media, body in forged:
        headers = {**foreign, **({"Content-Type": media} if media else {})}
        answer = httpx.request(method, base + path, headers=headers, content=body)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "unauthenticated"
        assert "access-control-allow-origin" not in answer.headers
    preflight = httpx.options(
        f"{base}/v1/me",
        headers={
            **foreign,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert versions(base, compliance) == before_versions
    assert budget_of(base, compliance, "acme") == before_spent


def test_a_foreign_page_cannot_call_the_api_with_a_key(
    gateway: Any, keys: dict[str, Any], tab: Any
) -> None:
    """A page of another origin gets nothing back, even with a key: the API allows no origin.

    ``localhost`` is another origin than ``127.0.0.1`` (both loopback, so Chromium's
    private-network rules stay out of the way); ``/v1/health`` is a page without the console's
    CSP, so it is CORS, answered by the gateway, that stops the script.
    """
    watched = tab()
    watched.page.goto(f"http://localhost:{gateway.port}/v1/health")
    outcome = watched.page.evaluate(
        """async ([url, key]) => {
             try {
               const r = await fetch(url, {headers: {Authorization: `Bearer ${key}`},
                                           credentials: "include"});
               return `read ${r.status}`;
             } catch (err) { return `blocked: ${err.name}`; }
           }""",
        [f"{gateway.url}/v1/me", keys["acme"]["analyst"]],
    )
    assert outcome == "blocked: TypeError"
    refusals = [e for e in watched.errors if "blocked by CORS policy" in e]
    assert refusals and "No 'Access-Control-Allow-Origin' header" in refusals[0], watched.errors


def test_a_wrong_key_is_refused_and_forgotten(gateway: Any, tab: Any) -> None:
    watched = tab()
    page = watched.page
    page.goto(f"{gateway.url}/console/")
    page.fill("#collaboration", COLLAB)
    page.fill("#api-key", "igw_nokey.not-a-secret")
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#sign-in-status.error")
    assert page.text_content("#sign-in-status") == "The key was not accepted."
    assert page.is_hidden("#tabs")
    assert page.evaluate("sessionStorage.getItem('igw.key')") is None
    assert page.input_value("#api-key") == ""
    # The browser's own network line for the 401 is the only console message.
    assert all("status of 401" in e for e in watched.errors) and len(watched.errors) == 1
    assert watched.dialogs == []


def _propose_with_markup(page: Page, base: str) -> int:
    """acme's officer checks a broken draft, then proposes one that holds markup."""
    open_section(page, "policy", "section.dataset")
    assert "spend_90d" in page.text_content("section[data-dataset='bigmart.loyalty']")
    open_section(page, "editor", "#policy-draft")
    document = page.input_value("#policy-draft")
    assert document.startswith("# Demo policy")

    broken = document.replace(
        "      phone:         {use: hidden}",
        f'      phone:         {{use: hidden}}\n      "{XSS_INVALID}": {{use: bogus}}',
    )
    assert broken != document
    page.fill("#policy-draft", broken)
    page.click("#check-draft")
    page.wait_for_selector("#editor-status.error")
    message = page.text_content("#editor-status")
    assert "invalid_policy" in message and XSS_INVALID in message  # the key, shown as text
    line = broken.splitlines().index(f'      "{XSS_INVALID}": {{use: bogus}}') + 1
    assert f"Line {line}, column" in message
    assert page.get_attribute("#policy-draft", "aria-invalid") == "true"
    no_markup_ran(page)

    proposal = document.replace(
        "acme: {epsilon: 8.0, period: month}", "acme: {epsilon: 7.5, period: month}"
    )
    proposal = proposal.replace(
        "      phone:         {use: hidden}",
        f"      phone:         {{use: hidden}}\n"
        f"      '{XSS_COLUMN}': {{use: hidden}}\n"
        f"{XSS_COMMENT}",
    )
    page.fill("#policy-draft", proposal)
    page.click("#check-draft")
    page.wait_for_selector("#editor-status.ok")
    assert "acme, bigmart" in page.text_content("#editor-status")
    page.click("#propose-draft")
    page.wait_for_selector("#editor-result pre.diff")
    assert page.text_content("#editor-status") == "Version 2 is pending."
    diff = page.text_content("#editor-result pre.diff")
    assert XSS_COLUMN in diff and "<script>window.__xss=2" in diff
    assert "+  acme: {epsilon: 7.5, period: month}" in diff
    no_markup_ran(page)
    return 2


def _approve(page: Page, version: int) -> None:
    """bigmart's officer sees the pending diff (as text) and approves it."""
    open_section(page, "proposals", f"article.proposal[data-version='{version}']")
    article = page.locator(f"article.proposal[data-version='{version}']")
    assert XSS_COLUMN in article.locator("pre.diff").text_content()
    assert article.locator("li.approved").text_content() == "acme: approved"
    assert article.locator("button.reject").is_visible()
    no_markup_ran(page)
    article.locator("button.approve").click()
    page.wait_for_selector("#no-proposals")
    rows = page.locator("table.versions tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [r[1] for r in rows] == ["superseded", "active"]
    assert rows[1][0] == str(version) and rows[1][4] == "acme ✓ bigmart ✓"
    open_section(page, "policy", "section.dataset")
    assert page.text_content("#view-body p.meta").startswith(f"Version {version}, active")
    survey = page.locator("section[data-dataset='acme.survey'] table.columns")
    assert XSS_COLUMN in survey.text_content()
    no_markup_ran(page)


def _audit(page: Page) -> None:
    open_section(page, "audit", "table.audit tbody tr")
    page.select_option("#audit-action", "policy")
    actions = page.locator("table.audit tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.action)"
    )
    assert actions[:3] == ["policy.activated", "policy.approved", "policy.proposed"]
    assert set(actions) <= {"policy.proposed", "policy.approved", "policy.activated"}
    page.click("#audit-verify")
    page.wait_for_selector("#audit-verify-status.ok")
    assert page.text_content("#audit-verify-status").startswith("Chain intact: ")


def _query(page: Page, base: str, analyst: str) -> None:
    open_section(page, "query", "#sql")
    page.fill("#sql", QUERY_SQL)
    page.fill("#epsilon", "0.5")
    page.click("#explain")
    wait_done(page, "#explain-result table.explain", "#query-status")
    explain = page.text_content("#explain-result")
    assert "Cost: ε 0.5" in explain and "Within budget." in explain
    assert "4 groups" in explain
    assert budget_of(base, analyst, "acme") == 0.0  # explain spends nothing
    page.click("#run")
    wait_done(page, "#release-table tbody tr", "#query-status")
    assert page.locator("#release-table tbody tr").count() == 4
    regions = page.locator("#release-table tbody tr td:first-child").all_text_contents()
    assert sorted(regions) == ["east", "north", "south", "west"]
    assert "ε 0.5 spent" in page.text_content("#release-meta")
    chart = page.locator("#release-chart svg")
    assert chart.locator("g.bar rect").count() == 4
    assert chart.locator("line.error-bar").count() == 12  # a whisker and two caps per bar
    page.select_option("#chart-output", "avg_spend")
    assert page.locator("#release-chart svg title").first.text_content() == (
        "avg_spend with 95% intervals"
    )
    assert budget_of(base, analyst, "acme") == 0.5


def test_propose_approve_audit_and_query_in_the_browser(
    gateway: Any, keys: dict[str, Any], tab: Any
) -> None:
    """The story of the issue, one role per browser context, in the order it happens."""
    base = gateway.url
    acme_officer, bigmart_officer, analyst = tab(), tab(), tab()

    sign_in(acme_officer.page, base, keys["acme"]["compliance"])
    tabs = acme_officer.page.locator("#tabs button").all_text_contents()
    assert tabs == ["Active policy", "Proposals", "Policy editor", "Audit trail", "Budget"]
    assert (
        acme_officer.page.evaluate("sessionStorage.getItem('igw.key')")
        == (keys["acme"]["compliance"])
    )
    assert acme_officer.page.evaluate("document.cookie") == ""
    version = _propose_with_markup(acme_officer.page, base)

    sign_in(bigmart_officer.page, base, keys["bigmart"]["compliance"])
    _approve(bigmart_officer.page, version)
    _audit(bigmart_officer.page)

    sign_in(analyst.page, base, keys["acme"]["analyst"])
    tabs = analyst.page.locator("#tabs button").all_text_contents()
    assert tabs == ["Active policy", "Budget", "Query"]
    _query(analyst.page, base, keys["acme"]["analyst"])
    open_section(analyst.page, "budget", "meter")
    assert "acme: ε 0.5 spent of 7.5, 7 left" in analyst.page.text_content("#view-body")

    open_section(acme_officer.page, "budget", "#budget-chart svg")
    legend = acme_officer.page.locator("#budget-chart text.legend[data-series=acme]")
    assert legend.text_content() == "acme: 0.5 of 7.5 ε"
    assert acme_officer.page.locator("#budget-chart path[data-series=acme]").count() == 1
    # The chart reads the ledger: bigmart's officer sees acme's spend on acme's own data too,
    # which bigmart's audit trail does not hold.
    own = {"plan": {"from": "acme.survey", "aggregates": [{"fn": "count"}]}, "epsilon": 0.25}
    released = httpx.post(
        f"{base}/v1/collaborations/{COLLAB}/queries",
        json=own,
        headers={"Authorization": f"Bearer {keys['acme']['analyst']}"},
    )
    assert released.status_code == 200, released.text
    open_section(bigmart_officer.page, "budget", "#budget-chart svg")
    legend = bigmart_officer.page.locator("#budget-chart text.legend[data-series=acme]")
    assert legend.text_content() == "acme: 0.75 of 7.5 ε"
    acme_officer.page.click("#sign-out")
    acme_officer.page.wait_for_selector("#sign-in:not([hidden])")
    assert acme_officer.page.evaluate("sessionStorage.getItem('igw.key')") is None

    for watched in (acme_officer, bigmart_officer, analyst):
        watched.assert_clean(*all_keys(keys))


def test_an_officer_rejects_a_proposal_in_the_browser(
    gateway: Any, keys: dict[str, Any], tab: Any
) -> None:
    """bigmart rejects acme's proposal with the Reject button: nothing of it takes effect."""
    base, acme, bigmart = gateway.url, keys["acme"]["compliance"], keys["bigmart"]["compliance"]
    active = httpx.get(
        f"{base}/v1/collaborations/{COLLAB}/policy", headers={"Authorization": f"Bearer {acme}"}
    ).json()
    looser = active["document"].replace("min_group_size: 25", "min_group_size: 20")
    assert looser != active["document"]
    proposed = httpx.put(
        f"{base}/v1/collaborations/{COLLAB}/policy",
        content=looser.encode(),
        headers={"Authorization": f"Bearer {acme}", "Content-Type": "application/yaml"},
    )
    assert proposed.status_code == 200 and proposed.json()["status"] == "pending"
    number = proposed.json()["version"]
    spent = budget_of(base, acme, "acme")

    watched = tab()
    page = watched.page
    sign_in(page, base, bigmart)
    open_section(page, "proposals", f"article.proposal[data-version='{number}']")
    page.click(f"article.proposal[data-version='{number}'] button.reject")
    page.wait_for_selector("#no-proposals")
    statuses = {v["version"]: v["status"] for v in versions(base, acme)}
    assert statuses[number] == "rejected"
    assert statuses[active["version"]] == "active"
    assert budget_of(base, acme, "acme") == spent
    open_section(page, "audit", "table.audit tbody tr")
    assert page.locator("table.audit tbody tr").first.get_attribute("data-action") == (
        "policy.rejected"
    )
    watched.assert_clean(*all_keys(keys))


def test_a_contributor_sees_the_policy_and_datasets_only(
    gateway: Any, keys: dict[str, Any], tab: Any
) -> None:
    watched = tab()
    page = watched.page
    sign_in(page, gateway.url, keys["bigmart"]["contributor"])
    assert page.locator("#tabs button").all_text_contents() == ["Active policy", "Datasets"]
    open_section(page, "datasets", "table.datasets tbody tr")
    rows = {
        r[0]: r
        for r in page.locator("table.datasets tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
    }
    assert rows["bigmart.loyalty"][5] == "3,000"  # its own dataset's rows
    assert rows["acme.survey"][5] == "(owner only)"  # another party's exact count stays hidden
    watched.assert_clean(*all_keys(keys))


def test_no_key_in_the_server_output(
    gateway: Any, keys: dict[str, Any], log_offsets: tuple[int, int]
) -> None:
    """Everything the gateway printed while this module's tests ran (uvicorn's access log)."""
    marker = f"/v1/collaborations/{COLLAB}/datasets"
    answer = httpx.get(gateway.url + marker, headers={"Authorization": f"Bearer {keys['admin']}"})
    assert answer.status_code == 404  # a keyed request, refused, must be logged without its key
    deadline = time.monotonic() + 10
    while f'"GET {marker}' not in gateway.stdout() and time.monotonic() < deadline:
        time.sleep(0.05)
    out_from, err_from = log_offsets
    served = gateway.stdout()[out_from:] + gateway.stderr()[err_from:]
    # The access log is on, so finding no key in it means something.
    assert f'"GET {marker} HTTP/1.1" 404' in served
    assert [k for k in all_keys(keys) if k in served] == []

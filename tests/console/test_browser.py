"""The operator console in a real browser (headless Chromium) against real processes.

Issue 18's scenarios: log in; a generation goes from running to drained while its events are
handled; a SIGKILLed worker shows as lost; a poison row shows dead, is re-driven after the
handler is healed and ends done; revoking an approval makes /api/decide answer 403 within a
second; a tenant key cannot use any of it. Each page also passes an axe-core check, and the
tests take the screenshots in docs/console/ (CONSOLE_SCREENSHOTS=docs/console).
"""

from __future__ import annotations

import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core import Publisher
from spectral_core.generations import allocate_generation
from spectral_core.outbox import EventIn
from tests.acceptance.procs import Proc, clean_env, wait_for

from .conftest import (
    MODULE_KEY,
    Stack,
    axe_violations,
    free_port,
    http,
    login,
    screenshot,
)

pytestmark = pytest.mark.slow

HANDLERS = {"SPECTRAL_WORKER_HANDLERS": "tests.console.handlers:install"}
POISON = {**HANDLERS, "SPECTRAL_OUTBOX_MAX_ATTEMPTS": "2"}
#: every GET the console reads; a tenant key gets 403 on each
READS = [
    "/api/operator/session",
    "/api/operator/overview",
    "/api/operator/generations",
    "/api/operator/workers",
    "/api/operator/dead?generation={g}",
    "/api/operator/modules",
    "/api/operator/tenants",
    "/api/operator/agent?generation={g}",
    "/api/operator/audit",
]


def expect(x: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(x)


def publish(db_url: str, gen: int, topic: str, n: int, payload: dict[str, Any]) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        Publisher(gen).publish_many(
            c,
            [
                EventIn(topic=topic, payload=payload, idempotency_key=f"{topic}-{i}")
                for i in range(n)
            ],
        )


def no_axe_violations(page: Any, where: str) -> None:
    found = axe_violations(page)
    assert found == [], f"{where}: {found}"


def focus_is_visible(page: Any) -> bool:
    """The focused element draws a focus indicator (an outline or a box shadow)."""
    return bool(
        page.evaluate(
            """() => { const s = getComputedStyle(document.activeElement);
                 return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0)
                        || s.boxShadow !== 'none'; }"""
        )
    )


def test_login_overview_and_keyboard(stack: Stack, page: Any, tmp_path: Path) -> None:
    """An operator signs in with the keyboard alone; the session is an HttpOnly cookie and
    nothing is kept in Web Storage; the nav is reachable by Tab with a visible focus and
    Enter opens a view; Overview shows the running version, generation and health checks;
    every view passes axe-core (WCAG 2.1 A/AA) with data on it; a session that ends brings
    the sign-in form back, and signing out ends the session on the server."""
    stack.start_workers()
    page.goto(stack.console())
    key = page.get_by_label("Operator API key")
    expect(key).to_be_focused()
    expect(page.locator("#who")).to_be_hidden()  # no "signed in as" before signing in
    expect(page.get_by_role("navigation")).to_be_hidden()
    no_axe_violations(page, "login form")
    screenshot(page, "login", tmp_path)
    page.keyboard.type(stack.seeded.operator_token)
    page.keyboard.press("Enter")
    expect(page.locator("#who")).to_contain_text("signed in as")
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_focused()
    assert stack.seeded.operator_token not in page.content()
    assert "spectral_session" not in page.evaluate("document.cookie")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert stack.seeded.operator_token not in page.url

    expect(page.locator("#overview-version")).to_have_text("console-test")
    expect(page.locator("#overview-generation")).to_have_text(str(stack.generation))
    expect(page.locator("#deploy-verdict")).to_be_visible()
    expect(
        page.get_by_role("table", name="Health checks").locator("tbody tr").first
    ).to_be_visible()
    no_axe_violations(page, "overview")
    screenshot(page, "overview", tmp_path)

    # keyboard: from the top, Tab reaches the skip link, then the views in order
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    names = ["Overview", "Generations", "Workers"]
    for name in names:
        page.keyboard.press("Tab")
        expect(page.get_by_role("navigation").get_by_role("link", name=name)).to_be_focused()
        assert focus_is_visible(page), f"no visible focus on the {name} link"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Workers")).to_be_focused()
    assert page.get_by_role("link", name="Workers").get_attribute("aria-current") == "page"

    for view, heading in [
        ("generations", "Generations"),
        ("workers", "Workers"),
        ("dead", "Dead rows"),
        ("modules", "Modules"),
        ("tenants", "Tenants"),
        ("agent", "World Agent"),
        ("audit", "Audit"),
    ]:
        page.goto(stack.console(view))
        expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
        expect(page.locator("#updated")).to_contain_text("Last update")
        no_axe_violations(page, view)
    page.goto(stack.console("tenants"))
    expect(page.get_by_role("table", name="Tenants")).to_contain_text("acme")
    expect(page.locator("[data-tenant='acme']")).to_contain_text(stack.seeded.tenant_token[:6])
    assert stack.seeded.tenant_token not in page.content()  # prefix only, never the token
    screenshot(page, "tenants", tmp_path)

    # the session ends (here: its cookie is gone): the next poll brings the sign-in form back
    page.context.clear_cookies()
    expect(page.get_by_label("Operator API key")).to_be_visible()
    expect(page.locator("#login-message")).to_contain_text("session ended")
    expect(page.locator("#nav")).to_be_hidden()
    login(page, stack)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Operator API key")).to_be_visible()
    expect(page.locator("#who")).to_be_hidden()
    status, _ = http("GET", f"{stack.base}/api/operator/overview")
    assert status == 401


def test_generation_goes_from_running_to_drained_live(
    stack: Stack, page: Any, tmp_path: Path
) -> None:
    """While generation N holds a backlog and N+1 starts, the Generations view shows N as
    running, then draining; once N's workers handle the backlog, drained with nothing
    pending and every event done, updating by itself (the page is never reloaded)."""
    gen_n = stack.generation
    gate = tmp_path / "gate"
    publish(stack.db_url, gen_n, "console.gate", 40, {"gate": str(gate)})
    stack.start_workers(**HANDLERS)
    login(page, stack)
    page.get_by_role("navigation").get_by_role("link", name="Generations").click()
    page.evaluate("window.__notReloaded = true")
    row_n = page.locator(f"#generation-{gen_n}")
    cells = row_n.locator("td")
    expect(row_n.locator(".verdict")).to_have_text("running", timeout=60_000)
    expect(cells.nth(2)).not_to_have_text("0")  # in flight: claimed rows held at the gate

    with psycopg.connect(stack.db_url, autocommit=True) as c:
        gen_n1 = allocate_generation(c, "v-next")
    stack.start_workers(generation=gen_n1, **HANDLERS)
    row_n1 = page.locator(f"#generation-{gen_n1}")
    expect(row_n1.locator(".verdict")).to_have_text("running", timeout=60_000)
    expect(row_n.locator(".verdict")).to_have_text("draining")
    screenshot(page, "generations-draining", tmp_path)

    gate.touch()  # generation N's workers handle the backlog now
    expect(row_n.locator(".verdict")).to_have_text("drained", timeout=120_000)
    expect(cells.nth(1)).to_have_text("0")  # pending
    expect(cells.nth(2)).to_have_text("0")  # in flight
    expect(cells.nth(3)).to_have_text("40")  # done
    assert page.evaluate("window.__notReloaded") is True
    assert stack.scalar("SELECT count(*) FROM core.event_log WHERE generation = %s", (gen_n,)) == 40
    assert stack.scalar("SELECT count(*) FROM core.event_log WHERE handled_by <> generation") == 0
    screenshot(page, "generations", tmp_path)


def test_sigkilled_worker_shows_as_lost(stack: Stack, page: Any, tmp_path: Path) -> None:
    """A workers process killed with SIGKILL (no goodbye) is shown LOST in the Workers view
    within the stale bound (3 s here) plus the poll, listed first; the survivor is not."""
    keep = stack.start_workers()
    victim = stack.start_workers()
    login(page, stack)
    page.get_by_role("navigation").get_by_role("link", name="Workers").click()
    rows = page.locator("tbody tr[data-worker]")
    victim_row = rows.filter(has=page.get_by_role("cell", name=str(victim.p.pid), exact=True))
    keep_row = rows.filter(has=page.get_by_role("cell", name=str(keep.p.pid), exact=True))
    expect(victim_row).to_have_count(1, timeout=60_000)
    expect(keep_row).to_have_count(1, timeout=60_000)
    expect(victim_row.locator(".state")).not_to_contain_text("LOST")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    killed = time.monotonic()
    expect(victim_row.locator(".state")).to_have_text("LOST", timeout=30_000)
    elapsed = time.monotonic() - killed
    # stale bound 3 s (tests/acceptance/procs.FAST) + 1 s poll + a loaded machine's slack
    assert elapsed < 20, elapsed
    expect(victim_row).to_have_class(re.compile(r"\blost\b"))
    expect(rows.first).to_have_class(re.compile(r"\blost\b"))  # lost ones first
    expect(page.locator("#workers-lost")).to_contain_text("lost")
    expect(page.locator("#announce[aria-live='polite']")).to_contain_text(
        f"(pid {victim.p.pid}) is lost"
    )
    expect(keep_row.locator(".state")).not_to_contain_text("LOST")
    no_axe_violations(page, "workers with a lost one")
    screenshot(page, "workers", tmp_path)


def test_poison_row_is_redriven_after_heal(stack: Stack, page: Any, tmp_path: Path) -> None:
    """A poison row goes dead and shows with its topic, attempts and last error; selecting
    it with the keyboard and cancelling the confirmation changes nothing; after the handler
    is healed and the page reloaded (the session survives it), re-driving the selection
    (confirmed) sends it back and it ends done; the action is in the audit list."""
    heal = tmp_path / "healed"
    publish(stack.db_url, stack.generation, "console.poison", 1, {"heal": str(heal)})
    stack.start_workers(**POISON)
    login(page, stack)
    page.get_by_role("navigation").get_by_role("link", name="Dead rows").click()
    row = page.locator("tbody tr[data-row]")
    expect(row).to_have_count(1, timeout=60_000)
    expect(row).to_contain_text("console.poison")
    expect(row).to_contain_text("poisoned")
    expect(row.locator("td").nth(2)).to_have_text("2")  # attempts = max attempts
    row_id = int(row.get_attribute("data-row") or "0")
    no_axe_violations(page, "dead rows")

    box = page.get_by_label(f"Select row {row_id}")
    box.focus()
    page.keyboard.press("Space")
    expect(box).to_be_checked()
    selected = page.get_by_role("button", name="Re-drive selected (1)")
    expect(selected).to_be_enabled()
    screenshot(page, "dead", tmp_path)
    selected.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Re-drive dead rows")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(selected).to_be_focused()
    assert stack.scalar("SELECT status FROM core.outbox WHERE id = %s", (row_id,)) == "dead"

    heal.touch()
    # a reload keeps the session (cookie) and gets the CSRF token back from the API: the
    # page held it in memory only
    page.reload()
    expect(page.locator("#who")).to_contain_text("signed in as")
    box = page.get_by_label(f"Select row {row_id}")
    box.check()
    selected.click()
    with page.expect_response(lambda r: r.url.endswith("/api/operator/dead/redrive")) as resp:
        dialog.get_by_role("button", name="Re-drive").click()
    assert resp.value.status == 200
    expect(page.locator("#dead-result")).to_have_text(
        f"Re-drove 1 row of generation {stack.generation}."
    )
    # and said politely to screen readers (the live region)
    expect(page.locator("#announce[aria-live='polite']")).to_have_text(
        f"Re-drove 1 row of generation {stack.generation}."
    )
    expect(page.get_by_text("No dead rows in this generation.")).to_be_visible()
    deadline = time.monotonic() + 60
    while stack.scalar("SELECT status FROM core.outbox WHERE id = %s", (row_id,)) != "done":
        assert time.monotonic() < deadline, "the re-driven row did not end done"
        time.sleep(0.2)
    assert stack.scalar("SELECT count(*) FROM core.event_log WHERE outbox_id = %s", (row_id,)) == 1

    page.get_by_role("navigation").get_by_role("link", name="Audit").click()
    entry = page.locator("tbody tr[data-audit]").first
    expect(entry).to_contain_text("redrive")
    no_axe_violations(page, "audit")
    screenshot(page, "audit", tmp_path)


def test_revoke_makes_decide_refuse_within_a_second(
    stack: Stack, page: Any, tmp_path: Path
) -> None:
    """Revoking the approval in the Modules view (after a confirmation) makes /api/decide
    answer 403 for that pin within a second of the revoke's answer; the page then shows the
    approval revoked and the exact `spectral modules approve` command for the pin."""
    deadline = time.monotonic() + 30
    while stack.decide() != 200:
        assert time.monotonic() < deadline, "decide never answered 200 before the revoke"
        time.sleep(0.2)
    login(page, stack)
    page.get_by_role("navigation").get_by_role("link", name="Modules").click()
    pin = "/".join(MODULE_KEY)
    approval = page.locator(f"[data-approval='{stack.seeded.approval_id}']")
    expect(approval).to_contain_text("active")
    no_axe_violations(page, "modules")
    approval.get_by_role(
        "button", name=f"Revoke approval {stack.seeded.approval_id} of {pin}"
    ).click()
    dialog = page.get_by_role("dialog", name="Revoke approval")
    expect(dialog).to_be_visible()
    with page.expect_response(lambda r: "/revoke" in r.url) as resp:
        dialog.get_by_role("button", name="Revoke").click()
    answered = time.monotonic()
    assert resp.value.status == 200
    codes = []
    while True:
        codes.append(stack.decide())
        if codes[-1] == 403:
            break
        assert time.monotonic() - answered < 5, codes
    assert time.monotonic() - answered < 1.0, codes
    expect(approval).to_contain_text("revoked")
    command = page.locator(f"[data-pin='{pin}'] .command")
    expect(command).to_contain_text("spectral modules approve")
    expect(page.locator("#modules-result")).to_contain_text("revoked")
    screenshot(page, "modules", tmp_path)


def test_tenant_key_cannot_use_the_console(stack: Stack, page: Any) -> None:
    """A tenant key is refused by the login form (and no session starts), gets 403 on every
    operator read and action with nothing changed, and no credential gets 401; a session
    without its CSRF header cannot act."""
    tenant = stack.seeded.tenant_token
    page.goto(stack.console())
    page.get_by_label("Operator API key").fill(tenant)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("tenant key")
    expect(page.locator("#nav")).to_be_hidden()
    assert page.context.cookies() == []

    g = stack.generation
    for path in READS:
        url = stack.base + path.format(g=g)
        assert http("GET", url, token=tenant)[0] == 403, path
        assert http("GET", url)[0] == 401, path
    actions = [
        ("/api/operator/session", {"token": tenant}),
        ("/api/operator/dead/redrive", {"generation": g, "all": True}),
        ("/api/operator/agent/redrive", {"generation": g, "all": True}),
        (f"/api/operator/approvals/{stack.seeded.approval_id}/revoke", {}),
    ]
    for path, body in actions:
        assert http("POST", stack.base + path, body, token=tenant)[0] == 403, path
    assert stack.scalar("SELECT revoked_at FROM core.module_approvals") is None
    assert stack.decide() == 200

    # a signed-in browser session still needs the CSRF header for an action: a same-origin
    # fetch from the page carries the session cookie but not the token
    login(page, stack)
    status = page.evaluate(
        """async (id) => (await fetch(`/api/operator/approvals/${id}/revoke`, {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: '{}'})).status""",
        stack.seeded.approval_id,
    )
    assert status == 403, f"a session POST without X-CSRF-Token answered {status}"
    assert stack.scalar("SELECT revoked_at FROM core.module_approvals") is None


def test_dead_agent_turn_is_redriven(stack: Stack, page: Any, tmp_path: Path) -> None:
    """A dead World Agent turn shows with its reason in the World Agent view; re-driving it
    (confirmed) puts it back to pending, in its generation only, and the list empties."""
    with psycopg.connect(stack.db_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
            "observation, status, attempts, last_error, finished_at) VALUES "
            "('turn-console-1', %s, 'acme', 'credit', 'obs-1', '{}', 'dead', 5, "
            "'llm: the provider answered 429 five times', now())",
            (stack.generation,),
        )
    login(page, stack)
    page.get_by_role("navigation").get_by_role("link", name="World Agent").click()
    turn = page.locator("tbody tr[data-turn='turn-console-1']")
    expect(turn).to_contain_text("the provider answered 429 five times")
    expect(turn).to_contain_text("acme / credit")
    no_axe_violations(page, "world agent")
    screenshot(page, "agent", tmp_path)
    turn.get_by_role("button", name="Re-drive turn turn-console-1").click()
    dialog = page.get_by_role("dialog", name="Re-drive dead turns")
    dialog.get_by_role("button", name="Re-drive").click()
    expect(page.locator("#agent-result")).to_have_text(
        f"Re-drove 1 turn of generation {stack.generation}."
    )
    expect(page.get_by_text("No dead turn.")).to_be_visible()
    status = "SELECT status FROM agent.turns WHERE thread_id = 'turn-console-1'"
    assert stack.scalar(status) == "pending"


def test_spectral_up_serves_the_console(db_url: str, page: Any, tmp_path: Path) -> None:
    """The README's first command brings up a page to open: `spectral up` prints the
    console's URL, and an operator signs in there and sees the generation it allocated."""
    port = free_port()
    env = clean_env(
        SPECTRAL_DATABASE_URL=db_url,
        SPECTRAL_HOME_DIR=str(tmp_path / ".spectral"),
        SPECTRAL_API_PORT=str(port),
    )
    up = Proc([sys.executable, "-m", "spectral_cli", "up"], env, tmp_path / "up.log")
    try:
        printed = wait_for(
            lambda: re.search(r"console: (http://\S+/console/)", up.output()), 120, "the URL"
        )
        generation = re.search(r"^generation: (\d+)", up.output(), re.M)
        assert generation, up.output()[-2000:]
        url = printed.group(1)
        wait_for(lambda: http("GET", url)[0] == 200, 60, "the console served")
        with ThreadPoolExecutor(1) as pool:
            token = pool.submit(anyio.run, _operator_key, db_url).result()
        page.goto(url)
        page.get_by_label("Operator API key").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#overview-generation")).to_have_text(generation.group(1))
        expect(page.get_by_role("table", name="Health checks")).to_contain_text("workers:live")
    finally:
        up.signal(signal.SIGINT)
        try:
            up.wait(60)
        finally:
            up.kill()


async def _operator_key(url: str) -> str:
    from spectral_core.tenants import create_api_key, create_tenant

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_tenant(conn, "ops")
        _info, token = await create_api_key(conn, "ops", operator=True, label="up test")
    return token

"""End to end in headless Chromium: a real server on a loopback socket, a real browser.

Log in, send through the API, open the message in the local outbox (its pixel loads),
click its link, see the open and the click on the message's page and in the overview;
add and remove a suppression; turn open tracking off and see the next message without a
pixel. Screenshots of the main pages at 1280 and 390 px go to tests/dashboard/screenshots/
(not committed).

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; without them
these tests skip, unless CI=1, when they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from mailbeacon.dashboard.users import create_user
from mailbeacon.domains import domain as dom
from mailbeacon.runtime import Runtime
from mailbeacon.settings import Settings
from mailbeacon.storage.schema import local_outbox
from tests.dashboard.conftest import PASSWORD, USERNAME, with_dashboard
from tests.support import API_KEY, free_port

CHROMIUM = os.environ.get("MAILBEACON_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
# A browser as people use it: headless Chromium's own agent is (rightly) judged a bot.
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0 Safari/537.36")
SCREENSHOTS = Path(__file__).parent / "screenshots"
WIDTHS = {1280: 800, 390: 844}

pytestmark = pytest.mark.slow


def _playwright() -> Any:
    reason = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install playwright)"
    else:
        if not shutil.which(CHROMIUM):
            reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium and playwright in CI: {reason}")
        pytest.skip(reason)
    return sync_playwright


class Server:
    """mailbeacon with the dashboard on 127.0.0.1, uvicorn in a thread, no relay."""

    def __init__(self, database_url: str, spool_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Its own spool: not ./mailbeacon-spool, shared with tests on other workers.
        self.runtime = Runtime(Settings(database_url=database_url, api_key=API_KEY,
                                        http=f"127.0.0.1:{self.port}",
                                        spool_dir=str(spool_dir)))
        config = uvicorn.Config(with_dashboard(self.runtime), host="127.0.0.1",
                                port=self.port, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def api(self, path: str, **data: Any) -> Any:
        r = httpx.post(self.base + path, data=data, auth=("api", API_KEY), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def outbox_count(self) -> int:
        with self.runtime.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(local_outbox)).scalar_one())

    def wait_outbox(self, count: int) -> None:
        deadline = time.monotonic() + 15
        while self.outbox_count() < count:
            assert time.monotonic() < deadline, "the message never reached the local outbox"
            time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    _playwright()
    with Server(f"sqlite:///{tmp_path / 'mailbeacon.db'}", tmp_path / "spool") as running:
        running.api("/v3/domains", name="example.com")
        # People click a link seconds after delivery at the earliest; the test at once.
        dom.update_domain(running.runtime.db, "example.com",
                          bot_thresholds=json.dumps({"click_after_delivery_seconds": 0}))
        create_user(running.runtime.db, USERNAME, PASSWORD)
        yield running


def _send(server: Server, to: str, subject: str, tag: str = "autumn") -> None:
    target = f"{server.base}/dashboard/static/logo.svg"
    server.api("/v3/example.com/messages", **{
        "from": "Shop <shop@example.com>", "to": to, "subject": subject, "o:tag": tag,
        "text": f"Sale: {target}",
        "html": f'<h1>{subject}</h1><p><a href="{target}">See the sale</a></p>'})


def _metric(page: Any, counter: str) -> str:
    return str(page.locator(f'td[data-metric="{counter}"][data-window="24h"] strong')
               .inner_text())


def test_the_newcomer_path(server: Server) -> None:
    sync_playwright = _playwright()
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(user_agent=USER_AGENT,
                                      viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda dialog: dialog.accept())
        base = server.base + "/dashboard"

        # Log in (the first request goes to the login page).
        page.goto(base + "/example.com/messages")
        assert page.url.startswith(base + "/login")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(base + "/example.com/messages")
        page.keyboard.press("Tab")  # keyboard users can skip the navigation
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"

        # Send through the API; open the delivered copy in the local outbox.
        _send(server, "alice@example.org", "Autumn sale")
        server.wait_outbox(1)
        page.goto(base + "/example.com/outbox")
        page.get_by_role("link", name=re.compile("Autumn sale")).click()
        frame = page.frame_locator("iframe.preview")
        frame.get_by_role("heading", name="Autumn sale").wait_for()
        assert frame.locator("img[src*='/o/']").count() == 1
        page.wait_for_load_state("networkidle")  # the pixel has been fetched

        # Click the link: a new tab, through /c/, lands on the link's target.
        link = frame.get_by_role("link", name="See the sale")
        assert "/c/" in (link.get_attribute("href") or "")
        with context.expect_page() as popup:
            link.click()
        popup.value.wait_for_load_state()
        assert popup.value.url.endswith("/dashboard/static/logo.svg")
        popup.value.close()

        # The message's page shows both events, with what was learnt about the hit.
        page.get_by_role("link", name="See this message's events").click()
        timeline = page.locator("#timeline table")
        timeline.get_by_text("clicked", exact=True).wait_for()
        assert timeline.get_by_text("opened", exact=True).count() == 1
        assert "human" in timeline.inner_text()
        assert "Linux" in timeline.inner_text()
        assert page.locator("td[data-opens]").first.inner_text().startswith("1")
        assert page.locator("td[data-clicks]").first.inner_text().startswith("1")
        page.get_by_role("link", name="Messages").click()
        assert page.get_by_title("Clicked 1 time, opened 1 time").count() == 1

        # And in the overview, human hits (the default).
        page.get_by_role("link", name="Overview").click()
        assert (_metric(page, "accepted"), _metric(page, "unique_opened"),
                _metric(page, "unique_clicked")) == ("1", "1", "1")

        # A suppression, added and removed through the forms.
        page.get_by_role("link", name="Suppressions").click()
        page.get_by_label("Address", exact=True).fill("gone@example.org")
        page.get_by_role("button", name="Add", exact=True).click()
        page.get_by_role("status").get_by_text("Added gone@example.org").wait_for()
        assert page.get_by_role("link", name="gone@example.org").count() == 1
        page.get_by_role("button", name="Remove gone@example.org").click()
        page.get_by_role("status").get_by_text("Removed gone@example.org").wait_for()
        assert page.get_by_role("link", name="gone@example.org").count() == 0

        # Open tracking off: the next message arrives without a pixel, links still tracked.
        page.get_by_role("link", name="Settings").click()
        page.get_by_label("Track opens").uncheck()
        page.get_by_role("button", name="Save tracking").click()
        page.get_by_role("status").get_by_text("Tracking settings saved").wait_for()
        _send(server, "bob@example.org", "Winter sale", tag="winter")
        server.wait_outbox(2)
        page.get_by_role("link", name="Local outbox").click()
        page.get_by_role("link", name=re.compile("Winter sale")).click()
        frame = page.frame_locator("iframe.preview")
        frame.get_by_role("heading", name="Winter sale").wait_for()
        assert frame.locator("img[src*='/o/']").count() == 0
        assert "/c/" in (frame.get_by_role("link").first.get_attribute("href") or "")
        outbox_message = page.url

        # Screenshots of the main pages, wide and narrow; nothing may overflow sideways.
        SCREENSHOTS.mkdir(exist_ok=True)
        message_page = page.get_by_role("link", name="See this message's events")
        message_url = server.base + (message_page.get_attribute("href") or "")
        pages = {
            "overview": "/example.com/", "messages": "/example.com/messages",
            "message": message_url, "outbox": "/example.com/outbox",
            "outbox-message": outbox_message, "campaigns": "/example.com/campaigns",
            "campaign": "/example.com/campaigns/autumn", "contacts": "/example.com/contacts",
            "contact": "/example.com/contacts/alice@example.org",
            "suppressions": "/example.com/suppressions/bounces",
            "settings": "/example.com/settings", "webhooks": "/example.com/webhooks",
        }
        for width, height in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": height})
            for name, path in pages.items():
                page.goto(path if path.startswith("http") else base + path)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{name} is {overflow}px too wide at {width}px"
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(base + "/login")
        page.screenshot(path=str(SCREENSHOTS / "login-390.png"))
        browser.close()
    assert not problems, problems  # e.g. anything the Content-Security-Policy blocked


def test_api_keys_in_settings(server: Server) -> None:
    """Make a send-only key for the domain (shown once), send with it, revoke it."""
    sync_playwright = _playwright()
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        page = browser.new_context(user_agent=USER_AGENT).new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        questions: list[str] = []
        page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
        base = server.base + "/dashboard"
        page.goto(base + "/example.com/settings")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(base + "/example.com/settings")

        keys = page.locator("#keys")
        keys.get_by_label("Description").fill("shop app")
        keys.get_by_label("Scope").select_option("domain")
        keys.get_by_label("Role").select_option("send")
        keys.get_by_role("button", name="Create key").click()
        key = page.locator("#new-key").inner_text().strip()
        assert key.startswith("key-")
        mail = {"from": "shop@example.com", "to": "a@example.org", "subject": "Hi",
                "text": "Hi"}
        sent = httpx.post(f"{server.base}/v3/example.com/messages", data=mail,
                          auth=("api", key), timeout=10)
        assert sent.status_code == 200, sent.text
        read = httpx.get(f"{server.base}/v3/example.com/events", auth=("api", key), timeout=10)
        assert read.status_code == 403

        page.goto(base + "/example.com/settings#keys")
        assert page.locator("#new-key").count() == 0 and key not in page.content()
        row = keys.locator("tr", has_text="shop app")
        assert key[:12] in row.inner_text() and "send" in row.inner_text()
        for width, height in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": height})
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"settings-keys-{width}.png"),
                            full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"settings with keys is {overflow}px too wide at {width}px"
        row.get_by_role("button", name=f"Revoke key {key[:12]}").click()
        page.get_by_role("status").get_by_text(f"Key {key[:12]} revoked").wait_for()
        assert questions and "Revoke this key" in questions[0]
        assert keys.locator("tr", has_text="shop app").count() == 0
        refused = httpx.post(f"{server.base}/v3/example.com/messages", data=mail,
                             auth=("api", key), timeout=10)
        assert refused.status_code == 401
        browser.close()
    assert not problems, problems

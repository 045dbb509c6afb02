"""Every dashboard page and action, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import event, select

from mailbeacon.dashboard.overview import CHART_STEP_HOURS, HOUR, WINDOWS, chart_data
from mailbeacon.domains import domain as dom
from mailbeacon.events.vocabulary import EventType, MessageInfo, Severity, build_event
from mailbeacon.events.writer import write_events
from mailbeacon.insight.activity import mark_bounced
from mailbeacon.model.clock import now_us, shown
from mailbeacon.runtime import Runtime
from mailbeacon.storage.schema import deliveries, local_outbox, messages, soft_bounces
from tests.dashboard.conftest import Dash, with_dashboard
from tests.support import API_KEY

BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0 Safari/537.36")
HTML = ('<html><head><title>t</title></head><body><p>Hello <b>there</b></p>'
        '<a href="https://shop.example.net/sale?a=1&amp;b=2">Sale</a>'
        '<script>alert(1)</script></body></html>')


async def send(dash: Dash, to: str = "alice@example.org", **fields: Any) -> str:
    fields.setdefault("subject", "Autumn sale")
    fields.setdefault("html", HTML)
    fields.setdefault("o__tag", "autumn")
    return await dash.service.send(to=to, **fields)


async def outbox_copy(dash: Dash, recipient: str, count: int = 1) -> bytes:
    """The newest message kept in the local outbox for `recipient`, once it is there."""
    for _ in range(500):
        with dash.db.read() as conn:
            rows = conn.execute(select(local_outbox.c.data).where(
                local_outbox.c.recipient == recipient).order_by(local_outbox.c.id)).all()
        if len(rows) >= count:
            return bytes(rows[-1].data)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no outbox message for {recipient}")


def tracking_urls(raw: bytes) -> tuple[list[str], list[str]]:
    text = raw.decode("utf-8", "replace").replace("=\r\n", "").replace("=3D", "=")
    # Visible links only: the hidden honeypot link has more attributes after its href.
    return (re.findall(r'src="(http[^"]+/o/[a-z0-9]+)"', text),
            re.findall(r'href="(http[^"]+/c/[a-z0-9]+)">', text))


async def open_and_click(dash: Dash, recipient: str) -> None:
    pixels, links = tracking_urls(await outbox_copy(dash, recipient))
    headers = {"user-agent": BROWSER}
    assert (await dash.service.hit(pixels[0], headers=headers)).status_code == 200
    assert (await dash.service.hit(links[0], headers=headers)).status_code == 302


def human_clicks_at_once(dash: Dash) -> None:
    # A click within 3 s of delivery counts as a link scanner; tests click at once.
    dom.update_domain(dash.db, "example.com",
                      bot_thresholds=json.dumps({"click_after_delivery_seconds": 0}))


def message_row_id(dash: Dash) -> str:
    with dash.db.read() as conn:
        return str(conn.execute(select(messages.c.id).order_by(messages.c.id.desc())).scalar())


async def test_every_page_answers(dash: Dash) -> None:
    human_clicks_at_once(dash)
    await send(dash, "alice@example.org")
    await send(dash, "bob@example.org", subject="Café news", o__tag="news")
    await open_and_click(dash, "alice@example.org")
    await outbox_copy(dash, "bob@example.org")
    await dash.service.wait_events(2, event="delivered")
    await dash.service.wait_events(2, event="opened OR clicked")
    c = dash.client
    base = "/dashboard/example.com"

    overview = await c.get(f"{base}/")
    assert overview.status_code == 200
    opened = re.search(r'data-metric="unique_opened" data-window="24h"><strong>(\d+)',
                       overview.text)
    clicked = re.search(r'data-metric="unique_clicked" data-window="24h"><strong>(\d+)',
                        overview.text)
    sent = re.search(r'data-metric="accepted" data-window="24h"><strong>(\d+)', overview.text)
    assert opened and clicked and sent
    assert (sent[1], opened[1], clicked[1]) == ("2", "1", "1")
    svg = await c.get(f"{base}/overview.svg?range=30d&hits=all")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "<script" not in svg.text and "http://" not in svg.text.replace(
        "http://www.w3.org", "")

    listing = await c.get(f"{base}/messages")
    assert listing.status_code == 200
    assert "Clicked 1 time, opened 1 time" in listing.text  # alice's row, blue
    assert "Not opened (delivered)" in listing.text  # bob's row, gray
    only_bob = await c.get(f"{base}/messages", params={"recipient": "BOB@"})
    assert "bob@example.org" in only_bob.text and "alice@example.org" not in only_bob.text
    cafe = await c.get(f"{base}/messages", params={"subject": "café"})
    assert "bob@example.org" in cafe.text and "alice@example.org" not in cafe.text
    tagged = await c.get(f"{base}/messages", params={"tag": "AUTUMN"})
    assert "alice@example.org" in tagged.text and "bob@example.org" not in tagged.text
    assert "No message matches" in (await c.get(f"{base}/messages?tag=zzz")).text

    alice_message = re.search(r'messages/([0-9a-v]{26})\?recipient=alice', listing.text)
    assert alice_message
    detail = await c.get(f"{base}/messages/{alice_message[1]}")
    assert detail.status_code == 200
    for text in ("opened", "clicked", "https://shop.example.net/sale?a=1&amp;b=2", "human",
                 "Autumn sale", "autumn", "Windows"):
        assert text in detail.text, text
    preview = await c.get(f"{base}/messages/{alice_message[1]}/preview")
    assert preview.status_code == 200 and "<b>there</b>" in preview.text
    csp = preview.headers["content-security-policy"]
    assert csp.startswith("sandbox ;") and "script-src" not in csp and "default-src 'none'" in csp
    assert 'sandbox=""' in detail.text

    for path in ("/dashboard/", f"{base}/campaigns", f"{base}/campaigns/autumn",
                 f"{base}/campaigns/autumn/chart.svg", f"{base}/contacts",
                 f"{base}/contacts?sort=address", f"{base}/contacts?sort=last_activity",
                 f"{base}/contacts/alice@example.org", f"{base}/suppressions/bounces",
                 f"{base}/suppressions/unsubscribes", f"{base}/suppressions/complaints",
                 f"{base}/suppressions/whitelists", f"{base}/settings", f"{base}/webhooks",
                 f"{base}/outbox", f"{base}/campaigns?hits=all", f"{base}/?range=24h"):
        r = await c.get(path)
        assert r.status_code == 200, (path, r.text[:500])
    campaign = await c.get(f"{base}/campaigns/autumn")
    assert "https://shop.example.net/sale?a=1&amp;b=2" in campaign.text
    csv_file = await c.get(f"{base}/campaigns/autumn.csv")
    assert csv_file.status_code == 200 and "summary,,sent,1" in csv_file.text
    assert "attachment" in csv_file.headers["content-disposition"]
    contact = await c.get(f"{base}/contacts/alice@example.org")
    assert "clicked" in contact.text and "Reset bounces" in contact.text

    for path in (f"{base}/messages/nothing", f"{base}/campaigns/nope",
                 "/dashboard/unknown.example/", f"{base}/contacts/nobody@example.org",
                 f"{base}/outbox/00000000000000000000000000", f"{base}/suppressions/other"):
        r = await c.get(path)
        assert r.status_code == 404, path
        assert "Not found" in r.text


async def test_local_outbox_shows_mail_as_delivered(dash: Dash) -> None:
    await send(dash, "carol@example.org")
    await outbox_copy(dash, "carol@example.org")
    c = dash.client
    inbox = await c.get("/dashboard/example.com/outbox")
    found = re.search(r"/dashboard/example.com/outbox/([0-9a-v]{26})", inbox.text)
    assert found and "carol@example.org" in inbox.text
    page = await c.get(f"/dashboard/example.com/outbox/{found[1]}")
    assert page.status_code == 200
    assert ('sandbox="allow-popups allow-popups-to-escape-sandbox '
            'allow-top-navigation-by-user-activation"') in page.text
    assert "See this message's events" in page.text
    preview = await c.get(f"/dashboard/example.com/outbox/{found[1]}/preview")
    assert '<base target="_blank">' in preview.text
    assert "/o/" in preview.text and "/c/" in preview.text  # tracked, as delivered
    csp = preview.headers["content-security-policy"]
    assert "allow-scripts" not in csp and "img-src http: https: data:" in csp
    raw = await c.get(f"/dashboard/example.com/outbox/{found[1]}.eml")
    assert raw.headers["content-type"] == "message/rfc822" and b"carol@example.org" in raw.content


async def test_suppressions_add_remove_import_export(dash: Dash) -> None:
    base = "/dashboard/example.com/suppressions"
    r = await dash.post(f"{base}/bounces/add", {"address": "Bounce@Example.org",
                                                "code": "550", "error": "no such user"})
    assert r.status_code == 303 and r.headers["location"] == f"{base}/bounces"
    page = await dash.client.get(r.headers["location"])
    assert "bounce@example.org" in page.text and "no such user" in page.text
    assert "Added bounce@example.org" in page.text  # the flash
    assert "Added bounce" not in (await dash.client.get(f"{base}/bounces")).text  # once

    r = await dash.post(f"{base}/bounces/add", {"address": "not an address"})
    error = await dash.client.get(r.headers["location"])
    assert "flash-error" in error.text

    r = await dash.post(f"{base}/unsubscribes/add", {"address": "u@example.org",
                                                     "tag": "news"})
    assert "news" in (await dash.client.get(f"{base}/unsubscribes")).text
    r = await dash.post(f"{base}/whitelists/add", {"domain": "friends.example"})
    assert "friends.example" in (await dash.client.get(f"{base}/whitelists")).text

    csv_data = "address,code,error\nx1@example.org,551,gone\nx2@example.org,,\n"
    r = await dash.post(f"{base}/bounces/import",
                        files={"file": ("list.csv", csv_data.encode(), "text/csv")})
    assert "Imported 2 addresses" in (await dash.client.get(r.headers["location"])).text
    bad = await dash.post(f"{base}/bounces/import",
                          files={"file": ("list.csv", b"address\nnope\n", "text/csv")})
    assert "line 2" in (await dash.client.get(bad.headers["location"])).text

    exported = await dash.client.get(f"{base}/bounces.csv")
    lines = exported.text.splitlines()
    assert lines[0] == "address,code,error,created_at"
    assert [line.split(",")[0] for line in lines[1:]] == [
        "bounce@example.org", "x1@example.org", "x2@example.org"]
    searched = await dash.client.get(f"{base}/bounces?term=x")
    assert "x1@example.org" in searched.text and "bounce@example.org" not in searched.text

    r = await dash.post(f"{base}/bounces/remove", {"address": "bounce@example.org"})
    page = await dash.client.get(r.headers["location"])
    assert "Removed bounce@example.org" in page.text
    assert "bounce@example.org</a>" not in page.text
    r = await dash.post(f"{base}/bounces/remove", {"address": "bounce@example.org"})
    assert "not found" in (await dash.client.get(r.headers["location"])).text.lower()


async def test_tracking_setting_applies_to_the_next_message(dash: Dash) -> None:
    await send(dash, "first@example.org")
    pixels, links = tracking_urls(await outbox_copy(dash, "first@example.org"))
    assert pixels and links
    r = await dash.post("/dashboard/example.com/settings/tracking",
                        {"track_clicks": "yes", "tracking_url": ""})  # opens unticked
    assert r.status_code == 303
    assert "Tracking settings saved" in (await dash.client.get(r.headers["location"])).text
    assert not dom.get_domain(dash.db, "example.com").track_opens
    await send(dash, "second@example.org")
    pixels, links = tracking_urls(await outbox_copy(dash, "second@example.org"))
    assert not pixels and links

    r = await dash.post("/dashboard/example.com/settings/tracking",
                        {"track_opens": "on", "track_clicks": "htmlonly",
                         "tracking_url": "ftp://nope"})
    assert "tracking URL must" in (await dash.client.get(r.headers["location"])).text
    for bad, words in (("https://-bad-.example.net", "label &#39;-bad-&#39;"),
                       ("https://email.example.com/t", "must not have a path")):
        r = await dash.post("/dashboard/example.com/settings/tracking",
                            {"track_opens": "on", "track_clicks": "yes", "tracking_url": bad})
        assert words in (await dash.client.get(r.headers["location"])).text
        assert dom.get_domain(dash.db, "example.com").tracking_url is None
    r = await dash.post("/dashboard/example.com/settings/tracking",
                        {"track_opens": "on", "pixel_top": "on", "track_clicks": "htmlonly",
                         "tracking_url": "https://email.example.com/"})
    domain = dom.get_domain(dash.db, "example.com")
    assert (domain.track_opens, domain.pixel_top, domain.track_clicks, domain.tracking_url) \
        == (True, True, "htmlonly", "https://email.example.com")


async def test_other_settings(dash: Dash) -> None:
    base = "/dashboard/example.com/settings"
    r = await dash.post(f"{base}/unsubscribe", {"unsubscribe_footer": "on",
                                                "footer_html": "<p>%unsubscribe_url%</p>",
                                                "footer_text": ""})
    domain = dom.get_domain(dash.db, "example.com")
    assert domain.unsubscribe_footer and domain.footer_html == "<p>%unsubscribe_url%</p>"
    assert not domain.list_unsubscribe  # its box was not ticked
    await dash.post(f"{base}/unsubscribe", {"list_unsubscribe": "on", "footer_text": ""})
    assert dom.get_domain(dash.db, "example.com").list_unsubscribe
    r = await dash.post(f"{base}/unsubscribe", {"footer_text": "no placeholder"})
    assert "must contain" in (await dash.client.get(r.headers["location"])).text
    r = await dash.post(f"{base}/bounces", {"soft_bounce_limit": "3",
                                            "bounce_domain": "bounces.example.com"})
    domain = dom.get_domain(dash.db, "example.com")
    assert (domain.soft_bounce_limit, domain.bounce_domain) == (3, "bounces.example.com")
    r = await dash.post(f"{base}/bounces", {"soft_bounce_limit": "0"})
    assert "from 1 to 1000" in (await dash.client.get(r.headers["location"])).text
    r = await dash.post(f"{base}/dkim", {"selector": "s1", "bits": "1024"})
    page = await dash.client.get(r.headers["location"].split("#")[0])
    assert "s1._domainkey.example.com. IN TXT" in page.text
    assert "bounces.example.com. IN MX 10" in page.text
    checked = await dash.client.get(f"{base}?check=dns")
    # Offline, or the names do not exist: either way the page answers at once.
    statuses = re.findall(r'data-dns-status="([^"]+)"', checked.text)
    assert len(statuses) == 2
    assert set(statuses) <= {"not found", "could not check", "different", "ok"}


async def test_webhooks(dash: Dash) -> None:
    base = "/dashboard/example.com/webhooks"
    r = await dash.post(f"{base}/delivered", {"urls": "http://127.0.0.1:9/hook\n"})
    page = await dash.client.get(r.headers["location"].split("#")[0])
    assert "http://127.0.0.1:9/hook" in page.text
    key = re.search(r'class="mono secret">([^<]+)<', page.text)
    assert key
    await dash.post(f"{base}/rotate-key")
    page = await dash.client.get(base)
    assert key[1] not in page.text
    await send(dash)
    await dash.service.wait_events(2, event="delivered OR accepted")
    for _ in range(200):
        page = await dash.client.get(base)
        if "127.0.0.1:9/hook</td>" in page.text:
            break
        await asyncio.sleep(0.05)
    assert "127.0.0.1:9/hook</td>" in page.text  # in the delivery log
    delivery = re.search(r'name="delivery" value="([^"]+)"', page.text)
    r = await dash.post(f"{base}/replay")
    assert r.status_code == 303
    if delivery:  # finished already (refused connection): replay it by id
        r = await dash.post(f"{base}/replay", {"delivery": delivery[1]})
        assert "will be sent again" in (await dash.client.get(r.headers["location"])).text
    r = await dash.post(f"{base}/delivered", {"urls": ""})
    assert "127.0.0.1:9/hook</textarea>" not in (await dash.client.get(base)).text
    r = await dash.post(f"{base}/delivered", {"urls": "ftp://x"})
    assert "flash-error" in (await dash.client.get(r.headers["location"])).text
    assert (await dash.post(f"{base}/nonsense", {"urls": "http://x.example/"})).status_code \
        == 303


async def test_contact_actions(dash: Dash) -> None:
    await send(dash, "dana@example.org")
    await outbox_copy(dash, "dana@example.org")
    base = "/dashboard/example.com/contacts/dana@example.org"
    r = await dash.post(f"{base}/consent", {"consent": "yes"})
    assert "Consent saved" in (await dash.client.get(r.headers["location"])).text
    assert "given" in (await dash.client.get(base)).text

    await dash.post("/dashboard/example.com/suppressions/bounces/add",
                    {"address": "dana@example.org"})
    with dash.db.write() as conn:
        conn.execute(soft_bounces.insert().values(domain="example.com",
                                                  address="dana@example.org", count=2,
                                                  last_at=0))
    page = await dash.client.get(base)
    assert "Soft bounces counted: <strong>2</strong>" in page.text
    r = await dash.post(f"{base}/reset-bounces")
    page = await dash.client.get(r.headers["location"])
    assert "Bounces reset" in page.text and "Soft bounces counted: <strong>0</strong>" in page.text
    assert "None: mail to this address is sent" in page.text

    r = await dash.post(f"{base}/erase")  # without the confirmation box
    assert "confirm" in (await dash.client.get(r.headers["location"])).text
    r = await dash.post(f"{base}/erase", {"confirm": "on"})
    assert r.headers["location"] == "/dashboard/example.com/contacts"
    assert "Erased dana@example.org" in (await dash.client.get(r.headers["location"])).text
    assert (await dash.client.get(base)).status_code == 404
    found = await dash.client.get("/dashboard/example.com/contacts/find",
                                  params={"address": "Dana@Example.org"})
    assert found.headers["location"] == base


async def test_add_domain(dash: Dash) -> None:
    r = await dash.post("/dashboard/domains", {"name": "News.Example.com"})
    assert r.headers["location"] == "/dashboard/news.example.com/"
    assert (await dash.client.get(r.headers["location"])).status_code == 200
    r = await dash.post("/dashboard/domains", {"name": "news.example.com"})
    assert "already exists" in (await dash.client.get(r.headers["location"])).text


async def test_pages_run_a_fixed_number_of_queries(dash: Dash) -> None:
    """No query per row: 1 message and 30 messages cost the same number of statements."""
    # A second process without worker or webhook sender, so that only the pages query it.
    quiet = Runtime(dash.service.runtime.settings, run_migrations=False, run_worker=False)
    transport = httpx.ASGITransport(app=with_dashboard(quiet))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        reader = Dash(dash.service, client)
        assert (await reader.login()).status_code == 303
        await send(dash, "one@example.org")
        await outbox_copy(dash, "one@example.org")
        counts = []
        for batch in (1, 30):
            for i in range(batch - 1):
                await send(dash, f"r{i}@example.org", o__tag=f"t{i % 3}")
            await outbox_copy(dash, f"r{batch - 2}@example.org" if batch > 1
                              else "one@example.org")
            statements: list[str] = []

            def count(conn: Any, cursor: Any, statement: str, *args: Any,
                      seen: list[str] = statements) -> None:
                seen.append(statement)

            engines = {quiet.db._reader, quiet.db._writer}
            for engine in engines:
                event.listen(engine, "before_cursor_execute", count)
            try:
                for path in ("/dashboard/example.com/messages",
                             "/dashboard/example.com/contacts",
                             "/dashboard/example.com/campaigns",
                             "/dashboard/example.com/outbox"):
                    assert (await client.get(path)).status_code == 200
            finally:
                for engine in engines:
                    event.remove(engine, "before_cursor_execute", count)
            counts.append(len(statements))
        assert counts[0] == counts[1], counts
    quiet.db.dispose()


def test_charts_leave_no_legacy_import_hook() -> None:
    import sys

    import mailbeacon.dashboard.charts  # noqa: F401

    assert not any(type(f).__name__ == "PluginImportFixer" for f in sys.meta_path)


async def test_failures_by_reason_on_overview_and_campaign(dash: Dash) -> None:
    info = MessageInfo("example.com", "m1@example.com", "s@example.com", {}, ["autumn"], {})
    now = now_us()

    def failed(permanent: bool, code: int, message: str) -> Any:
        return build_event(EventType.FAILED, now, info, "x@example.org",
                           severity=Severity.PERMANENT if permanent else Severity.TEMPORARY,
                           reason="bounce" if permanent else "generic",
                           delivery_status={"code": code, "message": message})

    dropped = failed(True, 605, "")
    dropped.data["reason"] = "suppress-bounce"  # a drop, not a failure to deliver
    records = [failed(True, 550, "5.1.1 No such user"), failed(True, 550, "5.1.1 Unknown"),
               failed(False, 452, "4.2.2 Mailbox full"), dropped]
    with dash.db.write() as conn:
        write_events(conn, records)
    base = "/dashboard/example.com"
    for path in (f"{base}/?range=24h", f"{base}/campaigns/autumn"):
        page = (await dash.client.get(path)).text
        section = page[page.index('id="failures"'):]
        section = section[:section.index("</section>")]
        rows = {m[0]: m[1:] for m in re.findall(
            r'<th scope="row">([^<]+)</th><td class="num">(\d+)</td><td class="num">(\d+)</td>',
            section)}
        assert rows["No such user"] == ("2", "0"), path
        assert rows["Mailbox full"] == ("0", "1"), path
        assert rows["Other"] == ("0", "0"), path
        assert "66.7%" in section and "33.3%" in section
    await dash.service.add_domain("quiet.example.com")
    quiet = (await dash.client.get("/dashboard/quiet.example.com/")).text
    assert "No failed deliveries" in quiet


def test_chart_ends_with_the_block_of_the_current_hour() -> None:
    # Issue 15 item 1: for every hour of a day, each window's last point holds the current
    # hour's counts, and the points cover the whole window.
    day = 1_796_342_400  # a UTC midnight
    for hour_of_day in range(24):
        now_hour = day + hour_of_day * HOUR
        counts = {now_hour: {"delivered": 5}}
        for window, hours in WINDOWS.items():
            chart = chart_data(counts, now_hour, window)
            step = CHART_STEP_HOURS[window]
            assert len(chart.labels) == hours // step
            assert chart.series["Delivered"][-1] == 5, (window, hour_of_day)
            assert sum(chart.series["Delivered"]) == 5


async def test_overview_table_shows_the_current_block(dash: Dash) -> None:
    await send(dash, "alice@example.org")
    await dash.service.wait_events(1, event="delivered")
    now = int(time.time())
    block = datetime.fromtimestamp(now - now % (6 * HOUR), UTC).strftime("%b %d %H:%M")
    page = (await dash.client.get("/dashboard/example.com/?range=7d")).text
    table = page[page.index("Chart data as a table"):]
    rows = re.findall(r'<tr><th scope="row">([^<]+)</th><td class="num">(\d+)</td>', table)
    assert rows[-1] == (block, "1")


def delivery_of(dash: Dash, recipient: str) -> tuple[str, Any]:
    """(delivery id, message row) of the newest message to `recipient`."""
    with dash.db.read() as conn:
        delivery = conn.execute(
            select(deliveries.c.id, deliveries.c.message_id)
            .where(deliveries.c.recipient == recipient)
            .order_by(deliveries.c.id.desc())).first()
        assert delivery is not None
        row = conn.execute(select(messages).where(messages.c.id == delivery.message_id)).one()
    return str(delivery.id), row


def list_statuses(page: str) -> dict[str, str]:
    """{recipient: status label} of the Messages page."""
    return {m[1]: m[0] for m in re.findall(
        r'<span class="ind-label">([^<]+)</span></span></td>\s*<td><time[^>]*>[^<]*</time></td>'
        r'\s*<td class="addr">([^<]+)</td>', page)}


async def test_status_precedence_on_every_page(dash: Dash) -> None:
    # Issue 15 items 2-5: one rule (insight.contacts.status_of) on the list, the message
    # page and the contact page: complained > unsubscribed > bounced > clicked > opened >
    # delivered > deferred > queued, with human hits only.
    human_clicks_at_once(dash)
    for to in ("bounce@example.org", "spam@example.org", "bot@example.org",
               "later@example.org"):
        await send(dash, to)
        await outbox_copy(dash, to)
    await dash.service.wait_events(4, event="delivered")
    await open_and_click(dash, "spam@example.org")
    # A bot's click (no user agent) on bot@'s message: counted, but no status change.
    _, links = tracking_urls(await outbox_copy(dash, "bot@example.org"))
    assert (await dash.service.hit(links[0])).status_code == 302
    await dash.service.wait_events(2, event="clicked")

    bounce_id, bounce_row = delivery_of(dash, "bounce@example.org")
    spam_id, spam_row = delivery_of(dash, "spam@example.org")
    later_id, _ = delivery_of(dash, "later@example.org")
    now = now_us()

    def info(row: Any) -> MessageInfo:
        return MessageInfo("example.com", row.message_id, "s@example.com", {}, ["autumn"], {})

    with dash.db.write() as conn:
        write_events(conn, [
            build_event(EventType.FAILED, now, info(bounce_row), "bounce@example.org",
                        bounce_id, severity=Severity.PERMANENT, reason="bounce",
                        delivery_status={"code": 550, "message": "5.1.1 No such user"}),
            build_event(EventType.COMPLAINED, now, info(spam_row), "spam@example.org",
                        spam_id)])
        mark_bounced(conn, bounce_id, "example.com", "bounce@example.org")
        # A deferral: the relay answered 451, the worker will try again in an hour.
        conn.execute(deliveries.update().where(deliveries.c.id == later_id).values(
            status="queued", attempts=1, last_code=451, last_message="4.7.1 Try later",
            next_attempt_at=now + 3600 * 1_000_000))

    base = "/dashboard/example.com"
    statuses = list_statuses((await dash.client.get(f"{base}/messages")).text)
    retry = shown(now + 3600 * 1_000_000)
    assert statuses == {
        "bounce@example.org": "Bounced (550)", "spam@example.org": "Complained",
        "bot@example.org": "Not opened (delivered)",
        "later@example.org": f"Deferred (451), next retry {retry} UTC"}

    page = (await dash.client.get(f"{base}/messages/{bounce_row.id}")).text
    assert "Bounced (550)" in page and "then bounced" in page
    assert '<small data-bounce>550 5.1.1 No such user</small>' in page
    assert "Bounced (250)" not in page
    page = (await dash.client.get(f"{base}/messages/{spam_row.id}")).text
    assert 'title="Complained"' in page and "Clicked" not in page.split("Recipients")[1][:2000]

    contact = (await dash.client.get(f"{base}/contacts/bounce@example.org")).text
    assert "(0 delivered, 1 failed," in contact
    assert 'title="Bounced (550)"' in contact
    contact = (await dash.client.get(f"{base}/contacts/spam@example.org")).text
    assert 'title="Complained"' in contact
    contact = (await dash.client.get(f"{base}/contacts/bot@example.org")).text
    assert "0 clicked" in contact and 'title="Not opened (delivered)"' in contact

    r = await dash.client.get("/v3/example.com/recipients/later@example.org/messages",
                              auth=("api", API_KEY))
    (item,) = r.json()["items"]
    assert (item["status"], item["indicator"]) == ("deferred", "gray")
    assert item["delivery"]["next_attempt_at"] is not None


async def test_campaign_page_headers_and_period(dash: Dash) -> None:
    # Issue 15 item 7: "Countrie" as a column header, and the period shown with times.
    human_clicks_at_once(dash)
    await send(dash, "alice@example.org")
    await open_and_click(dash, "alice@example.org")
    await dash.service.wait_events(1, event="clicked")
    page = (await dash.client.get("/dashboard/example.com/campaigns/autumn?period=7d")).text
    headers = re.findall(r'<thead><tr><th scope="col">([^<]+)</th><th scope="col" '
                         r'class="num">Opened</th>', page)
    assert headers == ["Device", "OS", "Mail client", "Country"]
    assert "Countrie<" not in page and "00:00:00" not in page
    today = datetime.now(UTC)
    first = datetime.fromtimestamp(today.timestamp() - 6 * 86400, UTC).strftime("%Y-%m-%d")
    hint = re.search(r'<p class="hint">\s*([^<·]+)·', page)
    assert hint is not None
    assert hint.group(1).strip() == f"{first} to {today:%Y-%m-%d} (UTC days)"


async def test_timeline_says_codes_once_and_marks_deferrals(dash: Dash) -> None:
    # Issue 15 items 3 and 5: "550 5.1.1 550 5.1.1 ..." in the timeline, and a 4xx deferral
    # shown as a red "failed" badge.
    await send(dash, "alice@example.org")
    await dash.service.wait_events(1, event="delivered")
    delivery_id, row = delivery_of(dash, "alice@example.org")
    info = MessageInfo("example.com", row.message_id, "s@example.com", {}, ["autumn"], {})
    now = now_us()
    with dash.db.write() as conn:
        write_events(conn, [
            build_event(EventType.FAILED, now, info, "alice@example.org", delivery_id,
                        severity=Severity.TEMPORARY, reason="generic",
                        delivery_status={"code": 451, "enhanced-code": "4.7.1",
                                         "message": "4.7.1 Try again later"}),
            build_event(EventType.FAILED, now + 1, info, "alice@example.org", delivery_id,
                        severity=Severity.PERMANENT, reason="bounce",
                        delivery_status={"code": 550, "enhanced-code": "5.1.1",
                                         "message": "550 5.1.1 No such user"})])
    page = (await dash.client.get(f"/dashboard/example.com/messages/{row.id}")).text
    timeline = page[page.index('class="events"'):]
    assert re.findall(r'<span class="ev ev-([a-z]+)">([a-z]+)</span>', timeline)[-2:] == [
        ("deferred", "deferred"), ("failed", "failed")]
    assert "<span>temporary generic: 451 4.7.1 Try again later</span>" in timeline
    assert "<span>permanent bounce: 550 5.1.1 No such user</span>" in timeline


async def test_contacts_list_marks_suppressed_addresses(dash: Dash) -> None:
    # Issue 15 item 4: the contacts list marked no suppressed address.
    for to in ("spam@example.org", "fine@example.org"):
        await send(dash, to)
    await dash.service.wait_events(2, event="delivered")
    r = await dash.client.post("/v3/example.com/complaints", auth=("api", API_KEY),
                               data={"address": "spam@example.org"})
    assert r.status_code == 200, r.text
    page = (await dash.client.get("/dashboard/example.com/contacts?sort=address")).text
    cells = dict(re.findall(r'>([a-z]+@example\.org)</a></td>.*?<td data-suppressed>([^<]*)</td>',
                            page, re.S))
    assert cells == {"fine@example.org": "—", "spam@example.org": "complaint"}

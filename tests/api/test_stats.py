"""The Stats API, tag aggregates and campaign reports, on both backends.

Two kinds of test: end-to-end (messages sent and tracked through the real endpoints, stats
checked against the Events API) and seeded (rows written straight into stats_buckets,
dimension_stats and link_stats, for exact expectations).
"""

from __future__ import annotations

import calendar
import csv
import io
import re
import time
from collections import Counter
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from sqlalchemy import Table

from mailbeacon.insight.tags import touch_tags
from mailbeacon.model import spreadsheet
from mailbeacon.model.clock import now_us
from mailbeacon.storage.schema import dimension_stats, link_stats, stats_buckets
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import SuppressionKind
from tests.support import Service, SmtpRelay

H = 3600
DAY = 86400
D0 = calendar.timegm((2024, 1, 30, 0, 0, 0))  # Tue, 30 Jan 2024 00:00:00 GMT
URL = "/v3/example.com/stats/total"


@pytest.fixture
def client(service: Service) -> httpx.AsyncClient:
    """The service's authenticated API client."""
    return service.client  # type: ignore[no-any-return]


def date(ts: int) -> str:
    return formatdate(ts, usegmt=True)


def seed(service: Service, table: Table, rows: list[dict[str, Any]]) -> None:
    with service.runtime.db.write() as conn:
        conn.execute(table.insert(), rows)


def buckets(service: Service, *rows: tuple[Any, ...], domain: str = "example.com") -> None:
    """stats_buckets rows: (tag, event, hour, count[, human_count])."""
    seed(service, stats_buckets, [
        {"domain": domain, "tag": r[0], "event": r[1], "hour": r[2], "count": r[3],
         "human_count": r[4] if len(r) > 4 else r[3]} for r in rows])


def dims(service: Service, *rows: tuple[Any, ...]) -> None:
    """dimension_stats rows: (tag, event, dimension, value, day, count[, human_count])."""
    seed(service, dimension_stats, [
        {"domain": "example.com", "tag": r[0], "event": r[1], "dimension": r[2],
         "value": r[3], "day": r[4], "count": r[5], "human_count": r[6] if len(r) > 6 else r[5]}
        for r in rows])


async def get(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    # httpx drops a query already in `url` when given params, even empty ones.
    r = await client.get(url, params=params) if params else await client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


def totals(body: dict[str, Any], event: str, key: str = "total") -> list[int]:
    return [item[event][key] for item in body["stats"]]


# --- seeded: /stats/total and /tags/{tag}/stats ------------------------------------------


async def test_hour_day_and_month_buckets(service: Service, client: httpx.AsyncClient) -> None:
    buckets(service, ("", "accepted", D0, 5), ("", "accepted", D0 + 2 * H, 3),
            ("", "accepted", D0 + 25 * H, 7), ("", "delivered", D0 + 2 * H, 3),
            ("", "accepted", D0 + 47 * H, 11),  # Wed 31 Jan 23:00
            ("", "accepted", D0 + 48 * H, 13),  # Thu 1 Feb 00:00: another month
            ("", "accepted", D0 - 30 * DAY - H, 17),  # Sun 31 Dec 2023 23:00
            ("promo", "accepted", D0, 100))  # another tag: not in the totals
    buckets(service, ("", "accepted", D0, 1000), domain="other.example.com")

    body = await get(client, URL, event=["accepted", "delivered"], resolution="hour",
                     start=D0, end=D0 + 3 * H)
    assert body["resolution"] == "hour"
    assert body["start"] == date(D0) == "Tue, 30 Jan 2024 00:00:00 GMT"
    assert body["end"] == date(D0 + 3 * H)
    assert [i["time"] for i in body["stats"]] == [date(D0 + k * H) for k in range(4)]
    assert totals(body, "accepted") == [5, 0, 3, 0]
    assert totals(body, "accepted", "outgoing") == [5, 0, 3, 0]
    assert totals(body, "accepted", "incoming") == [0, 0, 0, 0]
    assert totals(body, "delivered") == [0, 0, 3, 0]
    assert totals(body, "delivered", "smtp") == [0, 0, 3, 0]
    assert totals(body, "delivered", "http") == [0, 0, 0, 0]

    # Day buckets sum their hours; bounds inside a bucket widen to the whole bucket.
    body = await get(client, URL, event="accepted", resolution="day", start=D0 + 5 * H,
                     end=D0 + 2 * DAY + 1)
    assert [i["time"] for i in body["stats"]] == [date(D0 + k * DAY) for k in range(3)]
    assert totals(body, "accepted") == [8, 7 + 11, 13]
    assert body["start"] == date(D0) and body["end"] == date(D0 + 2 * DAY)

    body = await get(client, URL, event="accepted", resolution="month",
                     start=D0 - 45 * DAY, end=D0 + 10 * DAY)
    assert [i["time"] for i in body["stats"]] == [
        "Fri, 01 Dec 2023 00:00:00 GMT", "Mon, 01 Jan 2024 00:00:00 GMT",
        "Thu, 01 Feb 2024 00:00:00 GMT"]
    assert totals(body, "accepted") == [17, 5 + 3 + 7 + 11, 13]


async def test_duration_and_defaults(service: Service, client: httpx.AsyncClient) -> None:
    buckets(service, ("", "accepted", D0 - DAY, 1), ("", "accepted", D0, 2),
            ("", "accepted", D0 + 2 * DAY + 5 * H, 4), ("", "accepted", D0 + DAY + 6 * H, 8))
    end = D0 + 2 * DAY + 5 * H + 30  # Thu 1 Feb 05:00:30

    # "3d" at day resolution: 3 buckets, the one holding `end` last; it overrides start.
    body = await get(client, URL, event="accepted", duration="3d", end=end, start=0)
    assert [i["time"] for i in body["stats"]] == [date(D0 + k * DAY) for k in range(3)]
    assert totals(body, "accepted") == [2, 8, 4]

    body = await get(client, URL, event="accepted", duration="24h", resolution="hour",
                     end=end)
    assert len(body["stats"]) == 24
    assert body["start"] == date(D0 + DAY + 6 * H) and body["end"] == date(D0 + 2 * DAY + 5 * H)
    assert sum(totals(body, "accepted")) == 12
    assert totals(body, "accepted")[0] == 8 and totals(body, "accepted")[-1] == 4

    body = await get(client, URL, event="accepted", duration="2m", resolution="month",
                     end=end)
    assert [i["time"] for i in body["stats"]] == ["Mon, 01 Jan 2024 00:00:00 GMT",
                                                  "Thu, 01 Feb 2024 00:00:00 GMT"]
    assert totals(body, "accepted") == [1 + 2 + 8, 4]

    body = await get(client, URL, event="accepted", duration="36h", end=end)
    assert [i["time"] for i in body["stats"]] == [date(D0 + DAY), date(D0 + 2 * DAY)]

    # Defaults without start or duration: 7 days, 24 hours, 12 months.
    body = await get(client, URL, event="accepted", end=end)
    assert [i["time"] for i in body["stats"]] == [date(D0 + (k - 4) * DAY) for k in range(7)]
    assert totals(body, "accepted") == [0, 0, 0, 1, 2, 8, 4]
    assert body["resolution"] == "day"
    assert len((await get(client, URL, event="accepted", end=end,
                          resolution="hour"))["stats"]) == 24
    months = await get(client, URL, event="accepted", end=end, resolution="month")
    assert months["start"] == "Wed, 01 Mar 2023 00:00:00 GMT"
    assert len(months["stats"]) == 12

    # Without end: now. The last bucket is today (allowing for a test run at midnight).
    before = int(time.time())
    body = await get(client, URL, event="accepted")
    after = int(time.time())
    assert len(body["stats"]) == 7
    assert body["stats"][-1]["time"] in {date(before - before % DAY), date(after - after % DAY)}


async def test_rfc2822_and_epoch_bounds_agree(service: Service,
                                              client: httpx.AsyncClient) -> None:
    buckets(service, ("", "accepted", D0 + H, 3))
    by_epoch = await get(client, URL, event="accepted", resolution="hour", start=D0,
                         end=D0 + 2 * H)
    by_date = await get(client, URL, event="accepted", resolution="hour",
                        start="Tue, 30 Jan 2024 00:00:00 -0000",
                        end="Tue, 30 Jan 2024 03:00:00 +0100")
    assert by_epoch == by_date
    assert totals(by_date, "accepted") == [0, 3, 0]


async def test_failed_opened_clicked_shapes(service: Service, client: httpx.AsyncClient) -> None:
    buckets(service, ("", "failed_temporary", D0, 2), ("", "espblock", D0, 1),
            ("", "failed_permanent", D0, 9), ("", "bounced", D0, 3),
            ("", "delayed_bounce", D0, 1), ("", "suppressed", D0, 6),
            ("", "suppress_bounce", D0, 1), ("", "suppress_unsubscribe", D0, 2),
            ("", "suppress_complaint", D0, 3), ("", "opened", D0, 9),
            ("", "unique_opened", D0, 4), ("", "clicked", D0, 6), ("", "unique_clicked", D0, 3),
            ("", "unsubscribed", D0, 1), ("", "complained", D0, 1))
    body = await get(client, URL, event=["failed", "opened", "clicked", "unsubscribed",
                                         "complained", "stored"],
                     start=D0, end=D0, resolution="day")
    assert body["stats"] == [{
        "time": date(D0),
        "failed": {
            "temporary": {"espblock": 1, "total": 2},
            "permanent": {"bounce": 2, "delayed-bounce": 1, "suppress-bounce": 1,
                          "suppress-unsubscribe": 2, "suppress-complaint": 3, "total": 9},
        },
        "opened": {"total": 9, "unique": 4},
        "clicked": {"total": 6, "unique": 3},
        "unsubscribed": {"total": 1},
        "complained": {"total": 1},
        "stored": {"total": 0},
    }]
    assert body["description"]
    # Only the events asked for; repeats and commas both work.
    body = await get(client, URL, event=["opened,clicked", "OPENED"], start=D0, end=D0)
    assert set(body["stats"][0]) == {"time", "opened", "clicked"}


async def test_human_counts(service: Service, client: httpx.AsyncClient) -> None:
    buckets(service, ("", "opened", D0, 10, 4), ("", "unique_opened", D0, 6, 3),
            ("", "clicked", D0, 5, 1), ("", "unique_clicked", D0, 2, 1),
            ("", "accepted", D0, 5, 5))
    params = {"event": ["accepted", "opened", "clicked"], "start": D0, "end": D0}
    everyone = (await get(client, URL, **params))["stats"][0]
    humans = (await get(client, URL, human="yes", **params))["stats"][0]
    assert everyone["opened"] == {"total": 10, "unique": 6}
    assert humans["opened"] == {"total": 4, "unique": 3}
    assert humans["clicked"] == {"total": 1, "unique": 1}
    assert humans["accepted"]["total"] == 5
    assert (await get(client, URL, human="no", **params))["stats"][0] == everyone


async def test_tag_stats(service: Service, client: httpx.AsyncClient) -> None:
    with service.runtime.db.write() as conn:
        touch_tags(conn, "example.com", ["promo"], D0 * 1_000_000)
    await client.put("/v3/example.com/tags/promo", data={"description": "Spring sale"})
    buckets(service, ("promo", "accepted", D0, 4), ("", "accepted", D0, 9),
            ("other", "accepted", D0, 1))
    body = await get(client, "/v3/example.com/tags/PROMO/stats", event="accepted", start=D0,
                     end=D0 + DAY)
    assert body["tag"] == "promo"
    assert totals(body, "accepted") == [4, 0]
    # A tag without any counters is all zeros, like a quiet day.
    body = await get(client, "/v3/example.com/tags/nothing/stats", event="accepted",
                     start=D0, end=D0)
    assert body["tag"] == "nothing" and body["description"] == ""
    assert totals(body, "accepted") == [0]


@pytest.mark.parametrize(("query", "named"), [
    ("", "event"),
    ("event=bogus", "event"),
    ("event=accepted&resolution=week", "resolution"),
    ("event=accepted&duration=7w", "duration"),
    ("event=accepted&duration=0d", "duration"),
    ("event=accepted&duration=-1d", "duration"),
    ("event=accepted&duration=999999d", "duration"),
    ("event=accepted&start=yesterday", "start"),
    ("event=accepted&end=1e9", "end"),
    ("event=accepted&start=1706572800&end=1706486400", "start"),
    ("event=accepted&resolution=hour&start=0&end=1706486400", "resolution"),
    ("event=accepted&human=maybe", "human"),
])
async def test_bad_parameters(client: httpx.AsyncClient, query: str, named: str) -> None:
    for path in (URL, "/v3/example.com/tags/promo/stats"):
        r = await client.get(f"{path}?{query}")
        assert r.status_code == 400, (path, query, r.text)
        assert named in r.json()["message"], r.json()


async def test_unknown_domain_and_bad_tags(client: httpx.AsyncClient) -> None:
    for path in ("/v3/nowhere.example/stats/total?event=accepted",
                 "/v3/nowhere.example/tags/promo/stats?event=accepted",
                 "/v3/nowhere.example/tags/promo/stats/aggregates/countries",
                 "/v3/nowhere.example/campaigns/promo",
                 "/v3/nowhere.example/campaigns/promo.csv",
                 "/v3/nowhere.example/campaigns"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.json() == {"message": "Domain not found: nowhere.example"}
    for tag in ("a%7Cb", "x" * 129, "%20%20", "caf%C3%A9"):
        for path in (f"/tags/{tag}/stats?event=accepted", f"/tags/{tag}/stats/aggregates/devices",
                     f"/campaigns/{tag}", f"/campaigns/{tag}.csv"):
            r = await client.get("/v3/example.com" + path)
            assert r.status_code == 400, (path, r.text)
            assert "Tag" in r.json()["message"]


# --- seeded: aggregates ----------------------------------------------------------------


async def test_aggregates(service: Service, client: httpx.AsyncClient) -> None:
    dims(service,
         ("promo", "opened", "country", "US", D0, 5, 2),
         ("promo", "opened", "country", "US", D0 + DAY, 1, 1),
         ("promo", "unique_opened", "country", "US", D0, 3, 1),
         ("promo", "clicked", "country", "US", D0, 2, 0),
         ("promo", "unique_clicked", "country", "US", D0, 1, 0),
         ("promo", "opened", "country", "DE", D0 + 2 * DAY, 1),
         ("promo", "opened", "device", "mobile", D0, 3, 1),
         ("promo", "opened", "os", "iOS", D0, 3),  # not an aggregate of Mailgun's
         ("promo", "accepted", "provider", "gmail.com", D0, 10),
         ("promo", "delivered", "provider", "gmail.com", D0, 9),
         ("promo", "opened", "provider", "gmail.com", D0, 4, 2),
         ("promo", "unsubscribed", "provider", "yahoo.com", D0, 1),
         ("other", "opened", "country", "FR", D0, 7),
         ("", "opened", "country", "US", D0, 100))
    base = "/v3/example.com/tags/promo/stats/aggregates"
    zero = {"clicked": 0, "complained": 0, "opened": 0, "unique_clicked": 0,
            "unique_opened": 0, "unsubscribed": 0}
    assert await get(client, f"{base}/countries") == {"tag": "promo", "countries": {
        "DE": {**zero, "opened": 1},
        "US": {**zero, "opened": 6, "unique_opened": 3, "clicked": 2, "unique_clicked": 1},
    }}
    assert (await get(client, f"{base}/countries", human="yes"))["countries"]["US"] == {
        **zero, "opened": 3, "unique_opened": 1}
    # start/end (our extension) select whole days.
    assert (await get(client, f"{base}/countries", start=D0 + DAY + 5,
                      end=D0 + 2 * DAY))["countries"] == {
        "DE": {**zero, "opened": 1}, "US": {**zero, "opened": 1}}
    assert await get(client, f"{base}/devices") == {"tag": "promo", "devices": {
        "desktop": zero, "mobile": {**zero, "opened": 3}, "tablet": zero, "unknown": zero}}
    assert await get(client, f"{base}/providers") == {"tag": "promo", "providers": {
        "gmail.com": {**zero, "accepted": 10, "delivered": 9, "opened": 4},
        "yahoo.com": {**zero, "accepted": 0, "delivered": 0, "unsubscribed": 1},
    }}
    assert (await get(client, "/v3/example.com/tags/nothing/stats/aggregates/countries")
            ) == {"tag": "nothing", "countries": {}}
    r = await client.get(f"{base}/countries?human=perhaps")
    assert r.status_code == 400 and "human" in r.json()["message"]
    r = await client.get(f"{base}/countries?start=soon")
    assert r.status_code == 400 and "start" in r.json()["message"]


# --- seeded: campaign reports ----------------------------------------------------------


def seed_campaign(service: Service) -> None:
    """promo: day 0 and day 2 active, day 1 quiet; all counts in whole hours."""
    buckets(service,
            ("promo", "accepted", D0 + 9 * H, 100), ("promo", "suppressed", D0 + 9 * H, 10),
            ("promo", "delivered", D0 + 9 * H, 70), ("promo", "delivered", D0 + 10 * H, 10),
            ("promo", "bounced", D0 + 10 * H, 5), ("promo", "failed_permanent", D0 + 9 * H, 15),
            ("promo", "perm:no-such-user", D0 + 10 * H, 4),
            ("promo", "perm:policy-block", D0 + 10 * H, 1),
            ("promo", "temp:mailbox-full", D0 + 2 * DAY, 3),
            ("other", "temp:mailbox-full", D0 + 2 * DAY, 7),  # another campaign
            ("promo", "opened", D0 + 10 * H, 30, 20), ("promo", "opened", D0 + 2 * DAY, 20, 5),
            ("promo", "unique_opened", D0 + 10 * H, 30, 20),
            ("promo", "unique_opened", D0 + 2 * DAY, 10, 2),
            ("promo", "clicked", D0 + 11 * H, 20, 8),
            ("promo", "unique_clicked", D0 + 11 * H, 10, 4),
            ("promo", "unsubscribed", D0 + 2 * DAY + H, 2),
            ("promo", "complained", D0 + 2 * DAY + H, 1),
            ("", "accepted", D0 + 9 * H, 1000), ("dud", "accepted", D0, 3),
            ("dud", "suppressed", D0, 3))
    dims(service,
         ("promo", "opened", "device", "mobile", D0, 20, 15),
         ("promo", "unique_opened", "device", "mobile", D0, 18, 14),
         ("promo", "opened", "device", "desktop", D0 + 2 * DAY, 10),
         ("promo", "clicked", "device", "desktop", D0, 4, 1),
         ("promo", "opened", "os", "iOS", D0, 20),
         ("promo", "opened", "client", "Apple Mail", D0, 20),
         ("promo", "opened", "country", "=cmd", D0, 1),  # a formula for spreadsheets
         ("promo", "accepted", "provider", "gmail.com", D0, 100))  # not in the report
    seed(service, link_stats, [
        {"domain": "example.com", "tag": "promo", "url": f"https://shop.example.net/{i:02d}",
         "clicks": 30 - i, "unique_clicks": i % 3, "human_clicks": i}
        for i in range(25)
    ] + [
        # Ties on clicks: more unique clicks first, then by URL.
        {"domain": "example.com", "tag": "promo", "url": "https://tie.example.net/b",
         "clicks": 30, "unique_clicks": 9, "human_clicks": 0},
        {"domain": "example.com", "tag": "promo", "url": "https://tie.example.net/a",
         "clicks": 30, "unique_clicks": 9, "human_clicks": 0},
        {"domain": "example.com", "tag": "other", "url": "https://elsewhere.example.net/",
         "clicks": 1000, "unique_clicks": 1000, "human_clicks": 1000},
    ])


async def test_campaign_report(service: Service, client: httpx.AsyncClient) -> None:
    seed_campaign(service)
    report = await get(client, "/v3/example.com/campaigns/Promo")
    rates = report.pop("rates")
    top = report.pop("top_links")
    assert report == {
        "tag": "promo", "start": date(D0), "end": date(D0 + 2 * DAY), "human": False,
        "accepted": 100, "suppressed": 10, "sent": 90, "delivered": 80, "bounced": 5,
        "opened": 40, "clicked": 10, "opens": 50, "clicks": 20, "unsubscribed": 2,
        "complained": 1,
        "devices": {
            "desktop": {"clicked": 4, "opened": 10, "unique_clicked": 0, "unique_opened": 0},
            "mobile": {"clicked": 0, "opened": 20, "unique_clicked": 0, "unique_opened": 18},
        },
        "os": {"iOS": {"clicked": 0, "opened": 20, "unique_clicked": 0, "unique_opened": 0}},
        "clients": {"Apple Mail": {"clicked": 0, "opened": 20, "unique_clicked": 0,
                                   "unique_opened": 0}},
        "countries": {"=cmd": {"clicked": 0, "opened": 1, "unique_clicked": 0,
                               "unique_opened": 0}},
        "failures": {
            "no-such-user": {"label": "No such user", "permanent": 4, "temporary": 0,
                             "total": 4},
            "mailbox-full": {"label": "Mailbox full", "permanent": 0, "temporary": 3,
                             "total": 3},
            "policy-block": {"label": "Policy or spam block", "permanent": 1, "temporary": 0,
                             "total": 1},
            "dns-error": {"label": "DNS or domain error", "permanent": 0, "temporary": 0,
                          "total": 0},
            "too-large": {"label": "Message too large", "permanent": 0, "temporary": 0,
                          "total": 0},
            "other": {"label": "Other", "permanent": 0, "temporary": 0, "total": 0},
        },
        "over_time": [
            {"time": date(D0), "delivered": 80, "opened": 30, "clicked": 10},
            {"time": date(D0 + DAY), "delivered": 0, "opened": 0, "clicked": 0},
            {"time": date(D0 + 2 * DAY), "delivered": 0, "opened": 10, "clicked": 0},
        ],
    }
    assert rates == {"delivered": 80 / 90, "bounced": 5 / 90, "opened": 40 / 80,
                     "clicked": 10 / 80, "click_to_open": 10 / 40, "unsubscribed": 2 / 80,
                     "complained": 1 / 80}
    assert len(top) == 20
    assert top[:3] == [
        {"url": "https://tie.example.net/a", "clicks": 30, "unique_clicks": 9},
        {"url": "https://tie.example.net/b", "clicks": 30, "unique_clicks": 9},
        {"url": "https://shop.example.net/00", "clicks": 30, "unique_clicks": 0},
    ]
    assert [link["clicks"] for link in top] == [30, 30, 30] + list(range(29, 12, -1))


async def test_campaign_report_range_and_human(service: Service,
                                               client: httpx.AsyncClient) -> None:
    seed_campaign(service)
    day2 = await get(client, "/v3/example.com/campaigns/promo", start=D0 + 2 * DAY + 7,
                     end="Thu, 01 Feb 2024 23:00:00 -0000")
    assert (day2["start"], day2["end"]) == (date(D0 + 2 * DAY), date(D0 + 2 * DAY))
    assert (day2["sent"], day2["delivered"], day2["opened"], day2["unsubscribed"]) \
        == (0, 0, 10, 2)
    assert day2["rates"]["opened"] == 0.0 and day2["rates"]["delivered"] == 0.0
    assert day2["devices"] == {"desktop": {"clicked": 0, "opened": 10, "unique_clicked": 0,
                                           "unique_opened": 0}}
    assert [d["time"] for d in day2["over_time"]] == [date(D0 + 2 * DAY)]
    # Only an end: from the campaign's first day.
    first = await get(client, "/v3/example.com/campaigns/promo", end=D0 + 12 * H)
    assert (first["start"], first["end"], first["delivered"]) == (date(D0), date(D0), 80)
    # Only a start after the last counter: that one (empty) day.
    late = await get(client, "/v3/example.com/campaigns/promo", start=D0 + 9 * DAY)
    assert (late["start"], late["end"], late["sent"]) == (date(D0 + 9 * DAY),) * 2 + (0,)

    human = await get(client, "/v3/example.com/campaigns/promo", human="yes")
    assert human["human"] is True
    assert (human["opened"], human["clicked"], human["opens"], human["clicks"]) \
        == (22, 4, 25, 8)
    assert human["delivered"] == 80 and human["sent"] == 90
    assert human["rates"]["opened"] == 22 / 80
    assert human["devices"]["mobile"]["opened"] == 15
    assert human["devices"]["desktop"]["clicked"] == 1
    assert human["top_links"][0] == {"url": "https://shop.example.net/24", "clicks": 24,
                                     "unique_clicks": 0}
    assert [d["opened"] for d in human["over_time"]] == [20, 0, 2]


async def test_campaign_zero_denominators_and_missing(service: Service,
                                                      client: httpx.AsyncClient) -> None:
    seed_campaign(service)
    dud = await get(client, "/v3/example.com/campaigns/dud")
    assert (dud["accepted"], dud["sent"], dud["delivered"]) == (3, 0, 0)
    assert set(dud["rates"].values()) == {0.0}
    assert dud["top_links"] == [] and dud["devices"] == {} and dud["countries"] == {}
    for path in ("/v3/example.com/campaigns/never", "/v3/example.com/campaigns/never.csv"):
        r = await client.get(path)
        assert r.status_code == 404
        assert r.json() == {"message": "campaign not found: never"}
    r = await client.get("/v3/example.com/campaigns/promo?start=1706745600&end=1706572800")
    assert r.status_code == 400 and "start" in r.json()["message"]
    r = await client.get("/v3/example.com/campaigns/promo?human=1x")
    assert r.status_code == 400 and "human" in r.json()["message"]


async def test_campaign_csv(service: Service, client: httpx.AsyncClient) -> None:
    seed_campaign(service)
    r = await client.get("/v3/example.com/campaigns/promo.csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="campaign-promo.csv"'
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["section", "item", "metric", "value"]
    assert not [v for row in rows for v in row if v.startswith(spreadsheet.FORMULA_STARTS)]
    report = await get(client, "/v3/example.com/campaigns/promo")
    sections = [row[0] for row in rows[1:]]
    # In blocks, in this order.
    order = list(dict.fromkeys(sections))
    assert order == ["campaign", "summary", "rate", "link", "devices", "os", "clients",
                     "countries", "failures", "day"]
    assert sections == sorted(sections, key=order.index)
    summary = {row[2]: int(row[3]) for row in rows if row[0] == "summary"}
    assert summary == {k: report[k] for k in summary}
    assert list(summary) == ["accepted", "suppressed", "sent", "delivered", "bounced",
                             "opened", "clicked", "opens", "clicks", "unsubscribed",
                             "complained"]
    rates = {row[2]: float(row[3]) for row in rows if row[0] == "rate"}
    assert rates == pytest.approx(report["rates"], abs=1e-6)
    links = [row[1:] for row in rows if row[0] == "link"]
    assert links[:4] == [["https://tie.example.net/a", "clicks", "30"],
                         ["https://tie.example.net/a", "unique_clicks", "9"],
                         ["https://tie.example.net/b", "clicks", "30"],
                         ["https://tie.example.net/b", "unique_clicks", "9"]]
    assert len(links) == 40
    assert ["devices", "mobile", "unique_opened", "18"] in rows
    assert ["countries", "'=cmd", "opened", "1"] in rows  # not a formula
    assert [row[1:] for row in rows if row[0] == "day" and row[2] == "opened"] == [
        ["2024-01-30", "opened", "30"], ["2024-01-31", "opened", "0"],
        ["2024-02-01", "opened", "10"]]
    assert rows[1:4] == [["campaign", "promo", "start", "2024-01-30"],
                         ["campaign", "promo", "end", "2024-02-01"],
                         ["campaign", "promo", "human", "no"]]
    human = await client.get("/v3/example.com/campaigns/PROMO.csv?human=yes&start=" + str(D0))
    assert ["summary", "", "opened", "22"] in list(csv.reader(io.StringIO(human.text)))


async def test_campaign_list(service: Service, client: httpx.AsyncClient) -> None:
    seed_campaign(service)
    with service.runtime.db.write() as conn:
        touch_tags(conn, "example.com", ["promo", "dud", "quiet"], D0 * 1_000_000)
    buckets(service, ("promo", "accepted", D0 + 40 * DAY, 5))
    body = await get(client, "/v3/example.com/campaigns")
    assert [(i["tag"], i["sent"], i["delivered"], i["opened"], i["clicked"])
            for i in body["items"]] == [("dud", 0, 0, 0, 0), ("promo", 95, 80, 40, 10),
                                        ("quiet", 0, 0, 0, 0)]
    assert body["items"][0]["first-seen"] == date(D0)
    ranged = await get(client, "/v3/example.com/campaigns", start=D0 + 9 * H,
                       end=D0 + 10 * H + 1)
    assert ranged["items"][1]["sent"] == 90 and ranged["items"][1]["clicked"] == 0
    human = await get(client, "/v3/example.com/campaigns", human="yes")
    assert human["items"][1]["opened"] == 22
    page = await get(client, "/v3/example.com/campaigns", limit=2, human="yes")
    assert [i["tag"] for i in page["items"]] == ["dud", "promo"]
    assert "human=yes" in page["paging"]["next"]
    nxt = await get(client, page["paging"]["next"].removeprefix("http://testserver"))
    assert [(i["tag"], i["opened"]) for i in nxt["items"]] == [("quiet", 0)]
    for query, named in (("limit=0", "limit"), ("page=sideways", "page"),
                         ("page=next", "tag"), ("human=2", "human"), ("end=x", "end")):
        r = await client.get(f"/v3/example.com/campaigns?{query}")
        assert r.status_code == 400 and named in r.json()["message"], query


# --- end to end: stats agree with the Events API ---------------------------------------

HTML = ('<html><body><a href="https://shop.example.net/a">a</a>'
        '<a href="https://shop.example.net/b">b</a>'
        '<a href="https://shop.example.net/c">c</a></body></html>')
THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Thunderbird/115.3.1"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Mobile/15E148")
SCRIPT = "python-requests/2.31"


async def send_campaign(service: Service, relay: SmtpRelay) -> dict[str, tuple[list[str], str]]:
    """Four recipients in three messages; recipient -> (links, pixel)."""
    await service.send(to=["alice@example.org", "bob@example.net"], subject="1", html=HTML,
                       **{"o:tag": "Spring"})
    two_tags: dict[str, Any] = {"o:tag": ["spring", "vip"]}
    await service.send(to="carol@example.org", subject="2", html=HTML, **two_tags)
    await service.send(to="dave@example.com", subject="3", html=HTML)
    received = await relay.wait_for(4)
    await service.wait_events(4, event="delivered")
    found = {}
    for message in received:
        html = message.part("text/html")
        links = re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)"', html)
        (pixel,) = re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', html)
        (rcpt,) = message.recipients
        found[rcpt] = (links, pixel)
    return found


async def track(service: Service, mails: dict[str, tuple[list[str], str]]) -> None:
    alice, bob, carol, dave = (mails[a] for a in ("alice@example.org", "bob@example.net",
                                                  "carol@example.org", "dave@example.com"))
    for _ in range(3):
        await service.hit(alice[1], headers={"user-agent": THUNDERBIRD})
    for link in (alice[0][0], alice[0][0], alice[0][1]):
        assert (await service.hit(link, headers={"user-agent": THUNDERBIRD})).status_code == 302
    await service.hit(bob[0][2], headers={"user-agent": IPHONE})  # also his first open
    await service.hit(bob[1], headers={"user-agent": IPHONE})
    await service.hit(carol[1], headers={"user-agent": SCRIPT})
    await service.hit(carol[1], headers={"user-agent": IPHONE})
    await service.hit(dave[1], headers={"user-agent": THUNDERBIRD})
    await service.hit(dave[0][0], headers={"user-agent": THUNDERBIRD})


def unique(events: list[dict[str, Any]]) -> int:
    return len({(e["message"]["headers"]["message-id"], e["recipient"]) for e in events})


def is_human(event: dict[str, Any]) -> bool:
    # Gmail's image proxy fetches when a person opens: a human open (track/bots.py).
    return event.get("client-info", {}).get("bot", "") in ("", "gmail")


def summed(body: dict[str, Any], event: str, key: str = "total") -> int:
    return sum(totals(body, event, key))


async def test_e2e_totals_match_events(service: Service, smtp_relay: SmtpRelay,
                                       client: httpx.AsyncClient) -> None:
    await track(service, await send_campaign(service, smtp_relay))
    names = ["accepted", "delivered", "failed", "opened", "clicked"]
    # Two buckets, in case the test runs across the hour.
    for path, tag in ((URL, None), ("/v3/example.com/tags/spring/stats", "spring"),
                      ("/v3/example.com/tags/vip/stats", "vip")):
        body = await get(client, path, event=names, resolution="hour", duration="2h")
        filters = {"tags": tag} if tag else {}
        for name in ("accepted", "delivered", "opened", "clicked"):
            events = await service.events(event=name, **filters)
            assert summed(body, name) == len(events), (tag, name)
            if name in ("opened", "clicked"):
                assert summed(body, name, "unique") == unique(events), (tag, name)
        assert sum(i["failed"]["permanent"]["total"] for i in body["stats"]) == 0
    everything = await get(client, URL, event="opened", resolution="hour", duration="2h")
    assert summed(everything, "opened") == 3 + 2 + 2 + 1  # bob's click implied an open
    assert summed(everything, "opened", "unique") == 4
    days = await get(client, URL, event=["accepted", "clicked"], duration="2d")
    assert summed(days, "accepted") == 4 and summed(days, "clicked") == 5
    assert summed(days, "clicked", "unique") == 3


async def test_e2e_human_opens_match_bot_verdicts(service: Service, smtp_relay: SmtpRelay,
                                                  client: httpx.AsyncClient) -> None:
    mails = await send_campaign(service, smtp_relay)
    _, alice = mails["alice@example.org"]
    _, bob = mails["bob@example.net"]
    for _ in range(2):
        await service.hit(alice, headers={"user-agent": THUNDERBIRD})
    for _ in range(3):
        await service.hit(bob, headers={"user-agent": SCRIPT})
    opened = await service.events(event="opened")
    humans = [e for e in opened if is_human(e)]
    body = await get(client, URL, event="opened", resolution="hour", duration="2h",
                     human="yes")
    assert summed(body, "opened") == len(humans)
    assert summed(body, "opened", "unique") == unique(humans)
    campaign = await get(client, "/v3/example.com/campaigns/spring", human="yes")
    assert (campaign["opens"], campaign["opened"]) == (len(humans), unique(humans))


async def test_e2e_campaign_matches_events(service: Service, smtp_relay: SmtpRelay,
                                           client: httpx.AsyncClient) -> None:
    await track(service, await send_campaign(service, smtp_relay))
    report = await get(client, "/v3/example.com/campaigns/spring")
    count = {name: await service.events(event=name, tags="spring")
             for name in ("accepted", "delivered", "opened", "clicked")}
    assert report["sent"] == report["accepted"] == len(count["accepted"]) == 3
    assert report["delivered"] == len(count["delivered"]) == 3
    assert report["opens"] == len(count["opened"])
    assert report["opened"] == unique(count["opened"]) == 3
    assert report["clicks"] == len(count["clicked"]) == 4
    assert report["clicked"] == unique(count["clicked"]) == 2
    assert report["rates"]["opened"] == 1.0 and report["rates"]["clicked"] == 2 / 3
    assert sum(d["delivered"] for d in report["over_time"]) == 3
    listed = await get(client, "/v3/example.com/campaigns")
    assert {i["tag"]: (i["sent"], i["opened"], i["clicked"]) for i in listed["items"]} == {
        "spring": (3, 3, 2), "vip": (1, 1, 0)}
    csv_rows = list(csv.reader(io.StringIO(
        (await client.get("/v3/example.com/campaigns/spring.csv")).text)))
    assert ["summary", "", "clicks", "4"] in csv_rows


async def test_e2e_providers_match_events(service: Service, smtp_relay: SmtpRelay,
                                          client: httpx.AsyncClient) -> None:
    await track(service, await send_campaign(service, smtp_relay))
    body = await get(client, "/v3/example.com/tags/spring/stats/aggregates/providers")
    expected: dict[str, Counter[str]] = {}
    for name in ("accepted", "delivered", "opened", "clicked"):
        for event in await service.events(event=name, tags="spring"):
            expected.setdefault(event["recipient-domain"], Counter())[name] += 1
    assert {p: {k: v for k, v in c.items() if k in ("accepted", "delivered", "opened",
                                                    "clicked")}
            for p, c in body["providers"].items()} == {
        p: {k: c[k] for k in ("accepted", "delivered", "opened", "clicked")}
        for p, c in expected.items()}
    assert body["providers"]["example.org"]["unique_opened"] == 2


async def test_e2e_devices_and_countries_match_events(service: Service, smtp_relay: SmtpRelay,
                                                      client: httpx.AsyncClient) -> None:
    """Needs the recorder to write the device/os/client/country dimensions of hits."""
    await track(service, await send_campaign(service, smtp_relay))
    opened = await service.events(event="opened", tags="spring")
    report = await get(client, "/v3/example.com/campaigns/spring")
    by_device = Counter(e.get("client-info", {}).get("device-type", "unknown") for e in opened)
    assert {d: c["opened"] for d, c in report["devices"].items()} == dict(by_device)
    assert sum(c["opened"] for c in report["os"].values()) == len(opened)
    assert sum(c["opened"] for c in report["clients"].values()) == len(opened)
    # Loopback has no country: every hit is under one value, whatever the recorder names it.
    assert sum(c["opened"] for c in report["countries"].values()) == len(opened)
    devices = await get(client, "/v3/example.com/tags/spring/stats/aggregates/devices")
    assert sum(c["opened"] for c in devices["devices"].values()) == len(opened)


async def test_e2e_top_links_match_clicks(service: Service, smtp_relay: SmtpRelay,
                                          client: httpx.AsyncClient) -> None:
    """Needs the recorder to write link_stats."""
    await track(service, await send_campaign(service, smtp_relay))
    clicked = await service.events(event="clicked", tags="spring")
    clicks = Counter(e["url"] for e in clicked)
    uniques = Counter(url for url, _ in {(e["url"], e["recipient"]) for e in clicked})
    report = await get(client, "/v3/example.com/campaigns/spring")
    assert report["top_links"] == [
        {"url": url, "clicks": n, "unique_clicks": uniques[url]}
        for url, n in sorted(clicks.items(), key=lambda kv: (-kv[1], -uniques[kv[0]], kv[0]))]


# --- failures by Mailgun's keys and by category -----------------------------------------


async def test_e2e_failures_by_mailgun_key_and_category(service: Service, smtp_relay: SmtpRelay,
                                                        client: httpx.AsyncClient) -> None:
    answers = {"nouser@example.org": "550 5.1.1 No such user",
               "big@example.org": "552 5.3.4 Message too big for system",
               "full@example.org": "452 4.2.2 Mailbox full",
               "slow@example.org": "421 4.7.0 Rate limited, try again later"}
    smtp_relay.reply = answers.get
    with service.runtime.db.write() as conn:
        for kind, address, tag in ((SuppressionKind.BOUNCE, "gone@example.org", ""),
                                   (SuppressionKind.UNSUBSCRIBE, "left@example.org", "*"),
                                   (SuppressionKind.COMPLAINT, "angry@example.org", "")):
            suppressions.add(conn, "example.com", kind, address, now_us(), tag=tag)
    await service.send(to=[*answers, "gone@example.org", "left@example.org",
                           "angry@example.org", "fine@example.org"],
                       subject="s", text="t", **{"o:tag": "spring"})
    failed = await service.wait_events(7, event="failed")
    assert len(failed) == 7
    await service.wait_events(1, event="delivered")
    for path in (URL, "/v3/example.com/tags/spring/stats"):
        body = await get(client, path, event="failed", resolution="hour", duration="2h")
        found = {severity: {key: sum(i["failed"][severity][key] for i in body["stats"])
                            for key in body["stats"][0]["failed"][severity]}
                 for severity in ("permanent", "temporary")}
        # A 452 mailbox full is a temporary failure, not an ESP block; the rate limit is.
        assert found == {
            "permanent": {"bounce": 2, "delayed-bounce": 0, "suppress-bounce": 1,
                          "suppress-unsubscribe": 1, "suppress-complaint": 1, "total": 5},
            "temporary": {"espblock": 1, "total": 2},
        }, path
        # Stats agree with the events they count.
        events = await service.events(event="failed", severity="permanent",
                                      **({"tags": "spring"} if "tags" in path else {}))
        assert found["permanent"]["total"] == len(events)
    for path in ("/v3/example.com/stats/aggregates/failures",
                 "/v3/example.com/tags/spring/stats/aggregates/failures"):
        body = await get(client, path)
        assert {k: (v["permanent"], v["temporary"]) for k, v in body["failures"].items()} == {
            "no-such-user": (1, 0), "mailbox-full": (0, 1), "policy-block": (0, 1),
            "dns-error": (0, 0), "too-large": (1, 0), "other": (0, 0)}
        assert body["failures"]["policy-block"]["label"] == "Policy or spam block"
    report = await get(client, "/v3/example.com/campaigns/spring")
    assert report["failures"]["too-large"] == {"label": "Message too large", "permanent": 1,
                                               "temporary": 0, "total": 1}
    later = await get(client, "/v3/example.com/stats/aggregates/failures",
                      start=int(time.time()) + 7200)
    assert all(v["total"] == 0 for v in later["failures"].values())


async def test_failures_aggregate_bad_parameters(client: httpx.AsyncClient) -> None:
    r = await client.get("/v3/example.com/stats/aggregates/failures?start=soon")
    assert r.status_code == 400 and "start" in r.json()["message"]
    r = await client.get("/v3/nowhere.example/stats/aggregates/failures")
    assert r.status_code == 404

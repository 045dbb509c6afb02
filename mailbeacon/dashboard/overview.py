"""The domain list and each domain's overview: counts over 24 h / 7 d / 30 d and a chart.

Everything comes from the hourly `stats_buckets` of tag "" (all messages): one query per
page, whatever the number of events.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.domains import domain as dom
from mailbeacon.events.failures import FailureCategory, category_counter, failure_rows
from mailbeacon.storage.schema import stats_buckets

from .charts import line_chart, svg_response
from .web import PREFIX, action, dashboard, get_domain, human_param, in_thread, redirect, render

HOUR = 3600
# Window name -> hours, and how the chart of that window groups hours into points.
WINDOWS = {"24h": 24, "7d": 7 * 24, "30d": 30 * 24}
CHART_STEP_HOURS = {"24h": 1, "7d": 6, "30d": 24}
# (label, counter, counter of all hits incl. repeats or None): what the overview shows.
METRICS = (
    ("Sent", "accepted", None),
    ("Delivered", "delivered", None),
    ("Opened", "unique_opened", "opened"),
    ("Clicked", "unique_clicked", "clicked"),
    ("Bounced", "bounced", None),
    ("Unsubscribed", "unsubscribed", None),
    ("Complained", "complained", None),
)
CHART_LINES = (("Delivered", "delivered"), ("Opened", "unique_opened"),
               ("Clicked", "unique_clicked"), ("Bounced", "bounced"))
COUNTERS = sorted({c for _, a, b in METRICS for c in (a, b) if c}
                  | {category_counter(p, c) for p in (True, False) for c in FailureCategory})


@dataclass(frozen=True)
class Chart:
    labels: list[str]
    series: dict[str, list[int]]
    label_every: int


def hourly_counts(conn: Connection, domain: str, since_hour: int, human: bool,
                  counters: tuple[str, ...] | list[str] = COUNTERS,
                  ) -> dict[int, dict[str, int]]:
    """{hour: {counter: n}} for the domain's hours from `since_hour` on."""
    s = stats_buckets
    value = s.c.human_count if human else s.c.count
    rows = conn.execute(
        select(s.c.hour, s.c.event, func.sum(value).label("n"))
        .where(s.c.domain == domain, s.c.tag == "", s.c.event.in_(list(counters)),
               s.c.hour >= since_hour)
        .group_by(s.c.hour, s.c.event))
    found: dict[int, dict[str, int]] = defaultdict(dict)
    for row in rows:
        found[int(row.hour)][row.event] = int(row.n or 0)
    return found


def window_totals(counts: dict[int, dict[str, int]], now_hour: int) -> dict[str, dict[str, int]]:
    """{window: {counter: n}} for each of `WINDOWS`, the current hour included."""
    totals: dict[str, dict[str, int]] = {w: defaultdict(int) for w in WINDOWS}
    for hour, by_counter in counts.items():
        age = (now_hour - hour) // HOUR
        for window, hours in WINDOWS.items():
            if 0 <= age < hours:
                for counter, n in by_counter.items():
                    totals[window][counter] += n
    return totals


def chart_data(counts: dict[int, dict[str, int]], now_hour: int, window: str) -> Chart:
    step = CHART_STEP_HOURS[window]
    points = WINDOWS[window] // step
    # The last point is the block holding the current hour (whole UTC days when a point is
    # a day); the others are the `points - 1` blocks before it.
    block = step * HOUR
    start = now_hour - now_hour % block - (points - 1) * block
    series = {name: [0] * points for name, _ in CHART_LINES}
    labels = []
    for i in range(points):
        moment = datetime.fromtimestamp(start + i * step * HOUR, UTC)
        labels.append(moment.strftime("%H:%M") if step == 1 else
                      moment.strftime("%b %d %H:%M") if step < 24 else moment.strftime("%b %d"))
    for hour, by_counter in counts.items():
        index = (hour - start) // (step * HOUR)
        if 0 <= index < points:
            for name, counter in CHART_LINES:
                series[name][index] += by_counter.get(counter, 0)
    return Chart(labels, series, {"24h": 3, "7d": 4, "30d": 5}[window])


def _now_hour() -> int:
    now = int(time.time())
    return now - now % HOUR


def _window(request: Request) -> str:
    window = request.query_params.get("range", "7d")
    return window if window in WINDOWS else "7d"


def index(request: Request) -> Response:
    db = dashboard(request).runtime.db
    _, found = dom.list_domains(db, limit=1000)
    since = _now_hour() - 23 * HOUR
    with db.read() as conn:
        sent = {row[0]: row[1] for row in conn.execute(
            select(stats_buckets.c.domain, func.sum(stats_buckets.c.count))
            .where(stats_buckets.c.tag == "", stats_buckets.c.event == "accepted",
                   stats_buckets.c.hour >= since)
            .group_by(stats_buckets.c.domain))}
    return render(request, "index.html", domains=found,
                  sent={k: int(v or 0) for k, v in sent.items()})


@action()
async def add_domain(request: Request, form: FormData) -> Response:
    name = str(form.get("name", "")).strip()
    tracking_url = str(form.get("tracking_url", "")).strip() or None
    domain = await in_thread(dom.add_domain, dashboard(request).runtime.db, name, tracking_url)
    return redirect(request, f"{PREFIX}/{domain.name}/", f"Added {domain.name}.")


def overview(request: Request) -> Response:
    domain = get_domain(request)
    human = human_param(request)
    window = _window(request)
    now_hour = _now_hour()
    with dashboard(request).runtime.db.read() as conn:
        counts = hourly_counts(conn, domain.name, now_hour - (WINDOWS["30d"] - 1) * HOUR,
                               human)
    totals = window_totals(counts, now_hour)
    chart = chart_data(counts, now_hour, window)
    rates = {}
    for name, t in totals.items():
        delivered = t["delivered"]
        rates[name] = {
            "delivered": t["delivered"] / t["accepted"] if t["accepted"] else None,
            "opened": t["unique_opened"] / delivered if delivered else None,
            "clicked": t["unique_clicked"] / delivered if delivered else None,
            "bounced": t["bounced"] / t["accepted"] if t["accepted"] else None,
        }
    return render(request, "overview.html", domain=domain, nav="overview", human=human,
                  window=window, windows=list(WINDOWS), metrics=METRICS, totals=totals,
                  rates=rates, chart=chart, failures=failure_rows({
                      c: (totals[window][category_counter(True, c)],
                          totals[window][category_counter(False, c)])
                      for c in FailureCategory}))


def overview_chart(request: Request) -> Response:
    domain = get_domain(request)
    window = _window(request)
    now_hour = _now_hour()
    with dashboard(request).runtime.db.read() as conn:
        counts = hourly_counts(conn, domain.name, now_hour - (WINDOWS[window] + 24) * HOUR,
                               human_param(request), [c for _, c in CHART_LINES])
    chart = chart_data(counts, now_hour, window)
    return svg_response(line_chart(chart.labels, chart.series, label_every=chart.label_every))


routes = [
    Route("/domains", add_domain, methods=["POST"]),
    Route("/{domain}/", overview, methods=["GET"]),
    Route("/{domain}/overview.svg", overview_chart, methods=["GET"]),
]

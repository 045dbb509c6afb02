"""Stats queries: Mailgun-shaped totals, tag aggregates and campaign reports (DESIGN 9, 11).

Everything here reads the rollups written with the events (events/writer.py), never the
events themselves, so a query costs the same with 10 thousand or 10 million events:

- `stats_buckets`: hourly counters per domain x tag ("" = all messages) x counter. Day
  buckets are summed in SQL; month buckets are day buckets summed in Python (at most 31
  rows a month, and calendar months need no SQL date functions on either backend).
- `dimension_stats`: daily counters per dimension value (country, device, os, client,
  provider), for aggregates and campaign breakdowns.
- `link_stats`: clicks per URL per tag, all time (it has no time column).

Counters (`stats_buckets.event`): accepted, delivered, opened, unique_opened, clicked,
unique_clicked, unsubscribed, complained, and those of failed events (mailbeacon.events.failures:
failed_temporary, failed_permanent = bounced + suppressed, delayed_bounce, suppress_*,
espblock, and failures by category). `human=True` reads `human_count`, which equals
`count` except for hits judged to be bots (DESIGN 10).

Mailgun's `failed` bucket, mapped from those counters::

    {"temporary": {"espblock": espblock, "total": failed_temporary},
     "permanent": {"bounce": bounced - delayed_bounce, "delayed-bounce": delayed_bounce,
                   "suppress-bounce": suppress_bounce,
                   "suppress-unsubscribe": suppress_unsubscribe,
                   "suppress-complaint": suppress_complaint, "total": failed_permanent}}

`bounce` is refused by the receiving server in the SMTP dialogue (or given up after
retrying), `delayed-bounce` returned after it had accepted the message. Failures by
category (`failure_breakdown`, our extension) count `perm:<category>` and
`temp:<category>` over a period.

Campaign report (a campaign is a tag), with every rate 0.0 when its denominator is 0:

    sent = accepted - suppressed          (recipients we tried to deliver to)
    rates.delivered    = delivered / sent
    rates.bounced      = bounced / sent
    rates.opened       = opened (unique) / delivered
    rates.clicked      = clicked (unique) / delivered
    rates.click_to_open = clicked (unique) / opened (unique)
    rates.unsubscribed = unsubscribed / delivered
    rates.complained   = complained / delivered

Rates are not capped at 1: a window can hold opens of messages delivered before it.

Aggregates and breakdowns read `dimension_stats`, where the unique counters are rows like
any other: `unique_opened` / `unique_clicked` of a value count the first open / click of a
message x recipient, under the country, device, ... of that first hit. Non-hit events
(accepted, delivered, complained) carry only the `provider` dimension, so they show up in
`providers` alone. Top links are all time whatever the period: `link_stats` has no time.
"""

from __future__ import annotations

import calendar
import io
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, func, select

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.events.failures import (
    BOUNCED,
    DELAYED_BOUNCE,
    ESPBLOCK,
    FAILED_PERMANENT,
    FAILED_TEMPORARY,
    LABELS,
    SUPPRESS_COUNTERS,
    SUPPRESSED,
    FailureCategory,
    category_counter,
)
from mailbeacon.events.vocabulary import UNIQUE_CLICKED, UNIQUE_OPENED
from mailbeacon.model import spreadsheet
from mailbeacon.model.clock import parse_moment, rfc2822
from mailbeacon.storage.schema import dimension_stats, link_stats, stats_buckets, tags

Resolution = Literal["hour", "day", "month"]
RESOLUTIONS: tuple[Resolution, ...] = ("hour", "day", "month")
# Mailgun defaults to 7 days back; per resolution, so that each default is a useful chart.
DEFAULT_DURATION: dict[Resolution, str] = {"hour": "24h", "day": "7d", "month": "12m"}
MAX_BUCKETS = 10_000  # a zero-filled answer is built in memory: keep it bounded
TOP_LINKS = 20

HOUR = 3600
DAY = 86400

ACCEPTED = "accepted"
DELIVERED = "delivered"
OPENED = "opened"
CLICKED = "clicked"
UNSUBSCRIBED = "unsubscribed"
COMPLAINED = "complained"
UNMATCHED_REPORT = "unmatched-report"

# Mailgun's stats event names -> the counters each one is built from.
EVENTS: dict[str, tuple[str, ...]] = {
    "accepted": (ACCEPTED,),
    "delivered": (DELIVERED,),
    "failed": (FAILED_TEMPORARY, FAILED_PERMANENT, BOUNCED, DELAYED_BOUNCE, ESPBLOCK,
               *SUPPRESS_COUNTERS.values()),
    "opened": (OPENED, UNIQUE_OPENED),
    "clicked": (CLICKED, UNIQUE_CLICKED),
    "unsubscribed": (UNSUBSCRIBED,),
    "complained": (COMPLAINED,),
    "stored": (),  # we store no inbound messages for retrieval: always 0
    # Extension: reports to the bounce domain that tied to no delivery (changed nothing).
    UNMATCHED_REPORT: (UNMATCHED_REPORT,),
}

# /tags/{tag}/stats/aggregates/{kind}: the dimension and the counters of each, as Mailgun's.
_HIT_COUNTERS = (CLICKED, COMPLAINED, OPENED, UNIQUE_CLICKED, UNIQUE_OPENED, UNSUBSCRIBED)
AGGREGATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "countries": ("country", _HIT_COUNTERS),
    "devices": ("device", _HIT_COUNTERS),
    "providers": ("provider", (ACCEPTED, DELIVERED, *_HIT_COUNTERS)),
}
# Mailgun always lists these four device types, even at 0.
DEVICE_TYPES = ("desktop", "mobile", "tablet", "unknown")

# Campaign report breakdowns: JSON key -> dimension.
BREAKDOWNS = {"devices": "device", "os": "os", "clients": "client", "countries": "country"}
_BREAKDOWN_COUNTERS = (OPENED, UNIQUE_OPENED, CLICKED, UNIQUE_CLICKED)
_REPORT_COUNTERS = (ACCEPTED, SUPPRESSED, DELIVERED, BOUNCED, OPENED, UNIQUE_OPENED,
                    CLICKED, UNIQUE_CLICKED, UNSUBSCRIBED, COMPLAINED)
_LIST_COUNTERS = (ACCEPTED, SUPPRESSED, DELIVERED, UNIQUE_OPENED, UNIQUE_CLICKED)

_DURATION = re.compile(r"([1-9][0-9]{0,5})([hdm])")
_YES = ("yes", "true", "1")
_NO = ("no", "false", "0")


# --- periods ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Consecutive UTC buckets of one resolution, `first` to `last` inclusive (the epoch
    seconds at which each bucket starts)."""

    resolution: Resolution
    first: int
    last: int

    @property
    def upper(self) -> int:
        """The first second after the period (exclusive bound for queries)."""
        return next_bucket(self.last, self.resolution)

    def buckets(self) -> list[int]:
        found = []
        current = self.first
        while current <= self.last:
            found.append(current)
            current = next_bucket(current, self.resolution)
        return found


def floor_bucket(ts: int, resolution: Resolution) -> int:
    """The start of the bucket holding `ts` (epoch seconds, UTC)."""
    if resolution == "hour":
        return ts - ts % HOUR
    if resolution == "day":
        return ts - ts % DAY
    moment = datetime.fromtimestamp(ts, UTC)
    return calendar.timegm((moment.year, moment.month, 1, 0, 0, 0))


def next_bucket(start: int, resolution: Resolution) -> int:
    """The start of the bucket after the one starting at `start`."""
    if resolution == "hour":
        return start + HOUR
    if resolution == "day":
        return start + DAY
    moment = datetime.fromtimestamp(start, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def count_buckets(first: int, last: int, resolution: Resolution) -> int:
    if resolution == "month":
        a, b = datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC)
        return (b.year - a.year) * 12 + b.month - a.month + 1
    step = HOUR if resolution == "hour" else DAY
    return (last - first) // step + 1


def parse_period(params: Mapping[str, str], *, now: int | None = None,
                 default_resolution: Resolution = "day") -> Period:
    """The buckets asked for by Mailgun's `start`, `end`, `resolution` and `duration`.

    `start`/`end` are RFC 2822 dates or epoch seconds; `end` defaults to now. `duration`
    ("24h", "7d", "2m" for months) overrides `start`: the period is that long and ends
    with the bucket holding `end` ("7d" at resolution day is 7 buckets, today included).
    Without either, `DEFAULT_DURATION` of the resolution applies. Bounds are widened to
    whole buckets. `BadRequest` names the faulty parameter.
    """
    values = {k: v.strip() for k, v in params.items() if v.strip()}
    resolution = parse_resolution(values.get("resolution"), default_resolution)
    end = _seconds(values, "end")
    if end is None:
        end = int(time.time()) if now is None else now
    last = floor_bucket(end, resolution)
    duration = values.get("duration")
    start = _seconds(values, "start")
    if duration is not None or start is None:
        start = _back(next_bucket(last, resolution), duration or DEFAULT_DURATION[resolution])
    if start > end:
        raise BadRequest("'start' must not be after 'end'")
    return checked_period(floor_bucket(start, resolution), last, resolution)


def checked_period(first: int, last: int, resolution: Resolution) -> Period:
    """A period, or BadRequest when it holds more than MAX_BUCKETS buckets."""
    count = count_buckets(first, last, resolution)
    if count > MAX_BUCKETS:
        raise BadRequest(f"the period holds {count} {resolution} buckets, at most "
                         f"{MAX_BUCKETS}: shorten 'start'/'end'/'duration' or use a coarser "
                         f"'resolution'")
    return Period(resolution, first, last)


def parse_resolution(value: str | None, default: Resolution = "day") -> Resolution:
    if value is None:
        return default
    for resolution in RESOLUTIONS:
        if value.lower() == resolution:
            return resolution
    raise BadRequest(f"'resolution' must be hour, day or month, got {value!r}")


def parse_flag(value: str | None, name: str) -> bool:
    """A yes/no parameter (absent = no)."""
    if value is None or not value.strip():
        return False
    lowered = value.strip().lower()
    if lowered in _YES:
        return True
    if lowered in _NO:
        return False
    raise BadRequest(f"'{name}' must be yes or no, got {value!r}")


def parse_events(values: Sequence[str]) -> list[str]:
    """Mailgun's repeatable, required `event` parameter (commas also separate names)."""
    names = [n.strip().lower() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise BadRequest(f"'event' parameter is missing: one or more of {', '.join(EVENTS)}")
    for name in names:
        if name not in EVENTS:
            raise BadRequest(f"'event' must be one of {', '.join(EVENTS)}, got {name!r}")
    return list(dict.fromkeys(names))


def parse_bounds(params: Mapping[str, str]) -> tuple[int | None, int | None]:
    """Optional `start` and `end` (epoch seconds), for reports that default to all time."""
    values = {k: v.strip() for k, v in params.items() if v.strip()}
    start, end = _seconds(values, "start"), _seconds(values, "end")
    if start is not None and end is not None and start > end:
        raise BadRequest("'start' must not be after 'end'")
    return start, end


def _seconds(values: Mapping[str, str], name: str) -> int | None:
    # The Events API's parser: the same RFC 2822 / epoch rules and error messages.
    text = values.get(name)
    return None if text is None else int(parse_moment(text, name)) // 1_000_000


def _back(ts: int, duration: str) -> int:
    """`ts` minus a duration such as "24h", "7d" or "2m" (calendar months)."""
    match = _DURATION.fullmatch(duration.lower())
    if match is None:
        raise BadRequest(f"'duration' must be a number and h, d or m (months), such as "
                         f"'7d', got {duration!r}")
    n, unit = int(match[1]), match[2]
    if unit == "m":
        moment = datetime.fromtimestamp(ts, UTC)
        months = moment.year * 12 + moment.month - 1 - n
        year, month = divmod(months, 12)
        if year < 1970:
            raise BadRequest("'duration' reaches back before 1970")
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        return calendar.timegm((year, month + 1, day, moment.hour, moment.minute,
                                moment.second))
    start = ts - n * (HOUR if unit == "h" else DAY)
    if start < 0:
        raise BadRequest("'duration' reaches back before 1970")
    return start



# --- queries ---------------------------------------------------------------------------


def bucket_counts(conn: Connection, domain: str, tag: str, counters: Iterable[str],
                  period: Period, *, human: bool = False) -> dict[int, dict[str, int]]:
    """{bucket start: {counter: n}} for the buckets of `period` that hold any count."""
    wanted = sorted(set(counters))
    if not wanted:
        return {}
    s = stats_buckets
    value = s.c.human_count if human else s.c.count
    # Months are summed from days in Python (calendar months vary in length).
    step = HOUR if period.resolution == "hour" else DAY
    bucket = s.c.hour if step == HOUR else (s.c.hour // step) * step
    rows = conn.execute(
        select(s.c.event, bucket.label("bucket"), func.sum(value).label("n"))
        .where(s.c.domain == domain, s.c.tag == tag, s.c.event.in_(wanted),
               s.c.hour >= period.first, s.c.hour < period.upper)
        .group_by(s.c.event, bucket))
    found: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    months: dict[int, int] = {}
    for row in rows:
        start = int(row.bucket)
        if period.resolution == "month":
            start = months.setdefault(start, floor_bucket(start, "month"))
        found[start][row.event] += int(row.n)
    return found


def _sums(conn: Connection, domain: str, tag_names: Sequence[str], counters: Iterable[str],
          lower: int | None, upper: int | None, human: bool) -> dict[str, dict[str, int]]:
    s = stats_buckets
    value = s.c.human_count if human else s.c.count
    conditions: list[ColumnElement[bool]] = [
        s.c.domain == domain, s.c.tag.in_(list(tag_names)), s.c.event.in_(sorted(counters))]
    if lower is not None:
        conditions.append(s.c.hour >= lower)
    if upper is not None:
        conditions.append(s.c.hour < upper)
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for row in conn.execute(select(s.c.tag, s.c.event, func.sum(value).label("n"))
                            .where(*conditions).group_by(s.c.tag, s.c.event)):
        found[row.tag][row.event] = int(row.n)
    return found


def dimension_counts(conn: Connection, domain: str, tag: str, dimensions: Iterable[str],
                     counters: Iterable[str], lower: int | None = None,
                     upper: int | None = None, *, human: bool = False,
                     ) -> dict[str, dict[str, dict[str, int]]]:
    """{dimension: {value: {counter: n}}} over days in [lower, upper) (None: all time);
    every value found has every counter, 0 where it has no row."""
    d = dimension_stats
    wanted = sorted(set(counters))
    value = d.c.human_count if human else d.c.count
    conditions: list[ColumnElement[bool]] = [
        d.c.domain == domain, d.c.tag == tag, d.c.event.in_(wanted),
        d.c.dimension.in_(sorted(set(dimensions)))]
    if lower is not None:
        conditions.append(d.c.day >= lower)
    if upper is not None:
        conditions.append(d.c.day < upper)
    rows = conn.execute(select(d.c.dimension, d.c.value, d.c.event, func.sum(value).label("n"))
                        .where(*conditions).group_by(d.c.dimension, d.c.value, d.c.event))
    found: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for row in rows:
        counts = found[row.dimension].setdefault(row.value, dict.fromkeys(wanted, 0))
        counts[row.event] = int(row.n)
    return found


@dataclass(frozen=True)
class LinkStat:
    url: str
    clicks: int
    unique_clicks: int


def top_links(conn: Connection, domain: str, tag: str, limit: int = TOP_LINKS, *,
              human: bool = False) -> list[LinkStat]:
    """The most clicked links of a tag, all time: by clicks, then unique clicks, then URL.

    With `human`, clicks are human clicks; unique clicks are not split by bot verdict in
    `link_stats`, so they stay the figure for all hits.
    """
    ls = link_stats
    clicks = ls.c.human_clicks if human else ls.c.clicks
    rows = conn.execute(
        select(ls.c.url, clicks.label("clicks"), ls.c.unique_clicks)
        .where(ls.c.domain == domain, ls.c.tag == tag)
        .order_by(clicks.desc(), ls.c.unique_clicks.desc(), ls.c.url).limit(limit))
    return [LinkStat(r.url, int(r.clicks), int(r.unique_clicks)) for r in rows]


def tag_span(conn: Connection, domain: str, tag: str) -> tuple[int, int] | None:
    """The first and last hour with any counter of the tag, None if it has none."""
    s = stats_buckets
    row = conn.execute(select(func.min(s.c.hour), func.max(s.c.hour))
                       .where(s.c.domain == domain, s.c.tag == tag)).one()
    return None if row[0] is None else (int(row[0]), int(row[1]))


# --- Mailgun's shapes ------------------------------------------------------------------


def stats_items(period: Period, events: Sequence[str],
                counts: Mapping[int, Mapping[str, int]]) -> list[dict[str, Any]]:
    """Mailgun's `stats` list: one item per bucket of the period, zero-filled."""
    empty: dict[str, int] = {}
    return [_item(start, events, counts.get(start, empty)) for start in period.buckets()]


def _item(start: int, events: Sequence[str], c: Mapping[str, int]) -> dict[str, Any]:
    item: dict[str, Any] = {"time": rfc2822(start * 1_000_000)}
    for event in events:
        if event == "accepted":
            item[event] = {"incoming": 0, "outgoing": c.get(ACCEPTED, 0),
                           "total": c.get(ACCEPTED, 0)}
        elif event == "delivered":
            item[event] = {"smtp": c.get(DELIVERED, 0), "http": 0,
                           "total": c.get(DELIVERED, 0)}
        elif event == "failed":
            delayed = c.get(DELAYED_BOUNCE, 0)
            item[event] = {
                "temporary": {"espblock": c.get(ESPBLOCK, 0),
                              "total": c.get(FAILED_TEMPORARY, 0)},
                "permanent": {
                    "bounce": max(c.get(BOUNCED, 0) - delayed, 0), "delayed-bounce": delayed,
                    **{reason: c.get(counter, 0) for reason, counter in SUPPRESS_COUNTERS.items()},
                    "total": c.get(FAILED_PERMANENT, 0),
                },
            }
        elif event == "opened":
            item[event] = {"total": c.get(OPENED, 0), "unique": c.get(UNIQUE_OPENED, 0)}
        elif event == "clicked":
            item[event] = {"total": c.get(CLICKED, 0), "unique": c.get(UNIQUE_CLICKED, 0)}
        else:  # unsubscribed, complained, stored
            item[event] = {"total": c.get(event, 0) if EVENTS[event] else 0}
    return item


def total_stats(conn: Connection, domain: str, tag: str, events: Sequence[str],
                period: Period, *, human: bool = False) -> dict[str, Any]:
    """The body of GET /v3/{domain}/stats/total (tag "") or /tags/{tag}/stats."""
    counters = [c for e in events for c in EVENTS[e]]
    counts = bucket_counts(conn, domain, tag, counters, period, human=human)
    body: dict[str, Any] = {}
    if tag:
        row = conn.execute(select(tags.c.description)
                           .where(tags.c.domain == domain, tags.c.tag == tag)).first()
        body = {"tag": tag, "description": row.description if row else ""}
    else:
        body = {"description": f"Total stats of {domain}"}
    body.update({
        "start": rfc2822(period.first * 1_000_000),
        "end": rfc2822(period.last * 1_000_000),  # the start of the last bucket, as its item's time
        "resolution": period.resolution,
        "stats": stats_items(period, events, counts),
    })
    return body


def aggregates(conn: Connection, domain: str, tag: str, kind: str,
               lower: int | None = None, upper: int | None = None, *,
               human: bool = False) -> dict[str, Any]:
    """The body of /tags/{tag}/stats/aggregates/{countries|providers|devices}."""
    if kind not in AGGREGATES:
        raise NotFound(f"no aggregate {kind!r}: countries, devices or providers")
    dimension, counters = AGGREGATES[kind]
    found = dimension_counts(conn, domain, tag, [dimension], counters, lower, upper,
                             human=human).get(dimension, {})
    if kind == "devices":
        found = {**{d: dict.fromkeys(sorted(counters), 0) for d in DEVICE_TYPES}, **found}
    return {"tag": tag, kind: dict(sorted(found.items()))}


def failure_breakdown(conn: Connection, domain: str, tag: str, lower: int | None = None,
                      upper: int | None = None) -> dict[str, dict[str, Any]]:
    """Failures by category over hours in [lower, upper) (None: all time), every category
    listed: {category: {"label", "permanent", "temporary", "total"}}. Suppressed sends are
    not failures to deliver and are not in it (they have Mailgun's suppress-* keys)."""
    counters = [category_counter(p, c) for p in (True, False) for c in FailureCategory]
    sums = _sums(conn, domain, [tag], counters, lower, upper, False).get(tag, {})
    found: dict[str, dict[str, Any]] = {}
    for category in FailureCategory:
        permanent = sums.get(category_counter(True, category), 0)
        temporary = sums.get(category_counter(False, category), 0)
        found[str(category)] = {"label": LABELS[category], "permanent": permanent,
                                "temporary": temporary, "total": permanent + temporary}
    return found


# --- campaigns -------------------------------------------------------------------------


def rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass(frozen=True)
class CampaignReport:
    """One tag's results over whole UTC days `first`..`last` (see the module docstring)."""

    tag: str
    first: int  # epoch seconds, start of the first day
    last: int  # start of the last day
    human: bool
    counts: dict[str, int]
    top_links: list[LinkStat]
    breakdowns: dict[str, dict[str, dict[str, int]]]  # devices/os/clients/countries
    over_time: list[dict[str, int]] = field(default_factory=list)  # day, delivered, ...
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # by category

    @property
    def rates(self) -> dict[str, float]:
        c = self.counts
        return {
            "delivered": rate(c["delivered"], c["sent"]),
            "bounced": rate(c["bounced"], c["sent"]),
            "opened": rate(c["opened"], c["delivered"]),
            "clicked": rate(c["clicked"], c["delivered"]),
            "click_to_open": rate(c["clicked"], c["opened"]),
            "unsubscribed": rate(c["unsubscribed"], c["delivered"]),
            "complained": rate(c["complained"], c["delivered"]),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "start": rfc2822(self.first * 1_000_000),
            "end": rfc2822(self.last * 1_000_000),
            "human": self.human,
            **self.counts,
            "rates": self.rates,
            "top_links": [{"url": link.url, "clicks": link.clicks,
                           "unique_clicks": link.unique_clicks} for link in self.top_links],
            **self.breakdowns,
            "failures": self.failures,
            "over_time": [{"time": rfc2822(day["time"] * 1_000_000), **{k: v for k, v in day.items()
                                                           if k != "time"}}
                          for day in self.over_time],
        }

    def to_csv(self) -> str:
        """Long format, one number a row: `section,item,metric,value`.

        Sections in order: `summary` (item empty; metric sent, delivered, ...), `rate`
        (item empty), `link` (item = URL, by rank; metrics clicks, unique_clicks), then
        `devices`, `os`, `clients`, `countries` (item = value; metrics opened,
        unique_opened, clicked, unique_clicked), then `failures` (item = category; metrics
        permanent, temporary), then `day` (item = YYYY-MM-DD; metrics delivered, opened,
        clicked).
        """
        out = io.StringIO()
        writer = spreadsheet.writer(out)  # tags, URLs and client names come from outside
        writer.writerow(["section", "item", "metric", "value"])
        writer.writerow(["campaign", self.tag, "start", _iso_day(self.first)])
        writer.writerow(["campaign", self.tag, "end", _iso_day(self.last)])
        writer.writerow(["campaign", self.tag, "human", "yes" if self.human else "no"])
        writer.writerows(["summary", "", k, v] for k, v in self.counts.items())
        writer.writerows(["rate", "", k, f"{v:.6f}"] for k, v in self.rates.items())
        for link in self.top_links:
            writer.writerow(["link", link.url, "clicks", link.clicks])
            writer.writerow(["link", link.url, "unique_clicks", link.unique_clicks])
        for section, values in self.breakdowns.items():
            for item, counts in values.items():
                writer.writerows([section, item, k, v] for k, v in counts.items())
        for category, counts in self.failures.items():
            writer.writerow(["failures", category, "permanent", counts["permanent"]])
            writer.writerow(["failures", category, "temporary", counts["temporary"]])
        for day in self.over_time:
            writer.writerows(["day", _iso_day(day["time"]), k, v]
                             for k, v in day.items() if k != "time")
        return out.getvalue()


def _iso_day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def campaign_report(conn: Connection, domain: str, tag: str, start: int | None = None,
                    end: int | None = None, *, human: bool = False) -> CampaignReport:
    """A campaign's report over whole UTC days; without `start`/`end`, from its first to
    its last day with any counter. NotFound when the tag has no counters at all."""
    span = tag_span(conn, domain, tag)
    if span is None:
        raise NotFound(f"campaign not found: {tag}")
    if start is None:
        # From the first day with counters, or from `end` if that is earlier still.
        start = span[0] if end is None else min(span[0], end)
    first = floor_bucket(start, "day")
    last = floor_bucket(end if end is not None else max(span[1], first), "day")
    if first > last:
        raise BadRequest("'start' must not be after 'end'")
    period = checked_period(first, last, "day")
    daily = bucket_counts(conn, domain, tag, _REPORT_COUNTERS, period, human=human)
    totals = dict.fromkeys(_REPORT_COUNTERS, 0)
    for counts in daily.values():
        for counter, n in counts.items():
            totals[counter] += n
    summary = {
        "accepted": totals[ACCEPTED],
        "suppressed": totals[SUPPRESSED],
        "sent": max(totals[ACCEPTED] - totals[SUPPRESSED], 0),
        "delivered": totals[DELIVERED],
        "bounced": totals[BOUNCED],
        "opened": totals[UNIQUE_OPENED],
        "clicked": totals[UNIQUE_CLICKED],
        "opens": totals[OPENED],
        "clicks": totals[CLICKED],
        "unsubscribed": totals[UNSUBSCRIBED],
        "complained": totals[COMPLAINED],
    }
    found = dimension_counts(conn, domain, tag, BREAKDOWNS.values(), _BREAKDOWN_COUNTERS,
                             period.first, period.upper, human=human)
    breakdowns = {key: dict(sorted(found.get(dim, {}).items()))
                  for key, dim in BREAKDOWNS.items()}
    empty: dict[str, int] = {}
    over_time = []
    for day in period.buckets():
        counts = daily.get(day, empty)
        over_time.append({"time": day, "delivered": counts.get(DELIVERED, 0),
                          "opened": counts.get(UNIQUE_OPENED, 0),
                          "clicked": counts.get(UNIQUE_CLICKED, 0)})
    failures = failure_breakdown(conn, domain, tag, period.first, period.upper)
    return CampaignReport(tag, period.first, period.last, human, summary,
                          top_links(conn, domain, tag, human=human), breakdowns, over_time,
                          failures)


def campaign_totals(conn: Connection, domain: str, tag_names: Sequence[str],
                    start: int | None = None, end: int | None = None, *,
                    human: bool = False) -> dict[str, dict[str, int]]:
    """{tag: {sent, delivered, opened, clicked}} for the campaign list (opened and clicked
    unique), over hours in [start, end] rounded out to whole hours (None: all time)."""
    lower = None if start is None else floor_bucket(start, "hour")
    upper = None if end is None else floor_bucket(end, "hour") + HOUR
    sums = _sums(conn, domain, tag_names, _LIST_COUNTERS, lower, upper, human)
    result = {}
    for tag in tag_names:
        c = sums.get(tag, {})
        result[tag] = {
            "sent": max(c.get(ACCEPTED, 0) - c.get(SUPPRESSED, 0), 0),
            "delivered": c.get(DELIVERED, 0),
            "opened": c.get(UNIQUE_OPENED, 0),
            "clicked": c.get(UNIQUE_CLICKED, 0),
        }
    return result

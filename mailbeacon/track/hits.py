"""What one batch of hits writes (called by the recorder inside its transaction).

For each open, click or unsubscribe: enrich it (client, location), judge it (bots.py),
apply the domain's privacy settings, then write the event, the per-recipient state, the
per-link counters, the contact's engagement score and, for unsubscribes, the
suppression. Everything for the batch is read with a few queries up front and written
with a few statements at the end.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, tuple_

from mailbeacon.events.vocabulary import (
    UNIQUE_CLICKED,
    UNIQUE_OPENED,
    EventRecord,
    EventType,
    MessageInfo,
    build_event,
)
from mailbeacon.events.writer import write_events
from mailbeacon.insight import engagement
from mailbeacon.insight.activity import ContactScore, blank_state_row, upsert_contacts
from mailbeacon.model.hit import HONEYPOT_INDEX, Hit
from mailbeacon.model.tokens import Kind
from mailbeacon.storage.db import upsert_add
from mailbeacon.storage.schema import (
    contacts,
    deliveries,
    domains,
    link_clicks,
    link_stats,
    messages,
    recipient_state,
)
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import ALL_SCOPE, SuppressionKind
from mailbeacon.track.bots import HitFacts, Thresholds, Verdict, judge
from mailbeacon.track.enrich import NO_GEO, GeoLookup, client_info

log = logging.getLogger("mailbeacon.recorder")
_RECENT_CLICKS = 50_000  # deliveries whose recent click times are kept for bursts


@dataclass
class _Settings:
    track_activities: str
    truncate_ips: bool
    thresholds: Thresholds


@dataclass
class _State:
    row: dict[str, Any] = field(default_factory=dict)  # the upsert row for this delivery
    opens: int = 0  # totals so far, including this batch
    clicks: int = 0
    human_opens: int = 0
    human_clicks: int = 0
    first_open: int | None = None
    first_click: int | None = None
    first_human_open: int | None = None
    first_human_click: int | None = None


class HitWriter:
    """Turns hits into rows; holds what outlives one batch (caches, recent clicks)."""

    def __init__(self, geo: GeoLookup | None = None,
                 half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> None:
        self._geo = geo or GeoLookup()
        self._half_life = half_life_days
        # Per delivery, the recent (link index, time) clicks: click bursts are a scanner
        # sign. Kept in memory: a burst that spans two processes can be missed.
        self._recent: OrderedDict[str, deque[tuple[int, float]]] = OrderedDict()

    def store(self, conn: Connection, hits: Sequence[Hit]) -> None:
        """Everything a batch of hits writes, events and their stats included."""
        write_events(conn, self.write(conn, hits))

    def write(self, conn: Connection, hits: Sequence[Hit]) -> list[EventRecord]:
        ids = sorted({h.delivery_id for h in hits})
        known = {r.delivery_id: r for r in conn.execute(
            select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient,
                   deliveries.c.status.label("delivery_status"),
                   deliveries.c.updated_at.label("delivery_updated_at"),
                   messages.c.domain, messages.c.message_id, messages.c.sender,
                   messages.c.headers, messages.c.tags, messages.c.user_variables)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(deliveries.c.id.in_(ids))
            # An erasure running meanwhile waits for us, or we for it (PostgreSQL).
            .with_for_update(read=True, of=deliveries))}
        settings = self._settings(conn, {r.domain for r in known.values()})
        states = self._states(conn, ids)
        people = self._contacts(conn, {(r.domain, r.recipient.lower())
                                       for r in known.values()})
        seen_links = self._seen_links(conn, hits)
        records: list[EventRecord] = []
        links: Counter[tuple[str, str, str, str]] = Counter()
        infos: dict[str, MessageInfo] = {}  # parsed once per delivery and batch
        for hit in hits:
            row = known.get(hit.delivery_id)
            if row is None:  # signed by us, but the message is gone (retention, erasure)
                log.info("hit for unknown delivery %s ignored", hit.delivery_id)
                continue
            info = infos.get(hit.delivery_id) or infos.setdefault(
                hit.delivery_id, MessageInfo.from_row(row))
            domain = settings[info.domain]
            address = row.recipient.lower()
            person = people.setdefault((info.domain, address), ContactScore())
            anonymous = domain.track_activities == "never" or (
                domain.track_activities == "consent" and person.consent is not True)
            verdict, extra, dims = self._enrich(hit, row, domain)
            if hit.kind is Kind.UNSUBSCRIBE:  # always about a person: never anonymous
                records.append(_unsubscribe(conn, hit, info, row.recipient, extra))
                continue
            state = states.setdefault(hit.delivery_id, _State())
            records.extend(self._open_click(hit, info, row.recipient, anonymous, verdict,
                                            extra, dims, state, person, links, seen_links))
        self._flush(conn, states, people, links, seen_links)
        return records

    def _enrich(self, hit: Hit, row: Any, domain: _Settings
                ) -> tuple[Verdict, dict[str, Any], dict[str, str]]:
        geo = self._geo.lookup(hit.ip)
        since = None
        if row.delivery_status == "delivered":
            since = (hit.ts - row.delivery_updated_at) / 1e6
        recent: Sequence[tuple[int, float]] = ()
        if hit.kind is Kind.CLICK:
            clicks = self._recent.setdefault(hit.delivery_id, deque(maxlen=20))
            self._recent.move_to_end(hit.delivery_id)
            clicks.append((hit.link_index, hit.ts / 1e6))
            if len(self._recent) > _RECENT_CLICKS:
                self._recent.popitem(last=False)
            recent = list(clicks)
        verdict = judge(HitFacts(
            kind={Kind.OPEN: "open", Kind.CLICK: "click"}.get(hit.kind, "unsubscribe"),
            method=hit.method, user_agent=hit.user_agent, ip=hit.ip, asn=geo.asn,
            as_name=geo.as_name, seconds_since_delivery=since, recent_click_times=recent,
            honeypot=hit.kind is Kind.CLICK and hit.link_index == HONEYPOT_INDEX),
            domain.thresholds)
        client = client_info(hit.user_agent)
        if verdict.proxied:  # the proxy's device and place are not the reader's
            geo = NO_GEO
            client_json = {"client-name": client.client_name, "client-type": client.client_type,
                           "client-os": "unknown", "device-type": "unknown",
                           "user-agent": hit.user_agent}
        else:
            client_json = client.to_json()
        client_json["bot"] = verdict.bot
        extra: dict[str, Any] = {
            "ip": _truncate(hit.ip) if domain.truncate_ips else hit.ip,
            "geolocation": geo.to_json() if geo.country else
            {"country": "Unknown", "region": "Unknown", "city": "Unknown"},
            "client_info": client_json, "bot_reasons": list(verdict.reasons),
            "method": hit.method,
        }
        dims = {"country": geo.country or "unknown", "device": client_json["device-type"],
                "os": client_json["client-os"], "client": client_json["client-name"],
                "provider": row.recipient.rpartition("@")[2].lower()}
        return verdict, extra, dims

    def _open_click(self, hit: Hit, info: MessageInfo, recipient: str, anonymous: bool,
                    verdict: Verdict, extra: dict[str, Any], dims: dict[str, str],
                    state: _State, person: ContactScore,
                    links: Counter[tuple[str, str, str, str]],
                    seen_links: dict[tuple[str, int], int]) -> list[EventRecord]:
        human = verdict.human
        if anonymous:
            # Nothing is kept per recipient either (no state, no per-link trace), so an
            # anonymous hit is only counted: not as unique, which needs that state.
            state = _State(first_open=-1, first_click=-1, first_human_open=-1,
                           first_human_click=-1)
        row = state.row or blank_state_row(hit.delivery_id, info.domain)
        if not anonymous:
            state.row = row
            row["recipient"] = recipient.lower()
        shown = "" if anonymous else recipient
        if anonymous:  # counted, but nothing that identifies the person (DESIGN 12)
            extra = {k: v for k, v in extra.items() if k != "ip"}
            extra["client_info"] = {k: v for k, v in extra["client_info"].items()
                                    if k != "user-agent"}
        delivery = None if anonymous else hit.delivery_id
        out: list[EventRecord] = []
        implied = hit.kind is Kind.CLICK and state.first_open is None
        if hit.kind is Kind.OPEN or implied:
            counters = _count(state, row, "open", human, hit.ts)
            fields = dict(extra, flags={"is-implied-by-click": True}) if implied else extra
            out.append(build_event(EventType.OPENED, hit.ts, info, shown, delivery,
                                   counters=counters,
                                   human=human, dimensions=dims, **fields))
            if human and not anonymous:
                self._engage(person, "open", state.human_opens, hit.ts)
        if hit.kind is Kind.CLICK:
            counters = _count(state, row, "click", human, hit.ts)
            key = (hit.delivery_id, hit.link_index)
            first_on_link = not anonymous and seen_links.get(key, 0) == 0
            if not anonymous:
                seen_links[key] = seen_links.get(key, 0) + 1
            for tag in ("", *info.tags):
                links[(info.domain, tag, hit.url, "clicks")] += 1
                links[(info.domain, tag, hit.url, "unique_clicks")] += int(first_on_link)
                links[(info.domain, tag, hit.url, "human_clicks")] += int(human)
            out.append(build_event(EventType.CLICKED, hit.ts, info, shown, delivery,
                                   counters=counters,
                                   human=human, dimensions=dims, url=hit.url,
                                   link_index=hit.link_index, **extra))
            if human and not anonymous:
                self._engage(person, "click", state.human_clicks, hit.ts)
        return out

    def _engage(self, person: ContactScore, action: str, nth: int, ts: int) -> None:
        person.score, person.score_at = engagement.add(
            person.score, person.score_at, engagement.weight(action, nth), ts, self._half_life)
        if action == "open":
            person.opens += 1
        else:
            person.clicks += 1
        person.last_activity_at = max(person.last_activity_at or 0, ts)
        person.changed = True

    # --- reading and writing the batch ------------------------------------------------

    def _settings(self, conn: Connection, names: set[str]) -> dict[str, _Settings]:
        found: dict[str, _Settings] = {}
        for r in conn.execute(select(domains.c.name, domains.c.track_activities,
                                     domains.c.truncate_ips, domains.c.bot_thresholds)
                              .where(domains.c.name.in_(sorted(names)))):
            try:
                thresholds = Thresholds.from_json(json.loads(r.bot_thresholds)
                                                  if r.bot_thresholds else None)
            except ValueError:
                thresholds = Thresholds()
            found[r.name] = _Settings(r.track_activities, bool(r.truncate_ips), thresholds)
        return found

    def _states(self, conn: Connection, ids: list[str]) -> dict[str, _State]:
        return {r.delivery_id: _State(
            opens=r.open_count, clicks=r.click_count, human_opens=r.human_open_count,
            human_clicks=r.human_click_count, first_open=r.first_open_at,
            first_click=r.first_click_at, first_human_open=r.first_human_open_at,
            first_human_click=r.first_human_click_at)
            for r in conn.execute(select(recipient_state)
                                  .where(recipient_state.c.delivery_id.in_(ids)))}

    def _contacts(self, conn: Connection,
                  keys: set[tuple[str, str]]) -> dict[tuple[str, str], ContactScore]:
        if not keys:
            return {}
        rows = conn.execute(select(contacts).where(
            tuple_(contacts.c.domain, contacts.c.address).in_(sorted(keys))))
        return {(r.domain, r.address): ContactScore(r.consent, r.score, r.score_at, r.opens,
                                                r.clicks, r.last_activity_at)
                for r in rows}

    def _seen_links(self, conn: Connection, hits: Sequence[Hit]) -> dict[tuple[str, int], int]:
        keys = sorted({(h.delivery_id, h.link_index) for h in hits if h.kind is Kind.CLICK})
        if not keys:
            return {}
        return {(r.delivery_id, r.link_index): int(r[2]) for r in conn.execute(
            select(link_clicks).where(
                tuple_(link_clicks.c.delivery_id, link_clicks.c.link_index).in_(keys)))}

    def _flush(self, conn: Connection, states: dict[str, _State],
               people: dict[tuple[str, str], ContactScore],
               links: Counter[tuple[str, str, str, str]],
               seen_links: dict[tuple[str, int], int]) -> None:
        upsert_add(conn, recipient_state,
                   [states[k].row for k in sorted(states) if states[k].row],
                   keys=("delivery_id",),
                   add=("open_count", "click_count", "human_open_count", "human_click_count"),
                   latest=("last_open_at", "last_click_at", "recipient"),
                   earliest=("first_open_at", "first_click_at", "first_human_open_at",
                             "first_human_click_at"))
        by_link: dict[tuple[str, str, str], dict[str, int]] = {}
        for (domain, tag, url, column), n in links.items():
            by_link.setdefault((domain, tag, url[:2048]), {"clicks": 0, "unique_clicks": 0,
                                                           "human_clicks": 0})[column] += n
        upsert_add(conn, link_stats,
                   [{"domain": d, "tag": t, "url": u, **v} for (d, t, u), v in
                    sorted(by_link.items())],
                   keys=("domain", "tag", "url"),
                   add=("clicks", "unique_clicks", "human_clicks"))
        if seen_links:
            conn.execute(link_clicks.delete().where(tuple_(
                link_clicks.c.delivery_id, link_clicks.c.link_index).in_(sorted(seen_links))))
            conn.execute(link_clicks.insert(), [
                {"delivery_id": d, "link_index": i, "count": n}
                for (d, i), n in sorted(seen_links.items())])
        changed = [(k, p) for k, p in sorted(people.items()) if p.changed]
        if changed:
            upsert_contacts(conn, [
                {"domain": d, "address": a, "score": p.score, "score_at": p.score_at,
                 "score_rank": engagement.rank(p.score, p.score_at, self._half_life),
                 "opens": p.opens, "clicks": p.clicks, "last_activity_at": p.last_activity_at}
                for (d, a), p in changed])


_UNIQUE = {"open": UNIQUE_OPENED, "click": UNIQUE_CLICKED}


def _count(state: _State, row: dict[str, Any], what: str, human: bool,
           ts: int) -> list[tuple[str, int, int]]:
    """Count one open or click (`what`) in the state and the upsert row; returns the
    unique counter it adds, if it is the first (the first human one for human counts)."""
    first, first_human = f"first_{what}", f"first_human_{what}"
    unique = (_UNIQUE[what], int(getattr(state, first) is None),
              int(human and getattr(state, first_human) is None))
    setattr(state, first, getattr(state, first) or ts)
    setattr(state, f"{what}s", getattr(state, f"{what}s") + 1)
    row[f"{what}_count"] += 1
    _times(row, what, ts)
    if human:
        setattr(state, first_human, getattr(state, first_human) or ts)
        setattr(state, f"human_{what}s", getattr(state, f"human_{what}s") + 1)
        row[f"human_{what}_count"] += 1
        row[f"first_human_{what}_at"] = row[f"first_human_{what}_at"] or ts
    return [unique] if unique[1] or unique[2] else []


def _times(row: dict[str, Any], what: str, ts: int) -> None:
    row[f"first_{what}_at"] = row[f"first_{what}_at"] or ts
    row[f"last_{what}_at"] = max(row[f"last_{what}_at"] or 0, ts)


def _truncate(ip: str) -> str:
    """The network, not the host: /24 for IPv4, /48 for IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _unsubscribe(conn: Connection, hit: Hit, info: MessageInfo, recipient: str,
                 extra: dict[str, Any]) -> EventRecord:
    """Suppress the recipient at the token's scope; the event says which."""
    scopes = [ALL_SCOPE]
    if hit.scope == "tag" and info.tags:
        scopes = list(info.tags)
    elif hit.scope == "list" and info.headers.get("list-id"):
        scopes = [f"list:{info.headers['list-id']}"]
    for scope in scopes:
        suppressions.add(conn, info.domain, SuppressionKind.UNSUBSCRIBE, recipient, hit.ts,
                         tag=scope)
    fields = {k: v for k, v in extra.items() if k in ("ip", "client_info", "geolocation")}
    return build_event(EventType.UNSUBSCRIBED, hit.ts, info, recipient, hit.delivery_id,
                       method=hit.method, unsubscribe_scope=scopes, **fields)

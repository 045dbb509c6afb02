"""What one batch of hits writes (called by the recorder inside its transaction).

For each open, click or unsubscribe: enrich it (client, location), judge it (bots.py),
apply the domain's privacy settings, then write the event, the per-recipient state, the
per-link counters, the contact's engagement score and, for unsubscribes, the
suppression. Everything for the batch is read with a few queries up front and written
with a few statements at the end.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import ipaddress
import json
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection

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
from mailbeacon.storage.bulk import any_of, is_postgres, list_param, mark, upsert_rows
from mailbeacon.storage.schema import link_clicks, link_stats, recipient_state
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import ALL_SCOPE, SuppressionKind
from mailbeacon.track.bots import HitFacts, Thresholds, Verdict, judge
from mailbeacon.track.enrich import NO_GEO, GeoLookup, client_info

log = logging.getLogger("mailbeacon.recorder")
_RECENT_CLICKS = 50_000  # deliveries whose recent click times are kept for bursts
_MESSAGES = 10_000  # messages whose parsed headers, tags and variables are kept


@dataclass
class _Settings:
    track_activities: str
    truncate_ips: bool
    thresholds: Thresholds


class _Delivery(NamedTuple):
    recipient: str
    delivery_status: str
    delivery_updated_at: int
    info: MessageInfo
    contact: tuple[str, str]  # (domain, lowercased address)
    provider: str  # the recipient's domain, lowercased


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
        self._messages: OrderedDict[str, MessageInfo] = OrderedDict()  # by messages.id
        self._clients: dict[tuple[str, str, bool], tuple[dict[str, str],
                                                        dict[str, str]]] = {}

    def store(self, conn: Connection, hits: Sequence[Hit]) -> None:
        """Everything a batch of hits writes, events and their stats included."""
        with _collector_paused():
            write_events(conn, self.write(conn, hits))

    def write(self, conn: Connection, hits: Sequence[Hit]) -> list[EventRecord]:
        ids = sorted({h.delivery_id for h in hits})
        known = self._deliveries(conn, ids)
        settings = self._settings(conn, {r.info.domain for r in known.values()})
        states = self._states(conn, sorted(known))
        people = self._contacts(conn, {r.contact for r in known.values()})
        seen_links = self._seen_links(conn, hits)
        clicked: Counter[tuple[str, int]] = Counter()  # this batch's clicks per link
        records: list[EventRecord] = []
        links: dict[tuple[str, str, str], list[int]] = {}
        for hit in hits:
            row = known.get(hit.delivery_id)
            if row is None:  # signed by us, but the message is gone (retention, erasure)
                log.info("hit for unknown delivery %s ignored", hit.delivery_id)
                continue
            info = row.info
            domain = settings[info.domain]
            person = people.get(row.contact)
            if person is None:
                person = people[row.contact] = ContactScore()
            anonymous = domain.track_activities == "never" or (
                domain.track_activities == "consent" and person.consent is not True)
            verdict, extra, dims = self._enrich(hit, row, domain)
            if hit.kind is Kind.UNSUBSCRIBE:  # always about a person: never anonymous
                records.append(_unsubscribe(conn, hit, info, row.recipient, extra))
                continue
            state = states.get(hit.delivery_id)
            if state is None:
                state = states[hit.delivery_id] = _State()
            records.extend(self._open_click(hit, info, row.recipient, anonymous, verdict,
                                            extra, dims, state, person, links, seen_links,
                                            clicked))
        self._flush(conn, states, people, links, clicked)
        return records

    def _deliveries(self, conn: Connection, ids: list[str]) -> dict[str, _Delivery]:
        """The deliveries hit, with their messages (parsed once per message, cached)."""
        if not ids:
            return {}
        # An erasure running meanwhile waits for us, or we for it (PostgreSQL).
        lock = " FOR SHARE OF d" if is_postgres(conn) else ""
        found: dict[str, _Delivery] = {}
        for (id_, recipient, status, updated_at, message_row, domain, message_id, sender,
             headers, tags, variables) in conn.exec_driver_sql(
                "SELECT d.id, d.recipient, d.status, d.updated_at, d.message_id, m.domain, "
                "m.message_id, m.sender, m.headers, m.tags, m.user_variables "
                "FROM deliveries d JOIN messages m ON m.id = d.message_id "
                f"WHERE d.id {any_of(conn)}{lock}", (list_param(conn, ids),)):
            info = self._messages.get(message_row)
            if info is None or info.domain != domain:
                info = MessageInfo(domain, message_id, sender, json.loads(headers),
                                   json.loads(tags), json.loads(variables))
                self._messages[message_row] = info
                if len(self._messages) > _MESSAGES:
                    self._messages.popitem(last=False)
            found[id_] = _Delivery(recipient, status, updated_at, info,
                                   (domain, recipient.lower()),
                                   recipient.rpartition("@")[2].lower())
        return found

    def _enrich(self, hit: Hit, row: _Delivery, domain: _Settings
                ) -> tuple[Verdict, dict[str, Any], dict[str, str]]:
        geo = self._geo.lookup(hit.ip)
        since = None
        if row.delivery_status == "delivered":
            since = (hit.ts - row.delivery_updated_at) / 1e6
        recent: Sequence[tuple[int, float]] = ()
        if hit.kind is Kind.CLICK:
            clicks = self._recent.get(hit.delivery_id)
            if clicks is None:
                clicks = self._recent[hit.delivery_id] = deque(maxlen=20)
                if len(self._recent) > _RECENT_CLICKS:
                    self._recent.popitem(last=False)
            else:
                self._recent.move_to_end(hit.delivery_id)
            clicks.append((hit.link_index, hit.ts / 1e6))
            recent = list(clicks)
        verdict = judge(HitFacts(
            kind=_KIND_NAMES.get(hit.kind, "unsubscribe"),
            method=hit.method, user_agent=hit.user_agent, ip=hit.ip, asn=geo.asn,
            as_name=geo.as_name, seconds_since_delivery=since, recent_click_times=recent,
            honeypot=hit.kind is Kind.CLICK and hit.link_index == HONEYPOT_INDEX),
            domain.thresholds)
        if verdict.proxied:  # the proxy's device and place are not the reader's
            geo = NO_GEO
        client_json, device = self._client(hit.user_agent, verdict)
        extra: dict[str, Any] = {
            "ip": _truncate(hit.ip) if domain.truncate_ips else hit.ip,
            "geolocation": geo.to_json() if geo.country else
            {"country": "Unknown", "region": "Unknown", "city": "Unknown"},
            "client_info": client_json, "bot_reasons": list(verdict.reasons),
            "method": hit.method,
        }
        dims = {"country": geo.country or "unknown", **device, "provider": row.provider}
        return verdict, extra, dims

    def _client(self, user_agent: str, verdict: Verdict
                ) -> tuple[dict[str, str], dict[str, str]]:
        """The event's client-info and the device dimensions of an agent and verdict,
        made once per pair (shared between events: never changed once made)."""
        key = (user_agent, verdict.bot, verdict.proxied)
        found = self._clients.get(key)
        if found is not None:
            return found
        client = client_info(user_agent)
        if verdict.proxied:
            client_json = {"client-name": client.client_name,
                           "client-type": client.client_type,
                           "client-os": "unknown", "device-type": "unknown",
                           "user-agent": user_agent}
        else:
            client_json = client.to_json()
        client_json["bot"] = verdict.bot
        device = {"device": client_json["device-type"], "os": client_json["client-os"],
                  "client": client_json["client-name"]}
        if len(self._clients) >= _CLIENTS:
            self._clients.clear()
        found = self._clients[key] = (client_json, device)
        return found

    def _open_click(self, hit: Hit, info: MessageInfo, recipient: str, anonymous: bool,
                    verdict: Verdict, extra: dict[str, Any], dims: dict[str, str],
                    state: _State, person: ContactScore,
                    links: dict[tuple[str, str, str], list[int]],
                    seen_links: dict[tuple[str, int], int],
                    clicked: Counter[tuple[str, int]]) -> list[EventRecord]:
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
            counters = _count_open(state, row, human, hit.ts)
            fields = dict(extra, flags={"is-implied-by-click": True}) if implied else extra
            out.append(build_event(EventType.OPENED, hit.ts, info, shown, delivery,
                                   counters=counters,
                                   human=human, dimensions=dims, **fields))
            if human and not anonymous:
                self._engage(person, "open", state.human_opens, hit.ts)
        if hit.kind is Kind.CLICK:
            counters = _count_click(state, row, human, hit.ts)
            key = (hit.delivery_id, hit.link_index)
            first_on_link = not anonymous and seen_links.get(key, 0) == 0
            if not anonymous:
                seen_links[key] = seen_links.get(key, 0) + 1
                clicked[key] += 1
            url = hit.url[:2048]
            for tag in ("", *info.tags):
                counts = links.get((info.domain, tag, url))
                if counts is None:
                    counts = links[(info.domain, tag, url)] = [0, 0, 0]
                counts[0] += 1
                counts[1] += first_on_link
                counts[2] += human
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
        """Read for every batch (a change applies to the next hit); the thresholds'
        JSON is parsed once per distinct text."""
        found: dict[str, _Settings] = {}
        if not names:
            return found
        for name, track_activities, truncate_ips, bot_thresholds in conn.exec_driver_sql(
                "SELECT name, track_activities, truncate_ips, bot_thresholds FROM domains "
                f"WHERE name {any_of(conn)}", (list_param(conn, sorted(names)),)):
            found[name] = _Settings(track_activities, bool(truncate_ips),
                                    _thresholds(bot_thresholds))
        return found

    def _states(self, conn: Connection, ids: list[str]) -> dict[str, _State]:
        if not ids:
            return {}
        return {r[0]: _State(
            opens=r[1], clicks=r[2], human_opens=r[3], human_clicks=r[4], first_open=r[5],
            first_click=r[6], first_human_open=r[7], first_human_click=r[8])
            for r in conn.exec_driver_sql(
                "SELECT delivery_id, open_count, click_count, human_open_count, "
                "human_click_count, first_open_at, first_click_at, first_human_open_at, "
                f"first_human_click_at FROM recipient_state WHERE delivery_id {any_of(conn)}",
                (list_param(conn, ids),))}

    def _contacts(self, conn: Connection,
                  keys: set[tuple[str, str]]) -> dict[tuple[str, str], ContactScore]:
        by_domain: dict[str, list[str]] = {}
        for domain, address in sorted(keys):
            by_domain.setdefault(domain, []).append(address)
        found: dict[tuple[str, str], ContactScore] = {}
        for domain, addresses in by_domain.items():
            for r in conn.exec_driver_sql(
                    "SELECT address, consent, score, score_at, opens, clicks, "
                    f"last_activity_at FROM contacts WHERE domain = {mark(conn)} "
                    f"AND address {any_of(conn)}", (domain, list_param(conn, addresses))):
                found[(domain, r[0])] = ContactScore(
                    None if r[1] is None else bool(r[1]), r[2], r[3], r[4], r[5], r[6])
        return found

    def _seen_links(self, conn: Connection, hits: Sequence[Hit]) -> dict[tuple[str, int], int]:
        wanted = {(h.delivery_id, h.link_index) for h in hits if h.kind is Kind.CLICK}
        if not wanted:
            return {}
        ids = sorted({d for d, _ in wanted})
        return {(r[0], r[1]): int(r[2]) for r in conn.exec_driver_sql(
            "SELECT delivery_id, link_index, count FROM link_clicks "
            f"WHERE delivery_id {any_of(conn)}", (list_param(conn, ids),))
            if (r[0], r[1]) in wanted}

    def _flush(self, conn: Connection, states: dict[str, _State],
               people: dict[tuple[str, str], ContactScore],
               links: dict[tuple[str, str, str], list[int]],
               clicked: Counter[tuple[str, int]]) -> None:
        # Every statement in key order: two writers on PostgreSQL lock rows alike.
        upsert_rows(conn, recipient_state, _STATE_COLUMNS,
                    [tuple(states[k].row[c] for c in _STATE_COLUMNS)
                     for k in sorted(states) if states[k].row],
                    keys=("delivery_id",),
                    add=("open_count", "click_count", "human_open_count",
                         "human_click_count"),
                    latest=("last_open_at", "last_click_at", "recipient"),
                    earliest=("first_open_at", "first_click_at", "first_human_open_at",
                              "first_human_click_at"))
        upsert_rows(conn, link_stats,
                    ("domain", "tag", "url", "clicks", "unique_clicks", "human_clicks"),
                    [(*key, *counts) for key, counts in sorted(links.items())],
                    keys=("domain", "tag", "url"),
                    add=("clicks", "unique_clicks", "human_clicks"))
        upsert_rows(conn, link_clicks, ("delivery_id", "link_index", "count"),
                    [(*key, n) for key, n in sorted(clicked.items())],
                    keys=("delivery_id", "link_index"), add=("count",))
        changed = [(k, p) for k, p in sorted(people.items()) if p.changed]
        if changed:
            upsert_contacts(conn, [
                {"domain": d, "address": a, "score": p.score, "score_at": p.score_at,
                 "score_rank": engagement.rank(p.score, p.score_at, self._half_life),
                 "opens": p.opens, "clicks": p.clicks, "last_activity_at": p.last_activity_at}
                for (d, a), p in changed])


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a batch is built: a batch's thousands of
    short-lived dicts and lists (none in a cycle, all freed by reference counting)
    otherwise set off full collections that took 40% of the loader's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_STATE_COLUMNS = tuple(blank_state_row("", ""))
_KIND_NAMES = {Kind.OPEN: "open", Kind.CLICK: "click"}
_CLIENTS = 10_000  # (agent, verdict) pairs whose client-info is kept


@functools.lru_cache(maxsize=256)
def _thresholds(text: str | None) -> Thresholds:
    try:
        return Thresholds.from_json(json.loads(text) if text else None)
    except ValueError:
        return Thresholds()


def _count_open(state: _State, row: dict[str, Any], human: bool,
                ts: int) -> list[tuple[str, int, int]]:
    """Count one open in the state and the upsert row; returns the unique counter it
    adds, if it is the first (the first human one for human counts)."""
    unique = (UNIQUE_OPENED, int(state.first_open is None),
              int(human and state.first_human_open is None))
    state.first_open = state.first_open or ts
    state.opens += 1
    row["open_count"] += 1
    row["first_open_at"] = row["first_open_at"] or ts
    row["last_open_at"] = max(row["last_open_at"] or 0, ts)
    if human:
        state.first_human_open = state.first_human_open or ts
        state.human_opens += 1
        row["human_open_count"] += 1
        row["first_human_open_at"] = row["first_human_open_at"] or ts
    return [unique] if unique[1] or unique[2] else []


def _count_click(state: _State, row: dict[str, Any], human: bool,
                 ts: int) -> list[tuple[str, int, int]]:
    """`_count_open` for a click."""
    unique = (UNIQUE_CLICKED, int(state.first_click is None),
              int(human and state.first_human_click is None))
    state.first_click = state.first_click or ts
    state.clicks += 1
    row["click_count"] += 1
    row["first_click_at"] = row["first_click_at"] or ts
    row["last_click_at"] = max(row["last_click_at"] or 0, ts)
    if human:
        state.first_human_click = state.first_human_click or ts
        state.human_clicks += 1
        row["human_click_count"] += 1
        row["first_human_click_at"] = row["first_human_click_at"] or ts
    return [unique] if unique[1] or unique[2] else []


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

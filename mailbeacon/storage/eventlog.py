"""Reading the event log: the query side of `GET /v3/{domain}/events` (DESIGN section 9).

A request's parameters become an `EventQuery`; `fetch_page` runs it and returns a `Page`
whose `next` and `previous` queries travel to the client as opaque tokens
(`encode_page` / `decode_page`). Paging is keyset on `events.id`: ids are allocated in
commit order (`db.insert_events`), so walking forward with "id after the last one seen"
sees every event exactly once, even while new ones are being written.

Example::

    query = parse_query({"event": "opened OR clicked", "begin": "1367571600"})
    with db.read() as conn:
        page = fetch_page(conn, "example.com", query)
    next_url = f"/v3/example.com/events/{encode_page(page.next)}"
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, select

from mailbeacon.errors import BadRequest
from mailbeacon.ids import id_from_bytes, id_to_bytes
from mailbeacon.storage.schema import events

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "EventQuery",
    "Page",
    "decode_page",
    "encode_page",
    "fetch_page",
    "parse_query",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 300  # Mailgun's cap

_EVENT_NAME = re.compile(r"[a-z_]{1,24}")
_SEVERITIES = frozenset({"temporary", "permanent"})
# Plain decimal epoch seconds; exponents and signs are not timestamps anyone sends.
_EPOCH = re.compile(r"[0-9]{1,15}(?:\.[0-9]{0,18})?")
_MAX_SECONDS = 253402300800  # 10000-01-01: keeps every bound a valid datetime and BigInteger
_LIMIT = re.compile(r"[0-9]{1,6}")
# Filter values are capped so that every token we hand out also decodes (UTF-8 JSON of
# four 255-character values stays well under the token cap, and under URL limits).
_MAX_TEXT = 255
_TEXT_PARAMS = {
    "event": "event",
    "recipient": "recipient",
    "message_id": "message-id",
    "tag": "tags",
}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,8192}")
_TOKEN_VERSION = 1
_MAX_ID = (1 << 128) - 1


@dataclass(frozen=True)
class EventQuery:
    """One page request over a domain's events, normalised and validated.

    Filters (all optional, combined with AND):
      - `event`: one name or names joined by " OR " ("opened OR clicked"), lowercase.
      - `recipient`: lowercase address, exact match.
      - `message_id`: RFC 5322 Message-ID without the angle brackets.
      - `tag`: one lowercase tag; an event matches when it carries it.
      - `severity`: "temporary" or "permanent".
      - `begin`, `end`: inclusive lower and upper bounds on the event time `ts`
        (microseconds since the epoch). Here `begin <= end` always means lower/upper,
        whatever the direction; `parse_query` maps Mailgun's "start"/"finish" onto them.
        A range with `begin > end` selects nothing.

    Paging: events are ordered by id, `ascending` (oldest first) or not (newest first).
    `cursor` is an event id that is excluded, and `reverse` says on which side of it the
    page lies:
      - `reverse=False` (a "next" page): the first `limit` events *after* `cursor` in the
        query's order (from the start when `cursor` is None).
      - `reverse=True` (a "previous" page): the last `limit` events *before* `cursor` in
        the query's order (the very last ones when `cursor` is None). The database is
        scanned in the opposite order and the rows are flipped back, so items are always
        in the query's order.
    """

    event: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    tag: str | None = None
    severity: str | None = None
    begin: int | None = None
    end: int | None = None
    ascending: bool = False
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    reverse: bool = False

    def __post_init__(self) -> None:
        # Queries also come back from client-held tokens, so the invariants that keep
        # SQL well-formed are checked on every construction, not only in parse_query.
        for attr, param in _TEXT_PARAMS.items():
            text = getattr(self, attr)
            if text is not None and len(text) > _MAX_TEXT:
                raise BadRequest(f"{param} is longer than {_MAX_TEXT} characters")
        if self.event is not None:
            _event_names(self.event)
        if self.severity is not None and self.severity not in _SEVERITIES:
            raise BadRequest("severity must be 'temporary' or 'permanent'")
        if self.tag is not None and (not self.tag or "|" in self.tag):
            raise BadRequest("tags must be a non-empty tag without '|'")
        for name in ("begin", "end"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < _MAX_SECONDS * 1_000_000:
                raise BadRequest(f"{name} is out of range")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
        if self.cursor is not None:
            _check_id(self.cursor)

    @property
    def event_names(self) -> tuple[str, ...]:
        """The event names the `event` filter accepts; empty when there is no filter."""
        return () if self.event is None else _event_names(self.event)

    def first(self) -> EventQuery:
        """The query for the first page in this query's order (Mailgun's paging.first)."""
        return dataclasses.replace(self, cursor=None, reverse=False)

    def last(self) -> EventQuery:
        """The query for the last page in this query's order (Mailgun's paging.last)."""
        return dataclasses.replace(self, cursor=None, reverse=True)


@dataclass(frozen=True)
class Page:
    """Events of one page, in the query's order, and the queries for its neighbours."""

    items: list[dict[str, Any]]
    next: EventQuery
    previous: EventQuery


def parse_query(params: Mapping[str, str]) -> EventQuery:
    """Build a query from Events API parameters; `BadRequest` names a bad parameter.

    Reads event, recipient, message-id, tags, severity, begin, end, ascending (yes/no)
    and limit; ignores anything else; empty values count as absent. begin/end are an
    RFC 2822 date ("Fri, 3 May 2013 09:00:00 -0000") or epoch seconds ("1367571600.5").

    As in Mailgun, `begin` is where the walk starts and `end` where it stops, both
    inclusive: with both given the direction follows from them (ascending when
    begin <= end) and an `ascending` that contradicts them is rejected; with only `begin`
    the default is ascending; otherwise newest first. So "begin=T&ascending=no" means
    events at or before T, newest first, and "end=T" alone means events at or after T,
    newest first.
    """
    values = {k: v.strip() for k, v in params.items() if v.strip()}
    start = _parse_time(values, "begin")
    finish = _parse_time(values, "end")
    ascending = _parse_ascending(values.get("ascending"))
    if start is not None and finish is not None:
        implied = start <= finish
        if start == finish:
            # A single instant has no direction of its own: honour the one asked for.
            ascending = implied if ascending is None else ascending
        elif ascending is None:
            ascending = implied
        elif ascending != implied:
            raise BadRequest("ascending contradicts the order of begin and end")
    elif ascending is None:
        ascending = start is not None
    # The walk starts at `begin` and stops at `end`: which is the lower bound depends on
    # the direction. Bounds are inclusive, so round inwards to whole microseconds.
    lower, upper = (start, finish) if ascending else (finish, start)
    return EventQuery(
        event=_norm_event(values.get("event")),
        recipient=_lower(values.get("recipient")),
        message_id=_norm_message_id(values.get("message-id")),
        tag=_lower(values.get("tags")),
        severity=_lower(values.get("severity")),
        begin=None if lower is None else int(lower.to_integral_value(ROUND_CEILING)),
        end=None if upper is None else int(upper.to_integral_value(ROUND_FLOOR)),
        ascending=ascending,
        limit=_parse_limit(values.get("limit")),
    )


def encode_page(query: EventQuery) -> str:
    """An opaque, URL-safe token holding the whole query (base64url JSON, no padding)."""
    fields = {
        "v": _TOKEN_VERSION,
        "e": query.event,
        "r": query.recipient,
        "m": query.message_id,
        "t": query.tag,
        "s": query.severity,
        "b": query.begin,
        "n": query.end,
        "a": query.ascending,
        "l": query.limit,
        "c": query.cursor,
        "p": query.reverse,
    }
    # Absent filters are left out to keep paging URLs short.
    compact = {k: v for k, v in fields.items() if v is not None}
    # Raw UTF-8 rather than \u escapes: up to 4 bytes a character instead of 12.
    raw = json.dumps(compact, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page(token: str) -> EventQuery:
    """The query inside a token from `encode_page`; `BadRequest` for anything else.

    Tokens come back from clients, so every field is type-checked and re-validated; a
    tampered token can only ask for another valid query of the same domain.
    """
    if not _TOKEN.fullmatch(token) or len(token) % 4 == 1:
        raise _bad_token()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _bad_token() from exc
    if not isinstance(data, dict) or data.get("v") != _TOKEN_VERSION:
        raise _bad_token()
    if set(data) - {"v", "e", "r", "m", "t", "s", "b", "n", "a", "l", "c", "p"}:
        raise _bad_token()
    try:
        return EventQuery(
            event=_norm_event(_opt(data, "e", str)),
            recipient=_lower(_opt(data, "r", str)),
            message_id=_norm_message_id(_opt(data, "m", str)),
            tag=_lower(_opt(data, "t", str)),
            severity=_opt(data, "s", str),
            begin=_opt(data, "b", int),
            end=_opt(data, "n", int),
            ascending=_req(data, "a", bool),
            limit=_req(data, "l", int),
            cursor=_opt(data, "c", str),
            reverse=_req(data, "p", bool),
        )
    except BadRequest as exc:
        raise _bad_token() from exc


def fetch_page(conn: Connection, domain: str, query: EventQuery) -> Page:
    """Run one page of `query` over `domain`'s events.

    An empty page keeps its cursor: asking for `next` again later returns the events
    written since (polling the tail of an ascending walk).
    """
    # A previous page reads the rows just before the cursor, so the scan runs against
    # the query's order and is flipped back below.
    scan_ascending = query.ascending != query.reverse
    conditions: list[ColumnElement[bool]] = [events.c.domain == domain]
    names = query.event_names
    if len(names) == 1:
        conditions.append(events.c.event == names[0])
    elif names:
        conditions.append(events.c.event.in_(names))
    if query.recipient is not None:
        conditions.append(events.c.recipient == query.recipient)
    if query.message_id is not None:
        conditions.append(events.c.message_id == query.message_id)
    if query.tag is not None:
        # tags is stored as "|a|b|": the pipes make this an exact tag match, and
        # autoescape keeps % and _ in the tag literal.
        conditions.append(events.c.tags.contains(f"|{query.tag}|", autoescape=True))
    if query.severity is not None:
        conditions.append(events.c.severity == query.severity)
    if query.begin is not None:
        conditions.append(events.c.ts >= query.begin)
    if query.end is not None:
        conditions.append(events.c.ts <= query.end)
    if query.cursor is not None:
        conditions.append(
            events.c.id > query.cursor if scan_ascending else events.c.id < query.cursor
        )
    stmt = (
        select(events.c.id, events.c.data)
        .where(*conditions)
        .order_by(events.c.id.asc() if scan_ascending else events.c.id.desc())
        .limit(query.limit)
    )
    rows = list(conn.execute(stmt).all())
    if query.reverse:
        rows.reverse()
    items: list[dict[str, Any]] = [json.loads(row.data) for row in rows]
    if rows:
        after = dataclasses.replace(query, cursor=rows[-1].id, reverse=False)
        before = dataclasses.replace(query, cursor=rows[0].id, reverse=True)
    elif query.cursor is None:
        # Nothing matches yet: the first and last pages are the neighbours.
        after, before = query.first(), query.last()
    elif query.reverse:
        # Nothing precedes the cursor, so the next page starts with the cursor's own
        # event: move the exclusive cursor one step back to include it.
        step = _step(query.cursor, up=not query.ascending)
        after = dataclasses.replace(query, cursor=step, reverse=False)
        before = query
    else:
        # Past the end: `next` stays put for polling, and `previous` is the page that
        # ends with the cursor's own event.
        step = _step(query.cursor, up=query.ascending)
        after = query
        before = dataclasses.replace(query, cursor=step, reverse=True)
    return Page(items=items, next=after, previous=before)


def _event_names(expression: str) -> tuple[str, ...]:
    """The names of an "a OR b" expression; BadRequest unless every name is valid."""
    words = expression.split()
    names = words[0::2]
    if not words or len(words) % 2 == 0 or any(w.upper() != "OR" for w in words[1::2]):
        raise BadRequest("event must be an event name or names joined by OR")
    # "or" is the operator, never a name: a bare "OR" is a malformed expression.
    if not all(_EVENT_NAME.fullmatch(name) and name != "or" for name in names):
        raise BadRequest("event must be an event name or names joined by OR")
    return tuple(dict.fromkeys(names))


def _norm_event(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        names = _event_names(value.lower())
    except BadRequest:
        # The message shows what the client sent, not the lowercased copy.
        raise BadRequest(f"event must be an event name or names joined by OR: {value!r}") from None
    return " OR ".join(names)


def _norm_message_id(value: str | None) -> str | None:
    if value is None:
        return None
    # Stored without the angle brackets; clients paste it either way.
    stripped = value.strip().removeprefix("<").removesuffix(">").strip()
    return stripped or None


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def _parse_time(values: Mapping[str, str], name: str) -> Decimal | None:
    """Microseconds since the epoch, exact (not yet rounded), or None when absent."""
    text = values.get(name)
    if text is None:
        return None
    if _EPOCH.fullmatch(text):
        seconds = Decimal(text)
    else:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, OverflowError):
            parsed = None
        if parsed is None:
            raise BadRequest(f"{name} must be an RFC 2822 date or epoch seconds, got {text!r}")
        if parsed.tzinfo is None:
            # parsedate_to_datetime returns a naive value for "-0000": that means UTC.
            parsed = parsed.replace(tzinfo=UTC)
        # RFC 2822 has whole seconds, so the float timestamp is exact.
        seconds = Decimal(int(parsed.timestamp()))
    if not 0 <= seconds < _MAX_SECONDS:
        raise BadRequest(f"{name} must be a date between 1970 and 9999")
    return seconds * 1_000_000


def _parse_ascending(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("yes", "true"):
        return True
    if lowered in ("no", "false"):
        return False
    raise BadRequest("ascending must be 'yes' or 'no'")


def _parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    # A regex rather than int(): int() also takes "+5", " 5" and "1_0".
    if not _LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _check_id(value: str) -> None:
    try:
        canonical = id_from_bytes(id_to_bytes(value)) == value
    except ValueError:
        canonical = False
    if not canonical:
        raise BadRequest("cursor is not an event id")


def _step(cursor: str, *, up: bool) -> str:
    """The id right after (or before) `cursor`, to turn an exclusive bound inclusive."""
    value = int.from_bytes(id_to_bytes(cursor), "big") + (1 if up else -1)
    return id_from_bytes(min(max(value, 0), _MAX_ID).to_bytes(16, "big"))


def _opt(data: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = data.get(key)
    # bool is an int subclass: a token with "l": true must not pass as limit 1.
    if value is not None and type(value) is not kind:
        raise BadRequest(f"token field {key} has the wrong type")
    return value


def _req(data: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = _opt(data, key, kind)
    if value is None:
        raise BadRequest(f"token field {key} is missing")
    return value


def _bad_token() -> BadRequest:
    return BadRequest("page token is not valid")

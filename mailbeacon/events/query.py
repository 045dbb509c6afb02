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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    and_,
    cast,
    func,
    not_,
    or_,
    select,
    true,
)

from mailbeacon.errors import BadRequest
from mailbeacon.events.filters import Filter, parse_filter
from mailbeacon.model.clock import MAX_SECONDS, parse_moment
from mailbeacon.model.ids import id_from_bytes, id_to_bytes
from mailbeacon.storage.schema import event_tags, events, messages

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "PARAMETERS",
    "EventQuery",
    "Filter",
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
_LIMIT = re.compile(r"[0-9]{1,6}")
# Every token we hand out also decodes: eight filters of at most 255 characters (four
# UTF-8 bytes each, control characters refused) and 32 terms stay under this.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,16384}")
_TOKEN_VERSION = 1
_MAX_ID = (1 << 128) - 1


def _event_name(term: str) -> str:
    if not _EVENT_NAME.fullmatch(term) or term == "or":
        raise BadRequest(f"event must be event names joined by OR (or NOT), got {term!r}")
    return term


def _severity(term: str) -> str:
    if term not in _SEVERITIES:
        raise BadRequest("severity must be 'temporary' or 'permanent'")
    return term


def _tag(term: str) -> str:
    if "|" in term:
        raise BadRequest("tags must be tags without '|'")
    return term


def _message_id(term: str) -> str:
    # Stored without the angle brackets; clients paste it either way.
    stripped = term.strip().removeprefix("<").removesuffix(">").strip()
    if not stripped:
        raise BadRequest("message-id must not be empty")
    return stripped


@dataclass(frozen=True)
class _Param:
    """One filter parameter of the Events API: how its terms are read and matched."""

    name: str  # as Mailgun spells it
    attr: str  # EventQuery attribute
    key: str  # key in page tokens
    fold: bool  # case-insensitive values (lowercased), operators in any case
    single: bool  # one value per event
    check: Callable[[str], str]


_PARAMS = (
    _Param("event", "event", "e", True, True, _event_name),
    _Param("recipient", "recipient", "r", True, True, str),
    _Param("message-id", "message_id", "m", False, True, _message_id),
    _Param("tags", "tag", "t", True, False, _tag),
    _Param("severity", "severity", "s", True, True, _severity),
    _Param("from", "sender", "f", False, False, str),
    _Param("to", "to", "o", False, False, str),
    _Param("subject", "subject", "j", False, False, str),
)
_BY_ATTR = {p.attr: p for p in _PARAMS}
# Message headers the from/to/subject filters look in (messages.headers, JSON).
_HEADERS = {"sender": "from", "to": "to", "subject": "subject"}
# Every parameter the Events API takes; anything else is a 400 naming it.
PARAMETERS = frozenset({p.name for p in _PARAMS} | {"begin", "end", "ascending", "limit",
                                                      "pretty"})
# Mailgun filters that have nothing to match here: a 400 says so, not a silent no-op.
_UNSUPPORTED = {"list": "mailing lists are not tracked per event",
                "attachment": "attachment names are not stored with events",
                "size": "message sizes are not stored with events",
                "recipients": "stored (inbound) messages are not kept"}
_TOKEN_KEYS = {"v", "b", "n", "a", "l", "c", "p"} | {p.key for p in _PARAMS}


@dataclass(frozen=True)
class EventQuery:
    """One page request over a domain's events, normalised and validated.

    Filters (all optional, combined with AND) are parsed filter expressions
    (mailbeacon.events.filters), built with `Filter.of(...)` in code or `parse_query`:
      - `event`, `severity`: event names, "temporary"/"permanent" (lowercase).
      - `recipient`: lowercase addresses, exact match.
      - `message_id`: RFC 5322 Message-IDs without the angle brackets.
      - `tag`: lowercase tags; an event matches a term when it carries that tag.
      - `sender`, `to`, `subject`: text found in the message's From, To or Subject
        header (a term matches when the header contains it, ignoring case).
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

    event: Filter | None = None
    recipient: Filter | None = None
    message_id: Filter | None = None
    tag: Filter | None = None
    severity: Filter | None = None
    sender: Filter | None = None
    to: Filter | None = None
    subject: Filter | None = None
    begin: int | None = None
    end: int | None = None
    ascending: bool = False
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    reverse: bool = False

    def __post_init__(self) -> None:
        # Queries also come back from client-held tokens, so the invariants that keep
        # SQL well-formed are checked on every construction, not only in parse_query.
        for param in _PARAMS:
            found = getattr(self, param.attr)
            if found is not None and not isinstance(found, Filter):
                raise BadRequest(f"{param.name} must be a filter expression")
        for name in ("begin", "end"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < MAX_SECONDS * 1_000_000:
                raise BadRequest(f"{name} is out of range")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
        if self.cursor is not None:
            _check_id(self.cursor)

    @property
    def event_names(self) -> tuple[str, ...]:
        """The event names of a plain "a OR b" event filter; empty otherwise."""
        return () if self.event is None else self.event.alternatives or ()

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


def parse_query(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> EventQuery:
    """Build a query from Events API parameters; `BadRequest` names a bad parameter.

    Takes the filters event, recipient, message-id, tags, severity, from, to and subject
    (Mailgun's filter expressions: "opened OR clicked", "NOT failed", '"a phrase"'), begin,
    end, ascending (yes/no), limit, and pretty (ignored: answers are always the same JSON).
    An unknown parameter, or one given twice, is refused by name; empty values count as
    absent. begin/end are an RFC 2822 date ("Fri, 3 May 2013 09:00:00 -0000") or epoch
    seconds ("1367571600.5").

    As in Mailgun, `begin` is where the walk starts and `end` where it stops, both
    inclusive: with both given the direction follows from them (ascending when
    begin <= end) and an `ascending` that contradicts them is rejected; with only `begin`
    the default is ascending; otherwise newest first. So "begin=T&ascending=no" means
    events at or before T, newest first, and "end=T" alone means events at or after T,
    newest first.
    """
    values: dict[str, str] = {}
    for key, value in (params.items() if isinstance(params, Mapping) else params):
        if key in _UNSUPPORTED:
            raise BadRequest(f"filter '{key}' is not supported: {_UNSUPPORTED[key]}")
        if key not in PARAMETERS:
            raise BadRequest(f"unknown parameter '{key}': the Events API takes "
                             f"{', '.join(sorted(PARAMETERS))}")
        if key in values:
            raise BadRequest(f"'{key}' is given more than once: write one expression, "
                             "e.g. 'a OR b'")
        values[key] = value
    values = {k: v.strip() for k, v in values.items() if v.strip()}
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
    f = {p.attr: _parse_param(p, values.get(p.name)) for p in _PARAMS}
    return EventQuery(
        event=f["event"], recipient=f["recipient"], message_id=f["message_id"],
        tag=f["tag"], severity=f["severity"], sender=f["sender"], to=f["to"],
        subject=f["subject"],
        begin=None if lower is None else int(lower.to_integral_value(ROUND_CEILING)),
        end=None if upper is None else int(upper.to_integral_value(ROUND_FLOOR)),
        ascending=ascending,
        limit=_parse_limit(values.get("limit")),
    )


def _parse_param(param: _Param, text: str | None) -> Filter | None:
    if text is None:
        return None
    if param.fold:
        check = param.check
        return parse_filter(param.name, text, fold=True, single=param.single,
                            check=lambda term: check(term.lower()))
    return parse_filter(param.name, text, fold=False, single=param.single, check=param.check)


def encode_page(query: EventQuery) -> str:
    """An opaque, URL-safe token holding the whole query (base64url JSON, no padding)."""
    fields: dict[str, Any] = {
        "v": _TOKEN_VERSION,
        "b": query.begin,
        "n": query.end,
        "a": query.ascending,
        "l": query.limit,
        "c": query.cursor,
        "p": query.reverse,
    }
    for param in _PARAMS:
        found = getattr(query, param.attr)
        if found is not None:
            fields[param.key] = found.to_json()
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
    if set(data) - _TOKEN_KEYS:
        raise _bad_token()
    try:
        f = {p.attr: _token_filter(p, data.get(p.key)) for p in _PARAMS}
        return EventQuery(
            event=f["event"], recipient=f["recipient"], message_id=f["message_id"],
            tag=f["tag"], severity=f["severity"], sender=f["sender"], to=f["to"],
            subject=f["subject"],
            begin=_opt(data, "b", int),
            end=_opt(data, "n", int),
            ascending=_req(data, "a", bool),
            limit=_req(data, "l", int),
            cursor=_opt(data, "c", str),
            reverse=_req(data, "p", bool),
        )
    except BadRequest as exc:
        raise _bad_token() from exc


def _token_filter(param: _Param, data: Any) -> Filter | None:
    if data is None:
        return None
    # Version 1 tokens of earlier releases held the filter as its text.
    if isinstance(data, str):
        return _parse_param(param, data)
    try:
        found = Filter.from_json(data, param.check)
    except ValueError as exc:
        raise _bad_token() from exc
    if param.fold and any(t != t.lower() for c in found.clauses for _, t in c):
        raise _bad_token()
    return found


def fetch_page(conn: Connection, domain: str, query: EventQuery) -> Page:
    """Run one page of `query` over `domain`'s events.

    An empty page keeps its cursor: asking for `next` again later returns the events
    written since (polling the tail of an ascending walk).
    """
    # A previous page reads the rows just before the cursor, so the scan runs against
    # the query's order and is flipped back below.
    scan_ascending = query.ascending != query.reverse
    conditions: list[ColumnElement[bool]] = [events.c.domain == domain]
    for attr, column in (("event", events.c.event), ("recipient", events.c.recipient),
                         ("message_id", events.c.message_id),
                         ("severity", events.c.severity)):
        found = getattr(query, attr)
        if found is not None:
            conditions.append(_equals(column, found))
    for attr, header in _HEADERS.items():
        found = getattr(query, attr)
        if found is not None:
            conditions.append(events.c.message_id.in_(
                _messages_matching(conn, domain, header, found)))
    if query.begin is not None:
        conditions.append(events.c.ts >= query.begin)
    if query.end is not None:
        conditions.append(events.c.ts <= query.end)
    by_tag = _indexed_tag(query)
    more_tags = None if query.tag is None else _tags_condition(query.tag, skip=by_tag)
    if more_tags is not None:
        conditions.append(more_tags)
    stmt = select(events.c.id, events.c.data)
    order: list[Any]
    if by_tag is None:
        stmt = stmt.where(*conditions, *_after(events.c.id, query.cursor, scan_ascending))
        order = [events.c.id]
    else:
        # The event-tag index serves the walk: its rows of (domain, tag) are in id order,
        # so a page deep in the log is an index seek, not a scan of everything after it.
        t = event_tags
        tagged = [t.c.domain == domain, t.c.tag == by_tag,
                  *_after(t.c.event_id, query.cursor, scan_ascending)]
        # Ordered as the primary key (domain, tag, event_id), which the walk reads.
        order = [t.c.domain, t.c.tag, t.c.event_id]
        if len(conditions) == 1:
            # The tag alone: the page is the next `limit` rows of the index.
            page_ids = (select(t.c.event_id).where(*tagged)
                        .order_by(*_directed(order, scan_ascending)).limit(query.limit))
            stmt = stmt.where(events.c.id.in_(page_ids))
            order = [events.c.id]
        elif conn.dialect.name == "postgresql":
            # Each tagged event in index order, checked against the other filters one at a
            # time (a lateral join is a nested loop): the walk stops at `limit` matches.
            # A plain join let the planner merge-join against a backward scan of every
            # event after the cursor.
            walk = select(t.c.domain, t.c.tag, t.c.event_id).where(*tagged).subquery("t")
            # LIMIT 1 (ids are unique) keeps PostgreSQL from flattening the subquery back
            # into a join it plans freely.
            matched = (select(events.c.id, events.c.data)
                       .where(events.c.id == walk.c.event_id, *conditions)
                       .limit(1).lateral("e"))
            stmt = select(matched.c.id, matched.c.data).select_from(
                walk.join(matched, true()))
            order = [walk.c.domain, walk.c.tag, walk.c.event_id]
        else:
            # The same bound on both sides of the join, as planners do not carry it over.
            stmt = (stmt.select_from(t.join(events, events.c.id == t.c.event_id))
                    .where(*tagged, *conditions,
                           *_after(events.c.id, query.cursor, scan_ascending)))
    stmt = stmt.order_by(*_directed(order, scan_ascending)).limit(query.limit)
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


def _after(column: Any, cursor: str | None, ascending: bool) -> list[ColumnElement[bool]]:
    if cursor is None:
        return []
    return [column > cursor if ascending else column < cursor]


def _directed(columns: list[Any], ascending: bool) -> list[Any]:
    """Columns of an ORDER BY; only the last (the id) carries the direction."""
    return [*columns[:-1], columns[-1].asc() if ascending else columns[-1].desc()]


def _equals(column: Any, found: Filter) -> ColumnElement[bool]:
    """A column holding one value per event against a filter of whole values."""
    plain = found.alternatives
    if plain is not None:
        equal: ColumnElement[bool] = (column == plain[0] if len(plain) == 1
                                      else column.in_(plain))
        return equal
    # NULL (no recipient, no severity) is "not X" too.
    return or_(*[and_(*[column.is_distinct_from(term) if negated else column == term
                        for negated, term in clause]) for clause in found.clauses])


def _has_tag(tag: str) -> ColumnElement[bool]:
    # tags is stored as "|a|b|": the pipes make this an exact tag match, and autoescape
    # keeps % and _ in the tag literal.
    return events.c.tags.contains(f"|{tag}|", autoescape=True)


def _indexed_tag(query: EventQuery) -> str | None:
    """The tag whose index drives the page: one every matching event must carry. None
    when the tag filter has alternatives, or a recipient or message-id index serves
    better (their events are few)."""
    if query.tag is None or len(query.tag.clauses) != 1:
        return None
    if query.recipient is not None or query.message_id is not None:
        return None
    return next((term for negated, term in query.tag.clauses[0] if not negated), None)


def _tags_condition(found: Filter, skip: str | None) -> ColumnElement[bool] | None:
    """The tag filter on events.tags, less the term the tag index already holds (None
    when nothing is left)."""
    clauses = []
    for clause in found.clauses:
        parts = [not_(_has_tag(term)) if negated else _has_tag(term)
                 for negated, term in clause if negated or term != skip]
        if not parts:
            return None  # only with one clause: `skip` is a term of the only clause
        clauses.append(and_(*parts))
    return or_(*clauses)


def _messages_matching(conn: Connection, domain: str, header: str, found: Filter) -> Any:
    """Message-IDs of the domain's messages whose `header` matches the filter: each term
    is found anywhere in the header, ignoring case (ASCII letters only on SQLite)."""
    if conn.dialect.name == "postgresql":
        text = func.json_extract_path_text(cast(messages.c.headers, JSON), header)
    else:
        text = func.json_extract(messages.c.headers, f"$.{header}")
    value = func.lower(func.coalesce(text, ""))
    condition = or_(*[and_(*[
        not_(value.contains(term.lower(), autoescape=True)) if negated
        else value.contains(term.lower(), autoescape=True)
        for negated, term in clause]) for clause in found.clauses])
    return select(messages.c.message_id).where(messages.c.domain == domain, condition)


def _parse_time(values: Mapping[str, str], name: str) -> Decimal | None:
    """Microseconds since the epoch, exact (not yet rounded), or None when absent."""
    text = values.get(name)
    return None if text is None else parse_moment(text, name)


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

"""Tests for mailbeacon.events.query: parameters, page tokens and keyset paging."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailbeacon.errors import BadRequest
from mailbeacon.events.query import (
    MAX_LIMIT,
    EventQuery,
    Filter,
    Page,
    decode_page,
    encode_page,
    fetch_page,
    parse_query,
)
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database, insert_events
from mailbeacon.storage.schema import domains, event_tags, events, messages

T0 = 1_367_571_600_000_000  # Fri, 3 May 2013 09:00:00 UTC, in microseconds
DOMAIN = "example.com"


# The `db` fixture (tests/conftest.py): a migrated database of each backend.


@dataclass(frozen=True)
class Ev:
    """The fields of one event to insert; the defaults make a plain delivery."""

    ts: int = T0
    event: str = "delivered"
    recipient: str | None = "alice@example.net"
    message_id: str | None = "m1@example.com"
    severity: str | None = None
    tags: tuple[str, ...] = ()
    domain: str = DOMAIN


def _row(ev: Ev) -> dict[str, Any]:
    return {
        "domain": ev.domain,
        "ts": ev.ts,
        "event": ev.event,
        "recipient": ev.recipient,
        "message_id": ev.message_id,
        "delivery_id": None,
        "severity": ev.severity,
        "tags": "|" + "|".join(ev.tags) + "|" if ev.tags else "",
        "data": {
            "event": ev.event,
            "timestamp": ev.ts / 1e6,
            "recipient": ev.recipient,
            "tags": list(ev.tags),
            "message": {"headers": {"message-id": ev.message_id}},
        },
    }


def add(db: Database, *evs: Ev) -> list[str]:
    """Insert events in one transaction; their ids, in the order given."""
    with db.write() as conn:
        return insert_events(conn, [_row(ev) for ev in evs])


def fetch(db: Database, query: EventQuery, domain: str = DOMAIN) -> Page:
    with db.read() as conn:
        return fetch_page(conn, domain, query)


def ids(page: Page) -> list[str]:
    return [item["id"] for item in page.items]


def walk(db: Database, query: EventQuery, domain: str = DOMAIN) -> list[list[str]]:
    """Follow `next` (or `previous` for a reverse query) until an empty page."""
    pages: list[list[str]] = []
    while True:
        page = fetch(db, query, domain)
        if not page.items:
            return pages
        pages.append(ids(page))
        query = page.previous if query.reverse else page.next


def query(**params: str) -> EventQuery:
    return parse_query(params)


def F(name: str, text: str) -> Filter:  # noqa: N802
    """The filter of one Events API parameter, as parse_query reads it."""
    found = getattr(parse_query({name: text}), {"message-id": "message_id", "tags": "tag",
                                                 "from": "sender"}.get(name, name))
    assert isinstance(found, Filter)
    return found


# --- parse_query ---------------------------------------------------------------------


def test_defaults_are_newest_first_100() -> None:
    assert parse_query({}) == EventQuery(ascending=False, limit=100)


def test_filters_are_normalised() -> None:
    q = parse_query(
        {
            "event": "Opened or CLICKED OR opened",
            "recipient": " Alice@Example.NET ",
            "message-id": "<M1@example.com>",
            "tags": "Newsletter",
            "severity": "Permanent",
            "pretty": "yes",  # Mailgun's pretty-printing: accepted, changes nothing
        }
    )
    assert q.event == Filter.of("opened", "clicked")
    assert q.event_names == ("opened", "clicked")
    assert q.recipient == Filter.of("alice@example.net")
    assert q.message_id == Filter.of("M1@example.com")
    assert q.tag == Filter.of("newsletter")
    assert q.severity == Filter.of("permanent")


def test_empty_values_count_as_absent() -> None:
    assert parse_query({"event": "", "recipient": "  ", "limit": ""}) == EventQuery()


def test_message_id_without_brackets() -> None:
    assert query(**{"message-id": "m1@example.com"}).message_id == Filter.of("m1@example.com")


@pytest.mark.parametrize(("name", "words"), [
    ("subjekt", "unknown parameter 'subjekt'"),
    ("tag", "unknown parameter 'tag'"),
    ("size", "filter 'size' is not supported"),
    ("list", "filter 'list' is not supported"),
])
def test_unknown_parameters_are_refused_by_name(name: str, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        parse_query({name: "x"})


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(BadRequest, match="'tags' is given more than once"):
        parse_query([("tags", "a"), ("tags", "b")])


@pytest.mark.parametrize(("name", "text", "clauses"), [
    ("event", "NOT opened", (((True, "opened"),),)),
    ("event", "not opened and not Clicked", (((True, "opened"), (True, "clicked")),)),
    ("tags", "a b OR NOT c", (((False, "a"), (False, "b")), ((True, "c"),))),
    ("tags", "a AND b", (((False, "a"), (False, "b")),)),
    ("subject", '"Weekly digest" OR sale', (((False, "Weekly digest"),), ((False, "sale"),))),
    # Lower-case words are words in text fields: only OR, AND, NOT are operators there.
    ("subject", "to be or not", (((False, "to"), (False, "be"), (False, "or"),
                                  (False, "not")),)),
    ("from", "NOT bob@example.com", (((True, "bob@example.com"),),)),
])
def test_filter_expressions(name: str, text: str,
                            clauses: tuple[tuple[tuple[bool, str], ...], ...]) -> None:
    assert F(name, text).clauses == clauses


@pytest.mark.parametrize(("name", "text", "words"), [
    ("subject", '"open', "quote is not closed"),
    ("subject", 'a ""', "empty term"),
    ("subject", "a OR", "ends without a term"),
    ("subject", "OR a", "between two terms"),
    ("subject", "NOT NOT a", "NOT must be followed"),
    ("subject", "a\x00b", "control characters"),
    ("severity", "permanent temporary", "OR"),
    ("tags", " OR ".join(f"t{i}" for i in range(33)), "more than 32 terms"),
])
def test_bad_filter_expressions(name: str, text: str, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        parse_query({name: text})


@pytest.mark.parametrize(
    "event", ["OR", "opened OR", "opened clicked", "opened AND clicked", "open-ed", "x" * 25,
              "NOT"]
)
def test_bad_event(event: str) -> None:
    with pytest.raises(BadRequest, match="event"):
        query(event=event)


@pytest.mark.parametrize(
    ("name", "value"), [("severity", "fatal"), ("tags", "a|b"), ("ascending", "maybe")]
)
def test_bad_filter_values(name: str, value: str) -> None:
    with pytest.raises(BadRequest, match=name.rstrip("s")):
        parse_query({name: value})


@pytest.mark.parametrize("limit", ["1", "300", "42"])
def test_limit_in_bounds(limit: str) -> None:
    assert query(limit=limit).limit == int(limit)


@pytest.mark.parametrize("limit", ["0", "301", "-1", "+5", "1.5", "1_0", "ten", "9" * 40])
def test_limit_out_of_bounds(limit: str) -> None:
    with pytest.raises(BadRequest, match="limit must be"):
        query(limit=limit)


@pytest.mark.parametrize(
    "text",
    [
        "Fri, 3 May 2013 09:00:00 -0000",
        "Fri, 3 May 2013 09:00:00 +0000",
        "Fri, 3 May 2013 11:00:00 +0200",
        "Fri, 3 May 2013 09:00:00 GMT",
        "1367571600",
        "1367571600.0",
    ],
)
def test_begin_forms(text: str) -> None:
    assert query(begin=text).begin == T0


def test_fractional_epoch_rounds_inwards() -> None:
    # Both bounds are inclusive, so sub-microsecond parts round into the range.
    q = query(begin="1367571600.0000015", end="1367571601.0000015")
    assert (q.begin, q.end) == (T0 + 2, T0 + 1_000_001)
    assert query(begin="1367571600.123456").begin == T0 + 123_456


@pytest.mark.parametrize("name", ["begin", "end"])
@pytest.mark.parametrize(
    "text", ["yesterday", "2013-05-03", "Fri, 3 May 2013", "-5", "1e9", "nan", "99999999999999"]
)
def test_bad_time(name: str, text: str) -> None:
    with pytest.raises(BadRequest, match=name):
        parse_query({name: text})


def test_ascending_defaults() -> None:
    t1, t2 = "1367571600", "1367575200"
    only_begin = query(begin=t1)
    assert (only_begin.ascending, only_begin.begin, only_begin.end) == (True, T0, None)
    forward = query(begin=t1, end=t2)
    assert (forward.ascending, forward.begin, forward.end) == (True, T0, T0 + 3600 * 10**6)
    # end before begin: walk back in time; bounds are stored lower/upper.
    backward = query(begin=t2, end=t1)
    assert (backward.ascending, backward.begin, backward.end) == (False, T0, T0 + 3600 * 10**6)
    assert query().ascending is False
    # end alone: Mailgun starts at "now" and walks back to end.
    only_end = query(end=t1)
    assert (only_end.ascending, only_end.begin, only_end.end) == (False, T0, None)


def test_explicit_ascending() -> None:
    t1, t2 = "1367571600", "1367575200"
    # begin is where the walk starts: going back from it bounds the range above.
    back = query(begin=t1, ascending="no")
    assert (back.ascending, back.begin, back.end) == (False, None, T0)
    up_to = query(end=t1, ascending="YES")
    assert (up_to.ascending, up_to.begin, up_to.end) == (True, None, T0)
    assert query(begin=t1, end=t2, ascending="yes").ascending is True
    assert query(begin=t1, end=t1, ascending="no").ascending is False
    assert query(begin=t1, end=t1).ascending is True
    with pytest.raises(BadRequest, match="ascending"):
        query(begin=t1, end=t2, ascending="no")


def test_constructor_validates() -> None:
    with pytest.raises(BadRequest, match="limit"):
        EventQuery(limit=MAX_LIMIT + 1)
    with pytest.raises(BadRequest, match="cursor"):
        EventQuery(cursor="not-an-id")
    with pytest.raises(BadRequest, match="cursor"):
        EventQuery(cursor=new_id().upper())


# --- page tokens ---------------------------------------------------------------------

names = st.sampled_from(["opened", "clicked", "failed", "list_member_uploaded"])
literals = st.tuples(st.booleans(), st.text(min_size=1, max_size=40))
texts = st.lists(st.lists(literals, min_size=1, max_size=3).map(tuple), min_size=1,
                 max_size=3).map(lambda c: Filter(tuple(c)))
queries = st.builds(
    EventQuery,
    event=st.none() | st.lists(names, min_size=1, max_size=3, unique=True).map(
        lambda n: Filter.of(*n)),
    recipient=st.none() | st.emails().map(str.lower).map(Filter.of),
    message_id=st.none()
    | st.text(min_size=1, max_size=255).filter(
        lambda s: s.strip().removeprefix("<").removesuffix(">").strip() == s).map(Filter.of),
    tag=st.none() | st.text(min_size=1, max_size=200).map(str.lower).filter(
        lambda s: "|" not in s and s == s.lower()).map(Filter.of),
    severity=st.none() | st.sampled_from(["temporary", "permanent"]).map(Filter.of),
    sender=st.none() | texts,
    subject=st.none() | texts,
    begin=st.none() | st.integers(0, 2**57),
    end=st.none() | st.integers(0, 2**57),
    ascending=st.booleans(),
    limit=st.integers(1, MAX_LIMIT),
    cursor=st.none() | st.integers(0, 2**62).map(lambda us: new_id(us)),
    reverse=st.booleans(),
)


@given(queries)
def test_token_round_trip(q: EventQuery) -> None:
    token = encode_page(q)
    assert token.isascii() and "=" not in token
    assert all(c.isalnum() or c in "-_" for c in token)
    assert decode_page(token) == q


def test_longest_query_round_trips() -> None:
    big = Filter.of("\U0001f4e7" * 255)  # four UTF-8 bytes each
    q = EventQuery(
        event=Filter.of(*["abcdefghijklmnopqrstuvw" + c for c in "abcdefghi"]),
        recipient=big,
        message_id=big,
        tag=big,
        severity=Filter.of("temporary"),
        sender=F("from", " ".join(["\U0001f4e7" * 6] * 32)[:255]),
        to=big,
        subject=F("subject", " ".join(["\U0001f4e7" * 6] * 32)[:255]),
        begin=0,
        end=2**57,
        cursor=new_id(),
    )
    assert decode_page(encode_page(q)) == q
    with pytest.raises(BadRequest, match="tags is longer"):
        parse_query({"tags": "x" * 256})
    with pytest.raises(BadRequest, match="message-id is longer"):
        parse_query({"message-id": "x" * 256})


def _token(data: Any) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _fields(token: str) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return fields


GOOD = _fields(encode_page(EventQuery()))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!!",
        "abc",
        "a",
        "é",
        "a" * 5000,
        _token([1, 2]),
        _token("x"),
        _token({**GOOD, "v": 2}),
        _token({**GOOD, "l": 0}),
        _token({**GOOD, "l": True}),
        _token({**GOOD, "l": "100"}),
        _token({**GOOD, "a": 1}),
        _token({k: v for k, v in GOOD.items() if k != "a"}),
        _token({**GOOD, "c": "../../etc"}),
        _token({**GOOD, "e": "drop table"}),
        _token({**GOOD, "e": [["opened"], []]}),
        _token({**GOOD, "e": [[["Opened"]]]}),
        _token({**GOOD, "e": [[["opened", "x"]]]}),
        _token({**GOOD, "j": [[1]]}),
        _token({**GOOD, "j": [["a"]] * 33}),
        _token({**GOOD, "j": []}),
        _token({**GOOD, "s": "fatal"}),
        _token({**GOOD, "b": -1}),
        _token({**GOOD, "b": 1e300}),
        _token({**GOOD, "zz": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe{").decode(),
        base64.urlsafe_b64encode(b"[" * 3000).decode(),
    ],
)
def test_decode_garbage(token: str) -> None:
    with pytest.raises(BadRequest, match="page token"):
        decode_page(token)


@given(st.text() | st.binary().map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_decode_never_crashes(token: str) -> None:
    with contextlib.suppress(BadRequest):
        decode_page(token)


# --- fetch_page: filters -------------------------------------------------------------


def test_each_filter(db: Database) -> None:
    ev = Ev()
    (
        plain,
        opened,
        clicked,
        bob,
        other_msg,
        tagged,
        temp,
        perm,
        _elsewhere,
    ) = add(
        db,
        ev,
        replace(ev, event="opened"),
        replace(ev, event="clicked"),
        replace(ev, recipient="bob@example.net"),
        replace(ev, message_id="m2@example.com"),
        replace(ev, tags=("news", "promo")),
        replace(ev, event="failed", severity="temporary"),
        replace(ev, event="failed", severity="permanent"),
        replace(ev, domain="other.example"),
    )
    everything = [plain, opened, clicked, bob, other_msg, tagged, temp, perm]

    def got(**params: str) -> list[str]:
        return ids(fetch(db, query(ascending="yes", **params)))

    assert got() == everything
    assert got(event="opened") == [opened]
    assert got(event="opened OR clicked") == [opened, clicked]
    assert got(event="opened or failed") == [opened, temp, perm]
    assert got(recipient="BOB@example.net") == [bob]
    assert got(**{"message-id": "<m2@example.com>"}) == [other_msg]
    assert got(**{"message-id": "m2@example.com"}) == [other_msg]
    assert got(tags="PROMO") == [tagged]
    assert got(tags="news") == [tagged]
    assert got(tags="new") == []  # whole tags only
    assert got(severity="temporary") == [temp]
    assert got(event="failed", severity="permanent") == [perm]
    assert got(event="failed", recipient="bob@example.net") == []
    assert got(event="NOT failed") == [plain, opened, clicked, bob, other_msg, tagged]
    assert got(event="NOT failed AND NOT delivered") == [opened, clicked]
    assert got(severity="NOT permanent") == [plain, opened, clicked, bob, other_msg, tagged,
                                             temp]
    assert got(recipient="NOT alice@example.net") == [bob]
    assert got(tags="NOT promo") == [plain, opened, clicked, bob, other_msg, temp, perm]
    assert got(tags="news promo") == [tagged]
    assert got(tags="news NOT promo") == []
    assert got(tags="nothing OR news") == [tagged]
    assert ids(fetch(db, query(), domain="other.example")) == [_elsewhere]
    assert ids(fetch(db, query(), domain="nobody.example")) == []


def test_tag_wildcards_are_literal(db: Database) -> None:
    percent, underscore, plain, pipes = add(
        db,
        Ev(tags=("50%off",)),
        Ev(tags=("a_b",)),
        Ev(tags=("axb", "50off")),
        Ev(tags=("x", "y")),
    )
    asc = {"ascending": "yes"}
    assert ids(fetch(db, query(tags="50%off", **asc))) == [percent]
    assert ids(fetch(db, query(tags="a_b", **asc))) == [underscore]
    assert ids(fetch(db, query(tags="%", **asc))) == []
    assert ids(fetch(db, query(tags="_", **asc))) == []
    assert ids(fetch(db, query(tags="axb", **asc))) == [plain]
    assert ids(fetch(db, query(tags="x", **asc))) == [pipes]


def test_time_range_is_inclusive(db: Database) -> None:
    second = 1_000_000
    before, at_begin, inside, at_end, after = add(
        db, *(Ev(ts=T0 + k * second - (k == 0)) for k in range(5))
    )
    assert before  # its ts is one microsecond before begin
    begin, end = str((T0 + second) // second), str((T0 + 3 * second) // second)
    assert ids(fetch(db, query(begin=begin, end=end))) == [at_begin, inside, at_end]
    assert ids(fetch(db, query(begin=end, end=begin))) == [at_end, inside, at_begin]
    assert ids(fetch(db, query(begin=begin))) == [at_begin, inside, at_end, after]
    assert ids(fetch(db, query(begin=begin, ascending="no"))) == [at_begin, before]
    rfc = "Fri, 3 May 2013 09:00:03 -0000"
    assert ids(fetch(db, query(end=rfc, ascending="yes"))) == [before, at_begin, inside, at_end]


def test_range_filters_on_ts_but_orders_by_id(db: Database) -> None:
    # Events can be recorded late: id order (commit order) differs from ts order.
    late, early = add(db, Ev(ts=T0 + 5), Ev(ts=T0 + 1))
    assert ids(fetch(db, query(begin=str(T0 / 1e6)))) == [late, early]
    assert ids(fetch(db, query(ascending="no"))) == [early, late]


# --- fetch_page: order and paging ----------------------------------------------------


def test_directions(db: Database) -> None:
    created = add(db, *(Ev(ts=T0 + i) for i in range(5)))
    assert ids(fetch(db, query(ascending="yes"))) == created
    assert ids(fetch(db, query(ascending="no"))) == created[::-1]
    assert ids(fetch(db, query())) == created[::-1]


@pytest.mark.parametrize("ascending", ["yes", "no"])
@pytest.mark.parametrize("limit", [1, 3, 10, 11])
def test_walk_next_sees_each_event_once(db: Database, ascending: str, limit: int) -> None:
    created = add(db, *(Ev(ts=T0 + i) for i in range(10)))
    expected = created if ascending == "yes" else created[::-1]
    pages = walk(db, query(ascending=ascending, limit=str(limit)))
    assert list(itertools.chain(*pages)) == expected
    assert all(len(p) == limit for p in pages[:-1])
    # ... and backwards from the last page via previous
    back = walk(db, query(ascending=ascending, limit=str(limit)).last())
    assert list(itertools.chain(*reversed(back))) == expected
    assert all(len(p) == limit for p in back[:-1])


def test_limit_max_pages(db: Database) -> None:
    created = add(db, *(Ev(ts=T0) for _ in range(MAX_LIMIT + 1)))
    first = fetch(db, query(ascending="yes", limit=str(MAX_LIMIT)))
    assert ids(first) == created[:MAX_LIMIT]
    assert ids(fetch(db, first.next)) == created[MAX_LIMIT:]
    assert len(fetch(db, query()).items) == 100


@pytest.mark.parametrize("ascending", [True, False])
def test_previous_gives_the_page_before(db: Database, ascending: bool) -> None:
    created = add(db, *(Ev(ts=T0 + i) for i in range(7)))
    order = created if ascending else created[::-1]
    p1 = fetch(db, EventQuery(ascending=ascending, limit=3))
    p2 = fetch(db, decode_page(encode_page(p1.next)))  # as a client would
    p3 = fetch(db, p2.next)
    assert [ids(p1), ids(p2), ids(p3)] == [order[:3], order[3:6], order[6:]]
    assert ids(fetch(db, p3.previous)) == order[3:6]
    assert ids(fetch(db, p2.previous)) == order[:3]
    assert fetch(db, p3.previous).next == p2.next
    # Before the first page there is nothing; its `next` is the first page again.
    before_first = fetch(db, p1.previous)
    assert before_first.items == []
    assert before_first.previous == p1.previous
    assert ids(fetch(db, before_first.next)) == order[:3]
    # Past the last page: `previous` is the page ending with the last event.
    after_last = fetch(db, p3.next)
    assert after_last.items == [] and after_last.next == p3.next
    assert ids(fetch(db, after_last.previous)) == order[4:]


def test_empty_result_links_first_and_last(db: Database) -> None:
    page = fetch(db, query(event="opened"))
    assert page.items == []
    assert page.next == query(event="opened")
    assert page.previous == query(event="opened").last()


def test_polling_the_tail_returns_new_events(db: Database) -> None:
    (first,) = add(db, Ev())
    page = fetch(db, query(ascending="yes"))
    assert ids(page) == [first]
    tail = fetch(db, page.next)
    assert tail.items == [] and tail.next == page.next
    later = add(db, Ev(), Ev())
    assert ids(fetch(db, tail.next)) == later


@pytest.mark.parametrize("ascending", [True, False])
def test_walk_during_concurrent_inserts(db: Database, ascending: bool) -> None:
    existing = add(db, *(Ev(ts=T0 + i) for i in range(60)))
    writers_running = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []
    inserted: list[str] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        try:
            for n in itertools.count():
                if stop.is_set() or n >= 200:
                    return
                new = add(db, *(Ev(ts=T0 + 1000 + n, recipient=f"w{worker}@x") for _ in range(2)))
                with lock:
                    inserted.extend(new)
                writers_running.set()
                time.sleep(0.001)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
            writers_running.set()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    seen: list[str] = []
    pages_during_writes = 0
    q = EventQuery(ascending=ascending, limit=7)
    try:
        assert writers_running.wait(10)
        while True:
            live = not stop.is_set()
            page = fetch(db, q)
            pages_during_writes += live
            seen.extend(ids(page))
            q = page.next
            if len(seen) >= len(existing) + 40:
                stop.set()  # enough overlap: let the writers finish
            if not page.items:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    # Whatever was written after the walk reached the tail is still ahead of its cursor.
    seen.extend(itertools.chain(*walk(db, q)))
    assert not errors, errors
    assert pages_during_writes > 1
    assert len(seen) == len(set(seen)), "an event was returned twice"
    assert seen == sorted(seen, reverse=not ascending)
    assert set(existing) <= set(seen)
    everything = set(existing) | set(inserted)
    if ascending:
        # The forward walk also catches everything written while it ran.
        assert set(seen) == everything
    else:
        # A backward walk covers exactly what precedes its first event.
        assert set(seen) == {id_ for id_ in everything if id_ <= seen[0]}


# --- property: pages concatenate to the filtered, ordered list -----------------------

_counter = itertools.count()
event_specs = st.lists(
    st.builds(
        Ev,
        ts=st.integers(T0, T0 + 20),
        event=st.sampled_from(["delivered", "opened", "clicked", "failed"]),
        recipient=st.sampled_from([None, "a@x.org", "b@x.org"]),
        message_id=st.sampled_from([None, "m1@x", "m2@x"]),
        severity=st.sampled_from([None, "temporary", "permanent"]),
        tags=st.lists(st.sampled_from(["a", "b", "x%y", "x_y"]), max_size=3, unique=True).map(
            tuple
        ),
        domain=st.sampled_from(["one", "two"]),
    ),
    max_size=25,
)
def _filters(name: str, texts: list[str]) -> Any:
    return st.sampled_from([None, *texts]).map(lambda t: None if t is None else F(name, t))


query_specs = st.builds(
    EventQuery,
    event=_filters("event", ["opened", "opened OR clicked", "failed OR delivered",
                             "NOT opened", "NOT opened AND NOT failed"]),
    recipient=_filters("recipient", ["a@x.org", "NOT a@x.org"]),
    message_id=_filters("message-id", ["m1@x", "m1@x OR m2@x"]),
    tag=_filters("tags", ["a", "x%y", "x_y", "%", "a b", "a NOT b", "NOT a", "a OR b",
                          "x_y OR NOT a"]),
    severity=_filters("severity", ["permanent", "NOT permanent"]),
    begin=st.none() | st.integers(T0, T0 + 20),
    end=st.none() | st.integers(T0, T0 + 20),
    ascending=st.booleans(),
    limit=st.integers(1, 7),
)


def _holds(found: Filter | None, matches: Any) -> bool:
    """Whether a filter holds, given `matches(term)` for one term."""
    return found is None or any(all(matches(t) != negated for negated, t in clause)
                                for clause in found.clauses)


def _matches(ev: Ev, q: EventQuery) -> bool:
    return (
        _holds(q.event, lambda t: ev.event == t)
        and _holds(q.recipient, lambda t: ev.recipient == t)
        and _holds(q.message_id, lambda t: ev.message_id == t)
        and _holds(q.tag, lambda t: t in ev.tags)
        and _holds(q.severity, lambda t: ev.severity == t)
        and (q.begin is None or ev.ts >= q.begin)
        and (q.end is None or ev.ts <= q.end)
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(evs=event_specs, q=query_specs)
def test_pages_concatenate_to_filtered_list(db: Database, evs: Sequence[Ev], q: EventQuery) -> None:
    # Fresh domains per example: the database outlives hypothesis' examples.
    prefix = f"p{next(_counter)}-"
    evs = [replace(ev, domain=prefix + ev.domain) for ev in evs]
    created = add(db, *evs) if evs else []
    domain = prefix + "one"
    expected = [
        id_ for id_, ev in zip(created, evs, strict=True) if ev.domain == domain and _matches(ev, q)
    ]
    if not q.ascending:
        expected.reverse()
    assert list(itertools.chain(*walk(db, q, domain))) == expected
    assert list(itertools.chain(*reversed(walk(db, q.last(), domain)))) == expected


# --- header filters (from, to, subject) and the tag index ----------------------------


def _message(db: Database, message_id: str, **headers: str) -> None:
    """A stored message whose headers the from/to/subject filters read."""
    with db.write() as conn:
        if conn.execute(select(domains.c.name).where(domains.c.name == DOMAIN)).first() is None:
            conn.execute(domains.insert().values(name=DOMAIN, id=new_id(), created_at=0))
        conn.execute(messages.insert().values(
            id=new_id(), domain=DOMAIN, message_id=message_id, created_at=0, sender="s@x",
            headers=json.dumps({"message-id": message_id, **headers}), tags="[]",
            user_variables="{}", options="{}", mime=b""))


def test_header_filters(db: Database) -> None:
    _message(db, "m1@x", **{"from": "Shop <news@shop.example>", "to": "alice@example.net",
                            "subject": "Weekly digest: 50% off"})
    _message(db, "m2@x", **{"from": "Bob <bob@example.org>",
                            "to": "carol@example.net, dave@example.net",
                            "subject": "Gr\u00fc\u00dfe und weekly notes"})
    one, two, other = add(db, Ev(message_id="m1@x"), Ev(message_id="m2@x"),
                          Ev(message_id="m3@x"))

    def got(**params: str) -> list[str]:
        return ids(fetch(db, query(ascending="yes", **params)))

    assert got(**{"from": "news@shop.example"}) == [one]
    assert got(**{"from": "NEWS@Shop.Example"}) == [one]  # case does not matter
    assert got(**{"from": "NOT bob@example.org"}) == [one]
    assert got(to="dave@example.net") == [two]
    assert got(to="example.net") == [one, two]
    assert got(subject="weekly") == [one, two]
    assert got(subject='"weekly digest"') == [one]
    assert got(subject="weekly notes") == [two]  # both words, anywhere
    assert got(subject='"weekly notes"') == [two]
    assert got(subject="50%") == [one]  # % and _ are literal
    assert got(subject="5_%") == []
    assert got(subject="gr\u00fc\u00dfe") == [two]
    assert got(subject="digest OR notes", **{"from": "bob"}) == [two]
    assert other not in got(subject="NOT digest")  # no stored message: no headers to match


def test_tag_filter_reads_the_tag_index(db: Database) -> None:
    created = add(db, *(Ev(ts=T0 + i, tags=("promo",) if i % 3 == 0 else ("news",))
                        for i in range(30)))
    promo = [id_ for i, id_ in enumerate(created) if i % 3 == 0]
    with db.read() as conn:
        rows = conn.execute(select(event_tags.c.event_id, event_tags.c.tag)
                            .order_by(event_tags.c.event_id)).all()
    assert [(r.event_id, r.tag) for r in rows if r.tag == "promo"] == [(i, "promo")
                                                                      for i in promo]
    assert list(itertools.chain(*walk(db, query(tags="promo", limit="4")))) == promo[::-1]
    assert ids(fetch(db, query(tags="promo", event="delivered", ascending="yes"))) == promo
    # Only the index knows the tags: a walk that reads events.tags would find them all.
    with db.write() as conn:
        conn.execute(event_tags.delete().where(event_tags.c.event_id == promo[0]))
    assert promo[0] not in ids(fetch(db, query(tags="promo")))
    assert promo[0] in ids(fetch(db, query(tags="promo OR nothing")))  # read from events


def test_event_tags_go_with_their_events(db: Database) -> None:
    kept, gone = add(db, Ev(tags=("a", "b")), Ev(tags=("a",), recipient="gone@example.net"))
    with db.write() as conn:
        conn.execute(events.delete().where(events.c.id == gone))
    with db.read() as conn:
        rows = conn.execute(select(event_tags.c.event_id, event_tags.c.tag)
                            .order_by(event_tags.c.tag)).all()
    assert [(r.event_id, r.tag) for r in rows] == [(kept, "a"), (kept, "b")]

"""The hit recorder: group commit for opens and clicks (DESIGN section 3).

A request hands its hit to `Recorder.record` and waits. The recorder commits everything
that is waiting in one transaction, in a worker thread, then wakes those requests; hits
that arrived meanwhile form the next batch, which starts as soon as the commit ends. No
fixed timer: under light load a hit is committed at once, under heavy load batches grow.
The same transaction writes the events, the per-recipient state and the stats counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from mailbeacon import suppressions
from mailbeacon.events import (
    UNIQUE_CLICKED,
    UNIQUE_OPENED,
    EventRecord,
    EventType,
    MessageInfo,
    build_event,
)
from mailbeacon.storage.db import Database, upsert_add
from mailbeacon.storage.records import write_events
from mailbeacon.storage.schema import deliveries, messages, recipient_state
from mailbeacon.suppressions import ALL_SCOPE, SuppressionKind
from mailbeacon.track.tokens import Kind

log = logging.getLogger("mailbeacon.recorder")


@dataclass(frozen=True)
class Hit:
    kind: Kind  # OPEN, CLICK or UNSUBSCRIBE
    delivery_id: str
    ts: int  # microseconds
    ip: str
    user_agent: str
    method: str = "GET"
    url: str = ""
    link_index: int = 0
    scope: str = ""  # unsubscribes: "" the domain, "tag", "list" (see track/tokens.py)


@dataclass
class _State:
    first_open: int | None = None
    first_click: int | None = None


class Recorder:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[Hit, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        # One thread: commits are serial anyway, and a single writer avoids lock fights.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "recorder")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # commits so far; hits / batches is the group-commit factor
        self.hits = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder")

    async def stop(self) -> None:
        """Commit what is waiting, then stop."""
        if self._task is not None:
            while self._pending:
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def record(self, hit: Hit) -> None:
        """Return once the hit is committed; raise if the commit failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((hit, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await loop.run_in_executor(self._executor, self.commit, [h for h, _ in batch])
            except Exception as exc:
                log.error("could not record %d hits: %s", len(batch), exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                self.batches += 1
                self.hits += len(batch)
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def commit(self, hits: Sequence[Hit]) -> None:
        """Store a batch of hits in one transaction (runs in the recorder thread)."""
        ids = sorted({h.delivery_id for h in hits})
        with self._db.write() as conn:
            known = {
                r.delivery_id: r for r in conn.execute(
                    select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient,
                           messages.c.domain, messages.c.message_id, messages.c.sender,
                           messages.c.headers, messages.c.tags, messages.c.user_variables)
                    .join(messages, messages.c.id == deliveries.c.message_id)
                    .where(deliveries.c.id.in_(ids)))
            }
            states = {
                r.delivery_id: _State(r.first_open_at, r.first_click_at)
                for r in conn.execute(
                    select(recipient_state.c.delivery_id, recipient_state.c.first_open_at,
                           recipient_state.c.first_click_at)
                    .where(recipient_state.c.delivery_id.in_(ids)))
            }
            records: list[EventRecord] = []
            changes: dict[str, dict[str, Any]] = {}
            for hit in hits:
                row = known.get(hit.delivery_id)
                if row is None:  # signed by us, but the message is gone (retention)
                    log.info("hit for unknown delivery %s ignored", hit.delivery_id)
                    continue
                info = MessageInfo.from_row(row)
                if hit.kind is Kind.UNSUBSCRIBE:
                    records.append(_unsubscribe(conn, hit, info, row.recipient))
                    continue
                state = states.setdefault(hit.delivery_id, _State())
                change = changes.setdefault(hit.delivery_id, _blank_change(hit, info.domain))
                records.extend(_events_for(hit, info, row.recipient, state, change))
            upsert_add(
                conn, recipient_state, [changes[k] for k in sorted(changes)],
                keys=("delivery_id",), add=("open_count", "click_count"),
                latest=("last_open_at", "last_click_at"),
                earliest=("first_open_at", "first_click_at"),
            )
            write_events(conn, records)


def _unsubscribe(conn: Connection, hit: Hit, info: MessageInfo,
                 recipient: str) -> EventRecord:
    """Suppress the recipient at the token's scope; the event says which."""
    scopes = [ALL_SCOPE]
    if hit.scope == "tag" and info.tags:
        scopes = list(info.tags)
    elif hit.scope == "list" and info.headers.get("list-id"):
        scopes = [f"list:{info.headers['list-id']}"]
    for scope in scopes:
        suppressions.add(conn, info.domain, SuppressionKind.UNSUBSCRIBE, recipient, hit.ts,
                         tag=scope)
    return build_event(EventType.UNSUBSCRIBED, hit.ts, info, recipient, hit.delivery_id,
                       ip=hit.ip, client_info={"user-agent": hit.user_agent},
                       method=hit.method, unsubscribe_scope=scopes)


def _blank_change(hit: Hit, domain: str) -> dict[str, Any]:
    return {"delivery_id": hit.delivery_id, "domain": domain, "open_count": 0,
            "click_count": 0, "first_open_at": None, "last_open_at": None,
            "first_click_at": None, "last_click_at": None}


def _events_for(hit: Hit, info: MessageInfo, recipient: str, state: _State,
                change: dict[str, Any]) -> list[EventRecord]:
    common: dict[str, Any] = {
        "ip": hit.ip,
        "client_info": {"user-agent": hit.user_agent},
        "method": hit.method,
    }
    out: list[EventRecord] = []
    implied = hit.kind is Kind.CLICK and state.first_open is None
    if hit.kind is Kind.OPEN or implied:
        unique = state.first_open is None
        state.first_open = state.first_open or hit.ts
        change["open_count"] += 1
        change["first_open_at"] = change["first_open_at"] or hit.ts
        change["last_open_at"] = max(change["last_open_at"] or 0, hit.ts)
        extra = dict(common, flags={"is-implied-by-click": True}) if implied else common
        out.append(build_event(EventType.OPENED, hit.ts, info, recipient, hit.delivery_id,
                               counters=[UNIQUE_OPENED] if unique else [], **extra))
    if hit.kind is Kind.CLICK:
        unique = state.first_click is None
        state.first_click = state.first_click or hit.ts
        change["click_count"] += 1
        change["first_click_at"] = change["first_click_at"] or hit.ts
        change["last_click_at"] = max(change["last_click_at"] or 0, hit.ts)
        out.append(build_event(EventType.CLICKED, hit.ts, info, recipient, hit.delivery_id,
                               counters=[UNIQUE_CLICKED] if unique else [],
                               url=hit.url, link_index=hit.link_index, **common))
    return out

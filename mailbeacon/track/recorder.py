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

from mailbeacon.storage.db import Database
from mailbeacon.storage.records import write_events
from mailbeacon.track.hits import Hit, HitWriter

__all__ = ["Hit", "Recorder"]

log = logging.getLogger("mailbeacon.recorder")


class Recorder:
    def __init__(self, db: Database, writer: HitWriter | None = None) -> None:
        self._db = db
        self._writer = writer or HitWriter()
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
        with self._db.write() as conn:
            write_events(conn, self._writer.write(conn, hits))

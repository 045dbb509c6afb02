"""The hit recorder: group commit for opens and clicks (DESIGN section 3).

A request hands its hit to `Recorder.submit` (or awaits `record`) and waits for the
future of the batch its hit is in: one future per batch, not per hit. In commit mode the
recorder commits everything waiting in one transaction, in a worker thread, then
resolves that future; hits that arrived meanwhile form the next batch, which starts as
soon as the commit ends. In journal mode a batch is every hit of one turn of the event
loop, appended with one write() at the end of that turn. No fixed timer either way:
under light load a hit is stored at once, under heavy load batches grow. The same
transaction writes the events, the per-recipient state and the stats counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Sequence

from mailbeacon.model.hit import Hit
from mailbeacon.storage.db import Database
from mailbeacon.track.hits import HitWriter
from mailbeacon.track.spool import LAG_LOG_SECONDS, Spool

__all__ = ["Hit", "Recorder"]

log = logging.getLogger("mailbeacon.recorder")


class Recorder:
    def __init__(self, db: Database, writer: HitWriter | None = None,
                 spool: Spool | None = None, journal: bool = False,
                 load_in_process: bool = True) -> None:
        self._db = db
        # Journal mode: a hit is acknowledged once appended to the local journal (it
        # survives a process crash like SQLite's WAL) and loaded into the database in
        # large batches in the background: much higher throughput, events visible a
        # moment later. Commit mode (default): acknowledged once in the database.
        self.journal = journal and spool is not None
        # In journal mode a separate loader process (`mailbeacon load-journal`) may load
        # the journal, so loading does not compete with answering for this process's GIL.
        self._load_in_process = load_in_process or not self.journal
        self._writer = writer or HitWriter()
        self.spool = spool
        self._replay_task: asyncio.Task[None] | None = None
        # After a failed commit, spool at once for a while instead of waiting on a
        # database that is away (each wait would hold every request of the batch).
        self._down_until = 0.0
        self._pending: list[Hit] = []
        self._batch: asyncio.Future[None] | None = None  # the waiting hits' future
        self._wake = asyncio.Event()
        # One thread: commits are serial anyway, and a single writer avoids lock fights.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "recorder")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # commits so far; hits / batches is the group-commit factor
        self.hits = 0
        self.spooled = 0  # hits written to the spool while the database was away
        self.replayed = 0
        # Journal mode, the journal could not be written: committed to the database
        # directly instead (`fallen_back`); if that failed too, answered unrecorded.
        self.fallen_back = 0
        self.unrecorded = 0  # answered but stored nowhere (journal and database failed)
        self._fallbacks: set[asyncio.Task[None]] = set()

    def loader_lag(self) -> float:
        """Seconds since the oldest hit not yet in the database was made (journal or
        outage spool; 0 when everything is loaded), whichever process loads it. Reads
        the first line of each waiting file: call it from a thread, not the loop."""
        return self.spool.lag() if self.spool is not None else 0.0

    @property
    def loads_elsewhere(self) -> bool:
        """Journal mode with a separate loader process (the runtime starts it)."""
        return self.journal and not self._load_in_process

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="recorder")
        if self.spool is not None and self._load_in_process:
            self._replay_task = loop.create_task(self._replay_loop(), name="spool-replay")
        elif self.spool is not None:
            self._replay_task = loop.create_task(self._close_files(), name="journal-files")

    async def stop(self) -> None:
        """Commit what is waiting, then stop."""
        if self._task is not None:
            while self._pending or self._fallbacks:
                await asyncio.sleep(0.01)
            if self.journal and not self._load_in_process and self.spool is not None:
                self.spool.close_if_older(0)  # the loader takes it from here
            if (self.journal and self._load_in_process and self.spool is not None
                    and self.spool.pending()):
                with contextlib.suppress(Exception):  # else the next start loads them
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, self.spool.replay, self._writer.store, self._db.write)
            for task in (self._task, self._replay_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._executor.shutdown(wait=True)

    async def record(self, hit: Hit) -> None:
        """Return once the hit is committed (or spooled while the database is away);
        raise if neither worked."""
        await self.submit(hit)

    def submit(self, hit: Hit) -> asyncio.Future[None]:
        """A future done once the hit is durable, shared by its whole batch (the HTTP
        front waits on it with a callback, no task per request); its exception says the
        hit could not be stored."""
        self._pending.append(hit)
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            if self.journal:
                loop.call_soon(self._journal)  # after every request of this turn
            else:
                self._wake.set()
        return self._batch

    def _take(self) -> tuple[list[Hit], asyncio.Future[None] | None]:
        hits, future = self._pending, self._batch
        self._pending, self._batch = [], None
        return hits, future

    async def _run(self) -> None:
        """Commit mode: one batch after the other."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            # One turn of the loop: the requests already read in this turn join the batch
            # (a commit is now shorter than a turn under load; no timer for all that).
            await asyncio.sleep(0)
            self._wake.clear()
            hits, batch = self._take()
            if batch is None:
                continue
            try:
                if loop.time() < self._down_until:
                    raise ConnectionError("database marked unavailable")
                await loop.run_in_executor(self._executor, self.commit, hits)
            except Exception as exc:
                self._down_until = loop.time() + 2.0
                try:
                    if self.spool is None:
                        raise
                    await loop.run_in_executor(self._executor, self.spool.append, hits)
                    log.warning("database unavailable (%s): %d hits spooled", exc, len(hits))
                    self.spooled += len(hits)
                except Exception as failure:
                    self.unrecorded += len(hits)
                    log.error("could not record %d hits (database: %s; spool: %s): "
                              "answered, not stored", len(hits), exc, failure)
                    _settle(batch, failure)
                    continue
                _settle(batch)
            else:
                self.batches += 1
                self.hits += len(hits)
                _settle(batch)

    def _journal(self) -> None:
        """Journal mode: the hits of this turn of the loop, in one write() on the loop
        (microseconds), then their answers."""
        assert self.spool is not None
        hits, batch = self._take()
        if batch is None:
            return
        try:
            self.spool.append(hits)
        except Exception as failure:
            # Not journaled, so not acknowledged yet: they go to the database directly.
            log.error("could not journal %d hits (%s): committing them to the database "
                      "instead", len(hits), failure)
            task = asyncio.get_running_loop().create_task(self._fall_back(hits, batch))
            self._fallbacks.add(task)
            task.add_done_callback(self._fallbacks.discard)
            return
        self.spooled += len(hits)
        self.batches += 1
        self.hits += len(hits)
        _settle(batch)

    async def _fall_back(self, hits: list[Hit], batch: asyncio.Future[None]) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.commit, hits)
        except Exception as failure:
            self.unrecorded += len(hits)
            log.error("could not record %d hits (journal and database failed: %s): "
                      "answered, not stored", len(hits), failure)
            _settle(batch, failure)
            return
        self.fallen_back += len(hits)
        self.batches += 1
        self.hits += len(hits)
        _settle(batch)

    async def _close_files(self) -> None:
        """With a loader process: close journal files every 50 ms so it can load them.
        A failure (the spool folder removed, a full disk) is logged and tried again: the
        file stays open meanwhile and nothing in it is lost."""
        assert self.spool is not None
        failing = False
        while True:
            await asyncio.sleep(0.05)
            try:
                self.spool.close_if_older(0.05)
            except Exception:
                if not failing:
                    log.exception("cannot close the journal file; trying again")
                failing = True
            else:
                failing = False

    async def _replay_loop(self) -> None:
        """Put spooled hits into the database: continuously in journal mode, else every
        second once the database is back."""
        assert self.spool is not None
        loop = asyncio.get_running_loop()
        next_report = loop.time() + LAG_LOG_SECONDS
        while True:
            await asyncio.sleep(0.02 if self.journal else 1.0)
            if loop.time() >= next_report:  # the lag in the log (Spool.report_lag)
                next_report = loop.time() + LAG_LOG_SECONDS
                await loop.run_in_executor(self._executor, self.spool.report_lag, 0.0)
            if loop.time() < self._down_until or not self.spool.pending():
                continue
            try:
                replayed = await loop.run_in_executor(
                    self._executor, self.spool.replay, self._writer.store, self._db.write)
                self.replayed += replayed
            except OSError as exc:  # the spool folder, not the database: commits go on
                log.warning("spool replay postponed: %s", exc)
                await asyncio.sleep(1.0)
            except Exception as exc:
                self._down_until = loop.time() + 2.0
                log.warning("spool replay postponed: %s", exc)

    def commit(self, hits: Sequence[Hit]) -> None:
        """Store a batch of hits in one transaction (runs in the recorder thread)."""
        with self._db.write() as conn:
            self._writer.store(conn, hits)


def _settle(batch: asyncio.Future[None], failure: BaseException | None = None) -> None:
    if batch.done():  # cancelled
        return
    if failure is None:
        batch.set_result(None)
    else:
        batch.set_exception(failure)

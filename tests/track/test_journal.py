"""The journal under torn lines, failing writes, a removed spool folder and a failing
database: every hit answered is stored once, or counted as answered unrecorded."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.model.hit import Hit
from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import Kind
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import deliveries, events, installation
from mailbeacon.track.hits import HitWriter
from mailbeacon.track.recorder import Recorder
from mailbeacon.track.spool import SET_ASIDE, Spool, _line
from tests.support import Service, SmtpRelay


@pytest.fixture
async def delivery(service: Service, smtp_relay: SmtpRelay) -> str:
    """The id of a delivered message's delivery (hits for it are stored)."""
    await service.send(to="alice@example.org", subject="x", html="<p>hi</p>")
    await smtp_relay.wait_for(1)
    await service.wait_events(1, event="delivered")
    with service.runtime.db.read() as conn:
        return str(conn.execute(sa.select(deliveries.c.id)).scalar_one())


def _hits(delivery: str, count: int, start: int = 0) -> list[Hit]:
    """Distinct opens (their user agents number them)."""
    return [Hit(Kind.OPEN, delivery, int(time.time() * 1e6), "192.0.2.1", f"agent {start + n}")
            for n in range(count)]


def _stored(db: Database) -> list[str]:
    """User agents of the stored opens, each as often as stored."""
    with db.read() as conn:
        rows = conn.execute(sa.select(events.c.data).where(events.c.event == "opened"))
        return sorted(json.loads(data)["client-info"]["user-agent"] for data in rows.scalars())


def _load(spool: Spool, db: Database) -> int:
    return spool.replay(HitWriter().store, db.write)


@pytest.fixture
async def journal(service: Service, tmp_path: Path) -> AsyncIterator[Recorder]:
    """A journal-mode recorder on the service's database, its files closed every 50 ms
    for a loader (the tests load them by hand)."""
    recorder = Recorder(service.runtime.db, HitWriter(), Spool(tmp_path / "journal"),
                        journal=True, load_in_process=False)
    recorder.start()
    yield recorder
    await recorder.stop()


async def _answer(recorder: Recorder, hits: list[Hit]) -> int:
    """Submit hits as the front does; the number whose future failed (the front answers
    those anyway: they must be counted as unrecorded)."""
    futures = [recorder.submit(h) for h in hits]
    results = await asyncio.gather(*futures, return_exceptions=True)
    return sum(isinstance(r, BaseException) for r in results)


def _expected(count: int) -> list[str]:
    return sorted(f"agent {n}" for n in range(count))


async def test_bad_lines_are_set_aside_and_the_good_ones_load(
        service: Service, delivery: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Five good lines, garbage in the middle, a line of the wrong shape and a torn last
    line (a write cut short): the five load, the others are set aside with their offsets."""
    folder = tmp_path / "journal"
    folder.mkdir()
    good = [_line(h).encode() for h in _hits(delivery, 5)]
    garbage = b"\x00\xff{not json at all\n"
    wrong = b'[1, "x", "not a number", "", "", "GET", "", 0, ""]\n'
    torn = _line(_hits(delivery, 1, 99)[0]).encode()[:40]
    data = good[0] + good[1] + garbage + good[2] + wrong + good[3] + good[4] + torn
    name = f"hits-1-{new_id()[:8]}"
    (folder / f"{name}.jsonl").write_bytes(data)
    spool = Spool(folder)
    caplog.set_level(logging.INFO, "mailbeacon.spool")
    assert await asyncio.to_thread(_load, spool, service.runtime.db) == 5
    assert _stored(service.runtime.db) == _expected(5)
    assert spool.set_aside == 3 and not spool.pending()
    aside = (folder / SET_ASIDE / f"{name}.lines").read_bytes().splitlines()
    offsets = [len(good[0] + good[1]), len(good[0] + good[1] + garbage + good[2]),
               len(data) - len(torn)]
    assert [int(line.split(b" ", 1)[0]) for line in aside] == offsets
    assert aside[2] == b"%d " % offsets[2] + torn
    logged = caplog.text
    assert all(f"{name}.replaying" in logged and f"byte {o}" in logged for o in offsets)


async def test_a_file_that_failed_to_load_is_loaded_later(service: Service, delivery: str,
                                                          tmp_path: Path) -> None:
    """The database fails while a file is loaded: the file is not parked for good, the
    next replay of the same process loads it."""
    folder = tmp_path / "journal"
    spool = Spool(folder)
    spool.append(_hits(delivery, 7))
    failures = iter([RuntimeError("database away")])

    def store(conn: Any, hits: list[Hit]) -> None:
        for failure in failures:
            raise failure
        HitWriter().store(conn, hits)

    with pytest.raises(RuntimeError):
        await asyncio.to_thread(spool.replay, store, service.runtime.db.write)
    assert spool.pending()
    assert await asyncio.to_thread(spool.replay, store, service.runtime.db.write) == 7
    assert _stored(service.runtime.db) == _expected(7) and not spool.pending()


async def test_a_write_failing_halfway_is_cut_back_and_its_hits_go_to_the_database(
        service: Service, delivery: str, journal: Recorder) -> None:
    """Disk full in the middle of a write: the file ends at its last complete line, the
    hits of that write are committed to the database instead, none lost or doubled."""
    spool = journal.spool
    assert spool is not None
    calls = 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:  # the third batch: half of it reaches the disk, then it is full
            os.write(fd, bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    spool._write = write
    hits = _hits(delivery, 50)
    failed = 0
    for batch in range(5):
        failed += await _answer(journal, hits[batch * 10:(batch + 1) * 10])
    assert failed == 0 and journal.fallen_back == 10 and journal.unrecorded == 0
    await asyncio.to_thread(_load, spool, service.runtime.db)
    assert spool.set_aside == 0  # no torn line was left behind
    assert _stored(service.runtime.db) == _expected(50)


async def test_an_unwritable_journal_falls_back_to_the_database(
        service: Service, delivery: str, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the spool folder should be")
    recorder = Recorder(service.runtime.db, HitWriter(), Spool(blocked), journal=True,
                        load_in_process=False)
    recorder.start()
    try:
        assert await _answer(recorder, _hits(delivery, 30)) == 0
    finally:
        await recorder.stop()
    assert recorder.fallen_back == 30 and recorder.unrecorded == 0
    assert _stored(service.runtime.db) == _expected(30)


async def test_journal_and_database_both_failing_is_counted(
        service: Service, delivery: str, tmp_path: Path) -> None:
    """Nowhere to store: the futures fail (the front still answers) and the hits are
    counted as answered unrecorded, never silently."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")

    class Broken(HitWriter):
        def store(self, conn: Any, hits: Any) -> None:
            raise RuntimeError("database away")

    recorder = Recorder(service.runtime.db, Broken(), Spool(blocked), journal=True,
                        load_in_process=False)
    recorder.start()
    try:
        assert await _answer(recorder, _hits(delivery, 12)) == 12
    finally:
        await recorder.stop()
    assert recorder.unrecorded == 12 and recorder.fallen_back == 0


async def test_spool_folder_removed_while_a_file_is_open(
        service: Service, delivery: str, journal: Recorder) -> None:
    """rm -rf of the spool folder under a running recorder: the hits of the open file
    are written again, later hits go to a new folder, the closing task lives on and
    keeps closing files; every answered hit is stored once."""
    spool = journal.spool
    assert spool is not None
    hits = _hits(delivery, 4000)
    failed = 0
    for batch in range(40):
        failed += await _answer(journal, hits[batch * 100:(batch + 1) * 100])
        if batch == 19:
            await asyncio.sleep(0.2)  # files closed; the next batch opens one
        if batch == 20:
            assert spool._fd is not None
            # Closed files are the operator's to lose; the open one is ours to keep.
            closed = [p for p in spool.folder.glob("hits-*.jsonl")]
            held = sum(len(p.read_bytes().splitlines()) for p in closed)
            for path in closed:
                shutil.move(path, spool.folder.parent / path.name)
            shutil.rmtree(spool.folder)
    await asyncio.sleep(0.3)
    assert failed == 0 and journal.unrecorded == 0
    assert journal._replay_task is not None and not journal._replay_task.done()
    assert not list(spool.folder.glob("hits-*.open"))  # the closing task closed them
    for path in spool.folder.parent.glob("hits-*.jsonl"):  # the operator puts them back
        shutil.move(path, spool.folder / path.name)
    assert await asyncio.to_thread(_load, spool, service.runtime.db) == 4000 - journal.fallen_back
    assert _stored(service.runtime.db) == _expected(4000)
    assert held > 0 and spool.rescued > 0


async def test_an_in_process_loader_rescues_a_removed_open_file(
        service: Service, delivery: str, tmp_path: Path) -> None:
    """The folder goes while a file is open and nothing else is pending: the loader sees
    it at once (not only after 10,000 more hits or a restart) and loads its hits."""
    spool = Spool(tmp_path / "journal")
    spool.append(_hits(delivery, 25))
    shutil.rmtree(spool.folder)
    assert spool.pending()
    assert await asyncio.to_thread(_load, spool, service.runtime.db) == 25
    assert _stored(service.runtime.db) == _expected(25) and not spool.pending()


async def test_loaded_marks_are_purged_after_a_day(service: Service, tmp_path: Path) -> None:
    db = service.runtime.db
    with db.write() as conn:
        conn.execute(installation.insert(), [
            {"name": "spool:hits-1-old", "value": "loaded 0000000001"},
            {"name": "spool:hits-1-recent", "value": f"loaded {int(time.time()) - 3600:010d}"},
            {"name": "spool:hits-1-legacy", "value": "replayed"}])
    await asyncio.to_thread(_load, Spool(tmp_path / "journal"), db)
    with db.read() as conn:
        marks = dict(conn.execute(sa.select(installation.c.name, installation.c.value)
                                  .where(installation.c.name.like("spool:%"))).all())
    assert set(marks) == {"spool:hits-1-recent", "spool:hits-1-legacy"}
    assert marks["spool:hits-1-legacy"].startswith("loaded ")  # purged a day from now

"""The database goes away during tracking: pixels and redirects still answer, hits are
spooled and written once it is back, none lost, none doubled."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import POSTGRES_URL, Service, SmtpRelay, count_events, free_port


def _count(service: Service, event: str) -> int:
    return count_events(service.runtime.db, event)


async def _links(service: Service, relay: SmtpRelay) -> tuple[str, str]:
    await service.send(to="alice@example.org", subject="x",
                       html='<a href="https://shop.example.net/a">a</a>')
    (item,) = await relay.wait_for(1)
    await service.wait_events(1, event="delivered")
    html = item.part("text/html")
    (link,) = re.findall(r'href="([^"]+/c/[a-z0-9]+)">', html)
    (pixel,) = re.findall(r'src="([^"]+/o/[a-z0-9]+)"', html)
    return link, pixel


async def _until(check: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not reached in time")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_locked_by_another_process(service_factory: Any, smtp_relay: SmtpRelay,
                                                database_url: str) -> None:
    async with service_factory(relay=smtp_relay.url) as service:
        await service.add_domain()
        link, pixel = await _links(service, smtp_relay)
        release, locked = threading.Event(), threading.Event()

        def hold() -> None:
            engine = sa.create_engine(database_url, connect_args={"timeout": 1})
            with engine.connect() as conn:
                conn.exec_driver_sql("BEGIN EXCLUSIVE")  # nobody else may write
                locked.set()
                release.wait(60)
                conn.exec_driver_sql("ROLLBACK")
            engine.dispose()

        holder = threading.Thread(target=hold)
        holder.start()
        assert locked.wait(5)
        answers = await asyncio.gather(*[service.hit(pixel) for _ in range(30)],
                                       *[service.hit(link) for _ in range(10)])
        assert [a.status_code for a in answers] == [200] * 30 + [302] * 10
        assert service.runtime.recorder.spooled == 40
        release.set()
        holder.join()
        await _until(lambda: _count(service, "clicked") == 10 and _count(service, "opened") == 30)
        await asyncio.sleep(1.5)  # nothing is replayed twice
        assert (_count(service, "opened"), _count(service, "clicked")) == (30, 10)
        assert not service.runtime.recorder.spool.pending()


class TcpProxy:
    """A loopback proxy to PostgreSQL, on its own thread, that can be cut and restored:
    a real outage as the service sees it (refused and broken connections)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.links:
            writer.close()
        self.links.clear()

    def start(self) -> None:
        self._run(self._start())

    def cut(self) -> None:
        self._run(self._cut())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_stopped_and_back(service_factory: Any, smtp_relay: SmtpRelay,
                                           database_url: str) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    proxied = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert proxied != database_url and POSTGRES_URL
    async with service_factory(relay=smtp_relay.url, database_url=proxied) as service:
        await service.add_domain()
        link, pixel = await _links(service, smtp_relay)
        proxy.cut()  # the database is unreachable from here on
        answers = await asyncio.gather(*[service.hit(pixel) for _ in range(20)],
                                       *[service.hit(link) for _ in range(5)])
        assert [a.status_code for a in answers] == [200] * 20 + [302] * 5
        proxy.start()  # back
        await _until(lambda: _count(service, "clicked") == 5 and _count(service, "opened") == 20)
        await asyncio.sleep(1.5)
        assert (_count(service, "opened"), _count(service, "clicked")) == (20, 5)
        proxy.cut()

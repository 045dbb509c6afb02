"""Everything one mailbeacon process holds: settings, database, keys, recorder, worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailbeacon.apikeys import KeyChecker
from mailbeacon.send.relay import Relay
from mailbeacon.send.worker import DeliveryWorker
from mailbeacon.settings import Settings
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate
from mailbeacon.track.keyring import token_codec
from mailbeacon.track.recorder import Recorder

log = logging.getLogger("mailbeacon")


class Runtime:
    """Built once per process; `start`/`stop` run the background tasks."""

    def __init__(self, settings: Settings, *, run_migrations: bool = True,
                 run_worker: bool = True) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        if run_migrations:
            migrate(self.db)
        self.codec = token_codec(settings, self.db)
        self.keys = KeyChecker(self.db, settings.api_key)
        self.recorder = Recorder(self.db)
        self.relay = Relay.from_url(settings.relay, settings.relay_timeout) if settings.relay \
            else None
        self.worker: DeliveryWorker | None = None
        if self.relay is not None and run_worker:
            self.worker = DeliveryWorker(self.db, self.relay, self.codec, settings.base_url,
                                         settings.delivery_concurrency)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.recorder.start()
        if self.worker is not None:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="delivery-worker"))
        elif self.relay is None:
            log.warning("no relay configured (--relay): messages stay queued until one is")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.recorder.stop()
        self.db.dispose()

    def message_queued(self) -> None:
        if self.worker is not None:
            self.worker.wake()

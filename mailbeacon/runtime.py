"""Everything one mailbeacon process holds: settings, database, keys, recorder, worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from mailbeacon.domains.apikeys import KeyChecker
from mailbeacon.errors import ConfigError
from mailbeacon.inbound.mailbox import MailboxConfig, MailboxError, PollResult, poll_once
from mailbeacon.inbound.receiver import InboundReceiver
from mailbeacon.insight.retention import purge
from mailbeacon.send.intake import IntakeWriter
from mailbeacon.send.outbox import LocalOutbox
from mailbeacon.send.relay import Relay
from mailbeacon.send.smtp import SmtpHandler, start_smtp_server, tls_context
from mailbeacon.send.smtp_limits import SmtpLimits
from mailbeacon.send.worker import DeliveryWorker, RetryPolicy
from mailbeacon.settings import Settings, parse_host_port
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate
from mailbeacon.track.enrich import GeoLookup
from mailbeacon.track.hits import HitWriter
from mailbeacon.track.keyring import token_codec
from mailbeacon.track.recorder import Recorder
from mailbeacon.track.spool import Spool
from mailbeacon.webhooks.sender import WebhookSender

log = logging.getLogger("mailbeacon")
_LOADER = "journal loader"


class Runtime:
    """Built once per process; `start`/`stop` run the background tasks."""

    def __init__(self, settings: Settings, *, run_migrations: bool = True,
                 run_worker: bool = True, serve_pid: int | None = None) -> None:
        """`serve_pid`: this is one of the further HTTP processes that serve starts
        (--http-processes): HTTP only; the serve process runs everything else."""
        self.settings = settings
        self._serve_pid = serve_pid
        extra_http = serve_pid is not None
        if extra_http:
            run_migrations = run_worker = False
        self.db = Database(settings.database_url)
        if run_migrations:
            migrate(self.db)
        self.codec = token_codec(self.db, settings.secret_key, settings.old_secret_keys)
        self.keys = KeyChecker(self.db, settings.api_key)
        # The one intake writer of this process: its group commit needs every door's
        # messages in one queue.
        self.intake = IntakeWriter(self.db)
        journal = settings.recording == "journal"
        # Hits are enriched in this process unless a loader process loads the journal;
        # only then is the geo data loaded here (GeoLookup loads it at first use anyway).
        enriches = not (journal and (run_worker or extra_http))
        self.recorder = Recorder(
            self.db, HitWriter(GeoLookup(settings.geoip_db or None, preload=enriches),
                               settings.engagement_half_life_days),
            Spool(Path(settings.spool_dir)), journal=journal, load_in_process=enriches)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.relay = Relay.from_url(settings.relay, settings.relay_timeout) if settings.relay \
            else None
        self.worker: DeliveryWorker | None = None
        if run_worker:
            self.worker = DeliveryWorker(
                self.db, self.relay or LocalOutbox(self.db), self.codec, settings.base_url,
                settings.delivery_concurrency,
                retry=RetryPolicy(settings.retry_first, settings.retry_max_age))
        self.webhook_sender = WebhookSender(
            self.db, timeout=settings.webhook_timeout, poll_interval=0.5,
            forbid_private=settings.webhook_forbid_private) if run_worker else None
        self.inbound = InboundReceiver(self.db, self.codec, self.recorder)
        self.smtp_tls = None
        if settings.smtp_tls_cert:
            try:
                self.smtp_tls = tls_context(settings.smtp_tls_cert, settings.smtp_tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the SMTP TLS certificate: {exc}") from exc
        self.smtp_server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = threading.Event()  # cuts a mailbox poll under way at shutdown

    async def start(self) -> None:
        self.recorder.start()
        if self._serve_pid is not None:
            self._tasks.append(asyncio.create_task(self._exit_with_parent(), name="parent"))
            return
        if self.recorder.loads_elsewhere:
            self._tasks.append(asyncio.create_task(
                self._keep_running(_LOADER, ["load-journal", f"--parent={os.getpid()}"]),
                name="journal-loader"))
        for number in range(2, self.settings.http_processes + 1):
            self._tasks.append(asyncio.create_task(
                self._keep_running(f"HTTP process {number}",
                                   ["http-process", f"--parent={os.getpid()}"]),
                name=f"http-{number}"))
        if self.settings.smtp:
            host, port = parse_host_port(self.settings.smtp, "smtp")
            handler = SmtpHandler(self.db, self.intake, self.inbound, self.message_queued)
            self.smtp_server = await start_smtp_server(
                host, port, handler, self.keys, self.settings.smtp_max_bytes, self.smtp_tls,
                limits=SmtpLimits(sessions_per_ip=self.settings.smtp_sessions_per_ip))
        if self.worker is not None:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="delivery-worker"))
        if self.webhook_sender is not None:
            self._tasks.append(asyncio.create_task(self.webhook_sender.run(), name="webhooks"))
        if self.worker is not None:  # one purge loop per process is enough, and cheap
            self._tasks.append(asyncio.create_task(self._purge_loop(), name="retention"))
        if self.settings.bounce_mailbox:
            self._tasks.append(asyncio.create_task(self._poll_mailbox(), name="mailbox"))
        if self.relay is None:
            log.warning("no relay configured (--relay): delivered mail is kept in the local "
                        "outbox (see the dashboard)")

    async def _keep_running(self, name: str, command: list[str]) -> None:
        """Keep one `mailbeacon <command>` process running beside this one; each ends
        when this process does, however this one ends (even by kill -9: each watches
        that its parent is still `--parent`)."""
        argv = [sys.executable, "-m", "mailbeacon", *command]
        # Settings through the environment, not the command line: a database URL may
        # hold a password, and command lines are visible to every local user.
        env = {**os.environ, **self.settings.environment()}
        while True:
            child = self._children[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, env=env)
            while child.poll() is None:
                await asyncio.sleep(0.5)
            log.error("%s exited with %s; starting it again", name, child.returncode)
            await asyncio.sleep(1.0)

    async def _exit_with_parent(self) -> None:
        """An extra HTTP process stops (gracefully) once its serve is gone, even after a
        kill -9 of serve, instead of answering on its own."""
        while os.getppid() == self._serve_pid:
            await asyncio.sleep(0.5)
        log.warning("serve is gone: this HTTP process stops")
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown

    async def stop(self) -> None:
        self._stopping.set()
        if self.smtp_server is not None:
            self.smtp_server.close()
            await self.smtp_server.wait_closed()
        for task in self._tasks:
            await _cancelled(task)
        await self.recorder.stop()
        # HTTP processes first: they finish their answers and close their journal files;
        # then the loader, which finishes the file in hand (the next start loads the rest).
        last = [_LOADER] if _LOADER in self._children else []
        for name in [n for n in self._children if n != _LOADER] + last:
            child = self._children[name]
            if child.poll() is None:
                child.terminate()
                try:
                    await asyncio.to_thread(child.wait, 30)
                except subprocess.TimeoutExpired:
                    log.error("%s did not stop in 30 s; killed", name)
                    child.kill()
        # Closing pooled connections talks to PostgreSQL: off the event loop.
        await asyncio.to_thread(self.db.dispose)

    async def _purge_loop(self) -> None:
        """Hourly: raw events past each domain's retention go; stats stay."""
        while True:
            try:
                removed = await asyncio.to_thread(purge, self.db)
                if any(removed.values()):
                    log.info("retention purge: %s", removed)
            except Exception:
                log.exception("retention purge failed; trying again in an hour")
            await asyncio.sleep(3600)

    async def _poll_mailbox(self) -> None:
        """Fetch the bounce mailbox now and then; one poll at a time (POP3 locks). No
        failure ends this loop: each is logged, and polls go on, backing off while they
        keep failing (the interval, doubled per failure, at most an hour)."""
        config = MailboxConfig.from_url(self.settings.bounce_mailbox)
        interval = self.settings.bounce_mailbox_interval
        failures = 0
        while True:
            try:
                result = await self.poll_mailbox_once(config)
            except MailboxError as exc:  # its message never holds the password
                failures += 1
                log.warning("mailbox %s: %s", config.redacted(), exc)
            except Exception:
                failures += 1
                log.exception("mailbox %s: poll failed", config.redacted())
            else:
                failures = 0
                if result.fetched or result.oversized or result.deferred:
                    log.info("mailbox %s: %d fetched, %d processed, %d kept, %d too large "
                             "(left on the server), %d for the next poll", config.redacted(),
                             result.fetched, result.processed, result.failed,
                             result.oversized, result.deferred)
            await asyncio.sleep(mailbox_delay(interval, failures))

    async def poll_mailbox_once(self, config: MailboxConfig,
                                ssl_context: ssl.SSLContext | None = None) -> PollResult:
        loop = asyncio.get_running_loop()

        def handle(raw: bytes) -> bool:
            # An exception keeps the message in the mailbox for the next poll.
            future = asyncio.run_coroutine_threadsafe(
                self.inbound.receive(raw, source="mailbox"), loop)
            future.result(timeout=120)
            return True

        return await asyncio.to_thread(poll_once, config, handle, ssl_context=ssl_context,
                                       stop=self._stopping)

    def webhooks_queued(self) -> None:
        if self.webhook_sender is not None:
            self.webhook_sender.wake()

    def message_queued(self) -> None:
        if self.worker is not None:
            self.worker.wake()


def mailbox_delay(interval: float, failures: int) -> float:
    """Seconds to the next mailbox poll: the interval, doubled per failure in a row
    after the first, at most an hour (or the interval, if longer)."""
    if failures <= 1:
        return interval
    return min(interval * 2.0 ** min(failures - 1, 20), max(interval, 3600.0))


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel a background task and wait until it has ended. Cancelled again until it
    ends: Python 3.11's `asyncio.wait_for` loses a cancellation that races the wake-up it
    waits for (gh-86296), and the task would then run on and shutdown wait forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        # a task that had ended with an error must not stop shutdown
        log.error("background task %s had failed", task.get_name(),
                  exc_info=task.exception())

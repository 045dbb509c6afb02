"""`/healthz`, `/readyz` and `/metrics`: what a load balancer and Prometheus ask.

- `/healthz`: liveness. 200 `{"status": "ok"}` while the process answers at all; it
  touches nothing else (a database outage must not get every process restarted).
- `/readyz`: readiness. 200 when the database answers, its schema is at the newest
  migration and the journal/spool loader keeps up; else 503. The JSON names each check.
- `/metrics`: Prometheus' text format, only with `MAILBEACON_METRICS_KEY` set (404 without
  it) and `Authorization: Bearer <key>`. The figures are read when scraped: counts from the
  database (shared by every HTTP process, so any process gives the same answer) and this
  process's recorder counters and the spool folder.

None needs an API key; each is cheap. Database work runs in a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mailbeacon.runtime import Runtime
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import alembic_config
from mailbeacon.storage.schema import deliveries, inbound_messages, webhook_deliveries
from mailbeacon.track.recorder import Recorder

PATHS = ("/healthz", "/readyz", "/metrics")
READY_LAG_SECONDS = 60.0  # journal/spool hits older than this: not ready
CHECK_TIMEOUT = 5.0  # seconds a readiness check may take before it counts as failed

_METHODS = {path: JSONResponse({"message": f"Method not allowed: {path} is GET only"}, 405,
                               headers={"Allow": "GET, HEAD"}) for path in PATHS}


class Health:
    """The three endpoints, as one ASGI app the main app hands their paths to."""

    def __init__(self, runtime: Runtime) -> None:
        self.db: Database = runtime.db
        self.recorder: Recorder = runtime.recorder
        self.metrics_key = runtime.settings.metrics_key
        self._heads: tuple[str, ...] | None = None  # the migrations' heads, read once
        self._registry: Any = None  # prometheus_client's, made at the first scrape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = _METHODS[path]
        elif path == "/healthz":
            response = JSONResponse({"status": "ok"})
        elif path == "/readyz":
            response = await self.ready()
        else:
            response = await self.metrics(Request(scope))
        await response(scope, receive, send)

    # --- readiness ---------------------------------------------------------------------

    async def ready(self) -> JSONResponse:
        checks: dict[str, dict[str, Any]] = {"database": {"ok": False}, "migrations": {"ok": False},
                  "spool": {"ok": False}}
        try:
            revision, heads = await asyncio.wait_for(
                asyncio.to_thread(self._schema), CHECK_TIMEOUT)
        except Exception as exc:  # the name of the error only: a message may hold a URL
            checks["database"]["error"] = _unreachable(exc)
            checks["migrations"]["error"] = "database unreachable"
        else:
            checks["database"] = {"ok": True}
            checks["migrations"] = {"ok": revision == heads, "revision": list(revision),
                                    "head": list(heads)}
        try:
            lag = await asyncio.wait_for(asyncio.to_thread(self.recorder.loader_lag),
                                         CHECK_TIMEOUT)
        except Exception as exc:
            checks["spool"]["error"] = type(exc).__name__
        else:
            checks["spool"] = {"ok": lag < READY_LAG_SECONDS, "lag_seconds": round(lag, 3),
                               "limit_seconds": READY_LAG_SECONDS}
        ok = all(check["ok"] for check in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                            200 if ok else 503, headers={"Cache-Control": "no-store"})

    def _schema(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(stored revisions, the migrations' heads); raises when the database is away."""
        from alembic.migration import MigrationContext  # only here: ~9 MB per process

        with self.db.read() as conn:
            conn.execute(text("SELECT 1"))
            stored = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
        if self._heads is None:
            from alembic.script import ScriptDirectory

            script = ScriptDirectory.from_config(alembic_config(self.db))
            self._heads = tuple(sorted(script.get_heads()))
        return stored, self._heads

    # --- metrics -----------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        if not self.metrics_key:
            return JSONResponse({"message": "Not found"}, 404)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return JSONResponse({"message": "Give the metrics key: Authorization: Bearer "
                                            "<MAILBEACON_METRICS_KEY>"}, 401,
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        if not hmac.compare_digest(given.strip().encode(), self.metrics_key.encode()):
            return JSONResponse({"message": "Wrong metrics key"}, 403)
        from prometheus_client import CONTENT_TYPE_LATEST

        try:
            body = await asyncio.to_thread(self._exposition)
        except Exception as exc:
            return JSONResponse({"message": "Metrics unavailable: database unreachable "
                                            f"({_unreachable(exc)})"}, 503)
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                       "Cache-Control": "no-store"})


    def _exposition(self) -> bytes:
        """Every figure, in the text format (runs in a thread: it queries)."""
        from prometheus_client import generate_latest

        if self._registry is None:
            self._registry = _registry(self.db, self.recorder)
        return bytes(generate_latest(self._registry))


def _unreachable(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer in {CHECK_TIMEOUT:g} s"
    return type(exc).__name__


def _registry(db: Database, recorder: Recorder) -> Any:
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Figures(db, recorder))
    ProcessCollector(registry=registry)
    return registry


class Figures:
    """A prometheus_client collector: every figure read when scraped (runs in a thread)."""

    def __init__(self, db: Database, recorder: Recorder) -> None:
        self.db = db
        self.recorder = recorder

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self.db.read() as conn:
            # By status alone (an index-only count on PostgreSQL), then the few queued
            # ones already tried: those wait for a retry.
            by_status = dict.fromkeys(("queued", "in_flight", "deferred", "failed",
                                       "delivered"), 0)
            for name, count in conn.execute(select(deliveries.c.status, func.count())
                                            .group_by(deliveries.c.status)):
                by_status["in_flight" if name == "sending" else name] = count
            by_status["deferred"] = conn.execute(
                select(func.count()).where(deliveries.c.status == "queued",
                                           deliveries.c.attempts > 0)).scalar_one()
            by_status["queued"] -= by_status["deferred"]
            hooks = {"pending": 0, "sending": 0, "failed": 0, "rejected": 0}
            for name, count in conn.execute(
                    select(webhook_deliveries.c.status, func.count())
                    .where(webhook_deliveries.c.status != "done")
                    .group_by(webhook_deliveries.c.status)):
                hooks[name] = count
            inbound = conn.execute(
                select(inbound_messages.c.kind, inbound_messages.c.status, func.count())
                .group_by(inbound_messages.c.kind, inbound_messages.c.status)).all()

        gauge = GaugeMetricFamily(
            "mailbeacon_deliveries", "Deliveries by status: queued (never tried), "
            "in_flight (being relayed), deferred (waiting for a retry), failed, delivered.",
            labels=["status"])
        for name, count in by_status.items():
            gauge.add_metric([name], count)
        yield gauge
        gauge = GaugeMetricFamily(
            "mailbeacon_webhook_deliveries", "Webhook posts not done, by status: pending "
            "(waiting or retrying), sending, failed (gave up), rejected (406).",
            labels=["status"])
        for name, count in hooks.items():
            gauge.add_metric([name], count)
        yield gauge
        gauge = GaugeMetricFamily(
            "mailbeacon_inbound_messages", "Messages that came back to a bounce domain, by "
            "kind (bounce, complaint, ...) and status (processed, unmatched, ignored, "
            "error).", labels=["kind", "status"])
        for kind, name, count in inbound:
            gauge.add_metric([kind or "unknown", name], count)
        yield gauge

        yield GaugeMetricFamily(
            "mailbeacon_journal_loader_lag_seconds", "Age of the oldest open or click "
            "waiting in the journal/spool folder (0: all loaded).",
            value=self.recorder.loader_lag())
        files, size = _spool_size(self.recorder)
        yield GaugeMetricFamily("mailbeacon_spool_files", "Journal/spool files waiting.",
                                value=files)
        yield GaugeMetricFamily("mailbeacon_spool_bytes", "Bytes in those files.",
                                value=size)
        r = self.recorder
        acknowledged = r.hits if r.journal else r.hits + r.spooled
        stored = (r.fallen_back if r.journal else r.hits) + r.replayed
        for name, value, doc in (
                ("acknowledged", acknowledged, "Opens and clicks answered and kept (in the "
                 "database or the journal) by this process."),
                ("stored", stored, "Opens and clicks this process wrote to the database "
                 "(directly or loaded from the journal)."),
                ("unrecorded", r.unrecorded, "Opens and clicks answered but stored "
                 "nowhere by this process (journal and database both failed).")):
            yield CounterMetricFamily(f"mailbeacon_hits_{name}", doc, value=value)


def _spool_size(recorder: Recorder) -> tuple[int, int]:
    if recorder.spool is None:
        return 0, 0
    files = size = 0
    folder: Path = recorder.spool.folder
    try:
        for path in folder.glob("hits-*"):
            try:
                size += path.stat().st_size
            except OSError:  # loaded and removed meanwhile
                continue
            files += 1
    except OSError:
        pass
    return files, size

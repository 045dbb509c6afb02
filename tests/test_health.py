"""/healthz, /readyz and /metrics over a real HTTP socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import deliveries, webhook_deliveries
from tests.conftest import Service, SmtpRelay

KEY = "metrics-key-0123456789"


@pytest.fixture
async def served(service_factory: Callable[..., Any],
                 smtp_relay: SmtpRelay) -> AsyncIterator[Service]:
    """mailbeacon with a metrics key, relaying to `smtp_relay`, its HTTP server started."""
    async with service_factory(relay=smtp_relay.url, metrics_key=KEY) as svc:
        await svc.add_domain("example.com")
        await svc.start_http()
        yield svc


def _unreachable(url: str, folder: Path) -> Database:
    """A database of the same backend that cannot be opened (SQLite: a folder's path)."""
    if url.startswith("sqlite"):
        (folder / "a-folder").mkdir()
        return Database(f"sqlite:///{folder / 'a-folder'}")
    return Database("postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none")


async def test_healthz_answers_without_a_key(served: Service) -> None:
    r = await served.web.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert (await served.web.post("/healthz")).status_code == 405


async def test_healthz_does_not_touch_the_database(served: Service, tmp_path: Path) -> None:
    served.app.health.db = _unreachable(served.runtime.db.url, tmp_path)
    r = await served.web.get("/healthz")
    assert r.status_code == 200, r.text


async def test_readyz_when_migrated(served: Service) -> None:
    r = await served.web.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True, "migrations": True, "spool": True}
    assert body["checks"]["migrations"]["revision"] == body["checks"]["migrations"]["head"]


async def test_readyz_503_when_the_database_is_unreachable(served: Service, tmp_path: Path) -> None:
    served.app.health.db = _unreachable(served.runtime.db.url, tmp_path)
    r = await served.web.get("/readyz")
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert checks["database"]["ok"] is False and checks["database"]["error"]
    assert checks["spool"]["ok"] is True
    assert "secret-pw" not in r.text and "nobody" not in r.text


async def test_readyz_503_when_the_schema_is_behind(served: Service) -> None:
    db = served.runtime.db

    def set_revision(revision: str | None = None) -> str:
        with db.write() as conn:
            stored = str(conn.execute(text("SELECT version_num FROM alembic_version"))
                         .scalar_one())
            conn.execute(text("UPDATE alembic_version SET version_num = :v"),
                         {"v": revision or stored})
        return stored

    newest = await asyncio.to_thread(set_revision, "0001")
    try:
        r = await served.web.get("/readyz")
    finally:  # the migrated PostgreSQL schema is reused by the next test
        await asyncio.to_thread(set_revision, newest)
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["migrations"]["ok"] is False
    assert checks["migrations"]["revision"] == ["0001"]
    assert checks["migrations"]["head"] == [newest]


async def test_readyz_503_when_the_spool_lags(served: Service) -> None:
    served.runtime.recorder.loader_lag = lambda: 3600.0
    r = await served.web.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["checks"]["spool"] == {"ok": False, "lag_seconds": 3600.0,
                                           "limit_seconds": 60.0}


async def test_metrics_404_without_the_setting(service: Service) -> None:
    await service.start_http()
    r = await service.web.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("Basic " + KEY, 401), ("Bearer", 401),
    ("Bearer wrong-key", 403), (f"Bearer {KEY}x", 403)])
async def test_metrics_refuses_a_wrong_key(served: Service, header: str | None,
                                           status: int) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = await served.web.get("/metrics", headers=headers)
    assert r.status_code == status, r.text
    assert "mailbeacon_deliveries" not in r.text


async def _scrape(service: Service) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = await service.web.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
            for family in text_string_to_metric_families(r.text)}


async def test_metrics_deliveries_equal_the_database(served: Service,
                                                     smtp_relay: SmtpRelay) -> None:
    """Delivered, deferred (a 4xx: waiting for its retry) and failed (a 5xx) deliveries,
    each counted as the database has them."""
    smtp_relay.reply = lambda rcpt: ("451 4.7.1 later" if rcpt.startswith("later")
                                     else "550 5.1.1 no such user" if rcpt.startswith("gone")
                                     else None)
    for n in range(3):
        await served.send(to=f"r{n}@example.net, s{n}@example.net", subject="hi", text="x")
    await served.send(to="later@example.net, gone@example.net", subject="hi", text="x")

    def counts() -> dict[str, int]:
        with served.runtime.db.read() as conn:
            found = dict(conn.execute(select(deliveries.c.status, func.count())
                                      .group_by(deliveries.c.status)).all())
            deferred = conn.execute(select(func.count()).where(
                deliveries.c.status == "queued", deliveries.c.attempts > 0)).scalar_one()
        return {**found, "deferred": deferred}

    for _ in range(500):
        in_db = await asyncio.to_thread(counts)
        if in_db.get("delivered") == 6 and in_db.get("failed") == 1 and in_db["deferred"]:
            break
        await asyncio.sleep(0.02)
    assert in_db == {"delivered": 6, "failed": 1, "queued": 1, "deferred": 1}
    metrics = await _scrape(served)
    gauge = {labels[0][1]: value for labels, value in metrics["mailbeacon_deliveries"].items()}
    assert gauge == {"queued": 0, "in_flight": 0, "deferred": 1, "failed": 1, "delivered": 6}
    for name in ("mailbeacon_webhook_deliveries", "mailbeacon_inbound_messages",
                 "mailbeacon_journal_loader_lag_seconds", "mailbeacon_spool_files",
                 "mailbeacon_hits_acknowledged", "mailbeacon_hits_stored"):
        assert name in metrics, name


async def test_metrics_count_hits_acknowledged_and_stored(served: Service,
                                                          smtp_relay: SmtpRelay) -> None:
    """Two real opens through the pixel: both acknowledged and stored, as the events say."""
    await served.send(to="r@example.net", subject="hi", html="<p>x</p>")
    (received,) = await smtp_relay.wait_for(1)
    await served.wait_events(1, event="delivered")
    (pixel,) = re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', received.part("text/html"))
    before = await _scrape(served)
    for _ in range(2):
        assert (await served.hit(pixel)).status_code == 200
    await served.wait_events(1, event="opened")
    after = await _scrape(served)
    for name in ("mailbeacon_hits_acknowledged", "mailbeacon_hits_stored"):
        assert after[name][()] - before[name][()] == 2, name
    assert after["mailbeacon_hits_unrecorded"][()] == 0


async def test_metrics_503_when_the_database_is_unreachable(served: Service,
                                                            tmp_path: Path) -> None:
    served.app.health._registry = None
    served.app.health.db = _unreachable(served.runtime.db.url, tmp_path)
    r = await served.web.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 503, r.text
    assert "secret-pw" not in r.text


async def test_metrics_webhook_backlog_equals_the_database(
        service_factory: Callable[..., Any]) -> None:
    """With the webhook sender stopped, each accepted message leaves one pending post."""
    async with service_factory(run_worker=False, metrics_key=KEY) as svc:
        await svc.add_domain("example.com")
        await svc.start_http()
        r = await svc.client.post("/v3/domains/example.com/webhooks",
                                  data={"id": "accepted", "url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 200, r.text
        for n in range(3):
            await svc.send(to=f"r{n}@example.net", subject="hi", text="x",
                           **{"o:testmode": "no"})

        def pending() -> int:
            with svc.runtime.db.read() as conn:
                return int(conn.execute(select(func.count()).where(
                    webhook_deliveries.c.status == "pending")).scalar_one())

        in_db = await asyncio.to_thread(pending)
        assert in_db == 3
        gauge = (await _scrape(svc))["mailbeacon_webhook_deliveries"]
        assert gauge[(("status", "pending"),)] == in_db
        assert gauge[(("status", "failed"),)] == 0

"""Group commit: every hit answered is stored, many hits share one commit."""

from __future__ import annotations

import asyncio
import re

from tests.support import Service, SmtpRelay, count_events, database_held


async def _pixel(service: Service, relay: SmtpRelay) -> str:
    await service.send(to="alice@example.org", subject="x", html="<p>hi</p>")
    (received,) = await relay.wait_for(1)
    await service.wait_events(1, event="delivered")
    (pixel,) = re.findall(r'src="([^"]+/o/[a-z0-9]+)"', received.part("text/html"))
    return pixel


def _count(service: Service, event: str) -> int:
    return count_events(service.runtime.db, event)


async def test_concurrent_hits_share_commits(service: Service, smtp_relay: SmtpRelay) -> None:
    pixel = await _pixel(service, smtp_relay)
    recorder = service.runtime.recorder
    before_batches, before_hits = recorder.batches, recorder.hits
    results = await asyncio.gather(*[service.hit(pixel) for _ in range(200)])
    assert all(r.status_code == 200 for r in results)
    assert recorder.hits - before_hits == 200
    assert recorder.batches - before_batches < 100  # hits were grouped
    assert _count(service, "opened") == 200


async def test_answer_waits_for_the_commit(service: Service, smtp_relay: SmtpRelay) -> None:
    """While another writer holds the database, the pixel does not answer; once the
    writer lets go, the answer comes and the event is already stored."""
    pixel = await _pixel(service, smtp_relay)
    with database_held(service.runtime.db, hold_for=10) as release:
        request = asyncio.ensure_future(service.hit(pixel))
        await asyncio.sleep(0.5)
        assert not request.done()  # still waiting for its commit
        release.set()
        response = await asyncio.wait_for(request, 10)
    assert response.status_code == 200
    assert _count(service, "opened") == 1


async def test_journal_mode(service_factory: object, smtp_relay: SmtpRelay) -> None:
    """Answered once journaled; in the database a moment later, each hit once."""
    async with service_factory(relay=smtp_relay.url, recording="journal") as service:  # type: ignore[operator]
        await service.add_domain()
        pixel = await _pixel(service, smtp_relay)
        results = await asyncio.gather(*[service.hit(pixel) for _ in range(100)])
        assert all(r.status_code == 200 for r in results)
        assert service.runtime.recorder.spooled == 100
        # The loader is another process: on a loaded machine (parallel workers) it may
        # take seconds to start; a wide bound, then the exact count.
        for _ in range(600):
            if _count(service, "opened") >= 100:
                break
            await asyncio.sleep(0.05)
        assert _count(service, "opened") == 100
        await asyncio.sleep(0.3)
        assert _count(service, "opened") == 100

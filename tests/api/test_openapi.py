"""/openapi.json: public, read-only."""

from __future__ import annotations

from tests.support import Service


async def test_openapi_is_get_only(service: Service) -> None:
    r = await service.client.get("/openapi.json", auth=None)
    assert r.status_code == 200 and "/v3/{domain}/events" in r.json()["paths"]
    assert (await service.client.head("/openapi.json", auth=None)).status_code == 200
    for method in ("DELETE", "POST", "PUT", "PATCH"):
        r = await service.client.request(method, "/openapi.json", auth=None)
        assert r.status_code == 405, method
        assert r.headers["allow"] == "GET, HEAD"
        assert "GET only" in r.json()["message"]

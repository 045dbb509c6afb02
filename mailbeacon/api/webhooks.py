"""Webhooks API: Mailgun's /v3/domains/{domain}/webhooks, plus the signing key,
the delivery log with replay, and a test endpoint."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, path_domain, requires
from mailbeacon.api.forms import query_limit, read_form, runtime, text_field, text_fields
from mailbeacon.errors import BadRequest
from mailbeacon.events.fanout import WEBHOOK_IDS
from mailbeacon.webhooks import deliveries, store


@requires(DOMAIN)
async def list_webhooks(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    found = await run_in_threadpool(store.urls, runtime(request).db, domain)
    return JSONResponse({"webhooks": {k: {"urls": v} for k, v in found.items()}})


@requires(DOMAIN)
async def create_webhook(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    form = await read_form(request)
    webhook = text_field(form, "id") or ""
    urls = await run_in_threadpool(store.set_urls, runtime(request).db, domain,
                                   store.check_webhook_id(webhook), text_fields(form, "url"),
                                   False)
    return JSONResponse({"message": "Webhook has been created", "webhook": {"urls": urls}})


@requires(DOMAIN)
async def get_webhook(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    webhook = store.check_webhook_id(request.path_params["webhook"])
    found = (await run_in_threadpool(store.urls, runtime(request).db, domain)).get(webhook)
    if not found:
        return JSONResponse({"message": "Webhook not found"}, status_code=404)
    return JSONResponse({"webhook": {"urls": found}})


@requires(DOMAIN)
async def update_webhook(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    form = await read_form(request)
    urls = await run_in_threadpool(store.set_urls, runtime(request).db, domain,
                                   request.path_params["webhook"], text_fields(form, "url"),
                                   True)
    return JSONResponse({"message": "Webhook has been updated", "webhook": {"urls": urls}})


@requires(DOMAIN)
async def delete_webhook(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    urls = await run_in_threadpool(store.delete, runtime(request).db, domain,
                                   request.path_params["webhook"])
    return JSONResponse({"message": "Webhook has been deleted", "webhook": {"urls": urls}})


@requires(DOMAIN)
async def get_signing_key(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    key = await run_in_threadpool(store.signing_key, runtime(request).db, domain)
    return JSONResponse({"http_signing_key": key})


@requires(DOMAIN)
async def rotate_signing_key(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    key = await run_in_threadpool(store.signing_key, runtime(request).db, domain, True)
    return JSONResponse({"message": "The signing key has been rotated",
                         "http_signing_key": key})


@requires(DOMAIN)
async def list_deliveries(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    limit = query_limit(request)
    items = await run_in_threadpool(
        deliveries.list_deliveries, runtime(request).db, domain,
        request.query_params.get("status"), limit, request.query_params.get("before"))
    counts = await run_in_threadpool(deliveries.counts, runtime(request).db, domain)
    return JSONResponse({"items": items, "counts": counts})


@requires(DOMAIN)
async def replay_all(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    count = await run_in_threadpool(deliveries.replay, runtime(request).db, domain)
    runtime(request).webhooks_queued()
    return JSONResponse({"message": f"{count} failed deliveries will be sent again",
                         "count": count})


@requires(DOMAIN)
async def replay_one(request: Request) -> JSONResponse:
    domain = path_domain(request).name
    count = await run_in_threadpool(deliveries.replay, runtime(request).db, domain,
                                    request.path_params["delivery"])
    runtime(request).webhooks_queued()
    return JSONResponse({"message": "The delivery will be sent again", "count": count})


@requires(DOMAIN)
async def test_webhook(request: Request) -> JSONResponse:
    """Post a sample event to a URL now and show the answer: its status and the start of
    its body, the body only where private addresses are allowed (else this would read
    internal services for anyone with an API key)."""
    domain = path_domain(request).name
    form = await read_form(request)
    url = text_field(form, "url") or ""
    event = text_field(form, "event") or "delivered"
    if event not in WEBHOOK_IDS:
        raise BadRequest(f"'event' must be one of {', '.join(WEBHOOK_IDS)}")
    settings = runtime(request).settings
    answer = await deliveries.send_test(
        runtime(request).db, domain, url, event, timeout=settings.webhook_timeout,
        forbid_private=settings.webhook_forbid_private)
    found: dict[str, object] = {"code": answer.code, "outcome": answer.outcome, "body": None}
    if answer.code is None:
        found["message"] = answer.error  # refused, timed out, connection refused ...
    elif not settings.webhook_forbid_private:
        found["body"] = answer.error
        found["body-truncated"] = answer.truncated
    return JSONResponse(found)


_BASE = "/v3/domains/{domain}/webhooks"
routes = [
    Route(_BASE, list_webhooks, methods=["GET"]),
    Route(_BASE, create_webhook, methods=["POST"]),
    Route(_BASE + "/signing_key", get_signing_key, methods=["GET"]),
    Route(_BASE + "/signing_key", rotate_signing_key, methods=["POST"]),
    Route(_BASE + "/deliveries", list_deliveries, methods=["GET"]),
    Route(_BASE + "/deliveries/replay", replay_all, methods=["POST"]),
    Route(_BASE + "/deliveries/{delivery}/replay", replay_one, methods=["POST"]),
    Route(_BASE + "/test", test_webhook, methods=["POST"]),
    Route(_BASE + "/{webhook}", get_webhook, methods=["GET"]),
    Route(_BASE + "/{webhook}", update_webhook, methods=["PUT"]),
    Route(_BASE + "/{webhook}", delete_webhook, methods=["DELETE"]),
]

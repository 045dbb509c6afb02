"""Domains API: /v3/domains and tracking settings (Mailgun's shape)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import (
    DOMAIN_LIST,
    DOMAIN_SETTINGS,
    INSTALLATION,
    calling_key,
    path_domain,
    requires,
)
from mailbeacon.api.forms import read_form, required, runtime, text_field
from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest


@requires(INSTALLATION)
async def create_domain(request: Request) -> JSONResponse:
    form = await read_form(request)
    name = required(form, "name")
    db = runtime(request).db
    scheme = dom.parse_web_scheme(text_field(form, "web_scheme") or "")
    domain = await run_in_threadpool(dom.add_domain, db, name, text_field(form, "tracking_url"),
                                     scheme)
    return JSONResponse({"message": "Domain has been created",
                         "domain": dom.domain_json(domain),
                         "tracking": dom.tracking_json(domain)})


@requires(DOMAIN_LIST)
async def list_domains(request: Request) -> JSONResponse:
    limit = _int_param(request, "limit", 100, 1, 1000)
    skip = _int_param(request, "skip", 0, 0, 10**9)
    own = calling_key(request).domain
    if own is not None:  # a one-domain key sees only its domain
        found = await run_in_threadpool(dom.get_domain, runtime(request).db, own)
        total, items = 1, [found][skip:skip + limit]
    else:
        total, items = await run_in_threadpool(dom.list_domains, runtime(request).db,
                                               limit, skip)
    return JSONResponse({"total_count": total, "items": [dom.domain_json(d) for d in items]})


@requires(DOMAIN_SETTINGS)
async def get_domain(request: Request) -> JSONResponse:
    domain = path_domain(request)
    return JSONResponse({"domain": dom.domain_json(domain),
                         "tracking": dom.tracking_json(domain)})


@requires(DOMAIN_SETTINGS)
async def update_domain(request: Request) -> JSONResponse:
    form = await read_form(request)
    changes: dict[str, object] = {}
    url = text_field(form, "tracking_url")
    if url is not None:
        changes["tracking_url"] = dom.validate_tracking_url(url) if url.strip() else None
    bounce = text_field(form, "bounce_domain")
    if bounce is not None:
        changes["bounce_domain"] = dom.normalize_name(bounce) if bounce.strip() else None
    scheme = text_field(form, "web_scheme")
    if scheme is not None:
        changes["web_scheme"] = dom.parse_web_scheme(scheme)
    limit = text_field(form, "soft_bounce_limit")
    if limit is not None:
        if not limit.strip().isdigit() or not 1 <= int(limit) <= 1000:
            raise BadRequest("'soft_bounce_limit' must be an integer from 1 to 1000")
        changes["soft_bounce_limit"] = int(limit)
    if not changes:
        raise BadRequest("Nothing to change: give 'tracking_url', 'web_scheme', "
                         "'bounce_domain' or 'soft_bounce_limit' (empty text resets)")
    domain = await run_in_threadpool(dom.update_domain, runtime(request).db,
                                     path_domain(request).name, **changes)
    return JSONResponse({"message": "Domain has been updated",
                         "domain": dom.domain_json(domain)})


@requires(DOMAIN_SETTINGS)
async def get_tracking(request: Request) -> JSONResponse:
    domain = path_domain(request)
    return JSONResponse({"tracking": dom.tracking_json(domain)})


@requires(DOMAIN_SETTINGS)
async def update_open_tracking(request: Request) -> JSONResponse:
    form = await read_form(request)
    changes: dict[str, object] = {"track_opens": dom.parse_bool(required(form, "active"),
                                                                "active")}
    top = text_field(form, "place_at_the_top")
    if top is not None:
        changes["pixel_top"] = dom.parse_bool(top, "place_at_the_top")
    domain = await run_in_threadpool(dom.update_domain, runtime(request).db,
                                     path_domain(request).name, **changes)
    return JSONResponse({"message": "Domain tracking settings have been updated",
                         "open": dom.tracking_json(domain)["open"]})


@requires(DOMAIN_SETTINGS)
async def update_click_tracking(request: Request) -> JSONResponse:
    form = await read_form(request)
    mode = dom.parse_click_mode(required(form, "active"), "active")
    domain = await run_in_threadpool(dom.update_domain, runtime(request).db,
                                     path_domain(request).name, track_clicks=mode)
    return JSONResponse({"message": "Domain tracking settings have been updated",
                         "click": dom.tracking_json(domain)["click"]})


@requires(DOMAIN_SETTINGS)
async def update_unsubscribe_tracking(request: Request) -> JSONResponse:
    """Mailgun's unsubscribe tracking: the footer added when a body has no placeholder;
    `list_unsubscribe`: the one-click headers on every message (not only those with a
    footer or a placeholder)."""
    form = await read_form(request)
    changes: dict[str, object] = {"unsubscribe_footer": dom.parse_bool(
        required(form, "active"), "active")}
    one_click = text_field(form, "list_unsubscribe")
    if one_click is not None:
        changes["list_unsubscribe"] = dom.parse_bool(one_click, "list_unsubscribe")
    for field, column in (("html_footer", "footer_html"), ("text_footer", "footer_text")):
        value = text_field(form, field)
        if value is not None:
            changes[column] = value or None
    domain = await run_in_threadpool(dom.update_domain, runtime(request).db,
                                     path_domain(request).name, **changes)
    return JSONResponse({"message": "Domain tracking settings have been updated",
                         "unsubscribe": dom.tracking_json(domain)["unsubscribe"]})


@requires(DOMAIN_SETTINGS)
async def bot_thresholds(request: Request) -> JSONResponse:
    """GET or PUT the thresholds of the link-scanner heuristics (track/bots.py)."""
    domain = path_domain(request)
    if request.method == "PUT":
        form = await read_form(request)
        fields: dict[str, Any] = {}
        for name in ("click_after_delivery_seconds", "burst_links", "burst_seconds"):
            value = text_field(form, name)
            if value is not None:
                try:
                    fields[name] = int(value) if name == "burst_links" else float(value)
                except ValueError as exc:
                    raise BadRequest(f"'{name}' must be a number") from exc
        try:
            thresholds = dom.Thresholds.from_json({**domain.bot_thresholds.to_json(),
                                                   **fields})
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        domain = await run_in_threadpool(dom.update_domain, runtime(request).db, domain.name,
                                         bot_thresholds=thresholds)
    return JSONResponse({"bots": domain.bot_thresholds.to_json()})


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) < 10) or not low <= int(raw) <= high:
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}")
    return int(raw)


routes = [
    Route("/v3/domains", create_domain, methods=["POST"]),
    Route("/v3/domains", list_domains, methods=["GET"]),
    Route("/v3/domains/{name}", get_domain, methods=["GET"]),
    Route("/v3/domains/{name}", update_domain, methods=["PUT"]),
    Route("/v3/domains/{name}/tracking", get_tracking, methods=["GET"]),
    Route("/v3/domains/{name}/tracking/open", update_open_tracking, methods=["PUT"]),
    Route("/v3/domains/{name}/tracking/click", update_click_tracking, methods=["PUT"]),
    Route("/v3/domains/{name}/tracking/unsubscribe", update_unsubscribe_tracking,
          methods=["PUT"]),
    Route("/v3/domains/{name}/bots", bot_thresholds, methods=["GET", "PUT"]),
]

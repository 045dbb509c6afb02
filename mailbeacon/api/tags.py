"""Tags API: /v3/{domain}/tags and /v3/{domain}/tags/{tag} (Mailgun's shape)."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, path_domain, requires
from mailbeacon.api.forms import query_limit, read_form, runtime, text_field
from mailbeacon.api.paging import api_url, page_links
from mailbeacon.errors import BadRequest
from mailbeacon.insight import tags as tg
from mailbeacon.model.paging import parse_page
from mailbeacon.model.tags import check_tags, normalize_tags


@requires(DOMAIN)
async def list_tags(request: Request) -> JSONResponse:
    params = request.query_params
    limit = query_limit(request)
    page = parse_page(params.get("page", "first"))
    pivot = params.get("tag")
    if page in ("next", "prev") and pivot is None:
        raise BadRequest(f"'tag' is required with page={page}: the tag to page from")
    prefix = params.get("prefix", "")
    db = runtime(request).db
    domain = path_domain(request)
    found = await run_in_threadpool(tg.list_tags, db, domain.name, limit, page, pivot or "",
                                    prefix)

    base = api_url(request, f"/v3/{domain.name}/tags?")

    paging = page_links(base, "tag", page, pivot, found[0].tag if found else None,
                        found[-1].tag if found else None, limit,
                        {"prefix": prefix} if prefix else {})
    return JSONResponse({
        "items": [tag_json(t) for t in found],
        "paging": paging,
    })


@requires(DOMAIN)
async def get_tag(request: Request) -> JSONResponse:
    tag = path_tag(request.path_params["tag"])
    db = runtime(request).db
    domain = path_domain(request)
    found = await run_in_threadpool(tg.get_tag, db, domain.name, tag)
    return JSONResponse(tag_json(found))


@requires(DOMAIN)
async def update_tag(request: Request) -> JSONResponse:
    tag = path_tag(request.path_params["tag"])
    form = await read_form(request)
    # An empty description is allowed: it clears the description.
    description = text_field(form, "description")
    if description is None:
        raise BadRequest("'description' parameter is missing")
    db = runtime(request).db
    domain = path_domain(request)
    await run_in_threadpool(tg.update_tag, db, domain.name, tag, description)
    return JSONResponse({"message": "Tag updated"})


@requires(DOMAIN)
async def delete_tag(request: Request) -> JSONResponse:
    tag = path_tag(request.path_params["tag"])
    db = runtime(request).db
    domain = path_domain(request)
    await run_in_threadpool(tg.delete_tag, db, domain.name, tag)
    return JSONResponse({"message": "Tag deleted"})


def path_tag(raw: str) -> str:
    """The tag named in a URL, normalised as intake stores it, or BadRequest saying why."""
    check_tags([raw])
    normalized = normalize_tags([raw])
    # Blanks only: normalize_tags drops the tag, and check_tags words the error for "".
    check_tags(normalized or [""])
    return normalized[0]


def tag_json(tag: tg.Tag) -> dict[str, Any]:
    return {
        "tag": tag.tag,
        "description": tag.description,
        "first-seen": formatdate(tag.first_seen / 1_000_000, usegmt=True),
        "last-seen": formatdate(tag.last_seen / 1_000_000, usegmt=True),
    }


routes = [
    Route("/v3/{domain}/tags", list_tags, methods=["GET"]),
    Route("/v3/{domain}/tags/{tag}", get_tag, methods=["GET"]),
    Route("/v3/{domain}/tags/{tag}", update_tag, methods=["PUT"]),
    Route("/v3/{domain}/tags/{tag}", delete_tag, methods=["DELETE"]),
]

"""Suppressions API: /v3/{domain}/bounces, /unsubscribes, /complaints and /whitelists.

Mailgun's shape: list (keyset paging by address), get, add (a form, or a JSON array of
up to 1000), import a CSV file, delete one, delete all. Each list has its own routes, so
no `/v3/{domain}/{name}` pattern can shadow another API's paths.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, path_domain, requires
from mailbeacon.api.forms import query_limit, read_form, runtime, text_field, text_fields
from mailbeacon.api.paging import api_url, page_links
from mailbeacon.errors import BadRequest
from mailbeacon.model.clock import rfc2822
from mailbeacon.model.paging import parse_page
from mailbeacon.suppress import lists as sl
from mailbeacon.suppress.rules import SuppressionKind

MAX_BATCH = 1000  # entries in one JSON request
MAX_IMPORT_ROWS = 100_000  # rows in one CSV file (checked before anything is written)

Kind = SuppressionKind
# What a removal answers, per list: one address, and the whole list.
_REMOVED = {
    Kind.BOUNCE: ("Bounced address has been removed",
                  "Bounced addresses for this domain have been removed"),
    Kind.UNSUBSCRIBE: ("Unsubscribe event has been removed",
                       "Unsubscribed addresses for this domain have been removed"),
    Kind.COMPLAINT: ("Spam complaint has been removed",
                     "Complaint addresses for this domain have been removed"),
    Kind.ALLOWLIST: ("Whitelist address/domain has been removed",
                     "Whitelist addresses/domains for this domain have been removed"),
}


async def list_entries(request: Request, kind: Kind) -> JSONResponse:
    params = request.query_params
    limit = query_limit(request)
    page = parse_page(params.get("page", "first"))
    pivot = params.get("address")
    if page in ("next", "prev") and pivot is None:
        raise BadRequest(f"'address' is required with page={page}: the address to page from")
    term = params.get("term", "")
    db = runtime(request).db
    domain = path_domain(request)
    found = await run_in_threadpool(sl.list_entries, db, domain.name, kind, limit, page,
                                    pivot or "", term)

    base = api_url(request, f"/v3/{domain.name}/{sl.NAMES[kind]}?")

    paging = page_links(base, "address", page, pivot,
                        found[0].address if found else None,
                        found[-1].address if found else None, limit,
                        {"term": term} if term else {})
    return JSONResponse({
        "items": [entry_json(kind, e) for e in found],
        "paging": paging,
    })


async def get_entry(request: Request, kind: Kind) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)
    key = sl.lookup_key(request.path_params["address"])
    found = await run_in_threadpool(sl.get_entry, db, domain.name, kind, key)
    return JSONResponse(entry_json(kind, found))


async def add_entries(request: Request, kind: Kind) -> JSONResponse:
    """A form adds one address; a JSON array adds up to 1000, all or none."""
    db = runtime(request).db
    domain = path_domain(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            items = json.loads(await request.body())
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
        entries = sl.parse_entries(kind, items, MAX_BATCH)
        count = await run_in_threadpool(sl.add_entries, db, domain.name, kind, entries)
        return JSONResponse({"message": f"{_addresses(count)} been added to the "
                                        f"{sl.NAMES[kind]} table"})
    form = await read_form(request)
    fields: dict[str, Any] = {name: text_field(form, name)
                              for name in ("address", "domain", "code", "error", "reason",
                                           "created_at")}
    if kind is Kind.UNSUBSCRIBE:
        fields["tag"] = text_fields(form, "tag")  # repeatable: one scope each
    entry = sl.parse_entry(kind, fields)
    await run_in_threadpool(sl.add_entries, db, domain.name, kind, [entry])
    answer: dict[str, Any] = {
        "message": f"{_addresses(1)} been added to the {sl.NAMES[kind]} table",
        "address": entry.address}
    if kind is Kind.ALLOWLIST:
        answer.update(type="domain" if entry.is_domain else "address", value=entry.address)
    return JSONResponse(answer)


async def import_entries(request: Request, kind: Kind) -> JSONResponse:
    """A CSV file in `file` (multipart): every row is checked before any is written."""
    db = runtime(request).db
    domain = path_domain(request)
    form = await read_form(request)
    upload = form.get("file")
    if upload is None:
        raise BadRequest("'file' parameter is missing: send a CSV file as multipart/form-data")
    if not isinstance(upload, UploadFile):
        raise BadRequest("'file' parameter must be a file (multipart/form-data)")
    data = await upload.read()
    # Checking 100k addresses takes seconds: off the event loop.
    entries = await run_in_threadpool(sl.read_csv, kind, data, MAX_IMPORT_ROWS)
    count = await run_in_threadpool(sl.add_entries, db, domain.name, kind, entries)
    return JSONResponse({"message": f"file uploaded successfully and processed: "
                                    f"{_addresses(count, 'imported')} into the "
                                    f"{sl.NAMES[kind]} table"})


async def delete_entry(request: Request, kind: Kind) -> JSONResponse:
    """Remove one address; for unsubscribes `?tag=` removes only that scope."""
    db = runtime(request).db
    domain = path_domain(request)
    key = sl.lookup_key(request.path_params["address"])
    tag = request.query_params.get("tag")
    scope = sl.normalize_scope(tag) if kind is Kind.UNSUBSCRIBE and tag else None
    await run_in_threadpool(sl.delete_entry, db, domain.name, kind, key, scope)
    answer: dict[str, Any] = {"message": _REMOVED[kind][0], "address": key}
    if kind is Kind.ALLOWLIST:
        answer["value"] = key
    return JSONResponse(answer)


async def delete_all(request: Request, kind: Kind) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)
    await run_in_threadpool(sl.delete_all, db, domain.name, kind)
    return JSONResponse({"message": _REMOVED[kind][1]})


def entry_json(kind: Kind, entry: sl.Entry) -> dict[str, Any]:
    """An entry as Mailgun shows an item of that list."""
    assert entry.created_at is not None  # stored entries always have one
    date = rfc2822(entry.created_at)
    if kind is Kind.BOUNCE:
        return {"address": entry.address, "code": entry.code, "error": entry.error,
                "created_at": date}
    if kind is Kind.UNSUBSCRIBE:
        return {"address": entry.address, "tags": list(entry.scopes), "created_at": date}
    if kind is Kind.ALLOWLIST:
        return {"type": "domain" if entry.is_domain else "address", "value": entry.address,
                "reason": entry.error, "createdAt": date}
    return {"address": entry.address, "created_at": date}





def _addresses(count: int, verb: str = "") -> str:
    """'1 address has' / '3 addresses have', or with a verb: '1 address imported'."""
    noun = "address" if count == 1 else "addresses"
    if verb:
        return f"{count} {noun} {verb}"
    return f"{count} {noun} {'has' if count == 1 else 'have'}"


Handler = Callable[[Request, Kind], Awaitable[JSONResponse]]


def _bind(handler: Handler, kind: Kind) -> Callable[[Request], Awaitable[JSONResponse]]:
    # A plain function (not functools.partial), so Starlette treats it as an endpoint.
    @requires(DOMAIN)
    async def endpoint(request: Request) -> JSONResponse:
        return await handler(request, kind)

    endpoint.__name__ = endpoint.__qualname__ = f"{handler.__name__}_{sl.NAMES[kind]}"
    return endpoint


def _routes() -> list[Route]:
    found = []
    for name, kind in sl.LISTS.items():
        base = f"/v3/{{domain}}/{name}"
        found += [
            Route(base, _bind(list_entries, kind), methods=["GET"]),
            Route(base, _bind(add_entries, kind), methods=["POST"]),
            Route(base, _bind(delete_all, kind), methods=["DELETE"]),
            # Before {address:path}, which would otherwise take "import" as an address.
            Route(f"{base}/import", _bind(import_entries, kind), methods=["POST"]),
            # {address:path}: an address may contain '/', which arrives decoded from %2F.
            Route(f"{base}/{{address:path}}", _bind(get_entry, kind), methods=["GET"]),
            Route(f"{base}/{{address:path}}", _bind(delete_entry, kind), methods=["DELETE"]),
        ]
    return found


routes = _routes()

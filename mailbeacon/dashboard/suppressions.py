"""Suppression lists (bounces, unsubscribes, complaints, allowlist): list, search, add,
remove, CSV import and export, all through mailbeacon.suppress.lists so the dashboard
accepts exactly what the API and the CLI accept."""

from __future__ import annotations

import io
from collections.abc import Iterator
from urllib.parse import urlencode

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model import spreadsheet
from mailbeacon.suppress import lists as sl
from mailbeacon.suppress.rules import SuppressionKind

from .web import PREFIX, action, dashboard, get_domain, in_thread, redirect, render, text_field

PAGE_SIZE = 50
MAX_IMPORT_BYTES = 25 * 1024 * 1024
LABELS = {"bounces": "Bounces", "unsubscribes": "Unsubscribes", "complaints": "Complaints",
          "whitelists": "Allowlist"}


def _kind(request: Request) -> tuple[str, SuppressionKind]:
    name = request.path_params["list"]
    if name not in sl.LISTS:
        raise NotFound(f"No suppression list {name!r}")
    return name, sl.LISTS[name]


def _list_url(domain: str, name: str) -> str:
    return f"{PREFIX}/{domain}/suppressions/{name}"


def index(request: Request) -> Response:
    domain = get_domain(request)
    return redirect(request, _list_url(domain.name, "bounces"))


def list_page(request: Request) -> Response:
    domain = get_domain(request)
    name, kind = _kind(request)
    term = request.query_params.get("term", "").strip()[:320]
    page = request.query_params.get("page", "first")
    pivot = request.query_params.get("pivot", "")[:330]
    if page not in ("first", "next", "prev", "last") or (page in ("next", "prev")
                                                           and not pivot):
        page = "first"
    entries = sl.list_entries(dashboard(request).runtime.db, domain.name, kind, PAGE_SIZE,
                              page, pivot, term)  # type: ignore[arg-type]

    def link(which: str, at: str = "") -> str:
        query = {"page": which}
        if at:
            query["pivot"] = at
        if term:
            query["term"] = term
        return "?" + urlencode(query)

    paging = {"first": link("first"), "last": link("last"),
              "next": link("next", entries[-1].address) if entries else None,
              "prev": link("prev", entries[0].address) if entries else None}
    return render(request, "suppressions.html", domain=domain, nav="suppressions",
                  list_name=name, kind=str(kind), labels=LABELS, entries=entries,
                  term=term, paging=paging, columns=sl.CSV_COLUMNS[kind])


@action()
async def add(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    name, kind = _kind(request)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and v.strip()
              and k in ("address", "domain", "code", "error", "reason", "tag")}
    entry = sl.parse_entry(kind, fields)
    await in_thread(sl.add_entries, dashboard(request).runtime.db, domain.name, kind, [entry])
    return redirect(request, _list_url(domain.name, name),
                    f"Added {entry.address} to {LABELS[name].lower()}.")


@action()
async def remove(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    name, kind = _kind(request)
    address = sl.lookup_key(text_field(form, "address"))
    scope = text_field(form, "scope") or None
    await in_thread(sl.delete_entry, dashboard(request).runtime.db, domain.name, kind,
                    address, scope)
    return redirect(request, _list_url(domain.name, name),
                    f"Removed {address} from {LABELS[name].lower()}.")


@action(max_part_size=MAX_IMPORT_BYTES)
async def import_csv(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    name, kind = _kind(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("Choose a CSV file to import.")
    data = await upload.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise BadRequest("The file is larger than 25 MB: split it.")
    entries = await in_thread(sl.read_csv, kind, data)
    if not entries:
        raise BadRequest("The file has a header row but no entries.")
    count = await in_thread(sl.add_entries, dashboard(request).runtime.db, domain.name, kind,
                            entries)
    return redirect(request, _list_url(domain.name, name),
                    f"Imported {count} address{'es' if count != 1 else ''}.")


def export_csv(request: Request) -> Response:
    domain = get_domain(request)
    name, kind = _kind(request)
    db = dashboard(request).runtime.db

    def lines() -> Iterator[str]:
        # A page of entries at a time: a list may hold millions of addresses.
        out = io.StringIO()
        writer = spreadsheet.writer(out, lineterminator="\n")  # as sl.write_csv writes
        writer.writerow(sl.CSV_COLUMNS[kind])
        for count, entry in enumerate(sl.iter_entries(db, domain.name, kind), 1):
            writer.writerows(sl.csv_rows(kind, entry))
            if count % 1000 == 0:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{domain.name}-{name}.csv"'})


routes = [
    Route("/{domain}/suppressions", index, methods=["GET"]),
    Route("/{domain}/suppressions/{list}.csv", export_csv, methods=["GET"]),
    Route("/{domain}/suppressions/{list}", list_page, methods=["GET"]),
    Route("/{domain}/suppressions/{list}/add", add, methods=["POST"]),
    Route("/{domain}/suppressions/{list}/remove", remove, methods=["POST"]),
    Route("/{domain}/suppressions/{list}/import", import_csv, methods=["POST"]),
]

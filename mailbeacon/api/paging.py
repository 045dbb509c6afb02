"""Mailgun-style keyset paging URLs: `?page=first|next|prev|last&<key>=<pivot>&limit=N`."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

from starlette.requests import Request

from mailbeacon.api.forms import runtime


def api_url(request: Request, path: str) -> str:
    """`path` under the server's public URL (MAILBEACON_PUBLIC_URL, else the --http
    address), never under the request's Host header, which any client can set."""
    return runtime(request).settings.base_url + path


def page_links(base: str, key: str, page: str, pivot: str | None, first: str | None,
               last: str | None, limit: int, kept: Mapping[str, str]) -> dict[str, str]:
    """The `paging` object of a list answer.

    `base` ends with "?"; `key` names the pivot parameter; `first`/`last` are the pivots
    of the page's first and last items (None for an empty page); `kept` are the filters
    every URL repeats, so all pages belong to one list.
    """
    def url(which: str, at: str | None = None) -> str:
        query = {"page": which, **({key: at} if at is not None else {}), "limit": limit,
                 **kept}
        return base + urlencode(query, quote_via=quote)

    if first is not None and last is not None:
        next_url, previous_url = url("next", last), url("prev", first)
    # An empty page: nothing lies beyond it, so point the other way at the end that exists.
    elif page == "prev":
        next_url, previous_url = url("first"), url("prev", pivot)
    else:
        next_url = url("next", pivot) if page == "next" else url("first")
        previous_url = url("last")
    return {"first": url("first"), "next": next_url, "previous": previous_url,
            "last": url("last")}

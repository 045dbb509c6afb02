"""The API described as OpenAPI 3.0, served at /openapi.json.

Built from the routes themselves (so it cannot miss one), with a table of each
endpoint's form fields and query parameters. Every error answer has the one JSON shape
`{"message": "..."}`. The fuzz test (tests/api/test_fuzz.py) holds the API to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

from mailbeacon import __version__

_TRACKING = ["active", "place_at_the_top"]
# (method, path) -> form fields; every field is a string, as in a form.
FORMS: dict[tuple[str, str], list[str]] = {
    ("POST", "/v3/domains"): ["name", "tracking_url", "web_scheme"],
    ("PUT", "/v3/domains/{name}"): ["tracking_url", "web_scheme", "bounce_domain",
                                    "soft_bounce_limit"],
    ("PUT", "/v3/domains/{name}/tracking/open"): _TRACKING,
    ("PUT", "/v3/domains/{name}/tracking/click"): ["active"],
    ("PUT", "/v3/domains/{name}/tracking/unsubscribe"): ["active", "html_footer",
                                                         "text_footer", "list_unsubscribe"],
    ("PUT", "/v3/domains/{name}/bots"): ["click_after_delivery_seconds", "burst_links",
                                         "burst_seconds"],
    ("PUT", "/v3/domains/{name}/privacy"): ["track_activities", "truncate_ips",
                                            "retention_days"],
    ("POST", "/v3/{domain}/messages"): [
        "from", "to", "cc", "bcc", "subject", "text", "html", "o:tag", "o:tracking",
        "o:tracking-opens", "o:tracking-clicks", "o:tracking-pixel-location-top",
        "o:testmode", "o:deliverytime", "recipient-variables", "v:custom", "h:X-Custom"],
    ("POST", "/v3/{domain}/messages.mime"): ["to", "message"],
    ("POST", "/v3/domains/{domain}/webhooks"): ["id", "url"],
    ("PUT", "/v3/domains/{domain}/webhooks/{webhook}"): ["url"],
    ("POST", "/v3/domains/{domain}/webhooks/test"): ["url", "event"],
    ("PUT", "/v3/{domain}/tags/{tag}"): ["description"],
    ("PUT", "/v3/{domain}/contacts/{address}/consent"): ["consent"],
}
for _list in ("bounces", "unsubscribes", "complaints", "whitelists"):
    FORMS[("POST", f"/v3/{{domain}}/{_list}")] = ["address", "code", "error", "tag",
                                                  "domain", "reason", "created_at"]
_QUERIES: dict[str, list[str]] = {
    "/v3/domains": ["limit", "skip"],
    "/v3/{domain}/events": ["event", "recipient", "message-id", "tags", "severity", "from",
                            "to", "subject", "begin", "end", "ascending", "limit", "pretty"],
    "/v3/{domain}/tags": ["limit", "prefix", "page", "tag"],
    "/v3/{domain}/inbound": ["matched", "limit", "before"],
    "/v3/{domain}/stats/total": ["event", "start", "end", "resolution", "duration", "human"],
    "/v3/{domain}/stats/aggregates/failures": ["start", "end"],
    "/v3/{domain}/tags/{tag}/stats/aggregates/failures": ["start", "end"],
    "/v3/{domain}/contacts": ["sort", "order", "limit", "min_score", "max_score",
                              "active_since", "consent", "page", "pivot"],
    "/v3/domains/{domain}/webhooks/deliveries": ["status", "limit", "before"],
}
_ERRORS = {"400": "Bad request", "401": "No or wrong API key",
           "403": "The key may not use this domain or route", "404": "Not found",
           "405": "Method not allowed", "413": "Request too large"}


def _message_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["message"],
            "properties": {"message": {"type": "string"}}}


def _operation(method: str, path: str, params: Sequence[str]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in params]
    if method == "GET":
        parameters += [{"name": q, "in": "query", "required": False,
                        "schema": {"type": "string"}} for q in _QUERIES.get(path, [])]
    ok_type = "text/csv" if path.endswith(".csv") or path.endswith("/export") \
        else "application/json"
    operation: dict[str, Any] = {
        "parameters": parameters,
        "responses": {"200": {"description": "OK",
                              "content": {ok_type: {"schema": {"type": "object"}}
                                          if ok_type == "application/json"
                                          else {"schema": {"type": "string"}}}},
                      **{code: {"description": text, "content": {
                          "application/json": {"schema": _message_schema()}}}
                         for code, text in _ERRORS.items()}},
    }
    fields = FORMS.get((method, path))
    if fields is not None:
        schema = {"type": "object",
                  "properties": {f: {"type": "string"} for f in fields}}
        operation["requestBody"] = {"content": {
            "application/x-www-form-urlencoded": {"schema": schema}}}
    return operation


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.methods:
            continue
        path = route.path.replace(":path}", "}")
        params = list(route.param_convertors)
        for method in sorted(route.methods - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(method, path, params)
    return {
        "openapi": "3.0.3",
        "info": {"title": "mailbeacon", "version": __version__,
                 "description": "Mailgun-shaped API: see docs/api.md"},
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "security": [{"basic": []}],
        "paths": paths,
    }

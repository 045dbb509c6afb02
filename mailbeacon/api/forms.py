"""Reading request forms (urlencoded or multipart) the way Mailgun clients send them."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

from mailbeacon.errors import BadRequest
from mailbeacon.runtime import Runtime


def runtime(request: Request) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


async def read_form(request: Request) -> FormData:
    limit = runtime(request).settings.max_request_bytes
    return await request.form(max_files=1000, max_fields=10000, max_part_size=limit)


def text_field(form: FormData, name: str) -> str | None:
    """The last value of a text field (None if absent); BadRequest if it is a file."""
    values = form.getlist(name)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' parameter must be text, not a file")
    return value


def text_fields(form: FormData, name: str) -> list[str]:
    values = form.getlist(name)
    if not all(isinstance(v, str) for v in values):
        raise BadRequest(f"'{name}' parameter must be text, not a file")
    return [str(v) for v in values]


def required(form: FormData, name: str) -> str:
    value = text_field(form, name)
    if value is None or not value.strip():
        raise BadRequest(f"'{name}' parameter is missing")
    return value


def limit_param(raw: str | None, maximum: int, name: str = "limit",
                default: int = 100) -> int:
    """A page size from the query string: digits only, 1 to `maximum`, else BadRequest."""
    if raw is None:
        return default
    # The length check keeps int() away from absurdly long digit strings.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= maximum):
        raise BadRequest(f"'{name}' must be an integer from 1 to {maximum}")
    return int(raw)


PAGE_LIMIT = 1000  # largest page of the list APIs (tags, campaigns, suppressions, contacts)


def query_limit(request: Request, maximum: int = PAGE_LIMIT) -> int:
    """The `limit` query parameter (default 100)."""
    return limit_param(request.query_params.get("limit"), maximum)

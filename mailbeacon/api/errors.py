"""One error shape for the whole API: `{"message": "..."}` with the right status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailbeacon.errors import ApiError

log = logging.getLogger("mailbeacon.api")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": 'Basic realm="mailbeacon"'} if exc.status == 401 else None
    return JSONResponse({"message": exc.message}, status_code=exc.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "Not found", 405: "Method not allowed",
               413: "Request is larger than the configured limit"}.get(exc.status_code)
    detail = exc.detail if exc.detail and exc.status_code not in (404, 405, 413) else message
    return JSONResponse({"message": detail or "Bad request"}, status_code=exc.status_code,
                        headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"message": "Internal error; it has been logged"}, status_code=500)

"""Request size limit, answered in the API's JSON error shape."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailbeacon.errors import PayloadTooLarge


class LimitBody:
    """413 before reading when Content-Length is over the limit; otherwise counts the
    bytes as they arrive (chunked bodies) and stops the request once over. `limit` may
    depend on the request (subclasses)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def limit(self, scope: Scope) -> int:
        return self.max_bytes

    def too_large(self, message: str) -> Response:
        return JSONResponse({"message": message}, 413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        message = f"Request is larger than the configured limit of {limit} bytes"
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await self.too_large(message)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(message)
            return received

        await self.app(scope, counting_receive, send)

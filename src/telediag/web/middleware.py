"""ASGI middleware of the HTTP API."""

from __future__ import annotations

import logging

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """Raised from inside the body stream; an ``HTTPException`` so that FastAPI's body
    parsing lets it through instead of turning it into a generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not Content-Length
    is declared (chunked uploads are counted as they arrive)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            log.warning("refused an upload over %d bytes on %s", self.limit, scope.get("path"))
            response = JSONResponse({"detail": BodyTooLarge(self.limit).detail}, status_code=413)
            await response(scope, _empty_receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    log.warning("refused an upload over %d bytes on %s", self.limit, scope.get("path"))
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}

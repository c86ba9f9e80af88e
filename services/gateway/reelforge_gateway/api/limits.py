"""Refuses request bodies over the size limit, whether or not they declare a Content-Length."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelforge_gateway.api.problems import is_openai_path, openai_error_body


class BodySizeLimit:
    """`upload_paths` (exact paths, e.g. the multipart video create) get the larger `max_upload_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int | None = None,
                 upload_paths: tuple[str, ...] = (), path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes or max_bytes
        self.upload_paths = upload_paths
        self.path_limits = path_limits or {}  # exact path -> its own limit (e.g. batch uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if scope["path"] in self.upload_paths else self.default_max_bytes
        limit = self.path_limits.get(scope["path"], limit)
        await _Limited(self.app, limit)(scope, receive, send)


class _Limited:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        received = 0

        async def limited_receive() -> Message:
            # Raised while the route reads its body; the app's handlers turn it into problem+json.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"Request body too large; the limit is {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        detail = f"The limit is {self.max_bytes} bytes"
        if is_openai_path(scope["path"]):
            content_type = b"application/json"
            payload = openai_error_body(413, "payload_too_large", f"Request body too large. {detail}")
        else:
            content_type = b"application/problem+json"
            payload = {"type": "urn:reelforge:problem:payload_too_large", "title": "Request body too large",
                       "status": 413, "code": "payload_too_large", "detail": detail}
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", content_type), (b"x-should-retry", b"false"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

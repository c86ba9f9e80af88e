"""Headers every HTTP response of the platform carries (OWASP API8: security misconfiguration)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DEFAULTS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds each default unless the route already chose a value (e.g. a stream its own cache policy)."""

    def __init__(self, app: ASGIApp, overrides: dict[str, str] | None = None) -> None:
        self.app = app
        chosen = dict(_DEFAULTS)
        chosen.update({name.lower().encode(): value.encode() for name, value in (overrides or {}).items()})
        self._defaults = list(chosen.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self._defaults if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)

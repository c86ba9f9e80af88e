"""The one SSRF guard: for URLs a partner (webhook endpoints) or a provider (output downloads) hands us.

A URL may be fetched only over http(s), without credentials, and only if every address its host resolves
to is public: no loopback, private, link-local (cloud metadata at 169.254.169.254), multicast, reserved,
shared (100.64/10) or unspecified address, unless the operator allowlisted the host or `host:port` as
written in the URL, or a network (with a prefix length, e.g. 127.0.0.1/32) holding every address it
resolves to. Plain http to a public host is refused unless `require_https=False`.

Checking a name and then letting the HTTP client resolve it again leaves a gap: a DNS answer that
changes between the two (DNS rebinding) would send the request to an address never checked. So the host
is resolved once (`URLGuard.pin`) and `PinnedTransport` connects to that checked address itself, keeping
the name in the `Host` header and in TLS (SNI and certificate verification still use the name). Each
request a client sends through the transport is checked again, so a redirect a client follows is checked
like the first URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> every address the name resolves to (tests pass their own to play DNS tricks)
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class UnsafeURL(ValueError):
    pass


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"the host {host!r} does not resolve") from exc
    seen: dict[IPAddress, None] = {}
    for info in infos:
        seen[ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])] = None
    return list(seen)


@dataclass(frozen=True)
class Pinned:
    """A checked URL: the name it was given with and the one address requests to it go to."""

    scheme: str
    host: str
    port: int
    address: IPAddress


class URLGuard:
    def __init__(self, allow: Iterable[str] = (), *, require_https: bool = True,
                 resolver: Resolver | None = None) -> None:
        self._hosts: set[str] = set()
        self._networks: list[IPNetwork] = []
        for entry in allow:
            # "10.0.0.0/8", "127.0.0.1/32": every address the host resolves to must be inside. A bare name or
            # address ("127.0.0.1", "hooks.internal:8443") matches the URL's host as written, so allowlisting
            # 127.0.0.1 does not let "localhost" or "2130706433" through.
            if "/" in entry:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self._hosts.add(entry.lower())
        self._require_https = require_https
        self._resolve = resolver or system_resolver

    def _allowlisted(self, host: str, port: int, addresses: list[IPAddress]) -> bool:
        if host in self._hosts or f"{host}:{port}" in self._hosts:
            return True
        return bool(addresses) and bool(self._networks) and all(
            any(a in net for net in self._networks) for a in addresses)

    async def pin(self, url: str | httpx.URL) -> Pinned:
        """Resolves the URL's host once and returns the address to connect to; raises UnsafeURL."""
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsafeURL(f"not an http(s) URL with a host: {str(url)[:200]!r}")
        if parts.username or parts.password:
            raise UnsafeURL("URLs with credentials are refused")
        host = parts.hostname.lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UnsafeURL("the URL's port is invalid") from exc
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = await self._resolve(host, port)
        if not addresses:
            raise UnsafeURL(f"the host {host!r} does not resolve")
        if not self._allowlisted(host, port, addresses):
            if self._require_https and parts.scheme != "https":
                raise UnsafeURL(f"plain http to {host} is refused")
            bad = [str(a) for a in addresses if not is_public(a)]
            if bad:
                raise UnsafeURL(f"{host} resolves to a non-public address ({', '.join(bad)})")
        return Pinned(parts.scheme, host, port, addresses[0])

    async def check(self, url: str) -> None:
        """Raises UnsafeURL unless `url` may be fetched (a form check; fetch through `transport()`)."""
        await self.pin(url)

    def transport(self, **kwargs: Any) -> PinnedTransport:
        return PinnedTransport(self, **kwargs)


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends every request to the address its guard checked, never resolving
    the name again; the Host header and TLS server name stay the URL's name."""

    def __init__(self, guard: URLGuard, inner: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        self._guard = guard
        self._inner = inner or httpx.AsyncHTTPTransport(**kwargs)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pinned = await self._guard.pin(request.url)
        if str(pinned.address) == pinned.host:
            return await self._inner.handle_async_request(request)
        # A copy, so the client still sees the URL it asked for (redirects resolve against the name).
        headers = httpx.Headers(request.headers)
        headers.setdefault("host", _host_header(pinned))
        extensions = dict(request.extensions)
        if pinned.scheme == "https":
            extensions["sni_hostname"] = pinned.host  # TLS: SNI and certificate checked for the name
        direct = httpx.Request(request.method, request.url.copy_with(host=str(pinned.address)), headers=headers,
                               stream=request.stream, extensions=extensions)
        return await self._inner.handle_async_request(direct)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _host_header(pinned: Pinned) -> str:
    default = 443 if pinned.scheme == "https" else 80
    return pinned.host if pinned.port == default else f"{pinned.host}:{pinned.port}"


def pinned_client(guard: URLGuard, **kwargs: Any) -> httpx.AsyncClient:
    """An AsyncClient whose every request (and every redirect it follows) goes through `guard`."""
    return httpx.AsyncClient(transport=guard.transport(), **kwargs)

"""SSRF guard for URLs a provider hands us (output downloads).

A URL is fetched only over http(s), and only if every address its host resolves to is public:
no loopback, private, link-local (cloud metadata lives at 169.254.169.254), multicast, reserved or
unspecified addresses, unless the host or a network containing the address is explicitly allowlisted
(tests allowlist their fake's loopback address). Plain http is refused for non-allowlisted hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeURL(Exception):
    pass


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_public(address.ipv4_mapped)
    return not (
        address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified or not address.is_global
    )


class URLGuard:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._hosts: set[str] = set()
        self._networks: list[IPNetwork] = []
        for entry in allow:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower())

    def _allowlisted(self, host: str, addresses: list[IPAddress]) -> bool:
        if host in self._hosts:
            return True
        return bool(addresses) and all(any(a in net for net in self._networks) for a in addresses)

    async def check(self, url: str) -> None:
        """Raises UnsafeURL unless `url` may be fetched."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsafeURL(f"not an http(s) URL: {url[:200]!r}")
        if parts.username or parts.password:
            raise UnsafeURL("URLs with credentials are refused")
        host = parts.hostname.lower()
        addresses = await _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
        if self._allowlisted(host, addresses):
            return
        if parts.scheme != "https":
            raise UnsafeURL(f"plain http to {host} is refused")
        bad = [str(a) for a in addresses if not _is_public(a)]
        if bad or not addresses:
            raise UnsafeURL(f"{host} resolves to a non-public address ({', '.join(bad) or 'none'})")


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeURL(f"cannot resolve {host}: {exc}") from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]

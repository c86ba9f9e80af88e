"""The SSRF guard with DNS pinning: one resolution per request, the connection goes to the checked address."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from reelforge_core.ssrf import IPAddress, UnsafeURL, URLGuard, pinned_client

pytestmark = pytest.mark.asyncio


class _Server:
    """A real HTTP server on loopback that records the Host header of every request it gets."""

    def __init__(self) -> None:
        hosts = self.hosts = list[str]()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hosts.append(self.headers.get("host", ""))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


class _Rebinding:
    """A DNS answer that changes: each lookup returns the next address (the last one repeats)."""

    def __init__(self, *answers: str) -> None:
        self._answers = [ipaddress.ip_address(a) for a in answers]
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        answer = self._answers[min(self.lookups, len(self._answers) - 1)]
        self.lookups += 1
        return [answer]


async def test_public_then_loopback_answer_never_reaches_loopback(server: _Server) -> None:
    """The rebinding attack: the check sees a public address, a second lookup at connect time would give
    127.0.0.1. The pinned client resolves once and connects to the public address, never to the loopback
    server (which would answer at once if reached)."""
    resolver = _Rebinding("93.184.215.14", "127.0.0.1")
    guard = URLGuard(require_https=False, resolver=resolver)
    async with pinned_client(guard, timeout=httpx.Timeout(1.0, connect=0.3)) as client:
        with pytest.raises(httpx.TransportError):  # the sandbox has no route to the public address
            await client.get(f"http://rebind.example:{server.port}/internal")
    assert resolver.lookups == 1
    assert server.hosts == []


async def test_loopback_answer_is_refused_before_any_connection(server: _Server) -> None:
    resolver = _Rebinding("127.0.0.1")
    async with pinned_client(URLGuard(require_https=False, resolver=resolver)) as client:
        with pytest.raises(UnsafeURL):
            await client.get(f"http://rebind.example:{server.port}/internal")
    assert server.hosts == []


async def test_pinned_request_keeps_the_name_in_the_host_header(server: _Server) -> None:
    guard = URLGuard(["127.0.0.1/32"], require_https=False, resolver=_Rebinding("127.0.0.1"))
    async with pinned_client(guard, timeout=5) as client:
        response = await client.get(f"http://video.example:{server.port}/a")
    assert response.text == "ok"
    assert server.hosts == [f"video.example:{server.port}"]


async def test_every_request_is_checked_again(server: _Server) -> None:
    """A second request (or a redirect a client follows) is resolved and checked anew: an answer that moved
    to a refused address is refused, not served from the earlier check."""
    resolver = _Rebinding("127.0.0.1", "10.0.0.1")
    guard = URLGuard(["127.0.0.1/32"], require_https=False, resolver=resolver)
    async with pinned_client(guard, timeout=5) as client:
        first = await client.get(f"http://video.example:{server.port}/a")
        with pytest.raises(UnsafeURL):
            await client.get(f"http://video.example:{server.port}/b")
    assert first.text == "ok"
    assert server.hosts == [f"video.example:{server.port}"]


async def test_redirect_to_a_private_address_is_refused(server: _Server) -> None:
    guard = URLGuard(["127.0.0.1/32"], require_https=False)
    async with pinned_client(guard, timeout=5, follow_redirects=True) as client:
        with pytest.raises(UnsafeURL):
            await client.get("http://10.1.2.3/")  # as a redirect hop would be


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "https://localhost/x", "https://10.1.2.3/x", "https://192.168.0.1/x",
    "https://172.16.5.4/x", "https://169.254.169.254/latest/meta-data/", "https://[::1]/x", "https://[fd00::1]/x",
    "https://[::ffff:127.0.0.1]/x", "https://0.0.0.0/x", "https://100.64.0.1/x", "https://224.0.0.1/x",
    "https://240.0.0.1/x", "https://[2002:7f00:1::]/x", "ftp://example.com/x", "https://user:pw@8.8.8.8/x",
    "http://8.8.8.8/x",
])
async def test_refuses(url: str) -> None:
    with pytest.raises(UnsafeURL):
        await URLGuard().check(url)


async def test_allowlist_by_host_port_and_network() -> None:
    await URLGuard(["127.0.0.1:8080"]).check("http://127.0.0.1:8080/x")
    with pytest.raises(UnsafeURL):
        await URLGuard(["127.0.0.1:8080"]).check("http://127.0.0.1:8081/x")
    await URLGuard(["127.0.0.0/8"]).check("http://127.0.0.2/x")
    await URLGuard(require_https=False).check("http://8.8.8.8/x")

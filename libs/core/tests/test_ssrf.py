"""The SSRF guard with DNS pinning: one resolution per request, the connection goes to the checked address."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    # An address allowlisted as written does not let other spellings or names of it through.
    for other in ("http://localhost/x", "http://2130706433/x", "http://0x7f.0.0.1/x"):
        with pytest.raises(UnsafeURL):
            await URLGuard(["127.0.0.1"], require_https=False).check(other)


def _tls_server(tmp_path: Path, name: str) -> tuple[ThreadingHTTPServer, ssl.SSLContext, list[str]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for `name`; records the SNI it is sent."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    snis: list[str] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    server_ctx.sni_callback = lambda sock, server_name, ctx: snis.append(server_name or "")  # type: ignore[func-returns-value]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    return httpd, client_ctx, snis


async def test_https_keeps_sni_and_certificate_checks_for_the_name(tmp_path: Path) -> None:
    httpd, trust, snis = _tls_server(tmp_path, "video.example")
    port = httpd.server_address[1]
    try:
        guard = URLGuard(["127.0.0.1/32"], resolver=_Rebinding("127.0.0.1"))
        async with httpx.AsyncClient(transport=guard.transport(verify=trust), timeout=5) as client:
            assert (await client.get(f"https://video.example:{port}/v.mp4")).text == "ok"
        assert snis == ["video.example"]
        # The certificate is for video.example: the same address under another name fails verification.
        other = URLGuard(["127.0.0.1/32"], resolver=_Rebinding("127.0.0.1"))
        async with httpx.AsyncClient(transport=other.transport(verify=trust), timeout=5) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"https://cdn.example:{port}/v.mp4")
    finally:
        httpd.shutdown()
        httpd.server_close()

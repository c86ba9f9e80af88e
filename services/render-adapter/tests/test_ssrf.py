"""The SSRF guard on output URLs, and the adapter refusing to download from a private address."""

from __future__ import annotations

import pytest

from reelforge_core.ssrf import UnsafeURL, URLGuard

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.mp4", "https://127.0.0.1/x.mp4", "https://localhost/x.mp4", "https://10.1.2.3/x",
    "https://192.168.0.1/x", "https://172.16.5.4/x", "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/x", "https://[fd00::1]/x", "https://[::ffff:127.0.0.1]/x", "https://0.0.0.0/x",
    "ftp://example.com/x", "file:///etc/passwd", "https://user:pw@8.8.8.8/x", "http://8.8.8.8/x",
])
async def test_refuses_non_public_or_odd_urls(url: str) -> None:
    with pytest.raises(UnsafeURL):
        await URLGuard().check(url)


async def test_allows_public_https() -> None:
    await URLGuard().check("https://8.8.8.8/video.mp4")


async def test_allowlist_is_explicit() -> None:
    guard = URLGuard(["127.0.0.1/32"])
    await guard.check("http://127.0.0.1:8080/x.mp4")
    with pytest.raises(UnsafeURL):
        await guard.check("http://127.0.0.2:8080/x.mp4")
    with pytest.raises(UnsafeURL):
        await guard.check("https://169.254.169.254/")

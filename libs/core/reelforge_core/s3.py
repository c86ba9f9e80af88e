"""A small S3 client for the content store: HEAD, streamed PUT and streamed GET of one object, signed with
AWS Signature Version 4 (header form) over httpx.

Why hand-written: the content store needs three calls; SigV4 is ~40 lines of hashing, and this keeps the
core library free of botocore's large untyped dependency tree. It speaks the S3 REST protocol as
documented (AWS "Signature Version 4 signing process" and "Authenticating Requests: Using the
Authorization Header"), so it works with AWS S3 and S3-compatible servers (MinIO, Ceph RGW, R2, moto).

Uploads are a single PUT streamed from the file (S3 takes up to 5 GB that way, more than the store's
object limit) with `Content-Length`, the payload's SHA-256 as the signed `x-amz-content-sha256` (the
server refuses a body that does not match it) and `x-amz-checksum-sha256`, which S3 also checks and keeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

import httpx

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 1 << 20
RETRIES = 3  # every call here is idempotent (content-addressed keys), so transient failures are retried


class S3Error(Exception):
    """An S3 call failed; `code` is S3's error code (e.g. `AccessDenied`) or `http_<status>`/`transport`."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


class S3NotFound(S3Error):
    pass


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # scheme and host, e.g. "https://s3.eu-west-1.amazonaws.com" or "http://127.0.0.1:9000"
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    addressing: Literal["path", "virtual"] = "path"
    timeout_seconds: float = 60.0

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"S3Config(endpoint={self.endpoint!r}, bucket={self.bucket!r}, region={self.region!r})"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signing_key(secret: str, day: str, region: str, service: str = "s3") -> bytes:
    return _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), service), "aws4_request")


def sign(method: str, url: str, headers: Mapping[str, str], payload_sha256: str, config: S3Config,
         now: datetime | None = None, service: str = "s3") -> dict[str, str]:
    """The headers to send: `headers` plus host, x-amz-date, x-amz-content-sha256 and Authorization.
    Every header given is signed. The URL's path must already be URI-encoded (as `object_url` makes it)."""
    moment = now or datetime.now(UTC)
    amz_date, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
    parts = urlsplit(url)
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed.update({"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256})
    names = sorted(signed)
    query = "&".join(sorted(parts.query.split("&"))) if parts.query else ""
    canonical = "\n".join([
        method, parts.path or "/", query, *(f"{name}:{signed[name]}" for name in names), "",
        ";".join(names), payload_sha256,
    ])
    scope = f"{day}/{config.region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(config.secret_access_key, day, config.region, service), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    signed["authorization"] = (f"AWS4-HMAC-SHA256 Credential={config.access_key_id}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return signed


def _error(response: httpx.Response) -> S3Error:
    body = response.text if response.headers.get("content-type", "").endswith("xml") else ""
    code = re.search(r"<Code>([^<]{1,64})</Code>", body)
    message = re.search(r"<Message>([^<]{0,300})</Message>", body)
    name = code.group(1) if code else f"http_{response.status_code}"
    kind = S3NotFound if response.status_code == 404 else S3Error
    return kind(name, message.group(1) if message else response.reason_phrase, response.status_code)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class S3Client:
    """Thread-safe (one httpx.Client); the content store calls it from worker threads."""

    def __init__(self, config: S3Config, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._http = httpx.Client(timeout=httpx.Timeout(config.timeout_seconds, connect=10.0),
                                  transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def object_url(self, key: str) -> str:
        endpoint = self.config.endpoint.rstrip("/")
        path = quote(key, safe="/-_.~")
        if self.config.addressing == "virtual":
            scheme, _, host = endpoint.partition("://")
            return f"{scheme}://{self.config.bucket}.{host}/{path}"
        return f"{endpoint}/{quote(self.config.bucket, safe='-_.~')}/{path}"

    def _retrying(self, call: str, attempt: int, exc: Exception) -> None:
        if attempt + 1 >= RETRIES:
            if isinstance(exc, S3Error):
                raise exc
            raise S3Error("transport", f"{call}: {type(exc).__name__}: {exc}") from exc
        time.sleep(0.2 * 2**attempt)

    def head(self, key: str) -> int | None:
        """The object's size, or None if there is none."""
        url = self.object_url(key)
        for attempt in range(RETRIES):
            try:
                response = self._http.head(url, headers=sign("HEAD", url, {}, EMPTY_SHA256, self.config))
                if response.status_code == 404:
                    return None
                if response.status_code >= 500:
                    raise _error(response)
                if response.status_code != 200:
                    raise _error(response)  # 403 and friends: not worth a retry
                return int(response.headers.get("content-length", "0"))
            except (httpx.TransportError, S3Error) as exc:
                if isinstance(exc, S3Error) and exc.status < 500:
                    raise
                self._retrying("HEAD", attempt, exc)
        raise AssertionError("unreachable")

    def put_file(self, key: str, source: Path, sha256_hex: str, size: int, content_type: str) -> None:
        """Streams `source` (whose SHA-256 and size the caller measured) to `key`."""
        url = self.object_url(key)
        checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        extra = {"content-length": str(size), "content-type": content_type, "x-amz-checksum-sha256": checksum}
        for attempt in range(RETRIES):
            try:
                headers = sign("PUT", url, extra, sha256_hex, self.config)
                response = self._http.put(url, content=_file_chunks(source), headers=headers)
                if response.status_code != 200:
                    raise _error(response)
                return
            except (httpx.TransportError, S3Error) as exc:
                if isinstance(exc, S3Error) and exc.status < 500:
                    raise
                self._retrying("PUT", attempt, exc)

    def get_to_file(self, key: str, target: Path, max_bytes: int) -> str:
        """Streams `key` into `target`; returns the SHA-256 (hex) of what was written. S3Error
        `EntityTooLarge` if the object is (or turns out) larger than `max_bytes`."""
        url = self.object_url(key)
        for attempt in range(RETRIES):
            try:
                return self._get_once(url, target, max_bytes)
            except (httpx.TransportError, S3Error) as exc:
                if isinstance(exc, S3Error) and exc.status < 500:
                    raise
                self._retrying("GET", attempt, exc)
        raise AssertionError("unreachable")

    def _get_once(self, url: str, target: Path, max_bytes: int) -> str:
        digest, written = hashlib.sha256(), 0
        with self._http.stream("GET", url, headers=sign("GET", url, {}, EMPTY_SHA256, self.config)) as response:
            if response.status_code != 200:
                response.read()
                raise _error(response)
            declared = int(response.headers.get("content-length", "0"))
            if declared > max_bytes:
                raise S3Error("EntityTooLarge", f"object of {declared} bytes exceeds the {max_bytes} byte limit", 413)
            with target.open("wb") as handle:
                for chunk in response.iter_bytes(CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise S3Error("EntityTooLarge", f"object exceeds the {max_bytes} byte limit", 413)
                    digest.update(chunk)
                    handle.write(chunk)
        return digest.hexdigest()

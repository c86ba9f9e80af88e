"""HTTP plumbing every remote provider shares: error mapping, Retry-After, guarded size-limited downloads."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from reelforge_core.ssrf import UnsafeURL, URLGuard
from reelforge_render.providers.base import (
    INTERNAL,
    INVALID_INPUT,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    JobStatus,
    ProviderError,
    ProviderJob,
)
from reelforge_render.providers.config import ProviderConfig

MAX_REDIRECTS = 5
MAX_MESSAGE_CHARS = 300
# A provider-specific classifier sees the HTTP status and the parsed body and may name our code.
Classifier = Callable[[int, Any], str | None]


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date) or `retry-after-ms`."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def default_code(status: int) -> str:
    if status == 429:
        return RATE_LIMITED
    if status in (400, 404, 405, 409, 413, 415, 422):
        return INVALID_INPUT
    # 401/403: our key is wrong or revoked there; another provider may still serve the job.
    if status in (401, 403, 408) or status >= 500:
        return PROVIDER_UNAVAILABLE
    return INTERNAL


def body_message(body: Any) -> str:
    """The human message of an error body in any of the common shapes."""
    if isinstance(body, dict):
        for key in ("error", "detail", "message", "failure", "title"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail")
            if isinstance(value, str) and value:
                return value[:MAX_MESSAGE_CHARS]
            if isinstance(value, list) and value:
                return str(value[0])[:MAX_MESSAGE_CHARS]
    return ""


class RefreshingBearer(httpx.Auth):
    """`Authorization: Bearer <token>` with the token re-read from its env var or file every `ttl` seconds:
    OAuth access tokens expire within the hour and a sidecar (or the operator) rewrites the file."""

    def __init__(self, config: ProviderConfig, ttl: float = 30.0) -> None:
        self._config = config
        self._ttl = ttl
        self._token = config.api_key()  # fails at start-up if the secret is missing
        self._read_at = time.monotonic()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if time.monotonic() - self._read_at > self._ttl:
            self._token, self._read_at = self._config.api_key(), time.monotonic()
        request.headers["authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


class ProviderHTTP:
    """One pooled client per configured provider; the key rides in `auth_headers` and is never logged."""

    def __init__(self, name: str, config: ProviderConfig, auth_headers: Mapping[str, str],
                 classify: Classifier | None = None, auth: httpx.Auth | None = None,
                 trusted_origins: Sequence[str] = ()) -> None:
        self.name = name
        self.config = config
        self.guard = URLGuard(config.allow_output_hosts)
        self._classify = classify
        # Origins besides base_url's that get our credentials (e.g. Vertex AI's outputs in Cloud Storage).
        self._trusted = {_origin(config.base_url), *(_origin(url) for url in trusted_origins)}
        limits = httpx.Limits(max_connections=config.max_connections,
                              max_keepalive_connections=config.max_connections)
        self.client = httpx.AsyncClient(
            base_url=config.base_url, headers=dict(auth_headers), auth=auth, limits=limits,
            timeout=httpx.Timeout(config.request_timeout_seconds), follow_redirects=False,
        )
        # Output URLs on other hosts (CDNs, buckets) get no credentials at all, and are connected to only at
        # the address the SSRF guard checked (DNS pinning; see reelforge_core.ssrf).
        self._anonymous = httpx.AsyncClient(transport=self.guard.transport(limits=limits),
                                            timeout=httpx.Timeout(config.request_timeout_seconds),
                                            follow_redirects=False)

    async def close(self) -> None:
        await self.client.aclose()
        await self._anonymous.aclose()

    async def request(self, method: str, url: str, *, json: Any = None,
                      headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
                      ) -> httpx.Response:
        try:
            response = await self.client.request(method, url, json=json, headers=headers, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # never sent
            raise ProviderError(PROVIDER_UNAVAILABLE, f"{self.name}: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise ProviderError(PROVIDER_UNAVAILABLE, f"{self.name}: request timed out", maybe_applied=True) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(PROVIDER_UNAVAILABLE, f"{self.name}: {type(exc).__name__}",
                                maybe_applied=True) from exc
        if response.status_code >= 400:
            raise self.error_for(response)
        return response

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.request(method, url, **kwargs)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(INTERNAL, f"{self.name} answered {url} with invalid JSON") from exc

    def error_for(self, response: httpx.Response) -> ProviderError:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        code = (self._classify(response.status_code, body) if self._classify else None) or default_code(
            response.status_code)
        message = body_message(body) or f"HTTP {response.status_code}"
        retry_after = parse_retry_after(response.headers) if response.status_code in (429, 503) else None
        return ProviderError(code, f"{self.name}: {message}", retry_after=retry_after)

    def _same_origin(self, url: str) -> bool:
        return _origin(url) in self._trusted

    async def download(self, url: str, out_path: Path) -> None:
        """Streams `url` into `out_path`, at most `max_output_bytes`. URLs on our configured base URL's
        origin get the provider's credentials; any other URL (a CDN, a bucket) gets none and must pass
        the SSRF guard, at every redirect hop."""
        limit = self.config.max_output_bytes
        for _ in range(MAX_REDIRECTS + 1):
            absolute = urljoin(str(self.client.base_url), url)
            trusted = self._same_origin(absolute)
            client = self.client if trusted else self._anonymous
            try:
                async with client.stream("GET", absolute) as response:
                    if response.is_redirect:
                        url = response.headers["location"]
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        raise self.error_for(response)
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > limit:
                        raise ProviderError(INTERNAL, f"{self.name}: output of {declared} bytes exceeds {limit}")
                    written = 0
                    with out_path.open("wb") as out:
                        async for chunk in response.aiter_bytes(1 << 16):
                            written += len(chunk)
                            if written > limit:
                                raise ProviderError(INTERNAL, f"{self.name}: output exceeds {limit} bytes")
                            out.write(chunk)
                    if written == 0:
                        raise ProviderError(INTERNAL, f"{self.name}: empty output")
                    return
            except UnsafeURL as exc:
                raise ProviderError(INTERNAL, f"{self.name}: output URL refused: {exc}") from exc
            except httpx.HTTPError as exc:
                raise ProviderError(PROVIDER_UNAVAILABLE,
                                    f"{self.name}: download failed ({type(exc).__name__})") from exc
        raise ProviderError(INTERNAL, f"{self.name}: too many redirects fetching the output")


class HttpProvider:
    """What every HTTP provider adapter shares: the id check on submit, downloading the output, closing."""

    name: str
    _http: ProviderHTTP
    idempotent_submit = False  # True where the provider dedupes on our Idempotency-Key

    @staticmethod
    def submission_headers(job: ProviderJob) -> dict[str, str]:
        """Every submit carries our render id (job + attempt) as `Idempotency-Key`: providers that honour it
        dedupe on it, the others ignore it, and the fake providers count submissions by it."""
        return {"idempotency-key": job.render_id}

    def _required_id(self, answer: Any, field: str, action: str) -> str:
        value = answer.get(field) if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value:
            raise ProviderError(INTERNAL, f"{self.name}: {action} answered without {field!r}")
        return value

    async def fetch_output(self, job: ProviderJob, status: JobStatus, out_path: Path) -> None:
        await self._http.download(status.output_url, out_path)

    def webhook_subject(self, body: Any) -> str | None:
        """Providers without webhooks understand no delivery; those with one override this."""
        return None

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        return None

    async def close(self) -> None:
        await self._http.close()

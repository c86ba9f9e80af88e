"""What every fake provider shares: simulated jobs, behaviour knobs, throttling, MP4 output, webhooks.

Prompt markers pick a job's fate deterministically (tests rely on them): `[policy]` fails for content
policy, `[invalid]` fails as bad input, `[fail]` fails internally, `[stuck]` never finishes. Otherwise a
job fails with probability `failure_rate`. Admin endpoints under /_fake change the behaviour at runtime
(POST /_fake/behaviour) and report what the fake saw (GET /_fake/stats, and GET /_fake/submissions: how
many jobs each submission key created, where the key is the `Idempotency-Key` our adapters send on every
submit whether or not the provider dedupes on it; a key with more than one job is a duplicate submission).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from reelforge_render.animatic import AnimaticSpec, render_animatic
from reelforge_render.fakes.signing import DEFAULT_WEBHOOK_SECRET

Outcome = Literal["ok", "content_policy", "invalid", "error", "stuck"]
MARKERS: dict[str, Outcome] = {"[policy]": "content_policy", "[invalid]": "invalid", "[fail]": "error",
                               "[stuck]": "stuck"}


# Rendered outputs by (width, height, seconds), shared by every fake in the process: real MP4s, made once.
_VIDEOS: dict[tuple[int, int, float], bytes] = {}


class Behaviour(BaseModel):
    latency_s: float = 1.0  # how long a job runs once started
    queue_s: float = 0.0  # how long it waits in the queue first
    failure_rate: float = 0.0
    stuck_rate: float = 0.0  # the share of new jobs that never finish (1.0: the provider hangs)
    throttle_next: int = 0  # the next N API requests are answered 429
    throttle_every: int = 0  # every Nth API request is answered 429 (bursty load); 0 = never
    retry_after_s: float = 1.0  # the Retry-After the 429s carry
    api_key: str = "test-key"
    webhook_url: str = ""  # when set, terminal jobs are announced there (provider's webhook shape, signed)
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET  # signs Standard Webhooks / WaveSpeedAI deliveries
    webhooks_lost: bool = False  # deliveries are "sent" but never arrive (the poll must still finish the job)
    gpus: int = 0  # the self-hosted pool reports GPUs and GPU-seconds per job when > 0
    answer_delay_s: float = 0.0  # API POSTs take effect at once but answer this much later (lost answers)
    # What the output download serves: a real MP4, random bytes, the first 40% of the MP4, or nothing.
    output: Literal["mp4", "corrupt", "truncated", "empty"] = "mp4"


def _damaged(video: bytes, output: str) -> bytes:
    if output == "corrupt":
        return random.Random(len(video)).randbytes(len(video))
    if output == "truncated":
        return video[: len(video) * 4 // 10]
    if output == "empty":
        return b""
    return video


@dataclass
class FakeJob:
    id: str
    prompt: str
    width: int
    height: int
    seconds: float
    model: str
    outcome: Outcome
    created: float = field(default_factory=time.monotonic)
    created_at: int = field(default_factory=lambda: int(time.time()))
    queue_s: float = 0.0
    latency_s: float = 1.0
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def phase(self) -> tuple[Literal["queued", "running", "done", "cancelled"], int]:
        if self.cancelled:
            return "cancelled", 0
        elapsed = time.monotonic() - self.created
        if elapsed < self.queue_s:
            return "queued", 0
        running = elapsed - self.queue_s
        if self.outcome == "stuck" or running < self.latency_s:
            return "running", min(99, int(100 * running / self.latency_s)) if self.latency_s else 50
        return "done", 100

    @property
    def succeeded(self) -> bool:
        return self.phase()[0] == "done" and self.outcome == "ok"

    @property
    def failed(self) -> bool:
        return self.phase()[0] == "done" and self.outcome != "ok"


@dataclass
class Stats:
    requests: int = 0
    throttled: int = 0
    created: int = 0
    stuck: int = 0  # jobs that will never finish
    polls: int = 0
    cancels: int = 0
    downloads: int = 0
    webhooks_sent: int = 0
    webhooks_lost: int = 0


class FakeProvider:
    """State of one fake server. The provider modules map their API onto it."""

    def __init__(self, behaviour: Behaviour | None = None, seed: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        self.jobs: dict[str, FakeJob] = {}
        self.idempotency: dict[str, str] = {}
        self.submissions: Counter[str] = Counter()  # jobs created per submission key
        self.submission_requests: Counter[str] = Counter()  # create requests per submission key
        self.stats = Stats()
        self._rng = random.Random(seed)
        self._render_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # Every delivery made (url, body, headers, receiver's status), so a test can replay one exactly.
        self.deliveries: list[dict[str, Any]] = []

    def create(self, prompt: str, width: int, height: int, seconds: float, model: str,
               idempotency_key: str | None = None, job_id: str | None = None,
               submission_key: str | None = None) -> tuple[FakeJob, bool]:
        """The job for this request, and whether it is new (an idempotency key repeats the first, on the
        providers that honour one). `submission_key` only counts (GET /_fake/submissions)."""
        counted_key = idempotency_key or submission_key
        if counted_key:
            self.submission_requests[counted_key] += 1
        if idempotency_key and idempotency_key in self.idempotency:
            return self.jobs[self.idempotency[idempotency_key]], False
        outcome: Outcome = next((o for marker, o in MARKERS.items() if marker in prompt), "ok")
        if outcome == "ok" and self._rng.random() < self.behaviour.failure_rate:
            outcome = "error"
        if outcome == "ok" and self.behaviour.stuck_rate and self._rng.random() < self.behaviour.stuck_rate:
            outcome = "stuck"
        job = FakeJob(id=job_id or str(uuid.uuid4()), prompt=prompt, width=width, height=height, seconds=seconds,
                      model=model, outcome=outcome, queue_s=self.behaviour.queue_s,
                      latency_s=self.behaviour.latency_s)
        self.jobs[job.id] = job
        if counted_key:
            self.submissions[counted_key] += 1
        if idempotency_key:
            self.idempotency[idempotency_key] = job.id
        self.stats.created += 1
        self.stats.stuck += outcome == "stuck"
        return job, True

    def throttled(self) -> bool:
        self.stats.requests += 1
        b = self.behaviour
        if b.throttle_next > 0:
            b.throttle_next -= 1
        elif not (b.throttle_every and self.stats.requests % b.throttle_every == 0):
            return False
        self.stats.throttled += 1
        return True

    async def video(self, job: FakeJob, counted: bool = True) -> bytes:
        """A real MP4 of the requested size and length, rendered by the animatic renderer (cached per shape)."""
        key = (job.width, job.height, job.seconds)
        async with self._render_lock:
            if key not in _VIDEOS:
                with tempfile.TemporaryDirectory() as scratch:
                    out = Path(scratch) / "fake.mp4"
                    spec = AnimaticSpec(prompt="Rendered by a fake provider.", seconds=job.seconds,
                                        width=job.width, height=job.height, fps=12)
                    await render_animatic(spec, out, timeout_s=120)
                    _VIDEOS[key] = out.read_bytes()
        if counted:
            self.stats.downloads += 1
        return _damaged(_VIDEOS[key], self.behaviour.output)

    def announce(self, job: FakeJob, body: Callable[[FakeJob], dict[str, Any]],
                 headers: Callable[[bytes], dict[str, str]] | None = None) -> None:
        """Posts `body(job)`, signed by `headers(body bytes)`, to the webhook URL once the job is terminal
        (if a webhook is configured)."""
        if not self.behaviour.webhook_url or job.outcome == "stuck":
            return

        async def send() -> None:
            await asyncio.sleep(job.queue_s + job.latency_s + 0.05)
            if job.cancelled:
                return
            payload = bytes(JSONResponse(body(job)).body)
            signed = {"content-type": "application/json", **(headers(payload) if headers else {})}
            if self.behaviour.webhooks_lost:
                self.stats.webhooks_lost += 1
                return
            await self.deliver(self.behaviour.webhook_url, payload, signed)

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, url: str, payload: bytes, headers: dict[str, str]) -> int | None:
        status: int | None = None
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as client:
                status = (await client.post(url, content=payload, headers=headers)).status_code
                self.stats.webhooks_sent += 1
        self.deliveries.append({"url": url, "body": payload.decode(), "headers": headers, "status": status})
        return status


ErrorBody = Callable[[int, str], dict[str, Any]]


def install_common(app: FastAPI, fake: FakeProvider, error_body: ErrorBody,
                   authorized: Callable[[Request], bool]) -> None:
    """Admin routes, auth and the 429 throttle, answered in the provider's own error shape."""

    @app.middleware("http")
    async def throttle_and_auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path.startswith(("/_fake", "/files/", "/.well-known/")):  # admin, CDN, public keys
            return await call_next(request)
        if not authorized(request):
            return JSONResponse(error_body(401, "Incorrect API key provided."), status_code=401)
        if fake.throttled():
            return JSONResponse(error_body(429, "Rate limit reached. Please retry later."), status_code=429,
                                headers={"retry-after": f"{fake.behaviour.retry_after_s:g}"})
        response = await call_next(request)
        if request.method == "POST" and fake.behaviour.answer_delay_s:
            await asyncio.sleep(fake.behaviour.answer_delay_s)
        return response

    @app.get("/files/{job_id}.mp4")
    async def cdn_file(job_id: str) -> Response:
        job = fake.jobs.get(job_id)
        if job is None or not job.succeeded:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(await fake.video(job), media_type="video/mp4")

    @app.post("/_fake/behaviour")
    async def set_behaviour(changes: dict[str, Any]) -> dict[str, Any]:
        fake.behaviour = fake.behaviour.model_copy(update=changes)
        return fake.behaviour.model_dump()

    @app.post("/_fake/release")
    async def release(count: int = 1) -> dict[str, int]:
        """Lets up to `count` running jobs finish now (benchmarks complete a sample this way)."""
        released = 0
        for job in fake.jobs.values():
            if released >= count:
                break
            if job.phase()[0] == "running":
                job.latency_s, job.outcome = 0.0, "ok" if job.outcome == "stuck" else job.outcome
                released += 1
        return {"released": released}

    @app.get("/_fake/deliveries")
    async def deliveries() -> list[dict[str, Any]]:
        return fake.deliveries

    @app.post("/_fake/deliveries/{index}/resend")
    async def resend(index: int) -> dict[str, Any]:
        """Sends delivery `index` again byte for byte, same headers and signature (a replay)."""
        sent = fake.deliveries[index]
        return {"status": await fake.deliver(sent["url"], sent["body"].encode(), sent["headers"])}

    @app.get("/_fake/stats")
    async def stats() -> dict[str, Any]:
        return {**asdict(fake.stats), "jobs": len(fake.jobs)}

    @app.get("/_fake/submissions")
    async def submissions() -> dict[str, Any]:
        return {"jobs_by_key": dict(fake.submissions), "requests_by_key": dict(fake.submission_requests),
                "duplicates": sorted(key for key, jobs in fake.submissions.items() if jobs > 1),
                "unkeyed": fake.stats.created - sum(fake.submissions.values())}


def fake_app(behaviour: Behaviour | None, error_body: ErrorBody,
             authorized: Callable[[FakeProvider], Callable[[Request], bool]] | None = None,
             ) -> tuple[FastAPI, FakeProvider]:
    """A fake provider's app and state with the common routes installed (bearer auth unless told)."""
    fake = FakeProvider(behaviour)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.fake = fake
    install_common(app, fake, error_body, (authorized or bearer)(fake))
    return app, fake


def cdn_url(request: Request, job: FakeJob) -> str:
    """Where a provider's CDN would serve the output: another origin (`localhost` instead of the API's
    127.0.0.1), so adapters treat it as a foreign URL and the SSRF guard must explicitly allow it."""
    port = request.url.port
    return f"http://localhost:{port}/files/{job.id}.mp4"


def submission_key(request: Request) -> str | None:
    """The key a fake counts submissions by: our `Idempotency-Key` (sent to every provider)."""
    return request.headers.get("idempotency-key")


def bearer(fake: FakeProvider, scheme: str = "Bearer", header: str = "authorization") -> Callable[[Request], bool]:
    def check(request: Request) -> bool:
        return request.headers.get(header) == f"{scheme} {fake.behaviour.api_key}".strip()
    return check


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1 in a thread of its own (its own event loop)."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                     lifespan="off", backlog=4096))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        sockets = self._server.servers[0].sockets
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake provider did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    server = ServerThread(app).start()
    try:
        yield server.url
    finally:
        server.stop()

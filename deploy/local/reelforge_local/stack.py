"""The whole platform on one machine: real Kafka and PostgreSQL, the five services as processes.

Used by `./run demo`, `./run up` and the cross-service tests. Every service gets its own port,
log file and trace file under the run directory; processes can be stopped, killed (-9) and
started again to prove restart safety.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from reelforge_core import topics
from reelforge_local.infra import KafkaBroker, PostgresServer, free_port

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env_prefix: str


# Start order: billing first (the orchestrator calls it), the gateway last (it takes traffic).
SERVICES = [
    ServiceSpec("billing", "reelforge_billing", "BILLING"),
    ServiceSpec("orchestrator", "reelforge_orchestrator", "ORCHESTRATOR"),
    ServiceSpec("render-adapter", "reelforge_render", "RENDER"),
    ServiceSpec("postprocess", "reelforge_postprocess", "POSTPROCESS"),
    ServiceSpec("gateway", "reelforge_gateway", "GATEWAY"),
]


class ServiceFailed(RuntimeError):
    pass


@dataclass(eq=False)
class ServiceProcess:
    spec: ServiceSpec
    env: dict[str, str]
    http_port: int
    log_path: Path
    instance: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.name}#{self.instance}" if self.instance else self.name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.spec.module, "serve"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServiceFailed(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait for a graceful exit (SIGKILL if it hangs); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, timeout: float = 60.0) -> None:
        self.start()
        self.wait_ready(timeout)

    def restart_with(self, env: dict[str, str | None]) -> dict[str, str | None]:
        """Stops the service, changes its environment (None removes a variable), starts it again; returns the
        previous values, so `restart_with(previous)` puts it back."""
        previous = {name: self.env.get(name) for name in env}
        for name, value in env.items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.stop()
        self.restart()
        return previous

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def grpc_target(process: ServiceProcess) -> str:
    return f"127.0.0.1:{process.env[f'REELFORGE_{process.spec.env_prefix}_GRPC_PORT']}"


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    api_key: str


class Stack:
    def __init__(
        self, run_dir: Path, cache_dir: Path, progress: Progress = lambda _: None, replicas: int = 1
    ) -> None:
        self.replicas = replicas
        self.instances: dict[str, list[ServiceProcess]] = {}
        self.run_dir = run_dir.resolve()
        self.cache_dir = cache_dir.resolve()
        self.progress = progress
        self.kafka: KafkaBroker | None = None
        self.postgres: PostgresServer | None = None
        self.services: dict[str, ServiceProcess] = {}
        self._kafka_port = 0
        self.content_dir = self.run_dir / "content"
        self.logs_dir = self.run_dir / "logs"
        self.traces_dir = self.run_dir / "traces"
        # The operators' token: the ops console, the orchestrator and billing admin gRPC APIs (and the CLI)
        self.operator_token = secrets.token_urlsafe(24)
        self.download_secret = secrets.token_urlsafe(32)  # every gateway replica signs download links alike
        self._admin_key: str | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Brings everything up. The services start while the broker boots (they wait for it),
        which hides most of the JVM's and the interpreters' start-up time behind each other."""
        self.postgres = PostgresServer.start(self.run_dir / "postgres", progress=self.progress)
        self._kafka_port = free_port()
        with ThreadPoolExecutor(max_workers=1) as pool:
            kafka_up = pool.submit(self._start_kafka)
            self._create_services()
            for service in self.processes():
                self.progress(f"{service.label}: starting on port {service.http_port}…")
                service.start()
            kafka_up.result()
        for service in self.processes():
            service.wait_ready(timeout)
        self.progress(f"services: all five ready ({len(self.processes())} processes)")

    def processes(self) -> list[ServiceProcess]:
        return [process for group in self.instances.values() for process in group]

    def _start_kafka(self) -> None:
        self.kafka = KafkaBroker.start(
            self.cache_dir, self.run_dir / "kafka", port=self._kafka_port, progress=self.progress
        )
        self.kafka.create_topics(topics.all_topics(), partitions=3)
        self.progress(f"kafka: {len(topics.all_topics())} topics ready")

    @property
    def dsn(self) -> str:
        assert self.postgres is not None, "start first"
        return self.postgres.dsn

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._kafka_port}"

    def _create_services(self) -> None:
        billing_ports = [free_port() for _ in range(self.replicas)]
        # Several billing instances: the orchestrator's gRPC channel balances over all of them.
        billing_target = (f"ipv4:{','.join(f'127.0.0.1:{p}' for p in billing_ports)}"
                          if self.replicas > 1 else f"127.0.0.1:{billing_ports[0]}")
        for spec in SERVICES:
            group = []
            for instance in range(self.replicas):
                extra = {"GRPC_PORT": str(billing_ports[instance]), "OPERATOR_TOKEN": self.operator_token} \
                    if spec.name == "billing" else {}
                if spec.name == "gateway":
                    extra["GRPC_PORT"] = str(free_port())  # the partner gRPC JobsService
                if spec.name == "orchestrator":
                    extra["BILLING_TARGET"] = billing_target
                    extra["GRPC_PORT"] = str(free_port())
                    extra["OPERATOR_TOKEN"] = self.operator_token
                if spec.name == "gateway":
                    extra["BILLING_TARGET"] = billing_target
                    # A local platform delivers webhooks to receivers on this machine (the guard refuses
                    # every other private address).
                    extra["WEBHOOK_ALLOWED_HOSTS"] = '["127.0.0.1"]'
                    extra["DOWNLOAD_SIGNING_SECRET"] = self.download_secret
                    extra["WEBHOOK_SECRET_KEYS"] = json.dumps([self._webhook_secret_key()])
                    extra["BILLING_OPERATOR_TOKEN"] = self.operator_token
                group.append(self._service(spec, instance, extra))
            self.instances[spec.name] = group
            self.services[spec.name] = group[0]

    def _webhook_secret_key(self) -> str:
        """The key webhook signing secrets are sealed under: kept beside the database, which holds them."""
        path = self.run_dir / "webhook-secret.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        return path.read_text().strip()

    def _service(self, spec: ServiceSpec, instance: int, extra: dict[str, str]) -> ServiceProcess:
        port = free_port()
        suffix = f"-{instance}" if instance else ""
        settings = {
            "DATABASE_URL": self.dsn,
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "HTTP_PORT": str(port),
            "INSTANCE_ID": str(instance),
            "CONTENT_DIR": str(self.content_dir),
            "TRACE_FILE": str(self.traces_dir / f"{spec.name}{suffix}.jsonl"),
            "SHUTDOWN_GRACE_SECONDS": "5",
            **extra,
        }
        env = {**os.environ, **{f"REELFORGE_{spec.env_prefix}_{k}": v for k, v in settings.items()}}
        env["PYTHONUNBUFFERED"] = "1"
        return ServiceProcess(spec, env, port, self.logs_dir / f"{spec.name}{suffix}.log", instance)

    def add_instance(self, service: str) -> ServiceProcess:
        """One more process of `service` (e.g. a standby orchestrator) with its own port, log and
        traces, appended to `instances[service]` (so `stop()` stops it). Start it with `.restart()`."""
        group = self.instances[service]
        base = group[0]
        instance = len(group)
        prefix = f"REELFORGE_{base.spec.env_prefix}_"
        port = free_port()
        env = {**base.env, f"{prefix}HTTP_PORT": str(port), f"{prefix}INSTANCE_ID": str(instance),
               f"{prefix}TRACE_FILE": str(self.traces_dir / f"{service}-{instance}.jsonl")}
        if f"{prefix}GRPC_PORT" in env:
            env[f"{prefix}GRPC_PORT"] = str(free_port())
        process = ServiceProcess(base.spec, env, port, self.logs_dir / f"{service}-{instance}.log", instance)
        group.append(process)
        return process

    @property
    def gateway_url(self) -> str:
        return self.services["gateway"].url

    @property
    def gateway_grpc_target(self) -> str:
        """host:port of the gateway's partner gRPC JobsService (the first instance)."""
        return grpc_target(self.services["gateway"])

    def admin_key(self) -> str:
        """An `admin`-scoped key for the admin API (/v1/admin), made on first use."""
        if self._admin_key is None:
            self._admin_key = json.loads(self.cli("gateway", "create-admin-key"))["api_key"]
        return self._admin_key

    @property
    def console_url(self) -> str:
        """The ops console, with the operator token in the fragment (never sent to the server)."""
        return f"{self.services['orchestrator'].url}/console#token={self.operator_token}"

    @property
    def admin_target(self) -> str:
        """The orchestrator admin gRPC API (pools, contracts, queues) of the first instance."""
        return grpc_target(self.services["orchestrator"])

    @property
    def billing_target(self) -> str:
        return self.services["orchestrator"].env["REELFORGE_ORCHESTRATOR_BILLING_TARGET"]

    def cli(self, service: str, *args: str) -> str:
        """Runs a service's admin command (e.g. gateway create-tenant) with that service's settings."""
        process = self.services[service]
        done = subprocess.run(
            [sys.executable, "-m", process.spec.module, *args], env=process.env, capture_output=True,
            text=True, timeout=180, check=False,
        )
        if done.returncode != 0:
            raise ServiceFailed(f"{service} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def create_tenant(self, name: str, credit_usd: str = "100") -> Tenant:
        created = json.loads(self.cli("gateway", "create-tenant", name))
        if credit_usd != "0":
            self.cli("billing", "grant", created["tenant_id"], credit_usd)
        return Tenant(tenant_id=created["tenant_id"], api_key=created["api_key"])

    # -- teardown ---------------------------------------------------------------------------
    def stop(self) -> None:
        for service in reversed(self.processes()):
            service.stop()
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

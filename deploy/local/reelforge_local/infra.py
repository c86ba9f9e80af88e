"""Real Kafka (KRaft, single node) and PostgreSQL servers as plain child processes.

No Docker: Kafka runs from jars fetched once with Maven (deploy/local/pom.xml), PostgreSQL
from the Debian server binaries. Each server gets a data_dir that holds everything it
needs, so starting again on the same data_dir reuses the data and skips all setup:

    Kafka     data_dir/server.properties, cluster.id, kraft/ (log.dirs), logs/server.log
    Postgres  data_dir/pgdata/ (PGDATA), reelforge.password (0600), postgres.log

Processes run in their own session, so they outlive a crashed Python parent; call
stop() (or use the objects as context managers) to shut them down.
Linux only (process state is read from /proc).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import functools
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code

Progress = Callable[[str], None]
T = TypeVar("T")

DEPLOY_DIR = Path(__file__).resolve().parent.parent
POM_FILE = DEPLOY_DIR / "pom.xml"
LOG4J2_FILE = DEPLOY_DIR / "log4j2.xml"

PG_USER = "reelforge"
PG_DATABASE = "reelforge"
PG_SYSTEM_USER = "postgres"  # the server refuses to run as root
KAFKA_HEAP = ("-Xms256m", "-Xmx512m")
TOPIC_ALREADY_EXISTS = 36
STOP_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a free port can still be taken by someone else before the server binds it
PRIVATE_PORTS_FROM = 20000
LEADER_WAIT = 30.0


class InfraError(RuntimeError):
    """A local server could not be provisioned; the message includes the relevant log tail."""


class PortInUseError(InfraError):
    """The server exited at startup because its port was taken."""


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A free loopback port, picked below the kernel's ephemeral range when possible.

    bind(0) hands out ephemeral ports, the same pool outgoing connections take their local
    port from; one of them can grab the port before the server binds it, or while a killed
    server waits to be restarted on it.
    """
    low = _ephemeral_range_start()
    for _ in range(50):
        port = PRIVATE_PORTS_FROM + secrets.randbelow(max(1, low - PRIVATE_PORTS_FROM))
        if port < low and _can_bind(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        ephemeral: int = sock.getsockname()[1]
        return ephemeral


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_except(taken: int) -> int:
    port = free_port()
    while port == taken:
        port = free_port()
    return port


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _tails(*paths: Path) -> str:
    return "\n".join(f"--- last lines of {p}:\n{_tail(p)}" for p in paths if p.exists())


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also when the caller is itself inside an event loop (async tests/apps)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    # Zombies count as dead: PID 1 in a container does not always reap orphans.
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def _is_postgres(pid: int) -> bool:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return name == "postgres" and _alive(pid)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _proc_stat(int(entry.name))
        if fields is not None and fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen kwargs that drop root to `user` in the child (None: stay who we are)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _spawn(cmd: list[str], cwd: Path, log: Path, user: pwd.struct_passwd | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_user(user),
        )


def _run(
    cmd: list[str],
    log: Path,
    what: str,
    user: pwd.struct_passwd | None = None,
    timeout: float = 600,
) -> None:
    with log.open("ab") as out:
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            **_as_user(user),
        )
    if result.returncode != 0:
        raise InfraError(f"{what} failed (exit {result.returncode})\n{_tails(log)}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # Until we reap it, the pid (= its process group id) cannot be reused by anyone else.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_and_wait(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Ask the process to exit with `sig`; SIGKILL its process group if it takes too long."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    if proc.poll() is None:
        _kill_group(proc)


def _wait_ready(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    timeout: float,
    logs: tuple[Path, ...],
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            tails = _tails(*logs)
            error = PortInUseError if "Address already in use" in tails else InfraError
            raise error(f"{what} exited with code {proc.returncode} while starting\n{tails}")
        if time.monotonic() > deadline:
            _kill_group(proc)
            raise InfraError(f"{what} not ready after {timeout:.0f}s (killed it)\n{_tails(*logs)}")
        time.sleep(0.25)


S = TypeVar("S", bound="_Server")


def _launch_new(make: Callable[[], S], timeout: float) -> S:
    """Launch make()'s server; if its freshly picked port got taken meanwhile, make another."""
    for _ in range(START_ATTEMPTS - 1):
        server = make()
        with contextlib.suppress(PortInUseError):
            server._launch(timeout)
            return server
    server = make()
    server._launch(timeout)
    return server


class _Server:
    """Shared lifecycle for a server child process (start/stop/kill/restart)."""

    _proc: subprocess.Popen[bytes] | None
    _stop_signal = signal.SIGTERM

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise InfraError(f"{type(self).__name__} has not been started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful shutdown; falls back to SIGKILL after `timeout` seconds. Idempotent."""
        if self._proc is not None:
            _signal_and_wait(self._proc, self._stop_signal, timeout)

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (chaos tests)."""
        if self._proc is not None:
            _kill_group(self._proc)

    def restart(self, timeout: float = 120.0) -> None:
        """Start again on the same port(s) and data dir; stops it first if still running."""
        self.stop()
        self._launch(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- kafka


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise InfraError("java not found (need Java 17+ on PATH or JAVA_HOME)")
    return java


def _pom_digest() -> str:
    return hashlib.sha256(POM_FILE.read_bytes()).hexdigest()


def ensure_kafka_jars(cache_dir: Path, progress: Progress = _quiet) -> Path:
    """Return cache_dir/kafka/libs, running Maven first unless a previous run completed.

    The marker holds the pom's hash, so editing the pom (e.g. a Kafka bump) refetches.
    A file lock keeps concurrent test processes from fetching at the same time.
    """
    kafka_dir = cache_dir.resolve() / "kafka"
    libs, marker = kafka_dir / "libs", kafka_dir / "libs.complete"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(kafka_dir / ".lock"):
        if marker.exists() and marker.read_text() == _pom_digest():
            return libs
        progress("kafka: fetching jars from Maven (first run only)…")
        _fetch_jars(libs, kafka_dir / "mvn.log")
        marker.write_text(_pom_digest())
    return libs


def _fetch_jars(libs: Path, log: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError("mvn not found on PATH (needed once to fetch the Kafka jars)")
    shutil.rmtree(libs, ignore_errors=True)
    log.unlink(missing_ok=True)
    cmd = [
        mvn, "-B", "-q", "-f", str(POM_FILE), "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
    ]  # fmt: skip
    _run(cmd, log, "mvn dependency:copy-dependencies")


def _new_cluster_id() -> str:
    # Kafka's format: url-safe base64 of a random UUID; it rejects ids starting with '-'.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_properties(data_dir: Path, port: int, controller_port: int) -> str:
    props = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "kraft"),
        "num.partitions": "3",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",  # default 50 slows the first group join
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the restarted controller keeps the dead broker's registration
        # alive for one session timeout (default 9 s) before the new one may register.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


async def _kafka_answers(bootstrap_servers: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster["brokers"])
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def _raise_topic_errors(response: Any) -> None:
    for topic, code, *message in response.topic_errors:
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise InfraError(f"creating topic {topic!r} failed: {for_code(code).__name__} {message}")


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """CreateTopics returns before the broker serves the partitions; wait so producers can."""
    try:
        async with asyncio.timeout(LEADER_WAIT):
            while True:
                if all(_topic_ready(t) for t in await admin.describe_topics(names)):
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise InfraError(f"topics {names} have no partition leaders after {LEADER_WAIT:.0f}s") from None


def _topic_ready(topic: dict[str, Any]) -> bool:
    partitions = topic["partitions"]
    return topic["error_code"] == 0 and bool(partitions) and all(p["leader"] >= 0 for p in partitions)


@dataclass(eq=False)
class KafkaBroker(_Server):
    data_dir: Path
    libs_dir: Path
    port: int
    controller_port: int
    progress: Progress = _quiet
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        cache_dir: Path,
        data_dir: Path,
        port: int | None = None,
        progress: Progress = _quiet,
        timeout: float = 120.0,
    ) -> KafkaBroker:
        libs = ensure_kafka_jars(cache_dir, progress)

        def make() -> KafkaBroker:
            broker_port = port or free_port()
            return cls(data_dir.resolve(), libs, broker_port, _free_port_except(broker_port), progress)

        return _launch_new(make, timeout)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    @property
    def _stdout_log(self) -> Path:
        return self.data_dir / "logs" / "stdout.log"

    @property
    def _properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    def _launch(self, timeout: float) -> None:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        props = _kafka_properties(self.data_dir, self.port, self.controller_port)
        self._properties_file.write_text(props)
        self._format_storage_once()
        self.progress(f"kafka: starting broker on {self.bootstrap_servers}…")
        began = time.monotonic()
        self._proc = _spawn(self._java("kafka.Kafka", str(self._properties_file)), self.data_dir, self._stdout_log)
        _wait_ready(self._answers, self._proc, "kafka", timeout, (self.log_file, self._stdout_log))
        self.progress(f"kafka: ready on {self.bootstrap_servers} ({time.monotonic() - began:.1f}s)")

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            _find_java(),
            *KAFKA_HEAP,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_FILE}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _format_storage_once(self) -> None:
        if (self.data_dir / "kraft" / "meta.properties").exists():
            return
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(_new_cluster_id())
        self.progress("kafka: formatting storage (first start of this data dir)…")
        cluster_id = id_file.read_text().strip()
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", cluster_id, "-c", str(self._properties_file),
        )  # fmt: skip
        _run(cmd, self.data_dir / "logs" / "format.log", "kafka storage format", timeout=120)

    def _answers(self) -> bool:
        return _port_open(self.port) and _run_sync(_kafka_answers(self.bootstrap_servers))

    async def create_topics_async(self, names: list[str], partitions: int = 3) -> None:
        """Create topics (replication 1); existing ones are left as they are."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            new = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
            _raise_topic_errors(await admin.create_topics(new))
            await _wait_for_leaders(admin, names)
        finally:
            await admin.close()

    def create_topics(self, names: list[str], partitions: int = 3) -> None:
        _run_sync(self.create_topics_async(names, partitions))


# --------------------------------------------------------------------------- postgres


@functools.cache
def find_pg_bindir() -> Path:
    """`pg_config --bindir` if it holds the server, else the newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "postgres").exists():
            return bindir
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    versioned = [b for b in found if b.parent.name.isdigit()]
    if not versioned:
        raise InfraError("PostgreSQL server binaries not found (Debian package 'postgresql')")
    return max(versioned, key=lambda b: int(b.parent.name))


def _pg_os_user() -> pwd.struct_passwd | None:
    """The account to run the server as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise InfraError(f"running as root needs the {PG_SYSTEM_USER!r} system user") from None


def _make_traversable(path: Path) -> None:
    """Add o+x to path and its ancestors so the postgres user can reach the data dir."""
    for p in (path, *path.parents):
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    if root.stat().st_uid == user.pw_uid:
        return
    for path in (root, *root.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _load_password(path: Path, initialized: bool) -> str:
    if path.exists():
        return path.read_text().strip()
    if initialized:
        raise InfraError(f"{path} is missing but the cluster next to it is initialized")
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


@contextlib.contextmanager
def _temp_pwfile(password: str, directory: Path, owner: pwd.struct_passwd | None) -> Iterator[Path]:
    """A copy of the password initdb can read when it runs as another user."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".pwfile-")
    path = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _clear_stale_pidfile(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    try:
        first_line = pidfile.read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return
    pid = int(first_line) if first_line.isdigit() else 0
    if pid and _is_postgres(pid):
        raise InfraError(f"postgres (pid {pid}) is already running on {pgdata}")
    pidfile.unlink()


async def _pg_accepts(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except asyncpg.InvalidPasswordError as exc:
        raise InfraError(f"postgres rejected the stored password: {exc}") from exc
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _ensure_database(dsn: str, name: str) -> bool:
    """Create database `name` if missing; True if it was created."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


@dataclass(eq=False)
class PostgresServer(_Server):
    data_dir: Path
    port: int
    password: str = field(repr=False)
    progress: Progress = _quiet
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stop_signal = signal.SIGINT  # "fast" shutdown: abort sessions, checkpoint, exit

    @classmethod
    def start(
        cls,
        data_dir: Path,
        port: int | None = None,
        progress: Progress = _quiet,
        timeout: float = 60.0,
    ) -> PostgresServer:
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        initialized = (data_dir / "pgdata" / "PG_VERSION").exists()
        password = _load_password(data_dir / f"{PG_USER}.password", initialized)
        return _launch_new(lambda: cls(data_dir, port or free_port(), password, progress), timeout)

    @property
    def dsn(self) -> str:
        return self._dsn(PG_DATABASE)

    def new_database(self, prefix: str) -> str:
        """Creates a database with a fresh name (tests and benchmarks each get their own); returns its DSN."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        asyncio.run(_ensure_database(self.dsn, name))
        return self._dsn(name)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def _dsn(self, database: str) -> str:
        password = quote(self.password, safe="")
        return f"postgresql://{PG_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends at once (a whole-server crash)."""
        if self._proc is None:
            return
        backends = _children(self._proc.pid) if self._proc.poll() is None else []
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _kill_group(self._proc)
        _wait_gone(backends, timeout=10)

    def _launch(self, timeout: float) -> None:
        owner = _pg_os_user()
        self._prepare_dirs(owner)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(owner)
        _clear_stale_pidfile(self.pgdata)
        self.progress(f"postgres: starting on 127.0.0.1:{self.port}…")
        began = time.monotonic()
        self._proc = _spawn(self._server_cmd(), self.data_dir, self.log_file, owner)
        admin_dsn = self._dsn("postgres")
        _wait_ready(
            lambda: _run_sync(_pg_accepts(admin_dsn)),
            self._proc,
            "postgres",
            timeout,
            (self.log_file,),
        )
        if _run_sync(_ensure_database(admin_dsn, PG_DATABASE)):
            self.progress(f"postgres: created database {PG_DATABASE}")
        self.progress(f"postgres: ready on 127.0.0.1:{self.port} ({time.monotonic() - began:.1f}s)")

    def _prepare_dirs(self, owner: pwd.struct_passwd | None) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            _make_traversable(self.data_dir)
            _chown_tree(self.pgdata, owner)

    def _initdb(self, owner: pwd.struct_passwd | None) -> None:
        self.progress("postgres: initdb (first start of this data dir)…")
        with _temp_pwfile(self.password, self.data_dir, owner) as pwfile:
            cmd = [
                str(find_pg_bindir() / "initdb"),
                "-D", str(self.pgdata),
                "-U", PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
            ]  # fmt: skip
            _run(cmd, self.data_dir / "initdb.log", "initdb", owner, timeout=120)

    def _server_cmd(self) -> list[str]:
        return [
            str(find_pg_bindir() / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",  # TCP only: no socket path length/permission issues
        ]  # fmt: skip

"""End-to-end checks against a real Kafka broker and a real PostgreSQL server (no mocks).

The Kafka jars are cached in $REELFORGE_CACHE (default: <repo>/.cache) so they are fetched
once per machine, not per test; all data dirs live in tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from reelforge_local.infra import KafkaBroker, PortInUseError, PostgresServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_DIR = Path(os.environ.get("REELFORGE_CACHE", REPO_ROOT / ".cache"))
TOPIC = "video.uploaded"


def _pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.fixture
def progress_lines() -> list[str]:
    return []


@pytest.fixture
def kafka(tmp_path: Path, progress_lines: list[str]) -> Iterator[KafkaBroker]:
    with KafkaBroker.start(CACHE_DIR, tmp_path / "kafka", progress=progress_lines.append) as b:
        yield b


@pytest.fixture
def postgres(tmp_path: Path, progress_lines: list[str]) -> Iterator[PostgresServer]:
    with PostgresServer.start(tmp_path / "pg", progress=progress_lines.append) as server:
        yield server


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"video-1")
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str, group: str) -> bytes:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
        value: bytes = message.value
        return value
    finally:
        await consumer.stop()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics: list[str] = await admin.list_topics()
        return topics
    finally:
        await admin.close()


async def _fetch_titles(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["title"] for row in await conn.fetch("SELECT title FROM videos ORDER BY id")]
    finally:
        await conn.close()


async def _insert_video(dsn: str, title: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS videos (id serial PRIMARY KEY, title text)")
        await conn.execute("INSERT INTO videos (title) VALUES ($1)", title)
    finally:
        await conn.close()


def test_free_port_is_outside_the_ephemeral_range() -> None:
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(1024 < port < ephemeral_start for port in ports)
    assert len(ports) > 1


def test_postgres_on_a_taken_port_fails_with_the_log(tmp_path: Path) -> None:
    with socket.socket() as squatter:  # bound, not listening: connects fail fast
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        with pytest.raises(PortInUseError, match="Address already in use"):
            PostgresServer.start(tmp_path / "pg", port=port)


def test_kafka_message_survives_kill_9(kafka: KafkaBroker) -> None:
    kafka.create_topics([TOPIC])
    kafka.create_topics([TOPIC, "video.transcoded"], partitions=1)  # idempotent
    asyncio.run(_produce(kafka.bootstrap_servers, TOPIC, b"hello"))
    assert asyncio.run(_consume_one(kafka.bootstrap_servers, TOPIC, "g1")) == b"hello"

    old_pid, bootstrap = kafka.pid, kafka.bootstrap_servers
    kafka.kill()
    assert _pid_gone(old_pid)
    kafka.restart()

    assert kafka.pid != old_pid
    assert kafka.bootstrap_servers == bootstrap
    topics = asyncio.run(_list_topics(bootstrap))
    assert {TOPIC, "video.transcoded"} <= set(topics)
    assert asyncio.run(_consume_one(bootstrap, TOPIC, "g2")) == b"hello"


def test_postgres_row_survives_kill_9(postgres: PostgresServer) -> None:
    asyncio.run(_insert_video(postgres.dsn, "first"))

    old_pid, dsn = postgres.pid, postgres.dsn
    postgres.kill()
    assert _pid_gone(old_pid)
    postgres.restart()

    assert postgres.pid != old_pid
    assert postgres.dsn == dsn
    assert asyncio.run(_fetch_titles(dsn)) == ["first"]
    assert "automatic recovery in progress" in postgres.log_file.read_text()


def test_postgres_password_file_is_private(postgres: PostgresServer) -> None:
    password_file = postgres.data_dir / "reelforge.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password_file.read_text().strip() == postgres.password


def test_second_start_on_same_data_dirs_is_fast_and_keeps_data(tmp_path: Path, progress_lines: list[str]) -> None:
    with KafkaBroker.start(CACHE_DIR, tmp_path / "kafka") as kafka:
        kafka.create_topics([TOPIC])
        asyncio.run(_produce(kafka.bootstrap_servers, TOPIC, b"again"))
    with PostgresServer.start(tmp_path / "pg") as postgres:
        asyncio.run(_insert_video(postgres.dsn, "kept"))

    began = time.monotonic()
    with (
        KafkaBroker.start(CACHE_DIR, tmp_path / "kafka", progress=progress_lines.append) as kafka,
        PostgresServer.start(tmp_path / "pg", progress=progress_lines.append) as postgres,
    ):
        elapsed = time.monotonic() - began
        assert asyncio.run(_consume_one(kafka.bootstrap_servers, TOPIC, "g")) == b"again"
        assert asyncio.run(_fetch_titles(postgres.dsn)) == ["kept"]

    setup_steps = [line for line in progress_lines if "Maven" in line or "first start" in line]
    assert setup_steps == []
    assert elapsed < 30, progress_lines

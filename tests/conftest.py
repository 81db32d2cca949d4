"""Shared fixtures: a real Redis server (never a fake), keys, config, executors."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from contracts import StreamsConfig, load_config, with_overrides
from deploystream.embedded_redis import EmbeddedRedis
from deploystream.keys import init_keys
from deploystream.testhosts import Fleet
from tests.harness import Executors


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=5, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """REDIS_URL if set; else testcontainers when Docker answers; else our own redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """A clean database per test (flushed before and after)."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    yield redis_server_url
    client.flushdb()
    client.close()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    init_keys(d)
    return d


@pytest.fixture
def config(redis_url: str) -> StreamsConfig:
    return with_overrides(load_config(), redis_url=redis_url)


@pytest.fixture
def executors(redis_url: str, keys_dir: Path, tmp_path: Path) -> Iterator[Executors]:
    from tests.harness import Executors

    group = Executors(redis_url=redis_url, keys_dir=keys_dir, base=tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def ssh_fleet() -> Iterator[Fleet]:
    """Real SSH test hosts (deploystream/testhosts.py); add them with ``ssh_fleet.add()``.
    Every namespace, link, process and file they made is removed, pass or fail."""
    fleet = Fleet.create()
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """A test that runs the CLI in-process configures logging for the whole process:
    give the next test structlog's defaults back (capture_logs relies on them)."""
    yield
    import structlog

    structlog.reset_defaults()

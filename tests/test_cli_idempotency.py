"""An idempotency key means the same request: the same parameters return it again,
other parameters are refused (exit 2, saying so) and nothing is submitted."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import redis

from contracts import StreamsConfig
from deploystream.errors import BadInputError
from deploystream.keys import OrchestratorKeys
from deploystream.redis_conn import connect
from orchestrator.client import IdempotencyConflictError, StreamClient
from orchestrator.job_builder import build_deploy_job
from tests.harness import deployctl

BASE = ["deploy", "--project", "shop", "--repo", "owner/shop", "--idempotency-key", "release-7"]


def test_same_key_same_parameters_same_request_other_parameters_exit_2(
    redis_url: str, keys_dir: Path, tmp_path: Path, rclient: redis.Redis, config: StreamsConfig
) -> None:
    first = deployctl(
        *BASE, "--service-port", "8000", "--detach", redis_url=redis_url, keys_dir=keys_dir
    )
    assert first.returncode == 0, first.stderr
    again = deployctl(
        *BASE, "--service-port", "8000", "--detach", redis_url=redis_url, keys_dir=keys_dir
    )
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr
    rid = first.stdout.strip()
    for extra in (["--detach"], []):  # plain submit, and through the deploy graph
        other = deployctl(
            *BASE,
            "--service-port",
            "8001",
            *extra,
            redis_url=redis_url,
            keys_dir=keys_dir,
            DEPLOYSTREAM_CHECKPOINT_DB=str(tmp_path / "cp.sqlite"),
        )
        assert other.returncode == 2, (extra, other.stdout, other.stderr)
        assert "idempotency key 'release-7'" in other.stderr and rid in other.stderr
        assert "other parameters: refused" in other.stderr
    assert rclient.xlen(config.streams.deploy) == 1  # only the first


def test_sealed_values_do_not_make_parameters_differ(config: StreamsConfig, keys_dir: Path) -> None:
    """Secrets are sealed anew (randomly) on every submit: the same secret names with
    the same key is the same request; a changed port is not."""
    keys = OrchestratorKeys.load(keys_dir)

    def job(port: int) -> object:
        return build_deploy_job(
            keys,
            project_name="shop",
            repo="owner/shop",
            service_port=port,
            secrets={"DB_PASSWORD": "pw"},
            github_token="ghp_token",
            idempotency_key="k-1",
        )

    async def go() -> None:
        r = connect(config.redis.url)
        try:
            client = StreamClient(r, config, keys)
            first = await client.submit(job(8000))  # type: ignore[arg-type]
            assert await client.submit(job(8000)) == first  # type: ignore[arg-type]
            with pytest.raises(IdempotencyConflictError) as caught:
                await client.submit(job(8001))  # type: ignore[arg-type]
            assert isinstance(caught.value, BadInputError)
        finally:
            await r.aclose()

    anyio.run(go)

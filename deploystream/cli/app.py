"""Settings every command shares, built once from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import StreamsConfig
from deploystream.errors import BadInputError, InfrastructureError
from deploystream.keys import ExecutorKeys, OrchestratorKeys, Trust, ensure_local_keys
from deploystream.redis_conn import TRANSIENT, TlsOptions, connect, redact_url

# Exit codes of the operator contract (DESIGN.md "CLI").
EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3


@dataclass(frozen=True)
class App:
    config: StreamsConfig
    keys_dir: Path

    @property
    def redis_url(self) -> str:
        return self.config.redis.url

    def _keys_ready(self) -> None:
        created = ensure_local_keys(self.keys_dir)
        if created:
            click.echo(f"deploystream: created keys in {self.keys_dir}", err=True)

    def orchestrator_keys(self) -> OrchestratorKeys:
        self._keys_ready()
        return OrchestratorKeys.load(self.keys_dir)

    def executor_keys(self) -> ExecutorKeys:
        self._keys_ready()
        return ExecutorKeys.load(self.keys_dir)

    def trust(self) -> Trust:
        """The public halves a reader checks signatures with (tail, status, dlq)."""
        self._keys_ready()
        return Trust.load(self.keys_dir)

    async def redis(self) -> Redis:
        from deploystream.cluster import require_layout

        require_layout(self.redis_url, self.config)  # cluster URL: one hash slot or refuse
        # TLS files come from the environment (DEPLOYSTREAM_REDIS_CA, ...): redis_conn.
        where = redact_url(self.redis_url)
        try:
            client = connect(self.redis_url, tls=TlsOptions.from_env())
        except ValueError as exc:  # a URL the client cannot parse (from streams.toml)
            raise BadInputError(f"--redis-url/REDIS_URL: {where} is not usable: {exc}") from exc
        try:
            await client.ping()  # type: ignore[misc]
        except TRANSIENT as exc:
            await client.aclose()
            raise InfrastructureError(f"cannot reach Redis at {where}: {exc}") from exc
        except ResponseError as exc:  # e.g. SELECT of a database the server does not have
            await client.aclose()
            raise BadInputError(f"--redis-url/REDIS_URL: Redis at {where} says: {exc}") from exc
        return client

"""A benchmark-only executor whose jobs do nothing: the dispatch path, minus Ansible.

Everything a real executor does for a job happens here too -- XREADGROUP, signature
check, decode, rules, allow-list, delivery count, dedupe, ``accepted`` event, lease
bookkeeping, result + XACK through the fenced script -- except that
:meth:`NoopExecutor._run` returns an immediate success instead of running
ansible-runner. It exists only as this module, started only by ``python -m bench``;
no job field, playbook name or flag of ``deployctl`` can reach it.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

import anyio

from contracts import Job, load_config, with_overrides
from deploystream import logs
from deploystream.keys import ExecutorKeys
from deploystream.redis_conn import connect
from executor.publisher import EventPublisher
from executor.runner import RunOutcome
from executor.settings import ExecutorSettings
from executor.worker import Executor, Owned

# Set to a file path: the process runs under cProfile and writes its stats there on exit.
PROFILE_ENV = "DEPLOYSTREAM_BENCH_PROFILE"


class NoopExecutor(Executor):
    async def _run(
        self,
        owned: Owned,
        job: Job,
        playbook: Any,
        publisher: EventPublisher,
        attempt_no: int,
    ) -> RunOutcome:
        return RunOutcome(status="successful", rc=0)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m bench.noop_executor")
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--apps-root", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logs.configure(os.environ.get("DEPLOYSTREAM_LOG_LEVEL", "warning"))
    config = with_overrides(
        load_config(), redis_url=os.environ["REDIS_URL"], concurrency=args.concurrency
    )
    settings = ExecutorSettings(
        name=args.name,
        project_dir=args.project_dir.resolve(),
        apps_root=args.apps_root,
        work_dir=args.work_dir,
    )
    keys = ExecutorKeys.load(Path(os.environ["DEPLOYSTREAM_KEYS_DIR"]))

    async def run() -> None:
        redis = connect(config.redis.url)
        executor = NoopExecutor(redis, config, settings, keys)

        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for _ in received:
                    executor.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signals)
            await executor.serve()
            tg.cancel_scope.cancel()
        await redis.aclose()

    profile_to = os.environ.get(PROFILE_ENV)
    if not profile_to:
        anyio.run(run)
        return 0
    import cProfile
    import time

    profiler = cProfile.Profile(time.process_time)  # CPU, not time spent waiting
    profiler.enable()
    try:
        anyio.run(run)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

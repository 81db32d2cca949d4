"""One job's run: open its secrets, run the playbook in a slot, build its result.

``_run`` is what a benchmark executor overrides (bench/noop_executor.py); the
events the run emits are translated, redacted and published as it goes.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec

from contracts import Job, Result
from deploystream import redact as redaction
from deploystream.redact import Redactor
from executor.core import ExecutorCore
from executor.job_lock import JobLock
from executor.ownership import Owned
from executor.publisher import EventPublisher
from executor.runner import OpenedSecrets, RunOutcome, run_playbook
from executor.translate import translate
from executor.unseal import open_secrets

_STATUS_MAP = {
    "successful": "success",
    "failed": "failed",
    "timeout": "timeout",
    "canceled": "canceled",
}


class PlaybookRun(ExecutorCore):
    async def _run(
        self,
        owned: Owned,
        job: Job,
        playbook: Any,
        publisher: EventPublisher,
        attempt_no: int,
    ) -> RunOutcome:
        # One deploy of a project per host (one provision per server) at a time: wait
        # here, visibly, before the timeout starts; the worker releases it after the
        # result.
        lock = owned.lock = JobLock(
            self.redis, self.config, self.lock_scripts, job, owned.fence(self.name)
        )
        got = await lock.acquire(owned.cancel, publisher.emit, lambda: self.stopping)
        if got == "lost":
            self._lose(owned)
        if got == "given_back":  # shutting down: not started, so another executor takes it
            owned.abandoned = True
        if got != "held":
            return RunOutcome(
                status="canceled", rc=None, error=f"canceled while waiting for {lock.what}"
            )
        try:
            secrets = open_secrets(self.keys, job)
        except Exception as exc:
            return RunOutcome(status="error", rc=None, error=f"secrets: {exc}")
        redact = Redactor(secrets.all_values())
        line_max = self.config.retention.output_line_max

        def emit_from_thread(raw: dict[str, Any]) -> None:
            if owned.lost or owned.abandoned:
                return
            event = translate(
                raw,
                request_id=job.request_id,
                attempt=attempt_no,
                ts=time.time(),
                redact=redact,
                line_max=line_max,
            )
            if event is not None:
                try:
                    publisher.emit_threadsafe(event)
                except Exception:  # the loop is shutting down: the run is being stopped
                    owned.cancel.set()

        # While it runs, the executor's own log lines mask this job's secrets too.
        with redaction.active(secrets.all_values()):
            outcome = await self._run_in_slot(owned, job, playbook, secrets, emit_from_thread)
        if outcome.error:
            outcome.error = redact(outcome.error)
        if outcome.failed_task:  # a task name is templated: it can hold a secret
            outcome.failed_task = redact(outcome.failed_task)
        if outcome.failed_message:
            outcome.failed_message = redact(outcome.failed_message)
        outcome.hosts = {
            h: msgspec.structs.replace(summary, msg=redact(summary.msg))
            for h, summary in outcome.hosts.items()
        }
        return outcome

    async def _run_in_slot(
        self,
        owned: Owned,
        job: Job,
        playbook: Any,
        secrets: OpenedSecrets,
        emit_from_thread: Any,
    ) -> RunOutcome:
        async with self._slots:
            if owned.cancel.is_set():
                return RunOutcome(status="canceled", rc=None, error="canceled before it started")
            try:
                outcome = await anyio.to_thread.run_sync(
                    run_playbook,
                    job,
                    playbook,
                    self.settings,
                    secrets,
                    emit_from_thread,
                    owned.cancel,
                    self.config.executor.playbook_nice,
                    self.heartbeat.env() if self.heartbeat is not None else None,
                )
            except Exception as exc:
                outcome = RunOutcome(status="error", rc=None, error=f"runner: {exc}")
        return outcome

    def _result(
        self, job: Job, outcome: RunOutcome, attempt_no: int, owned: Owned, started: float
    ) -> Result:
        status = _STATUS_MAP.get(outcome.status, "error")
        error = outcome.error
        if status == "failed" and not error:
            # The *why*; the *where* is failed_task / failed_hosts (summaries add it).
            error = outcome.failed_message
        if status == "timeout":
            error = error or f"timed out after {job.timeout_s} s"
        if status == "canceled" and owned.stop_reason:
            status, error = "error", owned.stop_reason
        elif status == "canceled":
            by = f"canceled by {owned.canceled_by or 'request'}"
            error = f"{error} ({by})" if error else by
        url = outcome.artifacts.get("deployed_url") if status == "success" else None
        if status == "success" and len(outcome.hosts) > 1:  # each host by name
            url = " ".join(h.url for h in outcome.hosts.values() if h.url)
        return Result(
            request_id=job.request_id,
            seq=0,
            ts=time.time(),
            attempt=attempt_no,
            status=status,  # type: ignore[arg-type]
            stats=outcome.stats,
            deployed_url=str(url) if url else None,
            rc=outcome.rc,
            error=error,
            duration_ms=int((time.time() - started) * 1000),
            executor=self.name,
            failed_hosts=outcome.failed_hosts,
            failed_task=outcome.failed_task,
            hosts=outcome.hosts,
        )

"""Prometheus metrics of one executor, served on ``--metrics-port``.

Each executor is its own scrape target, so the registry is private to the
:class:`ExecutorMetrics` instance (never prometheus_client's global one): two
executors in one process (tests, the demo) never share or double-count series.

Series (all prefixed ``deploystream_``)::

    jobs_total{kind,status}           counter   jobs that ended, by result status
    job_duration_seconds{kind}        histogram run time of jobs that ran a playbook
    queue_wait_seconds{kind}          histogram submitted_at -> accepted by this executor
    events_published_total            counter   events written to event streams
    reclaims_total                    counter   jobs adopted from executors that died
    dead_letters_total{stream}        counter   entries moved to a dead-letter stream
    running_jobs                      gauge     playbooks running now
    executor_info{executor}           gauge=1   which executor this target is

Without ``--metrics-port`` the executor gets :data:`NULL_METRICS`, whose methods do
nothing, so the worker calls the same interface either way.
"""

from __future__ import annotations

import threading
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from deploystream.errors import InfrastructureError

NAMESPACE = "deploystream"
# Playbooks take seconds to tens of minutes; the last finite bucket is one hour.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Queue wait is milliseconds on an idle pool and minutes on a saturated one.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics(Protocol):
    """What the worker calls; :class:`ExecutorMetrics` and :class:`NullMetrics` implement it."""

    @property
    def port(self) -> int | None: ...

    def job_started(self, kind: str) -> None: ...

    def job_finished(self, kind: str, status: str, duration_s: float) -> None: ...

    def job_released(self) -> None: ...

    def job_refused(self, kind: str, status: str) -> None: ...

    def queue_wait(self, kind: str, seconds: float) -> None: ...

    def events_published(self, n: int) -> None: ...

    def reclaimed(self) -> None: ...

    def dead_lettered(self, stream: str) -> None: ...

    def set_running(self, n: int) -> None: ...

    def close(self) -> None: ...


class ExecutorMetrics:
    """The executor's series in their own registry, optionally served over HTTP."""

    def __init__(self, executor: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            "jobs",
            "Jobs that ended, by kind and result status.",
            ["kind", "status"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.job_duration = Histogram(
            "job_duration_seconds",
            "Run time of jobs that ran a playbook.",
            ["kind"],
            namespace=NAMESPACE,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "queue_wait_seconds",
            "Time from submission to acceptance by this executor.",
            ["kind"],
            namespace=NAMESPACE,
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "events_published",
            "Events written to request event streams.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.reclaims = Counter(
            "reclaims",
            "Jobs adopted from an executor that stopped answering.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Entries moved to a dead-letter stream.",
            ["stream"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.running = Gauge(
            "running_jobs", "Playbooks running now.", namespace=NAMESPACE, registry=r
        )
        info = Gauge(
            "executor_info",
            "This executor's consumer name (value is always 1).",
            ["executor"],
            namespace=NAMESPACE,
            registry=r,
        )
        info.labels(executor=executor).set(1)
        self._lock = threading.Lock()
        self._running = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ recording
    def job_started(self, kind: str) -> None:
        """A playbook run begins (after acceptance). Pair with job_finished/job_released."""
        self._move_running(+1)

    def job_finished(self, kind: str, status: str, duration_s: float) -> None:
        """A started job published its result: counts it and observes its duration."""
        self._move_running(-1)
        self.jobs.labels(kind=kind, status=status).inc()
        self.job_duration.labels(kind=kind).observe(max(0.0, duration_s))

    def job_released(self) -> None:
        """A started job left without a result (lease lost, abandoned at shutdown).

        Its new owner counts it; here it only stops running.
        """
        self._move_running(-1)

    def job_refused(self, kind: str, status: str) -> None:
        """A job that ended without running a playbook (rejected, dead-lettered,
        canceled before it started): counted, no duration. ``kind`` may be
        ``"unknown"`` for an entry that did not decode."""
        self.jobs.labels(kind=kind, status=status).inc()

    def queue_wait(self, kind: str, seconds: float) -> None:
        # Clocks of orchestrator and executor hosts differ a little: never negative.
        self.queue_wait_seconds.labels(kind=kind).observe(max(0.0, seconds))

    def events_published(self, n: int) -> None:
        if n > 0:
            self.events.inc(n)

    def reclaimed(self) -> None:
        self.reclaims.inc()

    def dead_lettered(self, stream: str) -> None:
        self.dead_letters.labels(stream=stream).inc()

    def set_running(self, n: int) -> None:
        """Set the running gauge outright (instead of job_started/job_finished)."""
        with self._lock:
            self._running = max(0, n)
            self.running.set(self._running)

    def _move_running(self, delta: int) -> None:
        with self._lock:
            self._running = max(0, self._running + delta)
            self.running.set(self._running)

    # ------------------------------------------------------------------ serving
    @property
    def port(self) -> int | None:
        """The port the endpoint listens on (None until :meth:`serve`)."""
        return None if self._server is None else int(self._server.server_port)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` in a daemon thread; ``port`` 0 picks a free one. Returns it."""
        if self._server is not None:
            raise RuntimeError("metrics endpoint already serving")
        try:
            self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise InfrastructureError(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the endpoint (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class NullMetrics:
    """Metrics disabled: every call is a no-op."""

    @property
    def port(self) -> int | None:
        return None

    def job_started(self, kind: str) -> None:
        pass

    def job_finished(self, kind: str, status: str, duration_s: float) -> None:
        pass

    def job_released(self) -> None:
        pass

    def job_refused(self, kind: str, status: str) -> None:
        pass

    def queue_wait(self, kind: str, seconds: float) -> None:
        pass

    def events_published(self, n: int) -> None:
        pass

    def reclaimed(self) -> None:
        pass

    def dead_lettered(self, stream: str) -> None:
        pass

    def set_running(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


NULL_METRICS = NullMetrics()


def start_metrics(port: int | None, *, executor: str = "", addr: str = "0.0.0.0") -> Metrics:
    """The entrypoint's one call: serving metrics on ``port``, or no-ops when it is None."""
    if port is None:
        return NULL_METRICS
    metrics = ExecutorMetrics(executor)
    metrics.serve(port, addr)
    return metrics

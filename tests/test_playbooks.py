"""The shipped Ansible project, run for real with ansible-runner against localhost."""

from __future__ import annotations

import base64
import json
import os
import pwd
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
from pytest_httpserver import HTTPServer

from deploystream.sample_service import (
    LOG_FILE_NAME,
    PID_FILE_NAME,
    create_sample_repo,
    pid_alive,
)
from tests.harness import remove_services_root, services_root

PROJECT_DIR = Path(__file__).resolve().parents[1] / "executor" / "ansible_project"
DEPLOY = PROJECT_DIR / "deploy_service.yml"
PROVISION = PROJECT_DIR / "provision_server.yml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    def __init__(self, runner: Any, events: list[dict[str, Any]], private_data_dir: Path) -> None:
        self.runner = runner
        self.events = events
        self.private_data_dir = private_data_dir

    @property
    def stats_event(self) -> dict[str, Any]:
        return next(e for e in self.events if e.get("event") == "playbook_on_stats")

    @property
    def artifact_data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.stats_event["event_data"].get("artifact_data", {})
        return data

    def failed_tasks(self) -> list[str]:
        return [
            e["event_data"]["task"] for e in self.events if e.get("event") == "runner_on_failed"
        ]


@pytest.fixture(autouse=True)
def _ansible_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # ansible-runner looks ansible-playbook up on PATH; the venv may not be activated.
    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture
def run_playbook(tmp_path: Path):  # type: ignore[no-untyped-def]
    inventory = tmp_path / "inventory"
    inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    counter = 0

    def _run(
        playbook: Path, extravars: dict[str, Any], envvars: dict[str, str] | None = None
    ) -> Run:
        nonlocal counter
        counter += 1
        pdd = tmp_path / f"pdd{counter}"
        pdd.mkdir(mode=0o700)
        events: list[dict[str, Any]] = []

        def handler(event: dict[str, Any]) -> bool:
            events.append(event)
            return True

        r = ansible_runner.run(
            private_data_dir=str(pdd),
            playbook=str(playbook),
            inventory=str(inventory),
            extravars=extravars,
            envvars=envvars or {},
            event_handler=handler,
            quiet=True,
        )
        return Run(r, events, pdd)

    return _run


@pytest.fixture
def apps_root() -> Iterator[Path]:
    root = services_root()
    yield root
    remove_services_root(root)


def _deploy_vars(
    *,
    repo_url: str,
    port: int,
    apps_root: Path,
    secrets_file: Path,
    name: str = "sample",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "project_name": name,
        "repo_url": repo_url,
        "ref": "main",
        "service_port": port,
        "apps_root": str(apps_root),
        "secrets_file": str(secrets_file),
        "health_path": "/health",
        "deploy_host": "localhost",
        "project_id": None,
        "modules": ["web"],
        **extra,
    }


def _secrets(tmp_path: Path, values: dict[str, str]) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return path


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        data: dict[str, Any] = json.loads(resp.read())
        return data


def test_deploy_runs_service_with_secret_env(tmp_path: Path, apps_root: Path, run_playbook) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    port = _free_port()
    greeting = "hello 'quoted' $HOME `x` \\ world"
    secrets = _secrets(tmp_path, {"GREETING": greeting, "OTHER_SECRET": "x"})

    run = run_playbook(
        DEPLOY, _deploy_vars(repo_url=repo, port=port, apps_root=apps_root, secrets_file=secrets)
    )

    assert run.runner.status == "successful", run.failed_tasks()
    assert run.runner.rc == 0
    body = _get_json(f"http://127.0.0.1:{port}/")
    assert body["greeting"] == greeting
    app_dir = apps_root / "sample"
    env_stat = (app_dir / ".env").stat()
    if os.geteuid() == 0:
        # A service user of its own: .env and the app dir are root:<its group>.
        user = pwd.getpwuid(Path(f"/proc/{body['pid']}").stat().st_uid)
        assert user.pw_uid != 0 and user.pw_name.startswith("ds-sample-"), user
        assert env_stat.st_mode & 0o777 == 0o640 and env_stat.st_uid == 0
        assert env_stat.st_gid == user.pw_gid
        assert app_dir.stat().st_mode & 0o777 == 0o750
    else:
        assert env_stat.st_mode & 0o777 == 0o600
    assert int((app_dir / PID_FILE_NAME).read_text()) == body["pid"]
    assert (app_dir / LOG_FILE_NAME).exists()
    # set_stats (aggregate: false) -> playbook_on_stats event_data.artifact_data
    assert run.artifact_data == {
        "deployed_url": f"http://localhost:{port}",
        "runtime": "process",
        "project_path": str(app_dir),
    }
    task_names = {
        e["event_data"].get("task") for e in run.events if e["event"] == "playbook_on_task_start"
    }
    assert {
        "Fetch repository",
        "Write service environment",
        "Start service",
        "Wait for health check",
    } <= task_names


def test_redeploy_replaces_process(tmp_path: Path, apps_root: Path, run_playbook) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    port = _free_port()
    secrets = _secrets(tmp_path, {"GREETING": "one"})
    extravars = _deploy_vars(repo_url=repo, port=port, apps_root=apps_root, secrets_file=secrets)

    first = run_playbook(DEPLOY, extravars)
    assert first.runner.status == "successful", first.failed_tasks()
    old_pid = _get_json(f"http://127.0.0.1:{port}/")["pid"]

    secrets.write_text(json.dumps({"GREETING": "two"}))
    second = run_playbook(DEPLOY, extravars)
    assert second.runner.status == "successful", second.failed_tasks()
    body = _get_json(f"http://127.0.0.1:{port}/")
    assert body["pid"] != old_pid
    assert body["greeting"] == "two"
    assert not pid_alive(old_pid)
    stop_changed = [
        e
        for e in second.events
        if e["event"] == "runner_on_ok" and e["event_data"]["task"] == "Stop previous process"
    ]
    assert stop_changed and stop_changed[0]["event_data"]["res"]["changed"] is True


def test_failing_health_check_fails_the_run(tmp_path: Path, apps_root: Path, run_playbook) -> None:
    repo = create_sample_repo(tmp_path / "repo", health_ok=False)
    port = _free_port()
    secrets = _secrets(tmp_path, {"GREETING": "sick"})
    run = run_playbook(
        DEPLOY,
        _deploy_vars(
            repo_url=repo,
            port=port,
            apps_root=apps_root,
            secrets_file=secrets,
            health_retries=3,
            health_delay=0.2,
        ),
    )
    assert run.runner.status == "failed"
    assert run.runner.rc != 0
    assert run.failed_tasks() == ["Wait for health check"]
    assert "deployed_url" not in run.artifact_data


def test_missing_procfile_fails_clearly(tmp_path: Path, apps_root: Path, run_playbook) -> None:
    repo_dir = tmp_path / "repo"
    repo = create_sample_repo(repo_dir)
    (repo_dir / "Procfile").write_text("worker: python3 app.py\n")
    os.system(f"cd {repo_dir} && git commit -qam 'no web' >/dev/null")
    run = run_playbook(
        DEPLOY,
        _deploy_vars(
            repo_url=repo,
            port=_free_port(),
            apps_root=apps_root,
            secrets_file=_secrets(tmp_path, {}),
        ),
    )
    assert run.runner.status == "failed"
    assert run.failed_tasks() == ["Check web command"]
    failed = next(e for e in run.events if e["event"] == "runner_on_failed")
    assert "Procfile" in failed["event_data"]["res"]["msg"]


def test_secrets_never_appear_in_events(tmp_path: Path, apps_root: Path, run_playbook) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    port = _free_port()
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    token = f"ghs_{uuid.uuid4().hex}"
    secrets = _secrets(tmp_path, {"GREETING": secret, "API_KEY": secret + "-api"})

    run = run_playbook(
        DEPLOY,
        _deploy_vars(repo_url=repo, port=port, apps_root=apps_root, secrets_file=secrets),
        envvars={"DEPLOYSTREAM_GIT_TOKEN": token},
    )
    assert run.runner.status == "successful", run.failed_tasks()
    assert _get_json(f"http://127.0.0.1:{port}/")["greeting"] == secret

    dumped = json.dumps(run.events)
    assert secret not in dumped
    assert token not in dumped
    stdout = run.runner.stdout.read()
    assert secret not in stdout and token not in stdout
    # nothing the events/stdout artifacts hold on disk either (ansible-runner does write
    # envvars to env/envvars and artifacts/<ident>/command: the executor must delete the
    # private data dir)
    artifacts = run.private_data_dir / "artifacts"
    for f in artifacts.rglob("*"):
        if f.is_file() and f.name != "command":
            text = f.read_text(errors="replace")
            assert secret not in text and token not in text, f
    # the service never inherits the git token
    pid = int((apps_root / "sample" / PID_FILE_NAME).read_text())
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert token.encode() not in environ
    assert b"PORT=" + str(port).encode() in environ


def test_provision_is_idempotent(tmp_path: Path, run_playbook) -> None:
    apps = tmp_path / "srv" / "apps"
    extravars = {
        "server_handle": "srv-1",
        "apps_root": str(apps),
        "force_reinstall": False,
        "is_recovery": False,
        "provision_version": "1",
    }
    first = run_playbook(PROVISION, extravars)
    assert first.runner.status == "successful", first.failed_tasks()
    assert first.stats_event["event_data"]["changed"]  # dir + marker created
    marker = (apps / ".deploystream-provisioned").read_text()
    assert "version=1" in marker and "handle=srv-1" in marker
    assert first.artifact_data["provisioned"] is True
    assert first.artifact_data["installed_packages"] == []

    second = run_playbook(PROVISION, extravars)
    assert second.runner.status == "successful", second.failed_tasks()
    stats = second.runner.stats
    assert stats["ok"]
    assert all(v == 0 for v in stats["changed"].values()), stats["changed"]
    assert stats["failures"] == {}
    # no package manager call and no user creation on a host that has everything
    ran = {
        e["event_data"]["task"]
        for e in second.events
        if e["event"] in ("runner_on_ok", "runner_on_failed")
    }
    assert "Install required packages" not in ran
    assert "Create deploy user" not in ran


def test_compose_file_selects_compose_runtime(
    tmp_path: Path, apps_root: Path, run_playbook
) -> None:
    # No Docker engine here: the compose branch is chosen and its step fails visibly.
    repo_dir = tmp_path / "repo"
    repo = create_sample_repo(repo_dir)
    (repo_dir / "compose.yaml").write_text("services:\n  web:\n    build: .\n")
    os.system(f"cd {repo_dir} && git add compose.yaml && git commit -qm compose >/dev/null")
    run = run_playbook(
        DEPLOY,
        _deploy_vars(
            repo_url=repo,
            port=_free_port(),
            apps_root=apps_root,
            secrets_file=_secrets(tmp_path, {}),
            health_retries=1,
            health_delay=0.1,
        ),
    )
    assert run.runner.status == "failed"
    assert run.failed_tasks() == ["Start compose services"]
    assert not (apps_root / "sample" / PID_FILE_NAME).exists()


def _failure(run: Run) -> dict[str, Any]:
    event = next(e for e in run.events if e["event"] == "runner_on_failed")
    res: dict[str, Any] = event["event_data"]["res"]
    return res


def test_a_port_held_by_another_process_fails_fast_and_leaves_it_alone(
    tmp_path: Path, apps_root: Path, run_playbook
) -> None:
    """No false success: something else answering 200 on the port is not our service."""
    import subprocess
    import time

    www = tmp_path / "www"
    www.mkdir()
    (www / "health").write_text("ok\n")  # it even passes the health check
    port = _free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # until it listens
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and other.poll() is None
                time.sleep(0.05)
        repo = create_sample_repo(tmp_path / "repo")
        run = run_playbook(
            DEPLOY,
            _deploy_vars(
                repo_url=repo, port=port, apps_root=apps_root,
                secrets_file=_secrets(tmp_path, {}),
            ),
        )  # fmt: skip
        assert run.runner.status == "failed"
        assert run.failed_tasks() == ["Check service port is free"]  # before anything started
        msg = _failure(run)["msg"]
        assert f"port {port} is held by another process: pid {other.pid} (" in msg, msg
        assert "http.server" in msg, msg
        assert "deployed_url" not in run.artifact_data
        assert not (apps_root / "sample" / PID_FILE_NAME).exists()
        # Left alone: still running, still answering.
        assert other.poll() is None
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
    finally:
        other.terminate()
        other.wait(10)


def test_a_service_that_exits_fails_at_once_with_its_own_log(
    tmp_path: Path, apps_root: Path, run_playbook
) -> None:
    """The health check stops waiting when the started process has exited, and says why."""
    import time

    repo_dir = tmp_path / "repo"
    repo = create_sample_repo(repo_dir)
    marker = f"cannot-start-{uuid.uuid4().hex[:8]}"
    (repo_dir / "Procfile").write_text(f"web: echo {marker} >&2; exit 3\n")
    os.system(f"cd {repo_dir} && git commit -qam 'crash' >/dev/null")
    started = time.monotonic()
    run = run_playbook(
        DEPLOY,
        _deploy_vars(
            repo_url=repo, port=_free_port(), apps_root=apps_root,
            secrets_file=_secrets(tmp_path, {}), health_retries=600, health_delay=0.5,
        ),
    )  # fmt: skip
    took = time.monotonic() - started
    assert run.runner.status == "failed"
    assert run.failed_tasks() == ["Wait for health check"]
    msg = _failure(run)["msg"]
    assert "exited before answering" in msg and marker in msg, msg
    assert str(apps_root / "sample" / LOG_FILE_NAME) in msg
    assert took < 120, took  # not the 300 s the health check would wait for


def _add_submodule(repo: Path, name: str, url: str, commit: str) -> None:
    """Commit a submodule ``name`` at ``url`` (pinned to ``commit``) into ``repo``."""
    (repo / ".gitmodules").write_text(f'[submodule "{name}"]\n\tpath = {name}\n\turl = {url}\n')
    for args in (
        ["add", ".gitmodules"],
        ["update-index", "--add", "--cacheinfo", f"160000,{commit},{name}"],
        ["-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "submodule"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)


def test_git_token_goes_to_no_other_host_and_never_over_http(
    tmp_path: Path, apps_root: Path, run_playbook, httpserver: HTTPServer
) -> None:
    """An attacker's repo whose .gitmodules points at a plain-http host of theirs: the
    GitHub token handed to the run never reaches that host (today's main sent it as an
    unscoped http.extraHeader: ``Authorization: Basic x-access-token:<token>``)."""
    httpserver.expect_request("/evil.git/info/refs").respond_with_data("", status=404)
    repo_dir = tmp_path / "repo"
    repo = create_sample_repo(repo_dir)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo_dir, check=True, capture_output=True, text=True
    ).stdout.strip()
    _add_submodule(repo_dir, "evil", httpserver.url_for("/evil.git"), head)
    token = "ghp_" + uuid.uuid4().hex

    run = run_playbook(
        DEPLOY,
        _deploy_vars(
            repo_url=repo,
            port=_free_port(),
            apps_root=apps_root,
            secrets_file=_secrets(tmp_path, {}),
        ),
        envvars={"DEPLOYSTREAM_GIT_TOKEN": token},
    )

    assert run.failed_tasks() == ["Fetch repository"]  # the http submodule is refused
    assert [req.headers.get("Authorization") for req, _ in httpserver.log] == []


class _GitHost:
    """A git host over https (git's "dumb" protocol: static files of a bare repo),
    recording the Authorization header of every request."""

    def __init__(self, root: Path, cert: Path, key: Path, *, stall: bool = False) -> None:
        import functools
        import http.server
        import ssl
        import threading

        self.auth: list[str | None] = []
        seen = self.auth
        # stall: every request is held (a fetch under way) until close()
        self.requested = threading.Event()
        self.released = threading.Event()
        requested, released = self.requested, self.released

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                if stall:
                    requested.set()
                    released.wait(60)
                    self.send_error(503)
                    return
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def _bare(src: Path, dst: Path) -> str:
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(dst)], check=True)
    subprocess.run(["git", "update-server-info"], cwd=dst, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=dst, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_token_goes_to_the_repo_host_and_to_no_other(
    tmp_path: Path, apps_root: Path, run_playbook
) -> None:
    """An https repo on one host, its submodule on another (same IP, another port: git
    scopes http.<url> config by scheme, host and port): the token reaches the repo's
    host, as a Basic x-access-token header, and not the submodule's; the deploy works."""
    from tests.test_security_redis import _make_certs

    ca, cert, key = _make_certs(tmp_path)
    served = [tmp_path / "host1", tmp_path / "host2"]
    for d in served:
        d.mkdir()
    repo_host, other_host = (_GitHost(d, cert, key) for d in served)
    try:
        sub_src = tmp_path / "sub-src"
        create_sample_repo(sub_src)
        sub_head = _bare(sub_src, served[1] / "sub.git")
        src = tmp_path / "src"
        create_sample_repo(src)
        _add_submodule(src, "sub", f"{other_host.url}/sub.git", sub_head)
        _bare(src, served[0] / "app.git")
        token = "ghp_" + uuid.uuid4().hex

        run = run_playbook(
            DEPLOY,
            _deploy_vars(
                repo_url=f"{repo_host.url}/app.git",
                port=_free_port(),
                apps_root=apps_root,
                secrets_file=_secrets(tmp_path, {}),
            ),
            envvars={"DEPLOYSTREAM_GIT_TOKEN": token, "GIT_SSL_CAINFO": str(ca)},
        )
    finally:
        repo_host.close()
        other_host.close()

    assert run.runner.status == "successful", run.failed_tasks()
    assert (apps_root / "sample" / "sub" / "app.py").is_file()  # the submodule came
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert repo_host.auth and set(repo_host.auth) == {expected}
    assert other_host.auth and set(other_host.auth) == {None}


def _files_holding(roots: list[Path], needles: list[bytes]) -> list[str]:
    """Every regular file under ``roots`` whose bytes contain one of ``needles``."""
    found = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
                except OSError:
                    continue
                if any(n in data for n in needles):
                    found.append(str(path))
    return found


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (by parent links in /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if stat:
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


@pytest.mark.slow
def test_a_run_killed_mid_fetch_leaves_the_token_in_no_file(
    tmp_path: Path, apps_root: Path
) -> None:
    """The run is killed (SIGKILL, its whole process group) while git fetches from an
    https host that holds the request: no file under the places the run could write --
    the deploying user's home (~/.ansible/tmp), its temp dir, the apps root -- holds the
    token, raw or in its header form (the old playbook left its git credential file)."""
    import signal

    from tests.test_security_redis import _make_certs

    (tmp_path / "certs").mkdir()
    ca, cert, key = _make_certs(tmp_path / "certs")
    served = tmp_path / "served"
    served.mkdir()
    host = _GitHost(served, cert, key, stall=True)
    home, target_tmp = tmp_path / "home", tmp_path / "target-tmp"
    for d in (home, target_tmp):
        d.mkdir(mode=0o700)
    token = "ghp_" + uuid.uuid4().hex
    header = base64.b64encode(f"x-access-token:{token}".encode())
    inventory = tmp_path / "inventory"
    inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    extravars = tmp_path / "vars.json"
    extravars.write_text(
        json.dumps(
            _deploy_vars(
                repo_url=f"{host.url}/app.git",
                port=_free_port(),
                apps_root=apps_root,
                secrets_file=_secrets(tmp_path, {}),
            )
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "GIT_", "DEPLOYSTREAM_"))
    }
    env.update(
        HOME=str(home),
        # where modules go when not pipelined: ~/.ansible/tmp of the deploying user (on
        # the local connection "~" is the passwd home, not HOME: named here)
        ANSIBLE_REMOTE_TEMP=str(home / ".ansible" / "tmp"),
        TMPDIR=str(target_tmp),
        DEPLOYSTREAM_GIT_TOKEN=token,
        GIT_SSL_CAINFO=str(ca),
    )
    playbook = subprocess.Popen(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         "-e", f"@{extravars}", str(DEPLOY)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        fetching = host.requested.wait(120)
        alive = playbook.poll() is None
        # the whole tree: Ansible's workers run in sessions of their own
        for pid in [playbook.pid, *_descendants(playbook.pid)]:
            os.kill(pid, signal.SIGKILL)
        playbook.wait(30)
    finally:
        host.close()
    assert fetching and alive, "the run never reached the fetch"
    assert host.auth[0] == "Basic " + header.decode()  # the token was in play

    assert _files_holding([home, target_tmp, apps_root], [token.encode(), header]) == []
    # the kill came mid-module: its code payload dir is left behind, in the scanned tmp
    assert list(target_tmp.glob("ansible_deploystream_git_fetch_payload_*"))

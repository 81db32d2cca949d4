"""compose.yaml and the Dockerfiles, validated statically (no Docker engine needed).

What is checked is what breaks a deployment in practice: a missing build context, an
orchestrator image that drags Ansible in, an executor that cannot be scaled, a key
that lands in the wrong container, an environment variable nobody reads.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from contracts import load_config
from deploystream import keys as keymod
from deploystream.cli.main import cli
from executor.settings import ExecutorSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose["services"]
    assert set(svcs) == {"redis", "redis-setup", "executor", "orchestrator"}
    return svcs


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    return ROOT / build["context"] / build["dockerfile"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts += value.split() if isinstance(value, str) else [str(v) for v in value]
    return parts


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile pins UV_VERSION"
    return match.group(1)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


def click_envvars(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        env = getattr(param, "envvar", None)
        if isinstance(env, str):
            names.add(env)
        elif env:
            names.update(env)
    return names


# ---------------------------------------------------------------- builds and images


@pytest.mark.parametrize("name", ["executor", "orchestrator"])
def test_build_context_and_dockerfile_exist(services: dict[str, Any], name: str) -> None:
    build = services[name]["build"]
    assert (ROOT / build["context"]).is_dir()
    assert dockerfile_of(services[name]).is_file()


@pytest.mark.parametrize("name", ["executor", "orchestrator"])
def test_dockerfile_slim_python_non_root_installs_from_the_lock(
    services: dict[str, Any], name: str
) -> None:
    path = dockerfile_of(services[name])
    instructions = dockerfile_instructions(path)
    args = {
        m.group(1): m.group(2)
        for word, rest in instructions
        if word == "ARG" and (m := re.match(r"(\w+)=(\S+)", rest))
    }
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert bases, path
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    # The runtime stage (after the last FROM) runs as a non-root user.
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    users = [rest for word, rest in instructions[last_from:] if word == "USER"]
    assert users, f"{path}: no USER in the final stage"
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1]).split(":")[0]
    assert uid not in ("root", "0"), users[-1]
    # compose builds the image for the uid owning the key files; the default is not root.
    build_uid = services[name]["build"]["args"]["APP_UID"]
    assert re.fullmatch(r"\$\{DEPLOYSTREAM_UID:-(\d+)\}", build_uid), build_uid
    assert build_uid != "${DEPLOYSTREAM_UID:-0}" and "user" not in services[name]
    run_lines = [rest for word, rest in instructions if word == "RUN"]
    runs = " ".join(run_lines)
    assert f"uv=={args['UV_VERSION']}" in runs.replace('"', "").replace("'", "") or (
        "uv==${UV_VERSION}" in runs.replace('"', "")
    )
    assert args["UV_VERSION"] == makefile_uv_version(), "same uv as the Makefile"
    syncs = [s for line in run_lines for s in re.findall(r"uv sync ([^&;]*)", line)]
    assert syncs, f"{path}: installs with uv sync"
    for sync in syncs:
        assert "--locked" in sync and "--no-dev" in sync, sync
        assert re.findall(r"--extra (\S+)", sync) == [name], sync
        assert "--all-extras" not in sync


def test_orchestrator_image_installs_no_ansible(services: dict[str, Any]) -> None:
    instructions = dockerfile_instructions(dockerfile_of(services["orchestrator"]))
    for word, rest in instructions:
        assert "ansible" not in rest.lower(), (word, rest)
        assert "--extra executor" not in rest and "[executor]" not in rest, (word, rest)
        assert "--all-extras" not in rest, (word, rest)


def _lock_closure(extra: str) -> set[str]:
    """Every package name uv.lock can install for deploystream + one extra."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    by_name: dict[str, list[dict[str, Any]]] = {}
    for pkg in lock["package"]:
        by_name.setdefault(pkg["name"], []).append(pkg)
    root = by_name["deploystream"][0]
    todo: list[dict[str, Any]] = [
        *root.get("dependencies", []),
        *root["optional-dependencies"][extra],
    ]
    seen: set[str] = set()
    while todo:
        dep = todo.pop()
        name = dep["name"]
        extras = tuple(dep.get("extra", []))
        key = f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        for pkg in by_name.get(name, []):
            todo += pkg.get("dependencies", [])
            for e in extras:
                todo += pkg.get("optional-dependencies", {}).get(e, [])
    return {k.partition("[")[0] for k in seen}


def test_locked_orchestrator_extra_resolves_without_ansible() -> None:
    orchestrator = _lock_closure("orchestrator")
    executor = _lock_closure("executor")
    assert {"langgraph", "pygithub", "httpx", "redis"} <= orchestrator
    assert {"ansible-core", "ansible-runner", "prometheus-client"} <= executor
    assert not {n for n in orchestrator if n.startswith("ansible")}, sorted(orchestrator)


@pytest.mark.parametrize("name", ["executor", "orchestrator"])
def test_dockerfile_copies_only_what_exists_and_is_not_ignored(
    services: dict[str, Any], name: str
) -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    context = ROOT / services[name]["build"]["context"]
    copies = [
        rest for word, rest in dockerfile_instructions(dockerfile_of(services[name]))
        if word == "COPY" and "--from=" not in rest
    ]  # fmt: skip
    assert copies
    for rest in copies:
        *sources, _dest = rest.split()
        for src in sources:
            assert (context / src).exists(), f"COPY {src}: not in the build context"
            assert src not in ignored, f"COPY {src}: excluded by .dockerignore"
    for must in (".git", ".venv", "deploy/secrets"):
        assert must in ignored, f".dockerignore keeps {must} out of the build context"


# ---------------------------------------------------------------- scaling executors


def test_executor_scales_nothing_tied_to_one_replica(services: dict[str, Any]) -> None:
    ex = services["executor"]
    assert ex["deploy"]["replicas"] == 2
    assert "container_name" not in ex and "hostname" not in ex
    for port in ex.get("ports", []):
        spec = port if isinstance(port, dict) else {"published": str(port).count(":") > 0}
        assert not spec.get("published"), f"fixed host port {port} breaks --scale"
    assert "--name" not in command_of(ex)
    assert "DEPLOYSTREAM_EXECUTOR_NAME" not in env_of(ex)
    instructions = dockerfile_instructions(dockerfile_of(ex))
    for word, rest in instructions:
        if word in ("ENTRYPOINT", "CMD", "ENV"):
            assert "--name" not in rest and "DEPLOYSTREAM_EXECUTOR_NAME" not in rest, rest


def test_executor_name_derives_from_the_container_hostname(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "3f2a9c1d77b0")
    name = ExecutorSettings().name
    assert name.startswith("3f2a9c1d77b0-"), name
    # The CLI default is that same name: no --name means hostname-pid.
    option = next(p for p in cli.commands["executor"].params if p.name == "name")
    assert not option.required and not isinstance(option.default, str)


def test_executor_stop_waits_for_the_shutdown_grace(services: dict[str, Any]) -> None:
    grace = load_config().executor.shutdown_grace_s
    assert seconds(services["executor"]["stop_grace_period"]) > grace


def test_executor_metrics_port_is_exposed_and_health_checked(services: dict[str, Any]) -> None:
    ex = services["executor"]
    port = env_of(ex)["DEPLOYSTREAM_METRICS_PORT"]
    assert port in [str(p) for p in ex["expose"]]
    assert f":{port}/metrics" in " ".join(ex["healthcheck"]["test"])


# ---------------------------------------------------------------- redis


def test_redis_has_aof_healthcheck_and_the_acl_file(services: dict[str, Any]) -> None:
    r = services["redis"]
    assert str(r["image"]).split(":")[0] == "redis"
    assert str(r["image"]).split(":")[1].startswith("7")
    cmd = command_of(r)
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    check = r["healthcheck"]["test"]
    assert "redis-cli" in " ".join(check) and "ping" in " ".join(check)
    assert "container_name" not in r and not r.get("ports")
    aclfile = cmd[cmd.index("--aclfile") + 1]
    mounts = {
        m["target"]: m["source"] for m in r["volumes"] if isinstance(m, dict) and "source" in m
    }
    assert aclfile in mounts, "the ACL file is mounted where --aclfile points"
    assert (ROOT / mounts[aclfile]).resolve() == ACL_FILE


def test_redis_memory_is_bounded_and_never_evicts(services: dict[str, Any]) -> None:
    """Unbounded, a flood of keys takes the host; evicting, Redis would drop job
    entries, events or leases silently. The flags must also be ones Redis takes."""
    import redis

    from deploystream.embedded_redis import EmbeddedRedis

    cmd = command_of(services["redis"])
    limit = cmd[cmd.index("--maxmemory") + 1]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    default = re.fullmatch(r"\$\{REDIS_MAXMEMORY:-(\w+)\}", limit)
    assert default, f"--maxmemory {limit!r}: an overridable size with a default"
    with EmbeddedRedis(
        extra_args=["--maxmemory", default.group(1), "--maxmemory-policy", "noeviction"]
    ) as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        assert int(client.config_get("maxmemory")["maxmemory"]) >= 256 * 1024 * 1024
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.close()


def test_acl_file_defines_both_users_and_lets_the_healthcheck_ping() -> None:
    lines = [ln.split() for ln in ACL_FILE.read_text().splitlines() if ln.strip()]
    users = {ln[1]: ln[2:] for ln in lines if ln[0] == "user"}
    assert {"executor", "orchestrator"} <= set(users)
    # The healthcheck pings without credentials: the default user may PING.
    default = users.get("default", [])
    assert "on" in default and any(r in default for r in ("+ping", "+@connection", "+@all"))


@pytest.mark.parametrize("name", ["executor", "orchestrator"])
def test_default_password_matches_the_acl_file(services: dict[str, Any], name: str) -> None:
    """Out of the box (development passwords), each service can log in."""
    import hashlib

    raw = env_of(services[name])["REDIS_URL"]
    m = re.search(r"\$\{REDIS_\w+_PASSWORD:-([^}]*)\}@", raw)
    assert m, raw
    digest = hashlib.sha256(m.group(1).encode()).hexdigest()
    line = next(ln for ln in ACL_FILE.read_text().splitlines() if ln.startswith(f"user {name} "))
    assert f"#{digest}" in line.split(), f"{name}: compose's default password is not the ACL's"


@pytest.mark.parametrize("name,user", [("executor", "executor"), ("orchestrator", "orchestrator")])
def test_services_use_their_own_acl_user(services: dict[str, Any], name: str, user: str) -> None:
    raw = env_of(services[name])["REDIS_URL"]
    # The password is interpolated from .env, never written in the file.
    assert re.search(r":\$\{REDIS_\w+_PASSWORD(:[-?][^}]*)?\}@", raw), raw
    url = urlsplit(re.sub(r"\$\{[^}]*\}", "PASSWORD", raw))
    assert url.scheme == "redis" and url.hostname == "redis" and url.username == user
    assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


# ---------------------------------------------------------------- keys and secrets


def _secret_targets(compose: dict[str, Any], name: str) -> dict[str, Path]:
    """Mounted path -> host file, for one service."""
    declared = compose["secrets"]
    out: dict[str, Path] = {}
    for ref in compose["services"][name].get("secrets", []):
        source = ref if isinstance(ref, str) else ref["source"]
        target = ref.get("target", source) if isinstance(ref, dict) else source
        if not target.startswith("/"):
            target = f"/run/secrets/{target}"
        assert source in declared, f"{name}: secret {source} is not declared"
        out[target] = ROOT / declared[source]["file"]
    return out


def test_each_side_gets_only_its_own_keys(compose: dict[str, Any]) -> None:
    for name, needs, never in (
        (
            "executor",
            {keymod.BOX_PRIVATE, keymod.SIGN_PUBLIC, keymod.EXEC_SIGN_PRIVATE},
            keymod.SIGN_PRIVATE,
        ),
        (
            "orchestrator",
            {keymod.SIGN_PRIVATE, keymod.BOX_PUBLIC, keymod.EXEC_SIGN_PUBLIC},
            keymod.BOX_PRIVATE,
        ),
    ):
        keys_dir = env_of(compose["services"][name])["DEPLOYSTREAM_KEYS_DIR"]
        targets = _secret_targets(compose, name)
        in_dir = {Path(t).name for t in targets if str(Path(t).parent) == keys_dir}
        assert in_dir == needs, (name, in_dir)
        assert all(Path(t).name != never for t in targets), f"{name} must not hold {never}"
        for target, source in targets.items():
            if str(Path(target).parent) == keys_dir:
                assert source.name == Path(target).name, "host file named as keys init names it"
    ssh = env_of(compose["services"]["executor"])["DEPLOYSTREAM_SSH_KEY"]
    assert ssh in _secret_targets(compose, "executor")


def test_secret_files_come_from_keys_init_in_an_ignored_dir(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    made = {p.name for p in keymod.init_keys(tmp_path / "k")}
    for name, spec in compose["secrets"].items():
        path = (ROOT / spec["file"]).resolve()
        assert path.parent == ROOT / "deploy" / "secrets", (name, path)
        assert path.name in made or name == "ssh_key", (name, path.name)
        # Present on an operator's machine, never in git.
        rel = path.relative_to(ROOT)
        if shutil.which("git") and (ROOT / ".git").exists():
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", str(rel)], cwd=ROOT, check=False
            ).returncode
            assert ignored == 0, f"{rel} is not git-ignored"
    script = ROOT / "deploy" / "init-secrets.sh"
    assert script.is_file() and script.stat().st_mode & 0o111
    assert "keys init --dir" in script.read_text() and "ssh_key" in script.read_text()


def test_split_key_dirs_work_together(compose: dict[str, Any], tmp_path: Path) -> None:
    """The files each container gets are enough: seal + sign there, open + verify here."""
    keymod.init_keys(tmp_path / "all")
    dirs = {}
    for name in ("executor", "orchestrator"):
        keys_dir = env_of(compose["services"][name])["DEPLOYSTREAM_KEYS_DIR"]
        d = dirs[name] = tmp_path / name
        d.mkdir()
        for target in _secret_targets(compose, name):
            if str(Path(target).parent) == keys_dir:
                shutil.copy(tmp_path / "all" / Path(target).name, d)
    orch = keymod.OrchestratorKeys.load(dirs["orchestrator"])
    ex = keymod.ExecutorKeys.load(dirs["executor"])
    sealed = orch.seal("s3cret")
    assert ex.open(sealed) == "s3cret"
    ex.verify("ansible.deploy", b"payload", orch.sign("ansible.deploy", b"payload"), orch.kid)


def test_cli_loads_a_read_only_split_key_dir(compose: dict[str, Any], tmp_path: Path) -> None:
    from contracts import load_config as _load
    from deploystream.cli.app import App

    keymod.init_keys(tmp_path / "all")
    d = tmp_path / "executor"
    d.mkdir()
    split = [keymod.BOX_PRIVATE, keymod.SIGN_PUBLIC, keymod.EXEC_SIGN_PRIVATE]
    for name in split:
        shutil.copy(tmp_path / "all" / name, d)
    d.chmod(0o555)
    try:
        App(config=_load(), keys_dir=d).executor_keys()
        assert sorted(p.name for p in d.iterdir()) == sorted(split)
    finally:
        d.chmod(0o755)


# ---------------------------------------------------------------- commands and settings


@pytest.mark.parametrize("name", ["executor", "orchestrator"])
def test_service_command_is_a_deployctl_command(services: dict[str, Any], name: str) -> None:
    instructions = dockerfile_instructions(dockerfile_of(services[name]))
    entry = [rest for word, rest in instructions if word == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entry) == ["deployctl"]
    sub = command_of(services[name])[0]
    assert sub in cli.commands, f"`deployctl {sub}` is not a command"
    assert sub == name


@pytest.mark.parametrize("name", ["executor", "orchestrator"])
def test_every_environment_variable_is_one_deployctl_reads(
    services: dict[str, Any], name: str
) -> None:
    known = click_envvars(cli)
    for command in cli.commands.values():
        known |= click_envvars(command)
    settings_src = (ROOT / "orchestrator" / "settings.py").read_text()
    env = dict(env_of(services[name]))
    for word, rest in dockerfile_instructions(dockerfile_of(services[name])):
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    for var in env:
        if var in ("PATH", "HOME", "PYTHONUNBUFFERED") or var.startswith("UV_"):
            continue
        assert var in known or f'"{var}"' in settings_src, f"{name}: nobody reads {var}"


def test_orchestrator_state_is_on_a_volume(compose: dict[str, Any]) -> None:
    orch = compose["services"]["orchestrator"]
    db = Path(env_of(orch)["DEPLOYSTREAM_CHECKPOINT_DB"])
    mounts = [str(v).split(":") for v in orch["volumes"] if isinstance(v, str)]
    assert any(
        len(m) >= 2 and m[0] in compose["volumes"] and db.is_relative_to(m[1]) for m in mounts
    )


def test_an_admin_step_creates_the_groups_before_the_services_start(
    services: dict[str, Any],
) -> None:
    """The executor and orchestrator users may not create consumer groups: a one-shot
    ``deployctl setup-redis`` as admin does, and both services wait for it."""
    import hashlib

    setup = services["redis-setup"]
    assert setup["command"] == ["setup-redis"]
    assert setup["image"] == services["orchestrator"]["image"]
    raw = env_of(setup)["REDIS_URL"]
    url = urlsplit(re.sub(r"\$\{[^}]*\}", "PASSWORD", raw))
    assert url.username == "admin" and url.hostname == "redis"
    m = re.search(r"\$\{REDIS_ADMIN_PASSWORD:-([^}]*)\}@", raw)
    assert m, raw
    line = next(ln for ln in ACL_FILE.read_text().splitlines() if ln.startswith("user admin "))
    assert f"#{hashlib.sha256(m.group(1).encode()).hexdigest()}" in line.split()
    for name in ("executor", "orchestrator"):
        wait = services[name]["depends_on"]["redis-setup"]["condition"]
        assert wait == "service_completed_successfully", name
    executor = next(
        ln for ln in ACL_FILE.read_text().splitlines() if ln.startswith("user executor ")
    )
    assert not re.search(r"\+xgroup\|create[ )]", executor)

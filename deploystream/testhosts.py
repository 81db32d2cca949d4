"""Real SSH test hosts: each a network namespace running its own OpenSSH ``sshd``.

Used by the test suite, ``deployctl demo --hosts N`` and ``python -m bench ssh``.

A host is

- a network namespace (``ip netns``) joined to this one by a veth pair, with its own
  address (``198.18.X.2``; this side is ``198.18.X.1``, RFC 2544 benchmark space);
- a mount namespace of its own, where a per-host copy of ``/etc`` (its own users,
  its own ``sshd`` host key next to it) and per-host ``/home``, ``/root`` and ``/srv``
  are bind-mounted: deploying one project to three hosts gives three independent
  copies, and a user created on one host exists on that host only;
- an ``sshd`` started inside both namespaces, with its own host key and config, and
  (unless the host is *fresh*) a ``deploy`` user whose ``authorized_keys`` holds the
  executor's public key. ``root`` takes the same key (provisioning a fresh host).

``sshd`` is installed from the distribution's packages when it is missing (CI runs as
root on a clean machine). Everything made here (namespaces, links, processes, files)
is removed by :meth:`Fleet.close`, which the fixture calls also when a test fails.
Where namespaces cannot be made, hosts fall back to one ``sshd`` each on its own
loopback address (127.0.0.2, 127.0.0.3, ...), and the fleet says so on stderr;
their files are then not apart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEPLOY_USER = "deploy"
REMOTE_APPS_ROOT = "/srv/deploystream-apps"
# git config: trust repositories owned by other users (the tests' file:// repos stand in
# for a git server; real hosts clone over https or ssh, where this does not apply)
_SAFE_ALL = "[safe]\\n\\tdirectory = *\\n"
_SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=120)


def sshd_path() -> str:
    """The ``sshd`` binary, installing ``openssh-server`` with apt-get when missing."""
    for path in _SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("sshd is missing: install openssh-server (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    packages = ["openssh-server"] + ([] if shutil.which("ip") else ["iproute2"])
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    for path in _SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise RuntimeError("openssh-server installed but no sshd binary found")


def namespaces_available() -> bool:
    """Whether this process may make network and mount namespaces."""
    if os.environ.get("DEPLOYSTREAM_TEST_HOSTS") == "loopback" or os.geteuid() != 0:
        return False
    if not (shutil.which("ip") and shutil.which("unshare")):
        return False
    name = f"ds-probe-{secrets.token_hex(3)}"
    if _run("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    _run("ip", "netns", "del", name, check=False)
    return _run("unshare", "--mount", "true", check=False).returncode == 0


def _used_subnets() -> set[int]:
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    used = set()
    for word in out.split():
        if word.startswith("198.18."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _can_connect(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


@dataclass
class SshHost:
    name: str
    addr: str
    port: int
    root: Path  # this host's own files (etc, home, root, srv, host key, config)
    fresh: bool
    netns: str | None = None
    link: str | None = None  # this side of the veth pair
    proc: subprocess.Popen[bytes] | None = None

    @property
    def spec(self) -> str:
        """``--host`` value for the deploy user (this machine's user without namespaces)."""
        return self.spec_for(DEPLOY_USER if self.netns else _me())

    def spec_for(self, user: str) -> str:
        return f"{user}@{self.addr}" + ("" if self.port == 22 else f":{self.port}")

    @property
    def host_key_pub(self) -> str:
        return (self.root / "ssh_host_ed25519_key.pub").read_text().split(" ", 2)[1]

    def known_hosts_line(self) -> str:
        name = self.addr if self.port == 22 else f"[{self.addr}]:{self.port}"
        return f"{name} ssh-ed25519 {self.host_key_pub}\n"

    def path(self, remote: str) -> Path:
        """Where a file of this host (``/srv/...``, ``/home/...``) is seen from here."""
        top, _, rest = remote.strip("/").partition("/")
        if top not in ("srv", "home", "root", "etc"):
            raise ValueError(f"{remote} is not one of this host's own directories")
        return self.root / top / rest

    @property
    def reachable(self) -> bool:
        return _can_connect(self.addr, self.port)


@dataclass
class Fleet:
    base: Path
    executor_key: Path  # private key; ``.pub`` next to it
    namespaces: bool
    hosts: list[SshHost] = field(default_factory=list)
    _tag: str = field(default_factory=lambda: secrets.token_hex(3))

    @classmethod
    def create(cls, base: Path | None = None) -> Fleet:
        sshd_path()
        base = Path(tempfile.mkdtemp(prefix="ds-hosts-", dir=base))
        key = base / "executor_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "executor", "-f", str(key))
        fleet = cls(base=base, executor_key=key, namespaces=namespaces_available())
        if not fleet.namespaces:
            print(
                "test hosts: network namespaces cannot be made here; falling back to one "
                "sshd per host on its own loopback address (127.0.0.N), files not apart",
                file=sys.stderr,
            )
        return fleet

    def add(self, *, fresh: bool = False) -> SshHost:
        """A new host; ``fresh``: no deploy user yet (only root takes the key)."""
        i = len(self.hosts)
        name = f"host{i}"
        root = self.base / name
        for d in ("home", "root", "srv"):
            (root / d).mkdir(parents=True)
        (root / "root").chmod(0o700)
        if self.namespaces:
            shutil.copytree("/etc", root / "etc", symlinks=True)
            used = _used_subnets()
            subnet = next(n for n in range(10, 250) if n not in used)
            host = SshHost(name, f"198.18.{subnet}.2", 22, root, fresh)
            host.netns = f"ds-{self._tag}-{i}"
            host.link = f"dsv{self._tag}{i}"
            self.hosts.append(host)  # registered first: close() undoes a partial setup
            peer = f"dsp{self._tag}{i}"
            _run("ip", "netns", "add", host.netns)
            _run("ip", "link", "add", host.link, "type", "veth", "peer", "name", peer)
            _run("ip", "link", "set", peer, "netns", host.netns)
            _run("ip", "addr", "add", f"198.18.{subnet}.1/24", "dev", host.link)
            _run("ip", "link", "set", host.link, "up")
            _run("ip", "-n", host.netns, "addr", "add", f"{host.addr}/24", "dev", peer)
            _run("ip", "-n", host.netns, "link", "set", peer, "up")
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")
        else:
            addr = f"127.0.0.{i + 2}"
            host = SshHost(name, addr, _free_port(addr), root, fresh)
            self.hosts.append(host)
        self._host_key(host)
        self.start(host)
        return host

    def _host_key(self, host: SshHost) -> None:
        for suffix in ("", ".pub"):
            (host.root / f"ssh_host_ed25519_key{suffix}").unlink(missing_ok=True)
        _run(
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
            "-f", str(host.root / "ssh_host_ed25519_key"),
        )  # fmt: skip

    def _config(self, host: SshHost) -> Path:
        cfg = host.root / "sshd_config"
        cfg.write_text(
            f"ListenAddress {host.addr}:{host.port}\n"
            f"HostKey {host.root}/ssh_host_ed25519_key\n"
            f"PidFile {host.root}/sshd.pid\n"
            + (
                "AuthorizedKeysFile .ssh/authorized_keys\nStrictModes yes\n"
                if self.namespaces
                else f"AuthorizedKeysFile {host.root}/authorized_keys\nStrictModes no\n"
            )
            + "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nMaxStartups 100\nMaxSessions 50\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        return cfg

    def _setup_script(self, host: SshHost) -> str:
        """Runs as root inside the host's namespaces, then becomes its sshd."""
        pub = f"{self.executor_key}.pub"
        r = host.root
        lines = ["set -e"]
        if not self.namespaces:  # this machine's own users: only the fleet's key file
            shutil.copy(pub, host.root / "authorized_keys")
        else:
            lines += [
                f"mount --bind {r}/etc /etc",
                f"mount --bind {r}/home /home",
                f"mount --bind {r}/root /root",
                f"mount --bind {r}/srv /srv",
                "mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh",
                f"cp {pub} /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
            ]
        if self.namespaces and not host.fresh:
            h = f"/home/{DEPLOY_USER}"
            lines += [
                f"id -u {DEPLOY_USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {DEPLOY_USER}",
                # "*": no password, and not locked ("!"), which sshd would refuse
                f"usermod -p '*' {DEPLOY_USER}",
                f"mkdir -p {h}/.ssh && cp {pub} {h}/.ssh/authorized_keys",
                f"chmod 700 {h}/.ssh && chmod 600 {h}/.ssh/authorized_keys",
                # git refuses a repository owned by someone else (the test's sample repo)
                f"printf '{_SAFE_ALL}' > {h}/.gitconfig",
                f"chown -R {DEPLOY_USER}: {h}",
                f"mkdir -p {REMOTE_APPS_ROOT} && chown {DEPLOY_USER}: {REMOTE_APPS_ROOT}",
            ]
        lines.append(f"exec {sshd_path()} -D -e -f {self._config(host)}")
        return "\n".join(lines)

    def start(self, host: SshHost) -> None:
        """Start (or restart) the host's sshd and wait until it accepts connections."""
        prefix = ["ip", "netns", "exec", host.netns] if host.netns else []
        unshare = ["unshare", "--mount", "--propagation", "private"] if self.namespaces else []
        log = (host.root / "sshd.log").open("ab")
        host.proc = subprocess.Popen(
            [*prefix, *unshare, "/bin/sh", "-c", self._setup_script(host)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not host.reachable:
            if host.proc.poll() is not None or time.monotonic() > deadline:
                text = (host.root / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd of {host.name} did not start:\n{text}")
            time.sleep(0.05)

    def trust_test_repos(self, host: SshHost) -> None:
        """Let the host's deploy user (made by a provision) clone the tests' file://
        repos, owned by root (as the hosts made with a deploy user can)."""
        if host.netns is None:
            return
        home = host.path(f"/home/{DEPLOY_USER}")
        gitconfig = home / ".gitconfig"
        gitconfig.write_text(_SAFE_ALL.replace("\\n", "\n").replace("\\t", "\t"))
        os.chown(gitconfig, home.stat().st_uid, home.stat().st_gid)

    def stop_sshd(self, host: SshHost) -> None:
        """Stop the host's sshd (new connections are refused; its services go on)."""
        if host.proc is not None and host.proc.poll() is None:
            host.proc.terminate()
            host.proc.wait(10)
        host.proc = None

    def link_down(self, host: SshHost) -> None:
        """Make the host unreachable (its link goes down; nothing on it stops)."""
        if host.link is None:
            self.stop_sshd(host)
            return
        _run("ip", "link", "set", host.link, "down")

    def link_up(self, host: SshHost) -> None:
        if host.link is None:
            self.start(host)
            return
        _run("ip", "link", "set", host.link, "up")
        deadline = time.monotonic() + 10
        while not host.reachable:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host.name} did not come back")
            time.sleep(0.05)

    def rekey(self, host: SshHost) -> None:
        """Give the host a new host key (as a reinstalled or impostor server would)."""
        self.stop_sshd(host)
        self._host_key(host)
        self.start(host)

    def known_hosts(self, path: Path, hosts: list[SshHost] | None = None) -> Path:
        path.write_text("".join(h.known_hosts_line() for h in hosts or self.hosts))
        return path

    def _pids(self, host: SshHost) -> list[int]:
        if host.netns is None:
            return [host.proc.pid] if host.proc is not None else []
        out = _run("ip", "netns", "pids", host.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        """Remove every process, link, namespace and file this fleet made."""
        for host in self.hosts:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self._pids(host):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while self._pids(host) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if host.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.proc.wait(5)
            if host.link is not None:
                _run("ip", "link", "del", host.link, check=False)
            if host.netns is not None:
                _run("ip", "netns", "del", host.netns, check=False)
        self.hosts.clear()
        shutil.rmtree(self.base, ignore_errors=True)

"""Executor settings, built once at the entrypoint and passed down."""

from __future__ import annotations

import functools
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from contracts import DeployJob, Job
from deploystream.known_hosts import default_known_hosts
from executor.playbooks import Catalog

DEFAULT_PROJECT_DIR = Path(__file__).resolve().parent / "ansible_project"


def default_apps_root(euid: int) -> Path:
    """~/deploystream-apps; as root /srv/deploystream-apps, since a service runs as a
    user of its own, which must reach its app dir (root's home is 0700)."""
    return Path("/srv/deploystream-apps") if euid == 0 else Path.home() / "deploystream-apps"


def default_name() -> str:
    # In a container the hostname is unique per replica, so scaling needs no config.
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ExecutorSettings:
    name: str = field(default_factory=default_name)
    project_dir: Path = DEFAULT_PROJECT_DIR
    apps_root: Path = field(default_factory=lambda: default_apps_root(os.geteuid()))
    keys_dir: Path | None = None
    # Run dirs (ansible-runner private data) live here and are removed after each run.
    work_dir: Path | None = None
    ssh_key_path: Path | None = None
    # Host keys of remote hosts, checked strictly (executor/ssh.py).
    known_hosts: Path = field(default_factory=default_known_hosts)
    # file:// repos read the executor's own disk: opt-in (deployctl executor --allow-file-repos).
    allow_file_repos: bool = False
    python: str = sys.executable
    metrics_port: int | None = None
    # A service deployed to localhost runs as a user of its own, which only root can
    # switch to; a non-root executor refuses such deploys unless told otherwise.
    can_switch_users: bool = field(default_factory=lambda: os.geteuid() == 0)
    unisolated_local_services: bool = False

    def local_services_refusal(self, job: Job) -> str | None:
        """Why this executor will not run ``job``, or None.

        A deploy to this machine whose service could not run as a user of its own
        would run as the executor's user, with everything that user can read.
        """
        if self.can_switch_users or self.unisolated_local_services:
            return None
        if not isinstance(job, DeployJob) or not any(t.is_local for t in (job.target, *job.hosts)):
            return None
        return (
            "this executor is not root, so a service it deploys to localhost would run "
            "as the executor's own user; start it as root, or with "
            "--unisolated-local-services to accept that"
        )

    @functools.cached_property
    def catalog(self) -> Catalog:
        """The playbooks of ``project_dir``, read once (raises ProjectDirError)."""
        return Catalog.load(self.project_dir)

    def playbook_path(self, name: str) -> Path | None:
        """The allow-list: ``NAME`` is ``project_dir/NAME.yml`` and nothing else.

        A name is letters, digits, ``_`` and ``-`` (no separator, no dot, no NUL), so
        it can only name a file directly in the project dir; that file must exist.
        (A symlink placed there by the operator is followed: the dir is theirs.)
        """
        playbook = self.catalog.get(name)
        return playbook.path if playbook is not None else None

    def playbook_names(self) -> list[str]:
        return self.catalog.names()

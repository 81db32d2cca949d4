"""Executor settings, built once at the entrypoint and passed down."""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROJECT_DIR = Path(__file__).resolve().parent / "ansible_project"
# The same shape contracts.jobs.PlaybookName allows, checked again here: the
# allow-list must hold on its own, whoever built the job.
_PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


def default_name() -> str:
    # In a container the hostname is unique per replica, so scaling needs no config.
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ExecutorSettings:
    name: str = field(default_factory=default_name)
    project_dir: Path = DEFAULT_PROJECT_DIR
    apps_root: Path = field(default_factory=lambda: Path.home() / "deploystream-apps")
    keys_dir: Path | None = None
    # Run dirs (ansible-runner private data) live here and are removed after each run.
    work_dir: Path | None = None
    ssh_key_path: Path | None = None
    allow_file_repos: bool = True
    python: str = sys.executable
    metrics_port: int | None = None

    def playbook_path(self, name: str) -> Path | None:
        """The allow-list: ``NAME`` is ``project_dir/NAME.yml`` and nothing else.

        A name is letters, digits, ``_`` and ``-`` (no separator, no dot, no NUL), so
        it can only name a file directly in the project dir; that file must exist.
        (A symlink placed there by the operator is followed: the dir is theirs.)
        """
        if not _PLAYBOOK_NAME.fullmatch(name):
            return None
        path = self.project_dir / f"{name}.yml"
        try:
            return path if path.is_file() else None
        except OSError:
            return None

    def playbook_names(self) -> list[str]:
        return sorted(p.stem for p in self.project_dir.glob("*.yml"))

"""Validation a schema cannot express: pure functions, no I/O."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from contracts.jobs import DeployJob, Job

# Variables that steer connection, interpreter or privilege: never from a job.
_FORBIDDEN_VAR = re.compile(
    r"^(ansible_.*|become.*|hostvars|groups|inventory_.*|playbook_dir|role_path|"
    r"omit|environment|vars|delegate_to|connection|remote_user|apps_root|secrets_file|"
    r"deploystream_.*)$",
    re.IGNORECASE,
)
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_OWNER_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
_SHELL_META = re.compile(r"[\s;&|`$<>\\'\"(){}*?!\x00-\x1f]")


class RuleError(ValueError):
    """A job that decodes but breaks a rule; the message names the field."""


def check_extra_vars(extra_vars: dict[str, object]) -> None:
    for key in extra_vars:
        if not _VAR_NAME.match(key):
            raise RuleError(f"extra_vars: {key!r} is not a valid variable name")
        if _FORBIDDEN_VAR.match(key):
            raise RuleError(f"extra_vars: {key!r} may not be set by a job")


def check_env_names(names: list[str], field: str) -> None:
    for name in names:
        if not _ENV_NAME.match(name):
            raise RuleError(f"{field}: {name!r} is not a valid environment variable name")


def check_repo(repo: str, *, allow_file: bool) -> None:
    """https, ssh (``ssh://`` or ``git@host:path``), ``owner/name``; ``file://`` if allowed."""
    if _SHELL_META.search(repo) or repo.startswith("-"):
        raise RuleError(f"repo: {repo!r} contains characters not allowed in a repository URL")
    if _OWNER_REPO.match(repo):
        return
    if repo.startswith("git@") and ":" in repo:
        return
    scheme = urlsplit(repo).scheme
    if scheme in ("https", "ssh"):
        return
    if scheme == "file":
        if allow_file:
            return
        raise RuleError("repo: file:// repositories are not allowed by this executor")
    raise RuleError(f"repo: scheme {scheme or '(none)'!r} is not allowed (https, ssh, owner/name)")


def repo_clone_url(repo: str) -> str:
    """``owner/name`` means GitHub over https; anything else is used as given."""
    if _OWNER_REPO.match(repo):
        return f"https://github.com/{repo}.git"
    return repo


def check_job(job: Job, *, allow_file_repos: bool = True) -> None:
    check_extra_vars(job.extra_vars)
    check_env_names(list(job.secrets), "secrets")
    if isinstance(job, DeployJob):
        check_repo(job.repo, allow_file=allow_file_repos)
        check_env_names(list(job.env), "env")

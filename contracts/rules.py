"""Validation a schema cannot express: pure functions, no I/O.

Both sides apply these: the orchestrator before it signs (bad input never leaves),
the executor after it verifies (a valid signature is not a licence: the signer may
forward a platform user's input).

What they guard against:

- **Connection, interpreter, privilege**: ``extra_vars`` may not set ``ansible_*``,
  ``become*``, inventory magic, nor the variables the executor sets itself, nor
  ``_``-prefixed names (playbook-private by convention). Extra vars have the highest
  precedence in Ansible, so any play variable they could name is overridable.
- **Template injection**: Ansible renders a job-supplied string that contains
  ``{{``/``{%``/``{#`` when a playbook uses it, on the *executor* (``lookup('pipe',
  ...)`` runs there). Every job string that reaches Ansible as a variable
  (``extra_vars`` keys and values at any depth, ``server_handle``, ``project_id``,
  ``modules``) may not carry template markers. (Secret and ``env`` values reach Ansible
  through a file, as data that is never rendered.)
- **Shapes**: hosts are RFC 1123 names or IP addresses; repos are https, ssh,
  ``git@host:path`` or ``owner/name`` (``file://`` only when the executor allows it),
  without shell metacharacters, option-like hosts or credentials in the URL (the
  token travels sealed); names of environment variables are names; ``extra_vars``
  nest at most :data:`MAX_DEPTH` deep.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from contracts.jobs import LOCAL_HOSTS, DeployJob, Job, ProvisionJob

# Variables that steer connection, interpreter or privilege, or that the executor
# sets itself: never from a job.
_FORBIDDEN_VAR = re.compile(
    r"^(ansible_.*|become.*|hostvars|groups|group_names|inventory_.*|playbook_dir|role_path|"
    r"omit|environment|vars|delegate_to|connection|remote_user|apps_root|secrets_file|"
    r"project_name|project_id|repo_url|ref|service_port|health_path|deploy_host|modules|"
    r"server_handle|force_reinstall|is_recovery|deploy_public_key|ds_.*|deploystream_.*|_.*)$",
    re.IGNORECASE,
)
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_OWNER_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
_SHELL_META = re.compile(r"[\s;&|`$<>\\'\"(){}*?!\x00-\x1f\x7f]")
_TEMPLATE = re.compile(r"\{\{|\{%|\{#")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_MODULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$")
_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

MAX_DEPTH = 16
MAX_NODES = 10_000


class RuleError(ValueError):
    """A job that decodes but breaks a rule; the message names the field."""


def shown(value: object, limit: int = 60) -> str:
    """A value for a message: its ``repr``, cut to about ``limit`` characters with its
    full length noted (a 100 KB value is not a message)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return repr(text[:limit]) + f"… ({len(text)} characters)"


def check_text(value: str, field: str) -> None:
    """A job string Ansible may render: no template markers, no control characters."""
    if _TEMPLATE.search(value):
        raise RuleError(f"{field}: template markers ({{{{ {{% {{#) are not allowed")
    if _CONTROL.search(value):
        raise RuleError(f"{field}: control characters are not allowed")


def _check_value(value: object, field: str) -> None:
    """Walk a JSON value without recursion: depth, size and every string."""
    stack: list[tuple[object, str, int]] = [(value, field, 1)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise RuleError(f"{field}: more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise RuleError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise RuleError(f"{path}: keys must be strings")
                check_text(key, f"{path} key")
                stack.append((sub, f"{path}.{shown(key, 40)}", depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))
        elif not (item is None or isinstance(item, bool | int | float)):
            raise RuleError(f"{path}: unsupported value type {type(item).__name__}")


def reserved_var(name: str) -> bool:
    """A variable no job may ever set (nor a playbook declare as settable)."""
    return bool(_FORBIDDEN_VAR.fullmatch(name))


def check_extra_vars(extra_vars: dict[str, object]) -> None:
    for key in extra_vars:
        if not _VAR_NAME.fullmatch(key):
            raise RuleError(f"extra_vars: {shown(key)} is not a valid variable name")
        if _FORBIDDEN_VAR.fullmatch(key):
            raise RuleError(f"extra_vars: {key!r} may not be set by a job")
    _check_value(extra_vars, "extra_vars")


def check_env_names(names: list[str], field: str) -> None:
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise RuleError(f"{field}: {shown(name)} is not a valid environment variable name")


def check_host(host: str, field: str = "target.host") -> None:
    """RFC 1123 host name or an IP address (``localhost`` and friends included)."""
    if host in LOCAL_HOSTS:
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if len(host) > 253 or not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
        raise RuleError(f"{field}: {shown(host)} is not a host name or IP address")


def _check_repo_host(host: str, repo: str) -> None:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not host or not _HOSTNAME.fullmatch(host):
        raise RuleError(f"repo: {shown(repo)} does not name a valid host")


def check_repo(repo: str, *, allow_file: bool) -> None:
    """https, ssh (``ssh://`` or ``git@host:path``), ``owner/name``; ``file://`` if allowed."""
    if _SHELL_META.search(repo) or repo.startswith("-"):
        raise RuleError(f"repo: {shown(repo)} contains characters not allowed in a repository URL")
    if _OWNER_REPO.fullmatch(repo):
        if any(part in (".", "..") for part in repo.split("/")):
            raise RuleError(f"repo: {shown(repo)} is not owner/name")
        return
    scp = re.fullmatch(r"([A-Za-z0-9_.-]+)@([^:/]+):(.+)", repo)
    if scp and "://" not in repo:
        _check_repo_host(scp.group(2), repo)
        if scp.group(3).startswith("-"):
            raise RuleError(f"repo: {shown(repo)} has an option-like path")
        return
    try:
        parts = urlsplit(repo)
        host = parts.hostname or ""
        password = parts.password
    except ValueError as exc:
        raise RuleError(f"repo: {shown(repo)} is not a valid URL: {exc}") from exc
    scheme = parts.scheme
    if scheme in ("https", "ssh"):
        if password is not None or (scheme == "https" and parts.username is not None):
            raise RuleError(
                "repo: credentials in the repository URL are not allowed "
                "(they would travel in plaintext; pass a GitHub token, which is sealed)"
            )
        _check_repo_host(host, repo)
        return
    if scheme == "file":
        if not allow_file:
            raise RuleError("repo: file:// repositories are not allowed by this executor")
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise RuleError(f"repo: {shown(repo)} is not file:///absolute/path")
        return
    allowed = "https://, ssh://, git@host:path, owner/name"
    if allow_file:
        allowed += ", file:///path"
    raise RuleError(f"repo: scheme {scheme or '(none)'!r} is not allowed; use {allowed}")


def repo_clone_url(repo: str) -> str:
    """``owner/name`` means GitHub over https; anything else is used as given."""
    if _OWNER_REPO.fullmatch(repo):
        return f"https://github.com/{repo}.git"
    return repo


def github_web_host(api_url: str) -> str:
    """The host a GitHub token for ``api_url`` belongs to: github.com for
    api.github.com, else the API's own host (GitHub Enterprise: ``https://HOST/api/v3``)."""
    host = (urlsplit(api_url).hostname or "").lower()
    return "github.com" if host == "api.github.com" else host


def token_applies(repo: str, github_api_url: str) -> bool:
    """A clone token goes only with an https repo on the GitHub host it is for:
    never with a ``file://`` or ssh repo, nor to another host."""
    url = urlsplit(repo_clone_url(repo))
    return url.scheme == "https" and (url.hostname or "").lower() == github_web_host(github_api_url)


def _check_identifiers(job: Job) -> None:
    """The schema's patterns end in ``$``, which also matches before a final newline:
    no identifier may carry a control character."""
    named: list[tuple[str, str | None]] = [
        ("request_id", job.request_id),
        ("retry_of", job.retry_of),
        ("playbook", job.playbook),
        ("idempotency_key", job.idempotency_key),
        ("target.user", job.target.user),
    ]
    if isinstance(job, DeployJob):
        named += [
            ("project_name", job.project_name),
            ("ref", job.ref),
            ("health_path", job.health_path),
        ]
    for field, value in named:
        if value is not None and _CONTROL.search(value):
            raise RuleError(f"{field}: control characters are not allowed")


def check_job(job: Job, *, allow_file_repos: bool = True) -> None:
    _check_identifiers(job)
    check_extra_vars(job.extra_vars)
    check_env_names(list(job.secrets), "secrets")
    check_host(job.target.host)
    for i, target in enumerate(getattr(job, "hosts", ())):  # more hosts of one run
        check_host(target.host, f"hosts[{i}].host")
        if target.user is not None and _CONTROL.search(target.user):
            raise RuleError(f"hosts[{i}].user: control characters are not allowed")
    for i, host in enumerate(job.limit):
        check_host(host, f"limit[{i}]")
    if isinstance(job, DeployJob):
        check_repo(job.repo, allow_file=allow_file_repos)
        check_env_names(list(job.env), "env")
        if job.project_id is not None and not _PROJECT_ID.fullmatch(job.project_id):
            raise RuleError(f"project_id: {shown(job.project_id)} is not a valid id")
        for i, module in enumerate(job.modules):
            if not _MODULE.fullmatch(module):
                raise RuleError(f"modules[{i}]: {shown(module)} is not a valid module name")
    elif isinstance(job, ProvisionJob):
        check_text(job.server_handle, "server_handle")

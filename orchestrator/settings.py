"""Orchestrator settings: built once at the entrypoint and passed down.

Nothing below the entrypoint reads the environment. :meth:`OrchestratorSettings.from_env`
is the one place that does (the CLI may instead fill the fields from click options,
which read the same variables). Token fields are excluded from ``repr`` so a logged
settings object never shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import SettingsError

DEFAULT_GITHUB_API_URL = "https://api.github.com"
CI_SECRET_PREFIX = "DEPLOYSTREAM_CI_SECRET_"  # noqa: S105 - a variable prefix


def default_checkpoint_db(state_home: str | None = None) -> Path:
    base = Path(state_home) if state_home else Path.home() / ".local" / "state"
    return base / "deploystream" / "checkpoints.sqlite"


@dataclass(frozen=True, kw_only=True)
class OrchestratorSettings:
    # Platform API (deployment records, project status); None: not configured.
    api_url: str | None = None
    api_token: str | None = field(default=None, repr=False)
    # GitHub: a configured token, or an App (id + private key file); neither: not configured.
    github_token: str | None = field(default=None, repr=False)
    github_app_id: str | None = None
    github_app_key_path: Path | None = None
    github_api_url: str = DEFAULT_GITHUB_API_URL
    # Default "owner/name" when neither the caller nor the project names one.
    github_repo: str | None = None
    # Extra Actions secrets set after every successful deploy (name -> value).
    ci_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Used for DEPLOY_USER / DEPLOY_PROJECT_PATH when the deploy does not say.
    deploy_user: str = "deploy"
    apps_root: str = "~/deploystream-apps"
    # The caller waits timeout_s + this for a result, so a slow queue is never a timeout.
    queue_allowance_s: float = 600.0
    # While tailing, state (last event id) is checkpointed at least this often.
    checkpoint_every_s: float = 10.0
    # A resumed run past its deadline still reads what is already on the stream.
    final_read_s: float = 2.0
    # HTTP (platform API and GitHub).
    http_timeout_s: float = 15.0
    http_attempts: int = 5
    retry_wait_initial_s: float = 0.5
    retry_wait_max_s: float = 10.0
    # GitHub asks for spacing between writes (secondary rate limits); tests use 0.
    github_write_interval_s: float = 1.0
    # Checkpointer: SQLite file by default, Postgres when a DSN is set.
    checkpoint_db: Path = field(default_factory=default_checkpoint_db)
    checkpoint_dsn: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.github_app_id is None) != (self.github_app_key_path is None):
            raise SettingsError("a GitHub App needs both its id and its private key file")
        if self.github_token and self.github_app_id:
            raise SettingsError("configure either a GitHub token or a GitHub App, not both")
        if self.github_repo is not None and not _is_owner_name(self.github_repo):
            raise SettingsError(f"GitHub repository must be OWNER/NAME, got {self.github_repo!r}")
        if self.http_attempts < 1:
            raise SettingsError("http_attempts must be at least 1")
        for name in ("queue_allowance_s", "checkpoint_every_s", "http_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        for secret in self.ci_secrets:
            if not secret.replace("_", "").isalnum() or secret.upper().startswith("GITHUB_"):
                raise SettingsError(f"invalid GitHub Actions secret name {secret!r}")

    @property
    def api_configured(self) -> bool:
        return bool(self.api_url)

    @property
    def github_configured(self) -> bool:
        return bool(self.github_token or self.github_app_id)

    def with_changes(self, **changes: Any) -> OrchestratorSettings:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrchestratorSettings:
        """Settings from environment variables (the entrypoint's job, nowhere else).

        ``DEPLOYSTREAM_API_URL``, ``DEPLOYSTREAM_API_TOKEN``, ``GITHUB_TOKEN``,
        ``GITHUB_APP_ID``, ``GITHUB_APP_KEY_PATH``, ``GITHUB_API_URL``,
        ``DEPLOYSTREAM_GITHUB_REPO``, ``DEPLOYSTREAM_CI_SECRET_<NAME>`` (one per extra
        Actions secret), ``DEPLOYSTREAM_DEPLOY_USER``, ``DEPLOYSTREAM_APPS_ROOT``,
        ``DEPLOYSTREAM_QUEUE_ALLOWANCE_S``, ``DEPLOYSTREAM_HTTP_TIMEOUT_S``,
        ``DEPLOYSTREAM_HTTP_ATTEMPTS``, ``DEPLOYSTREAM_CHECKPOINT_DB``,
        ``DEPLOYSTREAM_CHECKPOINT_DSN``.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        kwargs: dict[str, Any] = {
            "api_url": get("DEPLOYSTREAM_API_URL"),
            "api_token": get("DEPLOYSTREAM_API_TOKEN"),
            "github_token": get("GITHUB_TOKEN"),
            "github_app_id": get("GITHUB_APP_ID"),
            "github_repo": get("DEPLOYSTREAM_GITHUB_REPO"),
            "checkpoint_dsn": get("DEPLOYSTREAM_CHECKPOINT_DSN"),
            "ci_secrets": {
                name.removeprefix(CI_SECRET_PREFIX): value
                for name, value in env.items()
                if name.startswith(CI_SECRET_PREFIX) and len(name) > len(CI_SECRET_PREFIX)
            },
        }
        if key_path := get("GITHUB_APP_KEY_PATH"):
            kwargs["github_app_key_path"] = Path(key_path)
        if api := get("GITHUB_API_URL"):
            kwargs["github_api_url"] = api
        if user := get("DEPLOYSTREAM_DEPLOY_USER"):
            kwargs["deploy_user"] = user
        if root := get("DEPLOYSTREAM_APPS_ROOT"):
            kwargs["apps_root"] = root
        if db := get("DEPLOYSTREAM_CHECKPOINT_DB"):
            kwargs["checkpoint_db"] = Path(db)
        elif state_home := get("XDG_STATE_HOME"):
            kwargs["checkpoint_db"] = default_checkpoint_db(state_home)
        numbers: dict[str, tuple[str, type[float] | type[int]]] = {
            "DEPLOYSTREAM_QUEUE_ALLOWANCE_S": ("queue_allowance_s", float),
            "DEPLOYSTREAM_HTTP_TIMEOUT_S": ("http_timeout_s", float),
            "DEPLOYSTREAM_HTTP_ATTEMPTS": ("http_attempts", int),
        }
        for var, (name, kind) in numbers.items():
            if (raw := get(var)) is not None:
                try:
                    kwargs[name] = kind(raw)
                except ValueError as exc:
                    raise SettingsError(f"{var} must be a number, got {raw!r}") from exc
        return cls(**kwargs)


def _is_owner_name(value: str) -> bool:
    owner, sep, name = value.partition("/")
    return bool(sep and owner and name and "/" not in name)

"""GitHub: a token for cloning (App installation or configured) and Actions secrets.

PyGithub is synchronous, so every call runs in a worker thread. PyGithub seals each
secret with the repository's public key itself (``Repository.create_secret``).
Transient failures (network, 5xx, rate limits) are retried with backoff; a 4xx
(bad credentials, no such repository or installation) fails at once. Tokens and
secret values are never logged, and never part of an error message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

import anyio.to_thread
import structlog
from github import Auth, Github, GithubException, GithubIntegration, RateLimitExceededException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from orchestrator.errors import GithubRejected, GithubUnavailable, SettingsError
from orchestrator.settings import OrchestratorSettings

log = structlog.get_logger(__name__)
T = TypeVar("T")


def split_repo(github_repo: str) -> tuple[str, str]:
    owner, sep, name = github_repo.partition("/")
    if not (sep and owner and name) or "/" in name:
        raise SettingsError(f"GitHub repository must be OWNER/NAME, got {github_repo!r}")
    return owner, name.removesuffix(".git")


def infer_github_repo(repo: str) -> str | None:
    """``owner/name`` from a repo reference: ``owner/name``, a github.com https or ssh URL."""
    for prefix in ("https://github.com/", "http://github.com/", "git@github.com:"):
        if repo.startswith(prefix):
            repo = repo.removeprefix(prefix)
            break
    else:
        if "://" in repo or repo.startswith(("/", ".", "~")) or ":" in repo:
            return None
    parts = repo.removesuffix("/").removesuffix(".git").split("/")
    if len(parts) == 2 and all(parts):
        return "/".join(parts)
    return None


class GithubSecrets:
    """GitHub access for one orchestrator: ``clone_token`` and ``set_actions_secrets``."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        if not settings.github_configured:
            raise SettingsError("GitHub is not configured (no token and no App)")
        self._settings = settings

    # -- public, async -------------------------------------------------------------

    async def clone_token(self, github_repo: str | None) -> str:
        """A token that can read ``github_repo``: the configured one, or an App installation's."""
        if self._settings.github_token:
            return self._settings.github_token
        if not github_repo:
            raise SettingsError("a GitHub App token needs the repository (OWNER/NAME)")
        return await self._in_thread(lambda: self._installation_token(github_repo))

    async def set_actions_secrets(self, github_repo: str, secrets: Mapping[str, str]) -> list[str]:
        """Create or update each Actions secret; return the names set (values never logged)."""
        token = await self.clone_token(github_repo)
        names = sorted(secrets)
        await self._in_thread(lambda: self._put_secrets(token, github_repo, secrets))
        log.info("github.secrets_set", repo=github_repo, names=names)
        return names

    # -- blocking parts (worker thread) ---------------------------------------------

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: self._retrying(fn))

    def _retrying(self, fn: Callable[[], T]) -> T:
        s = self._settings
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(s.http_attempts),
            wait=wait_exponential(multiplier=s.retry_wait_initial_s, max=s.retry_wait_max_s),
            before_sleep=lambda rs: log.warning(
                "github.retry",
                attempt=rs.attempt_number,
                reason=_describe(rs.outcome.exception()) if rs.outcome else "",
            ),
            reraise=True,
        )
        try:
            return retrying(fn)
        except RateLimitExceededException as exc:
            raise GithubUnavailable(
                f"GitHub rate limit: {_describe(exc)}", status=exc.status
            ) from exc
        except GithubException as exc:
            kind = GithubUnavailable if _is_transient(exc) else GithubRejected
            raise kind(f"GitHub: {_describe(exc)}", status=exc.status) from exc
        except OSError as exc:  # requests' errors derive from OSError
            raise GithubUnavailable(f"GitHub unreachable: {_describe(exc)}") from exc

    def _client(self, token: str) -> Github:
        s = self._settings
        return Github(
            auth=Auth.Token(token),
            base_url=s.github_api_url.rstrip("/"),
            timeout=max(1, int(s.http_timeout_s)),
            retry=None,  # tenacity retries, with our bounds
            seconds_between_requests=None,
            seconds_between_writes=s.github_write_interval_s or None,
        )

    def _installation_token(self, github_repo: str) -> str:
        s = self._settings
        assert s.github_app_id is not None and s.github_app_key_path is not None
        try:
            private_key = s.github_app_key_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                f"GitHub App key {s.github_app_key_path} is unreadable: {exc.strerror}"
            ) from exc
        owner, name = split_repo(github_repo)
        integration = GithubIntegration(
            auth=Auth.AppAuth(s.github_app_id, private_key),
            base_url=s.github_api_url.rstrip("/"),
            timeout=max(1, int(s.http_timeout_s)),
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        try:
            installation = integration.get_repo_installation(owner, name)
            token = integration.get_access_token(installation.id).token
        finally:
            integration.close()
        log.info("github.installation_token", repo=github_repo, installation=installation.id)
        return token

    def _put_secrets(self, token: str, github_repo: str, secrets: Mapping[str, str]) -> None:
        gh = self._client(token)
        try:
            repo = gh.get_repo("/".join(split_repo(github_repo)))
            for name in sorted(secrets):
                # One retry unit per secret: a PUT is idempotent, earlier ones stay done.
                self._retrying(partial(repo.create_secret, name, secrets[name]))
        finally:
            gh.close()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RateLimitExceededException):
        return True
    if isinstance(exc, GithubException):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, GithubException):
        message = exc.data.get("message") if isinstance(exc.data, dict) else None
        return f"HTTP {exc.status} {message or ''}".strip()
    return f"{type(exc).__name__}: {exc}" if exc else ""

"""Errors of the orchestrator's integrations, translated at the edge (httpx, PyGithub).

DeploystreamError
└── OrchestratorError
    ├── SettingsError                 inconsistent settings (also a BadInputError)
    ├── CheckpointConfigError         checkpointer unavailable (missing package, bad path)
    ├── PlatformApiError              the platform API said no or could not be reached
    │   ├── PlatformApiRejected       4xx: our request is wrong; never retried
    │   └── PlatformApiUnavailable    connect errors / 5xx after retries (infrastructure)
    └── GithubError                   GitHub App / token / secrets failed
        ├── GithubRejected            4xx (bad credentials, no such repo); never retried
        └── GithubUnavailable         5xx / rate limit / network after retries
"""

from __future__ import annotations

from deploystream.errors import BadInputError, DeploystreamError, InfrastructureError


class OrchestratorError(DeploystreamError):
    """Base of the orchestrator's own errors."""


class SettingsError(OrchestratorError, BadInputError):
    """Settings that cannot work together (e.g. an App id without its key)."""


class CheckpointConfigError(OrchestratorError):
    """The configured checkpointer cannot be opened."""


class PlatformApiError(OrchestratorError):
    """A platform API call failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PlatformApiRejected(PlatformApiError):
    """The API answered 4xx: retrying the same request cannot help."""


class PlatformApiUnavailable(PlatformApiError, InfrastructureError):
    """The API could not be reached or kept failing (5xx) after retries."""


class GithubError(OrchestratorError):
    """A GitHub call failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GithubRejected(GithubError):
    """GitHub answered 4xx (bad credentials, missing repo or installation)."""


class GithubUnavailable(GithubError, InfrastructureError):
    """GitHub could not be reached, kept failing, or rate-limited us past our retries."""
